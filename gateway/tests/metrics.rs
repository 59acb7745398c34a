//! `/metrics` as Prometheus scrapes it: the text format `promtool` accepts, counters that
//! move as the simulated partners say they should, and a number of series that thousands of
//! distinct queries, ids and client keys do not grow.

use std::collections::BTreeMap;

use mallgate_testkit as support;

use mallgate_partner_sim::{Faults, Partner};
use support::Mall;

/// A mall whose gateway serves `/metrics` on a listener of its own. Voltmart's hedge is
/// off, so every exchange the gateway counts is one the partner counts too (a hedge that
/// loses is cancelled after the partner may have seen it).
async fn mall() -> Mall {
    Mall::start_configured(
        |partner, text| match partner {
            Partner::Voltmart => text.replace("hedge_after_ms: 150", ""),
            _ => text,
        },
        |config| config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr")),
    )
    .await
}

async fn scrape(mall: &Mall) -> String {
    let addr = mall.gateway.metrics_addr.expect("a metrics listener");
    let response = mall
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("the metrics listener answers");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    response.text().await.expect("text")
}

/// Series -> value.
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("`series value`");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The sum of `name`'s series whose labels include every `label="value"` of `with`.
fn sum(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    series(text)
        .into_iter()
        .filter(|(s, _)| {
            s.split_once('{').map_or(s.as_str(), |(n, _)| n) == name
                && with
                    .iter()
                    .all(|(k, v)| s.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

/// `promtool check metrics` (Debian's `prometheus` package; `.ci/run` installs it).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_parses_and_counts_what_the_partners_saw() {
    let mall = mall().await;
    let a = mall.get("/v1/products?q=headphones&limit=5").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.outcome("voltmart"), Some("live"));
    let b = mall.get("/v1/products?q=headphones&limit=5").await;
    assert_eq!(b.status, 200);
    let text = scrape(&mall).await;
    promtool_accepts(&text);

    // Each source of the first answer was one live call; the second came from the window.
    for source in a.body["sources"].as_array().expect("sources") {
        let partner = source["partner"].as_str().expect("partner");
        let outcome = source["outcome"].as_str().expect("outcome");
        let calls = sum(
            &text,
            "mallgate_source_calls_total",
            &[("partner", partner), ("outcome", outcome)],
        );
        assert_eq!(calls, 1.0, "{partner} {outcome}\n{text}");
    }
    // Every exchange the gateway timed is one Voltmart's replicas served (health probes
    // apart: they are not calls).
    let timed = sum(
        &text,
        "mallgate_partner_exchange_duration_seconds_count",
        &[("partner", "voltmart")],
    );
    // One snapshot of each replica's counters: a health probe between two reads would
    // count on one side only.
    let served: u64 = (0..2)
        .map(|r| {
            let counters = mall
                .fleet
                .replica(Partner::Voltmart, r)
                .expect("replica")
                .state
                .counters();
            counters
                .iter()
                .filter(|(k, _)| {
                    !k.starts_with("path:") && !k.starts_with("version:") && !k.contains("/health")
                })
                .map(|(_, v)| v)
                .sum::<u64>()
        })
        .sum();
    assert!(timed >= 1.0);
    assert_eq!(timed as u64, served, "{text}");
    let requests = sum(
        &text,
        "mallgate_endpoint_requests_total",
        &[("partner", "voltmart")],
    );
    assert_eq!(requests as u64, served);
    // The request figures: two answers on the route, and the gateway/partner split.
    let answered = sum(
        &text,
        "http_server_request_duration_seconds_count",
        &[
            ("listener", "public"),
            ("http_route", "/v1/products"),
            ("http_response_status_class", "2xx"),
        ],
    );
    assert_eq!(answered, 2.0);
    for kind in ["gateway", "partner"] {
        let n = sum(
            &text,
            "mallgate_request_latency_seconds_count",
            &[("http_route", "/v1/products"), ("type", kind)],
        );
        assert_eq!(n, 2.0, "{kind}");
    }
    // Versions and the generation, as the registry has them.
    let snapshot = mall.gateway.api.registry.load();
    assert_eq!(
        sum(&text, "mallgate_registry_generation", &[]),
        snapshot.generation as f64
    );
    assert_eq!(
        sum(
            &text,
            "mallgate_connector_active_version",
            &[("connector", "voltmart")]
        ),
        1.0
    );
    assert_eq!(sum(&text, "mallgate_build_info", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_shows_in_the_endpoint_gauges() {
    let mall = mall().await;
    mall.wait_until_probed().await;
    let down = mall.fleet.url(Partner::Voltmart, 0).expect("replica");
    let endpoint = format!("{}/", down.trim_end_matches('/'));
    let text = scrape(&mall).await;
    let labels = [("partner", "voltmart"), ("endpoint", endpoint.as_str())];
    assert_eq!(
        sum(&text, "mallgate_endpoint_ejected", &labels),
        0.0,
        "{text}"
    );
    assert_eq!(sum(&text, "mallgate_endpoint_available", &labels), 1.0);

    mall.fleet
        .replica(Partner::Voltmart, 0)
        .expect("replica")
        .stop()
        .await;
    let mut out = false;
    for i in 0..40 {
        // Distinct queries: every one is a partner call, failing over to the live replica.
        let a = mall
            .get_owned(format!("/v1/products?q=cable{i}&limit=3"))
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.outcome("voltmart"), Some("live"), "{}", a.body);
        let text = scrape(&mall).await;
        if sum(&text, "mallgate_endpoint_ejected", &labels) == 1.0 {
            out = true;
            assert_eq!(sum(&text, "mallgate_endpoint_available", &labels), 0.0);
            assert!(sum(&text, "mallgate_endpoint_ejections_total", &labels) >= 1.0);
            assert!(sum(&text, "mallgate_endpoint_failures_total", &labels) >= 1.0);
            // The gauge says what the partner report says.
            let health = mall.partner_health("voltmart").await;
            let ejected = health["connectors"][0]["endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .filter(|e| e["ejected"] == true)
                .count();
            assert_eq!(ejected, 1, "{health}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(out, "the stopped replica was ejected within 40 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_dialect_shows_in_the_drop_counter() {
    let mall = mall().await;
    let query = "/v1/products?q=headphones&limit=10";
    let a = mall.get(query).await;
    let voltmart = |body: &serde_json::Value| {
        body["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["partner"] == "voltmart")
            .cloned()
            .expect("a voltmart source")
    };
    let records = voltmart(&a.body)["records"].as_u64().expect("records");
    assert!(records > 0);
    assert_eq!(
        sum(&scrape(&mall).await, "mallgate_records_dropped_total", &[]),
        0.0
    );
    // The same reply, renamed: every record Voltmart sends fails its schema.
    mall.gateway.api.purge();
    mall.faults(
        Partner::Voltmart,
        Faults {
            drift: true,
            ..Faults::default()
        },
    );
    let b = mall.get(query).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_ne!(b.outcome("voltmart"), Some("live"), "{}", voltmart(&b.body));
    let text = scrape(&mall).await;
    let dropped = sum(
        &text,
        "mallgate_records_dropped_total",
        &[("partner", "voltmart"), ("connector", "voltmart")],
    );
    assert_eq!(dropped as u64, records, "{text}");
    assert_eq!(
        sum(
            &text,
            "mallgate_source_calls_total",
            &[("partner", "voltmart"), ("outcome", "failed")]
        ),
        1.0
    );
}

/// Hundreds of distinct queries, product ids, tracking numbers, paths and client keys:
/// the number of series is what it was after the first of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_queries_ids_and_keys_never_become_series() {
    let mall = mall().await;
    let round = |i: usize| {
        let mall = &mall;
        async move {
            let key = ("x-api-key", format!("client-key-{i:05}"));
            let paths = [
                format!("/v1/products?q=zq{i:05}x&limit=2"),
                format!("/v1/products/voltmart:9{i:06}"),
                format!("/v1/tracking/swiftship/SW{i:010}"),
                format!("/v1/inventory?gtin=0000{i:05}"),
                format!("/v1/nowhere/{i:05}"),
            ];
            for path in paths {
                let response = mall
                    .http
                    .get(format!("{}{path}", mall.gateway.url()))
                    .header(key.0, key.1.as_str())
                    .send()
                    .await
                    .expect("answer");
                assert!(response.status().as_u16() < 500 || response.status() == 503);
            }
        }
    };
    for i in 0..2 {
        round(i).await;
    }
    // A first scrape: `/metrics` is a route too.
    scrape(&mall).await;
    let before = series(&scrape(&mall).await);
    // 104 rounds of five requests each, eight at a time.
    let mut i = 2;
    while i < 106 {
        let batch: Vec<_> = (i..i + 8).map(round).collect();
        futures_util::future::join_all(batch).await;
        i += 8;
    }
    let text = scrape(&mall).await;
    let after = series(&text);
    for needle in ["zq00", "client-key", "SW0000", "nowhere", "voltmart:9"] {
        assert!(!text.contains(needle), "`{needle}` became a label");
    }
    // Every label draws its values from a set that does not grow with the traffic: the
    // routes the requests hit are the five templates they had after two rounds, and each
    // label has at most as many values as its domain (six partners and connectors, twelve
    // replicas, five outcomes, six capabilities...).
    let (before_values, after_values) = (label_values(&before), label_values(&after));
    assert_eq!(before_values["http_route"], after_values["http_route"]);
    assert_eq!(
        before_values["http_request_method"],
        after_values["http_request_method"]
    );
    let domain = [
        ("partner", 6),
        ("connector", 6),
        ("endpoint", 12),
        ("capability", 6),
        ("outcome", 5),
        ("http_response_status_class", 5),
        ("listener", 3),
        ("type", 2),
        ("state", 3),
    ];
    for (label, most) in domain {
        let n = after_values.get(label).map_or(0, |v| v.len());
        assert!(
            n <= most,
            "{label}: {n} values {:?}",
            after_values.get(label)
        );
    }
    assert!(after.len() < 2_000, "{} series", after.len());
    // And the requests were counted, under their route templates.
    let counted = sum(
        &text,
        "http_server_request_duration_seconds_count",
        &[("listener", "public"), ("http_route", "/v1/products")],
    );
    assert_eq!(counted as usize, 106);
}

/// Each label name's values over all series.
fn label_values(
    series: &BTreeMap<String, f64>,
) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut values: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for name in series.keys() {
        let Some((_, labels)) = name.split_once('{') else {
            continue;
        };
        for pair in labels.trim_end_matches('}').split("\",") {
            if let Some((k, v)) = pair.split_once("=\"") {
                values
                    .entry(k.to_owned())
                    .or_default()
                    .insert(v.trim_end_matches('"').to_owned());
            }
        }
    }
    values
}
