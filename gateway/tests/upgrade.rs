//! Binary upgrades and drains of the real `mallgate serve` process, under a steady load
//! over keep-alive and fresh connections (testkit's `steady` client, which counts every
//! error class apart), against the simulated fleet on loopback.
//!
//! - Three upgrades (`serve --upgrade`, then SIGQUIT to the running one), each crossed by a
//!   slow request (a body trickled over seconds): every request answered, no error of any
//!   class, no idle connection closed under a client (they are handed over).
//! - SIGTERM behind a balancer that reads `/readyz`: the draining instance says so while
//!   its listener still accepts, the balancer moves on, nothing fails.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mallgate_partner_sim::FleetConfig;
use mallgate_testkit as support;
use serde_json::{Value, json};
use support::steady::{Load, Outcome, Plan, Target, slow_post};

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A directory removed when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One instance's config file: fixed ports (an upgrade takes them over), its own state
/// directory, the partner secrets by `env:` reference.
struct Setup {
    config: PathBuf,
    public: SocketAddr,
    env: Vec<(String, String)>,
    _state: Dir,
}

fn setup(connectors: &Path, drain_delay_s: u64) -> Setup {
    let state = std::env::temp_dir().join(format!(
        "mallgate-upgrade-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&state).expect("state dir");
    let mut secrets = serde_json::Map::new();
    let mut env = vec![(
        "MG_TEST_OPERATOR".to_owned(),
        "operator-token-for-upgrades".to_owned(),
    )];
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
    let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = json!({
        "listen": public,
        "connectors_dir": connectors,
        "state_dir": state,
        "allow_loopback_partners": true,
        "deadline": {"default_ms": 10000},
        "limits": {"request_timeout_ms": 30000},
        "admin": {"listen": format!("127.0.0.1:{}", free_port()),
                  "tokens": [{"role": "operator", "token": "env:MG_TEST_OPERATOR"}]},
        "partner_secrets": secrets,
        "process": {"pid_file": state.join("mallgate.pid"), "drain_delay_s": drain_delay_s,
                    "grace_period_s": 30, "idle_close_ms": 200},
    });
    let path = state.join("config.json");
    std::fs::write(&path, config.to_string()).expect("config");
    Setup {
        config: path,
        public,
        env,
        _state: Dir(state),
    }
}

/// A `mallgate serve` process and every line it writes.
struct Instance {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    fn spawn(setup: &Setup, upgrade: bool) -> Self {
        let binary = support::mallgate_binary().expect("cargo builds target/<profile>/mallgate");
        let mut command = Command::new(binary);
        command.args(["serve", "--config"]).arg(&setup.config);
        if upgrade {
            command.arg("--upgrade");
        }
        let mut child = command
            .envs(setup.env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        Self { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits (at most 60 s) for a log line with this message.
    fn wait_for_line(&mut self, message: &str) -> Value {
        for _ in 0..1200 {
            let found = self.lines.lock().expect("lines").iter().find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v["message"] == message)
            });
            if let Some(line) = found {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mallgate exited ({status}) before `{message}`:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no `{message}` within 60 s:\n{}", self.log());
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (at most 60 s) for the process to exit; its exit status.
    fn exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..1200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("mallgate did not exit within 60 s:\n{}", self.log());
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /readyz` on a fresh connection: the status, or the error.
fn readyz(addr: SocketAddr) -> Result<u16, std::io::Error> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /readyz HTTP/1.1\r\nhost: mall\r\nconnection: close\r\n\r\n")?;
    support::steady::read_answer(&mut stream).map(|(status, _)| status)
}

fn wait_ready(addr: SocketAddr, instance: &mut Instance) {
    for _ in 0..1200 {
        if readyz(addr).is_ok_and(|s| s == 200) {
            return;
        }
        if let Ok(Some(status)) = instance.child.try_wait() {
            panic!("mallgate exited ({status}):\n{}", instance.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mallgate did not get ready:\n{}", instance.log());
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
        let mut running = Instance::spawn(&setup, false);
        wait_ready(setup.public, &mut running);
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
                    6,
                    Duration::from_secs(3),
                    Duration::from_secs(30),
                )
            });
            // The slow request is in flight at the old instance before the upgrade starts.
            std::thread::sleep(Duration::from_millis(700));
            let mut next = Instance::spawn(&setup, true);
            next.wait_for_line("waiting for the running instance's listeners (send it SIGQUIT)");
            running.signal("QUIT");
            next.wait_for_line("took over the listeners");
            let status = running.exit();
            assert!(
                status.success(),
                "round {round}: {status}\n{}",
                running.log()
            );
            let done = running.wait_for_line("drained: every connection is done; exiting");
            handed_off += done["handed_off"].as_u64().expect("handed_off");
            assert_eq!(
                slow.join().expect("slow request"),
                Outcome::Ok { close: true },
                "round {round}: the slow request crossing the upgrade"
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
        let mut first = Instance::spawn(&a, false);
        let mut second = Instance::spawn(&b, false);
        wait_ready(a.public, &mut first);
        wait_ready(b.public, &mut second);
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
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
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
