//! The store's keys in etcd v3 (DESIGN §6), for a fleet: every replica reads and writes
//! the same keys under one prefix, and a pointer moves by an etcd transaction that compares
//! the value it replaces, so `If-Match` holds across replicas.
//!
//! The store is synchronous (the change transaction and the reload task block on it as
//! they do on a file's fsync); each call runs on this backend's own small runtime, from a
//! scoped thread, so it is safe from any thread, inside a tokio runtime or not. Every call
//! is bounded by the configured timeout: etcd that does not answer is
//! [`GatewayError::StoreUnavailable`], never a hang.
//!
//! Under the prefix, the store's keys are at `data/<key>`; logs (a connector's history,
//! the audit log) are one etcd key per line at `logs/<key>/<time>-<random>`, read in the
//! order etcd created them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, SortOrder,
    SortTarget, TlsOptions, Txn, TxnOp,
};

use super::backend::Backend;
use crate::GatewayError;

/// Where the fleet's store is. Its Debug form leaves the password out.
#[derive(Clone)]
pub struct EtcdSettings {
    /// `http://127.0.0.1:2379`, ...
    pub endpoints: Vec<String>,
    /// Every key is under it (`/mallgate/`).
    pub prefix: String,
    /// The bound on every call (and on connecting).
    pub timeout: Duration,
    /// etcd's own authentication: user and password.
    pub user: Option<(String, String)>,
    /// This replica's id in the fleet view.
    pub replica_id: String,
    /// Its lease's time to live, in seconds.
    pub lease_ttl_s: u64,
    /// TLS to etcd (with `https://` endpoints).
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: the CA (PEM) etcd's certificate must chain to, the client's certificate
/// and key (PEM) when etcd asks for one, and the name to verify when it is not the
/// endpoint's host. Its Debug form leaves the key out.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: String,
    pub identity: Option<(String, String)>,
    pub server_name: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("replica_id", &self.replica_id)
            .field("lease_ttl_s", &self.lease_ttl_s)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The store's keys in etcd.
pub struct EtcdBackend {
    client: Client,
    /// The same endpoints without a per-call timeout: for the election's campaign, which
    /// waits for as long as another replica leads.
    campaigner: Client,
    settings: EtcdSettings,
    /// The last revision the watch saw (0: none yet).
    seen: Arc<AtomicI64>,
    /// Whether the watch is in place (etcd reachable).
    connected: Arc<AtomicBool>,
    /// Always `Some` until dropped (taken to shut it down without blocking: the store may
    /// be dropped inside an async context).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.settings.endpoints)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(reason: impl std::fmt::Display) -> GatewayError {
    GatewayError::StoreUnavailable {
        reason: reason.to_string(),
    }
}

impl EtcdBackend {
    /// Connects to etcd (within the timeout).
    pub fn connect(settings: EtcdSettings) -> Result<Self, GatewayError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mallgate-etcd")
            .enable_all()
            .build()
            .map_err(|e| GatewayError::Startup(format!("the etcd client's runtime: {e}")))?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(settings.timeout)
            .with_timeout(settings.timeout)
            // A connection that went silent (a network cut, not a reset) is found out.
            .with_keep_alive(Duration::from_secs(5), settings.timeout);
        if let Some((user, password)) = &settings.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &settings.tls {
            // Verified against the configured CA only (never the platform's roots: the
            // fleet's etcd has its own CA).
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            options = options.with_tls(config);
        }
        let endpoints = settings.endpoints.clone();
        let untimed = options.clone().with_timeout(Duration::from_secs(24 * 3600));
        let connected = run(&runtime, settings.timeout, "connecting", async move {
            let client = Client::connect(endpoints.clone(), Some(options)).await?;
            let campaigner = Client::connect(endpoints, Some(untimed)).await?;
            Ok::<_, etcd_client::Error>((client, campaigner))
        });
        let client = connected.and_then(|reply| {
            reply.map_err(|e| unavailable(format!("connecting to {:?}: {e}", settings.endpoints)))
        });
        let (client, campaigner) = match client {
            Ok(clients) => clients,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Self {
            client,
            campaigner,
            settings,
            seen: Arc::new(AtomicI64::new(0)),
            // Connected: it just answered.
            connected: Arc::new(AtomicBool::new(true)),
            runtime: Some(runtime),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}data/{key}", self.settings.prefix)
    }

    fn log(&self, key: &str) -> String {
        format!("{}logs/{key}/", self.settings.prefix)
    }

    /// Runs one etcd call on this backend's runtime, bounded by the timeout.
    fn call<T, F>(&self, what: &str, future: F) -> Result<T, GatewayError>
    where
        F: Future<Output = Result<T, etcd_client::Error>> + Send,
        T: Send,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| unavailable("the etcd client is shut down"))?;
        run(runtime, self.settings.timeout, what, future)?
            .map_err(|e| unavailable(format!("{what}: {e}")))
    }
}

