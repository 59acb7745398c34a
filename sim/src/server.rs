//! Replica servers: each partner replica is an HTTP server on its own loopback port,
//! sharing the world and the clock; faults and request counters wrap every partner route.
//! A replica can be stopped (its port refuses connections) and started again on the same
//! port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::faults::{self, Decision, FaultState};
use crate::world::{Partner, World};

/// The simulated clock: the real one, or frozen at / shifted from it.
#[derive(Debug, Default)]
pub struct Clock {
    frozen: Mutex<Option<i64>>,
    offset_s: AtomicI64,
}

impl Clock {
    /// Seconds since the Unix epoch, as the simulation sees it.
    pub fn now_s(&self) -> i64 {
        if let Some(t) = *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) {
            return t;
        }
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        real + self.offset_s.load(Ordering::Relaxed)
    }

    /// Stops the clock at `unix_s`.
    pub fn freeze(&self, unix_s: i64) {
        *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) = Some(unix_s);
    }

    /// Moves the clock (frozen or not) by `seconds`.
    pub fn advance(&self, seconds: i64) {
        let mut frozen = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        match frozen.as_mut() {
            Some(t) => *t += seconds,
            None => {
                self.offset_s.fetch_add(seconds, Ordering::Relaxed);
            }
        }
    }

    /// Lets the clock run again (keeping any shift).
    pub fn thaw(&self) {
        *self.frozen.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Shared by every replica of the fleet.
#[derive(Debug)]
pub struct Sim {
    pub world: World,
    pub clock: Clock,
    /// OAuth2 access tokens issued by the partners that use them (valid on every replica).
    pub tokens: Tokens,
    /// The request signatures partners require (none until set).
    pub signatures: crate::signing::Signatures,
}

/// What a presented access token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

#[derive(Debug, Default)]
struct TokenBook {
    /// token -> (partner, expires at, simulated Unix seconds)
    issued: BTreeMap<String, (Partner, i64)>,
    ttl_s: BTreeMap<Partner, i64>,
    /// A token dies after this many accepted requests (0 or absent: no limit).
    max_uses: BTreeMap<Partner, u64>,
    uses: BTreeMap<String, u64>,
    count: BTreeMap<Partner, u64>,
    serial: u64,
}

/// The OAuth2 client-credentials tokens of the partners that issue them. Lifetimes run on
/// the simulated clock, so a test expires a token by advancing the clock, or shortens the
/// lifetime with [`Tokens::set_ttl_s`] (the control API's `auth` knob).
#[derive(Debug, Default)]
pub struct Tokens {
    book: Mutex<TokenBook>,
}

impl Tokens {
    fn book(&self) -> std::sync::MutexGuard<'_, TokenBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lifetime of the tokens `partner` issues: its dialect's default until set.
    pub fn ttl_s(&self, partner: Partner) -> i64 {
        self.book()
            .ttl_s
            .get(&partner)
            .copied()
            .unwrap_or(match partner {
                Partner::Acme => 900,
                _ => 3600,
            })
    }

    pub fn set_ttl_s(&self, partner: Partner, seconds: i64) {
        self.book().ttl_s.insert(partner, seconds.max(1));
    }

    /// Makes every token of `partner` die after `uses` accepted requests (0: no limit), so
    /// a test can expire a token in the middle of a paged crawl, deterministically.
    pub fn set_max_uses(&self, partner: Partner, uses: u64) {
        self.book().max_uses.insert(partner, uses);
    }

    pub fn max_uses(&self, partner: Partner) -> u64 {
        self.book().max_uses.get(&partner).copied().unwrap_or(0)
    }

    /// Issues a token at `now_s`; returns it and its lifetime.
    pub fn issue(&self, partner: Partner, now_s: i64) -> (String, i64) {
        let ttl = self.ttl_s(partner);
        let mut book = self.book();
        book.serial += 1;
        *book.count.entry(partner).or_default() += 1;
        if book.issued.len() > 10_000 {
            book.issued.retain(|_, (_, expires)| *expires > now_s);
            let live: Vec<String> = book.issued.keys().cloned().collect();
            book.uses.retain(|t, _| live.contains(t));
        }
        let token = format!(
            "{}-{:016x}",
            partner.id(),
            crate::rng::Rng::derive(book.serial, &[crate::rng::label(partner.id())]).next_u64()
        );
        book.issued.insert(token.clone(), (partner, now_s + ttl));
        (token, ttl)
    }

    /// Checks a presented token; a valid one counts a use.
    pub fn check(&self, partner: Partner, token: &str, now_s: i64) -> TokenCheck {
        let mut book = self.book();
        let limit = book.max_uses.get(&partner).copied().unwrap_or(0);
        match book.issued.get(token) {
            Some((p, expires)) if *p == partner && *expires > now_s => {
                let uses = book.uses.entry(token.to_owned()).or_default();
                if limit > 0 && *uses >= limit {
                    return TokenCheck::Expired;
                }
                *uses += 1;
                TokenCheck::Valid
            }
            Some((p, _)) if *p == partner => TokenCheck::Expired,
            _ => TokenCheck::Unknown,
        }
    }

    /// Invalidates every token of `partner` (as a partner rotating its keys would).
    pub fn revoke_all(&self, partner: Partner) {
        self.book().issued.retain(|_, (p, _)| *p != partner);
    }

    /// Tokens issued so far by `partner`.
    pub fn issued(&self, partner: Partner) -> u64 {
        self.book().count.get(&partner).copied().unwrap_or(0)
    }
}

/// One replica's own state.
#[derive(Debug)]
pub struct ReplicaState {
    pub partner: Partner,
    pub index: usize,
    pub faults: FaultState,
    counters: Mutex<BTreeMap<String, u64>>,
    /// The W3C `traceparent` headers received (the last 1,000), for trace tests.
    traceparents: Mutex<std::collections::VecDeque<String>>,
}

impl ReplicaState {
    fn count(&self, key: String) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Requests served so far, by `METHOD route` (route templates, e.g.
    /// `GET /v1/products/{sku}`), by `METHOD path` under `path:` and by HTTP version under
    /// `version:` (`version:HTTP/2.0`).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `traceparent` headers received, oldest first (the last 1,000).
    pub fn traceparents(&self) -> Vec<String> {
        self.traceparents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn note_traceparent(&self, value: &str) {
        let mut seen = self.traceparents.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() == 1000 {
            seen.pop_front();
        }
        seen.push_back(value.to_owned());
    }
}

/// What every dialect handler can read.
#[derive(Debug, Clone)]
pub struct AppState {
    pub sim: Arc<Sim>,
    pub replica: Arc<ReplicaState>,
}

/// Set on a request when the replica's `drift` knob is on.
#[derive(Debug, Clone, Copy)]
pub struct Drift(pub bool);

async fn faults_and_counters(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned());
    state.replica.count(format!("{} {route}", req.method()));
    state.replica.count(format!("version:{:?}", req.version()));
    state
        .replica
        .count(format!("path:{} {}", req.method(), req.uri().path()));
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        state.replica.note_traceparent(tp);
    }
    // The partner's correlation header comes back on every answer it gives.
    let echo = correlation_header(state.replica.partner).and_then(|name| {
        req.headers()
            .get(name)
            .cloned()
            .map(|v| (axum::http::HeaderName::from_static(name), v))
    });
    let req = match check_signature(&state, req).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let mut response = decide_and_answer(&state, req, next).await;
    if let Some((name, value)) = echo {
        response.headers_mut().insert(name, value);
    }
    response
}

/// Largest body a signature check reads (the dialects' own bodies are far smaller).
const SIGNED_BODY_LIMIT: usize = 1 << 20;

/// When the partner requires signed requests: the request back if its signature holds,
/// else the `401` it gets (counted either way).
async fn check_signature(state: &AppState, req: Request) -> Result<Request, Response> {
    use axum::response::IntoResponse;
    let Some(check) = state.sim.signatures.get(state.replica.partner) else {
        return Ok(req);
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, SIGNED_BODY_LIMIT).await else {
        state.replica.count("signature:invalid".into());
        return Err(axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response());
    };
    let received = crate::signing::Received {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &bytes,
    };
    // Freshness is judged on the wall clock, as a real partner's is: the simulated clock
    // (often frozen by tests) moves the world's data, not the signer's.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match crate::signing::verify(&check, &received, now) {
        Ok(()) => {
            state.replica.count("signature:valid".into());
            let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
            req.extensions_mut().insert(crate::signing::Signed);
            Ok(req)
        }
        Err(reason) => {
            state.replica.count("signature:invalid".into());
            Err((
                axum::http::StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"error": "invalid_signature", "reason": reason})),
            )
                .into_response())
        }
    }
}

