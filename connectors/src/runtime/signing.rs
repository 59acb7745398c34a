//! Request signing: `auth: {kind: hmac}` and `auth: {kind: aws_sigv4}`. A signature is
//! computed per attempt, over the request exactly as it goes to the endpoint the attempt
//! chose (its host, path, query and body) with a fresh timestamp, so a retry or a hedge to
//! another endpoint is signed for that endpoint.
//!
//! Canonical forms:
//! - the **query** (both): every pair decoded as RFC 3986 reads it (a `+` is a plus, not a
//!   space), key and value encoded with the unreserved characters (`A-Z a-z 0-9 - . _ ~`)
//!   kept and everything else `%XX`, sorted by encoded key then value, joined with `&`.
//!   A templated request is *sent* with exactly this query, so what is signed is what goes
//!   on the wire; a partner's next-page link is sent as given and signed as read;
//! - the **path**: for `hmac` and for SigV4 to S3, each `/`-separated segment decoded and
//!   encoded as above (nothing normalized); for SigV4 to every other service, as AWS
//!   states it, the path normalized (empty, `.` and `..` segments resolved) and the path
//!   *as sent* encoded once more, so `/a%20b` is signed as `/a%2520b`;
//! - the **body**: its hash (SHA-256, or SHA-512 for `algorithm: sha512`), lower-case hex.
//!
//! `hmac` signs `METHOD \n path \n query \n body-hash \n timestamp` (Unix seconds) with the
//! secret and sends the signature (hex or base64), the timestamp and the key id in the
//! configured headers. `aws_sigv4` is AWS Signature Version 4 as its published test suite
//! states it, signing `host`, `x-amz-date`, `x-amz-content-sha256`, `content-type` (when
//! there is a body), `x-amz-security-token` (with temporary credentials) and every header
//! the capability sets, so nothing the partner reads is unsigned.

use std::fmt::Write as _;

use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use percent_encoding::{
    AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode, utf8_percent_encode,
};
use sha2::{Digest, Sha256, Sha512};
use url::Url;

use super::secrets::Secret;
use crate::spec::{HmacAlgorithm, SignatureEncoding};

/// RFC 3986 unreserved characters stay; everything else is `%XX` (upper case).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The unreserved characters and `/`: a path encoded once more keeps its separators.
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, UNRESERVED).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// How SigV4 canonicalizes a path: S3 signs the object key as it is, encoded once; every
/// other AWS service normalizes the path and encodes the path as sent a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    Normalized,
    S3,
}

impl PathStyle {
    /// S3 and its relatives (Object Lambda, Outposts, Express) take the S3 style.
    pub fn of_service(service: &str) -> Self {
        let service = service.to_ascii_lowercase();
        if ["s3", "s3-object-lambda", "s3-outposts", "s3express"].contains(&service.as_str()) {
            Self::S3
        } else {
            Self::Normalized
        }
    }
}

/// The canonical path of a path as sent (percent-encoded), in `style`.
pub fn canonical_path(path: &str, style: PathStyle) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    match style {
        PathStyle::S3 => path
            .split('/')
            .map(|segment| encode(&percent_decode_str(segment).collect::<Vec<u8>>()))
            .collect::<Vec<_>>()
            .join("/"),
        PathStyle::Normalized => {
            utf8_percent_encode(&normalize_path(path), UNRESERVED_AND_SLASH).to_string()
        }
    }
}

/// `path` with empty and `.` segments dropped and `..` resolved (never above the root); a
/// trailing `/` stays.
fn normalize_path(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    let mut out = format!("/{}", kept.join("/"));
    if path.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The pairs of a query as sent, decoded as RFC 3986 reads them (`+` is a plus).
pub fn query_pairs(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode_str(key).collect(),
                percent_decode_str(value).collect(),
            )
        })
        .collect()
}

/// The canonical query of decoded pairs.
pub fn canonical_query<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (encode(k.as_ref()), encode(v.as_ref())))
        .collect();
    encoded.sort();
    encoded
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn decoded_pairs(url: &Url) -> Vec<(Vec<u8>, Vec<u8>)> {
    query_pairs(url.query().unwrap_or_default())
}

/// An HMAC of `data` under `key`.
fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("an HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    mac::<Hmac<Sha256>>(key, data)
}

/// The generic HMAC signer's canonical request.
pub fn hmac_canonical(
    method: &str,
    url: &Url,
    body: &[u8],
    algorithm: HmacAlgorithm,
    timestamp: i64,
) -> String {
    let body_hash = match algorithm {
        HmacAlgorithm::Sha256 => hex(&Sha256::digest(body)),
        HmacAlgorithm::Sha512 => hex(&Sha512::digest(body)),
    };
    format!(
        "{method}\n{}\n{}\n{body_hash}\n{timestamp}",
        canonical_path(url.path(), PathStyle::S3),
        canonical_query(decoded_pairs(url))
    )
}

/// What SigV4 signs a request with.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub region: String,
    pub service: String,
    /// How `service` canonicalizes paths, worked out once when the credentials are built.
    pub path_style: PathStyle,
}

/// One request as SigV4 sees it. `headers` are the headers to sign besides `host` and
/// `x-amz-date` (which it adds), as (name, value) in any case and order.
#[derive(Debug)]
pub struct AwsRequest<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// The path, percent-encoded as the request line carries it.
    pub path: &'a str,
    pub path_style: PathStyle,
    /// Decoded query pairs.
    pub query: &'a [(Vec<u8>, Vec<u8>)],
    pub headers: &'a [(String, String)],
    /// Lower-case hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`).
    pub payload_hash: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

