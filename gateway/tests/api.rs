//! The unified API end to end: the simulated fleet, the example connectors from real files,
//! the real gateway on pingora, real HTTP on loopback. Answers are checked against the
//! world's truth and (in the harness) against the OpenAPI document. Outcomes are judged by
//! codes and counters, never by timing.

use mallgate_testkit as support;

use std::collections::{BTreeSet, HashSet};

use mallgate_partner_sim::shipping::unknown_tracking_number;
use mallgate_partner_sim::world::distance_km;
use mallgate_partner_sim::{Faults, Partner};
use serde_json::{Value, json};
use support::Mall;

fn ids(answer: &Value) -> Vec<String> {
    answer["data"]
        .as_array()
        .expect("data is a list")
        .iter()
        .map(|p| p["product_id"].as_str().expect("product_id").to_owned())
        .collect()
}

/// Every offer of a product as (partner, price in cents).
fn offers(product: &Value) -> BTreeSet<(String, i64)> {
    product["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["offers"].as_array().into_iter().flatten())
        .map(|o| {
            (
                o["provenance"]["partner_id"]
                    .as_str()
                    .expect("partner")
                    .to_owned(),
                o["price"]["amount_minor"].as_i64().expect("amount"),
            )
        })
        .collect()
}

fn q(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A product all three retailers sell is one product, keyed by its GTIN, with each
/// retailer's offer at the world's price and with its own provenance; asked again while
/// Voltmart answers last (slowed), ids, order and offers are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_by_gtin_across_three_retailers_whatever_the_answer_order() {
    let mall = Mall::start().await;
    let world = mall.fleet.world();
    let product = world
        .products
        .iter()
        .find(|p| {
            p.listings.len() == 3 && p.variants.len() == 1 && p.variants[0].gtin14().is_some()
        })
        .expect("the world has a product all three retailers sell");
    let gtin = product.variants[0].gtin14().expect("gtin");
    let path = format!("/v1/products?q={}", q(&product.title));
    let first = mall.get(&path).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["complete"], true);
    let merged: Vec<&Value> = first.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|p| p["product_id"] == format!("gtin:{gtin}"))
        .collect();
    assert_eq!(merged.len(), 1, "one product per GTIN");
    let want: BTreeSet<(String, i64)> = product
        .listings
        .iter()
        .map(|l| (l.partner.id().to_owned(), l.price_cents))
        .collect();
    assert_eq!(offers(merged[0]), want);
    for offer in merged[0]["variants"][0]["offers"]
        .as_array()
        .expect("offers")
    {
        let partner = offer["provenance"]["partner_id"].as_str().expect("partner");
        assert!(
            offer["offer_id"]
                .as_str()
                .expect("id")
                .starts_with(&format!("{partner}:"))
        );
        assert!(offer["provenance"]["fetched_at"].is_string());
        assert_eq!(offer["provenance"]["connector_version"], 1);
    }
    // Acme is a supplier (priority 10): its descriptive fields win.
    assert_eq!(merged[0]["provenance"]["partner_id"], "acme");

    // Another answer order: drop the cache, slow Voltmart so it answers last.
    mall.gateway.api.purge();
    mall.faults(
        Partner::Voltmart,
        Faults {
            latency_ms: 150,
            ..Faults::default()
        },
    );
    let again = mall.get(&path).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.outcome("voltmart"), Some("live"));
    assert_eq!(ids(&again.body), ids(&first.body));
    let strip = |v: &Value| {
        let mut v = v["data"].clone();
        for p in v.as_array_mut().expect("data") {
            scrub_times(p);
        }
        v
    };
    assert_eq!(strip(&again.body), strip(&first.body));
}

fn scrub_times(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("fetched_at");
            m.values_mut().for_each(scrub_times);
        }
        Value::Array(a) => a.iter_mut().for_each(scrub_times),
        _ => {}
    }
}

