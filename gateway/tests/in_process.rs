//! The cache and the merge through `Api::handle`, in process, as axum's testing example
//! calls its app: no pingora, no simulator, no socket. Two retailers are answered in
//! memory by a `Transport` under tokio's paused clock, so freshness, stale-while-revalidate
//! and stale-if-error are decided at exact virtual instants. Everything above the transport
//! is the production code: the registry, the partner stack, the mapping, the cache, the
//! merge and the handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method};
use mallgate::api::{Api, Request};
use mallgate::{Gateway, GatewayConfig};
use mallgate_connectors::ConnectorError;
use mallgate_connectors::runtime::Transport;
use mallgate_connectors::runtime::http::Reply;
use serde_json::{Value, json};

/// A GTIN both retailers sell, and one only Alpha sells (valid GS1 check digits).
const SHARED_GTIN: &str = "00036000291452";
const ALPHA_GTIN: &str = "00400015649674";

/// One in-memory retailer: what it answers and how.
#[derive(Debug, Default)]
struct Retailer {
    calls: u64,
    failing: bool,
    delay: Duration,
}

/// The partners, by the port of their endpoint URL (`http://127.0.0.1:<port>`).
#[derive(Debug, Default)]
struct Partners {
    retailers: Mutex<HashMap<u16, Retailer>>,
}

impl Partners {
    fn with<T>(&self, port: u16, f: impl FnOnce(&mut Retailer) -> T) -> T {
        let mut all = self.retailers.lock().expect("partners");
        f(all.entry(port).or_default())
    }

    fn calls(&self, port: u16) -> u64 {
        self.with(port, |r| r.calls)
    }
}

const ALPHA: u16 = 10_001;
const BETA: u16 = 10_002;

fn offer(partner: &str, sku: &str, cents: i64) -> Value {
    json!({
        "offer_id": format!("{partner}:{sku}"),
        "seller": {"id": partner, "name": partner},
        "availability": "in_stock",
        "condition": "new",
        "price": {"amount_minor": cents, "currency": "USD"},
        "provenance": provenance(partner, sku),
    })
}

fn provenance(partner: &str, sku: &str) -> Value {
    json!({"partner_id": partner, "connector_id": partner, "connector_version": 1,
           "source_ref": sku, "fetched_at": "2026-11-27T14:00:00Z"})
}

fn product(partner: &str, sku: &str, gtin: &str, title: &str, cents: i64) -> Value {
    json!({
        "product_id": format!("gtin:{gtin}"),
        "title": title,
        "variants": [{"variant_id": format!("gtin:{gtin}"), "gtin": gtin,
                      "offers": [offer(partner, sku, cents)]}],
        "provenance": provenance(partner, sku),
    })
}

/// The unified products each retailer answers (its connector is a pass-through).
fn catalog(port: u16) -> Value {
    match port {
        ALPHA => json!({"products": [
            product("alpha", "a-1", SHARED_GTIN, "Desk lamp", 2_500),
            product("alpha", "a-2", ALPHA_GTIN, "Floor lamp", 9_900),
        ]}),
        _ => json!({"products": [product("beta", "b-1", SHARED_GTIN, "Desk Lamp (Beta)", 2_300)]}),
    }
}

impl Transport for Partners {
    fn send(
        &self,
        request: reqwest::Request,
        _max_bytes: usize,
    ) -> BoxFuture<'static, Result<Reply, ConnectorError>> {
        let port = request.url().port().unwrap_or(0);
        let (failing, delay) = self.with(port, |r| {
            r.calls += 1;
            (r.failing, r.delay)
        });
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let (status, body) = if failing {
                (500, b"{\"error\":\"down\"}".to_vec())
            } else {
                (200, catalog(port).to_string().into_bytes())
            };
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
            Ok(Reply {
                status: reqwest::StatusCode::from_u16(status).expect("status"),
                headers,
                body,
            })
        })
    }
}

/// A pass-through retailer connector: fresh 60 s, stale-while-revalidate 30 s more,
/// stale-if-error 600 s; one attempt (no retry), so partner calls count requests.
fn connector(id: &str, port: u16, priority: u32) -> String {
    format!(
        "id: {id}
partner: {id}
kind: retailer
priority: {priority}
endpoints:
  - url: http://127.0.0.1:{port}
policies:
  timeout_ms: 500
  retry: {{max_attempts: 1}}
  cache: {{ttl_s: 60, stale_while_revalidate_s: 30, stale_if_error_s: 600}}
capabilities:
  catalog.search:
    request:
      path: /products
    records: .products[]
    map: .
"
    )
}

