//! Resilience end to end (DESIGN §7): the real gateway on pingora, the simulated fleet on
//! loopback, faults injected with the simulator's knobs and by stopping replicas. A
//! "frontend error" is any non-2xx answer. Outcomes are judged by status codes, source
//! outcomes, the gateway's endpoint report and the simulator's request counters, never by
//! timing; the few durations printed (time to detect, time to fail over) are figures for
//! the drill report, not assertions. Every load loop is bounded in count.

use mallgate_testkit as support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mallgate_partner_sim::{Faults, Partner};
use serde_json::Value;
use support::{Answer, Mall};

/// Voltmart's search route, as the simulator counts it.
const SEARCH: &str = "GET /v1/products";

fn voltmart_source(answer: &Answer) -> Value {
    answer.body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == "voltmart"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Voltmart's endpoint `n` in `/v1/partners`.
async fn endpoint(mall: &Mall, n: usize) -> Value {
    mall.partner_health("voltmart").await["connectors"][0]["endpoints"][n].clone()
}

/// The mall with Threadline's own rate limit (2/s, as its bucket demands) lifted: these
/// tests send hundreds of fresh searches and judge Voltmart, not Threadline's pacing.
async fn mall() -> Mall {
    Mall::start_with(unthrottled).await
}

fn unthrottled(partner: Partner, text: String) -> String {
    if partner == Partner::Threadline {
        text.replace("rate_limit_rps: 2 ", "rate_limit_rps: 10000 ")
    } else {
        text
    }
}

/// A search no cache has seen: every one is a partner call.
fn fresh_search(tag: &str, i: usize) -> String {
    format!("/v1/products?q={tag}{i}")
}

/// Stopping Voltmart's primary during a bounded load: no frontend error, Voltmart keeps
/// answering live from its standby, the primary is ejected, and the standby takes the
/// calls. Prints time-to-detect and time-to-failover for the drill report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_primary_fails_over_without_frontend_errors() {
    let mall = Arc::new(mall().await);
    const WORKERS: usize = 6;
    const PER_WORKER: usize = 30;
    const STOP_AFTER: usize = 40;
    let sent = Arc::new(AtomicUsize::new(0));
    let stopper = {
        let mall = Arc::clone(&mall);
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            for _ in 0..2000 {
                if sent.load(Ordering::Acquire) >= STOP_AFTER {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let standby_before = mall.replica_requests(Partner::Voltmart, 1, SEARCH);
            let stopped_at = Instant::now();
            mall.fleet
                .replica(Partner::Voltmart, 0)
                .expect("replica")
                .stop()
                .await;
            let mut failover = None;
            let mut detect = None;
            for _ in 0..500 {
                if failover.is_none()
                    && mall.replica_requests(Partner::Voltmart, 1, SEARCH) > standby_before
                {
                    failover = Some(stopped_at.elapsed());
                }
                if detect.is_none() && endpoint(&mall, 0).await["ejected"] == true {
                    detect = Some(stopped_at.elapsed());
                }
                if failover.is_some() && detect.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (detect, failover, sent.load(Ordering::Acquire))
        })
    };
    let workers = (0..WORKERS).map(|w| {
        let mall = Arc::clone(&mall);
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..PER_WORKER {
                sent.fetch_add(1, Ordering::AcqRel);
                let answer = mall.get(&fresh_search("failover", w * 1000 + i)).await;
                seen.push((answer.status, voltmart_source(&answer)));
            }
            seen
        })
    });
    let results: Vec<(u16, Value)> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flat_map(|r| r.expect("worker"))
        .collect();
    let (detect, failover, sent_at_stop) = stopper.await.expect("stopper");
    assert_eq!(results.len(), WORKERS * PER_WORKER);
    let errors: Vec<_> = results
        .iter()
        .filter(|(s, _)| !(200..300).contains(s))
        .collect();
    assert!(errors.is_empty(), "frontend errors: {errors:?}");
    for (_, source) in &results {
        assert_eq!(
            source["outcome"], "live",
            "Voltmart answered every search, before and after the stop: {source}"
        );
    }
    assert!(
        mall.replica_requests(Partner::Voltmart, 1, SEARCH) > 0,
        "the standby took calls"
    );
    let primary = endpoint(&mall, 0).await;
    assert_eq!(primary["ejected"], true, "{primary}");
    assert!(primary["failures"].as_u64().unwrap_or(0) >= 1, "{primary}");
    let guardrails = mall.partner_health("voltmart").await["health"]["guardrails"].clone();
    assert!(
        guardrails["failovers"].as_u64().unwrap_or(0) >= 1,
        "{guardrails}"
    );
    eprintln!(
        "drill: primary stopped after {sent_at_stop} requests; time-to-detect (ejected) {:?}, \
         time-to-failover (first call on the standby) {:?}; {} requests, 0 frontend errors",
        detect,
        failover,
        results.len()
    );
}

