//! Dry-runs of candidate connectors in a child process under rlimits.
//!
//! A candidate comes from a partner and has never run: its programs are compiled and run
//! against a sample reply in a separate process with a cap on address space and CPU time,
//! a wall-clock limit enforced by the parent, an empty environment (no secrets to read),
//! and a cap on what it may print. Whatever the program does, only the child dies; the
//! parent gets [`ConnectorError::MappingOverrun`] naming how it died.
//!
//! Protocol: the parent writes one JSON line ([`DryRunRequest`]), then the sample payload's
//! raw bytes, and closes stdin; the child prints one JSON [`ChildReply`] on stdout. Any
//! binary can host the child side by calling [`child_main`]: this crate ships
//! `mallgate-jq-sandbox`, and the gateway may re-execute itself with a subcommand.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mallgate_schemas::Warning;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Globals, STACK_BYTES};
use crate::decode::Limits;
use crate::error::{ConnectorError, Problem};
use crate::source::Format;
use crate::spec::{Capability, ConnectorSpec, Owner};

/// What the child is asked to do (the payload follows on stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunRequest {
    /// The candidate connector document, as submitted.
    pub connector: String,
    pub format: Format,
    pub owner: Owner,
    pub capability: Capability,
    #[serde(default)]
    pub provenance: Value,
    #[serde(default)]
    pub query: Value,
    #[serde(default)]
    pub locations: Value,
}

/// The records a candidate produced from the sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DryRunOutput {
    pub not_found: bool,
    pub selected: usize,
    pub records: Vec<Value>,
    pub dropped: Vec<Warning>,
}

/// The child's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChildReply {
    Mapped(DryRunOutput),
    InvalidSpec { problems: Vec<Problem> },
    Failed { error: String, kind: String },
}

/// Resource caps of one dry-run child.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    pub address_space_bytes: u64,
    pub cpu_seconds: u64,
    pub wall: Duration,
    pub max_output_bytes: usize,
    pub max_payload_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            // Room for the compile and run threads' 256 MiB stack reservations and a
            // realistic mapping; far below what hurts the host.
            address_space_bytes: 1536 * 1024 * 1024,
            cpu_seconds: 5,
            wall: Duration::from_secs(10),
            max_output_bytes: 16 * 1024 * 1024,
            max_payload_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Runs dry-runs in child processes of `program args...`.
#[derive(Debug, Clone)]
pub struct Sandbox {
    program: PathBuf,
    args: Vec<String>,
    limits: SandboxLimits,
}

fn sandbox_error(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Sandbox {
        reason: reason.into(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        6 => "SIGABRT: usually the address-space limit (an allocation failed)",
        9 => "SIGKILL: the CPU-time hard limit or the wall-clock limit",
        11 => "SIGSEGV: a stack overflow",
        24 => "SIGXCPU: the CPU-time limit",
        _ => "a signal",
    }
}

impl Sandbox {
    /// A sandbox that starts `program` with `args` (the child side is [`child_main`]).
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>, limits: SandboxLimits) -> Self {
        Self {
            program: program.into(),
            args,
            limits,
        }
    }

    /// Compiles `request.connector` and maps `payload` as a reply of `request.capability`,
    /// in a child process. Blocking: async callers use `spawn_blocking`.
    pub fn dry_run(
        &self,
        request: &DryRunRequest,
        payload: &[u8],
    ) -> Result<DryRunOutput, ConnectorError> {
        if payload.len() > self.limits.max_payload_bytes {
            return Err(sandbox_error(format!(
                "the sample is {} bytes; the limit is {}",
                payload.len(),
                self.limits.max_payload_bytes
            )));
        }
        let mut header = serde_json::to_vec(request).map_err(|e| sandbox_error(e.to_string()))?;
        header.push(b'\n');

        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg("--address-space-bytes")
            .arg(self.limits.address_space_bytes.to_string())
            .arg("--cpu-seconds")
            .arg(self.limits.cpu_seconds.to_string())
            // Partner code must not read the gateway's environment (secrets live there).
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| sandbox_error(format!("cannot start {}: {e}", self.program.display())))?;

        let started = Instant::now();
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| sandbox_error("no stdin"))?;
        let input: Vec<u8> = [header.as_slice(), payload].concat();
        let writer = std::thread::spawn(move || {
            // The child may die before reading everything: that is reported by its status.
            let _ = stdin.write_all(&input);
        });
        let cap = self.limits.max_output_bytes;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| sandbox_error("no stdout"))?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(cap as u64 + 1).read_to_end(&mut out);
            out
        });
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| sandbox_error("no stderr"))?;
        let err_reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stderr).take(4096).read_to_end(&mut out);
            out
        });

        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() > self.limits.wall => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(sandbox_error(format!("waiting for the child: {e}"))),
            }
        };
        let _ = writer.join();
        let out = reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        let stderr_line = String::from_utf8_lossy(&err)
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default();

        let Some(status) = status else {
            return Err(ConnectorError::MappingOverrun {
                reason: format!(
                    "the dry-run was killed after the wall-clock limit of {} ms",
                    self.limits.wall.as_millis()
                ),
            });
        };
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            let reason = match status.signal() {
                Some(sig) => format!(
                    "the dry-run child died of signal {sig} ({}){stderr_line}",
                    signal_name(sig)
                ),
                None => format!(
                    "the dry-run child exited with {}{stderr_line}",
                    status.code().unwrap_or(-1)
                ),
            };
            return Err(ConnectorError::MappingOverrun { reason });
        }
        if out.len() > cap {
            return Err(ConnectorError::MappingOverrun {
                reason: format!("the dry-run printed more than {cap} bytes"),
            });
        }
        let reply: ChildReply = serde_json::from_slice(&out)
            .map_err(|e| sandbox_error(format!("unreadable answer from the child: {e}")))?;
        match reply {
            ChildReply::Mapped(output) => Ok(output),
            ChildReply::InvalidSpec { problems } => Err(ConnectorError::InvalidSpec { problems }),
            ChildReply::Failed { error, kind } => Err(rebuild(&kind, error)),
        }
    }
}

