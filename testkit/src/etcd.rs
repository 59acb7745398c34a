//! A real etcd for tests: Debian's `etcd-server` (`.ci/run` installs it), one member on
//! free loopback ports with a temporary data directory, killed and removed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Dir, free_port};

/// One etcd member on loopback.
#[derive(Debug)]
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    data: Dir,
    child: Option<Child>,
    /// With TLS: the directory of `ca.pem`, `server.pem`, `server-key.pem`, `client.pem`
    /// and `client-key.pem` (the member asks every client for a certificate).
    tls: Option<PathBuf>,
}

/// The etcd binary: `$MALLGATE_ETCD`, else `etcd` on the PATH.
fn binary() -> PathBuf {
    std::env::var_os("MALLGATE_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

impl Etcd {
    /// A member, or `None` (with the reason printed) when no etcd is installed: the
    /// single-node default needs none, so `cargo test` runs on a machine without it.
    /// `MALLGATE_REQUIRE_ETCD=1` (set by `.ci/run`, which installs it) makes a missing
    /// etcd a failure instead: CI always runs the fleet tests.
    pub fn start_or_skip() -> Option<Self> {
        Self::installed().then(Self::start)
    }

    /// [`Etcd::start_tls`], or `None` as [`Etcd::start_or_skip`] says.
    pub fn start_tls_or_skip() -> Option<Self> {
        Self::installed().then(Self::start_tls)
    }

    /// Whether an etcd binary runs here; the reason printed when not (a failure under
    /// `MALLGATE_REQUIRE_ETCD`).
    fn installed() -> bool {
        let found = Command::new(binary())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return true;
        }
        let reason = format!(
            "no etcd ({}): install Debian's etcd-server, or set MALLGATE_ETCD",
            binary().display()
        );
        assert!(
            std::env::var_os("MALLGATE_REQUIRE_ETCD").is_none(),
            "MALLGATE_REQUIRE_ETCD is set and there is {reason}"
        );
        eprintln!("skipped: {reason}");
        false
    }

    /// Starts a member and waits (at most 30 s) until it answers.
    pub fn start() -> Self {
        let data = Dir(std::env::temp_dir().join(format!(
            "mallgate-etcd-{}-{:x}",
            std::process::id(),
            rand_suffix()
        )));
        let mut etcd = Self {
            client_port: free_port(),
            peer_port: free_port(),
            data,
            child: None,
            tls: None,
        };
        etcd.spawn();
        etcd
    }

    /// A member serving clients over TLS only, with a certificate from a fresh CA, and
    /// asking every client for one signed by the same CA (`--client-cert-auth`); the PEM
    /// files are in [`Etcd::tls_dir`].
    pub fn start_tls() -> Self {
        use mallgate_partner_sim::pki::{Leaf, Pki};
        let data = Dir(std::env::temp_dir().join(format!(
            "mallgate-etcd-tls-{}-{:x}",
            std::process::id(),
            rand_suffix()
        )));
        let dir = data.0.join("pki");
        std::fs::create_dir_all(&dir).expect("a directory for the PKI");
        let pki = Pki::generate("etcd test CA").expect("a CA");
        let server = pki.server(&Leaf::Good).expect("a server certificate");
        let client = pki.client("mallgate").expect("a client certificate");
        for (name, pem) in [
            ("ca.pem", pki.ca_pem()),
            ("server.pem", &server.cert_pem),
            ("server-key.pem", &server.key_pem),
            ("client.pem", &client.cert_pem),
            ("client-key.pem", &client.key_pem),
        ] {
            std::fs::write(dir.join(name), pem).expect("a PEM file");
        }
        let mut etcd = Self {
            client_port: free_port(),
            peer_port: free_port(),
            data,
            child: None,
            tls: Some(dir),
        };
        etcd.spawn();
        etcd
    }

    /// The PEM files of a TLS member (`ca.pem`, `client.pem`, `client-key.pem`, ...).
    pub fn tls_dir(&self) -> Option<&std::path::Path> {
        self.tls.as_deref()
    }

    /// `http://127.0.0.1:PORT` (`https://` for a TLS member).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(binary());
        if let Some(dir) = &self.tls {
            command
                .arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(dir.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "t", "--data-dir"])
            .arg(&self.data.0)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("etcd could not start ({e}): install etcd-server (.ci/run does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd on {} did not become healthy in 30 s", self.endpoint());
    }

    /// Whether `/health` says so (`etcdctl endpoint health` for a TLS member).
    pub fn healthy(&self) -> bool {
        if self.tls.is_some() {
            return self
                .command(&["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
        }
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply.contains("\"health\":\"true\"")
    }

    /// The store's revision now (`etcdctl endpoint status`).
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let status: serde_json::Value = serde_json::from_str(&out).expect("etcdctl's JSON");
        status[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in {out}"))
    }

    /// `etcdctl compact REVISION`: every older revision is gone, and a watch that would
    /// resume from one is told so.
    pub fn compact(&self, revision: i64) {
        self.ctl(&["compact", &revision.to_string()]);
    }

    /// Runs `etcdctl` (Debian's `etcd-client`) against this member; its stdout.
    fn ctl(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("etcdctl could not run ({e}): install etcd-client"));
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()));
        if let Some(dir) = &self.tls {
            command
                .arg(format!("--cacert={}", dir.join("ca.pem").display()))
                .arg(format!("--cert={}", dir.join("client.pem").display()))
                .arg(format!("--key={}", dir.join("client-key.pem").display()));
        }
        command.args(args);
        command
    }

    /// Stops the member (SIGKILL), keeping its data: [`Etcd::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped member again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
