//! The public listener on pingora. pingora's proxy serves one upstream per request; the
//! unified API answers from its own handlers, so the listener is a plain
//! [`HttpServerApp`]: it reads the request head (under a read timeout), enforces the header
//! and body limits with problem+json answers, hands the request to [`Api::handle`] and
//! writes the answer. Draining (shutdown) answers with `Connection: close`.
//!
//! pingora's `Server::run` owns its runtimes and returns when its shutdown signal fires, so
//! it runs on a thread of its own; tests stop it through a channel, the binary through
//! Unix signals (SIGTERM drains, SIGINT stops at once, SIGQUIT hands the listeners over
//! for a binary upgrade).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use mallgate_connectors::runtime::stack::admission::{Limiter, limiter, try_take};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::listening::Service;
use tokio::sync::oneshot;

use crate::GatewayError;
use crate::admin::{Admin, CanaryJudge};

mod build;
use crate::api::{Api, Request, Response};
use crate::changes::{Changes, ReloadTask};
use crate::config::{AdmissionConfig, GatewayConfig, LimitsConfig};
use crate::connections::{Bounded, Connections};
use crate::health::HealthChecker;
use crate::problem::ApiError;
use crate::telemetry::{Metrics, request};
use crate::watch::Watcher;
pub use build::resolve_reference;
use pingora::services::background::background_service;
use tracing::Instrument;

/// Bytes a connection buffers before a send (pingora's read buffer is as large).
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The gateway, built and loaded, not yet listening.
#[derive(Debug)]
pub struct Gateway {
    pub api: Arc<Api>,
    /// The admin API, when the config has an `admin` section.
    pub admin: Option<Arc<Admin>>,
    /// Failover drills (started through the admin API).
    pub drills: Arc<crate::drills::Drills>,
    config: GatewayConfig,
    /// The public listener's open connections.
    connections: Arc<Connections>,
    /// Where every change to the serving set goes, and the task that applies them (taken
    /// by the server that runs it).
    changes: Changes,
    reload_task: Option<ReloadTask>,
}

/// The listeners' addresses, port 0 replaced by the one picked.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    public: SocketAddr,
    admin: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

