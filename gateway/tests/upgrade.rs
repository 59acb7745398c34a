//! Binary upgrades and drains of the real `mallgate serve` process, under a steady load
//! over keep-alive and fresh connections (testkit's `steady` client, which counts every
//! error class apart), against the simulated fleet on loopback.
//!
//! - Three upgrades (`serve --upgrade`, then SIGQUIT to the running one), each crossed by a
//!   slow request (a body trickled over seconds): every request answered, no error of any
//!   class, no idle connection closed under a client (they are handed over).
//! - SIGTERM behind a balancer that reads `/readyz`: the draining instance says so while
//!   its listener still accepts, the balancer moves on, nothing fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mallgate_partner_sim::FleetConfig;
use mallgate_testkit as support;
use serde_json::json;
use support::process::{Instance, Setup, readyz};
use support::steady::{Load, Outcome, Plan, Target, slow_post};

fn setup(connectors: &std::path::Path, drain_delay_s: u64) -> Setup {
    support::process::setup(
        connectors,
        json!({"drain_delay_s": drain_delay_s, "grace_period_s": 30, "idle_close_ms": 200}),
    )
}

fn binary() -> std::path::PathBuf {
    support::mallgate_binary().expect("cargo builds target/<profile>/mallgate")
}

fn plan() -> Plan {
    Plan {
        keepalive: 6,
        fresh: 2,
        rate: 25.0,
        paths: vec![
            "/v1/products?q=speaker".into(),
            "/v1/products?q=headphones&limit=5".into(),
            "/v1/partners".into(),
            "/healthz".into(),
        ],
        timeout: Duration::from_secs(20),
    }
}

const RATES: &str = r#"{"from": {"postal_code": "10001", "country": "US"}, "to": {"postal_code": "94103", "country": "US"}, "parcels": [{"weight_g": 1200}]}"#;

/// Three upgrades under load, each crossed by a slow request: nothing a client can see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_binary_upgrades_under_load_lose_nothing() {
    let (_fleet, connectors) =
        support::fleet_and_connectors(FleetConfig::default(), |_, t| t).await;
    let setup = setup(&connectors, 1);
    tokio::task::spawn_blocking(move || {
        let binary = binary();
        let mut running = Instance::spawn(&binary, &setup, false);
        running.wait_ready(setup.public);
        let load = Load::start(Arc::new(setup.public), &plan());
        // Keep-alive clients with long gaps: idle whenever an upgrade comes, the ones a
        // server closing idle connections would race.
        let sparse = Plan {
            keepalive: 8,
            fresh: 0,
            rate: 3.0,
            ..plan()
        };
        let sparse = Load::start(Arc::new(setup.public), &sparse);
        std::thread::sleep(Duration::from_secs(1));
        let mut handed_off = 0;
        for round in 1..=3 {
            let addr = setup.public;
            let slow = std::thread::spawn(move || {
                slow_post(
                    addr,
                    "/v1/shipping/rates",
                    RATES.as_bytes(),
                    8,
                    // Past the old instance's listener close (5 s after the handover).
                    Duration::from_secs(7),
                    Duration::from_secs(30),
                )
            });
            // The slow request is in flight at the old instance before the upgrade starts.
            std::thread::sleep(Duration::from_millis(700));
            let (next, handed) = running.upgrade(&binary, &setup);
            handed_off += handed;
            let slow = slow.join().expect("slow request");
            assert!(
                matches!(slow, Outcome::Ok { .. }),
                "round {round}: the slow request crossing the upgrade: {slow:?}"
            );
            running = next;
            let during = load.counts();
            assert_eq!(during.errors(), 0, "round {round}:\n{during}");
        }
        std::thread::sleep(Duration::from_secs(1));
        let (counts, sparse) = (load.stop(), sparse.stop());
        eprintln!("steady:\n{counts}sparse:\n{sparse}handed over: {handed_off}");
        assert!(counts.sent > 200 && sparse.sent > 50, "{counts}{sparse}");
        assert!(counts.clean(), "{counts}");
        assert!(sparse.clean(), "{sparse}");
        // No idle connection was closed under a client: they went across instead.
        assert_eq!(
            counts.idle_closed + sparse.idle_closed,
            0,
            "{counts}{sparse}"
        );
        assert!(handed_off > 0, "no idle connection was handed over");
        // The last instance serves from the same store and still answers.
        assert_eq!(readyz(setup.public).expect("readyz"), 200);
        running.signal("TERM");
        assert!(running.exit().success());
    })
    .await
    .expect("scenario");
}

