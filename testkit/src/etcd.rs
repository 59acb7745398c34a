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
}

/// The etcd binary: `$MALLGATE_ETCD`, else `etcd` on the PATH.
fn binary() -> PathBuf {
    std::env::var_os("MALLGATE_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

impl Etcd {
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
        };
        etcd.spawn();
        etcd
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(binary())
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

    /// Whether `/health` says so.
    pub fn healthy(&self) -> bool {
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
