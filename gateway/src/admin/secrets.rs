//! A partner's secrets, by name: `PUT` (the body is the value), `GET` (names only) and
//! `DELETE /admin/v1/partners/{partner}/secrets[/{name}]`. With `secrets.master_key`
//! configured a value is sealed (see [`crate::vault`]) into the state directory before it
//! serves, so it survives a restart; it is never answered, logged or audited, and never
//! written in clear. Connectors name it as `secret:NAME`.

use bytes::Bytes;
use mallgate_connectors::ConnectorSpec;
use mallgate_connectors::runtime::secrets::{Secret, SecretStore};
use serde_json::json;

use super::Admin;
use super::auth::Role;
use super::change::Event;
use crate::GatewayError;
use crate::api::Response;
use crate::problem::ApiError;
use crate::store::valid_secret_name;
use crate::vault::Unopened;

/// The longest secret value accepted.
const MAX_SECRET_BYTES: usize = 8192;

/// The most secrets one partner may hold.
const MAX_SECRETS: usize = 64;

/// What the answer says when there is no master key to seal with.
const NOT_PERSISTED: &str = "kept in memory only: the gateway has no secrets.master_key, so this secret is lost at the next restart";

impl Admin {
    fn may_set_secrets(
        &self,
        role: &Role,
        partner: &str,
        event: &Event<'_>,
    ) -> Result<(), ApiError> {
        if !super::partners::slug(partner) {
            return Err(ApiError::param(
                "partner",
                "lower-case letters, digits and dashes, at most 63",
            ));
        }
        if role.may_act_for(partner) {
            return Ok(());
        }
        self.note(event, "denied");
        Err(ApiError::Forbidden {
            detail: format!(
                "this token may manage secrets of its own partner only, not `{partner}`"
            ),
        })
    }

    /// A secret the config file provides cannot be deleted through the API (it would come
    /// back at the next restart); one set through the API over it wins, sealed, across
    /// restarts (the sealed values are opened after the config's).
    fn configured(&self, partner: &str, name: &str) -> Result<(), ApiError> {
        let set = self
            .api
            .config()
            .partner_secrets
            .get(partner)
            .is_some_and(|names| names.contains_key(name));
        if set {
            return Err(ApiError::Conflict {
                detail: format!(
                    "secret `{name}` of `{partner}` is set in the gateway's config (partner_secrets.{partner}.{name}); the operator changes it there"
                ),
            });
        }
        Ok(())
    }

    pub(super) fn put_secret(
        &self,
        role: &Role,
        partner: &str,
        name: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let event = Event::new(role, "secret.put", &format!("{partner}/{name}"));
        self.may_set_secrets(role, partner, &event)?;
        if !valid_secret_name(name) {
            return Err(ApiError::param(
                "name",
                "letters, digits, - and _ (at most 64)",
            ));
        }
        let value = std::str::from_utf8(body)
            .ok()
            .map(|v| v.trim_end_matches(['\n', '\r']))
            .filter(|v| !v.is_empty() && v.len() <= MAX_SECRET_BYTES)
            .ok_or_else(|| ApiError::BadBody {
                pointer: String::new(),
                detail: format!(
                    "the body is the secret's value: 1 to {MAX_SECRET_BYTES} bytes of UTF-8"
                ),
            })?;
        let _guard = self.lock_partners();
        let previous = self.secrets.get(partner, name);
        let held = self.secrets.names(partner).len();
        if previous.is_none() && held >= MAX_SECRETS {
            return Err(ApiError::Conflict {
                detail: format!(
                    "partner `{partner}` holds {held} secrets, the most allowed ({MAX_SECRETS}); delete one first"
                ),
            });
        }
        // Sealed and stored first: a value that serves is one a restart finds again.
        if let Some(vault) = &self.vault {
            let sealed = vault
                .seal(partner, name, value, jiff::Timestamp::now().to_string())
                .map_err(|e| ApiError::Internal {
                    detail: e.to_string(),
                })?;
            self.store
                .put_sealed(partner, name, &sealed)
                .map_err(|e| self.store_error(&e))?;
        }
        // Audited before it serves; an unaudited value does not stay on disk either.
        if let Err(e) = self.audit(&event, "ok") {
            self.restore_sealed(partner, name, previous.as_ref());
            return Err(ApiError::Internal {
                detail: format!(
                    "the audit log could not be written ({e}); the secret was not stored"
                ),
            });
        }
        self.secrets.set(partner, name, value.to_owned());
        let mut answer = json!({"partner": partner, "name": name, "stored": true,
                                "persisted": self.vault.is_some()});
        if self.vault.is_none() {
            answer["warning"] = json!(NOT_PERSISTED);
        }
        Ok(Response::json_value(200, &answer))
    }

