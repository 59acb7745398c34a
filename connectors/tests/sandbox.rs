//! Dry-runs in the child-process sandbox: a candidate connector's jq runs in
//! `mallgate-jq-sandbox` under rlimits; hostile programs kill only the child.

mod support;

use std::time::Duration;

use mallgate_connectors::mapping::{DryRunRequest, Sandbox, SandboxLimits};
use mallgate_connectors::{Capability, ConnectorError, Format, Owner};
use serde_json::json;
use support::voltmart_page::json_page;

/// One output that takes ~10^10 steps: only a CPU or wall-clock limit stops it.
const CPU_BOMB: &str = "[range(100000)] as $a | {title: (reduce ($a[] as $x | $a[] as $y | 1) as $i (0; . + 1) | tostring)}";

/// Runs `map` as a candidate under `limits` on a one-record page; the overrun's reason.
fn overrun(limits: SandboxLimits, map: &str) -> String {
    let err = sandbox(limits)
        .dry_run(&request(candidate(map)), br#"{"products": [{}]}"#)
        .expect_err("killed");
    match err {
        ConnectorError::MappingOverrun { reason } => reason,
        other => panic!("{other}"),
    }
}

fn sandbox(limits: SandboxLimits) -> Sandbox {
    Sandbox::new(
        env!("CARGO_BIN_EXE_mallgate-jq-sandbox"),
        Vec::new(),
        limits,
    )
}

fn candidate(map: &str) -> String {
    format!(
        "id: demo\npartner: demo\nkind: retailer\nendpoints:\n  - url: http://127.0.0.1:18101\ncapabilities:\n  catalog.search:\n    request:\n      path: /products\n    records: '.products[]'\n    map: '{}'\n",
        map.replace('\'', "''")
    )
}

fn request(connector: String) -> DryRunRequest {
    DryRunRequest {
        connector,
        format: Format::Yaml,
        owner: Owner::Partner("demo".into()),
        capability: Capability::CatalogSearch,
        provenance: json!({"partner_id": "demo", "connector_id": "demo", "connector_version": 1, "fetched_at": "2026-11-27T14:03:00Z"}),
        query: json!({"q": "tv"}),
        locations: json!({}),
    }
}

#[test]
fn the_real_voltmart_connector_dry_runs_on_a_sample_page() {
    let path = format!("{}/partners/voltmart.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut req = request(std::fs::read_to_string(path).expect("voltmart.yaml"));
    req.owner = Owner::Operator;
    req.provenance = json!({"partner_id": "voltmart", "connector_id": "voltmart", "connector_version": 1, "fetched_at": "2026-11-27T14:03:00Z"});
    let sample = serde_json::to_vec(&json_page(100)).expect("json");
    let out = sandbox(SandboxLimits::default())
        .dry_run(&req, &sample)
        .expect("dry-run");
    assert_eq!(
        (out.selected, out.records.len(), out.dropped.len()),
        (100, 100, 0),
        "{:?}",
        out.dropped.first()
    );
    assert_eq!(
        out.records[3]["variants"][0]["offers"][0]["price"]["amount_minor"],
        85299
    );
}

#[test]
fn a_rejected_candidate_names_the_pointer() {
    let err = sandbox(SandboxLimits::default())
        .dry_run(&request(candidate("{title: .name | env}")), b"{}")
        .expect_err("rejected");
    let ConnectorError::InvalidSpec { problems } = err else {
        panic!("{err}")
    };
    assert_eq!(problems[0].pointer, "/capabilities/catalog.search/map");
    assert_eq!(problems[0].line, Some(11));
    assert!(
        problems[0].reason.contains("undefined filter `env`"),
        "{}",
        problems[0].reason
    );
}

#[test]
fn a_memory_bomb_kills_only_the_child() {
    let limits = SandboxLimits {
        address_space_bytes: 768 * 1024 * 1024,
        ..SandboxLimits::default()
    };
    let reason = overrun(limits, r#"{title: ("x" * 2000000000 | length | tostring)}"#);
    assert!(
        reason.contains("signal 6") || reason.contains("memory allocation"),
        "{reason}"
    );
}

#[test]
fn a_cpu_bomb_kills_only_the_child() {
    let limits = SandboxLimits {
        cpu_seconds: 1,
        wall: Duration::from_secs(60),
        ..SandboxLimits::default()
    };
    let reason = overrun(limits, CPU_BOMB);
    assert!(
        reason.contains("signal 24") || reason.contains("signal 9"),
        "{reason}"
    );
}

#[test]
fn the_wall_clock_limit_is_enforced_by_the_parent() {
    let limits = SandboxLimits {
        cpu_seconds: 60,
        wall: Duration::from_millis(300),
        ..SandboxLimits::default()
    };
    assert!(overrun(limits, CPU_BOMB).contains("wall-clock limit"));
}

#[test]
fn the_child_sees_no_environment() {
    // `$ENV` and `env` are refused at compile time; and even so the child starts with an
    // empty environment, so a sandbox escape would find no secrets there.
    let err = sandbox(SandboxLimits::default())
        .dry_run(&request(candidate("{title: $ENV.PATH}")), b"{}")
        .expect_err("rejected");
    assert!(
        err.to_string().contains("undefined variable `$ENV`"),
        "{err}"
    );
}

#[test]
fn a_bad_sample_is_a_decode_error() {
    let err = sandbox(SandboxLimits::default())
        .dry_run(&request(candidate("{title: .name}")), b"{\"products\": [")
        .expect_err("truncated");
    assert!(
        matches!(err, ConnectorError::Decode { format: "json", .. }),
        "{err}"
    );
}
