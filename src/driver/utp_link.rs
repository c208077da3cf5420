//! uTP connections on the event loops, as byte streams to the protocol exactly like TCP.
//!
//! One UDP socket (loop 0's, shared with the DHT) carries every uTP packet, so one sans-IO
//! [`Endpoint`] on loop 0 (the *host*) runs every uTP connection of the client. A connection
//! cannot move its socket to the loop that owns its torrent the way a TCP connection is
//! handed off, so it is *proxied*: the loop whose session holds the connection keeps a
//! `ProxyConn` for it (its I/O is mail), and the host keeps the endpoint's side (a
//! `Route`). Between them, over the loops' existing mail ([`UtpMail`]):
//!
//! - host to owner ([`ToConn`]): connected, dial failed, received bytes, send credit
//!   returned, closed, and a handed-off incoming connection to adopt;
//! - owner to host ([`ToHost`]): dial, bytes to send, receive credit returned, close, the
//!   hand-off of an incoming connection and its adoption.
//!
//! Both directions are bounded by credit: an owner moves at most `SEND_CREDIT` bytes
//! out of its session that the endpoint has not yet taken into its send buffer, and the host
//! forwards at most `RECV_CREDIT` bytes the owner has not yet handed to its session.
//! Beyond them, bytes wait in the endpoint, whose buffers and advertised window bound
//! what the peer can make us hold ([`endpoint_config`]). On the host loop itself (always, with
//! one loop) the same messages pass through local queues and received bytes go straight
//! to the session, without a copy or mail.
//!
//! Outgoing dials follow the [`Transport`] policy as libtorrent does: uTP first when it is
//! allowed, and with [`Transport::Both`] a uTP dial that fails (no answer to the SYNs within
//! about three seconds, or a reset) is retried over TCP at once, and the address is
//! remembered (bounded) so later dials to it go straight to TCP. A dial answered by an ICMP
//! error (port or host unreachable, read from the socket's error queue) fails at once, so the
//! fallback does not wait. Incoming connections are accepted on both transports the policy
//! allows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use bytes::{Buf, Bytes};

use super::loop_core::{unmap, LoopCore};
use super::Protocol;
use crate::core::api::{Action, ConnId};
use crate::core::session::HandOff;
use crate::core::Time;
use crate::utp::{Endpoint, EndpointConfig, UtpConfig, UtpEvent, UtpHandle};

/// Which transports peers are reached and accepted on (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP only: no UDP socket is opened for uTP, and uTP packets are dropped.
    Tcp,
    /// uTP only: dials go over uTP, incoming TCP connections are refused.
    Utp,
    /// Both (the default, libtorrent's): dials try uTP first and fall back to TCP; incoming
    /// connections are accepted on both.
    #[default]
    Both,
}

impl Transport {
    /// Whether TCP is allowed.
    pub fn tcp(self) -> bool {
        self != Transport::Utp
    }

    /// Whether uTP is allowed.
    pub fn utp(self) -> bool {
        self != Transport::Tcp
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
            Transport::Both => "both",
        })
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Transport, String> {
        match s {
            "tcp" => Ok(Transport::Tcp),
            "utp" => Ok(Transport::Utp),
            "both" => Ok(Transport::Both),
            other => Err(format!("unknown transport {other:?}: tcp, utp or both")),
        }
    }
}

/// The loop that holds the endpoint: the one that owns the UDP socket.
pub(crate) const HOST_SHARD: u32 = 0;

/// Bytes an owner takes out of its session for one connection that the endpoint has not yet
/// accepted into its send buffer.
pub(crate) const SEND_CREDIT: usize = 256 << 10;

/// Bytes the host forwards for one connection that the owner has not yet handed to its
/// session.
pub(crate) const RECV_CREDIT: usize = 256 << 10;

/// The most bytes read from the endpoint into one message.
const RECV_CHUNK: usize = 64 << 10;

/// Addresses remembered as unreachable over uTP (the set is emptied when full).
const MAX_REMEMBERED: usize = 4096;

/// Per-connection send buffer: what the session may have queued in the endpoint beyond what
/// is in flight. A quarter of the protocol layer's default, so thousands of peers stay
/// bounded; the session's own send queue sits behind it.
pub const UTP_SEND_BUFFER: usize = 256 << 10;

/// Per-connection receive buffer, the window advertised: 512 KiB fills 40 Mbit/s at a 100 ms
/// round trip (half the protocol layer's default, which filled 80).
pub const UTP_RECV_BUFFER: usize = 512 << 10;

