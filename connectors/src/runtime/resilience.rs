//! Resilience state (DESIGN §7) the partner stack's layers ([`super::stack`]) decide with:
//! per endpoint, a circuit breaker (closed, open, one half-open probe) and outlier
//! ejection with exponential back-off, fed by the exchanges and by active health checks;
//! the endpoint selection over a version's routes; the retry back-off; and the operator's
//! [`ResilienceSettings`]. Endpoint state is the partner's, keyed by URL in
//! [`PartnerResources`](super::PartnerResources), so a new connector version inherits its
//! breakers and ejections.
//!
//! Time is tokio's, so the unit tests run on paused time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The operator's resilience settings (the gateway config's `resilience:`), the same for
/// every partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilienceSettings {
    /// Consecutive failed exchanges that open an endpoint's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses before it lets one probe through.
    pub breaker_open: Duration,
    /// Consecutive connection failures (or failed health checks) that eject an endpoint.
    pub eject_failures: u32,
    /// The first ejection's length; each further one doubles it, up to `eject_max`.
    pub eject_base: Duration,
    pub eject_max: Duration,
    /// Retries always allowed per second, whatever the budget says (the reserve).
    pub retry_reserve_per_s: u32,
    /// Retries (and hedges) as a share of exchanges, for connectors that do not say.
    pub retry_budget_percent: u32,
    /// Health-check interval and timeout, for health checks that do not say.
    pub health_interval: Duration,
    pub health_timeout: Duration,
}

impl Default for ResilienceSettings {
    fn default() -> Self {
        Self {
            breaker_failures: 5,
            breaker_open: Duration::from_secs(2),
            eject_failures: 2,
            eject_base: Duration::from_secs(1),
            eject_max: Duration::from_secs(30),
            retry_reserve_per_s: 1,
            retry_budget_percent: 10,
            health_interval: Duration::from_secs(10),
            health_timeout: Duration::from_secs(1),
        }
    }
}

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

#[derive(Debug)]
struct EjectionInner {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    /// Ejections in a row without a clean period between them (decides the back-off).
    streak: u32,
    last_ejected: Option<Instant>,
    ejected_total: u64,
}

/// Outlier ejection: `failures` consecutive connection failures or failed health checks
/// take an endpoint out of selection for `base * 2^(streak-1)` (at most `max`). An ejected
/// endpoint with a health check returns only when a probe passes after its time; without
/// one, when its time is up. A streak ends after `max` without an ejection.
#[derive(Debug)]
pub struct Ejection {
    failures: u32,
    base: Duration,
    max: Duration,
    inner: Mutex<EjectionInner>,
}