/// A hung partner: the answer is partial (`complete: false`) with Voltmart failed on a
/// timeout, and the other retailers still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_partner_is_a_timeout_outcome() {
    let mall = mall().await;
    mall.faults(
        Partner::Voltmart,
        Faults {
            hang: true,
            ..Faults::default()
        },
    );
    let answer = mall.get("/v1/products?q=hung&timeout_ms=2500").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["complete"], false);
    let source = voltmart_source(&answer);
    assert_eq!(source["outcome"], "failed", "{source}");
    assert_eq!(source["error"]["code"], "timeout", "{source}");
    assert_eq!(answer.outcome("threadline"), Some("live"));
}

/// Every endpoint down: what is cached is served marked `stale` (with the failure), and
/// only a query with nothing cached is `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_down_serves_stale_then_failed() {
    let mall = Mall::start_with(|partner, text| {
        let text = unthrottled(partner, text);
        if partner == Partner::Voltmart {
            // Fresh for 1 s, then usable only if the partner fails (stale-if-error).
            text.replace(
                "  hedge_after_ms: 150\n",
                "  hedge_after_ms: 150\n  cache: {ttl_s: 1, stale_while_revalidate_s: 0, stale_if_error_s: 600}\n",
            )
        } else {
            text
        }
    })
    .await;
    let warm = mall.get("/v1/products?q=headphones").await;
    assert_eq!(voltmart_source(&warm)["outcome"], "live");
    for r in mall.fleet.replicas(Partner::Voltmart) {
        r.stop().await;
    }
    // Wait out the 1 s TTL (a state to reach, not a speed to judge).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stale = mall.get("/v1/products?q=headphones").await;
    assert_eq!(stale.status, 200);
    let source = voltmart_source(&stale);
    assert_eq!(source["outcome"], "stale", "{source}");
    assert!(source["error"]["code"].is_string(), "{source}");
    assert_eq!(source["fetched_at"], voltmart_source(&warm)["fetched_at"]);
    assert_eq!(stale.body["complete"], false);
    let offers_from_voltmart = stale.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .flat_map(|p| p["variants"].as_array().into_iter().flatten())
        .flat_map(|v| v["offers"].as_array().into_iter().flatten())
        .filter(|o| o["provenance"]["partner_id"] == "voltmart")
        .count();
    assert!(offers_from_voltmart > 0, "the stale records are served");
    let cold = mall.get("/v1/products?q=nothing-cached-here").await;
    assert_eq!(voltmart_source(&cold)["outcome"], "failed");
}

/// A slow primary: after `hedge_after_ms` a hedge goes to the standby and the faster
/// answer wins; the hedge is counted (and paid for from the retry budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reads_are_hedged_to_the_standby() {
    let mall = mall().await;
    mall.replica_faults(
        Partner::Voltmart,
        0,
        Faults {
            latency_ms: 450,
            ..Faults::default()
        },
    );
    for i in 0..3 {
        let answer = mall.get(&fresh_search("hedge", i)).await;
        assert_eq!(voltmart_source(&answer)["outcome"], "live");
    }
    let guardrails = mall.partner_health("voltmart").await["health"]["guardrails"].clone();
    assert!(
        guardrails["hedges"].as_u64().unwrap_or(0) >= 1,
        "{guardrails}"
    );
    assert!(
        mall.replica_requests(Partner::Voltmart, 1, SEARCH) >= 1,
        "the standby answered hedges"
    );
}

