//! The Unix signals, in front of pingora's shutdown: SIGTERM drains first (listeners
//! open for the drain delay, `/readyz` 503), SIGQUIT hands over to a new instance only
//! when one is waiting (pingora's own would close the listeners regardless), SIGINT stops
//! at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{Drain, DrainKind, handoff};

/// How long SIGQUIT waits for a new instance to bind its socket.
const WAIT_FOR_SUCCESSOR: Duration = Duration::from_secs(30);

/// The process's signals (see the module).
pub struct Signals {
    pub drain: Arc<Drain>,
    /// The new instance's connection socket (`<upgrade_sock>.conns`).
    pub conns: PathBuf,
    pub delay: Duration,
    /// Runs once the handlers are installed: the pid file is written and a daemon's parent
    /// told only when a signal can no longer kill the process undrained.
    pub ready: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("conns", &self.conns)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

/// What a SIGQUIT came to.
enum Quit {
    Upgrade(ShutdownSignal),
    /// SIGTERM or SIGINT while it waited for a successor.
    Other(ShutdownSignal),
    /// No successor: serve on.
    Stay,
}

impl Signals {
    async fn quit(&self, term: &mut Signal, int: &mut Signal) -> Quit {
        let successor = tokio::select! {
            s = handoff::Sender::connect(&self.conns, WAIT_FOR_SUCCESSOR) => s,
            _ = term.recv() => return Quit::Other(self.terminate(int).await),
            _ = int.recv() => return Quit::Other(ShutdownSignal::FastShutdown),
        };
        match successor {
            Ok(sender) => {
                tracing::info!(target: "mallgate::process",
                    "SIGQUIT: handing the listeners and idle connections to the new instance");
                self.drain.start(DrainKind::Upgrade, Some(sender));
                Quit::Upgrade(ShutdownSignal::GracefulUpgrade)
            }
            Err(e) => {
                tracing::error!(target: "mallgate::process",
                    socket = %self.conns.display(), error = %e,
                    "SIGQUIT, but no new instance (`mallgate serve --upgrade`) is waiting; still serving");
                Quit::Stay
            }
        }
    }

    async fn terminate(&self, int: &mut Signal) -> ShutdownSignal {
        self.drain.start(DrainKind::Shutdown, None);
        tracing::info!(target: "mallgate::process", drain_delay_s = self.delay.as_secs(),
            "SIGTERM: draining (/readyz answers 503; the listeners stay open for the drain delay)");
        tokio::select! {
            () = tokio::time::sleep(self.delay) => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
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
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(ready) = ready {
            ready();
        }
        loop {
            tokio::select! {
                _ = quit.recv() => match self.quit(&mut term, &mut int).await {
                    Quit::Upgrade(signal) | Quit::Other(signal) => return signal,
                    Quit::Stay => {}
                },
                _ = term.recv() => return self.terminate(&mut int).await,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}
