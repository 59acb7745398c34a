//! Voltmart's dialect over real HTTP against the world's truth, and every fault knob,
//! replica stop/start, counters and the clock through the control API.

use std::sync::Arc;
use std::time::Duration;

use mallgate_partner_sim::partners::voltmart::API_KEY;
use mallgate_partner_sim::{Faults, Fleet, FleetConfig, Partner};
use serde_json::{Value, json};

async fn fleet() -> Arc<Fleet> {
    Fleet::start(FleetConfig {
        seed: 7,
        replicas: 2,
        ..FleetConfig::default()
    })
    .await
    .expect("fleet starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn get_json(url: &str) -> Value {
    let r = client().get(url).send().await.expect("request");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("json")
}

async fn set_faults(fleet: &Fleet, replica: usize, faults: Faults) {
    let url = format!(
        "http://{}/__sim/partners/voltmart/replicas/{replica}/faults",
        fleet.control_addr()
    );
    let r = client()
        .put(url)
        .json(&faults)
        .send()
        .await
        .expect("control");
    assert!(r.status().is_success());
}

#[tokio::test]
async fn search_pages_render_the_truth() {
    let fleet = fleet().await;
    let base = fleet.url(Partner::Voltmart, 0).expect("voltmart");
    let truth: Vec<_> = fleet
        .world()
        .listed_by(Partner::Voltmart)
        .filter(|(p, _)| p.title.to_lowercase().contains("soundbar"))
        .collect();
    assert!(truth.len() > 100, "a multi-page search: {}", truth.len());
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let body = get_json(&format!("{base}/v1/products?apiKey={API_KEY}&format=json&search=Soundbar&pageSize=100&page={page}")).await;
        assert_eq!(body["queryTime"], "0.005", "queryTime is a string");
        assert_eq!(body["partial"], false);
        assert_eq!(body["total"], truth.len());
        seen.extend(
            body["products"]
                .as_array()
                .expect("products")
                .iter()
                .cloned(),
        );
        if body["currentPage"] == body["totalPages"] {
            break;
        }
        page += 1;
    }
    assert_eq!(seen.len(), truth.len());
    for (item, (product, listing)) in seen.iter().zip(&truth) {
        assert_eq!(
            item["sku"],
            json!(listing.native_id.parse::<u64>().expect("integer sku"))
        );
        assert_eq!(item["name"], product.title);
        let v = &product.variants[0];
        assert_eq!(
            item["upc"].as_str(),
            v.upc.as_deref().or(v.bad_code.as_deref())
        );
        // Prices are JSON numbers in dollars; their text is exact.
        assert_eq!(item["salePrice"], json!(listing.price_cents as f64 / 100.0));
        assert_eq!(item["categoryPath"][1]["name"], product.category[1]);
    }
}