/// Runs `future` to completion on `runtime` from a scoped thread (so the caller may be on
/// any runtime's thread), within `timeout`.
fn run<F>(
    runtime: &tokio::runtime::Runtime,
    timeout: Duration,
    what: &str,
    future: F,
) -> Result<F::Output, GatewayError>
where
    F: Future + Send,
    F::Output: Send,
{
    let handle = runtime.handle();
    std::thread::scope(|scope| {
        scope
            // The timer is made inside: it needs the runtime's context.
            .spawn(|| handle.block_on(async { tokio::time::timeout(timeout, future).await }))
            .join()
    })
    .map_err(|_| unavailable(format!("{what}: the etcd call panicked")))?
    .map_err(|_| unavailable(format!("{what}: no answer within {timeout:?}")))
}

impl Backend for EtcdBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, GatewayError> {
        let mut kv = self.client.kv_client();
        let full = self.key(key);
        let reply = self.call("get", async move { kv.get(full, None).await })?;
        Ok(reply.kvs().first().map(|kv| kv.value().to_vec()))
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, GatewayError> {
        let mut kv = self.client.kv_client();
        let full = self.key(prefix);
        let options = GetOptions::new().with_prefix().with_keys_only();
        let reply = self.call("list", async move { kv.get(full, Some(options)).await })?;
        let data = self.key("");
        Ok(reply
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter_map(|k| k.strip_prefix(&data))
            .map(str::to_owned)
            .collect())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), GatewayError> {
        let mut kv = self.client.kv_client();
        let (full, value) = (self.key(key), value.to_vec());
        self.call("put", async move { kv.put(full, value, None).await })
            .map(drop)
    }

    fn put_if(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, GatewayError> {
        let full = self.key(key);
        let compare = match expected {
            // Absent: it was never created (or deleted since).
            None => Compare::create_revision(full.clone(), CompareOp::Equal, 0),
            Some(v) => Compare::value(full.clone(), CompareOp::Equal, v.to_vec()),
        };
        let op = match value {
            Some(v) => TxnOp::put(full, v.to_vec(), None),
            None => TxnOp::delete(full, None),
        };
        let txn = Txn::new().when(vec![compare]).and_then(vec![op]);
        let mut kv = self.client.kv_client();
        let reply = self.call("compare-and-put", async move { kv.txn(txn).await })?;
        Ok(reply.succeeded())
    }

    fn delete(&self, key: &str) -> Result<bool, GatewayError> {
        let mut kv = self.client.kv_client();
        let full = self.key(key);
        let reply = self.call("delete", async move { kv.delete(full, None).await })?;
        Ok(reply.deleted() > 0)
    }

    fn append(&self, key: &str, line: &str) -> Result<(), GatewayError> {
        let at = jiff::Timestamp::now().as_nanosecond();
        let entry = format!(
            "{}{at:020}-{:016x}",
            self.log(key),
            crate::cursor::random_u64()
        );
        let mut kv = self.client.kv_client();
        let line = line.to_owned();
        self.call("append", async move { kv.put(entry, line, None).await })
            .map(drop)
    }

    fn lines(&self, key: &str) -> Result<Vec<String>, GatewayError> {
        let mut kv = self.client.kv_client();
        let full = self.log(key);
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let reply = self.call("read log", async move { kv.get(full, Some(options)).await })?;
        Ok(reply
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect())
    }

    fn watch(&self, changed: super::backend::Changed) -> bool {
        let Some(runtime) = &self.runtime else {
            return false;
        };
        runtime.spawn(super::watch::watch(
            self.client.clone(),
            self.key(""),
            changed,
            Arc::clone(&self.seen),
            Arc::clone(&self.connected),
        ));
        true
    }

    fn link(&self) -> Option<Arc<AtomicBool>> {
        Some(Arc::clone(&self.connected))
    }

    fn revision(&self) -> Option<i64> {
        Some(self.seen.load(Ordering::Acquire))
    }

    fn announce(&self, record: super::fleet::Record, view: Arc<super::fleet::FleetView>) -> bool {
        let Some(runtime) = &self.runtime else {
            return false;
        };
        let prefix = &self.settings.prefix;
        let id = self.settings.replica_id.clone();
        // Not a leader until its lease is held (the judge may look before that).
        view.join();
        let place = super::fleet::Place {
            campaigner: self.campaigner.clone(),
            key: format!("{prefix}fleet/{id}"),
            members: format!("{prefix}fleet/"),
            election: format!("{prefix}election/canary-judge"),
            ttl_s: i64::try_from(self.settings.lease_ttl_s).unwrap_or(10),
            id,
        };
        runtime.spawn(super::fleet::announce(
            self.client.clone(),
            place,
            record,
            view,
        ));
        true
    }

    fn members(&self) -> Result<Vec<Vec<u8>>, GatewayError> {
        let prefix = format!("{}fleet/", self.settings.prefix);
        let client = self.client.clone();
        self.call("fleet", super::fleet::members(client, prefix))
    }

    fn describe(&self) -> String {
        format!(
            "etcd {} {}",
            self.settings.endpoints.join(","),
            self.settings.prefix
        )
    }
}
