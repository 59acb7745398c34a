//! A replica's place in its fleet (DESIGN §6): a lease in etcd, and the replica's record
//! (its id, binary version, generation, the store revision it applied, the connector
//! versions it serves) at `<prefix>fleet/<id>`, attached to the lease. A replica that
//! stops, is killed or is cut off stops renewing: when its lease expires etcd deletes the
//! record, so `GET /admin/v1/fleet` lists the live replicas, and version drift across the
//! fleet is one look.

//!
//! The same lease is this replica's candidacy in the fleet's election (etcd's election
//! API, `<prefix>election/canary-judge`): the leader judges the canaries on the figures of
//! every replica, and when it dies its lease, and so its candidacy, goes with it. The
//! number of live leases is every replica's divisor of the partners' limits
//! ([`FleetShare`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use mallgate_connectors::runtime::stack::FleetShare;

/// What a replica says about itself, read when it may have changed (JSON).
pub type Record = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// What this replica knows of its fleet: how many replicas share the partners' limits,
/// and whether it leads.
#[derive(Debug, Default)]
pub struct FleetView {
    /// Live replicas, counted by their leases (kept when etcd cannot be asked).
    pub share: FleetShare,
    /// Whether this replica won the election (and still holds its lease).
    leader: AtomicBool,
    /// Whether this replica is part of a fleet at all (it announced itself).
    in_fleet: AtomicBool,
    /// Until when its lease is surely alive (renewed lately).
    fresh: Arc<Fresh>,
}

/// Until when a lease is surely alive, in milliseconds since this process's clock epoch.
#[derive(Debug, Default)]
pub(super) struct Fresh(AtomicU64);

fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Fresh {
    fn until(&self, from_now: Duration) {
        let ms = u64::try_from(from_now.as_millis()).unwrap_or(u64::MAX);
        self.0
            .store(clock_ms().saturating_add(ms), Ordering::Release);
    }

    fn now(&self) -> bool {
        clock_ms() < self.0.load(Ordering::Acquire)
    }
}

impl FleetView {
    pub fn new(share: FleetShare) -> Self {
        Self {
            share,
            ..Self::default()
        }
    }

    /// Whether this replica makes the fleet's decisions: it won the election, or there is
    /// no fleet (one node is its own leader).
    pub fn leads(&self) -> bool {
        !self.in_fleet.load(Ordering::Acquire) || self.elected()
    }

    /// Whether it holds the fleet's election now (false without a fleet): it won, and its
    /// lease was renewed lately (a lease that may have lapsed leads no more).
    pub fn elected(&self) -> bool {
        self.leader.load(Ordering::Acquire) && self.fresh.now()
    }

    /// This replica is part of a fleet (set before its lease is first held: until then
    /// it does not lead).
    pub(super) fn join(&self) {
        self.in_fleet.store(true, Ordering::Release);
    }

    fn renewed(&self, for_how_long: Duration) {
        self.fresh.until(for_how_long);
    }

    fn clone_fresh(&self) -> Arc<Fresh> {
        Arc::clone(&self.fresh)
    }

    fn set_leader(&self, leads: bool) {
        if self.leader.swap(leads, Ordering::AcqRel) != leads {
            tracing::info!(
                target: "mallgate::store",
                leader = leads,
                "{}",
                if leads {
                    "this replica leads the fleet (it judges the canaries)"
                } else {
                    "this replica no longer leads the fleet"
                }
            );
        }
    }
}

/// Where a replica announces itself: its key, the fleet's and the election's prefixes.
pub(super) struct Place {
    /// The replica's id (its value in the election).
    pub id: String,
    /// The client campaigns go through: without a per-call timeout.
    pub campaigner: Client,
    pub key: String,
    pub members: String,
    pub election: String,
    pub ttl_s: i64,
}

/// How often the record is looked at (and written when it changed).
const LOOK: Duration = Duration::from_millis(250);

