//! The mainline DHT (BEP 5, with BEP 32's IPv6 table and BEP 42's node ids), sans-IO.
//!
//! Like the peer-wire [`crate::core::Session`], a `Dht` takes datagrams and timer expiries with
//! `now` and hands back datagrams to send, events and its next deadline. It owns a seeded RNG
//! (transaction ids, token secrets, node id when no external address is known); it never reads
//! a clock or a socket. Addresses are plain: a driver unmaps IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`) to `SocketAddr::V4` before handing them in, and one `Dht` serves both
//! families (an IPv4 routing table and an IPv6 one, BEP 32).
//!
//! The driver drains, after every input: `poll_transmit` until `None`, then `poll_event`, then
//! waits no longer than `poll_timeout`.
//!
//! The parts:
//! - [`krpc`]: the KRPC codec (queries, responses, errors; compact node info and peers).
//! - [`id`]: node ids, XOR distance, BEP 42 ids and their check.
//! - [`table`]: the k-bucket routing table of one family, with node liveness
//!   (good/questionable/bad, drawn in its docs) and a replacement cache.
//! - [`lookup`]: the iterative lookups (candidates, concurrency, convergence, hops; a
//!   candidate's states are drawn in its docs). A lookup as a whole is *queued* (more than
//!   [`MAX_ACTIVE_LOOKUPS`] running), then *running* (one search per family with nodes to
//!   ask), then, once every search converged and announced, *done* (`LookupDone`).
//! - [`server`]: write tokens, the store of announced peers, and the rate limits on answers.
//! - this module: [`Dht`], which owns them, matches answers to our queries by transaction id
//!   *and* source address, and runs the timers.
//!
//! What an outsider can make it hold is bounded: queries answered (a global token bucket of
//! `max_queries_per_sec` and a smaller one per source address, in a bounded table), stored
//! peers (`max_stored_torrents` x `max_peers_per_torrent`, oldest evicted, 30-minute expiry),
//! our outstanding queries ([`MAX_TRANSACTIONS`]), lookups ([`MAX_ACTIVE_LOOKUPS`] at once,
//! [`MAX_QUEUED_LOOKUPS`] waiting), nodes per lookup ([`lookup::MAX_CANDIDATES`]) and the
//! table (k = 8 per bucket, 160 buckets at most).
//!
//! Nodes join the table only by answering one of our queries. A node that queries us and would
//! fit is pinged; read-only nodes (BEP 43 `ro`) are not. With `allow_private` off, nodes on
//! loopback, private, link-local or unspecified addresses are ignored, except the bootstrap
//! nodes and those given to [`Dht::add_node`].
//!
//! Maintenance runs every 5 s: a family with fewer than 8 nodes bootstraps (`find_node` of
//! our own id through the table and the bootstrap nodes) at most once a minute, and at start;
//! buckets unchanged for 15 minutes are refreshed by a `find_node` of a random id in their
//! range; the token secret rotates every 5 minutes; stored peers expire.

pub mod fuzz;
pub mod id;
pub mod krpc;
pub mod lookup;
pub mod server;
pub mod table;

use std::collections::{BTreeMap, VecDeque};

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::bencode::{decode_with, write_bytes, Limits};
use crate::core::{InfoHash, Rng, Time};

use krpc::{code, Body, Query, Response, Want};
use lookup::{Kind, Lookup, Search};
use server::{PeerStore, RateLimit, Tokens};
use table::{Inserted, Table, K};

/// A 160-bit node id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub [u8; 20]);

/// Tuning, with defaults a public node uses.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Nodes to start from when the table is empty (already resolved by the caller).
    pub bootstrap: Vec<SocketAddr>,
    /// Which families to run (the IPv4 table, the IPv6 table).
    pub ipv4: bool,
    /// See `ipv4`.
    pub ipv6: bool,
    /// Accept nodes on loopback and private ranges (otherwise only the bootstrap nodes
    /// themselves may be such addresses). Tests and LANs turn this on.
    pub allow_private: bool,
    /// Emit `DhtEvent::Hop` for each response a lookup gets (for `dht get-peers`).
    pub trace_lookups: bool,
    /// Queries answered per second, overall (rate limit on what it answers).
    pub max_queries_per_sec: u32,
    /// Info hashes whose announced peers are stored, and peers stored per info hash.
    pub max_stored_torrents: usize,
    /// See `max_stored_torrents`.
    pub max_peers_per_torrent: usize,
    /// How long to wait for an answer to one of our queries (there are no retransmits: a
    /// lookup asks another node instead).
    pub query_timeout: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            bootstrap: Vec::new(),
            ipv4: true,
            ipv6: true,
            allow_private: false,
            trace_lookups: false,
            max_queries_per_sec: 500,
            max_stored_torrents: 3000,
            max_peers_per_torrent: 100,
            query_timeout: Duration::from_secs(1),
        }
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The bencoded KRPC message.
    pub payload: Vec<u8>,
}