/// The header each partner echoes (lower case, as HTTP/1 header names compare).
pub fn correlation_header(partner: Partner) -> Option<&'static str> {
    match partner {
        Partner::Acme => Some("wm_qos.correlation_id"),
        Partner::SwiftShip => Some("transid"),
        Partner::Threadline => Some("x-request-id"),
        _ => None,
    }
}

async fn decide_and_answer(state: &AppState, mut req: Request, next: Next) -> Response {
    let (knobs, decision, delay) = state.replica.faults.decide();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match decision {
        Decision::Hang => {
            // Bounded: a simulator never holds a connection for ever.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            faults::error()
        }
        Decision::Reset => faults::reset(),
        Decision::Error => faults::error(),
        Decision::RateLimited => faults::rate_limited(knobs.retry_after_s.max(1)),
        Decision::Garbage => faults::garbage(),
        Decision::Serve | Decision::Truncate => {
            req.extensions_mut().insert(Drift(knobs.drift));
            // For dialect middleware (auth guards), which cannot take the router's state.
            req.extensions_mut().insert(state.clone());
            let response = next.run(req).await;
            if decision == Decision::Serve && knobs.drip_ms == 0 {
                return response;
            }
            let (parts, body) = response.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
                return faults::error();
            };
            let response = Response::from_parts(parts, axum::body::Body::empty());
            if decision == Decision::Truncate {
                faults::truncate(response, bytes)
            } else {
                faults::drip(response, bytes, Duration::from_millis(knobs.drip_ms))
            }
        }
    }
}

