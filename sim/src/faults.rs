//! Fault knobs per partner replica, applied to every request before the dialect answers,
//! and decided by a seeded stream so a run repeats: latency (fixed and jittered), 5xx
//! errors, 429 bursts with `Retry-After`, connection resets, hangs, truncated bodies,
//! garbage payloads, schema drift (a renamed field) and slow drip.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::rng::{Rng, label};

/// The knobs of one replica. Rates are probabilities per request (0..=1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every answer.
    pub latency_ms: u64,
    /// Plus a uniform random 0..jitter_ms.
    pub jitter_ms: u64,
    /// 500 Internal Server Error.
    pub error_rate: f64,
    /// 429 Too Many Requests with `Retry-After: retry_after_s`.
    pub rate_limit_rate: f64,
    pub retry_after_s: u64,
    /// The connection is dropped without an answer.
    pub reset_rate: f64,
    /// Never answers (until the replica stops).
    pub hang: bool,
    /// The body is cut in half; the connection closes early.
    pub truncate_rate: f64,
    /// A 200 with bytes that are not the dialect.
    pub garbage_rate: f64,
    /// The dialect renames one field (each partner documents which).
    pub drift: bool,
    /// The body trickles out in 64-byte chunks with this pause between them.
    pub drip_ms: u64,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Serve,
    Error,
    RateLimited,
    Reset,
    Hang,
    Truncate,
    Garbage,
}

/// A replica's knobs and its seeded decision stream.
#[derive(Debug)]
pub struct FaultState {
    knobs: Mutex<Faults>,
    seed: u64,
    sequence: AtomicU64,
}

impl FaultState {
    pub fn new(seed: u64, partner: &str, replica: usize) -> Self {
        Self {
            knobs: Mutex::new(Faults::default()),
            seed: seed ^ label(partner) ^ (replica as u64).wrapping_mul(0x51_7cc1_b727_220a),
            sequence: AtomicU64::new(0),
        }
    }

    pub fn get(&self) -> Faults {
        self.knobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, faults: Faults) {
        *self.knobs.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// The decision and the delay for the next request.
    pub fn decide(&self) -> (Faults, Decision, Duration) {
        let knobs = self.get();
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut r = Rng::derive(self.seed, &[label("fault"), n]);
        let jitter = if knobs.jitter_ms > 0 {
            r.below(knobs.jitter_ms)
        } else {
            0
        };
        let delay = Duration::from_millis(knobs.latency_ms + jitter);
        let decision = if knobs.hang {
            Decision::Hang
        } else if r.chance(knobs.reset_rate) {
            Decision::Reset
        } else if r.chance(knobs.rate_limit_rate) {
            Decision::RateLimited
        } else if r.chance(knobs.error_rate) {
            Decision::Error
        } else if r.chance(knobs.garbage_rate) {
            Decision::Garbage
        } else if r.chance(knobs.truncate_rate) {
            Decision::Truncate
        } else {
            Decision::Serve
        };
        (knobs, decision, delay)
    }
}

fn stream_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault injected")
}

/// A response whose body fails at once: hyper drops the connection.
pub fn reset() -> Response<Body> {
    let body = futures_util::stream::once(async { Err::<Bytes, _>(stream_error()) });
    Response::new(Body::from_stream(body))
}

/// 500 with a short text.
pub fn error() -> Response<Body> {
    let mut r = Response::new(Body::from("internal error (injected)"));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// 429 with `Retry-After`.
pub fn rate_limited(retry_after_s: u64) -> Response<Body> {
    let mut r = Response::new(Body::from("too many requests"));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

/// 200 with bytes no decoder accepts as the dialect.
pub fn garbage() -> Response<Body> {
    Response::new(Body::from(&b"\x00\xff<<garbage{{ not the dialect \xfe"[..]))
}

/// The first half of `body`, then a failed stream (the client sees a short body).
pub fn truncate(mut response: Response<Body>, body: Bytes) -> Response<Body> {
    let half = body.slice(..body.len() / 2);
    // The half goes out with the headers; the failure follows, so the client sees a
    // short body rather than no answer.
    let stream = futures_util::stream::unfold(Some(half), |state| async move {
        match state {
            Some(half) => Some((Ok(half), None)),
            None => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                None::<(Result<Bytes, std::io::Error>, Option<Bytes>)>
            }
        }
    });
    *response.body_mut() = Body::from_stream(stream);
    response
        .headers_mut()
        .insert("content-length", HeaderValue::from(body.len()));
    response
}

/// `body` in 64-byte chunks with `pause` between them.
pub fn drip(mut response: Response<Body>, body: Bytes, pause: Duration) -> Response<Body> {
    let chunks: Vec<Bytes> = (0..body.len())
        .step_by(64)
        .map(|i| body.slice(i..(i + 64).min(body.len())))
        .collect();
    let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut rest| async move {
        let next = rest.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<Bytes, std::io::Error>(next), rest))
    });
    *response.body_mut() = Body::from_stream(stream);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_repeat_for_a_seed_and_follow_the_rates() {
        let run = || {
            let s = FaultState::new(7, "voltmart", 0);
            s.set(Faults {
                error_rate: 0.3,
                ..Faults::default()
            });
            (0..1000).map(|_| s.decide().1).collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        let errors = a.iter().filter(|d| **d == Decision::Error).count();
        assert!((200..400).contains(&errors), "{errors}");
        let s = FaultState::new(7, "voltmart", 0);
        assert!((0..100).all(|_| s.decide().1 == Decision::Serve));
    }
}
