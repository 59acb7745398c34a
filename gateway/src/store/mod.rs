//! The registry store (DESIGN §6): connector versions submitted through the admin API, in
//! the state directory, one directory per connector:
//!
//! ```text
//! <state_dir>/connectors/<id>/v<N>.doc      the document as submitted (YAML or JSON)
//! <state_dir>/connectors/<id>/v<N>.json     {version, digest, author, created_at, partner}
//! <state_dir>/connectors/<id>/active        the active version number, or absent
//! <state_dir>/connectors/<id>/history       every version made active, one a line, in order
//! <state_dir>/connectors/<id>/highest       the highest version number ever given (never reused)
//! <state_dir>/connectors/<id>/v<N>.quarantine  {at, reason}: never activated again until cleared
//! <state_dir>/partners/<id>.json            a partner: its grant and its tokens (hashed)
//! <state_dir>/secrets/<partner>/<name>.json a partner secret, sealed (see `crate::vault`)
//! <state_dir>/audit.log                     JSON lines: who, what, when, result
//! ```
//!
//! Every write is atomic: a temp file, fsync, rename, fsync of the directory. A process
//! killed in the middle of a write leaves the previous file whole, so a restart finds the
//! last good version. Every version is kept; the active pointer moves.
//!
//! The same keys can live in etcd instead ([`etcd::EtcdBackend`], `store: {kind: etcd}`),
//! for a fleet: the pointers move by compare-and-put, so two replicas replacing the same
//! revision give one conflict ([`GatewayError::StoreConflict`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::GatewayError;

mod backend;
pub mod etcd;
pub mod fleet;
mod partners;
mod secrets;
mod watch;
pub use backend::{Backend, Changed, FileBackend, is_log as backend_is_log, write_atomic};
pub use partners::{PartnerRecord, TokenRecord};
pub use secrets::valid_secret_name;

/// What the store keeps about one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub version: u32,
    pub digest: String,
    /// The role that submitted it (`operator` or `partner:<id>`), never a token.
    pub author: String,
    pub created_at: String,
    pub partner: String,
}

/// Why and when a version was quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub at: String,
    pub reason: String,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// `ok`, `rejected`, `conflict`, `denied`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The registry store, over a [`Backend`].
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

/// A connector id safe as a directory name (the spec's own id rule is stricter).
fn safe_id(id: &str) -> Result<&str, GatewayError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(id)
    } else {
        Err(GatewayError::Config {
            path: PathBuf::from("connector id"),
            reason: format!("`{id}` is not a connector id (lower case letters, digits, - and _)"),
        })
    }
}

/// A record that does not serialize (it always does; the error is kept, not unwrapped).
fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec_pretty(value).map_err(|e| GatewayError::Config {
        path: PathBuf::from(key),
        reason: e.to_string(),
    })
}

/// A pointer (`3`, or a canary's `3 10`) as the store writes it.
fn pointer_text(version: Option<u32>) -> Option<Vec<u8>> {
    version.map(|v| v.to_string().into_bytes())
}

fn canary_text(canary: Option<(u32, u8)>) -> Option<Vec<u8>> {
    canary.map(|(v, p)| format!("{v} {p}").into_bytes())
}

/// How many times a version number is contended for before giving up.
const NUMBER_ATTEMPTS: usize = 32;

impl Store {
    /// Opens (creating) the state directory store under `root`.
    pub fn open(root: &Path) -> Result<Self, GatewayError> {
        let backend = FileBackend::open(root)?;
        std::fs::create_dir_all(root.join("connectors")).map_err(backend::io(root))?;
        Ok(Self::over(Arc::new(backend)))
    }

