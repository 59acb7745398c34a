//! The partner stack bound to real connectors: each connector keeps its own admission
//! state (a partner's two connectors never reconfigure each other), a new version of a
//! connector inherits it warm, and the connector runtime runs on tokio's clock, so a hung
//! partner is judged under paused time.

#[path = "support/fleet.rs"]
#[allow(dead_code)]
mod fleet;

use std::sync::Arc;
use std::time::Duration;

use mallgate_connectors::runtime::guard::LoopbackOnly;
use mallgate_connectors::runtime::secrets::MemorySecretStore;
use mallgate_connectors::runtime::{
    Connector, PartnerResources, RuntimeConfig, connector_from_spec,
};
use mallgate_connectors::{Capability, ConnectorError, Owner};
use mallgate_partner_sim::Partner;
use serde_json::json;
use tokio::time::Instant;

use fleet::Harness;

/// Voltmart's connector under another id, with `policies` instead of its own.
fn voltmart_as(harness: &Harness, id: &str, policies: &str) -> String {
    harness
        .text(Partner::Voltmart)
        .replacen("id: voltmart\n", &format!("id: {id}\n"), 1)
        .replacen(
            "policies:\n  timeout_ms: 600\n  hedge_after_ms: 150\n",
            &format!("policies:\n{policies}"),
            1,
        )
}

fn bind(
    harness: &Harness,
    text: &str,
    version: u32,
    resources: &Arc<PartnerResources>,
) -> Connector {
    connector_from_spec(
        text,
        version,
        Owner::Partner("voltmart".into()),
        Arc::clone(resources),
        harness.secrets.clone(),
        Arc::clone(&harness.pool),
    )
    .expect("the connector loads")
}

async fn search(c: &Connector, deadline_in: Duration) -> Result<(), ConnectorError> {
    // One product by id: one exchange (a search may walk several pages).
    c.call(
        Capability::CatalogGet,
        &json!({"id": "100001"}),
        "req-stack",
        Instant::now() + deadline_in,
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn each_connector_keeps_its_own_limits_and_a_new_version_inherits_them() {
    let harness = Harness::start().await;
    let resources = harness.resources(Partner::Voltmart);
    let limited_text = voltmart_as(
        &harness,
        "voltmart-limited",
        "  rate_limit_rps: 0.01\n  rate_limit_burst: 1\n",
    );
    let limited = bind(&harness, &limited_text, 1, &resources);
    // A second connector of the same partner, without a limit, bound after the first:
    // binding it does not reconfigure the first (it used to: the last bound won).
    let free = bind(
        &harness,
        &voltmart_as(&harness, "voltmart-free", "  max_concurrency: 8\n"),
        1,
        &resources,
    );
    let short = Duration::from_secs(2);
    search(&limited, short).await.expect("the burst of one");
    let refused = search(&limited, short).await;
    assert!(
        matches!(refused, Err(ConnectorError::RateLimited { .. })),
        "one call per 100 s: {refused:?}"
    );
    for _ in 0..3 {
        search(&free, short)
            .await
            .expect("its own stack has no limit");
    }
    assert_eq!(
        limited
            .counters()
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        free.counters()
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Version 2 of the limited connector (same admission policies) inherits the bucket
    // warm: its first call is still over the limit.
    let v2 = bind(&harness, &limited_text, 2, &resources);
    assert!(
        std::ptr::eq(v2.counters(), limited.counters()),
        "one admission state"
    );
    let refused = search(&v2, short).await;
    assert!(
        matches!(refused, Err(ConnectorError::RateLimited { .. })),
        "{refused:?}"
    );
    // ... and the partner's endpoint state: the same breakers and figures.
    assert!(Arc::ptr_eq(
        &v2.routes()[0].state,
        &limited.routes()[0].state
    ));
    assert!(Arc::ptr_eq(&v2.routes()[0].state, &free.routes()[0].state));

    // A version with other admission policies starts its own.
    let v3 = bind(
        &harness,
        &voltmart_as(&harness, "voltmart-limited", "  rate_limit_rps: 50\n"),
        3,
        &resources,
    );
    assert!(!std::ptr::eq(v3.counters(), limited.counters()));
    search(&v3, short).await.expect("a bucket of its own");
}

/// A partner that accepts connections and never answers; counts them.
async fn hung_partner() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: at most 20 connections, each held open until the test ends.
        for _ in 0..20 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test(start_paused = true)]
async fn a_hung_partner_is_judged_on_tokio_time() {
    let (base, accepted) = hung_partner().await;
    let text = format!(
        "id: hung\npartner: hung\nkind: retailer\nendpoints:\n  - url: {base}\n\
         policies:\n  timeout_ms: 800\n  retry: {{max_attempts: 2, backoff_ms: 25}}\n\
         capabilities:\n  catalog.get:\n    request:\n      path: /p/{{id}}\n    records: .items[]\n    map: .\n"
    );
    let resources = PartnerResources::new("hung", Arc::new(LoopbackOnly), RuntimeConfig::default())
        .expect("resources");
    let c = connector_from_spec(
        &text,
        1,
        Owner::Operator,
        resources,
        Arc::new(MemorySecretStore::new()),
        Arc::new(mallgate_connectors::mapping::MappingPool::new(1, 16).expect("pool")),
    )
    .expect("loads");
    let started = Instant::now();
    let result = search(&c, Duration::from_secs(30)).await;
    match result {
        Err(ConnectorError::Timeout { timeout_ms, .. }) => assert_eq!(timeout_ms, 800),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Two attempts of 800 ms and a 25 ms back-off, on tokio's (paused) clock.
    assert_eq!(started.elapsed(), Duration::from_millis(1625));
    assert_eq!(
        c.counters()
            .retries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}
