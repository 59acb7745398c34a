//! The HTTP/1 app of every listener: reads the request head (under a read timeout),
//! enforces the header and body limits with problem+json answers, hands the request to
//! [`Api::handle`] (or the admin API, or `/metrics`) and writes the answer. Draining answers
//! with `Connection: close`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use mallgate_connectors::runtime::stack::admission::{Limiter, limiter, try_take};
use pingora::apps::HttpPersistentSettings;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tracing::Instrument;

use crate::admin::Admin;
use crate::api::{Api, Request, Response};
use crate::config::{AdmissionConfig, LimitsConfig};
use crate::problem::ApiError;
use crate::process::Drain;
use crate::telemetry::{Metrics, request};

/// What a request's figures need besides its answer.
struct Seen<'a> {
    span: &'a tracing::Span,
    method: &'static str,
    route: &'static str,
    started: tokio::time::Instant,
    client: Option<std::net::IpAddr>,
}

impl<'a> Seen<'a> {
    fn new(
        span: &'a tracing::Span,
        method: &'static str,
        route: &'static str,
        started: tokio::time::Instant,
        http: &ServerSession,
    ) -> Self {
        let client = http.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        Self {
            span,
            method,
            route,
            started,
            client,
        }
    }
}

/// The HTTP/1 listener app: the public API or the admin API behind the same limits.
pub(super) struct HttpApp {
    pub(super) handler: Handler,
    /// `public`, `admin` or `metrics` (the `listener` label and log field).
    pub(super) listener: &'static str,
    pub(super) metrics: Arc<Metrics>,
    pub(super) limits: LimitsConfig,
    /// Admission control (the public listener only).
    pub(super) admission: Option<Admission>,
    /// The process's drain: answers say `Connection: close` once it starts.
    pub(super) drain: Arc<Drain>,
}

/// A connection that may serve another request: its stream, what the next session takes
/// over from this one, and whether bytes of the next request are already read.
pub(super) struct Reuse {
    pub(super) stream: Stream,
    pub(super) settings: HttpPersistentSettings,
    pub(super) pipelined: bool,
}

pub(super) enum Handler {
    Public(Arc<Api>),
    Admin(Arc<Admin>),
    /// `/metrics` alone, without a token (`metrics.listen`).
    Metrics(Arc<Api>),
}

/// Admission control: a bound on requests in flight (503 at once beyond it) and an
/// optional token bucket per client (429).
pub(super) struct Admission {
    config: AdmissionConfig,
    in_flight: AtomicUsize,
    clients: Option<moka::sync::Cache<String, Option<Arc<Limiter>>>>,
}

/// A request counted in flight until dropped.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(super) fn new(config: AdmissionConfig) -> Self {
        let clients = config.client_rps.filter(|r| *r > 0.0).map(|_| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build()
        });
        Self {
            config,
            in_flight: AtomicUsize::new(0),
            clients,
        }
    }

    /// Admits a request of `session`, or says why not.
    fn admit(&self, session: &ServerSession) -> Result<Admitted<'_>, ApiError> {
        if let (Some(clients), Some(rps)) = (&self.clients, self.config.client_rps) {
            let client = client_of(session);
            let burst = self
                .config
                .client_burst
                .map_or(rps * 2.0, |b| f64::from(b.max(1)));
            // A key gets its own bucket; its address still has one (four times as large),
            // so made-up keys cannot multiply one address's rate.
            let mut buckets = vec![(client.ip.clone(), 1.0)];
            if let Some(key) = &client.key {
                buckets[0].1 = 4.0;
                buckets.push((key.clone(), 1.0));
            }
            for (name, factor) in buckets {
                let bucket = clients.get_with_by_ref(&name, || {
                    limiter(Some(rps * factor), Some((burst * factor).ceil() as u32)).map(Arc::new)
                });
                if let Some(bucket) = bucket
                    && let Err(wait) = try_take(&bucket)
                {
                    return Err(ApiError::TooManyRequests {
                        retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                    });
                }
            }
        }
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(&self.in_flight);
        if before >= self.config.max_in_flight {
            return Err(ApiError::Overloaded { retry_after_s: 1 });
        }
        Ok(admitted)
    }
}

/// Who a request is from, for its rate limits: its IP address, and its `x-api-key`.
struct Client {
    ip: String,
    key: Option<String>,
}

