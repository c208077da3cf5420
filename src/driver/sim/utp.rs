//! uTP links in the simulator: each node that speaks uTP owns one real [`Endpoint`] (the
//! engine's, with the engine's settings), and its datagrams cross a simulated packet network.
//!
//! A datagram queues on the sender's uplink (serialised at its rate, header bytes included),
//! is lost with the configured probability (really lost: only uTP's own retransmission brings
//! its bytes back), travels the one-way latency, then queues on the receiver's downlink. Both
//! queues are drop-tail: a datagram that would wait longer than [`SimConfig::queue_limit`] is
//! dropped, so LEDBAT sees delay build before it sees loss, as behind a home router. The
//! endpoints' timers run on the virtual clock through `poll_timeout`/`handle_timeout`.
//!
//! To the core a uTP connection is a byte stream, fed as `src/driver/utp_link.rs` feeds it on
//! the host loop: bytes taken from the session go into the endpoint's send buffer (what does
//! not fit waits and goes on `Writable`), bytes read on `Readable` go to the session, the end
//! of the peer's stream closes the connection. The dialling policy is the engine's
//! ([`Transport`]): `utp` dials and accepts uTP only, `both` dials uTP first and, when no
//! answer comes to the SYNs, dials the same address over TCP (and remembers it), accepting
//! both; `tcp` nodes have no endpoint, so uTP packets to them go unanswered.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ::core::net::SocketAddr;

use bytes::{Buf, Bytes};

use super::network::{self, NetEvent};
use super::{Role, SimConfig, SimEvent, Simulation};
use crate::core::api::ConnId;
use crate::core::Time;
use crate::driver::utp_link::endpoint_config;
use crate::driver::Transport;
use crate::utp::{ConnStats, Endpoint, EndpointConfig, UtpEvent, UtpHandle};

/// IPv4 and UDP headers, counted on the wire with each datagram's payload.
const HEADERS: usize = 28;

/// The most bytes read from an endpoint at once.
const READ_CHUNK: usize = 64 << 10;

/// How often the congestion windows of sending connections are sampled for the report.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One node's uTP side: its endpoint and which connection of the session each handle is.
pub(crate) struct UtpNode {
    endpoint: Endpoint,
    by_conn: BTreeMap<ConnId, UtpHandle>,
    routes: BTreeMap<UtpHandle, Route>,
    /// Addresses a uTP dial got no answer from: later dials go straight to TCP.
    failed: BTreeSet<SocketAddr>,
    /// Connections unmapped since the session's events were last read, so that a connection
    /// that came up and went within one turn still counts as uTP.
    gone: BTreeSet<ConnId>,
}

struct Route {
    /// The session's connection; `None` once the session closed it, or for a silent node.
    conn: Option<ConnId>,
    addr: SocketAddr,
    connected: bool,
    /// Bytes taken from the session that the endpoint's send buffer has not taken yet.
    pending: VecDeque<Bytes>,
}

impl UtpNode {
    /// A node's endpoint, set up as the engine's, its randomness from `seed`.
    pub(crate) fn new(transport: Transport, seed: u64) -> UtpNode {
        UtpNode {
            endpoint: Endpoint::new(
                endpoint_config(transport, EndpointConfig::default().max_connections),
                seed,
            ),
            by_conn: BTreeMap::new(),
            routes: BTreeMap::new(),
            failed: BTreeSet::new(),
            gone: BTreeSet::new(),
        }
    }

    /// Whether `conn` runs over uTP.
    pub(crate) fn owns(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    /// Whether `conn` ran over uTP this turn (it may be gone since).
    pub(crate) fn carried(&self, conn: ConnId) -> bool {
        self.owns(conn) || self.gone.contains(&conn)
    }

    /// The session's events were read: forget which connections went.
    pub(crate) fn end_turn(&mut self) {
        self.gone.clear();
    }

    fn unmap(&mut self, conn: ConnId) {
        self.by_conn.remove(&conn);
        self.gone.insert(conn);
    }

    /// Whether a dial to `addr` goes over uTP under `transport`.
    pub(crate) fn dials(&self, transport: Transport, addr: SocketAddr) -> bool {
        match transport {
            Transport::Tcp => false,
            Transport::Utp => true,
            Transport::Both => !self.failed.contains(&addr),
        }
    }

    /// When the endpoint's timers want to run.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.endpoint.poll_timeout()
    }

    /// Runs the endpoint's due timers.
    pub(crate) fn handle_timeout(&mut self, now: Time) {
        self.endpoint.handle_timeout(now);
    }

