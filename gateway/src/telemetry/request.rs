//! One request's telemetry: its route template, its server span, the sources it asked,
//! and the access line and figures written when it is answered.

use std::cell::RefCell;
use std::time::Duration;

use crate::fanout::Outcome;

use super::Metrics;

tokio::task_local! {
    /// The sources the request's handler asked (the fan-out notes them).
    static SOURCES: RefCell<SourceTally>;
}

/// A request's sources by outcome, and how long it waited for partners.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceTally {
    pub live: u32,
    pub cached: u32,
    pub stale: u32,
    pub failed: u32,
    pub skipped: u32,
    /// The longest wait for a partner (sources are asked concurrently): what of the
    /// request's time was the partners', not the gateway's.
    pub partner_wait: Duration,
    /// The running drills (one bit each) whose target this request's sources touched.
    pub drills: u64,
}

/// Notes one source of the current request (outside a request: nothing).
pub(crate) fn note_source(outcome: Outcome, waited: Duration, drills: u64) {
    let _ = SOURCES.try_with(|tally| {
        let mut t = tally.borrow_mut();
        match outcome {
            Outcome::Live => t.live += 1,
            Outcome::Cached => t.cached += 1,
            Outcome::Stale => t.stale += 1,
            Outcome::Failed => t.failed += 1,
            Outcome::Skipped => t.skipped += 1,
        }
        t.partner_wait = t.partner_wait.max(waited);
        t.drills |= drills;
    });
}

/// Runs `handler` with a fresh tally and gives the tally back with its output.
pub(crate) async fn tallied<F: Future>(handler: F) -> (F::Output, SourceTally) {
    SOURCES
        .scope(RefCell::new(SourceTally::default()), async {
            let output = handler.await;
            let tally = SOURCES.with(|t| *t.borrow());
            (output, tally)
        })
        .await
}

/// The route template of `path` (`/v1/products/{product_id}`): the `http.route` of spans,
/// log lines and metric labels. Never the path itself: ids and tracking numbers stay out.
pub fn route_of(path: &str) -> &'static str {
    // No route has more than seven segments: a longer path is unmatched, and nothing is
    // allocated for a path on every request.
    let mut parts = [""; 8];
    let mut n = 0;
    for segment in path.trim_start_matches('/').split('/') {
        let Some(slot) = parts.get_mut(n) else {
            return "unmatched";
        };
        *slot = segment;
        n += 1;
    }
    let filled = |s: &&str| !s.is_empty();
    match &parts[..n] {
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["openapi.json"] => "/openapi.json",
        ["metrics"] => "/metrics",
        ["v1", "products"] => "/v1/products",
        ["v1", "products", id] if filled(id) => "/v1/products/{product_id}",
        ["v1", "inventory"] => "/v1/inventory",
        ["v1", "shipping", "rates"] => "/v1/shipping/rates",
        ["v1", "tracking", c, n] if filled(c) && filled(n) => {
            "/v1/tracking/{carrier}/{tracking_number}"
        }
        ["v1", "partners"] => "/v1/partners",
        ["admin", "v1", rest @ ..] => admin_route(rest),
        _ => "unmatched",
    }
}

fn admin_route(rest: &[&str]) -> &'static str {
    match rest {
        ["status"] => "/admin/v1/status",
        ["reload"] => "/admin/v1/reload",
        ["cache", "purge"] => "/admin/v1/cache/purge",
        ["drills"] => "/admin/v1/drills",
        ["drills", _] => "/admin/v1/drills/{id}",
        ["drills", _, "report.html"] => "/admin/v1/drills/{id}/report.html",
        ["partners", _, "secrets", _] => "/admin/v1/partners/{partner}/secrets/{name}",
        ["connectors", _] => "/admin/v1/connectors/{id}",
        ["connectors", _, "versions"] => "/admin/v1/connectors/{id}/versions",
        ["connectors", _, "dry-run"] => "/admin/v1/connectors/{id}/dry-run",
        ["connectors", _, "rollback"] => "/admin/v1/connectors/{id}/rollback",
        ["connectors", _, "versions", _, "quarantine"] => {
            "/admin/v1/connectors/{id}/versions/{version}/quarantine"
        }
        _ => "unmatched",
    }
}

/// The method as a bounded label (OpenTelemetry: `_OTHER` for unknown methods).
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

/// The server span of a request, per the OpenTelemetry HTTP server conventions — without
/// `url.path`: paths carry product ids and tracking numbers, and `http.route` says which
/// resource it was.
pub fn server_span(method: &'static str, route: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: "mallgate::http",
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.scheme = "http",
        network.protocol.version = "1.1",
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        mallgate.request_id = tracing::field::Empty,
    )
}

/// A 5xx status as `error.type` wants it: a string.
fn status_text(status: u16) -> &'static str {
    match status {
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "_OTHER",
    }
}

/// What the access line and the request figures are made of.
#[derive(Debug)]
pub struct Answered<'a> {
    pub listener: &'static str,
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
    pub elapsed: Duration,
    pub request_id: Option<&'a str>,
    pub client: Option<std::net::IpAddr>,
    pub tally: SourceTally,
}

/// The request is answered: its span gets the status, the access line is written, the
/// figures move.
pub fn answered(span: &tracing::Span, metrics: &Metrics, a: &Answered<'_>) {
    span.record("http.response.status_code", a.status);
    if let Some(id) = a.request_id {
        span.record("mallgate.request_id", id);
    }
    if a.status >= 500 {
        span.record("error.type", status_text(a.status));
        span.record("otel.status_code", "ERROR");
    }
    let trace_id = if super::tracing_on() {
        super::traces::trace_id(span)
    } else {
        None
    };
    let t = &a.tally;
    metrics.drills.request(t.drills, a.status);
    if !super::access::write(a, trace_id.as_deref()) {
        access_event(a, trace_id.as_deref());
    }
    metrics.request(a);
}

/// The access line as a `tracing` event (text logs, or before logging is set up).
fn access_event(a: &Answered<'_>, trace_id: Option<&str>) {
    let t = &a.tally;
    let client = a.client.map(|ip| ip.to_string());
    tracing::info!(
        target: "mallgate::access",
        listener = a.listener,
        http.request.method = a.method,
        http.route = a.route,
        http.response.status_code = a.status,
        duration_ms = a.elapsed.as_secs_f64() * 1000.0,
        partner_ms = t.partner_wait.as_secs_f64() * 1000.0,
        request_id = a.request_id.unwrap_or("-"),
        trace_id = trace_id.unwrap_or("-"),
        client.address = client.as_deref().unwrap_or("-"),
        sources.live = t.live,
        sources.cached = t.cached,
        sources.stale = t.stale,
        sources.failed = t.failed,
        sources.skipped = t.skipped,
        "answered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_never_ids() {
        assert_eq!(
            route_of("/v1/products/gtin:00012345678905"),
            "/v1/products/{product_id}"
        );
        assert_eq!(
            route_of("/v1/tracking/swiftship/1Z999"),
            "/v1/tracking/{carrier}/{tracking_number}"
        );
        assert_eq!(route_of("/v1/tracking/swiftship/"), "unmatched");
        assert_eq!(
            route_of("/admin/v1/connectors/acme/versions/3/quarantine"),
            "/admin/v1/connectors/{id}/versions/{version}/quarantine"
        );
        assert_eq!(
            route_of("/admin/v1/partners/acme/secrets/api-key"),
            "/admin/v1/partners/{partner}/secrets/{name}"
        );
        assert_eq!(route_of("/wp-login.php"), "unmatched");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").expect("a method")),
            "_OTHER"
        );
    }
}
