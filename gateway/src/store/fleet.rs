//! A replica's place in its fleet (DESIGN §6): a lease in etcd, and the replica's record
//! (its id, binary version, generation, the store revision it applied, the connector
//! versions it serves) at `<prefix>fleet/<id>`, attached to the lease. A replica that
//! stops, is killed or is cut off stops renewing: when its lease expires etcd deletes the
//! record, so `GET /admin/v1/fleet` lists the live replicas, and version drift across the
//! fleet is one look.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use tokio::time::Instant;

/// What a replica says about itself, read when it may have changed (JSON).
pub type Record = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// How often the record is looked at (and written when it changed).
const LOOK: Duration = Duration::from_millis(250);

/// The first and the longest wait before trying again after an error.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Holds the lease and keeps the record current, for as long as the runtime lives; after
/// an error (etcd down, the lease lost) it grants a new lease and writes the record again.
pub(super) async fn announce(mut client: Client, key: String, ttl_s: i64, record: Record) {
    let mut backoff = BACKOFF.0;
    loop {
        match hold(&mut client, &key, ttl_s, &record, &mut backoff).await {
            Ok(()) => tracing::warn!(
                target: "mallgate::store",
                replica = %key,
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
    key: &str,
    ttl_s: i64,
    record: &Record,
    backoff: &mut Duration,
) -> Result<(), etcd_client::Error> {
    let lease = client.lease_grant(ttl_s, None).await?.id();
    let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
    let beat = Duration::from_millis(u64::try_from(ttl_s).unwrap_or(1).max(1) * 1000 / 3);
    let mut next_beat = Instant::now() + beat;
    let mut written: Option<Vec<u8>> = None;
    loop {
        let now = record();
        // Empty: the replica is going away (its record is not rewritten).
        if !now.is_empty() && written.as_ref() != Some(&now) {
            let options = PutOptions::new().with_lease(lease);
            client.put(key, now.clone(), Some(options)).await?;
            written = Some(now);
            *backoff = BACKOFF.0;
        }
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