    /// Every connection's counters, closed ones included.
    pub(crate) fn totals(&self) -> ConnStats {
        self.endpoint.conn_totals()
    }

    /// The congestion windows of the connections with bytes in flight.
    pub(crate) fn sending_windows(&self) -> impl Iterator<Item = usize> + '_ {
        self.routes
            .keys()
            .filter_map(|h| self.endpoint.connection(*h))
            .filter(|c| c.bytes_in_flight() > 0)
            .map(|c| c.window())
    }
}

/// Datagram network state and counters.
#[derive(Debug, Default)]
pub(crate) struct Datagrams {
    /// Datagrams put on an uplink (dropped ones included).
    pub(crate) sent: u64,
    /// Their bytes, headers included.
    pub(crate) bytes: u64,
    /// Lost on the way (the configured loss).
    pub(crate) lost: u64,
    /// Dropped by a full queue (drop-tail, on an uplink or a downlink).
    pub(crate) queue_drops: u64,
    /// For an address with no uTP endpoint (a TCP-only node, or one offline).
    pub(crate) unanswered: u64,
    /// Delivered.
    pub(crate) delivered: u64,
    /// Total time delivered datagrams waited in queues, microseconds.
    pub(crate) queued_us: u64,
    /// uTP dials that got no answer and were retried over TCP.
    pub(crate) fallbacks: u64,
    /// Sum and count of sampled congestion windows.
    pub(crate) window_sum: u64,
    pub(crate) window_samples: u64,
    /// Counters of endpoints of nodes that left.
    pub(crate) departed: ConnStats,
}

fn wire_time(bytes: usize, rate: u64) -> Duration {
    Duration::from_micros(
        (bytes as u64)
            .saturating_mul(1_000_000)
            .div_ceil(rate.max(1)),
    )
}

/// Node `i` dials `addr` over uTP for `conn`.
pub(crate) fn connect(sim: &mut Simulation, i: usize, conn: ConnId, addr: SocketAddr) {
    let now = sim.now;
    let Some(u) = sim.nodes[i].utp.as_mut() else {
        return;
    };
    match u.endpoint.connect(addr, now) {
        Ok(h) => {
            u.by_conn.insert(conn, h);
            u.routes.insert(
                h,
                Route {
                    conn: Some(conn),
                    addr,
                    connected: false,
                    pending: VecDeque::new(),
                },
            );
        }
        Err(_) => {
            if let Some(s) = sim.nodes[i].session.as_mut() {
                s.handle_closed(conn, now);
            }
        }
    }
}

/// Moves what the session queued on `conn` into the endpoint, as far as it takes it.
pub(crate) fn pull(sim: &mut Simulation, i: usize, conn: ConnId) {
    let now = sim.now;
    let node = &mut sim.nodes[i];
    let (Some(u), Some(session)) = (node.utp.as_mut(), node.session.as_mut()) else {
        return;
    };
    let Some(&h) = u.by_conn.get(&conn) else {
        return;
    };
    let Some(r) = u.routes.get_mut(&h) else {
        return;
    };
    if !r.connected {
        return;
    }
    loop {
        while let Some(front) = r.pending.front_mut() {
            let n = u.endpoint.write(h, front, now);
            if n < front.len() {
                // The rest goes when the endpoint says `Writable`.
                front.advance(n);
                return;
            }
            r.pending.pop_front();
        }
        let room = u.endpoint.connection(h).map_or(0, |c| c.writable_len());
        if room == 0 {
            return;
        }
        let chunks = session.take_send(conn, room);
        let n: usize = chunks.iter().map(Bytes::len).sum();
        if n == 0 {
            return;
        }
        r.pending.extend(chunks);
        session.handle_sent(conn, n, now);
    }
}

/// The session closed `conn`: a FIN follows what was written.
pub(crate) fn close(sim: &mut Simulation, i: usize, conn: ConnId) {
    let now = sim.now;
    let Some(u) = sim.nodes[i].utp.as_mut() else {
        return;
    };
    if let Some(&h) = u.by_conn.get(&conn) {
        u.unmap(conn);
        if let Some(r) = u.routes.get_mut(&h) {
            r.conn = None;
        }
        u.endpoint.close(h, now);
    }
}

