//! `LoadPeers`: many synthetic peers of one torrent as one sans-IO state machine with the
//! session's contract ([`Protocol`]), so the engine's own io_uring or epoll loop drives them.
//!
//! Each peer dials the target (from its own loopback address when given several), exchanges
//! handshakes and then plays its role:
//!
//! - a **seed** announces every piece, unchokes, and answers every request at once with
//!   pattern data; with `corrupt_rate` R, a share R of the seeds (spread evenly over the
//!   peer numbers, at least one) corrupt every block they serve, so a share R of the blocks
//!   is wrong and a target can tell its good peers from its bad ones and ban the latter;
//! - a **leecher** says it is interested and, once unchoked, keeps `pipeline` requests in
//!   flight over every piece in its own shuffled order, checking each block against the
//!   pattern and timing it from request to arrival.
//!
//! With `slow_readers` S, a share S of the leechers (spread evenly over the peer numbers, at
//! least one) send their first requests and then never read their socket again: the driver
//! stops reading it ([`Protocol::wants_recv`]), the kernel's buffers fill and the target is
//! left holding whatever it queued for them. They send a keep-alive now and then so that the
//! target keeps them, and do not count towards the end of a one-pass run.
//!
//! With `churn_blocks` a peer drops its connection after that many blocks and dials again.
//! A connection the target refuses or drops is dialled again after a back-off, a few times.
//! Everything measured goes into [`Stats`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::core::api::{Action, ConnId, Event};
use crate::core::wire::{
    piece_header, BlockRequest, Decoded, Decoder, Handshake, Message, Reserved, ReservedFlag,
    SplitBytes, HANDSHAKE_LEN,
};
use crate::core::{Bitfield, InfoHash, Lengths, PeerId, Rng, SendBuf, Time};
use crate::driver::Protocol;
use crate::limits::BLOCK_LEN;
use crate::load::report::Hist;

use super::pattern;

/// What a synthetic peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves pattern blocks to the target.
    Seed,
    /// Downloads every block from the target and checks it.
    Leech,
}

/// The peers' settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Its sizes.
    pub lengths: Lengths,
    /// Where the target listens.
    pub target: SocketAddr,
    /// One role per peer.
    pub roles: Vec<Role>,
    /// The first peer's number across all shards (peer ids and addresses follow from it).
    pub first_index: usize,
    /// Requests a leecher keeps in flight.
    pub pipeline: usize,
    /// Reconnect after this many blocks on one connection.
    pub churn_blocks: Option<u64>,
    /// Share of seeds that corrupt every block they serve.
    pub corrupt_rate: f64,
    /// Share of leechers that request and then never read.
    pub slow_readers: f64,
    /// Local addresses to dial from, used in turn (empty: the kernel's choice).
    pub source_ips: Vec<IpAddr>,
    /// Dials in progress at once.
    pub max_half_open: usize,
    /// Leechers start over with a new order after a full pass (for a run with a duration);
    /// otherwise a leecher stops after one pass.
    pub repeat: bool,
    /// Seeds the peers' choices (piece orders).
    pub seed: u64,
    /// Seeds and leechers alternate (seeds at even peer numbers).
    pub dual: bool,
}

/// How long a dial may take before it counts as timed out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the target may take to answer our handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Dials of one peer after the target refused or dropped it, before it gives up.
const MAX_REDIALS: u32 = 5;
/// Bytes queued to the target on one connection before a seed stops answering requests
/// until the socket drains (the target's own pipeline bounds this in practice).
const SEND_HIGH: usize = 4 << 20;
/// In a run with a duration, how long a seed that a complete target dropped waits before it
/// dials again to see whether the target lost its data (a remove and re-add, a restart).
const SEED_RECHECK: Duration = Duration::from_secs(10);
/// Housekeeping period: dials, time-outs.
const TICK: Duration = Duration::from_millis(20);
/// How often a slow reader sends a keep-alive: well inside the two minutes clients send
/// them at, and the four after which ringtorrent drops a silent peer.
const SLOW_KEEPALIVE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting to dial at `at`.
    Idle {
        at: Time,
    },
    Connecting,
    Handshaking,
    Active,
    /// Done (one pass complete, or given up, or stopped).
    Finished,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    piece: u32,
    offset: u32,
    len: u32,
    at: Time,
}

