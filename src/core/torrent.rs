//! One torrent's protocol state: its peers, piece picker and choker, and the logic that turns
//! peer messages, disk results and timer ticks into messages, disk operations and events.
//!
//! Everything here is synchronous and deterministic. A torrent owns its [`Context`] (its id,
//! the session's `Config`, its own seeded `Rng` and the `Outbox` it writes what it wants done
//! into) and its [`PeerSet`], so the session calls in with `now` and the input alone. Calls
//! that may issue a block read or a request also take the session-wide [`RateLimits`], which
//! the session owns: a read or a request spends from the torrent's own buckets and the
//! session's.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ::core::net::{IpAddr, SocketAddr};

use bytes::{Buf, Bytes};
use hdrhistogram::Histogram;

use super::api::{Action, CloseReason, DiskDone, DiskOp, Event, Violation};
use super::choker::{ChokePeer, Choker, RechokeReason};
use super::config::Config;
use super::context::{Context, Outbox};
use super::fast::allowed_fast_set;
use super::hashes::{self, LayerTrees};
use super::limiter::RateLimits;
use super::metadata::{
    answer_metadata_request, pex_peers, queue_extended, send_dht_port, send_ext_handshake,
    MagnetTorrent, OUR_UT_METADATA, OUR_UT_PEX,
};
use super::peer::{Has, OutRequest, Peer};
use super::peers::{Liveness, PeerSet};
use super::picker::{BlockReceived, PickMode, Picker, Priority};
use super::smartban::{BlockHash, SmartBan};
use super::wire::{
    piece_header, BlockRequest, Decoder, ExtendedHandshake, HashRequest, Message, MetadataMsg,
    PexMsg, SplitBytes, EXTENDED_HANDSHAKE_ID,
};
use super::{Bitfield, BlockRef, Lengths, PeerKey, PieceIndex, Time};
use crate::limits::{BLOCK_LEN, MAX_PEX_PEERS, PEX_INTERVAL_SECS};
use crate::metainfo::Info;

/// Most pieces a peer may suggest or allow-fast us at once; older entries are dropped.
const MAX_SUGGESTED: usize = 32;
const MAX_ALLOWED_FAST_IN: usize = 64;

/// Counters for one torrent, for reports and metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TorrentStats {
    /// Payload bytes received that we needed.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes received that were duplicates or unrequested.
    pub wasted: u64,
    /// Bytes of pieces that failed their hash check.
    pub corrupt: u64,
    /// Pieces that failed their hash check.
    pub hash_failures: u64,
    /// Pieces verified.
    pub pieces_verified: u64,
    /// Peers banned for corrupt data.
    pub banned: u64,
    /// Connections closed, by reason name.
    pub closes: BTreeMap<&'static str, u64>,
    /// Microseconds from sending a request to receiving its block, for every block that
    /// answered one of our requests. Made on the first such block: at three significant
    /// figures up to an hour it takes about 190 KiB, which a seedbox of ten thousand seeding
    /// torrents (which request nothing) must not pay for each.
    pub request_latency_us: Option<Box<Histogram<u64>>>,
    /// Microseconds from a piece's last write to its hash check's result: the wait in the
    /// hash queue plus the hashing. Made on the first sample, like `request_latency_us`.
    pub hash_wait_us: Option<Box<Histogram<u64>>>,
}

/// Whether `ip` is this host or the local network (loopback, private, link-local or unique
/// local addresses), where a peer does not compete for the uplink choking shares.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

/// Records `micros` into a latency histogram made on its first sample (three significant
/// figures, 1 us to an hour).
fn record_latency(h: &mut Option<Box<Histogram<u64>>>, micros: u64) {
    h.get_or_insert_with(|| {
        Box::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    })
    .saturating_record(micros.max(1));
}

/// A torrent in the session.
pub(crate) struct Torrent {
    /// Its id, settings, randomness and output queue.
    pub(crate) ctx: Context,
    pub(crate) info: Arc<Info>,
    pub(crate) picker: Picker,
    choker: Choker,
    decoder: Decoder,
    pub(crate) peers: PeerSet,
    pending_writes: HashMap<u32, u32>,
    /// When each piece's hash check was asked for (for `TorrentStats::hash_wait_us`).
    verify_started: HashMap<u32, Time>,
    /// Who sent which block of the pieces that failed, and what; see `smartban.rs`.
    smart_ban: SmartBan,
    /// `Config::unchoke_local_peers`.
    unchoke_local: bool,
    complete_unwritten: BTreeSet<u32>,
    pub(crate) stats: TorrentStats,
    pub(crate) error: Option<String>,
    complete_announced: bool,
    pick_buf: Vec<BlockRef>,
    /// Pieces wanted and not had, so a seed's interest count is known without a scan.
    wanted_missing: u32,
    /// The file priorities last set (empty: every file `Normal`), kept so that toggling
    /// first/last-piece priority can recompute the pieces' priorities.
    file_priorities: Vec<Priority>,
    /// First/last-piece priority: each wanted file's first and last piece picked first.
    first_last: bool,
    /// This torrent's own rate limits (the session's apply as well).
    pub(crate) limits: RateLimits,
    /// Peers with requests queued that wait for upload tokens, served one block per turn so
    /// that no peer starves behind another (each has `Peer::up_waiting` set while queued).
    up_waiting: VecDeque<PeerKey>,
    /// Peers that want to request more and wait for download tokens, one block per turn.
    down_waiting: VecDeque<PeerKey>,
    /// When the buckets will have refilled for the first peer waiting to be served, and for
    /// the first waiting to request; the session wakes us then.
    up_wake: Option<Time>,
    down_wake: Option<Time>,
    /// Block payload this torrent holds for uploads: being read from disk (cancelled reads
    /// included, until they complete) and in its peers' send buffers (taken by the driver
    /// included, until reported sent). Its share of the session's `upload_buffer_budget`.
    pub(crate) upload_held: usize,
    /// How much `upload_held` may reach before reads start only for peers holding nothing:
    /// the session's budget less what its other torrents hold, set by the session before
    /// every call into the torrent.
    pub(crate) upload_allowance: usize,
    /// Seed mode (libtorrent's `seed_mode`, what cross-seeding needs): the pieces held on
    /// trust and not yet verified. A peer's request for one waits for its hash check, asked
    /// the first time; once every piece passed, `None`.
    unverified: Option<Bitfield>,
    /// Seed mode's hash checks in flight.
    seed_checks: BTreeSet<u32>,
    /// A seed-mode check failed: pieces not verified are refused until the driver's check.
    seed_mode_failed: bool,
    /// The upper layers of files' merkle trees, built when peers ask for hashes (BEP 52).
    layer_trees: LayerTrees,
}

/// A peer's message with its payload copied out of (or split off) the receive buffer.
enum Msg {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Vec<u8>),
    Request(BlockRequest),
    Piece {
        piece: u32,
        offset: u32,
        data: Bytes,
    },
    Cancel(BlockRequest),
    Port(u16),
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRequest),
    AllowedFast(u32),
    Extended {
        id: u8,
        payload: Vec<u8>,
    },
    HashRequest(HashRequest),
    /// `hashes` or `hash reject`: a full torrent holds every layer and asks for none, so
    /// either is ignored.
    HashAnswer,
}

