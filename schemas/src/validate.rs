//! Schema validation: every schema compiled once from an in-memory registry (no `$ref` is
//! ever fetched or read from disk), and validation errors rendered as a JSON pointer plus a
//! plain, lower-case reason that a partner can act on.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use jsonschema::{Draft, Registry, Validator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model;

const UNIFIED_BASE: &str = "https://mallgate.example/schemas/unified/";

/// The `$id` of the connector spec schema.
pub const CONNECTOR_SCHEMA_ID: &str = "https://mallgate.example/schemas/connector.schema.json";

const CONNECTOR_SCHEMA: &str = include_str!("../connector.schema.json");

/// The unified schema files, by file name. `common` holds shared definitions only.
const UNIFIED_FILES: &[(&str, &str)] = &[
    ("common", include_str!("../unified/common.schema.json")),
    ("money", include_str!("../unified/money.schema.json")),
    ("weight", include_str!("../unified/weight.schema.json")),
    (
        "dimensions",
        include_str!("../unified/dimensions.schema.json"),
    ),
    (
        "provenance",
        include_str!("../unified/provenance.schema.json"),
    ),
    ("address", include_str!("../unified/address.schema.json")),
    ("location", include_str!("../unified/location.schema.json")),
    ("offer", include_str!("../unified/offer.schema.json")),
    ("variant", include_str!("../unified/variant.schema.json")),
    ("product", include_str!("../unified/product.schema.json")),
    (
        "inventory_level",
        include_str!("../unified/inventory_level.schema.json"),
    ),
    ("parcel", include_str!("../unified/parcel.schema.json")),
    (
        "shipping_rate_request",
        include_str!("../unified/shipping_rate_request.schema.json"),
    ),
    (
        "shipping_rate",
        include_str!("../unified/shipping_rate.schema.json"),
    ),
    (
        "tracking_event",
        include_str!("../unified/tracking_event.schema.json"),
    ),
    ("tracking", include_str!("../unified/tracking.schema.json")),
];

/// The OpenAPI 3.1 document of the public and admin APIs, as written (YAML). Its unified
/// model schemas are referenced by file name; the gateway bundles them in.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// The stems of the unified schema files (`common`, `money`, ...), in dependency order.
pub fn unified_stems() -> impl Iterator<Item = &'static str> {
    UNIFIED_FILES.iter().map(|(stem, _)| *stem)
}

/// A schema of the unified model that a value can be validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnifiedSchema {
    Money,
    Weight,
    Dimensions,
    Provenance,
    Warning,
    GeoPoint,
    EventTime,
    Address,
    Location,
    Offer,
    Variant,
    Product,
    InventoryLevel,
    Parcel,
    ShippingRateRequest,
    ShippingRate,
    TrackingEvent,
    Tracking,
}

impl UnifiedSchema {
    pub const ALL: [UnifiedSchema; 18] = [
        Self::Money,
        Self::Weight,
        Self::Dimensions,
        Self::Provenance,
        Self::Warning,
        Self::GeoPoint,
        Self::EventTime,
        Self::Address,
        Self::Location,
        Self::Offer,
        Self::Variant,
        Self::Product,
        Self::InventoryLevel,
        Self::Parcel,
        Self::ShippingRateRequest,
        Self::ShippingRate,
        Self::TrackingEvent,
        Self::Tracking,
    ];

    /// A short name: the schema file's stem, or the definition's name for shared definitions.
    pub fn name(self) -> &'static str {
        match self {
            Self::Money => "money",
            Self::Weight => "weight",
            Self::Dimensions => "dimensions",
            Self::Provenance => "provenance",
            Self::Warning => "warning",
            Self::GeoPoint => "geo_point",
            Self::EventTime => "event_time",
            Self::Address => "address",
            Self::Location => "location",
            Self::Offer => "offer",
            Self::Variant => "variant",
            Self::Product => "product",
            Self::InventoryLevel => "inventory_level",
            Self::Parcel => "parcel",
            Self::ShippingRateRequest => "shipping_rate_request",
            Self::ShippingRate => "shipping_rate",
            Self::TrackingEvent => "tracking_event",
            Self::Tracking => "tracking",
        }
    }

    /// The schema's URI: a file's `$id`, or a definition inside `common.schema.json`.
    pub fn uri(self) -> String {
        match self {
            Self::Warning | Self::GeoPoint | Self::EventTime => {
                format!("{UNIFIED_BASE}common.schema.json#/$defs/{}", self.name())
            }
            other => format!("{UNIFIED_BASE}{}.schema.json", other.name()),
        }
    }
}

impl fmt::Display for UnifiedSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing wrong with a document: where (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer (RFC 6901) of the offending value; `""` is the whole document.
    pub pointer: String,
    pub reason: String,
}

impl Violation {
    pub fn new(pointer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.reason)
    }
}

fn join(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The value breaks its schema or the identity rules.
    #[error("invalid {schema}: {}", join(.violations))]
    Invalid {
        schema: UnifiedSchema,
        violations: Vec<Violation>,
    },
    /// The value does not have the shape of its Rust type.
    #[error("{schema} does not fit its type: {source}")]
    Shape {
        schema: UnifiedSchema,
        #[source]
        source: serde_json::Error,
    },
}