impl Ejection {
    pub fn new(failures: u32, base: Duration, max: Duration) -> Self {
        Self {
            failures: failures.max(1),
            base,
            max: max.max(base),
            inner: Mutex::new(EjectionInner {
                consecutive_failures: 0,
                ejected_until: None,
                streak: 0,
                last_ejected: None,
                ejected_total: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EjectionInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the endpoint is out of selection now. With `probed`, only a passing health
    /// check brings it back.
    pub fn is_ejected(&self, probed: bool) -> bool {
        let inner = self.lock();
        match inner.ejected_until {
            None => false,
            Some(_) if probed => true,
            Some(until) => Instant::now() < until,
        }
    }

    /// Until when the endpoint is ejected (`None`: it is not).
    pub fn ejected_until(&self) -> Option<Instant> {
        self.lock().ejected_until
    }

    /// A failure that counts towards ejection. Returns the ejection's length if it ejected.
    pub fn on_failure(&self) -> Option<Duration> {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let now = Instant::now();
        if inner.consecutive_failures < self.failures
            || inner.ejected_until.is_some_and(|u| now < u)
        {
            return None;
        }
        if inner
            .last_ejected
            .is_some_and(|at| now.saturating_duration_since(at) > self.max * 2)
        {
            inner.streak = 0;
        }
        inner.streak = inner.streak.saturating_add(1);
        let factor = 1u32 << (inner.streak - 1).min(16);
        let length = self.base.saturating_mul(factor).min(self.max);
        inner.ejected_until = Some(now + length);
        inner.last_ejected = Some(now);
        inner.ejected_total += 1;
        Some(length)
    }

    /// A success: clears the failure count; an ejected endpoint returns once its time is up.
    pub fn on_success(&self) {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        if inner.ejected_until.is_some_and(|u| Instant::now() >= u) {
            inner.ejected_until = None;
        }
    }

    pub fn ejected_total(&self) -> u64 {
        self.lock().ejected_total
    }
}

/// One endpoint of a partner: its breaker, its ejection and its figures. Keyed by URL in
/// the partner's resources, so it outlives connector versions.
#[derive(Debug)]
pub struct EndpointState {
    pub url: String,
    pub breaker: Breaker,
    pub ejection: Ejection,
    /// Whether an active health check watches it (then only a probe ends an ejection).
    probed: std::sync::atomic::AtomicBool,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    last_probe: Mutex<Option<ProbeResult>>,
}

/// The last active health check.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An endpoint as reported in `/v1/partners` and the admin status.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// Shown to operators only (the public API keeps partner addresses to itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub priority: u32,
    pub weight: u32,
    pub available: bool,
    pub breaker: BreakerState,
    pub breaker_opened_total: u64,
    pub ejected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_ms: Option<u64>,
    pub ejected_total: u64,
    pub requests: u64,
    pub failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeResult>,
}

impl EndpointState {
    pub fn new(url: &str, config: &ResilienceSettings) -> Self {
        Self {
            url: url.to_owned(),
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            ejection: Ejection::new(config.eject_failures, config.eject_base, config.eject_max),
            probed: std::sync::atomic::AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_probe: Mutex::new(None),
        }
    }

    pub fn set_probed(&self, probed: bool) {
        self.probed.store(probed, Ordering::Relaxed);
    }

    /// Selectable now: not ejected, and its breaker would let an exchange through.
    pub fn available(&self) -> bool {
        !self
            .ejection
            .is_ejected(self.probed.load(Ordering::Relaxed))
            && self.breaker.would_admit()
    }

    /// An exchange's outcome. `connect` failures also count towards ejection.
    pub fn record(&self, outcome: ExchangeOutcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            ExchangeOutcome::Success => {
                self.breaker.on_success();
                self.ejection.on_success();
            }
            ExchangeOutcome::ConnectFailed => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.on_failure();
                self.ejection.on_failure();
            }
            ExchangeOutcome::Failed => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.on_failure();
            }
        }
    }

    /// A health probe's exchange, for the breaker (the probe's verdict on ejection is
    /// [`record_probe`](Self::record_probe)). Probes are not calls: the figures stay.
    pub fn record_probe_exchange(&self, outcome: ExchangeOutcome) {
        match outcome {
            ExchangeOutcome::Success => self.breaker.on_probe_success(),
            ExchangeOutcome::ConnectFailed | ExchangeOutcome::Failed => {
                self.breaker.on_probe_failure();
            }
        }
    }

    /// An active health check's result. From the first probe on, an ejected endpoint
    /// returns only through a passing probe.
    pub fn record_probe(&self, ok: bool, error: Option<String>) {
        self.set_probed(true);
        if ok {
            self.ejection.on_success();
            // A probe after the ejection's time brings the endpoint back.
            let mut inner = self.ejection.lock();
            if inner.ejected_until.is_some_and(|u| Instant::now() >= u) {
                inner.ejected_until = None;
            }
        } else {
            self.ejection.on_failure();
        }
        *self.last_probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(ProbeResult {
            ok,
            at: jiff::Timestamp::now().to_string(),
            error,
        });
    }

