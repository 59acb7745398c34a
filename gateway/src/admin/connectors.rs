//! `PUT`, `GET`, `DELETE /admin/v1/connectors/{id}`, its versions and rollback. The handlers
//! check what needs no lock — the document, the token's rights, a trial run on recorded
//! replies — and hand the change to the reload task; the checks against the state a
//! change replaces (`If-Match`, the owner, the rollback target) run there, in turn.

use bytes::Bytes;
use mallgate_connectors::{ConnectorError, ConnectorSpec, Format, Owner};
use serde_json::{Value, json};

use super::auth::Role;
use super::change::{Event, OnFailure, Tx};
use super::{Admin, rejected, revision};
use crate::api::{Request, Response, to_value};
use crate::changes::{Applied, Change};
use crate::problem::ApiError;
use crate::registry::documents_in;

/// The `If-Match` of a request, trimmed.
fn if_match(req: &Request) -> Option<String> {
    req.headers
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

impl Admin {
    /// The partner a connector id belongs to now (served or stored), if any.
    pub(super) fn owner_of(&self, id: &str) -> Option<String> {
        let snapshot = self.api.registry.load();
        if let Some(c) = snapshot.connectors.iter().find(|c| c.id() == id) {
            return Some(c.partner().to_owned());
        }
        self.store
            .versions(id)
            .ok()
            .and_then(|v| v.last().map(|m| m.partner.clone()))
    }

    pub(super) fn check_owner(&self, role: &Role, id: &str) -> Result<(), ApiError> {
        match self.owner_of(id) {
            Some(p) if !role.may_act_for(&p) => Err(ApiError::Forbidden {
                detail: format!("connector `{id}` belongs to another partner"),
            }),
            _ => Ok(()),
        }
    }

    /// What this replica serves of `id`: its active version (and whether that came from
    /// the store, not the directory) and its canary.
    pub(super) fn served_pointers(&self, id: &str) -> super::change::Served {
        let snapshot = self.api.registry.load();
        let active = snapshot.connectors.iter().find(|c| c.id() == id);
        super::change::Served {
            active: active.map(|c| c.version()),
            active_from_store: active.is_some_and(|c| c.source.starts_with("admin:")),
            canary: snapshot
                .canaries
                .iter()
                .find(|c| c.live.id() == id)
                .map(|c| c.live.version()),
        }
    }

    pub(super) fn served_version(&self, id: &str) -> Option<u32> {
        self.api
            .registry
            .load()
            .connectors
            .iter()
            .find(|c| c.id() == id)
            .map(|c| c.version())
    }

    /// The candidate document of a `PUT`, checked as far as it can be without the state
    /// it replaces: it loads for this role, its addresses and grants hold, it is this
    /// URL's connector and the token's partner's, and it is not a quarantined version.
    fn admissible(&self, role: &Role, id: &str, text: &str) -> Result<ConnectorSpec, ApiError> {
        let event = || Event::new(role, "connector.put", id);
        let spec = match ConnectorSpec::load(text, Format::sniff(text), &role.owner()) {
            Ok(s) => s,
            // The loader refuses a partner's document for another partner at `/partner`:
            // that is a question of rights, not of the document.
            Err(ConnectorError::InvalidSpec { problems })
                if matches!(role, Role::Partner(_))
                    && problems.iter().any(|p| p.pointer == "/partner") =>
            {
                self.note(&event().detail("another partner's connector"), "denied");
                return Err(ApiError::Forbidden {
                    detail: problems
                        .iter()
                        .find(|p| p.pointer == "/partner")
                        .map(|p| p.reason.clone())
                        .unwrap_or_default(),
                });
            }
            Err(e) => {
                self.note(&event().detail(e.to_string()), "rejected");
                return Err(rejected(&e));
            }
        };
        let mut refused = self.api.registry.address_problems(&spec);
        if matches!(role, Role::Partner(_)) {
            refused.extend(self.api.registry.grant_problems(&spec, text));
        }
        if !refused.is_empty() {
            let e = ConnectorError::InvalidSpec { problems: refused };
            self.note(&event().detail(e.to_string()), "rejected");
            return Err(rejected(&e));
        }
        if spec.id != id {
            return Err(ApiError::BadBody {
                pointer: "/id".into(),
                detail: format!("the document's id `{}` is not the URL's `{id}`", spec.id),
            });
        }
        if !role.may_act_for(&spec.partner) {
            self.note(
                &event().detail(format!("partner {}", spec.partner)),
                "denied",
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
            self.note(&event().version(version).detail("quarantined"), "rejected");
            return Err(ApiError::Rejected {
                detail: format!(
                    "this document is version {version}, quarantined ({reason}); clear it first: DELETE /admin/v1/connectors/{id}/versions/{version}/quarantine"
                ),
                problems: Vec::new(),
            });
        }
        Ok(spec)
    }

    pub(super) async fn put_connector(
        &self,
        role: &Role,
        id: &str,
        req: &Request,
    ) -> Result<Response, ApiError> {
        let text = std::str::from_utf8(&req.body).map_err(|_| ApiError::BadBody {
            pointer: String::new(),
            detail: "the connector document must be UTF-8 YAML or JSON".into(),
        })?;
        let spec = self.admissible(role, id, text)?;
        let canary = super::canary::canary_percent(&req.query)?;
        // The candidate on the partner's recorded replies, before anything is stored.
        let next = self.served_version(id).unwrap_or(0) + 1;
        if let Err(refused) = self.trial(&spec, text, &role.owner(), next).await {
            self.note(
                &Event::new(role, "connector.put", id)
                    .detail("failed its trial run on a recorded sample"),
                "rejected",
            );
            return Err(refused);
        }
        let if_match = if_match(req);
        let change = Change::Put {
            id: id.to_owned(),
            partner: spec.partner.clone(),
            text: text.to_owned(),
            canary,
            if_match,
        };
        let applied = self.changes.submit(role.clone(), change).await?;
        let version = applied.version.unwrap_or(0);
        // Accepted, and said plainly: a secret it names that is not set yet fails its calls.
        let warnings: Vec<Value> = self
            .missing_secrets(&spec)
            .into_iter()
            .map(|(pointer, name)| json!({"pointer": pointer, "secret": name,
                "detail": format!("missing secret {name}: calls fail until it is set with PUT /admin/v1/partners/{}/secrets/{name}", spec.partner)}))
            .collect();
        let mut r = match canary {
            Some(percent) => {
                let serving = applied.before.unwrap_or(0);
                let mut r = Response::json_value(
                    202,
                    &json!({"id": id, "version": serving, "revision": revision(id, serving),
                            "canary": {"version": version, "percent": percent},
                            "generation": applied.generation, "warnings": warnings}),
                );
                r.headers.push(("etag", revision(id, serving)));
                return Ok(r);
            }
            None => Response::json_value(
                if applied.before.is_some() { 200 } else { 201 },
                &json!({"id": id, "version": version, "revision": revision(id, version),
                        "generation": applied.generation, "warnings": warnings,
                        "unchanged": applied.unchanged}),
            ),
        };
        r.headers.push(("etag", revision(id, version)));
        Ok(r)
    }

    pub(super) fn get_connector(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
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
        let mut r = Response::json(
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
                "spec": to_value(live.spec())?,
                "missing_secrets": self.missing_secrets(live.spec()).into_iter().map(|(_, n)| n).collect::<Vec<_>>(),
            }),
        )?;
        r.headers.push(("etag", revision(id, live.version())));
        Ok(r)
    }

    pub(super) fn versions(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        self.check_owner(role, id)?;
        let active = self.store.active(id).map_err(|e| self.store_error(&e))?;
        let mut versions = Vec::new();
        for m in self.store.versions(id).map_err(|e| self.store_error(&e))? {
            let quarantine = self.store.quarantined(id, m.version).ok().flatten();
            let mut v = to_value(&m)?;
            v["active"] = json!(Some(m.version) == active);
            v["quarantine"] = json!(quarantine);
            versions.push(v);
        }
        Ok(Response::json_value(
            200,
            &json!({"id": id, "versions": versions}),
        ))
    }

    pub(super) async fn rollback(
        &self,
        role: &Role,
        id: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        self.check_owner(role, id)?;
        let to: Option<u32> = if body.is_empty() {
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
        let change = Change::Rollback {
            id: id.to_owned(),
            to,
        };
        let applied = self.changes.submit(role.clone(), change).await?;
        let serving = applied.serving.unwrap_or(0);
        // The version rolled back to is a stored one, or (none) the directory's file.
        let source = if applied.version.is_some() {
            "admin"
        } else {
            "directory"
        };
        let mut r = Response::json_value(
            200,
            &json!({"id": id, "version": serving, "revision": revision(id, serving),
                    "generation": applied.generation, "source": source}),
        );
        r.headers.push(("etag", revision(id, serving)));
        Ok(r)
    }

    pub(super) async fn delete_connector(
        &self,
        role: &Role,
        id: &str,
        req: &Request,
    ) -> Result<Response, ApiError> {
        self.check_owner(role, id)?;
        let change = Change::Delete {
            id: id.to_owned(),
            if_match: if_match(req),
        };
        let applied = self.changes.submit(role.clone(), change).await?;
        Ok(Response::json_value(
            200,
            &json!({"id": id, "deleted": true, "generation": applied.generation}),
        ))
    }

    /// The rollback's target: a named stored version, else the stored one before the
    /// active one, else (the first API version replaced a directory document) the
    /// directory's (`None`).
    fn rollback_target(&self, id: &str, wanted: Option<u32>) -> Result<Option<u32>, ApiError> {
        let active = self.store.active(id).map_err(|e| self.store_error(&e))?;
        let versions = self.store.versions(id).map_err(|e| self.store_error(&e))?;
        let quarantined = |v: u32| self.store.quarantined(id, v).ok().flatten();
        match wanted {
            Some(v) if let Some(q) = quarantined(v) => Err(ApiError::Conflict {
                detail: format!(
                    "version {v} is quarantined ({}); clear it first: DELETE /admin/v1/connectors/{id}/versions/{v}/quarantine",
                    q.reason
                ),
            }),
            Some(v) if versions.iter().any(|m| m.version == v) => Ok(Some(v)),
            Some(v) => Err(ApiError::NotFound {
                kind: "version",
                detail: format!("connector `{id}` has no version {v}"),
            }),
            None => {
                let earlier = versions
                    .iter()
                    .rev()
                    .map(|m| m.version)
                    .find(|v| active.is_some_and(|a| *v < a) && quarantined(*v).is_none());
                match earlier {
                    Some(v) => Ok(Some(v)),
                    None if active.is_some() && self.in_directory(id) => Ok(None),
                    None => Err(ApiError::Conflict {
                        detail: format!("connector `{id}` has no earlier version to roll back to"),
                    }),
                }
            }
        }
    }

    pub(super) fn apply_rollback(
        &self,
        actor: &Role,
        id: &str,
        wanted: Option<u32>,
    ) -> Result<Applied, ApiError> {
        self.check_owner(actor, id)?;
        let target = self.rollback_target(id, wanted)?;
        let mut event = Event::new(actor, "connector.rollback", id).version(target);
        if target.is_none() {
            event = event.detail("back to the connectors directory's document");
        }
        // A rollback ends any canary (the judge must not promote it over the rollback).
        let write = |tx: &mut Tx<'_>| {
            tx.set_canary(None)?;
            tx.set_active(target)
        };
        let (generation, _) = self.transact(id, event, OnFailure::Undo, &[(&write, None)])?;
        Ok(Applied {
            generation,
            version: target,
            serving: self.served_version(id),
            ..Applied::default()
        })
    }

    pub(super) fn apply_delete(
        &self,
        actor: &Role,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Applied, ApiError> {
        self.check_owner(actor, id)?;
        let active = self.store.active(id).map_err(|e| self.store_error(&e))?;
        if active.is_some() {
            self.precondition(actor, ("connector.delete", id), if_match)?;
        }
        if active.is_none() {
            return Err(ApiError::NotFound {
                kind: "connector",
                detail: format!(
                    "connector `{id}` has no version registered through the admin API (directory connectors are the operator's files)"
                ),
            });
        }
        let event = Event::new(actor, "connector.delete", id).version(active);
        let write = |tx: &mut Tx<'_>| {
            tx.set_canary(None)?;
            tx.set_active(None)
        };
        let (generation, _) = self.transact(id, event, OnFailure::Undo, &[(&write, None)])?;
        Ok(Applied {
            generation,
            ..Applied::default()
        })
    }

    /// The active document of `id` (stored, else the directory's) and its owner.
    pub(super) fn active_document(&self, id: &str) -> Option<(String, Owner)> {
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
}
