//! The session: the core's public face. It owns every torrent and every connection (in a slab,
//! so a connection is a slot plus a generation), routes a connection to its torrent once the
//! handshake names the info hash, and runs housekeeping on a fixed tick.
//!
//! # Contract with drivers
//!
//! Inputs are `handle_*` calls and `add_*`/`connect`/`accept`, each taking `now`. After any
//! input, drain outputs in this order: [`Session::poll_action`] until `None` (connects, sends,
//! closes, disk operations), [`Session::poll_event`] until `None`, then arm a timer for
//! [`Session::poll_timeout`] and call [`Session::handle_timeout`] when it fires. The session never
//! reads a clock, never draws randomness except from the seeded [`Rng`] it was built with (each
//! torrent has its own generator, seeded from that one when the torrent is added), and never
//! touches a socket or a file.
//!
//! # What the session owns, and what its torrents own
//!
//! As in quinn-proto, each state machine owns its context, so its inputs are `now` and the
//! input alone. A torrent owns a `Context` (its id, the shared `Arc<Config>`, its own `Rng`
//! and its output queue) and its `PeerSet`. The session owns the connections, the handshakes,
//! its own `Rng`, the session-wide `RateLimits` (lent to the torrent calls that may spend
//! from them) and the outbox the `poll_*` calls drain: after every call into a torrent, the
//! session moves what the torrent queued there, so outputs keep the order they were made in.
//!
//! # Magnet links
//!
//! [`Session::add_magnet`] adds a torrent known only by its info hash. It routes connections
//! and dials peers like any torrent, fetches the info dictionary from peers (BEP 9) and, once
//! its SHA1 matches, emits [`Event::MetadataReceived`] with the [`Info`]. The driver then opens
//! storage for it (checking existing data or resume data as for a .torrent), attaches it, and
//! calls [`Session::start_torrent`] with the pieces storage holds: from then on the torrent is
//! exactly one added with [`Session::add_torrent`], under the same id and with the same
//! connections. Until then it asks for no disk operation. [`Session::is_magnet`] and
//! [`Session::metadata`] say where it stands.
//!
//! # Sharding
//!
//! With one event loop per core, each loop runs its own session and owns the torrents whose
//! info hash maps to it. Every session is told which other session owns each torrent
//! ([`Session::set_route`]). An incoming connection is accepted by whichever loop the kernel
//! picks; once its handshake (plain, or MSE's) names a torrent owned elsewhere, the session
//! emits [`Action::HandOff`], keeps buffering what arrives, and gives the connection's state up
//! with [`Session::take_handoff`]; the owning loop's session continues it with
//! [`Session::adopt`], exactly where it stopped.

use std::collections::HashMap;
use std::sync::Arc;

use ::core::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};
use slab::Slab;

use super::api::{Action, CloseReason, ConnId, DiskDone, Event, TorrentId};
use super::config::Config;
use super::config::Encryption;
use super::context::{Context, Outbox};
use super::limiter::RateLimits;
use super::metadata::MagnetTorrent;
use super::mse::{
    Cipher, Initiator, KeySource, Rc4, Responder, Step, CRYPTO_PLAINTEXT, CRYPTO_RC4, MAX_PAD,
    SECRET_LEN,
};
use super::peer::{Crypto, Peer};
use super::peers::PeerSet;
use super::picker::Priority;
use super::sendbuf::SendBuf;
use super::torrent::{Torrent, TorrentStats};
use super::types::unmap;
use super::wire::{Decoded, Handshake, Reserved, ReservedFlag, SplitBytes, HANDSHAKE_LEN};
use super::{Bitfield, InfoHash, PeerId, PeerKey, Rng, Time};
use crate::dht::{Dht, Transmit};
use crate::limits::{MAX_HANDOFF_BUFFER, RECV_KEEP_SPARE, RECV_MIN_SPARE, RECV_READ_LEN};
use crate::metainfo::Info;

/// The reserved bits we announce: the Fast extension and the extension protocol, and a DHT
/// node when ours runs (`Config::dht_port`).
const OUR_RESERVED: Reserved = Reserved::NONE
    .with(ReservedFlag::Fast, true)
    .with(ReservedFlag::ExtensionProtocol, true);

/// [`OUR_RESERVED`] under `config`, with BEP 52's v2 bit for a torrent that has a v2 tree
/// (as libtorrent sets it): on a hybrid dialled by its v1 hash it offers the peer to answer
/// with the v2 hash instead, which we accept.
fn our_reserved(config: &Config, v2: bool) -> Reserved {
    OUR_RESERVED
        .with(ReservedFlag::Dht, config.dht_port.is_some())
        .with(ReservedFlag::V2, v2)
}

/// What a plain BitTorrent handshake opens with: the length and the protocol string.
const PROTOCOL_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";

/// A connection before its handshake is done.
#[derive(Debug)]
struct Handshaking {
    addr: SocketAddr,
    outgoing: bool,
    /// Known from the start when we dial; from the info hash when the peer dials us.
    torrent: Option<TorrentId>,
    /// Whether the TCP connection is up (always, for incoming ones).
    connected: bool,
    since: Time,
    sent_ours: bool,
    recv: BytesMut,
    send: SendBuf,
    send_notified: bool,
    mse: Mse,
    /// We dial with the encrypted handshake (outgoing connections).
    encrypt: bool,
    /// After an MSE handshake that selected RC4: decrypts what arrives (the send side's
    /// stream is in `send`).
    recv_cipher: Option<Box<Rc4>>,
    /// Incoming, for a torrent on its way into this session ([`Session::expect_torrent`]):
    /// held unanswered until it is added.
    held: Option<InfoHash>,
}

/// Where a connection stands with the encrypted (MSE/PE) handshake.
#[derive(Debug)]
enum Mse {
    /// A plain BitTorrent handshake (or, incoming, nothing received yet: a first byte of 19
    /// means a plain handshake, anything else an encrypted one).
    Off,
    /// Answering an incoming MSE handshake.
    Responding(Box<Responder>),
    /// Dialled with an MSE handshake, our BitTorrent handshake inside it.
    Initiating(Box<Initiator>),
    /// The MSE handshake is done for this torrent, with RC4 or plaintext after it; the
    /// BitTorrent handshake that follows must name the same torrent.
    Done { info_hash: InfoHash, rc4: bool },
}

impl Mse {
    fn crypto(&self) -> Crypto {
        match self {
            Mse::Done { rc4: true, .. } => Crypto::Rc4,
            Mse::Done { rc4: false, .. } => Crypto::Plaintext,
            _ => Crypto::None,
        }
    }
}

/// An incoming connection on its way from the session that accepted it to the one that owns
/// its torrent: what it has received and not yet handled, and what must be sent on it before
/// anything else. Produced by [`Session::take_handoff`], consumed by [`Session::adopt`].
#[derive(Debug)]
pub struct HandOff {
    addr: SocketAddr,
    info_hash: InfoHash,
    shard: u32,
    since: Time,
    /// Plain bytes from the peer not yet handled (its handshake, at least the first 48 bytes
    /// of it, unless MSE already named the torrent).
    recv: BytesMut,
    /// Bytes for the peer that the driver has not taken yet (the end of an MSE reply), in
    /// their final form (encrypted where they must be).
    send: Vec<u8>,
    /// How the MSE handshake ended: `None` without one, `Some(None)` plaintext after it,
    /// `Some(Some(_))` RC4, with the streams where they stand (`recv` has already decrypted
    /// what `recv` above holds).
    mse: Option<Option<Box<Cipher>>>,
}

impl HandOff {
    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The torrent the connection is for.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The shard that owns the torrent.
    pub fn shard(&self) -> u32 {
        self.shard
    }
}

#[derive(Debug)]
enum ConnState {
    Handshaking(Box<Handshaking>),
    /// Waiting for the driver to move the socket to another shard.
    HandingOff(Box<HandOff>),
    Peer {
        torrent: TorrentId,
        key: PeerKey,
    },
}

#[derive(Debug)]
struct Conn {
    generation: u32,
    state: ConnState,
}

struct TorrentSlot {
    generation: u32,
    entry: Entry,
}

/// A torrent in the session: with its metadata, or still fetching it (a magnet link).
enum Entry {
    Ready(Box<Torrent>),
    Magnet(Box<MagnetTorrent>),
}

/// The same expression on whichever kind of torrent an [`Entry`] holds: both have a
/// `Context`, a `PeerSet`, stats and `close_peer`.
macro_rules! either {
    ($entry:expr, $t:ident => $e:expr) => {
        match $entry {
            Entry::Ready($t) => $e,
            Entry::Magnet($t) => $e,
        }
    };
}

impl Entry {
    fn ctx(&self) -> &Context {
        either!(self, t => &t.ctx)
    }

    fn ctx_mut(&mut self) -> &mut Context {
        either!(self, t => &mut t.ctx)
    }

    fn id(&self) -> TorrentId {
        self.ctx().id
    }

    fn info_hash(&self) -> InfoHash {
        match self {
            Entry::Ready(t) => t.info.info_hash(),
            Entry::Magnet(m) => m.info_hash,
        }
    }

    /// A hybrid torrent's other name: its truncated v2 info hash, under which v2 peers
    /// reach it (it runs under its v1 hash).
    fn v2_alias(&self) -> Option<InfoHash> {
        self.ready().and_then(|t| t.info.v2_alias())
    }

    /// Whether the torrent has (or, a magnet by a v2 hash, will have) a v2 tree.
    fn speaks_v2(&self) -> bool {
        match self {
            Entry::Ready(t) => t.info.version().has_v2(),
            Entry::Magnet(m) => m.v2,
        }
    }

    /// Whether `hash`, from a peer's handshake, names this torrent.
    fn answers_to(&self, hash: &InfoHash) -> bool {
        *hash == self.info_hash() || self.v2_alias().as_ref() == Some(hash)
    }

    fn ready(&self) -> Option<&Torrent> {
        match self {
            Entry::Ready(t) => Some(t),
            Entry::Magnet(_) => None,
        }
    }

    fn peers(&self) -> &PeerSet {
        either!(self, t => &t.peers)
    }

    fn peers_mut(&mut self) -> &mut PeerSet {
        either!(self, t => &mut t.peers)
    }

    fn has_room(&self) -> bool {
        self.peers().has_room(&self.ctx().config)
    }

    fn stats(&self) -> &TorrentStats {
        either!(self, t => &t.stats)
    }

