//! The trusted half of mapping: a mapped output becomes a unified record here, in the
//! gateway, whether the partner's jq ran in process or in a sandbox worker. Nulls are
//! dropped, the prelude's warnings attached, the record validated against its unified
//! schema, and its identity checked against the connector that produced it.
//!
//! **Identity is the gateway's, not the map's** (DESIGN §5). A record whose provenance
//! names another partner, connector or version, an offer whose id or seller claims another
//! partner, or a product or variant id in another partner's namespace is dropped alone with
//! a warning saying what it claimed. An offer without a seller id gets its partner's.

use jaq_json::Val;
use mallgate_schemas::{Record, UnifiedSchema, Warning, validate_typed};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Globals, MappedPage};

/// One mapped output, before the gateway's checks: what a sandbox worker sends back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The record's position in the reply.
    pub index: usize,
    /// The partner's own id of the input record, to name it in warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// A reply mapped by the partner's programs, not yet checked by the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawPage {
    pub not_found: bool,
    pub selected: usize,
    pub outputs: Vec<RawRecord>,
    /// Records whose map failed (already named and explained).
    pub dropped: Vec<Warning>,
    pub paging: Option<Value>,
}

/// Who produced a page: the connector's partner, id and version, from `$provenance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub partner: String,
    pub connector: String,
    pub version: u64,
}

impl Identity {
    /// The identity the globals were built for; `None` when they name none (tests and tools
    /// that map without a connector), in which case nothing is checked.
    pub fn of(globals: &Globals) -> Option<Self> {
        let p = &globals.provenance;
        Some(Self {
            partner: p.get("partner_id")?.as_str()?.to_owned(),
            connector: p.get("connector_id")?.as_str()?.to_owned(),
            version: p.get("connector_version")?.as_u64()?,
        })
    }

    /// Checks (and completes) `record`: `Err` names the first claim that is not this
    /// connector's.
    fn check(&self, record: &mut Value, schema: UnifiedSchema) -> Result<(), String> {
        if schema == UnifiedSchema::Product {
            self.own_id(record.get("product_id"), "/product_id")?;
            if let Some(Value::Array(variants)) = record.get_mut("variants") {
                for (i, variant) in variants.iter_mut().enumerate() {
                    self.own_id(
                        variant.get("variant_id"),
                        &format!("/variants/{i}/variant_id"),
                    )?;
                    if let Some(Value::Array(offers)) = variant.get_mut("offers") {
                        for (j, offer) in offers.iter_mut().enumerate() {
                            self.offer(offer, &format!("/variants/{i}/offers/{j}"))?;
                        }
                    }
                }
            }
        }
        self.provenance(record, "")
    }

    /// `gtin:` ids are anyone's; any other id must be in this partner's namespace.
    fn own_id(&self, id: Option<&Value>, at: &str) -> Result<(), String> {
        match id.and_then(Value::as_str) {
            Some(id) if !id.starts_with("gtin:") && !self.namespaced(id) => Err(format!(
                "{at} `{}` is not in partner `{}`'s namespace (`{}:...`)",
                clip(id),
                self.partner,
                self.partner
            )),
            _ => Ok(()),
        }
    }

    fn namespaced(&self, id: &str) -> bool {
        id.strip_prefix(self.partner.as_str())
            .is_some_and(|rest| rest.starts_with(':'))
    }

    fn offer(&self, offer: &mut Value, at: &str) -> Result<(), String> {
        if let Some(id) = offer.get("offer_id").and_then(Value::as_str)
            && !self.namespaced(id)
        {
            return Err(format!(
                "{at}/offer_id `{}` does not start with `{}:`",
                clip(id),
                self.partner
            ));
        }
        if let Some(Value::Object(seller)) = offer.get_mut("seller") {
            match seller.get("id").and_then(Value::as_str) {
                None => {
                    seller.insert("id".into(), Value::String(self.partner.clone()));
                }
                Some(id) if id == self.partner || self.namespaced(id) => {}
                Some(id) => {
                    return Err(format!(
                        "{at}/seller/id `{}` is not partner `{}`",
                        clip(id),
                        self.partner
                    ));
                }
            }
        }
        self.provenance(offer, at)
    }

    fn provenance(&self, holder: &Value, at: &str) -> Result<(), String> {
        let Some(p) = holder.get("provenance") else {
            return Ok(());
        };
        let claims = [
            (
                "partner_id",
                p.get("partner_id").and_then(Value::as_str) == Some(&self.partner),
            ),
            (
                "connector_id",
                p.get("connector_id").and_then(Value::as_str) == Some(&self.connector),
            ),
            (
                "connector_version",
                p.get("connector_version").and_then(Value::as_u64) == Some(self.version),
            ),
        ];
        match claims
            .iter()
            .find(|(field, ok)| !ok && p.get(*field).is_some())
        {
            Some((field, _)) => Err(format!(
                "{at}/provenance/{field} {} is not this connector's ({} `{}` v{})",
                p.get(*field)
                    .map(|v| clip(&v.to_string()))
                    .unwrap_or_default(),
                self.partner,
                self.connector,
                self.version
            )),
            None => Ok(()),
        }
    }
}

fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The gateway's half: every raw output validated and identity-checked, in order.
pub fn finish_page(raw: RawPage, schema: UnifiedSchema, identity: Option<&Identity>) -> MappedPage {
    let mut page = MappedPage {
        not_found: raw.not_found,
        selected: raw.selected,
        dropped: raw.dropped,
        paging: raw.paging,
        ..MappedPage::default()
    };
    for output in raw.outputs {
        match finish_value(output.value, &output.warnings, schema, identity) {
            Ok(done) => page.push(done),
            Err((reason, mapped_ref)) => page.dropped.push(dropped(
                &record_name(
                    output.index,
                    mapped_ref.as_deref().or(output.source_ref.as_deref()),
                ),
                &reason,
            )),
        }
    }
    page
}

pub(super) fn dropped(record: &str, reason: &str) -> Warning {
    Warning {
        code: "record_dropped".to_owned(),
        message: format!("{record} dropped: {reason}"),
        field: None,
    }
}

/// Why a record was dropped, as a bounded label (the `record_dropped` warning's message
/// (or a `MappingRejected` error's first reason) says it in full): `map_failed`, `identity`, `not_an_object`, `too_large` or `schema`.
pub fn drop_reason(message: &str) -> &'static str {
    let reason = message.split_once(" dropped: ").map_or(message, |(_, r)| r);
    if reason.starts_with("the map failed") {
        "map_failed"
    } else if reason.starts_with("identity:") {
        "identity"
    } else if reason.starts_with("the map produced") {
        "not_an_object"
    } else if reason.contains("larger than") || reason.contains("too large") {
        "too_large"
    } else {
        "schema"
    }
}

/// The usual keys of a partner's own id for a record, first match wins.
const NATIVE_REF_KEYS: [&str; 6] = ["id", "sku", "itemId", "productId", "trackingNumber", "code"];

/// How a warning names a record: its index in the reply, and its id when one is known.
pub(super) fn record_name(index: usize, source_ref: Option<&str>) -> String {
    match source_ref {
        Some(r) => format!("record {index} (`{r}`)"),
        None => format!("record {index}"),
    }
}

/// [`native_ref`] of a record read without jq.
pub(super) fn native_ref_json(record: &Value) -> Option<String> {
    let Value::Object(map) = record else {
        return None;
    };
    NATIVE_REF_KEYS.iter().find_map(|key| match map.get(*key)? {
        Value::String(s) => Some(clip(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A partner's own id for a record, to name it in warnings: the first of a few usual keys.
pub(super) fn native_ref(record: &Val) -> Option<String> {
    let Val::Obj(map) = record else {
        return None;
    };
    NATIVE_REF_KEYS
        .iter()
        .find_map(|key| match map.get(&crate::decode::text(*key))? {
            Val::TStr(b) | Val::BStr(b) => Some(clip(&String::from_utf8_lossy(b))),
            Val::Num(n) => Some(n.to_string()),
            _ => None,
        })
}

/// A mapped record as JSON -> a valid record: nulls dropped, warnings attached, identity
/// checked, validated and typed. Errors give the reason and the record's `source_ref` when it has one.
pub(super) fn finish_value(
    mut value: Value,
    warnings: &[Warning],
    schema: UnifiedSchema,
    identity: Option<&Identity>,
) -> Result<(Value, Option<Record>), (String, Option<String>)> {
    strip_nulls(&mut value);
    let source_ref = value
        .pointer("/provenance/source_ref")
        .and_then(Value::as_str)
        .map(clip);
    if !value.is_object() {
        return Err((
            format!("the map produced {}, not an object", kind(&value)),
            None,
        ));
    }
    if let Some(identity) = identity {
        identity
            .check(&mut value, schema)
            .map_err(|claim| (format!("identity: {claim}"), source_ref.clone()))?;
    }
    if !warnings.is_empty()
        && let Some(Value::Object(provenance)) = value.get_mut("provenance")
    {
        let list = provenance
            .entry("warnings")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.extend(warnings.iter().filter_map(|w| serde_json::to_value(w).ok()));
        }
    }
    // Validated and typed once, here: a record that does not type is dropped with the
    // reason, never skipped later where it is served.
    let typed = validate_typed(schema, &value).map_err(|e| (e.to_string(), source_ref))?;
    Ok((value, typed))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Removes object members whose value is null, at every depth: in the unified model a null
/// member means "absent" (no schema field is nullable), so `as_of: (.x | instant(null))`
/// just works.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
