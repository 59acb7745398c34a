//! The reload task (DESIGN §6): every change to the serving set — an admin API change, the
//! watched directory, SIGHUP, the canary judge's verdicts and quarantines — is a [`Change`]
//! sent down one channel to one task, which applies them one at a time. The task is a
//! pingora background service with a runtime of its own, and it does the building (store
//! writes and fsyncs, jq compiles, schema compiles) on that runtime's blocking pool, never
//! on a thread that answers requests.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, oneshot};

use crate::admin::Role;
use crate::problem::ApiError;

/// Changes waiting beyond this many are refused (503): the task is one at a time.
const QUEUE: usize = 64;

/// Where a reload came from, as the audit log names it (`reload.<source>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    /// `POST /admin/v1/reload`.
    Admin,
    /// The watched connectors directory changed.
    Directory,
    /// SIGHUP.
    Sighup,
    /// The shared store (etcd) changed: another replica's change, or this one's own.
    Store,
}

impl ReloadSource {
    pub fn action(self) -> &'static str {
        match self {
            Self::Admin => "reload",
            Self::Directory => "reload.directory",
            Self::Sighup => "reload.sighup",
            Self::Store => "reload.store",
        }
    }
}

/// One change to the serving set. Each is applied as one transaction: store → build →
/// swap → audit, undone as one when any step fails (see `admin::change`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new version of `id`: the active one, or a canary at `canary` percent beside it.
    /// `if_match` is the revision it replaces (`If-Match`), checked in turn with every
    /// other change.
    Put {
        id: String,
        partner: String,
        text: String,
        canary: Option<u8>,
        if_match: Option<String>,
    },
    /// Back to version `to`, else the stored one before the active one, else the
    /// directory's document. Ends any canary.
    Rollback { id: String, to: Option<u32> },
    /// The stored versions stop serving (the directory's document, if any, takes over).
    /// `if_match` is the revision deleted (`If-Match`), checked in turn like a put's.
    Delete {
        id: String,
        if_match: Option<String>,
    },
    /// The canary judge's verdict on canary `version`: promote it, or end it.
    Verdict {
        id: String,
        version: u32,
        promote: bool,
        reason: String,
    },
    /// Take `version` out of service for good (until cleared), falling back to the last
    /// good version.
    Quarantine {
        id: String,
        version: u32,
        reason: String,
    },
    /// The quarantined `version` may serve again (nothing is activated).
    ClearQuarantine { id: String, version: u32 },
    /// Rebuild the serving set from the store and the directory.
    Reload(ReloadSource),
}

/// What an applied change came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The serving set's generation after the change.
    pub generation: u64,
    /// The version the change stored (a put), acted on (a verdict, a quarantine) or rolled
    /// back to (`None`: the directory's document).
    pub version: Option<u32>,
    /// The version of the connector serving before and after the change.
    pub before: Option<u32>,
    pub serving: Option<u32>,
    /// A put of the document already active: nothing was stored or swapped.
    pub unchanged: bool,
}

/// Applies one change; implemented by the admin API (the store transaction) and, without
/// one, by a reload of the connectors directory.
pub trait Apply: Send + Sync {
    fn apply(&self, actor: &Role, change: Change) -> Result<Applied, ApiError>;
}

/// A change in the queue, with where its answer goes.
pub struct Job {
    actor: Role,
    change: Change,
    reply: oneshot::Sender<Result<Applied, ApiError>>,
}