/// Identifies one `get_peers` lookup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LookupId(pub u64);

/// What a lookup reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// Peers for `info_hash` (as they arrive, deduplicated within the lookup).
    Peers {
        /// The lookup.
        lookup: LookupId,
        /// The torrent.
        info_hash: InfoHash,
        /// Peer addresses (compact form from `values`).
        peers: Vec<SocketAddr>,
    },
    /// With `trace_lookups`: a node answered a lookup.
    Hop {
        /// The lookup.
        lookup: LookupId,
        /// Hop number (distance in rounds from the start, 0 = queried from the table).
        hop: u32,
        /// Who answered.
        from: SocketAddr,
        /// Closer nodes it gave.
        nodes: usize,
        /// Peers it gave.
        peers: usize,
    },
    /// The lookup ended (converged, or ran out of nodes); announced to `announced` nodes
    /// when it was asked to announce.
    LookupDone {
        /// The lookup.
        lookup: LookupId,
        /// The torrent.
        info_hash: InfoHash,
        /// Nodes that answered.
        responded: usize,
        /// `announce_peer` queries sent.
        announced: usize,
    },
}

/// Counters and gauges for metrics and the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Nodes in the IPv4 table.
    pub nodes_v4: usize,
    /// Nodes in the IPv6 table.
    pub nodes_v6: usize,
    /// Lookups running.
    pub lookups_active: usize,
    /// Lookups started since creation.
    pub lookups_total: u64,
    /// `announce_peer` queries we sent.
    pub announces_sent: u64,
    /// Queries we answered.
    pub queries_answered: u64,
    /// Queries dropped by the rate limit.
    pub queries_dropped: u64,
    /// Datagrams that were not valid KRPC.
    pub invalid_messages: u64,
    /// Info hashes with stored peers.
    pub stored_torrents: usize,
    /// Peers stored, all torrents.
    pub stored_peers: usize,
    /// Our queries waiting for an answer.
    pub outstanding_queries: usize,
}

/// Nodes asked at once per family in a lookup.
pub const ALPHA: usize = 3;
/// User lookups running at once; more wait in a queue.
pub const MAX_ACTIVE_LOOKUPS: usize = 16;
/// User lookups waiting; more end at once with nothing found.
pub const MAX_QUEUED_LOOKUPS: usize = 1024;
/// Maintenance lookups (bootstrap, refresh) running at once.
pub const MAX_MAINTENANCE_LOOKUPS: usize = 4;
/// Our queries waiting for an answer; pings are skipped and lookups wait beyond this.
pub const MAX_TRANSACTIONS: usize = 512;
/// Bucket refreshes waiting for a maintenance lookup slot.
const MAX_REFRESH_QUEUE: usize = 320;
/// Addresses given by `add_node` or as bootstrap that may be private.
pub const MAX_EXPLICIT: usize = 256;
/// Distinct nodes whose `ip` vote is kept.
pub const MAX_VOTES: usize = 64;
/// How often maintenance runs (refresh, bootstrap, token rotation, expiry).
const TICK: Duration = Duration::from_secs(5);
/// A bucket untouched this long is refreshed.
const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// A family with fewer nodes than this re-bootstraps, at most this often.
const REBOOTSTRAP_EVERY: Duration = Duration::from_secs(60);
/// The most we answer with: the largest saved table we read back.
const MAX_SAVED: usize = 256 * 1024;

/// Which lookups `advance` steps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Every running lookup (after time-outs).
    All,
    /// This one, if any (after its answer came); new and queued lookups start either way.
    One(Option<LookupId>),
}

/// Family index: 0 = IPv4, 1 = IPv6.
fn fam(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 0,
        SocketAddr::V6(_) => 1,
    }
}

/// What one of our queries was for.
#[derive(Clone, Debug)]
enum TxnKind {
    /// A ping (liveness check, or a node to try).
    Ping,
    /// A query of a lookup in family `fam`.
    Lookup { lookup: LookupId, fam: usize },
    /// An `announce_peer`.
    Announce,
}

