//! Decode + map + validate of a realistic 100-item catalog page, in Voltmart's JSON and XML
//! dialects: the connector's jq mapping against a hand-written serde/quick-xml mapping of
//! the same page to the same records, in the same run. Both paths validate every record.
//! A third column runs the same jq out of process, as every partner-owned program runs:
//! in a sandbox worker (`mallgate-jq-sandbox worker`) over its pipes, the gateway
//! validating what comes back. The worker inherits this process's CPU affinity, so the
//! figure is the cost of both sides on one core.
//!
//! `cargo bench -p mallgate-connectors --bench mapping` (release profile). Prints a table
//! and one JSON line per dialect; `ops/bench/mapping.sh` runs it.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

#[path = "../tests/support/voltmart_page.rs"]
mod voltmart_page;

// The allocator the gateway binary uses: jaq allocates for nearly every step.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mallgate_connectors::decode::Limits;
use mallgate_connectors::mapping::isolated::{
    Answer, IsolatedPool, IsolationConfig, ProgramSource, Task,
};
use mallgate_connectors::mapping::{CapabilityMapping, Globals, strip_nulls};
use mallgate_connectors::prelude::{gtin, money, text};
use mallgate_connectors::spec::CapabilitySpec;
use mallgate_connectors::{Capability, ConnectorSpec, Format, Owner};
use mallgate_schemas::{UnifiedSchema, validate_record};
use serde::Deserialize;
use serde_json::{Value, json};

const ITEMS: u64 = 100;
const ROUNDS: usize = 7;
const ROUND_TIME: Duration = Duration::from_millis(400);

fn globals() -> Globals {
    Globals {
        provenance: json!({"partner_id": "voltmart", "connector_id": "voltmart", "connector_version": 1, "fetched_at": "2026-11-27T14:03:00Z"}),
        query: json!({"q": "tv"}),
        locations: json!({}),
    }
}

// ---- the hand-written reference ------------------------------------------------------

#[derive(Deserialize)]
struct Page {
    products: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    sku: u64,
    name: String,
    upc: String,
    manufacturer: String,
    category_path: Vec<Category>,
    sale_price: f64,
    regular_price: f64,
    online_availability: bool,
}

#[derive(Deserialize)]
struct Category {
    name: String,
}

struct Fields<'a> {
    sku: &'a str,
    name: &'a str,
    upc: &'a str,
    manufacturer: &'a str,
    categories: Vec<&'a str>,
    sale_price: &'a str,
    regular_price: &'a str,
    available: bool,
}

fn price(amount: &str) -> Option<Value> {
    let (m, _) = money::parse(amount, "USD").ok()?;
    Some(json!({"amount_minor": m.amount_minor, "currency": "USD"}))
}

/// The same record the connector's jq builds, built in Rust.
fn record(f: &Fields<'_>, provenance: &Value) -> Option<Value> {
    let g = gtin::normalize(f.upc);
    let id = match &g.gtin14 {
        Some(code) => format!("gtin:{code}"),
        None => format!("voltmart:{}", f.sku),
    };
    let mut source = provenance.clone();
    source["source_ref"] = json!(f.sku);
    let mut variant = json!({"variant_id": id, "sku": f.sku, "gtin_raw": f.upc});
    if let Some(code) = &g.gtin14 {
        variant["gtin"] = json!(code);
    }
    variant["offers"] = json!([{
        "offer_id": format!("voltmart:{}", f.sku),
        "seller": {"id": "voltmart", "name": "Voltmart"},
        "availability": if f.available { "in_stock" } else { "out_of_stock" },
        "condition": "new",
        "price": price(f.sale_price)?,
        "list_price": price(f.regular_price)?,
        "fulfillment": ["ship", "pickup"],
        "provenance": source,
    }]);
    let mut value = json!({
        "product_id": id,
        "title": text::clean_text(f.name),
        "brand": f.manufacturer,
        "category": f.categories,
        "variants": [variant],
        "provenance": source,
    });
    strip_nulls(&mut value);
    validate_record(UnifiedSchema::Product, &value).ok()?;
    Some(value)
}

