//! Helpers of the fleet tests: `mallgate serve` replicas on one real etcd, their admin
//! API, their `/metrics`, and polling without timing assertions.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{OPERATOR_TOKEN, Setup, setup};

/// A replica's config: the process's own, with the fleet's store at `etcd` (an endpoint:
/// the member's, or a [`crate::proxy::FaultProxy`] in front of it) under `prefix`.
pub fn replica(connectors: &Path, etcd: &str, prefix: &str, id: &str) -> Setup {
    let setup = setup(connectors, json!({"drain_delay_s": 0}));
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let mut config: Value = serde_json::from_str(&text).expect("json");
    config["store"] = json!({
        "kind": "etcd",
        "endpoints": [etcd],
        "prefix": prefix,
        "lease_ttl_s": 2,
        "timeout_ms": 600,
        "replica_id": id,
    });
    std::fs::write(&setup.config, config.to_string()).expect("config");
    setup
}

/// Changes `setup`'s config (before the process starts).
pub fn edit_config(setup: &Setup, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let mut config: Value = serde_json::from_str(&text).expect("json");
    edit(&mut config);
    std::fs::write(&setup.config, config.to_string()).expect("config");
}

/// One admin call with the operator token: status, ETag, JSON body (`null` when none).
pub async fn admin(
    http: &reqwest::Client,
    setup: &Setup,
    method: reqwest::Method,
    path: &str,
    if_match: Option<&str>,
    body: Option<String>,
) -> (u16, Option<String>, Value) {
    let mut req = http
        .request(method, format!("http://{}{path}", setup.admin))
        .bearer_auth(OPERATOR_TOKEN);
    if let Some(m) = if_match {
        req = req.header("if-match", m);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let res = req.send().await.expect("the admin listener answers");
    let status = res.status().as_u16();
    let etag = res
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, etag, res.json().await.unwrap_or(Value::Null))
}

/// `GET /admin/v1/fleet`'s replicas, sorted by id.
pub async fn records(http: &reqwest::Client, setup: &Setup) -> Vec<Value> {
    let (status, _, body) = admin(
        http,
        setup,
        reqwest::Method::GET,
        "/admin/v1/fleet",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["replicas"].as_array().cloned().unwrap_or_default()
}

/// `setup`'s `/metrics` text.
pub async fn metrics(http: &reqwest::Client, setup: &Setup) -> String {
    http.get(format!("http://{}/metrics", setup.admin))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The sum of the series of `name` whose labels include every `label="value"` of `with`.
pub fn metric(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split_once('{').map_or(*series, |(n, _)| n) == name
                && with
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Polls `check` every 100 ms, at most 60 s; no timing is asserted.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
