//! Round trips: world truth -> partner dialect over real HTTP (the simulator) -> the
//! example connector through the runtime -> unified records, compared with the truth on
//! every field the dialect carries. The fields a dialect loses are listed per test.

#[path = "support/fleet.rs"]
mod fleet;

use std::collections::BTreeMap;

use fleet::{BLACK_FRIDAY, Harness, deadline};
use mallgate_connectors::{Capability, ConnectorError};
use mallgate_partner_sim::partners::{acme, northwind, threadline};
use mallgate_partner_sim::shipping::{self, Step, unknown_tracking_number};
use mallgate_partner_sim::world::distance_km;
use mallgate_partner_sim::{Faults, Partner};
use serde_json::{Value, json};

/// The typed records are the mapped records, one for one and field for field: what the
/// gateway caches and serves (typed) is what the mapping produced (JSON).
fn typed_as_mapped(
    out: &mallgate_connectors::runtime::CallOutput,
) -> &mallgate_connectors::runtime::CallOutput {
    use mallgate_schemas::Record;
    assert_eq!(out.typed.len(), out.records.len(), "every record typed");
    for (typed, record) in out.typed.iter().zip(&out.records) {
        let back = match typed {
            Record::Product(r) => serde_json::to_value(r),
            Record::InventoryLevel(r) => serde_json::to_value(r),
            Record::Location(r) => serde_json::to_value(r),
            Record::ShippingRate(r) => serde_json::to_value(r),
            Record::Tracking(r) => serde_json::to_value(r),
        }
        .expect("serializes");
        assert_eq!(canonical(&back), canonical(record), "typed = mapped");
    }
    out
}

