//! The one change transaction: a store or audit write that fails is the caller's 500 (and
//! a figure in the status), the change is undone as one — the pointer back, the added
//! version discarded — and the version before it keeps serving. Faults are real: the state
//! directory's files are replaced by directories, so the gateway's own writes fail.

use mallgate_testkit as support;

use serde_json::Value;
use support::Mall;
use support::admin::{admin_mall, admin_send, connector_text, serving};

const OPERATOR: &str = "operator-token-for-change-tests";

async fn mall() -> Mall {
    admin_mall(&[("operator", OPERATOR)], |_| {}).await
}

/// PUTs Voltmart's connector with `marker` appended (a new document), replacing `version`.
async fn put_voltmart(mall: &Mall, marker: &str, version: u32) -> (u16, Value) {
    let text = format!("{}\n# {marker}\n", connector_text(mall, "voltmart.yaml"));
    admin_send(
        mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart",
        OPERATOR,
        &[("if-match", format!("\"voltmart-v{version}\""))],
        Some(text),
    )
    .await
}

async fn versions(mall: &Mall) -> Vec<u64> {
    let (status, body) = admin_send(
        mall,
        reqwest::Method::GET,
        "/admin/v1/connectors/voltmart/versions",
        OPERATOR,
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect()
}

async fn store_status(mall: &Mall) -> Value {
    let (status, body) = admin_send(
        mall,
        reqwest::Method::GET,
        "/admin/v1/status",
        OPERATOR,
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["store"].clone()
}

fn state_dir(mall: &Mall) -> std::path::PathBuf {
    mall.gateway
        .admin
        .as_ref()
        .expect("admin")
        .store()
        .root()
        .expect("a state directory")
        .to_owned()
}

/// Replaces the file at `path` with a non-empty directory: opening it for writing, or
/// renaming a file over it, fails for every user, root included.
fn block(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    std::fs::create_dir_all(path.join("blocked")).expect("block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_is_a_500_and_undoes_the_whole_change() {
    let mall = mall().await;
    let (status, body) = put_voltmart(&mall, "second", 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serving(&mall, "voltmart"), Some(2));
    assert_eq!(store_status(&mall).await["write_failures"], 0);

    // Making a version active appends it to the history first: that write now fails,
    // after the new version's document was written.
    block(&state_dir(&mall).join("connectors/voltmart/history"));
    let (status, body) = put_voltmart(&mall, "third", 2).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["type"], "https://mallgate.dev/problems/internal-error",
        "{body}"
    );
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("the store failed"), "{detail}");
    assert!(detail.contains("history"), "names the file: {detail}");
    // Undone as one: v2 serves, v3 is not kept, and the store's pointer is v2 — a
    // rebuild from the store serves v2 again.
    assert_eq!(serving(&mall, "voltmart"), Some(2));
    assert_eq!(versions(&mall).await, vec![2]);
    let (status, body) = admin_send(
        &mall,
        reqwest::Method::POST,
        "/admin/v1/reload",
        OPERATOR,
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serving(&mall, "voltmart"), Some(2));
    let store = store_status(&mall).await;
    assert_eq!(store["write_failures"], 1, "{store}");
    assert!(
        store["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("history")),
        "{store}"
    );
    // The search path never noticed.
    assert_eq!(mall.get("/v1/products?q=speaker").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unaudited_change_does_not_stay() {
    let mall = mall().await;
    let (status, body) = put_voltmart(&mall, "second", 1).await;
    assert_eq!(status, 200, "{body}");
    block(&state_dir(&mall).join("audit.log"));

    let (status, body) = put_voltmart(&mall, "third", 2).await;
    assert_eq!(status, 500, "{body}");
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("audit log"), "{detail}");
    assert!(detail.contains("undone"), "{detail}");
    assert_eq!(serving(&mall, "voltmart"), Some(2));
    assert_eq!(versions(&mall).await, vec![2]);
    // The next version is v4: v3 served for a moment, its number is never given again.
    // (Checked once the audit log is writable again, below.)

    // A rollback and a delete are undone the same way; the purge (which cannot be
    // undone) answers 500 too, saying it happened.
    for (method, path) in [
        (
            reqwest::Method::POST,
            "/admin/v1/connectors/voltmart/rollback",
        ),
        (reqwest::Method::DELETE, "/admin/v1/connectors/voltmart"),
        (reqwest::Method::POST, "/admin/v1/cache/purge"),
    ] {
        let any = [("if-match", "*".to_owned())];
        let (status, body) = admin_send(&mall, method, path, OPERATOR, &any, None).await;
        assert_eq!(status, 500, "{path}: {body}");
    }
    assert_eq!(serving(&mall, "voltmart"), Some(2));
    let store = store_status(&mall).await;
    assert!(
        store["audit_failures"].as_u64().is_some_and(|n| n >= 4),
        "{store}"
    );
    assert_eq!(store["write_failures"], 0, "{store}");

    std::fs::remove_dir_all(state_dir(&mall).join("audit.log")).expect("unblock");
    let (status, body) = put_voltmart(&mall, "fourth", 2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 4, "v3's number is not reused: {body}");
}

/// Every `connector_version` of Voltmart's records in an answer, at any depth.
fn voltmart_versions(value: &Value, out: &mut std::collections::BTreeSet<u64>) {
    match value {
        Value::Object(map) => {
            if let Some(p) = map.get("provenance")
                && p["partner_id"] == "voltmart"
                && let Some(v) = p["connector_version"].as_u64()
            {
                out.insert(v);
            }
            map.values().for_each(|v| voltmart_versions(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| voltmart_versions(v, out)),
        _ => {}
    }
}

/// DESIGN §3: a canary is chosen once per request. An inventory request calls Voltmart
/// three times (its catalog for the sku, its stock, its stores); with a canary at 50%
/// every record of one answer comes from one version, and both versions answer requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_chosen_once_per_request() {
    let mall = mall().await;
    let text = format!("{}\n# the canary\n", connector_text(&mall, "voltmart.yaml"));
    let (status, body) = admin_send(
        &mall,
        reqwest::Method::PUT,
        "/admin/v1/connectors/voltmart?canary_percent=50",
        OPERATOR,
        &[("if-match", "\"voltmart-v1\"".to_owned())],
        Some(text),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let world = mall.fleet.world();
    let gtin = world
        .products
        .iter()
        .filter(|p| p.listings.iter().any(|l| l.partner.id() == "voltmart"))
        .find_map(|p| p.variants.first().and_then(|v| v.gtin14()))
        .expect("Voltmart sells a product with a GTIN");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let a = mall.get(&format!("/v1/inventory?gtin={gtin}")).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let mut versions = std::collections::BTreeSet::new();
        voltmart_versions(&a.body["data"], &mut versions);
        assert!(
            versions.len() <= 1,
            "request {i} mixed Voltmart versions {versions:?}: {}",
            a.body
        );
        seen.extend(versions);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![1, 2],
        "both versions answered"
    );
}
