//! Fan-out: one capability across the connectors that serve it, concurrently, under one
//! deadline. Each connector is looked up in the cache first; a miss makes one coalesced
//! partner call. Every connector ends with a [`SourceStatus`]: `live`, `cached`, `stale`
//! (served from cache because the partner failed), `failed` or `skipped` (the query gave it
//! nothing to do).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use mallgate_connectors::runtime::query_field;
use mallgate_connectors::{Capability, ConnectorError};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use tracing::Instrument;

use crate::cache::{CacheKey, Entry, Lookup, RecordCache, Records};
use crate::registry::LiveConnector;
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered by the partner for this request (or a call it joined).
    Live,
    /// Answered from cache within its TTL or stale-while-revalidate window.
    Cached,
    /// The partner failed; answered from cache within stale-if-error.
    Stale,
    /// No answer: the partner failed and nothing usable was cached.
    Failed,
    /// Not asked: the query gives this connector nothing to do.
    Skipped,
}

/// Why a source did not answer live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceError {
    /// A stable code: `timeout`, `connect_failed`, `tls`, `transport`, `rate_limited`,
    /// `partner_error`, `auth`, `malformed_reply`, `mapping`, `partner_reported`,
    /// `too_large`, `address_denied`, `shed` (the partner's concurrency limit),
    /// `unavailable` (every endpoint ejected or its breaker open), `not_applicable`,
    /// `internal`.
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One connector's part in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub partner: String,
    pub connector_id: String,
    pub connector_version: u32,
    pub capability: Capability,
    pub outcome: Outcome,
    /// When the data served was fetched from the partner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// Records this source contributed before the gateway's own filters.
    pub records: usize,
    /// Records the partner sent that failed mapping or validation, dropped alone (never
    /// cached, never served).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<SourceError>,
}

/// A source's status and what it gave.
#[derive(Debug, Clone)]
pub struct SourceResult {
    pub connector: Arc<LiveConnector>,
    pub status: SourceStatus,
    pub records: Option<Arc<Records>>,
    /// Until when the data served is fresh (`None` for failed and skipped sources).
    pub fresh_until: Option<Instant>,
    /// Served stale while its refresh runs (stale-while-revalidate): until when that
    /// may go on.
    pub revalidating_until: Option<Instant>,
}

impl SourceResult {
    pub fn answered(&self) -> bool {
        matches!(
            self.status.outcome,
            Outcome::Live | Outcome::Cached | Outcome::Stale
        )
    }
}

/// A planned call: the connector and its query, or why it is skipped.
#[derive(Debug, Clone)]
pub struct PlannedCall {
    pub connector: Arc<LiveConnector>,
    pub query: Result<Value, String>,
}

impl PlannedCall {
    /// Plans `query` for `connector`, skipping it when its request path needs a field the
    /// query lacks (a lookup by a native id the gateway does not know for that partner).
    pub fn new(connector: Arc<LiveConnector>, capability: Capability, query: Value) -> Self {
        let missing = connector
            .connector
            .path_fields(capability)
            .find(|f| *f != "request_id" && query_field(&query, f).is_none())
            .map(str::to_owned);
        let query = match missing {
            Some(f) => Err(format!(
                "the request needs `{f}`, which this query does not give"
            )),
            None => Ok(query),
        };
        Self { connector, query }
    }
}

/// A partner's recent record, for `/v1/partners`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartnerHealth {
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Outcomes per partner, as the fan-out sees them.
#[derive(Debug, Default)]
pub struct HealthBook {
    partners: Mutex<HashMap<String, PartnerHealth>>,
}

impl HealthBook {
    fn record(&self, partner: &str, error: Option<&SourceError>) {
        let now = jiff::Timestamp::now().to_string();
        let mut map = self.partners.lock().unwrap_or_else(|p| p.into_inner());
        let h = map.entry(partner.to_owned()).or_default();
        match error {
            None => {
                h.consecutive_failures = 0;
                h.last_success_at = Some(now);
            }
            Some(e) => {
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                h.last_failure_at = Some(now);
                h.last_error = Some(e.code.clone());
            }
        }
    }

