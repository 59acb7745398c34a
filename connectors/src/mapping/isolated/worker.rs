//! The worker side of the sandbox pool: a long-lived child process that compiles partner
//! programs once per connector version and runs jobs read from stdin, one at a time.
//!
//! Before it reads anything it limits itself: address space, CPU time (a lifetime budget:
//! the worker retires cleanly once it has used half of it, so the limit only ever fires on
//! a runaway), no core dumps, no file writes, no new file descriptors. Its environment is
//! empty (the supervisor clears it). Whatever a program does — overflow the stack, exhaust
//! its address space, spin — ends this process and nothing else.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jaq_json::Val;

use super::wire::{Answer, JobHeader, ProgramSource, Reply, Task, read_part, write_reply};
use crate::decode::Limits;
use crate::error::ConnectorError;
use crate::mapping::{
    Budget, ConnectorPrograms, Globals, RunError, STACK_BYTES, dry_run::parts, to_json, to_val,
};
use crate::spec::{Capability, ConnectorSpec};

/// Program sets a worker keeps compiled; the oldest is forgotten beyond this (the
/// supervisor then sends its document again).
const KEPT_SETS: usize = 64;
/// Largest job header and payload a worker reads.
const MAX_HEADER_BYTES: usize = 64 * 1024 * 1024;
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// A sandbox process's limits, from its command line (worker and dry-run child alike).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerLimits {
    pub(crate) address_space: u64,
    pub(crate) cpu_seconds: u64,
}

pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Option<WorkerLimits> {
    let (mut address_space, mut cpu) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--address-space-bytes" => address_space = args.next().and_then(|v| v.parse().ok()),
            "--cpu-seconds" => cpu = args.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    Some(WorkerLimits {
        address_space: address_space?,
        cpu_seconds: cpu?,
    })
}

fn limit_self(limits: WorkerLimits) -> Result<(), std::io::Error> {
    use rlimit::{Resource, setrlimit};
    setrlimit(Resource::CORE, 0, 0)?;
    setrlimit(Resource::FSIZE, 0, 0)?;
    setrlimit(Resource::AS, limits.address_space, limits.address_space)?;
    // The soft limit sends SIGXCPU, the hard one a second later SIGKILL.
    setrlimit(Resource::CPU, limits.cpu_seconds, limits.cpu_seconds + 1)?;
    // stdin, stdout and stderr are open; nothing else may be.
    setrlimit(Resource::NOFILE, 3, 3)
}

/// The worker process's entry point (`mallgate sandbox-worker ...`,
/// `mallgate-jq-sandbox worker ...`). Returns the process exit code.
pub fn worker_main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let Some(limits) = parse_args(args) else {
        eprintln!("usage: worker --address-space-bytes N --cpu-seconds N (jobs on stdin)");
        return ExitCode::from(2);
    };
    // The thread first (its stack is reserved inside the address-space limit), then the
    // limits, then the first byte a partner controls.
    let run = std::thread::Builder::new()
        .name("mallgate-sandbox-worker".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            crate::mapping::on_big_stack();
            if let Err(e) = limit_self(limits) {
                eprintln!("cannot set resource limits: {e}");
                return ExitCode::from(3);
            }
            serve(Duration::from_secs(limits.cpu_seconds / 2))
        });
    match run.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        _ => ExitCode::from(4),
    }
}

/// Answers jobs until stdin closes or the worker has been busy for `retire_after`.
fn serve(retire_after: Duration) -> ExitCode {
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    let mut sets = Sets::default();
    let mut busy = Duration::ZERO;
    loop {
        let header = match read_part(&mut input, MAX_HEADER_BYTES) {
            Ok(Some(h)) => h,
            Ok(None) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::from(2),
        };
        let Ok(Some(payload)) = read_part(&mut input, MAX_PAYLOAD_BYTES) else {
            return ExitCode::from(2);
        };
        let started = Instant::now();
        let answer = match serde_json::from_slice::<JobHeader>(&header) {
            Ok(job) => sets.run(job, &payload),
            Err(e) => Answer::Failed {
                kind: "other".into(),
                reason: format!("bad job: {e}"),
            },
        };
        busy += started.elapsed();
        let retiring = busy >= retire_after;
        if write_reply(&mut output, &Reply { answer, retiring }).is_err() {
            return ExitCode::from(2);
        }
        if retiring {
            return ExitCode::SUCCESS;
        }
    }
}

