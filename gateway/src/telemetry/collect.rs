//! The figures read at scrape time: the gateway keeps them anyway (breakers, ejections,
//! endpoint figures, guardrails, the cache, versions, the mapping pools, connections).

use std::collections::HashSet;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as Families;

use mallgate_connectors::runtime::resilience::{BreakerState, EndpointState};
use mallgate_connectors::runtime::stack::GuardrailFigures;

use crate::cache::RecordCache;
use crate::connections::Connections;
use crate::registry::Registry;

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct State {
    pub registry: Arc<Registry>,
    pub cache: Arc<RecordCache>,
    pub connections: Option<Arc<Connections>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    partner: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    partner: String,
    endpoint: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabels {
    partner: String,
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Debug)]
struct Scrape(State);

pub(super) fn encode(state: &State, text: &mut String) -> Result<(), std::fmt::Error> {
    let mut families = Families::default();
    families.register_collector(Box::new(Scrape(state.clone())));
    prometheus_client::encoding::prometheus_text::encode(text, &families)
}

/// Writes one family: its descriptor, then each label set's value.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn one<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: M,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    value.encode(metric)
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.registry.load();
        use MetricType::{Counter, Gauge};
        let version = VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        };
        family(
            &mut encoder,
            "mallgate_build_info",
            "The running Mallgate's version",
            Gauge,
            [(version, ConstGauge::new(1i64))],
        )?;
        one(
            &mut encoder,
            "mallgate_registry_generation",
            "The generation of the serving set (grows by one at every swap)",
            Gauge,
            gauge(snapshot.generation),
        )?;
        // Each connector's active and canary version: version drift across a fleet is one
        // query (`count by (connector) (count by (connector, version) (...))`).
        let active = snapshot.connectors.iter().map(|c| {
            (
                ConnectorLabels {
                    partner: c.partner().to_owned(),
                    connector: c.id().to_owned(),
                },
                gauge(u64::from(c.version())),
            )
        });
        family(
            &mut encoder,
            "mallgate_connector_active_version",
            "The active version of each connector",
            Gauge,
            active,
        )?;
        let canaries = snapshot.canaries.iter().map(|c| {
            (
                ConnectorLabels {
                    partner: c.live.partner().to_owned(),
                    connector: c.live.id().to_owned(),
                },
                gauge(u64::from(c.live.version())),
            )
        });
        family(
            &mut encoder,
            "mallgate_connector_canary_version",
            "The version on canary, per connector that has one",
            Gauge,
            canaries,
        )?;
        fleet(&mut encoder, &self.0.registry)?;
        endpoints(&mut encoder, &snapshot)?;
        guardrails(&mut encoder, &snapshot)?;
        cache(&mut encoder, &self.0.cache)?;
        pools(&mut encoder, &self.0.registry)?;
        if let Some(connections) = &self.0.connections {
            let (open, refused, evicted) = connections.counts();
            one(
                &mut encoder,
                "mallgate_connections_open",
                "Open connections of the public listener",
                Gauge,
                gauge(open as u64),
            )?;
            one(
                &mut encoder,
                "mallgate_connections_refused",
                "Connections refused at the public listener's caps",
                Counter,
                ConstCounter::new(refused),
            )?;
            one(
                &mut encoder,
                "mallgate_connections_evicted",
                "Idle connections closed to admit a newcomer",
                Counter,
                ConstCounter::new(evicted),
            )?;
        }
        one(
            &mut encoder,
            "mallgate_log_lines_dropped",
            "Log lines dropped because the log writer fell behind (stdout blocked)",
            Counter,
            ConstCounter::new(super::log_lines_dropped()),
        )
    }
}

