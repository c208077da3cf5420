//! The seeded swarm simulator: many sessions of the real core in one process, joined by
//! in-memory links with latency, bandwidth and loss, on a virtual clock.
//!
//! The same seed gives the same run, event for event: every choice draws from seeded
//! generators, every queue is ordered by (virtual time, sequence number), and nothing reads
//! the wall clock. A 64 MiB swarm of hundreds of peers runs in seconds because nothing waits:
//! the clock jumps to the next event.
//!
//! # The network model
//! Each node has an uplink and a downlink of fixed rate. A node sends one window (64 KiB) at a
//! time per connection, taking connections in turn, so its uplink is shared fairly, as TCP
//! flows sharing a bottleneck roughly are. A window occupies the sender's uplink for
//! `len / up_rate`, travels for the one-way latency, then occupies the receiver's downlink
//! for `len / down_rate`. Loss is modelled as delay: a lost window arrives one retransmission
//! time-out late, and, like TCP, holds back everything after it on that connection.
//!
//! Nodes may run uTP instead ([`SimConfig::transport`]): then the real uTP endpoint of
//! [`crate::utp`] runs each connection over a simulated datagram network with real
//! per-packet loss and drop-tail queues (the `utp` submodule's doc).
//!
//! # Storage
//! The payload is a deterministic pattern kept once, as one shared `Bytes` per block, so 200
//! peers cost no more memory than one copy. Seeds serve those blocks without copying;
//! corrupt peers serve altered copies; a leecher records, per block, whether what it was
//! given equals the pattern, and a piece verifies exactly when all its blocks do. That is a
//! byte-for-byte check, stricter than hashing.

mod network;
mod report;
mod utp;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use ::core::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::bencode::OwnedValue;
use crate::core::api::{Action, DiskDone, DiskOp, Event, TorrentId};
use crate::core::config::{Config, Encryption};
use crate::core::mse::SimulatedKeys;
use crate::core::session::Session;
use crate::core::TorrentStats;
use crate::core::{Bitfield, PeerId, Rng, Time};
use crate::metainfo::{Info, Torrent};

pub use crate::driver::Transport;
pub use report::{Distribution, SimReport, UtpFigures};

use network::Network;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Leechers.
    pub leechers: usize,
    /// Honest seeds, present from the start.
    pub seeds: usize,
    /// Seeds that serve corrupt blocks; they must be banned.
    pub corrupt: usize,
    /// Peers that accept connections and never answer; they must be timed out.
    pub silent: usize,
    /// Payload size in bytes.
    pub size: u64,
    /// Piece length in bytes.
    pub piece_len: u64,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Uplink rate of every node, bytes per second.
    pub up_rate: u64,
    /// Downlink rate of every node, bytes per second.
    pub down_rate: u64,
    /// Probability that a TCP window is lost (and so arrives a retransmission time-out late),
    /// and that a uTP datagram is lost (dropped: uTP resends it).
    pub loss: f64,
    /// The transport every node runs, with the engine's policy ([`Transport`]: `both` dials
    /// uTP first and falls back to TCP). TCP by default.
    pub transport: Transport,
    /// Transports handed out to the nodes in turn (node `i` gets `transport_mix[i % len]`),
    /// for swarms of mixed transports; empty: `transport` for all.
    pub transport_mix: Vec<Transport>,
    /// The longest a uTP datagram waits in a bottleneck queue (a node's uplink or downlink);
    /// one that would wait longer is dropped (drop-tail). Above LEDBAT's 100 ms target, so
    /// uTP backs off on delay before the queue overflows, as behind a home router's buffer.
    pub queue_limit: Duration,
    /// Leechers join over this window of time, uniformly, instead of all at once.
    pub join_spread: Duration,
    /// Mean time a leecher stays online before leaving for a while (churn); `None`: never.
    pub churn_mean_online: Option<Duration>,
    /// How long a churning leecher stays away before it comes back with what it had.
    pub churn_offline: Duration,
    /// Peers each node is told about at the start (as a tracker would answer).
    pub peers_per_node: usize,
    /// The run stops at this virtual time even if not every leecher finished.
    pub time_limit: Duration,
    /// Leechers start from a magnet link (the info hash only) and fetch the metadata from
    /// their peers (BEP 9) before downloading.
    pub magnet: bool,
    /// Seeds whose data is right but whose metadata is corrupt (every piece served with a
    /// byte flipped); magnet leechers must reject them and get the metadata elsewhere.
    pub bad_metadata: usize,
    /// Leechers are told only the seeds' addresses (and find each other by PEX, if at all).
    pub seeds_only: bool,
    /// The core's settings for every node.
    pub core: Config,
    /// The core's settings for honest seeds, where they differ from `core` (a seed with an
    /// upload limit serving unlimited leechers, say).
    pub seed_core: Option<Config>,
    /// Encryption policies handed out to the nodes in turn (node `i` gets
    /// `encryption_mix[i % len]`), for swarms of mixed policies; empty: `core`'s for all.
    pub encryption_mix: Vec<Encryption>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            leechers: 50,
            seeds: 1,
            corrupt: 0,
            silent: 0,
            size: 16 << 20,
            piece_len: 256 << 10,
            seed: 1,
            latency: Duration::from_millis(20),
            up_rate: 10_000_000,
            down_rate: 50_000_000,
            loss: 0.0,
            transport: Transport::Tcp,
            transport_mix: Vec::new(),
            queue_limit: Duration::from_millis(200),
            join_spread: Duration::from_secs(5),
            churn_mean_online: None,
            churn_offline: Duration::from_secs(10),
            peers_per_node: 40,
            time_limit: Duration::from_secs(3600),
            magnet: false,
            bad_metadata: 0,
            seeds_only: false,
            core: Config::default(),
            seed_core: None,
            encryption_mix: Vec::new(),
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Has everything from the start.
    Seed,
    /// Downloads.
    Leecher,
    /// Claims everything, serves garbage.
    Corrupt,
    /// Accepts connections, never says a word.
    Silent,
    /// Has everything and serves it right, but serves corrupt metadata.
    BadMetadata,
}

