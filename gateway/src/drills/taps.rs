//! What the frontends saw during a drill: every source answer of the drilled partner (and
//! capability) by outcome, per second, and the status of each request that had one. The
//! fan-out reports each source here ([`Taps::source`]); with no drill running that is one
//! atomic load.

use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use mallgate_connectors::Capability;
use mallgate_connectors::runtime::faults::{ActiveFault, FaultKind};
use serde::Serialize;
use tokio::time::Instant;

use crate::fanout::Outcome;

/// Answers in one second of a drill.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Second {
    pub live: u64,
    pub cached: u64,
    pub stale: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Frontend requests with a source of the drilled partner that were answered non-2xx.
    pub non_2xx: u64,
    /// Frontend requests with a source of the drilled partner.
    pub requests: u64,
}

impl Second {
    pub fn add(&mut self, other: &Second) {
        self.live += other.live;
        self.cached += other.cached;
        self.stale += other.stale;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.non_2xx += other.non_2xx;
        self.requests += other.requests;
    }
}

/// One running drill's tap.
#[derive(Debug)]
pub struct Tap {
    /// The request tally's bit for this drill (`1 << slot`).
    pub slot: u8,
    partner: String,
    capability: Option<Capability>,
    started: Instant,
    seconds: Mutex<Vec<Second>>,
    /// The first stale answer to a call started while the fault was on.
    pub stale: OnceLock<Instant>,
    /// The drill's fault: its onset is when it first hit an attempt.
    fault: Arc<ActiveFault>,
    /// Source answers of calls started while the fault was on, by outcome.
    while_on: Mutex<Second>,
}

impl Tap {
    pub fn new(slot: u8, fault: Arc<ActiveFault>, started: Instant) -> Self {
        Self {
            slot,
            partner: fault.target.partner.clone(),
            capability: fault.target.capability,
            started,
            seconds: Mutex::new(Vec::new()),
            stale: OnceLock::new(),
            fault,
            while_on: Mutex::new(Second::default()),
        }
    }

    /// The drill's fault.
    pub fn fault(&self) -> &ActiveFault {
        &self.fault
    }

    /// When the fault first hit an attempt (an `observe` drill: its start, since the
    /// fault is not its own).
    pub fn onset(&self) -> Option<Instant> {
        if self.fault.kind == FaultKind::Observe {
            return Some(self.started);
        }
        self.fault.first_injected.get().copied()
    }

    fn second(&self, f: impl FnOnce(&mut Second)) {
        let at = Instant::now()
            .saturating_duration_since(self.started)
            .as_secs() as usize;
        let mut seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        // A bounded drill: at most its duration plus recovery, in seconds.
        if seconds.len() <= at {
            seconds.resize(at + 1, Second::default());
        }
        f(&mut seconds[at]);
    }

    /// Answers of calls started while the fault was on.
    pub fn while_on(&self) -> Second {
        *self.while_on.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The per-second answers so far.
    pub fn timeline(&self) -> Vec<Second> {
        self.seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn wants(&self, partner: &str, capability: Capability) -> bool {
        self.partner == partner && self.capability.is_none_or(|c| c == capability)
    }
}

/// The running drills' taps.
#[derive(Debug, Default)]
pub struct Taps {
    active: ArcSwap<Vec<Arc<Tap>>>,
}

impl Taps {
    pub fn add(&self, tap: Arc<Tap>) {
        self.active.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(Arc::clone(&tap));
            list
        });
    }

    pub fn remove(&self, slot: u8) {
        self.active.rcu(|list| {
            list.iter()
                .filter(|t| t.slot != slot)
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    /// Slots in use by running drills.
    pub fn slots(&self) -> Vec<u8> {
        self.active.load().iter().map(|t| t.slot).collect()
    }

    /// One source answer (of a call started at `started`) of the current request: the bits
    /// of the drills it belongs to.
    pub fn source(
        &self,
        partner: &str,
        capability: Capability,
        outcome: Outcome,
        started: Instant,
    ) -> u64 {
        let active = self.active.load();
        if active.is_empty() {
            return 0;
        }
        let mut bits = 0;
        let add = |s: &mut Second| match outcome {
            Outcome::Live => s.live += 1,
            Outcome::Cached => s.cached += 1,
            Outcome::Stale => s.stale += 1,
            Outcome::Failed => s.failed += 1,
            Outcome::Skipped => s.skipped += 1,
        };
        for tap in active.iter().filter(|t| t.wants(partner, capability)) {
            bits |= 1 << tap.slot;
            tap.second(add);
            if tap.fault.was_on_at(started) {
                add(&mut tap.while_on.lock().unwrap_or_else(|p| p.into_inner()));
                // A stale answer is served because the partner failed: a failover to the
                // cache (a live one from another endpoint is seen in the partner stack).
                if outcome == Outcome::Stale && tap.onset().is_some() {
                    let _ = tap.stale.set(Instant::now());
                }
            }
        }
        bits
    }

    /// A frontend request answered with `status` whose sources touched the drills `bits`.
    pub fn request(&self, bits: u64, status: u16) {
        if bits == 0 {
            return;
        }
        for tap in self.active.load().iter() {
            if bits & (1 << tap.slot) != 0 {
                tap.second(|s| {
                    s.requests += 1;
                    if !(200..300).contains(&status) {
                        s.non_2xx += 1;
                    }
                });
            }
        }
    }
}
