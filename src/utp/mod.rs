//! uTP, the Micro Transport Protocol (BEP 29): reliable, ordered byte streams over UDP with
//! LEDBAT congestion control, sans-IO.
//!
//! Like the DHT ([`crate::dht`]), an [`Endpoint`] takes datagrams and timer expiries with `now`
//! and hands back datagrams to send, events and its next deadline; it never reads a clock or
//! a socket, and its randomness (connection ids, first sequence numbers) comes from a seeded
//! [`Rng`]. The drivers share one UDP socket between the DHT and uTP and route by the first
//! byte ([`packet::is_utp`]: a uTP packet starts with 0x01..0x41, a KRPC message with `d`).
//!
//! The parts:
//! - [`packet`]: the codec (header, selective-ack extension).
//! - [`conn`]: one connection (handshake, stream, acks, retransmission, close).
//! - [`ledbat`]: the congestion window.
//! - [`mtu`]: path MTU discovery (probes padded to size, the floor and ceiling they move).
//! - this module: [`Endpoint`], the connections of one socket filed by (address, receive id),
//!   and the bounds on what strangers can make it hold.
//!
//! The driver drains, after every input: `poll_transmit` until `None`, then `poll_event`,
//! then waits no longer than `poll_timeout`.
//!
//! What an outsider can make it hold is bounded: connections ([`EndpointConfig::max_connections`]),
//! SYNs accepted per source IP ([`EndpointConfig::syns_per_sec_per_ip`], a token bucket in a
//! table of [`MAX_SYN_SOURCES`] entries, the oldest dropped first) and per connection its
//! buffers (`send_buffer`, `recv_buffer`, [`conn::MAX_REORDER`], [`conn::MAX_INFLIGHT`]).
//! Packets for no connection are dropped without an answer, so we never amplify.

pub mod conn;
pub mod fuzz;
pub mod ledbat;
pub mod mtu;
pub mod packet;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::core::{Rng, Time};

pub use conn::{CloseReason, ConnEvent, ConnStats, Connection, State, UtpConfig};
use packet::Type;

/// The most source IPs whose SYN rate is tracked at once.
pub const MAX_SYN_SOURCES: usize = 4096;

/// A connection of an [`Endpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UtpHandle(pub u64);

/// The endpoint's tuning.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Each connection's.
    pub conn: UtpConfig,
    /// Connections at once (ours and the peers').
    pub max_connections: usize,
    /// Whether peers' SYNs are answered.
    pub accept: bool,
    /// SYNs taken per second from one IP (bursts of twice that).
    pub syns_per_sec_per_ip: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            conn: UtpConfig::default(),
            max_connections: 1024,
            accept: true,
            syns_per_sec_per_ip: 10,
        }
    }
}

/// What happened, for the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UtpEvent {
    /// Our connect completed.
    Connected(UtpHandle),
    /// A peer opened a connection to us.
    Incoming(UtpHandle, SocketAddr),
    /// Bytes (or the end of the stream) to read.
    Readable(UtpHandle),
    /// Room to write again.
    Writable(UtpHandle),
    /// The connection is over and forgotten; its handle is no longer valid.
    Closed(UtpHandle, CloseReason),
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The packet.
    pub payload: Vec<u8>,
}

/// Why a connect was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// [`EndpointConfig::max_connections`] reached.
    #[error("too many uTP connections")]
    TooMany,
}

/// Counters of what the endpoint refused or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that were not uTP packets.
    pub malformed: u64,
    /// Packets for no connection of ours.
    pub unknown: u64,
    /// SYNs refused: rate per IP, connection limit, or not accepting.
    pub syns_refused: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Path errors reported ([`Endpoint::handle_path_error`]), for our peers or not.
    pub path_errors: u64,
    /// Connections they ended.
    pub unreachable: u64,
}

