//! Active health checks: a background thread probes every endpoint of every connector that
//! declares a `health_check`, at its interval, and feeds the result into the endpoint's
//! partner-wide state (the same state the exchanges feed). A failing probe counts towards
//! ejection; an ejected endpoint comes back only when a probe passes after its ejection
//! time. Probes go through the address guard, follow no redirects, and are not counted as
//! partner calls. A probe carries the connector's credentials like a call (API key, basic,
//! bearer, or an OAuth2 token from the partner's shared slot); a 401 or 403, or
//! credentials that cannot be had, is an auth problem shown on the endpoint's status — the
//! endpoint answered, so it is never ejected for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mallgate_connectors::runtime::auth::Applied;
use mallgate_connectors::runtime::guard::{AddressGuard, GuardedResolver};
use tokio::time::Instant;
use url::Url;

use crate::GatewayError;
use crate::registry::Registry;

/// How often the checker looks for due probes.
const TICK: Duration = Duration::from_millis(100);

/// The running checker; dropping it stops the thread.
#[derive(Debug)]
pub struct HealthChecker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthChecker {
    pub fn start(
        registry: Arc<Registry>,
        guard: Arc<dyn AddressGuard>,
    ) -> Result<Self, GatewayError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mallgate-health".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(_) => return,
                };
                runtime.block_on(run(registry, guard, flag));
            })
            .map_err(|e| GatewayError::Startup(format!("cannot start health checks: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(registry: Arc<Registry>, guard: Arc<dyn AddressGuard>, stop: Arc<AtomicBool>) {
    let Ok(client) = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&guard))))
        .no_proxy()
        .pool_max_idle_per_host(2)
        .user_agent(concat!("mallgate-health/", env!("CARGO_PKG_VERSION")))
        .build()
    else {
        return;
    };
    // When each (endpoint, path) was last probed.
    let mut last: HashMap<String, Instant> = HashMap::new();
    let mut running = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Acquire) {
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
            let interval = Duration::from_secs(u64::from(check.interval_s.max(1)));
            for route in live.connector.routes() {
                let key = format!("{} {}", route.base, check.path);
                if last.get(&key).is_some_and(|at| now < *at + interval) {
                    continue;
                }
                last.insert(key, now);
                let target = format!(
                    "{}/{}",
                    route.base.as_str().trim_end_matches('/'),
                    check.path.trim_start_matches('/')
                );
                let state = Arc::clone(&route.state);
                let timeout = Duration::from_millis(u64::from(check.timeout_ms));
                let healthy = check.healthy_statuses.clone();
                let client = client.clone();
                let guard = Arc::clone(&guard);
                let live = Arc::clone(live);
                running.spawn(async move {
                    // Without credentials (a missing secret, a token endpoint down) the
                    // probe still goes, unauthenticated: the endpoint must be reached to
                    // count as up, and its 401 is then an auth problem, not an ejection.
                    let (auth, missing) = match live.connector.probe_credentials(timeout).await {
                        Ok(auth) => (auth, None),
                        Err(e) => (Applied::None, Some(e.to_string())),
                    };
                    let probe = Probe {
                        target: &target,
                        timeout,
                        healthy: &healthy,
                        auth: &auth,
                    };
                    let (ok, error) = probe.send(&client, guard.as_ref()).await;
                    let error = match (missing, error) {
                        (Some(why), Some(e)) => Some(format!("{e} (no credentials: {why})")),
                        (Some(why), None) => Some(format!("auth problem: no credentials ({why})")),
                        (None, e) => e,
                    };
                    state.record_probe(ok, error);
                });
            }
        }
        // Reap finished probes; a probe never outlives its own timeout by much.
        while running.try_join_next().is_some() {}
        tokio::time::sleep(TICK).await;
    }
    running.abort_all();
}

/// One probe of one endpoint.
struct Probe<'a> {
    target: &'a str,
    timeout: Duration,
    healthy: &'a [u16],
    auth: &'a Applied,
}

impl Probe<'_> {
    /// (reachable, what went wrong): a 401/403 is reachable with an auth problem.
    async fn send(
        &self,
        client: &reqwest::Client,
        guard: &dyn AddressGuard,
    ) -> (bool, Option<String>) {
        let url = match Url::parse(self.target) {
            Ok(u) => u,
            Err(e) => return (false, Some(format!("not a URL: {e}"))),
        };
        if let Err(reason) = guard.check(&url) {
            return (false, Some(format!("address refused: {reason}")));
        }
        let request = self.auth.apply(client.get(url));
        match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => (
                false,
                Some(format!("no answer within {} ms", self.timeout.as_millis())),
            ),
            Ok(Err(e)) if e.is_connect() => (false, Some("connection refused".into())),
            Ok(Err(_)) => (false, Some("the exchange failed".into())),
            Ok(Ok(reply)) => match reply.status().as_u16() {
                status if self.healthy.contains(&status) => (true, None),
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
}