struct Compiled {
    /// Parsed schema documents by base URI, to read annotations (`x-message`) and the
    /// property names an unknown field could have meant.
    documents: HashMap<String, Value>,
    unified: HashMap<UnifiedSchema, Validator>,
    connector: Validator,
}

fn parse_embedded(text: &str) -> Value {
    serde_json::from_str(text).expect("embedded schemas are valid JSON; covered by tests")
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let mut documents = HashMap::new();
        for (stem, text) in UNIFIED_FILES {
            documents.insert(
                format!("{UNIFIED_BASE}{stem}.schema.json"),
                parse_embedded(text),
            );
        }
        documents.insert(
            CONNECTOR_SCHEMA_ID.to_owned(),
            parse_embedded(CONNECTOR_SCHEMA),
        );

        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .extend(
                documents
                    .iter()
                    .map(|(uri, doc)| (uri.clone(), doc.clone())),
            )
            .and_then(|builder| builder.prepare())
            .expect("embedded schemas form a valid registry; covered by tests");
        let build = |uri: &str| {
            jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(&registry)
                // Belt and braces: even with resolve-http/resolve-file off, refuse any
                // reference that is not in the registry.
                .offline()
                // The schemas use no standard format; this one names ISO 3166-1 codes.
                .should_validate_formats(true)
                .with_format(crate::COUNTRY_FORMAT, |s: &str| crate::is_country(s))
                .build(&serde_json::json!({ "$ref": uri }))
                .unwrap_or_else(|e| panic!("embedded schema {uri} compiles: {e}"))
        };
        let unified = UnifiedSchema::ALL
            .iter()
            .map(|schema| (*schema, build(&schema.uri())))
            .collect();
        let connector = build(CONNECTOR_SCHEMA_ID);
        Compiled {
            documents,
            unified,
            connector,
        }
    })
}

/// The parsed text of a unified schema file (by stem, e.g. `product`), or of the connector
/// schema (`connector`).
pub fn schema_document(stem: &str) -> Option<&'static Value> {
    let uri = if stem == "connector" {
        CONNECTOR_SCHEMA_ID.to_owned()
    } else {
        format!("{UNIFIED_BASE}{stem}.schema.json")
    };
    compiled().documents.get(&uri)
}

/// The connector spec schema document.
pub fn connector_schema_document() -> &'static Value {
    &compiled().documents[CONNECTOR_SCHEMA_ID]
}

/// Validates a JSON value against a unified schema.
pub fn validate_value(schema: UnifiedSchema, value: &Value) -> Result<(), SchemaError> {
    let compiled = compiled();
    let violations = render(compiled, &compiled.unified[&schema], value);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Invalid { schema, violations })
    }
}

/// Validates a record as a connector produced it: its schema, then the identity rules a
/// schema cannot state (products and variants). What the gateway caches has passed this.
pub fn validate_record(schema: UnifiedSchema, value: &Value) -> Result<(), SchemaError> {
    if schema == UnifiedSchema::Product {
        return validate_product(value).map(drop);
    }
    validate_value(schema, value)?;
    let violations = match schema {
        UnifiedSchema::Variant => typed::<model::Variant>(schema, value)?.extra_violations(),
        _ => Vec::new(),
    };
    if violations.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Invalid { schema, violations })
    }
}

/// Validates a product record like [`validate_record`] and returns it typed: the
/// deserialization the identity rules need is not thrown away.
pub fn validate_product(value: &Value) -> Result<model::Product, SchemaError> {
    let schema = UnifiedSchema::Product;
    validate_value(schema, value)?;
    let product = typed::<model::Product>(schema, value)?;
    let violations = product.extra_violations();
    if violations.is_empty() {
        Ok(product)
    } else {
        Err(SchemaError::Invalid { schema, violations })
    }
}

/// A record of one of the capabilities' schemas, typed: what the gateway caches, merges
/// and serves. Each record is typed once, where it is mapped; a record that does not type
/// is dropped there with a warning.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Product(model::Product),
    InventoryLevel(model::InventoryLevel),
    Location(model::Location),
    ShippingRate(model::ShippingRate),
    Tracking(model::Tracking),
}

