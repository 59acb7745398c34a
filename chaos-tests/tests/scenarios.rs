//! The scenario suite (DESIGN §8): each scenario breaks a partner under bounded load —
//! with a drill (the fault injected in the partner stack after the real endpoint is
//! chosen), with the simulator's knobs, or with the fault proxy below HTTP (then an
//! `observe` drill measures) — asserts the frontend promises (no non-2xx while any source
//! answers, stale served when cached, retry amplification within the budget) and keeps
//! its report, JSON and HTML, in `target/chaos-reports/` (CI prints them).
//!
//! Amplification: every attempt beyond an exchange's first is paid from the retry budget —
//! 10% of the exchanges of the last 10 s plus tower's reserve (one per second over its
//! 10 s window, available at once) — so on a fresh gateway and a drill shorter than the
//! window, the bound a scenario asserts is `1.1 + 10 / exchanges` (plus 10% of any
//! exchanges just before the drill, over the drill's).

use std::time::Duration;

use mallgate_chaos_tests::proxy::{FaultProxy, Toxics};
use mallgate_chaos_tests::scenario::{
    self, drill_under_load, fresh, keep, mall, mall_behind, promises, start, under_load,
};
use mallgate_partner_sim::{Faults, Partner};
use serde_json::{Value, json};

/// The retry budget's bound over a drill's exchanges, with `before` exchanges in the
/// 10 s before it (each scenario starts on a fresh gateway): 10% of all of them plus
/// tower's reserve (one retry per second over its 10 s window, available at once; the
/// drills are shorter than the window).
fn budget_after(report: &Value, before: f64) -> f64 {
    let calls = report["figures"]["exchanges"]
        .as_f64()
        .unwrap_or(1.0)
        .max(1.0);
    1.0 + (10.0 + 0.1 * (calls + before)) / calls
}

fn budget(report: &Value) -> f64 {
    budget_after(report, 0.0)
}

fn primary_of(mall: &mallgate_testkit::Mall) -> String {
    let url = mall.fleet.url(Partner::Voltmart, 0).expect("replica");
    format!("{}/", url.trim_end_matches('/'))
}

/// Voltmart's primary blackholed (a kill as the client sees it: no answer) under load:
/// the hedge and then the breaker move the calls to the standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_blackholed_under_load() {
    let mall = mall(|_, t| t).await;
    mall.wait_until_probed().await;
    let (report, load) = drill_under_load(
        &mall,
        "primary-blackholed",
        &json!({
            "target": {"partner": "voltmart", "endpoint": primary_of(&mall)},
            "fault": "blackhole", "duration_s": 4,
            "expect": {"max_frontend_errors": 0},
        }),
        (4, 600),
        fresh(&mall, "bh"),
    )
    .await;
    promises(&report, &load, budget(&report));
    assert!(report["figures"]["time_to_detect_ms"].is_u64(), "{report}");
    assert!(
        report["figures"]["time_to_failover_ms"].is_u64(),
        "{report}"
    );
    assert!(load.count("voltmart", "live") > load.count("voltmart", "failed"));
}

/// A brown-out: the primary answers 400 ms late, above the 150 ms hedge delay and below
/// the 600 ms timeout. Hedges go to the standby within the budget; nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brown_out_above_the_hedge_delay() {
    let mall = mall(|_, t| t).await;
    mall.wait_until_probed().await;
    let (report, load) = drill_under_load(
        &mall,
        "brown-out",
        &json!({
            "target": {"partner": "voltmart", "endpoint": primary_of(&mall)},
            "fault": "latency", "latency_ms": 400, "duration_s": 5,
            "expect": {"max_frontend_errors": 0},
        }),
        (8, 800),
        fresh(&mall, "slow"),
    )
    .await;
    promises(&report, &load, budget(&report));
    // Slow, not broken: the answers come (a loaded CI machine may push one past 600 ms).
    let (live, failed) = (
        load.count("voltmart", "live"),
        load.count("voltmart", "failed"),
    );
    assert!(
        failed * 10 <= live,
        "live {live}, failed {failed}: {report}"
    );
    assert!(
        report["figures"]["time_to_failover_ms"].is_u64(),
        "hedged: {report}"
    );
}

