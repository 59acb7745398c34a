//! Every layer of the partner stack under paused time, around scripted services (a
//! `service_fn` that answers what the test says, and counts), then the composed stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use url::Url;

use super::admission::{BlockLayer, DeadlineLayer, RateLayer};
use super::endpoint::{AttemptTimeoutLayer, BreakerLayer, Select};
use super::hedge::HedgeLayer;
use super::retry::RetryPolicy;
use super::*;
use crate::runtime::guard::LoopbackOnly;
use crate::runtime::resilience::{BreakerState, EndpointState};
use crate::spec::RetryPolicy as RetrySpec;

const BASE: &str = "http://127.0.0.1:9/api";

/// What a scripted service answers on one call.
type Answer = fn() -> Result<Reply, ConnectorError>;

fn reply(status: u16) -> Reply {
    Reply {
        status: StatusCode::from_u16(status).expect("status"),
        headers: HeaderMap::new(),
        body: b"{}".to_vec(),
    }
}

fn connect_refused() -> ConnectorError {
    ConnectorError::Transport {
        url: BASE.into(),
        reason: "connection refused".into(),
        connect: true,
    }
}

fn exchange(idempotent: bool, deadline_in: Duration) -> Exchange {
    let url = Url::parse(&format!("{BASE}/products")).expect("url");
    Exchange {
        prepared: Arc::new(Prepared {
            client: reqwest::Client::new(),
            method: reqwest::Method::GET,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            auth: crate::runtime::auth::Applied::None,
            templated: true,
        }),
        url,
        rest: Some("/products".into()),
        idempotent,
        deadline: Instant::now() + deadline_in,
        trace: Arc::new(Trace::default()),
        capability: None,
    }
}

fn shared(policies: &Policies) -> Arc<AdmissionState> {
    Arc::new(AdmissionState::new(
        policies,
        &ResilienceSettings::default(),
        Arc::default(),
        &super::FleetShare::default(),
    ))
}