struct Peer {
    role: Role,
    /// Serves corrupt blocks.
    corrupt: bool,
    /// A leecher that stops reading after its first requests.
    slow: bool,
    /// A slow leecher whose first requests went out on this connection: it reads no more.
    stalled: bool,
    /// When a stalled leecher sends its next keep-alive.
    keepalive_at: Time,
    id: PeerId,
    from: Option<IpAddr>,
    conn: Option<ConnId>,
    phase: Phase,
    phase_since: Time,
    redials: u32,
    recv: BytesMut,
    send: SendBuf,
    send_notified: bool,
    fast: bool,
    /// What the target has (leecher: what may be asked; seed: whether it is complete).
    target_has: Bitfield,
    choked: bool,
    /// The target said it is interested (seeds only care).
    target_interested: bool,
    // Leecher.
    order: Vec<u32>,
    cursor: usize,
    next_block: u32,
    retry: VecDeque<(u32, u32, u32)>,
    outstanding: VecDeque<Outstanding>,
    // Seed.
    pending: VecDeque<BlockRequest>,
    // Measures.
    blocks_this_conn: u64,
    first_byte: Option<Time>,
    dial_started: Time,
    bytes: u64,
    active_since: Option<Time>,
    active_us: u64,
    counted_ttfb: bool,
}

/// What the run measured, summed over this shard's peers.
#[derive(Debug)]
pub struct Stats {
    /// Named counters (see `swarm::report_names`).
    pub counters: BTreeMap<&'static str, u64>,
    /// Request sent to block received, µs.
    pub latency_us: Hist,
    /// Dial to first block byte (leechers) or first request (seeds), µs.
    pub ttfb_us: Hist,
    /// Dial to handshake received, µs.
    pub handshake_us: Hist,
    /// Each peer's rate while connected, bytes per second (for fairness).
    pub peer_rates: Vec<f64>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            counters: BTreeMap::new(),
            latency_us: Hist::new(60_000_000),
            ttfb_us: Hist::new(600_000_000),
            handshake_us: Hist::new(60_000_000),
            peer_rates: Vec::new(),
        }
    }

    fn add(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }
}

/// The synthetic peers of one loop.
pub struct LoadPeers {
    s: Settings,
    rng: Rng,
    peers: Vec<Peer>,
    by_conn: HashMap<ConnId, usize>,
    next_generation: u32,
    actions: VecDeque<Action>,
    half_open: usize,
    next_tick: Time,
    /// The target has announced every piece (seen on any connection).
    target_complete: bool,
    stopping: bool,
    stats: Stats,
    decoder: Decoder,
    block_buf: Vec<u8>,
}

impl Settings {
    /// Which seed peer number `n` is, counting the seeds of all shards (dual mode puts seeds
    /// at even numbers).
    fn seed_ordinal(&self, n: usize) -> usize {
        if self.dual {
            n / 2
        } else {
            n
        }
    }

    /// Which leecher peer number `n` is, counting the leechers of all shards (dual mode puts
    /// them at odd numbers).
    fn leech_ordinal(&self, n: usize) -> usize {
        if self.dual {
            n / 2
        } else {
            n
        }
    }
}

impl LoadPeers {
    /// Peers with `settings`, the first dials due at `now`.
    pub fn new(settings: Settings, now: Time) -> LoadPeers {
        let mut rng = Rng::new(settings.seed);
        let pieces = settings.lengths.piece_count();
        let peers = settings
            .roles
            .iter()
            .enumerate()
            .map(|(i, &role)| {
                let n = settings.first_index + i;
                let mut id = *b"-RL0001-000000000000";
                let digits = format!("{n:012}");
                id[8..].copy_from_slice(digits.as_bytes());
                let mut order: Vec<u32> = (0..pieces).collect();
                rng.shuffle(&mut order);
                // Seed k (counting seeds over all shards) is bad when ceil(k R) steps up.
                let r = settings.corrupt_rate;
                let k = settings.seed_ordinal(n) as f64;
                let corrupt =
                    role == Role::Seed && r > 0.0 && ((k + 1.0) * r).ceil() > (k * r).ceil();
                // Likewise for slow leechers, by leecher number.
                let s = settings.slow_readers;
                let k = settings.leech_ordinal(n) as f64;
                let slow =
                    role == Role::Leech && s > 0.0 && ((k + 1.0) * s).ceil() > (k * s).ceil();
                Peer {
                    role,
                    corrupt,
                    slow,
                    stalled: false,
                    keepalive_at: now,
                    id: PeerId::from_bytes(id),
                    from: (!settings.source_ips.is_empty())
                        .then(|| settings.source_ips[n % settings.source_ips.len()]),
                    conn: None,
                    phase: Phase::Idle { at: now },
                    phase_since: now,
                    redials: 0,
                    recv: BytesMut::new(),
                    send: SendBuf::default(),
                    send_notified: false,
                    fast: false,
                    target_has: Bitfield::new(pieces),
                    choked: true,
                    target_interested: false,
                    order,
                    cursor: 0,
                    next_block: 0,
                    retry: VecDeque::new(),
                    outstanding: VecDeque::new(),
                    pending: VecDeque::new(),
                    blocks_this_conn: 0,
                    first_byte: None,
                    dial_started: now,
                    bytes: 0,
                    active_since: None,
                    active_us: 0,
                    counted_ttfb: false,
                }
            })
            .collect();
        LoadPeers {
            decoder: Decoder::new().with_piece_count(Some(pieces)),
            s: settings,
            rng,
            peers,
            by_conn: HashMap::new(),
            next_generation: 0,
            actions: VecDeque::new(),
            half_open: 0,
            next_tick: now,
            target_complete: false,
            stopping: false,
            stats: Stats::new(),
            block_buf: vec![0; BLOCK_LEN as usize],
        }
    }

