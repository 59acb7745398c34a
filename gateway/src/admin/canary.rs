//! Canaries (DESIGN §6): a candidate version takes a share of the calls beside the active
//! one; a background judge promotes it after enough healthy calls or rolls it back when it
//! regresses (an overrun quarantines it instead).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};

use super::Admin;
use super::auth::Role;
use super::change::{Event, OnFailure, Tx};
use crate::changes::{Applied, Change};
use crate::problem::ApiError;
use crate::registry::StatsView;

/// How often the judge looks.
const LOOK: Duration = Duration::from_millis(200);

/// One replica's figures for a canary and the active version beside it, in its fleet
/// record: the leader judges on the sum over every replica.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Judging {
    pub canary: u32,
    pub canary_stats: StatsView,
    pub active: u32,
    pub active_stats: StatsView,
}

impl Admin {
    /// This replica's figures for each of its canaries, by connector id.
    pub(super) fn judging(&self) -> BTreeMap<String, Judging> {
        let snapshot = self.api.registry.load();
        snapshot
            .canaries
            .iter()
            .filter_map(|canary| {
                let id = canary.live.id();
                let active = snapshot.connectors.iter().find(|c| c.id() == id)?;
                let judging = Judging {
                    canary: canary.live.version(),
                    canary_stats: canary.live.stats.get(),
                    active: active.version(),
                    active_stats: active.stats.get(),
                };
                Some((id.to_owned(), judging))
            })
            .collect()
    }

    /// The other live replicas' figures (none without a fleet, or when etcd cannot say:
    /// then the judge waits rather than judge on a part of the traffic).
    fn fleet_judging(&self) -> Option<Vec<BTreeMap<String, Judging>>> {
        let me = self.api.config().replica_id();
        let members = self.store.members().ok()?;
        Some(
            members
                .iter()
                .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(bytes).ok())
                .filter(|record| record["id"].as_str() != Some(me.as_str()))
                .filter_map(|record| serde_json::from_value(record["judging"].clone()).ok())
                .collect(),
        )
    }

    /// One look at every canary: promote it after enough healthy calls, end it when its
    /// errors, schema violations or latency regress against the active version, quarantine
    /// it when its mapping overran the sandbox. In a fleet, only the elected leader judges,
    /// on the figures of every replica. The changes to apply.
    pub(super) fn canary_verdicts(&self) -> Vec<Change> {
        if !self.fleet.leads() {
            return Vec::new();
        }
        let mine = self.judging();
        if mine.is_empty() {
            return Vec::new();
        }
        let others = if self.store.link().is_some() {
            match self.fleet_judging() {
                Some(others) => others,
                None => return Vec::new(),
            }
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for (id, judging) in mine {
            let (mut canary, mut active) = (judging.canary_stats, judging.active_stats);
            // An overrun quarantines (persisted), not just a rollback: `overrunning` sends
            // that change on the replica that saw it (a canary's first overrun is enough).
            if canary.overruns > 0 {
                continue;
            }
            for other in others.iter().filter_map(|o| o.get(&id)) {
                if other.canary == judging.canary {
                    canary += other.canary_stats;
                }
                if other.active == judging.active {
                    active += other.active_stats;
                }
            }
            if canary.overruns > 0 {
                continue;
            }
            let version = judging.canary;
            let verdict = verdict(&canary, &active, self.promote_after);
            if let Some((promote, reason)) = verdict {
                out.push(Change::Verdict {
                    id,
                    version,
                    promote,
                    reason,
                });
            }
        }
        out
    }

    /// The judge's verdict on canary `version` of `id`, if it is still the canary (a PUT
    /// may have replaced it meanwhile).
    pub(super) fn apply_verdict(
        &self,
        id: &str,
        version: u32,
        promote: bool,
        reason: String,
    ) -> Result<Applied, ApiError> {
        let current = self
            .store
            .canary(id)
            .map_err(|e| self.store_error(&e))?
            .map(|(v, _)| v);
        if current != Some(version) {
            return Err(ApiError::Conflict {
                detail: format!("v{version} of `{id}` is no longer its canary"),
            });
        }
        let action = if promote {
            "canary.promoted"
        } else {
            "canary.rolled_back"
        };
        let event = Event::new(&Role::Operator, action, id)
            .version(version)
            .detail(reason.clone());
        let write = |tx: &mut Tx<'_>| {
            tx.set_canary(None)?;
            if promote {
                tx.set_active(Some(version))?;
            }
            Ok(())
        };
        let (generation, _) = self.transact(id, event, OnFailure::Undo, &[(&write, None)])?;
        Ok(Applied {
            generation,
            version: Some(version),
            ..Applied::default()
        })
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

/// The background judge of canaries and of overrunning versions: a pingora background
/// service on every replica (each quarantines what overran on it); canary verdicts come
/// from the fleet's leader only. Its verdicts go to the reload task like every other
/// change.
#[derive(Debug)]
pub struct CanaryJudge {
    admin: Arc<Admin>,
}

impl CanaryJudge {
    pub fn new(admin: Arc<Admin>) -> Self {
        Self { admin }
    }
}

#[async_trait]
impl BackgroundService for CanaryJudge {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(LOOK) => {}
                _ = shutdown.changed() => return,
            }
            // A draining instance leaves the decisions to the one that stays (both read
            // the same store).
            if self.admin.api.drain.draining().is_some() {
                continue;
            }
            // Off the pingora runtime: in a fleet the judge reads the other replicas'
            // figures from etcd (a bounded, blocking call).
            let admin = Arc::clone(&self.admin);
            let judged = tokio::task::spawn_blocking(move || {
                let mut changes = admin.overrunning();
                changes.extend(admin.canary_verdicts());
                changes
            });
            let Ok(changes) = judged.await else {
                continue;
            };
            for change in changes {
                // A refusal (the canary changed meanwhile, the set does not build) is
                // audited by the transaction; the next look sees the new state.
                let _ = self.admin.changes.submit(Role::Operator, change).await;
            }
        }
    }
}
