//! A realistic Voltmart catalog page (100 items by default) in its JSON and XML dialects,
//! shared by the mapping tests and the mapping benchmark.

#![allow(dead_code)]

use serde_json::{Value, json};

/// A valid 12-digit UPC-A for `n` (GS1 check digit computed by trial).
pub(crate) fn upc(n: u64) -> String {
    let body = format!("{:011}", 40_000_000_000 + n % 10_000_000_000);
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|u| mallgate_schemas::gtin14_is_valid(&format!("00{u}")))
        .expect("one check digit fits")
}

/// Item `i` of a page, as Voltmart's JSON renders it.
pub(crate) fn item(i: u64) -> Value {
    let brand = ["Sonic", "Vizio", "Telly"][(i % 3) as usize];
    json!({
        "sku": 6_500_000 + i,
        "name": format!("  Voltmart  4K TV {i}\" class  "),
        "upc": upc(i),
        "manufacturer": brand,
        "categoryPath": [{"id": "abcat0100000", "name": "TV & Home Theater"}, {"id": "abcat0101000", "name": "TVs"}],
        "salePrice": 849.99 + (i % 7) as f64,
        "regularPrice": 899.99,
        "onlineAvailability": !i.is_multiple_of(5),
        "customerReviewAverage": 4.5,
        "shortDescription": "A television.",
    })
}

/// A page of `n` items in Voltmart's JSON envelope.
pub(crate) fn json_page(n: u64) -> Value {
    json!({
        "from": 1, "to": n, "total": n, "currentPage": 1, "totalPages": 1,
        "queryTime": "0.005", "partial": false,
        "products": (0..n).map(item).collect::<Vec<_>>(),
    })
}

/// The same page in Voltmart's XML dialect (numbers as element text).
pub(crate) fn xml_page(n: u64) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><products currentPage=\"1\" totalPages=\"1\" from=\"1\" to=\"{n}\" total=\"{n}\" queryTime=\"0.005\" partial=\"false\">"
    );
    for i in 0..n {
        let v = item(i);
        out.push_str(&format!(
            "<product><sku>{}</sku><name>{}</name><upc>{}</upc><manufacturer>{}</manufacturer>\
             <categoryPath><category><id>abcat0100000</id><name>TV &amp; Home Theater</name></category>\
             <category><id>abcat0101000</id><name>TVs</name></category></categoryPath>\
             <salePrice>{}</salePrice><regularPrice>{}</regularPrice><onlineAvailability>{}</onlineAvailability>\
             <customerReviewAverage>4.5</customerReviewAverage><shortDescription>A television.</shortDescription></product>",
            v["sku"],
            v["name"].as_str().unwrap_or_default().replace('"', "&quot;"),
            v["upc"].as_str().unwrap_or_default(),
            v["manufacturer"].as_str().unwrap_or_default(),
            v["salePrice"],
            v["regularPrice"],
            v["onlineAvailability"],
        ));
    }
    out.push_str("</products>");
    out
}

/// The XML dialect's catalog mapping: the JSON one reading element text.
pub(crate) const XML_RECORDS: &str = ".products.product | each";
pub(crate) const XML_MAP: &str = r#"
(.upc | gtin14) as $gtin
| (if $gtin.valid then "gtin:" + $gtin.value else "voltmart:\(.sku)" end) as $id
| {
    product_id: $id,
    title: (.name | clean_text),
    brand: .manufacturer,
    category: [.categoryPath.category | each | .name],
    variants: [{
      variant_id: $id,
      sku: .sku,
      gtin_raw: .upc
    } + (if $gtin.valid then {gtin: $gtin.value} else {} end)
      + {offers: [{
        offer_id: "voltmart:\(.sku)",
        seller: {id: "voltmart", name: "Voltmart"},
        availability: (if .onlineAvailability == "true" then "in_stock" else "out_of_stock" end),
        condition: "new",
        price: (.salePrice | money("USD")),
        list_price: (.regularPrice | money("USD")),
        fulfillment: ["ship", "pickup"],
        provenance: ($provenance + {source_ref: .sku})
      }]}],
    provenance: ($provenance + {source_ref: .sku})
  }
"#;