/// A SigV4 signature's parts, for the headers and for tests against the suite.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsSignature {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    pub authorization: String,
}

/// Header values as SigV4 canonicalizes them: trimmed, runs of spaces squeezed.
fn squeeze(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl std::fmt::Debug for AwsSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The canonical request carries a session token and every signed header value.
        f.debug_struct("AwsSignature")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// Signs `request` with `creds` (AWS Signature Version 4).
pub fn sigv4(request: &AwsRequest<'_>, creds: &AwsCredentials) -> AwsSignature {
    let mut headers: Vec<(String, String)> = vec![
        ("host".to_owned(), request.host.to_owned()),
        ("x-amz-date".to_owned(), request.amz_date.to_owned()),
    ];
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".to_owned(), token.expose().to_owned()));
    }
    headers.extend(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), squeeze(v))),
    );
    // Stable: repeated headers keep their order, joined by commas.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical_headers = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &headers {
        if names.last() == Some(&name.as_str()) {
            canonical_headers.pop();
            let _ = writeln!(canonical_headers, ",{value}");
        } else {
            let _ = writeln!(canonical_headers, "{name}:{value}");
            names.push(name);
        }
    }
    let signed_headers = names.join(";");
    let query = canonical_query(request.query.iter().map(|(k, v)| (k, v)));
    let canonical_request = format!(
        "{}\n{}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        canonical_path(request.path, request.path_style),
        request.payload_hash
    );
    let date = &request.amz_date[..request.amz_date.len().min(8)];
    let scope = format!("{date}/{}/{}/aws4_request", creds.region, creds.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        request.amz_date,
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let key = [date, &creds.region, &creds.service, "aws4_request"]
        .iter()
        .fold(
            format!("AWS4{}", creds.secret_access_key.expose()).into_bytes(),
            |key, part| hmac_sha256(&key, part.as_bytes()),
        );
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id.expose()
    );
    AwsSignature {
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    }
}

/// A connector's signer, with its secrets resolved for one call.
#[derive(Debug, Clone)]
pub enum Signer {
    Hmac {
        key_id: Option<Secret>,
        secret: Secret,
        algorithm: HmacAlgorithm,
        encoding: SignatureEncoding,
        signature_header: String,
        timestamp_header: String,
        key_id_header: String,
    },
    Aws(AwsCredentials),
}

/// The `Host` header a client sends for `url` (the port only when not the default).
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

impl Signer {
    /// The headers that sign a request to `url` with `body` and the capability's own
    /// `headers` (SigV4 signs them too) at `now`.
    pub fn headers(
        &self,
        method: &str,
        url: &Url,
        body: Option<(&[u8], &str)>,
        headers: &[(String, String)],
        now: jiff::Timestamp,
    ) -> Vec<(String, Secret)> {
        let bytes = body.map_or(&[][..], |(b, _)| b);
        match self {
            Self::Hmac {
                key_id,
                secret,
                algorithm,
                encoding,
                signature_header,
                timestamp_header,
                key_id_header,
            } => {
                let timestamp = now.as_second();
                let canonical = hmac_canonical(method, url, bytes, *algorithm, timestamp);
                let mac = match algorithm {
                    HmacAlgorithm::Sha256 => {
                        hmac_sha256(secret.expose().as_bytes(), canonical.as_bytes())
                    }
                    HmacAlgorithm::Sha512 => {
                        mac::<Hmac<Sha512>>(secret.expose().as_bytes(), canonical.as_bytes())
                    }
                };
                let signature = match encoding {
                    SignatureEncoding::Hex => hex(&mac),
                    SignatureEncoding::Base64 => {
                        base64::engine::general_purpose::STANDARD.encode(mac)
                    }
                };
                let mut out = vec![
                    (signature_header.clone(), Secret::new(signature)),
                    (timestamp_header.clone(), Secret::new(timestamp.to_string())),
                ];
                if let Some(id) = key_id {
                    out.push((key_id_header.clone(), id.clone()));
                }
                out
            }
            Self::Aws(creds) => {
                let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
                let payload_hash = hex(&Sha256::digest(bytes));
                let mut signed = vec![("x-amz-content-sha256".to_owned(), payload_hash.clone())];
                if let Some((_, kind)) = body {
                    signed.push(("content-type".to_owned(), kind.to_owned()));
                }
                signed.extend(headers.iter().cloned());
                let host = host_header(url);
                let query = decoded_pairs(url);
                let signature = sigv4(
                    &AwsRequest {
                        method,
                        host: &host,
                        path: url.path(),
                        path_style: creds.path_style,
                        query: &query,
                        headers: &signed,
                        payload_hash: &payload_hash,
                        amz_date: &amz_date,
                    },
                    creds,
                );
                let mut out = vec![
                    (
                        "authorization".to_owned(),
                        Secret::new(signature.authorization),
                    ),
                    ("x-amz-date".to_owned(), Secret::new(amz_date)),
                    ("x-amz-content-sha256".to_owned(), Secret::new(payload_hash)),
                ];
                if let Some(token) = &creds.session_token {
                    out.push(("x-amz-security-token".to_owned(), token.clone()));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests;