fn hand_json(body: &[u8], provenance: &Value) -> usize {
    let Ok(page) = serde_json::from_slice::<Page>(body) else {
        return 0;
    };
    page.products
        .iter()
        .filter_map(|item| {
            let (sku, sale, regular) = (
                item.sku.to_string(),
                item.sale_price.to_string(),
                item.regular_price.to_string(),
            );
            record(
                &Fields {
                    sku: &sku,
                    name: &item.name,
                    upc: &item.upc,
                    manufacturer: &item.manufacturer,
                    categories: item.category_path.iter().map(|c| c.name.as_str()).collect(),
                    sale_price: &sale,
                    regular_price: &regular,
                    available: item.online_availability,
                },
                provenance,
            )
        })
        .count()
}

fn push_text(
    path: &[String],
    value: &str,
    item: &mut std::collections::HashMap<String, String>,
    categories: &mut [String],
) {
    match path {
        [_, p, field] if p == "product" => item.entry(field.clone()).or_default().push_str(value),
        [.., c, n] if c == "category" && n == "name" => {
            if let Some(last) = categories.last_mut() {
                last.push_str(value);
            }
        }
        _ => {}
    }
}

fn hand_xml(body: &[u8], provenance: &Value) -> usize {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut item: std::collections::HashMap<String, String> = Default::default();
    let mut categories: Vec<String> = Vec::new();
    let mut count = 0;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if name == "category" {
                    categories.push(String::new());
                }
                path.push(name);
            }
            Ok(Event::Text(t)) => {
                let Ok(value) = t.xml_content() else {
                    return count;
                };
                push_text(&path, &value, &mut item, &mut categories);
            }
            Ok(Event::GeneralRef(r)) => {
                let name = String::from_utf8_lossy(&r).into_owned();
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match quick_xml::escape::resolve_xml_entity(&name) {
                        Some(s) => s.to_owned(),
                        None => return count,
                    },
                };
                push_text(&path, &resolved, &mut item, &mut categories);
            }
            // The guard pops every closing element; only a closing `product` emits a record.
            Ok(Event::End(_)) if path.pop().as_deref() == Some("product") => {
                let get = |k: &str| item.get(k).map_or("", String::as_str);
                let fields = Fields {
                    sku: get("sku"),
                    name: get("name"),
                    upc: get("upc"),
                    manufacturer: get("manufacturer"),
                    categories: categories.iter().map(String::as_str).collect(),
                    sale_price: get("salePrice"),
                    regular_price: get("regularPrice"),
                    available: get("onlineAvailability") == "true",
                };
                count += usize::from(record(&fields, provenance).is_some());
                item.clear();
                categories.clear();
            }
            Ok(Event::Eof) | Err(_) => return count,
            _ => {}
        }
        buf.clear();
    }
}

// ---- measurement ---------------------------------------------------------------------

/// Median records per second over `ROUNDS` rounds of `ROUND_TIME` each.
fn records_per_second(mut one_page: impl FnMut() -> usize) -> f64 {
    assert_eq!(
        one_page(),
        ITEMS as usize,
        "every record must map and validate"
    );
    let mut rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut records = 0usize;
            while start.elapsed() < ROUND_TIME {
                records += black_box(one_page());
            }
            records as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[ROUNDS / 2]
}

/// Voltmart's connector with its search capability reading the XML dialect (the worker
/// compiles whole connector documents).
fn xml_connector(json_connector: &str) -> String {
    let (mut doc, _) =
        mallgate_connectors::source::parse(json_connector, Format::Yaml).expect("parses");
    let search = &mut doc["capabilities"]["catalog.search"];
    search["decode"] = json!("xml");
    search["records"] = json!(voltmart_page::XML_RECORDS);
    search["map"] = json!(voltmart_page::XML_MAP);
    if let Some(m) = search.as_object_mut() {
        m.remove("pagination");
    }
    serde_json::to_string(&doc).expect("json")
}

