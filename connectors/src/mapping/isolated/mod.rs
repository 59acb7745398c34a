//! The sandbox pool: partner programs run in supervised worker processes, never in the
//! gateway (DESIGN §5, second line of defence).
//!
//! jaq cannot be bounded in process: a deep `fromjson` overflows any stack and aborts the
//! process, `"x" * 1e10` allocates gigabytes inside one output, a triple product spins
//! without yielding an output to check a deadline between. So every program of a
//! partner-owned connector runs in one of a fixed set of worker processes (the gateway
//! re-executing itself, see [`worker_main`]), each under rlimits with an empty environment.
//! The supervisor — one thread with its own small runtime, so no gateway thread ever waits
//! on a pipe — hands each worker one job at a time over its pipes and enforces from outside
//! what the worker cannot enforce on itself:
//! - a **deadline**: a worker still busy past its job's deadline (plus a short grace) is
//!   killed and replaced; the job fails as [`ConnectorError::MappingOverrun`];
//! - an **output cap**: an answer frame over the cap is refused before it is read, and the
//!   worker replaced;
//! - **death**: a worker that dies (stack overflow, address-space limit, CPU limit) fails
//!   only its job, named by the signal, and is respawned for the next job.
//!
//! The caller counts overruns per connector version; a version that overruns repeatedly is
//! quarantined by the gateway. A job whose deadline passed in the queue is not run.

pub mod wire;
pub(crate) mod worker;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

pub use self::wire::{Answer, JobHeader, ProgramSource, Task};
pub use self::worker::worker_main;
use crate::error::ConnectorError;
use crate::mapping::Globals;

/// How the pool starts and bounds its workers.
#[derive(Debug, Clone)]
pub struct IsolationConfig {
    /// The worker executable and the arguments that make it a worker (the rlimit flags
    /// are appended).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub workers: usize,
    /// Jobs waiting for a worker at most; beyond, calls are shed at once.
    pub queue: usize,
    pub address_space_bytes: u64,
    /// A worker's lifetime CPU budget; it retires cleanly after half of it.
    pub cpu_seconds: u64,
    /// Largest answer a worker may send for one job.
    pub max_answer_bytes: usize,
    /// How long past a job's deadline a worker may still answer before it is killed.
    pub kill_grace: Duration,
    /// The longest one job may run, whatever time its call has left: a page of a partner's
    /// reply maps in milliseconds, so a job at this limit is a runaway.
    pub max_run: Duration,
}

impl IsolationConfig {
    /// A pool of `workers` processes of `program args...` with the default limits.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>, workers: usize) -> Self {
        Self {
            program: program.into(),
            args,
            workers: workers.max(1),
            queue: 1024,
            // Room for the worker thread's 256 MiB stack reservation and a realistic
            // mapping; far below what hurts the host.
            address_space_bytes: 1536 * 1024 * 1024,
            cpu_seconds: 600,
            max_answer_bytes: 32 * 1024 * 1024,
            kill_grace: Duration::from_millis(50),
            max_run: Duration::from_secs(2),
        }
    }
}

/// A job is run only with at least this much of its call's time left.
const MIN_RUN: Duration = Duration::from_millis(20);
/// Extra time a job may take when its worker compiles the version's document first.
const COMPILE_ALLOWANCE: Duration = Duration::from_secs(1);

/// Counters of the pool, for the status page and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IsolationStats {
    pub workers: usize,
    pub jobs_total: u64,
    /// Workers started, the first ones included.
    pub spawned_total: u64,
    /// Workers killed at a job's deadline or for an answer over the cap.
    pub killed_total: u64,
    /// Workers that died during a job (a signal or an exit).
    pub died_total: u64,
    /// Workers that retired after using their CPU budget.
    pub retired_total: u64,
    /// Jobs not run because their deadline passed while they waited.
    pub expired_total: u64,
    /// Jobs waiting for a worker now.
    pub queued: u64,
    /// Time workers spent on jobs, in microseconds.
    pub run_micros_total: u64,
}

#[derive(Debug, Default)]
struct Counters {
    jobs: AtomicU64,
    spawned: AtomicU64,
    killed: AtomicU64,
    died: AtomicU64,
    retired: AtomicU64,
    expired: AtomicU64,
    run_micros: AtomicU64,
}

struct Job {
    set: u64,
    source: Arc<ProgramSource>,
    task: Task,
    globals: Arc<Globals>,
    payload: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Answer, ConnectorError>>,
}

/// Supervised sandbox worker processes. Dropping the pool ends its workers.
pub struct IsolatedPool {
    sender: Option<mpsc::Sender<Job>>,
    counters: Arc<Counters>,
    workers: usize,
    max_run: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for IsolatedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolatedPool")
            .field("stats", &self.stats())
            .finish()
    }
}

fn sandbox_error(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Sandbox {
        reason: reason.into(),
    }
}

fn overrun(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::MappingOverrun {
        reason: reason.into(),
    }
}

