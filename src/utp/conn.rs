//! One uTP connection: the handshake, the byte stream both ways, acknowledgements (cumulative
//! and selective), retransmission, LEDBAT's window and the close, sans-IO.
//!
//! ## Connection ids and the handshake (BEP 29)
//!
//! The initiator picks `recv_id` at random and sends with `send_id = recv_id + 1`; its SYN
//! carries `recv_id` and sequence number 1. The responder files the connection under
//! `recv_id = syn.conn_id + 1` and sends with `send_id = syn.conn_id`, answering with a STATE
//! whose `ack_nr` is the SYN's sequence number and whose `seq_nr` is its own (random) first
//! sequence number, the one its first DATA will carry. So the initiator, on that STATE, sets
//! `ack_nr = state.seq_nr - 1` (libtorrent and libutp do the same); if a DATA arrives first
//! (the STATE was lost) its sequence number is taken as the first.
//!
//! ## Sending
//!
//! Bytes written wait in `unsent` (bounded by `send_buffer`), are cut into DATA packets of at
//! most `max_payload` bytes while the bytes in flight fit `min(congestion window, peer's
//! advertised window)`, and stay in `inflight` (at most [`MAX_INFLIGHT`] packets) until
//! acknowledged. A packet is resent when: the retransmission timer fires (the timer backs off
//! by doubling, the window drops to one packet, every packet in flight is resent in order);
//! three duplicate acks name the packet before it; or three packets after it are selectively
//! acknowledged. A loss halves the window once per window of data. A peer that advertises a
//! zero window is probed with one packet per timeout.
//!
//! ## Receiving
//!
//! In-order payload goes to `readable` (what the application has not read yet); packets ahead
//! of a gap wait in a reorder buffer of at most [`MAX_REORDER`] packets; both together never
//! exceed `recv_buffer` bytes, and the window we advertise is what is left of it. A packet
//! beyond that is dropped (the peer overran our window; it will resend). An ack is sent at
//! once for a packet out of order (with the selective-ack bitmask), a duplicate, a FIN, or a
//! window that reopened; otherwise after two packets or `delayed_ack`, whichever comes first,
//! and any DATA we send carries it anyway.
//!
//! ## Payload size
//!
//! Packets start at `max_payload` bytes (default [`DEFAULT_MAX_PAYLOAD`]), a conservative
//! size: 1200 bytes of payload plus 20 of header, 8 of UDP and 40 of IPv6 stay under IPv6's
//! minimum MTU of 1280 (as QUIC's floor does), so the first packets of a connection (a
//! BitTorrent handshake) never wait for a probe and pass on any path either family can take.
//! IPv4's 576-byte minimum is not used as the floor: no path a BitTorrent peer is reached on
//! is that small, and it would cost twice the packets. From there path MTU discovery
//! ([`super::mtu`]) probes up towards `path_mtu` (1500, Ethernet: 1418 bytes of payload over
//! IPv4, 1398 over IPv6, leaving room for the largest selective ack).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::core::Time;

use super::ledbat::Ledbat;
use super::mtu::{payload_for_mtu, MtuSearch, MtuStats, UTP_OVERHEAD};
use super::packet::{encode, encode_padded, Header, Packet, Type, MAX_PADDING, MAX_SACK_LEN};

/// The default payload per packet (see the module doc).
pub const DEFAULT_MAX_PAYLOAD: usize = 1200;

/// The most packets in flight at once, whatever the window says.
pub const MAX_INFLIGHT: usize = 4096;

/// The most packets held ahead of a gap.
pub const MAX_REORDER: usize = 1024;

/// The smallest retransmission timeout (BEP 29: 500 ms).
const MIN_RTO: Duration = Duration::from_millis(500);
/// The largest, after back-off.
const MAX_RTO: Duration = Duration::from_secs(30);
/// The retransmission timeout before the first round-trip sample (BEP 29: 1000 ms).
const INITIAL_RTO: Duration = Duration::from_secs(1);

/// Tuning; the defaults are BEP 29's where it gives one.
#[derive(Clone, Debug)]
pub struct UtpConfig {
    /// Payload bytes per packet (see the module doc).
    pub max_payload: usize,
    /// Bytes the application may queue to send.
    pub send_buffer: usize,
    /// Bytes we hold received (read or reordered); the advertised window.
    pub recv_buffer: usize,
    /// LEDBAT's target queuing delay (BEP 29: 100 ms).
    pub target_delay: Duration,
    /// The most the window grows per round trip, in bytes (BEP 29: 3000).
    pub gain: usize,
    /// The congestion window's ceiling, in bytes.
    pub max_window: usize,
    /// SYNs resent before a connect fails (each after one second).
    pub syn_resends: u32,
    /// Consecutive timeouts before an established connection fails: 4 gives a vanished
    /// peer about 15 s from the first loss (500 ms, then doubling), as libtorrent's three
    /// resends after its one-second floor do; with more, a seed kept a killed leecher's
    /// slot for over a minute (tests/gaps_resume.rs).
    pub max_timeouts: u32,
    /// How long an ack may wait for a second packet or outgoing data.
    pub delayed_ack: Duration,
    /// How long a closed connection waits for the peer to acknowledge our FIN.
    pub fin_timeout: Duration,
    /// The largest IP packet the path is assumed to carry at best: path MTU discovery
    /// searches between `max_payload` and what this leaves for a payload. At most
    /// `max_payload` turns discovery off.
    pub path_mtu: usize,
}