/// Compiled program sets, oldest first out.
#[derive(Default)]
struct Sets {
    compiled: HashMap<u64, Arc<ConnectorPrograms>>,
    order: VecDeque<u64>,
}

fn failed(e: ConnectorError) -> Answer {
    let (kind, reason) = parts(e);
    Answer::Failed { kind, reason }
}

impl Sets {
    fn get(
        &mut self,
        set: u64,
        load: Option<ProgramSource>,
    ) -> Result<Arc<ConnectorPrograms>, Answer> {
        if let Some(programs) = self.compiled.get(&set) {
            return Ok(Arc::clone(programs));
        }
        let Some(source) = load else {
            return Err(Answer::Unknown);
        };
        let programs =
            match ConnectorSpec::load_compiled(&source.text, source.format, &source.owner) {
                Ok((_, programs)) => Arc::new(programs),
                Err(ConnectorError::InvalidSpec { problems }) => {
                    return Err(Answer::InvalidSpec { problems });
                }
                Err(e) => return Err(failed(e)),
            };
        if self.order.len() >= KEPT_SETS
            && let Some(old) = self.order.pop_front()
        {
            self.compiled.remove(&old);
        }
        self.order.push_back(set);
        self.compiled.insert(set, Arc::clone(&programs));
        Ok(programs)
    }

    fn run(&mut self, job: JobHeader, payload: &[u8]) -> Answer {
        let programs = match self.get(job.set, job.load) {
            Ok(p) => p,
            Err(answer) => return answer,
        };
        let deadline = Instant::now() + Duration::from_millis(job.deadline_ms);
        match job.task {
            Task::MapReply { capability } => match programs.capabilities.get(&capability) {
                None => unsupported(capability),
                Some(compiled) => match compiled.mapping.map_reply_raw(
                    payload,
                    &Limits::default(),
                    &job.globals,
                    deadline,
                ) {
                    Ok(page) => Answer::Page { page },
                    Err(e) => failed(e),
                },
            },
            Task::Request { capability, field } => request(
                &programs,
                capability,
                field.as_deref(),
                &job.globals,
                deadline,
            ),
        }
    }
}

fn unsupported(capability: Capability) -> Answer {
    failed(ConnectorError::Unsupported {
        capability: capability.to_string(),
    })
}

/// A request program (a jq query value, or the body) run on `$query`.
pub(crate) fn request(
    programs: &ConnectorPrograms,
    capability: Capability,
    field: Option<&str>,
    globals: &Globals,
    deadline: Instant,
) -> Answer {
    let Some(compiled) = programs.capabilities.get(&capability) else {
        return unsupported(capability);
    };
    let program = match field {
        Some(name) => compiled.query.get(name),
        None => compiled.body.as_ref(),
    };
    let Some(program) = program else {
        return Answer::Value { value: None };
    };
    let input = to_val(&globals.query);
    let vals: [Val; 3] = [
        to_val(&globals.provenance),
        input.clone(),
        to_val(&globals.locations),
    ];
    match program.run(input, vals, &Budget::until(deadline)) {
        Ok((out, _)) => Answer::Value {
            value: out.into_iter().next().and_then(|v| {
                let mut cap = 1024 * 1024;
                to_json(&v, &mut cap).ok()
            }),
        },
        Err(RunError::Failed(reason)) => Answer::Failed {
            kind: "request".into(),
            reason,
        },
        Err(RunError::Overrun(reason)) => Answer::Failed {
            kind: "overrun".into(),
            reason,
        },
    }
}