/// An endpoint that flaps below HTTP: the fault proxy resets every connection for 400 ms,
/// then lets them through for 400 ms, over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_endpoint_through_the_fault_proxy() {
    let proxy = FaultProxy::start(None).await.expect("proxy");
    let mall = mall_behind(&proxy, Partner::Voltmart, "url: ").await;
    mall.wait_until_probed().await;
    let id = start(
        &mall,
        &json!({
            "target": {"partner": "voltmart"}, "fault": "observe", "duration_s": 4,
            "expect": {"max_frontend_errors": 0},
        }),
    )
    .await;
    let flap = async {
        for i in 0..10u32 {
            proxy.set(Toxics {
                reset_peer: i.is_multiple_of(2),
                ..Toxics::default()
            });
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        proxy.clear();
    };
    let ((report, load), ()) =
        tokio::join!(under_load(&mall, &id, 4, 600, fresh(&mall, "flap")), flap);
    keep(&mall, "flapping-endpoint", &id, &report).await;
    promises(&report, &load, budget(&report));
    assert!(
        proxy
            .stats
            .resets
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

/// A 429 storm on the whole partner: honoured (no retry into a 429), answered from what
/// is there, nothing amplified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_storm() {
    let mall = mall(|_, t| t).await;
    let (report, load) = drill_under_load(
        &mall,
        "rate-limit-storm",
        &json!({
            "target": {"partner": "voltmart"}, "fault": "rate_limited", "duration_s": 3,
            "expect": {"max_frontend_errors": 0, "max_amplification": 1.1},
        }),
        (4, 400),
        fresh(&mall, "storm"),
    )
    .await;
    promises(&report, &load, 1.1);
    assert!(load.count("threadline", "live") > 0);
}

/// Garbage (a 200 that is not the dialect) from a drill, then a drifted dialect from the
/// simulator: the partner's answers fail alone, nothing garbled is served or cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_drifted_payloads() {
    let mall = mall(|_, t| t).await;
    let (report, load) = drill_under_load(
        &mall,
        "garbage-payloads",
        &json!({
            "target": {"partner": "voltmart"}, "fault": "garbage", "duration_s": 3,
            "expect": {"max_frontend_errors": 0},
        }),
        (4, 400),
        fresh(&mall, "junk"),
    )
    .await;
    promises(&report, &load, budget(&report));
    // Garbage is never an answer (a call started just before the fault's end may still
    // get its attempt after it, a real answer: at most a handful).
    let during = &report["figures"]["answers_while_on"];
    let (live, failed) = (during["live"].as_u64(), during["failed"].as_u64());
    assert!(
        live.zip(failed).is_some_and(|(l, f)| f > 0 && l * 20 <= f),
        "{report}"
    );

    mall.faults(
        Partner::Voltmart,
        Faults {
            drift: true,
            ..Faults::default()
        },
    );
    let (report, load) = drill_under_load(
        &mall,
        "drifted-payloads",
        &json!({
            "target": {"partner": "voltmart"}, "fault": "observe", "duration_s": 3,
            "expect": {"max_frontend_errors": 0},
        }),
        (4, 400),
        fresh(&mall, "drift"),
    )
    .await;
    promises(&report, &load, budget(&report));
    assert!(load.count("threadline", "live") > 0);
}

/// Swiftship's token endpoint blackholed behind the fault proxy: the token the gateway
/// holds carries the calls on; rate quotes keep their other carriers either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_outage() {
    let proxy = FaultProxy::start(None).await.expect("proxy");
    let mall = mall_behind(&proxy, Partner::SwiftShip, "token_url: ").await;
    mall.wait_until_probed().await;
    proxy.set(Toxics {
        blackhole: true,
        ..Toxics::default()
    });
    let id = start(
        &mall,
        &json!({
            "target": {"partner": "swiftship"}, "fault": "observe", "duration_s": 3,
            "expect": {"max_frontend_errors": 0, "max_failed_answers": 0},
        }),
    )
    .await;
    let body = json!({"from": {"postal_code": "10001", "country": "US"},
                      "to": {"postal_code": "94103", "country": "US"},
                      "parcels": [{"weight_g": 1200}]});
    let quote = |i: usize| {
        let mut b = body.clone();
        b["parcels"][0]["weight_g"] = json!(1000 + i);
        let mall = &mall;
        async move { mall.post_json("/v1/shipping/rates", &b).await }
    };
    let (report, load) = under_load(&mall, &id, 2, 200, quote).await;
    keep(&mall, "token-endpoint-outage", &id, &report).await;
    promises(&report, &load, budget(&report));
    assert!(
        load.count("swiftship", "live") > 0,
        "the held token carries on"
    );
}

