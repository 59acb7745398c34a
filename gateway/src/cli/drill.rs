//! `mallgate drill run`: starts a drill through the admin API, shows a progress line while
//! it runs (stderr), prints the report (stdout), writes the HTML page when asked, and ends
//! with the verdict: usable from a runbook or as a CI gate. Ctrl-C aborts the drill (its
//! fault is off at once) and still prints the report.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use mallgate_connectors::Capability;
use mallgate_connectors::runtime::faults::FaultKind;
use serde_json::{Value, json};

use super::{Outcome, capability, fail, token};
use crate::GatewayError;

/// `mallgate drill run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The admin API's base URL, e.g. `http://127.0.0.1:9090`.
    #[arg(long)]
    pub admin: String,
    /// The bearer token, or `env:VAR` / `file:PATH`.
    #[arg(long, allow_hyphen_values = true)]
    pub token: String,
    /// The partner to drill.
    #[arg(long)]
    pub target: String,
    /// One endpoint of the partner (its URL as the status shows it); default: all.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// One capability; default: every exchange with the partner.
    #[arg(long, value_parser = capability)]
    pub capability: Option<Capability>,
    /// error, latency, blackhole, reset, garbage, rate_limited, or observe (inject
    /// nothing, report what happens).
    #[arg(long, value_parser = fault)]
    pub fault: FaultKind,
    /// Share of the target's attempts that get the fault.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// The delay of a latency fault (`800ms`, `2s`).
    #[arg(long, value_parser = duration)]
    pub latency: Option<Duration>,
    /// How long the fault stays on, in whole seconds (`30s`, `2m`).
    #[arg(long, value_parser = whole_seconds)]
    pub duration: Duration,
    /// Most frontend answers that may be non-2xx.
    #[arg(long)]
    pub expect_max_errors: Option<u64>,
    /// Most source answers of the target that may fail.
    #[arg(long)]
    pub expect_max_failed: Option<u64>,
    #[arg(long, value_parser = duration)]
    pub expect_max_detect: Option<Duration>,
    #[arg(long, value_parser = duration)]
    pub expect_max_failover: Option<Duration>,
    /// Most partner attempts per source call (1.1: one retry in ten calls).
    #[arg(long)]
    pub expect_max_amplification: Option<f64>,
    #[arg(long, value_parser = duration)]
    pub expect_max_recovery: Option<Duration>,
    /// Writes the report's HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Prints the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn fault(text: &str) -> Result<FaultKind, String> {
    serde_json::from_value(Value::from(text)).map_err(|_| {
        format!("`{text}` is not a fault: error, latency, blackhole, reset, garbage, rate_limited, observe")
    })
}

/// `30s`, `800ms`, `2m`, `1m 30s` (jiff's friendly format).
fn duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("`{text}` is not a duration (30s, 800ms, 2m): {e}"))?;
    Duration::try_from(d).map_err(|_| format!("`{text}` is negative"))
}

/// A drill lasts whole seconds: `1500ms` is refused rather than cut.
fn whole_seconds(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d.subsec_nanos() != 0 || d.is_zero() {
        return Err(format!(
            "`{text}`: a drill lasts a whole number of seconds (at least 1s)"
        ));
    }
    Ok(d)
}

fn millis(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

impl RunArgs {
    fn body(&self) -> Value {
        let mut target = json!({"partner": self.target});
        if let Some(e) = &self.endpoint {
            target["endpoint"] = json!(e);
        }
        if let Some(c) = self.capability {
            target["capability"] = json!(c);
        }
        let expect = json!({
            "max_frontend_errors": self.expect_max_errors,
            "max_failed_answers": self.expect_max_failed,
            "max_time_to_detect_ms": millis(self.expect_max_detect),
            "max_time_to_failover_ms": millis(self.expect_max_failover),
            "max_amplification": self.expect_max_amplification,
            "max_recovery_ms": millis(self.expect_max_recovery),
        });
        let expect: serde_json::Map<String, Value> = expect
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut body = json!({
            "target": target,
            "fault": self.fault,
            "rate": self.rate,
            "duration_s": self.duration.as_secs().max(1),
            "expect": expect,
        });
        if let Some(l) = self.latency {
            body["latency_ms"] = json!(l.as_millis() as u64);
        }
        body
    }
}

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), GatewayError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let reply = req
            .send()
            .await
            .map_err(|e| fail(format!("cannot reach {}: {}", self.base, e.without_url())))?;
        let status = reply.status().as_u16();
        Ok((status, reply.json().await.unwrap_or(Value::Null)))
    }

    async fn text(&self, path: &str) -> Result<String, GatewayError> {
        let reply = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| fail(format!("cannot reach {}: {}", self.base, e.without_url())))?;
        if !reply.status().is_success() {
            return Err(fail(format!("{path}: HTTP {}", reply.status().as_u16())));
        }
        reply.text().await.map_err(|e| fail(e.to_string()))
    }
}

fn ms(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "—".to_owned(), |v| format!("{v} ms"))
}

