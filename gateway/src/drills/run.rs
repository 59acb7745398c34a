//! A drill's own task: while the fault is on it watches the target's endpoints for the
//! first breaker opening or ejection (time-to-detect); at the end (or on abort) it takes
//! the fault off, then watches for recovery — every target endpoint back in rotation, not
//! ejected and its breaker admitting calls — up to a bound. It ends the drill whoever is watching:
//! nothing waits on the admin connection that started it.

use std::sync::Arc;
use std::time::Duration;

use mallgate_connectors::runtime::resilience::EndpointState;
use tokio::time::Instant;

use super::{Drill, Drills, Phase};

/// How often the endpoints are looked at: the resolution of detection and recovery.
const TICK: Duration = Duration::from_millis(25);

/// The target's endpoints now (a reload may have replaced the connectors; endpoint state
/// outlives versions, so these are the same states the calls feed).
pub(super) fn targets(drills: &Drills, drill: &Drill) -> Vec<Arc<EndpointState>> {
    let target = &drill.request.target;
    drills
        .registry
        .load()
        .endpoint_states()
        .into_iter()
        .filter(|s| s.partner == target.partner)
        .filter(|s| target.endpoint.as_ref().is_none_or(|e| *e == s.redacted))
        .collect()
}

/// How long a call of the target may last: two attempt timeouts of its slowest connector
/// (an attempt and a retry or hedge), at most 5 s.
fn longest_call(drills: &Drills, drill: &Drill) -> Duration {
    let slowest = drills
        .registry
        .load()
        .connectors
        .iter()
        .filter(|c| c.partner() == drill.request.target.partner)
        .map(|c| u64::from(c.spec().policies.timeout_ms))
        .max()
        .unwrap_or(0);
    Duration::from_millis(2 * slowest).min(Duration::from_secs(5))
}

/// Breaker openings and ejections so far, over the target's endpoints.
pub(super) fn trips(states: &[Arc<EndpointState>]) -> u64 {
    states
        .iter()
        .map(|s| s.breaker.opened_total() + s.ejection.ejected_total())
        .sum()
}

/// Every endpoint back in rotation: not ejected, its breaker admitting calls (closed, or
/// past its open time: the next call is its half-open probe). Only a real exchange closes
/// a breaker, and a standby endpoint may see none for a long time after a drill.
fn healthy(states: &[Arc<EndpointState>]) -> bool {
    states.iter().all(|s| s.available())
}

pub(super) async fn watch(drills: Arc<Drills>, drill: Arc<Drill>, baseline: u64) {
    let ends_at = drill.fault.ends_at;
    loop {
        let now = Instant::now();
        if now >= ends_at {
            break;
        }
        let wait = tokio::time::sleep(TICK.min(ends_at - now));
        tokio::select! {
            () = wait => {}
            () = drill.abort.notified() => break,
        }
        if drill.marks().detect.is_none() && trips(&targets(&drills, &drill)) > baseline {
            drill.mark(|m| m.detect = Some(Instant::now()));
        }
    }
    drills.faults.remove(&drill.id);
    drill.mark(|m| m.fault_end = Some(Instant::now()));
    drill.set_phase(Phase::Recovering);
    // Calls started while the fault was on still answer after it: the drill counts them
    // (amplification's two sides cover the same calls) for as long as one may last.
    let linger = Instant::now() + longest_call(&drills, &drill);
    let give_up = Instant::now() + drills.recovery_bound;
    // An abort now stops the wait (the endpoints may never come back).
    while Instant::now() < give_up {
        if healthy(&targets(&drills, &drill)) {
            drill.mark(|m| m.recovered = Some(Instant::now()));
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = drill.abort.notified() => break,
        }
    }
    let left = linger.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            () = drill.abort.notified() => {}
        }
    }
    drills.taps.remove(drill.tap.slot);
    let aborted = drill.marks().aborted;
    drill.set_phase(if aborted {
        Phase::Aborted
    } else {
        Phase::Finished
    });
    let ended = drills
        .ended
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(ended) = ended {
        ended(&drill);
    }
    let report = drill.report();
    tracing::info!(
        target: "mallgate::drill",
        drill = %drill.id,
        partner = %drill.request.target.partner,
        fault = drill.request.fault.name(),
        state = ?report.state,
        passed = report.verdict.passed,
        time_to_detect_ms = report.figures.time_to_detect_ms,
        time_to_failover_ms = report.figures.time_to_failover_ms,
        time_to_recover_ms = report.figures.time_to_recover_ms,
        frontend_non_2xx = report.figures.frontend_non_2xx,
        amplification = report.figures.amplification,
        "drill ended"
    );
}
