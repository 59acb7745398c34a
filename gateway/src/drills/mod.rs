//! Failover drills (DESIGN §8): an SRE breaks a partner on purpose — the real partner,
//! through its real endpoints — and gets a report with numbers.
//!
//! - A drill registers a fault ([`mallgate_connectors::runtime::faults`]) that the partner
//!   stack injects *after* the real endpoint is chosen, so breakers, ejection, failover,
//!   retries and stale-if-error react exactly as to a real failure.
//! - [`taps`]: what the frontends saw, per second, by outcome.
//! - [`run`]: the drill's own task, which watches the endpoints (detection, recovery) and
//!   ends the drill on time whoever is watching; [`report`]: the figures and the verdict;
//!   [`html`]: the report as a self-contained page.
//!
//! Bounded: at most `drills.max_duration_s`, one drill per partner at a time, at most 64
//! drills at once, the last 50 kept. A fault carries its own end, so neither a lost task
//! nor a reload leaves one behind; a new process (an upgrade) starts with none.

pub mod html;
pub mod report;
mod run;
pub mod taps;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mallgate_connectors::Capability;
use mallgate_connectors::runtime::faults::{ActiveFault, FaultKind, FaultTarget, Faults};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::problem::ApiError;
use crate::registry::Registry;
pub use report::Report;
use taps::{Tap, Taps};

/// Drills kept (running and ended) for `GET /admin/v1/drills`.
const KEPT: usize = 50;
/// Longest a latency fault may delay an attempt.
const MAX_LATENCY_MS: u64 = 60_000;

/// `POST /admin/v1/drills`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    pub target: DrillTarget,
    pub fault: FaultKind,
    /// Share of the target's attempts that get the fault.
    #[serde(default = "all")]
    pub rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    pub duration_s: u64,
    #[serde(default)]
    pub expect: Expect,
}

fn all() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillTarget {
    pub partner: String,
    /// One endpoint, as the status and the metrics name it (the redacted base URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
}

/// What the drill must show to pass; each limit is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Frontend requests answered non-2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frontend_errors: Option<u64>,
    /// Source answers of the target that failed (no live, cached or stale data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_answers: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_to_detect_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_to_failover_ms: Option<u64>,
    /// Partner attempts per source call that went to the partner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amplification: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_recovery_ms: Option<u64>,
}

/// Where a drill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The fault is on.
    Running,
    /// The fault is off; waiting for the endpoints to come back.
    Recovering,
    Finished,
    Aborted,
}

/// Moments of a drill.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Marks {
    pub detect: Option<Instant>,
    pub fault_end: Option<Instant>,
    pub recovered: Option<Instant>,
    pub aborted: bool,
}

/// One drill.
#[derive(Debug)]
pub struct Drill {
    pub id: String,
    pub request: DrillRequest,
    pub actor: String,
    pub started_at: jiff::Timestamp,
    pub(crate) started: Instant,
    pub(crate) fault: Arc<ActiveFault>,
    pub(crate) tap: Arc<Tap>,
    pub(crate) phase: Mutex<Phase>,
    pub(crate) marks: Mutex<Marks>,
    pub(crate) abort: Notify,
}

impl Drill {
    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn marks(&self) -> Marks {
        *self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn mark(&self, f: impl FnOnce(&mut Marks)) {
        f(&mut self.marks.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// The report as of now (live while running).
    pub fn report(&self) -> Report {
        report::build(self)
    }
}

/// How a drill ended, for the audit log.
pub type Ended = Box<dyn Fn(&Drill) + Send + Sync>;

/// The gateway's drills.
pub struct Drills {
    faults: Faults,
    taps: Arc<Taps>,
    registry: Arc<Registry>,
    max_duration: Duration,
    /// How long a drill waits, after its fault, for the endpoints to come back.
    recovery_bound: Duration,
    book: Mutex<VecDeque<Arc<Drill>>>,
    next: AtomicU64,
    ended: Mutex<Option<Arc<Ended>>>,
}

impl std::fmt::Debug for Drills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drills")
            .field("max_duration", &self.max_duration)
            .finish_non_exhaustive()
    }
}

/// A problem of a drill request: 422 with the JSON pointer of the field.
fn invalid(pointer: &str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::Rejected {
        detail: format!("the drill was not started: {pointer}: {reason}"),
        problems: vec![json!({"pointer": pointer, "reason": reason})],
    }
}

impl Drills {
    pub fn new(
        faults: Faults,
        taps: Arc<Taps>,
        registry: Arc<Registry>,
        max_duration: Duration,
    ) -> Self {
        Self {
            faults,
            taps,
            registry,
            max_duration,
            recovery_bound: max_duration.clamp(Duration::from_secs(30), Duration::from_secs(120)),
            book: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
            ended: Mutex::new(None),
        }
    }

