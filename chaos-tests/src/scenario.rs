//! Running a chaos scenario as a drill: the gateway with its admin API, a drill started
//! through the real API (injecting the fault, or `observe` when the fault comes from the
//! simulator or the [`crate::proxy::FaultProxy`]), bounded load while it runs, and the
//! report kept — JSON and HTML — in `CHAOS_REPORT_DIR` (default `target/chaos-reports`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use mallgate_partner_sim::Partner;
use mallgate_testkit::admin::{admin_mall_with, admin_send};
use mallgate_testkit::{Answer, Mall};

use crate::proxy::FaultProxy;
use serde_json::Value;

pub const OPERATOR: &str = "operator-token-for-chaos-scenarios";

/// A mall with the admin API (drills) and health checks every second; `patch` may change
/// each connector's text.
pub async fn mall(patch: impl Fn(Partner, String) -> String) -> Mall {
    admin_mall_with(&[("operator", OPERATOR)], patch, |config| {
        config.resilience.health_interval_s = 1;
    })
    .await
}

/// A mall whose `partner` reaches the address after `needle` in its connector (`"url: "`:
/// its first endpoint, `"token_url: "`: its token endpoint) through `proxy`.
pub async fn mall_behind(proxy: &FaultProxy, partner: Partner, needle: &str) -> Mall {
    mall(|p, text| {
        if p == partner {
            proxy.front(&text, needle)
        } else {
            text
        }
    })
    .await
}

/// Starts the drill `body`, runs the load while its fault is on, and keeps its report as
/// `name`: the report and the answers.
pub async fn drill_under_load<F, Fut>(
    mall: &Mall,
    name: &str,
    body: &Value,
    (workers, max): (usize, usize),
    request: F,
) -> (Value, Load)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let id = start(mall, body).await;
    let (report, load) = under_load(mall, &id, workers, max, request).await;
    keep(mall, name, &id, &report).await;
    (report, load)
}

async fn admin(
    mall: &Mall,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    admin_send(
        mall,
        method,
        path,
        OPERATOR,
        &[],
        body.map(Value::to_string),
    )
    .await
}

/// Starts a drill; its id.
pub async fn start(mall: &Mall, body: &Value) -> String {
    let (status, answer) = admin(mall, reqwest::Method::POST, "/admin/v1/drills", Some(body)).await;
    assert_eq!(status, 201, "the drill starts: {answer}");
    answer["id"].as_str().expect("id").to_owned()
}

pub async fn report(mall: &Mall, id: &str) -> Value {
    let (status, report) = admin(
        mall,
        reqwest::Method::GET,
        &format!("/admin/v1/drills/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    report
}

/// A search no cache has seen: every one is a partner call.
pub fn fresh<'a>(
    mall: &'a Mall,
    tag: &'static str,
) -> impl Fn(usize) -> futures_util::future::BoxFuture<'a, Answer> {
    move |i| Box::pin(mall.get_owned(format!("/v1/products?q={tag}{i}&limit=2")))
}

/// Frontend answers of a load.
#[derive(Debug, Default)]
pub struct Load {
    pub answers: Vec<Answer>,
}

impl Load {
    pub fn non_2xx(&self) -> usize {
        self.answers
            .iter()
            .filter(|a| !(200..300).contains(&a.status))
            .count()
    }

    /// Answers whose `partner` source had `outcome`.
    pub fn count(&self, partner: &str, outcome: &str) -> usize {
        self.answers
            .iter()
            .filter(|a| a.outcome(partner) == Some(outcome))
            .count()
    }
}

/// `workers` concurrent loops of `request(i)` (a short pause between requests) while
/// drill `id`'s fault is on, at most `max` requests; the drill's final report (once it has
/// ended) and the answers.
pub async fn under_load<F, Fut>(
    mall: &Mall,
    id: &str,
    workers: usize,
    max: usize,
    request: F,
) -> (Value, Load)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let done = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let load = std::sync::Mutex::new(Load::default());
    let worker = || async {
        while !done.load(Ordering::Relaxed) {
            let i = sent.fetch_add(1, Ordering::Relaxed);
            if i >= max {
                break;
            }
            let a = request(i).await;
            load.lock().expect("load").answers.push(a);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let watch = async {
        // The drill's duration plus its bounded recovery, polled.
        for _ in 0..1500 {
            let r = report(mall, id).await;
            // The load is the fault's: it stops when the fault does (recovery is watched
            // without it; a half-open breaker counts as back).
            if r["state"] != "running" {
                done.store(true, Ordering::Relaxed);
            }
            if matches!(r["state"].as_str(), Some("finished" | "aborted")) {
                return r;
            }
            if sent.load(Ordering::Relaxed) >= max {
                // Out of load: wait for the end without it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done.store(true, Ordering::Relaxed);
        panic!("drill {id} did not end");
    };
    let (report, _) = tokio::join!(watch, join_all((0..workers).map(|_| worker())));
    (report, load.into_inner().expect("load"))
}

/// Where reports are kept.
pub fn report_dir() -> PathBuf {
    std::env::var_os("CHAOS_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/chaos-reports")
        })
}

/// Keeps drill `id`'s report as `NAME.json` and `NAME.html`, and prints its figures.
pub async fn keep(mall: &Mall, name: &str, id: &str, report: &Value) {
    let dir = report_dir();
    std::fs::create_dir_all(&dir).expect("report dir");
    let json = serde_json::to_string_pretty(report).expect("json");
    std::fs::write(dir.join(format!("{name}.json")), json).expect("write the report");
    let addr = mall.gateway.admin_addr.expect("admin");
    let page = mall
        .http
        .get(format!("http://{addr}/admin/v1/drills/{id}/report.html"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    std::fs::write(dir.join(format!("{name}.html")), page).expect("write the page");
    let f = &report["figures"];
    // The test harness shows it with `--nocapture` (CI prints the kept reports instead).
    eprintln!(
        "scenario {name}: detect {} ms, failover {} ms, recover {} ms, answers {}, non-2xx {}, amplification {}",
        f["time_to_detect_ms"],
        f["time_to_failover_ms"],
        f["time_to_recover_ms"],
        f["answers"],
        f["frontend_non_2xx"],
        f["amplification"]
    );
}

/// The frontend promises every scenario keeps: no non-2xx while another source answers,
/// and at most `amplification` partner attempts per source call. `report` is shown when
/// one is broken.
pub fn promises(report: &Value, load: &Load, amplification: f64) {
    assert_eq!(load.non_2xx(), 0, "no frontend error: {report}");
    assert_eq!(report["figures"]["frontend_non_2xx"], 0, "{report}");
    if let Some(a) = report["figures"]["amplification"].as_f64() {
        assert!(
            a <= amplification,
            "amplification {a} > {amplification}: {report}"
        );
    }
    assert_eq!(report["verdict"]["passed"], true, "{report}");
}
