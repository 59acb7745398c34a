//! Where the store keeps its keys. The [`Store`](super::Store) speaks in keys relative to
//! its root (`connectors/acme/v3.doc`, `partners/acme.json`, `audit.log`); a backend keeps
//! them: the state directory of one node ([`FileBackend`]), or etcd for a fleet
//! ([`super::etcd::EtcdBackend`]). A change a fleet must agree on is a compare-and-put
//! ([`Backend::put_if`]), so two replicas replacing the same revision give one conflict.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::GatewayError;

/// A store of keys (`/`-separated, relative) and byte values.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The value of `key`, if it is there.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, GatewayError>;
    /// Every key under `prefix` (which ends in `/`), at any depth, sorted. A backend may
    /// or may not list its logs ([`is_log`]) among them.
    fn keys(&self, prefix: &str) -> Result<Vec<String>, GatewayError>;
    /// Writes `value` under `key`, durably.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), GatewayError>;
    /// Writes `value` (`None`: removes the key) when `key` holds `expected` now (`None`:
    /// absent), as one atomic step; `false` when it did not, and nothing was written.
    fn put_if(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, GatewayError>;
    /// Removes `key`; `false` when it was not there.
    fn delete(&self, key: &str) -> Result<bool, GatewayError>;
    /// Appends one line to the log `key`, durably.
    fn append(&self, key: &str, line: &str) -> Result<(), GatewayError>;
    /// The lines of the log `key`, oldest first (none when it is not there).
    fn lines(&self, key: &str) -> Result<Vec<String>, GatewayError>;
    /// Where the keys are, for messages (`state directory /var/lib/mallgate`).
    fn describe(&self) -> String;
    /// The state directory, when the keys are files in one.
    fn root(&self) -> Option<&Path> {
        None
    }
    /// Calls `changed` whenever a key changes, from any writer, for as long as the
    /// backend lives (resuming by itself after errors); `false` when the backend has no
    /// other writers to watch for (a state directory is this node's).
    fn watch(&self, changed: Changed) -> bool {
        let _ = changed;
        false
    }
    /// The last revision of the store its watch has seen (`None`: no revisions here).
    fn revision(&self) -> Option<i64> {
        None
    }
    /// Holds this replica's lease with `record` (read again whenever it may have changed)
    /// for as long as the backend lives, keeping `view` current (the live replicas, the
    /// election); `false` when there is no fleet to be in.
    fn announce(
        &self,
        record: super::fleet::Record,
        view: std::sync::Arc<super::fleet::FleetView>,
    ) -> bool {
        let _ = (record, view);
        false
    }
    /// Whether the shared store is reachable now (its watch is in place), as a flag the
    /// readiness answer and `/metrics` read; `None` when there is no shared store.
    fn link(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }
    /// The records of every live replica; empty when there is no fleet.
    fn members(&self) -> Result<Vec<Vec<u8>>, GatewayError> {
        Ok(Vec::new())
    }
}

/// What a watch calls: cheap and non-blocking (it wakes the reload path).
pub type Changed = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Whether `key` is a log (written by [`Backend::append`], read by [`Backend::lines`]):
/// the audit log and each connector's history.
pub fn is_log(key: &str) -> bool {
    key == "audit.log" || key.ends_with("/history")
}

pub(super) fn io(path: &Path) -> impl Fn(std::io::Error) -> GatewayError + '_ {
    move |source| GatewayError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The state directory: one file per key, every write atomic (a temp file, fsync, rename,
/// fsync of the directory), so a process killed in the middle of a write leaves the
/// previous file whole.
#[derive(Debug)]
pub struct FileBackend {
    root: PathBuf,
    /// Makes a compare-and-put one step among this process's writers.
    cas: Mutex<()>,
}

impl FileBackend {
    /// Opens (creating) the directory; leftover temp files of an interrupted write are
    /// removed.
    pub fn open(root: &Path) -> Result<Self, GatewayError> {
        fs::create_dir_all(root).map_err(io(root))?;
        remove_temp_files(root);
        Ok(Self {
            root: root.to_owned(),
            cas: Mutex::new(()),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

/// Removes `.name.tmp-PID` files left by interrupted writes, at any depth, of processes
/// that are gone (during an upgrade the old process may be writing one). Symbolic links
/// are not followed.
fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() {
            remove_temp_files(&entry.path());
        } else if let Some((_, pid)) = name.rsplit_once(".tmp-") {
            let alive = pid.parse::<u32>().is_ok_and(|pid| {
                pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
            });
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn walk(dir: &Path, relative: &str, out: &mut Vec<String>) -> Result<(), GatewayError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temp files and anything hidden are not keys.
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{relative}{name}");
        // Symbolic links are not followed (a loop must not take the store down).
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&entry.path(), &format!("{key}/"), out)?,
            Ok(kind) if kind.is_file() => out.push(key),
            _ => {}
        }
    }
    Ok(())
}

impl Backend for FileBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, GatewayError> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, GatewayError> {
        let mut out = Vec::new();
        walk(&self.path(prefix), prefix, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), GatewayError> {
        write_atomic(&self.path(key), value)
    }

    fn put_if(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, GatewayError> {
        let _turn = self
            .cas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.get(key)?.as_deref() != expected {
            return Ok(false);
        }
        match value {
            Some(value) => self.put(key, value)?,
            None => {
                self.delete(key)?;
            }
        }
        Ok(true)
    }

    fn delete(&self, key: &str) -> Result<bool, GatewayError> {
        let path = self.path(key);
        if !path.exists() {
            return Ok(false);
        }
        remove_durably(&path)?;
        Ok(true)
    }

    fn append(&self, key: &str, line: &str) -> Result<(), GatewayError> {
        append_line(&self.path(key), line)
    }

    fn lines(&self, key: &str) -> Result<Vec<String>, GatewayError> {
        let path = self.path(key);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn describe(&self) -> String {
        format!("state directory {}", self.root.display())
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Appends one line to `path` and syncs it (the file and, when new, its directory).
fn append_line(path: &Path, line: &str) -> Result<(), GatewayError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let new = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(io(path))?;
    file.sync_data().map_err(io(path))?;
    if new {
        sync_dir(dir)?;
    }
    Ok(())
}

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

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
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
