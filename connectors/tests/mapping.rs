//! Per-record mapping of whole partner replies with the real connectors of
//! `connectors/partners/`: decode, select, map each record, validate; a bad record drops
//! alone and is named.

mod support;

use std::time::{Duration, Instant};

use mallgate_connectors::decode::Limits;
use mallgate_connectors::mapping::{CapabilityMapping, ConnectorPrograms, Globals, MappedPage};
use mallgate_connectors::{Capability, ConnectorError, ConnectorSpec, Format, Owner};
use serde_json::{Value, json};
use support::voltmart_page::{XML_MAP, XML_RECORDS, json_page, xml_page};

fn connector(file: &str) -> ConnectorPrograms {
    let path = format!("{}/partners/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("connector file");
    let (_, programs) = ConnectorSpec::load_compiled(&text, Format::Yaml, &Owner::Operator)
        .expect("valid connector");
    programs
}

fn globals(query: Value) -> Globals {
    Globals {
        provenance: json!({"partner_id": "voltmart", "connector_id": "voltmart", "connector_version": 3, "fetched_at": "2026-11-27T14:03:00Z"}),
        query,
        locations: json!({}),
    }
}

fn map(mapping: &CapabilityMapping, body: &[u8]) -> Result<MappedPage, ConnectorError> {
    mapping.map_reply(
        body,
        &Limits::default(),
        &globals(json!({"q": "tv"})),
        Instant::now() + Duration::from_secs(30),
    )
}

fn search(programs: &ConnectorPrograms) -> &CapabilityMapping {
    &programs.capabilities[&Capability::CatalogSearch].mapping
}

#[test]
fn a_full_page_maps_to_valid_records() {
    let voltmart = connector("voltmart.yaml");
    let body = serde_json::to_vec(&json_page(100)).expect("json");
    let page = map(search(&voltmart), &body).expect("page");
    assert_eq!(
        (page.selected, page.records.len(), page.dropped.len()),
        (100, 100, 0)
    );
    let first = &page.records[0];
    assert_eq!(
        first["title"], "Voltmart 4K TV 0\" class",
        "clean_text squeezed the name"
    );
    assert_eq!(
        first["product_id"],
        format!("gtin:00{}", support::voltmart_page::upc(0))
    );
    let offer = &first["variants"][0]["offers"][0];
    assert_eq!(
        offer["price"],
        json!({"amount_minor": 84999, "currency": "USD"})
    );
    assert_eq!(offer["availability"], "out_of_stock");
    assert_eq!(offer["provenance"]["connector_version"], 3);
}

#[test]
fn one_bad_record_in_a_hundred_drops_only_itself() {
    let voltmart = connector("voltmart.yaml");
    let mut reply = json_page(100);
    // Record 17: a price no money rule reads (the map fails on it).
    reply["products"][17]["salePrice"] = json!("call us");
    // Record 42: maps, but the result breaks the schema (an empty title).
    reply["products"][42]["name"] = json!("   ");
    let body = serde_json::to_vec(&reply).expect("json");
    let page = map(search(&voltmart), &body).expect("page");
    assert_eq!((page.selected, page.records.len()), (100, 98));
    let messages: Vec<&str> = page.dropped.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with(
            "record 17 (`6500017`) dropped: the map failed: money: `call us` is not a money amount"
        ),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with("record 42 (`6500042`) dropped: ")
            && messages[1].contains("/title"),
        "{}",
        messages[1]
    );
    assert!(page.dropped.iter().all(|w| w.code == "record_dropped"));
    let skus: Vec<&Value> = page
        .records
        .iter()
        .map(|r| &r["variants"][0]["sku"])
        .collect();
    assert!(!skus.contains(&&json!("6500017")) && !skus.contains(&&json!("6500042")));
    assert!(skus.contains(&&json!("6500018")));
}

