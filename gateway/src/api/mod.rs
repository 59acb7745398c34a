//! The unified API's handlers, independent of the transport: [`Api::handle`] takes a
//! [`Request`] (head and a size-checked body) and gives a [`Response`]. The pingora
//! listener in [`crate::server`] feeds it; nothing here blocks a runtime thread (jq runs on
//! the mapping pool).

mod inventory;
mod logistics;
mod products;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use mallgate_connectors::runtime::stack::GuardrailFigures;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::cache::RecordCache;
use crate::config::GatewayConfig;
use crate::cursor::{CursorKey, random_u64};
use crate::fanout::{HealthBook, Outcome, SourceResult, SourceStatus};
use crate::problem::ApiError;
use crate::registry::{Registry, View};

pub use products::Window;

/// A request as the handlers see it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A response: status, headers, body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    /// A JSON answer of `value`, never cached.
    pub fn json_value(status: u16, value: &Value) -> Self {
        let mut r = Self::json_bytes(status, value.to_string());
        r.headers.push(("cache-control", "no-store".to_owned()));
        r
    }

    fn json_bytes(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.into(),
        }
    }

    /// A JSON answer of `value`, never cached; a value that does not serialize is a 500
    /// problem, never a 200 with a broken body.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, ApiError> {
        let body = to_json(value)?;
        let mut r = Self::json_bytes(status, body);
        r.headers.push(("cache-control", "no-store".to_owned()));
        Ok(r)
    }

    /// The problem+json answer of an error.
    pub fn problem(error: &ApiError, instance: &str, request_id: &str) -> Self {
        let doc = error.to_problem(instance, request_id);
        let mut headers = vec![("content-type", "application/problem+json".to_owned())];
        headers.extend(error.headers());
        headers.push(("cache-control", "no-store".to_owned()));
        Self {
            status: error.status(),
            headers,
            body: Bytes::from(doc.to_string()),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The unified API: shared state of every handler.
pub struct Api {
    pub registry: Arc<Registry>,
    pub cache: Arc<RecordCache>,
    pub health: Arc<HealthBook>,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// The process's drain (SIGTERM, SIGQUIT): `/readyz` answers 503 while it lasts.
    pub drain: Arc<crate::process::Drain>,
    windows: products::Windows,
    cursor_key: CursorKey,
    config: GatewayConfig,
    openapi: Bytes,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("registry", &self.registry)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

pub use crate::openapi::document as openapi_document;

impl Api {
    pub fn new(registry: Arc<Registry>, config: GatewayConfig, cursor_key: CursorKey) -> Self {
        // Records get three quarters of the budget, paging windows the rest.
        let cache = RecordCache::new(config.cache.max_bytes / 4 * 3);
        let windows = products::Windows::new(
            config.cache.max_bytes / 4,
            Duration::from_secs(config.cache.cursor_ttl_s),
        );
        Self {
            registry,
            cache,
            health: Arc::new(HealthBook::default()),
            metrics: Arc::new(crate::telemetry::Metrics::new()),
            drain: Arc::new(crate::process::Drain::new(&config.process)),
            windows,
            cursor_key,
            openapi: Bytes::from(openapi_document().to_string()),
            config,
        }
    }

    /// Drops every cached partner answer and paging window (the admin purge).
    pub fn purge(&self) {
        self.cache.purge();
        self.windows.purge();
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Answers one request. Every answer carries `x-request-id` (the client's, if it sent
    /// a sane one).
    pub async fn handle(&self, request: Request) -> Response {
        let request_id = request_id(&request.headers);
        let mut response = match self.route(&request, &request_id).await {
            Ok(r) => r,
            Err(e) => Response::problem(&e, &request.path, &request_id),
        };
        response.headers.push(("x-request-id", request_id));
        response
    }

    async fn route(&self, req: &Request, request_id: &str) -> Result<Response, ApiError> {
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let get = |allowed: bool| {
            if allowed {
                Ok(())
            } else {
                Err(ApiError::MethodNotAllowed { allow: "GET" })
            }
        };
        let is_get = req.method == Method::GET;
        match segments.as_slice() {
            ["healthz"] => {
                get(is_get)?;
                Ok(Response::json_bytes(200, r#"{"status":"ok"}"#))
            }
            ["readyz"] => {
                get(is_get)?;
                self.ready()
            }
            ["openapi.json"] => {
                get(is_get)?;
                Ok(Response::json_bytes(200, self.openapi.clone()))
            }
            ["v1", "products"] => {
                get(is_get)?;
                self.search(req, request_id).await
            }
            ["v1", "products", id] if !id.is_empty() => {
                get(is_get)?;
                self.product(req, &percent_decode(id), request_id).await
            }
            ["v1", "inventory"] => {
                get(is_get)?;
                self.inventory(req, request_id).await
            }
            ["v1", "shipping", "rates"] => {
                if req.method != Method::POST {
                    return Err(ApiError::MethodNotAllowed { allow: "POST" });
                }
                self.rates(req, request_id).await
            }
            ["v1", "tracking", carrier, number] if !carrier.is_empty() && !number.is_empty() => {
                get(is_get)?;
                self.tracking(
                    req,
                    &percent_decode(carrier),
                    &percent_decode(number),
                    request_id,
                )
                .await
            }
            ["v1", "partners"] => {
                get(is_get)?;
                self.partners(req)
            }
            _ => Err(ApiError::NotFound {
                kind: "route",
                detail: format!("no resource at `{}`; see /openapi.json", req.path),
            }),
        }
    }

    fn ready(&self) -> Result<Response, ApiError> {
        if let Some(kind) = self.drain.draining() {
            return Err(ApiError::Draining {
                detail: format!(
                    "this instance is draining ({}): it finishes what it has and takes no new work",
                    kind.as_str()
                ),
            });
        }
        let snapshot = self.registry.load();
        if snapshot.generation == 0 || snapshot.connectors.is_empty() {
            return Err(ApiError::Unavailable {
                detail: "no connector is loaded yet".into(),
                retry_after_s: 1,
                sources: Vec::new(),
            });
        }
        let mut body = json!({"status": "ready", "generation": snapshot.generation,
                              "connectors": snapshot.connectors.len()});
        // A fleet's store out of reach is not a reason to take this replica out of the
        // balancer: it keeps serving its last good set. It says so.
        if let Some(connected) = self.registry.store_connected() {
            body["store"] = json!(if connected {
                "connected"
            } else {
                "disconnected"
            });
        }
        Ok(Response::json_bytes(200, body.to_string()))
    }

    /// The request's deadline: the configured default, or a shorter `timeout_ms`.
    fn deadline(&self, params: &Params) -> Result<Instant, ApiError> {
        let max = self.config.deadline.default_ms;
        let ms = match params.get("timeout_ms") {
            None => max,
            Some(v) => integral(v)
                .and_then(|ms| u64::try_from(ms).ok())
                .filter(|ms| (1..=max).contains(ms))
                .ok_or_else(|| {
                    ApiError::param("timeout_ms", format!("must be an integer from 1 to {max}"))
                })?,
        };
        Ok(Instant::now() + Duration::from_millis(ms))
    }

    fn partners(&self, req: &Request) -> Result<Response, ApiError> {
        Params::parse(&req.query, &[])?;
        let snapshot = self.registry.load();
        let mut partners: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        let mut unavailable: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for c in &snapshot.connectors {
            let endpoints: Vec<Value> = c
                .connector
                .routes()
                .iter()
                .map(|r| {
                    let report = r.state.report(r.priority, r.weight, false);
                    let counts = unavailable.entry(c.partner()).or_default();
                    counts.0 += 1;
                    counts.1 += usize::from(!report.available);
                    serde_json::to_value(report).unwrap_or(Value::Null)
                })
                .collect();
            partners.entry(c.partner()).or_default().push(json!({
                "connector_id": c.id(),
                "connector_version": c.version(),
                "kind": c.spec().kind,
                "capabilities": c.spec().capabilities.keys().collect::<Vec<_>>(),
                "codes": c.spec().codes,
                "endpoints": endpoints,
            }));
        }
        let data: Vec<Value> = partners
            .into_iter()
            .map(|(partner, connectors)| {
                let health = self.health.get(partner);
                let (total, out) = unavailable.get(partner).copied().unwrap_or_default();
                let status = match &health {
                    _ if total > 0 && out == total => "down",
                    Some(h) if h.consecutive_failures >= 3 => "down",
                    Some(h) if h.consecutive_failures > 0 => "degraded",
                    _ if out > 0 => "degraded",
                    None => "unknown",
                    Some(_) => "healthy",
                };
                // Every connector of the partner has its own stack: their figures add up.
                let mut figures = GuardrailFigures::default();
                for c in snapshot
                    .connectors
                    .iter()
                    .filter(|c| c.partner() == partner)
                {
                    figures += c.connector.counters().figures();
                }
                let guardrails = serde_json::to_value(figures).unwrap_or(Value::Null);
                json!({
                    "partner": partner,
                    "connectors": connectors,
                    "health": {"status": status, "recent": health.unwrap_or_default(),
                               "guardrails": guardrails},
                })
            })
            .collect();
        let body = json!({"data": data, "sources": [], "complete": true,
                          "generation": snapshot.generation});
        Ok(Response::json_bytes(200, body.to_string()))
    }
}

/// Whether a source outcome counts as an answer in `complete`.
fn complete(sources: &[SourceResult]) -> bool {
    sources.iter().all(|s| {
        matches!(
            s.status.outcome,
            Outcome::Live | Outcome::Cached | Outcome::Skipped
        )
    })
}

/// Every source failed or was skipped: 503 with the shortest `Retry-After` a partner gave.
fn all_failed(what: &str, sources: &[SourceResult]) -> Option<ApiError> {
    if sources.iter().any(SourceResult::answered) {
        return None;
    }
    let retry = sources
        .iter()
        .filter_map(|s| s.status.error.as_ref().and_then(|e| e.retry_after_s))
        .min()
        .unwrap_or(2);
    Some(ApiError::Unavailable {
        detail: if sources.is_empty() {
            format!("no partner serves {what}")
        } else {
            format!("no partner answered {what} and nothing usable was cached")
        },
        retry_after_s: retry,
        sources: statuses(sources),
    })
}

fn statuses(sources: &[SourceResult]) -> Vec<SourceStatus> {
    sources.iter().map(|s| s.status.clone()).collect()
}

/// The envelope `{data, sources, complete, generation, next_cursor?}`.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    data: T,
    sources: &'a [SourceStatus],
    complete: bool,
    generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Whether an answer may be cached by clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// ETag, `If-None-Match` -> 304, `max-age` from the sources' freshness (0 unless
    /// every source answered fresh).
    Validated,
    /// `Cache-Control: no-store` (answers to POSTs, stock levels).
    NoStore,
}

/// The 200 envelope answer of a non-paged endpoint.
fn envelope<T: Serialize>(
    req: &Request,
    data: &T,
    sources: &[SourceResult],
    generation: u64,
    caching: Caching,
) -> Result<Response, ApiError> {
    let statuses = statuses(sources);
    let complete = complete(sources);
    let body = to_json(&Envelope {
        data,
        sources: &statuses,
        complete,
        generation,
        next_cursor: None,
    })?;
    Ok(match caching {
        Caching::Validated => {
            let fresh = if complete {
                sources.iter().filter_map(|s| s.fresh_until).min()
            } else {
                None
            };
            let etag = etag_of(&body);
            cacheable(req, Bytes::from(body), &etag, fresh)
        }
        Caching::NoStore => Response {
            status: 200,
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("cache-control", "no-store".to_owned()),
            ],
            body: Bytes::from(body),
        },
    })
}

/// `value` as JSON; a value that does not serialize (a map with non-string keys, a
/// failing `Serialize`) is a 500 problem naming the failure.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal {
        detail: format!("the answer could not be serialized: {e}"),
    })
}

/// `value` as a JSON value, for answers built with `json!` (which would panic on a value
/// that does not serialize).
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal {
        detail: format!("the answer could not be serialized: {e}"),
    })
}