/// Walking a search page by page with `next_cursor` yields every product exactly once, and
/// every product the world matches; each product matches the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_every_page_yields_each_product_once() {
    let mall = Mall::start().await;
    let term = "headphones";
    let mut seen = Vec::new();
    let mut path = format!("/v1/products?q={term}&limit=7");
    let mut pages = 0;
    loop {
        let page = mall.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body["data"].as_array().expect("data").len() <= 7);
        for p in page.body["data"].as_array().expect("data") {
            let text = format!("{} {} {}", p["title"], p["brand"], p["category"]).to_lowercase();
            assert!(text.contains(term), "{text}");
        }
        seen.extend(ids(&page.body));
        pages += 1;
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/products?q={term}&limit=7&cursor={c}"),
            None => break,
        }
    }
    assert!(pages > 3, "the walk spans several pages");
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a product appeared twice");
    // The truth: every product titled with the term and a valid GTIN is there, once.
    let world = mall.fleet.world();
    for p in world
        .products
        .iter()
        .filter(|p| p.title.to_lowercase().contains(term))
    {
        if let [v] = p.variants.as_slice()
            && let Some(g) = v.gtin14()
        {
            assert!(
                distinct.contains(&format!("gtin:{g}")),
                "missing {}",
                p.title
            );
        }
    }
    // A cursor with other filters, a forged cursor and a cursor from nowhere are refused.
    let first = mall.get(&format!("/v1/products?q={term}&limit=7")).await;
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let other = mall
        .get(&format!("/v1/products?q=laptop&cursor={cursor}"))
        .await;
    assert_eq!(
        (other.status, other.body["param"].as_str()),
        (400, Some("cursor"))
    );
    let forged = format!("{}x", cursor);
    let bad = mall
        .get(&format!("/v1/products?q={term}&cursor={forged}"))
        .await;
    assert_eq!(
        (bad.status, bad.body["param"].as_str()),
        (400, Some("cursor"))
    );
}

fn min_usd(p: &Value) -> i64 {
    p["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["offers"].as_array().into_iter().flatten())
        .filter(|o| o["price"]["currency"] == "USD")
        .map(|o| o["price"]["amount_minor"].as_i64().expect("amount"))
        .min()
        .expect("a USD offer")
}

/// Sort keys and the currency rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorts_and_currency_rules() {
    let mall = Mall::start().await;
    let asc = mall
        .get("/v1/products?q=speaker&currency=USD&sort=price_asc&limit=100")
        .await;
    assert_eq!(asc.status, 200);
    let prices: Vec<i64> = asc.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(min_usd)
        .collect();
    assert!(prices.len() > 5);
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    let desc = mall
        .get("/v1/products?q=speaker&currency=USD&sort=price_desc&limit=100")
        .await;
    let prices: Vec<i64> = desc.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(min_usd)
        .collect();
    assert!(prices.windows(2).all(|w| w[0] >= w[1]), "{prices:?}");
    let titles = mall
        .get("/v1/products?q=speaker&sort=title&limit=100")
        .await;
    let t: Vec<String> = titles.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["title"].as_str().expect("title").to_lowercase())
        .collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]));

    // A price window in minor units of one currency.
    let lo = prices[prices.len() / 3];
    let hi = prices[0];
    let window = mall
        .get(&format!(
            "/v1/products?q=speaker&currency=USD&min_price={lo}&max_price={hi}&limit=100"
        ))
        .await;
    assert_eq!(window.status, 200);
    for p in window.body["data"].as_array().expect("data") {
        let ok = offers(p).iter().any(|(_, cents)| (lo..=hi).contains(cents));
        assert!(ok, "{p}");
    }
    // No silent conversion: prices need a currency, and EUR finds nothing priced in USD.
    for path in [
        "/v1/products?q=speaker&min_price=100",
        "/v1/products?q=speaker&sort=price_asc",
    ] {
        let a = mall.get(path).await;
        assert_eq!(a.status, 400, "{path}");
        assert!(
            a.body["detail"]
                .as_str()
                .expect("detail")
                .contains("currency")
        );
    }
    let eur = mall.get("/v1/products?q=speaker&currency=EUR").await;
    assert_eq!(eur.status, 200);
    assert_eq!(eur.body["data"].as_array().expect("data").len(), 0);
}

