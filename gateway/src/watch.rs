//! The reload task's other sources (DESIGN §6): the watched connectors directory (the
//! operator's GitOps source; a changed file becomes a new version) and SIGHUP. Both go
//! through the same reload as the admin API, one at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::GatewayError;

/// How often the directory is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What a reload does: build and swap, returning the new generation.
pub type ReloadFn = Arc<dyn Fn(&str) -> Result<u64, GatewayError> + Send + Sync>;

/// The running watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Names, sizes and modification times of the connector documents in `dir`.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ext_ok = [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x));
                    let meta = e.metadata().ok()?;
                    ext_ok.then(|| (name, meta.len(), meta.modified().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Watcher {
    /// Watches `dir` (if any) and, with `sighup`, the SIGHUP signal; each change calls
    /// `reload` with its source (`directory` or `sighup`). A failed reload leaves the active
    /// set serving; it is logged to stderr without document contents.
    pub fn start(
        dir: Option<PathBuf>,
        sighup: bool,
        reload: ReloadFn,
    ) -> Result<Self, GatewayError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mallgate-watch".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let mut hup = if sighup {
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
                    } else {
                        None
                    };
                    let mut seen = dir.as_deref().map(fingerprint);
                    while !flag.load(Ordering::Acquire) {
                        let hangup = match hup.as_mut() {
                            Some(h) => tokio::time::timeout(POLL, h.recv()).await.is_ok(),
                            None => {
                                tokio::time::sleep(POLL).await;
                                false
                            }
                        };
                        let now = dir.as_deref().map(fingerprint);
                        let changed = now != seen;
                        seen = now;
                        let source = if hangup {
                            "sighup"
                        } else if changed {
                            "directory"
                        } else {
                            continue;
                        };
                        if let Err(e) = reload(source) {
                            eprintln!("mallgate: reload ({source}) rejected, the active set keeps serving: {e}");
                        }
                    }
                });
            })
            .map_err(|e| GatewayError::Startup(format!("cannot start the watcher: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
