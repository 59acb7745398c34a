//! Active health checks: a background service probes every endpoint of every connector that
//! declares a `health_check`, at its interval (the operator's `resilience` default unless
//! the connector says), and feeds the result into the endpoint's partner-wide state (the
//! same state the exchanges feed). A probe goes through the endpoint's own stack — the
//! address guard, the breaker (a failed probe counts like a failed call), the connector's
//! TLS identity, its redirect policy (at most 5, each re-checked by the guard) — and is
//! not counted as a partner call. A failing probe counts towards
//! ejection; an ejected endpoint comes back only when a probe passes after its ejection
//! time. A probe carries the connector's credentials like a call (API key, basic, bearer,
//! or an OAuth2 token from the partner's shared slot); a 401 or 403, or credentials that
//! cannot be had, is an auth problem shown on the endpoint's status — the endpoint
//! answered, so it is never ejected for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mallgate_connectors::ConnectorError;
use mallgate_connectors::runtime::auth::Applied;
use mallgate_connectors::runtime::http::Reply;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use crate::registry::Registry;

/// How often the checker looks for due probes.
const TICK: Duration = Duration::from_millis(100);

/// The health checker: a pingora background service, stopped with the server.
#[derive(Debug)]
pub struct HealthChecker {
    registry: Arc<Registry>,
}

impl HealthChecker {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // When each (endpoint, path) was last probed.
        let mut last: HashMap<String, Instant> = HashMap::new();
        let mut running = tokio::task::JoinSet::new();
        loop {
            probe_due(&self.registry, &mut last, &mut running);
            // Reap finished probes; a probe never outlives its own timeout by much.
            while running.try_join_next().is_some() {}
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => break,
            }
        }
        running.abort_all();
    }
}

/// Starts the probes that are due.
fn probe_due(
    registry: &Registry,
    last: &mut HashMap<String, Instant>,
    running: &mut tokio::task::JoinSet<()>,
) {
    let snapshot = registry.load();
    let now = Instant::now();
    for live in &snapshot.connectors {
        let Some(check) = &live.spec().health_check else {
            // Nothing probes these: an ejection ends when its time is up.
            for route in live.connector.routes() {
                route.state.set_probed(false);
            }
            continue;
        };
        let defaults = live.connector.resources().config().resilience;
        let interval = check.interval_s.map_or(defaults.health_interval, |s| {
            Duration::from_secs(u64::from(s.max(1)))
        });
        let timeout = check.timeout_ms.map_or(defaults.health_timeout, |ms| {
            Duration::from_millis(u64::from(ms))
        });
        for (index, route) in live.connector.routes().iter().enumerate() {
            let key = format!("{} {}", route.base, check.path);
            if last.get(&key).is_some_and(|at| now < *at + interval) {
                continue;
            }
            last.insert(key, now);
            let state = Arc::clone(&route.state);
            let healthy = check.healthy_statuses.clone();
            let path = check.path.clone();
            let live = Arc::clone(live);
            running.spawn(async move {
                // Without credentials (a missing secret, a token endpoint down) the
                // probe still goes, unauthenticated: the endpoint must be reached to
                // count as up, and its 401 is then an auth problem, not an ejection.
                let (auth, missing) = match live.connector.probe_credentials(timeout).await {
                    Ok(auth) => (auth, None),
                    Err(e) => (Applied::None, Some(e.to_string())),
                };
                let reply = live.connector.probe(index, &path, auth, timeout).await;
                let (ok, error) = verdict(reply, &healthy, timeout);
                let error = match (missing, error) {
                    (Some(why), Some(e)) => Some(format!("{e} (no credentials: {why})")),
                    (Some(why), None) => Some(format!("auth problem: no credentials ({why})")),
                    (None, e) => e,
                };
                state.record_probe(ok, error);
            });
        }
    }
}

/// (reachable, what went wrong): a 401/403 is reachable with an auth problem.
fn verdict(
    reply: Result<Reply, ConnectorError>,
    healthy: &[u16],
    timeout: Duration,
) -> (bool, Option<String>) {
    match reply {
        Err(ConnectorError::Timeout { .. } | ConnectorError::DeadlineExceeded { .. }) => (
            false,
            Some(format!("no answer within {} ms", timeout.as_millis())),
        ),
        Err(ConnectorError::Tls { reason, .. }) => (false, Some(format!("TLS failed: {reason}"))),
        Err(e) if e.is_connect_failure() => (false, Some("connection refused".into())),
        Err(ConnectorError::AddressDenied { reason, .. }) => {
            (false, Some(format!("address refused: {reason}")))
        }
        Err(_) => (false, Some("the exchange failed".into())),
        Ok(reply) => match reply.status.as_u16() {
            status if healthy.contains(&status) => (true, None),
            status @ (401 | 403) => (
                true,
                Some(format!(
                    "auth problem: answered HTTP {status} to the connector's credentials"
                )),
            ),
            status => (false, Some(format!("answered HTTP {status}"))),
        },
    }
}
