//! What an event loop is whatever its backend: the [`Protocol`] it runs, the clock, the disk
//! pool's [`DiskBridge`], the [`PostOffice`] for mail, the counters, and the turn itself.
//!
//! Both real drivers embed a [`LoopCore`] and implement [`LoopIo`], the part that differs:
//! how a socket action is carried out, how the loop waits for the kernel, and what one
//! completion (io_uring) or readiness event (epoll) means. The turn, written once in
//! [`LoopIo::run_turn`], follows the protocol's contract (see [`super::protocol`]):
//!
//! 1. carry out what earlier input left: drain [`Protocol::poll_action`], then
//!    [`Protocol::poll_event`], until both are empty ([`LoopIo::process`]);
//! 2. wait no longer than [`Protocol::poll_timeout`] (not at all while disk completions or
//!    mail are left over from a capped drain, which are taken first);
//! 3. handle each completion, draining actions and events after each;
//! 4. run the protocol's timers and drain once more.
//!
//! Everything here is generic and static: each backend gets its own copy of the turn, with no
//! dynamic dispatch or allocation per completion.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::disk::DiskBridge;
use super::shard::PostOffice;
use super::udp_batch;
use super::utp_link::UtpLink;
use super::{LoopStats, Protocol};
use crate::core::api::{Action, ConnId, Event};
use crate::core::Time;
use crate::dht::Transmit;
use crate::storage::DiskPool;

/// Disk completions handled per loop turn, so a burst of finished reads cannot starve the
/// sockets (or the protocol's timers).
const MAX_DISK_PER_TURN: usize = 1024;

/// Datagrams read from the UDP socket per readiness event (epoll) or receive completion
/// (io_uring), so a flood cannot starve the TCP connections: the rest wait in the kernel's
/// buffer (which drops what overflows) for the next turn.
pub(crate) const MAX_DATAGRAMS_PER_TURN: usize = 128;

/// The largest datagram taken: KRPC messages fit in one MTU, and so do uTP's. Longer ones
/// are dropped, as are ones that may have been cut short.
pub(crate) const MAX_DATAGRAM: usize = 4096;

/// The receive buffer: room for the largest UDP datagram, or a run of datagrams the kernel
/// coalesced (`UDP_GRO`, see [`super::udp_batch`]), each at most [`MAX_DATAGRAM`] long.
pub(crate) const DATAGRAM_BUF: usize = 65536;

/// The loop's UDP socket (only loop 0 has one: with `SO_REUSEPORT` the kernel would scatter
/// datagrams across sockets, and the DHT node lives on one session).
pub(crate) struct Udp {
    pub(crate) socket: UdpSocket,
    /// Whether the socket is IPv6 (dual-stack): IPv4 destinations are sent mapped.
    v6: bool,
    buf: Box<[u8]>,
    /// Whether runs of datagrams to one peer go out in one GSO send (until the kernel
    /// refuses one).
    gso: bool,
    /// uTP's datagrams of one pump, gathered into GSO runs (kept, so a pump does not
    /// allocate).
    pub(crate) out: Vec<crate::utp::Transmit>,
    /// A send reported a queued error: the error queue is to be read.
    errors_pending: bool,
    /// Tests: the error every GSO send fails with, as on a kernel or device without GSO
    /// (this kernel accepts it, so the fallback would never run otherwise).
    #[cfg(test)]
    refuse_gso: Option<i32>,
}

impl Udp {
    pub(crate) fn new(socket: UdpSocket) -> io::Result<Udp> {
        socket.set_nonblocking(true)?;
        let v6 = socket.local_addr()?.is_ipv6();
        // Where the kernel cannot coalesce, every receive is one datagram, as before.
        udp_batch::enable_gro(socket.as_raw_fd());
        // ICMP errors about our datagrams come to the error queue (`drain_udp_errors`).
        udp_batch::enable_recverr(socket.as_raw_fd(), v6);
        // Don't-fragment on every datagram: uTP's path MTU discovery sizes its packets.
        udp_batch::enable_pmtu_probe(socket.as_raw_fd(), v6);
        Ok(Udp {
            socket,
            v6,
            buf: vec![0; DATAGRAM_BUF].into_boxed_slice(),
            gso: true,
            out: Vec::new(),
            errors_pending: false,
            #[cfg(test)]
            refuse_gso: None,
        })
    }

