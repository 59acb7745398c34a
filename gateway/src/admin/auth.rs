//! Who is calling: bearer tokens, kept only as SHA-256 hashes and compared in constant
//! time, and the role each one grants (`operator`, or `partner:<id>` for its own
//! connectors and secrets only).

use std::path::PathBuf;

use mallgate_connectors::Owner;
use sha2::{Digest, Sha256};

use crate::GatewayError;
use crate::api::Request;
use crate::config::AdminConfig;
use crate::problem::ApiError;

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

/// The configured tokens: (SHA-256 of the token, role).
pub(super) struct Tokens(Vec<([u8; 32], Role)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({})", self.0.len())
    }
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
        Ok(Self(resolved))
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
        for (h, role) in &self.0 {
            if same(h, &hash) {
                found = Some(role.clone());
            }
        }
        found.ok_or(ApiError::Unauthorized)
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