/// The endpoint's settings for a client: buffers as above, at most `max_connections` (the
/// client's cap), SYNs answered when `transport` allows uTP.
pub fn endpoint_config(transport: Transport, max_connections: usize) -> EndpointConfig {
    EndpointConfig {
        conn: UtpConfig {
            send_buffer: UTP_SEND_BUFFER,
            recv_buffer: UTP_RECV_BUFFER,
            ..UtpConfig::default()
        },
        max_connections: max_connections.max(1),
        accept: transport.utp(),
        ..EndpointConfig::default()
    }
}

/// Mail between the host and the loops that own uTP connections (see the module doc).
pub enum UtpMail {
    /// For the host.
    Host(ToHost),
    /// For the owning loop.
    Conn(ToConn),
}

/// What an owning loop tells the host. Connections are named by (owning shard, `ConnId`).
pub enum ToHost {
    /// Open a connection to `addr`.
    Dial {
        /// The owner.
        shard: u32,
        /// Its connection.
        conn: ConnId,
        /// Where to.
        addr: SocketAddr,
    },
    /// Bytes to send, in order.
    Send {
        /// The owner.
        shard: u32,
        /// Its connection.
        conn: ConnId,
        /// The bytes.
        data: Vec<Bytes>,
    },
    /// `n` forwarded bytes were handed to the session.
    RecvCredit {
        /// The owner.
        shard: u32,
        /// Its connection.
        conn: ConnId,
        /// How many.
        n: usize,
    },
    /// The session closed the connection.
    Close {
        /// The owner.
        shard: u32,
        /// Its connection.
        conn: ConnId,
    },
    /// The session handed an incoming connection to the loop owning its torrent.
    HandOff {
        /// The owner so far.
        shard: u32,
        /// Its connection.
        conn: ConnId,
        /// The connection's state, for the new owner.
        handoff: Box<HandOff>,
    },
    /// A hand-off was adopted (as `conn`), or refused (`None`).
    Adopted {
        /// The endpoint's connection.
        handle: UtpHandle,
        /// The new owner.
        shard: u32,
        /// Its connection.
        conn: Option<ConnId>,
    },
}

/// What the host tells the loop owning a connection.
pub enum ToConn {
    /// A dial completed.
    Connected {
        /// The connection.
        conn: ConnId,
    },
    /// A dial failed (no answer, a reset, or the endpoint full).
    DialFailed {
        /// The connection.
        conn: ConnId,
    },
    /// Bytes received.
    Recv {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `n` bytes sent earlier were taken by the endpoint.
    SendCredit {
        /// The connection.
        conn: ConnId,
        /// How many.
        n: usize,
    },
    /// The connection ended (the peer closed it, or it failed).
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// Adopt this incoming connection (its torrent is ours).
    Adopt {
        /// The endpoint's connection.
        handle: UtpHandle,
        /// Its state.
        handoff: Box<HandOff>,
    },
}

/// Counters of one loop's uTP connections, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UtpStats {
    /// Connections this loop's session holds over uTP now (dialling ones included).
    pub open: u64,
    /// Our dials that connected.
    pub dialed: u64,
    /// Incoming connections accepted (on the host, whichever loop then adopts them).
    pub accepted: u64,
    /// Dials that failed over uTP and were retried over TCP.
    pub fallbacks: u64,
    /// Bytes handed to the session.
    pub bytes_received: u64,
    /// Bytes taken from the session to send.
    pub bytes_sent: u64,
    /// uTP packets received (host only).
    pub packets_received: u64,
}

/// The endpoint's side of a connection, on the host.
struct Route {
    /// Who holds the connection; `None` while a hand-off waits to be adopted, or after the
    /// owner closed it (the endpoint still sends our FIN).
    owner: Option<(u32, ConnId)>,
    connected: bool,
    /// Bytes the owner sent that the endpoint has not taken yet (at most [`SEND_CREDIT`]).
    pending: VecDeque<Bytes>,
    /// Bytes forwarded and not yet credited back.
    recv_out: usize,
}

/// The host: the endpoint and its routes.
pub(crate) struct Host {
    endpoint: Endpoint,
    routes: HashMap<UtpHandle, Route>,
    by_owner: HashMap<(u32, ConnId), UtpHandle>,
    buf: Box<[u8]>,
}