/// Node `i` leaves: every connection is reset (the RESETs go out), and its counters kept.
pub(crate) fn shut_down(sim: &mut Simulation, i: usize) {
    let now = sim.now;
    let Some(mut u) = sim.nodes[i].utp.take() else {
        return;
    };
    let handles: Vec<UtpHandle> = u.routes.keys().copied().collect();
    for h in handles {
        u.endpoint.abort(h, now);
    }
    while let Some(t) = u.endpoint.poll_transmit() {
        send(sim, i, t.to, t.payload);
    }
    let t = u.totals();
    sim.net.datagrams.departed += t;
}

/// Carries node `i`'s endpoint events into its session and its datagrams onto the network,
/// until it has none. Returns whether there was anything.
pub(crate) fn pump(sim: &mut Simulation, i: usize) -> bool {
    let mut any = false;
    loop {
        let Some(u) = sim.nodes[i].utp.as_mut() else {
            return any;
        };
        if let Some(e) = u.endpoint.poll_event() {
            any = true;
            event(sim, i, e);
            continue;
        }
        if let Some(t) = u.endpoint.poll_transmit() {
            any = true;
            send(sim, i, t.to, t.payload);
            continue;
        }
        return any;
    }
}

fn event(sim: &mut Simulation, i: usize, e: UtpEvent) {
    let now = sim.now;
    let silent = sim.nodes[i].role == Role::Silent;
    let node = &mut sim.nodes[i];
    let Some(u) = node.utp.as_mut() else {
        return;
    };
    match e {
        UtpEvent::Connected(h) => {
            let Some(r) = u.routes.get_mut(&h) else {
                return;
            };
            r.connected = true;
            if let (Some(conn), Some(s)) = (r.conn, node.session.as_mut()) {
                s.handle_connected(conn, now);
                pull(sim, i, conn);
            }
        }
        UtpEvent::Incoming(h, addr) => {
            // A silent node's endpoint answers the handshake (the kernel-like part), but
            // nothing above it ever says a word.
            let conn = if silent {
                None
            } else {
                match node.session.as_mut().and_then(|s| s.accept(addr, now)) {
                    Some(c) => Some(c),
                    None => {
                        u.endpoint.abort(h, now);
                        return;
                    }
                }
            };
            if let Some(c) = conn {
                u.by_conn.insert(c, h);
            }
            u.routes.insert(
                h,
                Route {
                    conn,
                    addr,
                    connected: true,
                    pending: VecDeque::new(),
                },
            );
        }
        UtpEvent::Readable(h) => forward(sim, i, h),
        UtpEvent::Writable(h) => {
            if let Some(conn) = u.routes.get(&h).and_then(|r| r.conn) {
                pull(sim, i, conn);
            }
        }
        UtpEvent::Closed(h, _) => {
            let Some(r) = u.routes.remove(&h) else {
                return;
            };
            let Some(conn) = r.conn else {
                return;
            };
            u.unmap(conn);
            if !r.connected && node.transport == Transport::Both {
                // No answer over uTP: the engine's fallback, the same connection over TCP.
                u.failed.insert(r.addr);
                sim.net.datagrams.fallbacks += 1;
                network::connect(sim, i, conn, r.addr);
            } else if let Some(s) = node.session.as_mut() {
                s.handle_closed(conn, now);
            }
        }
    }
}

/// Reads what the endpoint holds for `h` into the session; the end of the peer's stream
/// closes the connection.
fn forward(sim: &mut Simulation, i: usize, h: UtpHandle) {
    let now = sim.now;
    let buf = &mut sim.utp_buf;
    if buf.len() < READ_CHUNK {
        buf.resize(READ_CHUNK, 0);
    }
    let node = &mut sim.nodes[i];
    let Some(u) = node.utp.as_mut() else {
        return;
    };
    let Some(conn) = u.routes.get(&h).and_then(|r| r.conn) else {
        return;
    };
    loop {
        let n = u.endpoint.read(h, buf, now);
        if n == 0 {
            if u.endpoint.connection(h).is_none_or(|c| c.eof()) {
                u.unmap(conn);
                if let Some(r) = u.routes.get_mut(&h) {
                    r.conn = None;
                }
                u.endpoint.close(h, now);
                if let Some(s) = node.session.as_mut() {
                    s.handle_closed(conn, now);
                }
            }
            return;
        }
        if let Some(s) = node.session.as_mut() {
            s.handle_recv(conn, &buf[..n], now);
        }
    }
}

