//! Building a gateway from its config: secrets resolved, the partner guard, the mapping
//! pools, the registry, the API, and (with an admin section) the admin API and its store,
//! loaded with one reload.

use std::sync::Arc;
use std::time::Duration;

use mallgate_connectors::mapping::MappingPool;
use mallgate_connectors::runtime::faults::Faults;
use mallgate_connectors::runtime::guard::{AddressGuard, Cidr, LoopbackOnly, PublicOnly};
use mallgate_connectors::runtime::secrets::{MemorySecretStore, SecretStore};
use mallgate_connectors::runtime::{RuntimeConfig, Transport};

use super::Gateway;
use crate::GatewayError;
use crate::admin::Admin;
use crate::api::Api;
use crate::changes::{self, ReloadTask};
use crate::config::GatewayConfig;
use crate::connections::Connections;
use crate::cursor::CursorKey;
use crate::drills::Drills;
use crate::registry::{Mappers, Registry, documents_in};
use crate::sandbox::sandbox_pool;
use crate::store::Store;
use crate::watch::DirectoryReload;

impl Gateway {
    /// Builds the registry and loads the connectors directory (a reload from empty: the
    /// path every later reload takes). `secrets` holds the partners' secrets; the config's
    /// `partner_secrets` references are resolved into it.
    pub fn build(
        config: GatewayConfig,
        secrets: Arc<MemorySecretStore>,
    ) -> Result<Self, GatewayError> {
        Self::build_with(config, secrets, None)
    }

    /// As [`Gateway::build`], with partners answered by `transport` instead of the
    /// network: in-process tests drive [`crate::api::Api::handle`] this way, under tokio's
    /// paused clock, with the real stack, mapping, cache and merge.
    pub fn build_in_process(
        config: GatewayConfig,
        secrets: Arc<MemorySecretStore>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, GatewayError> {
        Self::build_with(config, secrets, Some(transport))
    }

    fn build_with(
        config: GatewayConfig,
        secrets: Arc<MemorySecretStore>,
        transport: Option<Arc<dyn Transport>>,
    ) -> Result<Self, GatewayError> {
        config.check().map_err(|reason| GatewayError::Config {
            path: "config".into(),
            reason,
        })?;
        for (partner, names) in &config.partner_secrets {
            for (name, reference) in names {
                let value =
                    resolve_reference(reference).map_err(|reason| GatewayError::Config {
                        path: "partner_secrets".into(),
                        reason: format!("{partner}/{name}: {reason}"),
                    })?;
                secrets.set(partner, name, value);
            }
        }
        let cursor_key = match &config.cursor_secret {
            Some(reference) => CursorKey::new(
                resolve_reference(reference)
                    .map_err(|reason| GatewayError::Config {
                        path: "cursor_secret".into(),
                        reason,
                    })?
                    .into_bytes(),
            ),
            None => CursorKey::random(),
        };
        let guard = partner_guard(&config)?;
        let mappers = mappers(&config)?;
        let store_secrets = Arc::clone(&secrets);
        let secrets: Arc<dyn SecretStore> = secrets;
        let faults = Faults::default();
        let runtime = RuntimeConfig {
            sample_refresh: Duration::from_secs(config.sandbox.sample_refresh_s),
            resilience: config.resilience.runtime(),
            transport,
            faults: faults.clone(),
            ..RuntimeConfig::default()
        };
        let registry = Arc::new(
            Registry::new(guard, secrets, mappers, runtime).with_grants(config.partners.clone()),
        );
        let api = Arc::new(Api::new(Arc::clone(&registry), config.clone(), cursor_key));
        let drills = Arc::new(Drills::new(
            faults,
            Arc::clone(&api.metrics.drills),
            Arc::clone(&registry),
            Duration::from_secs(config.drills.max_duration_s),
        ));
        let (changes, queue) = changes::channel();
        let admin = match &config.admin {
            None => {
                if let Some(dir) = &config.connectors_dir {
                    registry.reload(&documents_in(dir)?)?;
                }
                None
            }
            Some(admin_config) => {
                let admin = Arc::new(
                    Admin::new(
                        Arc::clone(&api),
                        open_store(&config)?,
                        store_secrets,
                        config.connectors_dir.clone(),
                        admin_config,
                        resolve_reference,
                        changes.clone(),
                    )?
                    .with_drills(Arc::clone(&drills)),
                );
                Admin::audit_drills(&admin);
                if let Some(link) = admin.store().link() {
                    api.registry.set_store_link(link);
                }
                // Startup: the directory plus the store's active versions, one reload.
                admin.reload()?;
                Some(admin)
            }
        };
        let apply: Arc<dyn changes::Apply> = match &admin {
            Some(admin) => Arc::clone(admin) as Arc<dyn changes::Apply>,
            None => Arc::new(DirectoryReload {
                registry: Arc::clone(&registry),
                dir: config.connectors_dir.clone(),
            }),
        };
        let connections = Arc::new(Connections::new(config.connections));
        let metrics = Arc::clone(&api.metrics);
        api.metrics.observe(crate::telemetry::metrics::State {
            registry: Arc::clone(&registry),
            cache: Arc::clone(&api.cache),
            connections: Some(Arc::clone(&connections)),
        });
        Ok(Self {
            api,
            admin,
            drills,
            connections,
            config,
            changes,
            reload_task: Some(ReloadTask::new(queue, apply, metrics)),
        })
    }
}

/// The SSRF guard partner URLs pass: loopback only for the demo and tests, else public
/// addresses and the allow-list.
fn partner_guard(config: &GatewayConfig) -> Result<Arc<dyn AddressGuard>, GatewayError> {
    Ok(if config.allow_loopback_partners {
        Arc::new(LoopbackOnly)
    } else {
        let allow = config
            .partner_allow
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| GatewayError::Config {
                path: "partner_allow".into(),
                reason,
            })?;
        Arc::new(PublicOnly::with_allow_list(allow))
    })
}

