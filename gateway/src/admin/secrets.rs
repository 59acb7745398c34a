//! `PUT /admin/v1/partners/{partner}/secrets/{name}`: a partner's secret, by value, into the
//! in-memory secret store. The value is never written anywhere else, never answered and
//! never logged or audited; connectors name it as `secret:NAME`.

use bytes::Bytes;
use serde_json::json;

use super::Admin;
use super::auth::Role;
use super::change::Event;
use crate::api::Response;
use crate::problem::ApiError;

/// The longest secret value accepted.
const MAX_SECRET_BYTES: usize = 8192;

impl Admin {
    pub(super) fn put_secret(
        &self,
        role: &Role,
        partner: &str,
        name: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let event = Event::new(role, "secret.put", &format!("{partner}/{name}"));
        if !role.may_act_for(partner) {
            self.note(&event, "denied");
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
            .filter(|v| !v.is_empty() && v.len() <= MAX_SECRET_BYTES)
            .ok_or_else(|| ApiError::BadBody {
                pointer: String::new(),
                detail: format!(
                    "the body is the secret's value: 1 to {MAX_SECRET_BYTES} bytes of UTF-8"
                ),
            })?;
        // Audited first: setting the value cannot fail, so an unaudited secret never stays.
        self.audit(&event, "ok").map_err(|e| ApiError::Internal {
            detail: format!("the audit log could not be written ({e}); the secret was not stored"),
        })?;
        self.secrets.set(partner, name, value.to_owned());
        Ok(Response::json_value(
            200,
            &json!({"partner": partner, "name": name, "stored": true}),
        ))
    }
}
