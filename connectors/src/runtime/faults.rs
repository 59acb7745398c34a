//! Injected faults (DESIGN §8, drills): a layer of every endpoint stack, below the breaker
//! and the attempt timeout and above the pooled client, so a fault is chosen *after* the
//! real endpoint is picked and everything above it — breaker, ejection, failover, retries,
//! hedging, stale-if-error — reacts exactly as to a real failure.
//!
//! [`Faults`] is the gateway's one registry, shared by every version of every connector
//! through [`super::RuntimeConfig`]: a fault outlives a reload (it is not part of any
//! connector) and not the process (an upgrade starts with none). Each fault carries its own
//! end: a call after `ends_at` passes untouched even if nobody ever removes the fault.
//!
//! With no fault registered the layer costs one atomic load per attempt.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::guard::redact;
use super::http::Reply;
use super::stack::Attempt;
use crate::error::ConnectorError;
use crate::spec::Capability;

/// What an injected fault does to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The endpoint answers `503 Service Unavailable` at once.
    Error,
    /// The request goes out `latency` late (the attempt timeout still applies).
    Latency,
    /// No answer at all: the attempt runs into its timeout.
    Blackhole,
    /// The connection breaks after the request was sent (not a refused connect).
    Reset,
    /// `200` with a body that is not what the partner's dialect says.
    Garbage,
    /// `429 Too Many Requests` with `Retry-After: 1`.
    RateLimited,
    /// Nothing is injected: the drill only watches and reports (a fault made outside the
    /// gateway — a fault proxy, a partner's maintenance window — measured the same way).
    Observe,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Latency => "latency",
            Self::Blackhole => "blackhole",
            Self::Reset => "reset",
            Self::Garbage => "garbage",
            Self::RateLimited => "rate_limited",
            Self::Observe => "observe",
        }
    }
}

/// Which attempts a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultTarget {
    pub partner: String,
    /// One endpoint, as its state names it (the redacted base URL); `None`: all of them.
    pub endpoint: Option<String>,
    /// One capability; `None`: every exchange, token requests and health probes included.
    pub capability: Option<Capability>,
}

/// One registered fault and what it did.
#[derive(Debug)]
pub struct ActiveFault {
    pub id: String,
    pub target: FaultTarget,
    pub kind: FaultKind,
    /// Share of the matching attempts that get the fault, `0.0..=1.0`.
    pub rate: f64,
    pub latency: Duration,
    pub ends_at: Instant,
    /// The partner's attempts while the fault was on (calls, retries, hedges; not probes
    /// nor token requests), within the target's capability: amplification's numerator.
    pub attempts: AtomicU64,
    /// The exchanges those attempts belong to (each one's first attempt): its denominator.
    pub exchanges: AtomicU64,
    /// The first good answer of an exchange that had tried another endpoint first: the
    /// failover, as the partner stack saw it.
    pub first_failover: OnceLock<Instant>,
    /// Attempts that were candidates for the fault (the right endpoint and capability).
    candidates: AtomicU64,
    /// Attempts that got the fault.
    pub injected: AtomicU64,
    /// When the first attempt got the fault: the onset every drill figure counts from.
    pub first_injected: OnceLock<Instant>,
    /// When it was taken off before its end (an abort).
    off_at: OnceLock<Instant>,
}

impl ActiveFault {
    pub fn new(
        id: String,
        target: FaultTarget,
        kind: FaultKind,
        rate: f64,
        latency: Duration,
        ends_at: Instant,
    ) -> Self {
        Self {
            id,
            target,
            kind,
            rate: rate.clamp(0.0, 1.0),
            latency,
            ends_at,
            attempts: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            first_failover: OnceLock::new(),
            candidates: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            first_injected: OnceLock::new(),
            off_at: OnceLock::new(),
        }
    }

    /// Whether the fault was on at `at`: before its end and before an abort.
    pub fn was_on_at(&self, at: Instant) -> bool {
        at < self.ends_at && self.off_at.get().is_none_or(|off| at < *off)
    }

