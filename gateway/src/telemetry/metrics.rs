//! Prometheus metrics of one gateway (DESIGN §8), in the Prometheus text format by
//! `prometheus-client`.
//!
//! What only the request path knows is counted as it happens (request durations, the
//! gateway/partner split, source outcomes, dropped records, unmapped codes, admission
//! refusals, reloads, canary decisions); everything the gateway keeps anyway — breakers,
//! ejections, endpoint figures, guardrails, the cache, versions, the mapping pools — is
//! read when scraped ([`super::metrics::Metrics::encode`], `collect.rs`), so it costs the
//! request path nothing.
//!
//! Labels are bounded by construction: route templates, methods, status classes, partner
//! and connector ids, capabilities, outcomes and reasons from fixed sets. No query text,
//! SKU, tracking number or client key is ever a label.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as Families;

use super::request::Answered;
use crate::fanout::Outcome;

#[path = "collect.rs"]
mod collect;
pub use collect::State;

/// Request duration buckets (seconds): OpenTelemetry's HTTP server advice.
const REQUEST_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Gateway-overhead buckets: finer at the bottom, where the gateway's own time lives.
const OVERHEAD_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    listener: &'static str,
    http_request_method: &'static str,
    http_route: &'static str,
    /// `2xx`..`5xx`: the class, as OpenTelemetry's status code would be too many series
    /// for dashboards that only ever group by class.
    http_response_status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    http_route: &'static str,
    /// `gateway` (the gateway's own time) or `partner` (waiting for partners).
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabels {
    pub(super) partner: Arc<str>,
    pub(super) connector: Arc<str>,
    pub(super) capability: &'static str,
    pub(super) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ConnectorReason {
    pub(super) partner: Arc<str>,
    pub(super) connector: Arc<str>,
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CanaryLabels {
    connector: Arc<str>,
    decision: &'static str,
}

/// The process's dropped log lines (the writer is global: one per process).
static LOG_DROPS: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

pub(super) fn set_log_drops(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPS.set(counter);
}

pub(super) fn log_lines_dropped() -> u64 {
    LOG_DROPS.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// One gateway's metrics.
pub struct Metrics {
    families: Families,
    requests: Family<HttpLabels, Histogram>,
    latency: Family<LatencyLabels, Histogram>,
    sources: Family<SourceLabels, Counter>,
    dropped: Family<ConnectorReason, Counter>,
    unmapped: Family<ConnectorReason, Counter>,
    refused: Family<ReasonLabel, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    canaries: Family<CanaryLabels, Counter>,
    windows: Counter,
    /// What is read at scrape time; set once the gateway is built.
    state: OnceLock<State>,
    /// What running drills saw of the frontends' answers (it rides along the figures:
    /// every source and every answer passes here).
    pub drills: Arc<crate::drills::taps::Taps>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut families = Families::default();
        let requests: Family<HttpLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS));
        let latency: Family<LatencyLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(OVERHEAD_BUCKETS));
        families.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, from the request head read to the answer handed to the connection",
            requests.clone(),
        );
        families.register(
            "mallgate_request_latency_seconds",
            "A unified API request's time split: `gateway` (its own work) and `partner` (waiting for the slowest partner it asked)",
            latency.clone(),
        );
        let sources = Family::<SourceLabels, Counter>::default();
        families.register(
            "mallgate_source_calls",
            "Sources of unified API answers by outcome (live, cached, stale, failed, skipped)",
            sources.clone(),
        );
        let dropped = Family::<ConnectorReason, Counter>::default();
        families.register(
            "mallgate_records_dropped",
            "Partner records dropped alone (never cached, never served), by reason",
            dropped.clone(),
        );
        let unmapped = Family::<ConnectorReason, Counter>::default();
        families.register(
            "mallgate_unmapped_codes",
            "Partner codes a connector's tables do not map (reported as unknown)",
            unmapped.clone(),
        );
        let refused = Family::<ReasonLabel, Counter>::default();
        families.register(
            "mallgate_admission_refused",
            "Requests refused by admission control: `overloaded` (503) or `client_rate_limited` (429)",
            refused.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        families.register(
            "mallgate_reloads",
            "Changes to the serving set by source and result",
            reloads.clone(),
        );
        let canaries = Family::<CanaryLabels, Counter>::default();
        families.register(
            "mallgate_canary_decisions",
            "Canary verdicts: promoted or rolled_back",
            canaries.clone(),
        );
        let windows = Counter::default();
        families.register(
            "mallgate_search_windows_built",
            "Search result windows merged from their sources (a window serves its pages until it goes stale)",
            windows.clone(),
        );
        Self {
            drills: Arc::default(),
            families,
            requests,
            latency,
            sources,
            dropped,
            unmapped,
            refused,
            reloads,
            canaries,
            windows,
            state: OnceLock::new(),
        }
    }

    /// A search window was merged from its sources.
    pub fn window_built(&self) {
        self.windows.inc();
    }

    /// Search windows merged so far.
    pub fn windows_built(&self) -> u64 {
        self.windows.get()
    }

    /// What the scrape reads beside the counters (set once, when the gateway is built).
    pub fn observe(&self, state: State) {
        let _ = self.state.set(state);
    }

    /// A request answered.
    pub(super) fn request(&self, a: &Answered<'_>) {
        let class = match a.status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&HttpLabels {
                listener: a.listener,
                http_request_method: a.method,
                http_route: a.route,
                http_response_status_class: class,
            })
            .observe(a.elapsed.as_secs_f64());
        if a.listener == "public" && a.route.starts_with("/v1/") {
            let partner = a.tally.partner_wait.min(a.elapsed);
            let split = [("partner", partner), ("gateway", a.elapsed - partner)];
            for (kind, time) in split {
                self.latency
                    .get_or_create(&LatencyLabels {
                        http_route: a.route,
                        r#type: kind,
                    })
                    .observe(time.as_secs_f64());
            }
        }
    }

    /// A source of an answer.
    pub fn source(
        &self,
        partner: &str,
        connector: &str,
        capability: &'static str,
        outcome: Outcome,
    ) {
        let outcome = match outcome {
            Outcome::Live => "live",
            Outcome::Cached => "cached",
            Outcome::Stale => "stale",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        };
        self.sources
            .get_or_create(&SourceLabels {
                partner: Arc::from(partner),
                connector: Arc::from(connector),
                capability,
                outcome,
            })
            .inc();
    }

    /// `n` records of a live call dropped for `reason`.
    pub fn dropped(&self, partner: &str, connector: &str, reason: &'static str, n: u64) {
        self.dropped
            .get_or_create(&ConnectorReason {
                partner: Arc::from(partner),
                connector: Arc::from(connector),
                reason,
            })
            .inc_by(n);
    }

    /// `n` unmapped codes in the records of a live call (`reason`: what kind of code).
    pub fn unmapped(&self, partner: &str, connector: &str, reason: &'static str, n: u64) {
        self.unmapped
            .get_or_create(&ConnectorReason {
                partner: Arc::from(partner),
                connector: Arc::from(connector),
                reason,
            })
            .inc_by(n);
    }

    /// A request refused by admission control.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A change to the serving set applied (`ok`) or refused (`rejected`, `failed`).
    pub fn reload(&self, source: &'static str, result: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels { source, result })
            .inc();
    }

    /// A canary verdict.
    pub fn canary(&self, connector: &str, decision: &'static str) {
        self.canaries
            .get_or_create(&CanaryLabels {
                connector: Arc::from(connector),
                decision,
            })
            .inc();
    }

    /// The text exposition (Prometheus 0.0.4) of every family.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(64 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.families)?;
        if let Some(state) = self.state.get() {
            collect::encode(state, &mut text)?;
        }
        Ok(text)
    }
}
