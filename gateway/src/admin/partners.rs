//! Partners onboarded through the admin API, live (no restart):
//!
//! - `POST /admin/v1/partners` (operator): creates a partner with its grant (`kind`,
//!   `priority`, `carrier_codes`) and answers its first token, once; only its hash is kept.
//! - `GET /admin/v1/partners` (operator), `GET /admin/v1/partners/{id}` (the operator or
//!   the partner): the record, its tokens by id and state, its secrets by name.
//! - `PATCH /admin/v1/partners/{id}` (operator): changes its name or grant; a narrowed
//!   grant applies at once (the serving set is rebuilt against it).
//! - `POST /admin/v1/partners/{id}/tokens` (the partner or the operator): a new token; the
//!   ones before it keep working for the grace period (`grace_s`, at most
//!   `admin.token_grace_s`), then stop.
//! - `DELETE /admin/v1/partners/{id}/tokens/{token_id}` (operator): revoked at once.
//!
//! Partners whose grant is in the config file stay the config's; tokens in the config keep
//! working beside issued ones.

use std::collections::BTreeMap;

use bytes::Bytes;
use mallgate_connectors::{Grant, PartnerKind};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;
use super::auth::{Role, hex, new_token};
use super::change::Event;
use crate::GatewayError;
use crate::api::{Request, Response, to_value};
use crate::changes::{Change, ReloadSource};
use crate::problem::ApiError;
use crate::store::{PartnerRecord, TokenRecord};

/// Tokens kept per partner (the newest; older expired or revoked ones are dropped).
const KEPT_TOKENS: usize = 20;

/// Tokens of one partner that may work at once (the newest and those in their grace).
const WORKING_TOKENS: usize = 5;

/// One kind or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Kinds {
    One(PartnerKind),
    Many(Vec<PartnerKind>),
}

impl Kinds {
    fn into_vec(self) -> Vec<PartnerKind> {
        match self {
            Self::One(k) => vec![k],
            Self::Many(k) => k,
        }
    }
}

/// The body of `POST /admin/v1/partners` (and, every field optional, of `PATCH`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    kind: Option<Kinds>,
    /// `null` clears it (the kind's default); absent leaves it.
    #[serde(default, deserialize_with = "present")]
    priority: Option<Option<u32>>,
    #[serde(default)]
    carrier_codes: Option<Vec<String>>,
}

/// A field that is present, `null` included (so `Option<Option<T>>` tells `null` from
/// absent).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The body of `POST …/tokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_s: Option<u64>,
}

/// A JSON body, refused at the pointer of its first fault.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.is_empty() { b"{}" } else { body };
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        use serde_path_to_error::Segment;
        // An RFC 6901 pointer, each segment escaped.
        let pointer: String = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(index.to_string()),
                Segment::Map { key } => Some(key.replace('~', "~0").replace('/', "~1")),
                Segment::Enum { variant } => Some(variant.clone()),
                Segment::Unknown => None,
            })
            .map(|s| format!("/{s}"))
            .collect();
        ApiError::BadBody {
            pointer,
            detail: e.into_inner().to_string(),
        }
    })
}

