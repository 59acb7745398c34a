//! The admin API (DESIGN §9) on its own listener: partners and operators register and change
//! connectors, store partner secrets, reload, purge the cache and read the status.
//!
//! - Bearer tokens are configured as references or SHA-256 hashes and only their hashes
//!   are kept; comparisons are constant-time. `operator` may do everything; `partner:<id>`
//!   only its own connectors and secrets (a connector's `partner` must be the token's).
//! - Every change goes through one lock: store the version, build the whole serving set
//!   (the same reload as startup), swap; a rejected build leaves the active version serving,
//!   the new version discarded, and says why (pointer, line, reason).
//! - Every change, accepted or not, is appended to the audit log with the actor's role,
//!   never a token or a secret value.

mod canary;
mod dry_run;
mod quarantine;
mod trial;

use canary::canary_percent;
pub use canary::{CanaryJudge, verdict};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use mallgate_connectors::runtime::secrets::MemorySecretStore;
use mallgate_connectors::{ConnectorError, ConnectorSpec, Format, Owner};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::GatewayError;
use crate::api::{Api, Request, Response};
use crate::config::AdminConfig;
use crate::problem::ApiError;
use crate::registry::{Document, documents_in};
use crate::store::{AuditEntry, Store};
use mallgate_connectors::mapping::{Sandbox, SandboxLimits};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Operator,
    Partner(String),
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "operator" => Some(Self::Operator),
            _ => text
                .strip_prefix("partner:")
                .filter(|p| !p.is_empty())
                .map(|p| Self::Partner(p.to_owned())),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Operator => "operator".into(),
            Self::Partner(p) => format!("partner:{p}"),
        }
    }

    fn may_act_for(&self, partner: &str) -> bool {
        match self {
            Self::Operator => true,
            Self::Partner(p) => p == partner,
        }
    }

    fn owner(&self) -> Owner {
        match self {
            Self::Operator => Owner::Operator,
            Self::Partner(p) => Owner::Partner(p.clone()),
        }
    }
}

