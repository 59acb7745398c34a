//! Hedged reads: an idempotent exchange on the connector's endpoints still unanswered after
//! `hedge_after_ms` is sent once more — to another endpoint when one is available (the
//! endpoint selection skips the ones this exchange is on) — if a concurrency slot is free,
//! a rate token is there, no 429 block is on and the retry budget allows it. The hedge
//! ends when the first attempt would have (`timeout_ms` after it started). The first good
//! answer wins and the other attempt is dropped (its breaker probe, if it held one, is
//! given back by the breaker layer). tower's own `Hedge` hedges at a latency percentile;
//! a partner's contract states a fixed delay, so this one takes the connector's.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either, select};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{AdmissionState, Exchange, bump};
use crate::error::ConnectorError;
use crate::runtime::http::Reply;
use crate::spec::Policies;

#[derive(Debug, Clone)]
pub struct HedgeLayer {
    shared: Arc<AdmissionState>,
    after: Option<Duration>,
    attempt: Duration,
}

impl HedgeLayer {
    /// Hedging by `policies.hedge_after_ms`, a hedge lasting at most what is left of the
    /// first attempt's `timeout_ms`.
    pub fn new(shared: Arc<AdmissionState>, policies: &Policies) -> Self {
        Self {
            shared,
            after: policies
                .hedge_after_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
            attempt: Duration::from_millis(u64::from(policies.timeout_ms)),
        }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            shared: Arc::clone(&self.shared),
            after: self.after,
            attempt: self.attempt,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hedge<S> {
    inner: S,
    shared: Arc<AdmissionState>,
    after: Option<Duration>,
    attempt: Duration,
}

/// An answer worth keeping: not a failure and not a 5xx.
fn good(result: &Result<Reply, ConnectorError>) -> bool {
    result
        .as_ref()
        .is_ok_and(|reply| !reply.status.is_server_error())
}

impl<S> Service<Exchange> for Hedge<S>
where
    S: Service<Exchange, Response = Reply, Error = ConnectorError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<Reply, ConnectorError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, exchange: Exchange) -> Self::Future {
        let started = Instant::now();
        let remaining = exchange.deadline.saturating_duration_since(started);
        let after = match self.after {
            Some(after) if exchange.idempotent && exchange.rest.is_some() && remaining > after => {
                after
            }
            _ => return Box::pin(self.inner.call(exchange)),
        };
        let hedge_service = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        let mut second = exchange.clone();
        second.deadline = second.deadline.min(started + self.attempt);
        let primary = self.inner.call(exchange);
        Box::pin(async move {
            let mut primary = std::pin::pin!(primary);
            let delay = std::pin::pin!(tokio::time::sleep(after));
            if let Either::Left((result, _)) = select(primary.as_mut(), delay).await {
                return result;
            }
            // The hedge is one more request in flight: it needs a slot of its own.
            let Ok(_slot) = Arc::clone(&shared.slots.slots).try_acquire_owned() else {
                return primary.await;
            };
            if !shared.may_send_more() || !shared.withdraw() {
                return primary.await;
            }
            bump(&shared.counters.hedges);
            let hedge = std::pin::pin!(hedge_service.oneshot(second));
            match select(primary, hedge).await {
                Either::Left((result, hedge)) if !good(&result) => hedge.await,
                Either::Right((result, primary)) if !good(&result) => primary.await,
                Either::Left((result, _)) | Either::Right((result, _)) => result,
            }
        })
    }
}
