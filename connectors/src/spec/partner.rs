//! How the partner is reached and authenticated: endpoints, the health check, `auth`,
//! `tls`, and the secret references they carry.

use serde::{Deserialize, Serialize};

use super::default_one;

/// A reference to a secret, never the secret itself: `secret:NAME`, `env:VAR`, `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(pub String);

/// Where a secret reference points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// The partner's own namespace in the gateway's secret store.
    Partner,
    /// An environment variable of the gateway process (operator connectors only).
    Env,
    /// A file on the gateway host (operator connectors only).
    File,
}

impl SecretRef {
    /// The reference's source and name, or `None` for a literal value.
    pub fn parse(text: &str) -> Option<(SecretSource, &str)> {
        let (scheme, name) = text.split_once(':')?;
        let source = match scheme {
            "secret" => SecretSource::Partner,
            "env" => SecretSource::Env,
            "file" => SecretSource::File,
            _ => return None,
        };
        Some((source, name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub url: String,
    /// Failover order: lowest first.
    #[serde(default)]
    pub priority: u32,
    #[serde(default = "default_one")]
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    /// `None`: the operator's `resilience` default (10 s unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u32>,
    /// `None`: the operator's `resilience` default (1000 ms unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    #[serde(default = "HealthCheck::default_healthy_statuses")]
    pub healthy_statuses: Vec<u16>,
}

impl HealthCheck {
    fn default_healthy_statuses() -> Vec<u16> {
        vec![200]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Client id and secret in an HTTP Basic `Authorization` header (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// Client id and secret as form fields of the token request.
    Body,
}

fn default_auth_header() -> String {
    "Authorization".to_owned()
}

fn default_auth_scheme() -> String {
    "Bearer".to_owned()
}

fn default_refresh_before_s() -> u32 {
    30
}

fn default_signature_header() -> String {
    "X-Signature".to_owned()
}

fn default_timestamp_header() -> String {
    "X-Timestamp".to_owned()
}

fn default_key_id_header() -> String {
    "X-Key-Id".to_owned()
}

/// The hash of a request-signing HMAC (and of the body hash it signs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    #[default]
    Sha256,
    Sha512,
}

/// How a signature is written into its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lower-case hexadecimal.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// How the gateway authenticates to the partner.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    ApiKey {
        #[serde(rename = "in")]
        location: KeyLocation,
        name: String,
        value: SecretRef,
    },
    Basic {
        /// A literal or a secret reference.
        username: String,
        password: SecretRef,
    },
    Bearer {
        token: SecretRef,
        #[serde(default = "default_auth_header")]
        header: String,
        #[serde(default = "default_auth_scheme")]
        scheme: String,
    },
    Oauth2ClientCredentials {
        token_url: String,
        /// A literal or a secret reference.
        client_id: String,
        client_secret: SecretRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        #[serde(default)]
        client_auth: ClientAuth,
        #[serde(default = "default_auth_header")]
        header: String,
        #[serde(default = "default_auth_scheme")]
        scheme: String,
        #[serde(default = "default_refresh_before_s")]
        refresh_before_s: u32,
    },
    /// Every request signed with an HMAC over its canonical form (method, path, sorted
    /// query, body hash, timestamp; see `runtime::signing`).
    Hmac {
        /// A literal or a secret reference; sent in `key_id_header` when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
        secret: SecretRef,
        #[serde(default)]
        algorithm: HmacAlgorithm,
        #[serde(default)]
        encoding: SignatureEncoding,
        #[serde(default = "default_signature_header")]
        signature_header: String,
        #[serde(default = "default_timestamp_header")]
        timestamp_header: String,
        #[serde(default = "default_key_id_header")]
        key_id_header: String,
    },
    /// AWS Signature Version 4 (`Authorization: AWS4-HMAC-SHA256 ...`), as API Gateway,
    /// S3 and the partner APIs fronted by them require.
    AwsSigv4 {
        /// A literal or a secret reference.
        access_key_id: String,
        secret_access_key: SecretRef,
        /// Temporary credentials' token, sent (and signed) as `X-Amz-Security-Token`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<SecretRef>,
        region: String,
        service: String,
    },
}

impl Auth {
    /// The request headers this auth sets (lower case): a capability's own `headers` may
    /// not name them, or a request would carry two values (and a signed one a value it
    /// did not sign).
    pub(super) fn reserved_headers(&self) -> Vec<String> {
        match self {
            Self::None => vec![],
            Self::ApiKey {
                location: KeyLocation::Header,
                name,
                ..
            } => vec![name.to_ascii_lowercase()],
            Self::ApiKey { .. } => vec![],
            Self::Basic { .. } => vec!["authorization".to_owned()],
            Self::Bearer { header, .. } | Self::Oauth2ClientCredentials { header, .. } => {
                vec![header.to_ascii_lowercase()]
            }
            Self::Hmac {
                signature_header,
                timestamp_header,
                key_id_header,
                ..
            } => [signature_header, timestamp_header, key_id_header]
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            // Only the ones the signer sets: `X-Amz-Target` and `x-amz-meta-*` are the
            // capability's to set (and are signed with it).
            Self::AwsSigv4 { .. } => [
                "authorization",
                "x-amz-date",
                "x-amz-content-sha256",
                "x-amz-security-token",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }

    /// Every field that holds or may hold a secret reference, with its pointer below
    /// `/auth`.
    pub(super) fn secret_fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::None => vec![],
            Self::ApiKey { value, .. } => vec![("value", value.0.as_str())],
            Self::Basic { username, password } => {
                vec![
                    ("username", username.as_str()),
                    ("password", password.0.as_str()),
                ]
            }
            Self::Bearer { token, .. } => vec![("token", token.0.as_str())],
            Self::Oauth2ClientCredentials {
                client_id,
                client_secret,
                ..
            } => vec![
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.0.as_str()),
            ],
            Self::Hmac { key_id, secret, .. } => {
                let mut fields = vec![("secret", secret.0.as_str())];
                if let Some(id) = key_id {
                    fields.push(("key_id", id.as_str()));
                }
                fields
            }
            Self::AwsSigv4 {
                access_key_id,
                secret_access_key,
                session_token,
                ..
            } => {
                let mut fields = vec![
                    ("access_key_id", access_key_id.as_str()),
                    ("secret_access_key", secret_access_key.0.as_str()),
                ];
                if let Some(token) = session_token {
                    fields.push(("session_token", token.0.as_str()));
                }
                fields
            }
        }
    }
}

/// TLS to the partner beyond the defaults (platform roots, TLS 1.2+, always verified).
/// Every field that carries key material is a reference; there is no field that turns
/// verification off.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificates of CAs trusted for this partner, besides the platform's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretRef>,
    /// PEM certificate chain for mutual TLS (with `client_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretRef>,
    /// The name endpoint certificates are verified against, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Tls {
    /// The reference fields, with their pointer below `/tls`.
    pub(super) fn secret_fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("ca", &self.ca),
            ("client_certificate", &self.client_certificate),
            ("client_key", &self.client_key),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_ref().map(|v| (field, v.0.as_str())))
        .collect()
    }
}
