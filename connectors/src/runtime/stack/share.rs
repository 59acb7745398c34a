//! Fleet-wide admission (DESIGN §6): a partner's `rate_limit_rps` and `max_concurrency`
//! are the partner's limits for the whole fleet, not for each replica. Each replica takes
//! its share by the number of live replicas and its rank among them ([`FleetShare`], kept
//! current by the fleet store's leases): `rps / n` per second; the burst and
//! `max_concurrency` divided by `n`, the remainder going one each to the first replicas
//! by rank, so the shares add up to the whole. A replica always keeps at least one call
//! and one slot (it must be able to serve at all): only a limit smaller than the fleet is
//! exceeded, by one per replica past it. A change is picked up by the next call: the
//! rate bucket is rebuilt for the new share, and slots are added at once or retired as
//! they come back (a call in flight is never cut).
//!
//! One replica (no fleet store) is a fleet of one: the limits as written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::Semaphore;

use super::admission::{Limiter, limiter};

/// The number of live replicas sharing every partner's limits, and this replica's rank
/// among them (0 first), as this replica sees it; shared by every connector of the
/// gateway ([`crate::runtime::RuntimeConfig`]).
#[derive(Debug, Clone)]
pub struct FleetShare(Arc<AtomicU64>);

impl Default for FleetShare {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(pack(1, 0))))
    }
}

fn pack(n: u32, rank: u32) -> u64 {
    let n = n.max(1);
    (u64::from(n) << 32) | u64::from(rank.min(n - 1))
}

fn unpack(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, packed as u32)
}

impl FleetShare {
    /// The replicas sharing the limits (at least one: this one).
    pub fn replicas(&self) -> u32 {
        unpack(self.0.load(Ordering::Relaxed)).0.max(1)
    }

    /// `n` live replicas now, this one first by rank (0 is taken as one).
    pub fn set(&self, n: u32) {
        self.set_rank(n, 0);
    }

    /// `n` live replicas now, this one `rank`-th (from 0).
    pub fn set_rank(&self, n: u32, rank: u32) {
        self.0.store(pack(n, rank), Ordering::Relaxed);
    }

    /// The fleet's size and this replica's rank, as one value that changes when either
    /// does.
    fn packed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The `rank`-th of `n` parts of `whole`: the parts add up to `whole`, the remainder going
/// to the first ranks; at least one.
fn part(whole: u32, packed: u64) -> u32 {
    let (n, rank) = unpack(packed);
    let n = n.max(1);
    (whole / n + u32::from(rank < whole % n)).max(1)
}

/// A connector's rate bucket for this replica's share of the partner's rate.
#[derive(Debug)]
pub(super) struct RateShare {
    rps: Option<f64>,
    burst: Option<u32>,
    fleet: FleetShare,
    /// The bucket and the fleet (size and rank, packed) it was built for.
    bucket: ArcSwapOption<(u64, Arc<Limiter>)>,
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
        share.rebuild(share.fleet.packed());
        share
    }

    /// The bucket of this replica's share now (`None`: the connector has no rate limit).
    pub(super) fn limiter(&self) -> Option<Arc<Limiter>> {
        let packed = self.fleet.packed();
        let current = self.bucket.load();
        match current.as_deref() {
            Some((built_for, limiter)) if *built_for == packed => Some(Arc::clone(limiter)),
            None if self.rps.is_none() => None,
            _ => self.rebuild(packed),
        }
    }

    /// This replica's share: `rps / n`, `burst / n` (default one second of the share).
    pub(super) fn rps(&self) -> Option<f64> {
        self.rps.map(|r| r / f64::from(self.fleet.replicas()))
    }