/// As [`to_json`], as text.
pub(crate) fn to_json_text<T: Serialize + ?Sized>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::Internal {
        detail: format!("the answer could not be serialized: {e}"),
    })
}

/// A 200 answer with ETag, conditional 304 and Cache-Control from the shortest freshness
/// involved.
fn cacheable(req: &Request, body: Bytes, etag: &str, fresh_until: Option<Instant>) -> Response {
    let max_age = fresh_until
        .map(|t| t.saturating_duration_since(Instant::now()).as_secs())
        .unwrap_or(0);
    let cache_control = format!("public, max-age={max_age}");
    if if_none_match(&req.headers, etag) {
        return Response {
            status: 304,
            headers: vec![("etag", etag.to_owned()), ("cache-control", cache_control)],
            body: Bytes::new(),
        };
    }
    Response {
        status: 200,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("etag", etag.to_owned()),
            ("cache-control", cache_control),
        ],
        body,
    }
}

/// A strong ETag over the answer's bytes (which hold `fetched_at` times, not ages).
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut etag = String::with_capacity(26);
    etag.push('"');
    for b in &digest[..12] {
        etag.push(char::from(HEX[usize::from(b >> 4)]));
        etag.push(char::from(HEX[usize::from(b & 15)]));
    }
    etag.push('"');
    etag
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // A random per-process prefix and a counter: unique, and cheap per request.
            static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let prefix = *PREFIX.get_or_init(|| random_u64() as u32);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("mg-{prefix:08x}-{n:x}")
        })
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Query parameters, each given at most once, every name known.
#[derive(Debug, Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn parse(query: &str, known: &[&str]) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name != "timeout_ms" && !known.contains(&name.as_ref()) {
                let list = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                return Err(ApiError::param(
                    name.as_ref(),
                    format!("unknown parameter; this resource takes {list} and timeout_ms"),
                ));
            }
            if map.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(ApiError::param(name.as_ref(), "given more than once"));
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A text parameter of 1 to `max` characters, without control characters.
    pub(crate) fn text(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => {
                let v = v.trim();
                if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
                    Err(ApiError::param(
                        name,
                        format!("must be 1 to {max} characters of text"),
                    ))
                } else {
                    Ok(Some(v.to_owned()))
                }
            }
        }
    }

    pub(crate) fn integer(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => integral(v)
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    ApiError::param(name, format!("must be an integer from {min} to {max}"))
                }),
        }
    }

    /// A GTIN (8, 12, 13 or 14 digits) with a valid check digit, as GTIN-14.
    pub(crate) fn gtin(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => mallgate_connectors::prelude::gtin::normalize(v)
                .gtin14
                .map(Some)
                .ok_or_else(|| {
                    ApiError::param(
                        name,
                        "must be a GTIN (UPC-A, EAN-13, GTIN-14, EAN-8 or UPC-E) with a valid check digit",
                    )
                }),
        }
    }

    /// One of `allowed`.
    pub(crate) fn choice(&self, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
            Some(_) => Err(ApiError::param(
                name,
                format!("must be one of {}", allowed.join(", ")),
            )),
        }
    }
}

