//! The epoll driver: one event loop over mio that runs a [`Session`] (or any [`Protocol`])
//! against real sockets, the disk pool and the monotonic clock. It is the fallback where
//! io_uring is refused. The turn, the clock, the disk bridge and the mail are the loop core's
//! (`driver/loop_core.rs`), shared with the io_uring driver; this module has only what epoll
//! does differently: readiness events, synchronous non-blocking reads and vectored writes
//! straight from [`Protocol::send_chunks`]. Run it through [`super::Driver`].
//!
//! Disk work never runs on the loop: writes, reads and verifications go to the
//! [`DiskPool`]; their completions come back through a queue whose eventfd is registered
//! here, so a finished hash wakes the loop like a readable socket. Mail from other loops
//! ([`super::shard`]) shares that eventfd.

use std::collections::HashMap;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::loop_core::{LoopCore, LoopIo, Udp, MAX_DATAGRAMS_PER_TURN};
use super::Protocol;
use crate::core::api::{Action, ConnId};
use crate::core::session::HandOff;
use crate::core::{Session, Time};
use crate::storage::DiskPool;

const LISTENER: Token = Token(usize::MAX);
const DISK: Token = Token(usize::MAX - 1);
const UDP: Token = Token(usize::MAX - 2);

/// Bytes read from a socket per `read` call for a protocol that lends no receive buffer
/// (`Protocol::recv_buffer`; the session reads straight into its connections' buffers).
/// 256 KiB lets one call drain a loopback burst of 16 blocks; the protocol copies what it
/// needs, so the buffer is reused.
const READ_BUF: usize = 256 * 1024;

/// Socket reads per connection per readiness event before moving on (fairness).
const MAX_READS_PER_EVENT: usize = 16;

/// How long to wait before accepting again after `accept` failed (EMFILE, ENFILE, ENOBUFS):
/// such errors last until something closes, and the listener is edge-triggered, so without
/// a retry the connections waiting in its backlog would wait for the next one to arrive,
/// and retrying at once would spin the loop. As the io_uring driver.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

struct Socket {
    stream: TcpStream,
    connecting: bool,
}

/// What one readiness event says, copied out of mio's `Events`: the token, and whether the
/// socket is readable (or closed for reading), writable, or failed.
#[derive(Clone, Copy)]
pub(crate) struct Ready {
    token: Token,
    readable: bool,
    writable: bool,
    error: bool,
}

/// A session (or any [`Protocol`]), its sockets, its torrents' storage and the disk pool,
/// driven by epoll.
pub struct EpollDriver<P: Protocol = Session> {
    poll: Poll,
    events: Events,
    /// The readiness events of the current turn (kept, so a turn does not allocate).
    ready: Vec<Ready>,
    listener: Option<TcpListener>,
    /// When to accept again after `accept` failed for want of descriptors or memory.
    accept_retry: Option<Instant>,
    sockets: HashMap<ConnId, Socket>,
    read_buf: Vec<u8>,
    /// The shared half of the loop: the protocol, the clock, the disk bridge, the mail.
    /// Declared last, so it is dropped after the poller and the sockets.
    pub(crate) core: LoopCore<P>,
}

impl<P: Protocol> EpollDriver<P> {
    /// A driver for `session`, accepting on `listener` if given (see
    /// [`super::net::bind_listeners`]).
    pub fn new(
        session: P,
        listener: Option<std::net::TcpListener>,
        disk: Arc<DiskPool>,
        epoch: Instant,
    ) -> io::Result<EpollDriver<P>> {
        let poll = Poll::new()?;
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let mut listener = match listener {
            Some(l) => {
                l.set_nonblocking(true)?;
                Some(TcpListener::from_std(l))
            }
            None => None,
        };
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        let core = LoopCore::new(session, local_addr, disk, epoch)?;
        poll.registry().register(
            &mut SourceFd(&core.disk.eventfd().as_raw_fd()),
            DISK,
            Interest::READABLE,
        )?;
        Ok(EpollDriver {
            core,
            poll,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            listener,
            accept_retry: None,
            sockets: HashMap::new(),
            read_buf: vec![0; READ_BUF],
        })
    }

