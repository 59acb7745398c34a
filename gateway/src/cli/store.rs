//! `mallgate store migrate --from DIR --to etcd://HOST:PORT[,HOST:PORT]/PREFIX/` (or
//! `--config gateway.yaml`: the config's `store`, with its `auth` and `tls`): copies a
//! state directory into etcd, key by key (versions, pointers, quarantines, partners and
//! their hashed tokens, sealed secrets — still sealed: the master key never comes into
//! it), and the logs (each connector's history, the audit log) line by line, in order.
//!
//! The destination must be empty under its prefix: a migration never merges into a store
//! a fleet already uses. Run it before the first replica starts on etcd.

use std::path::PathBuf;
use std::time::Duration;

use crate::GatewayError;
use crate::store::etcd::{EtcdBackend, EtcdSettings};
use crate::store::{Backend, FileBackend, backend_is_log};

/// `mallgate store migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The state directory to copy.
    #[arg(long)]
    pub from: PathBuf,
    /// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX/` (the prefix of `store.prefix`), in the
    /// clear and without etcd users.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub to: Option<String>,
    /// A gateway config whose `store` (etcd, with its `auth` and `tls`) is the destination.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The bound on each etcd call.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

/// What a migration copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    pub keys: usize,
    pub log_lines: usize,
}

/// Parses `etcd://h1:2379,h2:2379/mallgate/` into endpoints and a prefix.
pub fn parse_etcd_url(url: &str) -> Result<(Vec<String>, String), String> {
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("`{url}` is not an etcd:// URL"))?;
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    if hosts.is_empty() {
        return Err(format!("`{url}` names no etcd host"));
    }
    let endpoints = hosts.split(',').map(|h| format!("http://{h}")).collect();
    let prefix = if path.is_empty() {
        "/mallgate/".to_owned()
    } else {
        format!("/{}/", path.trim_matches('/'))
    };
    Ok((endpoints, prefix))
}

/// Copies `args.from` into etcd.
pub fn migrate(args: &MigrateArgs) -> Result<Migrated, GatewayError> {
    let config = |reason: String| GatewayError::Config {
        path: "--to".into(),
        reason,
    };
    let settings = match (&args.to, &args.config) {
        (Some(to), _) => {
            let (endpoints, prefix) = parse_etcd_url(to).map_err(config)?;
            EtcdSettings {
                endpoints,
                prefix,
                timeout: Duration::from_millis(args.timeout_ms),
                user: None,
                replica_id: "migrate".into(),
                lease_ttl_s: 10,
                tls: None,
            }
        }
        (None, Some(path)) => {
            let gateway = crate::GatewayConfig::load(path)?;
            let store = gateway.store.as_ref().ok_or_else(|| GatewayError::Config {
                path: path.clone(),
                reason: "no store: section (kind: etcd) to migrate into".into(),
            })?;
            store
                .settings(crate::server::resolve_reference)
                .map_err(|reason| GatewayError::Config {
                    path: path.clone(),
                    reason,
                })?
        }
        (None, None) => return Err(config("give --to etcd://... or --config FILE".into())),
    };
    let prefix = settings.prefix.clone();
    if !args.from.join("connectors").is_dir() {
        return Err(GatewayError::Config {
            path: args.from.clone(),
            reason: "not a state directory (no connectors/ in it)".into(),
        });
    }
    let from = FileBackend::open(&args.from)?;
    let to = EtcdBackend::connect(settings)?;
    copy(&from, &to, &prefix)
}

/// Copies every key and log of `from` into `to`, which must be empty.
pub fn copy(from: &dyn Backend, to: &dyn Backend, prefix: &str) -> Result<Migrated, GatewayError> {
    if !to.keys("")?.is_empty() || !to.lines("audit.log")?.is_empty() {
        return Err(GatewayError::Config {
            path: prefix.into(),
            reason: format!(
                "{} already holds a store; a migration never merges into one",
                to.describe()
            ),
        });
    }
    let mut done = Migrated::default();
    // The store's own keys only: a state directory may also hold the pid file, the
    // upgrade socket or a master key file, which are this node's, not the fleet's.
    let keys = from.keys("")?.into_iter().filter(|k| {
        k == "audit.log"
            || ["connectors/", "partners/", "secrets/"]
                .iter()
                .any(|p| k.starts_with(p))
    });
    for key in keys {
        if backend_is_log(&key) {
            for line in from.lines(&key)? {
                to.append(&key, &line)?;
                done.log_lines += 1;
            }
        } else if let Some(value) = from.get(&key)? {
            to.put(&key, &value)?;
            done.keys += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls_give_endpoints_and_a_prefix() {
        assert_eq!(
            parse_etcd_url("etcd://127.0.0.1:2379,127.0.0.1:2381/fleet-a"),
            Ok((
                vec![
                    "http://127.0.0.1:2379".to_owned(),
                    "http://127.0.0.1:2381".to_owned()
                ],
                "/fleet-a/".to_owned()
            ))
        );
        assert_eq!(
            parse_etcd_url("etcd://127.0.0.1:2379"),
            Ok((
                vec!["http://127.0.0.1:2379".to_owned()],
                "/mallgate/".to_owned()
            ))
        );
        assert!(parse_etcd_url("http://127.0.0.1:2379").is_err());
        assert!(parse_etcd_url("etcd:///x").is_err());
    }
}
