//! Quarantine (DESIGN §5): a connector version whose mapping overruns repeatedly — a
//! sandbox worker killed at the deadline, a worker that died, an answer over the cap — is
//! taken out of service, active version and canary alike. The decision is written to the
//! store before the rollback, so no restart brings the version back: a quarantined
//! version is never made active (or a canary) again until the operator or its partner
//! clears it (`DELETE /admin/v1/connectors/{id}/versions/{v}/quarantine`).

use serde_json::json;

use super::Admin;
use super::auth::Role;
use super::change::{Event, OnFailure, Step, Tx};
use crate::api::Response;
use crate::changes::{Applied, Change};
use crate::problem::ApiError;
use crate::registry::LiveConnector;

/// Why a version is quarantined: its overruns and the last one's cause.
pub(super) fn overrun_reason(live: &LiveConnector) -> String {
    let overruns = live.stats.get().overruns;
    format!(
        "{overruns} mapping overrun{}; the last: {}",
        if overruns == 1 { "" } else { "s" },
        live.stats.last_overrun().unwrap_or_default()
    )
}

impl Admin {
    /// One look at every serving version: each that overran `quarantine_after` times (a
    /// canary: once) is to be quarantined and its connector rolled back to the last good
    /// version.
    pub(super) fn overrunning(&self) -> Vec<Change> {
        let snapshot = self.api.registry.load();
        let threshold = u64::from(self.api.config().sandbox.quarantine_after);
        let suspects = snapshot
            .connectors
            .iter()
            .map(|c| (c, threshold))
            .chain(snapshot.canaries.iter().map(|k| (&k.live, 1)));
        let mut out = Vec::new();
        for (live, threshold) in suspects {
            let overruns = live.stats.get().overruns;
            let known = self
                .store
                .quarantined(live.id(), live.version())
                .ok()
                .flatten()
                .is_some();
            if overruns < threshold || known || !self.stored(live) {
                continue;
            }
            out.push(Change::Quarantine {
                id: live.id().to_owned(),
                version: live.version(),
                reason: overrun_reason(live),
            });
        }
        out
    }

    /// Whether `live` is a stored (admin) version: a directory document is the operator's
    /// own file, rolled back by changing the file.
    pub(super) fn stored(&self, live: &LiveConnector) -> bool {
        self.store.versions(live.id()).is_ok_and(|versions| {
            versions
                .iter()
                .any(|m| m.version == live.version() && m.digest == live.digest)
        })
    }

    /// Quarantines `version` of `id`: the decision is written first (a crash after it
    /// never re-activates the version) and is never undone; then the canary ends or the
    /// active pointer falls back to the last good version — and when that does not build
    /// (a grant narrowed since, a code taken), the connector leaves the stored set rather
    /// than the quarantined version serving.
    pub(super) fn apply_quarantine(
        &self,
        id: &str,
        version: u32,
        reason: &str,
    ) -> Result<Applied, ApiError> {
        let operator = Role::Operator;
        if self.store.quarantined(id, version).ok().flatten().is_some() {
            return Err(ApiError::Conflict {
                detail: format!("v{version} of `{id}` is quarantined already"),
            });
        }
        if let Err(e) = self.store.quarantine(id, version, reason) {
            let refused = self.store_error(&e);
            let event = Event::new(&operator, "connector.quarantine", id)
                .version(version)
                .detail(e.to_string());
            self.note(&event, "rejected");
            return Err(refused);
        }
        let (active, canary) = (
            self.store.active(id).ok().flatten(),
            self.store.canary(id).ok().flatten(),
        );
        let was_active = active == Some(version);
        let fallback = if was_active {
            self.store.last_good(id, version).ok().flatten()
        } else {
            None
        };
        let outcome = match (was_active, fallback) {
            (false, _) => "canary ended".to_owned(),
            (true, Some(v)) => format!("rolled back to v{v}"),
            (true, None) => {
                "no earlier good version: the directory's document, if any, serves".into()
            }
        };
        let fall_back = |tx: &mut Tx<'_>| {
            if was_active || canary.is_some_and(|(v, _)| v == version) {
                tx.set_canary(None)?;
            }
            if was_active {
                tx.set_active(fallback)?;
            }
            Ok(())
        };
        let leave = |tx: &mut Tx<'_>| tx.set_active(None);
        let left = "that version does not build: the connector left the stored set";
        let writes: Vec<Step<'_>> = if was_active && fallback.is_some() {
            vec![(&fall_back, None), (&leave, Some(left))]
        } else {
            vec![(&fall_back, None)]
        };
        let event = Event::new(&operator, "connector.quarantined", id)
            .version(version)
            .detail(format!("{reason}; {outcome}"));
        let (generation, _) = self.transact(id, event, OnFailure::Keep, &writes)?;
        Ok(Applied {
            generation,
            version: Some(version),
            ..Applied::default()
        })
    }

    /// `DELETE .../versions/{v}/quarantine`: the version may be activated again (by a PUT
    /// of the same document or a rollback to it); nothing is activated here.
    pub(super) async fn clear_quarantine(
        &self,
        role: &Role,
        id: &str,
        version: &str,
    ) -> Result<Response, ApiError> {
        self.check_owner(role, id)?;
        let version: u32 = version.parse().map_err(|_| ApiError::NotFound {
            kind: "version",
            detail: format!("`{version}` is not a version number"),
        })?;
        let change = Change::ClearQuarantine {
            id: id.to_owned(),
            version,
        };
        self.changes.submit(role.clone(), change).await?;
        Ok(Response::json_value(
            200,
            &json!({"id": id, "version": version, "quarantined": false}),
        ))
    }

    pub(super) fn apply_clear_quarantine(
        &self,
        actor: &Role,
        id: &str,
        version: u32,
    ) -> Result<Applied, ApiError> {
        self.check_owner(actor, id)?;
        let Some(was) = self
            .store
            .quarantined(id, version)
            .map_err(|e| self.store_error(&e))?
        else {
            return Err(ApiError::NotFound {
                kind: "quarantine",
                detail: format!("version {version} of `{id}` is not quarantined"),
            });
        };
        self.store
            .clear_quarantine(id, version)
            .map_err(|e| self.store_error(&e))?;
        let event = Event::new(actor, "connector.quarantine_cleared", id).version(version);
        if let Err(e) = self.audit(&event, "ok") {
            // An unaudited change does not stay.
            let undone = self.store.quarantine(id, version, &was.reason);
            return Err(ApiError::Internal {
                detail: match undone {
                    Ok(()) => format!(
                        "the audit log could not be written ({e}); the version stays quarantined"
                    ),
                    Err(u) => format!(
                        "the audit log could not be written ({e}) and the quarantine could not be restored ({u})"
                    ),
                },
            });
        }
        Ok(Applied {
            version: Some(version),
            ..Applied::default()
        })
    }

    /// The quarantined stored version whose document is `text`, with its reason.
    pub(super) fn quarantined_document(&self, id: &str, text: &str) -> Option<(u32, String)> {
        use sha2::Digest;
        let digest = format!("{:x}", sha2::Sha256::digest(text.as_bytes()));
        self.store.versions(id).ok()?.into_iter().find_map(|m| {
            let q = self.store.quarantined(id, m.version).ok().flatten()?;
            (m.digest == digest).then_some((m.version, q.reason))
        })
    }
}