    /// Whether the run has nothing left to do: every leecher finished its pass (or gave
    /// up) and, if there are seeds, the target has every piece or every seed gave up.
    pub fn is_done(&self) -> bool {
        let leechers_done = self
            .peers
            .iter()
            .filter(|p| p.role == Role::Leech && !p.slow)
            .all(|p| p.phase == Phase::Finished);
        let seeds_done = self.target_complete
            || self
                .peers
                .iter()
                .filter(|p| p.role == Role::Seed)
                .all(|p| p.phase == Phase::Finished);
        leechers_done && seeds_done
    }

    /// Connections open now.
    pub fn connected(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| matches!(p.phase, Phase::Handshaking | Phase::Active))
            .count()
    }

    /// Slow readers connected that have sent their requests and stopped reading.
    pub fn stalled(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.stalled && p.phase == Phase::Active)
            .count()
    }

    /// Bytes moved so far (received by leechers, sent by seeds).
    pub fn bytes(&self) -> (u64, u64) {
        let mut down = 0;
        let mut up = 0;
        for p in &self.peers {
            match p.role {
                Role::Leech => down += p.bytes,
                Role::Seed => up += p.bytes,
            }
        }
        (down, up)
    }

    /// Closes every connection and stops dialling; then `LoadPeers::finish`.
    pub fn stop(&mut self, now: Time) {
        self.stopping = true;
        for i in 0..self.peers.len() {
            if let Some(conn) = self.peers[i].conn {
                self.close(i, conn, now);
            }
            self.peers[i].phase = Phase::Finished;
        }
    }

    /// Takes the measurements, with each peer's rate over its connected time.
    pub fn take_stats(&mut self, now: Time) -> Stats {
        for p in &mut self.peers {
            if let Some(since) = p.active_since.take() {
                p.active_us += now.saturating_since(since).as_micros() as u64;
            }
            if p.active_us > 0 {
                self.stats
                    .peer_rates
                    .push(p.bytes as f64 / (p.active_us as f64 / 1e6));
            }
        }
        let (down, up) = self.bytes();
        self.stats.add("bytes.down", down);
        self.stats.add("bytes.up", up);
        std::mem::replace(&mut self.stats, Stats::new())
    }

    fn conn_peer(&self, conn: ConnId) -> Option<usize> {
        self.by_conn.get(&conn).copied()
    }

    fn dial(&mut self, i: usize, now: Time) {
        self.next_generation = self.next_generation.wrapping_add(1);
        let conn = ConnId {
            slot: i as u32,
            generation: self.next_generation,
        };
        let p = &mut self.peers[i];
        p.conn = Some(conn);
        p.phase = Phase::Connecting;
        p.phase_since = now;
        p.dial_started = now;
        p.recv.clear();
        p.send = SendBuf::default();
        p.send_notified = false;
        p.choked = true;
        p.stalled = false;
        p.blocks_this_conn = 0;
        p.pending.clear();
        self.by_conn.insert(conn, i);
        self.half_open += 1;
        self.stats.add("conn.dials", 1);
        self.actions.push_back(Action::Connect {
            conn,
            addr: self.s.target,
            from: p.from,
        });
    }

    /// Ends peer `i`'s connection (our side), keeping its progress.
    fn close(&mut self, i: usize, conn: ConnId, now: Time) {
        self.forget(i, now);
        self.actions.push_back(Action::Close { conn });
    }

    /// Forgets peer `i`'s connection: requests in flight go back to be asked again.
    fn forget(&mut self, i: usize, now: Time) {
        let p = &mut self.peers[i];
        if let Some(conn) = p.conn.take() {
            self.by_conn.remove(&conn);
        }
        if p.phase == Phase::Connecting {
            self.half_open -= 1;
        }
        if let Some(since) = p.active_since.take() {
            p.active_us += now.saturating_since(since).as_micros() as u64;
        }
        for o in p.outstanding.drain(..) {
            p.retry.push_back((o.piece, o.offset, o.len));
        }
    }

    fn queue(&mut self, i: usize, bytes: &[u8]) {
        let p = &mut self.peers[i];
        p.send.push_bytes(bytes);
        self.notify(i);
    }

    fn notify(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if !p.send_notified && !p.send.is_empty() {
            p.send_notified = true;
            if let Some(conn) = p.conn {
                self.actions.push_back(Action::Send { conn });
            }
        }
    }

    fn on_handshake(&mut self, i: usize, theirs: Handshake, now: Time) {
        let lengths = self.s.lengths;
        let p = &mut self.peers[i];
        p.phase = Phase::Active;
        p.phase_since = now;
        p.active_since = Some(now);
        p.redials = 0;
        p.fast = theirs.reserved.fast();
        self.stats.add("conn.handshakes", 1);
        self.stats
            .handshake_us
            .record(now.saturating_since(p.dial_started).as_micros() as u64);
        let mut out = Vec::new();
        match p.role {
            Role::Seed => {
                if p.fast {
                    Message::HaveAll.encode(&mut out);
                } else {
                    let bytes = Bitfield::full(lengths.piece_count()).to_wire();
                    Message::Bitfield {
                        bits: SplitBytes::single(&bytes),
                    }
                    .encode(&mut out);
                }
                Message::Unchoke.encode(&mut out);
            }
            Role::Leech => {
                if p.fast {
                    Message::HaveNone.encode(&mut out);
                }
                Message::Interested.encode(&mut out);
            }
        }
        self.queue(i, &out);
    }

    /// Handles whole messages at the front of peer `i`'s receive buffer.
    fn on_messages(&mut self, i: usize, now: Time) {
        let mut recv = std::mem::take(&mut self.peers[i].recv);
        let mut used = 0;
        while let Some(conn) = self.peers[i].conn {
            let decoded = self.decoder.decode(SplitBytes::single(&recv[used..]));
            match decoded {
                Ok(Decoded::Complete { value, consumed }) => {
                    used += consumed;
                    if !self.on_message(i, value, now) {
                        self.stats.add("conn.closed_protocol", 1);
                        self.close(i, conn, now);
                        self.redial_later(i, now);
                        break;
                    }
                    // Churn exactly at K blocks: what follows on this connection is dropped
                    // with it (its requests are asked again on the next one).
                    if self
                        .s
                        .churn_blocks
                        .is_some_and(|k| self.peers[i].blocks_this_conn >= k)
                    {
                        break;
                    }
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(_) => {
                    self.stats.add("conn.closed_protocol", 1);
                    self.close(i, conn, now);
                    self.redial_later(i, now);
                    break;
                }
            }
        }
        recv.advance(used);
        let p = &mut self.peers[i];
        if p.conn.is_some() {
            p.recv = recv;
        }
        self.after_messages(i, now);
    }

    /// One message from the target; `false` if it broke the protocol.
    fn on_message(&mut self, i: usize, msg: Message<'_>, now: Time) -> bool {
        let lengths = self.s.lengths;
        let pieces = lengths.piece_count();
        let p = &mut self.peers[i];
        match msg {
            Message::Bitfield { bits } => {
                let Ok(b) = Bitfield::from_wire(bits, pieces) else {
                    return false;
                };
                p.target_has = b;
            }
            Message::HaveAll => p.target_has = Bitfield::full(pieces),
            Message::HaveNone => p.target_has = Bitfield::new(pieces),
            Message::Have { piece } => {
                if piece >= pieces {
                    return false;
                }
                p.target_has.set(piece);
            }
            Message::Choke => {
                p.choked = true;
                if !p.fast {
                    for o in p.outstanding.drain(..) {
                        p.retry.push_back((o.piece, o.offset, o.len));
                    }
                }
            }
            Message::Unchoke => p.choked = false,
            Message::Reject(r) => {
                if let Some(k) = p
                    .outstanding
                    .iter()
                    .position(|o| o.piece == r.piece && o.offset == r.offset)
                {
                    let o = p.outstanding.remove(k).expect("found");
                    p.retry.push_back((o.piece, o.offset, o.len));
                    self.stats.add("blocks.rejected", 1);
                }
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                let Some(k) = p
                    .outstanding
                    .iter()
                    .position(|o| o.piece == piece && o.offset == offset)
                else {
                    self.stats.add("blocks.unrequested", 1);
                    return true;
                };
                let o = p.outstanding.remove(k).expect("found");
                if data.len() != o.len as usize {
                    return false;
                }
                let at = lengths
                    .piece(piece)
                    .map_or(0, |pi| lengths.offset_of(pi) + u64::from(offset));
                // Every chunk is checked (no short-circuit needed: the position advances).
                let mut pos = at;
                let mut ok = true;
                for chunk in data.chunks() {
                    ok &= pattern::matches(pos, chunk);
                    pos += chunk.len() as u64;
                }
                self.stats
                    .add(if ok { "blocks.ok" } else { "blocks.bad" }, 1);
                self.stats
                    .latency_us
                    .record(now.saturating_since(o.at).as_micros() as u64);
                p.bytes += u64::from(o.len);
                p.blocks_this_conn += 1;
                if p.first_byte.is_none() {
                    p.first_byte = Some(now);
                }
                if !p.counted_ttfb {
                    p.counted_ttfb = true;
                    self.stats
                        .ttfb_us
                        .record(now.saturating_since(p.dial_started).as_micros() as u64);
                }
            }
            Message::Request(r) => {
                if p.role != Role::Seed {
                    self.stats.add("requests.to_leecher", 1);
                    return true;
                }
                if lengths.block_at(r.piece, r.offset, r.len).is_none() || r.len > 128 * 1024 {
                    return false;
                }
                if !p.counted_ttfb {
                    p.counted_ttfb = true;
                    self.stats
                        .ttfb_us
                        .record(now.saturating_since(p.dial_started).as_micros() as u64);
                }
                p.pending.push_back(r);
            }
            Message::Cancel(r) => {
                p.pending
                    .retain(|q| !(q.piece == r.piece && q.offset == r.offset));
            }
            // A target that wants something of a seed is not complete (any more: a target
            // that lost its data, removed and added again or restarted, starts over).
            Message::Interested => {
                p.target_interested = true;
                if p.role == Role::Seed {
                    self.target_complete = false;
                }
            }
            // A target that loses interest in a peer with every piece wants nothing more:
            // it is complete (targets need not send `have` to seeds, so this is the signal).
            Message::NotInterested => {
                if p.role == Role::Seed && p.target_interested {
                    self.target_complete = true;
                }
                p.target_interested = false;
            }
            Message::KeepAlive
            | Message::Port { .. }
            | Message::Suggest { .. }
            | Message::AllowedFast { .. }
            | Message::Extended { .. }
            | Message::HashRequest(_)
            | Message::Hashes { .. }
            | Message::HashReject(_) => {}
        }
        if p.role == Role::Seed && p.target_has.count() == pieces && !self.target_complete {
            self.target_complete = true;
        }
        true
    }

    /// After input: serve (seed), request (leecher), churn, finish a pass.
    fn after_messages(&mut self, i: usize, now: Time) {
        let Some(conn) = self.peers[i].conn else {
            return;
        };
        if self.peers[i].phase != Phase::Active {
            return;
        }
        match self.peers[i].role {
            Role::Seed => self.serve(i),
            Role::Leech => self.request(i, now),
        }
        if let Some(k) = self.s.churn_blocks {
            if self.peers[i].blocks_this_conn >= k && !self.stopping {
                self.stats.add("churn.reconnects", 1);
                self.close(i, conn, now);
                self.peers[i].phase = Phase::Idle { at: now };
                return;
            }
        }
        let p = &self.peers[i];
        if p.role == Role::Leech
            && p.cursor >= p.order.len()
            && p.retry.is_empty()
            && p.outstanding.is_empty()
        {
            self.stats.add("peers.passes", 1);
            if self.s.repeat && !self.stopping {
                let p = &mut self.peers[i];
                self.rng.shuffle(&mut p.order);
                p.cursor = 0;
                p.next_block = 0;
                self.request(i, now);
            } else {
                self.close(i, conn, now);
                self.peers[i].phase = Phase::Finished;
            }
        }
    }

    /// A seed answers queued requests while its send buffer has room.
    fn serve(&mut self, i: usize) {
        let lengths = self.s.lengths;
        while self.peers[i].send.len() < SEND_HIGH {
            let Some(r) = self.peers[i].pending.pop_front() else {
                break;
            };
            let Some(piece) = lengths.piece(r.piece) else {
                continue;
            };
            let at = lengths.offset_of(piece) + u64::from(r.offset);
            let buf = &mut self.block_buf;
            buf.resize(r.len as usize, 0);
            pattern::fill(at, buf);
            if self.peers[i].corrupt {
                buf[0] ^= 0xFF;
                self.stats.add("blocks.corrupt_sent", 1);
            }
            let block = Bytes::copy_from_slice(buf);
            let p = &mut self.peers[i];
            p.send.push_bytes(&piece_header(r.piece, r.offset, r.len));
            p.send.push_shared(block);
            p.bytes += u64::from(r.len);
            p.blocks_this_conn += 1;
            self.stats.add("blocks.served", 1);
        }
        self.notify(i);
    }

    /// A leecher tops up its requests.
    fn request(&mut self, i: usize, now: Time) {
        let lengths = self.s.lengths;
        let pipeline = self.s.pipeline.max(1);
        let mut out = Vec::new();
        let p = &mut self.peers[i];
        if p.choked {
            return;
        }
        // Blocks to ask again (rejected, or left from a dropped connection) go first, but only
        // those the target has now: asking it for the others would only earn rejects, and
        // asking again at once for each makes a storm of them.
        let mut later = Vec::new();
        while p.outstanding.len() < pipeline {
            let retry = loop {
                match p.retry.pop_front() {
                    Some(r) if !p.target_has.get(r.0) => later.push(r),
                    other => break other,
                }
            };
            let next = if let Some(r) = retry {
                Some(r)
            } else {
                loop {
                    let Some(&piece) = p.order.get(p.cursor) else {
                        break None;
                    };
                    let pi = lengths.piece(piece).expect("orders hold valid pieces");
                    if !p.target_has.get(piece) {
                        p.cursor += 1;
                        p.next_block = 0;
                        continue;
                    }
                    let Some(b) = lengths.block(pi, p.next_block) else {
                        p.cursor += 1;
                        p.next_block = 0;
                        continue;
                    };
                    p.next_block += 1;
                    break Some((piece, b.offset, b.len));
                }
            };
            let Some((piece, offset, len)) = next else {
                break;
            };
            Message::Request(BlockRequest { piece, offset, len }).encode(&mut out);
            p.outstanding.push_back(Outstanding {
                piece,
                offset,
                len,
                at: now,
            });
        }
        p.retry.extend(later);
        if !out.is_empty() {
            self.queue(i, &out);
            let p = &mut self.peers[i];
            if p.slow && !p.stalled {
                // The requests are out; from now on nothing is read.
                p.stalled = true;
                p.keepalive_at = now + SLOW_KEEPALIVE;
                self.stats.add("peers.stalled", 1);
            }
        }
    }

    /// After the target refused or dropped peer `i`: dial again after a back-off, a few
    /// times, then give up.
    fn redial_later(&mut self, i: usize, now: Time) {
        let p = &mut self.peers[i];
        if self.stopping || p.phase == Phase::Finished {
            return;
        }
        p.redials += 1;
        if p.redials > MAX_REDIALS {
            p.phase = Phase::Finished;
            self.stats.add("peers.gave_up", 1);
            return;
        }
        let backoff = Duration::from_millis(250) * (1 << p.redials.min(6));
        p.phase = Phase::Idle { at: now + backoff };
        self.stats.add("conn.redials", 1);
    }
}