    /// Whether the `n`th candidate (from 1) gets the fault: exactly `rate` of them, spread
    /// evenly (`floor(n·rate)` steps up), the same on every run.
    fn due(&self, n: u64) -> bool {
        let at = |k: u64| (k as f64 * self.rate).floor() as u64;
        at(n) > at(n - 1)
    }

    fn applies(&self, point: &FaultPoint, attempt: &Attempt, now: Instant) -> Option<bool> {
        if !self.was_on_at(now) || *self.target.partner != *point.partner {
            return None;
        }
        let capability = attempt.exchange.capability;
        let in_scope = match self.target.capability {
            None => true,
            Some(wanted) => capability == Some(wanted),
        };
        if !in_scope {
            return None;
        }
        // Calls, retries and hedges of a capability count; probes and token requests not.
        if !attempt.probe && capability.is_some() {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            // The timeout layer above counted this attempt already: the first is 1.
            if attempt.exchange.trace.requests() <= 1 {
                self.exchanges.fetch_add(1, Ordering::Relaxed);
            }
        }
        let here = match &self.target.endpoint {
            None => true,
            Some(endpoint) => point.endpoint.as_deref() == Some(endpoint.as_str()),
        };
        if !here || self.kind == FaultKind::Observe {
            return Some(false);
        }
        let n = self.candidates.fetch_add(1, Ordering::Relaxed) + 1;
        Some(self.due(n))
    }
}

/// The registry of faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    active: Arc<ArcSwap<Vec<Arc<ActiveFault>>>>,
}