/// What the network said about the path to an address: an ICMP error (or a local one) the
/// driver read from the socket's error queue (`IP_RECVERR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Port unreachable: nothing listens there (a killed peer). A hard error: every
    /// connection to the address ends at once.
    PortUnreachable,
    /// Host or network unreachable, or prohibited: a soft error (routing may mend it, as TCP
    /// treats it); only connections to the address still in their handshake end.
    HostUnreachable,
    /// A datagram was too big for the path (ICMP "fragmentation needed" or "packet too
    /// big", or the kernel refusing a send larger than the interface): `mtu` is the IP MTU
    /// named, if any. Path MTU discovery of the connections to the address takes it.
    TooBig {
        /// The IP MTU.
        mtu: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Time,
}

/// The uTP connections of one UDP socket.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: Rng,
    next_handle: u64,
    conns: HashMap<UtpHandle, Connection>,
    by_id: HashMap<(SocketAddr, u16), UtpHandle>,
    /// The connections to each address, for path errors (which name an address only).
    by_peer: HashMap<SocketAddr, Vec<UtpHandle>>,
    syn_buckets: HashMap<IpAddr, Bucket>,
    /// Insertion order of `syn_buckets`, to drop the oldest when full.
    syn_order: BTreeMap<(Time, u64), IpAddr>,
    syn_seq: u64,
    transmits: VecDeque<Transmit>,
    /// Connections owing an ack, sent once the queued transmits are taken: one ack answers
    /// every packet of a connection received between two drains.
    acks: Vec<UtpHandle>,
    events: VecDeque<UtpEvent>,
    stats: EndpointStats,
    /// Each connection's next deadline, earliest first. An entry is current while its
    /// connection's `scheduled` holds the same time; others are stale and skipped (lazy
    /// invalidation). The top is always current (see [`Self::tidy`]).
    deadlines: BinaryHeap<Reverse<(Time, UtpHandle)>>,
    /// The counters of connections already forgotten, for [`Self::conn_totals`].
    closed_totals: ConnStats,
}

