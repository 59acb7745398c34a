//! Request validation agrees with the OpenAPI document: what its schemas accept is
//! accepted (an integer may be written `62.0`), what they refuse is refused with the
//! pointer or parameter at fault (`"region": null` is not a string).

use mallgate_testkit as support;

use serde_json::json;
use support::Mall;

fn rates(weight: serde_json::Value, region: serde_json::Value) -> serde_json::Value {
    json!({
        "from": {"postal_code": "10001", "country": "US", "region": region},
        "to": {"postal_code": "94103", "country": "US"},
        "parcels": [{"weight_g": weight}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integral_numbers_are_integers_and_null_is_not_a_string() {
    let mall = Mall::start().await;
    let ok = mall
        .post_json("/v1/shipping/rates", &rates(json!(1200.0), json!("NY")))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let null = mall
        .post_json("/v1/shipping/rates", &rates(json!(1200), json!(null)))
        .await;
    assert_eq!(null.status, 400, "{}", null.body);
    assert_eq!(null.body["pointer"], "/from/region", "{}", null.body);
    let fraction = mall
        .post_json("/v1/shipping/rates", &rates(json!(1200.5), json!("NY")))
        .await;
    assert_eq!(fraction.status, 400, "{}", fraction.body);
    assert_eq!(
        fraction.body["pointer"], "/parcels/0/weight_g",
        "{}",
        fraction.body
    );

    let page = mall.get("/v1/products?q=speaker&limit=5.0").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body["data"].as_array().is_some_and(|d| d.len() <= 5));
    let bad = mall.get("/v1/products?q=speaker&limit=5.5").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["param"], "limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_zero_gtin_is_refused_not_fanned_out() {
    let mall = Mall::start().await;
    let by_id = mall.get("/v1/products/gtin:00000000000000").await;
    assert_eq!(by_id.status, 400, "{}", by_id.body);
    assert_eq!(by_id.body["param"], "product_id", "{}", by_id.body);
    let filter = mall.get("/v1/products?gtin=000000000000").await;
    assert_eq!(filter.status, 400, "{}", filter.body);
    assert_eq!(filter.body["param"], "gtin", "{}", filter.body);
    // A real GTIN with the same shape is still a GTIN.
    let real = mall.get("/v1/products/gtin:00036000291452").await;
    assert_ne!(real.status, 400, "{}", real.body);
}