    fn close_peer(&mut self, key: PeerKey, reason: CloseReason, now: Time) {
        either!(self, t => t.close_peer(key, reason, now))
    }

    /// Bytes arrived from a peer (`decrypted`: already, see `PeerSet::receive`): buffered,
    /// then every whole message in them handled.
    fn on_bytes(
        &mut self,
        key: PeerKey,
        data: &[u8],
        decrypted: bool,
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        self.peers_mut().receive(key, data, decrypted, now);
        self.on_received(key, now, session_limits);
    }

    /// `n` bytes were read into a peer's receive buffer in place.
    fn on_filled(&mut self, key: PeerKey, n: usize, now: Time, session_limits: &mut RateLimits) {
        self.peers_mut().filled(key, n, now);
        self.on_received(key, now, session_limits);
    }

    /// A chunk of bytes arrived for a peer in a buffer we own: moved into its receive
    /// buffer a message at a time (see [`PeerSet::receive_owned`]).
    fn on_chunk(
        &mut self,
        key: PeerKey,
        chunk: &mut BytesMut,
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        let mut first = true;
        while !chunk.is_empty() && self.peers().contains(&key) {
            self.peers_mut().receive_owned(key, chunk, first, now);
            first = false;
            self.on_received(key, now, session_limits);
        }
    }

    fn on_received(&mut self, key: PeerKey, now: Time, session_limits: &mut RateLimits) {
        match self {
            Entry::Ready(t) => t.on_received(key, now, session_limits),
            Entry::Magnet(m) => m.on_received(key, now),
        }
    }
}

/// A BitTorrent session: many torrents and their connections, as a deterministic state
/// machine.
pub struct Session {
    /// Shared with every torrent's [`Context`]; replaced (not changed in place) when the
    /// session-wide rate limits change.
    config: Arc<Config>,
    peer_id: PeerId,
    listen_port: Option<u16>,
    rng: Rng,
    torrents: Slab<TorrentSlot>,
    by_hash: HashMap<InfoHash, TorrentId>,
    conns: Slab<Conn>,
    next_generation: u32,
    /// What the session and (moved here after every call into one) its torrents want done.
    out: Outbox,
    /// The session-wide rate limits (`Config::upload_rate_limit`/`download_rate_limit`):
    /// lent to the torrent calls that may read a block or send a request, which spend from
    /// them and from the torrent's own.
    session_limits: RateLimits,
    next_tick: Time,
    /// Closes of connections that never reached a torrent, by reason.
    handshake_closes: std::collections::BTreeMap<&'static str, u64>,
    /// Torrents other sessions own, and which (see "Sharding" above).
    routes: HashMap<InfoHash, u32>,
    /// Torrents on their way into this session ([`Session::expect_torrent`]), each with the
    /// number of incoming connections held for it.
    expected: HashMap<InfoHash, u32>,
    conn_stats: ConnectionStats,
    /// Which torrent is served first when rate-limit wake-ups fall due, turning each time so
    /// that no torrent always spends the session's tokens first.
    rate_turn: usize,
    /// Block payload held for uploads across all torrents (the sum of their
    /// `Torrent::upload_held`), against `Config::upload_buffer_budget`.
    upload_held: usize,
    /// No session-wide eviction is looked for before then: the last search found no idle
    /// peer, and a flood of connections against a full session must not pay a search of
    /// every peer each.
    evict_search_after: Time,
    /// The private keys of encrypted handshakes: the driver's source (the operating
    /// system's CSPRNG), never `rng`.
    keys: Box<dyn KeySource>,
    /// The DHT node, on the one session whose driver owns the UDP socket (see
    /// [`Session::set_dht`]); its datagrams, timers and events pass through the session.
    dht: Option<Box<Dht>>,
    /// The latest `now` an input brought: when a peer's `port` message, drained as an
    /// event, reaches the DHT.
    dht_now: Time,
    /// Peers' word on our external address, for the DHT's node id (loop 0 only).
    external_votes: super::votes::ExternalVotes,
    /// Nodes to try that came before the DHT node did (`Session::dht_add_node`), at most
    /// `MAX_PENDING_DHT_NODES`; handed to it by `set_dht`.
    pending_dht_nodes: Vec<SocketAddr>,
}

/// Nodes kept for a DHT node that is not there yet (its bootstrap names still resolving):
/// a torrent's `nodes` and peers' `port` messages from the first seconds.
const MAX_PENDING_DHT_NODES: usize = 64;

/// One connected peer, as [`Session::peers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSummary {
    /// Its address.
    pub addr: SocketAddr,
    /// Its client, from an Azureus-style peer id, if it has one.
    pub client: Option<String>,
    /// How the connection is protected: plain, MSE then plaintext, or RC4.
    pub crypto: Crypto,
    /// We dialled it.
    pub outgoing: bool,
    /// We refuse its requests.
    pub am_choking: bool,
    /// We want what it has.
    pub am_interested: bool,
    /// It refuses our requests.
    pub peer_choking: bool,
    /// It wants what we have.
    pub peer_interested: bool,
    /// Bytes per second from it.
    pub down_rate: u64,
    /// Bytes per second to it.
    pub up_rate: u64,
    /// Pieces it has.
    pub pieces: u32,
    /// It stopped answering our requests.
    pub snubbed: bool,
}

/// Incoming connections: accepted here, and moved between sessions (see "Sharding" in the
/// module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Accepted here, handed to the owning session.
    pub sent: u64,
    /// Accepted elsewhere, continued here.
    pub adopted: u64,
    /// Incoming connections this session accepted (whether kept or handed over).
    pub accepted: u64,
    /// Incoming connections held while their torrent was on its way in (its data being
    /// checked), then answered once it was added.
    pub held: u64,
}

impl Session {
    /// A session with `config`, announcing `peer_id`, drawing randomness from `seed` and the
    /// private keys of encrypted handshakes from `keys` (for real connections the operating
    /// system's CSPRNG, `crate::entropy::OsKeys`; `mse::SimulatedKeys` in simulations).
    pub fn new(
        config: Config,
        peer_id: PeerId,
        seed: u64,
        keys: Box<dyn KeySource>,
        now: Time,
    ) -> Session {
        let config = config.sanitized();
        let session_limits =
            RateLimits::new(config.upload_rate_limit, config.download_rate_limit, now);
        Session {
            next_tick: now + config.tick,
            config: Arc::new(config),
            peer_id,
            listen_port: None,
            rng: Rng::new(seed),
            torrents: Slab::new(),
            by_hash: HashMap::new(),
            conns: Slab::new(),
            next_generation: 0,
            out: Outbox::default(),
            session_limits,
            handshake_closes: Default::default(),
            routes: HashMap::new(),
            expected: HashMap::new(),
            conn_stats: ConnectionStats::default(),
            rate_turn: 0,
            upload_held: 0,
            evict_search_after: Time::ZERO,
            keys,
            dht: None,
            dht_now: now,
            external_votes: Default::default(),
            pending_dht_nodes: Vec::new(),
        }
    }

    /// Gives this session the DHT node (the session whose driver owns the UDP socket): its
    /// datagrams come in through [`Session::handle_datagram`], go out through
    /// [`Session::poll_datagram`], its deadline joins [`Session::poll_timeout`] and its
    /// events come out of [`Session::poll_event`] as [`Event::Dht`].
    pub fn set_dht(&mut self, dht: Dht) {
        let mut dht = Box::new(dht);
        for addr in self.pending_dht_nodes.drain(..) {
            dht.add_node(addr, self.dht_now);
        }
        self.dht = Some(dht);
    }

    /// A node to try (a peer's `port` message, a torrent's `nodes`): given to the DHT node,
    /// or kept for it (boundedly) while this session runs the DHT (`Config::dht_port`) and
    /// the node is not there yet.
    pub fn dht_add_node(&mut self, addr: SocketAddr, now: Time) {
        self.dht_now = self.dht_now.max(now);
        match self.dht.as_deref_mut() {
            Some(dht) => dht.add_node(addr, now),
            None if self.config.dht_port.is_some()
                && self.pending_dht_nodes.len() < MAX_PENDING_DHT_NODES =>
            {
                self.pending_dht_nodes.push(addr)
            }
            None => {}
        }
    }

    /// Our DHT node's UDP port (`None`: no DHT), which every session of the process announces
    /// (handshake bit, `port` messages) whichever runs the node: `Config::dht_port`. Call
    /// before adding torrents (they keep the configuration they started with).
    pub fn set_dht_port(&mut self, port: Option<u16>) {
        Arc::make_mut(&mut self.config).dht_port = port;
    }

    /// The DHT node, if this session runs it.
    pub fn dht(&self) -> Option<&Dht> {
        self.dht.as_deref()
    }

    /// The DHT node, if this session runs it: to start lookups, add nodes, save its table.
    pub fn dht_mut(&mut self) -> Option<&mut Dht> {
        self.dht.as_deref_mut()
    }

