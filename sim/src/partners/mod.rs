//! The partners' native dialects, one module each, and the small pieces they share.

pub mod acme;
pub mod northwind;
pub mod parcelpost;
pub mod swiftship;
pub mod threadline;
pub mod voltmart;

use std::collections::BTreeMap;

use axum::Router;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::server::AppState;
use crate::world::Partner;

/// The dialect a partner speaks. Called once per replica, so per-replica dialect state
/// (Threadline's call-limit buckets) is not shared between replicas.
pub fn router(partner: Partner) -> Router<AppState> {
    match partner {
        Partner::Voltmart => voltmart::router(),
        Partner::Threadline => threadline::router(),
        Partner::Acme => acme::router(),
        Partner::Northwind => northwind::router(),
        Partner::ParcelPost => parcelpost::router(),
        Partner::SwiftShip => swiftship::router(),
    }
}

/// The demo credentials each simulated partner accepts, as the binary prints them.
pub fn credentials() -> Value {
    json!({
        "voltmart": {"apiKey": voltmart::API_KEY},
        "threadline": {"access_token": threadline::ACCESS_TOKEN},
        "acme": {"client_id": acme::CLIENT_ID, "client_secret": acme::CLIENT_SECRET},
        "northwind": {"username": northwind::USERNAME, "password": northwind::PASSWORD},
        "parcelpost": {"USERID": parcelpost::USER_ID},
        "swiftship": {"client_id": swiftship::CLIENT_ID, "client_secret": swiftship::CLIENT_SECRET},
    })
}

/// The demo credentials as `(partner, secret name, value)`, under the secret names the
/// example connectors (`connectors/partners/*.yaml`) reference with `secret:NAME`.
pub fn demo_secrets() -> [(&'static str, &'static str, &'static str); 8] {
    [
        ("voltmart", "voltmart-api-key", voltmart::API_KEY),
        (
            "threadline",
            "threadline-access-token",
            threadline::ACCESS_TOKEN,
        ),
        ("acme", "acme-client-id", acme::CLIENT_ID),
        ("acme", "acme-client-secret", acme::CLIENT_SECRET),
        ("northwind", "northwind-password", northwind::PASSWORD),
        ("parcelpost", "parcelpost-user-id", parcelpost::USER_ID),
        ("swiftship", "swiftship-client-id", swiftship::CLIENT_ID),
        (
            "swiftship",
            "swiftship-client-secret",
            swiftship::CLIENT_SECRET,
        ),
    ]
}

/// `Authorization: Basic ...` as (user, password).
pub fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `Authorization: Bearer ...`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// An `application/x-www-form-urlencoded` body.
pub fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// An opaque cursor: `prefix` + hex of `state`.
pub fn cursor(prefix: &str, state: &str) -> String {
    let hex: String = state.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// The state inside a cursor made by [`cursor`], if it is one.
pub fn uncursor(prefix: &str, cursor: &str) -> Option<String> {
    let hex = cursor.strip_prefix(prefix)?;
    if hex.len() % 2 != 0 || hex.len() > 2048 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `unix_s` as local wall time in `zone` (UTC if the zone is unknown).
pub fn zoned(zone: &str, unix_s: i64) -> jiff::Zoned {
    let tz = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
    Timestamp::from_second(unix_s)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(tz)
}

/// RFC 3339 with the zone's offset: `2026-11-27T09:14:03-05:00`.
pub fn rfc3339_in(zone: &str, unix_s: i64) -> String {
    zoned(zone, unix_s)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Decimal text (`"12.5"`, `"3"`) in thousandths, for weights; `None` if it is not one.
pub fn thousandths(text: &str) -> Option<i64> {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 9
    {
        return None;
    }
    let mut value: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    for i in 0..3 {
        value = value * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    // Beyond a thousandth: round up, as a carrier bills.
    if frac.bytes().skip(3).any(|b| b != b'0') {
        value += 1;
    }
    Some(value)
}

/// Cents as `"12.99"`.
pub fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(form(b"a=x%20y+z&b=%2")["a"], "x y z");
        assert_eq!(
            uncursor("p", &cursor("p", "title=x|7")).as_deref(),
            Some("title=x|7")
        );
        assert_eq!(uncursor("p", "pzz"), None);
        assert_eq!(thousandths("2.5"), Some(2500));
        assert_eq!(thousandths("0.0001"), Some(1));
        assert_eq!(thousandths("x"), None);
        assert_eq!(decimal(1299), "12.99");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(
            rfc3339_in("America/New_York", 1_795_875_243),
            "2026-11-28T09:14:03-05:00"
        );
    }
}
