//! The connector runtime: how a loaded connector talks to its partner.
//!
//! [`PartnerResources`] are a partner's long-lived parts — the pooled HTTP client, cached
//! OAuth2 tokens, the address guard — kept apart from connector versions so a new version
//! reuses them. A [`Connector`] is one compiled version bound to those resources;
//! [`Connector::call`] fills the capability's request template from the query, applies the
//! auth, walks the pages, and maps each reply on the mapping pool, under one deadline.
//!
//! Every HTTP exchange (one page) goes through the partner's resilience stack
//! ([`resilience`]): admission (429 block, rate, concurrency with load shedding), endpoint
//! selection (priority failover, weights, breakers, ejection), attempt timeouts, retries
//! under a budget and hedged reads. The deadline wraps the whole call.

pub mod auth;
pub mod guard;
pub mod http;
mod mapper;
pub mod resilience;
pub mod samples;
pub mod secrets;
pub mod tls;

pub use self::mapper::Mapper;
use self::mapper::{Lane, NEXT_SET};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mallgate_schemas::Warning;
use reqwest::{Client, Method as HttpMethod, StatusCode};
use serde_json::{Value, json};
use url::Url;

use self::auth::{Applied, Credentials, TokenSlot, oauth_header, static_auth};
use self::guard::{AddressGuard, GuardedResolver, redact};
use self::http::{Reply, exchange, link, retry_after};
use self::resilience::{
    Admission, ExchangeOutcome, PartnerGuardrails, Refusal, ResilienceConfig, Route, retry_delay,
    select, should_hedge,
};
use self::secrets::SecretStore;
use self::tls::TlsMaterial;
use crate::decode::Limits;
use crate::error::ConnectorError;
use crate::mapping::{ConnectorPrograms, Globals};
use crate::spec::{
    Auth, BodyFormat, Capability, ConnectorSpec, Method, Owner, Pagination, QueryValue,
    TokenLocation,
};
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
    pub resilience: ResilienceConfig,
    /// How often a partner's recorded sample reply may be replaced by a newer one.
    pub sample_refresh: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_response_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(2),
            max_idle_per_host: 64,
            user_agent: concat!("mallgate/", env!("CARGO_PKG_VERSION")).to_owned(),
            resilience: ResilienceConfig::default(),
            sample_refresh: Duration::from_secs(60),
        }
    }
}

/// A partner's long-lived resources, shared by every version of its connectors.
pub struct PartnerResources {
    partner: String,
    /// The pooled client of connectors without a `tls` block (platform roots).
    client: Client,
    /// Pooled clients per TLS identity (digest of the resolved `tls` material): every
    /// connector of the partner presenting the same certificates shares one pool.
    tls_clients: Mutex<HashMap<[u8; 32], Client>>,
    guard: Arc<dyn AddressGuard>,
    tokens: Mutex<HashMap<String, Arc<TokenSlot>>>,
    config: RuntimeConfig,
    /// Breakers, ejections, budget, buckets: they outlive connector versions.
    pub guardrails: PartnerGuardrails,
    /// The partner's last good replies, which candidate versions are tried on.
    pub samples: samples::SampleBook,
    /// The partner's share of the sandbox pool: every version of every connector of the
    /// partner (canaries included) together holds at most half of the workers.
    sandbox_lane: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
}

impl fmt::Debug for PartnerResources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartnerResources")
            .field("partner", &self.partner)
            .field("guard", &self.guard)
            .field("token_requests", &self.token_requests())
            .finish_non_exhaustive()
    }
}

impl PartnerResources {
    /// A pooled client (keep-alive, connect timeout, redirects re-checked by `guard`).
    pub fn new(
        partner: &str,
        guard: Arc<dyn AddressGuard>,
        config: RuntimeConfig,
    ) -> Result<Arc<Self>, ConnectorError> {
        let client = build_client(&guard, &config, tls::default_config()?)?;
        Ok(Arc::new(Self {
            partner: partner.to_owned(),
            client,
            tls_clients: Mutex::new(HashMap::new()),
            guard,
            tokens: Mutex::new(HashMap::new()),
            guardrails: PartnerGuardrails::new(config.resilience),
            samples: samples::SampleBook::new(config.sample_refresh),
            sandbox_lane: std::sync::OnceLock::new(),
            config,
        }))
    }