impl Endpoint {
    /// An endpoint whose randomness follows from `seed`.
    pub fn new(config: EndpointConfig, seed: u64) -> Endpoint {
        Endpoint {
            config,
            rng: Rng::new(seed),
            next_handle: 1,
            conns: HashMap::new(),
            by_id: HashMap::new(),
            by_peer: HashMap::new(),
            syn_buckets: HashMap::new(),
            syn_order: BTreeMap::new(),
            syn_seq: 0,
            transmits: VecDeque::new(),
            acks: Vec::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            deadlines: BinaryHeap::new(),
            closed_totals: ConnStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Every connection's counters added up, those already closed included (the simulator
    /// reports them). A scan of the open connections.
    pub fn conn_totals(&self) -> ConnStats {
        let mut t = self.closed_totals;
        for c in self.conns.values() {
            t += c.stats();
        }
        t
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// A connection, to look at.
    pub fn connection(&self, h: UtpHandle) -> Option<&Connection> {
        self.conns.get(&h)
    }

    fn handle(&mut self) -> UtpHandle {
        let h = UtpHandle(self.next_handle);
        self.next_handle += 1;
        h
    }

    /// Opens a connection to `peer` (its SYN is queued).
    pub fn connect(&mut self, peer: SocketAddr, now: Time) -> Result<UtpHandle, ConnectError> {
        if self.conns.len() >= self.config.max_connections {
            return Err(ConnectError::TooMany);
        }
        // A receive id free for this peer, and its successor too (the id a SYN of the peer's
        // would file under is its own id + 1; ours must not collide with either).
        let mut recv_id = self.rng.next_u64() as u16;
        while self.by_id.contains_key(&(peer, recv_id)) {
            recv_id = recv_id.wrapping_add(1);
        }
        let h = self.handle();
        let c = Connection::connect(self.config.conn.clone(), peer, recv_id, now);
        self.by_id.insert((peer, recv_id), h);
        self.by_peer.entry(peer).or_default().push(h);
        self.conns.insert(h, c);
        self.collect(h);
        Ok(h)
    }

    /// Takes one datagram from `from` (already routed here by [`packet::is_utp`]).
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Time) {
        let Ok(p) = packet::decode(datagram) else {
            self.stats.malformed += 1;
            return;
        };
        let h = &p.header;
        let key = if h.kind == Type::Syn {
            (from, h.conn_id.wrapping_add(1))
        } else {
            (from, h.conn_id)
        };
        if let Some(&handle) = self.by_id.get(&key) {
            if let Some(c) = self.conns.get_mut(&handle) {
                c.handle_packet(&p, now);
            }
            self.collect(handle);
            return;
        }
        if h.kind != Type::Syn {
            self.stats.unknown += 1;
            return;
        }
        if !self.config.accept
            || self.conns.len() >= self.config.max_connections
            || !self.syn_allowed(from.ip(), now)
        {
            self.stats.syns_refused += 1;
            return;
        }
        let first_seq = self.rng.next_u64() as u16;
        let c = Connection::accept(self.config.conn.clone(), from, h, first_seq, now);
        let handle = self.handle();
        self.by_id.insert(key, handle);
        self.by_peer.entry(from).or_default().push(handle);
        self.conns.insert(handle, c);
        self.stats.accepted += 1;
        self.events.push_back(UtpEvent::Incoming(handle, from));
        self.collect(handle);
    }

    /// Takes what the network said about the path to `peer` (see [`PathError`]); connections
    /// it ends report [`CloseReason::Unreachable`]. An address with no connection is
    /// ignored (the DHT's traffic shares the socket).
    pub fn handle_path_error(&mut self, peer: SocketAddr, error: PathError, now: Time) {
        self.stats.path_errors += 1;
        let handles = self.by_peer.get(&peer).cloned().unwrap_or_default();
        for h in handles {
            let ended = match error {
                PathError::TooBig { mtu } => {
                    if let Some(c) = self.conns.get_mut(&h) {
                        c.handle_too_big(mtu, now);
                    }
                    false
                }
                PathError::PortUnreachable | PathError::HostUnreachable => {
                    let hard = error == PathError::PortUnreachable;
                    self.conns
                        .get_mut(&h)
                        .is_some_and(|c| c.handle_unreachable(hard))
                }
            };
            if ended {
                self.stats.unreachable += 1;
            }
            self.collect(h);
        }
    }

    fn syn_allowed(&mut self, ip: IpAddr, now: Time) -> bool {
        let rate = f64::from(self.config.syns_per_sec_per_ip.max(1));
        let burst = 2.0 * rate;
        if let Some(b) = self.syn_buckets.get_mut(&ip) {
            let elapsed = now.saturating_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(burst);
            b.at = now;
            if b.tokens < 1.0 {
                return false;
            }
            b.tokens -= 1.0;
            return true;
        }
        while self.syn_buckets.len() >= MAX_SYN_SOURCES {
            let Some((_, old)) = self.syn_order.pop_first() else {
                break;
            };
            self.syn_buckets.remove(&old);
        }
        self.syn_seq += 1;
        self.syn_order.insert((now, self.syn_seq), ip);
        self.syn_buckets.insert(
            ip,
            Bucket {
                tokens: burst - 1.0,
                at: now,
            },
        );
        true
    }

    /// Runs every connection's timers that are due.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut due = Vec::new();
        while let Some(&Reverse((t, h))) = self.deadlines.peek() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            if let Some(c) = self.conns.get_mut(&h) {
                if c.scheduled == Some(t) {
                    c.scheduled = None;
                    due.push(h);
                }
            }
        }
        // In handle order, not the heap's: the packets go out in the same order on every run
        // with the same input (the simulator replays event for event).
        due.sort_unstable();
        for h in due {
            if let Some(c) = self.conns.get_mut(&h) {
                c.handle_timeout(now);
            }
            self.collect(h);
        }
        // Forget SYN buckets that have refilled (a minute is more than enough for any rate).
        while let Some((&(at, seq), &ip)) = self.syn_order.first_key_value() {
            if now.saturating_since(at) < Duration::from_secs(60) {
                break;
            }
            self.syn_order.remove(&(at, seq));
            self.syn_buckets.remove(&ip);
        }
        self.tidy();
    }

    /// Queues bytes on a connection; returns how many it took.
    pub fn write(&mut self, h: UtpHandle, data: &[u8], now: Time) -> usize {
        let n = self.conns.get_mut(&h).map_or(0, |c| c.write(data, now));
        self.collect(h);
        n
    }