    pub fn get(&self, partner: &str) -> Option<PartnerHealth> {
        self.partners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(partner)
            .cloned()
    }
}

/// The stable code and a message of a connector error. Messages carry no secrets: the
/// runtime redacts URLs (no query, no user info) and never formats credentials.
pub fn classify(error: &ConnectorError) -> SourceError {
    let code = error.code();
    SourceError {
        code: code.to_owned(),
        message: public_message(error),
        retry_after_s: error.retry_after().map(|d| d.as_secs().max(1)),
    }
}

/// What a frontend may read about a partner failure: the kind and status, never the
/// partner's internal addresses (operators see those in logs and the admin status).
fn public_message(error: &ConnectorError) -> String {
    match error {
        ConnectorError::Transport { connect: true, .. } => {
            "could not connect to the partner".into()
        }
        ConnectorError::Transport { .. } => "the connection to the partner failed".into(),
        ConnectorError::Timeout { timeout_ms, .. } => {
            format!("the partner did not answer within {timeout_ms} ms")
        }
        ConnectorError::RateLimited { .. } => "the partner is rate limiting".into(),
        ConnectorError::PartnerStatus { status, .. } => {
            format!("the partner answered HTTP {status}")
        }
        ConnectorError::Unauthorized { status, .. } => {
            format!("the partner refused the credentials (HTTP {status})")
        }
        ConnectorError::Token { .. } => "the partner's token endpoint failed".into(),
        ConnectorError::Secret { reference, .. } => match reference.strip_prefix("secret:") {
            // The partner's own secret: its name is no secret, and it says what to set.
            Some(name) => format!("missing secret {name}: the partner has not set `{reference}`"),
            None => "an operator secret of the connector cannot be read".into(),
        },
        ConnectorError::TooLarge { limit, .. } => {
            format!("the partner's reply is larger than {limit} bytes")
        }
        ConnectorError::AddressDenied { .. } => "the partner's address is not allowed".into(),
        ConnectorError::Tls { reason, .. } => format!("TLS with the partner failed: {reason}"),
        other => other.to_string(),
    }
}

/// Runs every planned call concurrently and returns one result per call, in plan order.
/// Nothing here waits past `deadline`: a call still running then goes on in the background
/// (it fills the cache) and its source is `failed` with `timeout`, or `stale` if cached.
pub async fn run(
    cache: &Arc<RecordCache>,
    health: &Arc<HealthBook>,
    metrics: &Arc<Metrics>,
    capability: Capability,
    calls: Vec<PlannedCall>,
    deadline: Instant,
    request_id: &str,
) -> Vec<SourceResult> {
    let futures = calls.into_iter().map(|call| {
        let span = source_span(&call.connector, capability);
        async move {
            let started = Instant::now();
            let result = one(
                cache, health, metrics, capability, call, deadline, request_id,
            )
            .await;
            noted(&result, metrics, started, request_id);
            result
        }
        .instrument(span)
    });
    join_all(futures).await
}

