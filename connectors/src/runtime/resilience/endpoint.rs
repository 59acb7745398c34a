//! One endpoint's partner-wide state: its breaker, its ejection, probe results, figures.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::time::Instant;

use super::{Breaker, BreakerState, Ejection, ExchangeOutcome, ResilienceSettings};

/// One endpoint of a partner: its breaker, its ejection and its figures. Keyed by URL in
/// the partner's resources, so it outlives connector versions.
#[derive(Debug)]
pub struct EndpointState {
    /// The partner it belongs to (for telemetry).
    pub partner: String,
    pub url: String,
    /// The URL as logs and metric labels show it (no query, no user info).
    pub redacted: String,
    pub breaker: Breaker,
    pub ejection: Ejection,
    /// Whether an active health check watches it (then only a probe ends an ejection).
    probed: std::sync::atomic::AtomicBool,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    last_probe: Mutex<Option<ProbeResult>>,
    /// Durations of the exchanges it answered (calls, not probes), read at scrape time.
    pub exchange_seconds: prometheus_client::metrics::histogram::Histogram,
}

/// The breaker and ejection figures before an outcome, to log what it changed.
struct Before {
    breaker: BreakerState,
    opened: u64,
    ejected: u64,
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
    pub fn new(partner: &str, url: &str, config: &ResilienceSettings) -> Self {
        Self {
            partner: partner.to_owned(),
            url: url.to_owned(),
            redacted: url::Url::parse(url)
                .map_or_else(|_| String::new(), |u| crate::runtime::guard::redact(&u)),
            breaker: Breaker::new(config.breaker_failures, config.breaker_open),
            ejection: Ejection::new(config.eject_failures, config.eject_base, config.eject_max),
            probed: std::sync::atomic::AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_probe: Mutex::new(None),
            exchange_seconds: crate::runtime::telemetry::exchange_histogram(),
        }
    }

    fn before(&self) -> Before {
        Before {
            breaker: self.breaker.state(),
            opened: self.breaker.opened_total(),
            ejected: self.ejection.ejected_total(),
        }
    }

    /// Logs the breaker and ejection transitions since `before`.
    fn log_transitions(&self, before: Before) {
        let opened = self.breaker.opened_total();
        if opened > before.opened {
            tracing::warn!(
                target: "mallgate::resilience",
                partner = %self.partner,
                endpoint = %self.redacted,
                breaker.state = "open",
                "circuit breaker opened"
            );
        } else if before.breaker != BreakerState::Closed
            && self.breaker.state() == BreakerState::Closed
        {
            tracing::info!(
                target: "mallgate::resilience",
                partner = %self.partner,
                endpoint = %self.redacted,
                breaker.state = "closed",
                "circuit breaker closed"
            );
        }
        if self.ejection.ejected_total() > before.ejected {
            tracing::warn!(
                target: "mallgate::resilience",
                partner = %self.partner,
                endpoint = %self.redacted,
                ejected_for_ms = self
                    .ejection
                    .ejected_until()
                    .map_or(0, |u| u.saturating_duration_since(Instant::now()).as_millis() as u64),
                "endpoint ejected"
            );
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
        let before = self.before();
        self.record_quietly(outcome);
        self.log_transitions(before);
    }

    fn record_quietly(&self, outcome: ExchangeOutcome) {
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
        let before = self.before();
        match outcome {
            ExchangeOutcome::Success => self.breaker.on_probe_success(),
            ExchangeOutcome::ConnectFailed | ExchangeOutcome::Failed => {
                self.breaker.on_probe_failure();
            }
        }
        self.log_transitions(before);
    }

    /// An active health check's result. From the first probe on, an ejected endpoint
    /// returns only through a passing probe.
    pub fn record_probe(&self, ok: bool, error: Option<String>) {
        let before = self.before();
        let was_ejected = self.ejection.is_ejected(true);
        self.set_probed(true);
        if ok {
            self.ejection.on_success();
            self.ejection.end_if_due();
        } else {
            self.ejection.on_failure();
        }
        self.log_transitions(before);
        if was_ejected && !self.ejection.is_ejected(true) {
            tracing::info!(
                target: "mallgate::resilience",
                partner = %self.partner,
                endpoint = %self.redacted,
                "endpoint back in rotation after a passing health check"
            );
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
            url: with_url.then(|| self.redacted.clone()),
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