/// The mapping pools: in-process threads for trusted programs, sandbox workers for
/// partner-owned ones.
fn mappers(config: &GatewayConfig) -> Result<Mappers, GatewayError> {
    let pool = Arc::new(
        MappingPool::new(config.mapping_threads, 1024)
            .map_err(|e| GatewayError::Startup(format!("mapping pool: {e}")))?,
    );
    let mappers = Mappers {
        trusted: pool,
        isolated: Arc::new(sandbox_pool(
            &config.sandbox,
            config
                .admin
                .as_ref()
                .and_then(|a| a.sandbox_program.as_ref()),
        )?),
        operator_in_process: config.sandbox.operator_in_process,
    };
    Ok(mappers)
}

/// `env:VAR` or `file:PATH` (operator config only).
/// The admin API's store: etcd when `store` says so, else the state directory.
pub(crate) fn open_store(config: &GatewayConfig) -> Result<Store, GatewayError> {
    if let Some(store) = &config.store {
        let settings =
            store
                .settings(resolve_reference)
                .map_err(|reason| GatewayError::Config {
                    path: "store".into(),
                    reason,
                })?;
        let backend = crate::store::etcd::EtcdBackend::connect(settings)?;
        return Ok(Store::over(Arc::new(backend)));
    }
    let state = config
        .state_dir
        .as_ref()
        .ok_or_else(|| GatewayError::Config {
            path: "state_dir".into(),
            reason: "the admin API keeps connector versions in a store: set state_dir (or store)"
                .into(),
        })?;
    Store::open(state)
}

pub fn resolve_reference(reference: &str) -> Result<String, String> {
    if let Some(var) = reference.strip_prefix("env:") {
        std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("cannot read `{path}`: {e}"))
    } else {
        Err("a secret in the config must be a reference: env:VAR or file:PATH".into())
    }
}