impl Default for UtpConfig {
    fn default() -> Self {
        UtpConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            target_delay: Duration::from_millis(100),
            gain: 3000,
            max_window: 4 << 20,
            syn_resends: 2,
            max_timeouts: 4,
            delayed_ack: Duration::from_millis(20),
            fin_timeout: Duration::from_secs(10),
            path_mtu: 1500,
        }
    }
}

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Our SYN is out, no answer yet.
    SynSent,
    /// The stream is open (the responder is, from its first STATE).
    Connected,
    /// Gone; see [`CloseReason`].
    Closed(CloseReason),
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides sent FIN and ours was acknowledged (or the peer stopped answering after it).
    Done,
    /// The peer sent RESET.
    Reset,
    /// No answer to the SYN.
    ConnectTimeout,
    /// Too many retransmission timeouts in a row.
    Timeout,
    /// The application aborted it (RESET sent).
    Aborted,
    /// The network said the peer cannot be reached (an ICMP error the driver read: port
    /// unreachable, or host unreachable during the handshake).
    Unreachable,
}

/// What a connection tells its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// The handshake completed (initiator).
    Connected,
    /// Bytes (or the end of the stream) can be read.
    Readable,
    /// Room in the send buffer again.
    Writable,
    /// The connection is over.
    Closed(CloseReason),
}

#[derive(Debug)]
struct Outgoing {
    seq: u16,
    kind: Type,
    payload: Vec<u8>,
    sent_at: Time,
    /// Which transmission of the connection sent it last (for selective-ack loss detection).
    sent_order: u64,
    transmissions: u32,
    /// Counted in `bytes_in_flight`.
    counted: bool,
    /// Selectively acknowledged.
    sacked: bool,
    /// Declared lost and waiting to be resent.
    resend: bool,
    /// A path MTU probe: its first transmission is padded to this payload size (0: none).
    probe: usize,
}

/// Counters one connection keeps, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Packets sent again.
    pub retransmits: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
    /// Fast resends (duplicate or selective acks).
    pub fast_resends: u64,
    /// Packets from the peer dropped: acks for data never sent, seq outside the window, data
    /// beyond the window we advertised.
    pub dropped: u64,
    /// Payload bytes delivered in order.
    pub bytes_received: u64,
    /// Payload bytes acknowledged by the peer.
    pub bytes_acked: u64,
}

impl std::ops::AddAssign for ConnStats {
    /// Adds `b`'s counters (destructured, so that a new counter cannot be forgotten).
    fn add_assign(&mut self, b: ConnStats) {
        let ConnStats {
            retransmits,
            timeouts,
            fast_resends,
            dropped,
            bytes_received,
            bytes_acked,
        } = b;
        self.retransmits += retransmits;
        self.timeouts += timeouts;
        self.fast_resends += fast_resends;
        self.dropped += dropped;
        self.bytes_received += bytes_received;
        self.bytes_acked += bytes_acked;
    }
}

/// One uTP connection.
#[derive(Debug)]
pub struct Connection {
    config: UtpConfig,
    state: State,
    peer: SocketAddr,
    recv_id: u16,
    send_id: u16,
    /// The next sequence number to send.
    seq_nr: u16,
    /// The last sequence number received in order.
    ack_nr: u16,
    // --- sending
    unsent: VecDeque<u8>,
    inflight: VecDeque<Outgoing>,
    bytes_in_flight: usize,
    cc: Ledbat,
    peer_wnd: usize,
    dup_acks: u32,
    /// No second window cut until this sequence number is acknowledged.
    recovery_until: Option<u16>,
    rtt_us: Option<(f64, f64)>,
    rto: Duration,
    rto_deadline: Option<Time>,
    timeouts: u32,
    zero_window_probe: bool,
    close_requested: bool,
    fin_sent: bool,
    fin_acked: bool,
    close_deadline: Option<Time>,
    write_blocked: bool,
    tx_count: u64,
    /// The sequence number of the SYN we answered (responder).
    syn_seq: Option<u16>,
    // --- receiving
    readable: VecDeque<u8>,
    /// Slot `i` holds the packet `ack_nr + 2 + i`.
    reorder: VecDeque<Option<Vec<u8>>>,
    reorder_bytes: usize,
    eof_seq: Option<u16>,
    eof: bool,
    reply_micro: u32,
    ack_owed: u32,
    ack_now: bool,
    ack_deadline: Option<Time>,
    /// An ack is owed and waits for the next [`Self::poll_transmit`] (as of this time), so
    /// that a run of received packets is answered by one ack, not one per two packets.
    ack_due: Option<Time>,
    /// The endpoint has listed this connection as owing an ack ([`super::Endpoint`]).
    pub(super) ack_listed: bool,
    /// The deadline the endpoint's heap has for this connection ([`super::Endpoint`]).
    pub(super) scheduled: Option<Time>,
    window_was_closed: bool,
    // --- path MTU
    mtu: MtuSearch,
    // --- out
    out: VecDeque<Vec<u8>>,
    events: VecDeque<ConnEvent>,
    stats: ConnStats,
}

