//! `GET /admin/v1/status`: the serving set (each connector's endpoints, guardrails and token
//! requests), the canaries beside it, the cache's figures, and what failed in the store.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::Admin;
use crate::api::Response;
use crate::problem::ApiError;

impl Admin {
    pub(super) fn status(&self) -> Result<Response, ApiError> {
        let snapshot = self.api.registry.load();
        let connectors: Vec<Value> = snapshot
            .connectors
            .iter()
            .map(|c| {
                let endpoints: Vec<_> = c
                    .connector
                    .routes()
                    .iter()
                    .map(|r| r.state.report(r.priority, r.weight, true))
                    .collect();
                json!({
                    "id": c.id(),
                    "partner": c.partner(),
                    "version": c.version(),
                    "source": c.source,
                    "endpoints": endpoints,
                    "guardrails": c.connector.counters(),
                    "token_requests": c.connector.resources().token_requests(),
                })
            })
            .collect();
        let canaries: Vec<Value> = snapshot
            .canaries
            .iter()
            .map(|k| {
                json!({"id": k.live.id(), "version": k.live.version(), "percent": k.percent,
                       "stats": k.live.stats.get(),
                       "active_stats": snapshot.connectors.iter().find(|c| c.id() == k.live.id())
                            .map(|c| c.stats.get())})
            })
            .collect();
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
                "store": self.health.view(),
            }),
        )
    }
}
