//! The real `mallgate serve` binary, its logs and its traces, as an operator reads them: JSON
//! lines on stdout (pingora's own records among them), one access line per request, and
//! spans exported over OTLP/HTTP to a receiver in this test — the span tree of a fanned-out
//! search, with the `traceparent` the partners saw. No secret appears in either, on any path
//! that touches one.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use mallgate_testkit as support;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};

use mallgate_partner_sim::{Faults, FleetConfig, Partner};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";
const OPERATOR_TOKEN: &str = "telemetry-test-operator-token-5d1e";

/// An OTLP/HTTP receiver on a free loopback port: every span it is sent.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut sink = sink.lock().expect("spans");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        sink.extend(scope.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, spans)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The gateway binary, serving the fleet's connectors with every partner secret from the
/// environment, traces to `otlp`, the admin API on its own port.
struct Served {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    public: String,
    admin: String,
    _state: tempdir::Dir,
}

mod tempdir {
    /// A directory removed when dropped.
    pub(crate) struct Dir(pub(crate) std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn serve(connectors: &std::path::Path, otlp: SocketAddr) -> Served {
    let binary = support::mallgate_binary().expect("cargo builds target/<profile>/mallgate");
    let state = std::env::temp_dir().join(format!(
        "mallgate-telemetry-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&state).expect("state dir");
    let (public, admin) = (free_port(), free_port());
    let mut secrets = serde_json::Map::new();
    let mut env = Vec::new();
    for (i, (partner, name, value)) in mallgate_partner_sim::partners::demo_secrets()
        .into_iter()
        .enumerate()
    {
        let var = format!("MG_TEST_SECRET_{i}");
        secrets
            .entry(partner)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(name.to_owned(), json!(format!("env:{var}")));
        env.push((var, value.to_owned()));
    }
    let config = json!({
        "listen": format!("127.0.0.1:{public}"),
        "connectors_dir": connectors,
        "state_dir": state,
        "allow_loopback_partners": true,
        "deadline": {"default_ms": 10000},
        "limits": {"request_timeout_ms": 30000},
        "admin": {"listen": format!("127.0.0.1:{admin}"),
                  "tokens": [{"role": "operator", "token": "env:MG_TEST_OPERATOR"}]},
        "partner_secrets": secrets,
        "traces": {"endpoint": format!("http://{otlp}"), "sampling_ratio": 1.0},
        "metrics": {"public": true},
    });
    let path = state.join("config.json");
    std::fs::write(&path, config.to_string()).expect("config");
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--config"])
        .arg(&path)
        .envs(env)
        .env("MG_TEST_OPERATOR", OPERATOR_TOKEN)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mallgate serve starts");
    let lines = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        });
    }
    Served {
        child,
        lines,
        public: format!("http://127.0.0.1:{public}"),
        admin: format!("http://127.0.0.1:{admin}"),
        _state: tempdir::Dir(state),
    }
}

impl Served {
    async fn ready(&self, http: &reqwest::Client) {
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{}/readyz", self.public)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the gateway did not get ready:\n{}",
            self.lines.lock().expect("lines").join("\n")
        );
    }

    /// SIGTERM, then every line it wrote.
    fn stop(mut self) -> Vec<String> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        self.lines.lock().expect("lines").clone()
    }
}

