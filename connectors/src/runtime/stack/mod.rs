//! The partner stack (DESIGN §7): every page of a call goes through `tower` layers composed
//! once per connector version with [`ServiceBuilder`], outermost first (token requests and
//! health probes go through the per-endpoint part: breaker, attempt timeout, client):
//!
//! ```text
//! deadline → 429 block → load shed → concurrency limit → rate limit (governor)
//!   → retry (TpsBudget) → hedge → endpoint selection (priority, weight, ejection)
//!     → per endpoint: breaker → attempt timeout → pooled client (rustls)
//! ```
//!
//! The state behind the layers lives elsewhere, so a new version of a connector reuses it:
//! endpoint state (breaker, ejection, figures) is the partner's, keyed by endpoint URL;
//! admission state (concurrency slots, rate bucket, retry budget) is the connector's own
//! ([`AdmissionState`], keyed by connector id and its admission policies; the 429 block by
//! connector id alone), so a partner's two connectors never reconfigure each other. Time is
//! tokio's throughout: every layer is tested under paused time.

pub mod admission;
pub mod endpoint;
pub mod hedge;
pub mod retry;
pub mod share;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder};
use serde::Serialize;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder};
use url::Url;

pub use self::admission::{Limiter, TokioClock};
pub use self::endpoint::{Attempt, EndpointStack, endpoint_stack};
pub use self::share::FleetShare;
use super::auth::Applied;
use super::guard::AddressGuard;
use super::http::Reply;
use super::resilience::{ResilienceSettings, Route};
use super::signing::{self, Signer};
use crate::error::ConnectorError;
use crate::spec::Policies;

/// The composed stack of a connector version.
pub type Stack = BoxCloneSyncService<Exchange, Reply, ConnectorError>;