impl Torrent {
    /// A torrent with `info`, running with `ctx`; `have` says which pieces storage holds.
    pub(crate) fn new(ctx: Context, info: Arc<Info>, have: &Bitfield, now: Time) -> Torrent {
        let lengths = *info.lengths();
        let picker = Picker::new(lengths, have, ctx.config.picker);
        let choker = Choker::new(ctx.config.choker.clone(), now);
        let unchoke_local = ctx.config.unchoke_local_peers;
        let decoder = Decoder::for_torrent(lengths.piece_count());
        let mut t = Torrent {
            ctx,
            info,
            picker,
            choker,
            decoder,
            peers: PeerSet::default(),
            pending_writes: HashMap::new(),
            verify_started: HashMap::new(),
            smart_ban: SmartBan::default(),
            unchoke_local,
            complete_unwritten: BTreeSet::new(),
            stats: TorrentStats::default(),
            error: None,
            complete_announced: false,
            pick_buf: Vec::new(),
            wanted_missing: 0,
            file_priorities: Vec::new(),
            first_last: false,
            limits: RateLimits::default(),
            up_waiting: VecDeque::new(),
            upload_held: 0,
            upload_allowance: 0,
            down_waiting: VecDeque::new(),
            up_wake: None,
            down_wake: None,
            unverified: None,
            seed_checks: BTreeSet::new(),
            seed_mode_failed: false,
            layer_trees: LayerTrees::default(),
        };
        t.recount_wanted();
        t.complete_announced = t.picker.is_complete();
        t
    }

    /// Seed mode: every piece held is taken on trust and verified the first time a peer
    /// asks for it (see `unverified`).
    pub(crate) fn set_seed_mode(&mut self) {
        let have = self.picker.have().clone();
        self.unverified = (have.count() > 0).then_some(have);
    }

    /// Whether `piece` is held on trust, not yet verified (seed mode).
    fn is_unverified(&self, piece: u32) -> bool {
        self.unverified.as_ref().is_some_and(|u| u.get(piece))
    }

    /// Pieces still held on trust (seed mode); 0 otherwise.
    pub(crate) fn unverified_count(&self) -> u32 {
        self.unverified.as_ref().map_or(0, Bitfield::count)
    }

    /// Asks for the hash check of a piece held on trust, once.
    fn seed_check(&mut self, piece: u32, now: Time) {
        if self.seed_mode_failed || !self.seed_checks.insert(piece) {
            return;
        }
        let Some(piece) = self.info.lengths().piece(piece) else {
            return;
        };
        self.verify_started.insert(piece.get(), now);
        self.ctx.out.actions.push_back(Action::Disk(DiskOp::Verify {
            torrent: self.ctx.id,
            piece,
            block_hashes: false,
        }));
    }

    fn recount_wanted(&mut self) {
        let lengths = *self.info.lengths();
        self.wanted_missing = lengths
            .pieces()
            .filter(|&p| self.picker.is_piece_interesting(p))
            .count() as u32;
    }

    /// The torrent a [`MagnetTorrent`] becomes once its metadata is verified and storage is
    /// ready: same id, same peers under the same keys and connections. Each peer gets our
    /// extension handshake again (now with `metadata_size`) and our pieces, and the messages
    /// it sent while we could not read them are handled now, in order. The magnet's context
    /// (and so its random stream) carries on.
    pub(crate) fn from_magnet(
        magnet: MagnetTorrent,
        info: Arc<Info>,
        have: &Bitfield,
        listen_port: Option<u16>,
        now: Time,
        session_limits: &mut RateLimits,
    ) -> Torrent {
        let MagnetTorrent {
            ctx,
            mut peers,
            stats,
            ..
        } = magnet;
        let mut t = Torrent::new(ctx, info, have, now);
        let carried = peers.take_all();
        t.peers = peers;
        t.stats.closes = stats.closes;
        t.stats.banned = stats.banned;
        let piece_count = t.info.lengths().piece_count();
        let mut replays = Vec::new();
        for (key, mut peer) in carried {
            peer.has = Has::Some(Bitfield::new(piece_count));
            peer.meta_requests = 0;
            let mut replay = std::mem::take(&mut peer.replay);
            replay.extend_from_slice(&peer.recv.split());
            t.attach_peer(key, peer, listen_port, now, false);
            replays.push((key, replay));
        }
        for (key, replay) in replays {
            t.peers.receive(key, &replay, true, now);
            t.on_received(key, now, session_limits);
        }
        t
    }

    /// Whether peer exchange runs: on in the config, and never for a private torrent.
    fn pex_on(&self) -> bool {
        self.ctx.config.pex && !self.info.is_private()
    }

    /// Sends each peer that speaks `ut_pex`, at most once per [`PEX_INTERVAL_SECS`], the
    /// peers connected since our last message to it and those gone since, [`MAX_PEX_PEERS`]
    /// of each at most.
    fn send_pex(&mut self, now: Time) {
        if !self.pex_on() {
            return;
        }
        // BEP 11's flags for each: it speaks MSE/PE (0x01), it has every piece (0x02), we
        // reached it by dialling (0x10).
        let current: BTreeMap<SocketAddr, u8> = self
            .peers
            .values()
            .filter_map(|p| {
                let flags = u8::from(p.crypto.is_mse())
                    | if p.has.is_all() { 0x02 } else { 0 }
                    | if p.outgoing { 0x10 } else { 0 };
                Some((p.listen_addr()?, flags))
            })
            .collect();
        for peer in self.peers.values_mut() {
            let Some(id) = peer.ut_pex.map(|i| i.get()) else {
                continue;
            };
            if peer.pex_next.is_some_and(|t| now < t) {
                continue;
            }
            // A peer holding the highest send watermark is not reading: news waits (it is
            // kept as the difference from `pex_told`), so a peer connected for days and
            // reading nothing does not collect a message a minute.
            if peer.send.len() >= self.ctx.config.send_buffer_high {
                continue;
            }
            let own = peer.listen_addr();
            let added: Vec<(SocketAddr, u8)> = current
                .iter()
                .filter(|(a, _)| Some(**a) != own && !peer.pex_told.contains(a))
                .take(MAX_PEX_PEERS)
                .map(|(&a, &flags)| (a, flags))
                .collect();
            let dropped: Vec<SocketAddr> = peer
                .pex_told
                .iter()
                .filter(|a| !current.contains_key(a))
                .take(MAX_PEX_PEERS)
                .copied()
                .collect();
            if added.is_empty() && dropped.is_empty() {
                continue;
            }
            peer.pex_next = Some(now + std::time::Duration::from_secs(PEX_INTERVAL_SECS));
            for (a, _) in &added {
                peer.pex_told.insert(*a);
            }
            for a in &dropped {
                peer.pex_told.remove(a);
            }
            let mut payload = Vec::new();
            PexMsg { added, dropped }.encode(&mut payload);
            let notify = queue_extended(peer, id, &payload, now);
            self.ctx.out.send(peer.conn, notify);
        }
    }

    // ---------------------------------------------------------------- peers joining and leaving

    /// Adds a peer that completed its handshake and sends what follows it: the extension
    /// handshake, our pieces, and the allowed-fast set.
    pub(crate) fn attach(&mut self, key: PeerKey, peer: Peer, listen_port: Option<u16>, now: Time) {
        self.attach_peer(key, peer, listen_port, now, true);
    }