    /// Takes the UDP socket (see [`super::Driver::set_udp`]) and watches it for reads.
    pub(crate) fn set_udp(&mut self, socket: std::net::UdpSocket) -> io::Result<()> {
        let udp = Udp::new(socket)?;
        self.poll.registry().register(
            &mut SourceFd(&udp.socket.as_raw_fd()),
            UDP,
            Interest::READABLE,
        )?;
        self.core.udp = Some(udp);
        Ok(())
    }

    /// Reads a turn's worth of datagrams; with more waiting, asks for another readiness
    /// event (edge-triggered: the re-registration reports the socket readable again).
    /// With `error` (EPOLLERR: the error queue holds ICMP errors about datagrams we sent),
    /// reads a bounded number of them first; more left also asks for another event.
    fn udp_readable(&mut self, error: bool, now: Time) {
        let more_errors = error && self.core.drain_udp_errors(now);
        if self.core.drain_datagrams(MAX_DATAGRAMS_PER_TURN, now) || more_errors {
            if let Some(udp) = self.core.udp.as_ref() {
                let _ = self.poll.registry().reregister(
                    &mut SourceFd(&udp.socket.as_raw_fd()),
                    UDP,
                    Interest::READABLE,
                );
            }
        }
    }

    fn accept(&mut self, now: Time) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    if !self.core.utp.accepts_tcp() {
                        continue; // `--transport utp`: dropped, which closes it.
                    }
                    let addr = crate::net_addr::unmap(addr);
                    let Some(conn) = self.core.proto.accept(addr, now) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    self.register(stream, conn, false, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Out of descriptors and the like: try again a little later (the backlog
                // keeps what waits), whether or not another connection arrives meanwhile.
                Err(_) => {
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn readable(&mut self, conn: ConnId, now: Time) {
        for _ in 0..MAX_READS_PER_EVENT {
            if !self.core.proto.wants_recv(conn) {
                // Stopped for good: what arrives stays in the kernel's buffer.
                return self.core.proto.recv_drained(conn);
            }
            let Some(socket) = self.sockets.get_mut(&conn) else {
                return;
            };
            let read = match self.core.proto.recv_buffer(conn) {
                // Straight into the connection's receive buffer: no copy on the loop.
                Some(buf) => read_into(&socket.stream, buf),
                None => socket.stream.read(&mut self.read_buf).map(|n| (n, false)),
            };
            match read {
                Ok((0, _)) => return self.socket_closed(conn, now),
                Ok((n, true)) => self.core.proto.handle_recv_in_place(conn, n, now),
                Ok((n, false)) => self.core.proto.handle_recv(conn, &self.read_buf[..n], now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return self.core.proto.recv_drained(conn);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.socket_closed(conn, now),
            }
        }
        // More may be waiting; mio is edge-triggered, so read again on the next turn.
        let token = Token(conn.to_u64() as usize);
        if let Some(socket) = self.sockets.get_mut(&conn) {
            let _ = self.poll.registry().reregister(
                &mut socket.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            );
        }
    }

    fn writable(&mut self, conn: ConnId, now: Time) {
        let Some(socket) = self.sockets.get_mut(&conn) else {
            return;
        };
        if socket.connecting {
            match socket.stream.take_error() {
                Ok(None) if socket.stream.peer_addr().is_ok() => {
                    socket.connecting = false;
                    let _ = socket.stream.set_nodelay(true);
                    self.core.proto.handle_connected(conn, now);
                }
                Ok(None) => return, // not connected yet
                _ => return self.socket_closed(conn, now),
            }
        }
        self.flush(conn, now);
    }

    /// Writes as much of the connection's send buffer as the socket takes.
    fn flush(&mut self, conn: ConnId, now: Time) {
        loop {
            let Some(socket) = self.sockets.get_mut(&conn) else {
                return;
            };
            if socket.connecting {
                return;
            }
            let chunks = self.core.proto.send_chunks(conn);
            if chunks.is_empty() {
                return;
            }
            let slices: Vec<IoSlice<'_>> =
                chunks.iter().take(64).map(|c| IoSlice::new(c)).collect();
            match socket.stream.write_vectored(&slices) {
                Ok(0) => return self.socket_closed(conn, now),
                Ok(n) => {
                    drop(slices);
                    self.core.proto.handle_sent(conn, n, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.socket_closed(conn, now),
            }
        }
    }

    fn socket_closed(&mut self, conn: ConnId, now: Time) {
        if let Some(mut socket) = self.sockets.remove(&conn) {
            let _ = self.poll.registry().deregister(&mut socket.stream);
        }
        self.core.proto.handle_closed(conn, now);
    }

    /// Moves a connection the session handed off to the loop that owns its torrent. Nothing
    /// of it is in flight here: reads and writes are synchronous.
    fn hand_off(&mut self, conn: ConnId) {
        let Some(mut socket) = self.sockets.remove(&conn) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut socket.stream);
        let handoff: Option<HandOff> = self.core.proto.take_handoff(conn);
        if let Some(handoff) = handoff {
            let stream = std::net::TcpStream::from(OwnedFd::from(socket.stream));
            self.core.post.forward(stream, handoff);
        }
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<IpAddr>, now: Time) {
        match super::net::connect_nonblocking(addr, from) {
            Ok(stream) => self.register(TcpStream::from_std(stream), conn, true, now),
            Err(_) => self.core.proto.handle_closed(conn, now),
        }
    }

    /// Watches `stream` for `conn`; a socket the poller refuses is reported closed.
    fn register(&mut self, mut stream: TcpStream, conn: ConnId, connecting: bool, now: Time) {
        let token = Token(conn.to_u64() as usize);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, token, interest)
            .is_err()
        {
            return self.core.proto.handle_closed(conn, now);
        }
        self.sockets.insert(conn, Socket { stream, connecting });
    }
}

impl<P: Protocol> LoopIo<P> for EpollDriver<P> {
    type Completion = Ready;

    /// A readable eventfd stays readable until read.
    const CLEAR_EVENTFD: bool = true;

    fn core(&mut self) -> &mut LoopCore<P> {
        &mut self.core
    }

    fn batch(&mut self) -> &mut Vec<Ready> {
        &mut self.ready
    }

    fn act(&mut self, action: Action, now: Time) {
        match action {
            Action::Connect { conn, addr, from } => self.connect(conn, addr, from, now),
            Action::Send { conn } => self.flush(conn, now),
            Action::Close { conn } => {
                if let Some(mut socket) = self.sockets.remove(&conn) {
                    let _ = self.poll.registry().deregister(&mut socket.stream);
                }
            }
            Action::HandOff { conn, .. } => self.hand_off(conn),
            Action::Disk(op) => self.core.disk.submit(op),
        }
    }

    fn adopt(&mut self, stream: std::net::TcpStream, conn: ConnId, now: Time) {
        let _ = stream.set_nonblocking(true);
        self.register(TcpStream::from_std(stream), conn, false, now);
    }

    /// Waits at most `wait` for readiness (less when a failed accept is due again, which is
    /// then reported as the listener being readable).
    fn wait(&mut self, mut wait: Duration, out: &mut Vec<Ready>) -> io::Result<bool> {
        if let Some(at) = self.accept_retry {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        }
        if self.accept_retry.is_some_and(|at| at <= Instant::now()) {
            self.accept_retry = None;
            out.push(Ready {
                token: LISTENER,
                readable: true,
                writable: false,
                error: false,
            });
        }
        out.extend(self.events.iter().map(|e| Ready {
            token: e.token(),
            readable: e.is_readable() || e.is_read_closed(),
            writable: e.is_writable(),
            error: e.is_error(),
        }));
        Ok(true)
    }

    fn complete(&mut self, ready: Ready, now: Time) {
        match ready.token {
            LISTENER => self.accept(now),
            // Consumes the shared eventfd, then drains both queues behind it.
            DISK => self.wake(now),
            UDP => self.udp_readable(ready.error, now),
            Token(t) => {
                let conn = ConnId::from_u64(t as u64);
                if ready.error {
                    return self.socket_closed(conn, now);
                }
                if ready.writable {
                    self.writable(conn, now);
                }
                if ready.readable {
                    self.readable(conn, now);
                }
            }
        }
    }
}

/// One `read` from `stream` into the spare capacity of `buf`, whose length grows by what
/// arrived. Returns that count, and `true`: the bytes are in `buf`, not the driver's buffer.
fn read_into(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<(usize, bool)> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is writable memory of `spare.len()` bytes that `buf` owns and nothing
    // else borrows while the call runs; `read` writes at most that many bytes into it.
    let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity (n <= its
    // length, as `read` never returns more than it was given).
    unsafe { buf.set_len(buf.len() + n) };
    Ok((n, true))
}
