//! Quarantine (DESIGN §5): a connector version whose mapping overruns repeatedly — a
//! sandbox worker killed at the deadline, a worker that died, an answer over the cap — is
//! taken out of service, active version and canary alike. The decision is written to the
//! store before the rollback, so no restart brings the version back: a quarantined
//! version is never made active (or a canary) again until the operator or its partner
//! clears it (`DELETE /admin/v1/connectors/{id}/versions/{v}/quarantine`).

use serde_json::json;

use super::{Admin, Role, internal};
use crate::api::Response;
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
    /// One look at every serving version: quarantines each that overran `quarantine_after`
    /// times (a canary: once) and rolls its connector back to the last good version.
    /// Returns what it did.
    pub fn quarantine_overrunning(&self) -> Vec<(String, String)> {
        let snapshot = self.api.registry.load();
        let threshold = u64::from(self.api.config().sandbox.quarantine_after);
        let suspects = snapshot
            .connectors
            .iter()
            .map(|c| (c, threshold))
            .chain(snapshot.canaries.iter().map(|k| (&k.live, 1)));
        let mut done = Vec::new();
        for (live, threshold) in suspects {
            let overruns = live.stats.get().overruns;
            if overruns < threshold || !self.stored(live) {
                continue;
            }
            if let Some(outcome) = self.quarantine(live, &overrun_reason(live)) {
                done.push((live.id().to_owned(), outcome));
            }
        }
        done
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

    pub(super) fn quarantine(&self, live: &LiveConnector, reason: &str) -> Option<String> {
        let (id, version) = (live.id(), live.version());
        let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if self.store.quarantined(id, version).ok().flatten().is_some() {
            return None;
        }
        // The decision first: a crash after it never re-activates the version.
        if let Err(e) = self.store.quarantine(id, version, reason) {
            self.audit(
                &Role::Operator,
                "connector.quarantine",
                id,
                Some(version),
                "rejected",
                Some(e.to_string()),
            );
            return None;
        }
        let (active, canary) = (
            self.store.active(id).ok().flatten(),
            self.store.canary(id).ok().flatten(),
        );
        let mut fallback = None;
        if canary.is_some_and(|(v, _)| v == version) || active == Some(version) {
            let _ = self.store.set_canary(id, None);
        }
        if active == Some(version) {
            fallback = self.store.last_good(id, version).ok().flatten();
            let _ = self.store.set_active(id, fallback);
        }
        let outcome = match (active == Some(version), fallback) {
            (false, _) => "canary ended".to_owned(),
            (true, Some(v)) => format!("rolled back to v{v}"),
            (true, None) => {
                "no earlier good version: the directory's document, if any, serves".into()
            }
        };
        let mut result = self.reload().map_err(|e| e.to_string());
        if result.is_err() && active == Some(version) {
            // The fallback does not build (a grant narrowed since, a code taken): the
            // connector leaves the stored set rather than the quarantined version serving.
            let _ = self.store.set_active(id, None);
            result = self.reload().map_err(|e| e.to_string());
        }
        self.audit(
            &Role::Operator,
            "connector.quarantined",
            id,
            Some(version),
            if result.is_ok() { "ok" } else { "rejected" },
            Some(match &result {
                Ok(_) => format!("{reason}; {outcome}"),
                Err(e) => format!("{reason}; {outcome}; the reload failed: {e}"),
            }),
        );
        Some(outcome)
    }

    /// `DELETE .../versions/{v}/quarantine`: the version may be activated again (by a PUT
    /// of the same document or a rollback to it); nothing is activated here.
    pub(super) fn clear_quarantine(
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
        let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if !self.store.clear_quarantine(id, version).map_err(internal)? {
            return Err(ApiError::NotFound {
                kind: "quarantine",
                detail: format!("version {version} of `{id}` is not quarantined"),
            });
        }
        self.audit(
            role,
            "connector.quarantine_cleared",
            id,
            Some(version),
            "ok",
            None,
        );
        Ok(Response::json_value(
            200,
            &json!({"id": id, "version": version, "quarantined": false}),
        ))
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