impl Protocol for LoadPeers {
    fn accept(&mut self, _addr: SocketAddr, _now: Time) -> Option<ConnId> {
        None
    }

    fn handle_connected(&mut self, conn: ConnId, now: Time) {
        let Some(i) = self.conn_peer(conn) else {
            return;
        };
        self.half_open -= 1;
        let p = &mut self.peers[i];
        p.phase = Phase::Handshaking;
        p.phase_since = now;
        // A new connection: what the target had on the last one (before a restart, a pause
        // or a remove) says nothing now; its bitfield will tell.
        p.target_has = Bitfield::new(self.s.lengths.piece_count());
        self.stats.add("conn.connected", 1);
        let reserved = Reserved::NONE.with(ReservedFlag::Fast, true);
        let hs = Handshake::new(reserved, self.s.info_hash, p.id).to_bytes();
        self.queue(i, &hs);
    }

    fn handle_recv(&mut self, conn: ConnId, data: &[u8], now: Time) {
        let Some(i) = self.conn_peer(conn) else {
            return;
        };
        if self.peers[i].stalled {
            // What the driver read before it saw the stop is dropped unread.
            return;
        }
        self.peers[i].recv.extend_from_slice(data);
        if self.peers[i].phase == Phase::Handshaking {
            let decoded = Handshake::decode(SplitBytes::single(&self.peers[i].recv));
            match decoded {
                Ok(Decoded::Complete { value, .. }) if value.info_hash == self.s.info_hash => {
                    self.peers[i].recv.advance(HANDSHAKE_LEN);
                    self.on_handshake(i, value, now);
                }
                Ok(Decoded::Incomplete { .. }) => return,
                _ => {
                    self.stats.add("conn.bad_handshake", 1);
                    self.close(i, conn, now);
                    self.redial_later(i, now);
                    return;
                }
            }
        }
        if self.peers[i].phase == Phase::Active {
            self.on_messages(i, now);
        }
    }

