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

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::GatewayError;

mod partners;
mod secrets;
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

/// The state directory store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> GatewayError + '_ {
    move |source| GatewayError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Appends one line to `path` and syncs it (the file and, when new, its directory).
fn append_line(path: &Path, line: &str) -> Result<(), GatewayError> {
    let new = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(io(path))?;
    file.sync_data().map_err(io(path))?;
    if new && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
/// Fsyncs a directory, so an entry created or removed in it survives a power loss.
fn sync_dir(dir: &Path) -> Result<(), GatewayError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Removes `path` (absent is fine) and fsyncs its directory.
fn remove_durably(path: &Path) -> Result<(), GatewayError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or_else(|| Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GatewayError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io(dir))?;
        // The new directory's own entry, in its parent.
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        // Owner-only: the store holds partner documents, hashed tokens and sealed secrets.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(dir)
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

impl Store {
    /// Opens (creating) the store under `root`. Leftover temp files of an interrupted write
    /// are removed.
    pub fn open(root: &Path) -> Result<Self, GatewayError> {
        let connectors = root.join("connectors");
        fs::create_dir_all(&connectors).map_err(io(&connectors))?;
        for entry in fs::read_dir(&connectors)
            .map_err(io(&connectors))?
            .flatten()
        {
            if let Ok(files) = fs::read_dir(entry.path()) {
                for f in files.flatten() {
                    if f.file_name().to_string_lossy().contains(".tmp-") {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> Result<PathBuf, GatewayError> {
        Ok(self.root.join("connectors").join(safe_id(id)?))
    }

    /// Every version of `id`, oldest first (versions whose files are incomplete are
    /// skipped: a document without its metadata was never accepted).
    pub fn versions(&self, id: &str) -> Result<Vec<VersionMeta>, GatewayError> {
        let dir = self.dir(id)?;
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<VersionMeta> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n: u32 = name
                    .strip_prefix('v')?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                let meta: VersionMeta = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
                (meta.version == n && dir.join(format!("v{n}.doc")).exists()).then_some(meta)
            })
            .collect();
        out.sort_by_key(|m| m.version);
        Ok(out)
    }

    /// The document text of a version.
    pub fn document(&self, id: &str, version: u32) -> Result<String, GatewayError> {
        let path = self.dir(id)?.join(format!("v{version}.doc"));
        fs::read_to_string(&path).map_err(io(&path))
    }

    /// The active version of `id`, if any.
    pub fn active(&self, id: &str) -> Result<Option<u32>, GatewayError> {
        let path = self.dir(id)?.join("active");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Every connector with an active version: (id, version, document).
    pub fn active_documents(&self) -> Result<Vec<(String, u32, String)>, GatewayError> {
        let connectors = self.root.join("connectors");
        let mut ids: Vec<String> = fs::read_dir(&connectors)
            .map_err(io(&connectors))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if safe_id(&id).is_err() {
                continue;
            }
            if let Some(v) = self.active(&id)? {
                out.push((id.clone(), v, self.document(&id, v)?));
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
        let version = self
            .versions(id)?
            .last()
            .map_or(0, |m| m.version)
            .max(floor)
            .max(self.highest(id)?)
            + 1;
        // The number is taken before the version is written: a version that served and was
        // then discarded (its audit line could not be written) never lends its number,
        // revision or cache entries to another document.
        write_atomic(&dir.join("highest"), version.to_string().as_bytes())?;
        let meta = VersionMeta {
            version,
            digest: format!("{:x}", Sha256::digest(text.as_bytes())),
            author: author.to_owned(),
            created_at: jiff::Timestamp::now().to_string(),
            partner: partner.to_owned(),
        };
        write_atomic(&dir.join(format!("v{version}.doc")), text.as_bytes())?;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| GatewayError::Config {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&dir.join(format!("v{version}.json")), &json)?;
        Ok(meta)
    }

    /// The highest version number ever given to `id` (0: none).
    fn highest(&self, id: &str) -> Result<u32, GatewayError> {
        let path = self.dir(id)?.join("highest");
        match fs::read_to_string(&path) {
            Ok(t) => Ok(t.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Removes a version that was never activated (its build was rejected).
    pub fn discard(&self, id: &str, version: u32) -> Result<(), GatewayError> {
        let dir = self.dir(id)?;
        // Metadata first: without it the document is not a version.
        for ext in ["json", "doc"] {
            remove_durably(&dir.join(format!("v{version}.{ext}")))?;
        }
        Ok(())
    }

    /// Points `id` at `version` (`None`: no active version); a version made active is
    /// appended to the history first.
    pub fn set_active(&self, id: &str, version: Option<u32>) -> Result<(), GatewayError> {
        let dir = self.dir(id)?;
        let path = dir.join("active");
        match version {
            Some(v) => {
                if self.active(id)? != Some(v) {
                    append_line(&dir.join("history"), &v.to_string())?;
                }
                write_atomic(&path, v.to_string().as_bytes())
            }
            None => remove_durably(&path),
        }
    }

    /// Quarantines a version: it is never made active (or a canary) again until cleared.
    pub fn quarantine(&self, id: &str, version: u32, reason: &str) -> Result<(), GatewayError> {
        let path = self.dir(id)?.join(format!("v{version}.quarantine"));
        let record = Quarantine {
            at: jiff::Timestamp::now().to_string(),
            reason: reason.to_owned(),
        };
        let json = serde_json::to_vec(&record).map_err(|e| GatewayError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &json)
    }

    /// The quarantine of a version, if it is quarantined.
    pub fn quarantined(&self, id: &str, version: u32) -> Result<Option<Quarantine>, GatewayError> {
        let path = self.dir(id)?.join(format!("v{version}.quarantine"));
        match fs::read(&path) {
            // A marker that cannot be read still quarantines: never activate on doubt.
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Quarantine {
                at: String::new(),
                reason: "quarantined (the record is unreadable)".into(),
            }))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Clears a quarantine; `false` when the version was not quarantined.
    pub fn clear_quarantine(&self, id: &str, version: u32) -> Result<bool, GatewayError> {
        if self.quarantined(id, version)?.is_none() {
            return Ok(false);
        }
        remove_durably(&self.dir(id)?.join(format!("v{version}.quarantine")))?;
        Ok(true)
    }

    /// The version to fall back to from `version`: the latest one made active before it
    /// that is not quarantined (by the history; without one, the latest stored version
    /// below it that is not quarantined). `None`: nothing stored to fall back to.
    pub fn last_good(&self, id: &str, version: u32) -> Result<Option<u32>, GatewayError> {
        let path = self.dir(id)?.join("history");
        let history: Vec<u32> = match fs::read_to_string(&path) {
            Ok(text) => text.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
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
        let path = self.dir(id)?.join("canary");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut parts = text.split_whitespace();
                let v = parts.next().and_then(|v| v.parse().ok());
                let p = parts.next().and_then(|p| p.parse().ok());
                Ok(v.zip(p))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Sets (or clears) the canary of `id`.
    pub fn set_canary(&self, id: &str, canary: Option<(u32, u8)>) -> Result<(), GatewayError> {
        let path = self.dir(id)?.join("canary");
        match canary {
            Some((v, p)) => write_atomic(&path, format!("{v} {p}").as_bytes()),
            None => remove_durably(&path),
        }
    }

    /// Every canary: (id, version, percent, document).
    pub fn canary_documents(&self) -> Result<Vec<(String, u32, u8, String)>, GatewayError> {
        let connectors = self.root.join("connectors");
        let mut out = Vec::new();
        for entry in fs::read_dir(&connectors)
            .map_err(io(&connectors))?
            .flatten()
        {
            let id = entry.file_name().to_string_lossy().into_owned();
            if safe_id(&id).is_err() {
                continue;
            }
            if let Some((v, p)) = self.canary(&id)? {
                out.push((id.clone(), v, p, self.document(&id, v)?));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Appends to the audit log (one JSON line, fsynced).
    pub fn audit(&self, entry: &AuditEntry) -> Result<(), GatewayError> {
        let path = self.root.join("audit.log");
        let mut line = serde_json::to_vec(entry).map_err(|e| GatewayError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(&line).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))
    }

    /// The audit log's lines (for the admin status and tests).
    pub fn audit_log(&self) -> Result<String, GatewayError> {
        let path = self.root.join("audit.log");
        match fs::read_to_string(&path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
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
