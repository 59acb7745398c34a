//! Arbitrary text into the native prelude rules: a result or an error, never a panic, and
//! any GTIN produced verifies.

use mallgate_connectors::prelude::{gtin, money};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn money_never_panics(amount in ".{0,40}", currency in prop::sample::select(vec!["USD", "JPY", "BHD", "CLF", "XXX", ""])) {
        if let Ok((m, _)) = money::parse(&amount, currency) {
            prop_assert_eq!(m.currency.as_str(), currency);
        }
    }

    #[test]
    fn decimal_amounts_are_exact(int in 0u64..10_000_000, frac in 0u32..100) {
        let (m, note) = money::parse(&format!("{int}.{frac:02}"), "USD").expect("valid");
        prop_assert_eq!(m.amount_minor, i64::try_from(int).expect("small") * 100 + i64::from(frac));
        prop_assert!(note.is_none());
    }

    #[test]
    fn gtin_never_panics(raw in "[0-9 -]{0,16}|.{0,16}") {
        let g = gtin::normalize(&raw);
        if let Some(code) = g.gtin14 {
            prop_assert!(mallgate_schemas::gtin14_is_valid(&code));
        }
    }
}

mod through_jq {
    //! Every prelude native, fed arbitrary JSON as input and arguments through jq.

    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use mallgate_connectors::mapping::{Budget, Program, RunError, to_json, to_val};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Each native with its arguments drawn from `$y` and `$z`.
    const CALLS: &[&str] = &[
        "money($y)",
        "money($y; $z)",
        "gtin14",
        "grams($y)",
        "grams_lb_oz($y; $z)",
        "dimensions($y)",
        "pounds_ounces",
        "weight_text($y)",
        "ts($y)",
        "instant($y)",
        "ts_split($x; $y; $z)",
        "status($y)",
        "prose_event",
        "prose_event($y)",
        "clean_text",
        "html_unescape",
        "strip_html",
    ];

    fn programs() -> &'static Vec<Program> {
        static PROGRAMS: OnceLock<Vec<Program>> = OnceLock::new();
        PROGRAMS.get_or_init(|| {
            CALLS
                .iter()
                .map(|call| {
                    Program::compile(&format!(". as [$x, $y, $z] | $x | {call}"))
                        .unwrap_or_else(|e| panic!("{call}: {e}"))
                })
                .collect()
        })
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,24}".prop_map(Value::String),
            prop::sample::select(vec![
                "12.99",
                "USD",
                "JPY",
                "lb",
                "KGS",
                "in",
                "America/Chicago",
                "-5.0",
                "20261123",
                "063800",
                "2026-11-23T06:38:00",
                "January 27, 2026, 8:03 am, AMES, IA 50010",
                "in_transit",
                "&amp;lt;b&amp;gt;",
                "CafÃ©",
                "1e400",
                "-0",
                "99999999999999999999",
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["length", "width", "height", "I", "a"]),
                        inner
                    ),
                    0..4
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn natives_answer_or_fail_cleanly(x in json_value(), y in json_value(), z in json_value()) {
            let input = to_val(&json!([x, y, z]));
            let globals = [to_val(&json!({})), to_val(&json!({})), to_val(&json!({}))];
            for (call, program) in CALLS.iter().zip(programs()) {
                let budget = Budget::until(Instant::now() + Duration::from_secs(30));
                match program.run(input.clone(), globals.clone(), &budget) {
                    Ok((outputs, _)) => {
                        for out in &outputs {
                            let mut cap = 1 << 20;
                            prop_assert!(to_json(out, &mut cap).is_ok(), "{} gave a non-JSON value", call);
                        }
                    }
                    Err(RunError::Failed(message)) => prop_assert!(!message.is_empty()),
                    Err(RunError::Overrun(o)) => prop_assert!(false, "{} overran: {}", call, o),
                }
            }
        }
    }
}

mod text_rules {
    //! The Rust rules behind the natives, fed arbitrary text.

    use mallgate_connectors::prelude::{text, time, tracking, units};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn time_never_panics(t in ".{0,40}", zone in ".{0,12}") {
            let zone = time::Zone::parse(&zone).ok();
            if let Ok(e) = time::parse(&t, zone.as_ref()) {
                prop_assert!(!e.value.is_empty());
            }
            let _ = time::split(&t, Some(&t), zone.as_ref());
            let _ = time::prose(&t);
            let _ = tracking::prose_event(&t);
        }

        #[test]
        fn units_never_panic(v in "[-+0-9.eE]{0,30}|.{0,12}", unit in prop::sample::select(vec!["g", "kg", "LBS", "oz", "in", "cm", "x"])) {
            if let Ok(w) = units::grams(&v, unit) {
                prop_assert!(w.grams >= 0.0);
            }
            let _ = units::grams_lb_oz(&v, &v);
            let _ = units::pounds_ounces(&v);
            let _ = units::weight_text(&v, unit);
            let _ = units::dimensions(&v, &v, &v, unit);
        }

        #[test]
        fn text_is_total(s in "\\PC{0,60}|[<>&#;a-z0-9 /!-]{0,60}") {
            let cleaned = text::clean_text(&s);
            prop_assert_eq!(cleaned.trim(), cleaned.as_str());
            let _ = text::html_unescape(&s);
            prop_assert!(!text::strip_html(&s).contains("<script"));
        }
    }
}