/// The sending side: cheap to clone, one per source.
#[derive(Debug, Clone)]
pub struct Changes {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

fn stopped() -> ApiError {
    ApiError::Overloaded { retry_after_s: 1 }
}

impl Changes {
    /// Submits `change` and waits for the task's answer. A full queue, or a task that has
    /// stopped (the process is shutting down), is a 503 to retry.
    pub async fn submit(&self, actor: Role, change: Change) -> Result<Applied, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job {
                actor,
                change,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The receiving side, run by [`ReloadTask`].
pub struct ReloadTask {
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    apply: Arc<dyn Apply>,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl std::fmt::Debug for ReloadTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadTask").finish_non_exhaustive()
    }
}

/// The channel: the senders for every source, the receiver for the task.
pub fn channel() -> (Changes, mpsc::Receiver<Job>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Changes { tx }, rx)
}

impl ReloadTask {
    pub fn new(
        rx: mpsc::Receiver<Job>,
        apply: Arc<dyn Apply>,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Self {
        Self {
            rx: Mutex::new(Some(rx)),
            apply,
            metrics,
        }
    }
}

impl Change {
    /// The change's source (the `source` label of `mallgate_reloads_total`), its kind and
    /// the connector it is about.
    fn describe(&self) -> (&'static str, &'static str, Option<&str>) {
        match self {
            Self::Put { id, .. } => ("admin", "put", Some(id)),
            Self::Rollback { id, .. } => ("admin", "rollback", Some(id)),
            Self::Delete { id, .. } => ("admin", "delete", Some(id)),
            Self::ClearQuarantine { id, .. } => ("admin", "clear_quarantine", Some(id)),
            Self::Verdict { id, .. } => ("canary", "verdict", Some(id)),
            Self::Quarantine { id, .. } => ("quarantine", "quarantine", Some(id)),
            Self::Reload(ReloadSource::Admin) => ("admin", "reload", None),
            Self::Reload(ReloadSource::Directory) => ("directory", "reload", None),
            Self::Reload(ReloadSource::Sighup) => ("sighup", "reload", None),
            Self::Reload(ReloadSource::Store) => ("store", "reload", None),
        }
    }
}

/// A change's log line and figures (the actor by role only: never a token).
fn observed(
    metrics: &crate::telemetry::Metrics,
    actor: &Role,
    change: &Change,
    result: &Result<Applied, ApiError>,
) {
    let (source, kind, id) = change.describe();
    let actor = match actor {
        Role::Operator => "operator".to_owned(),
        Role::Partner(p) => format!("partner:{p}"),
    };
    let id = id.unwrap_or("*");
    match result {
        Ok(applied) => {
            metrics.reload(source, "ok");
            tracing::info!(
                target: "mallgate::changes",
                source,
                change = kind,
                connector = id,
                actor = %actor,
                generation = applied.generation,
                version = applied.version,
                serving_before = applied.before,
                serving = applied.serving,
                "change applied"
            );
            if let Change::Verdict {
                promote, reason, ..
            } = change
            {
                let decision = if *promote { "promoted" } else { "rolled_back" };
                metrics.canary(id, decision);
                tracing::warn!(
                    target: "mallgate::canary",
                    connector = id,
                    version = applied.version,
                    decision,
                    reason = %reason,
                    "canary decided"
                );
            }
        }
        Err(e) => {
            let result = if e.status() >= 500 {
                "failed"
            } else {
                "rejected"
            };
            metrics.reload(source, result);
            let problem = e.to_problem("", "-");
            let detail = problem["detail"].as_str().unwrap_or_default();
            tracing::warn!(
                target: "mallgate::changes",
                source,
                change = kind,
                connector = id,
                actor = %actor,
                status = e.status(),
                detail,
                "change refused"
            );
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadTask {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.rx.lock().map(|mut rx| rx.take()).ok().flatten();
        let Some(mut rx) = taken else {
            return;
        };
        loop {
            let job = tokio::select! {
                job = rx.recv() => job,
                _ = shutdown.changed() => None,
            };
            let Some(Job {
                actor,
                change,
                reply,
            }) = job
            else {
                return;
            };
            let apply = Arc::clone(&self.apply);
            let (who, what) = (actor.clone(), change.clone());
            // One at a time: the next job waits for this one's building to finish.
            let result = tokio::task::spawn_blocking(move || apply.apply(&actor, change))
                .await
                .unwrap_or_else(|e| {
                    Err(ApiError::Internal {
                        detail: format!("the change failed: {e}"),
                    })
                });
            observed(&self.metrics, &who, &what, &result);
            let _ = reply.send(result);
        }
    }
}