#[tokio::test]
async fn xml_by_default_json_on_request_and_the_key_is_checked() {
    let fleet = fleet().await;
    let base = fleet.url(Partner::Voltmart, 0).expect("voltmart");
    let r = client()
        .get(format!("{base}/v1/products?apiKey={API_KEY}&pageSize=3"))
        .send()
        .await
        .expect("xml");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/xml")
    );
    let xml = r.text().await.expect("text");
    assert!(
        xml.starts_with("<?xml") && xml.matches("<product>").count() == 3,
        "{xml}"
    );
    assert!(!xml.contains(" & "), "text is XML-escaped: {xml}");
    let r = client()
        .get(format!("{base}/v1/products?apiKey=wrong&format=json"))
        .send()
        .await
        .expect("denied");
    assert_eq!(r.status(), 403);
    let r = client()
        .get(format!(
            "{base}/v1/products?apiKey={API_KEY}&format=json&pageSize=101"
        ))
        .send()
        .await
        .expect("bad");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn products_stores_and_availability() {
    let fleet = fleet().await;
    let base = fleet.url(Partner::Voltmart, 1).expect("second replica");
    fleet.clock().freeze(1_795_433_880);
    let (product, listing) = fleet
        .world()
        .listed_by(Partner::Voltmart)
        .nth(3)
        .expect("a product");
    let one = get_json(&format!(
        "{base}/v1/products/{}?apiKey={API_KEY}&format=json",
        listing.native_id
    ))
    .await;
    assert_eq!(one["products"][0]["name"], product.title);
    let none = get_json(&format!(
        "{base}/v1/products/1?apiKey={API_KEY}&format=json"
    ))
    .await;
    assert_eq!(
        none["products"],
        json!([]),
        "an unknown sku is an empty list in a 200"
    );

    let stores = get_json(&format!("{base}/v1/stores?apiKey={API_KEY}&format=json")).await;
    let first = &stores["stores"][0];
    assert!(
        first["storeId"].is_u64(),
        "storeId is an integer in the store list"
    );
    assert!(first["timeZone"].as_str().is_some_and(|z| z.contains('/')));

    let avail = get_json(&format!(
        "{base}/v1/products/{}/stores?apiKey={API_KEY}",
        listing.native_id
    ))
    .await;
    let now = fleet.clock().now_s();
    let expected: Vec<(String, bool)> = fleet
        .world()
        .locations_of(Partner::Voltmart)
        .filter_map(|l| {
            let n = fleet.world().stock(l, product.index, 0, now);
            (n > 0).then(|| (l.native_id.to_string(), n < 4))
        })
        .collect();
    let got: Vec<(String, bool)> = avail["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|s| {
            (
                s["storeID"]
                    .as_str()
                    .expect("storeID is a string")
                    .to_owned(),
                s["lowStock"].as_bool().expect("lowStock"),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        avail["stores"][0].get("quantity").is_none(),
        "no quantities"
    );
}

#[tokio::test]
async fn every_fault_knob() {
    let fleet = fleet().await;
    let base = fleet.url(Partner::Voltmart, 0).expect("voltmart");
    let url = format!("{base}/v1/products?apiKey={API_KEY}&format=json&pageSize=50");

    set_faults(
        &fleet,
        0,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    assert_eq!(client().get(&url).send().await.expect("500").status(), 500);

    set_faults(
        &fleet,
        0,
        Faults {
            rate_limit_rate: 1.0,
            retry_after_s: 7,
            ..Faults::default()
        },
    )
    .await;
    let r = client().get(&url).send().await.expect("429");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    set_faults(
        &fleet,
        0,
        Faults {
            reset_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let reset = match client().get(&url).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(reset, "a reset connection gives the client an error");

    set_faults(
        &fleet,
        0,
        Faults {
            truncate_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let r = client().get(&url).send().await.expect("headers arrive");
    assert!(r.bytes().await.is_err(), "a truncated body is an error");

    set_faults(
        &fleet,
        0,
        Faults {
            garbage_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let r = client().get(&url).send().await.expect("garbage");
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.expect("bytes")).is_err());

    set_faults(
        &fleet,
        0,
        Faults {
            drift: true,
            ..Faults::default()
        },
    )
    .await;
    let body = get_json(&url).await;
    assert!(
        body["products"][0].get("sale_price").is_some()
            && body["products"][0].get("salePrice").is_none()
    );

    set_faults(
        &fleet,
        0,
        Faults {
            drip_ms: 1,
            latency_ms: 5,
            jitter_ms: 5,
            ..Faults::default()
        },
    )
    .await;
    let body = get_json(&url).await;
    assert_eq!(
        body["products"].as_array().map(Vec::len),
        Some(50),
        "a dripped body arrives whole"
    );

    set_faults(
        &fleet,
        0,
        Faults {
            hang: true,
            ..Faults::default()
        },
    )
    .await;
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let err = short.get(&url).send().await.expect_err("hangs");
    assert!(err.is_timeout(), "{err}");

    // Knobs are per replica: the other one is healthy.
    let other = fleet.url(Partner::Voltmart, 1).expect("replica 1");
    get_json(&format!("{other}/v1/products?apiKey={API_KEY}&format=json")).await;
    set_faults(&fleet, 0, Faults::default()).await;
    get_json(&url).await;
}

#[tokio::test]
async fn replicas_stop_and_start_and_requests_are_counted() {
    let fleet = fleet().await;
    let base = fleet.url(Partner::Voltmart, 0).expect("voltmart");
    let url = format!("{base}/v1/products/6000000?apiKey={API_KEY}&format=json");
    get_json(&url).await;
    get_json(&format!(
        "{base}/v1/products/6000003?apiKey={API_KEY}&format=json"
    ))
    .await;

    let control = format!(
        "http://{}/__sim/partners/voltmart/replicas/0",
        fleet.control_addr()
    );
    let counters = get_json(&format!("{control}/counters")).await;
    assert_eq!(counters["GET /v1/products/{sku}"], 2);
    assert_eq!(counters["path:GET /v1/products/6000000"], 1);

    let r = client()
        .post(format!("{control}/stop"))
        .send()
        .await
        .expect("stop");
    assert!(r.status().is_success());
    let err = client().get(&url).send().await.expect_err("stopped");
    assert!(err.is_connect(), "{err}");
    let fleet_view = get_json(&format!("http://{}/__sim/fleet", fleet.control_addr())).await;
    assert_eq!(fleet_view["running"]["voltmart"], json!([false, true]));

    let r = client()
        .post(format!("{control}/start"))
        .send()
        .await
        .expect("start");
    assert!(r.status().is_success());
    get_json(&url).await;
}

#[tokio::test]
async fn the_clock_can_be_frozen_and_advanced() {
    let fleet = fleet().await;
    let control = format!("http://{}/__sim/clock", fleet.control_addr());
    let r: Value = client()
        .put(&control)
        .json(&json!({"freeze_at_s": 1_795_433_880}))
        .send()
        .await
        .expect("freeze")
        .json()
        .await
        .expect("json");
    assert_eq!(r["now_s"], 1_795_433_880);
    let r: Value = client()
        .put(&control)
        .json(&json!({"advance_s": 600}))
        .send()
        .await
        .expect("advance")
        .json()
        .await
        .expect("json");
    assert_eq!(r["now_s"], 1_795_434_480);
    assert_eq!(fleet.clock().now_s(), 1_795_434_480);
    let r = client()
        .put(&control)
        .json(&json!({"rewind": 1}))
        .send()
        .await
        .expect("bad");
    assert_eq!(r.status(), 422);
}
