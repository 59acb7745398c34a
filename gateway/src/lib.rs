//! Mallgate, the gateway: the unified mall API that frontends call, answered by fanning out
//! to partner connectors under one deadline, merging what they say, and caching it.
//!
//! - [`config`]: the process configuration file.
//! - [`registry`]: the `ArcSwap` snapshot of compiled connectors, and partner resources
//!   kept apart from connector versions.
//! - [`cache`]: per-(connector, version, capability, query) records in moka, with TTLs,
//!   stale-while-revalidate, stale-if-error and miss coalescing.
//! - [`fanout`]: one capability across every connector that serves it, under a deadline.
//! - [`health`]: active health checks feeding the endpoints' breakers and ejections.
//! - [`merge`]: identity, offers merged by GTIN, sort, and the paging window.
//! - [`api`]: the handlers of the unified API, transport-agnostic.
//! - [`server`]: the pingora listeners (public and admin) that feed them.
//! - [`connections`]: open connections bounded in total and per client address.
//! - [`admin`]: the admin API: connectors, secrets, reload, purge, status.
//! - [`sandbox`]: the worker processes that run partner-owned jq, and quarantine.
//! - [`store`]: connector versions, the active pointers and the audit log on disk.
//! - [`vault`]: partner secrets sealed at rest (XChaCha20-Poly1305 under the master key).
//! - [`changes`]: the reload task: every change to the serving set, one at a time.
//! - [`watch`]: reloads on a changed connectors directory and on SIGHUP.
//! - [`process`]: draining on SIGTERM, the binary upgrade on SIGQUIT (listeners and idle
//!   connections handed to the new instance), the pid file.
//! - [`telemetry`]: logs, traces and Prometheus metrics.
//! - `demo` (the default `demo` feature): the simulator fleet and the gateway in one
//!   process.

pub mod admin;
pub mod api;
pub mod cache;
pub mod changes;
pub mod cli;
pub mod config;
pub mod connections;
pub mod cursor;
#[cfg(feature = "demo")]
pub mod demo;
pub mod drills;
mod error;
pub mod fanout;
pub mod health;
pub mod merge;
pub mod openapi;
pub mod problem;
pub mod process;
pub mod registry;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod vault;
pub mod watch;

/// The hasher of the gateway's hot maps and caches: keyed per process like std's (a client
/// cannot aim collisions at it) and several times cheaper on long keys than SipHash.
pub(crate) type FastHash = ahash::RandomState;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use server::{Gateway, RunningGateway};
