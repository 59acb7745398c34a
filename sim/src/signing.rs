//! Signed requests, checked the way a partner that requires them checks: a generic HMAC
//! over the canonical request (method, path, sorted query, body hash, timestamp) or AWS
//! Signature Version 4. Written apart from the gateway's signer on purpose — a shared bug
//! would verify itself — and tested against the published AWS test suite on its own.
//!
//! Set per partner through the control API (`PUT /__sim/partners/{partner}/signature`);
//! while set, every request to that partner's replicas must carry a valid signature or
//! gets `401` with the reason, and each replica counts `signature:valid` and
//! `signature:invalid`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, Method, Uri};
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::world::Partner;

fn default_skew() -> i64 {
    300
}

fn default_sha256() -> String {
    "sha256".into()
}

fn default_hex() -> String {
    "hex".into()
}

fn default_signature_header() -> String {
    "x-signature".into()
}

fn default_timestamp_header() -> String {
    "x-timestamp".into()
}

fn default_key_id_header() -> String {
    "x-key-id".into()
}

/// Marks a request whose required signature held: the dialects take it as authenticated
/// (an API that signs requests asks for no other credential).
#[derive(Debug, Clone, Copy)]
pub struct Signed;

/// What a partner requires of every request. Its Debug form leaves the secrets out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SignatureCheck {
    Hmac {
        secret: String,
        /// `sha256` or `sha512`.
        #[serde(default = "default_sha256")]
        algorithm: String,
        /// `hex` or `base64`.
        #[serde(default = "default_hex")]
        encoding: String,
        #[serde(default = "default_signature_header")]
        signature_header: String,
        #[serde(default = "default_timestamp_header")]
        timestamp_header: String,
        /// Required in `key_id_header` when set.
        #[serde(default)]
        key_id: Option<String>,
        #[serde(default = "default_key_id_header")]
        key_id_header: String,
        #[serde(default = "default_skew")]
        max_skew_s: i64,
    },
    AwsSigv4 {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        session_token: Option<String>,
        region: String,
        service: String,
        #[serde(default = "default_skew")]
        max_skew_s: i64,
    },
}

impl std::fmt::Debug for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const REDACTED: &str = "<redacted>";
        match self {
            Self::Hmac {
                algorithm,
                encoding,
                signature_header,
                timestamp_header,
                key_id,
                key_id_header,
                max_skew_s,
                ..
            } => f
                .debug_struct("Hmac")
                .field("secret", &REDACTED)
                .field("algorithm", algorithm)
                .field("encoding", encoding)
                .field("signature_header", signature_header)
                .field("timestamp_header", timestamp_header)
                .field("key_id", key_id)
                .field("key_id_header", key_id_header)
                .field("max_skew_s", max_skew_s)
                .finish(),
            Self::AwsSigv4 {
                access_key_id,
                session_token,
                region,
                service,
                max_skew_s,
                ..
            } => f
                .debug_struct("AwsSigv4")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &REDACTED)
                .field("session_token", &session_token.as_ref().map(|_| REDACTED))
                .field("region", region)
                .field("service", service)
                .field("max_skew_s", max_skew_s)
                .finish(),
        }
    }
}

/// The checks partners require, shared by every replica.
#[derive(Debug, Default)]
pub struct Signatures {
    checks: Mutex<BTreeMap<Partner, SignatureCheck>>,
}

impl Signatures {
    pub fn get(&self, partner: Partner) -> Option<SignatureCheck> {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partner)
            .cloned()
    }

    /// Requires `check` of `partner` (`None`: requests need no signature again).
    pub fn set(&self, partner: Partner, check: Option<SignatureCheck>) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        match check {
            Some(c) => checks.insert(partner, c),
            None => checks.remove(&partner),
        };
    }
}