fn endpoints(
    encoder: &mut DescriptorEncoder,
    snapshot: &crate::registry::Snapshot,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge, Histogram};
    let states = snapshot.endpoint_states();
    let labels = |s: &Arc<EndpointState>| EndpointLabels {
        partner: s.partner.clone(),
        endpoint: s.redacted.clone(),
    };
    let breaker = states.iter().flat_map(|s| {
        let now = s.breaker.state();
        [
            ("closed", BreakerState::Closed),
            ("open", BreakerState::Open),
            ("half_open", BreakerState::HalfOpen),
        ]
        .into_iter()
        .map(move |(name, state)| {
            (
                BreakerLabels {
                    partner: s.partner.clone(),
                    endpoint: s.redacted.clone(),
                    state: name,
                },
                gauge(u64::from(now == state)),
            )
        })
    });
    family(
        encoder,
        "mallgate_endpoint_breaker_state",
        "Each endpoint's circuit breaker state (1 for the current one)",
        Gauge,
        breaker,
    )?;
    let reports: Vec<_> = states.iter().map(|s| (s, s.report(0, 0, false))).collect();
    family(
        encoder,
        "mallgate_endpoint_ejected",
        "Whether the endpoint is ejected from rotation (1) or not (0)",
        Gauge,
        reports
            .iter()
            .map(|(s, r)| (labels(s), gauge(u64::from(r.ejected)))),
    )?;
    family(
        encoder,
        "mallgate_endpoint_available",
        "Whether the endpoint can be picked now: not ejected, breaker letting calls through",
        Gauge,
        reports
            .iter()
            .map(|(s, r)| (labels(s), gauge(u64::from(r.available)))),
    )?;
    family(
        encoder,
        "mallgate_endpoint_breaker_opened",
        "Times the endpoint's breaker opened",
        Counter,
        reports
            .iter()
            .map(|(s, r)| (labels(s), ConstCounter::new(r.breaker_opened_total))),
    )?;
    family(
        encoder,
        "mallgate_endpoint_ejections",
        "Times the endpoint was ejected",
        Counter,
        reports
            .iter()
            .map(|(s, r)| (labels(s), ConstCounter::new(r.ejected_total))),
    )?;
    family(
        encoder,
        "mallgate_endpoint_requests",
        "Exchanges with the endpoint (calls, retries and hedges; probes excluded)",
        Counter,
        reports
            .iter()
            .map(|(s, r)| (labels(s), ConstCounter::new(r.requests))),
    )?;
    family(
        encoder,
        "mallgate_endpoint_failures",
        "Exchanges with the endpoint that failed (connect, timeout, 5xx)",
        Counter,
        reports
            .iter()
            .map(|(s, r)| (labels(s), ConstCounter::new(r.failures))),
    )?;
    family(
        encoder,
        "mallgate_partner_exchange_duration_seconds",
        "Duration of partner HTTP exchanges (one attempt), per endpoint",
        Histogram,
        states
            .iter()
            .map(|s| (labels(s), s.exchange_seconds.clone())),
    )
}

/// A guardrail family: name, help, and which figure it reads.
type Guardrail = (&'static str, &'static str, fn(&GuardrailFigures) -> u64);

fn guardrails(
    encoder: &mut DescriptorEncoder,
    snapshot: &crate::registry::Snapshot,
) -> Result<(), std::fmt::Error> {
    // A connector's versions may share one admission state: each counted once.
    let mut seen = HashSet::new();
    let mut rows: Vec<(ConnectorLabels, GuardrailFigures)> = Vec::new();
    let all = snapshot
        .connectors
        .iter()
        .chain(snapshot.canaries.iter().map(|c| &c.live));
    for c in all {
        let counters = c.connector.counters();
        if !seen.insert(std::ptr::from_ref(counters)) {
            continue;
        }
        let figures = counters.figures();
        match rows.iter_mut().find(|(l, _)| l.connector == c.id()) {
            Some((_, f)) => *f += figures,
            None => rows.push((
                ConnectorLabels {
                    partner: c.partner().to_owned(),
                    connector: c.id().to_owned(),
                },
                figures,
            )),
        }
    }
    let counters: [Guardrail; 7] = [
        (
            "mallgate_partner_exchanges",
            "Partner exchanges admitted by the connector's stack (first attempts)",
            |f| f.exchanges,
        ),
        ("mallgate_partner_retries", "Retries sent", |f| f.retries),
        ("mallgate_partner_hedges", "Hedged requests sent", |f| {
            f.hedges
        }),
        (
            "mallgate_partner_retry_budget_refused",
            "Retries and hedges the retry budget refused",
            |f| f.budget_refused,
        ),
        (
            "mallgate_partner_shed",
            "Exchanges shed at the connector's concurrency limit",
            |f| f.shed,
        ),
        (
            "mallgate_partner_rate_limited",
            "Exchanges held back by the partner's rate limit or its 429",
            |f| f.rate_limited,
        ),
        (
            "mallgate_partner_failovers",
            "Refused connections moved to another endpoint",
            |f| f.failovers,
        ),
    ];
    for (name, help, read) in counters {
        family(
            encoder,
            name,
            help,
            MetricType::Counter,
            rows.iter()
                .map(|(l, f)| (l.clone(), ConstCounter::new(read(f)))),
        )?;
    }
    Ok(())
}

