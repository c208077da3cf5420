//! A torrent added by magnet link before its metadata is known (BEP 9), and the parts of the
//! extension protocol (BEP 10) that torrents with and without metadata share.
//!
//! A [`MagnetTorrent`] lives in the session under its own
//! [`TorrentId`](super::api::TorrentId) exactly like a torrent with metadata: connections route
//! to it by info hash, it dials known peers, and its peers are the same [`Peer`]s, in the same
//! [`PeerSet`], a full torrent has (with no pieces yet); its [`Context`] is the one the full
//! torrent will have. It speaks only
//! the extension protocol: it asks peers that announce `ut_metadata` and a `metadata_size`
//! for the info dictionary's 16 KiB pieces, several peers in parallel, re-asking a piece
//! elsewhere when a request is rejected or times out. Every other message a peer sends
//! (bitfield, haves, choke state) is kept, bounded, in `Peer::replay`.
//!
//! When every piece is in, the SHA1 of the assembled dictionary must be the info hash (for a
//! `btmh` link, its SHA-256 truncated) and the dictionary must validate ([`Info::from_bytes`]).
//! A v2-only torrent's dictionary carries no piece layers: they are fetched next, by BEP 52
//! `hash request`s (`layers.rs`: chunks of 512 piece hashes with proofs to each file's root,
//! two requests per peer, re-asked on reject or `metadata_request_timeout`; a peer whose
//! hashes fail their proof is closed `bad_hashes` and banned). On success the torrent keeps its peers,
//! serves the metadata to others, and emits [`Event::MetadataReceived`]; the session turns
//! it into a full [`Torrent`](super::torrent::Torrent) when the driver calls
//! `Session::start_torrent`, with the same id, peer keys and connections, and each peer's kept
//! messages are handled then, as if they had just arrived.
//!
//! On a hash mismatch the pieces are dropped. If one peer sent them all it is closed
//! (`corrupt_metadata`) and its IP banned from the torrent. If several did, the next attempt
//! takes every piece from one of them (the suspects, in turn): if that attempt fails, that
//! peer alone is to blame; if it succeeds, the download is done. Each failed attempt thus
//! either bans one peer or narrows the suspects, and honest peers complete it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ::core::net::SocketAddr;

use bytes::Buf;
use sha1::{Digest, Sha1};

use super::api::{CloseReason, Event, Violation};
use super::config::Config;
use super::context::Context;
use super::hashes;
use super::layers::{Answer, LayerFetch};
use super::peer::Peer;
use super::peers::{Liveness, PeerSet};
use super::torrent::TorrentStats;
use super::wire::{
    Decoder, ExtendedHandshake, HashRequest, Message, MetadataMsg, PexMsg, SplitBytes,
    EXTENDED_HANDSHAKE_ID, METADATA_PIECE_LEN, UT_METADATA, UT_PEX,
};
use super::{InfoHash, InfoHashV2, PeerKey, Time};
use crate::limits::{MAX_METADATA_SIZE, MAX_PEX_PEERS, MAX_PRE_METADATA_BUFFER};
use crate::metainfo::merkle::Hash;
use crate::metainfo::{Info, MetaVersion};
use sha2::Sha256;

/// The extended message id peers send `ut_metadata` messages to us under.
pub(crate) const OUR_UT_METADATA: u8 = 1;
/// The extended message id peers send `ut_pex` messages to us under.
pub(crate) const OUR_UT_PEX: u8 = 2;

/// Piece layer requests (BEP 52 `hash request`) outstanding to one peer at once, as
/// libtorrent keeps them.
const HASH_REQUESTS_PER_PEER: u32 = 2;

/// Metadata requests outstanding to one peer at once. libtorrent answers a few at a time; two
/// keep a peer busy over one round trip while spreading a large dictionary over many peers.
const METADATA_REQUESTS_PER_PEER: u32 = 2;

