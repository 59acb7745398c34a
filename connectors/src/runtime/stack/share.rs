//! Fleet-wide admission (DESIGN §6): a partner's `rate_limit_rps` and `max_concurrency`
//! are the partner's limits for the whole fleet, not for each replica. Each replica takes
//! its share by the number of live replicas ([`FleetShare`], kept current by the fleet
//! store's leases): `rps / n` per second with a burst of `burst / n` (rounded up, at least
//! one), and `max_concurrency / n` slots (rounded up, at least one). A change of `n` is
//! picked up by the next call: the rate bucket is rebuilt for the new share, and slots are
//! added at once or retired as they come back (a call in flight is never cut).
//!
//! One replica (no fleet store) is a fleet of one: the limits as written.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::Semaphore;

use super::admission::{Limiter, limiter};

/// The number of live replicas sharing every partner's limits, as this replica sees it;
/// shared by every connector of the gateway ([`crate::runtime::RuntimeConfig`]).
#[derive(Debug, Clone)]
pub struct FleetShare(Arc<AtomicU32>);

impl Default for FleetShare {
    fn default() -> Self {
        Self(Arc::new(AtomicU32::new(1)))
    }
}

impl FleetShare {
    /// The replicas sharing the limits (at least one: this one).
    pub fn replicas(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    /// `n` live replicas now (0 is taken as one: a replica always counts itself).
    pub fn set(&self, n: u32) {
        self.0.store(n.max(1), Ordering::Relaxed);
    }
}

/// `whole / n`, rounded up, at least one.
fn part(whole: u32, n: u32) -> u32 {
    whole.div_ceil(n.max(1)).max(1)
}

/// A connector's rate bucket for this replica's share of the partner's rate.
#[derive(Debug)]
pub(super) struct RateShare {
    rps: Option<f64>,
    burst: Option<u32>,
    fleet: FleetShare,
    /// The bucket and the fleet size it was built for.
    bucket: ArcSwapOption<(u32, Arc<Limiter>)>,
}

impl RateShare {
    pub(super) fn new(rps: Option<f64>, burst: Option<u32>, fleet: FleetShare) -> Self {
        let share = Self {
            // A rate the limiter cannot take is no limit (as `admission::limiter` says).
            rps: rps.filter(|r| r.is_finite() && *r > 0.0),
            burst,
            fleet,
            bucket: ArcSwapOption::empty(),
        };
        share.rebuild(share.fleet.replicas());
        share
    }

    /// The bucket of this replica's share now (`None`: the connector has no rate limit).
    pub(super) fn limiter(&self) -> Option<Arc<Limiter>> {
        let n = self.fleet.replicas();
        let current = self.bucket.load();
        match current.as_deref() {
            Some((built_for, limiter)) if *built_for == n => Some(Arc::clone(limiter)),
            None if self.rps.is_none() => None,
            _ => self.rebuild(n),
        }
    }

    /// This replica's share: `rps / n`, `burst / n` (default one second of the share).
    pub(super) fn rps(&self) -> Option<f64> {
        self.rps.map(|r| r / f64::from(self.fleet.replicas()))
    }

    fn rebuild(&self, n: u32) -> Option<Arc<Limiter>> {
        let rps = self.rps? / f64::from(n);
        let burst = self.burst.map(|b| part(b, n));
        let limiter = Arc::new(limiter(Some(rps), burst)?);
        self.bucket.store(Some(Arc::new((n, Arc::clone(&limiter)))));
        Some(limiter)
    }
}

/// A connector's concurrency slots for this replica's share of `max_concurrency`.
#[derive(Debug)]
pub(super) struct SlotShare {
    pub(super) slots: Arc<Semaphore>,
    whole: u32,
    fleet: FleetShare,
    /// The share the semaphore holds (or is on its way to), and the permits still to
    /// retire (they were in use when the share shrank).
    sized: Mutex<(u32, u32)>,
    /// The fleet size `sized` is for (a lock-free look on every call).
    sized_for: AtomicU32,
}

impl SlotShare {
    pub(super) fn new(whole: u32, fleet: FleetShare) -> Self {
        let n = fleet.replicas();
        let size = part(whole, n);
        Self {
            slots: Arc::new(Semaphore::new(size as usize)),
            whole,
            fleet,
            sized: Mutex::new((size, 0)),
            sized_for: AtomicU32::new(n),
        }
    }

    /// This replica's share of slots now.
    pub(super) fn size(&self) -> u32 {
        self.sized.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Brings the semaphore to this replica's share when the fleet changed size (or
    /// retires permits still owed); one atomic load otherwise.
    pub(super) fn resize(&self) {
        let n = self.fleet.replicas();
        if self.sized_for.load(Ordering::Acquire) == n {
            return;
        }
        let mut sized = self.sized.lock().unwrap_or_else(|p| p.into_inner());
        let (size, owed) = &mut *sized;
        let want = part(self.whole, n);
        if want > *size {
            // Owed permits are forgiven first, then new ones added.
            let grow = want - *size;
            let forgiven = grow.min(*owed);
            *owed -= forgiven;
            self.slots.add_permits((grow - forgiven) as usize);
        } else {
            *owed += *size - want;
        }
        *size = want;
        if *owed > 0 {
            let retired = self.slots.forget_permits(*owed as usize);
            *owed -= u32::try_from(retired).unwrap_or(*owed);
        }
        // Settled only when nothing is owed: until then every call tries to retire more.
        if *owed == 0 {
            self.sized_for.store(n, Ordering::Release);
        } else {
            self.sized_for.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_the_whole_divided_and_rounded_up() {
        assert_eq!(part(10, 3), 4);
        assert_eq!(part(10, 1), 10);
        assert_eq!(part(1, 5), 1);
        assert_eq!(part(0, 2), 1);
    }

    #[tokio::test]
    async fn slots_follow_the_fleet_and_calls_in_flight_are_not_cut() {
        let fleet = FleetShare::default();
        let share = SlotShare::new(6, fleet.clone());
        assert_eq!(share.slots.available_permits(), 6);
        let held = Arc::clone(&share.slots).acquire_many_owned(5).await.ok();
        fleet.set(3);
        share.resize();
        // Share 2: five are in use, the one free is retired now, three more when back.
        assert_eq!((share.size(), share.slots.available_permits()), (2, 0));
        drop(held);
        share.resize();
        assert_eq!(share.slots.available_permits(), 2);
        fleet.set(2);
        share.resize();
        assert_eq!((share.size(), share.slots.available_permits()), (3, 3));
        fleet.set(1);
        share.resize();
        assert_eq!(share.slots.available_permits(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_bucket_is_rebuilt_for_the_share() {
        let fleet = FleetShare::default();
        let share = RateShare::new(Some(30.0), None, fleet.clone());
        let take_all = |limiter: &Limiter| {
            (0..1000)
                .take_while(|_| super::super::admission::try_take(limiter).is_ok())
                .count()
        };
        let one = share.limiter().expect("a limit");
        assert_eq!(
            take_all(&one),
            30,
            "a fleet of one: one second of the whole rate"
        );
        fleet.set(3);
        let third = share.limiter().expect("a limit");
        assert_eq!(take_all(&third), 10, "a third of the rate and its burst");
        assert_eq!(share.rps(), Some(10.0));
        assert!(RateShare::new(None, None, fleet).limiter().is_none());
    }
}