/// A gateway listening on its own thread.
#[derive(Debug)]
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub api: Arc<Api>,
    /// The admin listener's address and API, when configured.
    pub admin_addr: Option<SocketAddr>,
    /// The metrics listener's address, when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub admin: Option<Arc<Admin>>,
    /// The public listener's open connections (counts for tests and the status).
    pub connections: Arc<Connections>,
    stop: Option<oneshot::Sender<ShutdownSignal>>,
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    /// The public and admin listeners' addresses, port 0 replaced by a free port. Both
    /// are probed at once: probing one after the other could hand the admin listener the
    /// port the public probe had just released, and pingora would then adopt one socket for
    /// both services (two owners of one descriptor, each closing it at shutdown).
    fn listen_addrs(&self) -> Result<Addrs, GatewayError> {
        let (_public, public) = probe(self.config.listen)?;
        let admin = match (&self.admin, &self.config.admin) {
            (Some(_), Some(c)) => Some(probe(c.listen)?),
            _ => None,
        };
        let metrics = match self.config.metrics.listen {
            Some(addr) => Some(probe(addr)?),
            None => None,
        };
        // The probes close here, just before pingora binds the same addresses.
        Ok(Addrs {
            public,
            admin: admin.map(|(_, a)| a),
            metrics: metrics.map(|(_, a)| a),
        })
    }

    /// The pingora server: the listeners, and the background services that stop with it —
    /// the reload task, the directory watcher (with `sighup`, SIGHUP too), the health
    /// checks and the canary judge.
    fn server(&mut self, addrs: Addrs, grace_s: u64, sighup: bool) -> Server {
        let Addrs {
            public: addr,
            admin: admin_addr,
            metrics: metrics_addr,
        } = addrs;
        let conf = ServerConf {
            threads: self.config.threads,
            grace_period_seconds: Some(grace_s),
            graceful_shutdown_timeout_seconds: Some(grace_s.max(1)),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        if let Some(task) = self.reload_task.take() {
            server.add_service(background_service("reload", task));
        }
        let watcher = Watcher::new(
            self.config.connectors_dir.clone(),
            sighup,
            self.changes.clone(),
        );
        server.add_service(background_service("watch", watcher));
        let health = HealthChecker::new(Arc::clone(&self.api.registry));
        server.add_service(background_service("health", health));
        if let Some(admin) = &self.admin {
            let judge = CanaryJudge::new(Arc::clone(admin));
            server.add_service(background_service("canary judge", judge));
        }
        let app = HttpApp {
            handler: Handler::Public(Arc::clone(&self.api)),
            listener: "public",
            metrics: Arc::clone(&self.api.metrics),
            limits: self.config.limits,
            admission: Some(Admission::new(self.config.admission)),
        };
        let app = Bounded {
            inner: Arc::new(app),
            connections: Arc::clone(&self.connections),
        };
        let mut service = Service::new("mallgate public".to_owned(), app);
        // A write buffer as large as pingora's read buffer: a typical page (header and a
        // 30 KiB body) leaves in one send instead of two (the default 1460 B buffer flushes
        // the head alone before the body).
        service.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .l4_buffer(L4BufferSettings::default().write(WRITE_BUFFER_BYTES)),
        );
        server.add_service(service);
        if let (Some(admin), Some(admin_addr)) = (&self.admin, admin_addr) {
            let app = HttpApp {
                handler: Handler::Admin(Arc::clone(admin)),
                listener: "admin",
                metrics: Arc::clone(&self.api.metrics),
                limits: LimitsConfig {
                    // Connector documents are bigger than API bodies.
                    max_body_bytes: 1024 * 1024,
                    ..self.config.limits
                },
                admission: None,
            };
            let mut service = Service::new("mallgate admin".to_owned(), app);
            service.add_tcp(&admin_addr.to_string());
            server.add_service(service);
        }
        if let Some(metrics_addr) = metrics_addr {
            let app = HttpApp {
                handler: Handler::Metrics(Arc::clone(&self.api)),
                listener: "metrics",
                metrics: Arc::clone(&self.api.metrics),
                limits: self.config.limits,
                admission: None,
            };
            let mut service = Service::new("mallgate metrics".to_owned(), app);
            service.add_tcp(&metrics_addr.to_string());
            server.add_service(service);
        }
        server
    }

    /// Listens on `config.listen` (port 0: a free loopback port is picked first, since
    /// pingora cannot report the port it bound) on a thread of its own, and returns once
    /// every listener (public, admin, metrics) accepts connections.
    pub fn start(mut self) -> Result<RunningGateway, GatewayError> {
        let addrs = self.listen_addrs()?;
        let (addr, admin_addr, metrics_addr) = (addrs.public, addrs.admin, addrs.metrics);
        let server = self.server(addrs, 0, false);
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("mallgate-pingora".into())
            .spawn(move || {
                server.run(RunArgs {
                    shutdown_signal: Box::new(ChannelSignal(Mutex::new(Some(rx)))),
                });
            })
            .map_err(|e| GatewayError::Startup(format!("cannot start the server thread: {e}")))?;
        let running = RunningGateway {
            addr,
            api: Arc::clone(&self.api),
            admin_addr,
            metrics_addr,
            admin: self.admin.clone(),
            connections: Arc::clone(&self.connections),
            stop: Some(tx),
            thread: Some(thread),
        };
        // Every listener is a service of its own and binds on its own schedule: wait for
        // each (a caller may talk to the admin listener first).
        let listeners = [Some(addr), admin_addr, metrics_addr];
        for listener in listeners.into_iter().flatten() {
            wait_for(listener)?;
        }
        Ok(running)
    }

    /// Serves until a Unix signal: SIGTERM drains (in-flight requests finish, keep-alive
    /// connections are closed), SIGINT stops at once; SIGHUP reloads the connectors.
    pub fn run(mut self) -> Result<(), GatewayError> {
        let addrs = self.listen_addrs()?;
        let server = self.server(addrs, 5, true);
        server.run(RunArgs::default());
        Ok(())
    }
}

impl RunningGateway {
    /// Stops the listener and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(ShutdownSignal::FastShutdown);
        }
        // The background services stop with the server's runtimes.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Returns once `addr` accepts connections (5 s at most).
