//! Fleet-wide coordination on one real etcd, with `mallgate serve` processes:
//! - a replica cut off from etcd while changes are made and the store is compacted
//!   (`etcdctl compact`) resumes, reads the store again and rebuilds only the connector
//!   whose document changed (counted by `mallgate_connector_builds_total`);
//! - a partner's `rate_limit_rps` is the fleet's: three replicas under load send the
//!   partner no more than its rate (the simulator's counters), and when one is killed the
//!   others' shares grow (`mallgate_fleet_replicas`) and the total still holds;
//! - the canary judge runs on the elected leader, on every replica's figures: the leader
//!   killed, another is elected and promotes a canary on traffic it never served itself.

use std::time::{Duration, Instant};

use mallgate_partner_sim::{FleetConfig, Partner};
use mallgate_testkit as support;
use serde_json::{Value, json};
use support::etcd::Etcd;
use support::fleet::{admin, edit_config, eventually, metric, metrics, records, replica};
use support::process::{Instance, Setup};
use support::proxy::{FaultProxy, Toxics};

fn binary() -> std::path::PathBuf {
    support::mallgate_binary().expect("cargo builds target/<profile>/mallgate")
}

fn start(setups: &[Setup]) -> Vec<Instance> {
    let binary = binary();
    let mut instances: Vec<Instance> = setups
        .iter()
        .map(|s| Instance::spawn(&binary, s, false))
        .collect();
    for (instance, setup) in instances.iter_mut().zip(setups) {
        instance.wait_ready(setup.public);
    }
    instances
}

/// What `setup`'s replica serves of voltmart, by its own metrics: (active, canary).
async fn serving(http: &reqwest::Client, setup: &Setup) -> (f64, f64) {
    let text = metrics(http, setup).await;
    let with = [("connector", "voltmart")];
    (
        metric(&text, "mallgate_connector_active_version", &with),
        metric(&text, "mallgate_connector_canary_version", &with),
    )
}

