use super::*;

#[tokio::test(start_paused = true)]
async fn breaker_opens_probes_and_closes() {
    let b = Breaker::new(3, Duration::from_secs(2));
    assert_eq!(b.state(), BreakerState::Closed);
    b.on_failure();
    b.on_failure();
    assert_eq!(b.admit(), Admission::Pass, "two failures keep it closed");
    b.on_success();
    b.on_failure();
    b.on_failure();
    assert_eq!(b.state(), BreakerState::Closed, "a success reset the count");
    b.on_failure();
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.admit(), Admission::Refused);
    assert!(!b.would_admit());
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_eq!(b.admit(), Admission::Refused, "still open before its time");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(matches!(b.admit(), Admission::Probe(_)), "one probe");
    assert_eq!(b.admit(), Admission::Refused, "only one probe at a time");
    b.on_failure();
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "a failed probe opens it again"
    );
    assert_eq!(b.opened_total(), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    let Admission::Probe(first) = b.admit() else {
        panic!("a probe after the open time");
    };
    b.on_abandoned(first);
    let Admission::Probe(second) = b.admit() else {
        panic!("an abandoned probe frees the slot");
    };
    b.on_abandoned(first);
    assert_eq!(
        b.admit(),
        Admission::Refused,
        "a stale ticket frees nothing: the second probe is still out"
    );
    b.on_abandoned(second);
    assert!(matches!(b.admit(), Admission::Probe(_)));
    b.on_success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.admit(), Admission::Pass);
}

#[tokio::test(start_paused = true)]
async fn ejection_backs_off_and_returns() {
    let e = Ejection::new(2, Duration::from_secs(1), Duration::from_secs(8));
    assert_eq!(e.on_failure(), None, "one failure is not enough");
    assert_eq!(e.on_failure(), Some(Duration::from_secs(1)));
    assert!(e.is_ejected(false));
    assert_eq!(e.on_failure(), None, "no new ejection while ejected");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        !e.is_ejected(false),
        "back after its time without health checks"
    );
    assert!(
        e.is_ejected(true),
        "with health checks, only a probe brings it back"
    );
    // Still failing: the next ejection doubles, then doubles again, up to the cap.
    assert_eq!(e.on_failure(), Some(Duration::from_secs(2)));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(e.on_failure(), Some(Duration::from_secs(4)));
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(e.on_failure(), Some(Duration::from_secs(8)));
    tokio::time::advance(Duration::from_secs(8)).await;
    assert_eq!(e.on_failure(), Some(Duration::from_secs(8)), "capped");
    tokio::time::advance(Duration::from_secs(8)).await;
    e.on_success();
    assert!(
        !e.is_ejected(true),
        "a success after its time ends the ejection"
    );
    assert_eq!(e.ejected_total(), 5);
    // A long clean period ends the streak: the next ejection is short again.
    tokio::time::advance(Duration::from_secs(60)).await;
    e.on_failure();
    assert_eq!(e.on_failure(), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn probes_end_ejections_only_after_their_time() {
    let s = EndpointState::new("test", "http://127.0.0.1:1", &ResilienceSettings::default());
    s.set_probed(true);
    s.record_probe(false, Some("refused".into()));
    s.record_probe(false, Some("refused".into()));
    assert!(!s.available(), "two failed probes eject");
    s.record_probe(true, None);
    assert!(
        !s.available(),
        "a passing probe before the ejection's time changes nothing"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    s.record_probe(true, None);
    assert!(s.available());
}

#[test]
fn retry_decisions() {
    let ms = Duration::from_millis;
    assert_eq!(retry_delay(true, true, 1, 2, ms(25), ms(500)), Some(ms(25)));
    assert_eq!(
        retry_delay(true, true, 2, 3, ms(25), ms(500)),
        Some(ms(50)),
        "backs off"
    );
    assert_eq!(
        retry_delay(false, true, 1, 2, ms(25), ms(500)),
        None,
        "not idempotent"
    );
    assert_eq!(
        retry_delay(true, false, 1, 2, ms(25), ms(500)),
        None,
        "not retryable"
    );
    assert_eq!(
        retry_delay(true, true, 2, 2, ms(25), ms(500)),
        None,
        "attempts used"
    );
    assert_eq!(
        retry_delay(true, true, 1, 2, ms(300), ms(500)),
        None,
        "never past the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn selection_fails_over_by_priority_and_weighs() {
    let config = ResilienceSettings::default();
    let route = |url: &str, priority, weight| Route {
        state: Arc::new(EndpointState::new("test", url, &config)),
        base: url::Url::parse(url).expect("url"),
        priority,
        weight,
    };
    let routes = vec![
        route("http://127.0.0.1:1", 0, 3),
        route("http://127.0.0.1:2", 0, 1),
        route("http://127.0.0.1:3", 1, 1),
    ];
    let picks: Vec<usize> = (0..8)
        .filter_map(|t| select(&routes, &[], t).map(|(i, _)| i))
        .collect();
    assert_eq!(
        picks,
        vec![0, 0, 0, 1, 0, 0, 0, 1],
        "weights 3:1 in the first group"
    );
    assert_eq!(
        select(&routes, &[0], 0).map(|(i, _)| i),
        Some(1),
        "excluded"
    );
    for _ in 0..5 {
        routes[0].state.record(ExchangeOutcome::Failed);
        routes[1].state.record(ExchangeOutcome::ConnectFailed);
    }
    assert_eq!(
        select(&routes, &[], 0).map(|(i, _)| i),
        Some(2),
        "fails over"
    );
    assert!(select(&routes, &[2], 0).is_none(), "nothing left");
}