    /// Called when a drill ends (finished or aborted): the admin API audits it.
    pub fn on_end(&self, ended: Ended) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(ended));
    }

    /// Parses a request body: unknown fields are refused with their pointer.
    pub fn parse(body: &[u8]) -> Result<DrillRequest, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let pointer = if path == "." {
                String::new()
            } else {
                format!("/{}", path.replace('.', "/"))
            };
            ApiError::BadBody {
                pointer,
                detail: format!("not a drill: {}", e.inner()),
            }
        })
    }

    /// Checks `request` against the bounds and the serving set.
    fn validate(&self, request: &DrillRequest) -> Result<(), ApiError> {
        if !(0.0..=1.0).contains(&request.rate) || request.rate.is_nan() {
            return Err(invalid("/rate", "a share between 0.0 and 1.0"));
        }
        let max = self.max_duration.as_secs();
        if request.duration_s == 0 || request.duration_s > max {
            return Err(invalid(
                "/duration_s",
                format!("between 1 and {max} seconds (drills.max_duration_s)"),
            ));
        }
        match (request.fault, request.latency_ms) {
            (FaultKind::Latency, None) => {
                return Err(invalid("/latency_ms", "a latency fault needs latency_ms"));
            }
            (FaultKind::Latency, Some(ms)) if ms == 0 || ms > MAX_LATENCY_MS => {
                return Err(invalid(
                    "/latency_ms",
                    format!("between 1 and {MAX_LATENCY_MS}"),
                ));
            }
            (FaultKind::Latency, _) | (_, None) => {}
            (_, Some(_)) => {
                return Err(invalid(
                    "/latency_ms",
                    "only a latency fault takes latency_ms",
                ));
            }
        }
        let snapshot = self.registry.load();
        let target = &request.target;
        let connectors: Vec<_> = snapshot
            .connectors
            .iter()
            .filter(|c| c.partner() == target.partner)
            .collect();
        if connectors.is_empty() {
            return Err(invalid(
                "/target/partner",
                format!("no connector of partner `{}` is serving", target.partner),
            ));
        }
        if let Some(c) = target.capability
            && !connectors.iter().any(|l| l.serves(c))
        {
            return Err(invalid(
                "/target/capability",
                format!("partner `{}` serves no `{}`", target.partner, c.name()),
            ));
        }
        if let Some(endpoint) = &target.endpoint {
            let known: Vec<String> = snapshot
                .endpoint_states()
                .iter()
                .filter(|s| s.partner == target.partner)
                .map(|s| s.redacted.clone())
                .collect();
            if !known.contains(endpoint) {
                return Err(invalid(
                    "/target/endpoint",
                    format!(
                        "not an endpoint of `{}`; its endpoints: {}",
                        target.partner,
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Starts a drill: its fault is on from now, and its task ends it on time.
    pub fn start(
        self: &Arc<Self>,
        request: DrillRequest,
        actor: &str,
    ) -> Result<Arc<Drill>, ApiError> {
        self.validate(&request)?;
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(busy) = book.iter().find(|d| {
            d.request.target.partner == request.target.partner
                && matches!(d.phase(), Phase::Running | Phase::Recovering)
        }) {
            return Err(ApiError::Conflict {
                detail: format!(
                    "drill {} is still running or recovering on partner `{}`: one drill per partner at a time",
                    busy.id, request.target.partner
                ),
            });
        }
        // Slots rotate: a slot freed by an ended drill is the last to be taken again, so
        // a request still in flight under the old drill is not credited to a new one.
        let used = self.taps.slots();
        let from = self.next.load(Ordering::Relaxed) as u8;
        let slot = (0..64u8)
            .map(|k| from.wrapping_add(k) % 64)
            .find(|s| !used.contains(s))
            .ok_or_else(|| ApiError::Conflict {
                detail: "64 drills are running: no more at once".into(),
            })?;
        let id = format!("drill-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        let duration = Duration::from_secs(request.duration_s);
        let fault = Arc::new(ActiveFault::new(
            id.clone(),
            FaultTarget {
                partner: request.target.partner.clone(),
                endpoint: request.target.endpoint.clone(),
                capability: request.target.capability,
            },
            request.fault,
            request.rate,
            Duration::from_millis(request.latency_ms.unwrap_or(0)),
            started + duration,
        ));
        let tap = Arc::new(Tap::new(slot, Arc::clone(&fault), started));
        let drill = Arc::new(Drill {
            id,
            request,
            actor: actor.to_owned(),
            started_at: jiff::Timestamp::now(),
            started,
            fault: Arc::clone(&fault),
            tap: Arc::clone(&tap),
            phase: Mutex::new(Phase::Running),
            marks: Mutex::new(Marks::default()),
            abort: Notify::new(),
        });
        // Breaker openings and ejections before the fault: what detection is judged from.
        let baseline = run::trips(&run::targets(self, &drill));
        self.taps.add(tap);
        self.faults.insert(fault);
        book.push_back(Arc::clone(&drill));
        while book.len() > KEPT {
            match book
                .iter()
                .position(|d| matches!(d.phase(), Phase::Finished | Phase::Aborted))
            {
                Some(i) => {
                    book.remove(i);
                }
                None => break,
            }
        }
        drop(book);
        tokio::spawn(run::watch(Arc::clone(self), Arc::clone(&drill), baseline));
        Ok(drill)
    }

    /// The fault registry the partner stacks read.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn get(&self, id: &str) -> Option<Arc<Drill>> {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        book.iter().find(|d| d.id == id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Drill>> {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        book.iter().cloned().collect()
    }

    /// Aborts drill `id`: while running, its fault is off at once and the drill then
    /// waits for recovery; while recovering, it stops waiting.
    pub fn abort(&self, id: &str) -> Option<Arc<Drill>> {
        let drill = self.get(id)?;
        if matches!(drill.phase(), Phase::Running | Phase::Recovering) {
            drill.mark(|m| m.aborted = true);
            self.faults.remove(&drill.id);
            drill.abort.notify_one();
        }
        Some(drill)
    }

    /// A summary line of each drill, newest first.
    pub fn summaries(&self) -> Value {
        let drills: Vec<Value> = self
            .list()
            .iter()
            .rev()
            .map(|d| {
                let r = d.report();
                json!({
                    "id": d.id, "state": r.state, "target": d.request.target,
                    "fault": d.request.fault, "started_at": r.started_at,
                    "passed": r.verdict.passed,
                })
            })
            .collect();
        json!({ "drills": drills })
    }
}
