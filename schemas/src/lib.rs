//! The unified mall model: JSON Schemas (the source of truth, under `schemas/unified/`),
//! serde types that mirror them, and validators compiled once per process.
//!
//! Every answer Mallgate gives a frontend is built from these types, and every record a
//! connector maps is validated against its schema before it is cached or merged.

mod country;
mod identity;
mod model;
mod validate;

pub use country::{COUNTRY_FORMAT, is_country};
pub use identity::{gtin14_is_valid, identity_violations};
pub use model::*;
pub use validate::{
    CONNECTOR_SCHEMA_ID, OPENAPI_YAML, Record, SchemaError, Unified, UnifiedSchema, Violation,
    connector_schema_document, connector_violations, escape_token, schema_document, unified_stems,
    validate_product, validate_record, validate_typed, validate_value,
};