/// Node `i` puts a datagram for `to` on its uplink.
pub(crate) fn send(sim: &mut Simulation, i: usize, to: SocketAddr, payload: Vec<u8>) {
    let now = sim.now;
    let from = sim.nodes[i].addr;
    let limit = sim.config.queue_limit;
    let net = &mut sim.net;
    let size = payload.len() + HEADERS;
    net.datagrams.sent += 1;
    net.datagrams.bytes += size as u64;
    let start = net.uplink_tail(i).max(now);
    let waited = start.saturating_since(now);
    if waited > limit {
        net.datagrams.queue_drops += 1;
        return;
    }
    let departs = start + wire_time(size, net.up_rate());
    net.set_uplink_tail(i, departs);
    if net.lose() {
        net.datagrams.lost += 1;
        return;
    }
    let Some(j) = net.node_at(to) else {
        net.datagrams.unanswered += 1;
        return;
    };
    sim.queue.push(
        departs + net.latency(),
        SimEvent::Net(NetEvent::Arrive {
            node: j,
            from,
            payload,
            waited,
        }),
    );
}

/// A datagram reached node `j`'s downlink: it queues there (or is dropped), then is delivered.
pub(crate) fn arrive(
    sim: &mut Simulation,
    j: usize,
    from: SocketAddr,
    payload: Vec<u8>,
    waited: Duration,
) {
    let now = sim.now;
    let limit = sim.config.queue_limit;
    let net = &mut sim.net;
    let start = net.downlink_tail(j).max(now);
    let waits = start.saturating_since(now);
    if waits > limit {
        net.datagrams.queue_drops += 1;
        return;
    }
    let delivered = start + wire_time(payload.len() + HEADERS, net.down_rate());
    net.set_downlink_tail(j, delivered);
    sim.queue.push(
        delivered,
        SimEvent::Net(NetEvent::Datagram {
            node: j,
            from,
            payload,
            waited: waited + waits,
        }),
    );
}

/// A datagram is delivered to node `j`'s endpoint. Returns whether `j` took it.
pub(crate) fn deliver(
    sim: &mut Simulation,
    j: usize,
    from: SocketAddr,
    payload: &[u8],
    waited: Duration,
) -> bool {
    let now = sim.now;
    let Some(u) = sim.nodes[j].utp.as_mut() else {
        sim.net.datagrams.unanswered += 1;
        return false;
    };
    sim.net.datagrams.delivered += 1;
    sim.net.datagrams.queued_us += waited.as_micros() as u64;
    u.endpoint.handle_datagram(from, payload, now);
    true
}

/// The transport node `i` runs, from the configuration.
pub(crate) fn transport_of(config: &SimConfig, i: usize) -> Transport {
    match config.transport_mix.len() {
        0 => config.transport,
        n => config.transport_mix[i % n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::sim::simulate;

    #[test]
    fn wire_time_rounds_up() {
        // 1228 bytes at 10 MB/s: 122.8 us, never less (the link is never faster than set).
        assert_eq!(wire_time(1228, 10_000_000), Duration::from_micros(123));
        assert_eq!(wire_time(1000, 1_000_000), Duration::from_micros(1000));
    }

    #[test]
    fn transports_are_handed_out_in_turn() {
        let mut config = SimConfig {
            transport: Transport::Utp,
            ..SimConfig::default()
        };
        assert_eq!(transport_of(&config, 5), Transport::Utp);
        config.transport_mix = vec![Transport::Tcp, Transport::Both];
        assert_eq!(transport_of(&config, 0), Transport::Tcp);
        assert_eq!(transport_of(&config, 3), Transport::Both);
    }

    #[test]
    fn total_loss_delivers_nothing_and_no_one_connects() {
        let r = simulate(SimConfig {
            leechers: 3,
            size: 256 << 10,
            piece_len: 64 << 10,
            transport: Transport::Utp,
            loss: 1.0,
            time_limit: Duration::from_secs(30),
            ..SimConfig::default()
        })
        .expect("valid simulation");
        let u = r.utp.expect("uTP figures");
        assert!(u.packets_sent > 0);
        assert_eq!(u.packets_lost, u.packets_sent, "every datagram lost");
        assert_eq!(r.completed, 0);
        assert!(r.transports.is_empty(), "{:?}", r.transports);
    }

    #[test]
    fn tcp_runs_report_no_utp() {
        let r = simulate(SimConfig {
            leechers: 2,
            size: 256 << 10,
            piece_len: 64 << 10,
            ..SimConfig::default()
        })
        .expect("valid simulation");
        assert_eq!(r.completed, 2);
        assert_eq!(r.transport, "tcp");
        assert!(r.utp.is_none());
        assert!(!r.transports.contains_key("utp"));
    }
}
