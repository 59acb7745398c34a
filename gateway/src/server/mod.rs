//! The listeners on pingora. pingora's proxy serves one upstream per request; the unified
//! API answers from its own handlers, so each listener is a plain app: [`conn`] keeps the
//! connection (its keep-alive loop, its slot, its drain), [`http`] answers each request
//! under the limits with problem+json answers.
//!
//! pingora's `Server::run` owns its runtimes and returns when its shutdown signal fires, so
//! in tests it runs on a thread of its own and stops through a channel; the binary runs it
//! on the main thread under Unix signals ([`crate::process`]: SIGTERM drains, SIGINT stops
//! at once, SIGQUIT hands the listeners and idle connections to a new instance).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::sync::oneshot;

use crate::GatewayError;
use crate::admin::{Admin, CanaryJudge};
use crate::api::Api;
use crate::changes::{Changes, ReloadTask};
use crate::config::{GatewayConfig, LimitsConfig};
use crate::connections::Connections;
use crate::health::HealthChecker;
use crate::watch::Watcher;

mod build;
mod conn;
mod http;
mod run;
pub use build::resolve_reference;
use conn::{Accept, Listener};
use http::{Admission, Handler, HttpApp};
pub use run::RunOptions;

/// Bytes a connection buffers before a send (pingora's read buffer is as large).
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The listeners' bytes in a connection handoff.
const PUBLIC: u8 = 0;
const ADMIN: u8 = 1;
const METRICS: u8 = 2;

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

/// What a pingora server is made of, beside the config.
struct Parts {
    addrs: Addrs,
    /// Runs the directory watcher's SIGHUP handler (the binary).
    sighup: bool,
    /// `serve --upgrade`: the listening sockets come from the running instance.
    upgrade: bool,
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

    /// The configured addresses as they are (an upgrade takes them over: nothing to probe).
    fn configured_addrs(&self) -> Addrs {
        Addrs {
            public: self.config.listen,
            admin: self
                .admin
                .as_ref()
                .and(self.config.admin.as_ref())
                .map(|c| c.listen),
            metrics: self.config.metrics.listen,
        }
    }

    /// The pingora server: the listeners, and the background services that stop with it —
    /// the reload task, the directory watcher (with `sighup`, SIGHUP too), the health
    /// checks and the canary judge. Returns the listeners too (a handoff feeds them).
    fn server(&mut self, parts: &Parts) -> (Server, Vec<Arc<Listener>>) {
        let process = &self.config.process;
        let conf = ServerConf {
            threads: self.config.threads,
            grace_period_seconds: Some(process.grace_period_s),
            graceful_shutdown_timeout_seconds: Some(process.graceful_shutdown_timeout_s),
            upgrade_sock: process
                .upgrade_sock(self.config.state_dir.as_deref())
                .to_string_lossy()
                .into_owned(),
            ..ServerConf::default()
        };
        let opt = Opt {
            upgrade: parts.upgrade,
            ..Opt::default()
        };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        if let Some(task) = self.reload_task.take() {
            server.add_service(background_service("reload", task));
        }
        let mut watcher = Watcher::new(
            self.config.connectors_dir.clone(),
            parts.sighup,
            self.changes.clone(),
        );
        if let Some(admin) = &self.admin {
            // A fleet's store: every change, from any replica, wakes the reload path.
            let woken = Arc::new(tokio::sync::Notify::new());
            let wake = Arc::clone(&woken);
            if admin.store().watch(Arc::new(move || wake.notify_one())) {
                watcher = watcher.with_store(woken);
            }
            // Its lease and record in the fleet view, for as long as it runs. Weak: the
            // store's own task must not keep the admin API alive.
            let weak = Arc::downgrade(admin);
            let id = self.config.replica_id();
            let record: crate::store::fleet::Record = Arc::new(move || {
                weak.upgrade()
                    .map(|a| a.fleet_record(&id).to_string().into_bytes())
                    .unwrap_or_default()
            });
            admin
                .store()
                .announce(record, Arc::clone(admin.fleet_view()));
        }
        server.add_service(background_service("watch", watcher));
        let health = HealthChecker::new(Arc::clone(&self.api.registry));
        server.add_service(background_service("health", health));
        if let Some(admin) = &self.admin {
            let judge = CanaryJudge::new(Arc::clone(admin));
            server.add_service(background_service("canary judge", judge));
        }
        let listeners = self.listeners(&mut server, parts.addrs);
        (server, listeners)
    }

    /// The public, admin and metrics listeners, as pingora services.
    fn listeners(&self, server: &mut Server, addrs: Addrs) -> Vec<Arc<Listener>> {
        let listener = |handler, name, limits, admission, connections, tag| {
            Arc::new(Listener {
                app: HttpApp {
                    handler,
                    listener: name,
                    metrics: Arc::clone(&self.api.metrics),
                    limits,
                    admission,
                    drain: Arc::clone(&self.api.drain),
                },
                connections,
                tag,
            })
        };
        let public = listener(
            Handler::Public(Arc::clone(&self.api)),
            "public",
            self.config.limits,
            Some(Admission::new(self.config.admission)),
            Some(Arc::clone(&self.connections)),
            PUBLIC,
        );
        let mut service = Service::new("mallgate public".to_owned(), Accept(Arc::clone(&public)));
        // A write buffer as large as pingora's read buffer: a typical page (header and a
        // 30 KiB body) leaves in one send instead of two (the default 1460 B buffer flushes
        // the head alone before the body).
        service.add_listener(
            ListenerConfig::tcp(addrs.public.to_string())
                .l4_buffer(L4BufferSettings::default().write(WRITE_BUFFER_BYTES)),
        );
        server.add_service(service);
        let mut listeners = vec![public];
        if let (Some(admin), Some(addr)) = (&self.admin, addrs.admin) {
            let limits = LimitsConfig {
                // Connector documents are bigger than API bodies.
                max_body_bytes: 1024 * 1024,
                ..self.config.limits
            };
            let app = listener(
                Handler::Admin(Arc::clone(admin)),
                "admin",
                limits,
                None,
                None,
                ADMIN,
            );
            let mut service = Service::new("mallgate admin".to_owned(), Accept(Arc::clone(&app)));
            service.add_tcp(&addr.to_string());
            server.add_service(service);
            listeners.push(app);
        }
        if let Some(addr) = addrs.metrics {
            let handler = Handler::Metrics(Arc::clone(&self.api));
            let app = listener(handler, "metrics", self.config.limits, None, None, METRICS);
            let mut service = Service::new("mallgate metrics".to_owned(), Accept(Arc::clone(&app)));
            service.add_tcp(&addr.to_string());
            server.add_service(service);
            listeners.push(app);
        }
        listeners
    }

    /// Listens on `config.listen` (port 0: a free loopback port is picked first, since
    /// pingora cannot report the port it bound) on a thread of its own, and returns once
    /// every listener (public, admin, metrics) accepts connections.
    pub fn start(mut self) -> Result<RunningGateway, GatewayError> {
        let addrs = self.listen_addrs()?;
        let (addr, admin_addr, metrics_addr) = (addrs.public, addrs.admin, addrs.metrics);
        let parts = Parts {
            addrs,
            sighup: false,
            upgrade: false,
        };
        let (mut server, _) = self.server(&parts);
        server.bootstrap();
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

    /// Serves until a Unix signal (see [`crate::process`]); with `options.upgrade`, takes
    /// the listeners (and then idle connections) over from the running instance.
    pub fn run(self, options: RunOptions) -> Result<(), GatewayError> {
        run::run(self, options)
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