/// The owner's side of a connection.
struct ProxyConn {
    addr: SocketAddr,
    /// Waiting for the dial's outcome.
    dialing: bool,
    /// Bytes taken from the session and not yet credited back by the host.
    send_out: usize,
}

/// One loop's part of uTP: the host (loop 0 only) and the connections its session holds
/// over uTP.
pub(crate) struct UtpLink {
    /// This loop's shard number.
    pub(crate) shard: u32,
    transport: Transport,
    /// Whether a host exists (the client opened the UDP socket for uTP).
    enabled: bool,
    host: Option<Host>,
    conns: HashMap<ConnId, ProxyConn>,
    /// Addresses whose uTP dial failed: dialled over TCP from now on.
    failed: HashSet<SocketAddr>,
    to_host: VecDeque<ToHost>,
    to_conn: VecDeque<(u32, ToConn)>,
    /// TCP dials to hand to the backend (fallbacks).
    pub(crate) fallback: VecDeque<Action>,
    stats: UtpStats,
}

impl Default for UtpLink {
    fn default() -> Self {
        UtpLink {
            shard: 0,
            transport: Transport::Tcp,
            enabled: false,
            host: None,
            conns: HashMap::new(),
            failed: HashSet::new(),
            to_host: VecDeque::new(),
            to_conn: VecDeque::new(),
            fallback: VecDeque::new(),
            stats: UtpStats::default(),
        }
    }
}

impl UtpLink {
    /// Sets the policy; `enabled` says whether a host runs (on loop 0).
    pub(crate) fn configure(&mut self, shard: u32, transport: Transport, enabled: bool) {
        self.shard = shard;
        self.transport = transport;
        self.enabled = enabled && transport.utp();
    }

    /// Makes this loop the host.
    pub(crate) fn host(&mut self, config: EndpointConfig, seed: u64) {
        self.host = Some(Host {
            endpoint: Endpoint::new(config, seed),
            routes: HashMap::new(),
            by_owner: HashMap::new(),
            buf: vec![0; RECV_CHUNK].into_boxed_slice(),
        });
    }

    /// Whether TCP connections are accepted.
    pub(crate) fn accepts_tcp(&self) -> bool {
        self.transport.tcp()
    }

    /// Whether a dial to `addr` goes over uTP.
    fn dials_utp(&self, addr: SocketAddr) -> bool {
        self.enabled && !(self.transport.tcp() && self.failed.contains(&addr))
    }

    /// The counters.
    pub(crate) fn stats(&self) -> UtpStats {
        UtpStats {
            open: self.conns.len() as u64,
            ..self.stats
        }
    }

    /// The endpoint's counters, on the host.
    pub(crate) fn endpoint_stats(&self) -> Option<crate::utp::EndpointStats> {
        self.host.as_ref().map(|h| h.endpoint.stats())
    }

    /// Mail received: queued for [`LoopCore::utp_pump`].
    pub(crate) fn receive(&mut self, mail: UtpMail) {
        match mail {
            UtpMail::Host(m) => self.to_host.push_back(m),
            UtpMail::Conn(m) => self.to_conn.push_back((self.shard, m)),
        }
    }

    /// When the endpoint's timers want to run.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.host.as_ref().and_then(|h| h.endpoint.poll_timeout())
    }
}

impl<P: Protocol> LoopCore<P> {
    /// Takes an action that concerns uTP (a dial the policy sends over uTP, or a send, close
    /// or hand-off of a uTP connection); gives any other back for the backend.
    pub(crate) fn utp_action(&mut self, action: Action, now: Time) -> Option<Action> {
        let link = &mut self.utp;
        match action {
            Action::Connect {
                conn,
                addr,
                from: None,
            } if link.dials_utp(addr) => {
                link.conns.insert(
                    conn,
                    ProxyConn {
                        addr,
                        dialing: true,
                        send_out: 0,
                    },
                );
                link.to_host.push_back(ToHost::Dial {
                    shard: link.shard,
                    conn,
                    addr,
                });
                None
            }
            Action::Send { conn } if link.conns.contains_key(&conn) => {
                self.utp_pull(conn, now);
                None
            }
            Action::Close { conn } if link.conns.remove(&conn).is_some() => {
                link.to_host.push_back(ToHost::Close {
                    shard: link.shard,
                    conn,
                });
                None
            }
            Action::HandOff { conn, .. } if link.conns.remove(&conn).is_some() => {
                let shard = link.shard;
                let m = match self.proto.take_handoff(conn) {
                    Some(h) => ToHost::HandOff {
                        shard,
                        conn,
                        handoff: Box::new(h),
                    },
                    None => ToHost::Close { shard, conn },
                };
                self.utp.to_host.push_back(m);
                None
            }
            other => Some(other),
        }
    }

