//! A connection's life on every listener, in place of pingora's HTTP/1 keep-alive loop:
//! wait for the next request's first byte (a peek, which reads nothing if given up), answer
//! it, and again. Between requests the connection is *idle*, and that is where a drain
//! takes it: handed to the new instance on an upgrade, or closed once quiet (see
//! [`crate::process`]). The public listener's connections also hold a slot of its
//! connection table for their whole life.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora::apps::{HttpPersistentSettings, ServerApp};
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::http::HttpApp;
use crate::connections::{Connections, evictable};
use crate::process::{DrainState, Leave, handoff};

/// What a keep-alive session is told it may last (pingora's default); the connection's
/// idle limit is the header timeout.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// How long a closing connection reads what the client still sends, before it goes.
const LINGER: Duration = Duration::from_secs(1);

/// One listener's connections.
pub(super) struct Listener {
    pub(super) app: HttpApp,
    /// The connection table (the public listener).
    pub(super) connections: Option<Arc<Connections>>,
    /// The listener's byte in a handoff.
    pub(super) tag: u8,
}

/// What an idle connection waited for.
enum Idle {
    /// A request's first byte is there.
    Request,
    /// The client left, the keep-alive ran out, or a newcomer took the slot.
    Gone,
    /// The drain takes it: handed over, or closed.
    Handoff(Arc<handoff::Sender>),
    Close,
}

impl Listener {
    /// Serves one connection, from its first request to its close.
    pub(super) async fn connection(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let _open = self.app.drain.opened();
        match &self.connections {
            Some(table) => {
                let ip = stream
                    .get_socket_digest()
                    .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
                // Refused: the stream is dropped, which closes the connection.
                let _ = table.within(ip, self.serve(stream, &shutdown)).await;
            }
            None => self.serve(stream, &shutdown).await,
        }
    }

    async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut pipelined = false;
        // An idle connection (a new one too) gets the header timeout to start its next
        // request, and the head then as long again to arrive whole.
        let wait = Duration::from_millis(self.app.limits.header_timeout_ms);
        // One view of the drain for the connection's life, not one per request.
        let mut drain = self.app.drain.subscribe();
        loop {
            // The header timeout runs from when the connection starts waiting for a head.
            let head_by = Instant::now() + wait;
            if !pipelined {
                match self.idle(&mut stream, &mut drain, wait).await {
                    Idle::Request => {}
                    Idle::Gone => return,
                    Idle::Close => return linger(stream).await,
                    Idle::Handoff(to) => {
                        if let Err(back) = to.send(self.tag, stream).await {
                            linger(back).await;
                        }
                        return;
                    }
                }
            }
            // Boxed: the session is large, and it moves into the answer and its write.
            let mut session = Box::new(ServerSession::new_http1(stream));
            match settings.take() {
                Some(previous) => previous.apply_to_session(&mut session),
                None => session.set_keepalive(Some(KEEPALIVE.as_secs())),
            }
            let Some(reuse) = self.app.answer(session, shutdown, head_by).await else {
                return;
            };
            stream = reuse.stream;
            settings = Some(reuse.settings);
            pipelined = reuse.pipelined;
        }
    }

    /// Waits (at most `wait`) for the next request's first byte, unless the drain takes the
    /// connection first. The peek is given up without reading anything.
    async fn idle(
        &self,
        stream: &mut Stream,
        drain: &mut watch::Receiver<DrainState>,
        wait: Duration,
    ) -> Idle {
        let since = Instant::now();
        loop {
            let leave = self.app.drain.leave(&drain.borrow_and_update(), since);
            let (deadline, by_drain) = match leave {
                // Only with nothing read and nothing buffered: a peek that is not ready at
                // once has read nothing (pingora's read buffer may hold pipelined bytes,
                // which make it ready).
                Some(Leave::Handoff(to)) => {
                    let mut byte = [0u8; 1];
                    return match stream.try_peek(&mut byte).now_or_never() {
                        None => Idle::Handoff(to),
                        Some(Ok(_)) => Idle::Request,
                        Some(Err(_)) => Idle::Gone,
                    };
                }
                Some(Leave::At(at)) if at < since + wait => (at, true),
                _ => (since + wait, false),
            };
            let mut byte = [0u8; 1];
            tokio::select! {
                biased;
                peeked = evictable(stream.try_peek(&mut byte)) => {
                    return match peeked {
                        Some(Ok(_)) => Idle::Request,
                        Some(Err(_)) | None => Idle::Gone,
                    };
                }
                changed = drain.changed() => {
                    if changed.is_err() {
                        // The drain outlives its listeners; never busy-loop regardless.
                        std::future::pending::<()>().await;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return if by_drain { Idle::Close } else { Idle::Gone };
                }
            }
        }
    }
}

/// Closes with a FIN, reading (and dropping) what the client still sends until it closes
/// too, so that it sees an orderly close rather than a reset.
async fn linger(mut stream: Stream) {
    stream.shutdown().await;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The listener as pingora's service app.
pub(super) struct Accept(pub(super) Arc<Listener>);

#[async_trait]
impl ServerApp for Accept {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        Arc::clone(&self.0)
            .connection(stream, shutdown.clone())
            .await;
        None
    }
}

/// The new instance's end of an upgrade: connections the old one hands over join their
/// listener here.
pub(super) struct Handoffs {
    pub(super) receiver: std::sync::Mutex<Option<handoff::Receiver>>,
    pub(super) listeners: Vec<Arc<Listener>>,
}

#[async_trait]
impl BackgroundService for Handoffs {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(receiver) = receiver else { return };
        let socket = match receiver.into_tokio() {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(target: "mallgate::process", error = %e,
                    "cannot take over connections from the previous instance");
                return;
            }
        };
        let mut taken = 0u64;
        loop {
            tokio::select! {
                got = handoff::receive(&socket) => {
                    let (tag, fd) = match got {
                        Ok(got) => got,
                        Err(e) => {
                            tracing::warn!(target: "mallgate::process", error = %e,
                                "stopped taking over connections");
                            break;
                        }
                    };
                    let Some(listener) = self.listeners.iter().find(|l| l.tag == tag) else {
                        continue;
                    };
                    match handoff::stream(fd) {
                        Ok(stream) => {
                            taken += 1;
                            if taken == 1 {
                                tracing::info!(target: "mallgate::process",
                                    "taking over idle connections from the previous instance");
                            }
                            tokio::spawn(Arc::clone(listener).connection(stream, shutdown.clone()));
                        }
                        Err(e) => tracing::warn!(target: "mallgate::process", error = %e,
                            "a connection handed over could not be served"),
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!(target: "mallgate::process", taken,
            "connections taken over from the previous instance");
    }
}
