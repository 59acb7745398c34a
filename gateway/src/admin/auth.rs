//! Who is calling: bearer tokens, kept only as SHA-256 hashes and compared in constant
//! time, and the role each one grants (`operator`, or `partner:<id>` for its own
//! connectors and secrets only). Configured tokens come from the config file; partner
//! tokens are issued, rotated and revoked through the admin API (`admin::partners`) and
//! take effect at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use mallgate_connectors::Owner;
use sha2::{Digest, Sha256};

use crate::GatewayError;
use crate::api::Request;
use crate::config::AdminConfig;
use crate::problem::ApiError;
use crate::store::PartnerRecord;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Operator,
    Partner(String),
}

impl Role {
    pub(super) fn parse(text: &str) -> Option<Self> {
        match text {
            "operator" => Some(Self::Operator),
            _ => text
                .strip_prefix("partner:")
                .filter(|p| !p.is_empty())
                .map(|p| Self::Partner(p.to_owned())),
        }
    }

    /// As the audit log and version metadata name it.
    pub(super) fn name(&self) -> String {
        match self {
            Self::Operator => "operator".into(),
            Self::Partner(p) => format!("partner:{p}"),
        }
    }

    pub(super) fn may_act_for(&self, partner: &str) -> bool {
        match self {
            Self::Operator => true,
            Self::Partner(p) => p == partner,
        }
    }

    /// The owner a document submitted with this role is loaded as.
    pub(super) fn owner(&self) -> Owner {
        match self {
            Self::Operator => Owner::Operator,
            Self::Partner(p) => Owner::Partner(p.clone()),
        }
    }

    pub(super) fn operator_only(&self) -> Result<(), ApiError> {
        match self {
            Self::Operator => Ok(()),
            Self::Partner(_) => Err(ApiError::Forbidden {
                detail: "only the operator may do this".into(),
            }),
        }
    }
}

/// A token issued through the admin API: whose it is, and until when it works.
#[derive(Debug, Clone)]
struct Issued {
    partner: String,
    expires_at: Option<jiff::Timestamp>,
}

/// The tokens: the configured ones (SHA-256 of the token, role), and the partners' tokens
/// issued through the admin API (by SHA-256), swapped whole when one is issued, rotated
/// or revoked.
pub(super) struct Tokens {
    configured: Vec<([u8; 32], Role)>,
    issued: ArcSwap<HashMap<[u8; 32], Issued>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokens({} configured, {} issued)",
            self.configured.len(),
            self.issued.load().len()
        )
    }
}

/// A new partner token: `mgp_` and 43 characters of base64url (256 random bits from the
/// OS), its SHA-256, and a public id (`tok_` and 16 hex digits) to name it by.
pub(super) fn new_token() -> Result<(String, [u8; 32], String), ApiError> {
    use base64::Engine as _;
    let bytes: [u8; 40] = crate::vault::random().map_err(|e| ApiError::Internal {
        detail: e.to_string(),
    })?;
    let text = format!(
        "mgp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..32])
    );
    let id = format!(
        "tok_{}",
        bytes[32..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let hash = Sha256::digest(text.as_bytes()).into();
    Ok((text, hash, id))
}

/// Hex of a hash, as partner records keep it.
pub(super) fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// References are read and hashes parsed here; a token that cannot be resolved is a
    /// startup error naming its place and role, never its value.
    pub(super) fn resolve(
        config: &AdminConfig,
        resolve: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Self, GatewayError> {
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
            configured: resolved,
            issued: ArcSwap::default(),
        })
    }

    /// The role of the request's bearer token; every configured token is compared.
    pub(super) fn authenticate(&self, req: &Request) -> Result<Role, ApiError> {
        let token = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (h, role) in &self.configured {
            if same(h, &hash) {
                found = Some(role.clone());
            }
        }
        if let Some(role) = found {
            return Ok(role);
        }
        // Issued tokens by their hash (a lookup by the SHA-256 of a 256-bit secret tells a
        // timing observer nothing about the secret).
        let issued = self.issued.load();
        match issued.get(&hash) {
            Some(t) if t.expires_at.is_none_or(|e| jiff::Timestamp::now() < e) => {
                Ok(Role::Partner(t.partner.clone()))
            }
            _ => Err(ApiError::Unauthorized),
        }
    }

    /// Whether the request's token is an issued one already being rotated out (it has an
    /// end): such a token may not mint its own successor.
    pub(super) fn expiring(&self, req: &Request) -> bool {
        let Some(token) = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
        else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.issued
            .load()
            .get(&hash)
            .is_some_and(|t| t.expires_at.is_some())
    }

    /// Replaces the issued tokens of one partner with those of `record` that still work,
    /// leaving every other partner's as they are.
    pub(super) fn set_partner(&self, record: &PartnerRecord) {
        let mut map: HashMap<[u8; 32], Issued> = self
            .issued
            .load()
            .iter()
            .filter(|(_, t)| t.partner != record.id)
            .map(|(h, t)| (*h, t.clone()))
            .collect();
        map.extend(issued_of(record, jiff::Timestamp::now()));
        self.issued.store(Arc::new(map));
    }

    /// Replaces the issued tokens with those of `partners` that still work (a revoked one
    /// is gone at once; an expiring one is kept with its end, checked at every request).
    pub(super) fn set_issued(&self, partners: &[PartnerRecord]) {
        let now = jiff::Timestamp::now();
        let map = partners.iter().flat_map(|p| issued_of(p, now)).collect();
        self.issued.store(Arc::new(map));
    }
}

/// The tokens of `record` that work at `now`, by hash.
fn issued_of(record: &PartnerRecord, now: jiff::Timestamp) -> Vec<([u8; 32], Issued)> {
    record
        .tokens
        .iter()
        .filter(|t| t.valid_at(now))
        .filter_map(|t| {
            let hash = hex32(&t.sha256)?;
            let expires_at = t.expires_at.as_deref().and_then(|e| e.parse().ok());
            Some((
                hash,
                Issued {
                    partner: record.id.clone(),
                    expires_at,
                },
            ))
        })
        .collect()
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
