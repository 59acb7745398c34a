//! A TCP fault proxy with toxiproxy-style toxics, for the faults below HTTP that the
//! gateway's own injection (a layer above the client) cannot make: latency with jitter on
//! the bytes, a bandwidth limit, a slicer, a reset peer, a blackhole, a half-open close.
//!
//! It listens on `127.0.0.1:0` and forwards every connection to one upstream. Toxics are
//! read per chunk, so changing them affects connections already open (the gateway pools
//! keep-alive connections): a test can flap an endpoint without reconnecting. Toxics act
//! on the downstream direction (the partner's reply), as toxiproxy's do by default; the
//! blackhole also swallows the request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The toxics on the proxy now; `Toxics::default()` passes everything untouched.
#[derive(Debug, Clone, Default)]
pub struct Toxics {
    /// Each downstream chunk waits this long, plus a uniform `0..jitter`.
    pub latency: Duration,
    pub jitter: Duration,
    /// Downstream bytes per second (0: unlimited).
    pub bandwidth: u64,
    /// Downstream chunks are cut to at most this many bytes (0: off)…
    pub slice_bytes: usize,
    /// …with this pause between slices.
    pub slice_delay: Duration,
    /// Every connection is reset (RST) at its next chunk, or at once when it opens.
    pub reset_peer: bool,
    /// Bytes are swallowed both ways and nothing comes back; the connection stays open.
    pub blackhole: bool,
    /// The reply's first chunk is forwarded, then the proxy closes its write half (FIN)
    /// and keeps reading: a half-open connection.
    pub half_open: bool,
}

/// What the proxy saw.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    /// Where connections go (set by [`FaultProxy::front`] when the proxy starts first).
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    toxics: Arc<Mutex<Toxics>>,
    pub stats: Arc<ProxyStats>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small deterministic jitter source (xorshift), seeded per connection.
fn jitter(seed: &mut u64, most: Duration) -> Duration {
    if most.is_zero() {
        return Duration::ZERO;
    }
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_nanos(*seed % most.as_nanos().max(1) as u64)
}

impl FaultProxy {
    /// Starts a proxy; connections go to `upstream` (`None`: set by [`FaultProxy::front`];
    /// until then a connection is closed at once).
    pub async fn start(upstream: Option<SocketAddr>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Mutex::new(upstream));
        let toxics = Arc::new(Mutex::new(Toxics::default()));
        let stats = Arc::new(ProxyStats::default());
        let task = tokio::spawn(accept(
            listener,
            Arc::clone(&upstream),
            Arc::clone(&toxics),
            Arc::clone(&stats),
        ));
        Ok(Self {
            addr,
            upstream,
            toxics,
            stats,
            task,
        })
    }

    /// Puts the proxy in front of the first `http://127.0.0.1:PORT` after `needle` in a
    /// connector's text (`"url: "` for its first endpoint, `"token_url: "` for its token
    /// endpoint): that address becomes the upstream, and the text names the proxy instead.
    pub fn front(&self, text: &str, needle: &str) -> String {
        let prefix = format!("{needle}http://");
        let Some(at) = text.find(&prefix) else {
            return text.to_owned();
        };
        let host_at = at + prefix.len();
        let end = text[host_at..]
            .find(|c: char| c != '.' && c != ':' && !c.is_ascii_digit())
            .map_or(text.len(), |e| host_at + e);
        let Ok(upstream) = text[host_at..end].parse::<SocketAddr>() else {
            return text.to_owned();
        };
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) = Some(upstream);
        format!("{}{}{}", &text[..host_at], self.addr, &text[end..])
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, toxics: Toxics) {
        *self.toxics.lock().unwrap_or_else(|p| p.into_inner()) = toxics;
    }

    pub fn clear(&self) {
        self.set(Toxics::default());
    }
}

fn now(toxics: &Mutex<Toxics>) -> Toxics {
    toxics.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn accept(
    listener: TcpListener,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    toxics: Arc<Mutex<Toxics>>,
    stats: Arc<ProxyStats>,
) {
    let mut n = 0u64;
    // Connections live in the accept task: aborting it (the proxy dropped) ends them all.
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        n += 1;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let Some(upstream) = *upstream.lock().unwrap_or_else(|p| p.into_inner()) else {
            continue;
        };
        let (toxics, stats) = (Arc::clone(&toxics), Arc::clone(&stats));
        connections.spawn(async move {
            let _ = connection(client, upstream, toxics, stats, n).await;
        });
    }
}

fn reset(stream: &TcpStream, stats: &ProxyStats) {
    stats.resets.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_zero_linger();
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    toxics: Arc<Mutex<Toxics>>,
    stats: Arc<ProxyStats>,
    n: u64,
) -> std::io::Result<()> {
    if now(&toxics).reset_peer {
        reset(&client, &stats);
        return Ok(());
    }
    let server = TcpStream::connect(upstream).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up_toxics = Arc::clone(&toxics);
    let up_stats = Arc::clone(&stats);
    // Upstream: the request, swallowed while blackholed.
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = client_read.read(&mut buf).await?;
            if read == 0 {
                return server_write.shutdown().await;
            }
            up_stats.bytes_up.fetch_add(read as u64, Ordering::Relaxed);
            if now(&up_toxics).blackhole {
                continue;
            }
            server_write.write_all(&buf[..read]).await?;
        }
    };
    // Downstream: the reply, through the toxics.
    let down = async move {
        let mut seed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = server_read.read(&mut buf).await?;
            if read == 0 {
                return client_write.shutdown().await;
            }
            let t = now(&toxics);
            if t.reset_peer {
                reset(client_write.as_ref(), &stats);
                // An error ends both directions: the socket closes, with an RST.
                return Err(std::io::Error::other("reset by the proxy"));
            }
            if t.blackhole {
                continue;
            }
            let delay = t.latency + jitter(&mut seed, t.jitter);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let slice = if t.slice_bytes == 0 {
                read
            } else {
                t.slice_bytes
            };
            for (i, chunk) in buf[..read].chunks(slice.max(1)).enumerate() {
                if i > 0 && !t.slice_delay.is_zero() {
                    tokio::time::sleep(t.slice_delay).await;
                }
                if t.bandwidth > 0 {
                    let secs = chunk.len() as f64 / t.bandwidth as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                client_write.write_all(chunk).await?;
                stats
                    .bytes_down
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            if t.half_open {
                client_write.shutdown().await?;
                // Keep reading (and dropping) what the partner still sends, for a while.
                let drain = async {
                    while server_read.read(&mut buf).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), drain).await;
                return Ok(());
            }
        }
    };
    let _ = tokio::try_join!(up, down);
    Ok(())
}