/// The admin side of the gateway.
pub struct Admin {
    api: Arc<Api>,
    store: Store,
    secrets: Arc<MemorySecretStore>,
    connectors_dir: Option<PathBuf>,
    /// (SHA-256 of the token, role).
    tokens: Vec<([u8; 32], Role)>,
    /// One change at a time: store, build, swap (never held across an await).
    changes: std::sync::Mutex<()>,
    /// Dry-runs: candidate programs run in a child process under rlimits.
    sandbox: Sandbox,
    /// Trial runs of candidates on recorded samples: the same child, tighter limits.
    trials: Sandbox,
    /// Healthy canary calls before promotion.
    promote_after: u64,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("store", &self.store)
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Equal without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The revision of a served version, as `ETag` / `If-Match` carry it.
fn revision(id: &str, version: u32) -> String {
    format!("\"{id}-v{version}\"")
}

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
    /// resolved is a startup error naming its role, never its value.
    pub fn new(
        api: Arc<Api>,
        store: Store,
        secrets: Arc<MemorySecretStore>,
        connectors_dir: Option<PathBuf>,
        config: &AdminConfig,
        resolve: impl Fn(&str) -> Result<String, String>,
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
        let mut resolved = Vec::new();
        for (i, t) in config.tokens.iter().enumerate() {
            let bad = |reason: String| GatewayError::Config {
                path: PathBuf::from(format!("admin.tokens[{i}]")),
                reason,
            };
            let role = Role::parse(&t.role)
                .ok_or_else(|| bad(format!("role `{}`: operator or partner:<id>", t.role)))?;
            let hash = match (&t.token, &t.sha256) {
                (Some(reference), None) => {
                    let text = resolve(reference).map_err(bad)?;
                    if text.len() < 16 {
                        return Err(bad("a token needs at least 16 characters".into()));
                    }
                    Sha256::digest(text.as_bytes()).into()
                }
                (None, Some(hex)) => {
                    hex32(hex).ok_or_else(|| bad("sha256 must be 64 hex digits".into()))?
                }
                _ => {
                    return Err(bad(
                        "give exactly one of `token` (a reference) or `sha256`".into()
                    ));
                }
            };
            resolved.push((hash, role));
        }
        Ok(Self {
            api,
            store,
            secrets,
            connectors_dir,
            tokens: resolved,
            changes: std::sync::Mutex::new(()),
            sandbox,
            trials,
            promote_after: u64::from(config.canary_promote_after.max(1)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The documents to serve: the connectors directory, with any connector that has an
    /// active version in the store replaced by that version.
    fn documents(&self) -> Result<Vec<Document>, GatewayError> {
        let stored = self.store.active_documents()?;
        let mut docs: BTreeMap<String, Document> = BTreeMap::new();
        if let Some(dir) = &self.connectors_dir {
            let current = self.api.registry.load();
            for doc in documents_in(dir)? {
                // The id: from the serving connector built from this very text, else parsed.
                let digest = format!("{:x}", Sha256::digest(doc.text.as_bytes()));
                let id = match current.connectors.iter().find(|c| c.digest == digest) {
                    Some(c) => c.id().to_owned(),
                    None => {
                        match ConnectorSpec::load(&doc.text, Format::sniff(&doc.text), &doc.owner)
                            .map_err(|e| e.to_string())
                            .and_then(|s| {
                                let refused = self.api.registry.address_problems(&s);
                                if refused.is_empty() {
                                    Ok(s.id)
                                } else {
                                    Err(ConnectorError::InvalidSpec { problems: refused }
                                        .to_string())
                                }
                            }) {
                            Ok(id) => id,
                            Err(reason) => {
                                // A broken file must not block every other change: its last good
                                // version (built from this file) keeps serving, and it is audited.
                                match current.connectors.iter().find(|c| c.source == doc.name) {
                                    Some(last) => {
                                        self.audit(
                                            &Role::Operator,
                                            "directory.document",
                                            &doc.name,
                                            Some(last.version()),
                                            "rejected",
                                            Some(format!(
                                                "{reason}; the last good version keeps serving"
                                            )),
                                        );
                                        docs.insert(
                                            last.id().to_owned(),
                                            Document {
                                                name: doc.name.clone(),
                                                text: last.text.to_string(),
                                                owner: last.owner.clone(),
                                                version: None,
                                                canary_percent: None,
                                            },
                                        );
                                        continue;
                                    }
                                    // A new file that never built: the reload names its problems.
                                    None => doc.name.clone(),
                                }
                            }
                        }
                    }
                };
                docs.insert(id, doc);
            }
        }
        for (id, version, text) in stored {
            // A quarantined version never serves again (the pointer moved when it was
            // quarantined; this covers a crash in between): its last good one does.
            let (version, text) = match self.store.quarantined(&id, version)? {
                None => (version, text),
                Some(_) => match self.store.last_good(&id, version)? {
                    Some(good) => (good, self.store.document(&id, good)?),
                    None => continue,
                },
            };
            let owner = self.author_owner(&id, version);
            // A partner's version beyond its (since narrowed) grant does not serve, and
            // does not stop everyone else's from serving: the directory's document, if
            // any, takes its place.
            if matches!(owner, Owner::Partner(_))
                && let Ok(spec) = ConnectorSpec::load(&text, Format::sniff(&text), &owner)
            {
                let beyond = self.api.registry.grant_problems(&spec, &text);
                if !beyond.is_empty() {
                    self.audit(
                        &Role::Operator,
                        "connector.grant",
                        &id,
                        Some(version),
                        "rejected",
                        Some(ConnectorError::InvalidSpec { problems: beyond }.to_string()),
                    );
                    continue;
                }
            }
            docs.insert(
                id.clone(),
                Document {
                    name: format!("admin:{id}@v{version}"),
                    text,
                    owner,
                    version: Some(version),
                    canary_percent: None,
                },
            );
        }
        let mut out: Vec<Document> = docs.into_values().collect();
        for (id, version, percent, text) in self.store.canary_documents()? {
            if self.store.quarantined(&id, version)?.is_some() {
                continue;
            }
            let owner = self.author_owner(&id, version);
            out.push(Document {
                name: format!("admin:{id}@v{version} (canary {percent}%)"),
                text,
                owner,
                version: Some(version),
                canary_percent: Some(percent),
            });
        }
        Ok(out)
    }

    /// A reload from another source (the watched directory, SIGHUP), in turn with admin
    /// changes, audited as the operator's.
    pub fn reload_from(&self, source: &str) -> Result<u64, GatewayError> {
        let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.reload();
        let role = Role::Operator;
        match &result {
            Ok(_) => self.audit(&role, &format!("reload.{source}"), "*", None, "ok", None),
            Err(e) => self.audit(
                &role,
                &format!("reload.{source}"),
                "*",
                None,
                "rejected",
                Some(e.to_string()),
            ),
        }
        result
    }

    /// The owner a stored version was submitted as.
    /// Fails closed: a version whose author cannot be read counts as its partner's
    /// (untrusted: isolated, granted, partner secrets only), never as the operator's.
    fn author_owner(&self, id: &str, version: u32) -> Owner {
        let meta = self
            .store
            .versions(id)
            .ok()
            .and_then(|v| v.into_iter().find(|m| m.version == version));
        match meta {
            Some(m) => Role::parse(&m.author)
                .map_or_else(|| Owner::Partner(m.partner.clone()), |r| r.owner()),
            None => Owner::Partner(String::new()),
        }
    }

    /// Builds and swaps the whole serving set (the startup path).
    pub fn reload(&self) -> Result<u64, GatewayError> {
        let docs = self.documents()?;
        self.api.registry.reload(&docs).map(|s| s.generation)
    }

    fn audit(
        &self,
        role: &Role,
        action: &str,
        target: &str,
        version: Option<u32>,
        result: &str,
        detail: Option<String>,
    ) {
        // An audit write failure must not undo an accepted change; it is reported in the
        // status instead (the write error carries no secret).
        let _ = self.store.audit(&AuditEntry {
            at: jiff::Timestamp::now().to_string(),
            actor: role.name(),
            action: action.into(),
            target: target.into(),
            version,
            result: result.into(),
            detail,
        });
    }

    fn authenticate(&self, req: &Request) -> Result<Role, ApiError> {
        let token = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (h, role) in &self.tokens {
            if same(h, &hash) {
                found = Some(role.clone());
            }
        }
        found.ok_or(ApiError::Unauthorized)
    }

    /// Answers one admin request.
    pub async fn handle(&self, req: Request) -> Response {
        let request_id = format!("adm-{:x}", crate::cursor::random_u64() & 0xffff_ffff);
        let path = req.path.clone();
        match self.route(&req).await {
            Ok(r) => r,
            Err(e) => Response::problem(&e, &path, &request_id),
        }
    }

    async fn route(&self, req: &Request) -> Result<Response, ApiError> {
        let role = self.authenticate(req)?;
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        let operator_only = || {
            if role == Role::Operator {
                Ok(())
            } else {
                Err(ApiError::Forbidden {
                    detail: "only the operator may do this".into(),
                })
            }
        };
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["admin", "v1", "status"]) => {
                operator_only()?;
                Ok(self.status())
            }
            ("POST", ["admin", "v1", "reload"]) => {
                operator_only()?;
                let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
                match self.reload() {
                    Ok(generation) => {
                        self.audit(&role, "reload", "*", None, "ok", None);
                        Ok(Response::json_value(
                            200,
                            &json!({"generation": generation}),
                        ))
                    }
                    Err(e) => {
                        self.audit(&role, "reload", "*", None, "rejected", Some(e.to_string()));
                        Err(ApiError::Rejected {
                            detail: e.to_string(),
                            problems: Vec::new(),
                        })
                    }
                }
            }
            ("POST", ["admin", "v1", "cache", "purge"]) => {
                operator_only()?;
                self.api.purge();
                self.audit(&role, "cache.purge", "*", None, "ok", None);
                Ok(Response::json_value(200, &json!({"purged": true})))
            }
            ("PUT", ["admin", "v1", "partners", partner, "secrets", name]) => {
                self.put_secret(&role, partner, name, &req.body)
            }
            ("PUT", ["admin", "v1", "connectors", id]) => self.put_connector(&role, id, req).await,
            ("GET", ["admin", "v1", "connectors", id]) => self.get_connector(&role, id),
            ("DELETE", ["admin", "v1", "connectors", id]) => self.delete_connector(&role, id).await,
            ("GET", ["admin", "v1", "connectors", id, "versions"]) => self.versions(&role, id),
            ("POST", ["admin", "v1", "connectors", id, "dry-run"]) => {
                self.dry_run(&role, id, &req.body).await
            }
            ("POST", ["admin", "v1", "connectors", id, "rollback"]) => {
                self.rollback(&role, id, &req.body).await
            }
            (
                "DELETE",
                [
                    "admin",
                    "v1",
                    "connectors",
                    id,
                    "versions",
                    version,
                    "quarantine",
                ],
            ) => self.clear_quarantine(&role, id, version),
            (_, ["admin", "v1", ..]) => Err(ApiError::NotFound {
                kind: "route",
                detail: format!("no admin route {} {}", req.method, req.path),
            }),
            _ => Err(ApiError::NotFound {
                kind: "route",
                detail: "admin routes start with /admin/v1/".into(),
            }),
        }
    }

    /// The partner a connector id belongs to now (served or stored), if any.
    fn owner_of(&self, id: &str) -> Option<String> {
        let snapshot = self.api.registry.load();
        if let Some(c) = snapshot.connectors.iter().find(|c| c.id() == id) {
            return Some(c.partner().to_owned());
        }
        self.store
            .versions(id)
            .ok()
            .and_then(|v| v.last().map(|m| m.partner.clone()))
    }

    fn check_owner(&self, role: &Role, id: &str) -> Result<(), ApiError> {
        match self.owner_of(id) {
            Some(p) if !role.may_act_for(&p) => Err(ApiError::Forbidden {
                detail: format!("connector `{id}` belongs to another partner"),
            }),
            _ => Ok(()),
        }
    }

    fn served_version(&self, id: &str) -> Option<u32> {
        self.api
            .registry
            .load()
            .connectors
            .iter()
            .find(|c| c.id() == id)
            .map(|c| c.version())
    }

    async fn put_connector(
        &self,
        role: &Role,
        id: &str,
        req: &Request,
    ) -> Result<Response, ApiError> {
        let text = std::str::from_utf8(&req.body).map_err(|_| ApiError::BadBody {
            pointer: String::new(),
            detail: "the connector document must be UTF-8 YAML or JSON".into(),
        })?;
        let spec = match ConnectorSpec::load(text, Format::sniff(text), &role.owner()) {
            Ok(s) => s,
            // The loader refuses a partner's document for another partner at `/partner`:
            // that is a question of rights, not of the document.
            Err(ConnectorError::InvalidSpec { problems })
                if matches!(role, Role::Partner(_))
                    && problems.iter().any(|p| p.pointer == "/partner") =>
            {
                self.audit(
                    role,
                    "connector.put",
                    id,
                    None,
                    "denied",
                    Some("another partner's connector".into()),
                );
                return Err(ApiError::Forbidden {
                    detail: problems
                        .iter()
                        .find(|p| p.pointer == "/partner")
                        .map(|p| p.reason.clone())
                        .unwrap_or_default(),
                });
            }
            Err(e) => {
                self.audit(
                    role,
                    "connector.put",
                    id,
                    None,
                    "rejected",
                    Some(e.to_string()),
                );
                return Err(rejected(&e));
            }
        };
        let mut refused = self.api.registry.address_problems(&spec);
        if matches!(role, Role::Partner(_)) {
            refused.extend(self.api.registry.grant_problems(&spec, text));
        }
        if !refused.is_empty() {
            let e = ConnectorError::InvalidSpec { problems: refused };
            self.audit(
                role,
                "connector.put",
                id,
                None,
                "rejected",
                Some(e.to_string()),
            );
            return Err(rejected(&e));
        }
        if spec.id != id {
            return Err(ApiError::BadBody {
                pointer: "/id".into(),
                detail: format!("the document's id `{}` is not the URL's `{id}`", spec.id),
            });
        }
        if !role.may_act_for(&spec.partner) {
            self.audit(
                role,
                "connector.put",
                id,
                None,
                "denied",
                Some(format!("partner {}", spec.partner)),
            );
            return Err(ApiError::Forbidden {
                detail: format!(
                    "this token may register connectors for its own partner only, not `{}`",
                    spec.partner
                ),
            });
        }
        self.check_owner(role, id)?;
        if let Some((version, reason)) = self.quarantined_document(id, text) {
            self.audit(
                role,
                "connector.put",
                id,
                Some(version),
                "rejected",
                Some("quarantined".into()),
            );
            return Err(ApiError::Rejected {
                detail: format!(
                    "this document is version {version}, quarantined ({reason}); clear it first: DELETE /admin/v1/connectors/{id}/versions/{version}/quarantine"
                ),
                problems: Vec::new(),
            });
        }
        // The candidate on the partner's recorded replies, before anything is stored.
        let next = self.served_version(id).unwrap_or(0) + 1;
        if let Err(refused) = self.trial(&spec, text, &role.owner(), next).await {
            self.audit(
                role,
                "connector.put",
                id,
                None,
                "rejected",
                Some("failed its trial run on a recorded sample".into()),
            );
            return Err(refused);
        }
        let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        // Again under the lock: another partner may have registered this id meanwhile.
        self.check_owner(role, id)?;
        let current = self.served_version(id);
        let if_match = req
            .headers
            .get(http::header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        match (current, if_match) {
            (Some(_), None) => {
                return Err(ApiError::PreconditionRequired {
                    detail: format!(
                        "connector `{id}` exists: send If-Match with the revision you replace (GET gives it as ETag)"
                    ),
                });
            }
            (Some(v), Some(given)) if given != revision(id, v) && given != "*" => {
                self.audit(
                    role,
                    "connector.put",
                    id,
                    None,
                    "conflict",
                    Some(format!("If-Match {given}")),
                );
                return Err(ApiError::Conflict {
                    detail: format!(
                        "the active revision is {}, not {given}: someone changed it first",
                        revision(id, v)
                    ),
                });
            }
            (None, Some(given)) if given != "*" => {
                return Err(ApiError::Conflict {
                    detail: format!("connector `{id}` does not exist; create it without If-Match"),
                });
            }
            _ => {}
        }
        let canary = canary_percent(&req.query)?;
        if canary.is_some() && current.is_none() {
            return Err(ApiError::Conflict {
                detail: format!("a canary runs beside an active version; `{id}` has none yet"),
            });
        }
        let previous = self.store.active(id).map_err(internal)?;
        let previous_canary = self.store.canary(id).map_err(internal)?;
        let floor = current
            .unwrap_or(0)
            .max(previous_canary.map_or(0, |(v, _)| v));
        let meta = self
            .store
            .add_version_after(id, &spec.partner, text, &role.name(), floor)
            .map_err(internal)?;
        match canary {
            Some(percent) => self
                .store
                .set_canary(id, Some((meta.version, percent)))
                .map_err(internal)?,
            None => {
                // The canary goes first: a crash in between never leaves an older canary
                // beside a newer active version.
                self.store.set_canary(id, None).map_err(internal)?;
                self.store
                    .set_active(id, Some(meta.version))
                    .map_err(internal)?;
            }
        }
        match self.reload() {
            Ok(generation) if canary.is_some() => {
                self.audit(
                    role,
                    "connector.canary",
                    id,
                    Some(meta.version),
                    "ok",
                    canary.map(|p| format!("{p}%")),
                );
                let serving = current.unwrap_or(0);
                let mut r = Response::json_value(
                    202,
                    &json!({"id": id, "version": serving, "revision": revision(id, serving),
                            "canary": {"version": meta.version, "percent": canary},
                            "generation": generation}),
                );
                r.headers.push(("etag", revision(id, serving)));
                Ok(r)
            }
            Ok(generation) => {
                self.audit(role, "connector.put", id, Some(meta.version), "ok", None);
                let mut r = Response::json_value(
                    if current.is_some() { 200 } else { 201 },
                    &json!({"id": id, "version": meta.version, "revision": revision(id, meta.version),
                            "generation": generation}),
                );
                r.headers.push(("etag", revision(id, meta.version)));
                Ok(r)
            }
            Err(e) => {
                let _ = self.store.set_active(id, previous);
                let _ = self.store.set_canary(id, previous_canary);
                let _ = self.store.discard(id, meta.version);
                self.audit(
                    role,
                    "connector.put",
                    id,
                    Some(meta.version),
                    "rejected",
                    Some(e.to_string()),
                );
                Err(ApiError::Rejected {
                    detail: e.to_string(),
                    problems: Vec::new(),
                })
            }
        }
    }

    fn get_connector(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        let not_found = || ApiError::NotFound {
            kind: "connector",
            detail: format!("no connector `{id}` is serving"),
        };
        let snapshot = self.api.registry.load();
        let live = snapshot
            .connectors
            .iter()
            .find(|c| c.id() == id)
            .ok_or_else(not_found)?;
        if !role.may_act_for(live.partner()) {
            return Err(ApiError::Forbidden {
                detail: format!("connector `{id}` belongs to another partner"),
            });
        }
        let stored = self.store.active(id).ok().flatten();
        let document = match stored {
            Some(v) => self.store.document(id, v).ok(),
            None => None,
        };
        let mut r = Response::json_value(
            200,
            &json!({
                "id": id,
                "partner": live.partner(),
                "version": live.version(),
                "revision": revision(id, live.version()),
                "source": live.source,
                "generation": snapshot.generation,
                // Secrets appear only as the references the document holds (secret:NAME).
                "document": document,
                "spec": serde_json::to_value(live.spec()).unwrap_or(Value::Null),
            }),
        );
        r.headers.push(("etag", revision(id, live.version())));
        Ok(r)
    }

    fn versions(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        self.check_owner(role, id)?;
        let active = self.store.active(id).map_err(internal)?;
        let versions: Vec<Value> = self
            .store
            .versions(id)
            .map_err(internal)?
            .into_iter()
            .map(|m| {
                let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
                v["active"] = json!(Some(m.version) == active);
                v["quarantine"] = json!(self.store.quarantined(id, m.version).ok().flatten());
                v
            })
            .collect();
        Ok(Response::json_value(
            200,
            &json!({"id": id, "versions": versions}),
        ))
    }

    async fn rollback(&self, role: &Role, id: &str, body: &Bytes) -> Result<Response, ApiError> {
        self.check_owner(role, id)?;
        let wanted: Option<u32> = if body.is_empty() {
            None
        } else {
            let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadBody {
                pointer: String::new(),
                detail: format!("not JSON: {e}"),
            })?;
            match v.get("version") {
                None => None,
                Some(n) => Some(n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(
                    || ApiError::BadBody {
                        pointer: "/version".into(),
                        detail: "a version number".into(),
                    },
                )?),
            }
        };
        let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let active = self.store.active(id).map_err(internal)?;
        let versions = self.store.versions(id).map_err(internal)?;
        // The target: a named stored version, else the stored one before the active one,
        // else (the first API version replaced a directory document) the directory's.
        let quarantined = |v: u32| self.store.quarantined(id, v).ok().flatten();
        let target: Option<u32> = match wanted {
            Some(v) if let Some(q) = quarantined(v) => {
                return Err(ApiError::Conflict {
                    detail: format!(
                        "version {v} is quarantined ({}); clear it first: DELETE /admin/v1/connectors/{id}/versions/{v}/quarantine",
                        q.reason
                    ),
                });
            }
            Some(v) if versions.iter().any(|m| m.version == v) => Some(v),
            Some(v) => {
                return Err(ApiError::NotFound {
                    kind: "version",
                    detail: format!("connector `{id}` has no version {v}"),
                });
            }
            None => {
                let earlier = versions
                    .iter()
                    .rev()
                    .map(|m| m.version)
                    .find(|v| active.is_some_and(|a| *v < a) && quarantined(*v).is_none());
                match earlier {
                    Some(v) => Some(v),
                    None if active.is_some() && self.in_directory(id) => None,
                    None => {
                        return Err(ApiError::Conflict {
                            detail: format!(
                                "connector `{id}` has no earlier version to roll back to"
                            ),
                        });
                    }
                }
            }
        };
        // A rollback ends any canary (the judge must not promote it over the rollback).
        let canary = self.store.canary(id).map_err(internal)?;
        self.store.set_canary(id, None).map_err(internal)?;
        self.store.set_active(id, target).map_err(internal)?;
        match self.reload() {
            Ok(generation) => {
                let serving = self.served_version(id).unwrap_or(0);
                self.audit(
                    role,
                    "connector.rollback",
                    id,
                    Some(serving),
                    "ok",
                    target
                        .is_none()
                        .then(|| "back to the connectors directory's document".to_owned()),
                );
                let mut r = Response::json_value(
                    200,
                    &json!({"id": id, "version": serving, "revision": revision(id, serving),
                            "generation": generation,
                            "source": if target.is_some() { "admin" } else { "directory" }}),
                );
                r.headers.push(("etag", revision(id, serving)));
                Ok(r)
            }
            Err(e) => {
                let _ = self.store.set_canary(id, canary);
                let _ = self.store.set_active(id, active);
                self.audit(
                    role,
                    "connector.rollback",
                    id,
                    target,
                    "rejected",
                    Some(e.to_string()),
                );
                Err(ApiError::Rejected {
                    detail: e.to_string(),
                    problems: Vec::new(),
                })
            }
        }
    }

    /// The active document of `id` (stored, else the directory's) and its owner.
    fn active_document(&self, id: &str) -> Option<(String, Owner)> {
        if let Some(v) = self.store.active(id).ok().flatten() {
            return Some((self.store.document(id, v).ok()?, self.author_owner(id, v)));
        }
        let dir = self.connectors_dir.as_ref()?;
        documents_in(dir).ok()?.into_iter().find_map(|d| {
            ConnectorSpec::load(&d.text, Format::sniff(&d.text), &d.owner)
                .ok()
                .filter(|s| s.id == id)
                .map(|_| (d.text, d.owner))
        })
    }

    /// Whether the connectors directory has a document for `id`.
    fn in_directory(&self, id: &str) -> bool {
        let Some(dir) = &self.connectors_dir else {
            return false;
        };
        documents_in(dir).is_ok_and(|docs| {
            docs.iter().any(|d| {
                ConnectorSpec::load(&d.text, Format::sniff(&d.text), &d.owner)
                    .is_ok_and(|s| s.id == id)
            })
        })
    }

    async fn delete_connector(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        self.check_owner(role, id)?;
        let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let active = self.store.active(id).map_err(internal)?;
        if active.is_none() {
            return Err(ApiError::NotFound {
                kind: "connector",
                detail: format!(
                    "connector `{id}` has no version registered through the admin API (directory connectors are the operator's files)"
                ),
            });
        }
        let canary = self.store.canary(id).map_err(internal)?;
        self.store.set_canary(id, None).map_err(internal)?;
        self.store.set_active(id, None).map_err(internal)?;
        match self.reload() {
            Ok(generation) => {
                self.audit(role, "connector.delete", id, active, "ok", None);
                Ok(Response::json_value(
                    200,
                    &json!({"id": id, "deleted": true, "generation": generation}),
                ))
            }
            Err(e) => {
                let _ = self.store.set_canary(id, canary);
                let _ = self.store.set_active(id, active);
                self.audit(
                    role,
                    "connector.delete",
                    id,
                    active,
                    "rejected",
                    Some(e.to_string()),
                );
                Err(ApiError::Rejected {
                    detail: e.to_string(),
                    problems: Vec::new(),
                })
            }
        }
    }

    fn put_secret(
        &self,
        role: &Role,
        partner: &str,
        name: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        if !role.may_act_for(partner) {
            self.audit(
                role,
                "secret.put",
                &format!("{partner}/{name}"),
                None,
                "denied",
                None,
            );
            return Err(ApiError::Forbidden {
                detail: format!(
                    "this token may set secrets of its own partner only, not `{partner}`"
                ),
            });
        }
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(ApiError::param(
                "name",
                "letters, digits, - and _ (at most 64)",
            ));
        }
        let value = std::str::from_utf8(body)
            .ok()
            .map(|v| v.trim_end_matches(['\n', '\r']))
            .filter(|v| !v.is_empty() && v.len() <= 8192)
            .ok_or_else(|| ApiError::BadBody {
                pointer: String::new(),
                detail: "the body is the secret's value: 1 to 8192 bytes of UTF-8".into(),
            })?;
        self.secrets.set(partner, name, value.to_owned());
        // The value is never written anywhere but the in-memory store.
        self.audit(
            role,
            "secret.put",
            &format!("{partner}/{name}"),
            None,
            "ok",
            None,
        );
        Ok(Response::json_value(
            200,
            &json!({"partner": partner, "name": name, "stored": true}),
        ))
    }

    fn status(&self) -> Response {
        let snapshot = self.api.registry.load();
        let connectors: Vec<Value> = snapshot
            .connectors
            .iter()
            .map(|c| {
                json!({
                    "id": c.id(),
                    "partner": c.partner(),
                    "version": c.version(),
                    "source": c.source,
                    "endpoints": c.connector.routes().iter()
                        .map(|r| serde_json::to_value(r.state.report(r.priority, r.weight, true)).unwrap_or(Value::Null))
                        .collect::<Vec<_>>(),
                    "guardrails": serde_json::to_value(c.connector.counters()).unwrap_or(Value::Null),
                    "token_requests": c.connector.resources().token_requests(),
                })
            })
            .collect();
        let canaries: Vec<Value> = snapshot
            .canaries
            .iter()
            .map(|k| {
                json!({"id": k.live.id(), "version": k.live.version(), "percent": k.percent,
                       "stats": k.live.stats.get(),
                       "active_stats": snapshot.connectors.iter().find(|c| c.id() == k.live.id())
                            .map(|c| c.stats.get())})
            })
            .collect();
        let cache = &self.api.cache.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Response::json_value(
            200,
            &json!({
                "generation": snapshot.generation,
                "connectors": connectors,
                "canaries": canaries,
                "cache": {
                    "entries": self.api.cache.entry_count(),
                    "hits": load(&cache.hits),
                    "misses": load(&cache.misses),
                    "revalidations": load(&cache.revalidations),
                    "stale_served": load(&cache.stale_served),
                    "calls": load(&cache.calls),
                    "coalesced": load(&cache.coalesced),
                },
            }),
        )
    }
}

fn internal(e: GatewayError) -> ApiError {
    ApiError::Rejected {
        detail: format!("the store failed: {e}"),
        problems: Vec::new(),
    }
}
