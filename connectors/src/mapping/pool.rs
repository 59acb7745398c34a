//! The mapping pool: dedicated big-stack threads that decode and map partner replies, so
//! jq never runs on an async runtime thread and a deep program never overflows a small
//! stack.
//!
//! jq has no fuel: a single output can loop for a long time and no deadline check between
//! outputs will see it. The pool contains that: a worker still busy well past its job's
//! deadline is *abandoned* (counted, and it exits once its job ends) and a replacement
//! takes its place, so a runaway mapping costs at most one core for a while, never the
//! pool. Callers treat the late answer as [`ConnectorError::MappingOverrun`] and quarantine
//! the version.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{CapabilityMapping, Globals, MappedPage, STACK_BYTES};
use crate::decode::Limits;
use crate::error::ConnectorError;

/// How long past its deadline a job may run before its worker is replaced.
pub const ABANDON_AFTER: Duration = Duration::from_secs(1);

struct Job {
    deadline: Instant,
    work: Box<dyn FnOnce() + Send>,
}

/// What a worker is doing, for the supervisor.
struct Slot {
    busy_until: Mutex<Option<Instant>>,
    abandoned: AtomicBool,
}

struct Shared {
    queue: Mutex<Receiver<Job>>,
    slots: Mutex<Vec<Arc<Slot>>>,
    stopping: AtomicBool,
    abandoned_total: AtomicU64,
    completed_total: AtomicU64,
    queued: AtomicU64,
    run_micros: AtomicU64,
    /// Live workers may not exceed this (abandoned ones included).
    max_workers: usize,
}

/// Counters of the pool, for status pages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub workers: usize,
    pub completed_total: u64,
    pub abandoned_total: u64,
    /// Jobs waiting for a thread now.
    pub queued: u64,
    /// Time threads spent on jobs, in microseconds.
    pub run_micros_total: u64,
}

/// A fixed set of big-stack mapping threads with a bounded queue.
pub struct MappingPool {
    sender: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MappingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappingPool")
            .field("stats", &self.stats())
            .finish()
    }
}

fn spawn_worker(shared: &Arc<Shared>) -> std::io::Result<()> {
    let slot = Arc::new(Slot {
        busy_until: Mutex::new(None),
        abandoned: AtomicBool::new(false),
    });
    let mut slots = shared.slots.lock().unwrap_or_else(|p| p.into_inner());
    let index = slots.len();
    let worker_shared = Arc::clone(shared);
    let worker_slot = Arc::clone(&slot);
    std::thread::Builder::new()
        .name(format!("mallgate-map-{index}"))
        .stack_size(STACK_BYTES)
        .spawn(move || worker(&worker_shared, &worker_slot))?;
    slots.push(slot);
    Ok(())
}

fn worker(shared: &Shared, slot: &Slot) {
    loop {
        let job = {
            let queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.recv()
        };
        let Ok(job) = job else { break };
        shared.queued.fetch_sub(1, Ordering::Relaxed);
        *slot.busy_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(job.deadline);
        let started = Instant::now();
        // A panic in a job drops its result sender: the caller sees a failed mapping, the
        // worker lives on.
        let _ = catch_unwind(AssertUnwindSafe(job.work));
        shared.run_micros.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        *slot.busy_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        shared.completed_total.fetch_add(1, Ordering::Relaxed);
        if slot.abandoned.load(Ordering::Acquire) || shared.stopping.load(Ordering::Acquire) {
            break;
        }
    }
    let mut slots = shared.slots.lock().unwrap_or_else(|p| p.into_inner());
    slots.retain(|s| !std::ptr::eq(Arc::as_ptr(s), slot));
}

fn supervise(shared: &Arc<Shared>) {
    while !shared.stopping.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let stuck: Vec<Arc<Slot>> = {
            let slots = shared.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .iter()
                .filter(|s| {
                    !s.abandoned.load(Ordering::Acquire)
                        && s.busy_until
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .is_some_and(|d| now > d + ABANDON_AFTER)
                })
                .cloned()
                .collect()
        };
        for slot in stuck {
            let live = shared.slots.lock().unwrap_or_else(|p| p.into_inner()).len();
            if live >= shared.max_workers {
                break;
            }
            slot.abandoned.store(true, Ordering::Release);
            shared.abandoned_total.fetch_add(1, Ordering::Relaxed);
            // If no thread can be started, the pool goes on with one worker fewer.
            let _ = spawn_worker(shared);
        }
    }
}

impl MappingPool {
    /// `threads` workers, a queue of `queue` jobs waiting at most. Up to `threads` extra
    /// workers may replace abandoned ones at any time.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (sender, receiver) = sync_channel(queue.max(1));
        let shared = Arc::new(Shared {
            queue: Mutex::new(receiver),
            slots: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            abandoned_total: AtomicU64::new(0),
            completed_total: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            run_micros: AtomicU64::new(0),
            max_workers: threads * 2,
        });
        for _ in 0..threads {
            spawn_worker(&shared)?;
        }
        let sup = Arc::clone(&shared);
        let supervisor = std::thread::Builder::new()
            .name("mallgate-map-supervisor".into())
            .spawn(move || supervise(&sup))?;
        Ok(Self {
            sender: Some(sender),
            shared,
            supervisor: Some(supervisor),
        })
    }

    /// Runs `work` on a pool thread (any partner program: a request body, a query value).
    /// The receiver yields its result; a full queue is refused at once (the caller sheds
    /// load, nothing blocks). A job still running 1 s past `deadline` loses its thread.
    pub fn execute<T: Send + 'static>(
        &self,
        deadline: Instant,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, ConnectorError> {
        let (tx, rx) = oneshot::channel();
        let work = Box::new(move || {
            let _ = tx.send(work());
        });
        let sender = self.sender.as_ref().ok_or_else(busy)?;
        // Counted before the send: a worker may take the job (and count it out) at once.
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match sender.try_send(Job { deadline, work }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                Err(busy())
            }
        }
    }

    /// Decodes and maps `body` on a pool thread. The receiver yields the page, or an error;
    /// a full queue is refused at once.
    pub fn map_reply(
        &self,
        mapping: Arc<CapabilityMapping>,
        body: Vec<u8>,
        limits: Limits,
        globals: Arc<Globals>,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<MappedPage, ConnectorError>>, ConnectorError> {
        self.execute(deadline, move || {
            mapping.map_reply(&body, &limits, &globals, deadline)
        })
    }

    /// Like [`map_reply`](Self::map_reply), waiting for the answer on this thread (not for
    /// async code: use the receiver there).
    pub fn map_reply_blocking(
        &self,
        mapping: Arc<CapabilityMapping>,
        body: Vec<u8>,
        limits: Limits,
        globals: Arc<Globals>,
        deadline: Instant,
    ) -> Result<MappedPage, ConnectorError> {
        self.map_reply(mapping, body, limits, globals, deadline)?
            .blocking_recv()
            .map_err(|_| ConnectorError::MappingOverrun {
                reason: "the mapping thread failed".into(),
            })?
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            workers: self
                .shared
                .slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
            completed_total: self.shared.completed_total.load(Ordering::Relaxed),
            abandoned_total: self.shared.abandoned_total.load(Ordering::Relaxed),
            queued: self.shared.queued.load(Ordering::Relaxed),
            run_micros_total: self.shared.run_micros.load(Ordering::Relaxed),
        }
    }
}

fn busy() -> ConnectorError {
    ConnectorError::MappingBusy
}

impl Drop for MappingPool {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        // Closing the queue ends idle workers; busy ones end after their job.
        self.sender.take();
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
    }
}
