//! The Unix signals, in front of pingora's shutdown: SIGTERM drains first (listeners
//! open for the drain delay, `/readyz` 503), SIGQUIT hands over to a new instance only
//! when one is waiting (pingora's own would close the listeners regardless), SIGINT stops
//! at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use super::{Drain, DrainKind, handoff};

/// How long SIGQUIT waits for a new instance to bind its socket.
const WAIT_FOR_SUCCESSOR: Duration = Duration::from_secs(30);

/// The process's signals (see the module).
#[derive(Debug)]
pub struct Signals {
    pub drain: Arc<Drain>,
    /// The new instance's connection socket (`<upgrade_sock>.conns`).
    pub conns: PathBuf,
    pub delay: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!(target: "mallgate::process", "cannot install the signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    let successor = tokio::select! {
                        s = handoff::Sender::connect(&self.conns, WAIT_FOR_SUCCESSOR) => s,
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    };
                    match successor {
                        Ok(sender) => {
                            tracing::info!(target: "mallgate::process",
                                "SIGQUIT: handing the listeners and idle connections to the new instance");
                            self.drain.start(DrainKind::Upgrade, Some(sender));
                            return ShutdownSignal::GracefulUpgrade;
                        }
                        Err(e) => tracing::error!(target: "mallgate::process",
                            socket = %self.conns.display(), error = %e,
                            "SIGQUIT, but no new instance (`mallgate serve --upgrade`) is waiting; still serving"),
                    }
                }
                _ = term.recv() => {
                    self.drain.start(DrainKind::Shutdown, None);
                    tracing::info!(target: "mallgate::process", drain_delay_s = self.delay.as_secs(),
                        "SIGTERM: draining (/readyz answers 503; the listeners stay open for the drain delay)");
                    tokio::select! {
                        () = tokio::time::sleep(self.delay) => {}
                        _ = int.recv() => return ShutdownSignal::FastShutdown,
                    }
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}