fn cache(encoder: &mut DescriptorEncoder, cache: &RecordCache) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &cache.stats;
    let lookups = [
        ("hit", s.hits.load(Relaxed)),
        ("revalidate", s.revalidations.load(Relaxed)),
        ("miss", s.misses.load(Relaxed)),
        ("coalesced", s.coalesced.load(Relaxed)),
        ("stale", s.stale_served.load(Relaxed)),
    ];
    family(
        encoder,
        "mallgate_cache_lookups",
        "Record cache lookups: hit (fresh), revalidate (served, refreshed in the background), miss; coalesced misses joined a call in flight; stale answers were served because the partner failed",
        MetricType::Counter,
        lookups
            .into_iter()
            .map(|(result, n)| (ResultLabel { result }, ConstCounter::new(n))),
    )?;
    one(
        encoder,
        "mallgate_cache_partner_calls",
        "Partner calls the cache started (a coalesced miss counts once)",
        MetricType::Counter,
        ConstCounter::new(s.calls.load(Relaxed)),
    )?;
    one(
        encoder,
        "mallgate_cache_entries",
        "Entries in the record cache",
        MetricType::Gauge,
        gauge(cache.entry_count()),
    )?;
    one(
        encoder,
        "mallgate_cache_bytes",
        "Weighted size of the record cache",
        MetricType::Gauge,
        gauge(cache.weighted_size()),
    )
}

/// The shared store and the fleet: reachability, the revision applied, builds, live
/// replicas.
fn fleet(encoder: &mut DescriptorEncoder, registry: &Registry) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    if let Some(connected) = registry.store_connected() {
        one(
            encoder,
            "mallgate_store_connected",
            "1 while the shared store (etcd) is reachable, 0 while this replica serves its last good set without it",
            Gauge,
            ConstGauge::new(i64::from(connected)),
        )?;
    }
    let builds = registry
        .builds()
        .into_iter()
        .map(|((partner, connector), n)| {
            (ConnectorLabels { partner, connector }, ConstCounter::new(n))
        });
    family(
        encoder,
        "mallgate_connector_builds",
        "Connector versions compiled and bound by reloads (a reload rebuilds only the documents that changed)",
        Counter,
        builds,
    )?;
    if registry.store_connected().is_some() {
        let replicas = registry.fleet_share().replicas();
        one(
            encoder,
            "mallgate_fleet_replicas",
            "Live replicas this one counts in its fleet (by their etcd leases): each takes that share of every partner's rate limit and concurrency",
            Gauge,
            ConstGauge::new(i64::from(replicas)),
        )?;
    }
    let revision = registry.store_revision();
    if revision > 0 {
        one(
            encoder,
            "mallgate_store_revision",
            "The shared store's (etcd) revision the serving set was last read at: convergence and lag across a fleet are one query",
            Gauge,
            ConstGauge::new(revision),
        )?;
    }
    Ok(())
}

fn pools(encoder: &mut DescriptorEncoder, registry: &Registry) -> Result<(), std::fmt::Error> {
    let mappers = registry.mappers();
    let trusted = mappers.trusted.stats();
    let isolated = mappers.isolated.stats();
    let queued = [("trusted", trusted.queued), ("sandbox", isolated.queued)];
    family(
        encoder,
        "mallgate_mapping_queue_depth",
        "Mapping jobs waiting for a thread (trusted) or a worker process (sandbox)",
        MetricType::Gauge,
        queued
            .into_iter()
            .map(|(pool, n)| (PoolLabel { pool }, gauge(n))),
    )?;
    let jobs = [
        ("trusted", trusted.completed_total),
        ("sandbox", isolated.jobs_total),
    ];
    family(
        encoder,
        "mallgate_mapping_jobs",
        "Mapping jobs run",
        MetricType::Counter,
        jobs.into_iter()
            .map(|(pool, n)| (PoolLabel { pool }, ConstCounter::new(n))),
    )?;
    family(
        encoder,
        "mallgate_mapping_run_seconds",
        "Time mapping jobs ran",
        MetricType::Counter,
        [
            ("trusted", trusted.run_micros_total),
            ("sandbox", isolated.run_micros_total),
        ]
        .into_iter()
        .map(|(pool, us)| (PoolLabel { pool }, ConstCounter::new(us as f64 / 1e6))),
    )?;
    let sandbox = [
        ("killed", isolated.killed_total),
        ("died", isolated.died_total),
        ("expired", isolated.expired_total),
    ];
    family(
        encoder,
        "mallgate_sandbox_worker_losses",
        "Sandbox jobs that cost a worker (killed at the deadline or over the cap, died) or expired while queued",
        MetricType::Counter,
        sandbox
            .into_iter()
            .map(|(result, n)| (ResultLabel { result }, ConstCounter::new(n))),
    )
}
