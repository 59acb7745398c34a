//! The record cache: what a connector version answered for one normalized query, kept in
//! moka under a byte budget. Freshness is decided with the timestamps kept in each entry
//! (tokio time), never by moka's own clock:
//!
//! - before `fresh_until`: served as is (`cached`);
//! - before `revalidate_until` (stale-while-revalidate): served, and one background
//!   refresh is started;
//! - before `usable_until` (stale-if-error): served only if a fresh call fails (`stale`);
//! - after it: gone (moka evicts it then).
//!
//! Misses are coalesced: N concurrent identical misses make one partner call, which runs
//! as its own task, so it completes and fills the cache even when the requests that
//! started it have given up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use mallgate_connectors::spec::CachePolicy;
use mallgate_connectors::{Capability, ConnectorError};
use mallgate_schemas::{Product, Record, Warning};
use moka::Expiry;
use tokio::time::Instant;

use crate::FastHash;

/// `(connector, version, capability, normalized query)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub connector: Arc<str>,
    pub version: u32,
    pub capability: Capability,
    pub query: Arc<str>,
}

/// What a call gave, as cached: the records typed once, where they were mapped (their
/// JSON is not kept).
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub records: Vec<Record>,
    pub not_found: bool,
    pub warnings: Vec<Warning>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.records.iter().filter_map(Record::as_product)
    }

    /// What the records hold in memory, roughly.
    fn heap_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Record>()
            + self.records.iter().map(record_bytes).sum::<usize>()
    }
}

/// What a record holds beyond its own struct, roughly. Products are counted field by
/// field (they are most of the cache); the smaller records by their JSON text, which
/// bounds their strings.
fn record_bytes(record: &Record) -> usize {
    let text = match record {
        Record::Product(p) => return product_bytes(p) - std::mem::size_of::<Product>(),
        Record::InventoryLevel(r) => serde_json::to_vec(r),
        Record::Location(r) => serde_json::to_vec(r),
        Record::ShippingRate(r) => serde_json::to_vec(r),
        Record::Tracking(r) => serde_json::to_vec(r),
    };
    text.map_or(0, |t| t.len())
}

/// What a product holds in memory, roughly: its structs, strings and maps.
fn product_bytes(p: &Product) -> usize {
    const MAP_ENTRY: usize = 80;
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
    let map = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| MAP_ENTRY + k.capacity() + v.capacity())
            .sum::<usize>()
    };
    let provenance = |pr: &mallgate_schemas::Provenance| {
        std::mem::size_of_val(pr)
            + pr.partner_id.capacity()
            + pr.connector_id.capacity()
            + pr.source_ref.capacity()
            + pr.fetched_at.capacity()
            + text(&pr.as_of)
            + 64 * pr.warnings.len()
    };
    std::mem::size_of::<Product>()
        + p.product_id.capacity()
        + p.title.capacity()
        + text(&p.brand)
        + text(&p.description)
        + p.category
            .iter()
            .chain(&p.image_urls)
            .map(|s| 24 + s.capacity())
            .sum::<usize>()
        + map(&p.attributes)
        + provenance(&p.provenance)
        + p.variants
            .iter()
            .map(|v| {
                std::mem::size_of_val(v)
                    + v.variant_id.capacity()
                    + text(&v.gtin)
                    + text(&v.gtin_raw)
                    + text(&v.sku)
                    + text(&v.title)
                    + text(&v.image_url)
                    + map(&v.options)
                    + 128 * usize::from(v.weight.is_some() || v.dimensions.is_some())
                    + v.offers
                        .iter()
                        .map(|o| {
                            std::mem::size_of_val(o)
                                + o.offer_id.capacity()
                                + 64
                                + text(&o.url)
                                + provenance(&o.provenance)
                        })
                        .sum::<usize>()
            })
            .sum::<usize>()
}

/// A cached answer and its freshness.
#[derive(Debug)]
pub struct Entry {
    pub records: Arc<Records>,
    /// When the partner answered (RFC 3339, UTC).
    pub fetched_at: String,
    pub fetched: Instant,
    pub fresh_until: Instant,
    pub revalidate_until: Instant,
    pub usable_until: Instant,
    bytes: u32,
    refreshing: AtomicBool,
}

