//! A steady client for upgrade and drain tests and `ops/bench/upgrade.sh`: threads that
//! send at a constant rate over keep-alive connections and over a fresh connection per
//! request, on plain `std` sockets, counting every way a request can fail separately —
//! connection refused, reset, read error (the connection closed before a whole answer),
//! timeout, non-2xx — so that a test can say which class a failure was.
//!
//! The keep-alive client behaves as a careful HTTP/1.1 client (hyper, Go's transport):
//! before it reuses an idle connection it checks whether the server closed it meanwhile
//! and opens a new one if so (counted as `idle_closed`, not an error: nothing was sent);
//! after an answer with `Connection: close` it opens a new one. It never retries a request
//! it has sent: a request lost is an error.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where requests go: one address, or a balancer's choice among backends.
pub trait Target: Send + Sync {
    /// The backend a new connection goes to.
    fn pick(&self) -> SocketAddr;
    /// Whether requests may still go to `addr` (a balancer stops sending to a backend that
    /// is not ready, on open connections too).
    fn usable(&self, _addr: SocketAddr) -> bool {
        true
    }
}

impl Target for SocketAddr {
    fn pick(&self) -> SocketAddr {
        *self
    }
}

/// The load.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Threads each keeping one keep-alive connection.
    pub keepalive: usize,
    /// Threads opening a connection per request.
    pub fresh: usize,
    /// Requests per second of each thread.
    pub rate: f64,
    /// The paths asked, in turn (GET).
    pub paths: Vec<String>,
    /// The longest a connect or an answer may take before it counts as a timeout.
    pub timeout: Duration,
}

/// How requests ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub connect_refused: u64,
    pub reset: u64,
    pub read_error: u64,
    pub timeout: u64,
    pub non_2xx: u64,
    /// Idle connections found closed by the server before reuse (not errors).
    pub idle_closed: u64,
    /// Answers that said `Connection: close` (not errors).
    pub told_to_close: u64,
}

impl Counts {
    /// Requests that did not get a 2xx, of every class.
    pub fn errors(&self) -> u64 {
        self.connect_refused + self.reset + self.read_error + self.timeout + self.non_2xx
    }

    /// Every request sent was answered (2xx) and no class has a count.
    pub fn clean(&self) -> bool {
        self.errors() == 0 && self.ok == self.sent
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| class | count |\n|---|---:|")?;
        for (name, n) in [
            ("requests sent", self.sent),
            ("answered 2xx", self.ok),
            ("connect refused", self.connect_refused),
            ("reset", self.reset),
            ("read error", self.read_error),
            ("timeout", self.timeout),
            ("non-2xx", self.non_2xx),
            ("idle connection closed before reuse", self.idle_closed),
            ("answers with Connection: close", self.told_to_close),
        ] {
            writeln!(f, "| {name} | {n} |")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    connect_refused: AtomicU64,
    reset: AtomicU64,
    read_error: AtomicU64,
    timeout: AtomicU64,
    non_2xx: AtomicU64,
    idle_closed: AtomicU64,
    told_to_close: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        let n = |a: &AtomicU64| a.load(Ordering::Acquire);
        Counts {
            sent: n(&self.sent),
            ok: n(&self.ok),
            connect_refused: n(&self.connect_refused),
            reset: n(&self.reset),
            read_error: n(&self.read_error),
            timeout: n(&self.timeout),
            non_2xx: n(&self.non_2xx),
            idle_closed: n(&self.idle_closed),
            told_to_close: n(&self.told_to_close),
        }
    }

    fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Ok { .. } => &self.ok,
            Outcome::Status(_) => &self.non_2xx,
            Outcome::Refused => &self.connect_refused,
            Outcome::Reset => &self.reset,
            Outcome::ReadError => &self.read_error,
            Outcome::Timeout => &self.timeout,
        };
        counter.fetch_add(1, Ordering::AcqRel);
        if matches!(outcome, Outcome::Ok { close: true }) {
            self.told_to_close.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx; `close`: it said `Connection: close`.
    Ok {
        close: bool,
    },
    Status(u16),
    Refused,
    Reset,
    ReadError,
    Timeout,
}

impl Outcome {
    fn of(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Self::Reset,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::ReadError,
        }
    }
}