    /// A datagram for the DHT (the driver checked its first byte is `d`); dropped when this
    /// session runs none.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Time) {
        self.dht_now = self.dht_now.max(now);
        if let Some(dht) = self.dht.as_deref_mut() {
            dht.handle_datagram(from, data, now);
        }
    }

    /// A peer (`voter`) sees us at `ip` (`Event::ExternalAddrVote` from another session):
    /// once enough different peers agree, the DHT node takes it as its external address.
    pub fn vote_external_addr(&mut self, ip: IpAddr, voter: IpAddr, now: Time) {
        if let Some(dht) = self.dht.as_deref_mut() {
            if let Some(ip) = self.external_votes.vote(ip, voter) {
                dht.set_external_addr(ip, now);
            }
        }
    }

    /// The next datagram the DHT wants sent.
    pub fn poll_datagram(&mut self) -> Option<Transmit> {
        self.dht.as_deref_mut()?.poll_transmit()
    }

    /// A fresh private key for an encrypted handshake.
    fn secret(&mut self) -> [u8; SECRET_LEN] {
        let mut secret = [0u8; SECRET_LEN];
        self.keys.fill(&mut secret);
        secret
    }

    /// Random padding for an encrypted handshake: up to [`MAX_PAD`] bytes, as the spec
    /// allows, so that its lengths give no fingerprint. Not secret: from the seeded
    /// generator.
    fn padding(&mut self) -> Vec<u8> {
        let mut pad = vec![0u8; self.rng.index(MAX_PAD + 1)];
        self.rng.fill(&mut pad);
        pad
    }

    /// What we allow after an encrypted handshake, under the session's policy.
    fn methods(&self) -> u32 {
        match self.config.encryption {
            Encryption::Require => CRYPTO_RC4,
            Encryption::Prefer | Encryption::Plaintext => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
        }
    }

    /// The port we accept connections on, announced in extension handshakes.
    pub fn set_listen_port(&mut self, port: u16) {
        self.listen_port = Some(port);
    }

    /// Records that shard `shard` owns the torrent `hash` (`None`: no shard does any more), so
    /// incoming connections for it are handed over rather than refused. A session never routes
    /// a torrent it holds itself elsewhere: its own torrents win.
    pub fn set_route(&mut self, hash: InfoHash, shard: Option<u32>) {
        match shard {
            Some(s) => self.routes.insert(hash, s),
            None => self.routes.remove(&hash),
        };
    }

    /// Says that the torrent `hash` is on its way into this session: its data is being
    /// checked before [`Session::add_torrent`]. Meanwhile incoming connections for it are
    /// held, unanswered, instead of refused as unknown (a refused peer comes back only after
    /// its redial back-off); once it is added they carry on as if it had been there. They
    /// are closed as unknown if [`Session::forget_expected`] comes first, and as any
    /// handshake if it outlasts the handshake time-out. What each sends meanwhile is bounded
    /// as a connection moving between loops is (`limits::MAX_HANDOFF_BUFFER`).
    pub fn expect_torrent(&mut self, hash: InfoHash) {
        if !self.by_hash.contains_key(&hash) {
            self.expected.entry(hash).or_insert(0);
        }
    }

    /// The torrent `hash` will not come after all (its add failed, or it was paused or
    /// removed during its check): the connections held for it are closed as unknown.
    pub fn forget_expected(&mut self, hash: &InfoHash, now: Time) {
        if self.expected.remove(hash).is_some_and(|held| held > 0) {
            for conn in self.held_for(hash) {
                self.close_handshaking(conn, CloseReason::UnknownTorrent, now);
            }
            self.reap();
        }
    }

    /// The torrent `hash` is here now: the connections held for it carry on.
    fn release_held(&mut self, hash: &InfoHash, now: Time) {
        if self.expected.remove(hash).is_none_or(|held| held == 0) {
            return;
        }
        for conn in self.held_for(hash) {
            if let Some(Conn {
                state: ConnState::Handshaking(h),
                ..
            }) = conn_in(&mut self.conns, conn)
            {
                h.held = None;
                self.conn_stats.held += 1;
                self.advance_handshake(conn, now);
            }
        }
        self.reap();
    }

    /// The connections held for `hash`.
    fn held_for(&self, hash: &InfoHash) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter_map(|(slot, c)| match &c.state {
                ConnState::Handshaking(h) if h.held.as_ref() == Some(hash) => Some(ConnId {
                    slot: slot as u32,
                    generation: c.generation,
                }),
                _ => None,
            })
            .collect()
    }

    /// Incoming connections accepted, handed to other sessions and adopted from them.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.conn_stats
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The session's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new torrent's context: the session's config, and a generator of its own seeded from
    /// the session's, so the whole run still follows from the session's seed.
    fn torrent_context(&mut self, id: TorrentId) -> Context {
        Context::new(id, self.config.clone(), Rng::new(self.rng.next_u64()))
    }

    fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    // --------------------------------------------------------------------------- torrents

    /// Adds a torrent. `have` says which pieces storage already holds verified (from resume
    /// data or a check). Returns `None` if the torrent is already in the session.
    pub fn add_torrent(
        &mut self,
        info: Arc<Info>,
        have: &Bitfield,
        now: Time,
    ) -> Option<TorrentId> {
        if self.by_hash.contains_key(&info.info_hash())
            || have.len() != info.lengths().piece_count()
        {
            return None;
        }
        let generation = self.generation();
        let id = TorrentId {
            slot: self.torrents.vacant_key() as u32,
            generation,
        };
        self.by_hash.insert(info.info_hash(), id);
        let ctx = self.torrent_context(id);
        let hash = info.info_hash();
        let alias = info.v2_alias();
        let torrent = Torrent::new(ctx, info, have, now);
        let entry = Entry::Ready(Box::new(torrent));
        self.add_alias(&entry, id);
        self.torrents.insert(TorrentSlot { generation, entry });
        for name in std::iter::once(hash).chain(alias) {
            self.release_held(&name, now);
        }
        Some(id)
    }

    /// Routes a hybrid's truncated v2 hash to it too, unless another torrent holds that name.
    fn add_alias(&mut self, entry: &Entry, id: TorrentId) {
        if let Some(alias) = entry.v2_alias() {
            self.by_hash.entry(alias).or_insert(id);
        }
    }

    /// Adds a torrent known only by its info hash (a magnet link): it connects to peers
    /// ([`Session::add_peers`]) and fetches the metadata from them (BEP 9). When the metadata
    /// has arrived and checked out, [`Event::MetadataReceived`] carries it; the driver then
    /// opens storage and calls [`Session::start_torrent`]. Until then the torrent downloads
    /// nothing, and its peers stay connected. Returns `None` if the torrent is already in
    /// the session.
    pub fn add_magnet(&mut self, info_hash: InfoHash, now: Time) -> Option<TorrentId> {
        self.add_magnet_as(info_hash, false, now)
    }

    /// [`Session::add_magnet`] for a link that names the torrent by its v2 info hash alone
    /// (BEP 52 `btmh`): `info_hash` is that hash truncated, the metadata is checked by
    /// SHA-256, and piece layers are fetched from peers (`hash request`) before
    /// [`Event::MetadataReceived`].
    pub fn add_magnet_v2(&mut self, info_hash: InfoHash, now: Time) -> Option<TorrentId> {
        self.add_magnet_as(info_hash, true, now)
    }

    fn add_magnet_as(&mut self, info_hash: InfoHash, v2: bool, now: Time) -> Option<TorrentId> {
        let _ = now;
        if self.by_hash.contains_key(&info_hash) {
            return None;
        }
        let generation = self.generation();
        let id = TorrentId {
            slot: self.torrents.vacant_key() as u32,
            generation,
        };
        self.by_hash.insert(info_hash, id);
        let ctx = self.torrent_context(id);
        self.torrents.insert(TorrentSlot {
            generation,
            entry: Entry::Magnet(Box::new(MagnetTorrent::new(ctx, info_hash, v2))),
        });
        Some(id)
    }

    /// The torrent's metadata: always for a torrent added with its `Info`, and for one added
    /// by magnet link once it has arrived and been verified.
    pub fn metadata(&self, id: TorrentId) -> Option<Arc<Info>> {
        match &self.slot(id)?.entry {
            Entry::Ready(t) => Some(t.info.clone()),
            Entry::Magnet(m) => m.info.clone(),
        }
    }

    /// Whether the torrent is still waiting for its metadata or for [`Session::start_torrent`].
    pub fn is_magnet(&self, id: TorrentId) -> bool {
        self.slot(id)
            .is_some_and(|s| matches!(s.entry, Entry::Magnet(_)))
    }

    /// Starts a torrent added by magnet link whose metadata has arrived
    /// ([`Event::MetadataReceived`]), once the driver has storage for it: `have` says which
    /// pieces storage already holds verified. The torrent keeps its id and its peers and
    /// from here on behaves exactly as one added with [`Session::add_torrent`]. Returns false
    /// (and changes nothing) if the torrent is not waiting to start or `have` has the wrong
    /// length.
    pub fn start_torrent(&mut self, id: TorrentId, have: &Bitfield, now: Time) -> bool {
        let Some(info) = self.slot(id).and_then(|s| match &s.entry {
            Entry::Magnet(m) => m.info.clone(),
            Entry::Ready(_) => None,
        }) else {
            return false;
        };
        if have.len() != info.lengths().piece_count() {
            return false;
        }
        // A stand-in for the moment the magnet is out of its slot; it draws nothing.
        let ctx = Context::new(id, self.config.clone(), Rng::new(0));
        let placeholder = Entry::Magnet(Box::new(MagnetTorrent::new(ctx, info.info_hash(), false)));
        let slot = &mut self.torrents[id.slot as usize];
        let Entry::Magnet(magnet) = std::mem::replace(&mut slot.entry, placeholder) else {
            unreachable!("checked above")
        };
        let limits = &mut self.session_limits;
        let torrent = Torrent::from_magnet(*magnet, info, have, self.listen_port, now, limits);
        // Reads the replayed requests started (each peer's first block, the only ones a
        // torrent with no allowance yet may start) join the session's count.
        self.upload_held += torrent.upload_held;
        slot.entry = Entry::Ready(Box::new(torrent));
        self.out.absorb(&mut slot.entry.ctx_mut().out);
        // A hybrid added by its v2 name (a `btmh` link) answers to its v1 name too, and one
        // added by its v1 name to its v2 name.
        let entry = &self.torrents[id.slot as usize].entry;
        for name in [Some(entry.info_hash()), entry.v2_alias()]
            .into_iter()
            .flatten()
        {
            self.by_hash.entry(name).or_insert(id);
        }
        self.reap();
        true
    }

    fn slot(&self, id: TorrentId) -> Option<&TorrentSlot> {
        self.torrents
            .get(id.slot as usize)
            .filter(|t| t.generation == id.generation)
    }

    fn slot_mut(&mut self, id: TorrentId) -> Option<&mut TorrentSlot> {
        self.torrents
            .get_mut(id.slot as usize)
            .filter(|t| t.generation == id.generation)
    }

    /// Removes a torrent, closing its connections.
    pub fn remove_torrent(&mut self, id: TorrentId, now: Time) {
        let reason = CloseReason::TorrentRemoved;
        let found = self.with_entry(id, |entry, _| match entry {
            Entry::Ready(t) => t.close_all(reason, now),
            Entry::Magnet(m) => m.close_all(reason, now),
        });
        if found.is_none() {
            return;
        }
        let slot = self.torrents.remove(id.slot as usize);
        // What is left are reads in flight, whose completions will find no torrent.
        if let Entry::Ready(t) = &slot.entry {
            self.upload_held -= t.upload_held;
        }
        // Every name it answered to: its info hash, and a hybrid's other one.
        self.by_hash.retain(|_, t| *t != id);
        // Connections still handshaking for it are closed too.
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(&c.state, ConnState::Handshaking(h) if h.torrent == Some(id)))
            .map(|(k, _)| k)
            .collect();
        for slot in stale {
            let id = ConnId {
                slot: slot as u32,
                generation: self.conns[slot].generation,
            };
            self.close_handshaking(id, CloseReason::TorrentRemoved, now);
        }
        self.reap();
    }

    /// Runs `f` on a live torrent of either kind, lending it the session-wide rate limits,
    /// then moves what the torrent queued into the session's outbox, so that the driver sees
    /// everything in the order it was made. `None` for a stale id.
    fn with_entry<R>(
        &mut self,
        id: TorrentId,
        f: impl FnOnce(&mut Entry, &mut RateLimits) -> R,
    ) -> Option<R> {
        let slot = self
            .torrents
            .get_mut(id.slot as usize)
            .filter(|t| t.generation == id.generation)?;
        // The torrent writes straight into the session's queue, lent to it for the call:
        // no copy, no allocation, and no idle torrent keeps a buffer of its own (ten
        // thousand seeding torrents each holding emptied queues cost megabytes). Anything it
        // queued outside a call goes first, in order.
        let own = &mut slot.entry.ctx_mut().out;
        if !own.is_empty() {
            self.out.absorb(own);
        }
        std::mem::swap(&mut self.out, own);
        // The torrent may hold what the upload budget leaves after the others' share.
        let held_before = match &mut slot.entry {
            Entry::Ready(t) => {
                let others = self.upload_held - t.upload_held;
                t.upload_allowance = self.config.upload_buffer_budget.saturating_sub(others);
                t.upload_held
            }
            Entry::Magnet(_) => 0,
        };
        let result = f(&mut slot.entry, &mut self.session_limits);
        if let Entry::Ready(t) = &slot.entry {
            self.upload_held = self.upload_held - held_before + t.upload_held;
        }
        std::mem::swap(&mut self.out, &mut slot.entry.ctx_mut().out);
        Some(result)
    }

    /// [`Session::with_entry`] for a torrent with its metadata; does nothing for one without.
    fn with_torrent(&mut self, id: TorrentId, f: impl FnOnce(&mut Torrent, &mut RateLimits)) {
        self.with_entry(id, |entry, limits| {
            if let Entry::Ready(t) = entry {
                f(t, limits);
            }
        });
    }

    fn torrent_mut(&mut self, id: TorrentId) -> Option<&mut Torrent> {
        self.torrents
            .get_mut(id.slot as usize)
            .filter(|t| t.generation == id.generation)
            .and_then(|t| match &mut t.entry {
                Entry::Ready(t) => Some(&mut **t),
                Entry::Magnet(_) => None,
            })
    }

    fn torrent(&self, id: TorrentId) -> Option<&Torrent> {
        self.torrents
            .get(id.slot as usize)
            .filter(|t| t.generation == id.generation)
            .and_then(|t| t.entry.ready())
    }

    /// The torrent's id for an info hash.
    pub fn torrent_by_hash(&self, hash: &InfoHash) -> Option<TorrentId> {
        self.by_hash.get(hash).copied()
    }

    /// Every torrent's id, in slot order.
    pub fn torrent_ids(&self) -> Vec<TorrentId> {
        self.torrents.iter().map(|(_, t)| t.entry.id()).collect()
    }

    /// The torrent's counters.
    pub fn stats(&self, id: TorrentId) -> Option<&TorrentStats> {
        self.slot(id).map(|t| t.entry.stats())
    }

    /// The pieces the torrent has verified.
    pub fn have(&self, id: TorrentId) -> Option<&Bitfield> {
        self.torrent(id).map(|t| t.picker.have())
    }

    /// Whether every wanted piece is verified.
    pub fn is_complete(&self, id: TorrentId) -> bool {
        self.torrent(id).is_some_and(|t| t.picker.is_complete())
    }

    /// Wanted bytes not yet verified.
    pub fn bytes_left(&self, id: TorrentId) -> u64 {
        self.torrent(id).map_or(0, |t| t.picker.bytes_left())
    }

    /// The torrent's connected peers, for user interfaces and the control API.
    pub fn peers(&self, id: TorrentId, now: Time) -> Vec<PeerSummary> {
        let Some(t) = self.torrent(id) else {
            return Vec::new();
        };
        let pieces = t.info.lengths().piece_count();
        t.peers
            .values()
            .map(|p| PeerSummary {
                addr: p.addr,
                client: p.peer_id.client(),
                crypto: p.crypto,
                outgoing: p.outgoing,
                am_choking: p.am_choking,
                am_interested: p.am_interested,
                peer_choking: p.peer_choking,
                peer_interested: p.peer_interested,
                down_rate: p.down.rate(now),
                up_rate: p.up.rate(now),
                pieces: p.has.count(pieces),
                snubbed: p.snubbed,
            })
            .collect()
    }

    /// The torrent's download and upload rates (bytes per second), summed over its peers.
    pub fn rates(&self, id: TorrentId, now: Time) -> (u64, u64) {
        self.torrent(id).map_or((0, 0), |t| {
            t.peers.values().fold((0, 0), |(d, u), p| {
                (d + p.down.rate(now), u + p.up.rate(now))
            })
        })
    }

    /// Connected peers of the torrent.
    pub fn peer_count(&self, id: TorrentId) -> usize {
        self.slot(id).map_or(0, |t| t.entry.peers().len())
    }

    /// The disk error that stopped the torrent, if any.
    pub fn error(&self, id: TorrentId) -> Option<&str> {
        match &self.slot(id)?.entry {
            Entry::Ready(t) => t.error.as_deref(),
            Entry::Magnet(m) => m.error.as_deref(),
        }
    }

    /// Sets file priorities (one per file of the torrent, padding files included).
    pub fn set_file_priorities(&mut self, id: TorrentId, priorities: &[Priority], now: Time) {
        self.with_torrent(id, |t, limits| {
            t.set_file_priorities(priorities, now, limits)
        });
        self.reap();
    }

    /// Sets a torrent's own upload and download limits in bytes per second (`None` or 0:
    /// unlimited). They apply on top of the session-wide limits of [`Config`]: a block goes
    /// out, or a request is sent, only when both allow it.
    pub fn set_rate_limits(
        &mut self,
        id: TorrentId,
        up: Option<u64>,
        down: Option<u64>,
        now: Time,
    ) {
        self.with_torrent(id, |t, limits| t.set_rate_limits(up, down, now, limits));
    }

    /// A torrent's own (upload, download) limits, as [`Session::set_rate_limits`] set them.
    pub fn rate_limits(&self, id: TorrentId) -> Option<(Option<u64>, Option<u64>)> {
        self.torrent(id)
            .map(|t| (t.limits.up.rate(), t.limits.down.rate()))
    }

    /// Changes the session-wide upload and download limits (`Config::upload_rate_limit` and
    /// `Config::download_rate_limit`) while running.
    pub fn set_session_rate_limits(&mut self, up: Option<u64>, down: Option<u64>, now: Time) {
        self.session_limits.set(up, down, now);
        let config = Arc::make_mut(&mut self.config);
        config.upload_rate_limit = self.session_limits.up.rate();
        config.download_rate_limit = self.session_limits.down.rate();
        // Torrents read no rate limit from their config, but the config they hold stays the
        // session's.
        for (_, slot) in self.torrents.iter_mut() {
            slot.entry.ctx_mut().config = self.config.clone();
        }
        self.serve_rate_limited(now, true);
    }

    /// Serves peers waiting for rate-limit tokens in torrents whose wake-up is due (or in
    /// every torrent, after a limit changed), starting one torrent further each time.
    fn serve_rate_limited(&mut self, now: Time, all: bool) {
        let any_due = self
            .torrents
            .iter()
            .filter_map(|(_, t)| t.entry.ready())
            .any(|t| t.rate_wake().is_some_and(|at| at <= now));
        if !any_due && !all {
            return;
        }
        let ids = self.torrent_ids();
        if ids.is_empty() {
            return;
        }
        let start = self.rate_turn % ids.len();
        self.rate_turn = self.rate_turn.wrapping_add(1);
        for &id in ids[start..].iter().chain(&ids[..start]) {
            let due = self
                .torrent(id)
                .and_then(|t| t.rate_wake())
                .is_some_and(|at| at <= now);
            if due || all {
                self.with_torrent(id, |t, limits| t.serve_limited(now, limits));
            }
        }
    }

    /// Seed mode (libtorrent's): every piece the torrent holds was taken on trust and is
    /// verified the first time a peer asks for it; a failure emits
    /// [`Event::SeedModeFailed`]. Call right after adding the torrent with a full bitfield.
    pub fn set_seed_mode(&mut self, id: TorrentId) {
        self.with_torrent(id, |t, _| t.set_seed_mode());
    }

    /// Pieces a seed-mode torrent holds on trust and has not verified yet (0 otherwise).
    pub fn unverified_pieces(&self, id: TorrentId) -> u32 {
        self.torrent(id).map_or(0, Torrent::unverified_count)
    }

    /// First/last-piece priority: the first and last piece of each wanted file are picked
    /// before the others (qBittorrent's `firstLastPiecePrio`).
    pub fn set_first_last_piece_priority(&mut self, id: TorrentId, on: bool, now: Time) {
        self.with_torrent(id, |t, limits| t.set_first_last(on, now, limits));
        self.reap();
    }

    /// Downloads pieces in order (for streaming) instead of rarest first.
    pub fn set_sequential(&mut self, id: TorrentId, on: bool) {
        if let Some(t) = self.torrent_mut(id) {
            t.set_sequential(on);
        }
    }

    /// Adds peer addresses to dial for a torrent; they are dialled on the next ticks, within
    /// the connection limits.
    pub fn add_peers(&mut self, id: TorrentId, addrs: &[SocketAddr], now: Time) {
        if let Some(slot) = self.slot_mut(id) {
            slot.entry.peers_mut().add_known(addrs, now);
        }
        self.next_tick = self.next_tick.min(now);
    }

    // ------------------------------------------------------------------------ connections

    fn insert_conn(&mut self, state: ConnState) -> ConnId {
        let generation = self.generation();
        let slot = self.conns.insert(Conn { generation, state }) as u32;
        ConnId { slot, generation }
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot as usize)
            .filter(|c| c.generation == id.generation)
    }

    /// Dials `addr` for a torrent now, bypassing the known-peer list. Returns `None` when
    /// the limits forbid it.
    pub fn connect(&mut self, torrent: TorrentId, addr: SocketAddr, now: Time) -> Option<ConnId> {
        let addr = unmap(addr);
        if self.conns.len() >= self.config.max_connections
            || !self.slot(torrent)?.entry.has_room()
            || self.ip_load(torrent, addr.ip(), None) >= self.config.max_peers_per_ip
        {
            return None;
        }
        let encrypt = self
            .slot(torrent)?
            .entry
            .peers()
            .dial_encrypted(addr, self.config.encryption);
        let conn = self.insert_conn(ConnState::Handshaking(Box::new(Handshaking {
            addr,
            outgoing: true,
            torrent: Some(torrent),
            connected: false,
            since: now,
            sent_ours: false,
            recv: BytesMut::new(),
            send: SendBuf::default(),
            send_notified: false,
            mse: Mse::Off,
            encrypt,
            recv_cipher: None,
            held: None,
        })));
        self.out.actions.push_back(Action::Connect {
            conn,
            addr,
            from: None,
        });
        Some(conn)
    }

    /// Connections `ip` holds to `torrent`: its peers, and connections still handshaking for
    /// it (`except` one of them, the connection asking).
    fn ip_load(&self, torrent: TorrentId, ip: IpAddr, except: Option<ConnId>) -> usize {
        let peers = self
            .slot(torrent)
            .map_or(0, |t| t.entry.peers().count_ip(ip));
        let handshaking = self
            .conns
            .iter()
            .filter(|&(slot, c)| {
                except.is_none_or(|e| e.slot as usize != slot)
                    && matches!(&c.state, ConnState::Handshaking(h)
                        if h.torrent == Some(torrent) && h.addr.ip() == ip)
            })
            .count();
        peers + handshaking
    }

    /// Incoming connections from `ip` that have not finished their handshake (or are on their
    /// way to another loop).
    fn handshaking_from(&self, ip: IpAddr) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| match &c.state {
                ConnState::Handshaking(h) => !h.outgoing && h.addr.ip() == ip,
                ConnState::HandingOff(h) => h.addr.ip() == ip,
                ConnState::Peer { .. } => false,
            })
            .count()
    }

    /// The session is full and a connection from `ip` is coming in: closes the idle, useless
    /// peer (of any torrent) it may replace, under the rule of `PeerSet::eviction_candidate`
    /// with the session's connections counted by address: the victim's address must hold
    /// more of them than `ip`, the most crowded goes first, then the longest connected. At
    /// most one search a tick finds nothing.
    fn evict_for(&mut self, ip: IpAddr, now: Time) {
        if now < self.evict_search_after {
            return;
        }
        let config = &self.config;
        let mut idle = Vec::new();
        for (_, slot) in self.torrents.iter() {
            let id = slot.entry.id();
            for (key, p) in slot.entry.peers().idle(now, config) {
                idle.push((id, key, p.addr.ip(), p.connected_at));
            }
        }
        if idle.is_empty() {
            self.evict_search_after = now + config.tick;
            return;
        }
        let mut per_ip: std::collections::BTreeMap<IpAddr, usize> = Default::default();
        for (_, slot) in self.torrents.iter() {
            for p in slot.entry.peers().values() {
                *per_ip.entry(p.addr.ip()).or_default() += 1;
            }
        }
        for (_, c) in self.conns.iter() {
            match &c.state {
                ConnState::Handshaking(h) => *per_ip.entry(h.addr.ip()).or_default() += 1,
                ConnState::HandingOff(h) => *per_ip.entry(h.addr.ip()).or_default() += 1,
                ConnState::Peer { .. } => {}
            }
        }
        let newcomer = per_ip.get(&ip).copied().unwrap_or(0);
        let victim = idle
            .into_iter()
            .filter(|v| per_ip[&v.2] > newcomer)
            .max_by_key(|&(id, key, at_ip, since)| {
                (
                    per_ip[&at_ip],
                    std::cmp::Reverse(since),
                    std::cmp::Reverse((id.slot, key)),
                )
            });
        match victim {
            Some((id, key, _, _)) => {
                self.with_entry(id, |entry, _| {
                    entry.close_peer(key, CloseReason::Evicted, now)
                });
                self.reap();
            }
            None => self.evict_search_after = now + self.config.tick,
        }
    }

    /// An outgoing connection came up: the handshake goes out, plain or inside an encrypted
    /// one (Ya and PadA first; our BitTorrent handshake travels as its initial payload).
    pub fn handle_connected(&mut self, conn: ConnId, now: Time) {
        let peer_id = self.peer_id;
        let (torrent, encrypt) = match self.conn_mut(conn).map(|c| &c.state) {
            Some(ConnState::Handshaking(h)) => (h.torrent, h.encrypt),
            _ => return,
        };
        let Some((hash, v2)) = torrent
            .and_then(|t| self.slot(t))
            .map(|t| (t.entry.info_hash(), t.entry.speaks_v2()))
        else {
            return;
        };
        let reserved = our_reserved(&self.config, v2);
        let initiator = encrypt.then(|| {
            let (secret, pad_a, pad_c) = (self.secret(), self.padding(), self.padding());
            let ours = Handshake::new(reserved, hash, peer_id).to_bytes().to_vec();
            Initiator::new(secret, hash, self.methods(), pad_a, pad_c, ours)
        });
        let Some(Conn {
            state: ConnState::Handshaking(h),
            ..
        }) = conn_in(&mut self.conns, conn)
        else {
            return;
        };
        h.connected = true;
        h.since = now;
        match initiator {
            Some((initiator, first)) => {
                Self::queue_send(&mut self.out, conn, h, &first);
                h.mse = Mse::Initiating(Box::new(initiator));
                h.sent_ours = true;
            }
            None => Self::send_handshake(&mut self.out, conn, h, hash, peer_id, reserved),
        }
    }

    fn send_handshake(
        out: &mut Outbox,
        conn: ConnId,
        h: &mut Handshaking,
        hash: InfoHash,
        peer_id: PeerId,
        reserved: Reserved,
    ) {
        Self::queue_send(
            out,
            conn,
            h,
            &Handshake::new(reserved, hash, peer_id).to_bytes(),
        );
        h.sent_ours = true;
    }

    /// Queues bytes on a handshaking connection, telling the driver if the buffer was empty.
    fn queue_send(out: &mut Outbox, conn: ConnId, h: &mut Handshaking, bytes: &[u8]) {
        // Nothing to send must not ask the driver to send: a driver that finds nothing
        // reports nothing sent, and the flag would stay up, silencing later sends.
        if bytes.is_empty() {
            return;
        }
        h.send.push_bytes(bytes);
        if !h.send_notified {
            h.send_notified = true;
            out.actions.push_back(Action::Send { conn });
        }
    }

    /// The driver accepted an incoming connection. Returns `None` (close the socket) when
    /// the session is at its connection limit, or when the address already has
    /// `Config::max_peers_per_ip` incoming connections still handshaking here.
    ///
    /// An IPv4-mapped address (from a dual-stack listener) is taken as the IPv4 address it
    /// carries (the drivers unmap it already; see `types::unmap`).
    pub fn accept(&mut self, addr: SocketAddr, now: Time) -> Option<ConnId> {
        let addr = unmap(addr);
        if self.conns.len() >= self.config.max_connections {
            self.evict_for(addr.ip(), now);
        }
        let refused = if self.conns.len() >= self.config.max_connections {
            Some(CloseReason::TooManyConnections)
        } else if self.handshaking_from(addr.ip()) >= self.config.max_peers_per_ip {
            // Before its handshake names a torrent, a connection counts against no torrent's
            // cap: without this one address could hold every connection of the session with
            // handshakes it never sends, a handshake timeout at a time.
            Some(CloseReason::TooManyFromIp)
        } else {
            None
        };
        if let Some(reason) = refused {
            *self.handshake_closes.entry(reason.name()).or_default() += 1;
            return None;
        }
        self.conn_stats.accepted += 1;
        Some(
            self.insert_conn(ConnState::Handshaking(Box::new(Handshaking {
                addr,
                outgoing: false,
                torrent: None,
                connected: true,
                since: now,
                sent_ours: false,
                recv: BytesMut::new(),
                send: SendBuf::default(),
                send_notified: false,
                mse: Mse::Off,
                encrypt: false,
                recv_cipher: None,
                held: None,
            }))),
        )
    }

    /// Bytes arrived on a connection.
    pub fn handle_recv(&mut self, conn: ConnId, data: &[u8], now: Time) {
        self.dht_now = self.dht_now.max(now);
        let Some(c) = self.conn_mut(conn) else { return };
        match &mut c.state {
            ConnState::Peer { torrent, key } => {
                let (torrent, key) = (*torrent, *key);
                self.with_entry(torrent, |entry, limits| {
                    entry.on_bytes(key, data, false, now, limits)
                });
            }
            ConnState::Handshaking(h) => {
                extend_decrypted(&mut h.recv, data, h.recv_cipher.as_deref_mut());
                self.advance_handshake(conn, now);
            }
            ConnState::HandingOff(h) => {
                if h.recv.len() + data.len() > MAX_HANDOFF_BUFFER {
                    return self.close_handshaking(conn, CloseReason::HandOffFlood, now);
                }
                let rc4 = h.mse.as_mut().and_then(|c| c.as_mut()).map(|c| &mut c.recv);
                extend_decrypted(&mut h.recv, data, rc4);
            }
        }
        self.reap();
    }

    /// Lends `conn`'s receive buffer for the driver to read into, so that arriving bytes need
    /// no copy: the driver writes into its spare capacity (at least [`RECV_MIN_SPARE`] bytes,
    /// reserved here when it has less), extends its length by what it wrote and reports that
    /// with [`Session::handle_recv_in_place`]. The bytes already in it are not the driver's to
    /// change. `None` when the connection is unknown.
    ///
    /// A driver asks only when a read is due and calls [`Session::recv_drained`] once the
    /// socket has nothing more, so an idle connection holds no reserved space.
    pub fn recv_buffer(&mut self, conn: ConnId) -> Option<&mut BytesMut> {
        let buf = self.recv_buf_mut(conn)?;
        if buf.capacity() - buf.len() < RECV_MIN_SPARE {
            buf.reserve(RECV_READ_LEN);
        }
        Some(buf)
    }

    /// `n` bytes arrived on `conn` at the end of the buffer [`Session::recv_buffer`] lent:
    /// decrypts them in place on an RC4 connection and handles them as
    /// [`Session::handle_recv`] does.
    pub fn handle_recv_in_place(&mut self, conn: ConnId, n: usize, now: Time) {
        self.dht_now = self.dht_now.max(now);
        let Some(c) = self.conn_mut(conn) else { return };
        match &mut c.state {
            ConnState::Peer { torrent, key } => {
                let (torrent, key) = (*torrent, *key);
                self.with_entry(torrent, |entry, limits| {
                    entry.on_filled(key, n, now, limits)
                });
            }
            ConnState::Handshaking(h) => {
                decrypt_tail(&mut h.recv, n, h.recv_cipher.as_deref_mut());
                self.advance_handshake(conn, now);
            }
            ConnState::HandingOff(h) => {
                if h.recv.len() > MAX_HANDOFF_BUFFER {
                    return self.close_handshaking(conn, CloseReason::HandOffFlood, now);
                }
                let rc4 = h.mse.as_mut().and_then(|c| c.as_mut()).map(|c| &mut c.recv);
                decrypt_tail(&mut h.recv, n, rc4);
            }
        }
        self.reap();
    }

    /// Bytes arrived on `conn` in a buffer the driver gives away (a receive buffer it does not
    /// reuse). When the connection's own buffer is empty the chunk becomes it, without a
    /// copy; otherwise only the rest of the message waiting in it is copied across and the
    /// chunk takes over from there. Handles them as [`Session::handle_recv`] does.
    pub fn handle_recv_owned(&mut self, conn: ConnId, mut chunk: BytesMut, now: Time) {
        self.dht_now = self.dht_now.max(now);
        let Some(c) = self.conn_mut(conn) else { return };
        let ConnState::Peer { torrent, key } = c.state else {
            return self.handle_recv(conn, &chunk, now);
        };
        self.with_entry(torrent, |entry, limits| {
            entry.on_chunk(key, &mut chunk, now, limits)
        });
        // Each chunk is a whole read: an emptied buffer gives the chunk's room back, and
        // a short chunk's unused room is not kept behind part of a message.
        self.recv_drained(conn);
        self.reap();
    }

    /// The driver read `conn` until the socket had nothing more: an empty receive buffer
    /// gives its capacity back, and one holding part of a message keeps no more than
    /// [`RECV_KEEP_SPARE`] spare bytes, so what a quiet peer makes us hold is what it sent.
    pub fn recv_drained(&mut self, conn: ConnId) {
        let Some(buf) = self.recv_buf_mut(conn) else {
            return;
        };
        shrink_recv(buf);
    }

    /// The length and capacity of `conn`'s receive buffer, for tests of what it holds.
    #[cfg(test)]
    pub(crate) fn recv_held(&mut self, conn: ConnId) -> Option<(usize, usize)> {
        self.recv_buf_mut(conn).map(|b| (b.len(), b.capacity()))
    }

    fn recv_buf_mut(&mut self, conn: ConnId) -> Option<&mut BytesMut> {
        let c = conn_in(&mut self.conns, conn)?;
        match &mut c.state {
            ConnState::Peer { torrent, key } => {
                let slot = self
                    .torrents
                    .get_mut(torrent.slot as usize)
                    .filter(|t| t.generation == torrent.generation)?;
                Some(&mut slot.entry.peers_mut().get_mut(key)?.recv)
            }
            ConnState::Handshaking(h) => Some(&mut h.recv),
            ConnState::HandingOff(h) => Some(&mut h.recv),
        }
    }

    fn close_handshaking(&mut self, conn: ConnId, reason: CloseReason, now: Time) {
        self.forget_handshaking(conn, reason, now, true);
    }

    /// Drops a connection that never finished its handshake: counts why, lets its torrent
    /// retry the address later, and (unless the driver closed it) asks for the socket closed.
    fn forget_handshaking(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        now: Time,
        close_socket: bool,
    ) {
        let Some(c) = self.conn_mut(conn) else { return };
        if let ConnState::Handshaking(h) = &c.state {
            if let Some(held) = h.held.and_then(|hash| self.expected.get_mut(&hash)) {
                *held = held.saturating_sub(1);
            }
        }
        let Some(c) = self.conn_mut(conn) else { return };
        let (addr, torrent, outgoing, refused) = match &c.state {
            ConnState::Handshaking(h) => {
                // The TCP connection came up and the peer closed it, or never answered, or
                // broke the encrypted handshake: it may not speak the method we dialled
                // with.
                let refused = h.connected
                    && matches!(
                        reason,
                        CloseReason::RemoteClosed
                            | CloseReason::HandshakeTimeout
                            | CloseReason::Encryption(_)
                    );
                (h.addr, h.torrent, h.outgoing, refused.then_some(h.encrypt))
            }
            ConnState::HandingOff(h) => (h.addr, None, false, None),
            ConnState::Peer { .. } => return,
        };
        self.conns.remove(conn.slot as usize);
        *self.handshake_closes.entry(reason.name()).or_default() += 1;
        if let (Some(t), true) = (torrent, outgoing) {
            if let Some(slot) = self
                .torrents
                .get_mut(t.slot as usize)
                .filter(|s| s.generation == t.generation)
            {
                let peers = slot.entry.peers_mut();
                match refused {
                    Some(encrypted) => peers.handshake_refused(addr, encrypted, &self.config, now),
                    None => peers.dial_failed(addr, &self.config, now),
                }
            }
        }
        if close_socket {
            self.out.actions.push_back(Action::Close { conn });
        }
        self.out.events.push_back(Event::PeerClosed {
            torrent,
            conn,
            addr,
            reason,
        });
    }

    fn advance_handshake(&mut self, conn: ConnId, now: Time) {
        let peer_id = self.peer_id;
        let Some(Conn {
            state: ConnState::Handshaking(h),
            ..
        }) = conn_in(&mut self.conns, conn)
        else {
            return;
        };
        // An incoming connection that does not open with the plain handshake's 19 speaks
        // MSE/PE (libtorrent, Transmission and qBittorrent do so by default). We answer it,
        // selecting what the policy allows, and carry on below with the decrypted bytes.
        if !h.outgoing && h.torrent.is_none() && matches!(h.mse, Mse::Off) {
            // A plain handshake opens with the 20 bytes of its protocol string; an encrypted
            // one with Ya, which starts with 19 once in 256 connections, so one byte does
            // not tell them apart.
            let seen = h.recv.len().min(PROTOCOL_PREFIX.len());
            let matching = h.recv[..seen]
                .iter()
                .zip(PROTOCOL_PREFIX)
                .take_while(|(a, b)| a == b)
                .count();
            let plain = matching == seen;
            // Bytes that follow the protocol string for four bytes or more and then leave it
            // are a broken plain handshake, not Ya (which starts so once in 2^32 connections).
            if !plain && matching >= 4 {
                let e = super::wire::HandshakeError::ProtocolName;
                return self.close_handshaking(conn, CloseReason::NotBitTorrent(e), now);
            }
            match (plain, seen) {
                (_, 0) => return,
                (true, n) if n < PROTOCOL_PREFIX.len() => return,
                (true, _) if self.config.encryption == Encryption::Require => {
                    return self.close_handshaking(conn, CloseReason::EncryptionRequired, now);
                }
                (true, _) => {}
                (false, _) => {
                    let (secret, pad_b) = (self.secret(), self.padding());
                    let responder = Responder::new(secret, pad_b, self.methods());
                    let Some(Conn {
                        state: ConnState::Handshaking(h),
                        ..
                    }) = conn_in(&mut self.conns, conn)
                    else {
                        return;
                    };
                    h.mse = Mse::Responding(Box::new(responder));
                }
            }
        }
        let Some(Conn {
            state: ConnState::Handshaking(h),
            ..
        }) = conn_in(&mut self.conns, conn)
        else {
            return;
        };
        let step = match &mut h.mse {
            Mse::Responding(responder) => {
                let data = h.recv.split();
                let known = self.by_hash.keys().chain(self.routes.keys());
                Some(responder.feed(&data, known.chain(self.expected.keys())))
            }
            Mse::Initiating(initiator) => {
                let data = h.recv.split();
                Some(initiator.feed(&data))
            }
            Mse::Off | Mse::Done { .. } => None,
        };
        match step {
            None => {}
            Some(Err(e)) => return self.close_handshaking(conn, CloseReason::Encryption(e), now),
            Some(Ok(Step::NeedMore)) => return,
            Some(Ok(Step::Send(bytes))) => {
                Self::queue_send(&mut self.out, conn, h, &bytes);
                return;
            }
            Some(Ok(Step::Established {
                info_hash,
                send,
                plaintext_after,
                cipher,
            })) => {
                h.recv.extend_from_slice(&plaintext_after);
                h.mse = Mse::Done {
                    info_hash,
                    rc4: cipher.is_some(),
                };
                if !h.outgoing && !self.by_hash.contains_key(&info_hash) {
                    if let Some(&shard) = self.routes.get(&info_hash) {
                        return self.hand_off(conn, info_hash, shard, send, Some(cipher));
                    }
                }
                Self::queue_send(&mut self.out, conn, h, &send);
                if let Some(cipher) = cipher {
                    let Cipher { send, recv } = *cipher;
                    h.send.encrypt_from_now(Box::new(send));
                    h.recv_cipher = Some(Box::new(recv));
                }
            }
        }
        // Route an incoming connection as soon as the info hash is in.
        if h.torrent.is_none() {
            let prefix = match Handshake::decode_prefix(SplitBytes::single(&h.recv)) {
                Err(e) => return self.close_handshaking(conn, CloseReason::NotBitTorrent(e), now),
                Ok(Decoded::Incomplete { .. }) => return,
                Ok(Decoded::Complete { value, .. }) => value,
            };
            let addr = h.addr;
            if matches!(h.mse, Mse::Done { info_hash, .. } if info_hash != prefix.info_hash) {
                return self.close_handshaking(conn, CloseReason::WrongInfoHash, now);
            }
            let Some(&tid) = self.by_hash.get(&prefix.info_hash) else {
                if let Some(&shard) = self.routes.get(&prefix.info_hash) {
                    return self.hand_off(conn, prefix.info_hash, shard, Vec::new(), None);
                }
                if let Some(held) = self.expected.get_mut(&prefix.info_hash) {
                    // Its torrent is being checked: wait for it, within the bound a moving
                    // connection has.
                    if let Some(Conn {
                        state: ConnState::Handshaking(h),
                        ..
                    }) = conn_in(&mut self.conns, conn)
                    {
                        if h.held.is_none() {
                            h.held = Some(prefix.info_hash);
                            *held += 1;
                        }
                        if h.recv.len() > MAX_HANDOFF_BUFFER {
                            return self.close_handshaking(conn, CloseReason::HandOffFlood, now);
                        }
                    }
                    return;
                }
                return self.close_handshaking(conn, CloseReason::UnknownTorrent, now);
            };
            let t = &self
                .slot(tid)
                .expect("by_hash points at live torrents")
                .entry;
            if t.peers().is_banned(addr.ip()) {
                return self.close_handshaking(conn, CloseReason::Banned, now);
            }
            if self.ip_load(tid, addr.ip(), Some(conn)) >= self.config.max_peers_per_ip {
                return self.close_handshaking(conn, CloseReason::TooManyFromIp, now);
            }
            // A full torrent answers only a newcomer that may take an idle peer's place.
            if !t.has_room()
                && t.peers()
                    .eviction_candidate(addr.ip(), now, &self.config)
                    .is_none()
            {
                return self.close_handshaking(conn, CloseReason::TooManyPeers, now);
            }
            let reserved = our_reserved(&self.config, t.speaks_v2());
            let Some(Conn {
                state: ConnState::Handshaking(h),
                ..
            }) = conn_in(&mut self.conns, conn)
            else {
                return;
            };
            h.torrent = Some(tid);
            Self::send_handshake(&mut self.out, conn, h, prefix.info_hash, peer_id, reserved);
        }
        let Some(Conn {
            state: ConnState::Handshaking(h),
            ..
        }) = self.conn_mut(conn)
        else {
            return;
        };
        let theirs = match Handshake::decode(SplitBytes::single(&h.recv)) {
            Err(e) => return self.close_handshaking(conn, CloseReason::NotBitTorrent(e), now),
            Ok(Decoded::Incomplete { .. }) => return,
            Ok(Decoded::Complete { value, .. }) => value,
        };
        let tid = h.torrent.expect("set above");
        let Some(t) = self.slot(tid).map(|s| &s.entry) else {
            return self.close_handshaking(conn, CloseReason::TorrentRemoved, now);
        };
        if !t.answers_to(&theirs.info_hash) {
            return self.close_handshaking(conn, CloseReason::WrongInfoHash, now);
        }
        if theirs.peer_id == peer_id {
            return self.close_handshaking(conn, CloseReason::SelfConnection, now);
        }
        if let Some((existing, existing_outgoing)) = t.peers().peer_by_id(&theirs.peer_id) {
            // Two connections between the same pair, usually because both dialled at once.
            // Both sides must drop the same one, or both die: keep the connection opened by
            // the peer with the smaller id.
            let outgoing = match self.conns.get(conn.slot as usize).map(|c| &c.state) {
                Some(ConnState::Handshaking(h)) => h.outgoing,
                _ => return,
            };
            let initiator = |ours: bool| if ours { peer_id } else { theirs.peer_id };
            let keep_new = initiator(outgoing).as_bytes() < initiator(existing_outgoing).as_bytes();
            if !keep_new {
                return self.close_handshaking(conn, CloseReason::DuplicatePeer, now);
            }
            self.with_entry(tid, |entry, _| {
                entry.close_peer(existing, CloseReason::DuplicatePeer, now)
            });
            self.reap();
        }
        let Some(t) = self.slot(tid).map(|s| &s.entry) else {
            return;
        };
        let Some(ConnState::Handshaking(h)) = self.conns.get(conn.slot as usize).map(|c| &c.state)
        else {
            return;
        };
        let (ip, outgoing) = (h.addr.ip(), h.outgoing);
        // Several handshakes from one address may be under way at once: the cap holds
        // among the peers that finish.
        if t.peers().count_ip(ip) >= self.config.max_peers_per_ip {
            return self.close_handshaking(conn, CloseReason::TooManyFromIp, now);
        }
        if !t.has_room() {
            // Only a peer that came to us takes an idle one's place: one we dialled found
            // room when we dialled, and a full torrent dials nobody.
            let victim = (!outgoing)
                .then(|| t.peers().eviction_candidate(ip, now, &self.config))
                .flatten();
            let Some(victim) = victim else {
                return self.close_handshaking(conn, CloseReason::TooManyPeers, now);
            };
            self.with_entry(tid, |entry, _| {
                entry.close_peer(victim, CloseReason::Evicted, now)
            });
            self.reap();
        }
        let Some(t) = self.slot(tid).map(|s| &s.entry) else {
            return;
        };
        let piece_count = t.ready().map_or(0, |t| t.info.lengths().piece_count());
        // Take the connection's buffers over into the peer: unsent handshake bytes and any
        // bytes the peer sent after its handshake.
        let Some(c) = self.conn_mut(conn) else { return };
        let ConnState::Handshaking(mut h) = std::mem::replace(
            &mut c.state,
            ConnState::Peer {
                torrent: tid,
                key: PeerKey(0),
            },
        ) else {
            unreachable!("checked above")
        };
        h.recv.advance(HANDSHAKE_LEN);
        let leftover = h.recv.split();
        let listen_port = self.listen_port;
        let ours = our_reserved(
            &self.config,
            self.torrents[tid.slot as usize].entry.speaks_v2(),
        );
        let slot = &mut self.torrents[tid.slot as usize].entry;
        let key = slot.peers_mut().next_key();
        let peer = Peer::new(
            conn,
            h.addr,
            theirs.peer_id,
            h.outgoing,
            ours,
            theirs.reserved,
            piece_count,
            now,
            std::mem::take(&mut h.send),
            h.send_notified,
        );
        let peer = Peer {
            crypto: h.mse.crypto(),
            recv_cipher: h.recv_cipher.take(),
            ..peer
        };
        self.with_entry(tid, |entry, _| match entry {
            Entry::Ready(t) => t.attach(key, peer, listen_port, now),
            Entry::Magnet(m) => m.attach(key, peer, listen_port, now),
        });
        if let Some(c) = self.conns.get_mut(conn.slot as usize) {
            c.state = ConnState::Peer { torrent: tid, key };
        }
        if !leftover.is_empty() {
            self.with_entry(tid, |entry, limits| {
                entry.on_bytes(key, &leftover, true, now, limits)
            });
        }
    }

    /// Turns a handshaking incoming connection into one waiting to move to `shard`, with
    /// `send` (an MSE reply's end) to go out after whatever it has queued. `established`:
    /// an MSE handshake that just ended, with its RC4 streams if it selected RC4 (not yet
    /// installed on the connection); `None` takes them from the connection.
    fn hand_off(
        &mut self,
        conn: ConnId,
        info_hash: InfoHash,
        shard: u32,
        send: Vec<u8>,
        established: Option<Option<Box<Cipher>>>,
    ) {
        let Some(c) = conn_in(&mut self.conns, conn) else {
            return;
        };
        let ConnState::Handshaking(h) = &mut c.state else {
            return;
        };
        // In their final form: `chunks` encrypts what waits under the send stream first.
        let mut queued: Vec<u8> = h.send.chunks().flatten().copied().collect();
        queued.extend_from_slice(&send);
        let mse = match (established, &h.mse) {
            (Some(cipher), _) => Some(cipher),
            (None, Mse::Done { .. }) => Some(match (h.send.take_cipher(), h.recv_cipher.take()) {
                (Some(send), Some(recv)) => Some(Box::new(Cipher {
                    send: *send,
                    recv: *recv,
                })),
                _ => None,
            }),
            (None, _) => None,
        };
        let handoff = HandOff {
            addr: h.addr,
            info_hash,
            shard,
            since: h.since,
            recv: h.recv.split(),
            send: queued,
            mse,
        };
        c.state = ConnState::HandingOff(Box::new(handoff));
        self.conn_stats.sent += 1;
        self.out.actions.push_back(Action::HandOff { conn, shard });
    }

    /// Gives up a connection announced by [`Action::HandOff`], for the owning shard's
    /// [`Session::adopt`]. The session forgets it; `None` if it is not being handed off (it
    /// closed meanwhile).
    pub fn take_handoff(&mut self, conn: ConnId) -> Option<HandOff> {
        let c = self.conn_mut(conn)?;
        if !matches!(c.state, ConnState::HandingOff(_)) {
            return None;
        }
        match self.conns.remove(conn.slot as usize).state {
            ConnState::HandingOff(h) => Some(*h),
            _ => unreachable!("checked above"),
        }
    }

    /// Continues a connection another session accepted (see [`Session::take_handoff`]): the
    /// driver has registered its socket under the returned id. `None` (close the socket) when
    /// this session is at its connection limit. The handshake carries on from the bytes the
    /// hand-off holds; a torrent that went away meanwhile closes it as unknown.
    pub fn adopt(&mut self, handoff: HandOff, now: Time) -> Option<ConnId> {
        if self.conns.len() >= self.config.max_connections {
            *self
                .handshake_closes
                .entry(CloseReason::TooManyConnections.name())
                .or_default() += 1;
            return None;
        }
        let HandOff {
            addr,
            info_hash,
            recv,
            send,
            mse,
            ..
        } = handoff;
        let (mse, cipher) = match mse {
            None => (Mse::Off, None),
            Some(cipher) => (
                Mse::Done {
                    info_hash,
                    rc4: cipher.is_some(),
                },
                cipher,
            ),
        };
        let conn = self.insert_conn(ConnState::Handshaking(Box::new(Handshaking {
            addr,
            outgoing: false,
            torrent: None,
            connected: true,
            since: now,
            sent_ours: false,
            recv,
            send: SendBuf::default(),
            send_notified: false,
            mse,
            encrypt: false,
            recv_cipher: None,
            held: None,
        })));
        self.conn_stats.adopted += 1;
        if let Some(Conn {
            state: ConnState::Handshaking(h),
            ..
        }) = conn_in(&mut self.conns, conn)
        {
            if !send.is_empty() {
                Self::queue_send(&mut self.out, conn, h, &send);
            }
            if let Some(cipher) = cipher {
                let Cipher { send, recv } = *cipher;
                h.send.encrypt_from_now(Box::new(send));
                h.recv_cipher = Some(Box::new(recv));
            }
        }
        self.advance_handshake(conn, now);
        self.reap();
        Some(conn)
    }

    /// The driver's socket for `conn` closed or failed.
    pub fn handle_closed(&mut self, conn: ConnId, now: Time) {
        let Some(c) = self.conn_mut(conn) else { return };
        match &c.state {
            ConnState::Handshaking(h) => {
                let reason = if h.outgoing && !h.connected {
                    CloseReason::ConnectFailed
                } else {
                    CloseReason::RemoteClosed
                };
                // The driver has closed the socket already.
                self.forget_handshaking(conn, reason, now, false);
            }
            ConnState::HandingOff(_) => {
                self.forget_handshaking(conn, CloseReason::RemoteClosed, now, false)
            }
            ConnState::Peer { torrent, key } => {
                let (torrent, key) = (*torrent, *key);
                self.with_entry(torrent, |entry, _| {
                    entry.close_peer(key, CloseReason::RemoteClosed, now)
                });
                self.reap();
            }
        }
    }

    /// The bytes waiting to go out on `conn`, as slices in order (for a vectored send).
    pub fn send_chunks(&mut self, conn: ConnId) -> Vec<&[u8]> {
        let Some(c) = self
            .conns
            .get_mut(conn.slot as usize)
            .filter(|c| c.generation == conn.generation)
        else {
            return Vec::new();
        };
        match &mut c.state {
            ConnState::Handshaking(h) => h.send.chunks().collect(),
            ConnState::HandingOff(_) => Vec::new(),
            ConnState::Peer { torrent, key } => {
                let (torrent, key) = (*torrent, *key);
                match self
                    .torrents
                    .get_mut(torrent.slot as usize)
                    .filter(|t| t.generation == torrent.generation)
                {
                    Some(t) => t
                        .entry
                        .peers_mut()
                        .get_mut(&key)
                        .map(|p| p.send.chunks().collect())
                        .unwrap_or_default(),
                    None => Vec::new(),
                }
            }
        }
    }

    /// The driver sent `n` bytes from the front of `conn`'s send buffer (bytes it took with
    /// [`Session::take_send`] come first).
    pub fn handle_sent(&mut self, conn: ConnId, n: usize, now: Time) {
        let Some(c) = self.conn_mut(conn) else { return };
        match &mut c.state {
            ConnState::Handshaking(h) => {
                h.send.consume(n);
                if h.send.is_empty() {
                    h.send_notified = false;
                }
            }
            ConnState::HandingOff(_) => {}
            ConnState::Peer { torrent, key } => {
                let (torrent, key) = (*torrent, *key);
                self.with_entry(torrent, |entry, limits| match entry {
                    Entry::Ready(t) => t.on_sent(key, n, now, limits),
                    Entry::Magnet(m) => {
                        m.peers.sent(key, n);
                    }
                });
            }
        }
    }

    /// Takes whole chunks queued on `conn`, up to about `max` bytes (at least one chunk), for
    /// drivers such as the simulator that move owned buffers. While data remains, the driver
    /// keeps taking; a new [`Action::Send`] comes only after the buffer was emptied. The
    /// driver reports the taken bytes with [`Session::handle_sent`] as the kernel (or the
    /// simulated link) accepts them: until then they count against the peer's send watermark
    /// and the upload budget, as memory this connection holds.
    pub fn take_send(&mut self, conn: ConnId, max: usize) -> Vec<Bytes> {
        let Some(c) = self.conn_mut(conn) else {
            return Vec::new();
        };
        match &mut c.state {
            ConnState::Handshaking(h) => {
                let taken = h.send.take_upto(max);
                if h.send.is_empty() {
                    h.send_notified = false;
                }
                taken
            }
            ConnState::HandingOff(_) => Vec::new(),
            ConnState::Peer { torrent, key } => {
                let (torrent, key) = (*torrent, *key);
                self.with_entry(torrent, |entry, _| match entry {
                    Entry::Ready(t) => t.take_send(key, max),
                    Entry::Magnet(m) => m.peers.take_send(key, max).unwrap_or_default(),
                })
                .unwrap_or_default()
            }
        }
    }

    // ------------------------------------------------------------------------ disk, timers

    /// A disk operation finished.
    pub fn handle_disk(&mut self, done: DiskDone, now: Time) {
        let torrent = match &done {
            DiskDone::Written { torrent, .. }
            | DiskDone::Read { torrent, .. }
            | DiskDone::Verified { torrent, .. } => *torrent,
        };
        self.with_torrent(torrent, |t, limits| t.on_disk(done, now, limits));
        self.reap();
    }

    /// Block payload held for uploads across the session: being read from disk, queued to
    /// send, or taken by the driver and not yet reported sent. At most
    /// `Config::upload_buffer_budget` plus one block per peer (see `Config`).
    pub fn upload_buffered(&self) -> usize {
        self.upload_held
    }

    /// When [`Session::handle_timeout`] wants to be called next: the next housekeeping tick,
    /// or sooner when rate-limited peers wait for tokens that will have accrued by then.
    pub fn poll_timeout(&self) -> Option<Time> {
        let wake = self
            .torrents
            .iter()
            .filter_map(|(_, t)| t.entry.ready().and_then(Torrent::rate_wake))
            .min();
        let next = wake.map_or(self.next_tick, |w| w.min(self.next_tick));
        let dht = self.dht.as_deref().and_then(Dht::poll_timeout);
        Some(dht.map_or(next, |d| d.min(next)))
    }

    /// Serves rate-limited peers whose tokens have accrued, and runs housekeeping if it is
    /// due: handshake and connect time-outs, keep-alives, inactivity, request time-outs, the
    /// choker, and dialling known peers.
    pub fn handle_timeout(&mut self, now: Time) {
        self.dht_now = self.dht_now.max(now);
        if let Some(dht) = self.dht.as_deref_mut() {
            if dht.poll_timeout().is_some_and(|t| t <= now) {
                dht.handle_timeout(now);
            }
        }
        self.serve_rate_limited(now, false);
        if now < self.next_tick {
            self.reap();
            return;
        }
        self.next_tick = now + self.config.tick;
        let expired: Vec<(ConnId, CloseReason)> = self
            .conns
            .iter()
            .filter_map(|(slot, c)| match &c.state {
                ConnState::Handshaking(h) => {
                    let id = ConnId {
                        slot: slot as u32,
                        generation: c.generation,
                    };
                    if !h.connected && now.saturating_since(h.since) >= self.config.connect_timeout
                    {
                        Some((id, CloseReason::ConnectTimeout))
                    } else if h.connected
                        && now.saturating_since(h.since) >= self.config.handshake_timeout
                    {
                        Some((id, CloseReason::HandshakeTimeout))
                    } else {
                        None
                    }
                }
                // A driver that cannot move the socket (its send never completes) must not
                // keep it forever.
                ConnState::HandingOff(h) => {
                    (now.saturating_since(h.since) >= self.config.handshake_timeout).then_some((
                        ConnId {
                            slot: slot as u32,
                            generation: c.generation,
                        },
                        CloseReason::HandshakeTimeout,
                    ))
                }
                ConnState::Peer { .. } => None,
            })
            .collect();
        for (id, reason) in expired {
            self.close_handshaking(id, reason, now);
        }
        let ids = self.torrent_ids();
        for id in ids {
            let room = self.config.max_connections.saturating_sub(self.conns.len());
            let Some(addrs) = self.with_entry(id, |entry, limits| match entry {
                Entry::Ready(t) => {
                    t.tick(now, limits);
                    t.dial_candidates(now, room)
                }
                Entry::Magnet(m) => {
                    m.tick(now);
                    m.peers.dial_candidates(now, &m.ctx.config, room)
                }
            }) else {
                continue;
            };
            for addr in addrs {
                if self.connect(id, addr, now).is_none() {
                    // Marked as being dialled: let it be tried again later.
                    let config = self.config.clone();
                    if let Some(slot) = self.slot_mut(id) {
                        slot.entry.peers_mut().dial_failed(addr, &config, now);
                    }
                }
            }
        }
        self.reap();
    }

    /// Frees the slots of connections the torrents closed.
    fn reap(&mut self) {
        for conn in std::mem::take(&mut self.out.closed) {
            if self
                .conns
                .get(conn.slot as usize)
                .is_some_and(|c| c.generation == conn.generation)
            {
                self.conns.remove(conn.slot as usize);
            }
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// The next event for the user interface or logs.
    /// A peer's `port` message ([`Event::DhtNode`]) goes straight to the DHT node when this
    /// session runs it; otherwise it is passed on. The DHT's own events follow the session's.
    pub fn poll_event(&mut self) -> Option<Event> {
        while let Some(event) = self.out.events.pop_front() {
            match (event, self.dht.as_deref_mut()) {
                (Event::DhtNode { addr }, Some(dht)) => dht.add_node(addr, self.dht_now),
                (Event::ExternalAddrVote { ip, voter }, Some(dht)) => {
                    if let Some(ip) = self.external_votes.vote(ip, voter) {
                        dht.set_external_addr(ip, self.dht_now);
                    }
                }
                (event, _) => return Some(event),
            }
        }
        self.dht.as_deref_mut()?.poll_event().map(Event::Dht)
    }

    /// Connections open (handshaking included).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Closes of connections that never joined a torrent, by reason.
    pub fn handshake_closes(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.handshake_closes
    }
}

/// Decrypts the last `n` bytes of `buf` in place with `rc4` when the connection has one.
fn decrypt_tail(buf: &mut BytesMut, n: usize, rc4: Option<&mut Rc4>) {
    if let Some(rc4) = rc4 {
        let start = buf.len().saturating_sub(n);
        rc4.apply(&mut buf[start..]);
    }
}

/// See [`Session::recv_drained`].
pub(crate) fn shrink_recv(buf: &mut BytesMut) {
    if buf.is_empty() {
        *buf = BytesMut::new();
    } else if buf.capacity() - buf.len() > RECV_KEEP_SPARE {
        *buf = BytesMut::from(&buf[..]);
    }
}

/// Appends `data` to `buf`, decrypted with `rc4` when the connection has one.
fn extend_decrypted(buf: &mut BytesMut, data: &[u8], rc4: Option<&mut Rc4>) {
    let start = buf.len();
    buf.extend_from_slice(data);
    if let Some(rc4) = rc4 {
        rc4.apply(&mut buf[start..]);
    }
}

fn conn_in(conns: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.slot as usize)
        .filter(|c| c.generation == id.generation)
}