fn wait_for(addr: SocketAddr) -> Result<(), GatewayError> {
    let connect_to = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    for _ in 0..500 {
        if TcpStream::connect_timeout(&connect_to, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(GatewayError::Listen {
        addr: addr.to_string(),
        reason: "the listener did not come up within 5 s".into(),
    })
}

/// Binds `addr` to check that it can be bound (pingora panics on a failed bind) and, for
/// port 0, to have the kernel pick a free port: the probe and the address it holds. The
/// caller keeps the probe open until every address is picked.
fn probe(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), GatewayError> {
    let failed = |e: std::io::Error| GatewayError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let listener = TcpListener::bind(addr).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

struct ChannelSignal(Mutex<Option<oneshot::Receiver<ShutdownSignal>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match rx {
            Some(rx) => rx.await.unwrap_or(ShutdownSignal::FastShutdown),
            None => std::future::pending().await,
        }
    }
}

/// What a request's figures need besides its answer.
struct Seen<'a> {
    span: &'a tracing::Span,
    method: &'static str,
    route: &'static str,
    started: tokio::time::Instant,
    client: Option<String>,
}

impl<'a> Seen<'a> {
    fn new(
        span: &'a tracing::Span,
        method: &'static str,
        route: &'static str,
        started: tokio::time::Instant,
        http: &ServerSession,
    ) -> Self {
        let client = http
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string());
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
struct HttpApp {
    handler: Handler,
    /// `public`, `admin` or `metrics` (the `listener` label and log field).
    listener: &'static str,
    metrics: Arc<Metrics>,
    limits: LimitsConfig,
    /// Admission control (the public listener only).
    admission: Option<Admission>,
}

enum Handler {
    Public(Arc<Api>),
    Admin(Arc<Admin>),
    /// `/metrics` alone, without a token (`metrics.listen`).
    Metrics(Arc<Api>),
}

/// Admission control: a bound on requests in flight (503 at once beyond it) and an
/// optional token bucket per client (429).
struct Admission {
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
    fn new(config: AdmissionConfig) -> Self {
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

    /// Admits a request from `client`, or says why not.
    fn admit(&self, client: &Client) -> Result<Admitted<'_>, ApiError> {
        if let (Some(clients), Some(rps)) = (&self.clients, self.config.client_rps) {
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
                client: seen.client.as_deref(),
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
            Handler::Public(api) => api.handle(request).await,
            Handler::Admin(admin) => admin.handle(request).await,
            Handler::Metrics(api) => crate::admin::metrics_only(api, &request),
        };
        (response, head_only)
    }
}

#[async_trait]
impl HttpServerApp for HttpApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let timeout = Duration::from_millis(self.limits.request_timeout_ms);
        http.set_read_timeout(Some(timeout));
        http.set_write_timeout(Some(timeout));
        // Pipelined requests are answered one after the other, in order (RFC 9112 §9.3.2),
        // never one answer and a silent close.
        http.set_pipelining_enabled(true);
        // The whole head within the header timeout: a per-read timeout alone lets a client
        // that trickles one byte at a time hold the connection for ever.
        let head = Duration::from_millis(self.limits.header_timeout_ms);
        let read = crate::connections::unless_evicted(http.read_request());
        match tokio::time::timeout(head, read).await {
            Ok(Some(Ok(true))) => {}
            // Evicted by a newcomer while it waited (the listener is at its cap).
            Ok(None) => return None,
            // The client left, was too slow, or sent something that is not HTTP/1.x (pingora
            // refuses heads over 1 MiB outright); nothing sensible can be answered.
            Ok(Some(Ok(false) | Err(_))) | Err(_) => return None,
        }
        let mut close = *shutdown.borrow();
        let started = tokio::time::Instant::now();
        let head = http.req_header();
        let method = request::method_label(&head.method);
        let route = request::route_of(head.uri.path());
        let span = request::server_span(method, route);
        if crate::telemetry::tracing_on() {
            crate::telemetry::traces::adopt_parent(&span, &head.headers);
        }
        // Liveness is never refused; everything else passes admission first.
        let admitted = match &self.admission {
            Some(admission) if http.req_header().uri.path() != "/healthz" => {
                admission.admit(&client_of(&http)).map(Some)
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
            ResponseHeader::build(response.status, Some(response.headers.len() + 2)).ok()?;
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
        http.write_response_header(Box::new(header)).await.ok()?;
        if !response.body.is_empty() && !head_only {
            http.write_response_body(response.body, true).await.ok()?;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        crate::connections::waiting();
        match http.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        }
    }
}