/// Our extension handshake: the extensions we speak (no `ut_pex` for a private torrent, BEP
/// 27), our request queue, client, the peer's address as we see it, our listen port, and
/// the metadata size once we have it.
pub(crate) fn our_ext_handshake(
    config: &Config,
    peer: &Peer,
    listen_port: Option<u16>,
    info: Option<&Info>,
) -> ExtendedHandshake {
    let mut extensions = BTreeMap::new();
    extensions.insert(UT_METADATA.to_owned(), OUR_UT_METADATA);
    // A 0 withdraws `ut_pex` from a peer told of it before the metadata showed the torrent
    // is private (`m` is additive across handshakes).
    let pex = !info.is_some_and(Info::is_private) && config.pex;
    extensions.insert(UT_PEX.to_owned(), if pex { OUR_UT_PEX } else { 0 });
    ExtendedHandshake {
        extensions,
        client: Some(concat!("ringtorrent ", env!("CARGO_PKG_VERSION")).to_owned()),
        request_queue: Some(config.max_queued_requests as u32),
        your_ip: Some(peer.addr.ip()),
        ipv6: config.our_ipv6,
        listen_port,
        metadata_size: info.map(|i| i.raw().len() as u64),
        ..Default::default()
    }
}

/// Queues our extension handshake for a peer that speaks BEP 10; returns whether the driver
/// must be told.
pub(crate) fn send_ext_handshake(
    peer: &mut Peer,
    config: &Config,
    listen_port: Option<u16>,
    info: Option<&Info>,
    now: Time,
) -> bool {
    if !peer.extended {
        return false;
    }
    let ext = our_ext_handshake(config, peer, listen_port, info);
    queue_extended(peer, EXTENDED_HANDSHAKE_ID, &ext.to_bytes(), now)
}

/// Queues our BEP 5 `port` message for a peer that runs a DHT node when ours runs too and
/// the torrent is not private (BEP 27: private torrents stay off the DHT); returns whether
/// the driver must be told.
pub(crate) fn send_dht_port(
    peer: &mut Peer,
    config: &Config,
    info: Option<&Info>,
    now: Time,
) -> bool {
    match config.dht_port {
        Some(port) if peer.dht && !info.is_some_and(Info::is_private) => {
            peer.queue(&Message::Port { port }, now)
        }
        _ => false,
    }
}

/// Queues an extended message with `payload` under the peer's id for it; returns whether
/// the driver must be told.
pub(crate) fn queue_extended(peer: &mut Peer, id: u8, payload: &[u8], now: Time) -> bool {
    peer.queue(
        &Message::Extended {
            id,
            payload: SplitBytes::single(payload),
        },
        now,
    )
}

/// Answers a peer's metadata request: the piece when we have the metadata and the peer's
/// send buffer has room, else a reject (BEP 9). Returns whether the driver must be told.
pub(crate) fn answer_metadata_request(
    peer: &mut Peer,
    info: Option<&Info>,
    piece: u32,
    config: &Config,
    now: Time,
) -> bool {
    let Some(id) = peer.ut_metadata.map(|i| i.get()) else {
        return false;
    };
    let raw = info.map(Info::raw).unwrap_or_default();
    let start = u64::from(piece) * u64::from(METADATA_PIECE_LEN);
    let mut payload = Vec::new();
    if info.is_some() && start < raw.len() as u64 && peer.send.len() < config.send_buffer_high {
        let end = (start + u64::from(METADATA_PIECE_LEN)).min(raw.len() as u64);
        MetadataMsg::Data {
            piece,
            total_size: raw.len() as u64,
            data: &raw[start as usize..end as usize],
        }
        .encode(&mut payload);
        if config.corrupt_metadata {
            if let Some(last) = payload.last_mut() {
                *last ^= 0xff;
            }
        }
    } else {
        MetadataMsg::Reject { piece }.encode(&mut payload);
    }
    queue_extended(peer, id, &payload, now)
}

/// Peers learned from a `ut_pex` message, at most [`MAX_PEX_PEERS`] of them.
pub(crate) fn pex_peers(payload: &[u8]) -> Result<Vec<(SocketAddr, u8)>, Violation> {
    let msg = PexMsg::decode(payload, MAX_PEX_PEERS).map_err(|_| Violation::BadPex)?;
    Ok(msg
        .added
        .into_iter()
        .filter(|(a, _)| a.port() != 0 && !a.ip().is_unspecified())
        .collect())
}

/// Where one metadata piece stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    Requested { peer: PeerKey, at: Time },
    Have { from: PeerKey },
}

