//! One peer connection's state after its handshake. The protocol logic that changes it lives in
//! `torrent.rs`, which also owns the picker and the choker the peer's messages feed (and in
//! `peers.rs`, the bookkeeping every torrent does alike when a peer joins or leaves); this file
//! holds the data and the small helpers that keep its invariants. See `STATE.md` for the
//! states and transitions.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::num::NonZeroU8;

use ::core::net::SocketAddr;

use bytes::BytesMut;

use super::api::ConnId;
use super::mse::Rc4;
use super::picker::PeerPieces;
use super::rate::RateMeter;
use super::sendbuf::SendBuf;
use super::wire::{Message, Reserved, ReservedFlag};
use super::{Bitfield, BlockRef, PeerId, PieceIndex, Time};

/// What a peer has told us it has.
#[derive(Debug, Clone)]
pub(crate) enum Has {
    /// `have all` (or a full bitfield): a seed. Costs no per-piece memory.
    All,
    /// Its pieces so far.
    Some(Bitfield),
}

impl Has {
    pub(crate) fn pieces(&self) -> PeerPieces<'_> {
        match self {
            Has::All => PeerPieces::All,
            Has::Some(b) => PeerPieces::Some(b),
        }
    }

    pub(crate) fn get(&self, piece: u32) -> bool {
        match self {
            Has::All => true,
            Has::Some(b) => b.get(piece),
        }
    }

    pub(crate) fn is_all(&self) -> bool {
        match self {
            Has::All => true,
            Has::Some(b) => b.is_full(),
        }
    }

    pub(crate) fn count(&self, piece_count: u32) -> u32 {
        match self {
            Has::All => piece_count,
            Has::Some(b) => b.count(),
        }
    }
}

/// An outstanding request we sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutRequest {
    pub(crate) block: BlockRef,
    pub(crate) sent_at: Time,
}

/// A peer connection past its handshake.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) conn: ConnId,
    pub(crate) addr: SocketAddr,
    pub(crate) peer_id: PeerId,
    pub(crate) outgoing: bool,
    /// Both sides announced BEP 6.
    pub(crate) fast: bool,
    /// Both sides announced BEP 10.
    pub(crate) extended: bool,
    /// Both sides announced a DHT node (BEP 5): we send our `port` and take theirs.
    pub(crate) dht: bool,
    /// The peer's `port` message was taken already (one per connection is used).
    pub(crate) dht_port_seen: bool,
    /// The peer's `yourip` was counted already (one vote per connection).
    pub(crate) voted: bool,

    pub(crate) am_choking: bool,
    pub(crate) am_interested: bool,
    pub(crate) peer_choking: bool,
    pub(crate) peer_interested: bool,

    pub(crate) has: Has,
    /// Whether the peer's first message has been seen (a bitfield is only allowed first).
    pub(crate) first_message_seen: bool,
    /// Pieces the peer has that we want and lack; we are interested while this is above 0.
    pub(crate) interesting: u32,
    /// The peer's `reqq`, once its extension handshake says.
    pub(crate) reqq: Option<u32>,

    pub(crate) requests_out: Vec<OutRequest>,
    /// While in slow start, the request target grows by one per block received.
    pub(crate) slow_start_target: usize,
    pub(crate) slow_start_until: Option<Time>,
    pub(crate) snubbed: bool,
    /// Pieces the peer lets us download while it chokes us (BEP 6).
    pub(crate) allowed_fast_in: Vec<PieceIndex>,
    /// Pieces the peer suggested (BEP 6).
    pub(crate) suggested: Vec<PieceIndex>,

    /// Requests from the peer waiting for a disk read.
    pub(crate) requests_in: RequestQueue,
    /// Blocks being read from disk for the peer, to be sent when the read completes (a
    /// cancel or a choke removes them; their reads stay counted below until they complete).
    pub(crate) reading: Vec<BlockRef>,
    /// Block reads issued for the peer and not completed, cancelled ones included: what
    /// `max_reads_per_peer` bounds.
    pub(crate) reads_in_flight: usize,
    /// Their bytes: memory the disk pool is filling for this peer.
    pub(crate) read_bytes: usize,
    /// Pieces we let the peer download while we choke it (BEP 6).
    pub(crate) allowed_fast_out: Vec<u32>,

    pub(crate) down: RateMeter,
    pub(crate) up: RateMeter,
    pub(crate) connected_at: Time,
    pub(crate) last_recv: Time,
    pub(crate) last_send: Time,
    pub(crate) last_unchoked: Option<Time>,
    /// When the peer last sent us a block we had asked for.
    pub(crate) last_block: Option<Time>,
    pub(crate) uploaded_since_unchoke: u64,

    pub(crate) recv: BytesMut,
    pub(crate) send: SendBuf,
    pub(crate) send_notified: bool,
    /// How the connection is protected (the send side's RC4 lives in `send`).
    pub(crate) crypto: Crypto,
    /// On an RC4 connection, the stream that decrypts what arrives, before it joins `recv`.
    pub(crate) recv_cipher: Option<Box<Rc4>>,

    /// In the torrent's queue of peers waiting for upload tokens (rate limits).
    pub(crate) up_waiting: bool,
    /// In the torrent's queue of peers waiting for download tokens (rate limits).
    pub(crate) down_waiting: bool,

    /// The extension ids the peer assigned in its BEP 10 handshake (what we send under).
    pub(crate) ut_metadata: Option<NonZeroU8>,
    pub(crate) ut_pex: Option<NonZeroU8>,
    /// The peer's listen port (`p`), so an incoming peer can be passed on by PEX.
    pub(crate) listen_port: Option<u16>,
    /// The metadata size the peer announced (BEP 9).
    pub(crate) metadata_size: Option<u64>,
    /// While the torrent's metadata is unknown: the peer's messages other than extended ones,
    /// kept (bounded by `MAX_PRE_METADATA_BUFFER`) to be handled once it arrives.
    pub(crate) replay: Vec<u8>,
    /// Metadata pieces we asked this peer for and have not had.
    pub(crate) meta_requests: u32,
    /// No metadata requests to this peer before then (it rejected or ignored one).
    pub(crate) meta_backoff: Option<Time>,
    /// PEX: what we last told the peer is connected, and when we may tell it again.
    pub(crate) pex_told: BTreeSet<SocketAddr>,
    pub(crate) pex_next: Option<Time>,
    /// BEP 52: when the current second of hash requests from this peer began, and how many
    /// it sent in it (bounded by `hashes::HASH_REQUESTS_PER_SEC`).
    pub(crate) hash_window: (Time, u32),
    /// BEP 52: our hash requests to this peer not yet answered (a magnet fetching piece
    /// layers), and no more to it before `hash_backoff` (it rejected or ignored one).
    pub(crate) hash_requests_out: u32,
    pub(crate) hash_backoff: Option<Time>,
}

