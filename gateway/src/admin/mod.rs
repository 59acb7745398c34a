//! The admin API (DESIGN §9) on its own listener: partners and operators register and change
//! connectors, store partner secrets, reload, purge the cache and read the status.
//!
//! - [`auth`]: bearer tokens, kept as SHA-256 hashes, compared in constant time; `operator`
//!   may do everything, `partner:<id>` only its own connectors and secrets.
//! - [`routes`]: method and path to handler.
//! - [`connectors`], [`secrets`], [`dry_run`], [`status`]: the handlers.
//! - [`change`]: the one change transaction — store, build the whole serving set (the same
//!   build as startup, [`serving`]), swap, audit — undone as one when a step fails. The
//!   handlers hand changes to the reload task ([`crate::changes`]), which applies them one
//!   at a time, off the runtimes that answer requests.
//! - [`canary`], [`quarantine`], [`trial`]: the judge of canaries, the quarantine of
//!   overrunning versions, the trial run of a candidate on recorded replies.
//!
//! Every change, accepted or not, is appended to the audit log with the actor's role,
//! never a token or a secret value.

mod auth;
mod canary;
mod change;
mod connectors;
mod drills;
mod dry_run;
mod partners;
mod quarantine;
mod routes;
mod secrets;
mod serving;
mod status;
mod trial;

pub use auth::Role;
pub use canary::{CanaryJudge, verdict};
pub use dry_run::{diff_pointers, without_provenance};

use std::path::PathBuf;
use std::sync::Arc;

use mallgate_connectors::ConnectorError;
use mallgate_connectors::mapping::{Sandbox, SandboxLimits};
use mallgate_connectors::runtime::secrets::MemorySecretStore;
use serde_json::Value;

use crate::GatewayError;
use crate::api::{Api, Request, Response};
use crate::changes::Changes;
use crate::config::AdminConfig;
use crate::drills::Drills;
use crate::problem::ApiError;
use crate::store::Store;
use crate::vault::Vault;