    /// A bucket for `packed`; when calls race to build it, the first one stored is the one
    /// every caller uses (one burst, not one per caller).
    fn rebuild(&self, packed: u64) -> Option<Arc<Limiter>> {
        let whole = self.rps?;
        let rps = whole / f64::from(unpack(packed).0.max(1));
        // The burst: as written, or one second of the whole rate; divided like slots.
        let burst = part(
            self.burst
                .unwrap_or(whole.ceil().min(f64::from(u32::MAX)) as u32),
            packed,
        );
        let built = Arc::new((packed, Arc::new(limiter(Some(rps), Some(burst))?)));
        let seen = self.bucket.load_full();
        if seen.as_ref().is_some_and(|b| b.0 == packed) {
            return seen.map(|b| Arc::clone(&b.1));
        }
        let previous = self
            .bucket
            .compare_and_swap(&seen, Some(Arc::clone(&built)));
        let ours = match (&*previous, &seen) {
            (Some(p), Some(s)) => Arc::ptr_eq(p, s),
            (None, None) => true,
            _ => false,
        };
        if ours {
            return Some(Arc::clone(&built.1));
        }
        // Another call stored one first: use it if it is for this fleet.
        match self.bucket.load_full() {
            Some(b) if b.0 == packed => Some(Arc::clone(&b.1)),
            _ => Some(Arc::clone(&built.1)),
        }
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
    /// The fleet (size and rank, packed) `sized` is for (a lock-free look on every call;
    /// 0: permits are still owed).
    sized_for: AtomicU64,
}

impl SlotShare {
    pub(super) fn new(whole: u32, fleet: FleetShare) -> Self {
        let packed = fleet.packed();
        let size = part(whole, packed);
        Self {
            slots: Arc::new(Semaphore::new(size as usize)),
            whole,
            fleet,
            sized: Mutex::new((size, 0)),
            sized_for: AtomicU64::new(packed),
        }
    }

    /// This replica's share of slots now.
    pub(super) fn size(&self) -> u32 {
        self.sized.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Brings the semaphore to this replica's share when the fleet changed size (or
    /// retires permits still owed); one atomic load otherwise.
    pub(super) fn resize(&self) {
        let packed = self.fleet.packed();
        if self.sized_for.load(Ordering::Acquire) == packed {
            return;
        }
        let mut sized = self.sized.lock().unwrap_or_else(|p| p.into_inner());
        let (size, owed) = &mut *sized;
        let want = part(self.whole, packed);
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
            self.sized_for.store(packed, Ordering::Release);
        } else {
            self.sized_for.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_whole() {
        let parts = |whole, n| (0..n).map(|r| part(whole, pack(n, r))).collect::<Vec<_>>();
        assert_eq!(parts(10, 3), vec![4, 3, 3]);
        assert_eq!(parts(10, 1), vec![10]);
        assert_eq!(parts(20, 3).iter().sum::<u32>(), 20);
        // A limit smaller than the fleet: each replica keeps one.
        assert_eq!(parts(2, 3), vec![1, 1, 1]);
        assert_eq!(part(0, pack(2, 0)), 1);
        // A rank past the fleet is the last one.
        assert_eq!(unpack(pack(3, 7)), (3, 2));
    }

    #[tokio::test]
    async fn slots_follow_the_fleet_and_calls_in_flight_are_not_cut() {
        let fleet = FleetShare::default();
        let share = SlotShare::new(6, fleet.clone());
        assert_eq!(share.slots.available_permits(), 6);
        let held = Arc::clone(&share.slots).acquire_many_owned(5).await.ok();
        fleet.set_rank(3, 2);
        share.resize();
        // Share 2 (6 / 3, last rank): five are in use, the one free is retired now, three
        // more when back.
        assert_eq!((share.size(), share.slots.available_permits()), (2, 0));
        drop(held);
        share.resize();
        assert_eq!(share.slots.available_permits(), 2);
        fleet.set_rank(4, 0);
        share.resize();
        // 6 / 4: the first rank takes one of the remainder.
        assert_eq!((share.size(), share.slots.available_permits()), (2, 2));
        fleet.set_rank(2, 1);
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
        // The same bucket until the fleet changes: no fresh burst per caller.
        assert!(Arc::ptr_eq(&third, &share.limiter().expect("a limit")));
        assert_eq!(take_all(&share.limiter().expect("a limit")), 0);
        let bursts: u32 = (0..4)
            .map(|rank| {
                fleet.set_rank(4, rank);
                take_all(&share.limiter().expect("a limit")) as u32
            })
            .sum();
        assert_eq!(bursts, 30, "four replicas' bursts add up to the whole");
        assert!(RateShare::new(None, None, fleet).limiter().is_none());
    }
}
