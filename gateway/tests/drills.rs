//! Failover drills through the real admin API, against the real simulated partners over
//! HTTP: a fault reaches only its target (the partner's replica never sees the faulted
//! traffic, other partners never notice), an aborted drill leaves no fault, partners may
//! drill only themselves, bad requests are refused with their pointer, and the CLI's exit
//! code is the verdict.

use mallgate_testkit as support;

use std::time::Duration;

use mallgate_partner_sim::Partner;
use serde_json::{Value, json};
use support::Mall;
use support::admin::{admin_mall, admin_send};

const OPERATOR: &str = "operator-token-for-drill-tests";
const THREADLINE: &str = "threadline-token-for-drill-tests";

async fn mall() -> Mall {
    admin_mall(
        &[("operator", OPERATOR), ("partner:threadline", THREADLINE)],
        |config| config.resilience.health_interval_s = 1,
    )
    .await
}

async fn drill(
    mall: &Mall,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    admin_send(mall, method, path, token, &[], body.map(|b| b.to_string())).await
}

async fn post(mall: &Mall, token: &str, body: Value) -> (u16, Value) {
    let path = "/admin/v1/drills";
    drill(mall, token, reqwest::Method::POST, path, Some(body)).await
}

/// Voltmart's primary endpoint, as the status and the metrics name it.
fn primary(mall: &Mall) -> String {
    let url = mall.fleet.url(Partner::Voltmart, 0).expect("replica");
    format!("{}/", url.trim_end_matches('/'))
}

