//! The store in a real etcd (Debian's `etcd-server`, started on free loopback ports):
//! a state directory migrated by `mallgate store migrate` reads the same from etcd, and two
//! replicas replacing one revision give one conflict.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use mallgate::GatewayError;
use mallgate::store::etcd::{EtcdBackend, EtcdSettings};
use mallgate::store::{AuditEntry, PartnerRecord, Store};
use mallgate_testkit::etcd::Etcd;
use mallgate_testkit::process::Dir;

fn etcd_store(etcd: &Etcd, prefix: &str) -> Store {
    let backend = EtcdBackend::connect(EtcdSettings {
        endpoints: vec![etcd.endpoint()],
        prefix: prefix.to_owned(),
        timeout: Duration::from_secs(5),
        user: None,
        replica_id: "test".into(),
        lease_ttl_s: 10,
        tls: None,
    })
    .expect("connect");
    Store::over(Arc::new(backend))
}

/// A partner record onboarded through the admin API, with no tokens.
fn acme() -> PartnerRecord {
    PartnerRecord {
        id: "acme".into(),
        display_name: "Acme".into(),
        grant: mallgate_connectors::Grant::default(),
        created_at: "2026-12-03T12:00:00Z".into(),
        created_by: "operator".into(),
        tokens: Vec::new(),
    }
}

fn entry(action: &str, version: u32) -> AuditEntry {
    AuditEntry {
        at: "2026-12-03T12:00:00Z".into(),
        actor: "operator".into(),
        action: action.into(),
        target: "acme".into(),
        version: Some(version),
        result: "ok".into(),
        detail: None,
    }
}