impl IsolatedPool {
    /// Starts the supervisor thread; workers start on first use (and after each death), so
    /// a bad worker program shows as failed jobs, never as a failed start.
    pub fn start(config: IsolationConfig) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let counters = Arc::new(Counters::default());
        let workers = config.workers.max(1);
        let max_run = config.max_run;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Mutex::new(receiver));
        let supervisor_counters = Arc::clone(&counters);
        let config = Arc::new(config);
        let thread = std::thread::Builder::new()
            .name("mallgate-sandbox-supervisor".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let slots: Vec<_> = (0..workers)
                        .map(|_| {
                            tokio::spawn(slot(
                                Arc::clone(&config),
                                Arc::clone(&shared),
                                Arc::clone(&supervisor_counters),
                            ))
                        })
                        .collect();
                    for s in slots {
                        let _ = s.await;
                    }
                });
            })?;
        Ok(Self {
            sender: Some(sender),
            counters,
            workers,
            max_run,
            thread: Some(thread),
        })
    }

    /// How many worker processes run jobs at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The longest one job may run.
    pub fn max_run(&self) -> Duration {
        self.max_run
    }

    /// Runs `task` of program set `set` (compiled from `source` in the worker on first
    /// use) on `payload`, within `deadline` and at most [`max_run`](Self::max_run) from the
    /// moment a worker takes it. A full queue is refused at once ([`ConnectorError::MappingBusy`]);
    /// an overrun or a worker's death is [`ConnectorError::MappingOverrun`].
    pub async fn run(
        &self,
        set: u64,
        source: &Arc<ProgramSource>,
        task: Task,
        globals: &Arc<Globals>,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Answer, ConnectorError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            set,
            source: Arc::clone(source),
            task,
            globals: Arc::clone(globals),
            payload,
            deadline,
            reply,
        };
        let sender = self.sender.as_ref().ok_or(ConnectorError::MappingBusy)?;
        sender
            .try_send(job)
            .map_err(|_| ConnectorError::MappingBusy)?;
        answer
            .await
            .map_err(|_| sandbox_error("the sandbox supervisor stopped"))?
    }

    pub fn stats(&self) -> IsolationStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        IsolationStats {
            workers: self.workers,
            jobs_total: l(&c.jobs),
            spawned_total: l(&c.spawned),
            killed_total: l(&c.killed),
            died_total: l(&c.died),
            retired_total: l(&c.retired),
            expired_total: l(&c.expired),
            queued: self
                .sender
                .as_ref()
                .map_or(0, |s| (s.max_capacity() - s.capacity()) as u64),
            run_micros_total: l(&c.run_micros),
        }
    }
}