    /// The store over any backend.
    pub fn over(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    /// The state directory, when the store is one.
    pub fn root(&self) -> Option<&Path> {
        self.backend.root()
    }

    /// Watches for changes made by any writer (see [`Backend::watch`]).
    pub fn watch(&self, changed: Changed) -> bool {
        self.backend.watch(changed)
    }

    /// The last store revision its watch has seen (etcd), if any.
    pub fn revision(&self) -> Option<i64> {
        self.backend.revision()
    }

    /// Holds this replica's fleet lease with `record` (see [`Backend::announce`]).
    pub fn announce(&self, record: fleet::Record, view: Arc<fleet::FleetView>) -> bool {
        self.backend.announce(record, view)
    }

    /// Whether the shared store is reachable (see [`Backend::link`]).
    pub fn link(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        self.backend.link()
    }

    /// Every live replica's record (see [`Backend::members`]).
    pub fn members(&self) -> Result<Vec<Vec<u8>>, GatewayError> {
        self.backend.members()
    }

    /// Where the keys are (for messages and the status).
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The backend, for copying a store key by key (`mallgate store migrate`).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn dir(&self, id: &str) -> Result<String, GatewayError> {
        Ok(format!("connectors/{}/", safe_id(id)?))
    }

    fn text(&self, key: &str) -> Result<Option<String>, GatewayError> {
        match self.backend.get(key)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| GatewayError::Config {
                    path: PathBuf::from(key),
                    reason: "not UTF-8".into(),
                }),
        }
    }

    /// Every version of `id`, oldest first (versions whose records are incomplete are
    /// skipped: a document without its metadata was never accepted).
    pub fn versions(&self, id: &str) -> Result<Vec<VersionMeta>, GatewayError> {
        let dir = self.dir(id)?;
        let keys = self.backend.keys(&dir)?;
        let mut out = Vec::new();
        for key in &keys {
            let Some(n) = key
                .strip_prefix(&dir)
                .and_then(|k| k.strip_prefix('v'))
                .and_then(|k| k.strip_suffix(".json"))
                .and_then(|k| k.parse::<u32>().ok())
            else {
                continue;
            };
            if !keys.contains(&format!("{dir}v{n}.doc")) {
                continue;
            }
            let Some(bytes) = self.backend.get(key)? else {
                continue;
            };
            if let Ok(meta) = serde_json::from_slice::<VersionMeta>(&bytes)
                && meta.version == n
            {
                out.push(meta);
            }
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }

    /// The document text of a version.
    pub fn document(&self, id: &str, version: u32) -> Result<String, GatewayError> {
        let key = format!("{}v{version}.doc", self.dir(id)?);
        self.text(&key)?.ok_or_else(|| GatewayError::Io {
            path: PathBuf::from(format!("{}: {key}", self.describe())),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    /// The active version of `id`, if any.
    pub fn active(&self, id: &str) -> Result<Option<u32>, GatewayError> {
        let key = format!("{}active", self.dir(id)?);
        Ok(self.text(&key)?.and_then(|t| t.trim().parse().ok()))
    }

    /// The ids of every connector the store has a record of, sorted.
    fn ids(&self) -> Result<Vec<String>, GatewayError> {
        let mut ids: Vec<String> = self
            .backend
            .keys("connectors/")?
            .iter()
            .filter_map(|k| k.strip_prefix("connectors/")?.split_once('/'))
            .map(|(id, _)| id.to_owned())
            .filter(|id| safe_id(id).is_ok())
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// Every connector with an active version: (id, version, document).
    pub fn active_documents(&self) -> Result<Vec<(String, u32, String)>, GatewayError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            if let Some(v) = self.active(&id)? {
                let document = self.document(&id, v)?;
                out.push((id, v, document));
            }
        }
        Ok(out)
    }

    /// Stores a new version (not yet active) and returns its metadata. The document is
    /// written before its metadata: a version exists once both are there.
    pub fn add_version(
        &self,
        id: &str,
        partner: &str,
        text: &str,
        author: &str,
    ) -> Result<VersionMeta, GatewayError> {
        self.add_version_after(id, partner, text, author, 0)
    }

    /// As [`Store::add_version`], numbered above `floor` too (the version serving now, which
    /// may come from the connectors directory).
    pub fn add_version_after(
        &self,
        id: &str,
        partner: &str,
        text: &str,
        author: &str,
        floor: u32,
    ) -> Result<VersionMeta, GatewayError> {
        let dir = self.dir(id)?;
        let version = self.take_number(id, floor)?;
        let meta = VersionMeta {
            version,
            digest: format!("{:x}", Sha256::digest(text.as_bytes())),
            author: author.to_owned(),
            created_at: jiff::Timestamp::now().to_string(),
            partner: partner.to_owned(),
        };
        self.backend
            .put(&format!("{dir}v{version}.doc"), text.as_bytes())?;
        let key = format!("{dir}v{version}.json");
        self.backend.put(&key, &encode(&key, &meta)?)?;
        Ok(meta)
    }

    /// Takes the next version number of `id` (above `floor`): the number is taken before
    /// the version is written, so a version that served and was then discarded (its audit
    /// line could not be written) never lends its number, revision or cache entries to
    /// another document. Taken by compare-and-put: two replicas never take one number.
    fn take_number(&self, id: &str, floor: u32) -> Result<u32, GatewayError> {
        let key = format!("{}highest", self.dir(id)?);
        for _ in 0..NUMBER_ATTEMPTS {
            let seen = self.backend.get(&key)?;
            let highest: u32 = seen
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            let stored = self.versions(id)?.last().map_or(0, |m| m.version);
            let version = highest.max(stored).max(floor) + 1;
            if self
                .backend
                .put_if(&key, seen.as_deref(), Some(version.to_string().as_bytes()))?
            {
                return Ok(version);
            }
        }
        Err(GatewayError::StoreConflict {
            key,
            reason: format!("no version number was free after {NUMBER_ATTEMPTS} attempts"),
        })
    }

    /// Removes a version that was never activated (its build was rejected).
    pub fn discard(&self, id: &str, version: u32) -> Result<(), GatewayError> {
        let dir = self.dir(id)?;
        // Metadata first: without it the document is not a version.
        for ext in ["json", "doc"] {
            self.backend.delete(&format!("{dir}v{version}.{ext}"))?;
        }
        Ok(())
    }

    /// Points `id` at `version` (`None`: no active version), whatever it points at now.
    pub fn set_active(&self, id: &str, version: Option<u32>) -> Result<(), GatewayError> {
        let now = self.active(id)?;
        self.set_active_if(id, now, version)
    }

    /// Points `id` at `version` if it points at `expected` now, else
    /// [`GatewayError::StoreConflict`] (another writer moved it). A version made active is
    /// appended to the history first.
    pub fn set_active_if(
        &self,
        id: &str,
        expected: Option<u32>,
        version: Option<u32>,
    ) -> Result<(), GatewayError> {
        let dir = self.dir(id)?;
        let key = format!("{dir}active");
        let seen = self.backend.get(&key)?;
        let now = seen
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.trim().parse().ok());
        if now != expected {
            return Err(moved(&key, expected, now));
        }
        let value = pointer_text(version);
        if !self
            .backend
            .put_if(&key, seen.as_deref(), value.as_deref())?
        {
            return Err(moved(&key, expected, self.active(id)?));
        }
        // After the pointer moved: a change that lost the race is not in the history. A
        // history that cannot be written puts the pointer back (the change fails as one).
        if let Some(v) = version
            && now != Some(v)
            && let Err(e) = self
                .backend
                .append(&format!("{dir}history"), &v.to_string())
        {
            self.backend
                .put_if(&key, value.as_deref(), seen.as_deref())?;
            return Err(e);
        }
        Ok(())
    }

    /// Quarantines a version: it is never made active (or a canary) again until cleared.
    pub fn quarantine(&self, id: &str, version: u32, reason: &str) -> Result<(), GatewayError> {
        let key = format!("{}v{version}.quarantine", self.dir(id)?);
        let record = Quarantine {
            at: jiff::Timestamp::now().to_string(),
            reason: reason.to_owned(),
        };
        self.backend.put(&key, &encode(&key, &record)?)
    }

    /// The quarantine of a version, if it is quarantined.
    pub fn quarantined(&self, id: &str, version: u32) -> Result<Option<Quarantine>, GatewayError> {
        let key = format!("{}v{version}.quarantine", self.dir(id)?);
        // A marker that cannot be read still quarantines: never activate on doubt.
        Ok(self.backend.get(&key)?.map(|bytes| {
            serde_json::from_slice(&bytes).unwrap_or(Quarantine {
                at: String::new(),
                reason: "quarantined (the record is unreadable)".into(),
            })
        }))
    }

    /// Clears a quarantine; `false` when the version was not quarantined.
    pub fn clear_quarantine(&self, id: &str, version: u32) -> Result<bool, GatewayError> {
        let key = format!("{}v{version}.quarantine", self.dir(id)?);
        self.backend.delete(&key)
    }

    /// The version to fall back to from `version`: the latest one made active before it
    /// that is not quarantined (by the history; without one, the latest stored version
    /// below it that is not quarantined). `None`: nothing stored to fall back to.
    pub fn last_good(&self, id: &str, version: u32) -> Result<Option<u32>, GatewayError> {
        let history: Vec<u32> = self
            .backend
            .lines(&format!("{}history", self.dir(id)?))?
            .iter()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let stored: Vec<u32> = self.versions(id)?.into_iter().map(|m| m.version).collect();
        let candidates: Vec<u32> = if history.is_empty() {
            stored
        } else {
            history.into_iter().filter(|v| stored.contains(v)).collect()
        };
        for v in candidates.into_iter().rev() {
            if v != version && v < version && self.quarantined(id, v)?.is_none() {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The canary of `id`: (version, percent), if any.
    pub fn canary(&self, id: &str) -> Result<Option<(u32, u8)>, GatewayError> {
        let key = format!("{}canary", self.dir(id)?);
        Ok(self.text(&key)?.and_then(|text| parse_canary(&text)))
    }

    /// Sets (or clears) the canary of `id`, whatever it is now.
    pub fn set_canary(&self, id: &str, canary: Option<(u32, u8)>) -> Result<(), GatewayError> {
        let now = self.canary(id)?;
        self.set_canary_if(id, now, canary)
    }

    /// Sets (or clears) the canary of `id` if it is `expected` now, else
    /// [`GatewayError::StoreConflict`].
    pub fn set_canary_if(
        &self,
        id: &str,
        expected: Option<(u32, u8)>,
        canary: Option<(u32, u8)>,
    ) -> Result<(), GatewayError> {
        let key = format!("{}canary", self.dir(id)?);
        let seen = self.backend.get(&key)?;
        let now = seen
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(parse_canary);
        let value = canary_text(canary);
        if now == expected
            && self
                .backend
                .put_if(&key, seen.as_deref(), value.as_deref())?
        {
            Ok(())
        } else {
            Err(GatewayError::StoreConflict {
                key,
                reason: "another writer changed the canary first".into(),
            })
        }
    }

    /// Every canary: (id, version, percent, document).
    pub fn canary_documents(&self) -> Result<Vec<(String, u32, u8, String)>, GatewayError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            if let Some((v, p)) = self.canary(&id)? {
                let document = self.document(&id, v)?;
                out.push((id, v, p, document));
            }
        }
        Ok(out)
    }

    /// Appends to the audit log (one JSON line, durable).
    pub fn audit(&self, entry: &AuditEntry) -> Result<(), GatewayError> {
        let line = serde_json::to_string(entry).map_err(|e| GatewayError::Config {
            path: PathBuf::from("audit.log"),
            reason: e.to_string(),
        })?;
        self.backend.append("audit.log", &line)
    }

    /// The audit log's lines (for the admin status and tests), one a line.
    pub fn audit_log(&self) -> Result<String, GatewayError> {
        Ok(self
            .backend
            .lines("audit.log")?
            .into_iter()
            .map(|l| l + "\n")
            .collect())
    }
}

fn parse_canary(text: &str) -> Option<(u32, u8)> {
    let mut parts = text.split_whitespace();
    let v = parts.next().and_then(|v| v.parse().ok());
    let p = parts.next().and_then(|p| p.parse().ok());
    v.zip(p)
}

fn moved(key: &str, expected: Option<u32>, now: Option<u32>) -> GatewayError {
    let name = |v: Option<u32>| v.map_or("none".to_owned(), |v| format!("v{v}"));
    GatewayError::StoreConflict {
        key: key.to_owned(),
        reason: format!(
            "another writer moved it first: it points at {}, not {}",
            name(now),
            name(expected)
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mallgate-store-{}-{:x}",
            std::process::id(),
            crate::cursor::random_u64()
        ));
        fs::create_dir_all(&dir).expect("temp");
        dir
    }

    #[test]
    fn versions_are_kept_and_the_pointer_moves() {
        let root = temp();
        let store = Store::open(&root).expect("open");
        let v1 = store
            .add_version("acme", "acme", "a: 1", "operator")
            .expect("v1");
        store
            .set_active("acme", Some(v1.version))
            .expect("activate");
        let v2 = store
            .add_version("acme", "acme", "a: 2", "partner:acme")
            .expect("v2");
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(
            store.active("acme").expect("active"),
            Some(1),
            "not active until set"
        );
        store.set_active("acme", Some(2)).expect("activate");
        assert_eq!(
            store.active_documents().expect("docs"),
            vec![("acme".into(), 2, "a: 2".into())]
        );
        assert_eq!(store.versions("acme").expect("versions").len(), 2);
        store.set_active("acme", None).expect("deactivate");
        assert!(store.active_documents().expect("docs").is_empty());
        assert!(store.dir("../etc").is_err(), "ids cannot escape the store");
        // A pointer moved by another writer is a conflict, and stays where it was.
        let err = store
            .set_active_if("acme", Some(1), Some(2))
            .expect_err("it points at none");
        assert!(matches!(err, GatewayError::StoreConflict { .. }), "{err}");
        assert_eq!(store.active("acme").expect("active"), None);
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn an_interrupted_write_leaves_the_last_good_version() {
        let root = temp();
        let store = Store::open(&root).expect("open");
        store
            .add_version("acme", "acme", "a: 1", "operator")
            .expect("v1");
        store.set_active("acme", Some(1)).expect("activate");
        // A crash after the document and before its metadata, and a torn temp file.
        let dir = root.join("connectors/acme");
        fs::write(dir.join("v2.doc"), "a: 2").expect("doc");
        fs::write(dir.join(".active.tmp-999"), "2").expect("tmp");
        let reopened = Store::open(&root).expect("reopen");
        assert_eq!(reopened.active("acme").expect("active"), Some(1));
        assert_eq!(reopened.versions("acme").expect("versions").len(), 1);
        assert!(
            !dir.join(".active.tmp-999").exists(),
            "temp files are cleaned"
        );
        let _ = fs::remove_dir_all(root);
    }
}