/// Stock near a point: pickup in stores within the radius, nearest first, with distances
/// from the world's coordinates; ship stock from warehouses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_near_a_point() {
    let mall = Mall::start().await;
    let world = mall.fleet.world();
    let (product, _) = world
        .listed_by(Partner::Voltmart)
        .find(|(p, _)| p.variants[0].gtin14().is_some() && p.listing(Partner::Acme).is_some())
        .expect("a product Voltmart and Acme sell");
    let gtin = product.variants[0].gtin14().expect("gtin");
    let store = world
        .locations_of(Partner::Voltmart)
        .next()
        .expect("a store");
    let path = format!(
        "/v1/inventory?gtin={gtin}&near={},{}&radius_km=300",
        store.lat, store.lon
    );
    let a = mall.get(&path).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let data = a.body["data"].as_array().expect("data");
    let pickup: Vec<&Value> = data
        .iter()
        .filter(|s| s["level"]["fulfillment"] == "pickup")
        .collect();
    assert!(!pickup.is_empty(), "{}", a.body);
    let mut last = 0.0;
    for s in &pickup {
        let d = s["distance_km"].as_f64().expect("distance");
        assert!(d <= 300.0 && d >= last, "{d} after {last}");
        last = d;
        let id = s["level"]["location_id"].as_str().expect("location");
        let native: u32 = id
            .split(':')
            .nth(1)
            .expect("native")
            .parse()
            .expect("number");
        let truth = world
            .locations
            .iter()
            .find(|l| l.native_id == native)
            .expect("a world location");
        let want = distance_km(store.lat, store.lon, truth.lat, truth.lon);
        assert!((d - want).abs() < 0.2, "{id}: {d} vs {want}");
        assert_eq!(s["location"]["kind"], "store");
    }
    assert!(
        pickup[0]["distance_km"].as_f64().expect("d") < 1.0,
        "the store at the point is first"
    );
    // Ship only: warehouse stock, not filtered by distance.
    let ship = mall
        .get(&format!("/v1/inventory?gtin={gtin}&fulfillment=ship"))
        .await;
    assert_eq!(ship.status, 200);
    let levels = ship.body["data"].as_array().expect("data");
    assert!(!levels.is_empty());
    assert!(levels.iter().all(|s| s["level"]["fulfillment"] == "ship"));
    assert!(
        levels
            .iter()
            .any(|s| s["level"]["provenance"]["partner_id"] == "acme")
    );
}

/// Rates from both carriers, sorted by total, the cheapest and fastest tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_across_carriers_are_sorted_and_tagged() {
    let mall = Mall::start().await;
    let body = json!({
        "from": {"postal_code": "10001", "country": "US"},
        "to": {"postal_code": "94103", "country": "US"},
        "parcels": [{"weight_g": 1200}, {"weight_g": 300}],
    });
    let a = mall.post_json("/v1/shipping/rates", &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let rates = a.body["data"].as_array().expect("data");
    let carriers: BTreeSet<&str> = rates
        .iter()
        .map(|r| r["carrier"].as_str().expect("carrier"))
        .collect();
    assert_eq!(carriers, BTreeSet::from(["parcelpost", "swiftship"]));
    let totals: Vec<i64> = rates
        .iter()
        .map(|r| r["total"]["amount_minor"].as_i64().expect("total"))
        .collect();
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
    let min = totals[0];
    let fastest = rates
        .iter()
        .filter_map(|r| r["transit_days"]["max"].as_i64())
        .min()
        .expect("transit");
    for r in rates {
        let tags: Vec<&str> = r["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if tags.contains(&"cheapest") {
            assert_eq!(r["total"]["amount_minor"], min, "{r}");
        }
        if tags.contains(&"fastest") {
            assert_eq!(r["transit_days"]["max"], fastest, "{r}");
        }
    }
    // Exactly one of each, however many rates tie.
    let tagged = |tag: &str| {
        rates
            .iter()
            .filter(|r| {
                r["tags"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!(tag)))
            })
            .count()
    };
    assert_eq!((tagged("cheapest"), tagged("fastest")), (1, 1));
    assert!(
        rates[0]["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("cheapest")))
    );
}

