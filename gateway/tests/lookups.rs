//! Lookups as a frontend makes them: by a native id taken from an offer, and a tracking
//! number whose record the connector's mapping cannot produce. The answer tells the truth:
//! the product the id names, and a failed source (not "no such parcel").

use mallgate_testkit as support;

use mallgate_partner_sim::Partner;
use support::Mall;

/// A product with a GTIN is `gtin:…`, but its offers carry the partner's native id: that id
/// resolves to the product, answered with its canonical id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_id_resolves_to_its_product() {
    let mall = Mall::start().await;
    let world = mall.fleet.world();
    let (product, listing) = world
        .products
        .iter()
        .filter(|p| p.variants.len() == 1 && p.variants[0].gtin14().is_some())
        .find_map(|p| {
            p.listings
                .iter()
                .find(|l| l.partner == Partner::Voltmart)
                .map(|l| (p, l))
        })
        .expect("Voltmart sells a product with a GTIN");
    let gtin = product.variants[0].gtin14().expect("gtin");
    let native = format!("voltmart:{}", listing.native_id);

    let a = mall.get(&format!("/v1/products/{native}")).await;
    assert_eq!(a.status, 200, "{native}: {}", a.body);
    assert_eq!(a.body["data"]["product_id"], format!("gtin:{gtin}"));
    let offers: Vec<&str> = a.body["data"]["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .flat_map(|v| v["offers"].as_array().into_iter().flatten())
        .filter_map(|o| o["offer_id"].as_str())
        .collect();
    assert!(offers.contains(&native.as_str()), "{offers:?}");
    assert_eq!(a.outcome("voltmart"), Some("live"));

    // An id the partner does not know is still a 404.
    let unknown = mall.get("/v1/products/voltmart:99999999").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    // A partner with no catalog (Northwind's stock feed) knows no product: 404, not 503.
    let feed = mall.get("/v1/products/northwind:NW-1").await;
    assert_eq!(feed.status, 404, "{}", feed.body);
    assert!(
        feed.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("serves no catalog")),
        "{}",
        feed.body
    );
}

/// A ParcelPost mapping patched by `patch`, and one parcel ParcelPost knows.
async fn patched_parcelpost(from: &str, to: &str) -> (Mall, String) {
    let (from, to) = (from.to_owned(), to.to_owned());
    let mall = Mall::start_with(move |partner, text| {
        if partner == Partner::ParcelPost {
            assert!(text.contains(&from), "the patch applies");
            text.replace(&from, &to)
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
        .expect("a ParcelPost parcel")
        .tracking_number
        .clone();
    (mall, parcel)
}

/// The carrier found the parcel (its reply holds the record) and the answer is a 503 whose
/// only source failed with `mapping`, naming the parcel — never 404 "knows no parcel".
async fn assert_mapping_failure(mall: &Mall, parcel: &str) {
    let a = mall.get(&format!("/v1/tracking/parcelpost/{parcel}")).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(
        a.body["type"], "https://mallgate.dev/problems/partners-unavailable",
        "{}",
        a.body
    );
    let source = &a.body["sources"][0];
    assert_eq!(source["outcome"], "failed", "{source}");
    assert_eq!(source["error"]["code"], "mapping", "{source}");
    assert!(a.header("retry-after").is_some());
    // A number the carrier does not know stays a 404.
    let unknown = mall
        .get(&format!(
            "/v1/tracking/parcelpost/{}",
            mallgate_partner_sim::shipping::unknown_tracking_number(Partner::ParcelPost)
        ))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

const STATUS: &str = "status: ($events[0].status // \"unknown\"),";

/// The map produces nothing from the carrier's record (a value that is `empty`): the
/// partner found the parcel, the mapping failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_record_the_map_produced_nothing_from_is_a_mapping_failure_not_a_404() {
    let (mall, parcel) = patched_parcelpost(
        STATUS,
        "status: ($events[0].status | if . then empty else . end),",
    )
    .await;
    assert_mapping_failure(&mall, &parcel).await;
}

/// The map produces a record the schema refuses (a status that is not one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_record_the_schema_refused_is_a_mapping_failure_not_a_404() {
    let (mall, parcel) = patched_parcelpost(STATUS, "status: \"lost_in_space\",").await;
    assert_mapping_failure(&mall, &parcel).await;
}
