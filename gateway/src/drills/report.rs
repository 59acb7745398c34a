//! A drill's report: the figures, the per-second timeline and the verdict against what
//! the drill expected. Times count from the fault's onset (the first attempt it hit); the
//! timeline's seconds and marks count from the drill's start.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::taps::Second;
use super::{Drill, DrillRequest, Phase};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub state: Phase,
    pub actor: String,
    pub started_at: String,
    #[serde(flatten)]
    pub request: DrillRequest,
    pub figures: Figures,
    /// Marks on the timeline, in milliseconds from the drill's start.
    pub marks: TimelineMarks,
    pub timeline: Vec<TimelineSecond>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// From the drill's start to the first attempt the fault hit (`null`: no traffic hit).
    pub onset_ms: Option<u64>,
    /// From the onset to the first breaker opening or ejection of a target endpoint.
    pub time_to_detect_ms: Option<u64>,
    /// From the onset to the first good answer from another endpoint than the one an
    /// exchange tried first, or the first stale answer.
    pub time_to_failover_ms: Option<u64>,
    /// From the fault's end to every target endpoint back in rotation (not ejected, its
    /// breaker admitting calls).
    pub time_to_recover_ms: Option<u64>,
    /// Source answers of the target by outcome, over the drill and its recovery.
    pub answers: Second,
    /// The answers of calls started while the fault was on (request counts not kept).
    pub answers_while_on: Second,
    pub frontend_requests: u64,
    pub frontend_non_2xx: u64,
    /// Attempts at the partner (calls, retries, hedges; not probes nor token requests)
    /// while the fault was on.
    pub partner_attempts: u64,
    /// Attempts that got the fault.
    pub injected: u64,
    /// The exchanges (a call's request of one page) those attempts belong to.
    pub exchanges: u64,
    /// `partner_attempts / exchanges`: retry amplification.
    pub amplification: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TimelineMarks {
    pub onset_ms: Option<u64>,
    pub detect_ms: Option<u64>,
    pub failover_ms: Option<u64>,
    pub fault_end_ms: Option<u64>,
    pub recovered_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineSecond {
    pub second: u64,
    #[serde(flatten)]
    pub answers: Second,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub limit: f64,
    /// `null`: the figure was never seen (no detection, no failover, no recovery).
    pub actual: Option<f64>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Every check passed (a running drill: so far).
    pub passed: bool,
    pub checks: Vec<Check>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn since(from: Instant, to: Option<Instant>) -> Option<u64> {
    to.map(|t| ms(t.saturating_duration_since(from)))
}

pub(super) fn build(drill: &Drill) -> Report {
    let marks = drill.marks();
    let onset = drill.tap.onset();
    // The first good answer from another endpoint (the partner stack's), or the first
    // stale answer (the cache's), whichever came first.
    let failover = [
        drill.fault.first_failover.get().copied(),
        drill.tap.stale.get().copied(),
    ]
    .into_iter()
    .flatten()
    .min();
    let mut seconds = drill.tap.timeline();
    // Seconds without answers count too: up to the last mark (or now, while it runs).
    // One reading of the phase: the padding and the state agree.
    let state = drill.phase();
    let last = match state {
        Phase::Running | Phase::Recovering => Some(Instant::now()),
        Phase::Finished | Phase::Aborted => marks.recovered.max(marks.fault_end),
    };
    if let Some(last) = last {
        let span = last.saturating_duration_since(drill.started).as_secs() as usize + 1;
        if seconds.len() < span {
            seconds.resize(span, Second::default());
        }
    }
    let mut answers = Second::default();
    for s in &seconds {
        answers.add(s);
    }
    let exchanges = drill.fault.exchanges.load(Ordering::Relaxed);
    let attempts = drill.fault.attempts.load(Ordering::Relaxed);
    let figures = Figures {
        onset_ms: since(drill.started, onset),
        time_to_detect_ms: onset.and_then(|o| since(o, marks.detect)),
        time_to_failover_ms: onset.and_then(|o| since(o, failover)),
        time_to_recover_ms: marks.fault_end.and_then(|e| since(e, marks.recovered)),
        answers,
        answers_while_on: drill.tap.while_on(),
        frontend_requests: answers.requests,
        frontend_non_2xx: answers.non_2xx,
        partner_attempts: attempts,
        injected: drill.fault.injected.load(Ordering::Relaxed),
        exchanges,
        amplification: (exchanges > 0).then(|| attempts as f64 / exchanges as f64),
    };
    let timeline_marks = TimelineMarks {
        onset_ms: since(drill.started, onset),
        detect_ms: since(drill.started, marks.detect),
        failover_ms: since(drill.started, failover),
        fault_end_ms: since(drill.started, marks.fault_end),
        recovered_ms: since(drill.started, marks.recovered),
    };
    Report {
        id: drill.id.clone(),
        state,
        actor: drill.actor.clone(),
        started_at: drill.started_at.to_string(),
        request: drill.request.clone(),
        verdict: verdict(drill, &figures, state),
        figures,
        marks: timeline_marks,
        timeline: seconds
            .into_iter()
            .enumerate()
            .map(|(i, answers)| TimelineSecond {
                second: i as u64,
                answers,
            })
            .collect(),
    }
}

/// Each limit of `expect` against the figures. A time never seen fails its check once the
/// drill is over (a drill that never failed over did not fail over in time).
fn verdict(drill: &Drill, f: &Figures, state: Phase) -> Verdict {
    let e = &drill.request.expect;
    let over = matches!(state, Phase::Finished | Phase::Aborted);
    let count = |n: u64| Some(n as f64);
    let time = |t: Option<u64>| t.map(|v| v as f64);
    let limits = [
        (
            "max_frontend_errors",
            e.max_frontend_errors.map(|v| v as f64),
            count(f.frontend_non_2xx),
        ),
        (
            "max_failed_answers",
            e.max_failed_answers.map(|v| v as f64),
            count(f.answers.failed),
        ),
        (
            "max_time_to_detect_ms",
            e.max_time_to_detect_ms.map(|v| v as f64),
            time(f.time_to_detect_ms),
        ),
        (
            "max_time_to_failover_ms",
            e.max_time_to_failover_ms.map(|v| v as f64),
            time(f.time_to_failover_ms),
        ),
        ("max_amplification", e.max_amplification, f.amplification),
        (
            "max_recovery_ms",
            e.max_recovery_ms.map(|v| v as f64),
            time(f.time_to_recover_ms),
        ),
    ];
    let checks: Vec<Check> = limits
        .into_iter()
        .filter_map(|(name, limit, actual)| {
            let limit = limit?;
            let passed = match actual {
                Some(a) => a <= limit,
                // Not seen yet: failing only when the drill is over.
                None => !over,
            };
            Some(Check {
                name,
                limit,
                actual,
                passed,
            })
        })
        .collect();
    Verdict {
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}
