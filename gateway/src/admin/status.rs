//! `GET /admin/v1/status`: the serving set (each connector's endpoints, guardrails and token
//! requests), the canaries beside it, the cache's figures, and what failed in the store.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::Admin;
use crate::api::{Response, to_value};
use crate::problem::ApiError;

impl Admin {
    pub(super) fn status(&self) -> Result<Response, ApiError> {
        let snapshot = self.api.registry.load();
        let mut connectors = Vec::new();
        for c in &snapshot.connectors {
            let endpoints: Vec<_> = c
                .connector
                .routes()
                .iter()
                .map(|r| r.state.report(r.priority, r.weight, true))
                .collect();
            connectors.push(json!({
                "id": c.id(),
                "partner": c.partner(),
                "version": c.version(),
                "source": c.source,
                "endpoints": to_value(&endpoints)?,
                "guardrails": to_value(c.connector.counters())?,
                "token_requests": c.connector.resources().token_requests(),
                "missing_secrets": self.missing_secrets(c.spec()).into_iter().map(|(_, n)| format!("missing secret {n}")).collect::<Vec<_>>(),
            }));
        }
        let mut canaries = Vec::new();
        for k in &snapshot.canaries {
            let active = snapshot
                .connectors
                .iter()
                .find(|c| c.id() == k.live.id())
                .map(|c| c.stats.get());
            canaries.push(json!({
                "id": k.live.id(), "version": k.live.version(), "percent": k.percent,
                "stats": to_value(&k.live.stats.get())?,
                "active_stats": to_value(&active)?,
            }));
        }
        let cache = &self.api.cache.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Response::json(
            200,
            &json!({
                "generation": snapshot.generation,
                "connectors": connectors,
                "canaries": canaries,
                "cache": {
                    "entries": self.api.cache.entry_count(),
                    "hits": load(&cache.hits),
                    "misses": load(&cache.misses),
                    "revalidations": load(&cache.revalidations),
                    "stale_served": load(&cache.stale_served),
                    "calls": load(&cache.calls),
                    "coalesced": load(&cache.coalesced),
                },
                // Store and audit writes that failed since startup (each was the caller's
                // 500, or counted here when the caller's answer was a refusal).
                "store": to_value(&self.health.view())?,
            }),
        )
    }
}