    fn handle_sent(&mut self, conn: ConnId, n: usize, _now: Time) {
        let Some(i) = self.conn_peer(conn) else {
            return;
        };
        let p = &mut self.peers[i];
        p.send.consume(n);
        if p.send.is_empty() {
            p.send_notified = false;
        }
        if p.role == Role::Seed && p.phase == Phase::Active {
            self.serve(i);
        }
    }

    fn handle_closed(&mut self, conn: ConnId, now: Time) {
        let Some(i) = self.conn_peer(conn) else {
            return;
        };
        let p = &self.peers[i];
        // A target that is complete drops its seeds (both sides have everything): the seed's
        // work is done, not an error to retry.
        if p.role == Role::Seed && self.target_complete && p.phase == Phase::Active {
            self.stats.add("conn.closed_when_complete", 1);
            self.forget(i, now);
            // In a run with a duration the seed looks in again now and then, in case the
            // target lost its data since; otherwise its work is done.
            self.peers[i].phase = if self.s.repeat {
                Phase::Idle {
                    at: now + SEED_RECHECK,
                }
            } else {
                Phase::Finished
            };
            return;
        }
        if p.corrupt && p.phase == Phase::Active {
            self.stats.add("corrupt_peers.dropped", 1);
        }
        let name = match p.phase {
            Phase::Connecting => "conn.refused",
            Phase::Handshaking => "conn.closed_in_handshake",
            _ => "conn.closed_by_target",
        };
        self.stats.add(name, 1);
        self.forget(i, now);
        self.redial_later(i, now);
    }