/// Every way a secret value could leak as text: as is, base64 (basic auth), URL-encoded.
fn secret_forms() -> Vec<String> {
    use base64::Engine as _;
    let mut forms = Vec::new();
    for (_, _, value) in mallgate_partner_sim::partners::demo_secrets() {
        forms.push(value.to_owned());
        forms.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
        for user in ["mallgate", ""] {
            forms.push(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{value}")));
        }
    }
    forms.retain(|f| f.len() >= 6);
    forms
}

async fn drive(served: &Served, http: &reqwest::Client, fleet: &mallgate_partner_sim::Fleet) {
    let get = |path: String| http.get(format!("{}{path}", served.public)).send();
    let search = http
        .get(format!(
            "{}/v1/products?q=headphones&limit=5",
            served.public
        ))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-request-id", "telemetry-search-1")
        .send()
        .await
        .expect("search");
    assert_eq!(search.status(), 200);
    let world = fleet.world();
    let gtin = world
        .products
        .iter()
        .find_map(|p| p.variants[0].gtin14())
        .expect("a product with a GTIN");
    assert!(
        get(format!("/v1/inventory?gtin={gtin}"))
            .await
            .expect("inventory")
            .status()
            .is_success()
    );
    let parcel = world
        .parcels
        .iter()
        .find(|p| p.carrier == Partner::SwiftShip)
        .expect("a parcel");
    let tracked = get(format!("/v1/tracking/swiftship/{}", parcel.tracking_number))
        .await
        .expect("tracking");
    assert_eq!(tracked.status(), 200);
    let rates = http
        .post(format!("{}/v1/shipping/rates", served.public))
        .json(&json!({"from": {"postal_code": "10001", "country": "US"},
                      "to": {"postal_code": "94103", "country": "US"},
                      "parcels": [{"weight_g": 1200}]}))
        .send()
        .await
        .expect("rates");
    assert_eq!(rates.status(), 200);
    // The admin paths that touch a secret: setting one, reading the status and a connector.
    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", served.admin))
            .bearer_auth(OPERATOR_TOKEN)
    };
    let (_, _, key) = mallgate_partner_sim::partners::demo_secrets()[0];
    let set = admin(
        reqwest::Method::PUT,
        "/admin/v1/partners/voltmart/secrets/voltmart-api-key",
    )
    .body(key)
    .send()
    .await
    .expect("secret");
    assert!(
        set.status().is_success(),
        "{}",
        set.text().await.unwrap_or_default()
    );
    for path in ["/admin/v1/status", "/admin/v1/connectors/voltmart"] {
        let r = admin(reqwest::Method::GET, path)
            .send()
            .await
            .expect("admin");
        assert_eq!(r.status(), 200, "{path}");
    }
    let metrics = http
        .get(format!("{}/metrics", served.admin))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    // Failures log their partner call (the URL carries Voltmart's key in its query).
    for r in 0..2 {
        fleet
            .replica(Partner::Voltmart, r)
            .expect("replica")
            .state
            .faults
            .set(Faults {
                error_rate: 1.0,
                ..Faults::default()
            });
    }
    let failing = get("/v1/products?q=cable&limit=5".into())
        .await
        .expect("search");
    assert_eq!(failing.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_traces_tell_the_operator_what_happened_and_no_secret() {
    let (fleet, dir) = support::fleet_and_connectors(FleetConfig::default(), |_, t| t).await;
    let (otlp, spans) = receiver().await;
    let served = serve(&dir, otlp);
    let http = reqwest::Client::new();
    served.ready(&http).await;
    drive(&served, &http, &fleet).await;
    // The search's spans reach the receiver (batches every 100 ms).
    let mut tree = Vec::new();
    for _ in 0..200 {
        tree = spans.lock().expect("spans").clone();
        let exchanges = tree
            .iter()
            .filter(|s| hex(&s.trace_id) == TRACE_ID && s.kind == SpanKind::Client as i32)
            .count();
        if exchanges >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen_by_voltmart: Vec<String> = (0..2)
        .flat_map(|r| {
            fleet
                .replica(Partner::Voltmart, r)
                .expect("replica")
                .state
                .traceparents()
        })
        .collect();
    let lines = served.stop();
    let _ = std::fs::remove_dir_all(&dir);
    check_logs(&lines);
    check_spans(&tree, &seen_by_voltmart);
    let forms = secret_forms();
    for span in spans.lock().expect("spans").iter() {
        let text = format!("{span:?}");
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "a secret in span {}: {text}",
                span.name
            );
        }
    }
}

fn check_logs(lines: &[String]) {
    let forms = secret_forms();
    let mut parsed = Vec::new();
    for line in lines {
        for form in &forms {
            assert!(
                !line.contains(form.as_str()),
                "a secret in a log line: {line}"
            );
        }
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        parsed.push(value);
    }
    let by = |target: &'static str| parsed.iter().filter(move |v| v["target"] == target);
    // pingora's own `log` records are bridged in.
    assert!(parsed.iter().any(|v| {
        v["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("pingora"))
    }));
    // The search's access line: the route template, never the query; the frontend's trace.
    let access = by("mallgate::access")
        .find(|v| v["request_id"] == "telemetry-search-1")
        .expect("the search's access line");
    assert_eq!(access["http.route"], "/v1/products");
    assert_eq!(access["http.request.method"], "GET");
    assert_eq!(access["http.response.status_code"], 200);
    assert_eq!(access["trace_id"], TRACE_ID);
    assert!(
        access["sources.live"].as_u64().is_some_and(|n| n >= 3),
        "{access}"
    );
    assert!(access["duration_ms"].as_f64().is_some());
    for v in by("mallgate::access") {
        let text = v.to_string();
        assert!(
            !text.contains("headphones") && !text.contains("q="),
            "{text}"
        );
    }
    let routes: Vec<&str> = by("mallgate::access")
        .filter_map(|v| v["http.route"].as_str())
        .collect();
    for route in [
        "/v1/inventory",
        "/v1/tracking/{carrier}/{tracking_number}",
        "/v1/shipping/rates",
        "/admin/v1/partners/{partner}/secrets/{name}",
        "/metrics",
    ] {
        assert!(routes.contains(&route), "{route} in {routes:?}");
    }
    // The failed partner call, with its code and the request it served.
    let failed = by("mallgate::partner")
        .find(|v| v["partner"] == "voltmart" && v["message"] == "partner call failed")
        .expect("Voltmart's failure is logged");
    assert_eq!(failed["error.code"], "partner_error", "{failed}");
    assert_eq!(failed["level"], "WARN");
}

fn check_spans(spans: &[Span], seen_by_voltmart: &[String]) {
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let server = trace
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| {
            panic!(
                "a server span in {:?}",
                trace.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(server.name, "GET /v1/products");
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT_ID,
        "the frontend's span is the parent"
    );
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(server, "http.route").as_deref(), Some("/v1/products"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    let children = |parent: &Span| -> Vec<&Span> {
        trace
            .iter()
            .copied()
            .filter(|s| s.parent_span_id == parent.span_id)
            .collect()
    };
    let sources = children(server);
    let partners: Vec<String> = sources
        .iter()
        .filter_map(|s| attr(s, "mallgate.partner"))
        .collect();
    for partner in ["voltmart", "threadline", "acme"] {
        assert!(
            partners.iter().any(|p| p == partner),
            "{partner} in {partners:?}"
        );
    }
    let voltmart = sources
        .iter()
        .find(|s| attr(s, "mallgate.partner").as_deref() == Some("voltmart"))
        .expect("voltmart's source span");
    assert_eq!(voltmart.name, "source catalog.search");
    assert_eq!(attr(voltmart, "mallgate.outcome").as_deref(), Some("live"));
    assert_eq!(
        attr(voltmart, "mallgate.connector.id").as_deref(),
        Some("voltmart")
    );
    assert!(attr(voltmart, "mallgate.connector.version").is_some());
    let under = children(voltmart);
    let exchange = under
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("a client span under the source");
    assert_eq!(exchange.name, "GET");
    assert_eq!(
        attr(exchange, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr(exchange, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert!(attr(exchange, "server.port").is_some());
    assert_eq!(
        attr(exchange, "http.response.status_code").as_deref(),
        Some("200")
    );
    let url = attr(exchange, "url.full").expect("url.full");
    assert!(
        url.ends_with("/v1/products") && !url.contains('?'),
        "{url}: no query, no key"
    );
    assert!(
        under.iter().any(|s| s.name == "mapping"),
        "a mapping span under the source"
    );
    // The partner saw this exchange as the parent of its work.
    let expected = format!("00-{TRACE_ID}-{}-01", hex(&exchange.span_id));
    assert!(
        seen_by_voltmart.contains(&expected),
        "{expected} in {seen_by_voltmart:?}"
    );
}
