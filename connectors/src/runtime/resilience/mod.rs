//! Resilience state (DESIGN §7) the partner stack's layers ([`super::stack`]) decide with:
//! per endpoint, a circuit breaker (closed, open, one half-open probe) and outlier
//! ejection with exponential back-off, fed by the exchanges and by active health checks;
//! the endpoint selection over a version's routes; the retry back-off; and the operator's
//! [`ResilienceSettings`]. Endpoint state is the partner's, keyed by URL in
//! [`PartnerResources`](super::PartnerResources), so a new connector version inherits its
//! breakers and ejections.
//!
//! Time is tokio's, so the unit tests run on paused time.

mod breaker;
mod ejection;
mod endpoint;
#[cfg(test)]
mod tests;

pub use breaker::{Admission, Breaker, BreakerState, ProbeTicket};
pub use ejection::Ejection;
pub use endpoint::{EndpointReport, EndpointState, ProbeResult};

use std::sync::Arc;
use std::time::Duration;

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