/// One received request, as the checks read it.
#[derive(Debug)]
pub struct Received<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(bytes: &[u8]) -> String {
    percent_encode(bytes, KEEP).collect()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC keys have any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hmac512(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC keys have any length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The path as received, each segment decoded and re-encoded (the generic HMAC, and
/// SigV4 for S3).
fn path_of(uri: &Uri) -> String {
    let path = uri
        .path()
        .split('/')
        .map(|segment| enc(&percent_decode_str(segment).collect::<Vec<u8>>()))
        .collect::<Vec<_>>()
        .join("/");
    if path.is_empty() { "/".into() } else { path }
}

/// The path as SigV4 reads it for every service but S3: dot segments and empty segments
/// resolved, then the path as received encoded once more (`%20` becomes `%2520`).
fn normalized_path_of(uri: &Uri) -> String {
    let raw = uri.path();
    let mut stack: Vec<&str> = Vec::new();
    for segment in raw.split('/') {
        if segment == ".." {
            stack.pop();
        } else if !segment.is_empty() && segment != "." {
            stack.push(segment);
        }
    }
    let mut path = format!("/{}", stack.join("/"));
    if raw.ends_with('/') && path != "/" {
        path.push('/');
    }
    const KEEP_SLASH: &AsciiSet = &KEEP.remove(b'/');
    percent_encode(path.as_bytes(), KEEP_SLASH).collect()
}

/// The query as received: pairs decoded as RFC 3986 does (`+` stays a plus), encoded,
/// sorted by key then value.
fn query_of(uri: &Uri) -> String {
    let mut pairs: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k: Vec<u8> = percent_decode_str(k).collect();
            let v: Vec<u8> = percent_decode_str(v).collect();
            (enc(&k), enc(&v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .ok_or_else(|| format!("missing header {name}"))?
        .to_str()
        .map_err(|_| format!("header {name} is not text"))
}

fn fresh(at: i64, now_s: i64, max_skew_s: i64) -> Result<(), String> {
    // `abs_diff`: a crafted timestamp (i64::MIN) cannot overflow.
    if now_s.abs_diff(at) > max_skew_s.unsigned_abs() {
        return Err(format!(
            "timestamp {at} is {}s away from now ({now_s}); at most {max_skew_s}s allowed",
            now_s.abs_diff(at)
        ));
    }
    Ok(())
}

/// Checks `req` against `check` at `now_s` (Unix seconds).
pub fn verify(check: &SignatureCheck, req: &Received<'_>, now_s: i64) -> Result<(), String> {
    match check {
        SignatureCheck::Hmac {
            secret,
            algorithm,
            encoding,
            signature_header,
            timestamp_header,
            key_id,
            key_id_header,
            max_skew_s,
        } => {
            let timestamp = header(req.headers, timestamp_header)?;
            let at: i64 = timestamp
                .parse()
                .map_err(|_| format!("{timestamp_header} is not Unix seconds"))?;
            fresh(at, now_s, *max_skew_s)?;
            if let Some(id) = key_id
                && header(req.headers, key_id_header)? != id
            {
                return Err(format!("unknown key id in {key_id_header}"));
            }
            let sha512 = algorithm == "sha512";
            let body_hash = if sha512 {
                to_hex(&Sha512::digest(req.body))
            } else {
                sha256_hex(req.body)
            };
            let canonical = format!(
                "{}\n{}\n{}\n{body_hash}\n{timestamp}",
                req.method,
                path_of(req.uri),
                query_of(req.uri)
            );
            let mac = if sha512 {
                hmac512(secret.as_bytes(), canonical.as_bytes())
            } else {
                hmac256(secret.as_bytes(), canonical.as_bytes())
            };
            let expected = if encoding == "base64" {
                base64::engine::general_purpose::STANDARD.encode(mac)
            } else {
                to_hex(&mac)
            };
            if header(req.headers, signature_header)? != expected {
                return Err(format!(
                    "{signature_header} does not match the canonical request"
                ));
            }
            Ok(())
        }
        SignatureCheck::AwsSigv4 {
            access_key_id,
            secret_access_key,
            session_token,
            region,
            service,
            max_skew_s,
        } => verify_sigv4(
            req,
            &AwsKey {
                access_key_id,
                secret_access_key,
                session_token: session_token.as_deref(),
                region,
                service,
                single_encoded_path: false,
            },
            now_s,
            *max_skew_s,
        ),
    }
}

/// A SigV4 key, as the partner knows it.
#[derive(Debug)]
pub struct AwsKey<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
    /// Reads the path as S3 does (encoded once, not normalized) whatever the service: the
    /// suite's raw request lines (`GET /ሴ`) cannot be sent as they are.
    pub single_encoded_path: bool,
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds.
fn amz_seconds(text: &str) -> Option<i64> {
    let ts = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", text).ok()?;
    Some(
        ts.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_second(),
    )
}

/// Checks an `Authorization: AWS4-HMAC-SHA256 ...` request.
pub fn verify_sigv4(
    req: &Received<'_>,
    key: &AwsKey<'_>,
    now_s: i64,
    max_skew_s: i64,
) -> Result<(), String> {
    let authorization = header(req.headers, "authorization")?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("authorization is not AWS4-HMAC-SHA256")?;
    let mut fields = BTreeMap::new();
    for part in rest.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or("malformed authorization")?;
        fields.insert(name, value);
    }
    let field = |name: &str| {
        fields
            .get(name)
            .copied()
            .ok_or(format!("authorization has no {name}"))
    };
    let credential = field("Credential")?;
    let signed_headers = field("SignedHeaders")?;
    let signature = field("Signature")?;
    let mut scope_parts = credential.splitn(2, '/');
    let id = scope_parts.next().unwrap_or_default();
    let scope = scope_parts.next().unwrap_or_default();
    if id != key.access_key_id {
        return Err("unknown access key id".into());
    }
    let amz_date = header(req.headers, "x-amz-date")?;
    let at = amz_seconds(amz_date).ok_or("x-amz-date is not YYYYMMDDTHHMMSSZ")?;
    fresh(at, now_s, max_skew_s)?;
    let date = &amz_date[..8.min(amz_date.len())];
    if scope != format!("{date}/{}/{}/aws4_request", key.region, key.service) {
        return Err(format!("credential scope `{scope}` is not this partner's"));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    for needed in ["host", "x-amz-date"] {
        if !names.contains(&needed) {
            return Err(format!("{needed} is not signed"));
        }
    }
    if let Some(token) = key.session_token
        && (!names.contains(&"x-amz-security-token")
            || header(req.headers, "x-amz-security-token")? != token)
    {
        return Err("the session token is missing, unsigned or wrong".into());
    }
    let payload_hash = match req.headers.get("x-amz-content-sha256") {
        Some(v) => {
            let claimed = v.to_str().map_err(|_| "x-amz-content-sha256 is not text")?;
            if claimed != "UNSIGNED-PAYLOAD" && claimed != sha256_hex(req.body) {
                return Err("x-amz-content-sha256 is not the body's hash".into());
            }
            claimed.to_owned()
        }
        None => sha256_hex(req.body),
    };
    let mut canonical_headers = String::new();
    for name in &names {
        if *name == "host"
            && req.headers.get("host").is_none()
            && let Some(authority) = req.uri.authority()
        {
            // HTTP/2 carries the host as the `:authority` pseudo-header.
            canonical_headers.push_str(&format!("host:{authority}\n"));
            continue;
        }
        let values: Vec<String> = req
            .headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {name} is missing"));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let s3_like = ["s3", "s3-object-lambda", "s3-outposts", "s3express"]
        .contains(&key.service.to_ascii_lowercase().as_str());
    let path = if s3_like || key.single_encoded_path {
        path_of(req.uri)
    } else {
        normalized_path_of(req.uri)
    };
    let canonical_request = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        req.method,
        query_of(req.uri)
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut signing_key = hmac256(
        format!("AWS4{}", key.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [key.region, key.service, "aws4_request"] {
        signing_key = hmac256(&signing_key, part.as_bytes());
    }
    if to_hex(&hmac256(&signing_key, string_to_sign.as_bytes())) != signature {
        return Err("the signature does not match the canonical request".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
