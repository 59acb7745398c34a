//! Merging partner records into one answer.
//!
//! **Identity** (DESIGN §4): a variant with a valid GTIN-14 is `gtin:<14 digits>`, else
//! `<partner>:<native id>`. Products that share a GTIN variant are one product; records
//! without a valid GTIN never merge. Members are ordered by merge rank (partner priority,
//! then partner id, then connector id, then the partner's own order), never by which
//! partner answered first, so the merged ids and fields do not depend on timing.
//! Descriptive fields come from the best-ranked member that has them; every offer keeps its
//! own provenance.

use std::collections::{BTreeMap, HashMap};

use mallgate_schemas::{Product, RateTag, ShippingRate, Variant};

use crate::FastHash;

/// A source's products and its merge rank (lower first).
#[derive(Debug, Clone)]
pub struct RankedProducts<'a> {
    pub rank: (u32, &'a str, &'a str),
    pub products: Vec<&'a Product>,
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        // The smaller index (the better rank) stays the root.
        if ra < rb {
            self.0[rb] = ra;
        } else if rb < ra {
            self.0[ra] = rb;
        }
    }
}

/// Merges the products of several sources.
pub fn merge_products(sources: &[RankedProducts<'_>]) -> Vec<Product> {
    let mut ordered: Vec<&RankedProducts<'_>> = sources.iter().collect();
    ordered.sort_by(|a, b| a.rank.cmp(&b.rank));
    let products: Vec<&Product> = ordered
        .iter()
        .flat_map(|s| s.products.iter().copied())
        .collect();
    let mut uf = UnionFind((0..products.len()).collect());
    let mut owner_of: HashMap<&str, usize, FastHash> = HashMap::default();
    for (i, p) in products.iter().enumerate() {
        for v in &p.variants {
            match owner_of.get(v.variant_id.as_str()) {
                Some(&j) => uf.union(i, j),
                None => {
                    owner_of.insert(v.variant_id.as_str(), i);
                }
            }
        }
        // The same partner id seen twice (a product repeated across pages) is one product.
        if let Some(&j) = owner_of.get(p.product_id.as_str()) {
            uf.union(i, j);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..products.len() {
        let root = uf.find(i);
        groups.entry(root).or_default().push(i);
    }
    groups
        .into_values()
        .map(|members| merge_group(members.iter().map(|&i| products[i])))
        .collect()
}

fn merge_group<'a>(mut members: impl Iterator<Item = &'a Product>) -> Product {
    let Some(lead) = members.next() else {
        unreachable_group()
    };
    // The lead's fields, but not its variants (gathered below with the others') nor its id
    // (chosen once the variants are known).
    let mut merged = Product {
        product_id: String::new(),
        title: lead.title.clone(),
        brand: lead.brand.clone(),
        category: lead.category.clone(),
        description: lead.description.clone(),
        image_urls: lead.image_urls.clone(),
        attributes: lead.attributes.clone(),
        variants: Vec::new(),
        provenance: lead.provenance.clone(),
    };
    // Variants in first-seen order, indexed by id.
    let mut variants: Vec<Variant> = Vec::new();
    let mut index: HashMap<&'a str, usize, FastHash> = HashMap::default();
    let mut add = |v: &'a Variant| match index.get(v.variant_id.as_str()) {
        None => {
            index.insert(&v.variant_id, variants.len());
            variants.push(v.clone());
        }
        Some(&i) => {
            let have = &mut variants[i];
            fill(&mut have.gtin, &v.gtin);
            fill(&mut have.title, &v.title);
            fill(&mut have.weight, &v.weight);
            fill(&mut have.dimensions, &v.dimensions);
            fill(&mut have.image_url, &v.image_url);
            for offer in &v.offers {
                if !have.offers.iter().any(|o| o.offer_id == offer.offer_id) {
                    have.offers.push(offer.clone());
                }
            }
        }
    };
    for v in &lead.variants {
        add(v);
    }
    let mut partner_ids = vec![lead.product_id.clone()];
    for p in members {
        fill(&mut merged.brand, &p.brand);
        fill(&mut merged.description, &p.description);
        if merged.category.is_empty() {
            merged.category = p.category.clone();
        }
        if merged.image_urls.is_empty() {
            merged.image_urls = p.image_urls.clone();
        }
        for (k, v) in &p.attributes {
            merged
                .attributes
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        partner_ids.push(p.product_id.clone());
        for v in &p.variants {
            add(v);
        }
    }
    merged.variants = variants;
    merged.product_id = match merged.variants.as_slice() {
        [only] if only.gtin.is_some() => only.variant_id.clone(),
        _ => partner_ids
            .iter()
            .find(|id| !id.starts_with("gtin:"))
            .unwrap_or(&lead.product_id)
            .clone(),
    };
    merged
}

#[cold]
fn unreachable_group() -> ! {
    // Groups are built from at least one member.
    panic!("a merge group without members")
}

fn fill<T: Clone>(have: &mut Option<T>, other: &Option<T>) {
    if have.is_none() {
        have.clone_from(other);
    }
}

/// The currency an answer's rates compare in: `requested`, or else the one most rates are
/// quoted in (ties: the alphabetically first). `None` when there are no rates and none was
/// asked for.
pub fn answer_currency(rates: &[ShippingRate], requested: Option<&str>) -> Option<String> {
    if let Some(c) = requested {
        return Some(c.to_owned());
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in rates {
        *counts.entry(r.total.currency.as_str()).or_default() += 1;
    }
    // max_by_key keeps the last maximum: iterate in reverse for the alphabetically first.
    counts
        .iter()
        .rev()
        .max_by_key(|(_, n)| **n)
        .map(|(c, _)| (*c).to_owned())
}

/// Ranks rates within `currency` (see [`answer_currency`]): its rates first, by total, then
/// transit, carrier and service; the rates in other currencies after them, grouped by
/// currency (alphabetically) and ordered the same way within, never tagged — amounts in
/// two currencies do not compare. Exactly one rate is `cheapest` (the first of the answer
/// currency) and exactly one `fastest` (the shortest `transit_days.max` of the answer
/// currency, the cheaper of a tie first); none when no rate is in that currency.
pub fn rank_rates(rates: &mut [ShippingRate], currency: &str) {
    let transit = |r: &ShippingRate| r.transit_days.map_or(u32::MAX, |t| t.max);
    rates.sort_by(|a, b| {
        (
            a.total.currency != currency,
            &a.total.currency,
            a.total.amount_minor,
            transit(a),
            &a.carrier,
            &a.service_code,
        )
            .cmp(&(
                b.total.currency != currency,
                &b.total.currency,
                b.total.amount_minor,
                transit(b),
                &b.carrier,
                &b.service_code,
            ))
    });
    for r in rates.iter_mut() {
        r.tags.clear();
    }
    let in_currency = |r: &ShippingRate| r.total.currency == currency;
    if let Some(first) = rates.iter_mut().find(|r| in_currency(r)) {
        first.tags.push(RateTag::Cheapest);
    }
    // The sort puts the cheaper of equally fast rates first; `min_by_key` keeps the first.
    let fastest = rates
        .iter()
        .enumerate()
        .filter(|(_, r)| in_currency(r) && r.transit_days.is_some())
        .min_by_key(|(_, r)| transit(r))
        .map(|(i, _)| i);
    if let Some(i) = fastest {
        rates[i].tags.push(RateTag::Fastest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn product(partner: &str, id: &str, variants: &[(&str, &str)]) -> Product {
        let prov = json!({"partner_id": partner, "connector_id": partner, "connector_version": 1,
            "source_ref": id, "fetched_at": "2026-11-27T14:00:00Z"});
        let v: Value = json!({
            "product_id": id,
            "title": format!("{partner} title"),
            "variants": variants.iter().map(|(vid, offer)| json!({
                "variant_id": vid,
                "offers": [{"offer_id": offer, "seller": {"name": partner}, "availability": "in_stock",
                    "condition": "new", "price": {"amount_minor": 100, "currency": "USD"},
                    "provenance": prov}],
            })).collect::<Vec<_>>(),
            "provenance": prov,
        });
        serde_json::from_value(v).expect("a product")
    }

    #[test]
    fn merge_is_by_gtin_and_independent_of_answer_order() {
        let a = product(
            "threadline",
            "threadline:1",
            &[("gtin:A", "threadline:a"), ("gtin:B", "threadline:b")],
        );
        let b = product("voltmart", "gtin:B", &[("gtin:B", "voltmart:b")]);
        let c = product("acme", "acme:x", &[("acme:x", "acme:x")]);
        let sources = [
            RankedProducts {
                rank: (20, "threadline", "threadline"),
                products: vec![&a],
            },
            RankedProducts {
                rank: (20, "voltmart", "voltmart"),
                products: vec![&b],
            },
            RankedProducts {
                rank: (10, "acme", "acme"),
                products: vec![&c],
            },
        ];
        let merged = merge_products(&sources);
        let mut reversed = sources;
        reversed.reverse();
        assert_eq!(merge_products(&reversed), merged);
        assert_eq!(merged.len(), 2);
        let tl = merged
            .iter()
            .find(|p| p.product_id == "threadline:1")
            .expect("merged");
        assert_eq!(tl.variants.len(), 2);
        let b = tl
            .variants
            .iter()
            .find(|v| v.variant_id == "gtin:B")
            .expect("B");
        let offers: Vec<_> = b
            .offers
            .iter()
            .map(|o| o.provenance.partner_id.as_str())
            .collect();
        assert_eq!(offers, ["threadline", "voltmart"]);
        assert_eq!(tl.title, "threadline title");
    }
}