/// One of our queries waiting for an answer.
#[derive(Clone, Debug)]
struct Txn {
    to: SocketAddr,
    /// The id we believe it has (for marking it failed in the table).
    id: Option<NodeId>,
    deadline: Time,
    kind: TxnKind,
}

/// A DHT node.
pub struct Dht {
    config: DhtConfig,
    rng: Rng,
    id: NodeId,
    /// `[IPv4, IPv6]`; `None` for a family not run.
    tables: [Option<Table>; 2],
    txns: BTreeMap<u32, Txn>,
    lookups: Vec<Lookup>,
    queued: VecDeque<Lookup>,
    /// Bucket refreshes waiting: (family, target).
    refresh_queue: VecDeque<(usize, [u8; 20])>,
    next_lookup: u64,
    tokens: Tokens,
    store: PeerStore,
    limit: RateLimit,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DhtEvent>,
    next_tick: Time,
    /// When each family last started a bootstrap lookup.
    last_bootstrap: [Option<Time>; 2],
    /// Addresses allowed even when private (bootstrap nodes, `add_node`), oldest first.
    explicit: VecDeque<SocketAddr>,
    /// BEP 42 `ip` votes: voter's IP -> the address it saw us at.
    votes: BTreeMap<IpAddr, (IpAddr, Time)>,
    stats: DhtStats,
}

impl Dht {
    /// A new node; its id is random from `seed` until `set_external_addr` gives a BEP 42 one.
    pub fn new(config: DhtConfig, seed: u64, now: Time) -> Dht {
        let mut rng = Rng::new(seed);
        let id = NodeId::random(&mut rng);
        Dht::with_id(config, id, rng, now)
    }

    fn with_id(config: DhtConfig, id: NodeId, mut rng: Rng, now: Time) -> Dht {
        let tokens = Tokens::new(&mut rng, now);
        let explicit: VecDeque<SocketAddr> = config
            .bootstrap
            .iter()
            .take(MAX_EXPLICIT)
            .copied()
            .collect();
        Dht {
            tables: [
                config.ipv4.then(|| Table::new(id, now)),
                config.ipv6.then(|| Table::new(id, now)),
            ],
            limit: RateLimit::new(config.max_queries_per_sec, now),
            config,
            rng,
            id,
            txns: BTreeMap::new(),
            lookups: Vec::new(),
            queued: VecDeque::new(),
            refresh_queue: VecDeque::new(),
            next_lookup: 1,
            tokens,
            store: PeerStore::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            // The first call to `handle_timeout` bootstraps.
            next_tick: now,
            last_bootstrap: [None, None],
            explicit,
            votes: BTreeMap::new(),
            stats: DhtStats::default(),
        }
    }

    /// A node restored from `save`'s bytes (its id and table). Bad bytes are an error, and
    /// the caller starts a fresh node instead.
    pub fn restore(config: DhtConfig, saved: &[u8], seed: u64, now: Time) -> Result<Dht, String> {
        let limits = Limits {
            max_depth: 2,
            max_values: 16,
            max_len: MAX_SAVED,
        };
        let root = decode_with(saved, &limits).map_err(|e| format!("saved DHT state: {e}"))?;
        if root.as_dict().is_none() {
            return Err("saved DHT state: not a dictionary".into());
        }
        let id: [u8; 20] = root
            .get(b"id")
            .and_then(|n| n.as_bytes())
            .and_then(|b| b.try_into().ok())
            .ok_or("saved DHT state: no 20-byte id")?;
        let mut nodes = Vec::new();
        for (key, width, v4) in [(&b"nodes"[..], 26, true), (&b"nodes6"[..], 38, false)] {
            let Some(field) = root.get(key) else { continue };
            let bytes = field
                .as_bytes()
                .ok_or("saved DHT state: nodes are not a string")?;
            if bytes.len() % width != 0 {
                return Err("saved DHT state: truncated node list".into());
            }
            for chunk in bytes.chunks_exact(width) {
                let (nid, addr) = chunk.split_at(20);
                let nid: [u8; 20] = nid.try_into().map_err(|_| "saved DHT state: bad node")?;
                let addr = krpc::compact_addr(addr).ok_or("saved DHT state: bad address")?;
                if addr.is_ipv4() != v4 || addr.port() == 0 {
                    return Err("saved DHT state: bad address".into());
                }
                nodes.push((NodeId(nid), addr));
            }
        }
        let mut dht = Dht::with_id(config, NodeId(id), Rng::new(seed), now);
        for (nid, addr) in nodes {
            if !dht.acceptable(&addr) {
                continue;
            }
            if let Some(t) = dht.tables[fam(&addr)].as_mut() {
                t.insert(nid, addr, now, false);
            }
        }
        Ok(dht)
    }

