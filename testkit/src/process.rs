//! The real `mallgate serve` process, as an operator runs it: a config file with fixed
//! loopback ports (an upgrade takes them over), a state directory of its own, the partner
//! secrets by `env:` reference; the process's log lines kept for the test to read.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// The operator token of every [`Setup`].
pub const OPERATOR_TOKEN: &str = "operator-token-for-upgrades";

/// A free loopback port (closed again: the process binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct Dir(pub PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One gateway's config file and what its processes need.
#[derive(Debug)]
pub struct Setup {
    pub config: PathBuf,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub env: Vec<(String, String)>,
    pub state: Dir,
}

/// A config for `connectors` with `process` as its `process` section.
pub fn setup(connectors: &Path, process: Value) -> Setup {
    let state = std::env::temp_dir().join(format!(
        "mallgate-process-{}-{:x}",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::create_dir_all(&state).expect("state dir");
    let mut secrets = serde_json::Map::new();
    let mut env = vec![("MG_TEST_OPERATOR".to_owned(), OPERATOR_TOKEN.to_owned())];
    for (i, (partner, name, value)) in mallgate_partner_sim::partners::demo_secrets()
        .into_iter()
        .enumerate()
    {
        let var = format!("MG_TEST_SECRET_{i}");
        if let Some(names) = secrets
            .entry(partner)
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            names.insert(name.to_owned(), json!(format!("env:{var}")));
        }
        env.push((var, value.to_owned()));
    }
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (public, admin) = (loopback(free_port()), loopback(free_port()));
    let mut process = process;
    process["pid_file"] = json!(state.join("mallgate.pid"));
    let config = json!({
        "listen": public,
        "connectors_dir": connectors,
        "state_dir": state,
        "allow_loopback_partners": true,
        "deadline": {"default_ms": 10000},
        "limits": {"request_timeout_ms": 30000},
        "admin": {"listen": admin,
                  "tokens": [{"role": "operator", "token": "env:MG_TEST_OPERATOR"}]},
        "partner_secrets": secrets,
        "process": process,
    });
    let path = state.join("config.json");
    std::fs::write(&path, config.to_string()).expect("config");
    Setup {
        config: path,
        public,
        admin,
        env,
        state: Dir(state),
    }
}

/// A `mallgate serve` process and every line it writes.
#[derive(Debug)]
pub struct Instance {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The threads reading its output (joined once it exits: every line is in then).
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Instance {
    /// `mallgate serve` (with `upgrade`, `--upgrade`) of `binary` on `setup`'s config.
    pub fn spawn(binary: &Path, setup: &Setup, upgrade: bool) -> Self {
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
        let streams = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ];
        let mut readers = Vec::new();
        for stream in streams.into_iter().flatten() {
            let lines = Arc::clone(&lines);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            }));
        }
        Self {
            child,
            lines,
            readers,
        }
    }

    pub fn log(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Once the process has exited: waits for its last lines.
    fn collect(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// Waits (at most 60 s) for a JSON log line with this message; the line.
    pub fn wait_for_line(&mut self, message: &str) -> Value {
        for _ in 0..1200 {
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited {
                self.collect();
            }
            let found = self
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find_map(|l| {
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

    /// Sends the signal (`QUIT`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Waits (at most 60 s) for the process to exit; its exit status.
    pub fn exit(&mut self) -> ExitStatus {
        for _ in 0..1200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("mallgate did not exit within 60 s:\n{}", self.log());
    }

    /// Waits (at most 60 s) until `/readyz` answers 200.
    pub fn wait_ready(&mut self, addr: SocketAddr) {
        for _ in 0..1200 {
            if readyz(addr).is_ok_and(|s| s == 200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mallgate exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mallgate did not get ready:\n{}", self.log());
    }

    /// The binary upgrade, as `systemctl reload` runs it: a new instance with `--upgrade`,
    /// SIGQUIT to this one once the new one waits, and this one's exit. The new instance,
    /// and the number of idle connections this one handed to it.
    pub fn upgrade(mut self, binary: &Path, setup: &Setup) -> (Instance, u64) {
        let mut next = Instance::spawn(binary, setup, true);
        next.wait_for_line("waiting for the running instance's listeners (send it SIGQUIT)");
        self.signal("QUIT");
        next.wait_for_line("took over the listeners");
        let status = self.exit();
        assert!(
            status.success(),
            "the old instance: {status}\n{}",
            self.log()
        );
        let done = self.wait_for_line("drained: every connection is done; exiting");
        (next, done["handed_off"].as_u64().unwrap_or(0))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /readyz` on a fresh connection: the status, or the error.
pub fn readyz(addr: SocketAddr) -> Result<u16, std::io::Error> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /readyz HTTP/1.1\r\nhost: mall\r\nconnection: close\r\n\r\n")?;
    crate::steady::read_answer(&mut stream).map(|(status, _)| status)
}
