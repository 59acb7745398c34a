//! Telemetry (DESIGN §8): what an operator reads to answer "which partner is slow, since
//! when, and what did the frontend see?".
//!
//! - **Logs**: `tracing` events as JSON lines (`serve`) or text (`demo`) on stdout, written
//!   by a background thread (a blocked stdout drops lines, counted, and never stalls a
//!   request); pingora's `log` records are bridged in. One access line per request
//!   ([`request`]); events for partner call failures, breaker and ejection transitions,
//!   reloads, canary decisions and admin changes. Secrets are a type whose `Debug` and
//!   `Display` print `***`; no event formats a credential.
//! - **Traces**: the same `tracing` spans, exported over OTLP when configured ([`traces`]):
//!   a server span per request, a span per source, a client span per partner exchange, a
//!   mapping span; W3C `traceparent` in and out.
//! - **Metrics**: Prometheus families per gateway ([`metrics`]), most read from the state
//!   the gateway keeps anyway (breakers, ejections, guardrails, the cache) at scrape time.

mod access;
pub mod metrics;
pub mod request;
pub mod traces;

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::subscriber::Interest;
use tracing_subscriber::filter::{DynFilterFn, EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::GatewayError;
use crate::config::{GatewayConfig, LogFormat};

pub use self::metrics::Metrics;

/// Which command the process runs (it picks the default log format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Demo,
}

/// Whether spans are exported (the server span then adopts a frontend's `traceparent`).
static TRACING: AtomicBool = AtomicBool::new(false);

pub(crate) fn tracing_on() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Keeps the log writer and the span exporter alive; dropping it flushes both.
#[must_use = "dropping the guard stops the log writer and the span exporter"]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    _log: tracing_appender::non_blocking::WorkerGuard,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("traces", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// The log filter: `RUST_LOG` when set, else the config's level (default `info`); the
/// access log is off when the config says so.
fn filter(config: &GatewayConfig) -> Result<EnvFilter, GatewayError> {
    let text = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => config.log.level.clone().unwrap_or_else(|| "info".into()),
    };
    filter_of(&text, config.log.access)
}

fn filter_of(text: &str, access: bool) -> Result<EnvFilter, GatewayError> {
    let mut filter = EnvFilter::builder()
        .parse(text)
        .map_err(|e| GatewayError::Startup(format!("log level `{text}`: {e}")))?;
    if !access {
        filter = filter.add_directive(
            "mallgate::access=off"
                .parse()
                .map_err(|e| GatewayError::Startup(format!("log filter: {e}")))?,
        );
    }
    Ok(filter)
}

/// Whether `filter` lets the access line through. Asked once, of the filter alone (a
/// global filter on a registry of its own): in the process's subscriber it is a per-layer
/// filter, and `enabled!` there answers for all layers together, so it cannot tell.
fn access_wanted(filter: EnvFilter) -> bool {
    let probe = tracing_subscriber::registry().with(filter);
    tracing::subscriber::with_default(probe, || {
        tracing::enabled!(
            kind: tracing::metadata::Kind::EVENT,
            target: "mallgate::access",
            tracing::Level::INFO
        )
    })
}

/// Installs the process's logging and (when configured) trace export. Call once, from
/// the binary; a second call fails (there is one global subscriber).
pub fn init(config: &GatewayConfig, mode: Mode) -> Result<TelemetryGuard, GatewayError> {
    let format = config.log.format.unwrap_or(match mode {
        Mode::Serve => LogFormat::Json,
        Mode::Demo => LogFormat::Text,
    });
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("mallgate-log")
        // Buffered: the writer thread writes what it has drained in few calls and flushes
        // when the queue is empty, instead of one write(2) per line (stdout is line
        // buffered) — under load, one call for many lines to a file, pipe or journald.
        // At most 4 KiB a call (PIPE_BUF), whole lines: a write to a pipe stays atomic, so
        // two instances sharing one stdout during an upgrade never interleave mid-line.
        .finish(std::io::BufWriter::with_capacity(4096, std::io::stdout()));
    metrics::set_log_drops(writer.error_counter());
    // Log lines are events only: span fields are for traces. Spans are refused per
    // callsite, not per span (a filter that answers per span would have the registry
    // build every one, then drop it).
    let events_only =
        DynFilterFn::new(|m: &tracing::Metadata<'_>, _: &Context<'_, _>| m.is_event())
            .with_callsite_filter(|m| {
                if m.is_span() {
                    Interest::never()
                } else {
                    Interest::sometimes()
                }
            });
    let events = filter(config)?.and(events_only);
    let mut json_access = None;
    let logs = match format {
        LogFormat::Json => {
            if access_wanted(filter(config)?) {
                json_access = Some(writer.clone());
            }
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(writer)
                .with_filter(events)
                .boxed()
        }
        LogFormat::Text => fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(events)
            .boxed(),
    };
    let provider = match traces::endpoint(&config.traces) {
        Some(endpoint) => Some(traces::provider(&config.traces, endpoint)?),
        None => None,
    };
    let spans = provider.as_ref().map(|p| {
        traces::layer(p).with_filter(filter_fn(|m| {
            m.is_span() && m.target().starts_with("mallgate")
        }))
    });
    // With traces off, no span at all: a filter for the whole subscriber, outermost. The
    // log layer's own filter refuses spans too, but a per-layer filter leaves the registry
    // building each span (an id, a slot, enter and exit) for the other layers (measured:
    // ~0.45 µs of a cached answer).
    let no_spans = provider.is_none().then(|| filter_fn(|m| !m.is_span()));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(no_spans)
        .try_init()
        .map_err(|e| GatewayError::Startup(format!("logging is already set up: {e}")))?;
    if let Some(writer) = json_access {
        access::write_json_to(writer);
    }
    if provider.is_some() {
        TRACING.store(true, Ordering::Relaxed);
        mallgate_connectors::runtime::telemetry::set_propagator(Box::new(traces::propagation));
    }
    Ok(TelemetryGuard {
        provider,
        _log: guard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_line_follows_the_log_filter() {
        let wanted =
            |text: &str, access: bool| access_wanted(filter_of(text, access).expect("a filter"));
        assert!(wanted("info", true));
        assert!(wanted("warn,mallgate::access=info", true));
        assert!(!wanted("info", false), "log.access: false");
        assert!(!wanted("warn", true));
        assert!(!wanted("info,mallgate::access=off", true));
        assert!(!wanted("off", true));
    }
}