#[test]
fn prelude_warnings_travel_with_their_record() {
    let voltmart = connector("voltmart.yaml");
    let mut reply = json_page(3);
    reply["products"][1]["salePrice"] = json!("12.995");
    reply["products"][2]["upc"] = json!("123456789013");
    let body = serde_json::to_vec(&reply).expect("json");
    let page = map(search(&voltmart), &body).expect("page");
    assert_eq!(page.records.len(), 3);
    let codes = |r: &Value| -> Vec<String> {
        r["provenance"]["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|w| w["code"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(codes(&page.records[0]), Vec::<String>::new());
    assert_eq!(codes(&page.records[1]), ["sub_unit_amount"]);
    assert_eq!(codes(&page.records[2]), ["invalid_gtin"]);
    // An invalid GTIN is kept raw and never becomes a gtin: identity.
    assert_eq!(page.records[2]["product_id"], "voltmart:6500002");
    assert_eq!(page.records[2]["variants"][0]["gtin_raw"], "123456789013");
}

#[test]
fn the_xml_dialect_maps_to_the_same_records() {
    let voltmart = connector("voltmart.yaml");
    let json_records = map(
        search(&voltmart),
        &serde_json::to_vec(&json_page(20)).expect("json"),
    )
    .expect("json page")
    .records;
    let spec: mallgate_connectors::spec::CapabilitySpec = serde_json::from_value(json!({
        "request": {"path": "/v1/products"},
        "decode": "xml",
        "records": XML_RECORDS,
        "map": XML_MAP,
    }))
    .expect("spec");
    let xml = CapabilityMapping::compile(Capability::CatalogSearch, &spec).expect("compiles");
    let xml_records = map(&xml, xml_page(20).as_bytes())
        .expect("xml page")
        .records;
    assert_eq!(xml_records.len(), 20);
    for (x, j) in xml_records.iter().zip(&json_records) {
        assert_eq!(x["product_id"], j["product_id"]);
        assert_eq!(x["title"], j["title"]);
        assert_eq!(
            x["variants"][0]["offers"][0]["price"],
            j["variants"][0]["offers"][0]["price"]
        );
        assert_eq!(x["category"], j["category"]);
    }
}

#[test]
fn reply_rules_and_malformed_replies() {
    let voltmart = connector("voltmart.yaml");
    let get = &voltmart.capabilities[&Capability::CatalogGet].mapping;
    let page = map(get, br#"{"products": []}"#).expect("not found is data");
    assert!(page.not_found);
    assert!(page.records.is_empty());

    // Schema drift: the envelope renamed `products` to `items`.
    let err = map(search(&voltmart), br#"{"items": [{"sku": 1}]}"#).expect_err("drift");
    assert!(
        matches!(&err, ConnectorError::MalformedReply { reason } if reason.contains("records selector failed")),
        "{err}"
    );
    assert!(!err.is_retryable());
    // A truncated body is a decode error, never a panic.
    let err = map(search(&voltmart), br#"{"products": [{"sku": 1"#).expect_err("truncated");
    assert!(matches!(err, ConnectorError::Decode { .. }), "{err}");

    let parcelpost = connector("parcelpost.yaml");
    let rates = &parcelpost.capabilities[&Capability::RatesQuote].mapping;
    let err = map(
        rates,
        b"<Error><Number>-2147219040</Number><Description>Invalid ZIP</Description></Error>",
    )
    .expect_err("error rule");
    assert!(
        matches!(&err, ConnectorError::PartnerReported { message } if message == "Invalid ZIP"),
        "{err}"
    );
}

#[test]
fn an_overrunning_map_is_an_overrun_not_a_dropped_record() {
    let spec: mallgate_connectors::spec::CapabilitySpec = serde_json::from_value(json!({
        "request": {"path": "/p"},
        "records": ".[]",
        "map": "range(20000) | {}",
    }))
    .expect("spec");
    let mapping = CapabilityMapping::compile(Capability::CatalogSearch, &spec).expect("compiles");
    let err = map(&mapping, b"[1]").expect_err("overrun");
    assert!(
        matches!(err, ConnectorError::MappingOverrun { .. }),
        "{err}"
    );
}

#[test]
fn every_partner_connector_compiles() {
    let dir = format!("{}/partners", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("partners dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    for name in &names {
        let programs = connector(name);
        assert!(!programs.capabilities.is_empty(), "{name}");
    }
}

/// A pass-through connector: partners that already answer in the unified schema.
fn pass_through(records: &str, map: &str) -> ConnectorPrograms {
    let text = format!(
        "id: passthrough\npartner: voltmart\nkind: retailer\nendpoints:\n  - url: https://partner.example\ncapabilities:\n  catalog.search:\n    request:\n      path: /products\n    records: {records}\n    map: \"{map}\"\n"
    );
    let (_, programs) = ConnectorSpec::load_compiled(&text, Format::Yaml, &Owner::Operator)
        .expect("valid connector");
    programs
}

#[test]
fn a_pass_through_reads_small_replies_inline_exactly_as_jq_does() {
    let voltmart = connector("voltmart.yaml");
    let body = serde_json::to_vec(&json_page(6)).expect("json");
    let mut products = map(search(&voltmart), &body).expect("page").records;
    // Integral decimals: jq reads `7124.0` as the integer 7124; the inline reader must too.
    products[0]["variants"][0]["weight"] = json!({"grams": 7124.0});
    // One record breaks the schema, one is not an object: each drops alone, named alike.
    products[1]["title"] = json!("");
    products.push(json!(42));
    let reply = json!({"data": {"products": products}});
    let body = serde_json::to_vec(&reply).expect("json");

    let programs = pass_through(".data.products[]", ".");
    let mapping = search(&programs);
    let inline = mapping
        .map_inline(&body, &Limits::default(), &globals(json!({"q": "tv"})))
        .expect("a pass-through reads this inline");
    assert_eq!(inline, map(mapping, &body).expect("page"), "inline = jq");
    assert_eq!(
        (inline.selected, inline.records.len(), inline.dropped.len()),
        (7, 5, 2)
    );
    assert_eq!(inline.typed.len(), 5, "records come typed");
    assert_eq!(
        inline.records[0]["variants"][0]["weight"]["grams"],
        json!(7124)
    );
    assert!(inline.dropped[0].message.starts_with("record 1"));
    assert!(inline.dropped[1].message.contains("not an object"));

    // Where jq would fail, or order could differ, the inline reader steps aside and the
    // pool's jq reports the exact error.
    for odd in [
        json!({"data": {"products": {"a": reply["data"]["products"][0]}}}),
        json!({"data": null}),
        json!({"data": {"products": [{"n": 18446744073709551615u64}]}}),
    ] {
        let body = serde_json::to_vec(&odd).expect("json");
        assert_eq!(
            mapping.map_inline(&body, &Limits::default(), &globals(json!({"q": "tv"}))),
            None,
            "{odd}"
        );
    }
    assert_eq!(
        mapping.map_inline(
            b"{\"data\": ",
            &Limits::default(),
            &globals(json!({"q": "tv"}))
        ),
        None,
        "malformed JSON"
    );
    let big = serde_json::to_vec(&json!({"data": {"products": [], "pad": "x".repeat(70_000)}}))
        .expect("json");
    assert_eq!(
        mapping.map_inline(&big, &Limits::default(), &globals(json!({"q": "tv"}))),
        None,
        "larger than the inline limit"
    );
    for strict in [
        Limits {
            max_bytes: 1024,
            ..Limits::default()
        },
        Limits {
            max_depth: 16,
            ..Limits::default()
        },
    ] {
        assert_eq!(
            mapping.map_inline(&body, &strict, &globals(json!({"q": "tv"}))),
            None,
            "{strict:?}"
        );
    }
    assert!(map(mapping, b"{\"data\": ").is_err());

    // Anything but a plain path and `.` is jq's alone.
    for (records, map) in [(".data.products[]", ".title"), (".data.products[]?", ".")] {
        let programs = pass_through(records, map);
        assert_eq!(
            search(&programs).map_inline(&body, &Limits::default(), &globals(json!({"q": "tv"}))),
            None,
            "{records} | {map}"
        );
    }
}