fn temp_dir() -> Dir {
    let dir = std::env::temp_dir().join(format!(
        "mallgate-etcd-store-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&dir).expect("temp");
    Dir(dir)
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mallgate"))
}

#[test]
fn a_state_directory_migrated_into_etcd_reads_the_same() {
    let Some(etcd) = Etcd::start_or_skip() else {
        return;
    };
    let dir = temp_dir();
    let local = Store::open(&dir.0).expect("open");
    for (i, text) in ["a: 1", "a: 2", "a: 3"].iter().enumerate() {
        let meta = local
            .add_version("acme", "acme", text, "partner:acme")
            .expect("add");
        local
            .set_active("acme", Some(meta.version))
            .expect("activate");
        local
            .audit(&entry(
                "connector.put",
                u32::try_from(i).expect("small") + 1,
            ))
            .expect("audit");
    }
    local.set_canary("acme", Some((3, 10))).expect("canary");
    local.set_active("acme", Some(2)).expect("back to 2");
    local.quarantine("acme", 1, "a test").expect("quarantine");
    local.put_partner(&acme()).expect("partner");
    // Not the store's: the migration leaves it.
    std::fs::write(dir.0.join("mallgate.pid"), "1").expect("pid");

    let to = format!("etcd://127.0.0.1:{}/fleet-a", etcd.client_port);
    let out = Command::new(binary())
        .args(["store", "migrate", "--from"])
        .arg(&dir.0)
        .args(["--to", &to])
        .output()
        .expect("run");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 3 documents and 3 metadata records, highest, active, canary, 1 quarantine, 1 partner;
    // 4 history lines and 3 audit lines.
    assert!(
        printed.contains("copied 11 keys and 7 log lines"),
        "{printed}"
    );

    let fleet = etcd_store(&etcd, "/fleet-a/");
    assert_eq!(
        fleet.active_documents().expect("active"),
        local.active_documents().expect("active")
    );
    assert_eq!(
        fleet.versions("acme").expect("v"),
        local.versions("acme").expect("v")
    );
    assert_eq!(fleet.canary("acme").expect("canary"), Some((3, 10)));
    assert_eq!(
        fleet.quarantined("acme", 1).expect("q").map(|q| q.reason),
        Some("a test".to_owned())
    );
    assert_eq!(
        fleet.partners().expect("partners"),
        local.partners().expect("partners")
    );
    assert_eq!(
        fleet.audit_log().expect("audit"),
        local.audit_log().expect("audit")
    );
    // A new version numbers on from the migrated ones.
    let next = fleet
        .add_version("acme", "acme", "a: 4", "operator")
        .expect("add");
    assert_eq!(next.version, 4);
    // The history (1, 2, 3, 2) came over in order: from 4 the last good version is 2, the
    // one active last; without the history it would be 3, the stored one below.
    assert_eq!(fleet.last_good("acme", 4).expect("last good"), Some(2));

    // A second migration into a prefix in use is refused: it never merges.
    let again = Command::new(binary())
        .args(["store", "migrate", "--from"])
        .arg(&dir.0)
        .args(["--to", &to])
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("never merges"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn two_replicas_replacing_one_revision_give_one_conflict() {
    let Some(etcd) = Etcd::start_or_skip() else {
        return;
    };
    let (a, b) = (etcd_store(&etcd, "/race/"), etcd_store(&etcd, "/race/"));
    let v1 = a
        .add_version("acme", "acme", "a: 1", "operator")
        .expect("v1");
    a.set_active("acme", Some(v1.version)).expect("activate");

    // Both replicas replace v1 at once, each with a version of its own.
    let barrier = Arc::new(Barrier::new(2));
    let race = |store: Store, text: &'static str| {
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            let meta = store
                .add_version("acme", "acme", text, "operator")
                .expect("add");
            barrier.wait();
            store
                .set_active_if("acme", Some(1), Some(meta.version))
                .map(|()| meta.version)
        })
    };
    let (ra, rb) = (race(a.clone(), "a: 2"), race(b.clone(), "a: 3"));
    let results = [ra.join().expect("a"), rb.join().expect("b")];
    let won: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let lost: Vec<&GatewayError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{results:?}");
    assert!(
        matches!(lost[0], GatewayError::StoreConflict { .. }),
        "{}",
        lost[0]
    );
    // Both see the winner; the numbers they took are distinct.
    assert_eq!(a.active("acme").expect("a"), Some(won[0]));
    assert_eq!(b.active("acme").expect("b"), Some(won[0]));
    let numbers: Vec<u32> = b
        .versions("acme")
        .expect("v")
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(numbers, vec![1, 2, 3]);

    // Version numbers taken by many writers at once never collide.
    let takers: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                store
                    .add_version("many", "many", &format!("n: {i}"), "operator")
                    .expect("add")
                    .version
            })
        })
        .collect();
    let mut taken: Vec<u32> = takers
        .into_iter()
        .map(|t| t.join().expect("taker"))
        .collect();
    taken.sort_unstable();
    assert_eq!(taken, (1..=8).collect::<Vec<u32>>());

    // Two replicas changing one partner's record from the same read: one change is
    // written, the other is a conflict (never a lost token).
    let record = acme();
    a.put_partner_if(&record, None).expect("onboarded");
    let again = b.put_partner_if(&record, None);
    assert!(
        matches!(again, Err(GatewayError::StoreConflict { .. })),
        "a partner is onboarded once: {again:?}"
    );
    let (mut on_a, read_a) = a.partner_read("acme").expect("read").expect("there");
    let (mut on_b, read_b) = b.partner_read("acme").expect("read").expect("there");
    on_a.display_name = "Acme (a)".into();
    on_b.display_name = "Acme (b)".into();
    a.put_partner_if(&on_a, Some(&read_a))
        .expect("the first write");
    let second = b.put_partner_if(&on_b, Some(&read_b));
    assert!(
        matches!(second, Err(GatewayError::StoreConflict { .. })),
        "{second:?}"
    );
    let kept = b.partner("acme").expect("read").expect("there");
    assert_eq!(kept.display_name, "Acme (a)");
}

#[test]
fn etcd_gone_is_unavailable_within_the_timeout_and_back_when_it_is() {
    let Some(mut etcd) = Etcd::start_or_skip() else {
        return;
    };
    let store = {
        let backend = EtcdBackend::connect(EtcdSettings {
            endpoints: vec![etcd.endpoint()],
            prefix: "/gone/".to_owned(),
            timeout: Duration::from_millis(500),
            user: None,
            replica_id: "test".into(),
            lease_ttl_s: 10,
            tls: None,
        })
        .expect("connect");
        Store::over(Arc::new(backend))
    };
    store
        .add_version("acme", "acme", "a: 1", "operator")
        .expect("v1");
    etcd.stop();
    let err = store.active("acme").expect_err("etcd is down");
    assert!(
        matches!(err, GatewayError::StoreUnavailable { .. }),
        "{err}"
    );
    etcd.restart();
    // The client reconnects by itself (bounded: 30 tries).
    let back = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        store.versions("acme").is_ok_and(|v| v.len() == 1)
    });
    assert!(back, "the store answers again once etcd is back");
}

const OPERATOR: &str = "operator-token-for-etcd-tests";