    /// The id and the nodes of both tables that are not bad, bencoded, for the state folder.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(b'd');
        write_bytes(&mut out, b"id");
        write_bytes(&mut out, &self.id.0);
        for (f, key) in [(0, &b"nodes"[..]), (1, &b"nodes6"[..])] {
            let Some(t) = &self.tables[f] else { continue };
            let nodes: Vec<(NodeId, SocketAddr)> = t
                .entries()
                .filter(|e| e.failures < table::BAD_AFTER_FAILURES)
                .map(|e| (e.id, e.addr))
                .collect();
            write_bytes(&mut out, key);
            write_bytes(&mut out, &krpc::compact_nodes_bytes(&nodes));
        }
        out.push(b'e');
        out
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Our address as others see it (a tracker's `external ip`, a peer's `yourip`, KRPC `ip`):
    /// the id is regenerated to satisfy BEP 42 if it does not already.
    pub fn set_external_addr(&mut self, ip: IpAddr, now: Time) {
        if self.id.valid_for(ip) {
            return;
        }
        self.id = NodeId::bep42(ip, &mut self.rng);
        // The buckets are laid out around our id: rebuild them around the new one.
        for slot in &mut self.tables {
            if let Some(old) = slot.take() {
                let mut t = Table::new(self.id, now);
                for e in old.entries() {
                    t.insert(
                        e.id,
                        e.addr,
                        e.last_seen.unwrap_or(now),
                        e.last_seen.is_some(),
                    );
                }
                *slot = Some(t);
            }
        }
    }

    /// The address most nodes reported seeing us at (BEP 42 `ip` in their responses), with
    /// the number of distinct nodes (by IP) that said so. The driver may pass it to
    /// `set_external_addr` once enough agree.
    pub fn external_addr_vote(&self) -> Option<(IpAddr, usize)> {
        let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (ip, _) in self.votes.values() {
            *counts.entry(*ip).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(ip, n)| (*n, *ip))
    }

    /// A node to try (a `port` message, a torrent's `nodes`): pinged, and kept if it answers.
    pub fn add_node(&mut self, addr: SocketAddr, now: Time) {
        if addr.port() == 0 || self.tables[fam(&addr)].is_none() {
            return;
        }
        if !self.explicit.contains(&addr) {
            if self.explicit.len() >= MAX_EXPLICIT {
                self.explicit.pop_front();
            }
            self.explicit.push_back(addr);
        }
        self.ping(addr, None, now);
    }

    fn acceptable(&self, addr: &SocketAddr) -> bool {
        addr.port() != 0
            && (self.config.allow_private
                || id::is_public(addr.ip())
                || self.explicit.contains(addr))
    }

    fn new_tid(&mut self) -> u32 {
        loop {
            let t = self.rng.next_u64() as u32;
            if !self.txns.contains_key(&t) {
                return t;
            }
        }
    }

    fn send_query(
        &mut self,
        to: SocketAddr,
        id: Option<NodeId>,
        query: &Query,
        kind: TxnKind,
        now: Time,
    ) -> bool {
        if self.txns.len() >= MAX_TRANSACTIONS {
            return false;
        }
        let tid = self.new_tid();
        let payload = krpc::encode_query(&tid.to_be_bytes(), &self.id, query, false);
        self.txns.insert(
            tid,
            Txn {
                to,
                id,
                deadline: now + self.config.query_timeout,
                kind,
            },
        );
        self.transmits.push_back(Transmit { to, payload });
        true
    }

    fn ping(&mut self, to: SocketAddr, id: Option<NodeId>, now: Time) {
        if self.txns.values().any(|t| t.to == to) {
            return;
        }
        self.send_query(to, id, &Query::Ping, TxnKind::Ping, now);
    }

    fn want(&self) -> Option<Want> {
        (self.config.ipv4 && self.config.ipv6).then_some(Want { n4: true, n6: true })
    }