/// The view a request answers from: one snapshot, each canary chosen once.
pub(crate) fn view_of(api: &Api) -> View {
    api.registry.load().view()
}

/// An integer query value: `62`, or `62.0` (JSON Schema counts a number without a fraction
/// an integer, and an OpenAPI client may write it so).
fn integral(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let (whole, fraction) = text.split_once('.')?;
    (!fraction.is_empty() && fraction.bytes().all(|b| b == b'0'))
        .then(|| whole.parse::<i64>().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value whose serialization fails, as a map with non-string keys would.
    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no JSON form"))
        }
    }

    fn request() -> Request {
        Request {
            method: Method::GET,
            path: "/v1/products/x:1".into(),
            query: String::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn an_answer_that_does_not_serialize_is_a_500_never_an_empty_200() {
        for caching in [Caching::Validated, Caching::NoStore] {
            let refused = envelope(&request(), &Unserializable, &[], 1, caching)
                .expect_err("no 200 with an empty body");
            assert_eq!(refused.status(), 500);
            let doc = refused.to_problem("/v1/products/x:1", "r-1");
            assert_eq!(doc["type"], "https://mallgate.dev/problems/internal-error");
            assert!(
                doc["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("no JSON form")),
                "{doc}"
            );
        }
        let text = to_json_text(&[Unserializable]).expect_err("a page item");
        assert_eq!(text.status(), 500);
        let answer = Response::json(200, &Unserializable).expect_err("an admin answer");
        assert_eq!(answer.status(), 500);
    }
}
