//! The connector spec: strict serde types mirroring `schemas/connector.schema.json`, and
//! loading a document with every problem reported by JSON pointer, line and column.
//!
//! Loading is a pipeline that stops at the first stage that finds problems:
//! parse (syntax) -> JSON Schema (shape) -> serde (types) -> rules the schema cannot say
//! (ownership of secrets, kind vs capabilities, template fields, URLs).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ConnectorError, Problem};
use crate::mapping::ConnectorPrograms;
use crate::source::{self, Format, SourceMap, escape_token};
use crate::template::Template;

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

/// A reference to a secret, never the secret itself: `secret:NAME`, `env:VAR`, `file:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(pub String);

/// Where a secret reference points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// The partner's own namespace in the gateway's secret store.
    Partner,
    /// An environment variable of the gateway process (operator connectors only).
    Env,
    /// A file on the gateway host (operator connectors only).
    File,
}

impl SecretRef {
    /// The reference's source and name, or `None` for a literal value.
    pub fn parse(text: &str) -> Option<(SecretSource, &str)> {
        let (scheme, name) = text.split_once(':')?;
        let source = match scheme {
            "secret" => SecretSource::Partner,
            "env" => SecretSource::Env,
            "file" => SecretSource::File,
            _ => return None,
        };
        Some((source, name))
    }
}

fn default_one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub url: String,
    /// Failover order: lowest first.
    #[serde(default)]
    pub priority: u32,
    #[serde(default = "default_one")]
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    /// `None`: the operator's `resilience` default (10 s unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u32>,
    /// `None`: the operator's `resilience` default (1000 ms unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    #[serde(default = "HealthCheck::default_healthy_statuses")]
    pub healthy_statuses: Vec<u16>,
}

impl HealthCheck {
    fn default_healthy_statuses() -> Vec<u16> {
        vec![200]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Client id and secret in an HTTP Basic `Authorization` header (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// Client id and secret as form fields of the token request.
    Body,
}

fn default_auth_header() -> String {
    "Authorization".to_owned()
}

fn default_auth_scheme() -> String {
    "Bearer".to_owned()
}

fn default_refresh_before_s() -> u32 {
    30
}

/// How the gateway authenticates to the partner.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    ApiKey {
        #[serde(rename = "in")]
        location: KeyLocation,
        name: String,
        value: SecretRef,
    },
    Basic {
        /// A literal or a secret reference.
        username: String,
        password: SecretRef,
    },
    Bearer {
        token: SecretRef,
        #[serde(default = "default_auth_header")]
        header: String,
        #[serde(default = "default_auth_scheme")]
        scheme: String,
    },
    Oauth2ClientCredentials {
        token_url: String,
        /// A literal or a secret reference.
        client_id: String,
        client_secret: SecretRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        #[serde(default)]
        client_auth: ClientAuth,
        #[serde(default = "default_auth_header")]
        header: String,
        #[serde(default = "default_auth_scheme")]
        scheme: String,
        #[serde(default = "default_refresh_before_s")]
        refresh_before_s: u32,
    },
}

impl Auth {
    /// Every field that holds or may hold a secret reference, with its pointer below
    /// `/auth`.
    fn secret_fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::None => vec![],
            Self::ApiKey { value, .. } => vec![("value", value.0.as_str())],
            Self::Basic { username, password } => {
                vec![
                    ("username", username.as_str()),
                    ("password", password.0.as_str()),
                ]
            }
            Self::Bearer { token, .. } => vec![("token", token.0.as_str())],
            Self::Oauth2ClientCredentials {
                client_id,
                client_secret,
                ..
            } => vec![
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.0.as_str()),
            ],
        }
    }
}

/// TLS to the partner beyond the defaults (platform roots, TLS 1.2+, always verified).
/// Every field that carries key material is a reference; there is no field that turns
/// verification off.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificates of CAs trusted for this partner, besides the platform's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretRef>,
    /// PEM certificate chain for mutual TLS (with `client_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretRef>,
    /// The name endpoint certificates are verified against, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Tls {
    /// The reference fields, with their pointer below `/tls`.
    fn secret_fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("ca", &self.ca),
            ("client_certificate", &self.client_certificate),
            ("client_key", &self.client_key),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_ref().map(|v| (field, v.0.as_str())))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "RetryPolicy::default_backoff_ms")]
    pub backoff_ms: u32,
    /// Retries as a share of exchanges; `None`: the operator's `resilience` default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<u32>,
}

