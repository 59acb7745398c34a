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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use mallgate_connectors::runtime::stack::FleetShare;
use tokio::time::Instant;

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
        !self.in_fleet.load(Ordering::Acquire) || self.leader.load(Ordering::Acquire)
    }

    /// Whether it holds the fleet's election now (false without a fleet).
    pub fn elected(&self) -> bool {
        self.leader.load(Ordering::Acquire)
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
    view.in_fleet.store(true, Ordering::Release);
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

/// One lease: granted, renewed every third of its TTL, the record rewritten whenever it
/// changes. `Ok(())` when etcd says the lease is gone.
async fn hold(
    client: &mut Client,
    place: &Place,
    record: &Record,
    view: &FleetView,
    backoff: &mut Duration,
) -> Result<(), etcd_client::Error> {
    let ttl_s = place.ttl_s;
    let lease = client.lease_grant(ttl_s, None).await?.id();
    let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
    // The candidacy waits in etcd for as long as it takes; ended with the lease.
    let _candidacy = Candidacy(tokio::spawn(campaign(
        client.clone(),
        place.election.clone(),
        place.id.clone(),
        lease,
    )));
    let beat = Duration::from_millis(u64::try_from(ttl_s).unwrap_or(1).max(1) * 1000 / 3);
    let mut next_beat = Instant::now() + beat;
    let mut written: Option<Vec<u8>> = None;
    loop {
        let now = record();
        // Empty: the replica is going away (its record is not rewritten).
        if !now.is_empty() && written.as_ref() != Some(&now) {
            let options = PutOptions::new().with_lease(lease);
            client
                .put(place.key.as_str(), now.clone(), Some(options))
                .await?;
            written = Some(now);
            *backoff = BACKOFF.0;
        }
        look(client, place, lease, view).await?;
        if Instant::now() >= next_beat {
            keeper.keep_alive().await?;
            // A silent connection must not hold the renewal past the lease.
            let reply = tokio::time::timeout(beat, replies.message())
                .await
                .map_err(|_| etcd_client::Error::LeaseKeepAliveError("no answer".into()))??;
            match reply {
                Some(reply) if reply.ttl() > 0 => {}
                _ => return Ok(()),
            }
            next_beat = Instant::now() + beat;
        }
        tokio::time::sleep(LOOK.min(next_beat.saturating_duration_since(Instant::now()))).await;
    }
}

/// Counts the live replicas (their records) and asks who leads.
async fn look(
    client: &mut Client,
    place: &Place,
    lease: i64,
    view: &FleetView,
) -> Result<(), etcd_client::Error> {
    let options = GetOptions::new().with_prefix().with_count_only();
    let live = client
        .get(place.members.as_str(), Some(options))
        .await?
        .count();
    let live = u32::try_from(live).unwrap_or(u32::MAX);
    if live != view.share.replicas() && live > 0 {
        tracing::info!(
            target: "mallgate::store",
            replicas = live,
            "the fleet has {live} live replicas: each takes 1/{live} of every partner's limits"
        );
        view.share.set(live);
    }
    // "No leader" is an error too, and a normal one while the election is young.
    let leads = match client.leader(place.election.as_str()).await {
        Ok(reply) => reply.kv().is_some_and(|kv| kv.lease() == lease),
        Err(_) => false,
    };
    view.set_leader(leads);
    Ok(())
}

/// Campaigns until elected (each call is bounded by the client's timeout, and etcd
/// withdraws a timed-out attempt: it is simply made again).
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

/// Ends the campaign when the lease it runs under is given up.
struct Candidacy(tokio::task::JoinHandle<()>);

impl Drop for Candidacy {
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
