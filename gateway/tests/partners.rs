//! Partner self-service end to end, the real gateway and the simulated fleet: a partner the
//! operator onboards through the admin API gets its first token once, registers its
//! connector and its secret with that token and serves live; its secret is sealed at rest
//! (never in clear in the state directory) and survives restarts, master-key rotation
//! included; a rotated token keeps working for its grace and then stops; a revoked one is
//! refused at once; a narrowed grant applies at once.

use mallgate_testkit as support;

use std::path::{Path, PathBuf};

use mallgate::Gateway;
use reqwest::Method;
use serde_json::{Value, json};
use support::Mall;

const OPERATOR: &str = "operator-token-for-tests-0001";
/// The simulated Voltmart's API key: Globex's connector is pointed at Voltmart's API.
const GLOBEX_KEY: &str = "voltmart-demo-key";

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mallgate-partners-{name}-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A master key file: `byte` repeated 32 times, in hex.
fn key_file(dir: &Path, name: &str, byte: u8) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{byte:02x}").repeat(32)).expect("key");
    format!("file:{}", path.display())
}

async fn mall(master_key: Option<String>) -> Mall {
    support::admin::admin_mall(&[("operator", OPERATOR)], |config| {
        config.secrets.master_key = master_key;
    })
    .await
}

async fn send(
    mall: &Mall,
    method: Method,
    path: &str,
    token: &str,
    body: Option<String>,
) -> (u16, Value) {
    support::admin::admin_send(mall, method, path, token, &[], body).await
}

/// Globex's connector: Voltmart's dialect under Globex's name and secret.
fn globex_connector(mall: &Mall) -> String {
    support::admin::connector_text(mall, "voltmart.yaml")
        .replace("id: voltmart", "id: globex")
        .replace("partner: voltmart", "partner: globex")
        .replace("secret:voltmart-api-key", "secret:globex-api-key")
        .replace("\"voltmart:", "\"globex:")
        .replace(
            "seller: {id: \"voltmart\", name: \"Voltmart\"}",
            "seller: {id: \"globex\", name: \"Globex\"}",
        )
}

