//! GTIN normalization: UPC-A (12), EAN-13, GTIN-14, UPC-E (8, expanded) and EAN-8 to one
//! 14-digit form with a verified GS1 check digit. A code that does not verify is kept raw
//! and flagged, and never merges with anything.

use mallgate_schemas::gtin14_is_valid;

/// The spelling a partner used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GtinKind {
    UpcA,
    Ean13,
    Gtin14,
    UpcE,
    Ean8,
    /// 9 to 11 digits: a UPC-A or EAN-13 that lost its leading zeros (a partner that
    /// stores barcodes as numbers).
    ZeroStripped,
}

/// A normalized code: `gtin14` is set only when the check digit verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gtin {
    pub raw: String,
    pub gtin14: Option<String>,
    pub kind: Option<GtinKind>,
}

/// Expands a UPC-E code (number system 0 or 1, six digits, check digit) to UPC-A.
fn expand_upc_e(code: &[u8; 8]) -> [u8; 12] {
    let [ns, d1, d2, d3, d4, d5, d6, check] = *code;
    let z = b'0';
    match d6 {
        b'0'..=b'2' => [ns, d1, d2, d6, z, z, z, z, d3, d4, d5, check],
        b'3' => [ns, d1, d2, d3, z, z, z, z, z, d4, d5, check],
        b'4' => [ns, d1, d2, d3, d4, z, z, z, z, z, d5, check],
        _ => [ns, d1, d2, d3, d4, d5, z, z, z, z, d6, check],
    }
}

fn pad14(digits: &str) -> String {
    format!("{digits:0>14}")
}

/// Normalizes a barcode as a partner sent it (spaces and dashes ignored).
pub fn normalize(raw: &str) -> Gtin {
    let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let verified = |candidate: String, kind: GtinKind| {
        gtin14_is_valid(&candidate).then_some((candidate, kind))
    };
    let found = if !digits.bytes().all(|b| b.is_ascii_digit()) {
        None
    } else {
        match digits.len() {
            14 => verified(digits.clone(), GtinKind::Gtin14),
            13 => verified(pad14(&digits), GtinKind::Ean13),
            12 => verified(pad14(&digits), GtinKind::UpcA),
            9..=11 => verified(pad14(&digits), GtinKind::ZeroStripped),
            8 => {
                // UPC-E (number system 0 or 1) first: US partners send it far more often
                // than EAN-8; EAN-8 when the expansion does not verify.
                let bytes: [u8; 8] = digits.as_bytes().try_into().unwrap_or([b'x'; 8]);
                let upc_e = matches!(bytes[0], b'0' | b'1')
                    .then(|| expand_upc_e(&bytes))
                    .and_then(|upc_a| {
                        let upc_a = String::from_utf8_lossy(&upc_a).into_owned();
                        verified(pad14(&upc_a), GtinKind::UpcE)
                    });
                upc_e.or_else(|| verified(pad14(&digits), GtinKind::Ean8))
            }
            _ => None,
        }
    };
    Gtin {
        raw: raw.to_owned(),
        gtin14: found.as_ref().map(|(g, _)| g.clone()),
        kind: found.map(|(_, k)| k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_item_in_every_spelling() {
        // UPC-A 042100005264 and its UPC-E form 04252614.
        for (raw, kind) in [
            ("042100005264", GtinKind::UpcA),
            ("0042100005264", GtinKind::Ean13),
            ("00042100005264", GtinKind::Gtin14),
            ("04252614", GtinKind::UpcE),
            ("42100005264", GtinKind::ZeroStripped),
            ("0 42100 00526 4", GtinKind::UpcA),
        ] {
            let g = normalize(raw);
            assert_eq!(g.gtin14.as_deref(), Some("00042100005264"), "{raw}");
            assert_eq!(g.kind, Some(kind), "{raw}");
            assert_eq!(g.raw, raw);
        }
    }

    #[test]
    fn zeros_are_no_gtin_in_any_spelling() {
        for raw in [
            "00000000000000",
            "0000000000000",
            "000000000000",
            "00000000",
        ] {
            assert_eq!(normalize(raw).gtin14, None, "{raw}");
        }
    }

    #[test]
    fn upc_e_expansion_rules() {
        let expand = |code: &str| {
            let bytes: [u8; 8] = code.as_bytes().try_into().expect("8 digits");
            String::from_utf8_lossy(&expand_upc_e(&bytes)).into_owned()
        };
        assert_eq!(expand("01234505"), "012000003455");
        assert_eq!(expand("01234531"), "012300000451");
        assert_eq!(expand("01234543"), "012340000053");
        assert_eq!(expand("01234558"), "012345000058");
    }

    #[test]
    fn ean13_and_ean8() {
        assert_eq!(
            normalize("4006381333931").gtin14.as_deref(),
            Some("04006381333931")
        );
        let ean8 = normalize("96385074");
        assert_eq!(ean8.gtin14.as_deref(), Some("00000096385074"));
        assert_eq!(ean8.kind, Some(GtinKind::Ean8));
    }

    #[test]
    fn bad_codes_are_kept_raw_and_flagged() {
        for raw in [
            "042100005265",
            "",
            "ABC123456789",
            "1234567",
            "123456789012345",
            "04252615",
        ] {
            let g = normalize(raw);
            assert_eq!(g.gtin14, None, "{raw}");
            assert_eq!(g.kind, None, "{raw}");
            assert_eq!(g.raw, raw);
        }
    }
}
