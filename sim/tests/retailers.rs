//! Threadline, Acme Dropship and Northwind Wholesale over real HTTP, checked against the
//! world's truth, with each dialect's quirks and drift knob.

mod support;

use std::collections::BTreeMap;

use mallgate_partner_sim::partners::{acme, northwind, threadline};
use mallgate_partner_sim::world::STOCK_PERIOD_S;
use mallgate_partner_sim::{Fleet, Partner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{BLACK_FRIDAY, base, client, control_put, drift, fleet_at};

// --- Threadline ----------------------------------------------------------------------

async fn tl_get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("X-Shopify-Access-Token", threadline::ACCESS_TOKEN)
        .send()
        .await
        .expect("request")
}

/// The `rel="next"` URL of a Link header.
fn next_link(response: &reqwest::Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    link.split(", ").find_map(|part| {
        let (url, rel) = part.split_once("; ")?;
        (rel == "rel=\"next\"").then(|| url.trim_matches(['<', '>']).to_owned())
    })
}

fn cents(price: &Value) -> i64 {
    let text = price.as_str().expect("prices are strings");
    let (whole, frac) = text.split_once('.').expect("two decimals");
    assert_eq!(frac.len(), 2, "{text}");
    whole.parse::<i64>().expect("whole") * 100 + frac.parse::<i64>().expect("frac")
}