/// The first and the longest wait before trying again after an error.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Holds the lease and keeps the record current, for as long as the runtime lives; after
/// an error (etcd down, the lease lost) it grants a new lease and writes the record again.
pub(super) async fn announce(
    mut client: Client,
    place: Place,
    record: Record,
    view: Arc<FleetView>,
) {
    view.join();
    let mut backoff = BACKOFF.0;
    loop {
        let held = hold(&mut client, &place, &record, &view, &mut backoff).await;
        // Whatever ended the lease ended the candidacy too.
        view.set_leader(false);
        match held {
            Ok(()) => tracing::warn!(
                target: "mallgate::store",
                replica = %place.key,
                "this replica's lease expired; joining the fleet again"
            ),
            Err(e) => tracing::warn!(
                target: "mallgate::store",
                error = %e,
                "this replica cannot hold its fleet lease; retrying"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// One lease: granted, renewed every third of its TTL by a task of its own (a slow put
/// or look never delays a renewal), the record rewritten whenever it changes. `Ok(())`
/// when etcd says the lease is gone. On the way out the lease is revoked (best effort), so
/// the record and the candidacy go at once rather than at the TTL.
async fn hold(
    client: &mut Client,
    place: &Place,
    record: &Record,
    view: &FleetView,
    backoff: &mut Duration,
) -> Result<(), etcd_client::Error> {
    let ttl_s = place.ttl_s;
    let lease = client.lease_grant(ttl_s, None).await?.id();
    let (keeper, replies) = client.lease_keep_alive(lease).await?;
    let beat = Duration::from_millis(u64::try_from(ttl_s).unwrap_or(1).max(1) * 1000 / 3);
    // Fresh until two beats after a renewal: a renewal's reply comes after etcd renewed,
    // so the lease is surely alive until then.
    view.renewed(beat * 2);
    let mut renewal = Task(tokio::spawn(renew(
        keeper,
        replies,
        beat,
        view.clone_fresh(),
        beat * 2,
    )));
    // The candidacy waits in etcd for as long as it takes (on the client without a
    // per-call timeout); ended with the lease.
    let _candidacy = Task(tokio::spawn(campaign(
        place.campaigner.clone(),
        place.election.clone(),
        place.id.clone(),
        lease,
    )));
    let mut written: Option<Vec<u8>> = None;
    let held = loop {
        let now = record();
        // Empty: the replica is going away (its record is not rewritten).
        if !now.is_empty() && written.as_ref() != Some(&now) {
            let options = PutOptions::new().with_lease(lease);
            if let Err(e) = client
                .put(place.key.as_str(), now.clone(), Some(options))
                .await
            {
                break Err(e);
            }
            written = Some(now);
            *backoff = BACKOFF.0;
        }
        if let Err(e) = look(client, place, lease, view).await {
            break Err(e);
        }
        tokio::select! {
            ended = &mut renewal.0 => break ended.unwrap_or(Ok(())),
            () = tokio::time::sleep(LOOK) => {}
        }
    };
    view.set_leader(false);
    let _ = tokio::time::timeout(beat, client.lease_revoke(lease)).await;
    held
}

/// Renews `lease` every `beat`, noting each renewal in `fresh`; ends with `Ok(())` when
/// etcd says the lease is gone, or the error that stopped it.
async fn renew(
    mut keeper: etcd_client::LeaseKeeper,
    mut replies: etcd_client::LeaseKeepAliveStream,
    beat: Duration,
    fresh: Arc<Fresh>,
    for_how_long: Duration,
) -> Result<(), etcd_client::Error> {
    loop {
        tokio::time::sleep(beat).await;
        keeper.keep_alive().await?;
        // A silent connection must not hold the renewal past the lease.
        let reply = tokio::time::timeout(beat, replies.message())
            .await
            .map_err(|_| etcd_client::Error::LeaseKeepAliveError("no answer".into()))??;
        match reply {
            Some(reply) if reply.ttl() > 0 => fresh.until(for_how_long),
            _ => return Ok(()),
        }
    }
}

/// Counts the live replicas (their records) and this one's rank among them, and asks
/// who leads.
async fn look(
    client: &mut Client,
    place: &Place,
    lease: i64,
    view: &FleetView,
) -> Result<(), etcd_client::Error> {
    let options = GetOptions::new().with_prefix().with_keys_only();
    let reply = client.get(place.members.as_str(), Some(options)).await?;
    let mut keys: Vec<&str> = reply
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok())
        .collect();
    keys.sort_unstable();
    // Not among them yet (its record not written): it counts itself, last.
    let (live, rank) = match keys.iter().position(|k| *k == place.key) {
        Some(rank) => (keys.len(), rank),
        None => (keys.len() + 1, keys.len()),
    };
    let live = u32::try_from(live).unwrap_or(u32::MAX);
    let rank = u32::try_from(rank).unwrap_or(0);
    if live != view.share.replicas() {
        tracing::info!(
            target: "mallgate::store",
            replicas = live,
            "the fleet has {live} live replicas: each takes its share of every partner's limits"
        );
    }
    view.share.set_rank(live, rank);
    // "No leader" is an error too, and a normal one while the election is young.
    let leads = match client.leader(place.election.as_str()).await {
        Ok(reply) => reply.kv().is_some_and(|kv| kv.lease() == lease),
        Err(_) => false,
    };
    view.set_leader(leads);
    Ok(())
}

/// Campaigns until elected. `client` has no per-call timeout (a campaign waits for as
/// long as another replica leads); a dead connection is found by HTTP/2 keep-alive, and
/// the attempt is made again.
async fn campaign(mut client: Client, election: String, id: String, lease: i64) {
    loop {
        match client
            .campaign(election.as_str(), id.as_bytes().to_vec(), lease)
            .await
        {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(LOOK).await,
        }
    }
}

/// A task of the lease, aborted when the lease is given up.
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The records of every live replica under `prefix`, by key.
pub(super) async fn members(
    mut client: Client,
    prefix: String,
) -> Result<Vec<Vec<u8>>, etcd_client::Error> {
    let reply = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(reply.kvs().iter().map(|kv| kv.value().to_vec()).collect())
}
