//! The etcd watch (DESIGN §6): every replica watches its fleet's `data/` prefix and wakes
//! the one reload path on any change, its own or another replica's. A watch that breaks
//! (etcd restarted, the network cut) resumes from the revision after the last one it saw,
//! so nothing is missed and nothing is re-read; a watch whose revision was compacted away
//! cannot resume, so it watches from now and asks for one reload, which re-reads the
//! store and rebuilds only the connectors whose documents changed (the registry keeps
//! every built connector whose digest is the same).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, WatchOptions};

use super::backend::Changed;

/// The first and the longest wait before watching again after an error.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What one watch stream ended with.
enum Ended {
    /// An error or the end of the stream: resume from the revision after the last seen.
    Broken,
    /// The revision to resume from was compacted away: watch from now, read everything.
    Compacted,
}

/// Watches `prefix` for as long as the runtime lives.
pub(super) async fn watch(
    mut client: Client,
    prefix: String,
    changed: Changed,
    seen: Arc<AtomicI64>,
    connected: Arc<AtomicBool>,
) {
    // The revision to resume from; 0: from now.
    let mut next: i64 = 0;
    // A reload is owed once the new watch is in place: at the start (a change made
    // between the startup read and this watch would be missed) and after a compaction.
    let mut resync = true;
    let mut backoff = BACKOFF.0;
    loop {
        let mut options = WatchOptions::new().with_prefix();
        if next > 0 {
            options = options.with_start_revision(next);
        }
        match client.watch(prefix.clone(), Some(options)).await {
            Ok(mut stream) => {
                let ended = follow(
                    &mut stream,
                    (&mut next, &mut resync, &seen, &connected),
                    &changed,
                    &mut backoff,
                )
                .await;
                connected.store(false, Ordering::Release);
                match ended {
                    Ended::Broken => {
                        tracing::warn!(
                            target: "mallgate::store",
                            resume_revision = next,
                            "the etcd watch broke; resuming"
                        );
                    }
                    Ended::Compacted => {
                        tracing::warn!(
                            target: "mallgate::store",
                            "the etcd watch's revision was compacted; watching from now and reading the store again"
                        );
                        next = 0;
                        resync = true;
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target: "mallgate::store", error = %e, "cannot watch etcd; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Follows one watch stream until it ends, calling `changed` for each batch of events.
async fn follow(
    stream: &mut etcd_client::WatchStream,
    (next, resync, seen, connected): (&mut i64, &mut bool, &AtomicI64, &AtomicBool),
    changed: &Changed,
    backoff: &mut Duration,
) -> Ended {
    loop {
        let reply = match stream.message().await {
            Ok(Some(reply)) => reply,
            Ok(None) | Err(_) => return Ended::Broken,
        };
        *backoff = BACKOFF.0;
        if reply.compact_revision() > 0 {
            return Ended::Compacted;
        }
        if reply.created() {
            if !connected.swap(true, Ordering::AcqRel) {
                tracing::info!(target: "mallgate::store", "the etcd watch is back");
            }
            if *next == 0 {
                // From now: what this watch has seen is everything up to its start.
                *next = reply.header().map_or(0, |h| h.revision() + 1);
                seen.fetch_max(*next - 1, Ordering::AcqRel);
            }
            if std::mem::take(resync) {
                changed();
            }
        }
        let last = reply
            .events()
            .iter()
            .filter_map(|e| e.kv())
            .map(|kv| kv.mod_revision())
            .max();
        if let Some(last) = last {
            *next = last + 1;
            seen.fetch_max(last, Ordering::AcqRel);
            changed();
        }
        if reply.canceled() {
            return Ended::Broken;
        }
    }
}
