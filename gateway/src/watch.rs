//! The reload task's other sources (DESIGN §6): the watched connectors directory (the
//! operator's GitOps source; a changed file becomes a new version) and SIGHUP. Both send a
//! [`Change::Reload`] to the reload task, in turn with admin changes. A pingora background
//! service: it stops with the server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::GatewayError;
use crate::admin::Role;
use crate::changes::{Applied, Apply, Change, Changes, ReloadSource};
use crate::problem::ApiError;
use crate::registry::{Registry, documents_in};

/// How often the directory is looked at.
const POLL: Duration = Duration::from_secs(1);

/// The pause before a store change that could not be applied is tried again.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// The watcher of the connectors directory, SIGHUP and the shared store.
#[derive(Debug)]
pub struct Watcher {
    dir: Option<PathBuf>,
    sighup: bool,
    changes: Changes,
    /// Woken by the store's watch (etcd): another replica's change, or this one's.
    store: Option<Arc<tokio::sync::Notify>>,
}

/// Waits for the store's watch to wake it; never, without one.
async fn store_changed(store: Option<&tokio::sync::Notify>) {
    match store {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Names, sizes and modification times of the connector documents in `dir`.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ext_ok = [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x));
                    let meta = e.metadata().ok()?;
                    ext_ok.then(|| (name, meta.len(), meta.modified().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Watcher {
    /// Watches `dir` (if any) and, with `sighup`, the SIGHUP signal; each change is sent to
    /// `changes`. A rejected reload leaves the active set serving; it is audited (with an
    /// admin API) and logged to stderr without document contents.
    pub fn new(dir: Option<PathBuf>, sighup: bool, changes: Changes) -> Self {
        Self {
            dir,
            sighup,
            changes,
            store: None,
        }
    }

    /// Also reloads when `store` is woken (by [`crate::store::Store::watch`]). Many
    /// changes while a reload runs are one reload after it.
    #[must_use]
    pub fn with_store(mut self, store: Arc<tokio::sync::Notify>) -> Self {
        self.store = Some(store);
        self
    }
}

#[async_trait]
impl BackgroundService for Watcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = if self.sighup {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
        } else {
            None
        };
        let mut seen = self.dir.as_deref().map(fingerprint);
        loop {
            let (hangup, stored) = tokio::select! {
                _ = shutdown.changed() => return,
                () = store_changed(self.store.as_deref()) => (false, true),
                got = async {
                    match hup.as_mut() {
                        Some(h) => tokio::time::timeout(POLL, h.recv()).await.is_ok(),
                        None => {
                            tokio::time::sleep(POLL).await;
                            false
                        }
                    }
                } => (got, false),
            };
            let now = self.dir.as_deref().map(fingerprint);
            let changed = now != seen;
            let source = if hangup {
                ReloadSource::Sighup
            } else if stored {
                ReloadSource::Store
            } else if changed {
                ReloadSource::Directory
            } else {
                continue;
            };
            let change = Change::Reload(source);
            // Not taken (the queue is full): the next look tries again. Refused: the reload
            // task logged why and counted it; the active set keeps serving, and the next
            // change of the directory tries again.
            let result = self.changes.submit(Role::Operator, change).await;
            if stored
                && result.is_err()
                && let Some(store) = &self.store
            {
                // The store's change is owed still (etcd out of reach, a full queue, a set
                // that does not build yet): tried again after a pause, never spun on.
                tokio::time::sleep(STORE_RETRY).await;
                store.notify_one();
            }
            if let Err(ApiError::Overloaded { .. }) = result {
                continue;
            }
            seen = now;
        }
    }
}

/// Without an admin API, a reload is the connectors directory, built and swapped.
#[derive(Debug)]
pub struct DirectoryReload {
    pub registry: Arc<Registry>,
    pub dir: Option<PathBuf>,
}

impl Apply for DirectoryReload {
    fn apply(&self, _: &Role, change: Change) -> Result<Applied, ApiError> {
        let Change::Reload(_) = change else {
            return Err(ApiError::Forbidden {
                detail: "without an admin API only the directory changes the serving set".into(),
            });
        };
        let generation = match &self.dir {
            Some(d) => documents_in(d)
                .and_then(|docs| self.registry.reload(&docs))
                .map(|s| s.generation),
            None => Ok(self.registry.load().generation),
        };
        generation
            .map(|generation| Applied {
                generation,
                ..Applied::default()
            })
            .map_err(|e: GatewayError| ApiError::Rejected {
                detail: e.to_string(),
                problems: Vec::new(),
            })
    }
}