impl Entry {
    pub fn new(records: Records, policy: &CachePolicy) -> Self {
        let now = Instant::now();
        let bytes = records.heap_bytes() + std::mem::size_of::<Self>() + 256;
        let ttl = Duration::from_secs(u64::from(policy.ttl_s));
        let fresh_until = now + ttl;
        Self {
            records: Arc::new(records),
            fetched_at: jiff::Timestamp::now()
                .round(jiff::Unit::Millisecond)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            fetched: now,
            fresh_until,
            revalidate_until: fresh_until
                + Duration::from_secs(u64::from(policy.stale_while_revalidate_s)),
            usable_until: fresh_until
                + Duration::from_secs(u64::from(
                    policy.stale_if_error_s.max(policy.stale_while_revalidate_s),
                )),
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Claims the one background refresh of this entry; false if one is running or ran.
    pub fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }
}

/// How a lookup found the key.
#[derive(Debug, Clone)]
pub enum Lookup {
    Fresh(Arc<Entry>),
    /// Past its TTL, within stale-while-revalidate: serve and refresh in the background.
    Revalidate(Arc<Entry>),
    /// Past stale-while-revalidate: call the partner; serve this only if the call fails.
    StaleIfError(Arc<Entry>),
    Miss,
}

/// Why a coalesced call failed.
#[derive(Debug, Clone)]
pub struct CallFailure {
    pub error: Arc<ConnectorError>,
}

type Flight = Shared<BoxFuture<'static, Result<Arc<Entry>, CallFailure>>>;

struct EntryExpiry;

impl Expiry<CacheKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.usable_until.saturating_duration_since(Instant::now()))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.usable_until.saturating_duration_since(Instant::now()))
    }
}

/// Cache figures for status pages and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub revalidations: AtomicU64,
    pub stale_served: AtomicU64,
    pub misses: AtomicU64,
    /// Partner calls started (a coalesced miss counts once).
    pub calls: AtomicU64,
    /// Misses that joined a call already in flight.
    pub coalesced: AtomicU64,
}

/// The record cache.
pub struct RecordCache {
    entries: moka::future::Cache<CacheKey, Arc<Entry>, FastHash>,
    flights: Mutex<HashMap<CacheKey, Flight, FastHash>>,
    pub stats: CacheStats,
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish_non_exhaustive()
    }
}

impl RecordCache {
    pub fn new(max_bytes: u64) -> Arc<Self> {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &CacheKey, v: &Arc<Entry>| v.bytes)
            .expire_after(EntryExpiry)
            .build_with_hasher(FastHash::new());
        Arc::new(Self {
            entries,
            flights: Mutex::new(HashMap::with_hasher(FastHash::new())),
            stats: CacheStats::default(),
        })
    }

    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        let Some(entry) = self.entries.get(key).await else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        };
        let now = Instant::now();
        if now < entry.fresh_until {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            Lookup::Fresh(entry)
        } else if now < entry.revalidate_until {
            self.stats.revalidations.fetch_add(1, Ordering::Relaxed);
            Lookup::Revalidate(entry)
        } else if now < entry.usable_until {
            Lookup::StaleIfError(entry)
        } else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            Lookup::Miss
        }
    }

    /// The call for `key`: joins the one in flight, or starts `call` as a task that caches
    /// its success (never a failure) under `policy`. `not_found` answers are cached too.
    pub fn call(
        self: &Arc<Self>,
        key: CacheKey,
        policy: CachePolicy,
        call: BoxFuture<'static, Result<Records, ConnectorError>>,
    ) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(&key) {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            return flight.clone();
        }
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let cache = Arc::clone(self);
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let result = match call.await {
                Ok(records) => {
                    let entry = Arc::new(Entry::new(records, &policy));
                    cache
                        .entries
                        .insert(task_key.clone(), Arc::clone(&entry))
                        .await;
                    Ok(entry)
                }
                Err(error) => Err(CallFailure {
                    error: Arc::new(error),
                }),
            };
            cache
                .flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&task_key);
            result
        });
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                Err(CallFailure {
                    error: Arc::new(ConnectorError::Request {
                        reason: format!("the partner call task ended: {e}"),
                    }),
                })
            })
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        flight
    }

    pub fn note_stale_served(&self) {
        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops every entry (the admin purge).
    pub fn purge(&self) {
        self.entries.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// The entries' weight (their estimated bytes).
    pub fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }
}