    /// One `sendmsg` of `parts` to `to` (already as this socket sends to it; see
    /// [`udp_batch::send_segments`]). A send that only reported an earlier datagram's ICMP
    /// error ([`udp_batch::pending_icmp`]) is made again, once, and the error queue marked
    /// to be read.
    /// Whether runs still go out as GSO sends.
    #[cfg(test)]
    pub(crate) fn gso(&self) -> bool {
        self.gso
    }

    fn send_parts(
        &mut self,
        to: SocketAddr,
        parts: &[&[u8]],
        seg: Option<u16>,
    ) -> io::Result<usize> {
        #[cfg(test)]
        if let (Some(_), Some(errno)) = (seg, self.refuse_gso) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let fd = self.socket.as_raw_fd();
        let mut r = udp_batch::send_segments(fd, to, parts, seg);
        if r.as_ref().is_err_and(udp_batch::pending_icmp) {
            self.errors_pending = true;
            r = udp_batch::send_segments(fd, to, parts, seg);
        }
        if r.as_ref().is_err_and(too_big) {
            // Larger than the interface: the kernel queued the MTU for uTP to read.
            self.errors_pending = true;
        }
        r
    }

    /// Sends one datagram without blocking; whether the kernel took it.
    pub(crate) fn send_one(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        self.send_single(to, payload).is_ok()
    }

    fn send_single(&mut self, to: SocketAddr, payload: &[u8]) -> io::Result<usize> {
        match self.dest(to) {
            Some(to) => self.send_parts(to, &[payload], None),
            None => Err(io::ErrorKind::InvalidInput.into()),
        }
    }

    /// Sends uTP's datagrams: each run to one peer of equal sizes ([`udp_batch::run_len`])
    /// in one GSO send while the kernel allows. A refused run ([`udp_batch::gso_unsupported`])
    /// goes datagram by datagram, and GSO is switched off for the socket unless one of
    /// them was itself too big (`EMSGSIZE`: a path MTU probe larger than the interface,
    /// which the kernel refuses as a GSO segment with `EINVAL`). Returns how many datagrams
    /// went out and how many the kernel refused.
    pub(crate) fn send_batch(&mut self, batch: &[crate::utp::Transmit]) -> (u64, u64) {
        let (mut sent, mut unsent) = (0, 0);
        let mut i = 0;
        while let Some(rest) = batch.get(i..) {
            if rest.is_empty() {
                break;
            }
            let n = udp_batch::run_len(rest, |t| (t.to, t.payload.len()));
            let run = &rest[..n];
            i += n;
            let mut refused = false;
            if let ([first, _, ..], true) = (run, self.gso) {
                if let Some(to) = self.dest(first.to) {
                    let mut parts = [&[][..]; udp_batch::MAX_SEGMENTS];
                    for (p, t) in parts.iter_mut().zip(run) {
                        *p = &t.payload;
                    }
                    let seg = u16::try_from(first.payload.len()).ok();
                    match self.send_parts(to, &parts[..n], seg) {
                        Ok(_) => {
                            sent += n as u64;
                            continue;
                        }
                        Err(e) if udp_batch::gso_unsupported(&e) => refused = true,
                        Err(_) => {
                            unsent += n as u64;
                            continue;
                        }
                    }
                }
            }
            let mut any_too_big = false;
            for t in run {
                match self.send_single(t.to, &t.payload) {
                    Ok(_) => sent += 1,
                    Err(e) => {
                        any_too_big |= too_big(&e);
                        unsent += 1;
                    }
                }
            }
            if refused && !any_too_big {
                self.gso = false;
            }
        }
        (sent, unsent)
    }

