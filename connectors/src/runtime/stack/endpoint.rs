//! Endpoint selection and the per-endpoint stack.
//!
//! [`Select`] picks the endpoint of each attempt: the lowest priority group with an
//! available endpoint (not ejected, breaker letting it through), weighted round robin
//! within it, preferring endpoints this exchange has not tried yet. A refused connection
//! (or a TLS failure: nothing reached the partner's application) moves to the next
//! untried endpoint at once, without spending the retry budget.
//!
//! Per endpoint, [`endpoint_stack`] composes: breaker (admission, the half-open probe,
//! the outcome fed to the endpoint's partner-wide state) → attempt timeout → injected
//! faults ([`crate::runtime::faults`], drills) → the pooled client. Token requests and health probes go through the same per-endpoint stacks.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::StatusCode;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;
use url::Url;

use super::{AdmissionState, Exchange, bump};
use crate::error::ConnectorError;
use crate::runtime::Transport;
use crate::runtime::faults::{FaultPoint, Faults};
use crate::runtime::guard::{AddressGuard, redact};
use crate::runtime::http::{Reply, send};
use crate::runtime::resilience::{
    Admission, EndpointState, ExchangeOutcome, ProbeTicket, Route, select,
};

/// One attempt at one endpoint.
#[derive(Clone)]
pub struct Attempt {
    pub exchange: Exchange,
    pub target: Url,
    /// The attempt's own timeout (a health probe's); `None`: the connector's `timeout_ms`.
    pub timeout: Option<Duration>,
    /// A health probe: it passes an open breaker (it is how recovery is seen) and its
    /// outcome feeds the breaker, not the endpoint's call figures.
    pub probe: bool,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A next-page link may carry a key in its query: the target is shown redacted.
        f.debug_struct("Attempt")
            .field("target", &redact(&self.target))
            .field("timeout", &self.timeout)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

/// The per-endpoint stack.
pub type EndpointStack = BoxCloneSyncService<Attempt, Reply, ConnectorError>;

/// Breaker → attempt timeout → injected faults → client, for the endpoint whose state is
/// `state` (`None`: a URL outside the connector's endpoints, which has no breaker).
pub fn endpoint_stack(
    state: Option<Arc<EndpointState>>,
    timeout: Duration,
    max_bytes: usize,
    transport: Option<Arc<dyn Transport>>,
    faults: (&Faults, &str),
) -> EndpointStack {
    let point = FaultPoint {
        faults: faults.0.clone(),
        partner: Arc::from(faults.1),
        endpoint: state.as_ref().map(|s| s.redacted.clone()),
    };
    let stack = ServiceBuilder::new()
        .option_layer(state.map(BreakerLayer::new))
        .layer(AttemptTimeoutLayer { timeout })
        .layer(point)
        .service(Client {
            max_bytes,
            transport,
        });
    BoxCloneSyncService::new(stack)
}

/// What an exchange's result says about the endpoint.
pub fn outcome(result: &Result<Reply, ConnectorError>) -> ExchangeOutcome {
    match result {
        Ok(reply)
            if reply.status.is_server_error() || reply.status == StatusCode::REQUEST_TIMEOUT =>
        {
            ExchangeOutcome::Failed
        }
        // 2xx, 4xx and a 429: the endpoint works (a 429 blocks the connector instead).
        Ok(_) => ExchangeOutcome::Success,
        Err(e) if e.is_connect_failure() => ExchangeOutcome::ConnectFailed,
        Err(_) => ExchangeOutcome::Failed,
    }
}

#[derive(Debug, Clone)]
pub struct BreakerLayer {
    state: Arc<EndpointState>,
}

impl BreakerLayer {
    pub fn new(state: Arc<EndpointState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Breaker<S> {
    inner: S,
    state: Arc<EndpointState>,
}

/// Holds the half-open probe until the attempt has a verdict; an attempt dropped before
/// (a hedge that lost, a deadline) gives the probe back.
struct ProbeSlot {
    state: Arc<EndpointState>,
    ticket: Option<ProbeTicket>,
}

impl ProbeSlot {
    /// The attempt has its verdict: nothing to give back.
    fn settle(&mut self) {
        self.ticket = None;
    }
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.state.breaker.on_abandoned(ticket);
        }
    }
}

impl<S> Service<Attempt> for Breaker<S>
where
    S: Service<Attempt, Response = Reply, Error = ConnectorError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<Reply, ConnectorError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let health_probe = attempt.probe;
        let ticket = match self.state.breaker.admit_unless(health_probe) {
            Admission::Refused => {
                return Box::pin(async { Err(ConnectorError::NoEndpoint) });
            }
            Admission::Probe(ticket) => Some(ticket),
            Admission::Pass => None,
        };
        let mut slot = ProbeSlot {
            state: Arc::clone(&self.state),
            ticket,
        };
        let future = self.inner.call(attempt);
        Box::pin(async move {
            let started = Instant::now();
            let result = future.await;
            let outcome = outcome(&result);
            if health_probe {
                slot.state.record_probe_exchange(outcome);
            } else {
                slot.state.record(outcome);
                slot.state
                    .exchange_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            // The verdict is in: the probe is settled, not abandoned.
            slot.settle();
            result
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
}

impl AttemptTimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The attempt's timeout: the connector's `timeout_ms` (or the probe's), cut to what is
/// left of the call's deadline.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Attempt> for AttemptTimeout<S>
where
    S: Service<Attempt, Response = Reply, Error = ConnectorError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<Reply, ConnectorError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let left = attempt
            .exchange
            .deadline
            .saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Box::pin(async { Err(ConnectorError::DeadlineExceeded { pages: 0 }) });
        }
        let timeout = attempt.timeout.unwrap_or(self.timeout).min(left);
        let url = redact(&attempt.target);
        // From here the request goes out: it counts, and its endpoint answers for the
        // exchange if it is the one that finishes.
        let trace = Arc::clone(&attempt.exchange.trace);
        trace.sent();
        let span = client_span(&attempt, &url);
        let future = self.inner.call(attempt);
        Box::pin(
            async move {
                let result = tokio::time::timeout(timeout, future).await.unwrap_or(Err(
                    ConnectorError::Timeout {
                        url: url.clone(),
                        timeout_ms: timeout.as_millis() as u64,
                    },
                ));
                trace.answered(url);
                record_result(&tracing::Span::current(), &result);
                result
            }
            .instrument(span),
        )
    }
}

/// The client span of one attempt, per the OpenTelemetry HTTP client conventions
/// (`url.full` redacted: no query, no user info). Health probes have none: they are not
/// part of any request, and a trace per probe would drown the ones that are.
fn client_span(attempt: &Attempt, url: &str) -> tracing::Span {
    if attempt.probe {
        return tracing::Span::none();
    }
    let method = attempt.exchange.prepared.method.as_str();
    tracing::info_span!(
        target: "mallgate::exchange",
        "exchange",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        server.address = attempt.target.host_str().unwrap_or_default(),
        server.port = attempt.target.port_or_known_default().unwrap_or_default(),
        url.full = url,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// The attempt's result on its span: the status, or the error's type.
fn record_result(span: &tracing::Span, result: &Result<Reply, ConnectorError>) {
    match result {
        Ok(reply) => {
            span.record("http.response.status_code", reply.status.as_u16());
            if reply.status.is_server_error() {
                span.record("error.type", reply.status.as_str());
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(e) => {
            span.record("error.type", e.code());
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The pooled client: sends the attempt and reads the reply under the size cap (through
/// the configured [`Transport`] when there is one).
#[derive(Debug, Clone)]
pub struct Client {
    max_bytes: usize,
    transport: Option<Arc<dyn Transport>>,
}

impl Service<Attempt> for Client {
    type Response = Reply;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<Reply, ConnectorError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let max_bytes = self.max_bytes;
        let transport = self.transport.clone();
        Box::pin(async move {
            let mut request = attempt.exchange.prepared.build(&attempt.target);
            // Inside the attempt's client span: its context goes to the partner.
            for (name, value) in crate::runtime::telemetry::propagation_headers() {
                request = request.header(name, value);
            }
            match transport {
                None => send(request, &attempt.target, max_bytes).await,
                Some(transport) => {
                    let request = request.build().map_err(|e| ConnectorError::Request {
                        reason: e.without_url().to_string(),
                    })?;
                    transport.send(request, max_bytes).await
                }
            }
        })
    }
}

/// Endpoint selection with failover (the innermost per-exchange layer).
#[derive(Debug, Clone)]
pub struct Select {
    routes: Arc<[Route]>,
    endpoints: Arc<[EndpointStack]>,
    elsewhere: EndpointStack,
    guard: Arc<dyn AddressGuard>,
    shared: Arc<AdmissionState>,
}

impl Select {
    pub fn new(
        routes: Arc<[Route]>,
        endpoints: Arc<[EndpointStack]>,
        elsewhere: EndpointStack,
        guard: Arc<dyn AddressGuard>,
        shared: Arc<AdmissionState>,
    ) -> Self {
        Self {
            routes,
            endpoints,
            elsewhere,
            guard,
            shared,
        }
    }

    /// `rest` on `route`'s base URL, checked by the guard.
    fn target(
        &self,
        route: &Route,
        exchange: &Exchange,
        rest: &str,
    ) -> Result<Url, ConnectorError> {
        let base = route.base.as_str().trim_end_matches('/');
        let target = if exchange.url.as_str().strip_prefix(base) == Some(rest) {
            exchange.url.clone()
        } else {
            let text = format!("{base}{rest}");
            Url::parse(&text).map_err(|e| ConnectorError::Request {
                reason: format!("`{}` is not a URL: {e}", redact(&route.base)),
            })?
        };
        self.guard
            .check(&target)
            .map_err(|reason| ConnectorError::AddressDenied {
                url: redact(&target),
                reason,
            })?;
        Ok(target)
    }
}

impl Service<Exchange> for Select {
    type Response = Reply;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<Reply, ConnectorError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, exchange: Exchange) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let Some(rest) = exchange.rest.clone() else {
                let attempt = Attempt {
                    target: exchange.url.clone(),
                    exchange: exchange.clone(),
                    timeout: None,
                    probe: false,
                };
                return this.elsewhere.clone().oneshot(attempt).await;
            };
            loop {
                let turn = this.shared.next_turn();
                let tried = exchange.trace.tried();
                let pick = select(&this.routes, &tried, turn)
                    .or_else(|| select(&this.routes, &[], turn))
                    .map(|(i, _)| i);
                let Some(i) = pick else {
                    return Err(ConnectorError::NoEndpoint);
                };
                exchange.trace.mark(i);
                let target = this.target(&this.routes[i], &exchange, &rest)?;
                let attempt = Attempt {
                    exchange: exchange.clone(),
                    target,
                    timeout: None,
                    probe: false,
                };
                let result = this.endpoints[i].clone().oneshot(attempt).await;
                let untried = || select(&this.routes, &exchange.trace.tried(), turn).is_some();
                match &result {
                    // Lost the race for a half-open probe: another endpoint, if any.
                    Err(ConnectorError::NoEndpoint) if untried() => continue,
                    // Nothing reached the partner: the next endpoint, free of budget.
                    Err(e) if e.is_connect_failure() && untried() => {
                        bump(&this.shared.counters.failovers);
                        continue;
                    }
                    _ => return result,
                }
            }
        })
    }
}
