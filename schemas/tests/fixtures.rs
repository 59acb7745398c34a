//! Every unified schema against its example documents (`tests/fixtures/<schema>/`):
//! valid documents validate, read into their Rust type, write back to the same JSON and
//! validate again; invalid documents produce exactly the violations they expect.

use std::fs;
use std::path::{Path, PathBuf};

use mallgate_schemas::*;
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn documents(schema: UnifiedSchema, kind: &str) -> Vec<(String, Value)> {
    let dir = fixtures_dir().join(schema.name()).join(kind);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable dir entry").path();
        let text = fs::read_to_string(&path).expect("readable fixture");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        out.push((path.display().to_string(), value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// JSON equality where `1000` and `1000.0` are the same number.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn round_trip<T: Unified>(name: &str, value: &Value) {
    let typed = T::from_value(value.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    typed.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    let back = serde_json::to_value(&typed).expect("serializable");
    assert!(
        same_json(value, &back),
        "{name}: round trip changed the document\nbefore: {value}\nafter:  {back}"
    );
}

/// Validation through the typed path, so the identity rules apply too.
fn violations<T: Unified>(value: &Value) -> Vec<Violation> {
    match T::from_value(value.clone()) {
        Ok(_) => Vec::new(),
        Err(SchemaError::Invalid { violations, .. }) => violations,
        Err(other) => panic!("expected violations, got {other}"),
    }
}

macro_rules! dispatch {
    ($schema:expr, $f:ident, $($args:expr),*) => {
        match $schema {
            UnifiedSchema::Money => $f::<Money>($($args),*),
            UnifiedSchema::Weight => $f::<Weight>($($args),*),
            UnifiedSchema::Dimensions => $f::<Dimensions>($($args),*),
            UnifiedSchema::Provenance => $f::<Provenance>($($args),*),
            UnifiedSchema::Warning => $f::<Warning>($($args),*),
            UnifiedSchema::GeoPoint => $f::<GeoPoint>($($args),*),
            UnifiedSchema::EventTime => $f::<EventTime>($($args),*),
            UnifiedSchema::Address => $f::<Address>($($args),*),
            UnifiedSchema::Location => $f::<Location>($($args),*),
            UnifiedSchema::Offer => $f::<Offer>($($args),*),
            UnifiedSchema::Variant => $f::<Variant>($($args),*),
            UnifiedSchema::Product => $f::<Product>($($args),*),
            UnifiedSchema::InventoryLevel => $f::<InventoryLevel>($($args),*),
            UnifiedSchema::Parcel => $f::<Parcel>($($args),*),
            UnifiedSchema::ShippingRateRequest => $f::<ShippingRateRequest>($($args),*),
            UnifiedSchema::ShippingRate => $f::<ShippingRate>($($args),*),
            UnifiedSchema::TrackingEvent => $f::<TrackingEvent>($($args),*),
            UnifiedSchema::Tracking => $f::<Tracking>($($args),*),
        }
    };
}

#[test]
fn valid_documents_validate_and_round_trip() {
    for schema in UnifiedSchema::ALL {
        let docs = documents(schema, "valid");
        assert!(!docs.is_empty(), "{schema} has no valid example");
        for (name, value) in docs {
            validate_value(schema, &value).unwrap_or_else(|e| panic!("{name}: {e}"));
            dispatch!(schema, round_trip, &name, &value);
        }
    }
}

#[test]
fn invalid_documents_give_their_expected_violations() {
    let mut seen = 0;
    for schema in UnifiedSchema::ALL {
        let docs = documents(schema, "invalid");
        assert!(!docs.is_empty(), "{schema} has no invalid example");
        for (name, fixture) in docs {
            let expected: Vec<Violation> = fixture["expect"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no expect list"))
                .iter()
                .map(|v| {
                    Violation::new(
                        v["pointer"].as_str().expect("pointer"),
                        v["reason"].as_str().expect("reason"),
                    )
                })
                .collect();
            let got = dispatch!(schema, violations, &fixture["document"]);
            assert_eq!(got, expected, "{name}");
            seen += 1;
        }
    }
    assert!(seen >= 40, "only {seen} invalid examples");
}

#[test]
fn a_remote_ref_is_never_fetched() {
    // jsonschema is built without resolve-http and resolve-file (workspace Cargo.toml), so
    // even its *default* options cannot fetch a URL or read a file for a `$ref`; the
    // gateway's own validators are compiled offline on top of that.
    for target in [
        "http://127.0.0.1:9/evil.json",
        "file:///etc/passwd",
        "https://mallgate.example/schemas/unified/nope.schema.json",
    ] {
        let schema = serde_json::json!({ "$ref": target });
        assert!(jsonschema::validator_for(&schema).is_err(), "{target}");
    }
}

#[test]
fn typed_values_built_in_code_validate() {
    let provenance = Provenance {
        partner_id: "voltmart".into(),
        connector_id: "voltmart".into(),
        connector_version: 1,
        source_ref: "6502197".into(),
        fetched_at: "2026-11-27T14:03:00Z".into(),
        as_of: None,
        warnings: vec![],
    };
    let offer = Offer {
        offer_id: "voltmart:6502197".into(),
        seller: Seller {
            id: None,
            name: "Voltmart".into(),
        },
        availability: Availability::InStock,
        condition: Condition::New,
        price: Money {
            amount_minor: 84999,
            currency: "USD".into(),
            exact: None,
        },
        list_price: None,
        fulfillment: vec![Fulfillment::Ship],
        url: None,
        provenance: provenance.clone(),
    };
    let product = Product {
        product_id: "gtin:00036000291452".into(),
        title: "Aurora TV".into(),
        brand: None,
        category: vec![],
        description: None,
        image_urls: vec![],
        attributes: Default::default(),
        variants: vec![Variant {
            variant_id: "gtin:00036000291452".into(),
            gtin: Some("00036000291452".into()),
            gtin_raw: None,
            sku: Some("6502197".into()),
            title: None,
            options: Default::default(),
            weight: None,
            dimensions: None,
            image_url: None,
            offers: vec![offer],
        }],
        provenance,
    };
    product.validate().expect("valid product");

    let mut wrong = product.clone();
    wrong.variants[0].variant_id = "voltmart:6502197".into();
    let err = wrong
        .validate()
        .expect_err("gtin variant with a partner id");
    assert!(err.to_string().contains("/variants/0/variant_id"), "{err}");
}

#[test]
fn readme_example_holds() {
    let price = Money {
        amount_minor: 84999,
        currency: "USD".into(),
        exact: None,
    };
    price.validate().expect("valid money");
    let bad = serde_json::json!({"amount_minor": 12.99, "currency": "USD"});
    let err = validate_value(UnifiedSchema::Money, &bad).expect_err("float amount");
    assert_eq!(
        err.to_string(),
        "invalid money: /amount_minor: expected integer, found number"
    );
}