    /// `to` as this socket sends to it: IPv4 mapped on a dual-stack socket; `None` for an
    /// IPv6 address from an IPv4 socket.
    fn dest(&self, to: SocketAddr) -> Option<SocketAddr> {
        match (to, self.v6) {
            (SocketAddr::V4(a), true) => {
                Some(SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()))
            }
            (SocketAddr::V6(a), false) => a
                .ip()
                .to_ipv4_mapped()
                .map(|v4| SocketAddr::new(v4.into(), a.port())),
            (to, _) => Some(to),
        }
    }
}

/// Whether a send failed for its size (larger than the interface, don't-fragment set).
fn too_big(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMSGSIZE)
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for IPv4 senders) turned into the plain IPv4 one.
pub(crate) fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The state every event loop has, whichever backend runs it.
pub(crate) struct LoopCore<P: Protocol> {
    /// The state machine the loop runs: a session, or `swarm-load`'s peers.
    pub(crate) proto: P,
    /// Time zero of the protocol's clock.
    epoch: Instant,
    /// The listener's address, read once when the loop is made.
    local_addr: Option<SocketAddr>,
    pub(crate) disk: DiskBridge,
    pub(crate) post: PostOffice<P>,
    pub(crate) stats: LoopStats,
    /// The UDP socket, on the loop that owns it.
    pub(crate) udp: Option<Udp>,
    /// uTP: the endpoint (on the loop with the UDP socket) and the uTP connections this
    /// loop's protocol holds (`utp_link.rs`).
    pub(crate) utp: UtpLink,
}

impl<P: Protocol> LoopCore<P> {
    /// The core of a loop running `proto`, listening on `local_addr` if given (the protocol
    /// is told the port), with disk jobs going to `disk`.
    pub(crate) fn new(
        mut proto: P,
        local_addr: Option<SocketAddr>,
        disk: Arc<DiskPool>,
        epoch: Instant,
    ) -> io::Result<LoopCore<P>> {
        let disk = DiskBridge::new(disk)?;
        let post = PostOffice::new(&disk);
        if let Some(addr) = local_addr {
            proto.set_listen_port(addr.port());
        }
        Ok(LoopCore {
            proto,
            epoch,
            local_addr,
            disk,
            post,
            stats: LoopStats::default(),
            udp: None,
            utp: UtpLink::default(),
        })
    }