/// The one-line progress of a running drill.
fn progress(r: &Value) -> String {
    let f = &r["figures"];
    let a = &f["answers"];
    format!(
        "{} {} · live {} cached {} stale {} failed {} · non-2xx {} · detect {} · failover {}",
        r["id"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        a["live"],
        a["cached"],
        a["stale"],
        a["failed"],
        f["frontend_non_2xx"],
        ms(&f["time_to_detect_ms"]),
        ms(&f["time_to_failover_ms"]),
    )
}

/// The report as text.
fn summary(r: &Value) -> String {
    let f = &r["figures"];
    let a = &f["answers"];
    let mut out = vec![
        format!(
            "drill {}: {} on {} ({}), {} s — {}",
            r["id"].as_str().unwrap_or("?"),
            r["fault"].as_str().unwrap_or("?"),
            r["target"]["partner"].as_str().unwrap_or("?"),
            r["target"]["endpoint"].as_str().unwrap_or("all endpoints"),
            r["duration_s"],
            r["state"].as_str().unwrap_or("?"),
        ),
        format!("  time to detect     {}", ms(&f["time_to_detect_ms"])),
        format!("  time to failover   {}", ms(&f["time_to_failover_ms"])),
        format!("  time to recover    {}", ms(&f["time_to_recover_ms"])),
        format!(
            "  answers            live {} · cached {} · stale {} · failed {}",
            a["live"], a["cached"], a["stale"], a["failed"]
        ),
        format!(
            "  frontend           {} requests, {} non-2xx",
            f["frontend_requests"], f["frontend_non_2xx"]
        ),
        format!(
            "  amplification      {} ({} attempts, {} injected, {} exchanges)",
            f["amplification"]
                .as_f64()
                .map_or("—".into(), |v| format!("{v:.2}")),
            f["partner_attempts"],
            f["injected"],
            f["exchanges"]
        ),
    ];
    for c in r["verdict"]["checks"].as_array().into_iter().flatten() {
        out.push(format!(
            "  check {:<24} limit {} actual {} — {}",
            c["name"].as_str().unwrap_or("?"),
            c["limit"],
            c["actual"],
            if c["passed"] == true { "pass" } else { "FAIL" }
        ));
    }
    let passed = r["verdict"]["passed"] == true;
    out.push(format!(
        "verdict: {}",
        if passed { "passed" } else { "FAILED" }
    ));
    out.join("\n")
}

/// `mallgate drill run ...`.
pub async fn run(args: &RunArgs) -> Result<Outcome, GatewayError> {
    let admin = Admin {
        http: reqwest::Client::new(),
        base: args.admin.trim_end_matches('/').to_owned(),
        token: token(&args.token)?,
    };
    let (status, started) = admin
        .send(
            reqwest::Method::POST,
            "/admin/v1/drills",
            Some(&args.body()),
        )
        .await?;
    if status != 201 {
        return Err(fail(format!(
            "the drill was not started (HTTP {status}): {}",
            started["detail"].as_str().unwrap_or("no detail")
        )));
    }
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/admin/v1/drills/{id}");
    // The drill ends by itself; the CLI gives up waiting well after (recovery is bounded
    // by two minutes).
    let give_up = tokio::time::Instant::now() + args.duration + Duration::from_secs(180);
    let report = follow(&admin, &id, give_up).await?;
    if let Some(file) = &args.html {
        let page = admin.text(&format!("{path}/report.html")).await?;
        std::fs::write(file, page).map_err(|source| GatewayError::Io {
            path: file.clone(),
            source,
        })?;
    }
    let output = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        summary(&report)
    };
    // An aborted drill proves nothing: never a green gate.
    Ok(Outcome {
        ok: report["verdict"]["passed"] == true && report["state"] == "finished",
        output,
    })
}

/// Polls drill `id` with a progress line until it has ended. The first Ctrl-C aborts it
/// (and skips the wait for recovery); a second one exits at once (130).
async fn follow(
    admin: &Admin,
    id: &str,
    give_up: tokio::time::Instant,
) -> Result<Value, GatewayError> {
    let path = format!("/admin/v1/drills/{id}");
    let mut aborted = false;
    let mut stopped_waiting = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                if aborted {
                    eprintln!("\nleft {id} to end by itself");
                    std::process::exit(130);
                }
                aborted = true;
                eprintln!("\naborting {id} (Ctrl-C again to leave at once)");
                admin.send(reqwest::Method::DELETE, &path, None).await?;
            }
        }
        let (status, report) = admin.send(reqwest::Method::GET, &path, None).await?;
        if status != 200 {
            return Err(fail(format!(
                "drill {id} is gone (HTTP {status}; a restarted gateway keeps no drill)"
            )));
        }
        eprint!("\r{}\x1b[K", progress(&report));
        let _ = std::io::stderr().flush();
        if matches!(report["state"].as_str(), Some("finished" | "aborted")) {
            eprintln!();
            return Ok(report);
        }
        // Aborted: no waiting for the endpoints to come back either.
        if aborted && !stopped_waiting && report["state"] == "recovering" {
            stopped_waiting = true;
            admin.send(reqwest::Method::DELETE, &path, None).await?;
        }
        if tokio::time::Instant::now() > give_up {
            admin.send(reqwest::Method::DELETE, &path, None).await?;
            return Err(fail(format!("drill {id} did not end in time; aborted")));
        }
    }
}
