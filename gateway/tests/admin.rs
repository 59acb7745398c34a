//! The admin API end to end: the real gateway with its admin listener, a state directory
//! on disk, the simulated fleet. Tokens, scopes, rejected documents, If-Match conflicts,
//! rollback, secrets that never show, and connector swaps under load that drop nothing.

use mallgate_testkit as support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mallgate_partner_sim::Partner;
use serde_json::Value;
use support::Mall;

const OPERATOR: &str = "operator-token-for-tests-0001";
const VOLTMART: &str = "voltmart-token-for-tests-0001";
const ACME: &str = "acme-token-for-tests-00000001";

async fn mall() -> Mall {
    mall_with(|_| {}).await
}

async fn mall_with(more: impl FnOnce(&mut mallgate::GatewayConfig)) -> Mall {
    let tokens = [
        ("operator", OPERATOR),
        ("partner:voltmart", VOLTMART),
        ("partner:acme", ACME),
    ];
    support::admin::admin_mall(&tokens, |config| {
        if let Some(admin) = config.admin.as_mut() {
            // The canary tests promote after 20 healthy calls.
            admin.canary_promote_after = 20;
        }
        more(config);
    })
    .await
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

async fn admin(
    mall: &Mall,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let addr = mall.gateway.admin_addr.expect("admin listener");
    let mut req = mall.http.request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let res = req.send().await.expect("the admin listener answers");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{status} {text}"
        );
    }
    Reply {
        status,
        headers,
        body,
        text,
    }
}

fn connector_text(mall: &Mall, file: &str) -> String {
    std::fs::read_to_string(mall.dir.join(file)).expect("connector file")
}