fn micros(now: Time) -> u32 {
    now.as_micros() as u32
}

/// Copies the front of `from` into `to` (as much as fits); returns how much.
fn copy_front(from: &VecDeque<u8>, to: &mut [u8]) -> usize {
    let (a, b) = from.as_slices();
    let n = to.len().min(a.len() + b.len());
    let from_a = n.min(a.len());
    to[..from_a].copy_from_slice(&a[..from_a]);
    to[from_a..n].copy_from_slice(&b[..n - from_a]);
    n
}

/// `a` comes after `b` in 16-bit sequence space.
fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Connection {
    fn new(config: UtpConfig, peer: SocketAddr, recv_id: u16, send_id: u16) -> Connection {
        let mss = config.max_payload.max(1);
        let cc = Ledbat::new(
            2 * mss,
            mss,
            config.max_window.max(mss),
            config.target_delay,
            config.gain,
        );
        // The ceiling leaves room for the padding a probe of it needs beside a full packet.
        let ceiling = payload_for_mtu(config.path_mtu, peer.is_ipv6()).min(mss + MAX_PADDING);
        Connection {
            mtu: MtuSearch::new(mss, ceiling),
            state: State::SynSent,
            peer,
            recv_id,
            send_id,
            seq_nr: 1,
            ack_nr: 0,
            unsent: VecDeque::new(),
            inflight: VecDeque::new(),
            bytes_in_flight: 0,
            cc,
            peer_wnd: mss,
            dup_acks: 0,
            recovery_until: None,
            rtt_us: None,
            rto: INITIAL_RTO,
            rto_deadline: None,
            timeouts: 0,
            zero_window_probe: false,
            close_requested: false,
            fin_sent: false,
            fin_acked: false,
            close_deadline: None,
            write_blocked: false,
            tx_count: 0,
            syn_seq: None,
            readable: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            eof_seq: None,
            eof: false,
            reply_micro: 0,
            ack_owed: 0,
            ack_now: false,
            ack_deadline: None,
            ack_due: None,
            ack_listed: false,
            scheduled: None,
            window_was_closed: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: ConnStats::default(),
            config,
        }
    }

    /// Opens a connection to `peer`, filed under `recv_id`: queues the SYN.
    pub fn connect(config: UtpConfig, peer: SocketAddr, recv_id: u16, now: Time) -> Connection {
        let mut c = Connection::new(config, peer, recv_id, recv_id.wrapping_add(1));
        c.seq_nr = 1;
        c.push_packet(Type::Syn, Vec::new(), now);
        c.flush(now);
        c
    }

    /// Answers a peer's SYN (`syn`): the connection is filed under `syn.conn_id + 1`, its
    /// first sequence number is `first_seq` (random, from the owner's RNG); queues the STATE.
    pub fn accept(
        config: UtpConfig,
        peer: SocketAddr,
        syn: &Header,
        first_seq: u16,
        now: Time,
    ) -> Connection {
        let mut c = Connection::new(config, peer, syn.conn_id.wrapping_add(1), syn.conn_id);
        c.state = State::Connected;
        c.seq_nr = first_seq;
        c.ack_nr = syn.seq_nr;
        c.syn_seq = Some(syn.seq_nr);
        c.peer_wnd = syn.wnd_size as usize;
        c.reply_micro = micros(now).wrapping_sub(syn.timestamp);
        c.send_state(now);
        c
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The id the peer's packets carry.
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> ConnStats {
        self.stats
    }

    /// The congestion window, in bytes.
    pub fn window(&self) -> usize {
        self.cc.window()
    }

    /// The payload new packets carry (path MTU discovery's floor).
    pub fn payload_size(&self) -> usize {
        self.mtu.size()
    }

    /// Path MTU discovery's counters.
    pub fn mtu_stats(&self) -> MtuStats {
        self.mtu.stats()
    }

    /// Path MTU discovery's ceiling now.
    pub fn mtu_ceiling(&self) -> usize {
        self.mtu.ceiling()
    }

    /// The network said a packet to the peer was too big: `mtu`, the IP MTU it named, if
    /// any, caps the packets from now on; a probe it concerns is resent without padding at
    /// once (no window cut: the path's size is not congestion).
    pub fn handle_too_big(&mut self, mtu: Option<u32>, now: Time) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        let payload = mtu.map(|m| payload_for_mtu(m as usize, self.peer.is_ipv6()));
        if let Some(seq) = self.mtu.too_big(payload) {
            self.probe_lost(seq);
            self.flush(now);
        }
    }

    /// Marks the probe `seq` for a resend (unpadded); not a congestion signal.
    fn probe_lost(&mut self, seq: u16) {
        if let Some(o) = self.inflight.iter_mut().find(|o| o.seq == seq) {
            if !o.sacked && !o.resend && o.transmissions > 0 {
                o.resend = true;
                if o.counted {
                    o.counted = false;
                    self.bytes_in_flight = self.bytes_in_flight.saturating_sub(o.payload.len());
                }
            }
        }
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// Payload bytes sent and not yet acknowledged.
    pub fn bytes_in_flight(&self) -> usize {
        self.bytes_in_flight
    }

    /// Bytes waiting to be read.
    pub fn readable_len(&self) -> usize {
        self.readable.len()
    }

    /// Whether the peer's FIN was reached: once `readable_len` is 0 the stream has ended.
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Room in the send buffer.
    pub fn writable_len(&self) -> usize {
        if self.state != State::Connected || self.close_requested {
            return 0;
        }
        self.config.send_buffer.saturating_sub(self.unsent.len())
    }

    /// Queues bytes to send; returns how many were taken (up to [`Self::writable_len`]).
    pub fn write(&mut self, data: &[u8], now: Time) -> usize {
        let n = data.len().min(self.writable_len());
        self.unsent.extend(data.get(..n).unwrap_or_default());
        // Blocked only by a full buffer, which draining reopens. Once closing, no write is
        // ever taken again: a `Writable` then would have the caller write again, refused
        // again, for ever (the engine's proxy did: loop 0 spun in `utp_pump`).
        if n < data.len() && !self.close_requested {
            self.write_blocked = true;
        }
        self.flush(now);
        n
    }

    /// Takes up to `buf.len()` received bytes.
    pub fn read(&mut self, buf: &mut [u8], now: Time) -> usize {
        let n = copy_front(&self.readable, buf);
        self.readable.drain(..n);
        if n > 0 && self.window_was_closed && self.advertised_window() >= self.config.max_payload {
            self.window_was_closed = false;
            self.ack_now = true;
            self.flush(now);
        }
        n
    }

    /// Closes our direction: what was written is still sent, then a FIN.
    pub fn close(&mut self, now: Time) {
        if matches!(self.state, State::Closed(_)) || self.close_requested {
            return;
        }
        self.close_requested = true;
        if self.state == State::SynSent {
            self.finish(CloseReason::Aborted);
            return;
        }
        self.close_deadline = Some(now + self.config.fin_timeout);
        self.flush(now);
    }

    /// The network reported the peer unreachable (an ICMP error). `hard` (port unreachable:
    /// nothing listens there, a killed peer) ends the connection at once whatever its state;
    /// a soft one (host or network unreachable, which routing may mend, as TCP treats them)
    /// ends only a connection still in its handshake, so a dial gives up at once instead of
    /// resending SYNs for three seconds, and an established one keeps its timers. Returns
    /// whether it ended.
    pub fn handle_unreachable(&mut self, hard: bool) -> bool {
        if matches!(self.state, State::Closed(_)) || !(hard || self.state == State::SynSent) {
            return false;
        }
        self.finish(CloseReason::Unreachable);
        true
    }

    /// Tears the connection down at once with a RESET.
    pub fn abort(&mut self, now: Time) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        if self.state == State::Connected {
            let p = self.packet(Type::Reset, self.seq_nr, &[], &[], now);
            self.out.push_back(p);
        }
        self.finish(CloseReason::Aborted);
    }

    /// The next datagram to send to [`Self::peer`]. An ack owed by the input so far comes
    /// last, once: inputs taken before polling share it (ack coalescing).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front().or_else(|| self.poll_ack())
    }

    /// The next datagram but an owed ack (which [`Self::poll_ack`] gives).
    pub(super) fn poll_packet(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Whether an ack is owed, to be taken with [`Self::poll_ack`].
    pub(super) fn ack_due(&self) -> bool {
        self.ack_due.is_some()
    }

    /// The owed ack, if one is still owed (a data packet since may have carried it).
    pub(super) fn poll_ack(&mut self) -> Option<Vec<u8>> {
        let at = self.ack_due.take()?;
        if matches!(self.state, State::Closed(_)) || !(self.ack_now || self.ack_owed >= 2) {
            return None;
        }
        self.send_state(at);
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        if matches!(self.state, State::Closed(_)) {
            return None;
        }
        [self.rto_deadline, self.ack_deadline, self.close_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    fn finish(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        // An ack still owed goes out now (the one for the peer's FIN, say).
        if let Some(at) = self.ack_due.take() {
            if self.ack_now || self.ack_owed >= 2 {
                self.send_state(at);
            }
        }
        self.state = State::Closed(reason);
        self.unsent = VecDeque::new();
        self.inflight = VecDeque::new();
        self.reorder = VecDeque::new();
        self.bytes_in_flight = 0;
        self.reorder_bytes = 0;
        self.rto_deadline = None;
        self.ack_deadline = None;
        self.ack_due = None;
        self.close_deadline = None;
        self.events.push_back(ConnEvent::Closed(reason));
    }

    fn advertised_window(&self) -> usize {
        self.config
            .recv_buffer
            .saturating_sub(self.readable.len() + self.reorder_bytes)
    }

    fn sack(&self) -> Vec<u8> {
        if self.reorder.is_empty() {
            return Vec::new();
        }
        let bits = self.reorder.len().min(MAX_SACK_LEN * 8);
        let mut mask = vec![0u8; bits.div_ceil(32) * 4];
        for (i, slot) in self.reorder.iter().take(bits).enumerate() {
            if slot.is_some() {
                if let Some(b) = mask.get_mut(i / 8) {
                    *b |= 1 << (i % 8);
                }
            }
        }
        mask
    }

    fn packet(&self, kind: Type, seq: u16, sack: &[u8], payload: &[u8], now: Time) -> Vec<u8> {
        let header = self.header(kind, seq, now);
        let mut out = Vec::new();
        encode(&header, sack, payload, &mut out);
        out
    }

    fn header(&self, kind: Type, seq: u16, now: Time) -> Header {
        Header {
            kind,
            conn_id: if kind == Type::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp: micros(now),
            timestamp_diff: self.reply_micro,
            wnd_size: u32::try_from(self.advertised_window()).unwrap_or(u32::MAX),
            seq_nr: seq,
            ack_nr: self.ack_nr,
        }
    }

    fn send_state(&mut self, now: Time) {
        let sack = self.sack();
        let p = self.packet(Type::State, self.seq_nr, &sack, &[], now);
        self.out.push_back(p);
        self.ack_owed = 0;
        self.ack_now = false;
        self.ack_deadline = None;
        self.ack_due = None;
    }

    /// Takes a sequence number for a new packet and puts it in flight (unsent yet).
    fn push_packet(&mut self, kind: Type, payload: Vec<u8>, now: Time) {
        let seq = self.seq_nr;
        self.seq_nr = self.seq_nr.wrapping_add(1);
        self.inflight.push_back(Outgoing {
            seq,
            kind,
            payload,
            sent_at: now,
            sent_order: 0,
            transmissions: 0,
            counted: false,
            sacked: false,
            resend: true,
            probe: 0,
        });
    }

    fn send_window(&self) -> usize {
        self.cc.window().min(self.peer_wnd)
    }

    fn fits(&self, len: usize) -> bool {
        self.bytes_in_flight == 0 || self.bytes_in_flight + len <= self.send_window()
    }

    /// Sends what the windows allow: packets declared lost first, then new data, then a FIN;
    /// then an ack if one is owed now.
    fn flush(&mut self, now: Time) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        let mut probe = self.zero_window_probe;
        // Resends and first transmissions of packets already numbered (SYN, FIN, lost ones).
        let mut i = 0;
        while i < self.inflight.len() {
            let Some(p) = self.inflight.get(i) else { break };
            if !p.resend || p.sacked {
                i += 1;
                continue;
            }
            let len = p.payload.len();
            // The oldest packet, once declared lost, goes at once whatever the window (as
            // TCP's fast retransmit): it is what the peer's stream waits for.
            if !(p.kind == Type::Syn || i == 0 || self.fits(len) || std::mem::take(&mut probe)) {
                break;
            }
            self.transmit(i, now);
            i += 1;
        }
        if self.state == State::Connected {
            while !self.unsent.is_empty() && self.inflight.len() < MAX_INFLIGHT {
                let size = self.mtu.size();
                let len = self.unsent.len().min(size);
                let window_ok = self.fits(len)
                    && (self.send_window() >= len
                        || self.bytes_in_flight == 0 && self.peer_wnd > 0);
                if !window_ok && !std::mem::take(&mut probe) {
                    break;
                }
                let mut payload = vec![0; len];
                copy_front(&self.unsent, &mut payload);
                self.unsent.drain(..len);
                self.push_packet(Type::Data, payload, now);
                let last = self.inflight.len() - 1;
                // A full packet may go as the path MTU probe, padded to the probe's size.
                if len == size {
                    if let Some(probe) = self.mtu.next_probe(now).filter(|&p| p > size) {
                        if let Some(o) = self.inflight.get_mut(last) {
                            o.probe = probe;
                            self.mtu.sent(o.seq, probe);
                        }
                    }
                }
                self.transmit(last, now);
            }
            if self.write_blocked
                && !self.close_requested
                && self.unsent.len() < self.config.send_buffer / 2
            {
                self.write_blocked = false;
                self.events.push_back(ConnEvent::Writable);
            }
            if self.close_requested && self.unsent.is_empty() && !self.fin_sent {
                self.fin_sent = true;
                self.push_packet(Type::Fin, Vec::new(), now);
                let last = self.inflight.len() - 1;
                self.transmit(last, now);
            }
        }
        self.zero_window_probe = probe;
        if self.state == State::Connected
            && !self.unsent.is_empty()
            && self.bytes_in_flight == 0
            && self.rto_deadline.is_none()
        {
            // The peer's window is closed: probe it when the timer fires.
            self.rto_deadline = Some(now + self.rto);
        }
        if self.ack_now || self.ack_owed >= 2 {
            self.ack_due = Some(now);
        } else if self.ack_owed > 0 && self.ack_deadline.is_none() {
            self.ack_deadline = Some(now + self.config.delayed_ack);
        }
    }

    fn transmit(&mut self, i: usize, now: Time) {
        let sack = if self.ack_owed > 0 || self.ack_now {
            self.sack()
        } else {
            Vec::new()
        };
        let Some(p) = self.inflight.get(i) else {
            return;
        };
        let (kind, seq) = (p.kind, p.seq);
        let bytes = if p.probe > 0 && p.transmissions == 0 {
            // As big as the largest packet of the probe's payload (with a full sack).
            let mut b = Vec::new();
            let header = self.header(kind, seq, now);
            encode_padded(&header, &sack, &p.payload, p.probe + UTP_OVERHEAD, &mut b);
            b
        } else {
            let payload = &p.payload;
            self.packet(kind, seq, &sack, payload, now)
        };
        let Some(p) = self.inflight.get_mut(i) else {
            return;
        };
        if p.transmissions > 0 {
            self.stats.retransmits += 1;
        }
        p.transmissions += 1;
        p.sent_at = now;
        self.tx_count += 1;
        p.sent_order = self.tx_count;
        p.resend = false;
        if !p.counted {
            p.counted = true;
            self.bytes_in_flight += p.payload.len();
        }
        self.out.push_back(bytes);
        if kind != Type::Syn {
            self.ack_owed = 0;
            self.ack_now = false;
            self.ack_deadline = None;
            self.ack_due = None;
        }
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rto);
        }
    }

    /// Takes one packet from the peer (already matched to this connection by its id).
    pub fn handle_packet(&mut self, p: &Packet<'_>, now: Time) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        let h = &p.header;
        if h.kind == Type::Reset {
            self.finish(CloseReason::Reset);
            return;
        }
        if h.kind == Type::Syn {
            // A resent SYN (our STATE was lost): answer again, if it is the one we took.
            if self.syn_seq == Some(h.seq_nr) && self.stats.bytes_received == 0 {
                self.ack_now = true;
                self.flush(now);
            } else {
                self.stats.dropped += 1;
            }
            return;
        }
        // An ack of what we never sent is a confused or hostile peer: drop the whole packet.
        let last_sent = self.seq_nr.wrapping_sub(1);
        if seq_after(h.ack_nr, last_sent) {
            self.stats.dropped += 1;
            return;
        }
        if self.state == State::SynSent {
            if h.kind == Type::State || h.kind == Type::Data || h.kind == Type::Fin {
                // Only an ack of our SYN (sequence number 1) completes the handshake.
                if h.ack_nr != last_sent {
                    self.stats.dropped += 1;
                    return;
                }
                self.state = State::Connected;
                self.ack_nr = h.seq_nr.wrapping_sub(1);
                self.events.push_back(ConnEvent::Connected);
            } else {
                return;
            }
        }
        self.reply_micro = micros(now).wrapping_sub(h.timestamp);
        self.peer_wnd = h.wnd_size as usize;
        self.handle_ack(p, now);
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        match h.kind {
            Type::Data => self.handle_data(h.seq_nr, p.payload),
            Type::Fin => self.handle_fin(h.seq_nr),
            _ => {}
        }
        self.flush(now);
        if self.fin_acked && self.eof {
            self.finish(CloseReason::Done);
        }
    }

    fn handle_ack(&mut self, p: &Packet<'_>, now: Time) {
        let h = &p.header;
        let base = self.inflight.front().map(|o| o.seq).unwrap_or(self.seq_nr);
        // Packets newly acknowledged by the cumulative ack.
        let n = usize::from(h.ack_nr.wrapping_sub(base).wrapping_add(1));
        let n = if n <= self.inflight.len() { n } else { 0 };
        let was_full = self.bytes_in_flight + self.mtu.size() > self.send_window();
        let mut acked_bytes = 0;
        let mut rtt_sample = None;
        for _ in 0..n {
            let Some(o) = self.inflight.pop_front() else {
                break;
            };
            acked_bytes += self.settle(&o, now, &mut rtt_sample);
        }
        // Selective acks: bit i is packet ack_nr + 2 + i.
        if !p.sack.is_empty() {
            for o in self.inflight.iter_mut() {
                let offset = usize::from(o.seq.wrapping_sub(h.ack_nr).wrapping_sub(2));
                let bit = p
                    .sack
                    .get(offset / 8)
                    .is_some_and(|b| b & (1 << (offset % 8)) != 0);
                if bit && !o.sacked {
                    o.sacked = true;
                    o.resend = false;
                    if o.counted {
                        o.counted = false;
                        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(o.payload.len());
                    }
                    acked_bytes += o.payload.len();
                    if o.transmissions == 1 && rtt_sample.is_none() {
                        rtt_sample = Some(now.saturating_since(o.sent_at));
                    }
                    if o.transmissions == 1 {
                        self.mtu.acked(o.seq);
                    } else {
                        self.mtu.lost(o.seq);
                    }
                    o.payload = Vec::new();
                }
            }
            // A packet is lost when three packets sent after it were selectively acked:
            // compare with the third most recent transmission among the sacked ones.
            let mut orders: Vec<u64> = self
                .inflight
                .iter()
                .filter(|o| o.sacked)
                .map(|o| o.sent_order)
                .collect();
            orders.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(&third) = orders.get(2) {
                let mut any = false;
                for o in self.inflight.iter_mut() {
                    if !o.sacked && !o.resend && o.transmissions > 0 && o.sent_order < third {
                        o.resend = true;
                        if o.counted {
                            o.counted = false;
                            self.bytes_in_flight =
                                self.bytes_in_flight.saturating_sub(o.payload.len());
                        }
                        // A lost path MTU probe says the path is smaller, not congested.
                        if !self.mtu.lost(o.seq) {
                            any = true;
                        }
                    }
                }
                if any {
                    self.stats.fast_resends += 1;
                    self.cut_window();
                }
            }
        }
        // Duplicate acks: the same cumulative ack with data in flight and nothing new.
        if n == 0
            && acked_bytes == 0
            && !self.inflight.is_empty()
            && p.payload.is_empty()
            && h.kind == Type::State
        {
            self.dup_acks += 1;
            if self.dup_acks == 3 {
                if let Some(o) = self.inflight.front_mut() {
                    if !o.sacked && !o.resend {
                        o.resend = true;
                        if o.counted {
                            o.counted = false;
                            self.bytes_in_flight =
                                self.bytes_in_flight.saturating_sub(o.payload.len());
                        }
                        self.stats.fast_resends += 1;
                        if !self.mtu.lost(o.seq) {
                            self.cut_window();
                        }
                    }
                }
            }
        } else if n > 0 {
            self.dup_acks = 0;
        }
        if n > 0 || acked_bytes > 0 {
            self.stats.bytes_acked += acked_bytes as u64;
            self.cc.sample(h.timestamp_diff, now);
            if let Some(rtt) = rtt_sample {
                self.update_rtt(rtt);
            }
            self.cc.on_ack(acked_bytes, was_full);
            self.timeouts = 0;
            self.zero_window_probe = false;
            // (Packets only sacked keep the timer running too: cheaper than a scan per ack,
            // and a timeout then resends nothing but the unsacked.)
            self.rto_deadline = if self.inflight.is_empty() {
                None
            } else {
                Some(now + self.rto)
            };
            if let Some(r) = self.recovery_until {
                if !seq_after(r, h.ack_nr) {
                    self.recovery_until = None;
                }
            }
        }
    }

    /// Accounts for a packet the cumulative ack took out of flight; returns its bytes if they
    /// were not already counted as acked by a selective ack.
    fn settle(&mut self, o: &Outgoing, now: Time, rtt: &mut Option<Duration>) -> usize {
        if o.counted {
            self.bytes_in_flight = self.bytes_in_flight.saturating_sub(o.payload.len());
        }
        if o.kind == Type::Fin {
            self.fin_acked = true;
        }
        if o.sacked {
            return 0;
        }
        if o.transmissions == 1 {
            *rtt = Some(now.saturating_since(o.sent_at));
            self.mtu.acked(o.seq);
        } else {
            self.mtu.lost(o.seq);
        }
        o.payload.len()
    }

    fn cut_window(&mut self) {
        if self.recovery_until.is_none() {
            self.cc.on_loss();
            self.recovery_until = Some(self.seq_nr.wrapping_sub(1));
        }
    }

    fn update_rtt(&mut self, sample: Duration) {
        let s = sample.as_micros() as f64;
        let (rtt, var) = match self.rtt_us {
            None => (s, s / 2.0),
            Some((rtt, var)) => {
                let delta = rtt - s;
                (rtt + (s - rtt) / 8.0, var + (delta.abs() - var) / 4.0)
            }
        };
        self.rtt_us = Some((rtt, var));
        let rto = Duration::from_micros((rtt + 4.0 * var) as u64);
        self.rto = rto.clamp(MIN_RTO, MAX_RTO);
    }

    fn handle_data(&mut self, seq: u16, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        if let Some(eof) = self.eof_seq {
            if !seq_after(eof, seq) {
                self.stats.dropped += 1;
                return;
            }
        }
        let offset = seq.wrapping_sub(self.ack_nr);
        if offset == 0 || offset >= 0x8000 {
            // Old: our ack was lost. Say again where we are.
            self.ack_now = true;
            return;
        }
        let offset = usize::from(offset);
        if offset > MAX_REORDER + 1 {
            self.stats.dropped += 1;
            return;
        }
        let held = self.readable.len() + self.reorder_bytes;
        if held + payload.len() > self.config.recv_buffer {
            self.stats.dropped += 1;
            self.window_was_closed = true;
            self.ack_now = true;
            return;
        }
        if offset == 1 {
            self.deliver(payload);
            self.ack_nr = seq;
            self.ack_owed += 1;
            // Slot i of the reorder buffer is now `ack_nr + 1 + i`: what waited for this
            // gap follows, up to the next gap.
            if !self.reorder.is_empty() {
                while let Some(Some(_)) = self.reorder.front() {
                    let Some(Some(next)) = self.reorder.pop_front() else {
                        break;
                    };
                    self.reorder_bytes = self.reorder_bytes.saturating_sub(next.len());
                    self.deliver(&next);
                    self.ack_nr = self.ack_nr.wrapping_add(1);
                }
                // The front is the missing `ack_nr + 1`: back to slot i = `ack_nr + 2 + i`.
                self.reorder.pop_front();
                while let Some(None) = self.reorder.back() {
                    self.reorder.pop_back();
                }
                self.ack_now = true;
            }
            self.try_eof();
            if self.advertised_window() < self.config.max_payload {
                self.window_was_closed = true;
            }
        } else {
            let slot = offset - 2;
            while self.reorder.len() <= slot {
                self.reorder.push_back(None);
            }
            if let Some(s) = self.reorder.get_mut(slot) {
                if s.is_none() {
                    self.reorder_bytes += payload.len();
                    *s = Some(payload.to_vec());
                }
            }
            self.ack_now = true;
        }
    }

    fn deliver(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        let was_empty = self.readable.is_empty();
        self.readable.extend(payload);
        self.stats.bytes_received += payload.len() as u64;
        if was_empty {
            self.events.push_back(ConnEvent::Readable);
        }
    }

    fn handle_fin(&mut self, seq: u16) {
        match self.eof_seq {
            Some(s) if s != seq => {
                self.stats.dropped += 1;
                return;
            }
            _ => {}
        }
        let offset = seq.wrapping_sub(self.ack_nr);
        if offset == 0 || offset >= 0x8000 || usize::from(offset) > MAX_REORDER + 1 {
            self.ack_now = true;
            return;
        }
        self.eof_seq = Some(seq);
        self.try_eof();
        self.ack_now = true;
    }

    fn try_eof(&mut self) {
        if let Some(s) = self.eof_seq {
            if !self.eof && self.ack_nr.wrapping_add(1) == s {
                self.ack_nr = s;
                self.eof = true;
                self.reorder.clear();
                self.reorder_bytes = 0;
                self.ack_now = true;
                self.events.push_back(ConnEvent::Readable);
            }
        }
    }

    /// Runs the timers: a delayed ack, retransmission, the close's deadline.
    pub fn handle_timeout(&mut self, now: Time) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        if self.close_deadline.is_some_and(|d| now >= d) {
            self.close_deadline = None;
            self.finish(if self.fin_acked {
                CloseReason::Done
            } else {
                CloseReason::Timeout
            });
            return;
        }
        if self.ack_deadline.is_some_and(|d| now >= d) {
            self.ack_deadline = None;
            if self.ack_owed > 0 {
                self.ack_now = true;
            }
        }
        if self.rto_deadline.is_some_and(|d| now >= d) {
            self.rto_deadline = None;
            self.on_rto(now);
            if matches!(self.state, State::Closed(_)) {
                return;
            }
        }
        self.flush(now);
    }

    fn on_rto(&mut self, now: Time) {
        self.timeouts += 1;
        self.stats.timeouts += 1;
        if self.state == State::SynSent {
            if self.timeouts > self.config.syn_resends {
                self.finish(CloseReason::ConnectTimeout);
                return;
            }
            if let Some(o) = self.inflight.front_mut() {
                o.resend = true;
            }
            // One second per SYN, no back-off: a dial that fails falls back to TCP soon.
            self.rto_deadline = None;
            let _ = now;
            return;
        }
        // Only the path MTU probe outstanding: it was too big, not a congestion loss. It is
        // resent without padding, and the timer neither backs off nor counts towards giving up.
        let unacked = |o: &&Outgoing| !o.sacked && o.transmissions > 0;
        if let Some((seq, _)) = self.mtu.probe() {
            let mut out = self.inflight.iter().filter(unacked);
            if out.next().is_some_and(|o| o.seq == seq) && out.next().is_none() {
                self.timeouts -= 1;
                self.mtu.lost(seq);
                self.probe_lost(seq);
                return;
            }
        }
        if self.timeouts > self.config.max_timeouts {
            self.finish(CloseReason::Timeout);
            return;
        }
        self.mtu.timed_out(self.timeouts);
        self.rto = (self.rto * 2).min(MAX_RTO);
        if self.inflight.is_empty() {
            // Nothing in flight: the peer's window was closed. Probe it with one packet.
            self.zero_window_probe = true;
            return;
        }
        self.cc.on_timeout();
        self.recovery_until = None;
        for o in self.inflight.iter_mut() {
            if !o.sacked && o.transmissions > 0 {
                o.resend = true;
                o.counted = false;
                self.mtu.lost(o.seq);
            }
        }
        self.bytes_in_flight = 0;
        self.zero_window_probe = self.peer_wnd < self.config.max_payload;
    }
}