/// The span of one source of an answer.
fn source_span(c: &LiveConnector, capability: Capability) -> tracing::Span {
    tracing::info_span!(
        target: "mallgate::source",
        "source",
        otel.name = format!("source {}", capability.name()),
        mallgate.partner = c.partner(),
        mallgate.connector.id = c.id(),
        mallgate.connector.version = c.version(),
        mallgate.capability = capability.name(),
        mallgate.outcome = tracing::field::Empty,
        mallgate.records = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// A source's end: its span, the request's tally, the figures, and a log line when the
/// partner failed.
fn noted(result: &SourceResult, metrics: &Metrics, started: Instant, request_id: &str) {
    let s = &result.status;
    let outcome = outcome_name(s.outcome);
    let span = tracing::Span::current();
    span.record("mallgate.outcome", outcome);
    span.record("mallgate.records", s.records);
    // Time spent waiting on a partner: a live answer, or a failure (a stale answer too:
    // the partner was asked and failed first).
    let waited = match s.outcome {
        Outcome::Live | Outcome::Stale | Outcome::Failed => started.elapsed(),
        Outcome::Cached | Outcome::Skipped => std::time::Duration::ZERO,
    };
    let drills = metrics
        .drills
        .source(&s.partner, s.capability, s.outcome, started);
    crate::telemetry::request::note_source(s.outcome, waited, drills);
    metrics.source(&s.partner, &s.connector_id, s.capability.name(), s.outcome);
    if let Some(error) = s.error.as_ref().filter(|_| s.outcome != Outcome::Skipped) {
        span.record("error.type", error.code.as_str());
        span.record("otel.status_code", "ERROR");
        // With every endpoint out (breaker open, ejected), each request would log the same
        // refusal: the transition was logged once by the endpoint; these go to debug.
        if error.code == "unavailable" {
            tracing::debug!(
                target: "mallgate::partner",
                partner = %s.partner,
                connector = %s.connector_id,
                capability = s.capability.name(),
                outcome,
                request_id,
                "partner unavailable (every endpoint out)"
            );
        } else {
            tracing::warn!(
                target: "mallgate::partner",
                partner = %s.partner,
                connector = %s.connector_id,
                connector_version = s.connector_version,
                capability = s.capability.name(),
                outcome,
                error.code = %error.code,
                error.message = %error.message,
                request_id,
                "partner call failed"
            );
        }
    }
}

pub(crate) fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Live => "live",
        Outcome::Cached => "cached",
        Outcome::Stale => "stale",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
    }
}

fn status(c: &LiveConnector, capability: Capability, outcome: Outcome) -> SourceStatus {
    SourceStatus {
        partner: c.partner().to_owned(),
        connector_id: c.id().to_owned(),
        connector_version: c.version(),
        capability,
        outcome,
        fetched_at: None,
        records: 0,
        dropped: 0,
        error: None,
    }
}

/// The normalized form of a query: keys sorted (serde_json maps are ordered), nulls dropped.
pub fn normalize(query: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(query).to_string()
}

/// A source that gave nothing: skipped (the query gives it nothing to do) or failed.
fn unanswered(
    connector: Arc<LiveConnector>,
    capability: Capability,
    outcome: Outcome,
    error: SourceError,
) -> SourceResult {
    let mut s = status(&connector, capability, outcome);
    s.error = Some(error);
    SourceResult {
        connector,
        status: s,
        records: None,
        fresh_until: None,
        revalidating_until: None,
    }
}

fn skipped(connector: Arc<LiveConnector>, capability: Capability, reason: String) -> SourceResult {
    let error = SourceError {
        code: "not_applicable".into(),
        message: reason,
        retry_after_s: None,
    };
    unanswered(connector, capability, Outcome::Skipped, error)
}

/// A source answered from `entry` (live, cached or stale).
fn served(
    connector: &Arc<LiveConnector>,
    capability: Capability,
    entry: &Arc<Entry>,
    outcome: Outcome,
    error: Option<SourceError>,
) -> SourceResult {
    let mut s = status(connector, capability, outcome);
    s.fetched_at = Some(entry.fetched_at.clone());
    s.records = entry.records.len();
    s.dropped = entry
        .records
        .warnings
        .iter()
        .filter(|w| w.code == "record_dropped")
        .count();
    s.error = error;
    SourceResult {
        connector: Arc::clone(connector),
        status: s,
        records: Some(Arc::clone(&entry.records)),
        fresh_until: Some(entry.fresh_until),
        revalidating_until: None,
    }
}

