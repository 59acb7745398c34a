//! `mallgate serve`: pingora on the main thread under the process's signals. A normal start
//! binds the listeners; `--upgrade` takes them from the running instance (pingora's fd
//! transfer over `process.upgrade_sock`), and its idle connections after them. Once the
//! listeners are closed and the last connection is done, the process exits at once rather
//! than sleeping out pingora's whole grace period.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::server::{ExecutionPhase, RunArgs};
use pingora::services::background::background_service;
use tokio::sync::broadcast;

use super::conn::Handoffs;
use super::{Gateway, Parts};
use crate::GatewayError;
use crate::process::signals::Signals;
use crate::process::{Drain, handoff, write_pid_file};

/// How `serve` starts, and what it does just before it exits early.
#[derive(Default)]
pub struct RunOptions {
    /// Takes the listeners over from the running instance (`serve --upgrade`).
    pub upgrade: bool,
    /// Runs once the listeners are this process's and the pid file is written (a daemon's
    /// parent waits for it).
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// Runs just before the process exits once drained (flushes the telemetry).
    pub on_exit: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("upgrade", &self.upgrade)
            .finish_non_exhaustive()
    }
}

/// After the listeners close, how long nothing may be open before the process exits: an
/// accept under way when they closed reaches its connection's count well within it.
const SETTLE: Duration = Duration::from_secs(1);

pub(super) fn run(mut gateway: Gateway, options: RunOptions) -> Result<(), GatewayError> {
    let process = gateway.config.process.clone();
    let upgrade_sock = process.upgrade_sock(gateway.config.state_dir.as_deref());
    let conns = handoff::conns_path(&upgrade_sock);
    let addrs = if options.upgrade {
        let addrs = gateway.configured_addrs();
        let ports = [Some(addrs.public), addrs.admin, addrs.metrics];
        if ports.into_iter().flatten().any(|a| a.port() == 0) {
            return Err(GatewayError::Config {
                path: "listen".into(),
                reason: "an upgrade takes over the running instance's ports: port 0 (in listen, admin.listen or metrics.listen) names none".into(),
            });
        }
        addrs
    } else {
        gateway.listen_addrs()?
    };
    // Bound before the listening sockets are asked for: the running instance looks for it
    // on SIGQUIT, and hands its idle connections to it.
    let receiver = match options.upgrade {
        true => Some(
            handoff::Receiver::bind(&conns).map_err(|e| GatewayError::Listen {
                addr: conns.display().to_string(),
                reason: e.to_string(),
            })?,
        ),
        false => None,
    };
    let parts = Parts {
        addrs,
        sighup: true,
        upgrade: options.upgrade,
    };
    let (mut server, listeners) = gateway.server(&parts);
    if let Some(receiver) = receiver {
        let handoffs = Handoffs {
            receiver: Mutex::new(Some(receiver)),
            listeners,
        };
        server.add_service(background_service("handoff", handoffs));
        tracing::info!(target: "mallgate::process", socket = %upgrade_sock.display(),
            "waiting for the running instance's listeners (send it SIGQUIT)");
    }
    // With --upgrade, this blocks until the sockets arrive (pingora exits the process
    // when they do not within 5 s).
    server.bootstrap();
    if options.upgrade {
        let _ = std::fs::remove_file(&conns);
        tracing::info!(target: "mallgate::process", "took over the listeners");
    }
    let drain = Arc::clone(&gateway.api.drain);
    let exit = Exit {
        drain: Arc::clone(&drain),
        pid_file: process.pid_file.clone(),
        on_exit: options.on_exit,
    };
    exit.watch(server.watch_execution_phase())?;
    // Once the signal handlers are in: the pid file (systemd may signal it at once), then
    // the daemon's parent.
    let pid_file = process.pid_file.clone();
    let on_ready = options.on_ready;
    let ready = move || {
        if let Some(path) = &pid_file
            && let Err(e) = write_pid_file(path)
        {
            tracing::error!(target: "mallgate::process", error = %e, "cannot write the pid file");
        }
        if let Some(ready) = on_ready {
            ready();
        }
    };
    let signals = Signals {
        drain,
        conns,
        delay: Duration::from_secs(process.drain_delay_s),
        ready: Mutex::new(Some(Box::new(ready))),
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    Ok(())
}

/// The end of the process: idle connections go to the successor once it has the
/// listening sockets, and the process exits once the listeners are closed and no
/// connection is open (pingora would sleep out its whole grace period).
struct Exit {
    drain: Arc<Drain>,
    pid_file: Option<PathBuf>,
    on_exit: Option<Box<dyn FnOnce() + Send>>,
}

impl Exit {
    fn watch(self, phases: broadcast::Receiver<ExecutionPhase>) -> Result<(), GatewayError> {
        std::thread::Builder::new()
            .name("mallgate-exit".into())
            .spawn(move || self.run(phases))
            .map(|_| ())
            .map_err(|e| GatewayError::Startup(format!("cannot start the exit watch: {e}")))
    }

    fn run(self, mut phases: broadcast::Receiver<ExecutionPhase>) {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulUpgradeCloseTimeout) => self.drain.hand_over(),
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(ExecutionPhase::Terminated) | Err(broadcast::error::RecvError::Closed) => {
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
        // Nothing open for a whole settle interval: an accept under way when the listeners
        // closed has reached its connection's count by then.
        let mut quiet_since = std::time::Instant::now();
        while quiet_since.elapsed() < SETTLE {
            std::thread::sleep(Duration::from_millis(20));
            if self.drain.open() > 0 {
                quiet_since = std::time::Instant::now();
            }
        }
        let code = self.verdict();
        if let Some(on_exit) = self.on_exit {
            on_exit();
        }
        std::process::exit(code);
    }

    /// 0, unless an upgrade ended with no successor serving (the pid file still names this
    /// process): 1 then, so that a service manager restarts the service.
    fn verdict(&self) -> i32 {
        let handed_off = self.drain.handed_off();
        let ours = std::process::id().to_string();
        let orphaned = self.drain.draining() == Some(crate::process::DrainKind::Upgrade)
            && self.pid_file.as_ref().is_some_and(|path| {
                std::fs::read_to_string(path).is_ok_and(|pid| pid.trim() == ours)
            });
        if orphaned {
            tracing::error!(target: "mallgate::process", handed_off,
                "drained, but no new instance took over (the pid file is still this process's); exiting 1");
            return 1;
        }
        tracing::info!(target: "mallgate::process", handed_off,
            "drained: every connection is done; exiting");
        0
    }
}
