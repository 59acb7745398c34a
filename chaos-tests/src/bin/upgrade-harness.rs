//! `ops/bench/upgrade.sh`: the real `mallgate serve` (the binary given) in front of the
//! simulated fleet, a steady client at a constant rate over keep-alive and fresh
//! connections plus sparse keep-alive clients (idle whenever an upgrade comes), through N
//! binary upgrades and N×100 connector swaps (admin PUTs, each a new version served).
//! Prints every error class (testkit's `steady`), and what an upgrade costs the partners:
//! their requests (token requests apart) in the seconds after each upgrade against the
//! same seconds before it — a new process starts with a cold cache and no tokens.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mallgate_partner_sim::{Fleet, FleetConfig, Partner};
use mallgate_testkit::process::{Instance, OPERATOR_TOKEN, Setup, setup};
use mallgate_testkit::steady::{Counts, Load, Plan};
use mallgate_testkit::{fleet_and_connectors, fleet_requests};
use serde_json::json;

/// The window compared before and after each upgrade.
const WINDOW: Duration = Duration::from_secs(4);

struct Args {
    binary: PathBuf,
    upgrades: usize,
    swaps: usize,
    rate: f64,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        binary: PathBuf::from("target/release/mallgate"),
        upgrades: 3,
        swaps: 100,
        rate: 50.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--binary" => args.binary = PathBuf::from(&value),
            "--upgrades" => args.upgrades = number()? as usize,
            "--swaps-per-upgrade" => args.swaps = number()? as usize,
            "--rate" => args.rate = number()?,
            _ => {
                return Err(format!(
                    "usage: upgrade-harness [--binary PATH] [--upgrades N] [--swaps-per-upgrade N] [--rate RPS-PER-CLIENT]; not {flag}"
                ));
            }
        }
    }
    Ok(args)
}

/// Partner requests so far: (all, token requests).
fn partner_requests(fleet: &Fleet) -> (u64, u64) {
    Partner::ALL.iter().fold((0, 0), |(all, tokens), p| {
        (
            all + fleet_requests(fleet, *p, ""),
            tokens + fleet_requests(fleet, *p, "token"),
        )
    })
}

/// `n` new versions of the Voltmart connector, one after the other (each If-Match the one
/// before), while the load runs: (accepted, refused).
async fn swaps(setup: &Setup, connectors: &std::path::Path, n: usize) -> (usize, usize) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/admin/v1/connectors/voltmart", setup.admin);
    let text = std::fs::read_to_string(connectors.join("voltmart.yaml")).unwrap_or_default();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..n {
        let current = http.get(&url).bearer_auth(OPERATOR_TOKEN).send().await;
        let etag = current.ok().and_then(|r| {
            r.headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let body = text.replacen("description: ", &format!("description: (swap {i}) "), 1);
        let mut put = http.put(&url).bearer_auth(OPERATOR_TOKEN).body(body);
        if let Some(etag) = etag {
            put = put.header("if-match", etag);
        }
        match put.send().await {
            Ok(r) if r.status().is_success() => accepted += 1,
            _ => refused += 1,
        }
    }
    (accepted, refused)
}

fn row(name: &str, counts: &Counts) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
        counts.sent,
        counts.ok,
        counts.connect_refused,
        counts.reset,
        counts.read_error,
        counts.timeout,
        counts.non_2xx,
        counts.idle_closed
    )
}

fn main() -> Result<(), String> {
    let args = args()?;
    if !args.binary.is_file() {
        return Err(format!("no binary at {}", args.binary.display()));
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let (fleet, connectors) =
        runtime.block_on(fleet_and_connectors(FleetConfig::default(), |_, t| t));
    let setup = setup(
        &connectors,
        json!({"drain_delay_s": 1, "grace_period_s": 30, "idle_close_ms": 1000}),
    );
    let mut running = Instance::spawn(&args.binary, &setup, false);
    running.wait_ready(setup.public);
    let paths = vec![
        "/v1/products?q=speaker".to_owned(),
        "/v1/products?q=headphones&limit=5".to_owned(),
        "/v1/products?q=jacket".to_owned(),
        "/v1/partners".to_owned(),
    ];
    let steady = Plan {
        keepalive: 8,
        fresh: 4,
        rate: args.rate,
        paths: paths.clone(),
        timeout: Duration::from_secs(20),
    };
    let sparse = Plan {
        keepalive: 16,
        fresh: 0,
        rate: 2.0,
        paths,
        timeout: Duration::from_secs(20),
    };
    let steady = Load::start(Arc::new(setup.public), &steady);
    let sparse = Load::start(Arc::new(setup.public), &sparse);
    std::thread::sleep(Duration::from_secs(3));
    let (mut handed_off, mut accepted, mut refused) = (0, 0, 0);
    let mut cold = Vec::new();
    for _ in 0..args.upgrades {
        let (a, r) = runtime.block_on(swaps(&setup, &connectors, args.swaps));
        accepted += a;
        refused += r;
        // The same stretch of time before the upgrade and from its start (the new
        // instance serves from its first second; the old one leaves seconds later).
        let before = partner_requests(&fleet);
        std::thread::sleep(WINDOW);
        let warm = partner_requests(&fleet);
        let started = std::time::Instant::now();
        let (next, handed) = running.upgrade(&args.binary, &setup);
        running = next;
        handed_off += handed;
        std::thread::sleep(WINDOW.saturating_sub(started.elapsed()));
        let cooled = partner_requests(&fleet);
        let seconds = started.elapsed().as_secs_f64();
        let scale = seconds / WINDOW.as_secs_f64();
        cold.push((
            (warm.0 - before.0) as f64 * scale,
            (warm.1 - before.1) as f64 * scale,
            cooled.0 - warm.0,
            cooled.1 - warm.1,
            seconds,
        ));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (steady, sparse) = (steady.stop(), sparse.stop());
    running.signal("TERM");
    let _ = running.exit();
    println!(
        "{} binary upgrades, {accepted} connector swaps accepted ({refused} refused), {handed_off} idle connections handed over\n",
        args.upgrades
    );
    println!(
        "| client | sent | 2xx | connect refused | reset | read error | timeout | non-2xx | idle closed under it |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!("{}", row("steady (keep-alive and fresh)", &steady));
    println!("{}", row("sparse keep-alive", &sparse));
    println!(
        "\nPartner requests from the start of each upgrade to the old instance's exit, against the same time just before it (steady state, scaled from {} s):\n",
        WINDOW.as_secs()
    );
    println!("| upgrade | seconds | steady: all | steady: token | upgrade: all | upgrade: token |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (i, (b, bt, a, at, secs)) in cold.iter().enumerate() {
        println!("| {} | {secs:.1} | {b:.0} | {bt:.0} | {a} | {at} |", i + 1);
    }
    let errors = steady.errors() + sparse.errors() + refused as u64;
    if errors > 0 || !steady.clean() || !sparse.clean() {
        return Err(format!("{errors} errors"));
    }
    Ok(())
}