/// How a connection is protected: which handshake it opened with and what it selected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Crypto {
    /// A plain BitTorrent handshake.
    #[default]
    None,
    /// An MSE/PE handshake that selected plaintext for the rest of the connection.
    Plaintext,
    /// An MSE/PE handshake that selected RC4: every byte after it is encrypted.
    Rc4,
}

impl Crypto {
    /// A short stable name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Crypto::None => "none",
            Crypto::Plaintext => "mse_plaintext",
            Crypto::Rc4 => "rc4",
        }
    }

    /// The peer speaks MSE/PE (PEX's "prefers encryption" flag).
    pub fn is_mse(self) -> bool {
        self != Crypto::None
    }
}

impl Peer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conn: ConnId,
        addr: SocketAddr,
        peer_id: PeerId,
        outgoing: bool,
        ours: Reserved,
        theirs: Reserved,
        piece_count: u32,
        now: Time,
        send: SendBuf,
        send_notified: bool,
    ) -> Peer {
        let both = |flag| ours.contains(flag) && theirs.contains(flag);
        Peer {
            conn,
            addr,
            peer_id,
            outgoing,
            fast: both(ReservedFlag::Fast),
            extended: both(ReservedFlag::ExtensionProtocol),
            dht: both(ReservedFlag::Dht),
            dht_port_seen: false,
            voted: false,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            has: Has::Some(Bitfield::new(piece_count)),
            first_message_seen: false,
            interesting: 0,
            reqq: None,
            requests_out: Vec::new(),
            slow_start_target: 0,
            slow_start_until: None,
            snubbed: false,
            allowed_fast_in: Vec::new(),
            suggested: Vec::new(),
            requests_in: RequestQueue::default(),
            reading: Vec::new(),
            reads_in_flight: 0,
            read_bytes: 0,
            allowed_fast_out: Vec::new(),
            down: RateMeter::new(now),
            up: RateMeter::new(now),
            connected_at: now,
            last_recv: now,
            last_send: now,
            last_unchoked: None,
            last_block: None,
            uploaded_since_unchoke: 0,
            recv: BytesMut::new(),
            send,
            send_notified,
            crypto: Crypto::None,
            recv_cipher: None,
            up_waiting: false,
            down_waiting: false,
            ut_metadata: None,
            ut_pex: None,
            listen_port: None,
            metadata_size: None,
            replay: Vec::new(),
            meta_requests: 0,
            meta_backoff: None,
            pex_told: BTreeSet::new(),
            pex_next: None,
            hash_window: (now, 0),
            hash_requests_out: 0,
            hash_backoff: None,
        }
    }

    /// Queues `msg` and reports whether the driver must be told there is data to send.
    pub(crate) fn queue(&mut self, msg: &Message<'_>, now: Time) -> bool {
        self.send.encode(|out| msg.encode(out));
        self.last_send = now;
        self.needs_notify()
    }

    /// Whether the send buffer has data the driver has not been told about; marks it told.
    pub(crate) fn needs_notify(&mut self) -> bool {
        if !self.send.is_empty() && !self.send_notified {
            self.send_notified = true;
            true
        } else {
            false
        }
    }

    /// Bytes held for sending to the peer: queued (or taken by the driver and not yet sent)
    /// and being read from disk. What its send watermark is compared with.
    pub(crate) fn upload_queued(&self) -> usize {
        self.send.len() + self.read_bytes
    }

    /// Block payload held for the peer (queued and being read): what the session's upload
    /// budget counts.
    pub(crate) fn upload_payload(&self) -> usize {
        self.send.payload() + self.read_bytes
    }

    /// The address other peers can dial this one at: where we dialled it, or its IP with the
    /// listen port from its extension handshake; `None` when an incoming peer never said.
    pub(crate) fn listen_addr(&self) -> Option<SocketAddr> {
        if self.outgoing {
            Some(self.addr)
        } else {
            self.listen_port
                .filter(|&p| p != 0)
                .map(|p| SocketAddr::new(self.addr.ip(), p))
        }
    }

    /// Records what the peer's extension handshake says (`m` is additive: a later handshake
    /// changes only the extensions it names).
    pub(crate) fn apply_ext_handshake(&mut self, ext: &super::wire::ExtendedHandshake) {
        use super::wire::{UT_METADATA, UT_PEX};
        if let Some(q) = ext.request_queue {
            self.reqq = Some(q.max(1));
        }
        if ext.extensions.contains_key(UT_METADATA) {
            self.ut_metadata = ext.extension_id(UT_METADATA);
        }
        if ext.extensions.contains_key(UT_PEX) {
            self.ut_pex = ext.extension_id(UT_PEX);
        }
        if ext.listen_port.is_some() {
            self.listen_port = ext.listen_port;
        }
        if ext.metadata_size.is_some() {
            self.metadata_size = ext.metadata_size;
        }
    }

    /// Whether the peer may be served `piece` while we choke it.
    pub(crate) fn allowed_fast(&self, piece: u32) -> bool {
        self.fast && self.allowed_fast_out.contains(&piece)
    }
}