    /// The pooled client for a TLS identity, built on first use.
    fn tls_client(
        &self,
        material: &TlsMaterial,
        hosts: &[String],
    ) -> Result<Client, ConnectorError> {
        let key = material.digest();
        let mut clients = self.tls_clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = build_client(
            &self.guard,
            &self.config,
            tls::client_config(material, hosts)?,
        )?;
        // A rotated certificate leaves its old pool behind; a partner has few identities,
        // but a bound keeps a rotation loop from growing the map.
        if clients.len() >= 16 {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    pub fn partner(&self) -> &str {
        &self.partner
    }
}

/// A pooled client (keep-alive, connect timeout, redirects re-checked by `guard`) speaking
/// TLS with `tls`.
fn build_client(
    guard: &Arc<dyn AddressGuard>,
    config: &RuntimeConfig,
    tls: rustls::ClientConfig,
) -> Result<Client, ConnectorError> {
    let redirect_guard = Arc::clone(guard);
    Client::builder()
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(config.max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        // Names resolve through the guard: the connection goes to a checked address, and
        // never through a proxy from the environment (which would resolve them itself).
        .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(guard))))
        .no_proxy()
        .use_preconfigured_tls(tls)
        .user_agent(config.user_agent.clone())
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("more than 5 redirects");
            }
            match redirect_guard.check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(reason) => {
                    let shown = redact(attempt.url());
                    attempt.error(format!("redirect to {shown} refused: {reason}"))
                }
            }
        }))
        .build()
        .map_err(|e| ConnectorError::Request {
            reason: format!("cannot build the HTTP client: {e}"),
        })
}

impl PartnerResources {
    fn token_slot(&self, key: &str) -> Arc<TokenSlot> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(tokens.entry(key.to_owned()).or_default())
    }

    /// OAuth2 token requests this partner's connectors have sent.
    pub fn token_requests(&self) -> u64 {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.requests())
            .sum()
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

/// What a call gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutput {
    /// Valid unified records of every page, in order.
    pub records: Vec<Value>,
    /// For capabilities whose records are products: the same records, typed, in order.
    pub products: Vec<mallgate_schemas::Product>,
    /// The partner said there is no such record (a `not_found` rule, or a 404 on a lookup).
    pub not_found: bool,
    /// Call-level warnings: dropped records, a page cap reached.
    pub warnings: Vec<Warning>,
    pub stats: CallStats,
}

/// One connector version bound to its partner's resources.
pub struct Connector {
    spec: Arc<ConnectorSpec>,
    programs: Arc<ConnectorPrograms>,
    version: u32,
    owner: Owner,
    resources: Arc<PartnerResources>,
    secrets: Arc<dyn SecretStore>,
    mapper: Mapper,
    limits: Limits,
    /// Every capability's request templates, parsed once when the version is bound.
    templates: HashMap<Capability, RequestTemplates>,
    /// With an isolated mapper: the version's program set and lane in the pool.
    lane: Option<Lane>,
    /// The endpoints, by priority, each bound to its partner-wide state.
    routes: Vec<Route>,
    /// With a `tls` block: the client of the identity it last resolved to.
    tls: Option<TlsBinding>,
}

/// A connector's `tls` block, bound: the endpoint hosts its `server_name` applies to, and
/// the pooled client of the material last resolved (a rotated secret switches pools on
/// the next call).
struct TlsBinding {
    hosts: Vec<String>,
    current: Mutex<Option<(TlsMaterial, Client)>>,
}