impl Drop for IsolatedPool {
    fn drop(&mut self) {
        // Closing the queue ends every slot after its job; workers are killed on drop.
        self.sender.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One running worker process and what it holds compiled.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    loaded: HashSet<u64>,
}

fn spawn(config: &IsolationConfig) -> Result<Worker, ConnectorError> {
    let mut child = Command::new(&config.program)
        .args(&config.args)
        .arg("--address-space-bytes")
        .arg(config.address_space_bytes.to_string())
        .arg("--cpu-seconds")
        .arg(config.cpu_seconds.to_string())
        // Partner code must not read the gateway's environment (secrets live there).
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| sandbox_error(format!("cannot start {}: {e}", config.program.display())))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| sandbox_error("no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| sandbox_error("no stdout"))?;
    Ok(Worker {
        child,
        stdin,
        stdout: BufReader::new(stdout),
        loaded: HashSet::new(),
    })
}

/// One worker slot: jobs from the shared queue, one at a time, to its worker process.
async fn slot(
    config: Arc<IsolationConfig>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    counters: Arc<Counters>,
) {
    let mut worker: Option<Worker> = None;
    loop {
        let Some(job) = queue.lock().await.recv().await else {
            return;
        };
        if job.reply.is_closed() {
            continue;
        }
        // Too little of its call's time left to be worth a worker: the wait in the queue
        // (another version's doing, perhaps) is not this job's program's fault.
        if job.deadline.saturating_duration_since(Instant::now()) < MIN_RUN {
            counters.expired.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(Err(ConnectorError::MappingBusy));
            continue;
        }
        counters.jobs.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = run_job(&config, &counters, &mut worker, &job).await;
        counters.run_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let _ = job.reply.send(result);
    }
}

/// How a job's exchange with its worker ended, when it did not answer.
enum Broken {
    /// Past the deadline, or an answer over the cap: the supervisor kills the worker.
    Killed(String),
    /// The pipe broke: the worker died on its own.
    Died,
}

async fn run_job(
    config: &IsolationConfig,
    counters: &Counters,
    slot: &mut Option<Worker>,
    job: &Job,
) -> Result<Answer, ConnectorError> {
    // At most twice: a worker that forgot the set gets its document again.
    for _ in 0..2 {
        if slot.is_none() {
            *slot = Some(spawn(config)?);
            counters.spawned.fetch_add(1, Ordering::Relaxed);
        }
        let Some(worker) = slot.as_mut() else {
            return Err(sandbox_error("no worker"));
        };
        // The run budget starts now, at the worker: queueing and spawning are not the
        // program's. A budget cut short by the call's own deadline (a slow partner reply
        // left little time) is a timeout, never an overrun held against the version.
        let dispatched = Instant::now();
        let run_until = job.deadline.min(dispatched + config.max_run);
        let full_budget = job.deadline >= dispatched + config.max_run;
        let load = (!worker.loaded.contains(&job.set)).then(|| (*job.source).clone());
        let compiling = load.is_some();
        let header = JobHeader {
            set: job.set,
            load,
            task: job.task.clone(),
            globals: (*job.globals).clone(),
            deadline_ms: u64::try_from(run_until.saturating_duration_since(dispatched).as_millis())
                .unwrap_or(u64::MAX),
        };
        let header = serde_json::to_vec(&header).map_err(|e| sandbox_error(e.to_string()))?;
        let bytes =
            wire::frame(&[&header, &job.payload]).map_err(|e| sandbox_error(e.to_string()))?;
        // The worker starts its own clock after compiling; so does the kill, roughly.
        let allowance = if compiling {
            COMPILE_ALLOWANCE
        } else {
            Duration::ZERO
        };
        let kill_at = tokio::time::Instant::from_std(run_until + config.kill_grace + allowance);
        let exchange = exchange(worker, &bytes, config.max_answer_bytes);
        let outcome = match tokio::time::timeout_at(kill_at, exchange).await {
            Err(_) => Err(Broken::Killed(
                "the mapping ran past its deadline and its sandbox worker was killed".into(),
            )),
            Ok(result) => result,
        };
        let reply = match outcome {
            Ok(reply) => reply,
            Err(broken) => {
                let Some(mut dead) = slot.take() else {
                    return Err(sandbox_error("no worker"));
                };
                return Err(match broken {
                    Broken::Killed(reason) => {
                        counters.killed.fetch_add(1, Ordering::Relaxed);
                        let _ = dead.child.start_kill();
                        let _ = dead.child.wait().await;
                        if full_budget || !reason.contains("deadline") {
                            overrun(reason)
                        } else {
                            ConnectorError::DeadlineExceeded { pages: 0 }
                        }
                    }
                    Broken::Died => {
                        counters.died.fetch_add(1, Ordering::Relaxed);
                        overrun(format!(
                            "the sandbox worker {}",
                            death(&mut dead.child).await
                        ))
                    }
                });
            }
        };
        if reply.retiring {
            counters.retired.fetch_add(1, Ordering::Relaxed);
            if let Some(mut old) = slot.take() {
                let _ = tokio::time::timeout(Duration::from_secs(1), old.child.wait()).await;
            }
        } else if let Some(worker) = slot.as_mut() {
            worker.loaded.insert(job.set);
        }
        match reply.answer {
            Answer::Unknown => {
                if let Some(worker) = slot.as_mut() {
                    worker.loaded.remove(&job.set);
                }
            }
            // The worker's own deadline check fired on a budget the call had cut short.
            Answer::Failed { kind, reason }
                if kind == "overrun" && !full_budget && reason.contains("deadline") =>
            {
                return Err(ConnectorError::DeadlineExceeded { pages: 0 });
            }
            answer => return Ok(answer),
        }
    }
    Err(sandbox_error("the worker did not keep the program set"))
}

/// Writes one job and reads its answer.
async fn exchange(worker: &mut Worker, job: &[u8], cap: usize) -> Result<wire::Reply, Broken> {
    worker
        .stdin
        .write_all(job)
        .await
        .map_err(|_| Broken::Died)?;
    worker.stdin.flush().await.map_err(|_| Broken::Died)?;
    let mut len = [0u8; 4];
    worker
        .stdout
        .read_exact(&mut len)
        .await
        .map_err(|_| Broken::Died)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > cap {
        return Err(Broken::Killed(format!(
            "the sandbox worker's answer is {len} bytes; the cap is {cap}"
        )));
    }
    let mut body = vec![0u8; len];
    worker
        .stdout
        .read_exact(&mut body)
        .await
        .map_err(|_| Broken::Died)?;
    serde_json::from_slice(&body)
        .map_err(|e| Broken::Killed(format!("the sandbox worker's answer is unreadable: {e}")))
}

/// How a worker whose pipe broke ended: its exit status, waited for briefly.
async fn death(child: &mut Child) -> String {
    use std::os::unix::process::ExitStatusExt;
    let status = match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
        Ok(Ok(status)) => status,
        _ => {
            let _ = child.start_kill();
            return "stopped answering and was killed".into();
        }
    };
    match status.signal() {
        Some(6) => {
            "died of SIGABRT (an allocation over its address-space limit, or a stack overflow)"
                .into()
        }
        Some(9) => "died of SIGKILL (its CPU-time limit)".into(),
        Some(11) => "died of SIGSEGV (a stack overflow)".into(),
        Some(24) => "died of SIGXCPU (its CPU-time limit)".into(),
        Some(sig) => format!("died of signal {sig}"),
        None => format!("exited with {}", status.code().unwrap_or(-1)),
    }
}
