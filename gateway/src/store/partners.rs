//! Partners onboarded through the admin API: one JSON file each, with the grant the
//! operator gave it and its tokens, kept only as SHA-256 hashes.

use std::path::PathBuf;

use mallgate_connectors::Grant;
use serde::{Deserialize, Serialize};

use super::{Store, encode, safe_id};
use crate::GatewayError;

/// A partner and what the operator granted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerRecord {
    pub id: String,
    pub display_name: String,
    pub grant: Grant,
    pub created_at: String,
    /// The role that created it.
    pub created_by: String,
    /// Every token ever issued, newest last.
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

/// One issued token: its hash, never its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// A public id (`tok_…`) to name it by (revoking, the audit log).
    pub id: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub created_at: String,
    pub created_by: String,
    /// It stops working then (set when a newer token replaces it, after the grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// It stopped working then, at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl TokenRecord {
    /// Whether it authenticates at `now`.
    pub fn valid_at(&self, now: jiff::Timestamp) -> bool {
        self.revoked_at.is_none()
            && self
                .expires_at
                .as_deref()
                .is_none_or(|e| e.parse::<jiff::Timestamp>().is_ok_and(|e| now < e))
    }
}

impl Store {
    /// Every partner onboarded through the admin API, by id. A record that does not read is
    /// an error naming its key: a partner must never silently lose its grant or tokens.
    pub fn partners(&self) -> Result<Vec<PartnerRecord>, GatewayError> {
        let mut out = Vec::new();
        for key in self.backend.keys("partners/")? {
            let Some(id) = key
                .strip_prefix("partners/")
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            if safe_id(id).is_err() {
                continue;
            }
            if let Some(record) = self.partner(id)? {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One partner's record, if onboarded through the admin API.
    pub fn partner(&self, id: &str) -> Result<Option<PartnerRecord>, GatewayError> {
        Ok(self.partner_read(id)?.map(|(record, _)| record))
    }

    /// One partner's record and the bytes it was read from: what
    /// [`Store::put_partner_if`] compares.
    pub fn partner_read(&self, id: &str) -> Result<Option<(PartnerRecord, Vec<u8>)>, GatewayError> {
        let key = format!("partners/{}.json", safe_id(id)?);
        let Some(bytes) = self.backend.get(&key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(|record| Some((record, bytes)))
            .map_err(|e| GatewayError::Config {
                path: PathBuf::from(format!("{}: {key}", self.describe())),
                reason: format!("a partner record that does not read: {e}"),
            })
    }

    /// Writes a partner's record (a migration, a test: no other writer).
    pub fn put_partner(&self, record: &PartnerRecord) -> Result<(), GatewayError> {
        let key = format!("partners/{}.json", safe_id(&record.id)?);
        self.backend.put(&key, &encode(&key, record)?)
    }

    /// Writes a partner's record if the store still holds `read` (the bytes it was read
    /// from; `None`: no record yet), as one compare-and-put: in a fleet, two replicas
    /// changing one partner's tokens at once cannot lose either change (the second is
    /// [`GatewayError::StoreConflict`]).
    pub fn put_partner_if(
        &self,
        record: &PartnerRecord,
        read: Option<&[u8]>,
    ) -> Result<(), GatewayError> {
        let key = format!("partners/{}.json", safe_id(&record.id)?);
        if self
            .backend
            .put_if(&key, read, Some(&encode(&key, record)?))?
        {
            Ok(())
        } else {
            Err(GatewayError::StoreConflict {
                key,
                reason: "the partner's record was changed meanwhile (by another replica); read it again and retry".into(),
            })
        }
    }
}