    /// [`Torrent::attach`]; `announce`: emit `PeerConnected` (not for a peer carried over
    /// from the torrent's metadata-fetching phase, which was announced then).
    fn attach_peer(
        &mut self,
        key: PeerKey,
        mut peer: Peer,
        listen_port: Option<u16>,
        now: Time,
        announce: bool,
    ) {
        let info = Some(&*self.info);
        let mut notify = send_ext_handshake(&mut peer, &self.ctx.config, listen_port, info, now);
        notify |= send_dht_port(&mut peer, &self.ctx.config, info, now);
        let have = self.picker.have();
        if peer.fast && have.is_full() {
            notify |= peer.queue(&Message::HaveAll, now);
        } else if peer.fast && have.is_none() {
            notify |= peer.queue(&Message::HaveNone, now);
        } else if !have.is_none() {
            let bits = have.to_wire();
            notify |= peer.queue(
                &Message::Bitfield {
                    bits: SplitBytes::single(&bits),
                },
                now,
            );
        }
        if peer.fast {
            let set = allowed_fast_set(
                peer.addr.ip(),
                &self.info.info_hash(),
                self.info.lengths().piece_count(),
                self.ctx.config.allowed_fast_set_size,
            );
            for piece in set {
                if self.picker.have().get(piece) {
                    notify |= peer.queue(&Message::AllowedFast { piece }, now);
                }
                peer.allowed_fast_out.push(piece);
            }
        }
        self.peers
            .attach(key, peer, notify, announce, &mut self.ctx);
    }

    /// Closes a peer: gives its requests back, forgets its pieces, and tells the driver.
    pub(crate) fn close_peer(&mut self, key: PeerKey, reason: CloseReason, now: Time) {
        let Some(peer) = self
            .peers
            .close(key, reason, now, &mut self.ctx, &mut self.stats)
        else {
            return;
        };
        // Its queued payload goes with it; reads in flight are released as they complete.
        self.upload_held -= peer.send.payload();
        for r in &peer.requests_out {
            self.picker.request_dropped(key, r.block);
        }
        self.picker.peer_left(peer.has.pieces());
        if !peer.am_choking || peer.peer_interested {
            self.rechoke(RechokeReason::PeerLeft, now);
        }
    }

    /// Closes every peer (torrent removed, session shutting down).
    pub(crate) fn close_all(&mut self, reason: CloseReason, now: Time) {
        for key in self.peers.keys() {
            self.close_peer(key, reason.clone(), now);
        }
    }

    /// Picks known peers to dial now and marks them as being dialled.
    pub(crate) fn dial_candidates(&mut self, now: Time, max: usize) -> Vec<SocketAddr> {
        // A seed waits for leechers to come to it; it still dials when told peers exist
        // and it has few connections, so a seed started with `--peer` serves them.
        if self.picker.is_complete()
            && !self.peers.any_connecting()
            && self.peers.len() >= self.ctx.config.max_peers_per_torrent / 4
        {
            return Vec::new();
        }
        self.peers.dial_candidates(now, &self.ctx.config, max)
    }

    // ---------------------------------------------------------------------- bytes from peers

    /// Handles every whole message in a peer's receive buffer (`PeerSet::receive` filled it).
    pub(crate) fn on_received(&mut self, key: PeerKey, now: Time, session_limits: &mut RateLimits) {
        while let Some(next) = self.peers.decode(key, &self.decoder, owned) {
            let ((msg, keep_frame), consumed, peer) = match next {
                Ok(next) => next,
                Err(reason) => return self.close_peer(key, reason, now),
            };
            let msg = if let Some(data_len) = keep_frame {
                // Split the frame off without copying; the block is a slice of it.
                let frame = peer.recv.split_to(consumed).freeze();
                match msg {
                    Msg::Piece { piece, offset, .. } => Msg::Piece {
                        piece,
                        offset,
                        data: frame.slice(consumed - data_len..),
                    },
                    other => other,
                }
            } else {
                peer.recv.advance(consumed);
                msg
            };
            self.on_message(key, msg, now, session_limits);
        }
    }

    /// Handles one message; a protocol violation closes the peer with its reason.
    fn on_message(&mut self, key: PeerKey, msg: Msg, now: Time, session_limits: &mut RateLimits) {
        if let Err(v) = self.handle_message(key, msg, now, session_limits) {
            self.close_peer(key, CloseReason::Violation(v), now);
        }
    }

