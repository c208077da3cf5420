//! The epoll driver: one event loop over mio that runs a [`Session`] against real sockets,
//! the disk pool and the monotonic clock. It is the fallback where io_uring is refused, and
//! it follows the same contract the io_uring driver does: after every input, drain actions,
//! then events, then arm the session's timer.
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

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::disk::DiskBridge;
use super::shard::{Mailbox, PostOffice, Run};
use super::Protocol;
use crate::core::api::{Action, ConnId, DiskOp, Event, TorrentId};
use crate::core::session::HandOff;
use crate::core::{Session, Time};
use crate::storage::{DiskPool, Storage};

const LISTENER: Token = Token(usize::MAX);
const DISK: Token = Token(usize::MAX - 1);

/// Bytes read from a socket per `read` call. 256 KiB lets one call drain a loopback burst
/// of 16 blocks; the session copies what it needs, so the buffer is reused.
const READ_BUF: usize = 256 * 1024;

/// Disk completions handled per loop turn, so a burst of finished reads cannot starve the
/// sockets.
const MAX_COMPLETIONS_PER_TURN: usize = 1024;

/// Socket reads per connection per readiness event before moving on (fairness).
const MAX_READS_PER_EVENT: usize = 16;

struct Socket {
    stream: TcpStream,
    connecting: bool,
}