/// The info dictionary being assembled.
#[derive(Debug, Default)]
struct Fetch {
    /// The size being fetched, taken from the first peer asked; `None` before.
    size: Option<u32>,
    buf: Vec<u8>,
    slots: Vec<Slot>,
    /// After a mismatch with several contributors: every piece from this one peer.
    sole: Option<PeerKey>,
    /// Peers that contributed to a failed attempt, not yet cleared or blamed, in turn.
    suspects: VecDeque<PeerKey>,
}

impl Fetch {
    fn reset(&mut self) {
        self.size = None;
        self.buf = Vec::new();
        self.slots.clear();
    }

    fn start(&mut self, size: u32) {
        self.size = Some(size);
        self.buf = vec![0; size as usize];
        self.slots = vec![Slot::Missing; size.div_ceil(METADATA_PIECE_LEN) as usize];
    }

    fn piece_len(&self, piece: u32) -> Option<usize> {
        let size = self.size?;
        let start = piece.checked_mul(METADATA_PIECE_LEN)?;
        (start < size).then(|| (size - start).min(METADATA_PIECE_LEN) as usize)
    }

    /// The sole source rejected or ignored a request: its attempt is abandoned (so that no
    /// piece of it mixes with others') and the next suspect gets its turn, this one going to
    /// the back of the line, so a suspect cannot stall the download by refusing.
    fn next_suspect(&mut self, peer: PeerKey) {
        if self.sole == Some(peer) {
            self.sole = None;
            self.slots.iter_mut().for_each(|s| *s = Slot::Missing);
            self.suspects.push_back(peer);
        }
    }

    /// Pieces requested from `peer` go back to missing.
    fn drop_peer(&mut self, peer: PeerKey) {
        for s in &mut self.slots {
            if matches!(*s, Slot::Requested { peer: p, .. } if p == peer) {
                *s = Slot::Missing;
            }
        }
    }
}

/// A peer's message before the metadata, as far as a [`MagnetTorrent`] reads it.
enum Early {
    KeepAlive,
    Extended {
        id: u8,
        payload: Vec<u8>,
    },
    /// BEP 52 messages: answered (rejected) or taken by the layer fetch now.
    HashRequest(HashRequest),
    Hashes {
        request: HashRequest,
        hashes: Vec<u8>,
    },
    HashReject(HashRequest),
    /// Anything else: kept for the full torrent, in `Peer::replay`.
    Other,
}

impl From<Message<'_>> for Early {
    fn from(msg: Message<'_>) -> Early {
        match msg {
            Message::KeepAlive => Early::KeepAlive,
            Message::Extended { id, payload } => Early::Extended {
                id,
                payload: payload.to_vec(),
            },
            Message::HashRequest(r) => Early::HashRequest(r),
            Message::Hashes { request, hashes } => Early::Hashes {
                request,
                hashes: hashes.to_vec(),
            },
            Message::HashReject(r) => Early::HashReject(r),
            _ => Early::Other,
        }
    }
}

/// A torrent known only by its info hash, fetching its metadata (see the module doc).
pub(crate) struct MagnetTorrent {
    /// Its id, settings, randomness and output queue, handed on to the `Torrent` it becomes.
    pub(crate) ctx: Context,
    pub(crate) info_hash: InfoHash,
    /// `info_hash` is a v2 info hash truncated (a `btmh` link): the metadata must hash to it
    /// by SHA-256, and the torrent's piece layers come from peers.
    pub(crate) v2: bool,
    pub(crate) peers: PeerSet,
    decoder: Decoder,
    fetch: Fetch,
    /// The verified metadata, once it arrived (the torrent waits for `start_torrent`).
    pub(crate) info: Option<Arc<Info>>,
    /// A v2-only torrent's metadata, verified, while its piece layers are fetched.
    layers: Option<Box<LayerFetch>>,
    pub(crate) stats: TorrentStats,
    pub(crate) error: Option<String>,
}

impl MagnetTorrent {
    pub(crate) fn new(ctx: Context, info_hash: InfoHash, v2: bool) -> MagnetTorrent {
        MagnetTorrent {
            ctx,
            info_hash,
            v2,
            peers: PeerSet::default(),
            decoder: Decoder::new(),
            fetch: Fetch::default(),
            info: None,
            layers: None,
            stats: TorrentStats::default(),
            error: None,
        }
    }