    fn handle_message(
        &mut self,
        key: PeerKey,
        msg: Msg,
        now: Time,
        session_limits: &mut RateLimits,
    ) -> Result<(), Violation> {
        let piece_count = self.info.lengths().piece_count();
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        // The bitfield must come first, but the extension handshake (BEP 10) is sent right
        // after the handshake by libtorrent and by us, and keep-alives and `port` can come at
        // any time: none of them uses up the bitfield's turn.
        let first = !peer.first_message_seen;
        if !matches!(
            msg,
            Msg::KeepAlive
                | Msg::Port(_)
                | Msg::Extended { .. }
                | Msg::HashRequest(_)
                | Msg::HashAnswer
        ) {
            peer.first_message_seen = true;
        }
        let fast = peer.fast;
        let needs_fast = matches!(
            msg,
            Msg::Suggest(_) | Msg::HaveAll | Msg::HaveNone | Msg::Reject(_) | Msg::AllowedFast(_)
        );
        if needs_fast && !fast {
            return Err(Violation::FastNotNegotiated);
        }
        match msg {
            Msg::KeepAlive | Msg::HashAnswer => {}
            Msg::HashRequest(r) => {
                let answer = match hashes::admit(peer, &self.ctx.config, now)? {
                    true => self.info.v2().and_then(|v2| {
                        let piece_len = u64::from(self.info.lengths().piece_len());
                        self.layer_trees.answer(v2, piece_len, &r)
                    }),
                    false => None,
                };
                let notify = hashes::send_answer(peer, r, answer.as_deref(), now);
                self.ctx.out.send(peer.conn, notify);
            }
            Msg::Port(port) => {
                // One per connection, only from a peer that announced a node, for a
                // public torrent, while our own node runs: a peer cannot make us ping many.
                if peer.dht
                    && !peer.dht_port_seen
                    && port != 0
                    && self.ctx.config.dht_port.is_some()
                    && !self.info.is_private()
                {
                    peer.dht_port_seen = true;
                    let addr = SocketAddr::new(peer.addr.ip(), port);
                    self.ctx.out.events.push_back(Event::DhtNode { addr });
                }
            }
            Msg::Choke => {
                peer.peer_choking = true;
                if !peer.fast {
                    // Without BEP 6 a choke silently discards our requests.
                    for r in peer.requests_out.drain(..) {
                        self.picker.request_dropped(key, r.block);
                    }
                }
            }
            Msg::Unchoke => {
                peer.peer_choking = false;
                peer.slow_start_target = self.ctx.config.min_requests;
                peer.slow_start_until = Some(now + self.ctx.config.request_queue_time);
                self.fill_requests(key, now, session_limits);
            }
            Msg::Interested | Msg::NotInterested => {
                let interested = matches!(msg, Msg::Interested);
                if peer.peer_interested != interested {
                    peer.peer_interested = interested;
                    self.rechoke(RechokeReason::InterestChanged, now);
                }
            }
            Msg::Have(index) => {
                wire_piece(self.info.lengths(), index)?;
                self.late_haves(key, std::iter::once(index), now, session_limits);
            }
            Msg::Bitfield(bits) => {
                // The decoder checked the length and spare bits against the piece count.
                let Ok(bits) = Bitfield::from_wire(&bits[..], piece_count) else {
                    return Err(Violation::BadPieceIndex);
                };
                if first {
                    peer.has = Has::Some(bits);
                    self.joined(key, now, session_limits);
                } else {
                    // aria2 sends a whole bitfield instead of `have`s whenever it is no
                    // longer than they would be (with few pieces, after every piece it
                    // gets). Its new pieces count as `have`s; pieces are never taken back.
                    self.late_haves(key, bits.ones(), now, session_limits);
                }
            }
            Msg::HaveAll => {
                if first {
                    peer.has = Has::All;
                    self.joined(key, now, session_limits);
                } else {
                    // aria2 sends `have all` instead of `have`s when it completes.
                    self.late_haves(key, 0..piece_count, now, session_limits);
                }
            }
            Msg::HaveNone => {
                // Saying it has nothing after saying what it has is a contradiction.
                if !first {
                    return Err(Violation::LateBitfield);
                }
            }
            Msg::Request(r) => self.on_request(key, r, now, session_limits)?,
            Msg::Piece {
                piece,
                offset,
                data,
            } => self.on_piece(key, piece, offset, data, now, session_limits)?,
            Msg::Cancel(r) => {
                let block = wire_block(self.info.lengths(), r)?;
                let queued = peer.requests_in.remove(&block);
                let reading = peer.reading.iter().position(|b| *b == block);
                if let Some(i) = reading {
                    peer.reading.swap_remove(i);
                }
                if peer.fast && (queued || reading.is_some()) {
                    let notify = peer.queue(&Message::Reject(r), now);
                    self.ctx.out.send(peer.conn, notify);
                }
            }
            Msg::Suggest(index) => {
                let piece = wire_piece(self.info.lengths(), index)?;
                if !peer.suggested.contains(&piece) {
                    if peer.suggested.len() >= MAX_SUGGESTED {
                        peer.suggested.remove(0);
                    }
                    peer.suggested.push(piece);
                }
            }
            Msg::Reject(r) => {
                let block = wire_block(self.info.lengths(), r)?;
                // A reject may answer a request we cancelled or timed out; only one that
                // matches an outstanding request changes anything.
                if let Some(i) = peer.requests_out.iter().position(|o| o.block == block) {
                    peer.requests_out.swap_remove(i);
                    self.picker.request_dropped(key, block);
                    if !peer.peer_choking {
                        self.fill_requests(key, now, session_limits);
                    }
                }
            }
            Msg::AllowedFast(index) => {
                let piece = wire_piece(self.info.lengths(), index)?;
                if !peer.allowed_fast_in.contains(&piece) {
                    if peer.allowed_fast_in.len() >= MAX_ALLOWED_FAST_IN {
                        peer.allowed_fast_in.remove(0);
                    }
                    peer.allowed_fast_in.push(piece);
                }
                if peer.peer_choking {
                    self.fill_requests(key, now, session_limits);
                }
            }
            Msg::Extended { id, payload } => {
                if !peer.extended {
                    return Err(Violation::ExtendedNotNegotiated);
                }
                match id {
                    EXTENDED_HANDSHAKE_ID => match ExtendedHandshake::decode(&payload[..]) {
                        Ok(ext) => {
                            peer.apply_ext_handshake(&ext);
                            let dht = self.ctx.config.dht_port.is_some();
                            let vote = dht && !peer.voted && !self.info.is_private();
                            if let Some(ip) = ext.your_ip.filter(|_| vote) {
                                peer.voted = true;
                                let voter = peer.addr.ip();
                                self.ctx
                                    .out
                                    .events
                                    .push_back(Event::ExternalAddrVote { ip, voter });
                            }
                        }
                        Err(_) => return Err(Violation::BadExtendedHandshake),
                    },
                    OUR_UT_METADATA => match MetadataMsg::decode(&payload) {
                        Err(_) => return Err(Violation::BadMetadata),
                        Ok(Some(MetadataMsg::Request { piece })) => {
                            let info = Some(&*self.info);
                            let notify =
                                answer_metadata_request(peer, info, piece, &self.ctx.config, now);
                            self.ctx.out.send(peer.conn, notify);
                        }
                        // We have the metadata: data and rejects answer nothing of ours.
                        Ok(_) => {}
                    },
                    OUR_UT_PEX => {
                        let addrs = pex_peers(&payload)?;
                        if self.pex_on() {
                            self.peers.add_known_pex(&addrs, now);
                        }
                    }
                    // BEP 10: ids we never assigned are ignored.
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The peer told us its pieces for the first time (bitfield or have all).
    fn joined(&mut self, key: PeerKey, now: Time, session_limits: &mut RateLimits) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        self.picker.peer_joined(peer.has.pieces());
        peer.interesting = interesting_count(
            &peer.has,
            &self.picker,
            self.info.lengths(),
            self.wanted_missing,
        );
        self.update_interest(key, now);
        if !self.maybe_close_seed_pair(key, now) {
            self.fill_requests(key, now, session_limits);
        }
    }

    /// Pieces a peer announced after its first message (`have`, or a later `bitfield` or
    /// `have all`): each one new to us raises its availability and, if we want it, the
    /// peer's interest count; then interest and requests are updated once.
    fn late_haves(
        &mut self,
        key: PeerKey,
        pieces: impl Iterator<Item = u32>,
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        let lengths = self.info.lengths();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Has::Some(bits) = &mut peer.has else {
            return;
        };
        let mut interesting = 0;
        for index in pieces {
            let Some(piece) = lengths.piece(index) else {
                continue;
            };
            if !bits.set(index) {
                continue;
            }
            self.picker.peer_has(piece);
            if self.picker.is_piece_interesting(piece) {
                interesting += 1;
            }
        }
        if interesting > 0 {
            peer.interesting += interesting;
            self.update_interest(key, now);
            self.fill_requests(key, now, session_limits);
        }
        self.maybe_close_seed_pair(key, now);
    }

    /// Closes the connection when both sides have everything: nothing can flow either way.
    fn maybe_close_seed_pair(&mut self, key: PeerKey, now: Time) -> bool {
        let both = self.picker.is_seed() && self.peers.get(&key).is_some_and(|p| p.has.is_all());
        if both {
            self.close_peer(key, CloseReason::BothSeeds, now);
        }
        both
    }

    /// Sends `interested` or `not interested` when the peer's interest count says so.
    fn update_interest(&mut self, key: PeerKey, now: Time) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let want = peer.interesting > 0 && self.error.is_none();
        if want != peer.am_interested {
            peer.am_interested = want;
            let msg = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            let notify = peer.queue(&msg, now);
            self.ctx.out.send(peer.conn, notify);
        }
    }

    // ------------------------------------------------------------------- downloading blocks

    /// How many requests to keep outstanding with this peer: enough to cover
    /// `request_queue_time` of its download rate, at least `min_requests`, never above its
    /// `reqq`. During slow start after an unchoke the target grows by one per block received,
    /// as TCP's window does, because the rate meter has no history yet.
    fn request_target(peer: &mut Peer, config: &Config, now: Time) -> usize {
        if peer.snubbed {
            return 1;
        }
        let rate = peer.down.rate(now);
        let by_rate = (rate as u128 * config.request_queue_time.as_micros()
            / 1_000_000
            / u128::from(BLOCK_LEN)) as usize;
        let mut target = by_rate.max(config.min_requests);
        if let Some(until) = peer.slow_start_until {
            if now < until {
                target = target.max(peer.slow_start_target);
            } else {
                peer.slow_start_until = None;
            }
        }
        // BEP 10 suggests assuming 250 until the peer says otherwise.
        let cap = config
            .max_requests
            .min(peer.reqq.map_or(250, |q| q as usize));
        target.min(cap).max(1)
    }

    /// Tops up the requests outstanding with a peer. Under a download limit the peer joins
    /// the queue of peers waiting for download tokens, which is then served in turn.
    fn fill_requests(&mut self, key: PeerKey, now: Time, session_limits: &mut RateLimits) {
        if !self.limits.down.is_limited() && !session_limits.down.is_limited() {
            self.request_blocks(key, usize::MAX, now);
            return;
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            if !peer.down_waiting {
                peer.down_waiting = true;
                self.down_waiting.push_back(key);
            }
        }
        self.serve_downloads(now, session_limits);
    }

    /// Gives waiting peers one request each in turn while both download buckets (ours and
    /// the session's) hold a block's worth, and notes when to try again if they run short.
    fn serve_downloads(&mut self, now: Time, session_limits: &mut RateLimits) {
        self.limits.down.refill(now);
        session_limits.down.refill(now);
        self.down_wake = None;
        let need = u64::from(BLOCK_LEN);
        while let Some(&key) = self.down_waiting.front() {
            if !self.peers.contains(&key) {
                self.down_waiting.pop_front();
                continue;
            }
            let (ours, session) = (&self.limits.down, &session_limits.down);
            if !ours.can_take(need) || !session.can_take(need) {
                self.down_wake = ours.ready_at(need).max(session.ready_at(need));
                break;
            }
            self.down_waiting.pop_front();
            let (bytes, more) = self.request_blocks(key, 1, now);
            self.limits.down.take(bytes);
            session_limits.down.take(bytes);
            if let Some(peer) = self.peers.get_mut(&key) {
                if more {
                    self.down_waiting.push_back(key);
                } else {
                    peer.down_waiting = false;
                }
            }
        }
    }

    /// Sends up to `max` new requests to a peer, as many as its pipeline target allows.
    /// Returns the bytes requested and whether the peer could take more.
    fn request_blocks(&mut self, key: PeerKey, max: usize, now: Time) -> (u64, bool) {
        if self.error.is_some() {
            return (0, false);
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return (0, false);
        };
        if !peer.am_interested {
            return (0, false);
        }
        if peer.peer_choking && peer.allowed_fast_in.is_empty() {
            return (0, false);
        }
        let mut target = Torrent::request_target(peer, &self.ctx.config, now);
        if self.picker.is_endgame() {
            // In endgame every block we could ask for is already asked of someone. As
            // libtorrent does, a peer gets one duplicate at a time and only once it has
            // nothing else in flight, so duplicates go to idle peers and waste stays small.
            if !peer.requests_out.is_empty() {
                return (0, false);
            }
            target = 1;
        }
        let restrict = peer.peer_choking.then_some(&peer.allowed_fast_in[..]);
        let have = peer.requests_out.len();
        if have >= target {
            return (0, false);
        }
        let count = (target - have).min(max);
        self.pick_buf.clear();
        self.picker.pick(
            key,
            peer.has.pieces(),
            count,
            restrict,
            &peer.suggested,
            &mut self.ctx.rng,
            &mut self.pick_buf,
        );
        let mut notify = false;
        let mut bytes = 0;
        for &block in &self.pick_buf {
            let r = BlockRequest {
                piece: block.piece.get(),
                offset: block.offset,
                len: block.len,
            };
            notify |= peer.queue(&Message::Request(r), now);
            peer.requests_out.push(OutRequest {
                block,
                sent_at: now,
            });
            bytes += u64::from(block.len);
        }
        self.ctx.out.send(peer.conn, notify);
        // Room for more only if the picker gave all we asked for and the target allows more.
        let more = self.pick_buf.len() == count && have + count < target;
        (bytes, more)
    }

    fn on_piece(
        &mut self,
        key: PeerKey,
        index: u32,
        offset: u32,
        data: Bytes,
        now: Time,
        session_limits: &mut RateLimits,
    ) -> Result<(), Violation> {
        let len = data.len() as u32;
        let Some(block) = self.info.lengths().block_at(index, offset, len) else {
            return Err(Violation::BadBlock);
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        peer.down.add(now, u64::from(len));
        peer.last_block = Some(now);
        peer.snubbed = false;
        if let Some(i) = peer.requests_out.iter().position(|r| r.block == block) {
            let sent = peer.requests_out.swap_remove(i).sent_at;
            let micros = now.saturating_since(sent).as_micros() as u64;
            record_latency(&mut self.stats.request_latency_us, micros);
            if peer.slow_start_until.is_some() {
                peer.slow_start_target += 1;
            }
        }
        match self.picker.block_received(key, block) {
            BlockReceived::New {
                piece_complete,
                cancel,
            } => {
                self.stats.downloaded += u64::from(len);
                let piece = block.piece.get();
                *self.pending_writes.entry(piece).or_default() += 1;
                if piece_complete {
                    self.complete_unwritten.insert(piece);
                }
                self.ctx.out.actions.push_back(Action::Disk(DiskOp::Write {
                    torrent: self.ctx.id,
                    block,
                    data,
                }));
                for other in cancel {
                    let Some(p) = self.peers.get_mut(&other) else {
                        continue;
                    };
                    if let Some(i) = p.requests_out.iter().position(|r| r.block == block) {
                        p.requests_out.swap_remove(i);
                        let r = BlockRequest {
                            piece,
                            offset: block.offset,
                            len: block.len,
                        };
                        let notify = p.queue(&Message::Cancel(r), now);
                        self.ctx.out.send(p.conn, notify);
                    }
                }
            }
            BlockReceived::Duplicate | BlockReceived::Unrequested => {
                self.stats.wasted += u64::from(len)
            }
        }
        self.fill_requests(key, now, session_limits);
        Ok(())
    }

    // ---------------------------------------------------------------------- serving blocks

    fn on_request(
        &mut self,
        key: PeerKey,
        r: BlockRequest,
        now: Time,
        session_limits: &mut RateLimits,
    ) -> Result<(), Violation> {
        if r.len > self.ctx.config.max_request_len {
            return Err(Violation::RequestTooLong);
        }
        let block = wire_block(self.info.lengths(), r)?;
        let have = self.picker.have().get(r.piece)
            && !(self.seed_mode_failed && self.is_unverified(r.piece));
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        let out = &mut self.ctx.out;
        let most = self.ctx.config.send_buffer_high;
        let reject = |peer: &mut Peer, out: &mut Outbox| {
            // A peer that keeps asking while it reads nothing would have us queue a reject
            // for each request, without bound: past the highest watermark the request is
            // dropped unanswered instead (as BEP 3 drops a choked request), and a peer that
            // reads again gets rejects again.
            if peer.fast && peer.send.len() < most {
                let notify = peer.queue(&Message::Reject(r), now);
                out.send(peer.conn, notify);
            }
            Ok(())
        };
        if !have {
            if peer.fast {
                return reject(peer, out);
            }
            return Err(Violation::RequestForMissingPiece);
        }
        if peer.am_choking && !peer.allowed_fast(r.piece) {
            // BEP 6: reject; without it the request is silently dropped, as BEP 3 says.
            return reject(peer, out);
        }
        if peer.requests_in.contains(&block) || peer.reading.contains(&block) {
            return Ok(());
        }
        if peer.requests_in.len() + peer.reading.len() >= self.ctx.config.max_queued_requests {
            if peer.fast {
                return reject(peer, out);
            }
            return Err(Violation::TooManyRequests);
        }
        peer.requests_in.push_back(block);
        self.pump_reads(key, now, session_limits);
        Ok(())
    }

    /// Starts disk reads for queued requests while the peer is under its send watermark and
    /// the upload budget allows (see [`wants_read`]). Under an upload limit the peer joins
    /// the queue of peers waiting for upload tokens, which is then served in turn. A peer
    /// held back keeps its requests queued; the next report of bytes sent to it pumps again.
    fn pump_reads(&mut self, key: PeerKey, now: Time, session_limits: &mut RateLimits) {
        let budget_room = self.upload_held < self.upload_allowance;
        if self.limits.up.is_limited() || session_limits.up.is_limited() {
            if let Some(peer) = self.peers.get_mut(&key) {
                if !peer.up_waiting && wants_read(peer, &self.ctx.config, now, budget_room) {
                    peer.up_waiting = true;
                    self.up_waiting.push_back(key);
                }
            }
            self.serve_uploads(now, session_limits);
            return;
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let mut check = None;
        while wants_read(
            peer,
            &self.ctx.config,
            now,
            self.upload_held < self.upload_allowance,
        ) {
            let Some(&block) = peer.requests_in.front() else {
                break;
            };
            // Seed mode: a piece held on trust is read only once its hash check passed;
            // the request waits in the queue meanwhile.
            if self
                .unverified
                .as_ref()
                .is_some_and(|u| u.get(block.piece.get()))
            {
                check = Some(block.piece.get());
                break;
            }
            peer.requests_in.pop_front();
            start_read(peer, block);
            self.upload_held += block.len as usize;
            self.ctx.out.actions.push_back(Action::Disk(DiskOp::Read {
                torrent: self.ctx.id,
                peer: key,
                block,
            }));
        }
        if let Some(piece) = check {
            self.seed_check(piece, now);
        }
    }

    /// Starts one block read per waiting peer in turn while both upload buckets (ours and the
    /// session's) hold the block's length, and notes when to try again if they run short.
    fn serve_uploads(&mut self, now: Time, session_limits: &mut RateLimits) {
        self.limits.up.refill(now);
        session_limits.up.refill(now);
        self.up_wake = None;
        while let Some(&key) = self.up_waiting.front() {
            let Some(peer) = self.peers.get_mut(&key) else {
                self.up_waiting.pop_front();
                continue;
            };
            let budget_room = self.upload_held < self.upload_allowance;
            let Some(&block) = peer
                .requests_in
                .front()
                .filter(|_| wants_read(peer, &self.ctx.config, now, budget_room))
            else {
                peer.up_waiting = false;
                self.up_waiting.pop_front();
                continue;
            };
            if self
                .unverified
                .as_ref()
                .is_some_and(|u| u.get(block.piece.get()))
            {
                // Seed mode: the peer waits for the piece's check, and is pumped again
                // when it is done.
                peer.up_waiting = false;
                self.up_waiting.pop_front();
                self.seed_check(block.piece.get(), now);
                continue;
            }
            let need = u64::from(block.len);
            let (ours, session) = (&mut self.limits.up, &mut session_limits.up);
            if !ours.can_take(need) || !session.can_take(need) {
                self.up_wake = ours.ready_at(need).max(session.ready_at(need));
                break;
            }
            ours.take(need);
            session.take(need);
            self.up_waiting.pop_front();
            peer.requests_in.pop_front();
            start_read(peer, block);
            self.upload_held += block.len as usize;
            self.ctx.out.actions.push_back(Action::Disk(DiskOp::Read {
                torrent: self.ctx.id,
                peer: key,
                block,
            }));
            let budget_room = self.upload_held < self.upload_allowance;
            if wants_read(peer, &self.ctx.config, now, budget_room) {
                self.up_waiting.push_back(key);
            } else {
                peer.up_waiting = false;
            }
        }
    }

    /// When the session should call [`Torrent::serve_limited`]: the buckets will have refilled
    /// for a peer waiting on them.
    pub(crate) fn rate_wake(&self) -> Option<Time> {
        match (self.up_wake, self.down_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Serves peers waiting for tokens, as far as the buckets allow now (called when
    /// [`Torrent::rate_wake`] is due and after limits change).
    pub(crate) fn serve_limited(&mut self, now: Time, session_limits: &mut RateLimits) {
        self.serve_uploads(now, session_limits);
        self.serve_downloads(now, session_limits);
    }

    /// Changes this torrent's own limits and serves whoever the change lets through.
    pub(crate) fn set_rate_limits(
        &mut self,
        up: Option<u64>,
        down: Option<u64>,
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        self.limits.set(up, down, now);
        self.serve_limited(now, session_limits);
    }

    /// The driver sent `n` bytes of a peer's buffer; serve more if it has room now.
    pub(crate) fn on_sent(
        &mut self,
        key: PeerKey,
        n: usize,
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        if let Some(payload) = self.peers.sent(key, n) {
            self.upload_held -= payload;
            self.pump_reads(key, now, session_limits);
        }
    }

    /// The driver takes chunks of a peer's send buffer (io_uring, the simulator). They stay
    /// counted as held until it reports them sent ([`Torrent::on_sent`]), so nothing is
    /// freed and no read starts here.
    pub(crate) fn take_send(&mut self, key: PeerKey, max: usize) -> Vec<Bytes> {
        self.peers.take_send(key, max).unwrap_or_default()
    }

    // ---------------------------------------------------------------------------- disk

    pub(crate) fn on_disk(&mut self, done: DiskDone, now: Time, session_limits: &mut RateLimits) {
        match done {
            DiskDone::Written { block, result, .. } => {
                let piece = block.piece.get();
                if let Some(n) = self.pending_writes.get_mut(&piece) {
                    *n -= 1;
                    if *n == 0 {
                        self.pending_writes.remove(&piece);
                    }
                }
                if let Err(error) = result {
                    self.fail(error, now);
                    return;
                }
                if !self.pending_writes.contains_key(&piece)
                    && self.complete_unwritten.remove(&piece)
                {
                    self.verify_started.insert(piece, now);
                    self.ctx.out.actions.push_back(Action::Disk(DiskOp::Verify {
                        torrent: self.ctx.id,
                        piece: block.piece,
                        block_hashes: self.smart_ban.is_suspect(piece),
                    }));
                }
            }
            DiskDone::Read {
                peer: key,
                block,
                result,
                ..
            } => self.on_read(key, block, result, now, session_limits),
            DiskDone::Verified { piece, ok, .. } if self.seed_checks.contains(&piece.get()) => {
                self.on_seed_checked(piece, ok, now, session_limits)
            }
            DiskDone::Verified {
                piece,
                ok,
                block_hashes,
                ..
            } => self.on_verified(piece, ok, &block_hashes, now),
        }
    }

    /// Bans a connected peer's IP for bad data and closes every connection from it.
    fn ban_peer(&mut self, key: PeerKey, now: Time) {
        if let Some(addr) = self.peers.get(&key).map(|p| p.addr) {
            self.ban_addr(addr, now);
        }
    }

    /// Bans `addr`'s IP from the torrent for bad data (once) and closes every connection from
    /// it.
    fn ban_addr(&mut self, addr: SocketAddr, now: Time) {
        let ip = addr.ip();
        let keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.addr.ip() == ip)
            .map(|(k, _)| *k)
            .collect();
        if !self.peers.is_banned(ip) {
            self.peers.ban_addr(addr, &mut self.ctx, &mut self.stats);
        }
        for key in keys {
            self.close_peer(key, CloseReason::Banned, now);
        }
    }

    fn on_read(
        &mut self,
        key: PeerKey,
        block: BlockRef,
        result: Result<Bytes, String>,
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        // The read's buffer is released here unless it is queued to send below.
        self.upload_held -= block.len as usize;
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.reads_in_flight -= 1;
        peer.read_bytes -= block.len as usize;
        let Some(i) = peer.reading.iter().position(|b| *b == block) else {
            // Cancelled or choked meanwhile; its room may let another read start.
            self.pump_reads(key, now, session_limits);
            return;
        };
        peer.reading.swap_remove(i);
        let data = match result {
            Ok(data) if data.len() == block.len as usize => data,
            Ok(_) | Err(_) => {
                let error = match result {
                    Err(e) => e,
                    Ok(d) => format!(
                        "read of piece {} returned {} bytes, not {}",
                        block.piece.get(),
                        d.len(),
                        block.len
                    ),
                };
                self.fail(error, now);
                return;
            }
        };
        if peer.am_choking && !peer.allowed_fast(block.piece.get()) {
            return;
        }
        let len = u64::from(block.len);
        peer.send.encode(|o| {
            o.extend_from_slice(&piece_header(block.piece.get(), block.offset, block.len))
        });
        self.upload_held += data.len();
        peer.send.push_shared(data);
        peer.last_send = now;
        peer.up.add(now, len);
        peer.uploaded_since_unchoke += len;
        self.stats.uploaded += len;
        let notify = peer.needs_notify();
        self.ctx.out.send(peer.conn, notify);
        self.pump_reads(key, now, session_limits);
    }

    fn on_verified(&mut self, piece: PieceIndex, ok: bool, block_hashes: &[BlockHash], now: Time) {
        if let Some(asked) = self.verify_started.remove(&piece.get()) {
            let micros = now.saturating_since(asked).as_micros() as u64;
            record_latency(&mut self.stats.hash_wait_us, micros);
        }
        if !ok {
            // Who sent each block, before the picker forgets the failed download.
            let senders: Vec<Option<SocketAddr>> = self
                .picker
                .block_deliverers(piece)
                .into_iter()
                .map(|k| k.and_then(|k| self.peers.get(&k)).map(|p| p.addr))
                .collect();
            let contributors = self.picker.piece_verified(piece, false);
            self.stats.hash_failures += 1;
            self.stats.corrupt += u64::from(self.info.lengths().len_of(piece));
            self.ctx.out.events.push_back(Event::HashFailed {
                torrent: self.ctx.id,
                piece,
            });
            self.smart_ban.failed(piece.get(), &senders, block_hashes);
            // A peer that alone sent every block of the piece sent the bad data: no need to
            // wait for a good copy. Shared pieces wait for smart ban's verdict.
            if let [key] = contributors[..] {
                self.ban_peer(key, now);
            }
            return;
        }
        // A piece that failed before passed: ban whoever sent a block that differs from it.
        for addr in self.smart_ban.passed(piece.get(), block_hashes) {
            self.ban_addr(addr, now);
        }
        let was_interesting = self.picker.is_piece_interesting(piece);
        self.picker.piece_verified(piece, true);
        self.stats.pieces_verified += 1;
        if was_interesting {
            self.wanted_missing = self.wanted_missing.saturating_sub(1);
        }
        self.ctx.out.events.push_back(Event::PieceVerified {
            torrent: self.ctx.id,
            piece,
        });
        let keys = self.peers.keys();
        for key in &keys {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            if peer.has.get(piece.get()) {
                if was_interesting {
                    peer.interesting = peer.interesting.saturating_sub(1);
                }
                self.update_interest(*key, now);
            } else {
                let notify = peer.queue(&Message::Have { piece: piece.get() }, now);
                self.ctx.out.send(peer.conn, notify);
            }
        }
        if self.picker.is_complete() && !self.complete_announced {
            self.complete_announced = true;
            self.ctx.out.events.push_back(Event::TorrentComplete {
                torrent: self.ctx.id,
            });
            if self.picker.is_seed() {
                self.rechoke(RechokeReason::BecameSeed, now);
                for key in keys {
                    self.maybe_close_seed_pair(key, now);
                }
            }
        }
    }

    /// Seed mode: the hash check of a piece held on trust is done. Passed, the requests that
    /// waited for it are served; failed, the data is not what the torrent says: every piece
    /// not yet verified is refused from now on (queued requests for them rejected) and the
    /// driver is told to check the whole torrent.
    fn on_seed_checked(
        &mut self,
        piece: PieceIndex,
        ok: bool,
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        self.seed_checks.remove(&piece.get());
        if let Some(asked) = self.verify_started.remove(&piece.get()) {
            let micros = now.saturating_since(asked).as_micros() as u64;
            record_latency(&mut self.stats.hash_wait_us, micros);
        }
        if ok {
            if let Some(u) = &mut self.unverified {
                u.clear(piece.get());
                if u.count() == 0 {
                    self.unverified = None;
                }
            }
            self.stats.pieces_verified += 1;
        } else if !self.seed_mode_failed {
            self.seed_mode_failed = true;
            self.stats.hash_failures += 1;
            self.ctx.out.events.push_back(Event::SeedModeFailed {
                torrent: self.ctx.id,
                piece,
            });
            let unverified = self.unverified.clone();
            let is_unverified = |p: u32| unverified.as_ref().is_some_and(|u| u.get(p));
            for key in self.peers.keys() {
                let Some(peer) = self.peers.get_mut(&key) else {
                    continue;
                };
                let refused: Vec<BlockRef> = peer
                    .requests_in
                    .iter()
                    .filter(|b| is_unverified(b.piece.get()))
                    .copied()
                    .collect();
                peer.requests_in.retain(|b| !is_unverified(b.piece.get()));
                if peer.fast {
                    for b in refused {
                        let r = BlockRequest {
                            piece: b.piece.get(),
                            offset: b.offset,
                            len: b.len,
                        };
                        let notify = peer.queue(&Message::Reject(r), now);
                        self.ctx.out.send(peer.conn, notify);
                    }
                }
            }
        }
        for key in self.peers.keys() {
            self.pump_reads(key, now, session_limits);
        }
    }

    /// A disk error: stop downloading, keep serving what we have.
    fn fail(&mut self, error: String, now: Time) {
        if self.error.is_some() {
            return;
        }
        self.error = Some(error.clone());
        self.ctx.out.events.push_back(Event::TorrentError {
            torrent: self.ctx.id,
            error,
        });
        let keys = self.peers.keys();
        for key in keys {
            if let Some(peer) = self.peers.get_mut(&key) {
                for r in peer.requests_out.drain(..) {
                    self.picker.request_dropped(key, r.block);
                }
            }
            self.update_interest(key, now);
        }
    }

    // ------------------------------------------------------------------------- choking

    fn rechoke(&mut self, reason: RechokeReason, now: Time) {
        let piece_count = self.info.lengths().piece_count().max(1);
        let view: Vec<ChokePeer> = self
            .peers
            .iter()
            .map(|(key, p)| ChokePeer {
                key: *key,
                interested: p.peer_interested,
                unchoked: !p.am_choking,
                down_rate: p.down.rate(now),
                up_rate: p.up.rate(now),
                connected_at: p.connected_at,
                last_unchoked: p.last_unchoked,
                uploaded_since_unchoke: p.uploaded_since_unchoke,
                progress: {
                    // What it announced, or what we sent it if that is more: a peer that
                    // hides its `have`s must not look like a newcomer forever (anti-leech).
                    let announced = p.has.count(piece_count) as f32 / piece_count as f32;
                    let sent = p.up.total() as f32 / self.info.total_len().max(1) as f32;
                    announced.max(sent).min(1.0)
                },
                is_seed: p.has.is_all(),
                snubbed: p.snubbed,
                local: self.unchoke_local && is_local(p.addr.ip()),
            })
            .collect();
        let seeding = self.picker.is_complete();
        for (key, unchoke) in self
            .choker
            .rechoke(now, seeding, &view, reason, &mut self.ctx.rng)
        {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if unchoke != peer.am_choking {
                continue;
            }
            peer.am_choking = !unchoke;
            let mut notify;
            if unchoke {
                peer.last_unchoked = Some(now);
                peer.uploaded_since_unchoke = 0;
                notify = peer.queue(&Message::Unchoke, now);
            } else {
                notify = peer.queue(&Message::Choke, now);
                // BEP 6: choke first, then reject what will not be served; allowed-fast
                // requests stay.
                let dropped: Vec<BlockRef> = peer
                    .requests_in
                    .iter()
                    .chain(peer.reading.iter())
                    .copied()
                    .filter(|b| !peer.allowed_fast(b.piece.get()))
                    .collect();
                peer.requests_in
                    .retain(|b| peer.fast && peer.allowed_fast_out.contains(&b.piece.get()));
                peer.reading
                    .retain(|b| peer.fast && peer.allowed_fast_out.contains(&b.piece.get()));
                if peer.fast {
                    for b in dropped {
                        let r = BlockRequest {
                            piece: b.piece.get(),
                            offset: b.offset,
                            len: b.len,
                        };
                        notify |= peer.queue(&Message::Reject(r), now);
                    }
                }
            }
            self.ctx.out.send(peer.conn, notify);
        }
    }

    // ---------------------------------------------------------------------------- timers

    /// Housekeeping: timeouts, keep-alives, request time-outs, the choker, request top-up.
    pub(crate) fn tick(&mut self, now: Time, session_limits: &mut RateLimits) {
        for key in self.peers.keys() {
            match self.peers.keep_alive(key, now, &mut self.ctx) {
                Liveness::Gone => continue,
                Liveness::Inactive => {
                    self.close_peer(key, CloseReason::Inactive, now);
                    continue;
                }
                Liveness::Alive => {}
            }
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            let timeout = self.ctx.config.request_timeout;
            let timed_out: Vec<BlockRef> = peer
                .requests_out
                .iter()
                .filter(|r| now.saturating_since(r.sent_at) >= timeout)
                .map(|r| r.block)
                .collect();
            if !timed_out.is_empty() {
                peer.snubbed = true;
                peer.requests_out
                    .retain(|r| now.saturating_since(r.sent_at) < timeout);
                for block in timed_out {
                    self.picker.request_dropped(key, block);
                }
            }
        }
        // Top up the responsive peers first: blocks a snubbed peer just timed out on go to
        // them, not straight back to the peer that sat on them (which, with two slow peers
        // holding an endgame block, starved an idle seed of it for good).
        let mut keys: Vec<(bool, PeerKey)> =
            self.peers.iter().map(|(k, p)| (p.snubbed, *k)).collect();
        keys.sort_by_key(|&(snubbed, _)| snubbed);
        for (_, key) in keys {
            self.fill_requests(key, now, session_limits);
        }
        if now >= self.choker.next_due() {
            self.rechoke(RechokeReason::Timer, now);
        }
        self.send_pex(now);
    }

    // ------------------------------------------------------------------------ settings

    pub(crate) fn set_file_priorities(
        &mut self,
        priorities: &[Priority],
        now: Time,
        session_limits: &mut RateLimits,
    ) {
        self.file_priorities = priorities.to_vec();
        self.apply_priorities(now, session_limits);
    }

    /// Turns first/last-piece priority on or off (see
    /// [`super::picker::piece_priorities_first_last`]).
    pub(crate) fn set_first_last(&mut self, on: bool, now: Time, session_limits: &mut RateLimits) {
        if self.first_last != on {
            self.first_last = on;
            self.apply_priorities(now, session_limits);
        }
    }

    /// Recomputes the pieces' priorities from the files' and first/last-piece priority, then
    /// interest and requests.
    fn apply_priorities(&mut self, now: Time, session_limits: &mut RateLimits) {
        let piece_prios = super::picker::piece_priorities_first_last(
            &self.info,
            &self.file_priorities,
            self.first_last,
        );
        self.picker.set_piece_priorities(&piece_prios);
        self.recount_wanted();
        let keys = self.peers.keys();
        for key in keys {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            peer.interesting = interesting_count(
                &peer.has,
                &self.picker,
                self.info.lengths(),
                self.wanted_missing,
            );
            self.update_interest(key, now);
            self.fill_requests(key, now, session_limits);
        }
        if self.picker.is_complete() && !self.complete_announced {
            self.complete_announced = true;
            self.ctx.out.events.push_back(Event::TorrentComplete {
                torrent: self.ctx.id,
            });
        } else if !self.picker.is_complete() {
            self.complete_announced = false;
        }
    }

    pub(crate) fn set_sequential(&mut self, on: bool) {
        self.picker.set_mode(if on {
            PickMode::Sequential
        } else {
            PickMode::RarestFirst
        });
    }
}

/// Whether a block read may start for a peer now, tokens aside: it has a request queued, reads
/// in flight under the bound, what it holds (queued to send and being read) under its send
/// watermark, and either room in the session's upload budget (`budget_room`) or no block
/// payload held at all, so that a crowd of slow readers filling the budget cannot starve a
/// peer that reads: each still gets one block at a time.
fn wants_read(peer: &Peer, config: &Config, now: Time, budget_room: bool) -> bool {
    !peer.requests_in.is_empty()
        && peer.reads_in_flight < config.max_reads_per_peer
        && peer.upload_queued() < config.send_watermark(peer.up.rate(now))
        && (budget_room || peer.upload_payload() == 0)
}

/// Records a block read started for `peer`.
fn start_read(peer: &mut Peer, block: BlockRef) {
    peer.reading.push(block);
    peer.reads_in_flight += 1;
    peer.read_bytes += block.len as usize;
}

/// How many pieces a peer has that we want and lack: its interest count.
fn interesting_count(has: &Has, picker: &Picker, lengths: &Lengths, wanted_missing: u32) -> u32 {
    match has {
        Has::All => wanted_missing,
        Has::Some(bits) => bits
            .ones()
            .filter_map(|i| lengths.piece(i))
            .filter(|&p| picker.is_piece_interesting(p))
            .count() as u32,
    }
}

/// A piece index from the wire, checked against the torrent.
fn wire_piece(lengths: &Lengths, index: u32) -> Result<PieceIndex, Violation> {
    lengths.piece(index).ok_or(Violation::BadPieceIndex)
}

/// A block from the wire, checked against its piece.
fn wire_block(lengths: &Lengths, r: BlockRequest) -> Result<BlockRef, Violation> {
    wire_piece(lengths, r.piece)?;
    lengths
        .block_at(r.piece, r.offset, r.len)
        .ok_or(Violation::BadBlock)
}

/// Converts a decoded message into one that does not borrow the receive buffer. For `piece`
/// messages the block's length is returned so the caller can split the frame off instead of
/// copying the block.
fn owned(msg: Message<'_>) -> (Msg, Option<usize>) {
    let m = match msg {
        Message::KeepAlive => Msg::KeepAlive,
        Message::Choke => Msg::Choke,
        Message::Unchoke => Msg::Unchoke,
        Message::Interested => Msg::Interested,
        Message::NotInterested => Msg::NotInterested,
        Message::Have { piece } => Msg::Have(piece),
        Message::Bitfield { bits } => Msg::Bitfield(bits.to_vec()),
        Message::Request(r) => Msg::Request(r),
        Message::Piece {
            piece,
            offset,
            data,
        } => {
            return (
                Msg::Piece {
                    piece,
                    offset,
                    data: Bytes::new(),
                },
                Some(data.len()),
            );
        }
        Message::Cancel(r) => Msg::Cancel(r),
        Message::Port { port } => Msg::Port(port),
        Message::Suggest { piece } => Msg::Suggest(piece),
        Message::HaveAll => Msg::HaveAll,
        Message::HaveNone => Msg::HaveNone,
        Message::Reject(r) => Msg::Reject(r),
        Message::AllowedFast { piece } => Msg::AllowedFast(piece),
        Message::Extended { id, payload } => Msg::Extended {
            id,
            payload: payload.to_vec(),
        },
        Message::HashRequest(r) => Msg::HashRequest(r),
        Message::Hashes { .. } | Message::HashReject(_) => Msg::HashAnswer,
    };
    (m, None)
}