impl Faults {
    pub fn insert(&self, fault: Arc<ActiveFault>) {
        self.active.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(Arc::clone(&fault));
            list
        });
    }

    /// Removes fault `id` (a fault already gone is no error); it is off at once, even for
    /// an attempt that loaded the list before.
    pub fn remove(&self, id: &str) {
        for fault in self.active.load().iter().filter(|f| f.id == id) {
            let _ = fault.off_at.set(Instant::now());
        }
        self.active.rcu(|list| {
            list.iter()
                .filter(|f| f.id != id)
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// The faults registered now (ended or not).
    pub fn list(&self) -> Vec<Arc<ActiveFault>> {
        Vec::clone(&self.active.load())
    }

    /// The fault `attempt` at `point` gets, if any (the first registered that is due), and
    /// every fault that watches it.
    fn pick(&self, point: &FaultPoint, attempt: &Attempt) -> Picked {
        let active = self.active.load();
        if active.is_empty() {
            return Picked::default();
        }
        let now = Instant::now();
        let mut picked = Picked::default();
        // Every matching fault counts the attempt, whichever injects.
        for fault in active.iter() {
            match fault.applies(point, attempt, now) {
                Some(true) if picked.inject.is_none() => {
                    picked.inject = Some(Arc::clone(fault));
                }
                Some(_) => picked.watching.push(Arc::clone(fault)),
                None => {}
            }
        }
        picked
    }
}

#[derive(Default)]
struct Picked {
    inject: Option<Arc<ActiveFault>>,
    watching: Vec<Arc<ActiveFault>>,
}

/// Whether a reply says the endpoint answered well (what a failover is for).
fn good(result: &Result<Reply, ConnectorError>) -> bool {
    result
        .as_ref()
        .is_ok_and(|r| !r.status.is_server_error() && r.status != StatusCode::TOO_MANY_REQUESTS)
}

/// Marks the failover on `watching` when an attempt of an exchange that had tried another
/// endpoint first answers well.
fn watch_failover<F>(
    watching: Vec<Arc<ActiveFault>>,
    future: F,
) -> BoxFuture<'static, Result<Reply, ConnectorError>>
where
    F: std::future::Future<Output = Result<Reply, ConnectorError>> + Send + 'static,
{
    Box::pin(async move {
        let result = future.await;
        if good(&result) {
            let now = Instant::now();
            for fault in watching.iter().filter(|f| f.was_on_at(now)) {
                let _ = fault.first_failover.set(now);
            }
        }
        result
    })
}

/// Where in the partner stack a fault layer sits: the partner and the endpoint it fronts.
#[derive(Debug, Clone)]
pub struct FaultPoint {
    pub faults: Faults,
    pub partner: Arc<str>,
    /// The endpoint's redacted base URL (`None`: a link outside the connector's endpoints).
    pub endpoint: Option<String>,
}

impl<S> Layer<S> for FaultPoint {
    type Service = Inject<S>;

    fn layer(&self, inner: S) -> Inject<S> {
        Inject {
            inner,
            point: self.clone(),
        }
    }
}

/// The fault layer's service. It answers an injected attempt without calling the service
/// below, so that service must not reserve capacity in `poll_ready` (the pooled client
/// below it does not).
#[derive(Debug, Clone)]
pub struct Inject<S> {
    inner: S,
    point: FaultPoint,
}

impl<S> Service<Attempt> for Inject<S>
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
        let picked = self.point.faults.pick(&self.point, &attempt);
        let Some(fault) = picked.inject else {
            // With no fault watching (the usual case) nothing is added to the attempt.
            let failed_over = !picked.watching.is_empty()
                && !attempt.probe
                && attempt.exchange.trace.tried().len() >= 2;
            let future = self.inner.call(attempt);
            if !failed_over {
                return Box::pin(future);
            }
            return watch_failover(picked.watching, future);
        };
        fault.injected.fetch_add(1, Ordering::Relaxed);
        let _ = fault.first_injected.set(Instant::now());
        let url = redact(&attempt.target);
        match fault.kind {
            // Never picked (see `applies`).
            FaultKind::Observe => Box::pin(self.inner.call(attempt)),
            FaultKind::Latency => {
                let delay = fault.latency;
                let future = self.inner.call(attempt);
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    future.await
                })
            }
            // No answer: the attempt timeout above ends it; the fault's end at the latest.
            FaultKind::Blackhole => {
                let until = fault.ends_at;
                Box::pin(async move {
                    tokio::time::sleep_until(until).await;
                    Err(ConnectorError::Transport {
                        url,
                        reason: "no answer (blackholed by a drill)".into(),
                        connect: false,
                    })
                })
            }
            FaultKind::Reset => Box::pin(async move {
                Err(ConnectorError::Transport {
                    url,
                    reason: "connection reset by peer (injected by a drill)".into(),
                    connect: false,
                })
            }),
            FaultKind::Error => Box::pin(async {
                Ok(canned(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"injected by a drill",
                ))
            }),
            FaultKind::Garbage => Box::pin(async {
                Ok(canned(
                    StatusCode::OK,
                    "application/json",
                    b"{\"\x00garbage\": [1, 2, \xff\xfe",
                ))
            }),
            FaultKind::RateLimited => Box::pin(async {
                let mut reply = canned(
                    StatusCode::TOO_MANY_REQUESTS,
                    "text/plain",
                    b"injected by a drill",
                );
                reply
                    .headers
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                Ok(reply)
            }),
        }
    }
}

fn canned(status: StatusCode, content_type: &'static str, body: &[u8]) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Reply {
        status,
        headers,
        body: body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(rate: f64) -> ActiveFault {
        let target = FaultTarget {
            partner: "voltmart".into(),
            endpoint: None,
            capability: None,
        };
        ActiveFault::new(
            "d1".into(),
            target,
            FaultKind::Error,
            rate,
            Duration::ZERO,
            Instant::now(),
        )
    }

    #[test]
    fn the_rate_is_exact_and_evenly_spread() {
        for (rate, every) in [(1.0, 100), (0.5, 50), (0.25, 25), (0.0, 0)] {
            let f = fault(rate);
            let due: Vec<u64> = (1..=100).filter(|n| f.due(*n)).collect();
            assert_eq!(due.len(), every, "rate {rate}");
        }
        let half = fault(0.5);
        assert!(!half.due(1) && half.due(2) && !half.due(3) && half.due(4));
    }
}
