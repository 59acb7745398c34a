//! Three `mallgate serve` processes on one real etcd: a PUT on one is served by all three,
//! each lists the others in `GET /admin/v1/fleet` with the connector versions it serves,
//! and a replica killed (SIGKILL) leaves the fleet when its lease expires.

use mallgate_partner_sim::FleetConfig;
use mallgate_testkit as support;
use support::etcd::Etcd;
use support::fleet::{admin, eventually};
use support::process::{Instance, OPERATOR_TOKEN, Setup};

fn binary() -> std::path::PathBuf {
    support::mallgate_binary().expect("cargo builds target/<profile>/mallgate")
}

fn replica(connectors: &std::path::Path, etcd: &Etcd, id: &str) -> Setup {
    support::fleet::replica(connectors, &etcd.endpoint(), "/three/", id)
}

/// The replicas `setup`'s fleet view lists: (id, the voltmart version it serves).
async fn fleet(http: &reqwest::Client, setup: &Setup) -> Vec<(String, u64)> {
    let (status, _, body) = admin(
        http,
        setup,
        reqwest::Method::GET,
        "/admin/v1/fleet",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut out: Vec<(String, u64)> = body["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_owned(),
                r["connectors"]["voltmart"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

/// The store revision each replica's serving set was read at, by replica id.
async fn revisions(http: &reqwest::Client, setup: &Setup) -> Vec<(String, i64)> {
    let (_, _, body) = admin(
        http,
        setup,
        reqwest::Method::GET,
        "/admin/v1/fleet",
        None,
        None,
    )
    .await;
    let mut out: Vec<(String, i64)> = body["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_owned(),
                r["store_revision"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_changes_and_a_killed_one_leaves_the_fleet() {
    let Some(etcd) = Etcd::start_or_skip() else {
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

    // Killed: its lease expires and it leaves the fleet view.
    let killed = instances.pop().expect("r2");
    killed.signal("KILL");
    drop(killed);
    let two = || {
        let (http, setups) = (&http, &setups);
        move || async move {
            fleet(http, &setups[0]).await == vec![("r0".to_owned(), 2), ("r1".to_owned(), 2)]
        }
    };
    assert!(
        eventually(two()).await,
        "r2 left: {:?}",
        fleet(&http, &setups[0]).await
    );
}