/// A peer's requests waiting for a disk read, in arrival order, with a set of the same blocks
/// so that a request is checked against the queue in constant time: a fast leecher keeps
/// hundreds queued (up to `max_queued_requests`), and a linear search per request was 6-10%
/// of a one-leecher seeder's CPU (`perf/2026-12-03-seed-send.md`).
#[derive(Debug, Default)]
pub(crate) struct RequestQueue {
    order: VecDeque<BlockRef>,
    set: HashSet<BlockRef>,
}

impl RequestQueue {
    /// Whether `block` is queued.
    pub(crate) fn contains(&self, block: &BlockRef) -> bool {
        self.set.contains(block)
    }

    /// Queues `block` last, unless it is queued already. Returns whether it was added.
    pub(crate) fn push_back(&mut self, block: BlockRef) -> bool {
        if !self.set.insert(block) {
            return false;
        }
        self.order.push_back(block);
        true
    }

    /// The oldest request.
    pub(crate) fn front(&self) -> Option<&BlockRef> {
        self.order.front()
    }

    /// Takes the oldest request.
    pub(crate) fn pop_front(&mut self) -> Option<BlockRef> {
        let block = self.order.pop_front()?;
        self.set.remove(&block);
        Some(block)
    }

    /// Removes `block` (a cancel). Returns whether it was queued.
    pub(crate) fn remove(&mut self, block: &BlockRef) -> bool {
        if !self.set.remove(block) {
            return false;
        }
        if let Some(i) = self.order.iter().position(|b| b == block) {
            self.order.remove(i);
        }
        true
    }

    /// Keeps only the requests `keep` accepts, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&BlockRef) -> bool) {
        let set = &mut self.set;
        self.order.retain(|b| {
            let kept = keep(b);
            if !kept {
                set.remove(b);
            }
            kept
        });
    }

    /// The requests, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &BlockRef> + '_ {
        self.order.iter()
    }

    /// How many are queued.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::RequestQueue;
    use crate::core::Lengths;

    #[test]
    fn request_queue_keeps_order_and_set_together() {
        let lengths = Lengths::new(1 << 20, 1 << 16).unwrap();
        let b = |piece, n| lengths.block(lengths.piece(piece).unwrap(), n).unwrap();
        let mut q = RequestQueue::default();
        assert!(q.push_back(b(0, 0)));
        assert!(q.push_back(b(0, 1)));
        assert!(q.push_back(b(1, 0)));
        // A duplicate is refused and changes nothing.
        assert!(!q.push_back(b(0, 1)));
        assert_eq!(q.len(), 3);
        assert!(q.contains(&b(0, 1)));
        // A cancel removes from the middle; a second one finds nothing.
        assert!(q.remove(&b(0, 1)));
        assert!(!q.remove(&b(0, 1)));
        assert!(!q.contains(&b(0, 1)));
        q.retain(|blk| blk.piece.get() == 1);
        assert!(!q.contains(&b(0, 0)));
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), vec![b(1, 0)]);
        assert_eq!(q.pop_front(), Some(b(1, 0)));
        assert!(q.is_empty() && !q.contains(&b(1, 0)));
        // Removed blocks can be queued again.
        assert!(q.push_back(b(0, 1)));
        assert_eq!(q.front(), Some(&b(0, 1)));
    }
}
