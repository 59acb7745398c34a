//! The process's life: draining, the binary upgrade, the pid file and the daemon.
//!
//! **Draining.** SIGTERM or SIGQUIT starts a drain ([`Drain`]): `/readyz` answers 503
//! `draining`, admin writes are refused (the instance that stays takes them), the canary
//! judge stops deciding, and every answer carries `Connection: close` — unless a successor
//! takes the connections over, when closing them would only make every client reconnect.
//!
//! - SIGTERM ([`signals`]): the listeners stay open for `process.drain_delay_s`, so a load
//!   balancer that reads `/readyz` stops sending; then they close and the process waits for
//!   its connections (at most `process.grace_period_s`) and exits as soon as they are gone.
//! - SIGQUIT, a binary upgrade: the new instance (`mallgate serve --upgrade`) is already
//!   waiting on `process.upgrade_sock`. The old one hands it the listening sockets
//!   (pingora's fd transfer), so both accept on the same sockets for five seconds, and
//!   then the old one stops accepting. Its idle keep-alive connections go across too
//!   ([`handoff`]): each is passed to the new instance at a moment it has no request in
//!   progress and not a byte of the next one read, so a request the client sends at that
//!   very moment waits in the socket's kernel buffer and the new instance reads it. No
//!   connection is closed under a client, and no client can tell.
//!
//! **Idle connections with no successor** (SIGTERM, or an upgrade whose handoff failed)
//! cannot be handed over, and HTTP/1.1 has no way to close one without a race against a
//! request in flight (RFC 9112 §9.6). Mallgate narrows it to what a load balancer that
//! honours readiness never hits: a request that arrives during the drain is answered with
//! `Connection: close`; an idle connection is closed only once the drain delay is over (the
//! balancer has stopped sending) and the connection has been quiet for
//! `process.idle_close_ms`; and it closes with a FIN (`shutdown(SHUT_WR)`, then reading
//! until the client closes, at most a second), never a reset.

pub mod handoff;
pub mod signals;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::GatewayError;
use crate::config::ProcessConfig;

/// Why the process drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainKind {
    /// SIGQUIT: a new instance takes over.
    Upgrade,
    /// SIGTERM: the process stops.
    Shutdown,
}

impl DrainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Upgrade => "upgrade",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The drain, as the listeners see it.
#[derive(Debug, Clone, Default)]
pub struct DrainState {
    /// `None` while serving.
    pub kind: Option<DrainKind>,
    since: Option<Instant>,
    /// Where idle connections go (an upgrade whose successor listens for them).
    handoff: Option<Arc<handoff::Sender>>,
    /// The successor has the listening sockets: idle connections go now (until then they
    /// wait, answered here if a request comes).
    handing: bool,
}

/// What an idle connection does next.
#[derive(Debug)]
pub enum Leave {
    /// Goes to the new instance now.
    Handoff(Arc<handoff::Sender>),
    /// Closes at this instant unless a request comes first.
    At(Instant),
}

/// The process's drain and its open connections.
#[derive(Debug)]
pub struct Drain {
    state: watch::Sender<DrainState>,
    open: AtomicUsize,
    delay: Duration,
    idle_close: Duration,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct Open<'a>(&'a AtomicUsize);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drain {
    pub fn new(config: &ProcessConfig) -> Self {
        Self {
            state: watch::Sender::new(DrainState::default()),
            open: AtomicUsize::new(0),
            delay: Duration::from_secs(config.drain_delay_s),
            idle_close: Duration::from_millis(config.idle_close_ms),
        }
    }

    /// Starts draining (the first start wins; a later one may only add a handoff).
    pub fn start(&self, kind: DrainKind, handoff: Option<handoff::Sender>) {
        self.state.send_modify(|state| {
            if state.kind.is_none() {
                state.kind = Some(kind);
                state.since = Some(Instant::now());
            }
            if let Some(sender) = handoff {
                state.handoff = Some(Arc::new(sender));
            }
        });
    }

    /// Whether answers close their connection: while draining, unless a successor takes
    /// idle connections over (then a connection goes across once its answer is written,
    /// and its client never reconnects).
    pub fn closes_connections(&self) -> bool {
        let state = self.state.borrow();
        state.kind.is_some() && state.handoff.is_none()
    }

    /// Whether a successor takes the idle connections over.
    pub fn hands_off(&self) -> bool {
        self.state.borrow().handoff.is_some()
    }

    /// The successor has the listening sockets (pingora sent them): idle connections go.
    pub fn hand_over(&self) {
        self.state.send_if_modified(|state| {
            let was = state.handing;
            state.handing = state.handoff.is_some();
            state.handing != was
        });
    }

    /// Why the process drains, if it does.
    pub fn draining(&self) -> Option<DrainKind> {
        self.state.borrow().kind
    }

    pub fn subscribe(&self) -> watch::Receiver<DrainState> {
        self.state.subscribe()
    }

    /// Counts a connection open until the guard drops.
    pub fn opened(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(&self.open)
    }

    /// Idle connections handed to the new instance so far.
    pub fn handed_off(&self) -> u64 {
        self.state.borrow().handoff.as_ref().map_or(0, |s| s.sent())
    }

    /// Connections open on every listener.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// What a connection idle since `idle_since` does while `state` holds: `None`, wait.
    pub fn leave(&self, state: &DrainState, idle_since: Instant) -> Option<Leave> {
        let (kind, since) = (state.kind?, state.since?);
        if let Some(sender) = &state.handoff {
            return state.handing.then(|| Leave::Handoff(Arc::clone(sender)));
        }
        let quiet = idle_since + self.idle_close;
        Some(Leave::At(match kind {
            // A balancer may still send until the drain delay is over.
            DrainKind::Shutdown => quiet.max(since + self.delay),
            DrainKind::Upgrade => quiet,
        }))
    }
}

/// Writes the pid file (atomically: a reader never sees half a pid).
pub fn write_pid_file(path: &Path) -> Result<(), GatewayError> {
    crate::store::write_atomic(path, format!("{}\n", std::process::id()).as_bytes())
}