/// The admin side of the gateway.
pub struct Admin {
    api: Arc<Api>,
    store: Store,
    secrets: Arc<MemorySecretStore>,
    connectors_dir: Option<PathBuf>,
    tokens: auth::Tokens,
    /// Where changes go: the reload task, one at a time.
    changes: Changes,
    /// Store and audit writes that failed, for the status.
    health: change::StoreHealth,
    /// Dry-runs: candidate programs run in a child process under rlimits.
    sandbox: Sandbox,
    /// Trial runs of candidates on recorded samples: the same child, tighter limits.
    trials: Sandbox,
    /// Healthy canary calls before promotion.
    promote_after: u64,
    /// Failover drills.
    drills: Option<Arc<Drills>>,
    /// Seals partner secrets at rest; `None`: they are kept in memory only.
    vault: Option<Vault>,
    /// Partner records are read, changed and written one at a time.
    partners_lock: std::sync::Mutex<()>,
    /// The longest grace a rotated token keeps working.
    token_grace_s: u64,
    /// The fleet as this replica sees it: live replicas (the partners' limits are
    /// shared by them), and whether it leads (judges the canaries).
    fleet: Arc<crate::store::fleet::FleetView>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("store", &self.store)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// The revision of a served version, as `ETag` / `If-Match` carry it.
fn revision(id: &str, version: u32) -> String {
    format!("\"{id}-v{version}\"")
}

/// A connector document that does not load: 422 with each problem's pointer.
fn rejected(error: &ConnectorError) -> ApiError {
    match error {
        ConnectorError::InvalidSpec { problems } => ApiError::Rejected {
            detail: format!(
                "the connector has {} problem{}; the active version keeps serving",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ),
            problems: problems
                .iter()
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
                .collect(),
        },
        other => ApiError::Rejected {
            detail: format!("{other}; the active version keeps serving"),
            problems: Vec::new(),
        },
    }
}

impl Admin {
    /// `tokens` are resolved here (references read, hashes parsed); a token that cannot be
    /// resolved is a startup error naming its role, never its value. Changes are sent to
    /// `changes`, whose task applies them with [`crate::changes::Apply`].
    pub fn new(
        api: Arc<Api>,
        store: Store,
        secrets: Arc<MemorySecretStore>,
        connectors_dir: Option<PathBuf>,
        config: &AdminConfig,
        resolve: impl Fn(&str) -> Result<String, String>,
        changes: Changes,
    ) -> Result<Self, GatewayError> {
        let program = crate::sandbox::sandbox_program(config.sandbox_program.as_ref())?;
        let sandbox = Sandbox::new(
            program.clone(),
            vec!["sandbox-child".into()],
            SandboxLimits::default(),
        );
        let trials = Sandbox::new(
            program,
            vec!["sandbox-child".into()],
            SandboxLimits {
                cpu_seconds: 2,
                wall: std::time::Duration::from_secs(4),
                ..SandboxLimits::default()
            },
        );
        let secrets_config = &api.config().secrets;
        let vault = match &secrets_config.master_key {
            Some(key) => Some(Vault::resolve(
                key,
                &secrets_config.previous_keys,
                &resolve,
            )?),
            None => None,
        };
        let admin = Self {
            tokens: auth::Tokens::resolve(config, &resolve)?,
            store,
            secrets,
            connectors_dir,
            changes,
            health: change::StoreHealth::default(),
            sandbox,
            trials,
            promote_after: u64::from(config.canary_promote_after.max(1)),
            drills: None,
            vault,
            partners_lock: std::sync::Mutex::new(()),
            token_grace_s: config.token_grace_s,
            fleet: Arc::new(crate::store::fleet::FleetView::new(
                api.registry.fleet_share().clone(),
            )),
            api,
        };
        admin.load_partners()?;
        let opened = admin.load_secrets()?;
        match &admin.vault {
            Some(vault) => tracing::info!(
                opened,
                key = vault.key_id(),
                "partner secrets opened from the state directory"
            ),
            None => tracing::warn!(
                "no secrets.master_key: partner secrets set through the admin API are kept in memory only and lost at a restart"
            ),
        }
        Ok(admin)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The fleet as this replica sees it (kept current by its lease).
    pub fn fleet_view(&self) -> &Arc<crate::store::fleet::FleetView> {
        &self.fleet
    }

    /// Answers one admin request.
    pub async fn handle(&self, req: Request) -> Response {
        let request_id = format!("adm-{:x}", crate::cursor::random_u64() & 0xffff_ffff);
        let path = req.path.clone();
        // `/metrics`: an operator token, unless the config makes it public.
        if path == "/metrics" {
            let allowed = if self.api.config().metrics.public {
                Ok(())
            } else {
                self.tokens
                    .authenticate(&req)
                    .and_then(|role| role.operator_only())
            };
            return match allowed {
                Ok(()) => metrics_only(&self.api, &req),
                Err(e) => Response::problem(&e, &path, &request_id),
            };
        }
        match self.route(&req).await {
            Ok(r) => r,
            Err(e) => Response::problem(&e, &path, &request_id),
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition of the gateway's metrics.
pub fn metrics_only(api: &Api, req: &Request) -> Response {
    let fail = |e: ApiError| Response::problem(&e, &req.path, "-");
    if req.path != "/metrics" {
        return fail(ApiError::NotFound {
            kind: "route",
            detail: "this listener serves /metrics only".into(),
        });
    }
    if req.method != http::Method::GET {
        return fail(ApiError::MethodNotAllowed { allow: "GET" });
    }
    match api.metrics.encode() {
        Ok(text) => Response {
            status: 200,
            headers: vec![
                (
                    "content-type",
                    "text/plain; version=0.0.4; charset=utf-8".to_owned(),
                ),
                ("cache-control", "no-store".to_owned()),
            ],
            body: bytes::Bytes::from(text),
        },
        Err(e) => fail(ApiError::Internal {
            detail: format!("the metrics could not be encoded: {e}"),
        }),
    }
}
