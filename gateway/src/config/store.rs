//! Where the admin API's store is (DESIGN §6). Without `store`, the state directory
//! (`state_dir`: one node, nothing to install); for a fleet, etcd v3:
//!
//! ```yaml
//! store:
//!   kind: etcd
//!   endpoints: [http://10.0.0.5:2379, http://10.0.0.6:2379]
//!   prefix: /mallgate/          # every key under it; one prefix per fleet
//!   timeout_ms: 2000            # every etcd call; past it, the store is unavailable
//!   auth: {user: mallgate, password: env:ETCD_PASSWORD}   # a reference, never a value
//!   tls:                        # with https:// endpoints: etcd's certificate is verified
//!     ca: file:/etc/mallgate/etcd-ca.pem
//!     cert: file:/etc/mallgate/etcd-client.pem        # for etcd's --client-cert-auth
//!     key: file:/etc/mallgate/etcd-client-key.pem
//!   replica_id: gw-1            # in the fleet view; default: the host name and pid
//!   lease_ttl_s: 10             # a replica gone this long leaves the fleet view
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::store::etcd::{EtcdSettings, EtcdTls};

/// The fleet's store.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    Etcd {
        endpoints: Vec<String>,
        #[serde(default = "default_prefix")]
        prefix: String,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        #[serde(default)]
        auth: Option<EtcdAuth>,
        #[serde(default)]
        replica_id: Option<String>,
        #[serde(default = "default_lease_ttl_s")]
        lease_ttl_s: u64,
        #[serde(default)]
        tls: Option<EtcdTlsConfig>,
    },
}

/// TLS to etcd: the CA its certificate must chain to, and a client certificate when etcd
/// asks for one (`--client-cert-auth`). Every value is a reference (`env:` or `file:`) to
/// PEM text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsConfig {
    pub ca: String,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// The name etcd's certificate must carry (default: each endpoint's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

fn is_reference(value: &str) -> bool {
    value.starts_with("env:") || value.starts_with("file:")
}

/// etcd's own user and password (`env:` or `file:` reference).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

fn default_prefix() -> String {
    "/mallgate/".to_owned()
}

fn default_timeout_ms() -> u64 {
    2_000
}

fn default_lease_ttl_s() -> u64 {
    10
}

/// This process's id in a fleet view: the host name and the pid.
pub(super) fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mallgate".to_owned());
    format!("{host}-{}", std::process::id())
}

impl StoreConfig {
    /// What is wrong with it, if anything (`store.endpoints[0]`, ...).
    pub fn problems(&self) -> Vec<String> {
        let Self::Etcd {
            endpoints,
            prefix,
            timeout_ms,
            auth,
            replica_id,
            lease_ttl_s,
            tls,
        } = self;
        let mut out = Vec::new();
        if !(1..=300).contains(lease_ttl_s) {
            out.push("store.lease_ttl_s: from 1 to 300".to_owned());
        } else if timeout_ms.saturating_mul(3) > lease_ttl_s * 1000 {
            // A renewal may wait a timeout; three of them fit in a lease.
            out.push(format!(
                "store.lease_ttl_s ({lease_ttl_s} s) must be at least three store.timeout_ms ({timeout_ms} ms): a healthy replica's lease must not lapse while it waits on etcd"
            ));
        }
        if let Some(id) = replica_id
            && (id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        {
            out.push(format!(
                "store.replica_id: `{id}` must be 1 to 128 letters, digits, -, _ or ."
            ));
        }
        if endpoints.is_empty() {
            out.push("store.endpoints: give at least one etcd endpoint".to_owned());
        }
        for (i, e) in endpoints.iter().enumerate() {
            match (e.starts_with("https://"), e.starts_with("http://"), tls.is_some()) {
                (true, _, true) | (_, true, false) => {}
                (true, _, false) => out.push(format!(
                    "store.endpoints[{i}]: https:// needs store.tls.ca (the CA etcd's certificate is checked against)"
                )),
                (_, true, true) => out.push(format!(
                    "store.endpoints[{i}]: with store.tls, every endpoint is https:// (`{e}` would go in the clear)"
                )),
                _ => out.push(format!(
                    "store.endpoints[{i}]: `{e}` is not an http:// or https:// URL of an etcd client port"
                )),
            }
        }
        if let Some(tls) = tls {
            out.extend(tls_problems(tls));
        }
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
            out.push(format!(
                "store.prefix: `{prefix}` must start and end with / (say /mallgate/)"
            ));
        }
        if !(100..=60_000).contains(timeout_ms) {
            out.push("store.timeout_ms: from 100 to 60000".to_owned());
        }
        if let Some(auth) = auth
            && !(auth.password.starts_with("env:") || auth.password.starts_with("file:"))
        {
            out.push(
                "store.auth.password: a reference (env:VAR or file:PATH), never the value"
                    .to_owned(),
            );
        }
        out
    }

    /// The client's settings, the password and TLS material resolved by `resolve`.
    pub fn settings(
        &self,
        resolve: impl Fn(&str) -> Result<String, String>,
    ) -> Result<EtcdSettings, String> {
        let Self::Etcd {
            endpoints,
            prefix,
            timeout_ms,
            auth,
            replica_id,
            lease_ttl_s,
            tls,
        } = self;
        let tls = tls.as_ref().map(|t| resolve_tls(t, &resolve)).transpose()?;
        let user = match auth {
            None => None,
            Some(a) => Some((
                a.user.clone(),
                resolve(&a.password).map_err(|e| format!("store.auth.password: {e}"))?,
            )),
        };
        Ok(EtcdSettings {
            endpoints: endpoints.clone(),
            prefix: prefix.clone(),
            timeout: Duration::from_millis(*timeout_ms),
            user,
            replica_id: replica_id.clone().unwrap_or_else(default_replica_id),
            lease_ttl_s: *lease_ttl_s,
            tls,
        })
    }
}

fn tls_problems(tls: &EtcdTlsConfig) -> Vec<String> {
    let mut out = Vec::new();
    let fields = [
        ("ca", Some(&tls.ca)),
        ("cert", tls.cert.as_ref()),
        ("key", tls.key.as_ref()),
    ];
    for (name, value) in fields {
        if let Some(value) = value
            && !is_reference(value)
        {
            out.push(format!(
                "store.tls.{name}: a reference to PEM text (file:PATH or env:VAR)"
            ));
        }
    }
    if tls.cert.is_some() != tls.key.is_some() {
        out.push("store.tls: a client certificate needs both cert and key".to_owned());
    }
    out
}

fn resolve_tls(
    tls: &EtcdTlsConfig,
    resolve: &impl Fn(&str) -> Result<String, String>,
) -> Result<EtcdTls, String> {
    let read =
        |name: &str, value: &str| resolve(value).map_err(|e| format!("store.tls.{name}: {e}"));
    let identity = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some((read("cert", cert)?, read("key", key)?)),
        _ => None,
    };
    Ok(EtcdTls {
        ca_pem: read("ca", &tls.ca)?,
        identity,
        server_name: tls.server_name.clone(),
    })
}