/// A service answering from `script` by call number (the last entry repeats), after
/// `delay` per call; counts its calls.
fn scripted<R: Send + 'static>(
    calls: &Arc<AtomicU32>,
    delay: Vec<Duration>,
    script: Vec<Answer>,
) -> impl Service<R, Response = Reply, Error = ConnectorError, Future: Send> + Clone + Send + 'static
{
    let calls = Arc::clone(calls);
    let delay: Arc<[Duration]> = delay.into();
    let script: Arc<[Answer]> = script.into();
    service_fn(move |_: R| {
        let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
        let wait = delay.get(n).or(delay.last()).copied().unwrap_or_default();
        let answer = script[n.min(script.len() - 1)];
        async move {
            tokio::time::sleep(wait).await;
            answer()
        }
    })
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_exchange() {
    let calls = Arc::new(AtomicU32::new(0));
    let slow = scripted(
        &calls,
        vec![Duration::from_secs(10)],
        vec![|| Ok(reply(200))],
    );
    let mut service = ServiceBuilder::new().layer(DeadlineLayer).service(slow);
    let started = Instant::now();
    let result = service
        .ready()
        .await
        .expect("ready")
        .call(exchange(true, Duration::from_secs(1)))
        .await;
    assert!(
        matches!(result, Err(ConnectorError::DeadlineExceeded { .. })),
        "{result:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    let late = exchange(true, Duration::ZERO);
    let result = service.ready().await.expect("ready").call(late).await;
    assert!(matches!(
        result,
        Err(ConnectorError::DeadlineExceeded { .. })
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a passed deadline sends nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_blocks_the_connector_for_its_retry_after() {
    let calls = Arc::new(AtomicU32::new(0));
    let shared = shared(&Policies::default());
    let partner = {
        let calls = Arc::clone(&calls);
        service_fn(move |_: Exchange| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut r = reply(if n == 0 { 429 } else { 200 });
                r.headers
                    .insert("retry-after", HeaderValue::from_static("3"));
                Ok::<_, ConnectorError>(r)
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(BlockLayer::new(Arc::clone(&shared)))
        .service(partner);
    let long = Duration::from_secs(30);
    let first = service
        .clone()
        .oneshot(exchange(true, long))
        .await
        .expect("a reply");
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    let blocked = service.clone().oneshot(exchange(true, long)).await;
    match blocked {
        Err(ConnectorError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
        }
        other => panic!("expected a block, got {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "nothing sent while blocked"
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    let after = service
        .oneshot(exchange(true, long))
        .await
        .expect("a reply");
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(shared.counters.rate_limited.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn full_concurrency_sheds_at_once() {
    let policies = Policies {
        max_concurrency: 2,
        ..Policies::default()
    };
    let shared = shared(&policies);
    let calls = Arc::new(AtomicU32::new(0));
    let slow = scripted(
        &calls,
        vec![Duration::from_secs(5)],
        vec![|| Ok(reply(200))],
    );
    let service = ServiceBuilder::new()
        .map_err(super::admission_error(Arc::clone(&shared)))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            Arc::clone(&shared.slots.slots),
        ))
        .service(slow);
    let long = Duration::from_secs(30);
    let a = tokio::spawn(service.clone().oneshot(exchange(true, long)));
    let b = tokio::spawn(service.clone().oneshot(exchange(true, long)));
    tokio::task::yield_now().await;
    let third = service.clone().oneshot(exchange(true, long)).await;
    assert!(
        matches!(third, Err(ConnectorError::Shed { limit: 2 })),
        "{third:?}"
    );
    assert!(a.await.expect("task").is_ok() && b.await.expect("task").is_ok());
    let fourth = service.oneshot(exchange(true, long)).await;
    assert!(fourth.is_ok(), "slots are back: {fourth:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        shared.counters.shed.load(Ordering::Relaxed),
        1,
        "a shed is counted"
    );
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_paces_and_refuses_past_half_the_time_left() {
    let policies = Policies {
        rate_limit_rps: Some(2.0),
        rate_limit_burst: Some(2),
        ..Policies::default()
    };
    let shared = shared(&policies);
    let calls = Arc::new(AtomicU32::new(0));
    let partner = scripted(&calls, vec![Duration::ZERO], vec![|| Ok(reply(200))]);
    let service = ServiceBuilder::new()
        .layer(RateLayer::new(Arc::clone(&shared)))
        .service(partner);
    let long = Duration::from_secs(30);
    for _ in 0..2 {
        service
            .clone()
            .oneshot(exchange(true, long))
            .await
            .expect("the burst");
    }
    let started = Instant::now();
    service
        .clone()
        .oneshot(exchange(true, long))
        .await
        .expect("waits its turn");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(500),
        "one token per 500 ms"
    );
    // 500 ms to wait, 600 ms left: half of that is too little patience.
    let refused = service
        .oneshot(exchange(true, Duration::from_millis(600)))
        .await;
    match refused {
        Err(ConnectorError::RateLimited { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_millis(500)));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(shared.counters.rate_limited.load(Ordering::Relaxed), 1);
}

fn retrying(
    shared: &Arc<AdmissionState>,
    calls: &Arc<AtomicU32>,
    script: Vec<Answer>,
) -> impl Service<Exchange, Response = Reply, Error = ConnectorError, Future: Send>
+ Clone
+ Send
+ 'static {
    let spec = RetrySpec {
        max_attempts: 3,
        backoff_ms: 25,
        budget_percent: None,
    };
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryPolicy::new(
            Arc::clone(shared),
            &spec,
        )))
        .service(scripted(calls, vec![Duration::ZERO], script))
}

#[tokio::test(start_paused = true)]
async fn retries_are_for_idempotent_retryable_failures_within_the_budget() {
    let shared = shared(&Policies::default());
    let long = Duration::from_secs(30);
    let calls = Arc::new(AtomicU32::new(0));
    let flaky = retrying(&shared, &calls, vec![|| Ok(reply(503)), || Ok(reply(200))]);
    let started = Instant::now();
    let ok = flaky.oneshot(exchange(true, long)).await.expect("a reply");
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(25),
        "after the back-off"
    );

    for (idempotent, script, why) in [
        (
            false,
            (|| Ok(reply(503))) as fn() -> _,
            "a write is never retried",
        ),
        (true, || Ok(reply(429)), "a 429 is honoured, not retried"),
        (true, || Ok(reply(404)), "a 4xx is an answer"),
        (
            true,
            || {
                Err(ConnectorError::Unauthorized {
                    url: BASE.into(),
                    status: 401,
                })
            },
            "the same credentials give the same answer",
        ),
    ] {
        let calls = Arc::new(AtomicU32::new(0));
        let service = retrying(&shared, &calls, vec![script]);
        let _ = service.oneshot(exchange(idempotent, long)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{why}");
    }

    let calls = Arc::new(AtomicU32::new(0));
    let down = retrying(&shared, &calls, vec![|| Err(connect_refused())]);
    let _ = down.oneshot(exchange(true, long)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "max_attempts, the first included"
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_runs_out() {
    // 0% of exchanges and no reserve: no retry at all.
    let policies = Policies {
        retry: RetrySpec {
            budget_percent: Some(0),
            ..RetrySpec::default()
        },
        ..Policies::default()
    };
    let config = ResilienceSettings {
        retry_reserve_per_s: 0,
        ..ResilienceSettings::default()
    };
    let shared = Arc::new(AdmissionState::new(
        &policies,
        &config,
        Arc::default(),
        &super::FleetShare::default(),
    ));
    let calls = Arc::new(AtomicU32::new(0));
    let flaky = retrying(&shared, &calls, vec![|| Ok(reply(503)), || Ok(reply(200))]);
    let result = flaky.oneshot(exchange(true, Duration::from_secs(30))).await;
    assert_eq!(
        result.expect("a reply").status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(shared.counters.budget_refused.load(Ordering::Relaxed), 1);
    assert_eq!(shared.counters.exchanges.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_read_is_hedged_and_the_first_good_answer_wins() {
    let shared = shared(&Policies::default());
    let calls = Arc::new(AtomicU32::new(0));
    // The first call takes 2 s, the hedge answers at once.
    let partner = scripted(
        &calls,
        vec![Duration::from_secs(2), Duration::ZERO],
        vec![|| Ok(reply(200))],
    );
    let service = ServiceBuilder::new()
        .layer(HedgeLayer::new(
            Arc::clone(&shared),
            &Policies {
                hedge_after_ms: Some(150),
                ..Policies::default()
            },
        ))
        .service(partner);
    let started = Instant::now();
    let ok = service
        .clone()
        .oneshot(exchange(true, Duration::from_secs(5)))
        .await
        .expect("a reply");
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(150),
        "the hedge answered"
    );
    assert_eq!(shared.counters.hedges.load(Ordering::Relaxed), 1);

    let before = calls.load(Ordering::SeqCst);
    let _ = service
        .oneshot(exchange(false, Duration::from_secs(5)))
        .await;
    assert_eq!(
        calls.load(Ordering::SeqCst) - before,
        1,
        "writes are never hedged"
    );
}

fn state(url: &str, failures: u32) -> Arc<EndpointState> {
    let config = ResilienceSettings {
        breaker_failures: failures,
        ..ResilienceSettings::default()
    };
    Arc::new(EndpointState::new("test", url, &config))
}

fn attempt(probe: bool) -> Attempt {
    let exchange = exchange(true, Duration::from_secs(30));
    Attempt {
        target: exchange.url.clone(),
        exchange,
        timeout: None,
        probe,
    }
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_refuses_and_gives_back_an_abandoned_probe() {
    let endpoint = state(BASE, 2);
    let calls = Arc::new(AtomicU32::new(0));
    let failing = ServiceBuilder::new()
        .layer(BreakerLayer::new(Arc::clone(&endpoint)))
        .service(scripted(
            &calls,
            vec![Duration::ZERO],
            vec![|| Ok(reply(500))],
        ));
    for _ in 0..2 {
        let _ = failing.clone().oneshot(attempt(false)).await;
    }
    assert_eq!(endpoint.breaker.state(), BreakerState::Open);
    let refused = failing.clone().oneshot(attempt(false)).await;
    assert!(
        matches!(refused, Err(ConnectorError::NoEndpoint)),
        "{refused:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "an open breaker sends nothing"
    );

    // After the open time one probe may go; a probe that is dropped (a hedge lost the
    // race, a deadline) gives the slot back.
    tokio::time::advance(Duration::from_secs(2)).await;
    let hung = ServiceBuilder::new()
        .layer(BreakerLayer::new(Arc::clone(&endpoint)))
        .service(scripted(
            &calls,
            vec![Duration::from_secs(60)],
            vec![|| Ok(reply(200))],
        ));
    let probe = tokio::spawn(hung.clone().oneshot(attempt(false)));
    tokio::task::yield_now().await;
    assert!(!endpoint.breaker.would_admit(), "the probe is out");
    probe.abort();
    let _ = probe.await;
    assert!(
        endpoint.breaker.would_admit(),
        "the abandoned probe was given back"
    );

    // A health probe passes the open breaker and its failure counts like a call's.
    let before = endpoint.breaker.opened_total();
    let health = failing.oneshot(attempt(true)).await;
    assert_eq!(health.expect("a reply").status.as_u16(), 500);
    assert_eq!(endpoint.breaker.state(), BreakerState::Open);
    assert_eq!(
        endpoint.breaker.opened_total(),
        before + 1,
        "reopened by the probe"
    );
    assert_eq!(
        endpoint.requests.load(Ordering::Relaxed),
        2,
        "a health probe is not a call"
    );
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_is_the_policy_cut_to_the_deadline() {
    let calls = Arc::new(AtomicU32::new(0));
    let slow = ServiceBuilder::new()
        .layer(AttemptTimeoutLayer::new(Duration::from_millis(800)))
        .service(scripted(
            &calls,
            vec![Duration::from_secs(5)],
            vec![|| Ok(reply(200))],
        ));
    match slow.clone().oneshot(attempt(false)).await {
        Err(ConnectorError::Timeout { timeout_ms, .. }) => assert_eq!(timeout_ms, 800),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let mut short = attempt(false);
    short.exchange.deadline = Instant::now() + Duration::from_millis(300);
    match slow.oneshot(short).await {
        Err(ConnectorError::Timeout { timeout_ms, .. }) => assert_eq!(timeout_ms, 300),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// Two routes of one priority group at `BASE` and `BASE`2, with scripted endpoints.
fn routes(states: &[Arc<EndpointState>], priorities: &[u32]) -> Arc<[Route]> {
    states
        .iter()
        .zip(priorities)
        .map(|(state, priority)| Route {
            state: Arc::clone(state),
            base: Url::parse(&state.url).expect("url"),
            priority: *priority,
            weight: 1,
        })
        .collect()
}

fn endpoint_of(
    state: &Arc<EndpointState>,
    calls: &Arc<AtomicU32>,
    script: Answer,
) -> EndpointStack {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(BreakerLayer::new(Arc::clone(state)))
            .layer(AttemptTimeoutLayer::new(Duration::from_millis(800)))
            .service(scripted(calls, vec![Duration::ZERO], vec![script])),
    )
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_fails_over_for_free_and_priority_decides() {
    let (primary, standby) = (state(BASE, 5), state("http://127.0.0.2:9/api", 5));
    let (to_primary, to_standby) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let policies = Policies::default();
    let shared = shared(&policies);
    let parts = StackParts {
        shared: Arc::clone(&shared),
        policies,
        routes: routes(&[Arc::clone(&primary), Arc::clone(&standby)], &[0, 1]),
        endpoints: vec![
            endpoint_of(&primary, &to_primary, || Err(connect_refused())),
            endpoint_of(&standby, &to_standby, || Ok(reply(200))),
        ]
        .into(),
        elsewhere: endpoint_of(
            &state("http://127.0.0.3:9", 5),
            &Arc::new(AtomicU32::new(0)),
            || Ok(reply(200)),
        ),
        guard: Arc::new(LoopbackOnly),
    };
    let stack = build(parts.clone());
    for _ in 0..3 {
        let e = exchange(true, Duration::from_secs(30));
        let trace = Arc::clone(&e.trace);
        let ok = stack.clone().oneshot(e).await.expect("the standby answers");
        assert_eq!(ok.status, StatusCode::OK);
        assert!(trace.endpoint().is_some_and(|e| e.contains("127.0.0.2")));
    }
    // Two refusals eject the primary: the third exchange goes straight to the standby.
    assert_eq!(to_primary.load(Ordering::SeqCst), 2);
    assert_eq!(to_standby.load(Ordering::SeqCst), 3);
    assert_eq!(shared.counters.failovers.load(Ordering::Relaxed), 2);
    assert_eq!(
        shared.counters.retries.load(Ordering::Relaxed),
        0,
        "failovers are free"
    );
    assert_eq!(shared.counters.exchanges.load(Ordering::Relaxed), 3);

    // Nothing available at all: no endpoint.
    let select = Select::new(
        routes(&[Arc::clone(&primary)], &[0]),
        vec![endpoint_of(
            &primary,
            &to_primary,
            || Err(connect_refused()),
        )]
        .into(),
        parts.elsewhere.clone(),
        Arc::new(LoopbackOnly),
        Arc::clone(&shared),
    );
    let none = select
        .oneshot(exchange(true, Duration::from_secs(30)))
        .await;
    assert!(matches!(none, Err(ConnectorError::NoEndpoint)), "{none:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_needs_a_rate_token() {
    let policies = Policies {
        rate_limit_rps: Some(1.0),
        rate_limit_burst: Some(1),
        ..Policies::default()
    };
    let shared = shared(&policies);
    let calls = Arc::new(AtomicU32::new(0));
    let flaky = ServiceBuilder::new()
        .layer(RateLayer::new(Arc::clone(&shared)))
        .service(retrying(
            &shared,
            &calls,
            vec![|| Ok(reply(503)), || Ok(reply(200))],
        ));
    let result = flaky.oneshot(exchange(true, Duration::from_secs(30))).await;
    assert_eq!(
        result.expect("a reply").status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the burst was the first attempt's"
    );
    assert_eq!(shared.counters.retries.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_needs_a_free_slot() {
    let policies = Policies {
        max_concurrency: 1,
        hedge_after_ms: Some(150),
        ..Policies::default()
    };
    let shared = shared(&policies);
    let calls = Arc::new(AtomicU32::new(0));
    let partner = scripted(
        &calls,
        vec![Duration::from_secs(2), Duration::ZERO],
        vec![|| Ok(reply(200))],
    );
    let service = ServiceBuilder::new()
        .layer(HedgeLayer::new(Arc::clone(&shared), &policies))
        .service(partner);
    // The one slot is held (by the exchange itself, as the concurrency layer would).
    let _held = Arc::clone(&shared.slots.slots)
        .try_acquire_owned()
        .expect("the slot");
    let started = Instant::now();
    let ok = service
        .oneshot(exchange(true, Duration::from_secs(5)))
        .await
        .expect("a reply");
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "no hedge: the first answered"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(shared.counters.hedges.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_a_partner_writes_are_clamped_and_never_panic() {
    for (rps, burst) in [
        (1e-30, Some(u32::MAX)),
        (1e-6, Some(100_000)),
        (f64::MAX, None),
        (1e12, Some(1)),
    ] {
        let limiter = admission::limiter(Some(rps), burst).expect("a limiter");
        assert!(
            admission::try_take(&limiter).is_ok(),
            "{rps}: the first token"
        );
    }
    assert!(admission::limiter(Some(0.0), None).is_none(), "no limit");
    assert!(
        admission::limiter(Some(f64::NAN), None).is_none(),
        "no limit"
    );
    // The slowest rate is one per 1000 s.
    let slowest = admission::limiter(Some(1e-9), Some(1)).expect("a limiter");
    assert!(admission::try_take(&slowest).is_ok());
    assert_eq!(
        admission::try_take(&slowest),
        Err(Duration::from_secs(1000))
    );
}
