//! The sandbox pool: partner programs in supervised worker processes of
//! `mallgate-jq-sandbox worker`. A hostile program costs one worker and one job; the next
//! job on the same pool is answered by a fresh worker.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mallgate_connectors::mapping::isolated::{
    Answer, IsolatedPool, IsolationConfig, ProgramSource, Task,
};
use mallgate_connectors::mapping::{Globals, finish_page};
use mallgate_connectors::{Capability, ConnectorError, ConnectorSpec, Format, Owner};
use serde_json::json;
use support::voltmart_page::json_page;

fn pool(workers: usize) -> IsolatedPool {
    let mut config = IsolationConfig::new(
        env!("CARGO_BIN_EXE_mallgate-jq-sandbox"),
        vec!["worker".into()],
        workers,
    );
    config.address_space_bytes = 1024 * 1024 * 1024;
    // A runaway is killed after 1 s of its own run (calls below leave it the full budget).
    config.max_run = Duration::from_secs(1);
    IsolatedPool::start(config).expect("pool")
}

fn candidate(map: &str) -> Arc<ProgramSource> {
    Arc::new(ProgramSource {
        text: format!(
            "id: demo\npartner: demo\nkind: retailer\nendpoints:\n  - url: http://127.0.0.1:18101\ncapabilities:\n  catalog.search:\n    request:\n      path: /products\n    records: '.products[]'\n    map: '{}'\n",
            map.replace('\'', "''")
        ),
        format: Format::Yaml,
        owner: Owner::Partner("demo".into()),
    })
}

fn globals(partner: &str) -> Arc<Globals> {
    Arc::new(Globals {
        provenance: json!({"partner_id": partner, "connector_id": partner, "connector_version": 1,
                           "fetched_at": "2026-11-27T14:03:00Z"}),
        query: json!({"q": "tv"}),
        locations: json!({}),
    })
}

async fn map(
    pool: &IsolatedPool,
    set: u64,
    source: &Arc<ProgramSource>,
    payload: &[u8],
    within: Duration,
) -> Result<Answer, ConnectorError> {
    pool.run(
        set,
        source,
        Task::MapReply {
            capability: Capability::CatalogSearch,
        },
        &globals("demo"),
        payload.to_vec(),
        Instant::now() + within,
    )
    .await
}

