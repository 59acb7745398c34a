//! A partner's long-lived resources (DESIGN §6), shared by every version of its
//! connectors: pooled HTTP clients (one per TLS identity), OAuth2 token slots, endpoint
//! state (breakers, ejections) by URL, each connector's admission state by its
//! admission policies, the recorded samples and the partner's sandbox lane.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use reqwest::Client;

use super::RuntimeConfig;
use super::auth::TokenSlot;
use super::guard::{AddressGuard, GuardedResolver, redact};
use super::resilience::EndpointState;
use super::samples::SampleBook;
use super::stack::{AdmissionState, RateBlock, admission_key};
use super::tls::{self, TlsMaterial};
use crate::error::ConnectorError;
use crate::spec::Policies;

/// A partner's long-lived resources.
pub struct PartnerResources {
    partner: String,
    /// The pooled client of connectors without a `tls` block (platform roots).
    pub(super) client: Client,
    /// Pooled clients per TLS identity (digest of the resolved `tls` material): every
    /// connector of the partner presenting the same certificates shares one pool.
    tls_clients: Mutex<HashMap<[u8; 32], Client>>,
    pub(super) guard: Arc<dyn AddressGuard>,
    tokens: Mutex<HashMap<String, Arc<TokenSlot>>>,
    /// Breakers and ejections by endpoint URL: they outlive connector versions.
    endpoints: Mutex<HashMap<String, Arc<EndpointState>>>,
    /// Each connector's admission state, by connector and admission policies; held by the
    /// versions using it, so it lives as long as one of them does.
    admission: Mutex<HashMap<String, Weak<AdmissionState>>>,
    /// Each connector's 429 block, by connector id (whatever its versions' policies).
    blocks: Mutex<HashMap<String, Arc<RateBlock>>>,
    pub(super) config: RuntimeConfig,
    /// The partner's last good replies, which candidate versions are tried on.
    pub samples: SampleBook,
    /// The partner's share of the sandbox pool: every version of every connector of the
    /// partner (canaries included) together holds at most half of the workers.
    pub(super) sandbox_lane: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
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
            endpoints: Mutex::new(HashMap::new()),
            admission: Mutex::new(HashMap::new()),
            blocks: Mutex::new(HashMap::new()),
            samples: SampleBook::new(config.sample_refresh),
            sandbox_lane: std::sync::OnceLock::new(),
            config,
        }))
    }

    pub fn partner(&self) -> &str {
        &self.partner
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The pooled client for a TLS identity, built on first use.
    pub(super) fn tls_client(
        &self,
        material: &TlsMaterial,
        hosts: &[String],
    ) -> Result<Client, ConnectorError> {
        let key = material.digest(hosts);
        let mut clients = self.tls_clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let config = tls::client_config(material, hosts)?;
        let client = build_client(&self.guard, &self.config, config)?;
        // A rotated certificate leaves its old pool behind; a partner has few identities,
        // and the bound keeps a rotation loop from growing the map.
        if clients.len() >= 16 {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    pub(super) fn token_slot(&self, key: &str) -> Arc<TokenSlot> {
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

    /// The shared state of the endpoint at `url`, created on first use.
    pub fn endpoint(&self, url: &str) -> Arc<EndpointState> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(url.to_owned()).or_insert_with(|| {
            Arc::new(EndpointState::new(
                &self.partner,
                url,
                &self.config.resilience,
            ))
        }))
    }

    /// The admission state of `connector` under `policies`: the one its other versions
    /// with the same admission policies hold, or a new one.
    pub(super) fn admission(&self, connector: &str, policies: &Policies) -> Arc<AdmissionState> {
        let key = admission_key(connector, policies);
        let mut map = self.admission.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = map.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let block = Arc::clone(
            self.blocks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(connector.to_owned())
                .or_default(),
        );
        let shared = Arc::new(AdmissionState::new(
            policies,
            &self.config.resilience,
            block,
            &self.config.fleet,
        ));
        map.insert(key, Arc::downgrade(&shared));
        shared
    }
}

/// `to` is `from`'s host over https (the default port): an upgrade, not another origin.
fn upgrades_to_https(from: &url::Url, to: &url::Url) -> bool {
    from.scheme() == "http"
        && to.scheme() == "https"
        && to.port().is_none()
        && from.host_str() == to.host_str()
}

/// A pooled client (keep-alive, connect timeout, redirects kept to the request's origin
/// and re-checked by `guard`) speaking TLS with `tls`.
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
            // Credentials in headers (an API key, a signature, a session token) go only to
            // the origin they were made for; reqwest strips nothing but `Authorization`.
            // The one exception is the same host moving to https on its default port.
            if let Some(first) = attempt.previous().first()
                && first.origin() != attempt.url().origin()
                && !upgrades_to_https(first, attempt.url())
            {
                let shown = redact(attempt.url());
                return attempt.error(format!(
                    "redirect to {shown} refused: another origin than the request's"
                ));
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