    /// The UDP socket's address, if this loop has one.
    pub(crate) fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|u| u.socket.local_addr().ok())
    }

    /// Hands one datagram on: a bencoded dictionary (first byte `d`) goes to
    /// [`Protocol::handle_datagram`], a uTP packet ([`crate::utp::packet::is_utp`]) to the
    /// endpoint where uTP runs; anything else is counted and dropped, as is one longer than
    /// [`MAX_DATAGRAM`] or one that may have been cut short.
    pub(crate) fn deliver_datagram(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        truncated: bool,
        now: Time,
    ) {
        self.stats.datagrams_received += 1;
        if truncated || data.len() > MAX_DATAGRAM {
            self.stats.datagrams_dropped += 1;
            return;
        }
        if data.first() == Some(&b'd') {
            self.proto.handle_datagram(unmap(from), data, now);
        } else if !(crate::utp::packet::is_utp(data) && self.utp_datagram(from, data, now)) {
            self.stats.datagrams_dropped += 1;
        }
    }

    /// Hands on what one receive read: the datagram, or each of a run the kernel coalesced
    /// (`segment`, see [`udp_batch::segments`]).
    pub(crate) fn deliver_datagrams(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        segment: Option<usize>,
        truncated: bool,
        now: Time,
    ) {
        for d in udp_batch::segments(data, segment) {
            self.deliver_datagram(from, d, truncated, now);
        }
    }

    /// Reads up to `max` receives (each a datagram or a coalesced run) from the socket
    /// without blocking and delivers them. Returns whether the limit stopped it (more may be
    /// waiting).
    pub(crate) fn drain_datagrams(&mut self, max: usize, now: Time) -> bool {
        for _ in 0..max {
            let Some(udp) = self.udp.as_mut() else {
                return false;
            };
            match udp_batch::recv(udp.socket.as_raw_fd(), &mut udp.buf) {
                Ok(r) => {
                    // Moved out and back so the protocol can be borrowed meanwhile.
                    let buf = std::mem::take(&mut udp.buf);
                    if let (Some(from), Some(data)) = (r.from, buf.get(..r.len)) {
                        self.deliver_datagrams(from, data, r.segment, r.truncated, now);
                    }
                    if let Some(udp) = self.udp.as_mut() {
                        udp.buf = buf;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A queued ICMP error (port unreachable) surfaces here once: read the queue;
                // the next datagram is fine.
                Err(_) => {
                    self.drain_udp_errors(now);
                }
            }
        }
        true
    }

    /// Reads up to [`udp_batch::MAX_ERRORS_PER_DRAIN`] entries of the UDP socket's error
    /// queue (ICMP errors about datagrams we sent) and hands what they mean to uTP; the DHT
    /// is not told (its own timeouts retire a dead node). Returns whether the limit stopped
    /// it (more may be queued: the next error reported reads them).
    pub(crate) fn drain_udp_errors(&mut self, now: Time) -> bool {
        for _ in 0..udp_batch::MAX_ERRORS_PER_DRAIN {
            let Some(udp) = self.udp.as_ref() else {
                return false;
            };
            match udp_batch::recv_error(udp.socket.as_raw_fd()) {
                Ok(e) => {
                    self.stats.udp_errors += 1;
                    if let (Some(to), Some(pe)) = (e.to, udp_batch::path_error(&e)) {
                        self.utp_path_error(unmap(to), pe, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                // Empty (or no error queue at all).
                Err(_) => return false,
            }
        }
        true
    }

    /// Sends uTP's datagrams ([`Udp::send_batch`]), counted as [`Self::send_to`] does.
    pub(crate) fn send_transmits(&mut self, batch: &mut Vec<crate::utp::Transmit>) {
        match self.udp.as_mut() {
            Some(udp) => {
                let (sent, unsent) = udp.send_batch(batch);
                self.stats.datagrams_sent += sent;
                self.stats.datagrams_unsent += unsent;
                self.after_send();
            }
            None => self.stats.datagrams_unsent += batch.len() as u64,
        }
        batch.clear();
    }

    /// Sends one datagram without blocking; a full socket buffer or an unreachable address
    /// drops it (the DHT retransmits what matters), counted.
    pub(crate) fn send_datagram(&mut self, t: Transmit) {
        self.send_to(t.to, &t.payload);
    }

    /// Sends one datagram on the UDP socket without blocking (see [`Self::send_datagram`]).
    pub(crate) fn send_to(&mut self, to: SocketAddr, payload: &[u8]) {
        let sent = self.udp.as_mut().is_some_and(|u| u.send_one(to, payload));
        if sent {
            self.stats.datagrams_sent += 1;
        } else {
            self.stats.datagrams_unsent += 1;
        }
        self.after_send();
    }

    /// Reads the error queue if a send said it holds something.
    fn after_send(&mut self) {
        if self
            .udp
            .as_mut()
            .is_some_and(|u| std::mem::take(&mut u.errors_pending))
        {
            let now = self.now();
            self.drain_udp_errors(now);
        }
    }

    /// The address the loop listens on.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The protocol's clock reading now.
    pub(crate) fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// The loop's counters.
    pub(crate) fn loop_stats(&self) -> LoopStats {
        LoopStats {
            disk_in_flight: self.disk.in_flight(),
            utp: self.utp.stats(),
            ..self.stats
        }
    }

    /// The earlier of the protocol's and the uTP endpoint's deadlines.
    fn poll_timeout(&self) -> Option<Time> {
        match (self.proto.poll_timeout(), self.utp.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The backend-specific half of an event loop; the turn is written once, here, over it.
pub(crate) trait LoopIo<P: Protocol>: Sized {
    /// What one wait reports per completion or readiness event, copied out of the kernel's
    /// queue so the backend can be borrowed mutably while handling it.
    type Completion: Copy;

    /// Whether the loop reads the shared eventfd itself before draining disk completions
    /// and mail (epoll); io_uring's armed read has already consumed it.
    const CLEAR_EVENTFD: bool;

    /// The shared half.
    fn core(&mut self) -> &mut LoopCore<P>;

    /// Where completions are gathered between waits (kept, so a turn does not allocate).
    fn batch(&mut self) -> &mut Vec<Self::Completion>;

    /// Called first in every turn.
    fn begin_turn(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Carries out one of the protocol's actions.
    fn act(&mut self, action: Action, now: Time);

    /// Runs `stream`, which another loop handed over and the protocol adopted as `conn`.
    fn adopt(&mut self, stream: TcpStream, conn: ConnId, now: Time);

    /// Waits at most `wait` for the kernel and appends what it reports to `out`. `Ok(false)`:
    /// the wait was interrupted and the turn ends without handling anything.
    fn wait(&mut self, wait: Duration, out: &mut Vec<Self::Completion>) -> io::Result<bool>;

    /// Handles one completion or readiness event.
    fn complete(&mut self, completion: Self::Completion, now: Time);

    /// Drains what the shared eventfd signals: up to a turn's worth of disk completions,
    /// then mail (connections to adopt; closures wait for the driver to run them).
    fn wake(&mut self, now: Time) {
        let core = self.core();
        let proto = &mut core.proto;
        core.disk
            .complete(MAX_DISK_PER_TURN, Self::CLEAR_EVENTFD, |done| {
                proto.handle_disk(done, now)
            });
        let mut adopted = Vec::new();
        let utp = &mut core.utp;
        core.post.collect(
            |stream, handoff| adopted.push((stream, handoff)),
            |mail| utp.receive(mail),
        );
        for (stream, handoff) in adopted {
            if let Some(conn) = self.core().proto.adopt(handoff, now) {
                self.adopt(stream, conn, now);
            }
        }
    }

    /// Carries out the protocol's actions and hands its events to `on_event`, until it has
    /// neither.
    fn process(&mut self, on_event: &mut dyn FnMut(&Event)) {
        loop {
            let mut any = false;
            while let Some(action) = self.core().proto.poll_action() {
                any = true;
                let now = self.core().now();
                if let Some(action) = self.core().utp_action(action, now) {
                    self.act(action, now);
                }
            }
            let now = self.core().now();
            any |= self.core().utp_pump(now);
            while let Some(action) = self.core().utp.fallback.pop_front() {
                any = true;
                self.act(action, now);
            }
            while let Some(datagram) = self.core().proto.poll_datagram() {
                any = true;
                self.core().send_datagram(datagram);
            }
            while let Some(event) = self.core().proto.poll_event() {
                any = true;
                on_event(&event);
            }
            if !any {
                // The disk jobs these actions queued, as one batch.
                self.core().disk.flush();
                return;
            }
        }
    }

    /// One loop turn, waiting at most `max_wait` (see the module documentation).
    fn run_turn(&mut self, max_wait: Duration, on_event: &mut dyn FnMut(&Event)) -> io::Result<()> {
        self.begin_turn()?;
        self.process(on_event);
        let core = self.core();
        let now = core.now();
        let mut wait = core
            .poll_timeout()
            .map_or(max_wait, |t| t.saturating_since(now).min(max_wait));
        if core.disk.backlog || core.post.backlog {
            wait = Duration::ZERO;
            self.wake(now);
            self.process(on_event);
        }
        let mut batch = std::mem::take(self.batch());
        let waited = self.wait(wait, &mut batch);
        if let Ok(true) = waited {
            let stats = &mut self.core().stats;
            stats.turns += 1;
            stats.completions += batch.len() as u64;
            for &completion in &batch {
                let now = self.core().now();
                self.complete(completion, now);
                self.process(on_event);
            }
        }
        batch.clear();
        *self.batch() = batch;
        if !waited? {
            return Ok(());
        }
        let now = self.core().now();
        self.core().proto.handle_timeout(now);
        self.core().utp_timeout(now);
        self.process(on_event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utp::{Endpoint, EndpointConfig, Transmit as UtpTransmit, UtpEvent};

    /// Reads every datagram waiting on `udp`: (sender, datagram, whether its receive held
    /// more than one).
    fn receive(udp: &mut Udp) -> Vec<(SocketAddr, Vec<u8>, bool)> {
        let mut out = Vec::new();
        loop {
            match udp_batch::recv(udp.socket.as_raw_fd(), &mut udp.buf) {
                Ok(r) => {
                    let (Some(from), Some(data)) = (r.from, udp.buf.get(..r.len)) else {
                        continue;
                    };
                    let parts: Vec<&[u8]> = udp_batch::segments(data, r.segment).collect();
                    let many = parts.len() > 1;
                    out.extend(parts.into_iter().map(|d| (from, d.to_vec(), many)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error reported once (none expected here): the next read is fine.
                Err(_) => {}
            }
        }
    }

    fn udp() -> Udp {
        Udp::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap()
    }

    /// A kernel (or device) that refuses GSO, as some do with `EIO`: the first run it
    /// refuses switches GSO off for the socket, that run and every later datagram go one
    /// `sendmsg` each (each arrives as a receive of its own), and a uTP transfer over real
    /// loopback sockets completes byte-exact.
    #[test]
    fn refused_gso_falls_back_to_one_datagram_each() {
        let (mut ua, mut ub) = (udp(), udp());
        ua.refuse_gso = Some(libc::EIO);
        let addr_a = ua.socket.local_addr().unwrap();
        let addr_b = ub.socket.local_addr().unwrap();
        let mut a = Endpoint::new(EndpointConfig::default(), 1);
        let mut b = Endpoint::new(EndpointConfig::default(), 2);
        let epoch = Instant::now();
        let now = || Time::from_micros(epoch.elapsed().as_micros() as u64);
        let ha = a.connect(addr_b, now()).unwrap();
        let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (mut written, mut got) = (0, Vec::new());
        let mut hb = None;
        let (mut a_sent, mut a_unsent, mut runs, mut b_received, mut b_coalesced) = (0, 0, 0, 0, 0);
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < data.len() && Instant::now() < deadline {
            let t = now();
            if let Some(rest) = data.get(written..) {
                written += a.write(ha, rest, t);
            }
            let batch: Vec<UtpTransmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
            runs += usize::from(
                batch.len() > 1 && udp_batch::run_len(&batch, |x| (x.to, x.payload.len())) > 1,
            );
            let (s, u) = ua.send_batch(&batch);
            (a_sent, a_unsent) = (a_sent + s, a_unsent + u);
            let batch: Vec<UtpTransmit> = std::iter::from_fn(|| b.poll_transmit()).collect();
            ub.send_batch(&batch);
            for (from, d, many) in receive(&mut ub) {
                b_received += 1;
                b_coalesced += u64::from(many);
                b.handle_datagram(from, &d, now());
            }
            for (from, d, _) in receive(&mut ua) {
                a.handle_datagram(from, &d, now());
            }
            let t = now();
            a.handle_timeout(t);
            b.handle_timeout(t);
            while let Some(e) = b.poll_event() {
                if let UtpEvent::Incoming(h, from) = e {
                    assert_eq!(from, addr_a);
                    hb = Some(h);
                }
            }
            while a.poll_event().is_some() {}
            if let Some(h) = hb {
                loop {
                    let n = b.read(h, &mut buf, now());
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(got == data, "{} of {} bytes arrived", got.len(), data.len());
        assert!(runs > 0, "the endpoint made GSO runs");
        assert!(!ua.gso(), "GSO switched off at the refusal");
        assert!(ub.gso(), "the other socket kept it");
        assert_eq!(a_unsent, 0, "every datagram went out");
        assert!(a_sent as usize >= data.len() / 1418);
        assert_eq!(
            b_coalesced, 0,
            "one datagram per send: none arrived coalesced"
        );
        assert!(b_received <= a_sent);
    }
}
