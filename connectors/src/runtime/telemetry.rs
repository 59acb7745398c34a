//! What the runtime tells the gateway's telemetry, without depending on it.
//!
//! - Every partner exchange runs in a client span (`tracing`, target
//!   `mallgate::exchange`) with the OpenTelemetry HTTP client attributes; the gateway's
//!   trace layer turns it into an OTLP span. [`set_propagator`] installs what writes the
//!   W3C `traceparent` of that span into the request (the gateway installs one when traces
//!   are on; without it nothing is added).
//! - Each endpoint's exchange durations are a Prometheus histogram held in its
//!   partner-wide state ([`EXCHANGE_BUCKETS`]), read at scrape time.
//! - Breaker and ejection transitions, and failed calls, are `tracing` events.

use std::sync::OnceLock;

/// Writes the propagation headers of `span` (`traceparent`, `tracestate`).
pub type Propagator = dyn Fn(&tracing::Span) -> Vec<(&'static str, String)> + Send + Sync;

static PROPAGATOR: OnceLock<Box<Propagator>> = OnceLock::new();

/// Installs the process's propagator (once; a second call is ignored: spans go to one
/// tracer per process).
pub fn set_propagator(propagator: Box<Propagator>) {
    let _ = PROPAGATOR.set(propagator);
}

/// The headers that carry the current span's context to the partner.
pub(crate) fn propagation_headers() -> Vec<(&'static str, String)> {
    match PROPAGATOR.get() {
        Some(p) => p(&tracing::Span::current()),
        None => Vec::new(),
    }
}

/// Buckets (seconds) of `mallgate_partner_exchange_duration_seconds`: 5 ms to 10 s, the
/// range of partner answers worth telling apart (OpenTelemetry's HTTP client duration
/// advice, cut below 5 ms where loopback noise lives).
pub const EXCHANGE_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 10.0,
];

/// A new exchange-duration histogram.
pub fn exchange_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(EXCHANGE_BUCKETS)
}