/// A record with its numbers as floats (`900` and `900.0` are one weight) and empty lists
/// dropped (the typed form omits an empty `warnings`).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !matches!(v, Value::Array(a) if a.is_empty()))
                .map(|(k, v)| (k.clone(), canonical(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn minor(money: &Value) -> i64 {
    assert_eq!(money["currency"], "USD", "{money}");
    money["amount_minor"].as_i64().expect("amount_minor")
}

fn gtin_id(code: &Option<String>) -> Option<String> {
    code.as_ref().map(|u| format!("gtin:00{u}"))
}

// --- Voltmart -----------------------------------------------------------------------

/// Lossy in Voltmart's dialect: descriptions, weights and variant options are not mapped
/// (the catalog carries them only as prose); availability online is a flag, not a count.
#[tokio::test]
async fn voltmart_catalog_inventory_and_locations() {
    let h = Harness::start().await;
    let c = h.connector(Partner::Voltmart);
    let world = h.fleet.world();

    // A multi-page search (3 pages of 100).
    let out = c
        .call(
            Capability::CatalogSearch,
            &json!({"q": "soundbar"}),
            "rt-1",
            deadline(),
        )
        .await
        .expect("search");
    typed_as_mapped(&out);
    let truth: Vec<_> = world
        .listed_by(Partner::Voltmart)
        .filter(|(p, _)| p.title.to_lowercase().contains("soundbar"))
        .collect();
    assert!(out.stats.pages >= 3, "{:?}", out.stats);
    assert_eq!(out.records.len(), truth.len());
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    for (record, (product, listing)) in out.records.iter().zip(&truth) {
        let v = &product.variants[0];
        let expected_id = gtin_id(&v.upc).unwrap_or(format!("voltmart:{}", listing.native_id));
        assert_eq!(record["product_id"], json!(expected_id));
        assert_eq!(record["title"], json!(product.title));
        assert_eq!(record["brand"], json!(product.brand));
        assert_eq!(record["category"], json!(product.category));
        let variant = &record["variants"][0];
        assert_eq!(variant["gtin"].as_str(), v.gtin14().as_deref());
        let offer = &variant["offers"][0];
        assert_eq!(minor(&offer["price"]), listing.price_cents);
        assert_eq!(minor(&offer["list_price"]), listing.list_price_cents);
        assert_eq!(offer["provenance"]["source_ref"], json!(listing.native_id));
        assert_eq!(offer["provenance"]["partner_id"], "voltmart");
    }

    // One product; an unknown one is not found (an empty list in a 200).
    let (product, listing) = truth[0];
    let got = c
        .call(
            Capability::CatalogGet,
            &json!({"id": listing.native_id}),
            "rt-2",
            deadline(),
        )
        .await
        .expect("get");
    typed_as_mapped(&got);
    assert_eq!(got.records[0]["title"], json!(product.title));
    let missing = c
        .call(
            Capability::CatalogGet,
            &json!({"id": "1"}),
            "rt-3",
            deadline(),
        )
        .await
        .expect("get");
    typed_as_mapped(&missing);
    assert!(missing.not_found && missing.records.is_empty());

    // Store stock: only bands (lowStock), for stores that have some.
    let stock = c
        .call(
            Capability::InventoryGet,
            &json!({"sku": listing.native_id}),
            "rt-4",
            deadline(),
        )
        .await
        .expect("inventory");
    typed_as_mapped(&stock);
    let stores: Vec<_> = world
        .locations_of(Partner::Voltmart)
        .filter(|l| world.stock(l, product.index, 0, BLACK_FRIDAY) > 0)
        .collect();
    assert_eq!(stock.records.len(), stores.len());
    for (record, store) in stock.records.iter().zip(&stores) {
        let units = world.stock(store, product.index, 0, BLACK_FRIDAY);
        assert_eq!(
            record["location_id"],
            json!(format!("voltmart:{}", store.native_id))
        );
        assert_eq!(record["fulfillment"], "pickup");
        let band = if units < 4 { "low" } else { "some" };
        assert_eq!(record["available"], json!({"kind": "band", "band": band}));
    }

    // The store list: two pages of five.
    let locations = c
        .call(Capability::LocationsList, &json!({}), "rt-5", deadline())
        .await
        .expect("locations");
    typed_as_mapped(&locations);
    let all: Vec<_> = world.locations_of(Partner::Voltmart).collect();
    assert_eq!(locations.stats.pages, 2);
    assert_eq!(locations.records.len(), all.len());
    for (record, l) in locations.records.iter().zip(&all) {
        assert_eq!(
            record["location_id"],
            json!(format!("voltmart:{}", l.native_id))
        );
        assert_eq!(record["time_zone"], json!(l.time_zone));
        assert_eq!(record["address"]["postal_code"], json!(l.postal_code));
        let lat = record["geo"]["lat"].as_f64().expect("lat");
        assert!(
            distance_km(
                lat,
                record["geo"]["lon"].as_f64().expect("lon"),
                l.lat,
                l.lon
            ) < 0.01
        );
    }
}

/// Drift (a renamed `salePrice`) drops every record with a warning; none has a wrong price,
/// and a reply of which every record was dropped is a failed call (`mapping`), not an
/// empty success.
#[tokio::test]
async fn schema_drift_drops_records_with_warnings() {
    let h = Harness::start().await;
    for r in h.fleet.replicas(Partner::Voltmart) {
        r.state.faults.set(Faults {
            drift: true,
            ..Faults::default()
        });
    }
    let c = h.connector(Partner::Voltmart);
    let err = c
        .call(
            Capability::CatalogSearch,
            &json!({"q": "laptop"}),
            "rt-6",
            deadline(),
        )
        .await
        .expect_err("nothing valid came back");
    let ConnectorError::MappingRejected { dropped, first } = &err else {
        panic!("{err}")
    };
    assert!(*dropped > 0);
    assert!(first.contains("dropped"), "{first}");
    assert!(!err.is_retryable(), "the same reply drops the same records");
}

// --- Threadline ---------------------------------------------------------------------

/// Lossy in Threadline's dialect: `body_html`, `tags` and images are not mapped; the stale
/// `weight` is replaced by `grams` (the documented rule) with a warning.
#[tokio::test]
async fn threadline_catalog_link_pages_weights_and_options() {
    let h = Harness::start().await;
    let c = h.connector(Partner::Threadline);
    let world = h.fleet.world();
    let out = c
        .call(
            Capability::CatalogSearch,
            &json!({"q": "rain jacket"}),
            "rt-7",
            deadline(),
        )
        .await
        .expect("search");
    typed_as_mapped(&out);
    let truth: Vec<_> = world
        .listed_by(Partner::Threadline)
        .filter(|(p, _)| p.title.to_lowercase().contains("rain jacket"))
        .collect();
    assert!(out.stats.pages >= 1);
    assert_eq!(out.records.len(), truth.len(), "{:?}", out.warnings.first());
    let mut disagreements = 0;
    for (record, (product, listing)) in out.records.iter().zip(&truth) {
        assert_eq!(
            record["product_id"],
            json!(format!("threadline:{}", listing.native_id))
        );
        let warned: Vec<&Value> = record["provenance"]["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter(|w| w["code"] == "weight_disagreement")
                    .collect()
            })
            .unwrap_or_default();
        let variants = record["variants"].as_array().expect("variants");
        assert_eq!(variants.len(), product.variants.len());
        for (i, (v, truth)) in variants.iter().zip(&product.variants).enumerate() {
            assert_eq!(
                v["weight"]["grams"].as_f64(),
                Some(f64::from(truth.weight_g)),
                "grams wins"
            );
            let options: BTreeMap<String, String> = truth.options.iter().cloned().collect();
            assert_eq!(v["options"], json!(options));
            assert_eq!(v["gtin"].as_str(), truth.gtin14().as_deref());
            assert_eq!(
                v["sku"],
                json!(threadline::inventory_item_id(product, i).to_string())
            );
            assert_eq!(minor(&v["offers"][0]["price"]), listing.price_cents);
            let stock: i64 = world
                .locations_of(Partner::Threadline)
                .map(|l| world.stock(l, product.index, i, BLACK_FRIDAY))
                .sum();
            let expected = if stock > 0 {
                "in_stock"
            } else {
                "out_of_stock"
            };
            assert_eq!(v["offers"][0]["availability"], expected);
        }
        let expected_warnings = (0..product.variants.len())
            .filter(|i| threadline::weight_disagrees(product, *i))
            .count();
        assert_eq!(warned.len(), expected_warnings, "{}", record["provenance"]);
        disagreements += expected_warnings;
    }
    assert!(disagreements > 0, "the sample includes stale weights");

    // A product without options ("Default Title") maps to no options.
    let out = c
        .call(
            Capability::CatalogSearch,
            &json!({"q": "laptop"}),
            "rt-8",
            deadline(),
        )
        .await
        .expect("search");
    typed_as_mapped(&out);
    assert!(!out.records.is_empty());
    assert!(
        out.records
            .iter()
            .all(|r| r["variants"][0].get("options").is_none())
    );
}

#[tokio::test]
async fn threadline_inventory_keeps_negative_available_and_incoming_apart() {
    let h = Harness::start().await;
    let c = h.connector(Partner::Threadline);
    let world = h.fleet.world();
    let locations = c
        .call(Capability::LocationsList, &json!({}), "rt-9", deadline())
        .await
        .expect("locations");
    typed_as_mapped(&locations);
    assert_eq!(
        locations.records.len(),
        world.locations_of(Partner::Threadline).count()
    );
    let mut negative = 0;
    let mut incoming = 0;
    for (product, _) in world.listed_by(Partner::Threadline).take(12) {
        for vi in 0..product.variants.len().min(3) {
            let item = threadline::inventory_item_id(product, vi).to_string();
            let out = c
                .call(
                    Capability::InventoryGet,
                    &json!({"sku": item}),
                    "rt-10",
                    deadline(),
                )
                .await
                .expect("inventory");
            typed_as_mapped(&out);
            let truth: Vec<_> = world.locations_of(Partner::Threadline).collect();
            assert_eq!(out.records.len(), truth.len());
            for (record, l) in out.records.iter().zip(&truth) {
                let available = world.stock(l, product.index, vi, BLACK_FRIDAY);
                let coming = world.incoming(l, product.index, vi, BLACK_FRIDAY);
                assert_eq!(
                    record["location_id"],
                    json!(format!("threadline:{}", threadline::location_id(l)))
                );
                assert_eq!(
                    record["available"],
                    json!({"kind": "exact", "quantity": available})
                );
                assert_eq!(record["incoming"].as_i64().unwrap_or(0), coming);
                negative += usize::from(available < 0);
                incoming += usize::from(coming > 0);
            }
        }
    }
    assert!(negative > 0, "oversold stock stays negative");
    assert!(
        incoming > 0,
        "incoming is reported apart, never added to available"
    );
}

/// 429 surfaces as a retryable error carrying the partner's delay, and blocks the partner
/// for that long; bursts are shed locally instead of overflowing the partner's bucket.
#[tokio::test]
async fn rate_limits_surface_with_their_delay() {
    let h = Harness::start().await;
    h.fleet.replicas(Partner::Threadline)[0]
        .state
        .faults
        .set(Faults {
            rate_limit_rate: 1.0,
            retry_after_s: 3,
            ..Faults::default()
        });
    let c = h.connector(Partner::Threadline);
    let err = c
        .call(Capability::LocationsList, &json!({}), "rt-11", deadline())
        .await
        .expect_err("429");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        err.retry_after(),
        Some(std::time::Duration::from_secs(3)),
        "{err}"
    );

    // The 429 blocks the partner for its Retry-After: the next call is refused locally,
    // without reaching the partner.
    h.fleet.replicas(Partner::Threadline)[0]
        .state
        .faults
        .set(Faults::default());
    let err = c
        .call(Capability::LocationsList, &json!({}), "rt-12", deadline())
        .await
        .expect_err("still blocked");
    let wait = err.retry_after().expect("a delay");
    assert!(wait <= std::time::Duration::from_secs(3), "{err}");
    tokio::time::sleep(wait).await;

    // Threadline's own bucket takes 40 calls; the connector's stack keeps it from ever
    // answering 429: beyond `max_concurrency: 8` calls are shed at once, and the rate
    // limit paces the rest.
    let calls = (0..60).map(|i| {
        let c = &c;
        async move {
            c.call(
                Capability::LocationsList,
                &json!({}),
                &format!("burst-{i}"),
                deadline(),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok >= 8, "the first 8 go through: {ok}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(e, ConnectorError::Shed { limit: 8 }), "{e}");
    }
}

// --- Acme ----------------------------------------------------------------------------

/// Lossy in Acme's dialect: one variant per item (Acme lists the first variant); stock is
/// clamped at zero by the partner.
#[tokio::test]
async fn acme_cursor_crawl_with_a_token_expiring_midway() {
    let h = Harness::start().await;
    // Every token dies after 3 accepted requests: the 7-page crawl must refresh twice.
    h.fleet.tokens().set_max_uses(Partner::Acme, 3);
    let c = h.connector(Partner::Acme);
    let out = c
        .call(Capability::CatalogSearch, &json!({}), "rt-12", deadline())
        .await
        .expect("crawl");
    let truth: Vec<_> = h.fleet.world().listed_by(Partner::Acme).collect();
    assert_eq!(out.stats.pages, 7);
    assert_eq!(out.records.len(), truth.len(), "{:?}", out.warnings.first());
    assert_eq!(out.stats.token_refreshes, 2, "{:?}", out.stats);
    assert_eq!(h.fleet.tokens().issued(Partner::Acme), 3);
    assert_eq!(c.resources().token_requests(), 3);
    for (record, (product, listing)) in out.records.iter().zip(&truth) {
        let v = &product.variants[0];
        assert_eq!(record["title"], json!(product.title));
        assert_eq!(record["category"], json!(product.category));
        assert_eq!(
            record["variants"][0]["gtin"].as_str(),
            v.gtin14().as_deref()
        );
        if v.gtin14().is_none() {
            assert_eq!(
                record["variants"][0]["gtin_raw"],
                json!(acme::gtin(product))
            );
        }
        let offer = &record["variants"][0]["offers"][0];
        assert_eq!(minor(&offer["price"]), listing.price_cents);
        let as_of: jiff::Timestamp = offer["provenance"]["as_of"]
            .as_str()
            .expect("as_of")
            .parse()
            .expect("RFC 3339");
        assert_eq!(
            as_of.as_second(),
            listing.updated_s,
            "epoch ms read exactly"
        );
    }
}

#[tokio::test]
async fn concurrent_calls_share_one_token_request() {
    let h = Harness::start().await;
    let c = h.connector(Partner::Acme);
    let (product, _) = h
        .fleet
        .world()
        .listed_by(Partner::Acme)
        .find(|(p, _)| p.variants[0].upc.is_some())
        .expect("an item with a GTIN");
    let gtin = product.variants[0].gtin14().expect("gtin");
    let calls = (0..16).map(|i| {
        let c = &c;
        let gtin = gtin.clone();
        async move {
            c.call(
                Capability::InventoryGet,
                &json!({"gtin": gtin}),
                &format!("c-{i}"),
                deadline(),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let warehouses: Vec<_> = h.fleet.world().locations_of(Partner::Acme).collect();
    for r in &results {
        let out = r.as_ref().expect("inventory");
        assert_eq!(out.records.len(), warehouses.len());
        for (record, l) in out.records.iter().zip(&warehouses) {
            let units = h
                .fleet
                .world()
                .stock(l, product.index, 0, BLACK_FRIDAY)
                .max(0);
            assert_eq!(record["available"]["quantity"], json!(units));
            assert_eq!(
                record["location_id"],
                json!(format!("acme:{}", acme::ship_node(l)))
            );
            assert_eq!(record["gtin"], json!(gtin));
        }
    }
    assert_eq!(
        h.fleet.tokens().issued(Partner::Acme),
        1,
        "one token, not a stampede"
    );
    assert_eq!(c.resources().token_requests(), 1);
}

// --- Northwind -----------------------------------------------------------------------

/// Lossy in Northwind's dialect: on-hand is only a total (not per warehouse); quantities
/// are never negative.
#[tokio::test]
async fn northwind_edi_stock_and_the_control_total() {
    let h = Harness::start().await;
    let c = h.connector(Partner::Northwind);
    let world = h.fleet.world();
    let carried: Vec<_> = northwind::carried(world)
        .filter(|p| p.variants[0].upc.is_some())
        .take(5)
        .collect();
    let warehouses: Vec<_> = world.locations_of(Partner::Northwind).collect();
    for product in &carried {
        let gtin = product.variants[0].gtin14().expect("gtin");
        let out = c
            .call(
                Capability::InventoryGet,
                &json!({"gtin": gtin}),
                "rt-13",
                deadline(),
            )
            .await
            .expect("inventory");
        typed_as_mapped(&out);
        assert_eq!(out.records.len(), warehouses.len(), "{:?}", out.warnings);
        for (record, l) in out.records.iter().zip(&warehouses) {
            let units = northwind::available(world, l, product, BLACK_FRIDAY);
            assert_eq!(
                record["available"],
                json!({"kind": "exact", "quantity": units})
            );
            assert_eq!(
                record["location_id"],
                json!(format!("northwind:{}", northwind::location_code(l)))
            );
            assert_eq!(record["sku"], json!(northwind::vendor_part(product)));
            let restock = northwind::restock_date(world, product, BLACK_FRIDAY)
                .map(|d| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]));
            assert_eq!(record["restock_date"].as_str(), restock.as_deref());
        }
    }
    // A document whose CTT01 does not match its LIN lines is refused whole.
    for r in h.fleet.replicas(Partner::Northwind) {
        r.state.faults.set(Faults {
            drift: true,
            ..Faults::default()
        });
    }
    let gtin = carried[0].variants[0].gtin14().expect("gtin");
    let err = c
        .call(
            Capability::InventoryGet,
            &json!({"gtin": gtin}),
            "rt-14",
            deadline(),
        )
        .await
        .expect_err("control total mismatch");
    assert!(
        matches!(&err, ConnectorError::Decode { reason, .. } if reason.contains("CTT01")),
        "{err}"
    );
    assert!(!err.is_retryable());
}

// --- Carriers ------------------------------------------------------------------------

fn rate_query(from: &str, to: &str, weights: &[u32]) -> Value {
    json!({
        "from": {"postal_code": from, "country": "US"},
        "to": {"postal_code": to, "country": "US"},
        "parcels": weights.iter().map(|w| json!({"weight_g": w})).collect::<Vec<_>>(),
    })
}

/// Lossy in ParcelPost's dialect: no `guaranteed` flag, only the slowest commitment day.
#[tokio::test]
async fn parcelpost_rates_never_turn_a_failure_into_free_shipping() {
    let h = Harness::start().await;
    let c = h.connector(Partner::ParcelPost);
    for (from, to) in [("50309", "60601"), ("02108", "98101")] {
        let weights = [1000, 2500];
        let out = c
            .call(
                Capability::RatesQuote,
                &rate_query(from, to, &weights),
                "rt-15",
                deadline(),
            )
            .await
            .expect("rates");
        typed_as_mapped(&out);
        let truth = shipping::quotes(Partner::ParcelPost, from, to, &weights);
        let ok: Vec<_> = truth.iter().filter(|q| q.failed.is_none()).collect();
        assert_eq!(out.records.len(), ok.len(), "{:?}", out.warnings);
        for record in &out.records {
            let q = ok
                .iter()
                .find(|q| record["service_code"] == q.service_code)
                .expect("a service that quoted");
            assert_eq!(record["service_name"], q.service_name, "unescaped twice");
            assert_eq!(
                minor(&record["total"]),
                q.total_cents,
                "summed over parcels"
            );
            assert!(minor(&record["total"]) > 0);
            assert_eq!(record["transit_days"]["max"], q.transit_days.1);
        }
        let failed = truth.iter().filter(|q| q.failed.is_some()).count();
        assert_eq!(out.warnings.len(), failed);
        for w in &out.warnings {
            assert!(w.message.contains("not available"), "{}", w.message);
        }
    }
}

#[tokio::test]
async fn carriers_tracking_statuses_and_not_found_in_200() {
    let h = Harness::start().await;
    let world = h.fleet.world();
    for carrier in [Partner::ParcelPost, Partner::SwiftShip] {
        let c = h.connector(carrier);
        let mut statuses = std::collections::BTreeSet::new();
        for parcel in world.parcels.iter().filter(|s| s.carrier == carrier) {
            let out = c
                .call(
                    Capability::TrackingGet,
                    &json!({"tracking_number": parcel.tracking_number}),
                    "rt-16",
                    deadline(),
                )
                .await
                .expect("tracking");
            typed_as_mapped(&out);
            assert_eq!(out.records.len(), 1, "{:?}", out.warnings);
            let record = &out.records[0];
            let status = serde_json::to_value(parcel.status()).expect("status");
            assert_eq!(
                record["status"], status,
                "{} {}",
                parcel.tracking_number, record
            );
            statuses.insert(status.as_str().expect("text").to_owned());
            let events = record["events"].as_array().expect("events");
            assert_eq!(events.len(), parcel.events.len());
            // Newest first; events sharing an instant may come in either order.
            let mut got: Vec<String> = events.iter().map(|e| e["status"].to_string()).collect();
            let mut want: Vec<String> = parcel
                .events
                .iter()
                .rev()
                .map(|e| {
                    serde_json::to_value(e.step.status())
                        .expect("status")
                        .to_string()
                })
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want);
            if carrier == Partner::SwiftShip {
                for (e, truth) in events.iter().zip(parcel.events.iter().rev()) {
                    if parcel.with_offset {
                        assert_eq!(e["time"]["kind"], "zoned");
                        let t: jiff::Timestamp = e["time"]["value"]
                            .as_str()
                            .expect("value")
                            .parse()
                            .expect("instant");
                        assert_eq!(t.as_second(), truth.unix_s);
                    } else {
                        assert_eq!(e["time"]["kind"], "local", "no zone is invented");
                    }
                    if truth.step == Step::Unmapped {
                        assert_eq!(e["status"], "unknown");
                        assert_eq!(e["raw_code"], "ZR");
                    }
                }
            }
        }
        assert!(statuses.len() >= 12, "{carrier:?}: {statuses:?}");
        let missing = c
            .call(
                Capability::TrackingGet,
                &json!({"tracking_number": unknown_tracking_number(carrier)}),
                "rt-17",
                deadline(),
            )
            .await
            .expect("a 200 that says not found");
        assert!(missing.not_found, "{carrier:?}");
    }
}

/// Lossy in SwiftShip's dialect: nothing the unified rate carries.
#[tokio::test]
async fn swiftship_rates_with_charges() {
    let h = Harness::start().await;
    let c = h.connector(Partner::SwiftShip);
    let weights = [1250, 3000];
    let out = c
        .call(
            Capability::RatesQuote,
            &rate_query("50309", "10001", &weights),
            "rt-18",
            deadline(),
        )
        .await
        .expect("rates");
    typed_as_mapped(&out);
    let truth = shipping::quotes(Partner::SwiftShip, "50309", "10001", &weights);
    assert_eq!(out.records.len(), truth.len(), "{:?}", out.warnings);
    for (record, q) in out.records.iter().zip(&truth) {
        assert_eq!(record["service_code"], q.service_code);
        assert_eq!(minor(&record["total"]), q.total_cents);
        assert_eq!(minor(&record["charges"][0]["amount"]), q.base_cents);
        assert_eq!(record["charges"][1]["kind"], "fuel");
        assert_eq!(minor(&record["charges"][1]["amount"]), q.fuel_cents);
        assert_eq!(record["guaranteed"], q.guaranteed);
        assert_eq!(record["transit_days"]["max"], q.transit_days.1);
    }
}

// --- Errors and secrets --------------------------------------------------------------

/// No secret value appears in errors, warnings or `Debug` output, whatever fails.
#[tokio::test]
async fn secrets_never_appear_in_errors_warnings_or_debug() {
    let h = Harness::start().await;
    const CANARY: &str = "canary-7f3e91-secret";
    // Wrong-but-recognizable credentials for a query-key, a basic and an OAuth2 partner.
    h.secrets.set("voltmart", "voltmart-api-key", CANARY);
    h.secrets.set("northwind", "northwind-password", CANARY);
    h.secrets.set("acme", "acme-client-secret", CANARY);
    let mut seen = Vec::new();
    for (partner, capability, query) in [
        (
            Partner::Voltmart,
            Capability::CatalogSearch,
            json!({"q": "tv"}),
        ),
        (
            Partner::Northwind,
            Capability::InventoryGet,
            json!({"gtin": "00012345678905"}),
        ),
        (Partner::Acme, Capability::CatalogSearch, json!({})),
    ] {
        let c = h.connector(partner);
        let err = c
            .call(capability, &query, "rt-19", deadline())
            .await
            .expect_err("the partner refuses the canary");
        assert!(!err.is_retryable(), "{err}");
        seen.push(format!("{err} {err:?} {c:?} {:?}", c.resources()));
    }
    // A refused connection with the key in the query: the URL in the error is redacted.
    h.secrets.set("voltmart", "voltmart-api-key", CANARY);
    for r in h.fleet.replicas(Partner::Voltmart) {
        r.stop().await;
    }
    let c = h.connector(Partner::Voltmart);
    let err = c
        .call(
            Capability::CatalogSearch,
            &json!({"q": "tv"}),
            "rt-20",
            deadline(),
        )
        .await
        .expect_err("stopped");
    assert!(err.is_retryable() && err.is_connect_failure(), "{err}");
    seen.push(format!("{err} {err:?}"));
    // Warnings of a partly bad page carry no secret either.
    for r in h.fleet.replicas(Partner::Voltmart) {
        r.restart().await.expect("restart");
        r.state.faults.set(Faults {
            drift: true,
            ..Faults::default()
        });
    }
    h.secrets.set(
        "voltmart",
        "voltmart-api-key",
        mallgate_partner_sim::partners::voltmart::API_KEY,
    );
    let err = c
        .call(
            Capability::CatalogSearch,
            &json!({"q": "tv"}),
            "rt-21",
            deadline(),
        )
        .await
        .expect_err("every record drifted");
    seen.push(format!("{err} {err:?}"));
    for text in &seen {
        assert!(!text.contains(CANARY), "a secret leaked: {text}");
        assert!(
            !text.contains(mallgate_partner_sim::partners::voltmart::API_KEY),
            "a secret leaked: {text}"
        );
    }
}

/// A 5xx is retryable; a 4xx is not; a missing secret names its reference only.
#[tokio::test]
async fn error_classes() {
    let h = Harness::start().await;
    for r in h.fleet.replicas(Partner::SwiftShip) {
        r.state.faults.set(Faults {
            error_rate: 1.0,
            ..Faults::default()
        });
    }
    let c = h.connector(Partner::SwiftShip);
    let err = c
        .call(
            Capability::TrackingGet,
            &json!({"tracking_number": unknown_tracking_number(Partner::SwiftShip)}),
            "rt-22",
            deadline(),
        )
        .await
        .expect_err("500");
    assert!(
        matches!(
            err,
            ConnectorError::Token {
                retryable: true,
                ..
            }
        ),
        "{err}"
    );
    for r in h.fleet.replicas(Partner::ParcelPost) {
        r.state.faults.set(Faults {
            error_rate: 1.0,
            ..Faults::default()
        });
    }
    let err = h
        .connector(Partner::ParcelPost)
        .call(
            Capability::TrackingGet,
            &json!({"tracking_number": "x"}),
            "rt-25",
            deadline(),
        )
        .await
        .expect_err("500");
    assert!(
        matches!(err, ConnectorError::PartnerStatus { status: 500, .. }) && err.is_retryable(),
        "{err}"
    );
    for r in h.fleet.replicas(Partner::ParcelPost) {
        r.state.faults.set(Faults::default());
    }

    let c = h.connector(Partner::ParcelPost);
    let err = c
        .call(Capability::TrackingGet, &json!({}), "rt-23", deadline())
        .await
        .expect_err("no tracking number: the template cannot be filled");
    // TrackID is left out, so ParcelPost answers its own XML error in a 200.
    assert!(
        matches!(err, ConnectorError::PartnerReported { .. }),
        "{err}"
    );

    let bare = mallgate_connectors::runtime::secrets::MemorySecretStore::new();
    let c = mallgate_connectors::runtime::connector_from_spec(
        &h.text(Partner::ParcelPost),
        1,
        mallgate_connectors::Owner::Partner("parcelpost".into()),
        h.resources(Partner::ParcelPost),
        std::sync::Arc::new(bare),
        std::sync::Arc::clone(&h.pool),
    )
    .expect("loads");
    let err = c
        .call(
            Capability::TrackingGet,
            &json!({"tracking_number": "x"}),
            "rt-24",
            deadline(),
        )
        .await
        .expect_err("no secret");
    assert!(
        matches!(&err, ConnectorError::Secret { reference, .. } if reference == "secret:parcelpost-user-id"),
        "{err}"
    );
    assert!(!err.is_retryable());
}