/// The shared payload: one `Bytes` per block, and the torrent describing it.
pub(crate) struct Payload {
    pub(crate) info: Arc<Info>,
    pub(crate) blocks: Vec<Bytes>,
    block_len: u64,
}

impl Payload {
    fn new(size: u64, piece_len: u64, seed: u64) -> Result<Payload, String> {
        let block_len = u64::from(crate::limits::BLOCK_LEN);
        let mut rng = Rng::new(seed ^ 0x5041_594C_4F41_4421);
        let mut data = vec![0u8; size as usize];
        rng.fill(&mut data);
        let pieces: Vec<u8> = data
            .chunks(piece_len as usize)
            .flat_map(|p| <[u8; 20]>::from(Sha1::digest(p)))
            .collect();
        let mut info = BTreeMap::new();
        info.insert(b"name".to_vec(), OwnedValue::str("simulated.bin"));
        info.insert(b"piece length".to_vec(), OwnedValue::Int(piece_len as i64));
        info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
        info.insert(b"length".to_vec(), OwnedValue::Int(size as i64));
        let mut root = BTreeMap::new();
        root.insert(b"info".to_vec(), OwnedValue::Dict(info));
        let torrent =
            Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes()).map_err(|e| e.to_string())?;
        let all = Bytes::from(data);
        let blocks = (0..size.div_ceil(block_len))
            .map(|i| all.slice((i * block_len) as usize..((i + 1) * block_len).min(size) as usize))
            .collect();
        Ok(Payload {
            info: Arc::new(torrent.info),
            blocks,
            block_len,
        })
    }

    fn block_index(&self, piece: u32, offset: u32) -> usize {
        ((u64::from(piece) * u64::from(self.info.lengths().piece_len()) + u64::from(offset))
            / self.block_len) as usize
    }
}

/// One simulated host.
pub(crate) struct Node {
    pub(crate) role: Role,
    /// Which transports it dials and accepts.
    pub(crate) transport: Transport,
    /// Its uTP endpoint, while online, when `transport` allows uTP.
    utp: Option<utp::UtpNode>,
    utp_timer: Option<Time>,
    pub(crate) addr: SocketAddr,
    pub(crate) session: Option<Session>,
    pub(crate) torrent: Option<TorrentId>,
    /// Per block: holds exactly the pattern.
    correct: Vec<bool>,
    /// Per block that does not hold the pattern: the SHA1 of what was written there, which is
    /// what a real disk would hash for smart ban.
    wrong: BTreeMap<usize, [u8; 20]>,
    /// Verified pieces kept across churn, as resume data would keep them.
    have: Bitfield,
    pub(crate) joined_at: Option<Time>,
    pub(crate) finished_at: Option<Time>,
    pub(crate) uploaded: u64,
    pub(crate) timer: Option<Time>,
    /// Counters of sessions this node had before it left and came back.
    pub(crate) past: TorrentStats,
}