/// A request rendered once and sendable to any endpoint: the connector re-bases it onto
/// the endpoint each attempt selects.
#[derive(Clone)]
pub struct Prepared {
    pub client: Client,
    pub method: Method,
    /// Query pairs added to a templated URL (template, walk, auth in the query).
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<(Vec<u8>, &'static str)>,
    pub auth: Applied,
    /// `false` for a URL followed exactly as given (a `Link` or next URL): no template
    /// query or body is added to it.
    pub templated: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Query values and headers may carry keys: only their names are shown.
        f.debug_struct("Prepared")
            .field("method", &self.method)
            .field(
                "query",
                &self.query.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The request for `target`.
    pub fn build(&self, target: &Url) -> RequestBuilder {
        if let Applied::Signed(signer) = &self.auth {
            return self.build_signed(target, signer);
        }
        let mut request = self.client.request(self.method.clone(), target.clone());
        if self.templated {
            if !self.query.is_empty() {
                request = request.query(&self.query);
            }
            if let Some((bytes, kind)) = &self.body {
                request = request.header("content-type", *kind).body(bytes.clone());
            }
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if !self.auth.present_in(target) {
            request = self.auth.apply(request);
        }
        request
    }
}

impl Prepared {
    /// The request for `target`, signed over its final URL and body, now.
    fn build_signed(&self, target: &Url, signer: &Signer) -> RequestBuilder {
        let mut url = target.clone();
        let body = if self.templated {
            // Sent in its canonical form, so the query signed is the query sent (a form
            // encoder would send a space as `+`, which the partner reads as a plus).
            let mut pairs = signing::query_pairs(url.query().unwrap_or_default());
            pairs.extend(
                self.query
                    .iter()
                    .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes())),
            );
            let query = signing::canonical_query(pairs);
            url.set_query((!query.is_empty()).then_some(query.as_str()));
            self.body.as_ref()
        } else {
            None
        };
        let signature = signer.headers(
            self.method.as_str(),
            &url,
            body.map(|(bytes, kind)| (bytes.as_slice(), *kind)),
            &self.headers,
            jiff::Timestamp::now(),
        );
        let mut request = self.client.request(self.method.clone(), url);
        if let Some((bytes, kind)) = body {
            request = request.header("content-type", *kind).body(bytes.clone());
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        for (name, value) in signature {
            request = request.header(name.as_str(), value.expose());
        }
        request
    }
}

/// What the attempts of one exchange share: the endpoints tried (a retry and a hedge
/// prefer others), the requests sent and the endpoint that answered last.
#[derive(Debug, Default)]
pub struct Trace {
    tried: Mutex<Vec<usize>>,
    requests: AtomicU32,
    endpoint: Mutex<Option<String>>,
}

impl Trace {
    pub fn tried(&self) -> Vec<usize> {
        self.tried.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn mark(&self, endpoint: usize) {
        let mut tried = self.tried.lock().unwrap_or_else(|p| p.into_inner());
        if !tried.contains(&endpoint) {
            tried.push(endpoint);
        }
    }

    /// An attempt goes out.
    fn sent(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt to `endpoint` (redacted) finished: of a hedged pair, the first to finish
    /// is the one that answers (the other is dropped).
    fn answered(&self, endpoint: String) {
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(endpoint);
    }

    /// HTTP requests sent for the exchange (attempts, retries and hedges).
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The endpoint (redacted) of the last attempt that finished.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One HTTP exchange through the stack.
#[derive(Clone)]
pub struct Exchange {
    pub prepared: Arc<Prepared>,
    /// The URL as built (against the first endpoint, or a link).
    pub url: Url,
    /// What follows the endpoint's base URL, when `url` is on one of the version's
    /// endpoints (`None`: a link elsewhere, called as it is).
    pub rest: Option<String>,
    pub idempotent: bool,
    /// The capability call's deadline: no attempt, back-off or hedge outlives it.
    pub deadline: Instant,
    pub trace: Arc<Trace>,
    /// The capability called (`None`: a token request or a health probe).
    pub capability: Option<crate::spec::Capability>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A next-page link may carry a key in its query: the URL is shown redacted.
        f.debug_struct("Exchange")
            .field("url", &super::guard::redact(&self.url))
            .field("idempotent", &self.idempotent)
            .field("prepared", &self.prepared)
            .finish_non_exhaustive()
    }
}

/// Counters of a connector's stack (shown in the partner report and the admin status).
#[derive(Debug, Default, Serialize)]
pub struct GuardrailCounters {
    /// Exchanges admitted (first attempts).
    pub exchanges: AtomicU64,
    pub retries: AtomicU64,
    pub hedges: AtomicU64,
    /// Retries and hedges the budget refused.
    pub budget_refused: AtomicU64,
    pub shed: AtomicU64,
    /// Exchanges refused by the rate limit or a 429 block.
    pub rate_limited: AtomicU64,
    /// Refused connections moved to another endpoint at no cost to the budget.
    pub failovers: AtomicU64,
}

/// [`GuardrailCounters`] read at one moment, to add up (a partner's connectors).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuardrailFigures {
    pub exchanges: u64,
    pub retries: u64,
    pub hedges: u64,
    pub budget_refused: u64,
    pub shed: u64,
    pub rate_limited: u64,
    pub failovers: u64,
}

impl GuardrailCounters {
    pub fn figures(&self) -> GuardrailFigures {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GuardrailFigures {
            exchanges: read(&self.exchanges),
            retries: read(&self.retries),
            hedges: read(&self.hedges),
            budget_refused: read(&self.budget_refused),
            shed: read(&self.shed),
            rate_limited: read(&self.rate_limited),
            failovers: read(&self.failovers),
        }
    }
}

impl std::ops::AddAssign for GuardrailFigures {
    fn add_assign(&mut self, other: Self) {
        self.exchanges += other.exchanges;
        self.retries += other.retries;
        self.hedges += other.hedges;
        self.budget_refused += other.budget_refused;
        self.shed += other.shed;
        self.rate_limited += other.rate_limited;
        self.failovers += other.failovers;
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The partner's 429 against one connector: it holds for every version of the connector,
/// whatever their policies (a partner that said `Retry-After` is not called by the next
/// version either).
#[derive(Debug, Default)]
pub struct RateBlock {
    until: Mutex<Option<Instant>>,
}

/// The admission state of one connector's stack: it outlives versions that keep the
/// same admission policies.
pub struct AdmissionState {
    /// This replica's share of the connector's `max_concurrency` slots.
    slots: share::SlotShare,
    /// Its share of the rate limit.
    rate: share::RateShare,
    budget: TpsBudget,
    block: Arc<RateBlock>,
    turn: AtomicU64,
    pub counters: GuardrailCounters,
}

impl std::fmt::Debug for AdmissionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionState")
            .field("slots", &self.slots.size())
            .field("rps", &self.rate.rps())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The policies [`AdmissionState`] is built from, as a key: versions agreeing on them share it.
pub fn admission_key(connector: &str, policies: &Policies) -> String {
    format!(
        "{connector} c{} r{:?} b{:?} p{}",
        policies.max_concurrency,
        policies.rate_limit_rps,
        policies.rate_limit_burst,
        policies.retry.budget_percent.unwrap_or(u32::MAX),
    )
}

impl AdmissionState {
    /// The state for `policies`, under the connector's 429 `block`.
    /// `fleet`: the replicas sharing the partner's limits.
    pub fn new(
        policies: &Policies,
        config: &ResilienceSettings,
        block: Arc<RateBlock>,
        fleet: &FleetShare,
    ) -> Self {
        let max_concurrency = policies.max_concurrency.max(1);
        let percent = policies
            .retry
            .budget_percent
            .unwrap_or(config.retry_budget_percent);
        Self {
            slots: share::SlotShare::new(max_concurrency, fleet.clone()),
            rate: share::RateShare::new(
                policies.rate_limit_rps,
                policies.rate_limit_burst,
                fleet.clone(),
            ),
            // tower asserts its arguments; these are in range by construction.
            budget: TpsBudget::new(
                Duration::from_secs(10),
                config.retry_reserve_per_s.min(1000),
                budget_share(percent),
            ),
            block,
            turn: AtomicU64::new(0),
            counters: GuardrailCounters::default(),
        }
    }

    fn next_turn(&self) -> u64 {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// A first attempt: it earns the budget its share of retries.
    fn deposit(&self) {
        bump(&self.counters.exchanges);
        self.budget.deposit();
    }

    /// A retry or a hedge asks the budget; false when it is spent.
    fn withdraw(&self) -> bool {
        let ok = self.budget.withdraw();
        if !ok {
            bump(&self.counters.budget_refused);
        }
        ok
    }

    /// How long the partner's 429 still blocks this connector, if it does.
    fn blocked_for(&self) -> Option<Duration> {
        let until = (*self.block.until.lock().unwrap_or_else(|p| p.into_inner()))?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }

    /// The partner answered 429: nothing more goes until `retry_after` has passed.
    fn block_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut blocked = self.block.until.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.is_none_or(|b| b < until) {
            *blocked = Some(until);
        }
    }

    /// Whether one more request may go beyond the first attempt (a retry or a hedge): no
    /// 429 block on, and a rate token now (they are partner requests like any other; a
    /// retry that would have to wait for one is not worth its back-off).
    fn may_send_more(&self) -> bool {
        if self.blocked_for().is_some() {
            return false;
        }
        match &self.rate.limiter() {
            Some(limiter) if admission::try_take(limiter).is_err() => {
                bump(&self.counters.rate_limited);
                false
            }
            _ => true,
        }
    }
}

/// A load-shed refusal as the connector error it is (and counted); any other error is
/// the stack's own.
fn admission_error(shared: Arc<AdmissionState>) -> impl Fn(BoxError) -> ConnectorError + Clone {
    move |error| match error.downcast::<ConnectorError>() {
        Ok(e) => *e,
        Err(e) if e.is::<tower::load_shed::error::Overloaded>() => {
            bump(&shared.counters.shed);
            ConnectorError::Shed {
                limit: shared.slots.size(),
            }
        }
        Err(e) => ConnectorError::Request {
            reason: e.to_string(),
        },
    }
}

/// What a version's stack is built from.
#[derive(Debug, Clone)]
pub struct StackParts {
    pub shared: Arc<AdmissionState>,
    pub policies: Policies,
    pub routes: Arc<[Route]>,
    /// One per route, same order.
    pub endpoints: Arc<[EndpointStack]>,
    /// For links outside the version's endpoints: timeout and client, no breaker.
    pub elsewhere: EndpointStack,
    pub guard: Arc<dyn AddressGuard>,
}

/// `percent` as tower's `retry_percent`. tower prices a withdrawal at `(1.0 / share) as
/// isize` deposits, and `1.0 / 0.1f32` is 9.99999985: 10% would buy one retry per 9 calls
/// (11.1%). A share a hair below the exact one truncates to the intended price.
fn budget_share(percent: u32) -> f32 {
    (percent.min(1000) as f32) / 100.0 * (1.0 - 1e-6)
}

/// Composes a version's stack, in DESIGN §7's order.
pub fn build(parts: StackParts) -> Stack {
    let StackParts {
        shared,
        policies,
        routes,
        endpoints,
        elsewhere,
        guard,
    } = parts;
    let select = endpoint::Select::new(routes, endpoints, elsewhere, guard, Arc::clone(&shared));
    let stack = ServiceBuilder::new()
        .layer(admission::DeadlineLayer)
        .layer(admission::BlockLayer::new(Arc::clone(&shared)))
        .map_err(admission_error(Arc::clone(&shared)))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            Arc::clone(&shared.slots.slots),
        ))
        .layer(admission::RateLayer::new(Arc::clone(&shared)))
        .layer(tower::retry::RetryLayer::new(retry::RetryPolicy::new(
            Arc::clone(&shared),
            &policies.retry,
        )))
        .layer(hedge::HedgeLayer::new(Arc::clone(&shared), &policies))
        .service(select);
    BoxCloneSyncService::new(stack)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod budget_tests {
    use std::time::Duration;

    /// The budget buys exactly `percent` retries per hundred calls: tower's price of a
    /// withdrawal is `(1.0 / share) as isize`, which a plain `0.1f32` truncates to 9.
    #[test]
    fn the_retry_budget_is_the_percent_it_says() {
        use tower::retry::budget::{Budget, TpsBudget};
        for percent in [5u32, 10, 20, 25, 50] {
            // No reserve: only deposits buy withdrawals.
            let budget = TpsBudget::new(Duration::from_secs(10), 0, super::budget_share(percent));
            for _ in 0..100 {
                budget.deposit();
            }
            let mut bought = 0;
            while budget.withdraw() {
                bought += 1;
            }
            assert_eq!(bought, percent, "{percent}%");
        }
    }
}