/// A load running on its threads until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(target: Arc<dyn Target>, plan: &Plan) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.1));
        let mut threads = Vec::new();
        for i in 0..plan.keepalive + plan.fresh {
            let keepalive = i < plan.keepalive;
            let (stop, counters, target) = (
                Arc::clone(&stop),
                Arc::clone(&counters),
                Arc::clone(&target),
            );
            let plan = plan.clone();
            threads.push(std::thread::spawn(move || {
                let mut client = Client::new(target, plan.timeout, keepalive);
                let mut next = Instant::now() + interval.mul_f64(i as f64 / 8.0);
                let mut turn = i;
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += interval;
                    let path = &plan.paths[turn % plan.paths.len()];
                    turn += 1;
                    counters.sent.fetch_add(1, Ordering::AcqRel);
                    let outcome = client.get(path, &counters);
                    counters.count(&outcome);
                }
            }));
        }
        Self {
            stop,
            counters,
            threads,
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counters.snapshot()
    }

    /// Stops every thread (each finishes the request it is in) and returns the counts.
    pub fn stop(self) -> Counts {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.counters.snapshot()
    }
}

/// One thread's connection.
struct Client {
    target: Arc<dyn Target>,
    timeout: Duration,
    keepalive: bool,
    conn: Option<(TcpStream, SocketAddr)>,
}

impl Client {
    fn new(target: Arc<dyn Target>, timeout: Duration, keepalive: bool) -> Self {
        Self {
            target,
            timeout,
            keepalive,
            conn: None,
        }
    }

    fn get(&mut self, path: &str, counters: &Counters) -> Outcome {
        if let Some((stream, addr)) = &self.conn
            && (!self.target.usable(*addr) || closed(stream))
        {
            if self.target.usable(*addr) {
                counters.idle_closed.fetch_add(1, Ordering::AcqRel);
            }
            self.conn = None;
        }
        let (mut stream, addr) = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let addr = self.target.pick();
                match connect(addr, self.timeout) {
                    Ok(stream) => (stream, addr),
                    Err(e) => return Outcome::of(&e),
                }
            }
        };
        let close = if self.keepalive {
            ""
        } else {
            "connection: close\r\n"
        };
        let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{close}\r\n");
        if let Err(e) = stream.write_all(head.as_bytes()) {
            return Outcome::of(&e);
        }
        match read_answer(&mut stream) {
            Ok((status, server_close)) => {
                if self.keepalive && !server_close {
                    self.conn = Some((stream, addr));
                }
                if (200..300).contains(&status) {
                    Outcome::Ok {
                        close: server_close,
                    }
                } else {
                    Outcome::Status(status)
                }
            }
            Err(e) => Outcome::of(&e),
        }
    }
}

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Whether the server closed this idle connection (a FIN or a reset is waiting).
fn closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let gone = match stream.peek(&mut byte) {
        Ok(0) => true,
        // Bytes nobody asked for: the connection is not in a state to reuse.
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    gone || stream.set_nonblocking(false).is_err()
}

/// Reads one answer: its status and whether it said `Connection: close`.
pub fn read_answer(stream: &mut TcpStream) -> io::Result<(u16, bool)> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let length: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let close = header("connection:").is_some_and(|v| v == "close");
    let mut have = buf.len() - head_end;
    while have < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    Ok((status, close))
}

/// A slow request: `body` POSTed to `path` in `pieces` parts spread over `spread`, on a
/// connection of its own; how it ended.
pub fn slow_post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    pieces: usize,
    spread: Duration,
    timeout: Duration,
) -> Outcome {
    let mut stream = match connect(addr, timeout) {
        Ok(s) => s,
        Err(e) => return Outcome::of(&e),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if let Err(e) = stream.write_all(head.as_bytes()) {
        return Outcome::of(&e);
    }
    let size = body.len().div_ceil(pieces.max(1)).max(1);
    for piece in body.chunks(size) {
        std::thread::sleep(spread / pieces.max(1) as u32);
        if let Err(e) = stream.write_all(piece) {
            return Outcome::of(&e);
        }
    }
    let outcome = match read_answer(&mut stream) {
        Ok((status, close)) if (200..300).contains(&status) => Outcome::Ok { close },
        Ok((status, _)) => Outcome::Status(status),
        Err(e) => Outcome::of(&e),
    };
    let _ = stream.shutdown(Shutdown::Both);
    outcome
}