    fn wants_recv(&self, conn: ConnId) -> bool {
        self.conn_peer(conn).is_none_or(|i| !self.peers[i].stalled)
    }

    fn send_chunks(&mut self, conn: ConnId) -> Vec<&[u8]> {
        match self.conn_peer(conn) {
            Some(i) => self.peers[i].send.chunks().collect(),
            None => Vec::new(),
        }
    }

    fn take_send(&mut self, conn: ConnId, max: usize) -> Vec<Bytes> {
        let Some(i) = self.conn_peer(conn) else {
            return Vec::new();
        };
        let p = &mut self.peers[i];
        let taken = p.send.take_upto(max);
        if p.send.is_empty() {
            p.send_notified = false;
        }
        if p.role == Role::Seed && p.phase == Phase::Active {
            self.serve(i);
        }
        taken
    }

    fn handle_timeout(&mut self, now: Time) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            match p.phase {
                Phase::Idle { .. }
                    if self.target_complete && p.role == Role::Seed && !self.s.repeat =>
                {
                    self.peers[i].phase = Phase::Finished;
                }
                Phase::Idle { at }
                    if at <= now && !self.stopping && self.half_open < self.s.max_half_open =>
                {
                    self.dial(i, now);
                }
                Phase::Connecting if now.saturating_since(p.phase_since) >= CONNECT_TIMEOUT => {
                    let conn = p.conn.expect("connecting peers have a connection");
                    self.stats.add("conn.connect_timeout", 1);
                    self.close(i, conn, now);
                    self.redial_later(i, now);
                }
                Phase::Handshaking if now.saturating_since(p.phase_since) >= HANDSHAKE_TIMEOUT => {
                    let conn = p.conn.expect("handshaking peers have a connection");
                    self.stats.add("conn.handshake_timeout", 1);
                    self.close(i, conn, now);
                    self.redial_later(i, now);
                }
                Phase::Active if p.stalled && now >= p.keepalive_at => {
                    self.peers[i].keepalive_at = now + SLOW_KEEPALIVE;
                    self.queue(i, &[0, 0, 0, 0]);
                }
                _ => {}
            }
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        None
    }

    fn poll_timeout(&self) -> Option<Time> {
        Some(self.next_tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(leechers: usize, slow_readers: f64) -> Settings {
        Settings {
            info_hash: InfoHash::from_bytes([7; 20]),
            lengths: Lengths::new(4 << 20, 256 * 1024).unwrap(),
            target: "127.0.0.1:6881".parse().unwrap(),
            roles: vec![Role::Leech; leechers],
            first_index: 0,
            pipeline: 8,
            churn_blocks: None,
            corrupt_rate: 0.0,
            slow_readers,
            source_ips: Vec::new(),
            max_half_open: leechers,
            repeat: false,
            seed: 1,
            dual: false,
        }
    }

    fn connects(p: &mut LoadPeers) -> Vec<ConnId> {
        std::iter::from_fn(|| p.poll_action())
            .filter_map(|a| match a {
                Action::Connect { conn, .. } => Some(conn),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn slow_readers_are_the_share_asked_for_and_stop_reading_after_their_requests() {
        let now = Time::from_secs(1);
        let mut p = LoadPeers::new(settings(10, 0.3), now);
        assert_eq!(p.peers.iter().filter(|q| q.slow).count(), 3);
        // Slow readers do not hold up the end of a one-pass run.
        for q in p.peers.iter_mut().filter(|q| !q.slow) {
            q.phase = Phase::Finished;
        }
        assert!(p.is_done());

        let mut p = LoadPeers::new(settings(1, 1.0), now);
        p.handle_timeout(now);
        let conn = connects(&mut p)[0];
        p.handle_connected(conn, now);
        let _ = p.take_send(conn, usize::MAX);
        assert!(p.wants_recv(conn));
        // The target's handshake, have-all and unchoke: the leecher asks and then stalls.
        let hs = Handshake::new(Reserved::NONE, p.s.info_hash, PeerId::from_bytes([9; 20]));
        let mut bytes = hs.to_bytes().to_vec();
        Message::Bitfield {
            bits: SplitBytes::single(&Bitfield::full(16).to_wire()),
        }
        .encode(&mut bytes);
        Message::Unchoke.encode(&mut bytes);
        p.handle_recv(conn, &bytes, now);
        let sent = p.take_send(conn, usize::MAX).concat();
        assert_eq!(
            sent.len(),
            5 + 8 * 17,
            "interested, then a pipeline of requests"
        );
        assert!(!p.wants_recv(conn));
        assert_eq!(p.stalled(), 1);
        // What arrives after is dropped unread, and nothing more is asked.
        p.handle_recv(conn, &[0, 0, 0, 1, 1], now);
        assert!(p.peers[0].recv.is_empty());
        // It stays: a keep-alive goes out within SLOW_KEEPALIVE.
        let later = now + SLOW_KEEPALIVE;
        p.handle_timeout(later);
        assert_eq!(p.take_send(conn, usize::MAX).concat(), vec![0, 0, 0, 0]);
        // A run of slow readers alone has nothing to wait for.
        assert!(p.is_done());
    }

    #[test]
    fn in_a_timed_run_seeds_look_in_again_on_a_target_that_lost_its_data() {
        let now = Time::from_secs(1);
        let mut st = settings(0, 0.0);
        st.roles = vec![Role::Seed];
        st.repeat = true;
        st.max_half_open = 1;
        let mut p = LoadPeers::new(st, now);
        p.handle_timeout(now);
        let conn = connects(&mut p)[0];
        p.handle_connected(conn, now);
        let _ = p.take_send(conn, usize::MAX);
        // A complete target: have-all, no interest; it drops the seed.
        let hs = Handshake::new(Reserved::NONE, p.s.info_hash, PeerId::from_bytes([9; 20]));
        let mut bytes = hs.to_bytes().to_vec();
        Message::Bitfield {
            bits: SplitBytes::single(&Bitfield::full(16).to_wire()),
        }
        .encode(&mut bytes);
        p.handle_recv(conn, &bytes, now);
        assert!(p.target_complete);
        p.handle_closed(conn, now);
        assert_eq!(p.stats.counters.get("conn.closed_when_complete"), Some(&1));
        // Not finished: after SEED_RECHECK it dials again.
        p.handle_timeout(now + TICK);
        assert!(connects(&mut p).is_empty());
        let later = now + SEED_RECHECK + TICK;
        p.handle_timeout(later);
        let conn = connects(&mut p)[0];
        p.handle_connected(conn, later);
        let _ = p.take_send(conn, usize::MAX);
        // The target lost its data: it has nothing and wants the seed's pieces.
        let mut bytes = hs.to_bytes().to_vec();
        Message::HaveNone.encode(&mut bytes);
        Message::Interested.encode(&mut bytes);
        p.handle_recv(conn, &bytes, later);
        assert!(!p.target_complete, "a target that asks is not complete");
    }

    #[test]
    fn blocks_asked_again_are_only_those_the_target_has_now() {
        let now = Time::from_secs(1);
        let mut p = LoadPeers::new(settings(1, 0.0), now);
        p.handle_timeout(now);
        let conn = connects(&mut p)[0];
        p.handle_connected(conn, now);
        let _ = p.take_send(conn, usize::MAX);
        let hs = Handshake::new(Reserved::NONE, p.s.info_hash, PeerId::from_bytes([9; 20]));
        let mut bytes = hs.to_bytes().to_vec();
        Message::HaveAll.encode(&mut bytes);
        Message::Unchoke.encode(&mut bytes);
        p.handle_recv(conn, &bytes, now);
        assert_eq!(p.peers[0].outstanding.len(), 8);
        // The target goes away with eight requests open, and comes back with one piece.
        p.handle_closed(conn, now);
        assert_eq!(p.peers[0].retry.len(), 8);
        let later = now + Duration::from_secs(30);
        p.handle_timeout(later);
        let conn = connects(&mut p)[0];
        p.handle_connected(conn, later);
        let _ = p.take_send(conn, usize::MAX);
        let mut bytes = hs.to_bytes().to_vec();
        Message::HaveNone.encode(&mut bytes);
        Message::Have { piece: 15 }.encode(&mut bytes);
        Message::Unchoke.encode(&mut bytes);
        p.handle_recv(conn, &bytes, later);
        let asked: Vec<u32> = p.peers[0].outstanding.iter().map(|o| o.piece).collect();
        assert!(!asked.is_empty());
        assert!(
            asked.iter().all(|&piece| piece == 15),
            "asked for {asked:?}"
        );
        assert_eq!(
            p.peers[0].retry.len(),
            8,
            "the rest wait for the target to have them"
        );
    }
}