fn client_of(session: &ServerSession) -> Client {
    let key = session
        .req_header()
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .map(|k| format!("key:{k}"));
    let ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map_or_else(|| "unknown".to_owned(), |a| format!("ip:{}", a.ip()));
    Client { ip, key }
}

/// Bytes of the request line and header fields, as sent (give or take separators).
fn head_size(session: &ServerSession) -> usize {
    let head = session.req_header();
    let uri = head.uri.path().len() + head.uri.query().map_or(0, |q| q.len() + 1);
    let fields: usize = head
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    uri + head.method.as_str().len() + 12 + fields
}

impl HttpApp {
    /// The request's span status, access line and figures.
    fn observe(
        &self,
        seen: &Seen<'_>,
        status: u16,
        request_id: Option<&str>,
        tally: request::SourceTally,
    ) {
        request::answered(
            seen.span,
            &self.metrics,
            &request::Answered {
                listener: self.listener,
                method: seen.method,
                route: seen.route,
                status,
                elapsed: seen.started.elapsed(),
                request_id,
                client: seen.client,
                tally,
            },
        );
    }

    /// Reads the body within the limit and answers. `close` is set when the connection
    /// cannot be reused (a body left unread).
    async fn respond(&self, http: &mut ServerSession, close: &mut bool) -> (Response, bool) {
        let head = http.req_header();
        let path = head.uri.path().to_owned();
        let fail = |e: ApiError| Response::problem(&e, &path, "-");
        if head_size(http) > self.limits.max_header_bytes {
            *close = true;
            return (
                fail(ApiError::HeadersTooLarge {
                    limit: self.limits.max_header_bytes,
                }),
                false,
            );
        }
        let declared = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let limit = self.limits.max_body_bytes;
        if declared.is_some_and(|n| n > limit) {
            *close = true;
            return (fail(ApiError::PayloadTooLarge { limit }), false);
        }
        let mut body = Vec::new();
        loop {
            match http.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        *close = true;
                        return (fail(ApiError::PayloadTooLarge { limit }), false);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    *close = true;
                    return (
                        fail(ApiError::BadBody {
                            pointer: String::new(),
                            detail: "the request body could not be read".into(),
                        }),
                        false,
                    );
                }
            }
        }
        let head = http.req_header();
        let head_only = head.method == Method::HEAD;
        let request = Request {
            method: if head_only {
                Method::GET
            } else {
                head.method.clone()
            },
            path,
            query: head.uri.query().unwrap_or("").to_owned(),
            headers: head.headers.clone(),
            body: Bytes::from(body),
        };
        let response = match &self.handler {
            // Boxed: a handler's future is large (a fan-out's whole state), and the
            // request's future moves on its way to the runtime (timeout, span, tally).
            Handler::Public(api) => Box::pin(api.handle(request)).await,
            // A change made here while a successor already serves would be unknown to it.
            Handler::Admin(_)
                if self.drain.draining().is_some()
                    && !matches!(request.method, Method::GET | Method::HEAD) =>
            {
                let e = ApiError::Draining {
                    detail: "this instance is draining: send changes to the instance that stays"
                        .into(),
                };
                Response::problem(&e, &request.path, "-")
            }
            Handler::Admin(admin) => Box::pin(admin.handle(request)).await,
            Handler::Metrics(api) => crate::admin::metrics_only(api, &request),
        };
        (response, head_only)
    }
}