/// PUT voltmart replacing `replaces`, a document of its own (a comment added).
async fn put_voltmart(
    mall: &mallgate_testkit::Mall,
    n: u32,
    replaces: u32,
) -> (u16, serde_json::Value) {
    let doc = mallgate_testkit::admin::connector_text(mall, "voltmart.yaml")
        + &format!("\n# change {n}\n");
    mallgate_testkit::admin::admin_send(
        mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart",
        OPERATOR,
        &[("if-match", format!("\"voltmart-v{replaces}\""))],
        Some(doc),
    )
    .await
}

/// Two gateways on one etcd both serve voltmart v1 (from their directories); a PUT on each
/// replacing v1 at the same time: one is accepted, the other is a 409 — whichever order
/// the two replicas' writes take. The other replica serves the winner after a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_etcd_accept_one_of_two_puts_replacing_one_revision() {
    use mallgate::config::StoreConfig;
    use mallgate_testkit::admin::{admin_mall, serving};

    let Some(etcd) = Etcd::start_or_skip() else {
        return;
    };
    let store = StoreConfig::Etcd {
        endpoints: vec![etcd.endpoint()],
        prefix: "/two/".into(),
        timeout_ms: 5_000,
        auth: None,
        replica_id: None,
        lease_ttl_s: 20,
        tls: None,
    };
    let start = || {
        let store = store.clone();
        admin_mall(&[("operator", OPERATOR)], move |c| c.store = Some(store))
    };
    let (a, b) = (start().await, start().await);
    assert_eq!(
        (serving(&a, "voltmart"), serving(&b, "voltmart")),
        (Some(1), Some(1))
    );
    let (ra, rb) = tokio::join!(put_voltmart(&a, 1, 1), put_voltmart(&b, 2, 1));
    let statuses = [ra.0, rb.0];
    assert!(
        statuses.contains(&409) && statuses.iter().any(|s| (200..300).contains(s)),
        "one accepted, one conflict: {ra:?} {rb:?}"
    );
    let (winner, loser, conflict) = if ra.0 == 409 {
        (&b, &a, &ra.1)
    } else {
        (&a, &b, &rb.1)
    };
    assert_eq!(conflict["status"], 409, "{conflict}");
    let won = serving(winner, "voltmart").expect("the winner serves it");
    assert!(won > 1, "a new version serves on the winner");
    // The loser's watch brings it the winner's version, by itself.
    assert!(
        eventually(|| serving(loser, "voltmart") == Some(won)).await,
        "the other gateway serves v{won}: it serves {:?}",
        serving(loser, "voltmart")
    );
}