fn overrun(result: Result<Answer, ConnectorError>) -> String {
    match result {
        Err(ConnectorError::MappingOverrun { reason }) => reason,
        other => panic!("expected an overrun, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voltmart_connector_maps_in_a_worker_exactly_as_in_process() {
    let text = std::fs::read_to_string(format!(
        "{}/partners/voltmart.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("voltmart.yaml");
    let (_, programs) =
        ConnectorSpec::load_compiled(&text, Format::Yaml, &Owner::Operator).expect("compiles");
    let mapping = &programs.capabilities[&Capability::CatalogSearch].mapping;
    let source = Arc::new(ProgramSource {
        text,
        format: Format::Yaml,
        owner: Owner::Partner("voltmart".into()),
    });
    let body = serde_json::to_vec(&json_page(100)).expect("json");
    let pool = pool(1);
    let globals = globals("voltmart");
    let far = Instant::now() + Duration::from_secs(60);
    let in_process = mapping
        .map_reply(&body, &Default::default(), &globals, far)
        .expect("in process");
    // Twice: the first job sends the document, the second finds it compiled.
    for round in 0..2 {
        let answer = pool
            .run(
                7,
                &source,
                Task::MapReply {
                    capability: Capability::CatalogSearch,
                },
                &globals,
                body.clone(),
                far,
            )
            .await
            .expect("mapped");
        let Answer::Page { page } = answer else {
            panic!("{answer:?}")
        };
        let finished = finish_page(
            page,
            Capability::CatalogSearch.record_schema(),
            mallgate_connectors::mapping::Identity::of(&globals).as_ref(),
        );
        assert_eq!(finished, in_process, "round {round}");
        assert_eq!(finished.records.len(), 100);
    }
    let stats = pool.stats();
    assert_eq!((stats.spawned_total, stats.jobs_total), (1, 2), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_programs_cost_one_worker_and_one_job() {
    let pool = pool(1);
    let page = br#"{"products": [{"name": "tv"}]}"#;
    let benign = candidate("{title: .name}");
    let hostile = [
        // The stack: in process this aborts the whole gateway.
        (
            "stack",
            r#"{title: (("[" * 1000000) + ("]" * 1000000) | fromjson | tostring)}"#,
        ),
        // Memory: one output of 10 GB.
        (
            "memory",
            r#"{title: ("x" * 10000000000 | length | tostring)}"#,
        ),
        // CPU: a triple product inside one output; no deadline check between outputs sees it.
        (
            "cpu",
            "[range(1000)] as $a | {title: (reduce ($a[] as $x | $a[] as $y | $a[]) as $i (0; . + 1) | tostring)}",
        ),
    ];
    for (i, (name, program)) in hostile.iter().enumerate() {
        let set = 100 + i as u64;
        let reason = overrun(
            map(
                &pool,
                set,
                &candidate(program),
                page,
                Duration::from_secs(30),
            )
            .await,
        );
        assert!(reason.contains("sandbox worker"), "{name}: {reason}");
        // The same pool answers the next job with a fresh worker.
        let answer = map(&pool, 1, &benign, page, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("after {name}: {e}"));
        let Answer::Page { page } = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(page.outputs[0].value["title"], "tv", "after {name}");
    }
    let stats = pool.stats();
    assert_eq!(stats.killed_total + stats.died_total, 3, "{stats:?}");
    assert_eq!(
        stats.spawned_total, 4,
        "one fresh worker after each: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_no_environment_and_opens_no_files() {
    // The compile-time checks refuse `$ENV`, `env` and `input`; the worker is started with
    // an empty environment and may not open a file descriptor even if it escaped jq.
    let pool = pool(1);
    let err = map(
        &pool,
        1,
        &candidate("{title: $ENV.PATH}"),
        br#"{"products": [{}]}"#,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        matches!(err, Ok(Answer::InvalidSpec { ref problems }) if problems[0].reason.contains("$ENV")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_in_the_queue_is_not_run() {
    let pool = pool(1);
    let source = candidate("{title: .name}");
    let result = map(&pool, 1, &source, b"{}", Duration::ZERO).await;
    assert!(
        matches!(result, Err(ConnectorError::MappingBusy)),
        "{result:?}"
    );
    assert_eq!(pool.stats().expired_total, 1);
    assert_eq!(pool.stats().spawned_total, 0, "no worker for a dead job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_cap_is_refused_and_its_worker_replaced() {
    let mut config = IsolationConfig::new(
        env!("CARGO_BIN_EXE_mallgate-jq-sandbox"),
        vec!["worker".into()],
        1,
    );
    config.max_answer_bytes = 64 * 1024;
    let pool = IsolatedPool::start(config).expect("pool");
    let records: Vec<_> = (0..200)
        .map(|i| json!({"name": format!("{i:0>500}")}))
        .collect();
    let body = serde_json::to_vec(&json!({"products": records})).expect("json");
    let reason = overrun(
        map(
            &pool,
            1,
            &candidate("{title: .name}"),
            &body,
            Duration::from_secs(30),
        )
        .await,
    );
    assert!(reason.contains("the cap is 65536"), "{reason}");
    assert_eq!(pool.stats().killed_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_behind_a_runaway_gets_its_full_budget() {
    // One worker, a 500 ms run limit: the runaway holds the worker until it is killed, and
    // the benign job queued behind it must not be charged for that wait.
    let mut config = IsolationConfig::new(
        env!("CARGO_BIN_EXE_mallgate-jq-sandbox"),
        vec!["worker".into()],
        1,
    );
    config.max_run = Duration::from_millis(500);
    let pool = Arc::new(IsolatedPool::start(config).expect("pool"));
    let page = br#"{"products": [{"name": "tv"}]}"#;
    let hog = candidate(
        "[range(1000)] as $a | {title: (reduce ($a[] as $x | $a[] as $y | $a[]) as $i (0; . + 1) | tostring)}",
    );
    let benign = candidate("{title: .name}");
    // Both compiled first, so the run below measures nothing but the runs.
    for (set, source) in [(1, &hog), (2, &benign)] {
        let _ = map(
            &pool,
            set,
            source,
            b"{\"products\": []}",
            Duration::from_secs(30),
        )
        .await;
    }
    let runaway = {
        let pool = Arc::clone(&pool);
        let hog = Arc::clone(&hog);
        tokio::spawn(async move { map(&pool, 1, &hog, page, Duration::from_secs(30)).await })
    };
    // Queued behind the runaway (the pool is first in, first out).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = map(&pool, 2, &benign, page, Duration::from_secs(30)).await;
    let reason = overrun(runaway.await.expect("task"));
    assert!(reason.contains("deadline"), "{reason}");
    let Ok(Answer::Page { page }) = queued else {
        panic!("the queued job was charged for the wait: {queued:?}")
    };
    assert_eq!(page.outputs[0].value["title"], "tv");
}
