//! The circuit breaker of one endpoint: closed, open, one half-open probe at a time.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// A breaker's state, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    consecutive_failures: u32,
    open_until: Instant,
    /// The ticket of the half-open probe in flight, if one is.
    probe: Option<u64>,
    tickets: u64,
    opened_total: u64,
}

/// A circuit breaker: `failures` consecutive failures open it; after `open_for` one probe
/// goes through (half-open); the probe's success closes it, its failure opens it again.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    open_for: Duration,
    inner: Mutex<BreakerInner>,
}

/// Whether the breaker lets an exchange through, and whether it is the half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Pass,
    /// The half-open probe; its ticket gives it back if it ends without a verdict.
    Probe(ProbeTicket),
    Refused,
}

/// Who holds the half-open probe: only its holder can give it back, so a late or a
/// cancelled exchange never frees another one's probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTicket(u64);

impl Breaker {
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            failures: failures.max(1),
            open_for,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                open_until: Instant::now(),
                probe: None,
                tickets: 0,
                opened_total: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now (an open breaker past its time reports half-open).
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if Instant::now() >= inner.open_until => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Whether an exchange would be let through now (without taking the probe).
    pub fn would_admit(&self) -> bool {
        let inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open => Instant::now() >= inner.open_until,
            BreakerState::HalfOpen => inner.probe.is_none(),
        }
    }

    /// Lets an exchange through, or not; in half-open only one probe at a time.
    pub fn admit(&self) -> Admission {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Admission::Pass,
            BreakerState::Open if Instant::now() < inner.open_until => Admission::Refused,
            BreakerState::Open | BreakerState::HalfOpen if inner.probe.is_none() => {
                inner.state = BreakerState::HalfOpen;
                inner.tickets += 1;
                inner.probe = Some(inner.tickets);
                Admission::Probe(ProbeTicket(inner.tickets))
            }
            _ => Admission::Refused,
        }
    }

    /// [`admit`](Self::admit), unless `bypass` (a health probe passes an open breaker:
    /// it is how recovery is seen, and it never takes the half-open probe).
    pub fn admit_unless(&self, bypass: bool) -> Admission {
        if bypass {
            Admission::Pass
        } else {
            self.admit()
        }
    }

    /// A passing health probe: it clears the failure count of a closed breaker, but only
    /// a real exchange (the half-open probe) closes an open one.
    pub fn on_probe_success(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::Closed {
            inner.consecutive_failures = 0;
        }
    }

    pub fn on_success(&self) {
        let mut inner = self.lock();
        inner.state = BreakerState::Closed;
        inner.consecutive_failures = 0;
        inner.probe = None;
    }

    pub fn on_failure(&self) {
        let mut inner = self.lock();
        self.fail(&mut inner);
        inner.probe = None;
    }

    /// A failed health probe: it counts and opens like a failed call, but leaves the
    /// half-open probe (if one is out) to its exchange.
    pub fn on_probe_failure(&self) {
        let mut inner = self.lock();
        self.fail(&mut inner);
    }

    fn fail(&self, inner: &mut BreakerInner) {
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let reopen = inner.state == BreakerState::HalfOpen;
        if reopen || inner.consecutive_failures >= self.failures {
            if inner.state != BreakerState::Open {
                inner.opened_total += 1;
            }
            inner.state = BreakerState::Open;
            inner.open_until = Instant::now() + self.open_for;
        }
    }

    /// A probe that ended without a verdict (cancelled, or a hedge lost the race): it is
    /// given back, if it is still the one out.
    pub fn on_abandoned(&self, ticket: ProbeTicket) {
        let mut inner = self.lock();
        if inner.probe == Some(ticket.0) {
            inner.probe = None;
        }
    }

    pub fn opened_total(&self) -> u64 {
        self.lock().opened_total
    }
}