pub(super) fn slug(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn bad(pointer: &str, detail: impl Into<String>) -> ApiError {
    ApiError::BadBody {
        pointer: pointer.into(),
        detail: detail.into(),
    }
}

/// The name, checked: 1 to 120 characters, no control characters.
fn display_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 120 || name.chars().any(char::is_control) {
        return Err(bad(
            "/display_name",
            "1 to 120 characters, no control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A grant, checked: carrier codes only for carriers, each a short token.
fn grant(
    kinds: Vec<PartnerKind>,
    priority: Option<u32>,
    codes: Vec<String>,
) -> Result<Grant, ApiError> {
    if kinds.is_empty() {
        return Err(bad(
            "/kind",
            "at least one kind: retailer, supplier or carrier",
        ));
    }
    if !codes.is_empty() && !kinds.contains(&PartnerKind::Carrier) {
        return Err(bad("/carrier_codes", "carrier codes are for carriers only"));
    }
    for (i, code) in codes.iter().enumerate() {
        let ok = !code.is_empty()
            && code.len() <= 32
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(bad(
                &format!("/carrier_codes/{i}"),
                "letters, digits, - and _ (at most 32)",
            ));
        }
    }
    Ok(Grant {
        kinds,
        priority,
        codes,
    })
}

/// What answers show of a record: never a hash.
fn view(record: &PartnerRecord, secrets: Vec<String>) -> Value {
    let now = jiff::Timestamp::now();
    let tokens: Vec<Value> = record
        .tokens
        .iter()
        .map(|t| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if !t.valid_at(now) {
                "expired"
            } else if t.expires_at.is_some() {
                "expiring"
            } else {
                "active"
            };
            json!({"id": t.id, "state": state, "created_at": t.created_at,
                   "created_by": t.created_by, "expires_at": t.expires_at,
                   "revoked_at": t.revoked_at})
        })
        .collect();
    json!({
        "id": record.id,
        "display_name": record.display_name,
        "kind": record.grant.kinds,
        "priority": record.grant.priority,
        "carrier_codes": record.grant.codes,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "source": "admin",
        "tokens": tokens,
        "secrets": secrets,
    })
}

impl Admin {
    /// Loads the partners of the store into the tokens and the registry's grants.
    pub(super) fn load_partners(&self) -> Result<(), GatewayError> {
        let records = self.store.partners()?;
        self.tokens.set_issued(&records);
        let mut grants: BTreeMap<String, Grant> = records
            .iter()
            .map(|r| (r.id.clone(), r.grant.clone()))
            .collect();
        // The config's grants win: a partner configured there stays the config's.
        grants.extend(self.api.config().partners.clone());
        self.api.registry.set_grants(grants);
        Ok(())
    }

    /// Writes `record` over the bytes it was `read` from (`None`: a new partner) by
    /// compare-and-put, audits `event`, and makes it live (tokens and grants).
    fn save_partner(
        &self,
        record: &PartnerRecord,
        read: Option<&[u8]>,
        event: &Event<'_>,
    ) -> Result<(), ApiError> {
        self.store
            .put_partner_if(record, read)
            .map_err(|e| self.store_error(&e))?;
        let audited = self.audit(event, "ok");
        // Live from the record just written (never a re-read that could fail after the
        // write: a revocation on disk is a revocation in force).
        self.tokens.set_partner(record);
        if !self.api.config().partners.contains_key(&record.id) {
            let mut grants = self.api.registry.grants();
            grants.insert(record.id.clone(), record.grant.clone());
            self.api.registry.set_grants(grants);
        }
        audited.map_err(|e| ApiError::Internal {
            detail: format!("the change is live, but the audit log could not be written: {e}"),
        })
    }

    /// The partner's record and the bytes it was read from (for [`Self::save_partner`]).
    fn existing(&self, id: &str) -> Result<(PartnerRecord, Vec<u8>), ApiError> {
        let found = if slug(id) {
            self.store
                .partner_read(id)
                .map_err(|e| self.store_error(&e))?
        } else {
            None
        };
        found.ok_or_else(|| ApiError::NotFound {
            kind: "partner",
            detail: if self.api.config().partners.contains_key(id) {
                format!("partner `{id}` is configured in the gateway's config file (partners.{id}); onboard partners through the API to manage their tokens here")
            } else {
                format!("no partner `{id}` was onboarded through the admin API")
            },
        })
    }

    pub(super) fn lock_partners(&self) -> std::sync::MutexGuard<'_, ()> {
        self.partners_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn create_partner(&self, role: &Role, body: &Bytes) -> Result<Response, ApiError> {
        role.operator_only()?;
        let body: PartnerBody = parse_body(body)?;
        let id = body
            .id
            .ok_or_else(|| bad("/id", "the partner's id is required"))?;
        if !slug(&id) {
            return Err(bad(
                "/id",
                "lower-case letters, digits and dashes, starting with a letter or digit, at most 63",
            ));
        }
        let name = display_name(body.display_name.as_deref().unwrap_or(&id))?;
        let kinds = body
            .kind
            .map_or_else(|| vec![PartnerKind::Retailer], Kinds::into_vec);
        let grant = grant(
            kinds,
            body.priority.flatten(),
            body.carrier_codes.unwrap_or_default(),
        )?;
        let _guard = self.lock_partners();
        if self.api.config().partners.contains_key(&id) {
            return Err(ApiError::Conflict {
                detail: format!(
                    "partner `{id}` is configured in the gateway's config file (partners.{id}); its grant is the config's"
                ),
            });
        }
        if self
            .store
            .partner(&id)
            .map_err(|e| self.store_error(&e))?
            .is_some()
        {
            return Err(ApiError::Conflict {
                detail: format!(
                    "partner `{id}` exists; change it with PATCH /admin/v1/partners/{id}"
                ),
            });
        }
        let (token, hash, token_id) = new_token()?;
        let now = jiff::Timestamp::now().to_string();
        let record = PartnerRecord {
            id: id.clone(),
            display_name: name,
            grant,
            created_at: now.clone(),
            created_by: role.name(),
            tokens: vec![TokenRecord {
                id: token_id.clone(),
                sha256: hex(&hash),
                created_at: now,
                created_by: role.name(),
                expires_at: None,
                revoked_at: None,
            }],
        };
        self.save_partner(
            &record,
            None,
            &Event::new(role, "partner.create", &id).detail(token_id.clone()),
        )?;
        let mut answer = view(&record, Vec::new());
        answer["token"] = json!(token);
        answer["token_id"] = json!(token_id);
        let mut r = Response::json(201, &answer)?;
        r.headers
            .push(("location", format!("/admin/v1/partners/{id}")));
        r.headers.push(("cache-control", "no-store".into()));
        Ok(r)
    }

    pub(super) fn list_partners(&self, role: &Role) -> Result<Response, ApiError> {
        role.operator_only()?;
        let records = self.store.partners().map_err(|e| self.store_error(&e))?;
        let mut partners: Vec<Value> = records
            .iter()
            .map(|r| view(r, self.secrets.names(&r.id)))
            .collect();
        for (id, g) in &self.api.config().partners {
            partners.push(json!({"id": id, "kind": g.kinds, "priority": g.priority,
                                 "carrier_codes": g.codes, "source": "config",
                                 "secrets": self.secrets.names(id)}));
        }
        Response::json(200, &json!({"partners": partners}))
    }

    pub(super) fn get_partner(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        if !role.may_act_for(id) {
            return Err(ApiError::Forbidden {
                detail: format!("this token may read its own partner only, not `{id}`"),
            });
        }
        let (record, _) = self.existing(id)?;
        let mut answer = view(&record, self.secrets.names(id));
        answer["missing_secrets"] = to_value(&self.missing_secrets_of(id))?;
        Response::json(200, &answer)
    }

    pub(super) async fn update_partner(
        &self,
        role: &Role,
        id: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        role.operator_only()?;
        let body: PartnerBody = parse_body(body)?;
        if body.id.as_deref().is_some_and(|b| b != id) {
            return Err(bad("/id", "a partner's id does not change"));
        }
        let record = {
            let _guard = self.lock_partners();
            let (mut record, read) = self.existing(id)?;
            if let Some(name) = &body.display_name {
                record.display_name = display_name(name)?;
            }
            let kinds = body
                .kind
                .map_or_else(|| record.grant.kinds.clone(), Kinds::into_vec);
            let priority = body.priority.unwrap_or(record.grant.priority);
            let codes = body
                .carrier_codes
                .unwrap_or_else(|| record.grant.codes.clone());
            record.grant = grant(kinds, priority, codes)?;
            self.save_partner(
                &record,
                Some(&read),
                &Event::new(role, "partner.update", id),
            )?;
            record
        };
        // The serving set is checked against the new grant now, not at the next change.
        let applied = self
            .changes
            .submit(role.clone(), Change::Reload(ReloadSource::Admin))
            .await?;
        let mut answer = view(&record, self.secrets.names(id));
        answer["generation"] = json!(applied.generation);
        Response::json(200, &answer)
    }

    pub(super) fn rotate_token(
        &self,
        role: &Role,
        id: &str,
        req: &Request,
    ) -> Result<Response, ApiError> {
        let body = &req.body;
        if !role.may_act_for(id) {
            return Err(ApiError::Forbidden {
                detail: format!("this token may rotate its own partner's tokens only, not `{id}`"),
            });
        }
        // A token being rotated out does not mint a successor (a leaked old token would
        // renew itself for good): rotate with the newest token, or ask the operator.
        if matches!(role, Role::Partner(_)) && self.tokens.expiring(req) {
            return Err(ApiError::Forbidden {
                detail: "this token is being rotated out; rotate with the newest token, or ask the operator (who may rotate with grace_s: 0 to end every token at once)".into(),
            });
        }
        let body: RotateBody = parse_body(body)?;
        let max = self.token_grace_s;
        let grace = body.grace_s.unwrap_or(max);
        if grace > max {
            return Err(bad(
                "/grace_s",
                format!("at most {max} (admin.token_grace_s)"),
            ));
        }
        let _guard = self.lock_partners();
        let (mut record, read) = self.existing(id)?;
        let now = jiff::Timestamp::now();
        // Bounded: a partner rotating in a loop cannot pile up tokens in their grace.
        let working = record.tokens.iter().filter(|t| t.valid_at(now)).count();
        if grace > 0 && working >= WORKING_TOKENS {
            return Err(ApiError::Conflict {
                detail: format!(
                    "partner `{id}` has {working} tokens working (the newest and those in their grace; at most {WORKING_TOKENS}); rotate with grace_s: 0, or wait for a grace to end"
                ),
            });
        }
        let ends = now
            .checked_add(jiff::SignedDuration::from_secs(
                i64::try_from(grace).unwrap_or(i64::MAX),
            ))
            .unwrap_or(now);
        let mut previous = Vec::new();
        for t in record.tokens.iter_mut().filter(|t| t.valid_at(now)) {
            let sooner = t
                .expires_at
                .as_deref()
                .and_then(|e| e.parse::<jiff::Timestamp>().ok())
                .is_some_and(|e| e <= ends);
            if !sooner {
                t.expires_at = Some(ends.to_string());
            }
            previous.push(json!({"id": t.id, "expires_at": t.expires_at}));
        }
        let (token, hash, token_id) = new_token()?;
        record.tokens.push(TokenRecord {
            id: token_id.clone(),
            sha256: hex(&hash),
            created_at: now.to_string(),
            created_by: role.name(),
            expires_at: None,
            revoked_at: None,
        });
        // The oldest tokens that no longer work go first when there are too many.
        while record.tokens.len() > KEPT_TOKENS {
            match record.tokens.iter().position(|t| !t.valid_at(now)) {
                Some(i) => {
                    record.tokens.remove(i);
                }
                None => break,
            }
        }
        let event = Event::new(role, "partner.token.rotate", id)
            .detail(format!("{token_id}; previous end {ends}"));
        self.save_partner(&record, Some(&read), &event)?;
        let mut r = Response::json(
            201,
            &json!({"partner": id, "token": token, "token_id": token_id, "previous": previous}),
        )?;
        r.headers.push(("cache-control", "no-store".into()));
        Ok(r)
    }

    pub(super) fn revoke_token(
        &self,
        role: &Role,
        id: &str,
        token_id: &str,
    ) -> Result<Response, ApiError> {
        role.operator_only()?;
        let _guard = self.lock_partners();
        let (mut record, read) = self.existing(id)?;
        let token = record
            .tokens
            .iter_mut()
            .find(|t| t.id == token_id)
            .ok_or_else(|| ApiError::NotFound {
                kind: "token",
                detail: format!("partner `{id}` has no token `{token_id}`"),
            })?;
        if token.revoked_at.is_none() {
            token.revoked_at = Some(jiff::Timestamp::now().to_string());
            let event = Event::new(role, "partner.token.revoke", id).detail(token_id.to_owned());
            self.save_partner(&record, Some(&read), &event)?;
        }
        Response::json(
            200,
            &json!({"partner": id, "token_id": token_id, "revoked": true}),
        )
    }
}
