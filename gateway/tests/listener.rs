//! The public listener against clients that misbehave, over raw TCP: a head trickled one
//! byte at a time is cut off at the header timeout while other clients are served;
//! pipelined requests are answered in order; the bearer scheme is case-insensitive; and
//! health probes authenticate like calls, so every demo partner's endpoints stay healthy.

use mallgate_testkit as support;

use std::time::Duration;

use support::Mall;
use support::admin::admin_mall;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads what the server sends until it closes the connection or `until` is in it; bounded
/// by a guard timeout (a hang fails the test, it measures nothing).
async fn read_until(stream: &mut TcpStream, until: impl Fn(&str) -> bool) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if until(&String::from_utf8_lossy(&seen)) {
                        return false;
                    }
                }
            }
        }
    })
    .await
    .expect("the server answers or closes");
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_cut_off_and_others_are_served() {
    let mall = Mall::start_configured(
        |_, text| text,
        |config| config.limits.header_timeout_ms = 300,
    )
    .await;
    // Ordinary requests on fresh connections: a pooled one idle past the (short) header
    // timeout would be closed by the server, as it should be.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut slow = TcpStream::connect(mall.gateway.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("line");
    // One header byte every 100 ms, for at most 30 s: the server must hang up first.
    let mut cut_off = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"X").await.is_err() {
            cut_off = true;
            break;
        }
        // Meanwhile an ordinary client is answered.
        let status = fresh
            .get(format!("{}/healthz", mall.gateway.url()))
            .send()
            .await
            .expect("an ordinary client is answered")
            .status();
        assert_eq!(status, 200);
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.peek(&mut probe)).await
        {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a trickling client was never cut off");
    let (rest, closed) = read_until(&mut slow, |_| false).await;
    assert!(closed);
    assert!(
        !rest.contains("HTTP/1.1 200"),
        "no answer to a head that never ended: {rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let mall = Mall::start().await;
    let mut stream = TcpStream::connect(mall.gateway.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await
        .expect("three requests in one write");
    // The third answer is the problem document naming `/nope` as its instance.
    let (seen, _) = read_until(&mut stream, |s| {
        s.matches("HTTP/1.1 ").count() >= 3 && s.contains(r#""instance":"/nope""#)
    })
    .await;
    let statuses: Vec<&str> = seen
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &seen[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404"], "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    const OPERATOR: &str = "operator-token-for-listener-1";
    let mall = admin_mall(&[("operator", OPERATOR)], |_| {}).await;
    let addr = mall.gateway.admin_addr.expect("admin listener");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let status = mall
            .http
            .get(format!("http://{addr}/admin/v1/status"))
            .header("authorization", format!("{scheme} {OPERATOR}"))
            .send()
            .await
            .expect("answers")
            .status();
        assert_eq!(status, 200, "{scheme}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_authenticate_and_keep_every_partner_healthy() {
    let mall = Mall::start().await;
    mall.wait_until_probed().await;
    for c in &mall.gateway.api.registry.load().connectors {
        for route in c.connector.routes() {
            let report = route.state.report(0, 0, false);
            let probe = report.last_probe.expect("probed");
            assert!(
                probe.ok && probe.error.is_none(),
                "{}: {:?} (probes carry the connector's credentials)",
                c.id(),
                probe.error
            );
            assert!(!report.ejected, "{}", c.id());
        }
    }
    let partners = mall.get("/v1/partners").await;
    for p in partners.body["data"].as_array().into_iter().flatten() {
        assert_ne!(p["health"]["status"], "down", "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_longest_waiting_connection_makes_room() {
    let mall = Mall::start_configured(
        |_, text| text,
        |config| {
            config.connections = mallgate::config::ConnectionsConfig {
                max_total: 4,
                max_per_client: 4,
            };
        },
    )
    .await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    // Four connections that never send a head fill the table; the first is the oldest.
    let mut idle = Vec::new();
    for i in 0..4 {
        let mut stream = TcpStream::connect(mall.gateway.addr)
            .await
            .expect("connect");
        // A byte of a head that never ends: the server has accepted and holds it.
        stream.write_all(b"G").await.expect("write");
        idle.push(stream);
        // Accepted in this order (each is answered by its own task): wait (at most 10 s,
        // polling) until the server holds it before opening the next.
        for _ in 0..1000 {
            if mall.gateway.connections.counts().0 > i {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            mall.gateway.connections.counts().0,
            i + 1,
            "the server holds it"
        );
    }
    // A real client still gets in: the longest-waiting connection makes room.
    for _ in 0..3 {
        let status = fresh
            .get(format!("{}/healthz", mall.gateway.url()))
            .send()
            .await
            .expect("a client at the cap is answered")
            .status();
        assert_eq!(status, 200);
    }
    let (_, refused, evicted) = mall.gateway.connections.counts();
    assert_eq!(
        refused, 0,
        "nobody was refused: waiting connections made room"
    );
    assert!(evicted >= 1, "a waiting connection made room");
    // The evicted one is closed without an answer; the others are still held.
    let mut closed = 0;
    for stream in &mut idle {
        let mut buf = [0u8; 64];
        let peeked = tokio::time::timeout(Duration::from_millis(200), stream.peek(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = peeked {
            closed += 1;
        }
    }
    assert!(
        closed <= evicted as usize,
        "only evicted connections closed"
    );
}
