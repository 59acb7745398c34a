//! Idle keep-alive connections passed to the new instance on an upgrade: each socket goes
//! as `SCM_RIGHTS` over a Unix datagram socket at `<upgrade_sock>.conns`, with one byte
//! naming its listener. The new instance binds that socket before it asks for the
//! listening sockets and unlinks it once it has them, so only the upgrade it came for
//! finds it.
//!
//! A connection is passed only while it is idle: its last answer written, nothing
//! pipelined, and a read of its next byte pending (nothing read into a buffer). Whatever the
//! client sends after that is in the socket's kernel buffer, which the new instance reads.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;

/// How long a connection may wait for room in the new instance's queue.
const SEND_WAIT: Duration = Duration::from_secs(10);

/// Whether `path` is a socket owned by this process's user (anyone else's could collect
/// the clients' connections).
fn ours(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::other("not a socket"));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the socket belongs to another user",
        ));
    }
    Ok(())
}

/// `<upgrade_sock>.conns`.
pub fn conns_path(upgrade_sock: &Path) -> PathBuf {
    let mut path = upgrade_sock.as_os_str().to_owned();
    path.push(".conns");
    PathBuf::from(path)
}

/// The old instance's end: connected to the new instance's socket.
#[derive(Debug)]
pub struct Sender {
    socket: UnixDatagram,
    /// Connections passed so far.
    sent: std::sync::atomic::AtomicU64,
}

impl Sender {
    /// Connects to the socket at `path`, waiting up to `wait` for a new instance to bind it.
    /// Only a socket of this process's own user is trusted with its clients' connections.
    pub async fn connect(path: &Path, wait: Duration) -> io::Result<Self> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let socket = UnixDatagram::unbound()?;
            match ours(path).and_then(|()| socket.connect(path)) {
                Ok(()) => {
                    socket.set_nonblocking(true)?;
                    return Ok(Self {
                        socket,
                        sent: std::sync::atomic::AtomicU64::new(0),
                    });
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Passes `stream` (idle, see the module) to the new instance as a connection of
    /// listener `tag`; gives it back when it cannot (the new instance is gone, or its queue
    /// — `net.unix.max_dgram_qlen`, 10 by default — stayed full for 10 s).
    pub async fn send(&self, tag: u8, stream: Stream) -> Result<(), Stream> {
        let deadline = tokio::time::Instant::now() + SEND_WAIT;
        while tokio::time::Instant::now() < deadline {
            match self.try_send(tag, &stream) {
                Ok(()) => {
                    self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // The socket lives on in the message (and then in the new instance):
                    // dropping this end closes a descriptor, not the connection.
                    drop(stream);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => {
                    tracing::warn!(target: "mallgate::process", error = %e,
                        "a connection could not be handed to the new instance");
                    return Err(stream);
                }
            }
        }
        Err(stream)
    }

    /// Connections passed so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn try_send(&self, tag: u8, stream: &Stream) -> io::Result<()> {
        // A plain TCP connection only (a TLS session's state would be in this process).
        let tcp = stream
            .as_any()
            .downcast_ref::<L4Stream>()
            .ok_or_else(|| io::Error::other("not a plain TCP connection"))?;
        let fd = borrow(tcp);
        let fds = [fd];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("no room for the descriptor"));
        }
        rustix::net::sendmsg(
            &self.socket,
            &[io::IoSlice::new(&[tag])],
            &mut control,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        )?;
        Ok(())
    }
}

/// The stream's socket, borrowed for as long as the stream.
#[allow(unsafe_code)]
fn borrow(stream: &L4Stream) -> BorrowedFd<'_> {
    // SAFETY: the descriptor is the stream's own, open for as long as the stream lives,
    // and the borrow cannot outlive `stream` (pingora's `Stream` offers `AsRawFd` only).
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// The new instance's end.
#[derive(Debug)]
pub struct Receiver {
    socket: UnixDatagram,
}

impl Receiver {
    /// Binds `path` (a stale socket file there is replaced).
    pub fn bind(path: &Path) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let socket = UnixDatagram::bind(path)?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }

    /// On the runtime that serves the connections received.
    pub fn into_tokio(self) -> io::Result<tokio::net::UnixDatagram> {
        tokio::net::UnixDatagram::from_std(self.socket)
    }
}

/// The next connection passed: its listener's tag and its socket.
pub async fn receive(socket: &tokio::net::UnixDatagram) -> io::Result<(u8, OwnedFd)> {
    loop {
        let got = socket
            .async_io(Interest::READABLE, || {
                let mut tag = [0u8; 1];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                rustix::net::recvmsg(
                    socket,
                    &mut [io::IoSliceMut::new(&mut tag)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
                )?;
                let mut fds: Vec<OwnedFd> = Vec::new();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = message {
                        fds.extend(received);
                    }
                }
                Ok((tag[0], fds))
            })
            .await?;
        // One descriptor per message; anything else (a stray datagram) is dropped, and
        // its descriptors with it.
        let (tag, mut fds) = got;
        if fds.len() == 1
            && let Some(fd) = fds.pop()
        {
            return Ok((tag, fd));
        }
    }
}

/// The peer's socket as a pingora stream (on the current runtime): a connected TCP socket,
/// or refused.
pub fn stream(fd: OwnedFd) -> io::Result<Stream> {
    if rustix::net::sockopt::socket_type(&fd)? != rustix::net::SocketType::STREAM {
        return Err(io::Error::other("not a stream socket"));
    }
    let std = std::net::TcpStream::from(fd);
    // A Unix socket has no IP peer: only a TCP connection answers this.
    std.peer_addr()?;
    std.set_nonblocking(true)?;
    let tcp = tokio::net::TcpStream::from_std(std)?;
    let mut stream = L4Stream::from(tcp);
    let raw = stream.as_raw_fd();
    stream.set_socket_digest(SocketDigest::from_raw_fd(raw));
    Ok(Box::new(stream))
}