    /// Adds a peer that completed its handshake; sends our extension handshake (nothing else
    /// can be said before the metadata: BEP 6's `have none` waits, as libtorrent's does).
    pub(crate) fn attach(
        &mut self,
        key: PeerKey,
        mut peer: Peer,
        listen_port: Option<u16>,
        now: Time,
    ) {
        let info = self.info.as_deref();
        let mut notify = send_ext_handshake(&mut peer, &self.ctx.config, listen_port, info, now);
        notify |= send_dht_port(&mut peer, &self.ctx.config, info, now);
        self.peers.attach(key, peer, notify, true, &mut self.ctx);
    }

    /// Closes a peer; the metadata pieces asked of it go back to missing.
    pub(crate) fn close_peer(&mut self, key: PeerKey, reason: CloseReason, now: Time) {
        if self
            .peers
            .close(key, reason, now, &mut self.ctx, &mut self.stats)
            .is_none()
        {
            return;
        }
        self.fetch.drop_peer(key);
        if let Some(layers) = self.layers.as_mut() {
            layers.drop_peer(key);
        }
        if self.fetch.sole == Some(key) {
            self.fetch.sole = None;
        }
        self.fetch.suspects.retain(|&k| k != key);
    }

    /// Closes every peer (torrent removed).
    pub(crate) fn close_all(&mut self, reason: CloseReason, now: Time) {
        for key in self.peers.keys() {
            self.close_peer(key, reason.clone(), now);
        }
    }

    /// Handles every whole message in a peer's receive buffer (`PeerSet::receive` filled
    /// it): extended ones now, the rest kept for the full torrent.
    pub(crate) fn on_received(&mut self, key: PeerKey, now: Time) {
        while let Some(next) = self.peers.decode(key, &self.decoder, |m| Early::from(m)) {
            let (early, consumed, peer) = match next {
                Ok(next) => next,
                Err(reason) => return self.close_peer(key, reason, now),
            };
            let (id, payload) = match early {
                Early::KeepAlive => {
                    peer.recv.advance(consumed);
                    continue;
                }
                Early::Extended { id, payload } => {
                    peer.recv.advance(consumed);
                    (id, payload)
                }
                Early::HashRequest(r) => {
                    peer.recv.advance(consumed);
                    // Nothing to answer from before the torrent starts: rejected, bounded.
                    match hashes::admit(peer, &self.ctx.config, now) {
                        Ok(_) => {
                            let notify = hashes::send_answer(peer, r, None, now);
                            self.ctx.out.send(peer.conn, notify);
                        }
                        Err(v) => return self.close_peer(key, CloseReason::Violation(v), now),
                    }
                    continue;
                }
                Early::Hashes { request, hashes } => {
                    peer.recv.advance(consumed);
                    self.on_hashes(key, &request, Some(&hashes), now);
                    continue;
                }
                Early::HashReject(r) => {
                    peer.recv.advance(consumed);
                    self.on_hashes(key, &r, None, now);
                    continue;
                }
                Early::Other => {
                    if peer.replay.len() + consumed > MAX_PRE_METADATA_BUFFER {
                        let reason = CloseReason::Violation(Violation::PreMetadataFlood);
                        return self.close_peer(key, reason, now);
                    }
                    peer.replay.extend_from_slice(&peer.recv[..consumed]);
                    peer.recv.advance(consumed);
                    continue;
                }
            };
            if let Err(v) = self.on_extended(key, id, &payload, now) {
                self.close_peer(key, CloseReason::Violation(v), now);
            }
        }
    }