/// A session, its sockets, its torrents' storage and the disk pool, driven by epoll.
pub struct EpollDriver<P: Protocol = Session> {
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    pub(crate) session: P,
    epoch: Instant,
    sockets: HashMap<ConnId, Socket>,
    disk: DiskBridge,
    post: PostOffice,
    read_buf: Vec<u8>,
    stats: super::LoopStats,
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
        let disk = DiskBridge::new(disk)?;
        poll.registry().register(
            &mut SourceFd(&disk.eventfd().as_raw_fd()),
            DISK,
            Interest::READABLE,
        )?;
        let post = PostOffice::new(&disk);
        let mut driver = EpollDriver {
            poll,
            events: Events::with_capacity(1024),
            listener,
            session,
            epoch,
            sockets: HashMap::new(),
            disk,
            post,
            read_buf: vec![0; READ_BUF],
            stats: super::LoopStats::default(),
        };
        if let Some(port) = driver.local_addr().map(|a| a.port()) {
            driver.session.set_listen_port(port);
        }
        Ok(driver)
    }

    /// The address we listen on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The session's clock reading now.
    pub fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// The session, to add torrents and peers or read statistics.
    pub fn session(&mut self) -> &mut P {
        &mut self.session
    }

    /// Registers the storage that serves a torrent's disk operations.
    pub fn attach_storage(&mut self, torrent: TorrentId, storage: Arc<Storage>) {
        self.disk.attach(torrent, storage);
    }

    /// The loop's counters.
    pub fn loop_stats(&self) -> super::LoopStats {
        super::LoopStats {
            disk_in_flight: self.disk.in_flight(),
            ..self.stats
        }
    }

    /// Where other loops post this one's mail.
    pub fn mailbox(&self) -> Mailbox {
        self.post.mailbox()
    }

    /// Gives the loop every loop's mailbox, by shard.
    pub fn link(&mut self, shards: Arc<[Mailbox]>) {
        self.post.link(shards);
    }

    /// Closures received by mail since the last call, for the caller to run.
    pub fn take_runs(&mut self) -> Vec<Run> {
        self.post.take_runs()
    }

    /// Runs one loop turn, waiting at most `max_wait`, and hands every session event to
    /// `on_event`.
    pub fn turn(&mut self, max_wait: Duration, on_event: &mut dyn FnMut(&Event)) -> io::Result<()> {
        self.process(on_event);
        let now = self.now();
        let mut wait = self
            .session
            .poll_timeout()
            .map_or(max_wait, |t| t.saturating_since(now).min(max_wait));
        if self.disk.backlog || self.post.backlog {
            wait = Duration::ZERO;
            self.disk_done(now);
            self.mail(now);
            self.process(on_event);
        }
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(Token, bool, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed(),
                    e.is_writable(),
                    e.is_error(),
                )
            })
            .collect();
        self.stats.turns += 1;
        self.stats.completions += ready.len() as u64;
        for (token, readable, writable, error) in ready {
            let now = self.now();
            match token {
                LISTENER => self.accept(now),
                DISK => {
                    // Consumes the shared eventfd, then drains both queues behind it.
                    self.disk_done(now);
                    self.mail(now);
                }
                Token(t) => {
                    let conn = ConnId::from_u64(t as u64);
                    if error {
                        self.socket_closed(conn, now);
                        continue;
                    }
                    if writable {
                        self.writable(conn, now);
                    }
                    if readable {
                        self.readable(conn, now);
                    }
                }
            }
            self.process(on_event);
        }
        let now = self.now();
        self.session.handle_timeout(now);
        self.process(on_event);
        Ok(())
    }

    fn accept(&mut self, now: Time) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    let Some(conn) = self.session.accept(addr, now) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    self.register(stream, conn, false, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Out of descriptors and the like: try again on the next readiness event.
                Err(_) => return,
            }
        }
    }

    fn readable(&mut self, conn: ConnId, now: Time) {
        for _ in 0..MAX_READS_PER_EVENT {
            let Some(socket) = self.sockets.get_mut(&conn) else {
                return;
            };
            match socket.stream.read(&mut self.read_buf) {
                Ok(0) => return self.socket_closed(conn, now),
                Ok(n) => self.session.handle_recv(conn, &self.read_buf[..n], now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
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
                    self.session.handle_connected(conn, now);
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
            let chunks = self.session.send_chunks(conn);
            if chunks.is_empty() {
                return;
            }
            let slices: Vec<IoSlice<'_>> =
                chunks.iter().take(64).map(|c| IoSlice::new(c)).collect();
            match socket.stream.write_vectored(&slices) {
                Ok(0) => return self.socket_closed(conn, now),
                Ok(n) => {
                    drop(slices);
                    self.session.handle_sent(conn, n, now);
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
        self.session.handle_closed(conn, now);
    }

    /// Adopts connections other loops handed over; closures wait for [`Self::take_runs`].
    fn mail(&mut self, now: Time) {
        let mut adopted = Vec::new();
        self.post
            .collect(|stream, handoff| adopted.push((stream, handoff)));
        for (stream, handoff) in adopted {
            let Some(conn) = self.session.adopt(handoff, now) else {
                continue;
            };
            let _ = stream.set_nonblocking(true);
            self.register(TcpStream::from_std(stream), conn, false, now);
        }
    }

    /// Moves a connection the session handed off to the loop that owns its torrent. Nothing
    /// of it is in flight here: reads and writes are synchronous.
    fn hand_off(&mut self, conn: ConnId) {
        let Some(mut socket) = self.sockets.remove(&conn) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut socket.stream);
        let handoff: Option<HandOff> = self.session.take_handoff(conn);
        if let Some(handoff) = handoff {
            let stream = std::net::TcpStream::from(OwnedFd::from(socket.stream));
            self.post.forward(stream, handoff);
        }
    }

    fn disk_done(&mut self, now: Time) {
        let session = &mut self.session;
        self.disk.complete(MAX_COMPLETIONS_PER_TURN, true, |done| {
            session.handle_disk(done, now)
        });
    }

    /// Carries out the session's actions and hands its events out.
    fn process(&mut self, on_event: &mut dyn FnMut(&Event)) {
        loop {
            let mut any = false;
            while let Some(action) = self.session.poll_action() {
                any = true;
                let now = self.now();
                match action {
                    Action::Connect { conn, addr, from } => self.connect(conn, addr, from, now),
                    Action::Send { conn } => self.flush(conn, now),
                    Action::Close { conn } => {
                        if let Some(mut socket) = self.sockets.remove(&conn) {
                            let _ = self.poll.registry().deregister(&mut socket.stream);
                        }
                    }
                    Action::HandOff { conn, .. } => self.hand_off(conn),
                    Action::Disk(op) => self.submit(op),
                }
            }
            while let Some(event) = self.session.poll_event() {
                any = true;
                on_event(&event);
            }
            if !any {
                return;
            }
        }
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr, from: Option<IpAddr>, now: Time) {
        match super::net::connect_nonblocking(addr, from) {
            Ok(stream) => self.register(TcpStream::from_std(stream), conn, true, now),
            Err(_) => self.session.handle_closed(conn, now),
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
            return self.session.handle_closed(conn, now);
        }
        self.sockets.insert(conn, Socket { stream, connecting });
    }

    fn submit(&mut self, op: DiskOp) {
        self.disk.submit(op);
    }
}
