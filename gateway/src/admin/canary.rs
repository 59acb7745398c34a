//! Canaries (DESIGN §6): a candidate version takes a share of the calls beside the active
//! one; a background judge promotes it after enough healthy calls or rolls it back when it
//! regresses (an overrun quarantines it instead).

use std::sync::Arc;

use super::{Admin, Role, quarantine};
use crate::GatewayError;
use crate::problem::ApiError;

impl Admin {
    /// One look at every canary: promote it after enough healthy calls, roll it back when
    /// its errors, schema violations or latency regress against the active version (or its
    /// mapping overran the sandbox). Returns what it did, for the judge's caller.
    pub fn judge_canaries(&self) -> Vec<(String, String)> {
        let snapshot = self.api.registry.load();
        let mut done = Vec::new();
        for canary in &snapshot.canaries {
            let id = canary.live.id().to_owned();
            let Some(active) = snapshot.connectors.iter().find(|c| c.id() == id) else {
                continue;
            };
            // An overrun quarantines (persisted), not just a rollback.
            if canary.live.stats.get().overruns > 0 && self.stored(&canary.live) {
                let reason = quarantine::overrun_reason(&canary.live);
                if let Some(outcome) = self.quarantine(&canary.live, &reason) {
                    done.push((id, outcome));
                }
                continue;
            }
            let verdict = verdict(
                &canary.live.stats.get(),
                &active.stats.get(),
                self.promote_after,
            );
            let Some((promote, reason)) = verdict else {
                continue;
            };
            let _one = self.changes.lock().unwrap_or_else(|p| p.into_inner());
            // Still the same canary? (a PUT may have replaced it meanwhile)
            if self.store.canary(&id).ok().flatten().map(|(v, _)| v) != Some(canary.live.version())
            {
                continue;
            }
            let before = self.store.active(&id).ok().flatten();
            let _ = self.store.set_canary(&id, None);
            if promote {
                let _ = self.store.set_active(&id, Some(canary.live.version()));
            }
            let action = if promote {
                "canary.promoted"
            } else {
                "canary.rolled_back"
            };
            match self.reload() {
                Ok(_) => {
                    self.audit(
                        &Role::Operator,
                        action,
                        &id,
                        Some(canary.live.version()),
                        "ok",
                        Some(reason.clone()),
                    );
                    done.push((id, format!("{action}: {reason}")));
                }
                Err(e) => {
                    let _ = self
                        .store
                        .set_canary(&id, Some((canary.live.version(), canary.percent)));
                    let _ = self.store.set_active(&id, before);
                    self.audit(
                        &Role::Operator,
                        action,
                        &id,
                        Some(canary.live.version()),
                        "rejected",
                        Some(e.to_string()),
                    );
                }
            }
        }
        done
    }
}

/// `canary_percent=N` (1 to 99) from a query string.
pub(super) fn canary_percent(query: &str) -> Result<Option<u8>, ApiError> {
    match query.split('&').find(|p| !p.is_empty()) {
        None => Ok(None),
        Some(pair) => {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k != "canary_percent" || query.split('&').filter(|p| !p.is_empty()).count() > 1 {
                return Err(ApiError::param(k, "the only parameter is canary_percent"));
            }
            v.parse::<u8>()
                .ok()
                .filter(|p| (1..=99).contains(p))
                .map(Some)
                .ok_or_else(|| ApiError::param("canary_percent", "a whole percentage from 1 to 99"))
        }
    }
}

/// The canary's verdict against the active version: `Some((true, why))` to promote,
/// `Some((false, why))` to roll back, `None` to wait. Regressions: any mapping overrun;
/// after 10 calls, an error rate 10 points above the active one's, a share of dropped
/// (schema-violating) records 5 points above, or a mean latency over twice the active one's
/// plus 50 ms.
pub fn verdict(
    canary: &crate::registry::StatsView,
    active: &crate::registry::StatsView,
    promote_after: u64,
) -> Option<(bool, String)> {
    if canary.overruns > 0 {
        return Some((
            false,
            "its mapping overran the sandbox (quarantined)".into(),
        ));
    }
    const MIN_CALLS: u64 = 10;
    if canary.calls < MIN_CALLS {
        return None;
    }
    let rate = |n: u64, d: u64| n as f64 / d.max(1) as f64;
    let drop_c = rate(canary.dropped, canary.records + canary.dropped);
    let drop_a = rate(active.dropped, active.records + active.dropped);
    if drop_c > drop_a + 0.05 {
        return Some((
            false,
            format!(
                "schema violations: {:.0}% of records dropped against {:.0}%",
                drop_c * 100.0,
                drop_a * 100.0
            ),
        ));
    }
    let (err_c, err_a) = (
        rate(canary.failures, canary.calls),
        rate(active.failures, active.calls),
    );
    if err_c > err_a + 0.10 {
        return Some((
            false,
            format!(
                "error rate {:.0}% against {:.0}%",
                err_c * 100.0,
                err_a * 100.0
            ),
        ));
    }
    let (lat_c, lat_a) = (
        rate(canary.micros, canary.calls),
        rate(active.micros, active.calls),
    );
    if active.calls >= MIN_CALLS && lat_c > 2.0 * lat_a + 50_000.0 {
        return Some((
            false,
            format!(
                "latency {:.0} ms against {:.0} ms",
                lat_c / 1000.0,
                lat_a / 1000.0
            ),
        ));
    }
    (canary.calls >= promote_after).then(|| (true, format!("{} healthy calls", canary.calls)))
}

/// The background judge of canaries; dropping it stops the thread.
#[derive(Debug)]
pub struct CanaryJudge {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CanaryJudge {
    /// Looks at the canaries every 200 ms.
    pub fn start(admin: &Arc<Admin>) -> Result<Self, GatewayError> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let admin = Arc::downgrade(admin);
        let thread = std::thread::Builder::new()
            .name("mallgate-canary".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    match admin.upgrade() {
                        Some(a) => {
                            a.quarantine_overrunning();
                            a.judge_canaries();
                        }
                        None => return,
                    }
                }
            })
            .map_err(|e| GatewayError::Startup(format!("cannot start the canary judge: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for CanaryJudge {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
