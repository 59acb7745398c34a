//! Outlier ejection of one endpoint, with exponential back-off.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

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

    /// A passing probe after the ejection's time brings the endpoint back.
    pub(super) fn end_if_due(&self) {
        let mut inner = self.lock();
        if inner.ejected_until.is_some_and(|u| Instant::now() >= u) {
            inner.ejected_until = None;
        }
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