/// Polls `done` (every 50 ms, at most 30 s): no timing is asserted, only that it happens.
async fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..600 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// etcd stopped: both gateways keep answering the public API and refuse admin writes with
/// 503; etcd back: their watches resume and a change another writer made is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_keeps_serving_and_refuses_writes_then_resumes() {
    use mallgate::config::StoreConfig;
    use mallgate_testkit::admin::{admin_mall, serving};

    let Some(mut etcd) = Etcd::start_or_skip() else {
        return;
    };
    let store = StoreConfig::Etcd {
        endpoints: vec![etcd.endpoint()],
        prefix: "/down/".into(),
        timeout_ms: 1_000,
        auth: None,
        replica_id: None,
        lease_ttl_s: 10,
        tls: None,
    };
    let start = || {
        let store = store.clone();
        admin_mall(&[("operator", OPERATOR)], move |c| c.store = Some(store))
    };
    let (a, b) = (start().await, start().await);
    let (status, body) = put_voltmart(&a, 1, 1).await;
    assert!((200..300).contains(&status), "{body}");
    let v2 = serving(&a, "voltmart").expect("serves");
    assert!(eventually(|| serving(&b, "voltmart") == Some(v2)).await);

    let ready = a.get("/readyz").await;
    assert_eq!(
        (ready.status, &ready.body["store"]),
        (200, &serde_json::json!("connected"))
    );
    etcd.stop();
    // Still ready (it serves its last good set), and it says the store is out of reach.
    let mut said = false;
    for _ in 0..300 {
        let ready = a.get("/readyz").await;
        assert_eq!(ready.status, 200, "{}", ready.body);
        if ready.body["store"] == "disconnected" {
            said = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(said, "readiness says store: disconnected");
    for mall in [&a, &b] {
        let answer = mall.get("/v1/products?q=headphones").await;
        assert_eq!(
            answer.status, 200,
            "the public API keeps serving: {}",
            answer.body
        );
    }
    let (status, body) = put_voltmart(&b, 2, v2).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["type"], "https://mallgate.dev/problems/store-unavailable",
        "{body}"
    );
    assert_eq!(
        serving(&b, "voltmart"),
        Some(v2),
        "the last good version serves"
    );

    etcd.restart();
    // Another writer (a replica of its own) activates a version while both watch.
    let other = etcd_store(&etcd, "/down/");
    let text = other.document("voltmart", v2).expect("doc") + "\n# by another writer\n";
    let meta = other
        .add_version("voltmart", "voltmart", &text, "operator")
        .expect("add");
    other
        .set_active_if("voltmart", Some(v2), Some(meta.version))
        .expect("activate");
    for mall in [&a, &b] {
        assert!(
            eventually(|| serving(mall, "voltmart") == Some(meta.version)).await,
            "both serve v{} after etcd is back: {:?}",
            meta.version,
            serving(mall, "voltmart")
        );
    }
    // Readiness says connected once the watch is back (a retried reload may have applied
    // the change a moment before).
    let mut said = None;
    for _ in 0..600 {
        let ready = a.get("/readyz").await;
        said = Some((ready.status, ready.body["store"].clone()));
        if said == Some((200, serde_json::json!("connected"))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(said, Some((200, serde_json::json!("connected"))));
}

/// `store.tls` as a gateway config writes it: file references to PEM text.
fn tls_config(dir: &std::path::Path, ca: &str, client: bool) -> mallgate::config::EtcdTlsConfig {
    let file = |name: &str| format!("file:{}", dir.join(name).display());
    mallgate::config::EtcdTlsConfig {
        ca: file(ca),
        cert: client.then(|| file("client.pem")),
        key: client.then(|| file("client-key.pem")),
        server_name: None,
    }
}

#[test]
fn a_store_over_tls_verifies_etcd_and_presents_its_certificate() {
    use mallgate::config::StoreConfig;
    let Some(etcd) = Etcd::start_tls_or_skip() else {
        return;
    };
    let dir = etcd.tls_dir().expect("a TLS member").to_owned();
    // A CA etcd's certificate does not chain to, for the refusal below.
    let other = mallgate_partner_sim::pki::Pki::generate("another CA").expect("a CA");
    std::fs::write(dir.join("other-ca.pem"), other.ca_pem()).expect("PEM");
    let connect = |tls: Option<mallgate::config::EtcdTlsConfig>, endpoint: String| {
        let config = StoreConfig::Etcd {
            endpoints: vec![endpoint],
            prefix: "/tls/".into(),
            timeout_ms: 2_000,
            auth: None,
            replica_id: None,
            lease_ttl_s: 10,
            tls,
        };
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let settings = config.settings(mallgate::server::resolve_reference)?;
        // The key never shows in the settings' Debug form.
        assert!(
            !format!("{settings:?}").contains("PRIVATE KEY"),
            "{settings:?}"
        );
        let store = Store::over(Arc::new(
            EtcdBackend::connect(settings).map_err(|e| e.to_string())?,
        ));
        store
            .add_version("acme", "acme", "a: 1", "operator")
            .map(|m| (store.clone(), m.version))
            .map_err(|e| e.to_string())
    };

    let (store, version) =
        connect(Some(tls_config(&dir, "ca.pem", true)), etcd.endpoint()).expect("over TLS");
    assert_eq!(store.document("acme", version).expect("read back"), "a: 1");
    // etcd's certificate is verified: signed by another CA, it is refused.
    let wrong_ca = connect(
        Some(tls_config(&dir, "other-ca.pem", true)),
        etcd.endpoint(),
    );
    assert!(
        wrong_ca.is_err(),
        "an unverified etcd is refused: {wrong_ca:?}"
    );
    // etcd asks for a client certificate (--client-cert-auth): none, refused.
    let no_client = connect(Some(tls_config(&dir, "ca.pem", false)), etcd.endpoint());
    assert!(
        no_client.is_err(),
        "etcd refuses a client without a certificate"
    );
    assert!(
        format!("{wrong_ca:?}").contains("UnknownIssuer"),
        "refused for its certificate: {wrong_ca:?}"
    );
    eprintln!("refused: {wrong_ca:?}; {no_client:?}");
    // The config refuses https:// without a CA and http:// beside TLS.
    let plain = connect(None, etcd.endpoint()).expect_err("https:// needs store.tls");
    assert!(plain.contains("https:// needs store.tls.ca"), "{plain}");
    let clear = etcd.endpoint().replace("https://", "http://");
    let mixed = connect(Some(tls_config(&dir, "ca.pem", true)), clear).expect_err("in the clear");
    assert!(mixed.contains("every endpoint is https://"), "{mixed}");
}