/// A capability's request templates, parsed. A jq query value has no template (`None`).
struct RequestTemplates {
    path: Template,
    query: Vec<(String, Option<Template>)>,
    headers: Vec<(String, Template)>,
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

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The spec holds only secret *references*; resolved values are never kept here.
        f.debug_struct("Connector")
            .field("id", &self.spec.id)
            .field("partner", &self.spec.partner)
            .field("version", &self.version)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// The next request of a walk.
enum Next {
    /// The templated request, with the walk's own query parameter (page, offset, cursor,
    /// token) if it has one.
    Templated(Option<(String, String)>),
    /// Exactly this URL (a Link header or a next URL).
    Url(Url),
    /// The templated request with a token header.
    Header(String, String),
}

fn encode_path(value: &str) -> String {
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
fn lookup(query: &Value, request_id: &str, path: &str) -> Option<String> {
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

fn warning(code: &str, message: String) -> Warning {
    Warning {
        code: code.to_owned(),
        message,
        field: None,
    }
}

/// A cursor or token value as text: strings and numbers; anything else ends the walk.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Connector {
    /// Binds a compiled connector version to its partner's resources. `owner` decides which
    /// secret references it may use. The request templates are parsed here, once (the
    /// loader has already validated them).
    pub fn new(
        spec: Arc<ConnectorSpec>,
        programs: Arc<ConnectorPrograms>,
        version: u32,
        owner: Owner,
        resources: Arc<PartnerResources>,
        secrets: Arc<dyn SecretStore>,
        mapper: impl Into<Mapper>,
    ) -> Result<Self, ConnectorError> {
        let mapper = mapper.into();
        let lane = match &mapper {
            Mapper::InProcess(_) => None,
            Mapper::Isolated { pool, .. } => Some(Lane {
                set: NEXT_SET.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                slots: Arc::clone(resources.sandbox_lane.get_or_init(|| {
                    Arc::new(tokio::sync::Semaphore::new((pool.workers() / 2).max(1)))
                })),
            }),
        };
        let templates = spec
            .capabilities
            .iter()
            .map(|(c, cap)| Ok((*c, RequestTemplates::parse(&cap.request)?)))
            .collect::<Result<_, ConnectorError>>()?;
        let mut routes = spec
            .endpoints
            .iter()
            .map(|e| {
                let base = Url::parse(&e.url).map_err(|err| ConnectorError::Request {
                    reason: format!("endpoint is not a URL: {err}"),
                })?;
                let state = resources.guardrails.endpoint(base.as_str());
                Ok(Route {
                    state,
                    base,
                    priority: e.priority,
                    weight: e.weight,
                })
            })
            .collect::<Result<Vec<_>, ConnectorError>>()?;
        routes.sort_by_key(|r| r.priority);
        resources.guardrails.configure(&spec.policies);
        let tls = spec.tls.as_ref().map(|_| TlsBinding {
            hosts: routes
                .iter()
                .filter_map(|r| r.base.host_str().map(str::to_owned))
                .collect(),
            current: Mutex::new(None),
        });
        Ok(Self {
            tls,
            routes,
            spec,
            programs,
            version,
            owner,
            resources,
            secrets,
            mapper,
            lane,
            limits: Limits::default(),
            templates,
        })
    }

    pub fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn resources(&self) -> &Arc<PartnerResources> {
        &self.resources
    }

    /// The pooled client this connector's exchanges go through: the partner's default,
    /// or the one of the TLS identity its `tls` block resolves to now.
    pub fn http_client(&self) -> Result<Client, ConnectorError> {
        let (Some(tls), Some(binding)) = (&self.spec.tls, &self.tls) else {
            return Ok(self.resources.client.clone());
        };
        let material = TlsMaterial::resolve(tls, |reference| {
            secrets::resolve(
                reference,
                &self.spec.partner,
                &self.owner,
                self.secrets.as_ref(),
            )
        })?;
        let mut current = binding.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, client)) = current.as_ref()
            && *known == material
        {
            return Ok(client.clone());
        }
        let client = self.resources.tls_client(&material, &binding.hosts)?;
        *current = Some((material, client.clone()));
        Ok(client)
    }

