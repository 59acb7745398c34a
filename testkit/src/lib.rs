//! The integration harness of the gateway's and the chaos tests: the simulated fleet on
//! loopback (clock frozen on Black Friday), the example connectors written to a real
//! directory with the fleet's ports, and the real gateway on pingora on a free port. Every
//! answer the tests read is checked against the bundled OpenAPI document.

pub mod admin;
pub mod etcd;
pub mod fleet;
pub mod process;
pub mod proxy;
pub mod steady;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use mallgate::demo::demo_secrets;
use mallgate::{Gateway, GatewayConfig, RunningGateway};
use mallgate_partner_sim::{Faults, Fleet, FleetConfig, Partner};
use serde_json::Value;

/// The `mallgate` binary cargo built beside the running test (`target/<profile>/mallgate`),
/// when there is one: partner-owned programs run in its sandbox workers, and a test binary
/// cannot serve as one.
pub fn mallgate_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/mallgate
    let path = exe.parent()?.parent()?.join("mallgate");
    path.is_file().then_some(path)
}

/// 2026-11-27T14:00:00Z, Black Friday.
pub const BLACK_FRIDAY: i64 = 1_795_788_000;

pub const FILES: [(Partner, &str); 6] = [
    (Partner::Voltmart, "voltmart.yaml"),
    (Partner::Threadline, "threadline.yaml"),
    (Partner::Acme, "acme-dropship.yaml"),
    (Partner::Northwind, "northwind.yaml"),
    (Partner::ParcelPost, "parcelpost.yaml"),
    (Partner::SwiftShip, "swiftship.yaml"),
];

#[derive(Debug)]
pub struct Mall {
    pub fleet: Arc<Fleet>,
    pub gateway: RunningGateway,
    pub http: reqwest::Client,
    pub dir: PathBuf,
}

/// An answer, already checked against the OpenAPI document.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The outcome of a partner's source.
    pub fn outcome(&self, partner: &str) -> Option<&str> {
        self.body["sources"]
            .as_array()?
            .iter()
            .find(|s| s["partner"] == partner)
            .and_then(|s| s["outcome"].as_str())
    }
}