/// Every parcel of both carriers tracks to the world's status; unknown numbers and
/// carriers are 404 problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_statuses_match_the_world() {
    let mall = Mall::start().await;
    let world = mall.fleet.world();
    for parcel in &world.parcels {
        let code = parcel.carrier.id();
        let a = mall
            .get(&format!("/v1/tracking/{code}/{}", parcel.tracking_number))
            .await;
        assert_eq!(a.status, 200, "{}: {}", parcel.tracking_number, a.body);
        let want = serde_json::to_value(parcel.status()).expect("status");
        assert_eq!(a.body["data"]["status"], want, "{}", parcel.tracking_number);
        assert_eq!(
            a.body["data"]["tracking_number"],
            parcel.tracking_number.as_str()
        );
    }
    // A carrier's second code works too.
    let one = &world
        .parcels
        .iter()
        .find(|p| p.carrier == Partner::SwiftShip)
        .expect("swiftship parcel");
    assert_eq!(
        mall.get(&format!("/v1/tracking/swift/{}", one.tracking_number))
            .await
            .status,
        200
    );
    for carrier in [Partner::ParcelPost, Partner::SwiftShip] {
        let a = mall
            .get(&format!(
                "/v1/tracking/{}/{}",
                carrier.id(),
                unknown_tracking_number(carrier)
            ))
            .await;
        assert_eq!(a.status, 404);
        assert_eq!(
            a.body["type"],
            "https://mallgate.dev/problems/tracking-not-found"
        );
    }
    let a = mall.get("/v1/tracking/nocarrier/ABC123").await;
    assert_eq!(
        (a.status, a.body["type"].as_str()),
        (404, Some("https://mallgate.dev/problems/carrier-not-found"))
    );
}

/// A failing partner and a slow one make the answer partial (200, `complete: false`, the
/// sources marked), never a 5xx; with every source down and nothing cached: 503 with
/// Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_answers_and_total_failure() {
    let mall = Mall::start().await;
    mall.faults(
        Partner::Voltmart,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    mall.faults(
        Partner::Threadline,
        Faults {
            hang: true,
            ..Faults::default()
        },
    );
    let a = mall.get("/v1/products?q=wireless&timeout_ms=3000").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["complete"], false);
    assert_eq!(a.outcome("voltmart"), Some("failed"));
    assert_eq!(a.outcome("threadline"), Some("failed"));
    assert_eq!(a.outcome("acme"), Some("live"));
    let codes: Vec<&str> = a.body["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["error"]["code"].as_str())
        .collect();
    // Frontends learn the kind of failure, never a partner's internal address.
    assert!(
        !a.body["sources"].to_string().contains("127.0.0.1"),
        "{}",
        a.body["sources"]
    );
    assert!(
        codes.contains(&"partner_error") && codes.contains(&"timeout"),
        "{codes:?}"
    );
    assert!(!a.body["data"].as_array().expect("data").is_empty());

    mall.faults(
        Partner::ParcelPost,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    let parcel = mall
        .fleet
        .world()
        .parcels
        .iter()
        .find(|p| p.carrier == Partner::ParcelPost)
        .expect("parcel");
    let down = mall
        .get(&format!(
            "/v1/tracking/parcelpost/{}",
            parcel.tracking_number
        ))
        .await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.header("retry-after").is_some());
    assert_eq!(down.body["sources"][0]["outcome"], "failed");
    // Let the hung replicas go (their connections end when the test's fleet stops).
    mall.faults(Partner::Threadline, Faults::default());
}

/// N concurrent identical misses make one partner call; the cache answers the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_are_coalesced() {
    let mall = Mall::start().await;
    // Slow the partner so all requests arrive while the first call is in flight.
    mall.faults(
        Partner::SwiftShip,
        Faults {
            latency_ms: 200,
            ..Faults::default()
        },
    );
    let parcel = mall
        .fleet
        .world()
        .parcels
        .iter()
        .find(|p| p.carrier == Partner::SwiftShip)
        .expect("parcel");
    let path = format!("/v1/tracking/swiftship/{}", parcel.tracking_number);
    let before = mall.requests(Partner::SwiftShip, "track");
    let answers = futures_util::future::join_all((0..8).map(|_| mall.get(&path))).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(
        mall.requests(Partner::SwiftShip, "track") - before,
        1,
        "one partner call for 8 misses"
    );
    let cached = mall.get(&path).await;
    assert_eq!(cached.outcome("swiftship"), Some("cached"));
    assert_eq!(mall.requests(Partner::SwiftShip, "track") - before, 1);
}