/// Queued simulation events, ordered by time then by sequence for determinism.
#[derive(Debug)]
pub(crate) enum SimEvent {
    /// A node's session wants its timer.
    Timer(usize),
    /// A node's uTP endpoint wants its timer.
    UtpTimer(usize),
    /// A node (re)joins the swarm.
    Join(usize),
    /// A churning node leaves.
    Leave(usize),
    /// Network deliveries and connection state changes.
    Net(network::NetEvent),
}

pub(crate) struct Queue {
    heap: BinaryHeap<Reverse<(Time, u64)>>,
    items: BTreeMap<u64, SimEvent>,
    seq: u64,
}

impl Queue {
    pub(crate) fn push(&mut self, at: Time, ev: SimEvent) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.items.insert(self.seq, ev);
    }

    fn pop(&mut self) -> Option<(Time, SimEvent)> {
        let Reverse((at, seq)) = self.heap.pop()?;
        Some((
            at,
            self.items
                .remove(&seq)
                .expect("every heap entry has an item"),
        ))
    }
}

/// A simulation in progress.
pub struct Simulation {
    config: SimConfig,
    payload: Payload,
    pub(crate) nodes: Vec<Node>,
    pub(crate) queue: Queue,
    pub(crate) net: Network,
    rng: Rng,
    now: Time,
    events_handled: u64,
    banned: u64,
    hash_failures: u64,
    closes: BTreeMap<&'static str, u64>,
    banned_addrs: std::collections::BTreeSet<SocketAddr>,
    metadata_received: u64,
    metadata_wrong: u64,
    leecher_links: u64,
    /// Connections by how they are protected, counted at each end.
    crypto: BTreeMap<&'static str, u64>,
    /// Connections by transport, counted at each end.
    transports: BTreeMap<&'static str, u64>,
    /// Scratch space for reads from uTP endpoints.
    utp_buf: Vec<u8>,
    /// When the uTP windows are sampled next.
    next_sample: Time,
}