    /// Moves what the session has queued on `conn` towards the host, within the credit.
    fn utp_pull(&mut self, conn: ConnId, now: Time) {
        loop {
            let Some(pc) = self.utp.conns.get(&conn) else {
                return;
            };
            if pc.dialing || pc.send_out >= SEND_CREDIT {
                return;
            }
            let chunks = self.proto.take_send(conn, SEND_CREDIT - pc.send_out);
            let n: usize = chunks.iter().map(Bytes::len).sum();
            if n == 0 {
                return;
            }
            if let Some(pc) = self.utp.conns.get_mut(&conn) {
                pc.send_out += n;
            }
            self.utp.stats.bytes_sent += n as u64;
            self.utp.to_host.push_back(ToHost::Send {
                shard: self.utp.shard,
                conn,
                data: chunks,
            });
            self.proto.handle_sent(conn, n, now);
        }
    }

    /// A uTP datagram arrived (only the host has the socket).
    pub(crate) fn utp_datagram(&mut self, from: SocketAddr, data: &[u8], now: Time) -> bool {
        let Some(host) = self.utp.host.as_mut() else {
            return false;
        };
        self.utp.stats.packets_received += 1;
        host.endpoint.handle_datagram(unmap(from), data, now);
        true
    }

    /// The network reported `peer` unreachable (an ICMP error from the socket's error
    /// queue): the endpoint ends the connections it concerns, and a dial so ended falls back
    /// to TCP at once.
    pub(crate) fn utp_path_error(&mut self, peer: SocketAddr, e: crate::utp::PathError, now: Time) {
        if let Some(host) = self.utp.host.as_mut() {
            host.endpoint.handle_path_error(peer, e, now);
        }
    }

