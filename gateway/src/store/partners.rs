//! Partners onboarded through the admin API: one JSON file each, with the grant the
//! operator gave it and its tokens, kept only as SHA-256 hashes.

use std::fs;

use mallgate_connectors::Grant;
use serde::{Deserialize, Serialize};

use super::{Store, io, safe_id, write_atomic};
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
    fn partner_path(&self, id: &str) -> Result<std::path::PathBuf, GatewayError> {
        Ok(self
            .root
            .join("partners")
            .join(format!("{}.json", safe_id(id)?)))
    }

    /// Every partner onboarded through the admin API, by id. A record that does not read is
    /// an error naming its file: a partner must never silently lose its grant or tokens.
    pub fn partners(&self) -> Result<Vec<PartnerRecord>, GatewayError> {
        let dir = self.root.join("partners");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') || safe_id(id).is_err() {
                continue;
            }
            let bytes = fs::read(&path).map_err(io(&path))?;
            let record: PartnerRecord =
                serde_json::from_slice(&bytes).map_err(|e| GatewayError::Config {
                    path: path.clone(),
                    reason: format!("a partner record that does not read: {e}"),
                })?;
            out.push(record);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One partner's record, if onboarded through the admin API.
    pub fn partner(&self, id: &str) -> Result<Option<PartnerRecord>, GatewayError> {
        let path = self.partner_path(id)?;
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| GatewayError::Config {
                        path: path.clone(),
                        reason: format!("a partner record that does not read: {e}"),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes a partner's record (atomically).
    pub fn put_partner(&self, record: &PartnerRecord) -> Result<(), GatewayError> {
        let path = self.partner_path(&record.id)?;
        let json = serde_json::to_vec_pretty(record).map_err(|e| GatewayError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &json)
    }
}