fn main() {
    let path = format!("{}/partners/voltmart.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("voltmart.yaml");
    let (_, programs) =
        ConnectorSpec::load_compiled(&text, Format::Yaml, &Owner::Operator).expect("connector");
    let json_mapping: &CapabilityMapping =
        &programs.capabilities[&Capability::CatalogSearch].mapping;
    let xml_spec: CapabilitySpec = serde_json::from_value(json!({
        "request": {"path": "/v1/products"}, "decode": "xml",
        "records": voltmart_page::XML_RECORDS, "map": voltmart_page::XML_MAP,
    }))
    .expect("xml spec");
    let xml_mapping =
        CapabilityMapping::compile(Capability::CatalogSearch, &xml_spec).expect("xml mapping");

    let json_body = serde_json::to_vec(&voltmart_page::json_page(ITEMS)).expect("json");
    let xml_body = voltmart_page::xml_page(ITEMS).into_bytes();
    let g = globals();
    let limits = Limits::default();
    let far = || Instant::now() + Duration::from_secs(60);
    let provenance = g.provenance.clone();

    println!(
        "mapping benchmark: {ITEMS}-item Voltmart page, decode + map + validate, median of {ROUNDS} rounds"
    );
    println!(
        "| dialect | jq records/s | jq in a sandbox worker records/s | hand-written records/s | jq / hand-written time | worker / in-process time |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = IsolatedPool::start(IsolationConfig::new(
        env!("CARGO_BIN_EXE_mallgate-jq-sandbox"),
        vec!["worker".into()],
        1,
    ))
    .expect("pool");
    let shared_globals = Arc::new(globals());
    for (dialect, body, mapping, hand) in [
        (
            "json",
            &json_body,
            json_mapping,
            hand_json as fn(&[u8], &Value) -> usize,
        ),
        ("xml", &xml_body, &xml_mapping, hand_xml),
    ] {
        let jq = records_per_second(|| {
            mapping
                .map_reply(body, &limits, &g, far())
                .map_or(0, |p| p.records.len())
        });
        let source = Arc::new(ProgramSource {
            text: if dialect == "json" {
                text.clone()
            } else {
                xml_connector(&text)
            },
            format: if dialect == "json" {
                Format::Yaml
            } else {
                Format::Json
            },
            owner: Owner::Operator,
        });
        let set = if dialect == "json" { 1 } else { 2 };
        let isolated = records_per_second(|| {
            runtime.block_on(async {
                let answer = pool
                    .run(
                        set,
                        &source,
                        Task::MapReply {
                            capability: Capability::CatalogSearch,
                        },
                        &shared_globals,
                        body.clone(),
                        far(),
                    )
                    .await;
                match answer {
                    Ok(Answer::Page { page }) => mapping.finish(page, &g).records.len(),
                    _ => 0,
                }
            })
        });
        let reference = records_per_second(|| hand(body, &provenance));
        let ratio = reference / jq;
        let worker_ratio = jq / isolated;
        println!(
            "| {dialect} | {jq:.0} | {isolated:.0} | {reference:.0} | {ratio:.2}x | {worker_ratio:.2}x |"
        );
        println!(
            "{}",
            json!({"bench": "mapping", "dialect": dialect, "items": ITEMS, "jq_records_per_s": jq.round(),
                   "isolated_records_per_s": isolated.round(),
                   "hand_records_per_s": reference.round(), "jq_time_ratio": (ratio * 100.0).round() / 100.0,
                   "us_per_record_jq": (1e6 / jq * 100.0).round() / 100.0,
                   "us_per_record_isolated": (1e6 / isolated * 100.0).round() / 100.0,
                   "us_per_record_hand": (1e6 / reference * 100.0).round() / 100.0})
        );
    }
}