    /// Reads received bytes; 0 with [`Connection::eof`] means the stream ended.
    pub fn read(&mut self, h: UtpHandle, buf: &mut [u8], now: Time) -> usize {
        let n = self.conns.get_mut(&h).map_or(0, |c| c.read(buf, now));
        self.collect(h);
        n
    }

    /// Closes our direction (FIN after what was written).
    pub fn close(&mut self, h: UtpHandle, now: Time) {
        if let Some(c) = self.conns.get_mut(&h) {
            c.close(now);
        }
        self.collect(h);
    }

    /// Tears a connection down at once (RESET).
    pub fn abort(&mut self, h: UtpHandle, now: Time) {
        if let Some(c) = self.conns.get_mut(&h) {
            c.abort(now);
        }
        self.collect(h);
    }

    /// The next datagram to send. The acks owed come after the other packets, one per
    /// connection for all the input since the last drain.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        while let Some(h) = self.acks.pop() {
            let Some(c) = self.conns.get_mut(&h) else {
                continue;
            };
            c.ack_listed = false;
            let ack = c.poll_ack();
            let to = c.peer();
            // The ack cleared its timer: the deadline moves.
            self.schedule(h);
            self.tidy();
            if let Some(payload) = ack {
                return Some(Transmit { to, payload });
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<UtpEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run next: the earliest of the connections'
    /// deadlines, the top of a heap (not a scan of every connection each turn).
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.peek().map(|&Reverse((t, _))| t)
    }

    /// [`Self::poll_timeout`] by a scan of every connection, as it was before the heap: for
    /// tests and the `utp_deadlines` bench, which compare the two.
    #[doc(hidden)]
    pub fn poll_timeout_by_scan(&self) -> Option<Time> {
        self.conns
            .values()
            .filter_map(Connection::poll_timeout)
            .min()
    }

    /// Files `h`'s deadline in the heap if it changed.
    fn schedule(&mut self, h: UtpHandle) {
        let Some(c) = self.conns.get_mut(&h) else {
            return;
        };
        let t = c.poll_timeout();
        if t != c.scheduled {
            c.scheduled = t;
            if let Some(t) = t {
                self.deadlines.push(Reverse((t, h)));
            }
        }
    }

    /// Drops stale entries off the heap's top, so its top is current; rebuilds it when
    /// stale entries outnumber the connections (each change of a deadline leaves one), so
    /// it stays within twice the connections.
    fn tidy(&mut self) {
        if self.deadlines.len() > 2 * self.conns.len() + 64 {
            self.deadlines = self
                .conns
                .iter()
                .filter_map(|(&h, c)| c.scheduled.map(|t| Reverse((t, h))))
                .collect();
        }
        while let Some(&Reverse((t, h))) = self.deadlines.peek() {
            if self.conns.get(&h).is_some_and(|c| c.scheduled == Some(t)) {
                break;
            }
            self.deadlines.pop();
        }
    }

    /// Moves a connection's output into the endpoint's queues, and forgets it once closed.
    fn collect(&mut self, h: UtpHandle) {
        let Some(c) = self.conns.get_mut(&h) else {
            return;
        };
        let to = c.peer();
        while let Some(payload) = c.poll_packet() {
            self.transmits.push_back(Transmit { to, payload });
        }
        if c.ack_due() && !c.ack_listed {
            c.ack_listed = true;
            self.acks.push(h);
        }
        let mut closed = false;
        while let Some(e) = c.poll_event() {
            self.events.push_back(match e {
                ConnEvent::Connected => UtpEvent::Connected(h),
                ConnEvent::Readable => UtpEvent::Readable(h),
                ConnEvent::Writable => UtpEvent::Writable(h),
                ConnEvent::Closed(r) => {
                    closed = true;
                    UtpEvent::Closed(h, r)
                }
            });
        }
        if closed {
            self.closed_totals += c.stats();
            let key = (to, c.recv_id());
            self.conns.remove(&h);
            self.by_id.remove(&key);
            if let Some(v) = self.by_peer.get_mut(&to) {
                v.retain(|&x| x != h);
                if v.is_empty() {
                    self.by_peer.remove(&to);
                }
            }
        } else {
            self.schedule(h);
        }
        self.tidy();
    }
}