impl HttpApp {
    /// Answers one request on `http`; the connection back when it can serve another.
    /// `head_by`: when the whole head must be in (the header timeout from the moment the
    /// connection began to wait for it).
    pub(super) async fn answer(
        &self,
        mut http: Box<ServerSession>,
        shutdown: &ShutdownWatch,
        head_by: tokio::time::Instant,
    ) -> Option<Reuse> {
        let timeout = Duration::from_millis(self.limits.request_timeout_ms);
        http.set_read_timeout(Some(timeout));
        http.set_write_timeout(Some(timeout));
        // Pipelined requests are answered one after the other, in order (RFC 9112 §9.3.2),
        // never one answer and a silent close.
        http.set_pipelining_enabled(true);
        // The whole head within the header timeout: a per-read timeout alone lets a client
        // that trickles one byte at a time hold the connection for ever.

        let read = crate::connections::unless_evicted(http.read_request());
        match tokio::time::timeout_at(head_by, read).await {
            Ok(Some(Ok(true))) => {}
            // Evicted by a newcomer while it waited (the listener is at its cap).
            Ok(None) => return None,
            // The client left, was too slow, or sent something that is not HTTP/1.x (pingora
            // refuses heads over 1 MiB outright); nothing sensible can be answered.
            Ok(Some(Ok(false) | Err(_))) | Err(_) => return None,
        }
        // Once pingora stops accepting, answers close their connection too, unless a
        // successor takes it over once idle.
        let mut close =
            self.drain.closes_connections() || (*shutdown.borrow() && !self.drain.hands_off());
        let started = tokio::time::Instant::now();
        let head = http.req_header();
        let method = request::method_label(&head.method);
        let route = request::route_of(head.uri.path());
        let span = request::server_span(method, route);
        if crate::telemetry::tracing_on() {
            crate::telemetry::traces::adopt_parent(&span, &head.headers);
        }
        // Probes are never refused (an overloaded instance is neither dead nor unready);
        // everything else passes admission first.
        let admitted = match &self.admission {
            Some(admission) if !matches!(http.req_header().uri.path(), "/healthz" | "/readyz") => {
                admission.admit(&http).map(Some)
            }
            _ => Ok(None),
        };
        let mut tally = request::SourceTally::default();
        let (response, head_only) = match admitted {
            Ok(_admitted) => {
                let answer =
                    request::tallied(self.respond(&mut http, &mut close)).instrument(span.clone());
                match tokio::time::timeout(timeout, answer).await {
                    Ok((r, t)) => {
                        tally = t;
                        r
                    }
                    // Cut off at the request timeout: counted as the 504 it would have
                    // been, then the connection closes.
                    Err(_) => {
                        let seen = Seen::new(&span, method, route, started, &http);
                        self.observe(&seen, 504, None, request::SourceTally::default());
                        return None;
                    }
                }
            }
            Err(e) => {
                self.metrics.refused(match e {
                    ApiError::TooManyRequests { .. } => "client_rate_limited",
                    _ => "overloaded",
                });
                // The body (if any) is left unread: the connection cannot be reused.
                close |= http
                    .req_header()
                    .headers
                    .contains_key(http::header::CONTENT_LENGTH)
                    || http
                        .req_header()
                        .headers
                        .contains_key(http::header::TRANSFER_ENCODING);
                let path = http.req_header().uri.path().to_owned();
                (
                    Response::problem(&e, &path, "-"),
                    http.req_header().method == Method::HEAD,
                )
            }
        };
        http.set_keepalive(if close { None } else { Some(60) });
        let mut header =
            // No second, case-keeping map per answer: pingora writes the names it knows
            // title-cased (`Content-Type`), the others as given (`etag`, `x-request-id`).
            ResponseHeader::build_no_case(response.status, Some(response.headers.len() + 4))
                .ok()?;
        for (name, value) in &response.headers {
            header.insert_header(*name, value.as_str()).ok()?;
        }
        header
            .insert_header("content-length", response.body.len().to_string())
            .ok()?;
        if close {
            header.insert_header("connection", "close").ok()?;
        }
        // Counted before the answer is written: an answer that cannot be written (the
        // client left) was still given.
        let seen = Seen::new(&span, method, route, started, &http);
        self.observe(
            &seen,
            response.status,
            response.header("x-request-id"),
            tally,
        );
        write(http, header, response.body, head_only).await
    }
}

/// Writes the answer and finishes the session: the connection back when it can serve
/// another request.
async fn write(
    mut http: Box<ServerSession>,
    header: ResponseHeader,
    body: Bytes,
    head_only: bool,
) -> Option<Reuse> {
    http.write_response_header(Box::new(header)).await.ok()?;
    if !body.is_empty() && !head_only {
        http.write_response_body(body, true).await.ok()?;
    }
    let mut settings = HttpPersistentSettings::for_session(&http);
    crate::connections::waiting();
    let (stream, prefix) = (*http).finish().await.ok()??.into_parts();
    let pipelined = prefix.is_some();
    if let Some(prefix) = prefix {
        settings.set_pipelined_prefix(prefix);
    }
    Some(Reuse {
        stream,
        settings,
        pipelined,
    })
}