/// Voltmart's connector with its own description and, for even `n`, another search
/// mapping program (the title goes through one more filter), so each variant is a
/// different document and the two alternate between two mappings.
fn voltmart_variant(mall: &Mall, n: usize) -> String {
    let text = connector_text(mall, "voltmart.yaml").replace(
        "description: Voltmart electronics catalog, store stock and store list.",
        &format!("description: Voltmart electronics catalog, variant {n}."),
    );
    if n.is_multiple_of(2) {
        text.replacen(
            "title: (.name | clean_text),",
            "title: (.name | clean_text | tostring),",
            1,
        )
    } else {
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_scoped() {
    let mall = mall().await;
    let get = reqwest::Method::GET;
    let put = reqwest::Method::PUT;
    let none = admin(&mall, get.clone(), "/admin/v1/status", None, &[], None).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let wrong = admin(
        &mall,
        get.clone(),
        "/admin/v1/status",
        Some("nope-nope-nope-nope"),
        &[],
        None,
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        admin(
            &mall,
            get.clone(),
            "/admin/v1/status",
            Some(VOLTMART),
            &[],
            None
        )
        .await
        .status,
        403,
        "status is the operator's"
    );
    assert_eq!(
        admin(
            &mall,
            get.clone(),
            "/admin/v1/status",
            Some(OPERATOR),
            &[],
            None
        )
        .await
        .status,
        200
    );
    // A partner reads its own connector, not another's.
    assert_eq!(
        admin(
            &mall,
            get.clone(),
            "/admin/v1/connectors/voltmart",
            Some(VOLTMART),
            &[],
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        admin(
            &mall,
            get.clone(),
            "/admin/v1/connectors/acme-dropship",
            Some(VOLTMART),
            &[],
            None
        )
        .await
        .status,
        403
    );
    // Nor change another's connector, nor register one for another partner.
    let acme = connector_text(&mall, "acme-dropship.yaml");
    let r = admin(
        &mall,
        put.clone(),
        "/admin/v1/connectors/acme-dropship",
        Some(VOLTMART),
        &[("if-match", "\"acme-dropship-v1\"")],
        Some(acme),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let impostor = connector_text(&mall, "voltmart.yaml")
        .replace("id: voltmart", "id: voltmart-two")
        .replace("partner: voltmart", "partner: acme");
    let r = admin(
        &mall,
        put.clone(),
        "/admin/v1/connectors/voltmart-two",
        Some(VOLTMART),
        &[],
        Some(impostor),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Nor set another partner's secrets.
    let r = admin(
        &mall,
        put.clone(),
        "/admin/v1/partners/acme/secrets/acme-client-id",
        Some(VOLTMART),
        &[],
        Some("x".into()),
    )
    .await;
    assert_eq!(r.status, 403);
    // Nothing changed.
    let snapshot = mall.gateway.api.registry.load();
    assert!(snapshot.connectors.iter().all(|c| c.version() == 1));
}

/// The production guard with the operator's allow-list of exactly 127.0.0.1 (where the
/// simulated partners listen): a connector naming any other non-public address, in any
/// spelling, is refused at registration with the pointer of the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_attempts_are_rejected_at_registration() {
    let mall = mall_with(|config| {
        config.allow_loopback_partners = false;
        config.partner_allow = vec!["127.0.0.1".into()];
    })
    .await;
    let search = mall.get("/v1/products?q=headphones").await;
    assert_eq!(
        search.outcome("voltmart"),
        Some("live"),
        "allow-listed partners serve"
    );
    let original = connector_text(&mall, "voltmart.yaml");
    let primary = original
        .lines()
        .find_map(|l| l.trim().strip_prefix("- url: "))
        .map(|u| u.split_whitespace().next().unwrap_or_default().to_owned())
        .expect("an endpoint");
    for evil in [
        "http://169.254.169.254",
        "http://2130706434",
        "http://0x7f000002",
        "http://[::ffff:127.0.0.2]",
        "http://10.0.0.1",
        "http://[fd00::1]",
    ] {
        let doc = original.replacen(&primary, evil, 1);
        let r = admin(
            &mall,
            reqwest::Method::PUT,
            "/admin/v1/connectors/voltmart",
            Some(VOLTMART),
            &[("if-match", "\"voltmart-v1\"")],
            Some(doc),
        )
        .await;
        assert_eq!(r.status, 422, "{evil}: {}", r.text);
        assert_eq!(
            r.body["problems"][0]["pointer"], "/endpoints/0/url",
            "{evil}: {}",
            r.text
        );
    }
    let live = mall.gateway.api.registry.load();
    assert_eq!(
        live.connectors
            .iter()
            .find(|c| c.id() == "voltmart")
            .map(|c| c.version()),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_connector_is_rejected_and_the_old_one_serves() {
    let mall = mall().await;
    let bad = connector_text(&mall, "voltmart.yaml").replace("catalog.search:", "catalog.serch:");
    let r = admin(
        &mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart",
        Some(VOLTMART),
        &[("if-match", "\"voltmart-v1\"")],
        Some(bad),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let problem = &r.body["problems"][0];
    assert_eq!(
        problem["pointer"], "/capabilities/catalog.serch",
        "{}",
        r.text
    );
    assert!(problem["line"].as_u64().unwrap_or(0) > 0, "{}", r.text);
    assert!(
        problem["reason"]
            .as_str()
            .unwrap_or("")
            .contains("catalog.search"),
        "{}",
        r.text
    );
    let search = mall.get("/v1/products?q=headphones").await;
    let voltmart = search.body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == "voltmart"))
        .cloned()
        .expect("voltmart source");
    assert_eq!(voltmart["outcome"], "live");
    assert_eq!(voltmart["connector_version"], 1);
    let audit = mall
        .gateway
        .admin
        .as_ref()
        .expect("admin")
        .store()
        .audit_log()
        .expect("audit");
    assert!(audit.contains("\"result\":\"rejected\""), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_conflict_and_rollback() {
    let mall = mall().await;
    let put = reqwest::Method::PUT;
    let get = admin(
        &mall,
        reqwest::Method::GET,
        "/admin/v1/connectors/voltmart",
        Some(VOLTMART),
        &[],
        None,
    )
    .await;
    let etag = get
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("etag")
        .to_owned();
    assert_eq!(etag, "\"voltmart-v1\"");

    let r = admin(
        &mall,
        put.clone(),
        "/admin/v1/connectors/voltmart",
        Some(VOLTMART),
        &[],
        Some(voltmart_variant(&mall, 1)),
    )
    .await;
    assert_eq!(r.status, 428, "a replacement needs If-Match: {}", r.text);

    let r = admin(
        &mall,
        put.clone(),
        "/admin/v1/connectors/voltmart",
        Some(VOLTMART),
        &[("if-match", &etag)],
        Some(voltmart_variant(&mall, 1)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    let search = mall.get("/v1/products?q=tv").await;
    assert_eq!(search.body["generation"], r.body["generation"]);

    // Two concurrent replacements of the same revision: one wins, one gets 409.
    let (a, b) = tokio::join!(
        admin(
            &mall,
            put.clone(),
            "/admin/v1/connectors/voltmart",
            Some(VOLTMART),
            &[("if-match", "\"voltmart-v2\"")],
            Some(voltmart_variant(&mall, 2))
        ),
        admin(
            &mall,
            put.clone(),
            "/admin/v1/connectors/voltmart",
            Some(OPERATOR),
            &[("if-match", "\"voltmart-v2\"")],
            Some(voltmart_variant(&mall, 3))
        ),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", a.text, b.text);

    // Rollback to the previous version, then to a named one.
    let r = admin(
        &mall,
        reqwest::Method::POST,
        "/admin/v1/connectors/voltmart/rollback",
        Some(VOLTMART),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    let live = mall.gateway.api.registry.load();
    assert_eq!(
        live.connectors
            .iter()
            .find(|c| c.id() == "voltmart")
            .map(|c| c.version()),
        Some(2)
    );
    let versions = admin(
        &mall,
        reqwest::Method::GET,
        "/admin/v1/connectors/voltmart/versions",
        Some(VOLTMART),
        &[],
        None,
    )
    .await;
    let list = versions.body["versions"]
        .as_array()
        .expect("versions")
        .clone();
    assert_eq!(
        list.len(),
        2,
        "every accepted version is kept: {}",
        versions.text
    );
    assert_eq!(list.iter().filter(|v| v["active"] == true).count(), 1);

    // Rolling back past the first stored version hands the id back to the directory.
    let r = admin(
        &mall,
        reqwest::Method::POST,
        "/admin/v1/connectors/voltmart/rollback",
        Some(VOLTMART),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["source"], "directory", "{}", r.text);
    let r = admin(
        &mall,
        reqwest::Method::POST,
        "/admin/v1/connectors/voltmart/rollback",
        Some(VOLTMART),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 409, "nothing earlier: {}", r.text);
    let r = admin(
        &mall,
        reqwest::Method::POST,
        "/admin/v1/connectors/voltmart/rollback",
        Some(VOLTMART),
        &[],
        Some("{\"version\": 3}".into()),
    )
    .await;
    assert_eq!(r.status, 200, "a named version: {}", r.text);

    // Delete: the directory's document serves again.
    let r = admin(
        &mall,
        reqwest::Method::DELETE,
        "/admin/v1/connectors/voltmart",
        Some(OPERATOR),
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.status, 428,
        "like a put, a delete names what it deletes: {}",
        r.text
    );
    let current = r.text.clone();
    let r = admin(
        &mall,
        reqwest::Method::DELETE,
        "/admin/v1/connectors/voltmart",
        Some(OPERATOR),
        &[("if-match", "\"voltmart-v1\"")],
        None,
    )
    .await;
    assert_eq!(
        r.status, 409,
        "a revision that is not the active one: {} ({current})",
        r.text
    );
    let r = admin(
        &mall,
        reqwest::Method::DELETE,
        "/admin/v1/connectors/voltmart",
        Some(OPERATOR),
        &[("if-match", "*")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let search = mall.get("/v1/products?q=tv").await;
    assert_eq!(search.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_answers_or_the_audit_log() {
    let mall = mall().await;
    const CANARY: &str = "canary-secret-value-7d1f3c";
    let r = admin(
        &mall,
        reqwest::Method::PUT,
        "/admin/v1/partners/voltmart/secrets/canary",
        Some(VOLTMART),
        &[],
        Some(CANARY.into()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut seen = vec![r.text];
    for path in [
        "/admin/v1/connectors/voltmart",
        "/admin/v1/connectors/voltmart/versions",
    ] {
        seen.push(
            admin(&mall, reqwest::Method::GET, path, Some(VOLTMART), &[], None)
                .await
                .text,
        );
    }
    seen.push(
        admin(
            &mall,
            reqwest::Method::GET,
            "/admin/v1/status",
            Some(OPERATOR),
            &[],
            None,
        )
        .await
        .text,
    );
    seen.push(mall.get("/v1/partners").await.body.to_string());
    let admin_api = mall.gateway.admin.as_ref().expect("admin");
    seen.push(admin_api.store().audit_log().expect("audit"));
    for text in &seen {
        assert!(!text.contains(CANARY), "the secret leaked: {text}");
        assert!(
            !text.contains(OPERATOR) && !text.contains(VOLTMART),
            "a token leaked: {text}"
        );
    }
    assert!(
        seen.last().is_some_and(|a| a.contains("secret.put")),
        "the change is audited"
    );
}

/// 200 swaps of Voltmart's connector between two versions under a bounded load: no
/// non-2xx, every answer from one generation (its Voltmart source carries the version that
/// generation serves), and the swaps cost the partners nothing: no new OAuth token
/// requests (Acme), breaker state and endpoint counters intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_drop_nothing() {
    let mall = Arc::new(mall().await);
    // Warm up: Acme's token is fetched once, the caches fill.
    assert_eq!(mall.get("/v1/products?q=headphones").await.status, 200);
    let tokens_before = mall.fleet.tokens().issued(Partner::Acme);
    let endpoint_before =
        mall.partner_health("acme").await["connectors"][0]["endpoints"][0].clone();

    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let mall = Arc::clone(&mall);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..20_000_u32 {
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    // Some cached, some fresh: both paths must hold during swaps.
                    let q = if i.is_multiple_of(2) {
                        "headphones".to_owned()
                    } else {
                        format!("swap{w}x{i}")
                    };
                    let answer = mall.get(&format!("/v1/products?q={q}")).await;
                    let version = answer.body["sources"]
                        .as_array()
                        .and_then(|s| s.iter().find(|s| s["partner"] == "voltmart"))
                        .map(|s| s["connector_version"].clone());
                    seen.push((answer.status, answer.body["generation"].clone(), version));
                }
                seen
            })
        })
        .collect();

    let mut generation_version: HashMap<u64, u64> = HashMap::new();
    let first = mall.gateway.api.registry.load();
    generation_version.insert(first.generation, 1);
    let mut etag = "\"voltmart-v1\"".to_owned();
    let texts = [voltmart_variant(&mall, 1), voltmart_variant(&mall, 2)];
    let mut reload_ms = Vec::new();
    for swap in 0..200 {
        let started = std::time::Instant::now();
        let r = admin(
            &mall,
            reqwest::Method::PUT,
            "/admin/v1/connectors/voltmart",
            Some(OPERATOR),
            &[("if-match", &etag)],
            Some(texts[swap % 2].clone()),
        )
        .await;
        reload_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 200, "swap {swap}: {}", r.text);
        etag = r.body["revision"].as_str().expect("revision").to_owned();
        generation_version.insert(
            r.body["generation"].as_u64().expect("generation"),
            r.body["version"].as_u64().expect("version"),
        );
    }
    done.store(true, Ordering::Release);
    let mut answers = 0;
    for w in workers {
        for (status, generation, version) in w.await.expect("worker") {
            answers += 1;
            assert_eq!(status, 200, "no frontend error during swaps");
            let generation = generation.as_u64().expect("generation");
            let expected = generation_version.get(&generation).copied();
            if let (Some(expected), Some(version)) = (expected, version) {
                assert_eq!(
                    version, expected,
                    "generation {generation} serves version {expected}"
                );
            }
        }
    }
    assert!(answers >= 200, "load ran during the swaps: {answers}");
    assert_eq!(
        mall.fleet.tokens().issued(Partner::Acme),
        tokens_before,
        "no token requests for swaps"
    );
    let endpoint_after = mall.partner_health("acme").await["connectors"][0]["endpoints"][0].clone();
    assert_eq!(endpoint_after["breaker"], "closed");
    assert!(
        endpoint_after["requests"].as_u64() >= endpoint_before["requests"].as_u64(),
        "endpoint state survived: {endpoint_before} -> {endpoint_after}"
    );
    reload_ms.sort_by(f64::total_cmp);
    eprintln!(
        "swaps: 200 under load, {answers} answers, reload (PUT accepted -> serving) p50 {:.1} ms, p99 {:.1} ms",
        reload_ms[100], reload_ms[197]
    );
}

/// The operator's GitOps source: a changed file in the connectors directory becomes a new
/// version without a restart (the watcher reloads through the same path, audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_directory_file_is_reloaded() {
    let mall = mall().await;
    std::fs::write(mall.dir.join("voltmart.yaml"), voltmart_variant(&mall, 7)).expect("write");
    let mut version = 1;
    for _ in 0..100 {
        let live = mall.gateway.api.registry.load();
        version = live
            .connectors
            .iter()
            .find(|c| c.id() == "voltmart")
            .map_or(0, |c| c.version());
        if version == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(version, 2, "the watcher picked the change up");
    let search = mall.get("/v1/products?q=tv").await;
    assert_eq!(search.outcome("voltmart"), Some("live"));
    let audit = mall
        .gateway
        .admin
        .as_ref()
        .expect("admin")
        .store()
        .audit_log()
        .expect("audit");
    assert!(audit.contains("reload.directory"), "{audit}");
    // A broken file is refused and the last good version keeps serving.
    std::fs::write(mall.dir.join("voltmart.yaml"), "id: voltmart\nbroken: [").expect("write");
    for _ in 0..30 {
        let audit = mall
            .gateway
            .admin
            .as_ref()
            .expect("admin")
            .store()
            .audit_log()
            .expect("audit");
        if audit.matches("reload.directory").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let live = mall.gateway.api.registry.load();
    assert_eq!(
        live.connectors
            .iter()
            .find(|c| c.id() == "voltmart")
            .map(|c| c.version()),
        Some(2)
    );
    // ... and does not block other changes: an admin PUT of another connector still lands,
    // and the broken file is audited with its reason.
    let acme = connector_text(&mall, "acme-dropship.yaml")
        .replace("description: ", "description: (admin) ");
    let r = admin(
        &mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/acme-dropship",
        Some(ACME),
        &[("if-match", "\"acme-dropship-v1\"")],
        Some(acme),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let live = mall.gateway.api.registry.load();
    assert_eq!(
        live.connectors
            .iter()
            .find(|c| c.id() == "voltmart")
            .map(|c| c.version()),
        Some(2)
    );
    let audit = mall
        .gateway
        .admin
        .as_ref()
        .expect("admin")
        .store()
        .audit_log()
        .expect("audit");
    assert!(audit.contains("directory.document"), "{audit}");
}

/// A dry-run maps a real sample page in the sandbox child and compares with the active
/// version; a hostile mapping kills only the child, and the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_compare_and_contain_hostile_mappings() {
    let mall = mall().await;
    let base = mall.fleet.url(Partner::Voltmart, 0).expect("replica");
    let sample = mall
        .http
        .get(format!(
            "{base}/v1/products?format=json&q=tv&apiKey={}",
            mallgate_partner_sim::partners::voltmart::API_KEY
        ))
        .send()
        .await
        .expect("the partner answers")
        .text()
        .await
        .expect("a page");
    let dry_run = |connector: String| {
        let body = serde_json::json!({"connector": connector, "capability": "catalog.search",
                                      "sample": sample.clone(), "query": {"q": "tv"}});
        admin(
            &mall,
            reqwest::Method::POST,
            "/admin/v1/connectors/voltmart/dry-run",
            Some(VOLTMART),
            &[],
            Some(body.to_string()),
        )
    };
    // Another program with the same output: no difference.
    let r = dry_run(voltmart_variant(&mall, 2)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let records = r.body["records"].as_array().expect("records").len();
    assert!(records > 0, "{}", r.text);
    assert_eq!(
        r.body["difference"]["same"], records,
        "{}",
        r.body["difference"]
    );
    // A changed title mapping: every record differs.
    let renamed = connector_text(&mall, "voltmart.yaml").replacen(
        "title: (.name | clean_text),",
        "title: (.name | clean_text | . + \" (new)\"),",
        1,
    );
    let r = dry_run(renamed).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["difference"]["changed"].as_array().map(Vec::len),
        Some(records),
        "{}",
        r.body["difference"]
    );
    // A memory bomb: only the child dies.
    let bomb = connector_text(&mall, "voltmart.yaml").replacen(
        "title: (.name | clean_text),",
        "title: (\"x\" * 2000000000 | length | tostring),",
        1,
    );
    let r = dry_run(bomb).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        mall.get("/v1/products?q=tv").await.status,
        200,
        "the gateway serves on"
    );
    // Nothing of this changed the serving version.
    let live = mall.gateway.api.registry.load();
    assert_eq!(
        live.connectors
            .iter()
            .find(|c| c.id() == "voltmart")
            .map(|c| c.version()),
        Some(1)
    );
}

/// The CLI: `connector check` offline (and with a sample in the sandbox), `connector push`
/// through the admin API with the token taken from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_checks_and_pushes() {
    let mall = mall().await;
    let exe = env!("CARGO_BIN_EXE_mallgate");
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(exe)
            .args(&args)
            .env("MG_TOKEN", VOLTMART)
            .output()
            .expect("the CLI runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let good = mall.dir.join("voltmart.yaml");
    let (code, out) = run(vec![
        "connector".into(),
        "check".into(),
        good.display().to_string(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("connector `voltmart`"), "{out}");

    let bad = mall.dir.join("bad.txt");
    let text = connector_text(&mall, "voltmart.yaml");
    let line = 1 + text
        .lines()
        .position(|l| l == "  catalog.search:")
        .expect("Voltmart serves catalog.search");
    std::fs::write(&bad, text.replace("catalog.search:", "catalog.serch:")).expect("write");
    let (code, out) = run(vec![
        "connector".into(),
        "check".into(),
        bad.display().to_string(),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(":{line}:3: /capabilities/catalog.serch:")),
        "{out}"
    );

    let base = mall.fleet.url(Partner::Voltmart, 0).expect("replica");
    let page = mall
        .http
        .get(format!(
            "{base}/v1/products?format=json&q=tv&apiKey={}",
            mallgate_partner_sim::partners::voltmart::API_KEY
        ))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    // Outside the connectors directory (the watcher would take it for a connector).
    let sample = std::env::temp_dir().join(format!(
        "mallgate-sample-{:x}.json",
        mallgate::cursor::random_u64()
    ));
    std::fs::write(&sample, page).expect("write");
    let (code, out) = run(vec![
        "connector".into(),
        "check".into(),
        good.display().to_string(),
        "--sample".into(),
        sample.display().to_string(),
        "--capability".into(),
        "catalog.search".into(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let records: Value = serde_json::from_str(&out).expect("JSON records");
    assert!(
        records["records"].as_array().is_some_and(|r| !r.is_empty()),
        "{out}"
    );

    let variant = mall.dir.join("variant.txt");
    std::fs::write(&variant, voltmart_variant(&mall, 5)).expect("write");
    let admin_url = format!("http://{}", mall.gateway.admin_addr.expect("admin"));
    let push = |more: &[&str]| {
        let mut args: Vec<String> = [
            "connector",
            "push",
            &variant.display().to_string(),
            "--admin",
            &admin_url,
            "--token",
            "env:MG_TOKEN",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(more.iter().map(|s| (*s).to_owned()));
        run(args)
    };
    // Replacing an existing connector takes the revision replaced, or --force.
    let (code, out) = push(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("--if-match") && out.contains("--force"),
        "{out}"
    );
    let (code, out) = push(&["--if-match", "\"voltmart-v7\""]);
    assert_eq!(code, Some(1), "a stale revision conflicts: {out}");
    let (code, out) = push(&["--if-match", "\"voltmart-v1\""]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"version\": 2"), "{out}");
    assert!(!out.contains(VOLTMART), "the token is never printed");
    // The same document again makes no new version.
    let (code, out) = push(&["--force"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("\"version\": 2") && out.contains("\"unchanged\": true"),
        "{out}"
    );
}

/// Sends searches for `tag` (a real query), each a partner call, until `done` says so (at
/// most `max`), returning Voltmart's connector versions seen in the answers.
async fn searches_until(
    mall: &Mall,
    tag: &str,
    max: usize,
    done: impl Fn(&Mall) -> bool,
) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..max {
        if done(mall) {
            break;
        }
        // The same real search each time, the cache purged: every one is a partner call
        // that maps records.
        let purge = admin(
            mall,
            reqwest::Method::POST,
            "/admin/v1/cache/purge",
            Some(OPERATOR),
            &[],
            None,
        )
        .await;
        assert_eq!(purge.status, 200);
        let answer = mall.get(&format!("/v1/products?q={tag}")).await;
        assert_eq!(answer.status, 200);
        if let Some(v) = answer.body["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["partner"] == "voltmart"))
            .and_then(|s| s["connector_version"].as_u64())
        {
            seen.push(v);
        }
    }
    seen
}

fn voltmart_version(mall: &Mall) -> Option<u32> {
    let live = mall.gateway.api.registry.load();
    live.connectors
        .iter()
        .find(|c| c.id() == "voltmart")
        .map(|c| c.version())
}

/// A healthy canary takes its share of the calls and is promoted after enough of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted() {
    let mall = mall().await;
    let r = admin(
        &mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart?canary_percent=50",
        Some(VOLTMART),
        &[("if-match", "\"voltmart-v1\"")],
        Some(voltmart_variant(&mall, 2)),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["canary"]["version"], 2);
    assert_eq!(
        voltmart_version(&mall),
        Some(1),
        "the active version serves on"
    );
    let seen = searches_until(&mall, "headphones", 400, |m| voltmart_version(m) == Some(2)).await;
    assert_eq!(voltmart_version(&mall), Some(2), "promoted");
    assert!(
        seen.contains(&1) && seen.contains(&2),
        "both versions answered: {seen:?}"
    );
    let audit = mall
        .gateway
        .admin
        .as_ref()
        .expect("admin")
        .store()
        .audit_log()
        .expect("audit");
    assert!(audit.contains("canary.promoted"), "{audit}");
}

/// A canary whose mapping violates the schema is rolled back automatically; the active
/// version never stopped serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regressing_canary_is_rolled_back() {
    let mall = mall().await;
    let broken = connector_text(&mall, "voltmart.yaml").replacen(
        "title: (.name | clean_text),",
        "title: null,",
        1,
    );
    let r = admin(
        &mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart?canary_percent=50",
        Some(VOLTMART),
        &[("if-match", "\"voltmart-v1\"")],
        Some(broken),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let no_canary = |m: &Mall| m.gateway.api.registry.load().canaries.is_empty();
    searches_until(&mall, "headphones", 400, no_canary).await;
    assert!(no_canary(&mall), "rolled back");
    assert_eq!(voltmart_version(&mall), Some(1));
    let audit = mall
        .gateway
        .admin
        .as_ref()
        .expect("admin")
        .store()
        .audit_log()
        .expect("audit");
    assert!(
        audit.contains("canary.rolled_back") && audit.contains("schema violations"),
        "{audit}"
    );
    let r = admin(
        &mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart?canary_percent=0",
        Some(VOLTMART),
        &[("if-match", "\"voltmart-v1\"")],
        Some(voltmart_variant(&mall, 3)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
}