impl Simulation {
    /// Builds the swarm: the payload, its torrent, and every node.
    pub fn new(config: SimConfig) -> Result<Simulation, String> {
        if config.size == 0
            || config.seeds + config.corrupt + config.bad_metadata == 0 && config.leechers > 0
        {
            return Err("a swarm needs a payload and at least one seed".into());
        }
        let payload = Payload::new(config.size, config.piece_len, config.seed)?;
        let mut rng = Rng::new(config.seed);
        let roles = std::iter::repeat_n(Role::Seed, config.seeds)
            .chain(std::iter::repeat_n(Role::Corrupt, config.corrupt))
            .chain(std::iter::repeat_n(Role::BadMetadata, config.bad_metadata))
            .chain(std::iter::repeat_n(Role::Silent, config.silent))
            .chain(std::iter::repeat_n(Role::Leecher, config.leechers));
        let block_count = payload.blocks.len();
        let piece_count = payload.info.lengths().piece_count();
        let nodes: Vec<Node> = roles
            .enumerate()
            .map(|(i, role)| {
                let seedlike = matches!(role, Role::Seed | Role::Corrupt | Role::BadMetadata);
                let n = i as u32 + 2;
                Node {
                    role,
                    transport: utp::transport_of(&config, i),
                    utp: None,
                    utp_timer: None,
                    addr: SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8)),
                        6881,
                    ),
                    session: None,
                    torrent: None,
                    correct: vec![seedlike; block_count],
                    wrong: BTreeMap::new(),
                    have: if seedlike {
                        Bitfield::full(piece_count)
                    } else {
                        Bitfield::new(piece_count)
                    },
                    joined_at: None,
                    finished_at: None,
                    uploaded: 0,
                    timer: None,
                    past: TorrentStats::default(),
                }
            })
            .collect();
        let mut queue = Queue {
            heap: BinaryHeap::new(),
            items: BTreeMap::new(),
            seq: 0,
        };
        for (i, node) in nodes.iter().enumerate() {
            let at = match node.role {
                Role::Leecher => Time::ZERO + config.join_spread.mul_f64(rng.unit()),
                _ => Time::ZERO,
            };
            queue.push(at, SimEvent::Join(i));
        }
        let mut net = Network::new(&config, nodes.len());
        net.set_addrs(nodes.iter().map(|n| n.addr));
        Ok(Simulation {
            config,
            payload,
            nodes,
            queue,
            net,
            rng,
            now: Time::ZERO,
            events_handled: 0,
            banned: 0,
            hash_failures: 0,
            closes: BTreeMap::new(),
            banned_addrs: Default::default(),
            metadata_received: 0,
            metadata_wrong: 0,
            leecher_links: 0,
            crypto: BTreeMap::new(),
            transports: BTreeMap::new(),
            utp_buf: Vec::new(),
            next_sample: Time::ZERO,
        })
    }

    /// Runs until every leecher has finished or the time limit, and reports.
    pub fn run(mut self) -> SimReport {
        let limit = Time::ZERO + self.config.time_limit;
        while let Some((at, ev)) = self.queue.pop() {
            if at > limit {
                self.now = limit;
                break;
            }
            self.now = at;
            self.events_handled += 1;
            match ev {
                SimEvent::Join(i) => self.join(i),
                SimEvent::Leave(i) => self.leave(i),
                SimEvent::Timer(i) => {
                    if self.nodes[i].timer == Some(at) {
                        self.nodes[i].timer = None;
                        if let Some(s) = self.nodes[i].session.as_mut() {
                            s.handle_timeout(at);
                        }
                        self.drain(i);
                    }
                }
                SimEvent::UtpTimer(i) => {
                    if self.nodes[i].utp_timer == Some(at) {
                        self.nodes[i].utp_timer = None;
                        if let Some(u) = self.nodes[i].utp.as_mut() {
                            u.handle_timeout(at);
                        }
                        self.drain(i);
                    }
                }
                SimEvent::Net(ev) => {
                    for touched in network::handle(&mut self, ev) {
                        self.drain(touched);
                    }
                }
            }
            if self.now >= self.next_sample {
                self.sample_windows();
            }
            if self.all_done() {
                break;
            }
        }
        report::build(&self)
    }

    /// Samples the congestion window of every uTP connection with bytes in flight.
    fn sample_windows(&mut self) {
        self.next_sample = self.now + utp::SAMPLE_EVERY;
        let d = &mut self.net.datagrams;
        for u in self.nodes.iter().filter_map(|n| n.utp.as_ref()) {
            for w in u.sending_windows() {
                d.window_sum += w as u64;
                d.window_samples += 1;
            }
        }
    }

    fn all_done(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Leecher)
            .all(|n| n.finished_at.is_some())
    }

    fn join(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.joined_at.get_or_insert(now);
        let mut id = [0u8; 12];
        self.rng.fill(&mut id);
        let peer_id = PeerId::generate(id);
        let mut core = match (&self.config.seed_core, node.role) {
            (Some(seed_core), Role::Seed) => seed_core,
            _ => &self.config.core,
        }
        .clone();
        core.corrupt_metadata = node.role == Role::BadMetadata;
        if !self.config.encryption_mix.is_empty() {
            core.encryption = self.config.encryption_mix[i % self.config.encryption_mix.len()];
        }
        // Simulated peers stand for peers across the Internet, though their addresses are
        // loopback ones: the choker must treat them as remote.
        core.unchoke_local_peers = false;
        let seed = self.rng.next_u64();
        // Simulated runs replay, keys included (`SimulatedKeys` mixes the seed up).
        let keys = Box::new(SimulatedKeys::new(seed));
        let mut session = Session::new(core, peer_id, seed, keys, now);
        session.set_listen_port(node.addr.port());
        let torrent = if node.role == Role::Leecher && self.config.magnet {
            session.add_magnet(self.payload.info.info_hash(), now)
        } else {
            session.add_torrent(self.payload.info.clone(), &node.have, now)
        }
        .expect("a fresh session takes the torrent");
        if node.role != Role::Silent {
            // Tell the node about a random subset of the others, as a tracker would.
            let seeds_only = self.config.seeds_only;
            let mut others: Vec<SocketAddr> = (0..self.nodes.len())
                .filter(|&j| j != i && (!seeds_only || self.nodes[j].role != Role::Leecher))
                .map(|j| self.nodes[j].addr)
                .collect();
            self.rng.shuffle(&mut others);
            others.truncate(self.config.peers_per_node);
            session.add_peers(torrent, &others, now);
        }
        let node = &mut self.nodes[i];
        node.session = Some(session);
        node.torrent = Some(torrent);
        if node.transport.utp() {
            // Drawn only for uTP nodes, so that TCP runs replay as before.
            node.utp = Some(utp::UtpNode::new(node.transport, self.rng.next_u64()));
        }
        let node = &mut self.nodes[i];
        self.net.set_online(i, true);
        if node.role == Role::Leecher {
            if let Some(mean) = self.config.churn_mean_online {
                let online = mean.mul_f64(-(1.0 - self.rng.unit()).ln());
                self.queue.push(now + online, SimEvent::Leave(i));
            }
        }
        self.drain(i);
    }

    fn leave(&mut self, i: usize) {
        if self.nodes[i].finished_at.is_some() || self.nodes[i].session.is_none() {
            return;
        }
        let now = self.now;
        // Keep verified pieces, as a restart with resume data would; drop the session.
        if let (Some(s), Some(t)) = (self.nodes[i].session.as_ref(), self.nodes[i].torrent) {
            let have = s.have(t).cloned();
            let stats = s.stats(t).cloned().unwrap_or_default();
            let node = &mut self.nodes[i];
            if let Some(have) = have {
                node.have = have;
            }
            node.past.downloaded += stats.downloaded;
            node.past.wasted += stats.wasted;
            node.past.corrupt += stats.corrupt;
        }
        self.nodes[i].session = None;
        self.nodes[i].timer = None;
        self.nodes[i].utp_timer = None;
        utp::shut_down(self, i);
        let touched = self.net.drop_node(i, now, &mut self.queue);
        self.net.set_online(i, false);
        for j in touched {
            self.drain(j);
        }
        self.queue
            .push(now + self.config.churn_offline, SimEvent::Join(i));
    }

    /// Carries out everything node `i`'s session asked for, until it asks for nothing more.
    pub(crate) fn drain(&mut self, i: usize) {
        let now = self.now;
        loop {
            let Some(session) = self.nodes[i].session.as_mut() else {
                return;
            };
            let Some(action) = session.poll_action() else {
                // The endpoint's events may give the session more to do.
                if utp::pump(self, i) {
                    continue;
                }
                break;
            };
            let node = &self.nodes[i];
            let is_utp = |conn| node.utp.as_ref().is_some_and(|u| u.owns(conn));
            match action {
                Action::Connect { conn, addr, .. } => {
                    if node
                        .utp
                        .as_ref()
                        .is_some_and(|u| u.dials(node.transport, addr))
                    {
                        utp::connect(self, i, conn, addr)
                    } else if node.transport.tcp() {
                        network::connect(self, i, conn, addr)
                    } else if let Some(s) = self.nodes[i].session.as_mut() {
                        s.handle_closed(conn, now);
                    }
                }
                Action::Send { conn } if is_utp(conn) => utp::pull(self, i, conn),
                Action::Send { conn } => network::want_send(self, i, conn),
                Action::Close { conn } if is_utp(conn) => utp::close(self, i, conn),
                Action::Close { conn } => network::close(self, i, conn),
                // Each simulated node is one session and is told no routes, so nothing is
                // ever handed over; were it asked to, dropping the connection is what a
                // driver without other shards does.
                Action::HandOff { conn, .. } => {
                    let on_utp = is_utp(conn);
                    if let Some(s) = self.nodes[i].session.as_mut() {
                        let _ = s.take_handoff(conn);
                    }
                    if on_utp {
                        utp::close(self, i, conn)
                    } else {
                        network::close(self, i, conn)
                    }
                }
                Action::Disk(op) => {
                    let done = self.disk(i, op);
                    if let Some(s) = self.nodes[i].session.as_mut() {
                        s.handle_disk(done, now);
                    }
                }
            }
        }
        if self.events(i) {
            // A magnet leecher started its torrent: carry out what that asked for.
            return self.drain(i);
        }
        if let Some(at) = self.nodes[i]
            .session
            .as_ref()
            .and_then(Session::poll_timeout)
        {
            let at = at.max(now);
            if self.nodes[i].timer.is_none_or(|t| t != at) {
                self.nodes[i].timer = Some(at);
                self.queue.push(at, SimEvent::Timer(i));
            }
        }
        if let Some(at) = self.nodes[i]
            .utp
            .as_ref()
            .and_then(utp::UtpNode::poll_timeout)
        {
            let at = at.max(now);
            if self.nodes[i].utp_timer.is_none_or(|t| t != at) {
                self.nodes[i].utp_timer = Some(at);
                self.queue.push(at, SimEvent::UtpTimer(i));
            }
        }
    }

    /// Handles node `i`'s events; true if that queued more actions.
    fn events(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut again = false;
        while let Some(ev) = self.nodes[i].session.as_mut().and_then(Session::poll_event) {
            match ev {
                Event::MetadataReceived { torrent, info } => {
                    self.metadata_received += 1;
                    if info.raw() != self.payload.info.raw() {
                        self.metadata_wrong += 1;
                    }
                    let node = &mut self.nodes[i];
                    if let Some(s) = node.session.as_mut() {
                        again |= s.start_torrent(torrent, &node.have, now);
                    }
                }
                Event::PeerConnected {
                    addr, crypto, conn, ..
                } => {
                    *self.crypto.entry(crypto.name()).or_default() += 1;
                    let on_utp = self.nodes[i].utp.as_ref().is_some_and(|u| u.carried(conn));
                    *self
                        .transports
                        .entry(if on_utp { "utp" } else { "tcp" })
                        .or_default() += 1;
                    let leecher = |n: &Node| n.role == Role::Leecher;
                    if leecher(&self.nodes[i])
                        && self.nodes.iter().any(|n| n.addr == addr && leecher(n))
                    {
                        self.leecher_links += 1;
                    }
                }
                Event::TorrentComplete { .. } => {
                    let node = &mut self.nodes[i];
                    if node.role == Role::Leecher && node.finished_at.is_none() {
                        node.finished_at = Some(now);
                    }
                }
                Event::PeerBanned { addr, .. } => {
                    self.banned += 1;
                    self.banned_addrs.insert(addr);
                }
                Event::HashFailed { .. } => self.hash_failures += 1,
                Event::PeerClosed { reason, .. } => {
                    *self.closes.entry(reason.name()).or_default() += 1
                }
                _ => {}
            }
        }
        if let Some(u) = self.nodes[i].utp.as_mut() {
            u.end_turn();
        }
        again
    }

    /// Storage in memory: writes are compared with the pattern, reads served from it.
    fn disk(&mut self, i: usize, op: DiskOp) -> DiskDone {
        let node = &mut self.nodes[i];
        match op {
            DiskOp::Write {
                torrent,
                block,
                data,
            } => {
                let b = self.payload.block_index(block.piece.get(), block.offset);
                node.correct[b] = data == self.payload.blocks[b];
                if node.correct[b] {
                    node.wrong.remove(&b);
                } else {
                    node.wrong.insert(b, Sha1::digest(&data).into());
                }
                DiskDone::Written {
                    torrent,
                    block,
                    result: Ok(()),
                }
            }
            DiskOp::Read {
                torrent,
                peer,
                block,
            } => {
                let b = self.payload.block_index(block.piece.get(), block.offset);
                let mut data = self.payload.blocks[b].clone();
                if node.role == Role::Corrupt {
                    let mut bad = data.to_vec();
                    bad[0] ^= 0xff;
                    data = Bytes::from(bad);
                }
                node.uploaded += data.len() as u64;
                DiskDone::Read {
                    torrent,
                    peer,
                    block,
                    result: Ok(data),
                }
            }
            DiskOp::Verify {
                torrent,
                piece,
                block_hashes,
            } => {
                let l = self.payload.info.lengths();
                let first = self.payload.block_index(piece.get(), 0);
                let count = l.blocks_in(piece) as usize;
                let ok = node.correct[first..first + count].iter().all(|&c| c);
                // As the disk pool does: each block's SHA1 when the piece failed or they were
                // asked for.
                let block_hashes = if !ok || block_hashes {
                    (first..first + count)
                        .map(|b| match node.wrong.get(&b) {
                            Some(h) if !node.correct[b] => *h,
                            _ => Sha1::digest(&self.payload.blocks[b]).into(),
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                if !ok {
                    node.correct[first..first + count]
                        .iter_mut()
                        .for_each(|c| *c = false);
                }
                DiskDone::Verified {
                    torrent,
                    piece,
                    ok,
                    block_hashes,
                }
            }
        }
    }

    /// Whether every leecher holds exactly the payload.
    pub fn every_byte_right(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Leecher)
            .all(|n| n.correct.iter().all(|&c| c))
    }
}

/// Runs a simulation and returns its report (the common case).
pub fn simulate(config: SimConfig) -> Result<SimReport, String> {
    Ok(Simulation::new(config)?.run())
}