/// Past its TTL, a failing partner's data is served from cache marked `stale`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_cached_answer() {
    let mall = Mall::start_with(|partner, text| {
        if partner == Partner::ParcelPost {
            text.replace(
                "capabilities:\n",
                "policies:\n  cache: {ttl_s: 1, stale_while_revalidate_s: 0, stale_if_error_s: 3600}\ncapabilities:\n",
            )
        } else {
            text
        }
    })
    .await;
    let parcel = mall
        .fleet
        .world()
        .parcels
        .iter()
        .find(|p| p.carrier == Partner::ParcelPost)
        .expect("parcel");
    let path = format!("/v1/tracking/pp/{}", parcel.tracking_number);
    let live = mall.get(&path).await;
    assert_eq!(live.outcome("parcelpost"), Some("live"));
    // Wait out the 1 s TTL (a wait, not a timing assertion), then fail the partner.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    mall.faults(
        Partner::ParcelPost,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    let stale = mall.get(&path).await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    assert_eq!(stale.outcome("parcelpost"), Some("stale"));
    assert_eq!(stale.body["complete"], false);
    assert_eq!(stale.body["data"], live.body["data"]);
    assert_eq!(stale.body["sources"][0]["error"]["code"], "partner_error");
}

/// ETag and If-None-Match: the same answer is a 304 without a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_and_conditional_requests() {
    let mall = Mall::start().await;
    let a = mall.get("/v1/products?q=camera&limit=5").await;
    let etag = a.header("etag").expect("etag").to_owned();
    assert!(
        a.header("cache-control")
            .expect("cache-control")
            .starts_with("public, max-age=")
    );
    let b = mall
        .get_with("/v1/products?q=camera&limit=5", ("if-none-match", &etag))
        .await;
    assert_eq!(b.status, 304);
    assert_eq!(b.body, Value::Null);
    let c = mall
        .get_with(
            "/v1/products?q=camera&limit=5",
            ("if-none-match", "\"other\""),
        )
        .await;
    assert_eq!(c.status, 200);
    assert_eq!(c.header("etag"), Some(etag.as_str()));
}

