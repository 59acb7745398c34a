//! A [`Connector`]: one compiled connector version bound to its partner's resources, with
//! its partner stack composed once ([`super::stack`]). Calls ([`super::call`]) render
//! requests, walk pages and map; every HTTP exchange — pages, OAuth2 token requests and
//! health probes — goes through the stack.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::ServiceExt;
use url::Url;

use super::auth::{Applied, Credentials, TokenRoute, TokenSlot, oauth_header, static_auth};
use super::guard::redact;
use super::http::Reply;
use super::mapper::{Lane, Mapper, NEXT_SET};
use super::resilience::Route;
use super::resources::PartnerResources;
use super::secrets::{self, SecretStore};
use super::stack::{
    self, AdmissionState, Attempt, EndpointStack, Exchange, GuardrailCounters, Prepared, Stack,
    StackParts, Trace, endpoint_stack,
};
use super::tls::TlsMaterial;
use super::{CallStats, RequestTemplates};
use crate::decode::Limits;
use crate::error::ConnectorError;
use crate::mapping::{ConnectorPrograms, Globals};
use crate::spec::{Auth, Capability, ConnectorSpec, Owner};

/// One connector version bound to its partner's resources.
pub struct Connector {
    pub(super) spec: Arc<ConnectorSpec>,
    pub(super) programs: Arc<ConnectorPrograms>,
    pub(super) version: u32,
    pub(super) owner: Owner,
    pub(super) resources: Arc<PartnerResources>,
    pub(super) secrets: Arc<dyn SecretStore>,
    pub(super) mapper: Mapper,
    pub(super) limits: Limits,
    /// Every capability's request templates, parsed once when the version is bound.
    pub(super) templates: HashMap<Capability, RequestTemplates>,
    /// With an isolated mapper: the version's program set and lane in the pool.
    pub(super) lane: Option<Lane>,
    /// The endpoints, by priority, each bound to its partner-wide state.
    routes: Arc<[Route]>,
    /// With a `tls` block: the client of the identity it last resolved to.
    tls: Option<TlsBinding>,
    /// The partner stack every page goes through.
    stack: Stack,
    /// Each route's per-endpoint stack (health probes), and the token URL's.
    endpoints: Arc<[EndpointStack]>,
    token: Option<EndpointStack>,
    /// With OAuth2: the partner's token slot for this token URL and client, found once.
    token_slot: Option<Arc<TokenSlot>>,
    shared: Arc<AdmissionState>,
}

/// A connector's `tls` block, bound: the endpoint hosts its `server_name` applies to, and
/// the pooled client of the material last resolved (a rotated secret switches pools on
/// the next call).
struct TlsBinding {
    hosts: Vec<String>,
    current: Mutex<Option<(TlsMaterial, Client)>>,
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

fn routes(
    spec: &ConnectorSpec,
    resources: &PartnerResources,
) -> Result<Vec<Route>, ConnectorError> {
    let mut routes = spec
        .endpoints
        .iter()
        .map(|e| {
            let base = Url::parse(&e.url).map_err(|err| ConnectorError::Request {
                reason: format!("endpoint is not a URL: {err}"),
            })?;
            let state = resources.endpoint(base.as_str());
            Ok(Route {
                state,
                base,
                priority: e.priority,
                weight: e.weight,
            })
        })
        .collect::<Result<Vec<_>, ConnectorError>>()?;
    routes.sort_by_key(|r| r.priority);
    Ok(routes)
}

impl Connector {
    /// Binds a compiled connector version to its partner's resources. `owner` decides which
    /// secret references it may use. The request templates are parsed and the partner
    /// stack is composed here, once (the loader has already validated the document).
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
        let routes: Arc<[Route]> = routes(&spec, &resources)?.into();
        let timeout = Duration::from_millis(u64::from(spec.policies.timeout_ms));
        let max = resources.config.max_response_bytes;
        let transport = resources.config.transport.clone();
        let faults = (&resources.config.faults, resources.partner());
        let endpoints: Arc<[EndpointStack]> = routes
            .iter()
            .map(|r| {
                let state = Some(Arc::clone(&r.state));
                endpoint_stack(state, timeout, max, transport.clone(), faults)
            })
            .collect();
        let (token, token_slot) = match &spec.auth {
            Auth::Oauth2ClientCredentials {
                token_url,
                client_id,
                ..
            } => (
                Some(endpoint_stack(
                    Some(resources.endpoint(token_url)),
                    timeout,
                    max,
                    transport.clone(),
                    faults,
                )),
                Some(resources.token_slot(&format!("{token_url} {client_id}"))),
            ),
            _ => (None, None),
        };
        let shared = resources.admission(&spec.id, &spec.policies);
        let stack = stack::build(StackParts {
            shared: Arc::clone(&shared),
            policies: spec.policies.clone(),
            routes: Arc::clone(&routes),
            endpoints: Arc::clone(&endpoints),
            elsewhere: endpoint_stack(None, timeout, max, transport.clone(), faults),
            guard: Arc::clone(&resources.guard),
        });
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
            stack,
            endpoints,
            token,
            token_slot,
            shared,
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

    /// The query fields the request path of `capability` needs, from its template parsed
    /// once per version.
    pub fn path_fields(&self, capability: Capability) -> impl Iterator<Item = &str> {
        self.templates
            .get(&capability)
            .into_iter()
            .flat_map(|t| t.path.fields())
    }