/// A balancer in front of two instances: it sends to the ready ones (probing `/readyz`
/// every 50 ms) and leaves a backend's open connections once it is not ready.
struct Balancer {
    backends: Vec<SocketAddr>,
    ready: Vec<AtomicBool>,
}

impl Target for Balancer {
    fn pick(&self) -> SocketAddr {
        let n = self.backends.len();
        let start = (mallgate::cursor::random_u64() as usize) % n;
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.ready[i].load(Ordering::Acquire))
            .map_or(self.backends[start], |i| self.backends[i])
    }

    fn usable(&self, addr: SocketAddr) -> bool {
        self.backends
            .iter()
            .position(|b| *b == addr)
            .is_some_and(|i| self.ready[i].load(Ordering::Acquire))
    }
}

/// SIGTERM: `/readyz` says `draining` while the listener still accepts; behind a balancer
/// that honours it, no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_behind_a_balancer_without_errors() {
    let (_fleet, connectors) =
        support::fleet_and_connectors(FleetConfig::default(), |_, t| t).await;
    let (a, b) = (setup(&connectors, 2), setup(&connectors, 2));
    tokio::task::spawn_blocking(move || {
        let binary = binary();
        let mut first = Instance::spawn(&binary, &a, false);
        let mut second = Instance::spawn(&binary, &b, false);
        first.wait_ready(a.public);
        second.wait_ready(b.public);
        let balancer = Arc::new(Balancer {
            backends: vec![a.public, b.public],
            ready: vec![AtomicBool::new(true), AtomicBool::new(true)],
        });
        let stop = Arc::new(AtomicBool::new(false));
        // The probe of the first backend: what it saw, in order.
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let probe = {
            let (balancer, stop, seen) =
                (Arc::clone(&balancer), Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                    let state = match readyz(balancer.backends[0]) {
                        Ok(200) => "ready".to_owned(),
                        Ok(503) => "draining".to_owned(),
                        Ok(other) => format!("status {other}"),
                        // Refused, or reset: a probe queued on the listener as the
                        // process closed it is reset by the kernel; both say "gone".
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionRefused
                                    | std::io::ErrorKind::ConnectionReset
                            ) =>
                        {
                            "closed".to_owned()
                        }
                        Err(e) => format!("error {e}"),
                    };
                    balancer.ready[0].store(state == "ready", Ordering::Release);
                    let mut seen = seen.lock().expect("seen");
                    if seen.last() != Some(&state) {
                        seen.push(state);
                    }
                    drop(seen);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let load = Load::start(Arc::clone(&balancer) as Arc<dyn Target>, &plan());
        std::thread::sleep(Duration::from_secs(1));
        first.signal("TERM");
        let status = first.exit();
        assert!(status.success(), "{status}\n{}", first.log());
        std::thread::sleep(Duration::from_millis(500));
        let counts = load.stop();
        stop.store(true, Ordering::Release);
        probe.join().expect("probe");
        eprintln!("{counts}");
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(
            seen,
            ["ready", "draining", "closed"],
            "what the balancer's probe saw"
        );
        assert!(counts.sent > 50, "{counts}");
        assert!(counts.clean(), "{counts}");
        second.signal("TERM");
        assert!(second.exit().success());
    })
    .await
    .expect("scenario");
}
