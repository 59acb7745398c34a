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
