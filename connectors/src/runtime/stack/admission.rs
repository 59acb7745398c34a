//! The admission layers of the partner stack: the call's deadline, the partner's 429
//! block, and the connector's rate limit (GCRA from `governor`, on tokio's clock). Load
//! shedding and the concurrency limit are tower's own layers (see [`super::build`]).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{AdmissionState, Exchange, bump};
use crate::error::ConnectorError;
use crate::runtime::guard::redact;
use crate::runtime::http::Reply;

/// governor on tokio's clock: time is the time since the clock was made, read from
/// `tokio::time::Instant`, so paused time in tests moves the bucket too.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }
}

/// A connector's rate limiter.
pub type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Takes a token of `limiter` now, or says how long until one is there.
pub fn try_take(limiter: &Limiter) -> Result<(), Duration> {
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
}

/// `rps` per second with bursts of `burst` (default: one second's worth, at least one).
/// Both are clamped (0.001..=1,000,000 per second, bursts up to 100,000) so no value a
/// partner writes can overflow the limiter's arithmetic.
pub fn limiter(rps: Option<f64>, burst: Option<u32>) -> Option<Limiter> {
    let rps = rps
        .filter(|r| r.is_finite() && *r > 0.0)?
        .clamp(0.001, 1_000_000.0);
    let period = Duration::try_from_secs_f64(1.0 / rps).ok()?;
    let burst = burst.unwrap_or(rps.ceil() as u32).clamp(1, 100_000);
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst)?);
    Some(RateLimiter::direct_with_clock(quota, TokioClock::default()))
}

/// Refuses an exchange whose deadline has passed, and never lets one outlive it.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Service<Exchange> for Deadline<S>
where
    S: Service<Exchange, Response = Reply, Error = ConnectorError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<Reply, ConnectorError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, exchange: Exchange) -> Self::Future {
        let deadline = exchange.deadline;
        if Instant::now() >= deadline {
            return Box::pin(async { Err(ConnectorError::DeadlineExceeded { pages: 0 }) });
        }
        let future = self.inner.call(exchange);
        Box::pin(async move {
            tokio::time::timeout_at(deadline, future)
                .await
                .unwrap_or(Err(ConnectorError::DeadlineExceeded { pages: 0 }))
        })
    }
}

/// The partner's 429: while its `Retry-After` runs, the connector sends nothing and
/// answers `RateLimited` at once (the source is served stale or failed meanwhile).
#[derive(Debug, Clone)]
pub struct BlockLayer {
    shared: Arc<AdmissionState>,
}

impl BlockLayer {
    pub fn new(shared: Arc<AdmissionState>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for BlockLayer {
    type Service = Block<S>;

    fn layer(&self, inner: S) -> Block<S> {
        Block {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Block<S> {
    inner: S,
    shared: Arc<AdmissionState>,
}

impl<S> Service<Exchange> for Block<S>
where
    S: Service<Exchange, Response = Reply, Error = ConnectorError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = ConnectorError;
    type Future = BoxFuture<'static, Result<Reply, ConnectorError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectorError>> {
        // The slots below follow the fleet's size before one is taken.
        self.shared.slots.resize();
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, exchange: Exchange) -> Self::Future {
        if let Some(wait) = self.shared.blocked_for() {
            bump(&self.shared.counters.rate_limited);
            let url = redact(&exchange.url);
            return Box::pin(async move {
                Err(ConnectorError::RateLimited {
                    url,
                    retry_after: Some(wait),
                })
            });
        }
        let shared = Arc::clone(&self.shared);
        let future = self.inner.call(exchange);
        Box::pin(async move {
            let result = future.await;
            if let Ok(reply) = &result
                && reply.status == reqwest::StatusCode::TOO_MANY_REQUESTS
            {
                let wait = super::super::http::retry_after(&reply.headers)
                    .unwrap_or(Duration::from_secs(1));
                shared.block_for(wait);
            }
            result
        })
    }
}

/// The connector's own rate limit. An exchange waits for its turn while half of the
/// call's remaining time is left; past that, or while a 429 block is on, it is refused.
#[derive(Debug, Clone)]
pub struct RateLayer {
    shared: Arc<AdmissionState>,
}

impl RateLayer {
    pub fn new(shared: Arc<AdmissionState>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for RateLayer {
    type Service = Rate<S>;

    fn layer(&self, inner: S) -> Rate<S> {
        Rate {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rate<S> {
    inner: S,
    shared: Arc<AdmissionState>,
}

/// Waits for a token of `limiter` until `until`; the wait still needed when it cannot.
async fn wait_turn(
    limiter: &Limiter,
    shared: &AdmissionState,
    until: Instant,
) -> Result<(), Duration> {
    loop {
        let Err(not_until) = limiter.check() else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(limiter.clock().now());
        if Instant::now() + wait > until || shared.blocked_for().is_some() {
            return Err(wait);
        }
        tokio::time::sleep(wait).await;
    }
}

impl<S> Service<Exchange> for Rate<S>
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
        let Some(limiter) = self.shared.rate.limiter() else {
            return Box::pin(self.inner.call(exchange));
        };
        // The inner service was made ready for this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let patience = exchange.deadline.saturating_duration_since(Instant::now()) / 2;
            if let Err(wait) = wait_turn(&limiter, &shared, Instant::now() + patience).await {
                bump(&shared.counters.rate_limited);
                return Err(ConnectorError::RateLimited {
                    url: redact(&exchange.url),
                    retry_after: Some(wait),
                });
            }
            inner.call(exchange).await
        })
    }
}
