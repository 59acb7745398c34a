//! The connector runtime: how a loaded connector talks to its partner.
//!
//! [`PartnerResources`] are a partner's long-lived parts — pooled HTTP clients per TLS
//! identity, cached OAuth2 tokens, endpoint state, the address guard — kept apart from
//! connector versions so a new version reuses them. A [`Connector`] is one compiled version
//! bound to those resources, with its partner stack ([`stack`]) composed once;
//! [`Connector::call`] fills the capability's request template from the query, applies the
//! auth, walks the pages and maps each reply, under one deadline (tokio's clock).

pub mod auth;
mod call;
mod connector;
pub mod faults;
mod fetch;
pub mod guard;
pub mod http;
mod mapper;
pub mod resilience;
mod resources;
pub mod samples;
pub mod secrets;
pub mod signing;
pub mod stack;
pub mod telemetry;
pub mod tls;

pub use self::connector::Connector;
pub use self::mapper::Mapper;
pub use self::resources::PartnerResources;

use std::sync::Arc;
use std::time::Duration;

use mallgate_schemas::Warning;
use serde_json::Value;

use self::resilience::ResilienceSettings;
use self::secrets::SecretStore;
use crate::error::ConnectorError;
use crate::spec::{ConnectorSpec, Owner, QueryValue};
use crate::template::Template;

/// Tunables of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest reply body read (bigger ones fail with `TooLarge`).
    pub max_response_bytes: usize,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    pub user_agent: String,
    pub resilience: ResilienceSettings,
    /// How often a partner's recorded sample reply may be replaced by a newer one.
    pub sample_refresh: Duration,
    /// What sends requests: `None` is the network (the pooled HTTP clients); in-process
    /// tests answer in memory instead, under tokio's paused clock.
    pub transport: Option<Arc<dyn Transport>>,
    /// Faults injected by drills: one registry for the gateway, in every endpoint stack.
    pub faults: faults::Faults,
    /// The live replicas sharing every partner's rate limit and concurrency (one without
    /// a fleet store): kept current by the gateway's fleet lease, read by every connector.
    pub fleet: stack::FleetShare,
}

/// Sends one built request and reads its reply (at most `max_bytes` of body): the seam
/// in-process tests use to answer as a partner without a socket. Everything above it —
/// the guard, breakers, timeouts, retries, hedging, mapping — runs as in production.
pub trait Transport: Send + Sync + std::fmt::Debug {
    fn send(
        &self,
        request: reqwest::Request,
        max_bytes: usize,
    ) -> futures_util::future::BoxFuture<'static, Result<http::Reply, ConnectorError>>;
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_response_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(2),
            max_idle_per_host: 64,
            user_agent: concat!("mallgate/", env!("CARGO_PKG_VERSION")).to_owned(),
            resilience: ResilienceSettings::default(),
            sample_refresh: Duration::from_secs(60),
            transport: None,
            faults: faults::Faults::default(),
            fleet: stack::FleetShare::default(),
        }
    }
}

/// Figures of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Replies mapped.
    pub pages: u32,
    /// HTTP requests sent (token requests excluded).
    pub requests: u32,
    /// Body bytes received.
    pub bytes: u64,
    /// Records the selectors yielded, and how many were dropped.
    pub selected: usize,
    pub dropped: usize,
    /// Token refreshes forced by a 401 during the call.
    pub token_refreshes: u32,
    /// The endpoint called (redacted).
    pub endpoint: String,
}

pub use fetch::{Fetched, MAX_FETCHED_BYTES};

/// What a call gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutput {
    /// Valid unified records of every page, in order.
    pub records: Vec<Value>,
    /// The same records, typed by the capability's schema, in order.
    pub typed: Vec<mallgate_schemas::Record>,
    /// The partner said there is no such record (a `not_found` rule, or a 404 on a lookup).
    pub not_found: bool,
    /// Call-level warnings: dropped records, a page cap reached.
    pub warnings: Vec<Warning>,
    pub stats: CallStats,
}

/// A capability's request templates, parsed. A jq query value has no template (`None`).
pub(crate) struct RequestTemplates {
    pub(crate) path: Template,
    pub(crate) query: Vec<(String, Option<Template>)>,
    pub(crate) headers: Vec<(String, Template)>,
}

impl RequestTemplates {
    fn parse(request: &crate::spec::RequestSpec) -> Result<Self, ConnectorError> {
        Ok(Self {
            path: template(&request.path)?,
            query: request
                .query
                .iter()
                .map(|(name, value)| match value {
                    QueryValue::Template(t) => Ok((name.clone(), Some(template(t)?))),
                    QueryValue::Jq(_) => Ok((name.clone(), None)),
                })
                .collect::<Result<_, ConnectorError>>()?,
            headers: request
                .headers
                .iter()
                .map(|(name, value)| Ok((name.clone(), template(value)?)))
                .collect::<Result<_, ConnectorError>>()?,
        })
    }
}

pub(crate) fn encode_path(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query field by dotted path (`to.postal_code`, `parcels.0.weight_g`); `None` when it is
/// absent or null (a template placeholder for it is then left out).
pub fn query_field<'a>(query: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = query;
    for part in path.split('.') {
        at = match at {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!at.is_null()).then_some(at)
}

/// A query field by dotted path as text.
pub(crate) fn lookup(query: &Value, request_id: &str, path: &str) -> Option<String> {
    if path == "request_id" {
        return Some(request_id.to_owned());
    }
    match query_field(query, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn template(text: &str) -> Result<Template, ConnectorError> {
    Template::parse(text).map_err(|reason| ConnectorError::Request { reason })
}

pub(crate) fn warning(code: &str, message: String) -> Warning {
    Warning {
        code: code.to_owned(),
        message,
        field: None,
    }
}

/// A cursor or token value as text: strings and numbers; anything else ends the walk.
pub(crate) fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A URL-ish text with its query cut off, for errors.
pub(crate) fn redact_text(text: &str) -> String {
    text.split(['?', '#']).next().unwrap_or_default().to_owned()
}

/// Builds and compiles a connector for tests and tools: load, compile, bind.
pub fn connector_from_spec(
    text: &str,
    version: u32,
    owner: Owner,
    resources: Arc<PartnerResources>,
    secrets: Arc<dyn SecretStore>,
    mapper: impl Into<Mapper>,
) -> Result<Connector, ConnectorError> {
    let (spec, programs) =
        ConnectorSpec::load_compiled(text, crate::source::Format::sniff(text), &owner)?;
    Connector::new(
        Arc::new(spec),
        Arc::new(programs),
        version,
        owner,
        resources,
        secrets,
        mapper,
    )
}