    /// The endpoints of this version with their partner-wide state (for health pages).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The figures of this connector's stack (shared by its versions with the same
    /// admission policies).
    pub fn counters(&self) -> &GuardrailCounters {
        &self.shared.counters
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

    pub(super) fn credentials(&self) -> Credentials<'_> {
        Credentials {
            auth: &self.spec.auth,
            partner: &self.spec.partner,
            owner: &self.owner,
            secrets: self.secrets.as_ref(),
        }
    }

    /// The first endpoint by priority, checked by the guard (requests are built against it
    /// and re-based onto the endpoint each attempt selects).
    pub(super) fn endpoint(&self) -> Result<Url, ConnectorError> {
        let route = self.routes.first().ok_or_else(|| ConnectorError::Request {
            reason: "the connector has no endpoint".into(),
        })?;
        self.check(&route.base)?;
        Ok(route.base.clone())
    }

    pub(super) fn check(&self, url: &Url) -> Result<(), ConnectorError> {
        self.resources
            .guard
            .check(url)
            .map_err(|reason| ConnectorError::AddressDenied {
                url: redact(url),
                reason,
            })
    }

    pub(super) fn globals(&self, query: &Value) -> Arc<Globals> {
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

    /// What follows the base of the version's endpoint `url` is on; `None` for a URL
    /// elsewhere (a partner's absolute next-page link to another host), called as it is.
    fn rest_of(&self, url: &Url) -> Option<String> {
        self.routes.iter().find_map(|r| {
            let base = r.base.as_str().trim_end_matches('/');
            url.as_str()
                .strip_prefix(base)
                .filter(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
                .map(str::to_owned)
        })
    }

    /// The OAuth2 token route: the token URL's endpoint stack and the client.
    fn token_route(&self, client: Client) -> Option<TokenRoute> {
        self.token.clone().map(|stack| TokenRoute {
            stack,
            client,
            guard: Arc::clone(&self.resources.guard),
        })
    }

    /// Sends one page's request through the partner stack, with the connector's auth;
    /// for OAuth2, a 401 drops the token and the request goes once more with a fresh one.
    pub(super) async fn send(
        &self,
        page: Prepared,
        url: &Url,
        call: (Capability, bool, Instant),
        stats: &mut CallStats,
    ) -> Result<Reply, ConnectorError> {
        let Some(slot) = &self.token_slot else {
            return self.exchange(page, url, call, stats).await;
        };
        let creds = self.credentials();
        let route = self.token_route(page.client.clone());
        let mut page = page;
        for refreshed in [false, true] {
            let (applied, token) = oauth_header(slot, &creds, route.as_ref(), call.2).await?;
            page.auth = applied;
            let reply = self.exchange(page.clone(), url, call, stats).await?;
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

    /// One exchange through the stack, its figures added to `stats`.
    async fn exchange(
        &self,
        page: Prepared,
        url: &Url,
        (capability, idempotent, deadline): (Capability, bool, Instant),
        stats: &mut CallStats,
    ) -> Result<Reply, ConnectorError> {
        let trace = Arc::new(Trace::default());
        let exchange = Exchange {
            prepared: Arc::new(page),
            url: url.clone(),
            rest: self.rest_of(url),
            idempotent,
            deadline,
            trace: Arc::clone(&trace),
            capability: Some(capability),
        };
        let result = self.stack.clone().oneshot(exchange).await;
        stats.requests += trace.requests();
        if let Some(endpoint) = trace.endpoint() {
            stats.endpoint = endpoint;
        }
        result
    }

    /// The credentials an active health check carries: the same as a call's (an OAuth2
    /// token from the partner's shared token slot, fetched if it has none), so a probe of
    /// an authenticated partner is not a 401.
    pub async fn probe_credentials(&self, timeout: Duration) -> Result<Applied, ConnectorError> {
        let creds = self.credentials();
        if let Some(applied) = static_auth(&creds)? {
            return Ok(applied);
        }
        let Some(slot) = &self.token_slot else {
            return Ok(Applied::None);
        };
        let route = self.token_route(self.http_client()?);
        let deadline = Instant::now() + timeout;
        let (applied, _) = oauth_header(slot, &creds, route.as_ref(), deadline).await?;
        Ok(applied)
    }

    /// An active health check of route `index`: `GET` its base URL plus `path` with
    /// `auth`, through that endpoint's stack (the breaker counts it; it passes an open
    /// breaker, since it is how recovery is seen) within `timeout`.
    pub async fn probe(
        &self,
        index: usize,
        path: &str,
        auth: Applied,
        timeout: Duration,
    ) -> Result<Reply, ConnectorError> {
        let (Some(route), Some(stack)) = (self.routes.get(index), self.endpoints.get(index)) else {
            return Err(ConnectorError::NoEndpoint);
        };
        let text = format!(
            "{}/{}",
            route.base.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        let target = Url::parse(&text).map_err(|e| ConnectorError::Request {
            reason: format!("the health check path is not a URL: {e}"),
        })?;
        self.check(&target)?;
        let prepared = Prepared {
            client: self.http_client()?,
            method: Method::GET,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            auth,
            templated: false,
        };
        let attempt = Attempt {
            exchange: Exchange {
                prepared: Arc::new(prepared),
                url: target.clone(),
                rest: None,
                idempotent: true,
                deadline: Instant::now() + timeout,
                trace: Arc::new(Trace::default()),
                capability: None,
            },
            target,
            timeout: Some(timeout),
            probe: true,
        };
        stack.clone().oneshot(attempt).await
    }
}