impl RetryPolicy {
    fn default_max_attempts() -> u32 {
        2
    }
    fn default_backoff_ms() -> u32 {
        25
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            backoff_ms: Self::default_backoff_ms(),
            budget_percent: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    #[serde(default = "CachePolicy::default_ttl_s")]
    pub ttl_s: u32,
    #[serde(default = "CachePolicy::default_stale_while_revalidate_s")]
    pub stale_while_revalidate_s: u32,
    #[serde(default = "CachePolicy::default_stale_if_error_s")]
    pub stale_if_error_s: u32,
}

impl CachePolicy {
    fn default_ttl_s() -> u32 {
        60
    }
    fn default_stale_while_revalidate_s() -> u32 {
        30
    }
    fn default_stale_if_error_s() -> u32 {
        3600
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            ttl_s: Self::default_ttl_s(),
            stale_while_revalidate_s: Self::default_stale_while_revalidate_s(),
            stale_if_error_s: Self::default_stale_if_error_s(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Timeout of one HTTP exchange.
    #[serde(default = "Policies::default_timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Hedge idempotent reads after this delay; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_after_ms: Option<u32>,
    /// `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_rps: Option<f64>,
    /// Calls that may go at once before `rate_limit_rps` paces them (default: one
    /// second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    #[serde(default = "Policies::default_max_concurrency")]
    pub max_concurrency: u32,
    #[serde(default)]
    pub cache: CachePolicy,
}

impl Policies {
    fn default_timeout_ms() -> u32 {
        800
    }
    fn default_max_concurrency() -> u32 {
        64
    }
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            timeout_ms: Self::default_timeout_ms(),
            retry: RetryPolicy::default(),
            hedge_after_ms: None,
            rate_limit_rps: None,
            rate_limit_burst: None,
            max_concurrency: Self::default_max_concurrency(),
            cache: CachePolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Method {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

/// A jq program computing a value from the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JqValue {
    pub jq: String,
}

/// A query parameter's value: a template, or a jq program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueryValue {
    Template(String),
    Jq(JqValue),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    Json,
    Form,
    Xml,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub format: BodyFormat,
    pub jq: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default)]
    pub method: Method,
    pub path: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, QueryValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

fn default_max_pages() -> u32 {
    10
}

fn default_rel() -> String {
    "next".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLocation {
    Query,
    Header,
}

/// How to walk a multi-page answer. Every style stops at `max_pages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    Page {
        param: String,
        #[serde(default = "default_one")]
        start: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size_param: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_pages: Option<String>,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    Offset {
        param: String,
        size_param: String,
        size: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<String>,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    Cursor {
        param: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first: Option<String>,
        next: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    LinkHeader {
        #[serde(default = "default_rel")]
        rel: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    NextUrl {
        next: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
    NextToken {
        next: String,
        #[serde(rename = "in")]
        location: TokenLocation,
        name: String,
        #[serde(default = "default_max_pages")]
        max_pages: u32,
    },
}

impl Pagination {
    /// The jq program the walk reads from each reply, with its field name (a pointer suffix
    /// below the capability): `pagination/next`, `pagination/total_pages`...
    pub fn program(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Page { total_pages, .. } => total_pages
                .as_deref()
                .map(|c| ("pagination/total_pages", c)),
            Self::Offset { total, .. } => total.as_deref().map(|c| ("pagination/total", c)),
            Self::Cursor { next, .. }
            | Self::NextUrl { next, .. }
            | Self::NextToken { next, .. } => Some(("pagination/next", next.as_str())),
            Self::LinkHeader { .. } => None,
        }
    }

    /// The most pages one call walks.
    pub fn max_pages(&self) -> u32 {
        match self {
            Self::Page { max_pages, .. }
            | Self::Offset { max_pages, .. }
            | Self::Cursor { max_pages, .. }
            | Self::LinkHeader { max_pages, .. }
            | Self::NextUrl { max_pages, .. }
            | Self::NextToken { max_pages, .. } => *max_pages,
        }
    }

    /// The query parameter the walk sets, which the request template must not set too.
    fn query_param(&self) -> Option<&str> {
        match self {
            Self::Page { param, .. } | Self::Offset { param, .. } | Self::Cursor { param, .. } => {
                Some(param)
            }
            Self::NextToken {
                location: TokenLocation::Query,
                name,
                ..
            } => Some(name),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    #[default]
    Json,
    Xml,
    Csv,
    X12,
}

impl Decode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Xml => "xml",
            Self::Csv => "csv",
            Self::X12 => "x12",
        }
    }
}

fn default_records() -> String {
    ".".to_owned()
}

/// How one capability is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySpec {
    pub request: RequestSpec,
    /// `None`: true for GET, false otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    #[serde(default)]
    pub decode: Decode,
    #[serde(default = "default_records")]
    pub records: String,
    pub map: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supports: Vec<String>,
    /// Overrides `policies.cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

impl CapabilitySpec {
    /// Whether a retry or hedge of this capability's requests is safe.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
            .unwrap_or(self.request.method == Method::Get)
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
    pub endpoints: Vec<Endpoint>,
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

impl ConnectorSpec {
    /// The merge rank of this partner's descriptive fields: lower wins.
    pub fn effective_priority(&self) -> u32 {
        self.priority.unwrap_or(self.kind.default_priority())
    }

    /// Loads a connector document submitted by `owner`, or returns every problem found at
    /// the first failing stage, sorted by position.
    pub fn load(text: &str, format: Format, owner: &Owner) -> Result<Self, ConnectorError> {
        Self::load_compiled(text, format, owner).map(|(spec, _)| spec)
    }

    /// Like [`load`](Self::load), keeping the compiled jq programs the last stage built,
    /// for callers that run the connector (no second compile).
    pub fn load_compiled(
        text: &str,
        format: Format,
        owner: &Owner,
    ) -> Result<(Self, ConnectorPrograms), ConnectorError> {
        let (value, map) =
            source::parse(text, format).map_err(|problem| ConnectorError::InvalidSpec {
                problems: vec![problem],
            })?;
        Self::load_value_compiled(value, &map, owner)
    }

    /// Loads an already parsed document; `map` gives positions (empty: none).
    pub fn load_value(
        value: Value,
        map: &SourceMap,
        owner: &Owner,
    ) -> Result<Self, ConnectorError> {
        Self::load_value_compiled(value, map, owner).map(|(spec, _)| spec)
    }

    /// [`load_value`](Self::load_value), keeping the compiled programs.
    pub fn load_value_compiled(
        value: Value,
        map: &SourceMap,
        owner: &Owner,
    ) -> Result<(Self, ConnectorPrograms), ConnectorError> {
        let located = |pointer: String, reason: String| {
            let pos = map.locate(&pointer);
            Problem {
                pointer,
                line: pos.map(|p| p.line),
                column: pos.map(|p| p.column),
                reason,
            }
        };
        let finish = |mut problems: Vec<Problem>| {
            problems.sort_by(|a, b| {
                (a.line, a.column, &a.pointer, &a.reason)
                    .cmp(&(b.line, b.column, &b.pointer, &b.reason))
            });
            problems.dedup();
            ConnectorError::InvalidSpec { problems }
        };

        let violations = mallgate_schemas::connector_violations(&value);
        if !violations.is_empty() {
            return Err(finish(
                violations
                    .into_iter()
                    .map(|v| located(v.pointer, v.reason))
                    .collect(),
            ));
        }
        // The schema and these types agree (tested); should they ever drift, the problem
        // still names its place.
        let spec: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let pointer = serde_path_pointer(e.path());
            finish(vec![located(pointer, e.inner().to_string())])
        })?;
        let problems = spec.rule_violations(owner);
        if !problems.is_empty() {
            return Err(finish(
                problems
                    .into_iter()
                    .map(|(pointer, reason)| located(pointer, reason))
                    .collect(),
            ));
        }
        // Last, every jq program must compile under the sandbox's rules.
        let programs = ConnectorPrograms::compile(&spec).map_err(|problems| {
            finish(
                problems
                    .into_iter()
                    .map(|(pointer, reason)| located(pointer, reason))
                    .collect(),
            )
        })?;
        Ok((spec, programs))
    }

    /// The rules a JSON Schema cannot state, as (pointer, reason).
    fn rule_violations(&self, owner: &Owner) -> Vec<(String, String)> {
        let mut out = Vec::new();

        if let Owner::Partner(partner) = owner
            && &self.partner != partner
        {
            out.push((
                "/partner".to_owned(),
                format!(
                    "this connector belongs to partner `{}`; partner `{partner}` may only submit its own connectors",
                    self.partner
                ),
            ));
        }

        let auth_fields = self
            .auth
            .secret_fields()
            .into_iter()
            .map(|(f, t)| ("auth", f, t));
        let tls_fields = self
            .tls
            .iter()
            .flat_map(Tls::secret_fields)
            .map(|(f, t)| ("tls", f, t));
        for (block, field, text) in auth_fields.chain(tls_fields) {
            let Some((source, _)) = SecretRef::parse(text) else {
                continue;
            };
            if matches!(owner, Owner::Partner(_)) && source != SecretSource::Partner {
                let scheme = if source == SecretSource::Env {
                    "env:"
                } else {
                    "file:"
                };
                out.push((
                    format!("/{block}/{field}"),
                    format!(
                        "`{scheme}` references are allowed only in operator-owned connectors; store the value with PUT /admin/v1/partners/{}/secrets/NAME and write `secret:NAME`",
                        self.partner
                    ),
                ));
            }
        }

        let mut seen_urls = HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let pointer = format!("/endpoints/{i}/url");
            if let Err(reason) = check_url(&endpoint.url) {
                out.push((pointer.clone(), reason));
            }
            if !seen_urls.insert(endpoint.url.trim_end_matches('/')) {
                out.push((
                    pointer,
                    format!("endpoint `{}` is listed twice", endpoint.url),
                ));
            }
        }
        if let Auth::Oauth2ClientCredentials { token_url, .. } = &self.auth
            && let Err(reason) = check_url(token_url)
        {
            out.push(("/auth/token_url".to_owned(), reason));
        }

        let allowed = self.kind.allowed_capabilities();
        for (capability, spec) in &self.capabilities {
            let at = format!("/capabilities/{}", escape_token(capability.name()));
            if !allowed.contains(capability) {
                out.push((
                    at.clone(),
                    format!(
                        "a {} connector cannot serve {capability}; a {} serves {}",
                        self.kind.name(),
                        self.kind.name(),
                        allowed
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            capability_violations(*capability, spec, &at, &mut out);
        }
        out
    }
}

fn serde_path_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(format!("/{index}")),
            Segment::Map { key } => Some(format!("/{}", escape_token(key))),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// Checks a partner base or token URL beyond the schema's pattern: it parses, it is http(s)
/// with a host, and it carries no credentials (they would end up in logs). The SSRF policy
/// on the address itself is applied where the URL is used.
fn check_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "`{text}` must be an http:// or https:// URL with a host"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "a URL must not carry credentials; use `auth` with a secret reference".to_owned(),
        );
    }
    Ok(())
}

fn check_template(
    capability: Capability,
    text: &str,
    pointer: String,
    out: &mut Vec<(String, String)>,
) {
    match Template::parse(text) {
        Err(reason) => out.push((pointer, reason)),
        Ok(template) => {
            for field in template.fields() {
                let root = field.split('.').next().unwrap_or(field);
                if root != "request_id" && !capability.query_fields().contains(&root) {
                    out.push((
                        pointer.clone(),
                        format!(
                            "unknown field `{{{field}}}`; {capability} offers {}, request_id",
                            capability.query_fields().join(", ")
                        ),
                    ));
                }
            }
        }
    }
}

fn capability_violations(
    capability: Capability,
    spec: &CapabilitySpec,
    at: &str,
    out: &mut Vec<(String, String)>,
) {
    let request = &spec.request;
    check_template(capability, &request.path, format!("{at}/request/path"), out);
    for (name, value) in &request.query {
        if let QueryValue::Template(text) = value {
            let pointer = format!("{at}/request/query/{}", escape_token(name));
            check_template(capability, text, pointer, out);
        }
    }
    for (name, text) in &request.headers {
        let pointer = format!("{at}/request/headers/{}", escape_token(name));
        check_template(capability, text, pointer, out);
    }
    if request.method == Method::Get && request.body.is_some() {
        out.push((
            format!("{at}/request/body"),
            "a GET request has no body; use method POST or move the fields to `query`".to_owned(),
        ));
    }
    if let Some(param) = spec.pagination.as_ref().and_then(Pagination::query_param)
        && request.query.contains_key(param)
    {
        out.push((
            format!("{at}/request/query/{}", escape_token(param)),
            format!("`{param}` is set by the pagination; remove it from the request query"),
        ));
    }
    for (i, field) in spec.supports.iter().enumerate() {
        if !capability.query_fields().contains(&field.as_str()) {
            out.push((
                format!("{at}/supports/{i}"),
                format!(
                    "unknown field `{field}`; {capability} offers {}",
                    capability.query_fields().join(", ")
                ),
            ));
        }
    }
}