async fn put_voltmart(
    http: &reqwest::Client,
    setup: &Setup,
    doc: String,
    replacing: u32,
    query: &str,
) -> (u16, Value) {
    let (status, _, body) = admin(
        http,
        setup,
        reqwest::Method::PUT,
        &format!("/admin/v1/connectors/voltmart{query}"),
        Some(&format!("\"voltmart-v{replacing}\"")),
        Some(doc),
    )
    .await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_resumes_and_rebuilds_only_what_changed() {
    let Some(etcd) = Etcd::start_or_skip() else {
        return;
    };
    let (_fleet, connectors) =
        support::fleet_and_connectors(FleetConfig::default(), |_, t| t).await;
    // r1 reaches etcd through a proxy the test can cut (every connection reset).
    let cut = FaultProxy::start(Some(([127, 0, 0, 1], etcd.client_port).into()))
        .await
        .expect("the proxy starts");
    let setups = vec![
        replica(&connectors, &etcd.endpoint(), "/compact/", "r0"),
        replica(&connectors, &cut.url(), "/compact/", "r1"),
    ];
    let mut instances = start(&setups);
    let http = reqwest::Client::new();
    assert!(eventually(|| async { serving(&http, &setups[1]).await.0 == 1.0 }).await);
    let before = metrics(&http, &setups[1]).await;

    cut.set(Toxics {
        reset_peer: true,
        ..Toxics::default()
    });
    let doc = std::fs::read_to_string(connectors.join("voltmart.yaml")).expect("doc");
    for (n, replacing) in [(1, 1), (2, 2)] {
        let change = format!("{doc}\n# change {n} while r1 is cut off\n");
        let (status, body) = put_voltmart(&http, &setups[0], change, replacing, "").await;
        assert!((200..300).contains(&status), "{body}");
    }
    // Everything r1 would resume from is compacted away.
    etcd.compact(etcd.revision());
    cut.set(Toxics::default());

    assert!(
        eventually(|| async { serving(&http, &setups[1]).await.0 == 3.0 }).await,
        "r1 serves v3 after the compaction: {:?}",
        serving(&http, &setups[1]).await
    );
    let after = metrics(&http, &setups[1]).await;
    instances[1].wait_for_line(
        "the etcd watch's revision was compacted; watching from now and reading the store again",
    );
    let builds = |text: &str, connector: &str| {
        metric(
            text,
            "mallgate_connector_builds_total",
            &[("connector", connector)],
        )
    };
    let rebuilt = builds(&after, "voltmart") - builds(&before, "voltmart");
    assert!(
        (1.0..=2.0).contains(&rebuilt),
        "voltmart rebuilt {rebuilt} times for two changes"
    );
    for other in [
        "threadline",
        "acme-dropship",
        "northwind",
        "parcelpost",
        "swiftship",
    ] {
        assert!(builds(&before, other) >= 1.0, "{other} was built: {before}");
        assert_eq!(
            builds(&after, other),
            builds(&before, other),
            "{other} did not change and was not rebuilt"
        );
    }
    drop(instances);
}

/// Whether `setup`'s replica counts `n` replicas in its fleet.
async fn counted(http: &reqwest::Client, setup: &Setup, n: f64) -> bool {
    metric(&metrics(http, setup).await, "mallgate_fleet_replicas", &[]) == n
}

/// Voltmart's search calls served by both of its simulated replicas.
fn searches(fleet: &mallgate_partner_sim::Fleet) -> u64 {
    (0..2)
        .map(|r| {
            fleet
                .replica(Partner::Voltmart, r)
                .expect("replica")
                .state
                .counters()
                .get("GET /v1/products")
                .copied()
                .unwrap_or(0)
        })
        .sum()
}

/// The partner's rate limit and burst in the test.
const RPS: f64 = 8.0;

/// Searches for distinct things (no cache hits) on every replica of `setups`, four at a
/// time each, for `window`; the partner's searches over the time it took: (calls, secs).
async fn load(
    fleet: &mallgate_partner_sim::Fleet,
    setups: &[&Setup],
    window: Duration,
    tag: &str,
) -> (u64, f64) {
    let http = reqwest::Client::new();
    let start = (searches(fleet), Instant::now());
    let mut tasks = Vec::new();
    for (r, setup) in setups.iter().enumerate() {
        for worker in 0..4 {
            let (http, public) = (http.clone(), setup.public);
            let tag = format!("{tag}-{r}-{worker}");
            tasks.push(tokio::spawn(async move {
                let until = Instant::now() + window;
                let mut n = 0u64;
                while Instant::now() < until && n < 2_000 {
                    let url = format!("http://{public}/v1/products?q=cable-{tag}-{n}");
                    let _ = http.get(url).send().await.map(|r| r.status());
                    n += 1;
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("load task");
    }
    let calls = searches(fleet) - start.0;
    (calls, start.1.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_the_fleets_and_shares_grow_when_a_replica_dies() {
    let Some(etcd) = Etcd::start_or_skip() else {
        return;
    };
    let (fleet, connectors) = support::fleet_and_connectors(FleetConfig::default(), |p, t| {
        if p == Partner::Voltmart {
            t.replace(
                "  timeout_ms: 600\n",
                &format!("  timeout_ms: 600\n  rate_limit_rps: {RPS}\n"),
            )
        } else {
            t
        }
    })
    .await;
    let setups: Vec<Setup> = (0..3)
        .map(|i| replica(&connectors, &etcd.endpoint(), "/shares/", &format!("r{i}")))
        .collect();
    let mut instances = start(&setups);
    let http = reqwest::Client::new();
    for setup in &setups {
        assert!(
            eventually(|| counted(&http, setup, 3.0)).await,
            "three replicas counted"
        );
    }
    // The bound: each of n replicas takes RPS/n a second after a burst of ceil(RPS/n),
    // so the fleet sends at most RPS a second plus RPS (rounded up per replica), plus one
    // call per replica admitted just before the window opened. Slowness only lowers it.
    let bound = |secs: f64, n: f64| RPS * secs + (RPS / n).ceil() * n + n;
    let all: Vec<&Setup> = setups.iter().collect();
    let (three, secs) = load(&fleet, &all, Duration::from_secs(3), "three").await;
    eprintln!(
        "three replicas: {three} searches in {secs:.2} s ({:.1}/s against {RPS}/s)",
        three as f64 / secs
    );
    assert!(
        (three as f64) <= bound(secs, 3.0),
        "three replicas sent {three} searches in {secs:.2} s against {RPS}/s"
    );
    // A replica killed: its lease expires, and the others' shares grow to a half.
    let killed = instances.pop().expect("r2");
    killed.signal("KILL");
    drop(killed);
    for setup in &setups[..2] {
        assert!(
            eventually(|| counted(&http, setup, 2.0)).await,
            "two replicas counted"
        );
    }
    let (two, secs) = load(&fleet, &all[..2], Duration::from_secs(3), "two").await;
    eprintln!(
        "two replicas: {two} searches in {secs:.2} s ({:.1}/s against {RPS}/s)",
        two as f64 / secs
    );
    assert!(
        (two as f64) <= bound(secs, 2.0),
        "two replicas sent {two} searches in {secs:.2} s against {RPS}/s"
    );
    assert!(two > 0, "the survivors still call the partner");
    drop(instances);
}

/// The id of the replica the fleet view says leads, if one does.
async fn leader(http: &reqwest::Client, setup: &Setup) -> Option<String> {
    records(http, setup)
        .await
        .iter()
        .find(|r| r["leader"] == json!(true))
        .and_then(|r| r["id"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_the_canary_judge_moves_and_judges_the_fleets_figures() {
    let Some(etcd) = Etcd::start_or_skip() else {
        return;
    };
    let (_fleet, connectors) =
        support::fleet_and_connectors(FleetConfig::default(), |_, t| t).await;
    let setups: Vec<Setup> = (0..3)
        .map(|i| {
            let setup = replica(&connectors, &etcd.endpoint(), "/judge/", &format!("r{i}"));
            edit_config(&setup, |c| c["admin"]["canary_promote_after"] = json!(12));
            setup
        })
        .collect();
    let mut instances = start(&setups);
    let http = reqwest::Client::new();
    assert!(
        eventually(|| async { leader(&http, &setups[0]).await.is_some() }).await,
        "a leader is elected: {:?}",
        records(&http, &setups[0]).await
    );
    let first = leader(&http, &setups[0]).await.expect("a leader");

    // A canary on every replica; no traffic yet, so no verdict.
    let doc = std::fs::read_to_string(connectors.join("voltmart.yaml")).expect("doc")
        + "\n# the canary\n";
    let (status, body) = put_voltmart(&http, &setups[0], doc, 1, "?canary_percent=50").await;
    assert!((200..300).contains(&status), "{body}");
    for setup in &setups {
        assert!(eventually(|| async { serving(&http, setup).await == (1.0, 2.0) }).await);
    }

    // The leader killed: its lease, and its candidacy, expire; another is elected.
    let index: usize = first[1..].parse().expect("ids are r0, r1, r2");
    let killed = instances.remove(index);
    killed.signal("KILL");
    drop(killed);
    let survivors: Vec<&Setup> = (0..3).filter(|i| *i != index).map(|i| &setups[i]).collect();
    let moved = || async {
        let now = leader(&http, survivors[0]).await;
        now.is_some_and(|l| l != first) && records(&http, survivors[0]).await.len() == 2
    };
    assert!(
        eventually(moved).await,
        "the judge moved off {first}: {:?}",
        records(&http, survivors[0]).await
    );
    let new_leader = leader(&http, survivors[0]).await.expect("a leader");

    // Traffic only on the survivor that does not lead: the leader decides on its figures.
    let follower = (0..3)
        .find(|i| *i != index && format!("r{i}") != new_leader)
        .map(|i| &setups[i])
        .expect("a follower");
    let promoted = || async {
        for n in 0..10 {
            let url = format!(
                "http://{}/v1/products?q=tv-{n}-{:x}",
                follower.public,
                rand()
            );
            let _ = http.get(url).send().await;
        }
        serving(&http, survivors[0]).await == (2.0, 0.0)
            && serving(&http, survivors[1]).await == (2.0, 0.0)
    };
    assert!(
        eventually(promoted).await,
        "the new leader {new_leader} promoted v2 on {}'s traffic: {:?}",
        follower.public,
        records(&http, survivors[0]).await
    );
    // The new leader decided, on the follower's calls (it served none of them itself).
    let at = |i: usize| if i < index { i } else { i - 1 };
    let leader_index: usize = new_leader[1..].parse().expect("ids are r0, r1, r2");
    let decided = instances[at(leader_index)].wait_for_line("canary decided");
    assert_eq!(decided["decision"], "promoted", "{decided}");
    let follower_index = (0..3)
        .find(|i| *i != index && *i != leader_index)
        .expect("a follower");
    assert!(
        !instances[at(follower_index)]
            .log()
            .contains("canary decided"),
        "only the leader judges"
    );
    drop(instances);
}

fn rand() -> u64 {
    mallgate::cursor::random_u64()
}