    fn on_extended(
        &mut self,
        key: PeerKey,
        id: u8,
        payload: &[u8],
        now: Time,
    ) -> Result<(), Violation> {
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        if !peer.extended {
            return Err(Violation::ExtendedNotNegotiated);
        }
        match id {
            EXTENDED_HANDSHAKE_ID => {
                let ext = ExtendedHandshake::decode(payload)
                    .map_err(|_| Violation::BadExtendedHandshake)?;
                peer.apply_ext_handshake(&ext);
                if let (Some(ip), Some(_), false) =
                    (ext.your_ip, self.ctx.config.dht_port, peer.voted)
                {
                    peer.voted = true;
                    let voter = peer.addr.ip();
                    self.ctx
                        .out
                        .events
                        .push_back(Event::ExternalAddrVote { ip, voter });
                }
                if peer
                    .metadata_size
                    .is_some_and(|s| s == 0 || s > MAX_METADATA_SIZE)
                {
                    return Err(Violation::BadMetadataSize);
                }
                self.fill(now);
            }
            OUR_UT_METADATA => match MetadataMsg::decode(payload) {
                Err(_) => return Err(Violation::BadMetadata),
                Ok(None) => {}
                Ok(Some(MetadataMsg::Request { piece })) => {
                    let notify = answer_metadata_request(
                        peer,
                        self.info.as_deref(),
                        piece,
                        &self.ctx.config,
                        now,
                    );
                    self.ctx.out.send(peer.conn, notify);
                }
                Ok(Some(MetadataMsg::Reject { piece })) => {
                    let slot = self.fetch.slots.get_mut(piece as usize);
                    if let Some(s @ Slot::Requested { .. }) = slot {
                        if matches!(*s, Slot::Requested { peer: p, .. } if p == key) {
                            *s = Slot::Missing;
                            peer.meta_requests = peer.meta_requests.saturating_sub(1);
                            peer.meta_backoff =
                                Some(now + self.ctx.config.metadata_request_timeout);
                            self.fetch.next_suspect(key);
                        }
                    }
                    self.fill(now);
                }
                Ok(Some(MetadataMsg::Data {
                    piece,
                    total_size,
                    data,
                })) => self.on_data(key, piece, total_size, data, now)?,
            },
            OUR_UT_PEX => {
                let addrs = pex_peers(payload)?;
                self.peers.add_known_pex(&addrs, now);
            }
            // BEP 10: messages under ids we never assigned are ignored.
            _ => {}
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        key: PeerKey,
        piece: u32,
        total_size: u64,
        data: &[u8],
        now: Time,
    ) -> Result<(), Violation> {
        let requested = matches!(
            self.fetch.slots.get(piece as usize),
            Some(Slot::Requested { peer, .. }) if *peer == key
        );
        if !requested {
            // Unasked for, answered after a time-out, or after we finished: ignored.
            return Ok(());
        }
        if Some(total_size) != self.fetch.size.map(u64::from)
            || self.fetch.piece_len(piece) != Some(data.len())
        {
            return Err(Violation::BadMetadata);
        }
        let start = piece as usize * METADATA_PIECE_LEN as usize;
        self.fetch.buf[start..start + data.len()].copy_from_slice(data);
        self.fetch.slots[piece as usize] = Slot::Have { from: key };
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.meta_requests = peer.meta_requests.saturating_sub(1);
        }
        if self
            .fetch
            .slots
            .iter()
            .all(|s| matches!(s, Slot::Have { .. }))
        {
            self.assembled(now);
        } else {
            self.fill(now);
        }
        Ok(())
    }