    fn credentials(&self) -> Credentials<'_> {
        Credentials {
            auth: &self.spec.auth,
            partner: &self.spec.partner,
            owner: &self.owner,
            secrets: self.secrets.as_ref(),
        }
    }

    /// The first endpoint by priority, checked by the guard (requests are built against it
    /// and re-based onto the endpoint each attempt selects).
    fn endpoint(&self) -> Result<Url, ConnectorError> {
        let route = self.routes.first().ok_or_else(|| ConnectorError::Request {
            reason: "the connector has no endpoint".into(),
        })?;
        self.check(&route.base)?;
        Ok(route.base.clone())
    }

    /// The endpoints of this version with their partner-wide state (for health pages).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn check(&self, url: &Url) -> Result<(), ConnectorError> {
        self.resources
            .guard
            .check(url)
            .map_err(|reason| ConnectorError::AddressDenied {
                url: redact(url),
                reason,
            })
    }

    fn globals(&self, query: &Value) -> Arc<Globals> {
        let now = jiff::Timestamp::now().as_second();
        let fetched_at = jiff::Timestamp::from_second(now)
            .map(|t| t.to_string())
            .unwrap_or_default();
        Arc::new(Globals {
            provenance: json!({
                "partner_id": self.spec.partner,
                "connector_id": self.spec.id,
                "connector_version": self.version,
                "fetched_at": fetched_at,
            }),
            query: query.clone(),
            locations: json!({}),
        })
    }

    /// Calls the partner for `capability` with the normalized `query` and maps every page,
    /// before `deadline`. `request_id` fills `{request_id}` (correlation headers).
    pub async fn call(
        &self,
        capability: Capability,
        query: &Value,
        request_id: &str,
        deadline: Instant,
    ) -> Result<CallOutput, ConnectorError> {
        let unsupported = || ConnectorError::Unsupported {
            capability: capability.name().to_owned(),
        };
        let (Some(cap), Some(compiled), Some(templates)) = (
            self.spec.capabilities.get(&capability),
            self.programs.capabilities.get(&capability),
            self.templates.get(&capability),
        ) else {
            return Err(unsupported());
        };
        // Built once, and only when a program runs (a pass-through reads no globals).
        let globals_cell = std::sync::OnceLock::new();
        let globals = || Arc::clone(globals_cell.get_or_init(|| self.globals(query)));
        let base = self.endpoint()?;

        // The templated request.
        let fill = |t: &Template| t.render(|p| lookup(query, request_id, p), str::to_owned);
        let path = templates
            .path
            .render(|p| lookup(query, request_id, p), encode_path)
            .ok_or_else(|| ConnectorError::Request {
                reason: format!(
                    "the path `{}` needs a query field the call does not have",
                    cap.request.path
                ),
            })?;
        let url_text = format!("{}{}", base.as_str().trim_end_matches('/'), path);
        let first_url = Url::parse(&url_text).map_err(|e| ConnectorError::Request {
            reason: format!("`{}` is not a URL: {e}", redact_text(&url_text)),
        })?;
        self.check(&first_url)?;
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in &templates.query {
            let text = match value {
                Some(t) => fill(t),
                None => {
                    if !compiled.query.contains_key(name) {
                        continue;
                    }
                    self.request_program(capability, Some(name.clone()), &globals(), deadline)
                        .await?
                        .as_ref()
                        .and_then(|v| token_text(v).or_else(|| v.as_bool().map(|b| b.to_string())))
                }
            };
            if let Some(text) = text {
                params.push((name.clone(), text));
            }
        }
        let headers: Vec<(String, String)> = templates
            .headers
            .iter()
            .filter_map(|(name, t)| fill(t).map(|text| (name.clone(), text)))
            .collect();
        let body: Option<(Vec<u8>, &'static str)> = match &cap.request.body {
            None => None,
            Some(spec) => {
                let value = self
                    .request_program(capability, None, &globals(), deadline)
                    .await?
                    .ok_or_else(|| ConnectorError::Request {
                        reason: "the request body program gave nothing".into(),
                    })?;
                Some(match spec.format {
                    BodyFormat::Json => (
                        serde_json::to_vec(&value).map_err(|e| ConnectorError::Request {
                            reason: e.to_string(),
                        })?,
                        "application/json",
                    ),
                    BodyFormat::Form => {
                        let Value::Object(fields) = &value else {
                            return Err(ConnectorError::Request {
                                reason: "a form body must be an object".into(),
                            });
                        };
                        let mut form = url::form_urlencoded::Serializer::new(String::new());
                        for (k, v) in fields {
                            if let Some(text) = token_text(v) {
                                form.append_pair(k, &text);
                            }
                        }
                        (
                            form.finish().into_bytes(),
                            "application/x-www-form-urlencoded",
                        )
                    }
                    BodyFormat::Xml | BodyFormat::Text => {
                        let text = match &value {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        let kind = if spec.format == BodyFormat::Xml {
                            "application/xml"
                        } else {
                            "text/plain"
                        };
                        (text.into_bytes(), kind)
                    }
                })
            }
        };
        let method = match cap.request.method {
            Method::Get => HttpMethod::GET,
            Method::Post => HttpMethod::POST,
            Method::Put => HttpMethod::PUT,
        };

        let static_auth = static_auth(&self.credentials())?;
        let client = self.http_client()?;
        let idempotent = cap.is_idempotent();
        let max_pages = cap.pagination.as_ref().map_or(1, Pagination::max_pages);
        let mut output = CallOutput {
            stats: CallStats {
                endpoint: redact(&base),
                ..CallStats::default()
            },
            ..CallOutput::default()
        };
        let mut next = Next::Templated(match &cap.pagination {
            Some(Pagination::Page { param, start, .. }) => Some((param.clone(), start.to_string())),
            Some(Pagination::Offset { param, .. }) => Some((param.clone(), "0".to_owned())),
            Some(Pagination::Cursor { param, first, .. }) => {
                first.as_ref().map(|f| (param.clone(), f.clone()))
            }
            _ => None,
        });
        let size_param: Option<(String, String)> = match &cap.pagination {
            Some(Pagination::Page {
                size_param: Some(p),
                size: Some(s),
                ..
            }) => Some((p.clone(), s.to_string())),
            Some(Pagination::Offset {
                size_param, size, ..
            }) => Some((size_param.clone(), size.to_string())),
            _ => None,
        };
        let mut page_number: u64 = match &cap.pagination {
            Some(Pagination::Page { start, .. }) => u64::from(*start),
            _ => 0,
        };
        let mut seen_cursors: Vec<String> = Vec::new();

        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ConnectorError::DeadlineExceeded {
                    pages: output.stats.pages,
                });
            }
            // Build this page's request (against the primary endpoint; each attempt re-bases
            // it onto the endpoint it selects).
            let (url, is_templated) = match &next {
                Next::Url(u) => (u.clone(), false),
                _ => (first_url.clone(), true),
            };
            let build = |applied: &Option<Applied>, target: &Url| {
                let mut request = client.request(method.clone(), target.clone());
                if is_templated {
                    request = request.query(&params);
                    if let Some(sp) = &size_param {
                        request = request.query(&[sp]);
                    }
                    match &next {
                        Next::Templated(Some(pair)) => request = request.query(&[pair]),
                        Next::Header(name, value) => {
                            request = request.header(name.as_str(), value.as_str());
                        }
                        _ => {}
                    }
                    if let Some((bytes, kind)) = &body {
                        request = request.header("content-type", *kind).body(bytes.clone());
                    }
                }
                for (name, value) in &headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                if let Some(applied) = applied
                    && !applied.present_in(target)
                {
                    request = applied.apply(request);
                }
                request
            };
            let reply = self
                .send(
                    &build,
                    &static_auth,
                    &url,
                    deadline,
                    idempotent,
                    &mut output.stats,
                )
                .await?;
            output.stats.bytes += reply.body.len() as u64;

            if !reply.status.is_success() {
                let status = reply.status;
                if status == StatusCode::NOT_FOUND
                    && output.stats.pages == 0
                    && matches!(
                        capability,
                        Capability::CatalogGet | Capability::TrackingGet | Capability::InventoryGet
                    )
                {
                    output.not_found = true;
                    return Ok(output);
                }
                return Err(match status {
                    StatusCode::TOO_MANY_REQUESTS => ConnectorError::RateLimited {
                        url: redact(&url),
                        retry_after: retry_after(&reply.headers),
                    },
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        ConnectorError::Unauthorized {
                            url: redact(&url),
                            status: status.as_u16(),
                        }
                    }
                    _ => ConnectorError::PartnerStatus {
                        url: redact(&url),
                        status: status.as_u16(),
                    },
                });
            }

            let page = if output.stats.pages == 0
                && self.resources.samples.wants(capability, reply.body.len())
            {
                // Kept as the version maps it: a reply whose mapping fails is no sample.
                let body = reply.body.clone();
                let page = self
                    .map_page(compiled, reply.body, &globals(), deadline)
                    .await?;
                self.resources.samples.record(capability, &body, query);
                page
            } else {
                self.map_page(compiled, reply.body, &globals(), deadline)
                    .await?
            };
            output.stats.pages += 1;
            if page.not_found {
                if output.stats.pages == 1 {
                    output.not_found = true;
                    return Ok(output);
                }
                break;
            }
            output.stats.selected += page.selected;
            output.stats.dropped += page.dropped.len();
            output.warnings.extend(page.dropped);
            output.records.extend(page.records);
            output.products.extend(page.products);

            // Where next?
            let following: Option<Next> = match &cap.pagination {
                None => None,
                Some(Pagination::Page { param, size, .. }) => {
                    let total = page.paging.as_ref().and_then(Value::as_u64);
                    let short = size.is_some_and(|s| page.selected < s as usize);
                    if page.selected == 0 || short || total.is_some_and(|t| page_number >= t) {
                        None
                    } else {
                        page_number += 1;
                        Some(Next::Templated(Some((
                            param.clone(),
                            page_number.to_string(),
                        ))))
                    }
                }
                Some(Pagination::Offset { param, size, .. }) => {
                    let total = page.paging.as_ref().and_then(Value::as_u64);
                    page_number += u64::from(*size);
                    if page.selected < *size as usize || total.is_some_and(|t| page_number >= t) {
                        None
                    } else {
                        Some(Next::Templated(Some((
                            param.clone(),
                            page_number.to_string(),
                        ))))
                    }
                }
                Some(Pagination::Cursor { param, .. }) => page
                    .paging
                    .as_ref()
                    .and_then(token_text)
                    .filter(|c| !seen_cursors.contains(c))
                    .map(|c| {
                        seen_cursors.push(c.clone());
                        Next::Templated(Some((param.clone(), c)))
                    }),
                Some(Pagination::NextToken { location, name, .. }) => page
                    .paging
                    .as_ref()
                    .and_then(token_text)
                    .filter(|c| !seen_cursors.contains(c))
                    .map(|c| {
                        seen_cursors.push(c.clone());
                        match location {
                            TokenLocation::Query => Next::Templated(Some((name.clone(), c))),
                            TokenLocation::Header => Next::Header(name.clone(), c),
                        }
                    }),
                Some(Pagination::LinkHeader { rel, .. }) => {
                    link(&reply.headers, rel, &url).map(Next::Url)
                }
                Some(Pagination::NextUrl { .. }) => page
                    .paging
                    .as_ref()
                    .and_then(Value::as_str)
                    .and_then(|u| url.join(u).ok())
                    .map(Next::Url),
            };
            let Some(following) = following else {
                break;
            };
            if let Next::Url(u) = &following {
                self.check(u)?;
                if seen_cursors.contains(&u.to_string()) {
                    break;
                }
                seen_cursors.push(u.to_string());
            }
            if output.stats.pages >= max_pages {
                output.warnings.push(warning(
                    "page_cap_reached",
                    format!(
                        "stopped after {max_pages} pages (the connector's max_pages); more results exist"
                    ),
                ));
                break;
            }
            next = following;
        }
        if output.records.is_empty() && output.stats.dropped > 0 {
            return Err(ConnectorError::MappingRejected {
                dropped: output.stats.dropped,
                first: output
                    .warnings
                    .iter()
                    .find(|w| w.code == "record_dropped")
                    .map(|w| w.message.chars().take(300).collect())
                    .unwrap_or_default(),
            });
        }
        Ok(output)
    }

    /// Sends one page's request through the resilience stack; for OAuth2, a 401 drops the
    /// token and the request goes once more with a fresh one.
    async fn send(
        &self,
        build: &(dyn Fn(&Option<Applied>, &Url) -> reqwest::RequestBuilder + Sync),
        static_auth: &Option<Applied>,
        url: &Url,
        deadline: Instant,
        idempotent: bool,
        stats: &mut CallStats,
    ) -> Result<Reply, ConnectorError> {
        let max = self.resources.config.max_response_bytes;
        let Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            ..
        } = &self.spec.auth
        else {
            return self
                .resilient(&|u| build(static_auth, u), url, deadline, idempotent, stats)
                .await;
        };
        let slot = self
            .resources
            .token_slot(&format!("{token_url} {client_id}"));
        let creds = self.credentials();
        let client = self.http_client()?;
        for refreshed in [false, true] {
            let attempt = self.attempt_timeout(deadline)?;
            let (applied, token) = oauth_header(
                &slot,
                &creds,
                &client,
                self.resources.guard.as_ref(),
                attempt,
                max,
            )
            .await?;
            let applied = Some(applied);
            let reply = self
                .resilient(&|u| build(&applied, u), url, deadline, idempotent, stats)
                .await?;
            if reply.status != StatusCode::UNAUTHORIZED || refreshed {
                return Ok(reply);
            }
            slot.invalidate(&token).await;
            stats.token_refreshes += 1;
        }
        Err(ConnectorError::Unauthorized {
            url: redact(url),
            status: 401,
        })
    }

    /// One attempt's timeout: the policy's, cut to what is left of the deadline.
    /// The credentials an active health check carries: the same as a call's (an OAuth2
    /// token from the partner's shared token slot, fetched if it has none), so a probe of
    /// an authenticated partner is not a 401.
    pub async fn probe_credentials(&self, timeout: Duration) -> Result<Applied, ConnectorError> {
        let creds = self.credentials();
        if let Some(applied) = static_auth(&creds)? {
            return Ok(applied);
        }
        let Auth::Oauth2ClientCredentials {
            token_url,
            client_id,
            ..
        } = &self.spec.auth
        else {
            return Ok(Applied::None);
        };
        let slot = self
            .resources
            .token_slot(&format!("{token_url} {client_id}"));
        let client = self.http_client()?;
        let (applied, _) = oauth_header(
            &slot,
            &creds,
            &client,
            self.resources.guard.as_ref(),
            timeout,
            self.resources.config.max_response_bytes,
        )
        .await?;
        Ok(applied)
    }

    fn attempt_timeout(&self, deadline: Instant) -> Result<Duration, ConnectorError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectorError::DeadlineExceeded { pages: 0 });
        }
        Ok(Duration::from_millis(u64::from(self.spec.policies.timeout_ms)).min(left))
    }

    /// `url` moved onto `route`'s endpoint, if it belongs to one of this version's
    /// endpoints; `None` for a URL elsewhere (a partner's absolute next-page link to
    /// another host), which is called as it is.
    fn rest_of<'u>(&self, url: &'u Url) -> Option<&'u str> {
        self.routes.iter().find_map(|r| {
            let base = r.base.as_str().trim_end_matches('/');
            url.as_str()
                .strip_prefix(base)
                .filter(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
        })
    }

    /// One exchange through the partner's stack: admission (429 block, rate limit, a free
    /// concurrency slot or shed), endpoint selection with failover, the attempt timeout,
    /// a hedge for slow reads, and retries for idempotent requests under the budget. A
    /// refused connection moves to the next endpoint without spending the budget.
    async fn resilient(
        &self,
        build: &(dyn Fn(&Url) -> reqwest::RequestBuilder + Sync),
        url: &Url,
        deadline: Instant,
        idempotent: bool,
        stats: &mut CallStats,
    ) -> Result<Reply, ConnectorError> {
        let guardrails = &self.resources.guardrails;
        let policies = &self.spec.policies;
        let max = self.resources.config.max_response_bytes;
        let rest = self.rest_of(url).map(str::to_owned);
        let target_of = |route: Option<&Route>| -> Result<Url, ConnectorError> {
            match (route, &rest) {
                // The URL was built against this endpoint: no new one to parse.
                (Some(r), Some(rest))
                    if url
                        .as_str()
                        .strip_prefix(r.base.as_str().trim_end_matches('/'))
                        == Some(rest.as_str()) =>
                {
                    self.check(url)?;
                    Ok(url.clone())
                }
                (Some(r), Some(rest)) => {
                    let text = format!("{}{}", r.base.as_str().trim_end_matches('/'), rest);
                    let target = Url::parse(&text).map_err(|e| ConnectorError::Request {
                        reason: format!("`{}` is not a URL: {e}", redact_text(&text)),
                    })?;
                    self.check(&target)?;
                    Ok(target)
                }
                _ => Ok(url.clone()),
            }
        };
        // Endpoints that failed this exchange; a refused connection's failovers are free.
        let mut tried: Vec<usize> = Vec::new();
        let mut retries: u32 = 0;
        let mut deposited = false;
        loop {
            self.attempt_timeout(deadline)?;
            let chosen = match &rest {
                None => None,
                Some(_) => {
                    let turn = guardrails.next_turn();
                    let pick = select(&self.routes, &tried, turn)
                        .or_else(|| select(&self.routes, &[], turn));
                    match pick {
                        Some((i, _)) => Some(i),
                        None => return Err(ConnectorError::NoEndpoint),
                    }
                }
            };
            let route = chosen.map(|i| &self.routes[i]);
            let probe = match route.map(|r| r.state.breaker.admit()) {
                Some(Admission::Refused) => {
                    // Lost a race for the half-open probe: count it as tried.
                    tried.extend(chosen);
                    if tried.len() >= self.routes.len() {
                        return Err(ConnectorError::NoEndpoint);
                    }
                    continue;
                }
                Some(Admission::Probe) => true,
                _ => false,
            };
            // Waiting for a rate token is fine while half the time left remains.
            let patience = deadline.saturating_duration_since(Instant::now()) / 2;
            let permit = match guardrails.admit_within(patience).await {
                Ok(p) => p,
                Err(refusal) => {
                    if let Some(r) = route {
                        r.state.breaker.on_abandoned(probe);
                    }
                    return Err(match refusal {
                        Refusal::Shed => ConnectorError::Shed {
                            limit: policies.max_concurrency,
                        },
                        Refusal::RateLimited(wait) => ConnectorError::RateLimited {
                            url: redact(url),
                            retry_after: Some(wait),
                        },
                    });
                }
            };
            if !deposited {
                guardrails.deposit();
                deposited = true;
            }
            // The attempt's time counts from now: admission may have waited for a token.
            let attempt = match self.attempt_timeout(deadline) {
                Ok(a) => a,
                Err(e) => {
                    if let Some(r) = route {
                        r.state.breaker.on_abandoned(probe);
                    }
                    return Err(e);
                }
            };
            let target = match target_of(route) {
                Ok(t) => t,
                Err(e) => {
                    if let Some(r) = route {
                        r.state.breaker.on_abandoned(probe);
                    }
                    return Err(e);
                }
            };
            stats.requests += 1;
            stats.endpoint = redact(&target);
            let primary = exchange(build(&target), &target, attempt, max);
            let hedge_after = policies
                .hedge_after_ms
                .map(|ms| Duration::from_millis(u64::from(ms)));
            // The primary alone, or raced against a hedge once the hedge delay passes.
            let (result, used) = match hedge_after {
                Some(after)
                    if should_hedge(
                        idempotent,
                        Some(after),
                        after,
                        false,
                        deadline.saturating_duration_since(Instant::now()),
                    ) && route.is_some() =>
                {
                    self.hedged(
                        primary, build, chosen, probe, after, &target_of, attempt, stats,
                    )
                    .await
                }
                _ => (primary.await, chosen),
            };
            drop(permit);
            let used_route = used.map(|i| &self.routes[i]);
            let outcome = match &result {
                Ok(reply) if reply.status == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&reply.headers).unwrap_or(Duration::from_secs(1));
                    guardrails.block_for(wait);
                    ExchangeOutcome::Success
                }
                Ok(reply)
                    if reply.status.is_server_error()
                        || reply.status == StatusCode::REQUEST_TIMEOUT =>
                {
                    ExchangeOutcome::Failed
                }
                Ok(_) => ExchangeOutcome::Success,
                Err(e) if e.is_connect_failure() => ExchangeOutcome::ConnectFailed,
                Err(_) => ExchangeOutcome::Failed,
            };
            if let Some(r) = used_route {
                r.state.record(outcome);
            }
            // A 429 is honoured, never retried inside the call: the partner is blocked for
            // its `Retry-After` and the source is served stale or failed meanwhile.
            if outcome == ExchangeOutcome::Success {
                return result;
            }
            // A refused connection never reached the partner: the next endpoint, free.
            if outcome == ExchangeOutcome::ConnectFailed
                && let Some(i) = used
                && tried.len() + 1 < self.routes.len()
            {
                tried.push(i);
                guardrails
                    .counters
                    .failovers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let retryable = match &result {
                Ok(_) => true,
                Err(e) => e.is_retryable(),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(wait) = retry_delay(
                idempotent,
                retryable,
                retries + 1,
                policies.retry.max_attempts,
                Duration::from_millis(u64::from(policies.retry.backoff_ms)),
                remaining,
            ) else {
                return result;
            };
            if !guardrails.withdraw() {
                return result;
            }
            retries += 1;
            guardrails
                .counters
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Prefer another endpoint for the retry (selection falls back to this one).
            tried.extend(used);
            tokio::time::sleep(wait).await;
        }
    }

    /// Races `primary` against a hedge sent to another endpoint (or the same one) after
    /// `after`, if the budget allows one. Returns the first good answer (or the last
    /// failure) and the index of the endpoint that gave it. The loser is dropped; its
    /// endpoint's half-open probe, if it held one, is released.
    #[allow(clippy::too_many_arguments)]
    async fn hedged(
        &self,
        primary: impl std::future::Future<Output = Result<Reply, ConnectorError>>,
        build: &(dyn Fn(&Url) -> reqwest::RequestBuilder + Sync),
        chosen: Option<usize>,
        probe: bool,
        after: Duration,
        target_of: &(dyn Fn(Option<&Route>) -> Result<Url, ConnectorError> + Sync),
        attempt: Duration,
        stats: &mut CallStats,
    ) -> (Result<Reply, ConnectorError>, Option<usize>) {
        let guardrails = &self.resources.guardrails;
        let max = self.resources.config.max_response_bytes;
        let mut primary = std::pin::pin!(primary);
        let delay = std::pin::pin!(tokio::time::sleep(after));
        if let futures_util::future::Either::Left((r, _)) =
            futures_util::future::select(primary.as_mut(), delay).await
        {
            return (r, chosen);
        }
        let exclude: Vec<usize> = chosen.into_iter().collect();
        let other = select(&self.routes, &exclude, guardrails.next_turn())
            .map(|(i, _)| i)
            .or(chosen);
        let other_probe = match other.map(|i| self.routes[i].state.breaker.admit()) {
            Some(Admission::Refused) | None => return (primary.await, chosen),
            Some(Admission::Probe) => true,
            Some(Admission::Pass) => false,
        };
        let release = |i: Option<usize>, was_probe: bool| {
            if let Some(i) = i {
                self.routes[i].state.breaker.on_abandoned(was_probe);
            }
        };
        let Ok(permit) = guardrails.admit() else {
            release(other, other_probe);
            return (primary.await, chosen);
        };
        if !guardrails.withdraw() {
            release(other, other_probe);
            return (primary.await, chosen);
        }
        let target = match target_of(other.map(|i| &self.routes[i])) {
            Ok(t) => t,
            Err(_) => {
                // No hedge after all: the primary alone.
                release(other, other_probe);
                return (primary.await, chosen);
            }
        };
        guardrails
            .counters
            .hedges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats.requests += 1;
        // The hedge ends when the primary would: it started `after` later.
        let hedge_timeout = attempt.saturating_sub(after).max(Duration::from_millis(1));
        let hedge = std::pin::pin!(exchange(build(&target), &target, hedge_timeout, max));
        let good = |r: &Result<Reply, ConnectorError>| {
            r.as_ref()
                .is_ok_and(|reply| !reply.status.is_server_error())
        };
        let result = match futures_util::future::select(primary, hedge).await {
            futures_util::future::Either::Left((r, hedge)) => {
                if good(&r) {
                    release(other, other_probe);
                    (r, chosen)
                } else {
                    if let Some(i) = chosen {
                        self.routes[i].state.record(ExchangeOutcome::Failed);
                    }
                    (hedge.await, other)
                }
            }
            futures_util::future::Either::Right((r, primary)) => {
                if good(&r) {
                    release(chosen, probe);
                    (r, other)
                } else {
                    if let Some(i) = other {
                        self.routes[i].state.record(ExchangeOutcome::Failed);
                    }
                    (primary.await, chosen)
                }
            }
        };
        drop(permit);
        result
    }
}

/// A URL-ish text with its query cut off, for errors.
fn redact_text(text: &str) -> String {
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