    /// Runs the endpoint's timers when due.
    pub(crate) fn utp_timeout(&mut self, now: Time) {
        if let Some(host) = self.utp.host.as_mut() {
            if host.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                host.endpoint.handle_timeout(now);
            }
        }
    }

    /// Carries the uTP messages, endpoint events and packets until none is left. Returns
    /// whether there was anything.
    pub(crate) fn utp_pump(&mut self, now: Time) -> bool {
        let mut any = false;
        loop {
            let mut did = false;
            while let Some(m) = self.utp.to_host.pop_front() {
                did = true;
                if self.utp.host.is_some() {
                    self.host_handle(m, now);
                } else {
                    self.post.send_to(HOST_SHARD, UtpMail::Host(m));
                }
            }
            while let Some((shard, m)) = self.utp.to_conn.pop_front() {
                did = true;
                if shard == self.utp.shard {
                    self.proxy_handle(m, now);
                } else {
                    self.post.send_to(shard, UtpMail::Conn(m));
                }
            }
            while let Some(e) = self.utp.host.as_mut().and_then(|h| h.endpoint.poll_event()) {
                did = true;
                self.host_event(e, now);
            }
            // Gathered, so that each connection's run of packets goes out in one GSO send.
            let mut out = self.udp.as_mut().map(|u| std::mem::take(&mut u.out));
            while let Some(t) = self
                .utp
                .host
                .as_mut()
                .and_then(|h| h.endpoint.poll_transmit())
            {
                did = true;
                match out.as_mut() {
                    Some(out) => out.push(t),
                    None => self.send_to(t.to, &t.payload),
                }
            }
            if let Some(mut out) = out {
                self.send_transmits(&mut out);
                if let Some(udp) = self.udp.as_mut() {
                    udp.out = out;
                }
            }
            if !did {
                return any;
            }
            any = true;
        }
    }

    fn host_handle(&mut self, m: ToHost, now: Time) {
        let Some(host) = self.utp.host.as_mut() else {
            return;
        };
        match m {
            ToHost::Dial { shard, conn, addr } => match host.endpoint.connect(addr, now) {
                Ok(h) => {
                    host.routes.insert(
                        h,
                        Route {
                            owner: Some((shard, conn)),
                            connected: false,
                            pending: VecDeque::new(),
                            recv_out: 0,
                        },
                    );
                    host.by_owner.insert((shard, conn), h);
                }
                Err(_) => self
                    .utp
                    .to_conn
                    .push_back((shard, ToConn::DialFailed { conn })),
            },
            ToHost::Send { shard, conn, data } => {
                if let Some(&h) = host.by_owner.get(&(shard, conn)) {
                    if let Some(r) = host.routes.get_mut(&h) {
                        r.pending.extend(data);
                    }
                    self.host_flush(h, now);
                }
            }
            ToHost::RecvCredit { shard, conn, n } => {
                if let Some(&h) = host.by_owner.get(&(shard, conn)) {
                    if let Some(r) = host.routes.get_mut(&h) {
                        r.recv_out = r.recv_out.saturating_sub(n);
                    }
                    self.host_forward(h, now);
                }
            }
            ToHost::Close { shard, conn } => {
                if let Some(h) = host.by_owner.remove(&(shard, conn)) {
                    if let Some(r) = host.routes.get_mut(&h) {
                        r.owner = None;
                        r.pending.clear();
                    }
                    host.endpoint.close(h, now);
                }
            }
            ToHost::HandOff {
                shard,
                conn,
                handoff,
            } => {
                if let Some(h) = host.by_owner.remove(&(shard, conn)) {
                    if let Some(r) = host.routes.get_mut(&h) {
                        r.owner = None;
                        r.recv_out = 0;
                    }
                    let to = handoff.shard();
                    self.utp
                        .to_conn
                        .push_back((to, ToConn::Adopt { handle: h, handoff }));
                }
            }
            ToHost::Adopted {
                handle,
                shard,
                conn,
            } => {
                let Some(conn) = conn else {
                    host.endpoint.abort(handle, now);
                    return;
                };
                match host.routes.get_mut(&handle) {
                    Some(r) if r.owner.is_none() => {
                        r.owner = Some((shard, conn));
                        host.by_owner.insert((shard, conn), handle);
                        self.host_forward(handle, now);
                        self.host_flush(handle, now);
                    }
                    // The connection ended while it travelled.
                    _ => self.utp.to_conn.push_back((shard, ToConn::Closed { conn })),
                }
            }
        }
    }

    fn host_event(&mut self, e: UtpEvent, now: Time) {
        let Some(host) = self.utp.host.as_mut() else {
            return;
        };
        match e {
            UtpEvent::Connected(h) => {
                if let Some(r) = host.routes.get_mut(&h) {
                    r.connected = true;
                    if let Some((shard, conn)) = r.owner {
                        self.utp
                            .to_conn
                            .push_back((shard, ToConn::Connected { conn }));
                    }
                }
            }
            UtpEvent::Incoming(h, addr) => {
                let addr = unmap(addr);
                match self.proto.accept(addr, now) {
                    Some(conn) => {
                        let shard = self.utp.shard;
                        let Some(host) = self.utp.host.as_mut() else {
                            return;
                        };
                        host.routes.insert(
                            h,
                            Route {
                                owner: Some((shard, conn)),
                                connected: true,
                                pending: VecDeque::new(),
                                recv_out: 0,
                            },
                        );
                        host.by_owner.insert((shard, conn), h);
                        self.utp.conns.insert(
                            conn,
                            ProxyConn {
                                addr,
                                dialing: false,
                                send_out: 0,
                            },
                        );
                        self.utp.stats.accepted += 1;
                    }
                    None => {
                        if let Some(host) = self.utp.host.as_mut() {
                            host.endpoint.abort(h, now);
                        }
                    }
                }
            }
            UtpEvent::Readable(h) => self.host_forward(h, now),
            UtpEvent::Writable(h) => self.host_flush(h, now),
            UtpEvent::Closed(h, _) => {
                if let Some(r) = host.routes.remove(&h) {
                    if let Some(owner) = r.owner {
                        host.by_owner.remove(&owner);
                        let (shard, conn) = owner;
                        let m = if r.connected {
                            ToConn::Closed { conn }
                        } else {
                            ToConn::DialFailed { conn }
                        };
                        self.utp.to_conn.push_back((shard, m));
                    }
                }
            }
        }
    }

    /// Reads what the endpoint has for `h` and hands it to its owner, within the credit; the
    /// end of the peer's stream closes the connection.
    fn host_forward(&mut self, h: UtpHandle, now: Time) {
        loop {
            let Some(host) = self.utp.host.as_mut() else {
                return;
            };
            let Some(r) = host.routes.get_mut(&h) else {
                return;
            };
            let Some((shard, conn)) = r.owner else {
                return;
            };
            let local = shard == self.utp.shard;
            let room = if local {
                RECV_CHUNK
            } else {
                RECV_CREDIT.saturating_sub(r.recv_out).min(RECV_CHUNK)
            };
            if room == 0 {
                return;
            }
            let n = host.endpoint.read(h, &mut host.buf[..room], now);
            if n == 0 {
                if host.endpoint.connection(h).is_none_or(|c| c.eof()) {
                    r.owner = None;
                    // A closing connection takes no more bytes (as on the owner's close).
                    r.pending.clear();
                    host.by_owner.remove(&(shard, conn));
                    host.endpoint.close(h, now);
                    self.utp.to_conn.push_back((shard, ToConn::Closed { conn }));
                }
                return;
            }
            if local {
                // Straight to the session: no copy, no credit.
                if self.utp.conns.contains_key(&conn) {
                    self.utp.stats.bytes_received += n as u64;
                    self.proto.handle_recv(conn, &host.buf[..n], now);
                }
            } else {
                r.recv_out += n;
                let data = host.buf[..n].to_vec();
                self.utp
                    .to_conn
                    .push_back((shard, ToConn::Recv { conn, data }));
            }
        }
    }

    /// Writes `h`'s pending bytes into the endpoint as far as it takes them, and returns the
    /// credit to the owner.
    fn host_flush(&mut self, h: UtpHandle, now: Time) {
        let Some(host) = self.utp.host.as_mut() else {
            return;
        };
        let Some(r) = host.routes.get_mut(&h) else {
            return;
        };
        let mut taken = 0;
        while let Some(front) = r.pending.front_mut() {
            let n = host.endpoint.write(h, front, now);
            taken += n;
            if n < front.len() {
                front.advance(n);
                break;
            }
            r.pending.pop_front();
        }
        if taken > 0 {
            if let Some((shard, conn)) = r.owner {
                self.utp
                    .to_conn
                    .push_back((shard, ToConn::SendCredit { conn, n: taken }));
            }
        }
    }

    fn proxy_handle(&mut self, m: ToConn, now: Time) {
        match m {
            ToConn::Connected { conn } => {
                let Some(pc) = self.utp.conns.get_mut(&conn) else {
                    return;
                };
                pc.dialing = false;
                self.utp.stats.dialed += 1;
                self.proto.handle_connected(conn, now);
                self.utp_pull(conn, now);
            }
            ToConn::DialFailed { conn } => {
                let Some(pc) = self.utp.conns.remove(&conn) else {
                    return;
                };
                if self.utp.transport.tcp() {
                    if self.utp.failed.len() >= MAX_REMEMBERED {
                        self.utp.failed.clear();
                    }
                    self.utp.failed.insert(pc.addr);
                    self.utp.stats.fallbacks += 1;
                    self.utp.fallback.push_back(Action::Connect {
                        conn,
                        addr: pc.addr,
                        from: None,
                    });
                } else {
                    self.proto.handle_closed(conn, now);
                }
            }
            ToConn::Recv { conn, data } => {
                if self.utp.conns.contains_key(&conn) {
                    self.utp.stats.bytes_received += data.len() as u64;
                    self.proto.handle_recv(conn, &data, now);
                    self.utp.to_host.push_back(ToHost::RecvCredit {
                        shard: self.utp.shard,
                        conn,
                        n: data.len(),
                    });
                }
            }
            ToConn::SendCredit { conn, n } => {
                if let Some(pc) = self.utp.conns.get_mut(&conn) {
                    pc.send_out = pc.send_out.saturating_sub(n);
                    self.utp_pull(conn, now);
                }
            }
            ToConn::Closed { conn } => {
                if self.utp.conns.remove(&conn).is_some() {
                    self.proto.handle_closed(conn, now);
                }
            }
            ToConn::Adopt { handle, handoff } => {
                let addr = handoff.addr();
                let conn = self.proto.adopt(*handoff, now);
                if let Some(conn) = conn {
                    self.utp.conns.insert(
                        conn,
                        ProxyConn {
                            addr,
                            dialing: false,
                            send_out: 0,
                        },
                    );
                }
                self.utp.to_host.push_back(ToHost::Adopted {
                    handle,
                    shard: self.utp.shard,
                    conn,
                });
                if let Some(conn) = conn {
                    self.utp_pull(conn, now);
                }
            }
        }
    }
}