    pub fn report(&self, priority: u32, weight: u32, with_url: bool) -> EndpointReport {
        let until = self.ejection.ejected_until();
        let now = Instant::now();
        EndpointReport {
            url: with_url.then(|| {
                url::Url::parse(&self.url)
                    .map_or_else(|_| String::new(), |u| super::guard::redact(&u))
            }),
            priority,
            weight,
            available: self.available(),
            breaker: self.breaker.state(),
            breaker_opened_total: self.breaker.opened_total(),
            ejected: self
                .ejection
                .is_ejected(self.probed.load(Ordering::Relaxed)),
            ejected_for_ms: until
                .filter(|u| *u > now)
                .map(|u| (u - now).as_millis() as u64),
            ejected_total: self.ejection.ejected_total(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_probe: self
                .last_probe
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// How one exchange went, for the endpoint's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// An answer that says the endpoint works (2xx, and 4xx other than 408/429).
    Success,
    /// The connection was refused or could not be made.
    ConnectFailed,
    /// A timeout, a reset, a 5xx.
    Failed,
}

/// A connector version's view of one endpoint: the shared state plus its priority and
/// weight in this version.
#[derive(Debug, Clone)]
pub struct Route {
    pub state: Arc<EndpointState>,
    pub base: url::Url,
    pub priority: u32,
    pub weight: u32,
}

/// Picks the endpoint for an attempt: the lowest priority group with an available endpoint,
/// weighted round robin within it, skipping `exclude` (endpoints this exchange already
/// tried). `None` when nothing is available.
pub fn select<'a>(routes: &'a [Route], exclude: &[usize], turn: u64) -> Option<(usize, &'a Route)> {
    let mut priorities: Vec<u32> = routes.iter().map(|r| r.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    for p in priorities {
        let group: Vec<(usize, &Route)> = routes
            .iter()
            .enumerate()
            .filter(|(i, r)| r.priority == p && !exclude.contains(i) && r.state.available())
            .collect();
        let total: u64 = group.iter().map(|(_, r)| u64::from(r.weight.max(1))).sum();
        if total == 0 {
            continue;
        }
        let mut point = turn % total;
        for (i, r) in &group {
            let w = u64::from(r.weight.max(1));
            if point < w {
                return Some((*i, r));
            }
            point -= w;
        }
    }
    None
}

/// Whether to retry after a failed attempt: the request is idempotent, the error is worth
/// it, attempts remain, and the back-off ends well before the deadline. The budget is
/// asked after this (asking spends it). A 429 never gets here: its `Retry-After` blocks
/// the partner instead.
pub fn retry_delay(
    idempotent: bool,
    retryable: bool,
    attempt: u32,
    max_attempts: u32,
    backoff: Duration,
    remaining: Duration,
) -> Option<Duration> {
    if !idempotent || !retryable || attempt >= max_attempts {
        return None;
    }
    let wait = backoff.saturating_mul(1 << (attempt - 1).min(8));
    // Leave at least as long again for the retry itself.
    (wait.saturating_mul(2) < remaining).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_probes_and_closes() {
        let b = Breaker::new(3, Duration::from_secs(2));
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure();
        b.on_failure();
        assert_eq!(b.admit(), Admission::Pass, "two failures keep it closed");
        b.on_success();
        b.on_failure();
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Closed, "a success reset the count");
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admission::Refused);
        assert!(!b.would_admit());
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(b.admit(), Admission::Refused, "still open before its time");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(matches!(b.admit(), Admission::Probe(_)), "one probe");
        assert_eq!(b.admit(), Admission::Refused, "only one probe at a time");
        b.on_failure();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "a failed probe opens it again"
        );
        assert_eq!(b.opened_total(), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        let Admission::Probe(first) = b.admit() else {
            panic!("a probe after the open time");
        };
        b.on_abandoned(first);
        let Admission::Probe(second) = b.admit() else {
            panic!("an abandoned probe frees the slot");
        };
        b.on_abandoned(first);
        assert_eq!(
            b.admit(),
            Admission::Refused,
            "a stale ticket frees nothing: the second probe is still out"
        );
        b.on_abandoned(second);
        assert!(matches!(b.admit(), Admission::Probe(_)));
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admission::Pass);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_backs_off_and_returns() {
        let e = Ejection::new(2, Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(e.on_failure(), None, "one failure is not enough");
        assert_eq!(e.on_failure(), Some(Duration::from_secs(1)));
        assert!(e.is_ejected(false));
        assert_eq!(e.on_failure(), None, "no new ejection while ejected");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !e.is_ejected(false),
            "back after its time without health checks"
        );
        assert!(
            e.is_ejected(true),
            "with health checks, only a probe brings it back"
        );
        // Still failing: the next ejection doubles, then doubles again, up to the cap.
        assert_eq!(e.on_failure(), Some(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(e.on_failure(), Some(Duration::from_secs(4)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(e.on_failure(), Some(Duration::from_secs(8)));
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(e.on_failure(), Some(Duration::from_secs(8)), "capped");
        tokio::time::advance(Duration::from_secs(8)).await;
        e.on_success();
        assert!(
            !e.is_ejected(true),
            "a success after its time ends the ejection"
        );
        assert_eq!(e.ejected_total(), 5);
        // A long clean period ends the streak: the next ejection is short again.
        tokio::time::advance(Duration::from_secs(60)).await;
        e.on_failure();
        assert_eq!(e.on_failure(), Some(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn probes_end_ejections_only_after_their_time() {
        let s = EndpointState::new("http://127.0.0.1:1", &ResilienceSettings::default());
        s.set_probed(true);
        s.record_probe(false, Some("refused".into()));
        s.record_probe(false, Some("refused".into()));
        assert!(!s.available(), "two failed probes eject");
        s.record_probe(true, None);
        assert!(
            !s.available(),
            "a passing probe before the ejection's time changes nothing"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        s.record_probe(true, None);
        assert!(s.available());
    }

    #[test]
    fn retry_decisions() {
        let ms = Duration::from_millis;
        assert_eq!(retry_delay(true, true, 1, 2, ms(25), ms(500)), Some(ms(25)));
        assert_eq!(
            retry_delay(true, true, 2, 3, ms(25), ms(500)),
            Some(ms(50)),
            "backs off"
        );
        assert_eq!(
            retry_delay(false, true, 1, 2, ms(25), ms(500)),
            None,
            "not idempotent"
        );
        assert_eq!(
            retry_delay(true, false, 1, 2, ms(25), ms(500)),
            None,
            "not retryable"
        );
        assert_eq!(
            retry_delay(true, true, 2, 2, ms(25), ms(500)),
            None,
            "attempts used"
        );
        assert_eq!(
            retry_delay(true, true, 1, 2, ms(300), ms(500)),
            None,
            "never past the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn selection_fails_over_by_priority_and_weighs() {
        let config = ResilienceSettings::default();
        let route = |url: &str, priority, weight| Route {
            state: Arc::new(EndpointState::new(url, &config)),
            base: url::Url::parse(url).expect("url"),
            priority,
            weight,
        };
        let routes = vec![
            route("http://127.0.0.1:1", 0, 3),
            route("http://127.0.0.1:2", 0, 1),
            route("http://127.0.0.1:3", 1, 1),
        ];
        let picks: Vec<usize> = (0..8)
            .filter_map(|t| select(&routes, &[], t).map(|(i, _)| i))
            .collect();
        assert_eq!(
            picks,
            vec![0, 0, 0, 1, 0, 0, 0, 1],
            "weights 3:1 in the first group"
        );
        assert_eq!(
            select(&routes, &[0], 0).map(|(i, _)| i),
            Some(1),
            "excluded"
        );
        for _ in 0..5 {
            routes[0].state.record(ExchangeOutcome::Failed);
            routes[1].state.record(ExchangeOutcome::ConnectFailed);
        }
        assert_eq!(
            select(&routes, &[], 0).map(|(i, _)| i),
            Some(2),
            "fails over"
        );
        assert!(select(&routes, &[2], 0).is_none(), "nothing left");
    }
}
