//! Connectors: the declarative spec partners write to plug their API into the mall, loaded
//! with precise errors.
//!
//! A connector is data, not code: one YAML or JSON document (`schemas/connector.schema.json`)
//! saying how to call the partner and how to map its answers to the unified model.
//! [`ConnectorSpec::load`] turns a document into typed, checked configuration or a list of
//! [`Problem`]s, each with its JSON pointer, line, column and a plain reason.

pub mod decode;
mod error;
pub mod grants;
pub mod mapping;
pub mod prelude;
pub mod runtime;
pub mod source;
pub mod spec;
pub mod template;

pub use error::{ConnectorError, Problem};
pub use grants::Grant;
pub use source::Format;
pub use spec::{Capability, ConnectorSpec, Owner, PartnerKind};
