//! The mapping pool: jobs run on big-stack threads off the caller's thread, a full queue is
//! refused at once, and a runaway mapping's worker is abandoned and replaced so the pool
//! keeps serving. (Its own test binary: the abandoned thread ends with the process.)

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mallgate_connectors::decode::Limits;
use mallgate_connectors::mapping::{CapabilityMapping, Globals, MappingPool};
use mallgate_connectors::spec::CapabilitySpec;
use mallgate_connectors::{Capability, ConnectorError};
use serde_json::json;
use support::voltmart_page::{XML_MAP, XML_RECORDS, xml_page};

fn mapping(records: &str, map: &str, decode: &str) -> Arc<CapabilityMapping> {
    let spec: CapabilitySpec = serde_json::from_value(json!({
        "request": {"path": "/p"}, "decode": decode, "records": records, "map": map,
    }))
    .expect("spec");
    Arc::new(CapabilityMapping::compile(Capability::CatalogSearch, &spec).expect("compiles"))
}

fn globals() -> Arc<Globals> {
    Arc::new(Globals {
        provenance: json!({"partner_id": "voltmart", "connector_id": "voltmart", "connector_version": 1, "fetched_at": "2026-11-27T14:03:00Z"}),
        query: json!({}),
        locations: json!({}),
    })
}

#[test]
fn pages_map_on_the_pool_and_a_runaway_worker_is_replaced() {
    let pool = MappingPool::new(1, 4).expect("pool");
    let xml = mapping(XML_RECORDS, XML_MAP, "xml");
    let page = pool
        .map_reply_blocking(
            Arc::clone(&xml),
            xml_page(100).into_bytes(),
            Limits::default(),
            globals(),
            Instant::now() + Duration::from_secs(60),
        )
        .expect("page");
    assert_eq!(page.records.len(), 100);

    // One output that loops ~10^10 times: the deadline between outputs never comes.
    let runaway = mapping(
        ".[]",
        "[range(100000)] as $a | reduce ($a[] as $x | $a[] as $y | 1) as $i (0; . + 1)",
        "json",
    );
    let stuck = pool
        .map_reply(
            runaway,
            b"[1]".to_vec(),
            Limits::default(),
            globals(),
            Instant::now() + Duration::from_millis(10),
        )
        .expect("queued");
    // The only worker is stuck; this job is served by the replacement.
    let page = pool
        .map_reply_blocking(
            xml,
            xml_page(5).into_bytes(),
            Limits::default(),
            globals(),
            Instant::now() + Duration::from_secs(60),
        )
        .expect("served by the replacement worker");
    assert_eq!(page.records.len(), 5);
    let stats = pool.stats();
    assert_eq!(stats.abandoned_total, 1, "{stats:?}");
    assert_eq!(
        stats.workers, 2,
        "the stuck worker and its replacement: {stats:?}"
    );
    drop(stuck);
}

#[test]
fn a_full_queue_is_refused_at_once() {
    let pool = MappingPool::new(1, 1).expect("pool");
    let slow = mapping(
        ".[]",
        "[range(100000)] as $a | reduce ($a[] as $x | $a[0:300][] as $y | 1) as $i (0; . + 1) | {}",
        "json",
    );
    let mut receivers = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        match pool.map_reply(
            Arc::clone(&slow),
            b"[1]".to_vec(),
            Limits::default(),
            globals(),
            Instant::now() + Duration::from_secs(60),
        ) {
            Ok(rx) => receivers.push(rx),
            Err(ConnectorError::MappingBusy) => refused += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert!(
        refused >= 1,
        "one worker and a queue of one cannot take ten jobs at once"
    );
    assert!(ConnectorError::MappingBusy.is_retryable());
    drop(receivers);
}