/// Polls drill `id` until it has ended (at most 60 s of polling), with traffic: only a
/// real exchange closes an open breaker, so recovery is seen under load, as in production.
async fn ended(mall: &Mall, id: &str) -> Value {
    for i in 0..600 {
        let path = format!("/admin/v1/drills/{id}");
        let (status, report) = drill(mall, OPERATOR, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{report}");
        if matches!(report["state"].as_str(), Some("finished" | "aborted")) {
            return report;
        }
        let a = mall
            .get_owned(format!("/v1/products?q=after{i}&limit=2"))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("drill {id} did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_drill_fails_over_reaches_only_its_target_and_aborts_clean() {
    let mall = mall().await;
    mall.wait_until_probed().await;
    let body = json!({
        "target": {"partner": "voltmart", "endpoint": primary(&mall)},
        "fault": "error", "duration_s": 120,
        "expect": {"max_frontend_errors": 0},
    });
    let (status, started) = drill(
        &mall,
        OPERATOR,
        reqwest::Method::POST,
        "/admin/v1/drills",
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["state"], "running");
    let id = started["id"].as_str().expect("id").to_owned();
    // A health probe sent just before the drill may still arrive (its timeout is 1 s):
    // the primary's counters from a moment later, then nothing faulted may reach it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (primary_products, primary_health) = (
        mall.replica_requests(Partner::Voltmart, 0, "/v1/products"),
        mall.replica_requests(Partner::Voltmart, 0, "/health"),
    );
    let standby = mall.replica_requests(Partner::Voltmart, 1, "/v1/products");

    for i in 0..40 {
        let a = mall
            .get_owned(format!("/v1/products?q=drill{i}&limit=3"))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        // Other partners never notice.
        assert_eq!(a.outcome("threadline"), Some("live"), "{}", a.body);
    }
    // Health probes run every second: give them time to be faulted too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        mall.replica_requests(Partner::Voltmart, 0, "/v1/products"),
        primary_products
    );
    assert_eq!(
        mall.replica_requests(Partner::Voltmart, 0, "/health"),
        primary_health
    );
    assert!(mall.replica_requests(Partner::Voltmart, 1, "/v1/products") > standby);

    let (status, live) = drill(
        &mall,
        OPERATOR,
        reqwest::Method::GET,
        &format!("/admin/v1/drills/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(live["state"], "running", "{live}");
    let f = &live["figures"];
    assert!(f["injected"].as_u64().expect("injected") >= 1, "{live}");
    assert!(
        f["time_to_detect_ms"].is_u64(),
        "the breaker opened or the endpoint was ejected: {live}"
    );
    assert!(
        f["time_to_failover_ms"].is_u64(),
        "the standby answered: {live}"
    );
    assert_eq!(f["frontend_requests"], 40, "{live}");
    assert_eq!(f["frontend_non_2xx"], 0, "{live}");
    assert!(f["answers"]["live"].as_u64().expect("live") >= 30, "{live}");

    // Aborted: the fault is off at once, and the primary takes traffic again.
    let (status, aborted) = drill(
        &mall,
        OPERATOR,
        reqwest::Method::DELETE,
        &format!("/admin/v1/drills/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{aborted}");
    let drills = mall
        .gateway
        .admin
        .as_ref()
        .expect("admin")
        .drills()
        .expect("drills");
    assert!(
        drills.faults().list().is_empty(),
        "no fault left after the abort"
    );
    let report = ended(&mall, &id).await;
    assert_eq!(report["state"], "aborted");
    assert!(report["figures"]["time_to_recover_ms"].is_u64(), "{report}");
    assert_eq!(report["verdict"]["passed"], true, "{report}");
    assert!(mall.replica_requests(Partner::Voltmart, 0, "/health") > primary_health);

    // The page is self-contained: an SVG timeline, nothing loaded from anywhere.
    let admin = mall.gateway.admin_addr.expect("admin");
    let page = mall
        .http
        .get(format!("http://{admin}/admin/v1/drills/{id}/report.html"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("page");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.expect("text");
    assert!(page.contains("<svg") && page.contains("detect") && page.contains("failover"));
    for external in ["<script", "<link", "src=", "href=", "url("] {
        assert!(!page.contains(external), "`{external}` in the page");
    }
    let log = support::admin::audit_log(&mall);
    for action in ["drill.start", "drill.abort", "drill.end"] {
        assert!(log.contains(action), "{action} in {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_drill_only_themselves_and_bad_drills_are_refused_precisely() {
    let mall = mall().await;
    let (status, body) = post(
        &mall,
        THREADLINE,
        json!({"target": {"partner": "voltmart"}, "fault": "error", "duration_s": 5}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("voltmart"),
        "{body}"
    );

    let (status, body) = post(
        &mall,
        OPERATOR,
        json!({"target": {"partner": "voltmart"}, "fault": "error", "duration_s": 5, "rat": 0.5}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().expect("detail").contains("rat"),
        "{body}"
    );
    let (status, body) = post(&mall, OPERATOR, json!({"target": {"partner": "voltmart", "endpont": "x"}, "fault": "error", "duration_s": 5})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["pointer"]
            .as_str()
            .is_some_and(|p| p.starts_with("/target")),
        "{body}"
    );
    for (body, pointer) in [
        (
            json!({"target": {"partner": "voltmart"}, "fault": "error", "duration_s": 100000}),
            "/duration_s",
        ),
        (
            json!({"target": {"partner": "voltmart"}, "fault": "error", "duration_s": 5, "rate": 2.0}),
            "/rate",
        ),
        (
            json!({"target": {"partner": "voltmart"}, "fault": "latency", "duration_s": 5}),
            "/latency_ms",
        ),
        (
            json!({"target": {"partner": "nobody"}, "fault": "error", "duration_s": 5}),
            "/target/partner",
        ),
        (
            json!({"target": {"partner": "voltmart", "endpoint": "http://10.0.0.1/"}, "fault": "error", "duration_s": 5}),
            "/target/endpoint",
        ),
    ] {
        let (status, answer) = post(&mall, OPERATOR, body).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["problems"][0]["pointer"], pointer, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_drills_itself_once_at_a_time_and_sees_only_its_own() {
    let mall = mall().await;
    // Its own partner: allowed, once at a time; it sees its own drills only.
    let own = json!({"target": {"partner": "threadline"}, "fault": "latency", "latency_ms": 50, "duration_s": 30});
    let (status, body) = post(&mall, THREADLINE, own.clone()).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let (status, body) = post(&mall, OPERATOR, own).await;
    assert_eq!(status, 409, "one drill per partner at a time: {body}");
    let (status, body) = post(
        &mall,
        OPERATOR,
        json!({"target": {"partner": "voltmart"}, "fault": "reset", "duration_s": 30}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let other = body["id"].as_str().expect("id").to_owned();
    let (_, list) = drill(
        &mall,
        THREADLINE,
        reqwest::Method::GET,
        "/admin/v1/drills",
        None,
    )
    .await;
    let ids: Vec<&str> = list["drills"]
        .as_array()
        .expect("drills")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{list}");
    let (status, _) = drill(
        &mall,
        THREADLINE,
        reqwest::Method::DELETE,
        &format!("/admin/v1/drills/{other}"),
        None,
    )
    .await;
    assert_eq!(status, 404, "another partner's drill is not there for it");
    for (token, id) in [(THREADLINE, &id), (OPERATOR, &other)] {
        let (status, _) = drill(
            &mall,
            token,
            reqwest::Method::DELETE,
            &format!("/admin/v1/drills/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let drills = mall
        .gateway
        .admin
        .as_ref()
        .expect("admin")
        .drills()
        .expect("drills");
    assert!(drills.faults().list().is_empty());
}

/// The CLI as a runbook or a CI gate uses it: a missed expectation is exit code 1, with
/// the report printed and the page written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exits_non_zero_on_a_missed_expectation() {
    let Some(binary) = support::mallgate_binary() else {
        panic!("the mallgate binary is built beside the tests");
    };
    let mall = mall().await;
    let admin = format!("http://{}", mall.gateway.admin_addr.expect("admin"));
    let html = std::env::temp_dir().join(format!(
        "mallgate-drill-{:x}.html",
        mallgate::cursor::random_u64()
    ));
    let mut cli = tokio::process::Command::new(binary)
        .args([
            "drill",
            "run",
            "--admin",
            &admin,
            "--token",
            "env:MG_DRILL_TOKEN",
        ])
        .args([
            "--target",
            "voltmart",
            "--fault",
            "error",
            "--duration",
            "3s",
        ])
        .args(["--expect-max-failed", "0", "--html"])
        .arg(&html)
        .env("MG_DRILL_TOKEN", OPERATOR)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the CLI runs");
    // Distinct searches while it runs: nothing cached, so Voltmart's answers fail.
    for i in 0..600 {
        if let Ok(Some(_)) = cli.try_wait() {
            break;
        }
        mall.get_owned(format!("/v1/products?q=cli{i}&limit=2"))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(240), cli.wait_with_output())
        .await
        .expect("the CLI ends")
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verdict: FAILED"), "{stdout}");
    assert!(stdout.contains("max_failed_answers"), "{stdout}");
    assert!(!stdout.contains(OPERATOR) && !String::from_utf8_lossy(&out.stderr).contains(OPERATOR));
    let page = std::fs::read_to_string(&html).expect("the page is written");
    let _ = std::fs::remove_file(&html);
    assert!(page.contains("<svg"), "{page}");
}