async fn one(
    cache: &Arc<RecordCache>,
    health: &Arc<HealthBook>,
    metrics: &Arc<Metrics>,
    capability: Capability,
    call: PlannedCall,
    deadline: Instant,
    request_id: &str,
) -> SourceResult {
    let connector = call.connector;
    let query = match call.query {
        Ok(q) => q,
        Err(reason) => return skipped(connector, capability, reason),
    };
    let spec = connector.spec();
    let policy = spec
        .capabilities
        .get(&capability)
        .and_then(|c| c.cache)
        .unwrap_or(spec.policies.cache);
    let key = CacheKey {
        connector: Arc::from(connector.id()),
        version: connector.version(),
        capability,
        query: Arc::from(normalize(&query)),
    };
    let served = |entry: &Arc<Entry>, outcome: Outcome, error: Option<SourceError>| {
        served(&connector, capability, entry, outcome, error)
    };
    // The partner call itself runs to its own deadline: at least the policy's timeout, so a
    // short request deadline still leaves a useful result in the cache.
    let start_call = || {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let own = Duration::from_millis(u64::from(spec.policies.timeout_ms));
        let call_deadline = Instant::now() + remaining.max(own);
        let c = Arc::clone(&connector);
        let q = query.clone();
        let rid = request_id.to_owned();
        let metrics = Arc::clone(metrics);
        let fut = async move {
            let started = std::time::Instant::now();
            let result = c.connector.call(capability, &q, &rid, call_deadline).await;
            match &result {
                Ok(out) => count_drops(&metrics, &c, out),
                // Every record of the reply was dropped: the call fails, and each counts.
                Err(ConnectorError::MappingRejected { dropped, first }) => metrics.dropped(
                    c.partner(),
                    c.id(),
                    mallgate_connectors::mapping::drop_reason(first),
                    *dropped as u64,
                ),
                Err(_) => {}
            }
            // The version's own figures (canary judgement, status).
            c.stats.record(
                result
                    .as_ref()
                    .map(|out| (out.records.len(), out.stats.dropped)),
                started.elapsed(),
            );
            // The records are kept typed only.
            result.map(|out| Records {
                records: out.typed,
                not_found: out.not_found,
                warnings: out.warnings,
            })
        }
        // The call may outlive the request (it fills the cache); its spans stay in the
        // trace of the request that started it.
        .in_current_span()
        .boxed();
        cache.call(key.clone(), policy, fut)
    };
    let fallback = match cache.lookup(&key).await {
        Lookup::Fresh(entry) => return served(&entry, Outcome::Cached, None),
        Lookup::Revalidate(entry) => {
            if entry.claim_refresh() {
                // The flight is a task of its own: dropping this handle does not cancel it.
                drop(start_call());
            }
            let mut source = served(&entry, Outcome::Cached, None);
            source.revalidating_until = Some(entry.revalidate_until);
            return source;
        }
        Lookup::StaleIfError(entry) => Some(entry),
        Lookup::Miss => None,
    };
    let flight = start_call();
    let error = match tokio::time::timeout_at(deadline, flight).await {
        Ok(Ok(entry)) => {
            health.record(connector.partner(), None);
            return served(&entry, Outcome::Live, None);
        }
        Ok(Err(failure)) => classify(&failure.error),
        Err(_) => SourceError {
            code: "timeout".into(),
            message: "no answer before the request's deadline".into(),
            retry_after_s: None,
        },
    };
    health.record(connector.partner(), Some(&error));
    match fallback {
        Some(entry) => {
            cache.note_stale_served();
            served(&entry, Outcome::Stale, Some(error))
        }
        None => unanswered(connector, capability, Outcome::Failed, error),
    }
}

/// A live call's dropped records and unmapped codes, counted where they are known (a
/// cached answer is not counted again).
fn count_drops(
    metrics: &Metrics,
    c: &LiveConnector,
    out: &mallgate_connectors::runtime::CallOutput,
) {
    for w in out.warnings.iter().filter(|w| w.code == "record_dropped") {
        metrics.dropped(
            c.partner(),
            c.id(),
            mallgate_connectors::mapping::drop_reason(&w.message),
            1,
        );
    }
    let unmapped = out
        .records
        .iter()
        .filter_map(|r| r.pointer("/provenance/warnings").and_then(Value::as_array))
        .flatten()
        .filter(|w| w.get("code").and_then(Value::as_str) == Some("unmapped_status"))
        .count();
    if unmapped > 0 {
        metrics.unmapped(c.partner(), c.id(), "tracking_status", unmapped as u64);
    }
}