impl Record {
    pub fn as_product(&self) -> Option<&model::Product> {
        match self {
            Self::Product(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_inventory_level(&self) -> Option<&model::InventoryLevel> {
        match self {
            Self::InventoryLevel(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_location(&self) -> Option<&model::Location> {
        match self {
            Self::Location(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_shipping_rate(&self) -> Option<&model::ShippingRate> {
        match self {
            Self::ShippingRate(r) => Some(r),
            _ => None,
        }
    }

    pub fn as_tracking(&self) -> Option<&model::Tracking> {
        match self {
            Self::Tracking(t) => Some(t),
            _ => None,
        }
    }
}

/// Validates a record like [`validate_record`] and, for the schemas records are served
/// in (products, inventory levels, locations, rates, tracking), returns it typed; `None`
/// for any other schema.
pub fn validate_typed(schema: UnifiedSchema, value: &Value) -> Result<Option<Record>, SchemaError> {
    let record = match schema {
        UnifiedSchema::Product => return validate_product(value).map(|p| Some(Record::Product(p))),
        UnifiedSchema::InventoryLevel => Record::InventoryLevel(checked(schema, value)?),
        UnifiedSchema::Location => Record::Location(checked(schema, value)?),
        UnifiedSchema::ShippingRate => Record::ShippingRate(checked(schema, value)?),
        UnifiedSchema::Tracking => Record::Tracking(checked(schema, value)?),
        other => return validate_record(other, value).map(|()| None),
    };
    Ok(Some(record))
}

/// `value` valid against `schema` and typed.
fn checked<T: DeserializeOwned>(schema: UnifiedSchema, value: &Value) -> Result<T, SchemaError> {
    validate_value(schema, value)?;
    typed(schema, value)
}

fn typed<T: DeserializeOwned>(schema: UnifiedSchema, value: &Value) -> Result<T, SchemaError> {
    T::deserialize(value).map_err(|source| SchemaError::Shape { schema, source })
}

/// Every violation of the connector spec schema in `document`, sorted by pointer.
pub fn connector_violations(document: &Value) -> Vec<Violation> {
    let compiled = compiled();
    render(compiled, &compiled.connector, document)
}

/// A type of the unified model, tied to its schema.
pub trait Unified: Serialize + DeserializeOwned {
    const SCHEMA: UnifiedSchema;

    /// Rules beyond the schema (identity); pointers relative to the value.
    fn extra_violations(&self) -> Vec<Violation> {
        Vec::new()
    }

    /// Checks the value against its schema and the identity rules.
    fn validate(&self) -> Result<(), SchemaError> {
        let value = serde_json::to_value(self).map_err(|source| SchemaError::Shape {
            schema: Self::SCHEMA,
            source,
        })?;
        validate_value(Self::SCHEMA, &value)?;
        let violations = self.extra_violations();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(SchemaError::Invalid {
                schema: Self::SCHEMA,
                violations,
            })
        }
    }

    /// Validates a JSON value, then reads it into the type.
    fn from_value(value: Value) -> Result<Self, SchemaError> {
        validate_value(Self::SCHEMA, &value)?;
        let typed: Self = serde_json::from_value(value).map_err(|source| SchemaError::Shape {
            schema: Self::SCHEMA,
            source,
        })?;
        let violations = typed.extra_violations();
        if violations.is_empty() {
            Ok(typed)
        } else {
            Err(SchemaError::Invalid {
                schema: Self::SCHEMA,
                violations,
            })
        }
    }
}

macro_rules! unified {
    ($($ty:ident => $schema:ident),* $(,)?) => {
        $(impl Unified for model::$ty { const SCHEMA: UnifiedSchema = UnifiedSchema::$schema; })*
    };
}

unified! {
    Money => Money, Weight => Weight, Dimensions => Dimensions, Provenance => Provenance,
    Warning => Warning, GeoPoint => GeoPoint, EventTime => EventTime, Address => Address,
    Location => Location, Offer => Offer, InventoryLevel => InventoryLevel, Parcel => Parcel,
    ShippingRateRequest => ShippingRateRequest, ShippingRate => ShippingRate,
    TrackingEvent => TrackingEvent, Tracking => Tracking,
}

impl Unified for model::Product {
    const SCHEMA: UnifiedSchema = UnifiedSchema::Product;
    fn extra_violations(&self) -> Vec<Violation> {
        crate::identity::identity_violations(self)
    }
}

impl Unified for model::Variant {
    const SCHEMA: UnifiedSchema = UnifiedSchema::Variant;
    fn extra_violations(&self) -> Vec<Violation> {
        crate::identity::variant_identity_violations(self)
    }
}

mod render;

pub use render::escape_token;
use render::render;

#[cfg(test)]
mod tests {
    use super::render::{did_you_mean, percent_decode};
    use super::*;

    #[test]
    fn every_schema_compiles_and_has_an_id() {
        for (stem, text) in UNIFIED_FILES {
            let doc: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(
                doc["$id"],
                Value::String(format!("{UNIFIED_BASE}{stem}.schema.json")),
                "{stem}"
            );
        }
        for schema in UnifiedSchema::ALL {
            assert!(compiled().unified.contains_key(&schema), "{schema}");
        }
        assert_eq!(connector_schema_document()["$id"], CONNECTOR_SCHEMA_ID);
    }

    #[test]
    fn suggestions_are_close_names_only() {
        let candidates = vec!["records".to_owned(), "request".to_owned()];
        assert_eq!(
            did_you_mean("recrods", &candidates),
            "; did you mean `records`?"
        );
        assert_eq!(did_you_mean("banana", &candidates), "");
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(escape_token("a/b~c"), "a~1b~0c");
        assert_eq!(percent_decode("/%24defs/auth"), "/$defs/auth");
    }
}