/// Globex's source in a search for `q`: (outcome, records, error message).
async fn globex_source(mall: &Mall, q: &str) -> (String, u64, String) {
    let answer = mall.get_owned(format!("/v1/products?q={q}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let source = answer.body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == "globex"))
        .cloned()
        .unwrap_or_else(|| panic!("no globex source: {}", answer.body));
    (
        source["outcome"].as_str().unwrap_or_default().to_owned(),
        source["records"].as_u64().unwrap_or(0),
        source["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Every file under `dir`, read as bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).expect("file")));
        }
    }
    out
}

/// The gateway stopped and started again on the same state directory, with an empty
/// secret store but the demo partners' configured ones, and `master_key` /
/// `previous_keys` as given.
fn restart(mall: &mut Mall, master_key: Option<String>, previous: Vec<String>) {
    let mut config = mall.gateway.api.config().clone();
    config.secrets.master_key = master_key;
    config.secrets.previous_keys = previous;
    let next = Gateway::build(config, mallgate::demo::demo_secrets())
        .expect("the gateway builds from its state directory")
        .start()
        .expect("listens");
    std::mem::replace(&mut mall.gateway, next).stop();
}

/// Onboards Globex: its record and first token.
async fn onboard(mall: &Mall) -> (Value, String) {
    let (status, body) = send(
        mall,
        Method::POST,
        "/admin/v1/partners",
        OPERATOR,
        Some(
            json!({"id": "globex", "display_name": "Globex Corporation", "kind": "retailer"})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"]
        .as_str()
        .expect("the first token, once")
        .to_owned();
    assert!(token.starts_with("mgp_") && token.len() > 40, "{token}");
    (body, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarded_partner_serves_with_its_own_token_and_keeps_its_secret_across_restarts() {
    let keys = temp("keys");
    let first_key = key_file(&keys, "first.key", 0x11);
    let mut mall = mall(Some(first_key.clone())).await;
    let state = mall
        .gateway
        .api
        .config()
        .state_dir
        .clone()
        .expect("state dir");
    let (record, token) = onboard(&mall).await;
    assert!(
        !record.to_string().contains("sha256"),
        "no hash is answered: {record}"
    );

    // Its own connector, with its own token: accepted, with the missing secret named.
    let (status, put) = send(
        &mall,
        Method::PUT,
        "/admin/v1/connectors/globex",
        &token,
        Some(globex_connector(&mall)),
    )
    .await;
    assert_eq!(status, 201, "{put}");
    assert_eq!(put["warnings"][0]["secret"], "globex-api-key", "{put}");
    assert_eq!(put["warnings"][0]["pointer"], "/auth/value", "{put}");
    let (outcome, _, message) = globex_source(&mall, "headphones").await;
    assert_eq!(outcome, "failed");
    assert!(
        message.contains("missing secret globex-api-key"),
        "the call names the secret: {message}"
    );
    let (_, status_page) = send(&mall, Method::GET, "/admin/v1/status", OPERATOR, None).await;
    let globex = status_page["connectors"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "globex"))
        .cloned()
        .expect("globex in the status");
    assert_eq!(
        globex["missing_secrets"],
        json!(["missing secret globex-api-key"])
    );

    // Its secret, with its own token: sealed at rest, and it serves.
    let (status, set) = send(
        &mall,
        Method::PUT,
        "/admin/v1/partners/globex/secrets/globex-api-key",
        &token,
        Some(GLOBEX_KEY.into()),
    )
    .await;
    assert_eq!((status, &set["persisted"]), (200, &json!(true)), "{set}");
    let (outcome, records, message) = globex_source(&mall, "tv").await;
    assert_eq!(outcome, "live", "{message}");
    assert!(records > 0, "Globex answers from Voltmart's catalog");
    let (_, listed) = send(
        &mall,
        Method::GET,
        "/admin/v1/partners/globex/secrets",
        &token,
        None,
    )
    .await;
    assert_eq!(listed["names"], json!(["globex-api-key"]), "{listed}");
    assert!(!listed.to_string().contains(GLOBEX_KEY));
    // Another partner's token cannot see them; a partner cannot onboard partners.
    let (status, _) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners",
        &token,
        Some(json!({"id": "evil"}).to_string()),
    )
    .await;
    assert_eq!(status, 403);

    let sealed_file = |state: &Path| {
        std::fs::read_to_string(state.join("secrets/globex/globex-api-key.json"))
            .expect("the sealed secret")
    };
    let leaked: Vec<_> = files(&state)
        .into_iter()
        .filter(|(_, bytes)| {
            bytes
                .windows(GLOBEX_KEY.len())
                .any(|w| w == GLOBEX_KEY.as_bytes())
        })
        .map(|(p, _)| p)
        .collect();
    assert!(leaked.is_empty(), "the secret is in clear in {leaked:?}");
    let sealed_before: Value = serde_json::from_str(&sealed_file(&state)).expect("json");

    // A restart: Globex serves with no partner action, its token still works.
    restart(&mut mall, Some(first_key.clone()), Vec::new());
    let (outcome, records, message) = globex_source(&mall, "laptop").await;
    assert_eq!(
        (outcome.as_str(), message.as_str()),
        ("live", ""),
        "after a restart"
    );
    assert!(records > 0);
    let (status, _) = send(
        &mall,
        Method::GET,
        "/admin/v1/partners/globex",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "the issued token survives the restart");

    // The master key rotated: the old key opens, the secret is sealed again under the new.
    let second_key = key_file(&keys, "second.key", 0x22);
    restart(&mut mall, Some(second_key.clone()), vec![first_key]);
    let sealed_after: Value = serde_json::from_str(&sealed_file(&state)).expect("json");
    assert_ne!(
        sealed_after["key"], sealed_before["key"],
        "re-sealed under the new key"
    );
    assert_eq!(sealed_after["updated_at"], sealed_before["updated_at"]);
    assert!(support::admin::audit_log(&mall).contains("secret.reseal"));
    // ... so the old key can go.
    restart(&mut mall, Some(second_key), Vec::new());
    assert_eq!(
        globex_source(&mall, "camera").await.0,
        "live",
        "after the rotation"
    );

    // Without any key, sealed secrets are a startup error that says so, never lost quietly.
    let mut config = mall.gateway.api.config().clone();
    config.secrets.master_key = None;
    let refused = Gateway::build(config, mallgate::demo::demo_secrets()).expect_err("no key");
    assert!(
        refused.to_string().contains("secrets.master_key"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(keys);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_with_a_grace_and_revoke_at_once() {
    let mall = mall(None).await;
    let (record, first) = onboard(&mall).await;
    let first_id = record["token_id"].as_str().expect("id").to_owned();
    let whoami = |token: String| {
        let mall = &mall;
        async move {
            send(mall, Method::GET, "/admin/v1/partners/globex", &token, None)
                .await
                .0
        }
    };
    assert_eq!(whoami(first.clone()).await, 200);

    // Rotated by the partner itself, with the default grace: both work.
    let (status, rotated) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners/globex/tokens",
        &first,
        None,
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let second = rotated["token"].as_str().expect("token").to_owned();
    assert_eq!(rotated["previous"][0]["id"], first_id.as_str());
    // A token being rotated out cannot mint a successor of its own.
    let (status, problem) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners/globex/tokens",
        &first,
        None,
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        (whoami(first.clone()).await, whoami(second.clone()).await),
        (200, 200)
    );

    // Refusals at their pointer: a grace beyond the operator's, an unknown field.
    let (status, problem) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners/globex/tokens",
        &second,
        Some(r#"{"grace_s": 99999999}"#.into()),
    )
    .await;
    assert_eq!(
        (status, problem["pointer"].as_str()),
        (400, Some("/grace_s")),
        "{problem}"
    );
    let (status, problem) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners/globex/tokens",
        &second,
        Some(r#"{"grace": 5}"#.into()),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field"),
        "{problem}"
    );

    // Rotated again with a one-second grace: the earlier tokens stop, the newest works.
    let (_, again) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners/globex/tokens",
        &second,
        Some(r#"{"grace_s": 1}"#.into()),
    )
    .await;
    let third = again["token"].as_str().expect("token").to_owned();
    let mut stopped = false;
    for _ in 0..300 {
        if whoami(first.clone()).await == 401 && whoami(second.clone()).await == 401 {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stopped, "the rotated tokens stop after their grace");
    assert_eq!(whoami(third.clone()).await, 200);

    // Revoked by the operator: refused at once (a partner may not revoke).
    let third_id = again["token_id"].as_str().expect("id").to_owned();
    let path = format!("/admin/v1/partners/globex/tokens/{third_id}");
    assert_eq!(
        send(&mall, Method::DELETE, &path, &third, None).await.0,
        403
    );
    let (status, revoked) = send(&mall, Method::DELETE, &path, OPERATOR, None).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(whoami(third).await, 401, "revoked at once");
    let (_, page) = send(
        &mall,
        Method::GET,
        "/admin/v1/partners/globex",
        OPERATOR,
        None,
    )
    .await;
    let states: Vec<&str> = page["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert_eq!(states, ["expired", "expired", "revoked"], "{page}");
    assert!(!page.to_string().contains("sha256"));
    let audit = support::admin::audit_log(&mall);
    for action in [
        "partner.create",
        "partner.token.rotate",
        "partner.token.revoke",
    ] {
        assert!(audit.contains(action), "{action} audited");
    }
    assert!(!audit.contains(&first), "no token in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_the_operators_and_a_narrowed_one_applies_at_once() {
    let mall = mall(None).await;
    let (_, token) = onboard(&mall).await;
    // A partner cannot claim more than it was granted.
    let as_supplier = globex_connector(&mall).replace("kind: retailer", "kind: supplier");
    let (status, problem) = send(
        &mall,
        Method::PUT,
        "/admin/v1/connectors/globex",
        &token,
        Some(as_supplier),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["problems"][0]["pointer"], "/kind", "{problem}");
    let (status, _) = send(
        &mall,
        Method::PUT,
        "/admin/v1/connectors/globex",
        &token,
        Some(globex_connector(&mall)),
    )
    .await;
    assert_eq!(status, 201);
    assert!(support::admin::serving(&mall, "globex").is_some());
    // Without a master key the answer says the secret does not survive a restart.
    let (_, set) = send(
        &mall,
        Method::PUT,
        "/admin/v1/partners/globex/secrets/globex-api-key",
        &token,
        Some(GLOBEX_KEY.into()),
    )
    .await;
    assert_eq!(set["persisted"], false);
    assert!(
        set["warning"]
            .as_str()
            .unwrap_or_default()
            .contains("master_key"),
        "{set}"
    );

    // Only the operator changes a grant; narrowed to supplier, the retailer stops serving.
    let narrow = json!({"kind": ["supplier"]}).to_string();
    assert_eq!(
        send(
            &mall,
            Method::PATCH,
            "/admin/v1/partners/globex",
            &token,
            Some(narrow.clone())
        )
        .await
        .0,
        403
    );
    let (status, patched) = send(
        &mall,
        Method::PATCH,
        "/admin/v1/partners/globex",
        OPERATOR,
        Some(narrow),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        support::admin::serving(&mall, "globex"),
        None,
        "beyond its grant now"
    );
    // Creating it twice, or a partner the config grants, is a conflict; a bad id, 400.
    let twice = json!({"id": "globex"}).to_string();
    assert_eq!(
        send(
            &mall,
            Method::POST,
            "/admin/v1/partners",
            OPERATOR,
            Some(twice)
        )
        .await
        .0,
        409
    );
    let configured = json!({"id": "voltmart"}).to_string();
    let (status, problem) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners",
        OPERATOR,
        Some(configured),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("config"),
        "{problem}"
    );
    let (status, problem) = send(
        &mall,
        Method::POST,
        "/admin/v1/partners",
        OPERATOR,
        Some(json!({"id": "Bad Id"}).to_string()),
    )
    .await;
    assert_eq!((status, problem["pointer"].as_str()), (400, Some("/id")));
    // Tokens in their grace are bounded: rotating in a loop stops at five working.
    let mut newest = token.clone();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, body) = send(
            &mall,
            Method::POST,
            "/admin/v1/partners/globex/tokens",
            &newest,
            None,
        )
        .await;
        statuses.push(status);
        if let Some(t) = body["token"].as_str() {
            newest = t.to_owned();
        }
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 409, 409],
        "at most five tokens working at once"
    );
    // A grant's priority floor is set, and cleared with null; a bad partner id is a 400.
    let floor = json!({"kind": "retailer", "priority": 70}).to_string();
    let (_, patched) = send(
        &mall,
        Method::PATCH,
        "/admin/v1/partners/globex",
        OPERATOR,
        Some(floor),
    )
    .await;
    assert_eq!(patched["priority"], 70, "{patched}");
    let cleared = json!({"priority": null}).to_string();
    let (_, patched) = send(
        &mall,
        Method::PATCH,
        "/admin/v1/partners/globex",
        OPERATOR,
        Some(cleared),
    )
    .await;
    assert_eq!(patched["priority"], Value::Null, "{patched}");
    let (status, problem) = send(
        &mall,
        Method::PATCH,
        "/admin/v1/partners/globex",
        OPERATOR,
        Some(r#"{"carrier_codes": ["ok", "b/ad"]}"#.into()),
    )
    .await;
    assert_eq!(
        (status, problem["pointer"].as_str()),
        (400, Some("/carrier_codes")),
        "{problem}"
    );
    let (status, _) = send(
        &mall,
        Method::PUT,
        "/admin/v1/partners/Not..An..Id/secrets/x",
        OPERATOR,
        Some("v".into()),
    )
    .await;
    assert_eq!(status, 400);
    let (status, list) = send(&mall, Method::GET, "/admin/v1/partners", OPERATOR, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["partners"]
        .as_array()
        .expect("partners")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"globex") && ids.contains(&"voltmart"),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_dry_run_asks_the_partner_and_diffs_the_candidate_on_the_same_reply() {
    let mall = mall(None).await;
    let active = support::admin::connector_text(&mall, "voltmart.yaml");
    let candidate = active.replace(
        "seller: {id: \"voltmart\", name: \"Voltmart\"}",
        "seller: {id: \"voltmart\", name: \"Voltmart Online\"}",
    );
    assert_ne!(
        candidate, active,
        "the candidate names its seller differently"
    );
    let before = mall.requests(mallgate_partner_sim::Partner::Voltmart, "/v1/products");
    let dry_run = |body: Value| {
        let mall = &mall;
        async move {
            send(
                mall,
                Method::POST,
                "/admin/v1/connectors/voltmart/dry-run",
                OPERATOR,
                Some(body.to_string()),
            )
            .await
        }
    };
    let (status, answer) = dry_run(
        json!({"connector": candidate, "capability": "catalog.search",
                                          "live": true, "query": {"q": "tv"}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let request = &answer["live"]["requests"][0];
    assert_eq!(request["status"], 200, "{answer}");
    assert_eq!(request["method"], "GET");
    let shown = request.to_string();
    assert!(
        !shown.contains(GLOBEX_KEY) && !shown.contains("apiKey"),
        "credentials are never shown: {shown}"
    );
    assert!(
        request["query"]
            .as_array()
            .is_some_and(|q| q.iter().any(|p| p[0] == "search" && p[1] == "tv")),
        "{request}"
    );
    assert!(
        mall.requests(mallgate_partner_sim::Partner::Voltmart, "/v1/products") > before,
        "the partner was asked"
    );
    let records = answer["records"].as_array().expect("records").len();
    assert!(records > 0, "{answer}");
    let changed = answer["difference"]["changed"].as_array().expect("changed");
    assert_eq!(
        changed.len(),
        records,
        "every record's seller changed: {}",
        answer["difference"]
    );
    assert!(
        changed[0]["fields"].to_string().contains("seller"),
        "{}",
        changed[0]
    );

    // The body is checked: unknown fields, live with a sample, live without a query.
    let (status, problem) = dry_run(json!({"connector": active, "capability": "catalog.search",
                                           "live": true, "query": {}, "qurey": {"q": "tv"}}))
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field `qurey`"),
        "{problem}"
    );
    let (status, problem) = dry_run(json!({"connector": active, "capability": "catalog.search",
                                           "live": true, "sample": "{}", "query": {}}))
    .await;
    assert_eq!(
        (status, problem["pointer"].as_str()),
        (400, Some("/sample")),
        "{problem}"
    );
    let (status, problem) =
        dry_run(json!({"connector": active, "capability": "catalog.search", "live": true})).await;
    assert_eq!(
        (status, problem["pointer"].as_str()),
        (400, Some("/query")),
        "{problem}"
    );
}
