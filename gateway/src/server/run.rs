//! `mallgate serve`: pingora on the main thread under the process's signals. A normal start
//! binds the listeners; `--upgrade` takes them from the running instance (pingora's fd
//! transfer over `process.upgrade_sock`), and its idle connections after them. Once the
//! listeners are closed and the last connection is done, the process exits at once rather
//! than sleeping out pingora's whole grace period.

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

/// After the listeners close, how long accepts already under way get to reach their
/// connection's count before "nothing open" means done.
const SETTLE: Duration = Duration::from_millis(200);

pub(super) fn run(mut gateway: Gateway, options: RunOptions) -> Result<(), GatewayError> {
    let process = gateway.config.process.clone();
    let upgrade_sock = process.upgrade_sock(gateway.config.state_dir.as_deref());
    let conns = handoff::conns_path(&upgrade_sock);
    let addrs = if options.upgrade {
        let addrs = gateway.configured_addrs();
        if addrs.public.port() == 0 {
            return Err(GatewayError::Config {
                path: "listen".into(),
                reason: "an upgrade takes over the running instance's ports: port 0 names none"
                    .into(),
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
    if let Some(pid_file) = &process.pid_file {
        write_pid_file(pid_file)?;
    }
    if let Some(ready) = options.on_ready {
        ready();
    }
    let drain = Arc::clone(&gateway.api.drain);
    exit_when_drained(
        server.watch_execution_phase(),
        Arc::clone(&drain),
        options.on_exit,
    )?;
    let signals = Signals {
        drain,
        conns,
        delay: Duration::from_secs(process.drain_delay_s),
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    Ok(())
}

/// Exits the process once the listeners are closed and no connection is open (pingora
/// would sleep out its whole grace period).
fn exit_when_drained(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    drain: Arc<Drain>,
    on_exit: Option<Box<dyn FnOnce() + Send>>,
) -> Result<(), GatewayError> {
    let watch = move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(ExecutionPhase::Terminated) | Err(broadcast::error::RecvError::Closed) => {
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
        std::thread::sleep(SETTLE);
        while drain.open() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(target: "mallgate::process", handed_off = drain.handed_off(),
            "drained: every connection is done; exiting");
        if let Some(on_exit) = on_exit {
            on_exit();
        }
        std::process::exit(0);
    };
    std::thread::Builder::new()
        .name("mallgate-exit".into())
        .spawn(watch)
        .map(|_| ())
        .map_err(|e| GatewayError::Startup(format!("cannot start the exit watch: {e}")))
}
