//! Shipping across lanes and currencies, the real gateway and the simulated carriers:
//! ParcelPost (a national post) declares the domestic US lane only and is never asked for
//! an international quote; SwiftShip bills a shipper in its own country's currency, so one
//! answer can hold rates in two currencies — then `cheapest` and `fastest` are defined
//! within one currency (the `currency` parameter, or the one most rates are in), and each
//! tag is on exactly one rate.

use mallgate_testkit as support;

use std::collections::BTreeSet;

use mallgate_partner_sim::Partner;
use serde_json::{Value, json};
use support::Mall;

fn shipment(from: (&str, &str), to: (&str, &str)) -> Value {
    json!({
        "from": {"postal_code": from.0, "country": from.1},
        "to": {"postal_code": to.0, "country": to.1},
        "parcels": [{"weight_g": 1200}, {"weight_g": 300}],
    })
}

fn carriers(answer: &Value) -> BTreeSet<String> {
    answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["carrier"].as_str().expect("carrier").to_owned())
        .collect()
}

fn tagged<'a>(answer: &'a Value, tag: &str) -> Vec<&'a Value> {
    answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|r| {
            r["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!(tag)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domestic_carrier_is_not_asked_for_an_international_quote() {
    let mall = Mall::start().await;
    let domestic = mall
        .post_json(
            "/v1/shipping/rates",
            &shipment(("10001", "US"), ("94103", "US")),
        )
        .await;
    assert_eq!(domestic.status, 200, "{}", domestic.body);
    assert_eq!(
        carriers(&domestic.body),
        BTreeSet::from(["parcelpost".to_owned(), "swiftship".to_owned()])
    );
    let asked = mall.requests(Partner::ParcelPost, "ShippingAPI.dll");
    assert!(asked > 0, "ParcelPost quoted the domestic lane");

    let abroad = mall
        .post_json(
            "/v1/shipping/rates",
            &shipment(("10001", "US"), ("10115", "DE")),
        )
        .await;
    assert_eq!(abroad.status, 200, "{}", abroad.body);
    assert_eq!(
        carriers(&abroad.body),
        BTreeSet::from(["swiftship".to_owned()])
    );
    let partners: Vec<&str> = abroad.body["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["partner"].as_str())
        .collect();
    assert_eq!(partners, ["swiftship"], "ParcelPost is not a source at all");
    assert_eq!(
        mall.requests(Partner::ParcelPost, "ShippingAPI.dll"),
        asked,
        "ParcelPost got no request for the international lane"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_no_carrier_serves_is_an_empty_answer() {
    // SwiftShip ships from the US only, ParcelPost within it: nobody ships from Germany.
    let mall = Mall::start_with(|partner, text| match partner {
        Partner::SwiftShip => text.replacen(
            "codes: [swiftship, swift]\n",
            "codes: [swiftship, swift]\nlanes: [{from: [US]}]\n",
            1,
        ),
        _ => text,
    })
    .await;
    let a = mall
        .post_json(
            "/v1/shipping/rates",
            &shipment(("10115", "DE"), ("10001", "US")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["data"], json!([]), "{}", a.body);
    assert_eq!(a.body["sources"], json!([]), "{}", a.body);
    assert_eq!(mall.requests(Partner::SwiftShip, "Shop"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_in_two_currencies_are_tagged_within_one() {
    // ParcelPost quotes every lane here (in USD); SwiftShip bills a German shipper in EUR.
    let mall = Mall::start_with(|partner, text| match partner {
        Partner::ParcelPost => text.replacen("  - {from: [US], to: [US]}\n", "  - {to: [US]}\n", 1),
        _ => text,
    })
    .await;
    let body = shipment(("10115", "DE"), ("10001", "US"));
    for (query, currency) in [("?currency=EUR", "EUR"), ("?currency=USD", "USD"), ("", "")] {
        let a = mall
            .post_json(&format!("/v1/shipping/rates{query}"), &body)
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let rates = a.body["data"].as_array().expect("data");
        let currencies: Vec<&str> = rates
            .iter()
            .map(|r| r["total"]["currency"].as_str().expect("currency"))
            .collect();
        let distinct: BTreeSet<&str> = currencies.iter().copied().collect();
        assert_eq!(distinct, BTreeSet::from(["EUR", "USD"]), "{}", a.body);
        // Without `currency`: the one most rates are quoted in.
        let answer = if currency.is_empty() {
            let count = |c: &str| currencies.iter().filter(|x| **x == c).count();
            if count("USD") > count("EUR") {
                "USD"
            } else {
                "EUR"
            }
        } else {
            currency
        };
        // The answer currency's rates first, sorted by total.
        let split = currencies.iter().position(|c| *c != answer).expect("both");
        assert!(
            currencies[..split].iter().all(|c| *c == answer),
            "{currencies:?}"
        );
        assert!(
            currencies[split..].iter().all(|c| *c != answer),
            "{currencies:?}"
        );
        let totals: Vec<i64> = rates[..split]
            .iter()
            .map(|r| r["total"]["amount_minor"].as_i64().expect("total"))
            .collect();
        assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
        // Exactly one cheapest and one fastest, both in the answer currency.
        let cheapest = tagged(&a.body, "cheapest");
        let fastest = tagged(&a.body, "fastest");
        assert_eq!((cheapest.len(), fastest.len()), (1, 1), "{}", a.body);
        assert_eq!(cheapest[0], &rates[0]);
        assert_eq!(fastest[0]["total"]["currency"], answer);
        let quickest = rates[..split]
            .iter()
            .filter_map(|r| r["transit_days"]["max"].as_u64())
            .min();
        assert_eq!(fastest[0]["transit_days"]["max"].as_u64(), quickest);
    }
    let bad = mall
        .post_json("/v1/shipping/rates?currency=euro", &body)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body["detail"].to_string().contains("currency"),
        "{}",
        bad.body
    );
}