/// Bad input: problem+json naming the fault, for every class the issue lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_problems() {
    let mall = Mall::start().await;
    for (path, param) in [
        ("/v1/products?limit=0", "limit"),
        ("/v1/products?limit=abc", "limit"),
        ("/v1/products?sort=cheapest", "sort"),
        ("/v1/products?gtin=00036000291453", "gtin"),
        ("/v1/products?colour=red", "colour"),
        ("/v1/products?q=a&q=b", "q"),
        ("/v1/products?timeout_ms=0", "timeout_ms"),
        ("/v1/products?currency=usd", "currency"),
        ("/v1/inventory?near=1,2", "gtin"),
        ("/v1/inventory?gtin=00036000291452&near=91,0", "near"),
        ("/v1/products/nocolon", "product_id"),
        ("/v1/tracking/parcelpost/has%20space", "tracking_number"),
    ] {
        let a = mall.get(path).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.body["param"], param, "{path}");
        assert!(
            a.header("content-type")
                .expect("ct")
                .starts_with("application/problem+json")
        );
        assert!(a.header("x-request-id").is_some());
    }
    let unknown = mall.get("/v1/products/gtin:00036000291452").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(
        unknown.body["type"],
        "https://mallgate.dev/problems/product-not-found"
    );

    let wrong = mall
        .send(
            mall.http
                .post(format!("{}/v1/products", mall.gateway.url())),
            "post",
            "/v1/products",
        )
        .await;
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("GET")));
    let wrong = mall.get("/v1/shipping/rates").await;
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));

    // Bodies: malformed JSON, a wrong field, a missing field, the wrong media type, too big.
    let url = format!("{}/v1/shipping/rates", mall.gateway.url());
    let raw = |body: &'static str| {
        mall.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };
    let a = mall
        .send(raw("{\"from\": "), "post", "/v1/shipping/rates")
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["detail"]
            .as_str()
            .expect("detail")
            .contains("malformed JSON"),
        "{}",
        a.body
    );
    let a = mall.send(raw(r#"{"from":{"country":"US"},"to":{"country":"US"},"parcels":[{"weight_g":"heavy"}]}"#), "post", "/v1/shipping/rates").await;
    assert_eq!(
        (a.status, a.body["pointer"].as_str()),
        (400, Some("/parcels/0/weight_g")),
        "{}",
        a.body
    );
    let a = mall
        .send(
            raw(r#"{"from":{"country":"US"},"parcels":[]}"#),
            "post",
            "/v1/shipping/rates",
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = mall
        .send(
            raw(r#"{"from":{"country":"usa"},"to":{"country":"US"},"parcels":[{"weight_g":5}]}"#),
            "post",
            "/v1/shipping/rates",
        )
        .await;
    assert_eq!(
        (a.status, a.body["pointer"].as_str()),
        (400, Some("/from/country")),
        "{}",
        a.body
    );
    // Two capitals that are no country (the United Kingdom is GB).
    let a = mall
        .send(
            raw(r#"{"from":{"country":"US"},"to":{"country":"UK"},"parcels":[{"weight_g":5}]}"#),
            "post",
            "/v1/shipping/rates",
        )
        .await;
    assert_eq!(
        (
            a.status,
            a.body["pointer"].as_str(),
            a.body["detail"].as_str()
        ),
        (
            400,
            Some("/to/country"),
            Some("at `/to/country`: a country is an ISO 3166-1 alpha-2 code in capitals (US, DE)")
        ),
        "{}",
        a.body
    );
    let a = mall
        .send(
            mall.http
                .post(&url)
                .header("content-type", "text/plain")
                .body("hi"),
            "post",
            "/v1/shipping/rates",
        )
        .await;
    assert_eq!(a.status, 415);
    let big = "x".repeat(70 * 1024);
    let a = mall
        .send(
            mall.http
                .post(&url)
                .header("content-type", "application/json")
                .body(big),
            "post",
            "/v1/shipping/rates",
        )
        .await;
    assert_eq!(a.status, 413);

    // Over-long header fields: 431.
    let long = "a".repeat(20 * 1024);
    let a = mall.get_with("/v1/partners", ("x-padding", &long)).await;
    assert_eq!(a.status, 431);

    // Unknown routes are 404 problems.
    let a = mall.get("/v2/nothing").await;
    assert_eq!(a.status, 404);
}

/// Partners, health, readiness and the document itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_health_and_the_openapi_document() {
    let mall = Mall::start().await;
    let ready = mall.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.body["connectors"].as_u64()),
        (200, Some(6))
    );
    assert_eq!(mall.get("/healthz").await.status, 200);
    let before = mall.get("/v1/partners").await;
    let partners: Vec<&str> = before.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| p["partner"].as_str().expect("partner"))
        .collect();
    assert_eq!(
        partners,
        [
            "acme",
            "northwind",
            "parcelpost",
            "swiftship",
            "threadline",
            "voltmart"
        ]
    );
    assert!(
        before.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .all(|p| p["health"]["status"] == "unknown")
    );
    mall.faults(
        Partner::Voltmart,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    mall.get("/v1/products?q=tv").await;
    let after = mall.get("/v1/partners").await;
    let health = |name: &str| {
        after.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|p| p["partner"] == name)
            .map(|p| p["health"]["status"].clone())
    };
    assert_eq!(health("voltmart"), Some(json!("degraded")));
    assert_eq!(health("acme"), Some(json!("healthy")));
    let doc = mall.get("/openapi.json").await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["components"]["schemas"]["Product"].is_object());
}