/// A flapping endpoint: failing calls open its breaker (the standby answers meanwhile);
/// once the open time has passed it reports half-open, and the next call (the probe)
/// closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_endpoint_opens_and_closes_its_breaker() {
    let mall = mall().await;
    mall.replica_faults(
        Partner::Voltmart,
        0,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    let mut opened = false;
    for i in 0..40 {
        let answer = mall.get(&fresh_search("flap", i)).await;
        assert_eq!(answer.status, 200);
        if endpoint(&mall, 0).await["breaker"] == "open" {
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker opened: {}", endpoint(&mall, 0).await);
    // While open, calls skip the primary: its request count stays put.
    let primary_before = mall.replica_requests(Partner::Voltmart, 0, SEARCH);
    let answer = mall.get(&fresh_search("flap-open", 0)).await;
    assert_eq!(voltmart_source(&answer)["outcome"], "live");
    if endpoint(&mall, 0).await["breaker"] == "open" {
        assert_eq!(
            mall.replica_requests(Partner::Voltmart, 0, SEARCH),
            primary_before,
            "an open breaker sends nothing"
        );
    }

    // The endpoint recovers: after the open time the breaker is half-open, and the probe
    // closes it.
    mall.replica_faults(Partner::Voltmart, 0, Faults::default());
    let mut half_open = false;
    for _ in 0..100 {
        if endpoint(&mall, 0).await["breaker"] == "half_open" {
            half_open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        half_open,
        "half-open after its time: {}",
        endpoint(&mall, 0).await
    );
    let mut closed = false;
    for i in 0..20 {
        let answer = mall.get(&fresh_search("flap-probe", i)).await;
        assert_eq!(answer.status, 200);
        if endpoint(&mall, 0).await["breaker"] == "closed" {
            closed = true;
            break;
        }
    }
    let report = endpoint(&mall, 0).await;
    assert!(closed, "the probe closed it: {report}");
    assert!(report["breaker_opened_total"].as_u64().unwrap_or(0) >= 1);
}

/// A full outage (every replica answers 500) is not amplified: the partner receives at most
/// 1.1 times the calls plus the budget's small reserve, and every answer is still a 2xx
/// from the other retailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_outage_costs_at_most_the_retry_budget() {
    let mall = mall().await;
    mall.faults(
        Partner::Voltmart,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    const CALLS: usize = 120;
    let before = mall.requests(Partner::Voltmart, SEARCH);
    for chunk in 0..CALLS / 4 {
        let answers = futures_util::future::join_all(
            (0..4).map(|k| mall.get_owned(fresh_search("outage", chunk * 4 + k))),
        )
        .await;
        for answer in answers {
            assert_eq!(answer.status, 200, "{:?}", answer.body);
            assert_eq!(voltmart_source(&answer)["outcome"], "failed");
        }
    }
    let received = mall.requests(Partner::Voltmart, SEARCH) - before;
    // The budget: 10% of the calls, plus a reserve of 1 retry per second over its 10 s
    // window (and 2 for the breakers' half-open probes).
    let bound = (CALLS as f64 * 1.1) as u64 + 12;
    eprintln!(
        "outage: {CALLS} calls, the partner received {received} requests ({:.2}x)",
        received as f64 / CALLS as f64
    );
    assert!(received >= 1);
    assert!(
        received <= bound,
        "{received} requests for {CALLS} calls (at most {bound})"
    );
}

/// A 429 storm is honoured, not amplified: after the first 429 the partner is left alone
/// for its `Retry-After`, and the sources say `rate_limited` with the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_storm_is_honoured() {
    let mall = mall().await;
    mall.faults(
        Partner::Voltmart,
        Faults {
            rate_limit_rate: 1.0,
            retry_after_s: 30,
            ..Faults::default()
        },
    );
    let before = mall.requests(Partner::Voltmart, SEARCH);
    let mut answers = Vec::new();
    for chunk in 0..10 {
        answers.extend(
            futures_util::future::join_all(
                (0..4).map(|k| mall.get_owned(fresh_search("storm", chunk * 4 + k))),
            )
            .await,
        );
    }
    let received = mall.requests(Partner::Voltmart, SEARCH) - before;
    assert!(
        (1..=8).contains(&received),
        "40 calls, the partner saw {received} requests (at most one wave of 4, and their hedges)"
    );
    for answer in &answers {
        assert_eq!(answer.status, 200);
        let source = voltmart_source(answer);
        assert_eq!(source["error"]["code"], "rate_limited", "{source}");
        assert!(
            source["error"]["retry_after_s"].as_u64().unwrap_or(0) >= 1,
            "{source}"
        );
    }
}

/// Overload: beyond `max_in_flight` requests are shed at once with 503 + `Retry-After`,
/// while the admitted ones succeed; a client over its rate gets 429, another client not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_while_admitted_requests_succeed() {
    let mall = Mall::start_configured(unthrottled, |config| {
        config.admission.max_in_flight = 2;
        config.admission.client_rps = Some(0.2);
        config.admission.client_burst = Some(5);
    })
    .await;
    mall.faults(
        Partner::Voltmart,
        Faults {
            latency_ms: 1500,
            ..Faults::default()
        },
    );
    let answers = futures_util::future::join_all((0..8).map(|i| {
        mall.get_with_owned(
            fresh_search("overload", i),
            ("x-api-key", format!("client-{i}")),
        )
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let shed: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!(ok + shed.len(), answers.len(), "only 200 or 503");
    assert!(ok >= 1, "admitted requests succeed");
    assert!(!shed.is_empty(), "beyond 2 in flight: shed");
    for a in shed {
        assert_eq!(a.header("retry-after"), Some("1"));
        assert_eq!(a.body["type"], "https://mallgate.dev/problems/overloaded");
    }

    // One client's burst of 5 is spent after 5 requests; another client is unaffected (the
    // address's own bucket is four times as large).
    mall.faults(Partner::Voltmart, Faults::default());
    let key = ("x-api-key", "greedy");
    for _ in 0..5 {
        assert_eq!(mall.get_with("/v1/partners", key).await.status, 200);
    }
    let limited = mall.get_with("/v1/partners", key).await;
    assert_eq!(limited.status, 429, "{:?}", limited.body);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(
        limited.body["type"],
        "https://mallgate.dev/problems/rate-limited"
    );
    assert_eq!(
        mall.get_with("/v1/partners", ("x-api-key", "modest"))
            .await
            .status,
        200
    );
    assert_eq!(
        mall.get("/healthz").await.status,
        200,
        "liveness is never refused"
    );
}