    /// A datagram that arrived (the caller already checked its first byte is `d`).
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Time) {
        let msg = match krpc::decode(data) {
            Ok(m) => m,
            Err(bad) => {
                self.stats.invalid_messages += 1;
                if let Some(tid) = bad.reply_tid {
                    if self.limit.allow(from.ip(), now) {
                        self.stats.queries_answered += 1;
                        let payload = krpc::encode_error(&tid, code::PROTOCOL, bad.reason);
                        self.transmits.push_back(Transmit { to: from, payload });
                    } else {
                        self.stats.queries_dropped += 1;
                    }
                }
                return;
            }
        };
        let touched = match msg.body {
            Body::Query {
                id,
                query,
                read_only,
            } => {
                self.on_query(from, &msg.tid, id, query, read_only, now);
                None
            }
            Body::Response { id, response, ip } => {
                self.on_response(from, &msg.tid, id, response, ip, now)
            }
            Body::Error { .. } => self.on_error(from, &msg.tid, now),
        };
        // Only the lookup the datagram was for can move.
        self.advance(now, Step::One(touched));
    }

    fn on_query(
        &mut self,
        from: SocketAddr,
        tid: &[u8],
        id: NodeId,
        query: Query,
        read_only: bool,
        now: Time,
    ) {
        if self.tables[fam(&from)].is_none() || from.port() == 0 {
            return;
        }
        if !self.limit.allow(from.ip(), now) {
            self.stats.queries_dropped += 1;
            return;
        }
        self.stats.queries_answered += 1;
        let asker_fam = fam(&from);
        let nodes_for = |dht: &Dht, target: &[u8; 20], want: Option<Want>| {
            let (n4, n6) = match want {
                Some(w) => (w.n4, w.n6),
                None => (asker_fam == 0, asker_fam == 1),
            };
            let mut r = Response::default();
            if n4 {
                if let Some(t) = &dht.tables[0] {
                    r.nodes = t.closest(target, K, now);
                }
            }
            if n6 {
                if let Some(t) = &dht.tables[1] {
                    r.nodes6 = t.closest(target, K, now);
                }
            }
            r
        };
        let response = match query {
            Query::Ping => Response::default(),
            Query::FindNode { target, want } => nodes_for(self, &target.0, want),
            Query::GetPeers { info_hash, want } => {
                let mut r = nodes_for(self, info_hash.as_bytes(), want);
                // Peers of the asker's family, as many as keep the answer under ~1.5 KB.
                let budget = if asker_fam == 0 { 100 } else { 45 };
                r.values = self
                    .store
                    .get(&info_hash, server::MAX_STORED_SCAN)
                    .into_iter()
                    .filter(|p| fam(p) == asker_fam)
                    .take(budget.min(server::MAX_VALUES_SENT))
                    .collect();
                r.token = Some(self.tokens.token(from.ip()));
                r
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if !self.tokens.check(from.ip(), &token) {
                    let payload = krpc::encode_error(tid, code::PROTOCOL, "bad token");
                    self.transmits.push_back(Transmit { to: from, payload });
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                let peer = SocketAddr::new(from.ip(), port);
                self.store.announce(
                    info_hash,
                    peer,
                    now,
                    self.config.max_stored_torrents,
                    self.config.max_peers_per_torrent,
                );
                Response::default()
            }
            Query::Unknown => {
                let payload = krpc::encode_error(tid, code::METHOD_UNKNOWN, "Method Unknown");
                self.transmits.push_back(Transmit { to: from, payload });
                return;
            }
        };
        let payload = krpc::encode_response(tid, &self.id, &response, Some(&from));
        self.transmits.push_back(Transmit { to: from, payload });
        // The asker is a node too: known ones are alive; new ones are worth a ping where the
        // table has room (read-only nodes are never added).
        if read_only || !self.acceptable(&from) {
            return;
        }
        let Some(table) = self.tables[asker_fam].as_mut() else {
            return;
        };
        if table.get(&id).is_some() {
            table.heard_from(&id, &from, now);
        } else if table.would_accept(&id, now) {
            // Half the transaction room at most goes to pings of strangers.
            if self.txns.len() < MAX_TRANSACTIONS / 2 {
                self.ping(from, Some(id), now);
            }
        }
    }

    fn take_txn(&mut self, from: &SocketAddr, tid: &[u8]) -> Option<Txn> {
        let tid: [u8; 4] = tid.try_into().ok()?;
        let tid = u32::from_be_bytes(tid);
        match self.txns.get(&tid) {
            Some(t) if t.to == *from => self.txns.remove(&tid),
            _ => None,
        }
    }

    fn on_response(
        &mut self,
        from: SocketAddr,
        tid: &[u8],
        id: NodeId,
        response: Response,
        ip: Option<SocketAddr>,
        now: Time,
    ) -> Option<LookupId> {
        let txn = self.take_txn(&from, tid)?;
        if let Some(seen) = ip {
            if self.votes.len() >= MAX_VOTES && !self.votes.contains_key(&from.ip()) {
                let oldest = self
                    .votes
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.votes.remove(&k);
                }
            }
            self.votes.insert(from.ip(), (seen.ip(), now));
        }
        let f = fam(&from);
        if self.acceptable(&from) {
            let inserted = self.tables[f]
                .as_mut()
                .map(|t| t.insert(id, from, now, true));
            if let Some(Inserted::Cached(questionable)) = inserted {
                for (qid, qaddr) in questionable {
                    if self.txns.len() < MAX_TRANSACTIONS / 2 {
                        self.ping(qaddr, Some(qid), now);
                    }
                }
            }
        }
        if let TxnKind::Lookup { lookup, fam: lf } = txn.kind {
            self.lookup_response(lookup, lf, from, id, response);
            return Some(lookup);
        }
        None
    }

    fn lookup_response(
        &mut self,
        lookup: LookupId,
        lf: usize,
        from: SocketAddr,
        id: NodeId,
        response: Response,
    ) {
        let Some(pos) = self.lookups.iter().position(|l| l.id == lookup) else {
            return;
        };
        let allow_private = self.config.allow_private;
        let explicit = &self.explicit;
        let ok = |a: &SocketAddr| {
            a.port() != 0 && (allow_private || id::is_public(a.ip()) || explicit.contains(a))
        };
        let own = self.id;
        let Some(l) = self.lookups.get_mut(pos) else {
            return;
        };
        let target = l.target;
        let Some(hop) = l.searches[lf]
            .as_mut()
            .and_then(|s| s.responded(&target, &from, id, response.token.clone()))
        else {
            return;
        };
        l.responded += 1;
        l.max_hop = l.max_hop.max(hop);
        for (list, f) in [(&response.nodes, 0), (&response.nodes6, 1)] {
            if let Some(s) = l.searches[f].as_mut() {
                for (nid, addr) in list {
                    if fam(addr) == f && *nid != own && ok(addr) {
                        s.add(&target, Some(*nid), *addr, hop + 1);
                    }
                }
            }
        }
        if !l.report {
            return;
        }
        let peers = if matches!(l.kind, Kind::GetPeers { .. }) {
            l.new_peers(&response.values)
        } else {
            Vec::new()
        };
        if self.config.trace_lookups {
            self.events.push_back(DhtEvent::Hop {
                lookup,
                hop,
                from,
                nodes: response.nodes.len() + response.nodes6.len(),
                peers: response.values.len(),
            });
        }
        if let (false, Kind::GetPeers { info_hash, .. }) = (peers.is_empty(), &l.kind) {
            self.events.push_back(DhtEvent::Peers {
                lookup,
                info_hash: *info_hash,
                peers,
            });
        }
    }

    fn on_error(&mut self, from: SocketAddr, tid: &[u8], _now: Time) -> Option<LookupId> {
        let txn = self.take_txn(&from, tid)?;
        let TxnKind::Lookup { lookup, fam } = txn.kind else {
            return None;
        };
        if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
            if let Some(s) = l.searches[fam].as_mut() {
                s.failed(&from);
            }
        }
        Some(lookup)
    }

    /// Timers: time-outs of our queries, bucket refresh, token rotation, expiry of stored
    /// peers.
    pub fn handle_timeout(&mut self, now: Time) {
        let expired: Vec<u32> = self
            .txns
            .iter()
            .filter(|(_, t)| t.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            let Some(txn) = self.txns.remove(&k) else {
                continue;
            };
            if let (Some(id), Some(t)) = (txn.id, self.tables[fam(&txn.to)].as_mut()) {
                t.failed(&id, &txn.to, now);
            }
            if let TxnKind::Lookup { lookup, fam } = txn.kind {
                if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lookup) {
                    if let Some(s) = l.searches[fam].as_mut() {
                        s.failed(&txn.to);
                    }
                }
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.maintain(now);
        }
        self.advance(now, Step::All);
    }

    fn maintain(&mut self, now: Time) {
        self.tokens.tick(now, &mut self.rng);
        self.store.expire(now);
        for f in 0..2 {
            let Some(table) = self.tables[f].as_mut() else {
                continue;
            };
            let small = table.len() < K;
            let due =
                self.last_bootstrap[f].is_none_or(|t| now.saturating_since(t) >= REBOOTSTRAP_EVERY);
            if (small && due) || self.last_bootstrap[f].is_none() {
                self.last_bootstrap[f] = Some(now);
                let own = self.id.0;
                self.start_maintenance(own, f, true, now);
                continue;
            }
            let stale = table.stale_buckets(now, REFRESH_AFTER, &mut self.rng);
            for target in stale {
                self.start_maintenance(target.0, f, false, now);
            }
        }
    }

    fn maintenance_running(&self) -> usize {
        self.lookups.iter().filter(|l| !l.report).count()
    }

    fn start_maintenance(&mut self, target: [u8; 20], f: usize, bootstrap: bool, now: Time) {
        if self.maintenance_running() >= MAX_MAINTENANCE_LOOKUPS {
            if !bootstrap && self.refresh_queue.len() < MAX_REFRESH_QUEUE {
                self.refresh_queue.push_back((f, target));
            }
            return;
        }
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let mut l = Lookup::new(id, target, Kind::FindNode, false, now);
        if bootstrap {
            l.bootstrap_of = Some(f);
        }
        self.seed_search(&mut l, f, bootstrap, now);
        self.lookups.push(l);
    }

    /// Fills a lookup's search in family `f` from the table, and from the bootstrap nodes
    /// when the table is small (or `bootstrap` asks).
    fn seed_search(&self, l: &mut Lookup, f: usize, bootstrap: bool, now: Time) {
        let Some(table) = &self.tables[f] else {
            return;
        };
        let mut s = Search::default();
        for (nid, addr) in table.closest(&l.target, K * 2, now) {
            s.add(&l.target, Some(nid), addr, 0);
        }
        if bootstrap || table.len() < K {
            for addr in self.config.bootstrap.iter().filter(|a| fam(a) == f) {
                s.add(&l.target, None, *addr, 0);
            }
        }
        if s.candidates.is_empty() {
            return;
        }
        l.searches[f] = Some(s);
    }

    /// Sends what the lookups may send now, announces and ends the converged ones, and starts
    /// queued ones.
    fn advance(&mut self, now: Time, step: Step) {
        self.step_and_finish(now, step);
        self.start_waiting(now);
        // Those that ended as they started (nothing to ask) are reported now.
        self.step_and_finish(now, Step::One(None));
    }

    /// Steps the lookups `step` selects; removes and reports those that are done.
    fn step_and_finish(&mut self, now: Time, step: Step) {
        let mut i = 0;
        while i < self.lookups.len() {
            let id = self.lookups.get(i).map(|l| l.id);
            if step == Step::All || step == Step::One(id) {
                self.step_lookup(i, now);
            }
            let done = self.lookups.get(i).is_some_and(Lookup::done);
            if done {
                let l = self.lookups.remove(i);
                if let Some(f) = l.bootstrap_of {
                    // Bootstrapped: fill every other bucket too, as a refresh would.
                    let targets = self.tables[f]
                        .as_ref()
                        .map(|t| t.refresh_targets(&mut self.rng))
                        .unwrap_or_default();
                    for t in targets {
                        if self.refresh_queue.len() < MAX_REFRESH_QUEUE {
                            self.refresh_queue.push_back((f, t.0));
                        }
                    }
                }
                if l.report {
                    if let Kind::GetPeers { info_hash, .. } = l.kind {
                        self.events.push_back(DhtEvent::LookupDone {
                            lookup: l.id,
                            info_hash,
                            responded: l.responded,
                            announced: l.announced,
                        });
                    }
                }
                continue;
            }
            i += 1;
        }
    }

    /// Starts queued refreshes and user lookups where there is room.
    fn start_waiting(&mut self, now: Time) {
        while self.maintenance_running() < MAX_MAINTENANCE_LOOKUPS {
            let Some((f, target)) = self.refresh_queue.pop_front() else {
                break;
            };
            self.start_maintenance(target, f, false, now);
            if let Some(last) = self.lookups.len().checked_sub(1) {
                self.step_lookup(last, now);
            }
        }
        while self.lookups.iter().filter(|l| l.report).count() < MAX_ACTIVE_LOOKUPS {
            let Some(l) = self.queued.pop_front() else {
                break;
            };
            self.lookups.push(l);
            let last = self.lookups.len() - 1;
            self.step_lookup(last, now);
        }
    }

    /// Issues the next queries of lookup `i`; a search that converged announces (if asked)
    /// and is marked done.
    fn step_lookup(&mut self, i: usize, now: Time) {
        let want = self.want();
        for f in 0..2 {
            let Some(l) = self.lookups.get_mut(i) else {
                return;
            };
            let (lid, target, kind) = (l.id, l.target, l.kind.clone());
            let Some(s) = l.searches[f].as_mut() else {
                continue;
            };
            if s.done {
                continue;
            }
            if self.txns.len() >= MAX_TRANSACTIONS {
                // Wait for room; time-outs will free it.
                return;
            }
            let ask: Vec<(Option<NodeId>, SocketAddr)> = s
                .next(ALPHA)
                .into_iter()
                .filter_map(|c| s.candidates.get(c).map(|c| (c.id, c.addr)))
                .collect();
            let converged = ask.is_empty() && s.converged();
            let targets = if converged {
                s.done = true;
                s.announce_targets()
            } else {
                Vec::new()
            };
            let query = match &kind {
                Kind::GetPeers { info_hash, .. } => Query::GetPeers {
                    info_hash: *info_hash,
                    want,
                },
                Kind::FindNode => Query::FindNode {
                    target: NodeId(target),
                    want,
                },
            };
            for (nid, addr) in ask {
                if !self.send_query(
                    addr,
                    nid,
                    &query,
                    TxnKind::Lookup {
                        lookup: lid,
                        fam: f,
                    },
                    now,
                ) {
                    if let Some(s) = self.lookups.get_mut(i).and_then(|l| l.searches[f].as_mut()) {
                        s.failed(&addr);
                    }
                }
            }
            if let Kind::GetPeers {
                info_hash,
                announce: Some(port),
            } = kind
            {
                let mut sent = 0;
                for (addr, token) in targets {
                    let q = Query::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port: port == 0,
                        token,
                    };
                    if self.send_query(addr, None, &q, TxnKind::Announce, now) {
                        sent += 1;
                    }
                }
                self.stats.announces_sent += sent as u64;
                if let Some(l) = self.lookups.get_mut(i) {
                    l.announced += sent;
                }
            }
        }
    }

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let first_deadline = self.txns.values().map(|t| t.deadline).min();
        Some(first_deadline.map_or(self.next_tick, |d| d.min(self.next_tick)))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// Starts a `get_peers` lookup for `info_hash`; with `announce = Some(port)` it ends by
    /// sending `announce_peer` (that port, or `implied_port` when `port` is 0) to the closest
    /// nodes that gave a token.
    pub fn get_peers(&mut self, info_hash: InfoHash, announce: Option<u16>, now: Time) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        self.stats.lookups_total += 1;
        let mut l = Lookup::new(
            id,
            *info_hash.as_bytes(),
            Kind::GetPeers {
                info_hash,
                announce,
            },
            true,
            now,
        );
        for f in 0..2 {
            self.seed_search(&mut l, f, false, now);
        }
        if self.queued.len() >= MAX_QUEUED_LOOKUPS {
            // Too many waiting: it ends with nothing found.
            self.events.push_back(DhtEvent::LookupDone {
                lookup: id,
                info_hash,
                responded: 0,
                announced: 0,
            });
            return id;
        }
        self.queued.push_back(l);
        self.advance(now, Step::One(None));
        id
    }

    /// Counters for metrics.
    pub fn stats(&self) -> DhtStats {
        DhtStats {
            nodes_v4: self.tables[0].as_ref().map_or(0, Table::len),
            nodes_v6: self.tables[1].as_ref().map_or(0, Table::len),
            lookups_active: self.lookups.iter().filter(|l| l.report).count(),
            stored_torrents: self.store.torrents(),
            stored_peers: self.store.peers(),
            outstanding_queries: self.txns.len(),
            ..self.stats.clone()
        }
    }

    /// The nodes of the IPv4 (or, with `ipv6`, the IPv6) table closest to `target`: what this
    /// node would answer a `find_node` with (for tests and debugging).
    pub fn closest_nodes(
        &self,
        target: &NodeId,
        ipv6: bool,
        now: Time,
    ) -> Vec<(NodeId, SocketAddr)> {
        self.tables[usize::from(ipv6)]
            .as_ref()
            .map(|t| t.closest(&target.0, K, now))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
