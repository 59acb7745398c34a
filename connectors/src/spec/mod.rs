//! The connector spec: strict serde types mirroring `schemas/connector.schema.json`, and
//! loading a document with every problem reported by JSON pointer, line and column.
//!
//! Loading is a pipeline that stops at the first stage that finds problems:
//! parse (syntax) -> JSON Schema (shape) -> serde (types) -> rules the schema cannot say
//! (ownership of secrets, kind vs capabilities, template fields, URLs).
//!
//! - [`partner`]: how the partner is reached and authenticated: endpoints, health check,
//!   `auth`, `tls`, secret references.
//! - [`policies`]: timeouts, retries, cache, limits.
//! - [`capability`]: how one capability is served: request, pagination, decode, mapping.
//! - [`load`]: the loading pipeline and the rules the schema cannot say.

mod capability;
mod load;
mod partner;
mod policies;

pub use capability::*;
pub use partner::*;
pub use policies::*;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

fn default_one() -> u32 {
    1
}

/// Who submits a connector: the operator (GitOps directory, operator token) or a partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    Operator,
    Partner(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerKind {
    Retailer,
    Supplier,
    Carrier,
}

impl PartnerKind {
    /// The capabilities a partner of this kind may serve.
    pub fn allowed_capabilities(self) -> &'static [Capability] {
        match self {
            Self::Retailer | Self::Supplier => &[
                Capability::CatalogSearch,
                Capability::CatalogGet,
                Capability::InventoryGet,
                Capability::LocationsList,
            ],
            Self::Carrier => &[
                Capability::RatesQuote,
                Capability::TrackingGet,
                Capability::LocationsList,
            ],
        }
    }

    /// Merge rank when the connector gives none: suppliers before retailers.
    pub fn default_priority(self) -> u32 {
        match self {
            Self::Supplier => 10,
            Self::Retailer | Self::Carrier => 20,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Retailer => "retailer",
            Self::Supplier => "supplier",
            Self::Carrier => "carrier",
        }
    }
}

/// What a connector can do for the unified API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Capability {
    #[serde(rename = "catalog.search")]
    CatalogSearch,
    #[serde(rename = "catalog.get")]
    CatalogGet,
    #[serde(rename = "inventory.get")]
    InventoryGet,
    #[serde(rename = "locations.list")]
    LocationsList,
    #[serde(rename = "rates.quote")]
    RatesQuote,
    #[serde(rename = "tracking.get")]
    TrackingGet,
}

impl Capability {
    /// A lookup of the one record a key names (a parcel by its tracking number): a reply
    /// that holds records of which the map produces none is the mapping failing, never
    /// "no such record". (`catalog.get` is not: a map may pick one product of several.)
    pub fn is_lookup(self) -> bool {
        matches!(self, Self::TrackingGet)
    }

    pub const ALL: [Capability; 6] = [
        Self::CatalogSearch,
        Self::CatalogGet,
        Self::InventoryGet,
        Self::LocationsList,
        Self::RatesQuote,
        Self::TrackingGet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::CatalogSearch => "catalog.search",
            Self::CatalogGet => "catalog.get",
            Self::InventoryGet => "inventory.get",
            Self::LocationsList => "locations.list",
            Self::RatesQuote => "rates.quote",
            Self::TrackingGet => "tracking.get",
        }
    }

    /// The documented query fields a request template may use (besides `request_id`).
    /// Object fields (`from`, `to`, `parcels`) are reached with dotted paths.
    pub fn query_fields(self) -> &'static [&'static str] {
        match self {
            Self::CatalogSearch => &[
                "q",
                "gtin",
                "brand",
                "category",
                "min_price",
                "max_price",
                "currency",
                "availability",
                "sort",
                "limit",
            ],
            Self::CatalogGet => &["id", "gtin"],
            Self::InventoryGet => &[
                "gtin",
                "sku",
                "location_id",
                "lat",
                "lon",
                "radius_km",
                "fulfillment",
            ],
            Self::LocationsList => &["lat", "lon", "radius_km", "kind"],
            Self::RatesQuote => &["from", "to", "parcels", "weight_g"],
            Self::TrackingGet => &["tracking_number", "carrier"],
        }
    }

    /// The unified schema a mapped record of this capability must satisfy.
    pub fn record_schema(self) -> mallgate_schemas::UnifiedSchema {
        use mallgate_schemas::UnifiedSchema;
        match self {
            Self::CatalogSearch | Self::CatalogGet => UnifiedSchema::Product,
            Self::InventoryGet => UnifiedSchema::InventoryLevel,
            Self::LocationsList => UnifiedSchema::Location,
            Self::RatesQuote => UnifiedSchema::ShippingRate,
            Self::TrackingGet => UnifiedSchema::Tracking,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Countries a carrier ships between: from any of `from` to any of `to` (ISO 3166-1
/// alpha-2; an empty list is any country).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
}

impl Lane {
    fn admits(list: &[String], country: &str) -> bool {
        list.is_empty() || list.iter().any(|c| c.eq_ignore_ascii_case(country))
    }
}

impl ConnectorSpec {
    /// Whether this connector quotes shipments from `origin` to `destination`: it declares
    /// no lanes, or one of its lanes covers both.
    pub fn serves_lane(&self, origin: &str, destination: &str) -> bool {
        self.lanes.is_empty()
            || self
                .lanes
                .iter()
                .any(|l| Lane::admits(&l.from, origin) && Lane::admits(&l.to, destination))
    }
}

/// A connector document, as partners write it. Versions are assigned by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    pub id: String,
    pub partner: String,
    pub kind: PartnerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
    /// The (origin, destination) countries a carrier quotes for; empty: everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<Lane>,
    pub endpoints: Vec<Endpoint>,
    /// jq `def`s every program of this connector may call (a map shared by
    /// `catalog.search` and `catalog.get`, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definitions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub policies: Policies,
    pub capabilities: BTreeMap<Capability, CapabilitySpec>,
}