#[tokio::test]
async fn threadline_walks_link_cursors_and_renders_the_truth() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let world = fleet.world();
    let truth: Vec<_> = world
        .listed_by(Partner::Threadline)
        .filter(|(p, _)| p.title.contains("Hoodie"))
        .collect();
    assert!(truth.len() > 100, "a multi-page walk: {}", truth.len());

    let mut url = format!(
        "{}/admin/api/2026-10/products.json?title=hoodie&limit=50",
        base(&fleet, Partner::Threadline)
    );
    let mut seen: Vec<Value> = Vec::new();
    let mut pages = 0;
    let mut last_level = 0;
    loop {
        let r = tl_get(&url).await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let limit = r.headers()["x-shopify-shop-api-call-limit"]
            .to_str()
            .expect("header");
        let (level, size) = limit.split_once('/').expect("n/40");
        assert_eq!(size, "40");
        let level: u32 = level.parse().expect("level");
        assert!((1..=40).contains(&level));
        last_level = last_level.max(level);
        let next = next_link(&r);
        let body: Value = r.json().await.expect("json");
        seen.extend(
            body["products"]
                .as_array()
                .expect("products")
                .iter()
                .cloned(),
        );
        pages += 1;
        match next {
            Some(n) => {
                assert!(n.contains("page_info=") && !n.contains("title="), "{n}");
                url = n;
            }
            None => break,
        }
    }
    assert!(pages >= 3);
    assert!(last_level >= 2, "the bucket fills as calls arrive");
    assert_eq!(seen.len(), truth.len(), "each product once");

    let mut disagreeing = 0;
    for (item, (product, listing)) in seen.iter().zip(&truth) {
        assert_eq!(item["id"], json!(threadline::product_id(listing)));
        assert_eq!(item["title"], json!(product.title));
        assert_eq!(item["vendor"], json!(product.brand));
        // Offsets, never Z: the shop's zone at that date.
        let updated = item["updated_at"].as_str().expect("updated_at");
        assert!(
            updated.ends_with("-05:00") || updated.ends_with("-04:00"),
            "{updated}"
        );
        let instant: jiff::Timestamp = updated.parse().expect("RFC 3339");
        assert_eq!(instant.as_second(), listing.updated_s);
        let names: Vec<&str> = item["options"]
            .as_array()
            .expect("options")
            .iter()
            .map(|o| o["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["Size", "Color"]);
        let variants = item["variants"].as_array().expect("variants");
        assert_eq!(variants.len(), product.variants.len());
        for (i, (v, truth)) in variants.iter().zip(&product.variants).enumerate() {
            let code = truth.upc.clone().or_else(|| truth.bad_code.clone());
            assert_eq!(v["barcode"], json!(code));
            assert_eq!(v["option1"], json!(truth.options[0].1));
            assert_eq!(v["option2"], json!(truth.options[1].1));
            assert_eq!(v["option3"], Value::Null);
            assert_eq!(cents(&v["price"]), listing.price_cents);
            assert_eq!(v["grams"], json!(truth.weight_g), "grams is the truth");
            let unit = v["weight_unit"].as_str().expect("unit");
            let per_gram = match unit {
                "kg" => 0.001,
                "lb" => 1.0 / 453.592_37,
                "oz" => 1.0 / 28.349_523_125,
                _ => 1.0,
            };
            let stated = v["weight"].as_f64().expect("weight");
            let agrees = (stated - f64::from(truth.weight_g) * per_gram).abs() <= 0.006;
            assert_eq!(agrees, !threadline::weight_disagrees(product, i), "{v}");
            disagreeing += usize::from(!agrees);
        }
    }
    assert!(
        disagreeing > 0,
        "some variants' weight disagrees with grams"
    );
}

#[tokio::test]
async fn threadline_quirks_token_cursor_rules_default_title_and_drift() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let base = base(&fleet, Partner::Threadline);

    // No token, wrong token: 401.
    let r = client()
        .get(format!("{base}/admin/api/2026-10/shop.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The request id comes back.
    let r = client()
        .get(format!("{base}/admin/api/2026-10/shop.json"))
        .header("X-Shopify-Access-Token", threadline::ACCESS_TOKEN)
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["x-request-id"], "req-42");

    // A cursor carries its filters: adding one is refused, as is a forged cursor.
    let first = tl_get(&format!(
        "{base}/admin/api/2026-10/products.json?title=hoodie&limit=5"
    ))
    .await;
    let next = next_link(&first).expect("next");
    let r = tl_get(&format!("{next}&title=hoodie")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = tl_get(&format!(
        "{base}/admin/api/2026-10/products.json?page_info=nonsense"
    ))
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = tl_get(&format!("{base}/admin/api/2026-10/products.json?limit=251")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Electronics Threadline also sells: one variant, option "Title" = "Default Title".
    let (product, listing) = fleet
        .world()
        .listed_by(Partner::Threadline)
        .find(|(p, _)| p.variants[0].options.is_empty())
        .expect("a product without options");
    let r = tl_get(&format!(
        "{base}/admin/api/2026-10/products/{}.json",
        listing.native_id
    ))
    .await;
    let body: Value = r.json().await.expect("json");
    let item = &body["product"];
    assert_eq!(item["title"], json!(product.title));
    assert_eq!(item["options"][0]["name"], "Title");
    assert_eq!(item["variants"][0]["option1"], "Default Title");
    let r = tl_get(&format!("{base}/admin/api/2026-10/products/1.json")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Drift renames the variant's price.
    drift(&fleet, Partner::Threadline, 1).await;
    let drifted = fleet.url(Partner::Threadline, 1).expect("replica 1");
    let body: Value = tl_get(&format!(
        "{drifted}/admin/api/2026-10/products/{}.json",
        listing.native_id
    ))
    .await
    .json()
    .await
    .expect("json");
    let v = &body["product"]["variants"][0];
    assert!(
        v.get("price").is_none() && v.get("price_amount").is_some(),
        "{v}"
    );
}

#[tokio::test]
async fn threadline_inventory_levels_per_location() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let world = fleet.world();
    let base = base(&fleet, Partner::Threadline);
    let locations: Vec<Value> = tl_get(&format!("{base}/admin/api/2026-10/locations.json"))
        .await
        .json::<Value>()
        .await
        .expect("json")["locations"]
        .as_array()
        .expect("locations")
        .clone();
    let truth_locations: Vec<_> = world.locations_of(Partner::Threadline).collect();
    assert_eq!(locations.len(), truth_locations.len());
    for (l, t) in locations.iter().zip(&truth_locations) {
        assert_eq!(l["id"], json!(threadline::location_id(t)));
        assert_eq!(l["iana_timezone"], json!(t.time_zone));
        let lat: f64 = l["latitude"].as_str().expect("lat").parse().expect("lat");
        assert!((lat - t.lat).abs() < 1e-6);
    }

    let sample: Vec<_> = world
        .listed_by(Partner::Threadline)
        .filter(|(p, _)| p.variants.len() > 1)
        .take(10)
        .collect();
    let mut ids = Vec::new();
    for (p, _) in &sample {
        for vi in 0..p.variants.len().min(4) {
            ids.push((p, vi, threadline::inventory_item_id(p, vi)));
        }
    }
    let query: Vec<String> = ids.iter().map(|(_, _, id)| id.to_string()).collect();
    let body: Value = tl_get(&format!(
        "{base}/admin/api/2026-10/inventory_levels.json?inventory_item_ids={}",
        query.join(",")
    ))
    .await
    .json()
    .await
    .expect("json");
    let levels = body["inventory_levels"].as_array().expect("levels");
    assert_eq!(levels.len(), ids.len() * truth_locations.len());
    let mut negative = 0;
    let mut incoming = 0;
    for level in levels {
        let item = level["inventory_item_id"].as_u64().expect("id");
        let (p, vi, _) = ids
            .iter()
            .find(|(_, _, id)| *id == item)
            .expect("asked for");
        let location = truth_locations
            .iter()
            .find(|l| json!(threadline::location_id(l)) == level["location_id"])
            .expect("a Threadline location");
        let available = world.stock(location, p.index, *vi, BLACK_FRIDAY);
        assert_eq!(level["available"], json!(available));
        assert_eq!(
            level["incoming"],
            json!(world.incoming(location, p.index, *vi, BLACK_FRIDAY))
        );
        let updated: jiff::Timestamp = level["updated_at"]
            .as_str()
            .expect("updated_at")
            .parse()
            .expect("RFC 3339");
        assert_eq!(updated.as_second() % STOCK_PERIOD_S, 0);
        negative += usize::from(available < 0);
        incoming += usize::from(level["incoming"].as_i64() > Some(0));
    }
    assert!(negative > 0, "oversold stock stays negative");
    assert!(incoming > 0);

    let r = tl_get(&format!("{base}/admin/api/2026-10/inventory_levels.json")).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn threadline_call_limit_then_429_with_retry_after() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let url = format!(
        "{}/admin/api/2026-10/shop.json",
        base(&fleet, Partner::Threadline)
    );
    // 120 calls at once against a 40-call bucket leaking 2/s: the bucket overflows.
    let calls = (0..120).map(|_| tl_get(&url));
    let answers = futures_util::future::join_all(calls).await;
    let mut ok = 0;
    let mut limited = 0;
    for r in &answers {
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(r.headers()["retry-after"], "2.0");
                assert_eq!(r.headers()["x-shopify-shop-api-call-limit"], "40/40");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 40, "the bucket's 40 calls are served: {ok}");
    assert!(limited > 0, "the overflow is refused with 429");
    // The other replica has its own bucket.
    let other = format!(
        "{}/admin/api/2026-10/shop.json",
        fleet.url(Partner::Threadline, 1).expect("replica 1")
    );
    assert_eq!(tl_get(&other).await.status(), StatusCode::OK);
}

// --- Acme Dropship -------------------------------------------------------------------

async fn acme_token(fleet: &Fleet) -> (String, i64) {
    let r = client()
        .post(format!("{}/v3/token", base(fleet, Partner::Acme)))
        .basic_auth(acme::CLIENT_ID, Some(acme::CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    (
        body["access_token"].as_str().expect("token").to_owned(),
        body["expires_in"].as_i64().expect("expires_in"),
    )
}

async fn acme_get(url: &str, token: &str, correlation: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .get(url)
        .header("WM_SEC.ACCESS_TOKEN", token)
        .header("WM_SVC.NAME", "Mallgate");
    if let Some(c) = correlation {
        request = request.header("WM_QOS.CORRELATION_ID", c);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn acme_oauth_next_cursor_walk_and_items_against_the_truth() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let world = fleet.world();
    let base = base(&fleet, Partner::Acme);
    let (token, ttl) = acme_token(&fleet).await;
    assert_eq!(ttl, 900);

    let truth: Vec<_> = world.listed_by(Partner::Acme).collect();
    assert!(truth.len() > 1000);
    let mut cursor = "*".to_owned();
    let mut seen: Vec<Value> = Vec::new();
    let mut pages = 0;
    loop {
        let r = acme_get(
            &format!("{base}/v3/items?limit=200&nextCursor={cursor}"),
            &token,
            Some("corr-1"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["wm_qos.correlation_id"], "corr-1");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["totalItems"], json!(truth.len()));
        seen.extend(
            body["ItemResponse"]
                .as_array()
                .expect("items")
                .iter()
                .cloned(),
        );
        pages += 1;
        match body.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert!(pages > 5);
    assert_eq!(seen.len(), truth.len());
    let mut invalid = 0;
    for (item, (product, listing)) in seen.iter().zip(&truth) {
        assert_eq!(item["sku"], json!(listing.native_id));
        assert_eq!(item["productName"], json!(product.title));
        let gtin = item["gtin"].as_str().expect("gtin");
        assert_eq!(gtin.len(), 14, "zero-padded");
        match product.variants[0].gtin14() {
            Some(g) => assert_eq!(gtin, g),
            None => invalid += 1,
        }
        let shelf: Vec<String> =
            serde_json::from_str(item["shelf"].as_str().expect("a string")).expect("JSON inside");
        assert_eq!(shelf, product.category);
        assert_eq!(item["price"]["currency"], "USD");
        let amount = item["price"]["amount"].as_f64().expect("number");
        assert_eq!((amount * 100.0).round() as i64, listing.price_cents);
        assert_eq!(
            item["lastUpdated"],
            json!(listing.updated_s * 1000),
            "epoch ms"
        );
    }
    assert!(invalid > 0, "some items carry no valid GTIN");

    // Stock per ship node as {quantity: {unit, amount}}, never negative.
    let (product, listing) = truth[3];
    let r = acme_get(
        &format!("{base}/v3/inventories?sku={}", listing.native_id),
        &token,
        Some("corr-2"),
    )
    .await;
    let body: Value = r.json().await.expect("json");
    let nodes = body["elements"]["inventories"][0]["nodes"]
        .as_array()
        .expect("nodes");
    let warehouses: Vec<_> = world.locations_of(Partner::Acme).collect();
    assert_eq!(nodes.len(), warehouses.len());
    for (node, l) in nodes.iter().zip(&warehouses) {
        assert_eq!(node["shipNode"], json!(acme::ship_node(l)));
        assert_eq!(node["quantity"]["unit"], "EACH");
        let expected = world.stock(l, product.index, 0, BLACK_FRIDAY).max(0);
        assert_eq!(node["quantity"]["amount"], json!(expected));
        assert_eq!(node["lastUpdated"].as_i64().expect("ms") % 1000, 0);
    }
    let by_gtin: Value = acme_get(
        &format!("{base}/v3/inventories?gtin={}", acme::gtin(product)),
        &token,
        Some("corr-3"),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(by_gtin["elements"], body["elements"]);
    let r = acme_get(
        &format!("{base}/v3/inventories?sku=ACM-NOPE"),
        &token,
        Some("c"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn acme_headers_token_expiry_and_drift() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let base = base(&fleet, Partner::Acme);
    // Wrong client secret.
    let r = client()
        .post(format!("{base}/v3/token"))
        .basic_auth(acme::CLIENT_ID, Some("wrong"))
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let (token, _) = acme_token(&fleet).await;
    let items = format!("{base}/v3/items?limit=1");
    // The correlation id is required.
    let r = acme_get(&items, &token, None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        acme_get(&items, "forged", Some("c")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A token is good on the other replica too.
    let other = format!(
        "{}/v3/items?limit=1",
        fleet.url(Partner::Acme, 1).expect("replica 1")
    );
    assert_eq!(
        acme_get(&other, &token, Some("c")).await.status(),
        StatusCode::OK
    );

    // The lifetime knob; expiry follows the simulated clock.
    let auth = control_put(
        &fleet,
        "/__sim/partners/acme/auth",
        json!({"token_ttl_s": 5}),
    )
    .await;
    assert_eq!(auth["token_ttl_s"], 5);
    let (short, ttl) = acme_token(&fleet).await;
    assert_eq!(ttl, 5);
    assert_eq!(
        acme_get(&items, &short, Some("c")).await.status(),
        StatusCode::OK
    );
    fleet.clock().advance(6);
    let r = acme_get(&items, &short, Some("c")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["errors"][0]["description"], "Token expired");
    assert_eq!(fleet.tokens().issued(Partner::Acme), 2);

    // Drift renames productName.
    drift(&fleet, Partner::Acme, 1).await;
    let (fresh, _) = acme_token(&fleet).await;
    let body: Value = acme_get(&other, &fresh, Some("c"))
        .await
        .json()
        .await
        .expect("json");
    let item = &body["ItemResponse"][0];
    assert!(item.get("productName").is_none() && item.get("product_name").is_some());
}

// --- Northwind -----------------------------------------------------------------------

async fn northwind_doc(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .basic_auth(northwind::USERNAME, Some(northwind::PASSWORD))
        .send()
        .await
        .expect("request")
}

/// Segments of an X12 document as element lists.
fn segments(doc: &str) -> Vec<Vec<String>> {
    doc.split('~')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.split('*').map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn northwind_edi_846_snapshot_against_the_truth() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let world = fleet.world();
    let url = format!("{}/edi/846/latest", base(&fleet, Partner::Northwind));

    assert_eq!(
        client().get(&url).send().await.expect("request").status(),
        StatusCode::UNAUTHORIZED
    );
    let r = northwind_doc(&url).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let doc = r.text().await.expect("text");
    assert_eq!(
        doc.as_bytes()[105],
        b'~',
        "fixed-width ISA: terminator at byte 106"
    );
    let segs = segments(&doc);
    let id = |s: &Vec<String>| s[0].clone();
    assert_eq!(id(&segs[0]), "ISA");
    let st = segs.iter().position(|s| s[0] == "ST").expect("ST");
    let se = segs.iter().position(|s| s[0] == "SE").expect("SE");
    assert_eq!(
        segs[se][1],
        (se - st + 1).to_string(),
        "SE01 counts the set"
    );
    let bia = &segs[st + 1];
    assert_eq!(bia[0], "BIA");
    assert_eq!(bia[3], northwind::document_number(BLACK_FRIDAY));
    assert_eq!(bia[4], "20261127", "the snapshot date, Chicago time");

    // Items: LIN, PID, QTY*33, QTY*17, SDQ, optional DTM.
    let carried: Vec<_> = northwind::carried(world).collect();
    let warehouses: Vec<_> = world.locations_of(Partner::Northwind).collect();
    let mut items: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    let mut qty_sum = 0i64;
    for s in &segs[st..se] {
        match s[0].as_str() {
            "LIN" => {
                current = s[5].clone();
                items.insert(current.clone(), vec![s.clone()]);
            }
            "PID" | "QTY" | "SDQ" | "DTM" => {
                if s[0] == "QTY" {
                    qty_sum += s[2].parse::<i64>().expect("quantity");
                }
                items.get_mut(&current).expect("after LIN").push(s.clone());
            }
            _ => {}
        }
    }
    assert_eq!(items.len(), carried.len());
    let ctt = segs.iter().find(|s| s[0] == "CTT").expect("CTT");
    assert_eq!(ctt[1], carried.len().to_string(), "CTT01 counts LIN lines");
    assert_eq!(ctt[2], qty_sum.to_string(), "CTT02 is the QTY hash total");

    let mut restocks = 0;
    for product in &carried {
        let item = &items[&northwind::vendor_part(product)];
        assert_eq!(item[0][3], northwind::upc(product));
        let sdq = item.iter().find(|s| s[0] == "SDQ").expect("SDQ");
        let mut total = 0;
        for (pair, l) in sdq[3..].chunks(2).zip(&warehouses) {
            let expected = world.stock(l, product.index, 0, BLACK_FRIDAY).max(0);
            assert_eq!(pair[0], northwind::location_code(l));
            assert_eq!(pair[1], expected.to_string());
            total += expected;
        }
        let available = item
            .iter()
            .find(|s| s[0] == "QTY" && s[1] == "33")
            .expect("QTY*33");
        assert_eq!(available[2], total.to_string());
        let dtm = item.iter().find(|s| s[0] == "DTM");
        assert_eq!(
            dtm.map(|d| d[2].clone()),
            northwind::restock_date(world, product, BLACK_FRIDAY)
        );
        restocks += usize::from(dtm.is_some());
    }
    assert!(restocks > 0);
    assert!(
        carried.iter().any(|p| p.variants[0].upc.is_none()),
        "some LIN lines carry a bad UPC"
    );

    // The same period: 304 on the ETag. The next period: a new document.
    let r = client()
        .get(&url)
        .basic_auth(northwind::USERNAME, Some(northwind::PASSWORD))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    fleet.clock().advance(STOCK_PERIOD_S);
    let next = northwind_doc(&url).await;
    assert_ne!(next.headers()["etag"].to_str().expect("etag"), etag);
    assert_ne!(next.text().await.expect("text"), doc);

    // Drift: the generator miscounts CTT01.
    drift(&fleet, Partner::Northwind, 1).await;
    let drifted = format!(
        "{}/edi/846/latest",
        fleet.url(Partner::Northwind, 1).expect("replica 1")
    );
    let segs = segments(&northwind_doc(&drifted).await.text().await.expect("text"));
    let ctt = segs.iter().find(|s| s[0] == "CTT").expect("CTT");
    let lines = segs.iter().filter(|s| s[0] == "LIN").count();
    assert_eq!(ctt[1], (lines + 1).to_string());
}

#[tokio::test]
async fn the_fleet_lists_every_partner_and_its_credentials() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let addresses = fleet.addresses();
    for p in Partner::ALL {
        assert_eq!(
            addresses["partners"][p.id()].as_array().map(Vec::len),
            Some(2),
            "{p:?}"
        );
        assert!(addresses["credentials"][p.id()].is_object(), "{p:?}");
    }
}
