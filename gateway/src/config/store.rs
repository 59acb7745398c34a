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
//!   replica_id: gw-1            # in the fleet view; default: the host name and pid
//!   lease_ttl_s: 10             # a replica gone this long leaves the fleet view
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::store::etcd::EtcdSettings;

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
    },
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
            if e.starts_with("https://") {
                out.push(format!(
                    "store.endpoints[{i}]: TLS to etcd is not supported yet; use http:// on a trusted network"
                ));
            } else if !e.starts_with("http://") {
                out.push(format!(
                    "store.endpoints[{i}]: `{e}` is not an http:// URL of an etcd client port"
                ));
            }
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

    /// The client's settings, the password resolved by `resolve`.
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
        } = self;
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
        })
    }
}