    /// Every piece is in: verify, then either finish or find whom to blame.
    fn assembled(&mut self, now: Time) {
        // A `btmh` link names the SHA-256 of the dictionary, truncated; a `btih` its SHA1.
        let digest: [u8; 20] = match self.v2 {
            true => InfoHashV2::from_bytes(Sha256::digest(&self.fetch.buf).into())
                .truncated()
                .as_bytes()
                .to_owned(),
            false => Sha1::digest(&self.fetch.buf).into(),
        };
        if digest == *self.info_hash.as_bytes() {
            let parsed = Info::from_bytes(&self.fetch.buf)
                .map_err(|e| format!("the torrent's metadata is invalid: {e}"));
            match parsed {
                // A v2-only torrent's pieces are checked against piece layers, which the
                // info dictionary does not carry: they come from peers first.
                Ok(info) if info.version() == MetaVersion::V2 => match LayerFetch::new(info) {
                    Ok(fetch) => {
                        self.layers = Some(Box::new(fetch));
                        self.fill_layers(now);
                    }
                    Err(info) => self.metadata_ready(*info, now),
                },
                Ok(info) => self.metadata_ready(info, now),
                Err(error) => {
                    // The hash matches, so this is the torrent the user asked for, and it is
                    // invalid (or v2-only): nothing to retry.
                    self.error = Some(error.clone());
                    self.ctx.out.events.push_back(Event::TorrentError {
                        torrent: self.ctx.id,
                        error,
                    });
                }
            }
            self.fetch.reset();
            return;
        }
        let contributors: BTreeSet<PeerKey> = self
            .fetch
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Have { from } => Some(*from),
                _ => None,
            })
            .collect();
        self.stats.hash_failures += 1;
        self.stats.corrupt += u64::from(self.fetch.size.unwrap_or(0));
        self.fetch.reset();
        if contributors.len() == 1 {
            let culprit = *contributors.first().expect("one contributor");
            self.fetch.sole = None;
            self.peers.ban(culprit, &mut self.ctx, &mut self.stats);
            let reason = CloseReason::Violation(Violation::CorruptMetadata);
            self.close_peer(culprit, reason, now);
        } else {
            self.fetch.suspects = contributors.into_iter().collect();
            self.fetch.sole = None;
        }
        self.fill(now);
    }

    /// The metadata is complete (piece layers included): the torrent waits for
    /// `start_torrent`, and serves the metadata meanwhile.
    fn metadata_ready(&mut self, info: Info, now: Time) {
        let info = Arc::new(info);
        self.info = Some(info.clone());
        self.ctx.out.events.push_back(Event::MetadataReceived {
            torrent: self.ctx.id,
            info: info.clone(),
        });
        // Peers that asked before we had it may ask again; tell every peer our size now.
        for peer in self.peers.values_mut() {
            if peer.extended {
                let mut ext = our_ext_handshake(&self.ctx.config, peer, None, Some(&info));
                ext.client = None;
                let notify = queue_extended(peer, EXTENDED_HANDSHAKE_ID, &ext.to_bytes(), now);
                self.ctx.out.send(peer.conn, notify);
            }
        }
    }

    /// A peer's `hashes` (`Some`) or `hash reject` (`None`) for `r`: taken by the layer
    /// fetch when it answers what we asked; a peer whose hashes fail their proof is closed
    /// and banned. Anything else is ignored.
    fn on_hashes(&mut self, key: PeerKey, r: &HashRequest, hashes: Option<&[u8]>, now: Time) {
        let Some(fetch) = self.layers.as_mut() else {
            return;
        };
        match hashes {
            None => {
                if fetch.on_reject(key, r) {
                    if let Some(peer) = self.peers.get_mut(&key) {
                        peer.hash_backoff = Some(now + self.ctx.config.metadata_request_timeout);
                    }
                }
            }
            Some(bytes) => {
                let hashes: Vec<Hash> = bytes
                    .chunks_exact(32)
                    .filter_map(|c| <[u8; 32]>::try_from(c).ok())
                    .collect();
                match fetch.on_hashes(key, r, &hashes) {
                    Answer::Unasked => return,
                    Answer::Taken => {}
                    Answer::Bad => {
                        self.peers.ban(key, &mut self.ctx, &mut self.stats);
                        let reason = CloseReason::Violation(Violation::BadHashes);
                        self.close_peer(key, reason, now);
                    }
                }
            }
        }
        if self.layers.as_ref().is_some_and(|f| f.is_done()) {
            let fetch = self.layers.take().expect("checked");
            match fetch.finish() {
                Ok(info) => self.metadata_ready(info, now),
                Err(error) => {
                    self.error = Some(error.clone());
                    self.ctx.out.events.push_back(Event::TorrentError {
                        torrent: self.ctx.id,
                        error,
                    });
                }
            }
            return;
        }
        self.fill_layers(now);
    }

    /// Asks peers for missing piece layer chunks, [`HASH_REQUESTS_PER_PEER`] at a time each.
    fn fill_layers(&mut self, now: Time) {
        let Some(fetch) = self.layers.as_mut() else {
            return;
        };
        for key in self.peers.keys() {
            let Some(peer) = self.peers.get_mut(&key) else {
                continue;
            };
            if peer.hash_backoff.is_some_and(|t| t > now) {
                continue;
            }
            peer.hash_requests_out = fetch.asked(key);
            let mut notify = false;
            while peer.hash_requests_out < HASH_REQUESTS_PER_PEER {
                let Some(r) = fetch.next_for(key, now) else {
                    break;
                };
                peer.hash_requests_out += 1;
                notify |= peer.queue(&Message::HashRequest(r), now);
            }
            self.ctx.out.send(peer.conn, notify);
        }
    }

    /// Asks peers for missing metadata pieces.
    fn fill(&mut self, now: Time) {
        if self.info.is_some() || self.error.is_some() || self.layers.is_some() {
            return;
        }
        let usable = |p: &Peer, size: Option<u32>| {
            p.ut_metadata.is_some()
                && p.metadata_size.is_some()
                && size.is_none_or(|s| p.metadata_size == Some(u64::from(s)))
                && p.meta_backoff.is_none_or(|t| t <= now)
        };
        // Nothing received and no one left who agrees on the size: take another's size.
        let busy = self.fetch.slots.iter().any(|s| !matches!(s, Slot::Missing));
        if !busy && !self.peers.values().any(|p| usable(p, self.fetch.size)) {
            self.fetch.reset();
        }
        // Blame mode: every piece from one suspect at a time.
        self.fetch.suspects.retain(|k| self.peers.contains(k));
        if self.fetch.sole.is_none() && !busy {
            self.fetch.sole = self.fetch.suspects.pop_front();
        }
        let sole = self.fetch.sole;
        // Requests in flight per peer, counted from the pieces (the one source of truth).
        for (key, peer) in self.peers.iter_mut() {
            peer.meta_requests = self
                .fetch
                .slots
                .iter()
                .filter(|s| matches!(s, Slot::Requested { peer, .. } if peer == key))
                .count() as u32;
        }
        let keys = self.peers.keys();
        for key in keys {
            if sole.is_some_and(|s| s != key) {
                continue;
            }
            let peer = self.peers.get_mut(&key).expect("listed above");
            if !usable(peer, self.fetch.size) {
                continue;
            }
            if self.fetch.size.is_none() {
                let size = peer.metadata_size.expect("usable") as u32;
                self.fetch.start(size);
            }
            let Some(id) = peer.ut_metadata.map(|i| i.get()) else {
                continue;
            };
            let mut notify = false;
            for (piece, slot) in self.fetch.slots.iter_mut().enumerate() {
                if peer.meta_requests >= METADATA_REQUESTS_PER_PEER {
                    break;
                }
                if *slot == Slot::Missing {
                    *slot = Slot::Requested { peer: key, at: now };
                    peer.meta_requests += 1;
                    let mut payload = Vec::new();
                    MetadataMsg::Request {
                        piece: piece as u32,
                    }
                    .encode(&mut payload);
                    notify |= queue_extended(peer, id, &payload, now);
                }
            }
            self.ctx.out.send(peer.conn, notify);
        }
    }

    /// Housekeeping: inactivity, keep-alives, metadata requests that timed out.
    pub(crate) fn tick(&mut self, now: Time) {
        for key in self.peers.keys() {
            if let Liveness::Inactive = self.peers.keep_alive(key, now, &mut self.ctx) {
                self.close_peer(key, CloseReason::Inactive, now);
            }
        }
        let mut slow = Vec::new();
        for slot in &mut self.fetch.slots {
            if let Slot::Requested { peer, at } = *slot {
                if now.saturating_since(at) >= self.ctx.config.metadata_request_timeout {
                    *slot = Slot::Missing;
                    slow.push(peer);
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.meta_requests = p.meta_requests.saturating_sub(1);
                        p.meta_backoff = Some(now + self.ctx.config.metadata_request_timeout);
                    }
                }
            }
        }
        for key in slow {
            self.fetch.next_suspect(key);
        }
        self.fill(now);
        let timeout = self.ctx.config.metadata_request_timeout;
        if let Some(fetch) = self.layers.as_mut() {
            let before =
                Time::from_micros(now.as_micros().saturating_sub(timeout.as_micros() as u64));
            for key in fetch.expire(before) {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.hash_backoff = Some(now + timeout);
                }
            }
        }
        self.fill_layers(now);
    }
}