/// A slow drip below HTTP: the primary's reply trickles out 32 bytes every 40 ms, past the
/// attempt timeout; hedges and then the breaker move the calls to the standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_drip_through_the_fault_proxy() {
    let proxy = FaultProxy::start(None).await.expect("proxy");
    let mall = mall_behind(&proxy, Partner::Voltmart, "url: ").await;
    mall.wait_until_probed().await;
    proxy.set(Toxics {
        slice_bytes: 32,
        slice_delay: Duration::from_millis(40),
        ..Toxics::default()
    });
    let id = start(
        &mall,
        &json!({
            "target": {"partner": "voltmart"}, "fault": "observe", "duration_s": 5,
            "expect": {"max_frontend_errors": 0},
        }),
    )
    .await;
    let (report, load) = under_load(&mall, &id, 8, 800, fresh(&mall, "drip")).await;
    proxy.clear();
    keep(&mall, "slow-drip", &id, &report).await;
    promises(&report, &load, budget(&report));
    assert!(load.count("voltmart", "live") > 0, "the standby answers");
}

/// Every endpoint down (a drill on the whole partner): cached queries are served stale,
/// queries with nothing cached fail alone, the mall answers 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_down_with_and_without_cached_data() {
    let mall = mall(|p, t| {
        if p == Partner::Voltmart {
            // Fresh for 1 s, then usable only if the partner fails (stale-if-error).
            t.replace(
                "  hedge_after_ms: 150\n",
                "  hedge_after_ms: 150\n  cache: {ttl_s: 1, stale_while_revalidate_s: 0, stale_if_error_s: 600}\n",
            )
        } else {
            t
        }
    })
    .await;
    for i in 0..4 {
        let a = mall
            .get_owned(format!("/v1/products?q=warm{i}&limit=2"))
            .await;
        assert_eq!(a.outcome("voltmart"), Some("live"), "{}", a.body);
    }
    // Past the 1 s TTL (a state to reach, not a speed to judge).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let id = start(
        &mall,
        &json!({
            "target": {"partner": "voltmart"}, "fault": "blackhole", "duration_s": 4,
            "expect": {"max_frontend_errors": 0},
        }),
    )
    .await;
    let mixed = |i: usize| {
        let path = if i.is_multiple_of(2) {
            format!("/v1/products?q=warm{}&limit=2", (i / 2) % 4)
        } else {
            format!("/v1/products?q=cold{i}&limit=2")
        };
        let mall = &mall;
        async move { mall.get_owned(path).await }
    };
    let (report, load) = under_load(&mall, &id, 4, 300, mixed).await;
    keep(&mall, "every-endpoint-down", &id, &report).await;
    // The four warming calls earned budget too.
    promises(&report, &load, budget_after(&report, 4.0));
    assert!(
        load.count("voltmart", "stale") > 0,
        "stale served when cached: {report}"
    );
    assert!(
        load.count("voltmart", "failed") > 0,
        "nothing cached: failed alone"
    );
    assert!(
        report["figures"]["time_to_failover_ms"].is_u64(),
        "the first stale answer: {report}"
    );
}

/// Voltmart's primary process killed under load (the simulator's replica stopped), an
/// `observe` drill measuring: the standby takes the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_under_load() {
    let mall = mall(|_, t| t).await;
    mall.wait_until_probed().await;
    let id = start(
        &mall,
        &json!({
            "target": {"partner": "voltmart"}, "fault": "observe", "duration_s": 4,
            "expect": {"max_frontend_errors": 0},
        }),
    )
    .await;
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        mall.fleet
            .replica(Partner::Voltmart, 0)
            .expect("replica")
            .stop()
            .await;
        // The primary stays down, so recovery never comes: once the fault window is
        // over, the drill is aborted instead of waiting out its recovery bound.
        tokio::time::sleep(Duration::from_millis(4000)).await;
        let path = format!("/admin/v1/drills/{id}");
        let token = scenario::OPERATOR;
        mallgate_testkit::admin::admin_send(
            &mall,
            reqwest::Method::DELETE,
            &path,
            token,
            &[],
            None,
        )
        .await;
    };
    let ((report, load), ()) =
        tokio::join!(under_load(&mall, &id, 4, 600, fresh(&mall, "kill")), kill);
    keep(&mall, "primary-killed", &id, &report).await;
    assert_eq!(report["state"], "aborted", "{report}");
    assert!(
        report["figures"]["time_to_recover_ms"].is_null(),
        "never recovered: {report}"
    );
    assert_eq!(load.non_2xx(), 0, "{report}");
    assert!(report["figures"]["time_to_detect_ms"].is_u64(), "{report}");
    assert!(load.count("voltmart", "live") > load.count("voltmart", "failed"));
}