/// A running (or stopped) replica.
#[derive(Debug)]
pub struct Replica {
    pub state: Arc<ReplicaState>,
    pub addr: SocketAddr,
    app: Router,
    /// Served over TLS with this configuration, or plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    running: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

fn listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    // Restarting on the same port right after a stop must not fail on TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Replica {
    /// Binds `addr` (port 0: any free port) and serves `dialect` for `partner`.
    pub fn start(
        sim: Arc<Sim>,
        partner: Partner,
        index: usize,
        addr: SocketAddr,
        dialect: Router<AppState>,
        extra: Router,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Arc<Self>> {
        let state = Arc::new(ReplicaState {
            partner,
            index,
            faults: FaultState::new(sim.world.seed, partner.id(), index),
            counters: Mutex::new(BTreeMap::new()),
            traceparents: Mutex::new(std::collections::VecDeque::new()),
        });
        let app_state = AppState {
            sim,
            replica: Arc::clone(&state),
        };
        let app = dialect
            .route_layer(axum::middleware::from_fn_with_state(
                app_state.clone(),
                faults_and_counters,
            ))
            .with_state(app_state)
            .merge(extra);
        let listener = listener(addr)?;
        let addr = listener.local_addr()?;
        let replica = Arc::new(Self {
            state,
            addr,
            app,
            tls,
            running: Mutex::new(None),
        });
        replica.serve(listener);
        Ok(replica)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.app.clone();
        let task = match &self.tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            }),
            Some(config) => tokio::spawn(serve_tls(listener, app, Arc::clone(config), stopped)),
        };
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, task));
    }

    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Stops accepting and closes open connections; the port then refuses connections.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, task)) = running {
            let _ = stop.send(());
            // Hung requests would hold a graceful shutdown: abort after a short grace.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_millis(500), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// `https` when the replica serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The replica's base URL.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    /// Serves again on the same port.
    pub async fn restart(&self) -> std::io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = listener(self.addr)?;
        self.serve(listener);
        Ok(())
    }
}

/// Serves `app` over TLS until `stopped` fires; dropping the connection set then closes
/// every open connection. A failed handshake (a client that does not trust the CA, or
/// has no certificate where one is required) ends that connection only.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    config: Arc<rustls::ServerConfig>,
    stopped: oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut connections = tokio::task::JoinSet::new();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    // Out of descriptors, say: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                connections.spawn(async move {
                    // A client that never finishes its handshake is dropped after a while.
                    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    let Ok(Ok(tls)) = handshake.await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