    pub(super) fn delete_secret(
        &self,
        role: &Role,
        partner: &str,
        name: &str,
    ) -> Result<Response, ApiError> {
        let event = Event::new(role, "secret.delete", &format!("{partner}/{name}"));
        self.may_set_secrets(role, partner, &event)?;
        if !valid_secret_name(name) {
            return Err(ApiError::param(
                "name",
                "letters, digits, - and _ (at most 64)",
            ));
        }
        self.configured(partner, name)?;
        let _guard = self.lock_partners();
        let stored = self
            .store
            .remove_sealed(partner, name)
            .map_err(|e| self.store_error(&e))?;
        let held = self.secrets.remove(partner, name);
        if !stored && !held {
            return Err(ApiError::NotFound {
                kind: "secret",
                detail: format!("partner `{partner}` has no secret `{name}`"),
            });
        }
        self.audit(&event, "ok").map_err(|e| ApiError::Internal {
            detail: format!("the secret was deleted, but the audit log could not be written: {e}"),
        })?;
        Ok(Response::json_value(
            200,
            &json!({"partner": partner, "name": name, "deleted": true,
                    "needed_by": self.needed_by(partner, name)}),
        ))
    }

    pub(super) fn list_secrets(&self, role: &Role, partner: &str) -> Result<Response, ApiError> {
        let event = Event::new(role, "secret.list", partner);
        self.may_set_secrets(role, partner, &event)?;
        Ok(Response::json_value(
            200,
            &json!({"partner": partner, "names": self.secrets.names(partner),
                    "persisted": self.vault.is_some(),
                    "missing": self.missing_secrets_of(partner)}),
        ))
    }

    /// Puts the sealed file of a secret back as it was before a write that did not stay:
    /// the previous value sealed again, or no file. A failure here is counted in the store
    /// health (the value on disk may then differ from the one serving until it is set again).
    fn restore_sealed(&self, partner: &str, name: &str, previous: Option<&Secret>) {
        let Some(vault) = &self.vault else {
            return;
        };
        let restored = match previous {
            Some(old) => vault
                .seal(
                    partner,
                    name,
                    old.expose(),
                    jiff::Timestamp::now().to_string(),
                )
                .and_then(|sealed| self.store.put_sealed(partner, name, &sealed)),
            None => self.store.remove_sealed(partner, name).map(|_| ()),
        };
        if let Err(e) = restored {
            self.health.store_failed(&e);
        }
    }

    /// The serving connectors of `partner` that name its secret `name`.
    fn needed_by(&self, partner: &str, name: &str) -> Vec<String> {
        self.api
            .registry
            .load()
            .connectors
            .iter()
            .filter(|c| c.partner() == partner)
            .filter(|c| c.spec().partner_secrets().iter().any(|(_, n)| n == name))
            .map(|c| c.id().to_owned())
            .collect()
    }

    /// The secrets `spec` names that its partner has not set: (pointer, name).
    pub(super) fn missing_secrets(&self, spec: &ConnectorSpec) -> Vec<(String, String)> {
        let have = self.secrets.names(&spec.partner);
        spec.partner_secrets()
            .into_iter()
            .filter(|(_, n)| !have.contains(n))
            .collect()
    }

    /// The secrets the serving connectors of `partner` name that are not set, by name.
    pub(super) fn missing_secrets_of(&self, partner: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self
            .api
            .registry
            .load()
            .connectors
            .iter()
            .filter(|c| c.partner() == partner)
        {
            for (_, name) in self.missing_secrets(c.spec()) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// Opens every sealed secret of the store into the in-memory view; a value sealed
    /// under a previous key is sealed again under the current one. A value that does not
    /// open is left out with an error line (its connectors answer "missing secret NAME"),
    /// never a reason not to start; one sealed under a key that is not configured at all
    /// is a startup error (the operator lost or forgot a key). Returns how many opened.
    pub(super) fn load_secrets(&self) -> Result<usize, GatewayError> {
        let sealed = self.store.sealed_secrets()?;
        let Some(vault) = &self.vault else {
            if !sealed.is_empty() {
                return Err(GatewayError::Config {
                    path: "secrets.master_key".into(),
                    reason: format!(
                        "the state directory holds {} sealed partner secret(s), and no master key is configured to open them",
                        sealed.len()
                    ),
                });
            }
            return Ok(0);
        };
        let mut opened = 0;
        for (partner, name, value) in sealed {
            match vault.open(&partner, &name, &value) {
                Ok(clear) => {
                    if !vault.is_current(&value) {
                        let resealed =
                            vault.seal(&partner, &name, &clear, value.updated_at.clone())?;
                        self.store.put_sealed(&partner, &name, &resealed)?;
                        self.note(
                            &Event::new(
                                &Role::Operator,
                                "secret.reseal",
                                &format!("{partner}/{name}"),
                            ),
                            "ok",
                        );
                        tracing::info!(
                            partner,
                            secret = name,
                            key = vault.key_id(),
                            "secret sealed again under the current master key"
                        );
                    }
                    self.secrets.set(&partner, &name, clear);
                    opened += 1;
                }
                Err(unknown @ Unopened::UnknownKey(_)) => {
                    return Err(GatewayError::Config {
                        path: "secrets.master_key".into(),
                        reason: format!("partner `{partner}` secret `{name}`: {unknown}"),
                    });
                }
                Err(Unopened::Invalid(reason)) => {
                    tracing::error!(
                        partner,
                        secret = name,
                        reason,
                        "a sealed partner secret does not open; it is left out"
                    );
                }
            }
        }
        Ok(opened)
    }
}
