//! Identity rules the JSON Schemas cannot express: GS1 check digits and the agreement
//! between ids, GTINs and partners (DESIGN §4).

use crate::model::{Product, Variant};
use crate::validate::Violation;

/// True when `digits` is 14 ASCII digits whose last is the GS1 check digit of the first 13,
/// and not all zeros: a code without a company prefix is no GTIN (partners send zeros as a
/// placeholder, and its check digit happens to verify).
pub fn gtin14_is_valid(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    if bytes.len() != 14
        || !bytes.iter().all(u8::is_ascii_digit)
        || bytes.iter().all(|b| *b == b'0')
    {
        return false;
    }
    // GS1: from the right, excluding the check digit, weights alternate 3, 1, 3...
    let sum: u32 = bytes[..13]
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    let check = (10 - sum % 10) % 10;
    u32::from(bytes[13] - b'0') == check
}

/// The partner prefix of a `<partner>:<native id>` record id; `None` for `gtin:` ids.
fn partner_of(record_id: &str) -> Option<&str> {
    match record_id.split_once(':') {
        Some(("gtin", _)) | None => None,
        Some((partner, _)) => Some(partner),
    }
}

fn variant_violations(variant: &Variant, at: &str, out: &mut Vec<Violation>) {
    if let Some(gtin) = &variant.gtin {
        if !gtin14_is_valid(gtin) {
            out.push(Violation::new(
                format!("{at}/gtin"),
                format!("`{gtin}` fails the GS1 check digit; keep it in gtin_raw instead"),
            ));
        } else if variant.variant_id != format!("gtin:{gtin}") {
            out.push(Violation::new(
                format!("{at}/variant_id"),
                format!("a variant with gtin `{gtin}` must have variant_id `gtin:{gtin}`"),
            ));
        }
    }
    // A variant without a valid GTIN belongs to exactly one partner: it never merges.
    if let Some(owner) = partner_of(&variant.variant_id) {
        for (i, offer) in variant.offers.iter().enumerate() {
            if offer.provenance.partner_id != owner {
                out.push(Violation::new(
                    format!("{at}/offers/{i}/provenance/partner_id"),
                    format!(
                        "variant `{}` belongs to partner `{owner}`; an offer of partner `{}` cannot join it without a GTIN",
                        variant.variant_id, offer.provenance.partner_id
                    ),
                ));
            }
        }
    }
    for (i, offer) in variant.offers.iter().enumerate() {
        if partner_of(&offer.offer_id) != Some(offer.provenance.partner_id.as_str()) {
            out.push(Violation::new(
                format!("{at}/offers/{i}/offer_id"),
                format!(
                    "offer_id `{}` must start with its partner `{}:`",
                    offer.offer_id, offer.provenance.partner_id
                ),
            ));
        }
    }
}

/// Identity violations of a product (and its variants and offers), with JSON pointers
/// relative to the product.
pub fn identity_violations(product: &Product) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, variant) in product.variants.iter().enumerate() {
        variant_violations(variant, &format!("/variants/{i}"), &mut out);
    }
    match product.variants.as_slice() {
        [only] if only.gtin.is_some() => {
            if product.product_id != only.variant_id {
                out.push(Violation::new(
                    "/product_id",
                    format!(
                        "a single-variant product identified by GTIN must have product_id `{}`",
                        only.variant_id
                    ),
                ));
            }
        }
        _ => {
            if product.product_id.starts_with("gtin:") {
                out.push(Violation::new(
                    "/product_id",
                    "only a single-variant product identified by GTIN has a gtin: product_id; use <partner>:<native product id>",
                ));
            }
        }
    }
    out
}

pub(crate) fn variant_identity_violations(variant: &Variant) -> Vec<Violation> {
    let mut out = Vec::new();
    variant_violations(variant, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs1_check_digits() {
        // UPC-A 036000291452 (a well-known example) as GTIN-14.
        assert!(gtin14_is_valid("00036000291452"));
        assert!(!gtin14_is_valid("00036000291453"));
        // EAN-13 4006381333931 as GTIN-14.
        assert!(gtin14_is_valid("04006381333931"));
        assert!(!gtin14_is_valid("4006381333931"));
        assert!(!gtin14_is_valid("0400638133393a"));
        assert!(!gtin14_is_valid(""));
        assert!(
            !gtin14_is_valid("00000000000000"),
            "all zeros: a placeholder, no GTIN"
        );
    }

    #[test]
    fn partner_prefix() {
        assert_eq!(partner_of("voltmart:123"), Some("voltmart"));
        assert_eq!(partner_of("gtin:00036000291452"), None);
        assert_eq!(partner_of("nocolon"), None);
    }
}
