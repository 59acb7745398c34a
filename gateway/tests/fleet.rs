//! Three `mallgate serve` processes on one real etcd: a PUT on one is served by all three,
//! each lists the others in `GET /admin/v1/fleet` with the connector versions it serves;
//! two PUTs with the same If-Match on two replicas give one 409; etcd stopped, all three
//! keep serving, say `store: disconnected` and refuse writes with 503, and when it is back
//! a change made on one is applied by the others; a replica killed (SIGKILL) leaves the
//! fleet when its lease expires.

use mallgate_partner_sim::FleetConfig;
use mallgate_testkit as support;
use serde_json::Value;
use support::etcd::Etcd;
use support::fleet::{admin, eventually};
use support::process::{Instance, OPERATOR_TOKEN, Setup};

fn binary() -> std::path::PathBuf {
    support::mallgate_binary().expect("cargo builds target/<profile>/mallgate")
}

fn replica(connectors: &std::path::Path, etcd: &Etcd, id: &str) -> Setup {
    support::fleet::replica(connectors, &etcd.endpoint(), "/three/", id)
}

/// The replicas `setup`'s fleet view lists, by id, with one field of each record.
async fn fleet_field<T>(
    http: &reqwest::Client,
    setup: &Setup,
    field: impl Fn(&Value) -> T,
) -> Vec<(String, T)> {
    let mut out: Vec<(String, T)> = support::fleet::records(http, setup)
        .await
        .iter()
        .map(|r| (r["id"].as_str().unwrap_or("").to_owned(), field(r)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// (id, the voltmart version it serves) per replica.
async fn fleet(http: &reqwest::Client, setup: &Setup) -> Vec<(String, u64)> {
    fleet_field(http, setup, |r| {
        r["connectors"]["voltmart"].as_u64().unwrap_or(0)
    })
    .await
}

/// The store revision each replica's serving set was read at, by replica id.
async fn revisions(http: &reqwest::Client, setup: &Setup) -> Vec<(String, i64)> {
    fleet_field(http, setup, |r| r["store_revision"].as_i64().unwrap_or(0)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_changes_and_a_killed_one_leaves_the_fleet() {
    let Some(mut etcd) = Etcd::start_or_skip() else {
        return;
    };
    let (_fleet, connectors) =
        support::fleet_and_connectors(FleetConfig::default(), |_, t| t).await;
    let setups: Vec<Setup> = (0..3)
        .map(|i| replica(&connectors, &etcd, &format!("r{i}")))
        .collect();
    let binary = binary();
    let mut instances: Vec<Instance> = setups
        .iter()
        .map(|s| Instance::spawn(&binary, s, false))
        .collect();
    for (instance, setup) in instances.iter_mut().zip(&setups) {
        instance.wait_ready(setup.public);
    }
    let http = reqwest::Client::new();
    let all_at = |v: u64| {
        let (http, setups) = (&http, &setups);
        move || async move {
            let names: Vec<(String, u64)> = ["r0", "r1", "r2"]
                .iter()
                .map(|r| ((*r).to_owned(), v))
                .collect();
            fleet(http, &setups[1]).await == names
        }
    };
    assert!(
        eventually(all_at(1)).await,
        "three replicas at v1: {:?}",
        fleet(&http, &setups[1]).await
    );

    let before = revisions(&http, &setups[1]).await;
    // A PUT on the first replica is served by all three.
    let doc = std::fs::read_to_string(connectors.join("voltmart.yaml")).expect("doc")
        + "\n# a fleet change\n";
    let (status, _, body) = admin(
        &http,
        &setups[0],
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart",
        Some("\"voltmart-v1\""),
        Some(doc),
    )
    .await;
    assert!((200..300).contains(&status), "{body}");
    assert!(
        eventually(all_at(2)).await,
        "three replicas at v2: {:?}",
        fleet(&http, &setups[1]).await
    );
    for setup in &setups {
        let (status, etag, _) = admin(
            &http,
            setup,
            reqwest::Method::GET,
            "/admin/v1/connectors/voltmart",
            None,
            None,
        )
        .await;
        assert_eq!((status, etag.as_deref()), (200, Some("\"voltmart-v2\"")));
    }

    // Each record says which store revision its serving set was read at: every replica's
    // moved past the one it had before the PUT. So does /metrics.
    let moved = {
        let (http, setups, before) = (&http, &setups, &before);
        move || async move {
            let after = revisions(http, &setups[2]).await;
            after.len() == 3
                && before
                    .iter()
                    .zip(&after)
                    .all(|((_, was), (_, now))| now > was)
        }
    };
    assert!(
        eventually(moved).await,
        "every replica read the store past the PUT: {before:?} then {:?}",
        revisions(&http, &setups[2]).await
    );
    let (_, _, view) = admin(
        &http,
        &setups[2],
        reqwest::Method::GET,
        "/admin/v1/fleet",
        None,
        None,
    )
    .await;
    for record in view["replicas"].as_array().expect("replicas") {
        assert_eq!(record["version"], env!("CARGO_PKG_VERSION"), "{record}");
    }
    let metrics = http
        .get(format!("http://{}/metrics", setups[0].admin))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mallgate_store_revision ")),
        "{metrics}"
    );

    // Two replicas replacing v2 at once, with the same If-Match: one is accepted, the
    // other is a 409; all three then serve the winner.
    let doc2 = std::fs::read_to_string(connectors.join("voltmart.yaml")).expect("doc");
    let (text0, text1) = (
        format!("{doc2}\n# r0's change\n"),
        format!("{doc2}\n# r1's change\n"),
    );
    let v2 = Some("\"voltmart-v2\"");
    let path = "/admin/v1/connectors/voltmart";
    let (ra, rb) = tokio::join!(
        admin(
            &http,
            &setups[0],
            reqwest::Method::PUT,
            path,
            v2,
            Some(text0)
        ),
        admin(
            &http,
            &setups[1],
            reqwest::Method::PUT,
            path,
            v2,
            Some(text1)
        )
    );
    let statuses = [ra.0, rb.0];
    assert!(
        statuses.contains(&409) && statuses.iter().any(|s| (200..300).contains(s)),
        "one accepted, one conflict: {ra:?} {rb:?}"
    );
    assert!(
        eventually(all_at(3)).await,
        "three replicas at v3: {:?}",
        fleet(&http, &setups[1]).await
    );

    // etcd stopped: every replica keeps serving, says so, and refuses admin writes with
    // 503 and Retry-After.
    etcd.stop();
    for setup in &setups {
        let down = || async {
            let ready = http
                .get(format!("http://{}/readyz", setup.public))
                .send()
                .await
                .expect("readyz");
            let status = ready.status().as_u16();
            let body: Value = ready.json().await.unwrap_or(Value::Null);
            status == 200 && body["store"] == "disconnected"
        };
        assert!(eventually(down).await, "ready, and store: disconnected");
        let search = http
            .get(format!("http://{}/v1/products?q=headphones", setup.public))
            .send()
            .await
            .expect("search");
        assert_eq!(search.status(), 200, "serving without etcd");
    }
    let res = http
        .put(format!(
            "http://{}/admin/v1/connectors/voltmart",
            setups[2].admin
        ))
        .bearer_auth(OPERATOR_TOKEN)
        .header("if-match", "\"voltmart-v3\"")
        .body(format!("{doc2}\n# while etcd is down\n"))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    // etcd back: a change made on one replica is applied by the two others.
    etcd.restart();
    let back = || async {
        let (status, _, _) = admin(
            &http,
            &setups[2],
            reqwest::Method::PUT,
            "/admin/v1/connectors/voltmart",
            Some("\"voltmart-v3\""),
            Some(format!("{doc2}\n# after etcd came back\n")),
        )
        .await;
        // A write whose answer was lost while etcd came back may still have landed.
        let (_, etag, _) = admin(
            &http,
            &setups[2],
            reqwest::Method::GET,
            "/admin/v1/connectors/voltmart",
            None,
            None,
        )
        .await;
        (200..300).contains(&status) || etag.is_some_and(|e| e != "\"voltmart-v3\"")
    };
    assert!(eventually(back).await, "writes are accepted again");
    // A new version, past every number taken so far (the conflict's loser took one too,
    // and it is never given again).
    let (_, etag, _) = admin(&http, &setups[2], reqwest::Method::GET, path, None, None).await;
    let now: u64 = etag
        .as_deref()
        .and_then(|e| e.trim_matches('"').strip_prefix("voltmart-v"))
        .and_then(|v| v.parse().ok())
        .expect("a revision");
    assert!(now > 3, "a new version: {etag:?}");
    assert!(
        eventually(all_at(now)).await,
        "three replicas at v{now}: {:?}",
        fleet(&http, &setups[1]).await
    );

    // Killed: its lease expires and it leaves the fleet view.
    let killed = instances.pop().expect("r2");
    killed.signal("KILL");
    drop(killed);
    let two = || {
        let (http, setups) = (&http, &setups);
        move || async move {
            fleet(http, &setups[0]).await == vec![("r0".to_owned(), now), ("r1".to_owned(), now)]
        }
    };
    assert!(
        eventually(two()).await,
        "r2 left: {:?}",
        fleet(&http, &setups[0]).await
    );
}
