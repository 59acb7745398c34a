//! Open connections of a listener, bounded in total and per client address.
//!
//! Every accepted connection takes a slot for its whole life (all its keep-alive requests).
//! A connection is *waiting* while it has no request in progress (idle between requests,
//! or still sending a request head) and *busy* while a request is answered. When a new
//! connection finds the table full — in total, or for its client address — the connection
//! that has been waiting longest (the oldest idle one, or the slowest head) is told to
//! close, and the new one takes its place; a busy connection is never cut. When every
//! connection is busy, the new one is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::config::ConnectionsConfig;

tokio::task_local! {
    /// The slot of the connection this task serves.
    static SLOT: Arc<Slot>;
}

/// One open connection.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    ip: Option<IpAddr>,
    /// Since when it waits for a request (`None`: a request is in progress).
    waiting_since: Mutex<Option<Instant>>,
    /// Told to close by a newcomer.
    evict: Notify,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<u64, Arc<Slot>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// The table of one listener.
#[derive(Debug)]
pub struct Connections {
    config: ConnectionsConfig,
    table: Mutex<Table>,
    next: AtomicU64,
    refused_total: AtomicU64,
    evicted_total: AtomicU64,
}

impl Connections {
    pub fn new(config: ConnectionsConfig) -> Self {
        Self {
            config,
            table: Mutex::new(Table::default()),
            next: AtomicU64::new(1),
            refused_total: AtomicU64::new(0),
            evicted_total: AtomicU64::new(0),
        }
    }

    /// A slot for a new connection from `ip`, evicting the longest-waiting connection
    /// (of that address when the address is at its cap) if the table is full; `None` when
    /// every candidate is busy.
    fn admit(&self, ip: Option<IpAddr>) -> Option<Arc<Slot>> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let ip_full = ip.is_some_and(|ip| {
            table.per_ip.get(&ip).copied().unwrap_or(0) >= self.config.max_per_client
        });
        if ip_full || table.open.len() >= self.config.max_total {
            let victim = table
                .open
                .values()
                .filter(|s| !ip_full || s.ip == ip)
                .filter_map(|s| {
                    let since = *s.waiting_since.lock().unwrap_or_else(|p| p.into_inner());
                    since.map(|at| (at, s))
                })
                .min_by_key(|(at, _)| *at)
                .map(|(_, s)| Arc::clone(s));
            let Some(victim) = victim else {
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            // It goes now (it stops waiting for its head or its next request), and its
            // place is the newcomer's.
            Self::remove(&mut table, victim.id);
            victim.evict.notify_one();
            self.evicted_total.fetch_add(1, Ordering::Relaxed);
        }
        let slot = Arc::new(Slot {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            ip,
            waiting_since: Mutex::new(Some(Instant::now())),
            evict: Notify::new(),
        });
        table.open.insert(slot.id, Arc::clone(&slot));
        if let Some(ip) = ip {
            *table.per_ip.entry(ip).or_default() += 1;
        }
        Some(slot)
    }

    fn remove(table: &mut Table, id: u64) {
        if let Some(slot) = table.open.remove(&id)
            && let Some(ip) = slot.ip
            && let Some(n) = table.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                table.per_ip.remove(&ip);
            }
        }
    }

    fn release(&self, slot: &Slot) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        Self::remove(&mut table, slot.id);
    }

    /// (open, refused, evicted), for the status page.
    pub fn counts(&self) -> (usize, u64, u64) {
        let open = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .len();
        (
            open,
            self.refused_total.load(Ordering::Relaxed),
            self.evicted_total.load(Ordering::Relaxed),
        )
    }
}

/// Waits for `read` (a request head) unless this connection is evicted first: `None` then.
/// The connection stops waiting when `read` is done.
pub async fn unless_evicted<T>(read: impl std::future::Future<Output = T>) -> Option<T> {
    let out = evictable(read).await;
    let _ = SLOT.try_with(|slot| {
        *slot.waiting_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    });
    out
}

/// Waits for `read` unless this connection is evicted first, and leaves it waiting: an
/// idle connection's wait for its next request's first byte.
pub async fn evictable<T>(read: impl std::future::Future<Output = T>) -> Option<T> {
    let Ok(slot) = SLOT.try_with(Arc::clone) else {
        return Some(read.await);
    };
    slot.waiting_since
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(Instant::now);
    tokio::select! {
        out = read => Some(out),
        () = slot.evict.notified() => None,
    }
}

/// Marks this connection waiting again (its answer is written).
pub fn waiting() {
    let _ = SLOT.try_with(|slot| {
        *slot.waiting_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    });
}

impl Connections {
    /// Runs `serve` (a connection's whole life) in a slot of the table, or not at all
    /// (`None`) when every slot is busy.
    pub async fn within<T>(
        &self,
        ip: Option<IpAddr>,
        serve: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let slot = self.admit(ip)?;
        let out = SLOT.scope(Arc::clone(&slot), serve).await;
        self.release(&slot);
        Some(out)
    }
}