/// The simulated fleet (seed 7, two replicas per partner, clock frozen on Black Friday)
/// and the example connectors written to a fresh directory with the fleet's ports,
/// `patch`ed: what a gateway — in process, or the real binary — is pointed at.
pub async fn fleet_and_connectors(
    fleet: FleetConfig,
    patch: impl Fn(Partner, String) -> String,
) -> (Arc<Fleet>, PathBuf) {
    let fleet = Fleet::start(FleetConfig {
        seed: 7,
        replicas: 2,
        ..fleet
    })
    .await
    .expect("fleet starts");
    fleet.clock().freeze(BLACK_FRIDAY);
    let dir = std::env::temp_dir().join(format!(
        "mallgate-test-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (i, (partner, file)) in FILES.iter().enumerate() {
        let path = format!(
            "{}/../connectors/partners/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut text = std::fs::read_to_string(path).expect("connector file");
        for r in 0..2 {
            let demo = format!("http://127.0.0.1:{}", 18_000 + 100 * (i + 1) + 1 + r);
            text = text.replace(&demo, &fleet.url(*partner, r).expect("replica"));
        }
        std::fs::write(dir.join(file), patch(*partner, text)).expect("write connector");
    }
    (fleet, dir)
}

/// Requests one replica of `fleet` answered whose `METHOD route` counter contains `route`
/// (`""`: every request).
pub fn replica_requests(fleet: &Fleet, partner: Partner, replica: usize, route: &str) -> u64 {
    fleet
        .replica(partner, replica)
        .expect("replica")
        .state
        .counters()
        .iter()
        .filter(|(k, _)| !k.starts_with("path:") && !k.starts_with("version:") && k.contains(route))
        .map(|(_, v)| v)
        .sum()
}

/// As [`replica_requests`], summed over the partner's two replicas.
pub fn fleet_requests(fleet: &Fleet, partner: Partner, route: &str) -> u64 {
    (0..2)
        .map(|r| replica_requests(fleet, partner, r, route))
        .sum()
}

impl Mall {
    pub async fn start() -> Self {
        Self::start_with(|_, text| text).await
    }

    /// `patch` may change a connector's text (partner, text) before it is written.
    pub async fn start_with(patch: impl Fn(Partner, String) -> String) -> Self {
        Self::start_configured(patch, |_| {}).await
    }

    /// As [`Mall::start_with`], and `configure` may change the gateway's config.
    pub async fn start_configured(
        patch: impl Fn(Partner, String) -> String,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        Self::start_fleet(FleetConfig::default(), patch, configure).await
    }

    /// As [`Mall::start_configured`], with the fleet started from `fleet` (TLS, say; seed
    /// 7 and two replicas per partner always).
    pub async fn start_fleet(
        fleet: FleetConfig,
        patch: impl Fn(Partner, String) -> String,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let (fleet, dir) = fleet_and_connectors(fleet, patch).await;
        let mut config = GatewayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            connectors_dir: Some(dir.clone()),
            allow_loopback_partners: true,
            // A generous deadline: tests judge outcomes, never speed (debug builds, tests in
            // parallel on two cores).
            deadline: mallgate::config::DeadlineConfig { default_ms: 10_000 },
            limits: mallgate::config::LimitsConfig {
                request_timeout_ms: 30_000,
                ..mallgate::config::LimitsConfig::default()
            },
            // Partner-owned programs run in workers of the real gateway binary (a test
            // binary cannot serve as one; the chaos tests, which share this harness, register
            // no partner-owned connector).
            sandbox: mallgate::config::SandboxConfig {
                program: mallgate_binary(),
                ..mallgate::config::SandboxConfig::default()
            },
            ..GatewayConfig::default()
        };
        configure(&mut config);
        let gateway = Gateway::build(config, demo_secrets())
            .expect("gateway builds")
            .start()
            .expect("gateway listens");
        Self {
            fleet,
            gateway,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Waits (at most 30 s, polling) until every endpoint of every connector with a health
    /// check has been probed once; fails the test otherwise.
    pub async fn wait_until_probed(&self) {
        let probed = || {
            self.gateway.api.registry.load().connectors.iter().all(|c| {
                c.spec().health_check.is_none()
                    || c.connector
                        .routes()
                        .iter()
                        .all(|r| r.state.report(0, 0, false).last_probe.is_some())
            })
        };
        for _ in 0..300 {
            if probed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(probed(), "every endpoint was probed");
    }

    /// Sets `faults` on one replica of `partner`.
    pub fn replica_faults(&self, partner: Partner, replica: usize, faults: Faults) {
        self.fleet
            .replica(partner, replica)
            .expect("replica")
            .state
            .faults
            .set(faults);
    }

    /// The partner's health entry in `/v1/partners`.
    pub async fn partner_health(&self, partner: &str) -> Value {
        let answer = self.get("/v1/partners").await;
        assert_eq!(answer.status, 200);
        answer.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|p| p["partner"] == partner)
            .cloned()
            .expect("the partner is listed")
    }

    /// Requests one replica answered whose `METHOD route` counter contains `route`.
    pub fn replica_requests(&self, partner: Partner, replica: usize, route: &str) -> u64 {
        replica_requests(&self.fleet, partner, replica, route)
    }

    pub fn faults(&self, partner: Partner, faults: Faults) {
        for r in 0..2 {
            self.fleet
                .replica(partner, r)
                .expect("replica")
                .state
                .faults
                .set(faults.clone());
        }
    }

    /// Requests the partner's replicas answered whose `METHOD route` counter contains
    /// `route`, summed over replicas.
    pub fn requests(&self, partner: Partner, route: &str) -> u64 {
        fleet_requests(&self.fleet, partner, route)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder, method: &str, path: &str) -> Answer {
        let response = request.send().await.expect("the gateway answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: {status} body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        conforms(method, path, status, &content_type, &body);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(
            self.http.get(format!("{}{path}", self.gateway.url())),
            "get",
            path,
        )
        .await
    }

    pub async fn get_with(&self, path: &str, header: (&str, &str)) -> Answer {
        let req = self
            .http
            .get(format!("{}{path}", self.gateway.url()))
            .header(header.0, header.1);
        self.send(req, "get", path).await
    }

    /// `get` with an owned path (for futures built in a loop).
    pub async fn get_owned(&self, path: String) -> Answer {
        self.get(&path).await
    }

    /// `get_with` with an owned path and header value.
    pub async fn get_with_owned(&self, path: String, header: (&str, String)) -> Answer {
        self.get_with(&path, (header.0, &header.1)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        let req = self
            .http
            .post(format!("{}{path}", self.gateway.url()))
            .json(body);
        self.send(req, "post", path).await
    }
}

impl Drop for Mall {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn validators() -> &'static Mutex<HashMap<String, Arc<jsonschema::Validator>>> {
    static V: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    V.get_or_init(|| Mutex::new(HashMap::new()))
}

fn validator(pointer: &str) -> Arc<jsonschema::Validator> {
    let mut map = validators().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = map.get(pointer) {
        return Arc::clone(v);
    }
    let mut root = mallgate::openapi::document().clone();
    root["$ref"] = Value::from(format!(
        "#{}",
        pointer.replace('{', "%7B").replace('}', "%7D")
    ));
    root["$schema"] = Value::from("https://json-schema.org/draft/2020-12/schema");
    let v = Arc::new(
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {pointer} compiles: {e}")),
    );
    map.insert(pointer.to_owned(), Arc::clone(&v));
    v
}

/// Panics unless the OpenAPI document declares this status for the operation and the body
/// validates against the declared schema.
pub fn conforms(method: &str, path: &str, status: u16, content_type: &str, body: &Value) {
    let doc = mallgate::openapi::document();
    let path_only = path.split('?').next().unwrap_or(path);
    let concrete: Vec<&str> = path_only.split('/').collect();
    let Some((template, item)) = doc["paths"].as_object().and_then(|paths| {
        paths.iter().find(|(t, _)| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == concrete.len()
                && parts
                    .iter()
                    .zip(&concrete)
                    .all(|(p, c)| p == c || (p.starts_with('{') && !c.is_empty()))
        })
    }) else {
        // Undocumented routes answer 404 problems.
        assert_eq!(
            status, 404,
            "{method} {path}: undocumented route answered {status}"
        );
        return;
    };
    let Some(operation) = item.get(method) else {
        assert_eq!(
            status, 405,
            "{method} {path}: undocumented method answered {status}"
        );
        return;
    };
    let mut response = &operation["responses"][status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {template}: status {status} is not documented: {body}"
    );
    let mut response_pointer = None;
    if let Some(r) = response["$ref"].as_str() {
        response_pointer = Some(r.trim_start_matches('#').to_owned());
        response = doc
            .pointer(r.trim_start_matches('#'))
            .expect("response ref");
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        assert!(
            body.is_null(),
            "{method} {template}: {status} documents no body"
        );
        return;
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    assert!(
        content.contains_key(essence),
        "{method} {template}: {status} with undocumented content type `{content_type}`"
    );
    let pointer = match &response_pointer {
        Some(p) => format!("{p}/content/{}/schema", essence.replace('/', "~1")),
        None => format!(
            "/paths/{}/{method}/responses/{status}/content/{}/schema",
            template.replace('~', "~0").replace('/', "~1"),
            essence.replace('/', "~1")
        ),
    };
    let v = validator(&pointer);
    let errors: Vec<String> = v
        .iter_errors(body)
        .take(5)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path}: {status} violates the document: {errors:?}\n{body}"
    );
}