/// A child's error, as the parent's error type.
pub(crate) fn rebuild(kind: &str, reason: String) -> ConnectorError {
    let format = |name: &str| match name {
        "json" => Some("json"),
        "xml" => Some("xml"),
        "csv" => Some("csv"),
        "x12" => Some("x12"),
        _ => None,
    };
    match kind.split_once(':') {
        Some(("decode", name)) => ConnectorError::Decode {
            format: format(name).unwrap_or("sample"),
            reason,
        },
        _ => match kind {
            "overrun" => ConnectorError::MappingOverrun { reason },
            "malformed_reply" => ConnectorError::MalformedReply { reason },
            "partner_reported" => ConnectorError::PartnerReported { message: reason },
            "invalid_program" => ConnectorError::InvalidProgram { reason },
            "request" => ConnectorError::Request { reason },
            _ => sandbox_error(reason),
        },
    }
}

/// An error as (kind, reason) for the wire.
pub(crate) fn parts(e: ConnectorError) -> (String, String) {
    match e {
        ConnectorError::Decode { format, reason } => (format!("decode:{format}"), reason),
        ConnectorError::MappingOverrun { reason } => ("overrun".into(), reason),
        ConnectorError::MalformedReply { reason } => ("malformed_reply".into(), reason),
        ConnectorError::PartnerReported { message } => ("partner_reported".into(), message),
        ConnectorError::InvalidProgram { reason } => ("invalid_program".into(), reason),
        other => ("other".into(), other.to_string()),
    }
}

/// The child side: set the rlimits given on the command line, read the request and the
/// payload from stdin, answer on stdout. Returns the process exit code.
pub fn child_main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let Some(limits) = super::isolated::worker::parse_args(args) else {
        eprintln!("usage: --address-space-bytes N --cpu-seconds N (request on stdin)");
        return ExitCode::from(2);
    };
    let (address_space, cpu) = (limits.address_space, limits.cpu_seconds);
    // Limits first, before anything partner-controlled is read. The CPU soft limit sends
    // SIGXCPU, the hard limit a second later SIGKILL.
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, address_space, address_space)
        .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu + 1))
    {
        eprintln!("cannot set resource limits: {e}");
        return ExitCode::from(3);
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(64 * 1024 * 1024)
        .read_to_end(&mut input)
    {
        eprintln!("cannot read the request: {e}");
        return ExitCode::from(2);
    }
    let reply = answer(&input);
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, &reply)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the answer: {e}");
            ExitCode::from(4)
        }
    }
}

fn answer(input: &[u8]) -> ChildReply {
    let failed = |kind: &str, error: String| ChildReply::Failed {
        error,
        kind: kind.to_owned(),
    };
    let (header, payload) = match input.iter().position(|b| *b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let request: DryRunRequest = match serde_json::from_slice(header) {
        Ok(r) => r,
        Err(e) => return failed("other", format!("bad request: {e}")),
    };
    let mut programs =
        match ConnectorSpec::load_compiled(&request.connector, request.format, &request.owner) {
            Ok((_, programs)) => programs,
            Err(ConnectorError::InvalidSpec { problems }) => {
                return ChildReply::InvalidSpec { problems };
            }
            Err(e) => {
                let (kind, reason) = parts(e);
                return failed(&kind, reason);
            }
        };
    let Some(mapping) = programs
        .capabilities
        .remove(&request.capability)
        .map(|c| c.mapping)
    else {
        return ChildReply::InvalidSpec {
            problems: vec![Problem::document(format!(
                "the connector does not serve {}",
                request.capability
            ))],
        };
    };
    let globals = Globals {
        provenance: request.provenance,
        query: request.query,
        locations: request.locations,
    };
    // Mapped on a big-stack thread, as in the gateway.
    let payload = payload.to_vec();
    let run = std::thread::Builder::new()
        .name("mallgate-dry-run".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            mapping.map_reply(
                &payload,
                &Limits::default(),
                &globals,
                Instant::now() + Duration::from_secs(3600),
            )
        });
    let result = match run {
        Ok(handle) => match handle.join() {
            Ok(result) => result,
            Err(_) => return failed("overrun", "the mapping thread panicked".into()),
        },
        Err(e) => return failed("other", format!("cannot start the mapping thread: {e}")),
    };
    match result {
        Ok(page) => ChildReply::Mapped(DryRunOutput {
            not_found: page.not_found,
            selected: page.selected,
            records: page.records,
            dropped: page.dropped,
        }),
        Err(e) => {
            let (kind, reason) = parts(e);
            failed(&kind, reason)
        }
    }
}
