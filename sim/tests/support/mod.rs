//! Shared by the dialect tests: a fleet on loopback, an HTTP client, the control API.

#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::Duration;

use mallgate_partner_sim::{Fleet, FleetConfig, Partner};
use serde_json::Value;

/// A fresh fleet (two replicas per partner) with its clock frozen at `now_s`.
pub(crate) async fn fleet_at(now_s: i64) -> Arc<Fleet> {
    let fleet = Fleet::start(FleetConfig {
        seed: 7,
        replicas: 2,
        ..FleetConfig::default()
    })
    .await
    .expect("fleet starts");
    fleet.clock().freeze(now_s);
    fleet
}

/// 2026-11-27T14:00:00Z, Black Friday.
pub(crate) const BLACK_FRIDAY: i64 = 1_795_788_000;

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub(crate) fn base(fleet: &Fleet, partner: Partner) -> String {
    fleet.url(partner, 0).expect("replica 0")
}

/// `PUT` to the control API; the answer's JSON.
pub(crate) async fn control_put(fleet: &Fleet, path: &str, body: Value) -> Value {
    let r = client()
        .put(format!("http://{}{path}", fleet.control_addr()))
        .json(&body)
        .send()
        .await
        .expect("control");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("json")
}

/// Turns replica `n`'s drift knob on.
pub(crate) async fn drift(fleet: &Fleet, partner: Partner, n: usize) {
    control_put(
        fleet,
        &format!("/__sim/partners/{}/replicas/{n}/faults", partner.id()),
        serde_json::json!({"drift": true}),
    )
    .await;
}

/// Local wall time of an instant in a zone.
pub(crate) fn local(zone: &str, unix_s: i64) -> jiff::civil::DateTime {
    jiff::Timestamp::from_second(unix_s)
        .expect("instant")
        .to_zoned(jiff::tz::TimeZone::get(zone).expect("zone"))
        .datetime()
}

/// The text of every `<name>` element, in order (tests read small, known documents).
pub(crate) fn xml_texts(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let end = after.find(&close).expect("closed");
        out.push(after[..end].to_owned());
        rest = &after[end..];
    }
    out
}