/// The API of a gateway whose two retailers are `partners`.
fn api(partners: &Arc<Partners>) -> Arc<Api> {
    Arc::clone(&gateway(partners).api)
}

/// The gateway whose two retailers are `partners`.
fn gateway(partners: &Arc<Partners>) -> Gateway {
    let dir = std::env::temp_dir().join(format!(
        "mallgate-in-process-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("alpha.yaml"), connector("alpha", ALPHA, 20)).expect("alpha");
    std::fs::write(dir.join("beta.yaml"), connector("beta", BETA, 30)).expect("beta");
    let config = GatewayConfig {
        connectors_dir: Some(dir),
        allow_loopback_partners: true,
        ..GatewayConfig::default()
    };
    let transport: Arc<dyn Transport> = Arc::clone(partners) as Arc<dyn Transport>;
    Gateway::build_in_process(config, Arc::default(), transport).expect("gateway builds")
}

/// `GET path?query` through `Api::handle`: (status, body).
async fn get(api: &Api, path: &str, query: &str) -> (u16, Value) {
    let response = api
        .handle(Request {
            method: Method::GET,
            path: path.to_owned(),
            query: query.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        })
        .await;
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

fn outcome<'a>(body: &'a Value, partner: &str) -> Option<&'a str> {
    body["sources"]
        .as_array()?
        .iter()
        .find(|s| s["partner"] == partner)
        .and_then(|s| s["outcome"].as_str())
}

/// Lets spawned tasks (a background refresh) run to their end without moving the clock
/// past anything the test decides on.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The product both retailers sell, by its GTIN: a fan-out of `catalog.search` answered
/// from the record cache (a search page would come from its paging window instead).
const SHARED: &str = "/v1/products/gtin:00036000291452";

fn offers(body: &Value) -> usize {
    body["data"]["variants"][0]["offers"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Fresh within the TTL (`cached`, no partner call), one background refresh within
/// stale-while-revalidate (answered `cached` at once), `stale` within stale-if-error when
/// the partner fails, and the merge of one GTIN across both retailers throughout.
#[tokio::test(start_paused = true)]
async fn fresh_revalidated_and_stale_answers_at_exact_instants() {
    let partners = Arc::new(Partners::default());
    let api = api(&partners);

    let (status, first) = get(&api, SHARED, "").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (outcome(&first, "alpha"), outcome(&first, "beta")),
        (Some("live"), Some("live"))
    );
    assert_eq!((partners.calls(ALPHA), partners.calls(BETA)), (1, 1));
    // The merge: one product for the GTIN, both offers under it, Alpha's title (priority
    // 20 ranks before Beta's 30).
    assert_eq!(first["data"]["title"], "Desk lamp", "{first}");
    assert_eq!(offers(&first), 2, "{first}");

    // 59 s on: fresh, from the cache, no partner asked.
    tokio::time::advance(Duration::from_secs(59)).await;
    let (_, fresh) = get(&api, SHARED, "").await;
    assert_eq!(outcome(&fresh, "alpha"), Some("cached"), "{fresh}");
    assert_eq!((partners.calls(ALPHA), partners.calls(BETA)), (1, 1));

    // 61 s: stale-while-revalidate: answered from the cache at once, one refresh each.
    tokio::time::advance(Duration::from_secs(2)).await;
    let (_, revalidated) = get(&api, SHARED, "").await;
    assert_eq!(
        outcome(&revalidated, "alpha"),
        Some("cached"),
        "{revalidated}"
    );
    settle().await;
    assert_eq!((partners.calls(ALPHA), partners.calls(BETA)), (2, 2));
    // Asked again at once: the refreshed entry is fresh, no third call.
    let (_, again) = get(&api, SHARED, "").await;
    assert_eq!(outcome(&again, "alpha"), Some("cached"), "{again}");
    assert_eq!(partners.calls(ALPHA), 2);

    // Alpha fails; 200 s after its refresh the entry is past SWR, within stale-if-error.
    partners.with(ALPHA, |r| r.failing = true);
    tokio::time::advance(Duration::from_secs(200)).await;
    let (status, stale) = get(&api, SHARED, "").await;
    assert_eq!(status, 200, "{stale}");
    assert_eq!(outcome(&stale, "alpha"), Some("stale"), "{stale}");
    assert_eq!(outcome(&stale, "beta"), Some("live"), "{stale}");
    assert_eq!(stale["complete"], false);
    let alpha = stale["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == "alpha"))
        .expect("alpha's source");
    assert_eq!(alpha["error"]["code"], "partner_error", "{alpha}");
    // The stale records still merge: both offers under the one product.
    assert_eq!(offers(&stale), 2, "{stale}");
}

/// Searches while their records are refreshed (stale-while-revalidate) share the window
/// the first of them built, instead of each merging the same stale records again until the
/// refresh lands; the next search after it merges the new records, once.
#[tokio::test(start_paused = true)]
async fn searches_during_a_refresh_share_one_window() {
    let partners = Arc::new(Partners::default());
    let api = api(&partners);
    let search = "q=lamp";
    let (status, first) = get(&api, "/v1/products", search).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"].as_array().map(Vec::len), Some(2), "{first}");
    assert_eq!(api.metrics.windows_built(), 1);
    // 30 s on: the window is fresh and serves; nothing is merged.
    tokio::time::advance(Duration::from_secs(30)).await;
    let (_, fresh) = get(&api, "/v1/products", search).await;
    assert_eq!(fresh["data"], first["data"]);
    assert_eq!(api.metrics.windows_built(), 1);
    // 61 s: past the records' TTL; each refresh takes 100 ms (virtual), and five searches
    // come meanwhile.
    for port in [ALPHA, BETA] {
        partners.with(port, |r| r.delay = Duration::from_millis(100));
    }
    tokio::time::advance(Duration::from_secs(31)).await;
    for _ in 0..5 {
        let (status, body) = get(&api, "/v1/products", search).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(outcome(&body, "alpha"), Some("cached"), "{body}");
    }
    assert_eq!(
        api.metrics.windows_built(),
        2,
        "five searches during the refresh, one merge"
    );
    // One refresh each was started (it runs once the searches let it).
    settle().await;
    assert_eq!((partners.calls(ALPHA), partners.calls(BETA)), (2, 2));
    // The refreshes land and the held window's second is over.
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    for _ in 0..3 {
        let (status, body) = get(&api, "/v1/products", search).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        api.metrics.windows_built(),
        3,
        "the new records, merged once"
    );
}

/// Five identical misses while Alpha takes 100 ms (virtual) to answer: one partner call,
/// five answers.
#[tokio::test(start_paused = true)]
async fn concurrent_misses_are_coalesced_into_one_call() {
    let partners = Arc::new(Partners::default());
    partners.with(ALPHA, |r| r.delay = Duration::from_millis(100));
    let api = api(&partners);
    let asks = (0..5).map(|_| get(&api, SHARED, ""));
    let answers = futures_util::future::join_all(asks).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(
            matches!(outcome(body, "alpha"), Some("live" | "cached")),
            "{body}"
        );
    }
    assert_eq!(partners.calls(ALPHA), 1, "one call for five misses");
    assert_eq!(partners.calls(BETA), 1);
}

/// A drill's fault is on from its start, off at its end without anyone asking, and the
/// report counts what the frontends saw: at exact virtual instants.
#[tokio::test(start_paused = true)]
async fn a_drill_ends_on_time_by_itself_and_leaves_no_fault() {
    let partners = Arc::new(Partners::default());
    let gateway = gateway(&partners);
    let api = Arc::clone(&gateway.api);
    let request = mallgate::drills::Drills::parse(
        br#"{"target": {"partner": "alpha"}, "fault": "error", "duration_s": 5}"#,
    )
    .expect("a drill");
    let drill = gateway.drills.start(request, "operator").expect("started");
    assert_eq!(gateway.drills.faults().list().len(), 1);

    // During the drill: Alpha's endpoint answers 503 without being called, Beta is untouched.
    let (status, body) = get(&api, "/v1/products", "q=gadget").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outcome(&body, "alpha"), Some("failed"), "{body}");
    assert_eq!(outcome(&body, "beta"), Some("live"), "{body}");
    assert_eq!(
        partners.calls(ALPHA),
        0,
        "the fault is injected before the client"
    );
    assert!(partners.calls(BETA) > 0);
    let live = drill.report();
    assert_eq!(live.state, mallgate::drills::Phase::Running);
    assert!(live.figures.injected >= 1);
    assert_eq!(live.figures.answers.failed, 1);
    // (Frontend requests are counted by the server, which this test does not run.)

    // Nobody calls again: the drill's own task takes the fault off at its end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle().await;
    assert!(gateway.drills.faults().list().is_empty(), "no fault left");
    for _ in 0..100 {
        if drill.phase() == mallgate::drills::Phase::Finished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(drill.phase(), mallgate::drills::Phase::Finished);
    let report = drill.report();
    assert_eq!(report.figures.answers.failed, 1);
    assert!(report.figures.time_to_recover_ms.is_some(), "{report:?}");
    let (_, body) = get(&api, "/v1/products", "q=other").await;
    assert_eq!(outcome(&body, "alpha"), Some("live"), "{body}");
    assert!(partners.calls(ALPHA) > 0);
}
