//! The mall prelude through jq, with the cases of partners.md: what a connector author
//! writes, what comes out, and which warnings travel with it.

use std::time::{Duration, Instant};

use mallgate_connectors::mapping::{Budget, Program, to_json, to_val};
use serde_json::{Value, json};

/// Runs `code` on `input`; the single output and the warning codes.
fn jq(code: &str, input: Value) -> (Value, Vec<String>) {
    try_jq(code, input).unwrap_or_else(|e| panic!("{code}: {e}"))
}

fn try_jq(code: &str, input: Value) -> Result<(Value, Vec<String>), String> {
    let program = Program::compile(code).map_err(|e| e.to_string())?;
    let globals = [to_val(&json!({})), to_val(&json!({})), to_val(&json!({}))];
    let budget = Budget::until(Instant::now() + Duration::from_secs(30));
    let (out, warnings) = program
        .run(to_val(&input), globals, &budget)
        .map_err(|e| format!("{e:?}"))?;
    assert_eq!(out.len(), 1, "{code} gave {} outputs", out.len());
    let mut cap = 1 << 20;
    let value = to_json(&out[0], &mut cap)?;
    Ok((value, warnings.into_iter().map(|w| w.code).collect()))
}

#[test]
fn money_five_spellings_of_12_99_usd() {
    let (v, w) = jq(
        r#"[.[] | money("USD") | .amount_minor]"#,
        json!(["12.99", 12.99, "$12.99", "USD 12.99", "12.990"]),
    );
    assert_eq!(v, json!([1299, 1299, 1299, 1299, 1299]));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn money_exponents_0_and_3_and_exact_numbers() {
    assert_eq!(
        jq(r#"money("JPY")"#, json!("1500")).0,
        json!({"amount_minor": 1500, "currency": "JPY"})
    );
    assert_eq!(
        jq(r#"money("BHD")"#, json!("12.345")).0,
        json!({"amount_minor": 12345, "currency": "BHD"})
    );
    // Voltmart's `regularPrice: 849.99` is a JSON number: exactly 84999, never 84998.99...
    assert_eq!(
        jq(
            r#".regularPrice | money("USD") | .amount_minor"#,
            json!({"regularPrice": 849.99})
        )
        .0,
        json!(84999)
    );
    // SwiftShip's {CurrencyCode, MonetaryValue} strings, two-argument form.
    assert_eq!(
        jq(
            "money(.MonetaryValue; .CurrencyCode)",
            json!({"CurrencyCode": "EUR", "MonetaryValue": "21.40"})
        )
        .0,
        json!({"amount_minor": 2140, "currency": "EUR"})
    );
    let (v, w) = jq(r#"money("USD")"#, json!("0.125"));
    assert_eq!(
        v,
        json!({"amount_minor": 13, "currency": "USD", "exact": "0.125"})
    );
    assert_eq!(w, ["sub_unit_amount"]);
    assert!(try_jq(r#"money("USD")"#, json!("12,99.1")).is_err());
}

#[test]
fn gtin_spellings_of_one_item_are_one_gtin14() {
    let (v, w) = jq(
        "[.[] | gtin14 | .value]",
        json!([
            "042100005264",
            "0042100005264",
            "00042100005264",
            "04252614",
            42100005264i64
        ]),
    );
    assert_eq!(v, json!(vec!["00042100005264"; 5]));
    assert!(w.is_empty());
    let (v, w) = jq("gtin14", json!("042100005265"));
    assert_eq!(
        v,
        json!({"valid": false, "value": null, "raw": "042100005265"})
    );
    assert_eq!(w, ["invalid_gtin"]);
}

#[test]
fn timestamps_never_invent_a_zone() {
    // Without a known zone a wall-clock time stays local...
    assert_eq!(
        jq("ts(null)", json!("2026-11-23T06:38:00")).0,
        json!({"kind": "local", "value": "2026-11-23T06:38:00"})
    );
    // ...with the location's zone it becomes an instant, and says which zone.
    assert_eq!(
        jq(r#"ts("America/Chicago")"#, json!("2026-11-23T06:38:00")).0,
        json!({"kind": "zoned", "value": "2026-11-23T06:38:00-06:00", "time_zone": "America/Chicago"})
    );
    assert_eq!(
        jq("ts(null)", json!("2026-11-27T09:14:03-05:00")).0,
        json!({"kind": "zoned", "value": "2026-11-27T09:14:03-05:00"})
    );
    // Acme's epoch milliseconds are instants.
    assert_eq!(
        jq("ts(null) | .value", json!(1795433880000i64)).0,
        json!("2026-11-23T11:38:00Z")
    );
    // A date-only event (Northwind's CCYYMMDD restock date) stays a date.
    assert_eq!(
        jq("ts(null)", json!("20261201")).0,
        json!({"kind": "date", "value": "2026-12-01"})
    );
    // SwiftShip's split date and time, with and without gmtOffset.
    assert_eq!(
        jq(
            "ts_split(.date; .time; .gmtOffset)",
            json!({"date": "20261123", "time": "063800", "gmtOffset": "-05:00"})
        )
        .0,
        json!({"kind": "zoned", "value": "2026-11-23T06:38:00-05:00"})
    );
    assert_eq!(
        jq(
            "ts_split(.date; .time; .gmtOffset)",
            json!({"date": "20261123", "time": "063800"})
        )
        .0,
        json!({"kind": "local", "value": "2026-11-23T06:38:00"})
    );
    // as_of wants an instant or nothing: a date in a known zone starts at its midnight.
    assert_eq!(
        jq(
            r#"[(.[] | instant("America/Chicago")), ("2026-11-23T06:38" | instant(null))]"#,
            json!(["20261123"])
        )
        .0,
        json!(["2026-11-23T00:00:00-06:00", null])
    );
    assert!(try_jq("ts(null)", json!("next Tuesday")).is_err());
    assert!(try_jq(r#"ts("Mars/Olympus")"#, json!("2026-11-23")).is_err());
}

#[test]
fn prose_tracking_lines() {
    let (v, _) = jq(
        "prose_event",
        json!("Sorting Complete, January 27, 2026, 8:03 am, DES MOINES, IA 50311"),
    );
    assert_eq!(
        v,
        json!({
            "raw_code": "Sorting Complete",
            "description": "Sorting Complete, January 27, 2026, 8:03 am, DES MOINES, IA 50311",
            "time": {"kind": "local", "value": "2026-01-27T08:03:00"},
            "location": {"city": "DES MOINES", "region": "IA", "postal_code": "50311"}
        })
    );
    let (v, _) = jq(
        "prose_event | .time",
        json!("Shipping Label Created, January 25, 2026"),
    );
    assert_eq!(v, json!({"kind": "date", "value": "2026-01-25"}));
}

#[test]
fn status_tables_detailed_code_first_and_unknown_fallback() {
    let table =
        r#"{"MP": "label_created", "PU": "picked_up", "I": "in_transit", "D": "delivered"}"#;
    let code = format!("[.code, .type] | status({table})");
    assert_eq!(
        jq(&code, json!({"type": "I", "code": "MP"})).0,
        json!("label_created")
    );
    assert_eq!(
        jq(&code, json!({"type": "I", "code": "PU"})).0,
        json!("picked_up")
    );
    assert_eq!(
        jq(&code, json!({"type": "I", "code": "OR"})).0,
        json!("in_transit")
    );
    // An unmapped code is `unknown`; the mapping keeps the raw code and the warning counts it.
    let (v, w) = jq(
        &format!("{{status: ([.code, .type] | status({table})), raw_code: .code}}"),
        json!({"type": "Z", "code": "ZZ9"}),
    );
    assert_eq!(v, json!({"status": "unknown", "raw_code": "ZZ9"}));
    assert_eq!(w, ["unmapped_status"]);
    let err = try_jq(r#"status({"A": "teleported"})"#, json!("A")).expect_err("bad table");
    assert!(err.contains("not a tracking status"), "{err}");
}

#[test]
fn units_to_grams_and_millimetres() {
    assert_eq!(
        jq(r#".Weight | grams("LBS")"#, json!({"Weight": "3"})).0,
        json!({"grams": 1360.777, "original": {"value": "3", "unit": "LBS"}})
    );
    assert_eq!(jq(r#"grams("KGS") | .grams"#, json!("2.5")).0, json!(2500));
    // ParcelPost's <Pounds> + <Ounces>.
    assert_eq!(
        jq(
            "grams_lb_oz(.Pounds; .Ounces)",
            json!({"Pounds": "2", "Ounces": "3"})
        )
        .0,
        json!({"grams": 992.233, "original": {"value": "2 lb 3 oz", "unit": "lb+oz"}})
    );
    // And back, for requests: never under-stated.
    assert_eq!(
        jq("pounds_ounces", json!(1000)).0,
        json!({"pounds": 2, "ounces": 3.3})
    );
    assert_eq!(jq(r#"weight_text("kg")"#, json!(1250)).0, json!("1.25"));
    assert_eq!(
        jq(
            r#"dimensions("in") | [.length_mm, .width_mm, .height_mm]"#,
            json!(["10", "4.5", 0.25])
        )
        .0,
        json!([254, 114.3, 6.35])
    );
    assert!(try_jq(r#"grams("stone")"#, json!("1")).is_err());
}

#[test]
fn text_clean_up() {
    assert_eq!(
        jq("clean_text", json!("  CafÃ©\t\n  crÃ¨me  ")).0,
        json!("Café crème")
    );
    // ParcelPost's double-escaped service names, after XML decoding removed one level.
    assert_eq!(
        jq(
            "html_unescape | html_unescape | strip_html",
            json!("Priority Mail Express 2-Day&amp;lt;sup&amp;gt;&amp;#8482;&amp;lt;/sup&amp;gt;")
        )
        .0,
        json!("Priority Mail Express 2-Day™")
    );
    assert_eq!(
        jq("[.[] | clean_text]", json!([null, "a"])).0,
        json!([null, "a"])
    );
    assert!(try_jq("clean_text", json!(5)).is_err());
}
