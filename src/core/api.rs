//! The types that cross the boundary between the core and its drivers: handles, the actions
//! the core asks for, disk operations and their results, events, and why connections close.

use ::core::net::SocketAddr;

use bytes::Bytes;

use super::mse::MseError;
use super::wire::{HandshakeError, MessageError};
use super::{BlockRef, Crypto, PeerId, PeerKey, PieceIndex};

/// A connection's handle: a slab slot plus a generation, so that a late completion for a
/// slot that has since been reused is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The slab slot.
    pub slot: u32,
    /// Distinguishes successive connections in the same slot.
    pub generation: u32,
}

impl ConnId {
    /// Packs the handle into 64 bits (for io_uring `user_data` and similar).
    pub const fn to_u64(self) -> u64 {
        ((self.generation as u64) << 32) | self.slot as u64
    }

    /// Unpacks a handle made by [`ConnId::to_u64`].
    pub const fn from_u64(v: u64) -> ConnId {
        ConnId {
            slot: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// A torrent's handle within a session; generations as for [`ConnId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TorrentId {
    /// The slab slot.
    pub slot: u32,
    /// Distinguishes successive torrents in the same slot.
    pub generation: u32,
}

/// Something the core needs the driver to do. Drained with `Session::poll_action`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `addr` for `conn`, then call `handle_connected` (or
    /// `handle_closed` if it fails).
    Connect {
        /// The connection's handle.
        conn: ConnId,
        /// Where to connect.
        addr: SocketAddr,
        /// The local address to connect from (port chosen by the kernel), or `None` for the
        /// kernel's choice. The session never sets it; load generators spread their peers
        /// over many loopback addresses with it, so per-address limits do not hide the load.
        from: Option<::core::net::IpAddr>,
    },
    /// `conn` has bytes to send (see `Session::send_chunks`). Sent once each time its send
    /// buffer goes from empty to not empty.
    Send {
        /// The connection's handle.
        conn: ConnId,
    },
    /// Close `conn`'s socket. The core has already forgotten the connection.
    Close {
        /// The connection's handle.
        conn: ConnId,
    },
    /// Carry out a disk operation and report with `Session::handle_disk`.
    Disk(DiskOp),
    /// `conn` is for a torrent another session owns (thread-per-core sharding): stop
    /// receiving on it, let any send in flight finish, then take the connection's state with
    /// `Session::take_handoff` and give it, with the socket, to shard `shard`'s
    /// `Session::adopt`. Bytes received meanwhile still go to `handle_recv`; the session keeps
    /// them for the new owner.
    HandOff {
        /// The connection's handle.
        conn: ConnId,
        /// The shard (event loop) that owns the torrent.
        shard: u32,
    },
}

/// A disk operation for the storage layer, carried out off the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// Store a received block.
    Write {
        /// The torrent.
        torrent: TorrentId,
        /// Where the block goes.
        block: BlockRef,
        /// The block's bytes.
        data: Bytes,
    },
    /// Read a block to serve it to `peer`.
    Read {
        /// The torrent.
        torrent: TorrentId,
        /// The peer that asked for it.
        peer: PeerKey,
        /// What to read.
        block: BlockRef,
    },
    /// Hash a piece whose blocks have all been written and compare it with the torrent.
    Verify {
        /// The torrent.
        torrent: TorrentId,
        /// The piece.
        piece: PieceIndex,
        /// Also return each block's SHA1 when the piece matches: the piece failed before and
        /// smart ban waits for the good copy. A piece that fails has its blocks hashed anyway.
        block_hashes: bool,
    },
}

/// The result of a [`DiskOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskDone {
    /// A `Write` finished; `Err` holds what went wrong, for the user.
    Written {
        /// The torrent.
        torrent: TorrentId,
        /// The block written.
        block: BlockRef,
        /// Success, or the error text.
        result: Result<(), String>,
    },
    /// A `Read` finished.
    Read {
        /// The torrent.
        torrent: TorrentId,
        /// The peer it was for.
        peer: PeerKey,
        /// The block read.
        block: BlockRef,
        /// The bytes (exactly `block.len` of them), or the error text.
        result: Result<Bytes, String>,
    },
    /// A `Verify` finished.
    Verified {
        /// The torrent.
        torrent: TorrentId,
        /// The piece.
        piece: PieceIndex,
        /// Whether its hash matched.
        ok: bool,
        /// The SHA1 of each block, in order, when the piece failed or the `Verify` asked for
        /// them; else empty (also when the blocks could not be read).
        block_hashes: Vec<[u8; 20]>,
    },
}

/// What happened, for the user interface, logs and metrics. Drained with `Session::poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer completed its handshake and joined a torrent.
    PeerConnected {
        /// The torrent.
        torrent: TorrentId,
        /// The connection.
        conn: ConnId,
        /// The peer's address.
        addr: SocketAddr,
        /// The peer's id.
        peer_id: PeerId,
        /// Whether we dialled it.
        outgoing: bool,
        /// How the connection is protected.
        crypto: Crypto,
    },
    /// A connection ended.
    PeerClosed {
        /// The torrent, if the handshake got that far.
        torrent: Option<TorrentId>,
        /// The connection.
        conn: ConnId,
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
    /// A piece passed its hash check and is ours.
    PieceVerified {
        /// The torrent.
        torrent: TorrentId,
        /// The piece.
        piece: PieceIndex,
    },
    /// A piece failed its hash check and will be downloaded again.
    HashFailed {
        /// The torrent.
        torrent: TorrentId,
        /// The piece.
        piece: PieceIndex,
    },
    /// A peer was banned from a torrent for sending corrupt data.
    PeerBanned {
        /// The torrent.
        torrent: TorrentId,
        /// The peer's address (its IP is refused from now on).
        addr: SocketAddr,
    },
    /// Every wanted piece of the torrent is verified.
    TorrentComplete {
        /// The torrent.
        torrent: TorrentId,
    },
    /// A torrent in seed mode (`Session::set_seed_mode`) read a piece it had taken on trust,
    /// and the piece is not what the torrent says: the data cannot be trusted. The torrent
    /// stops serving every piece it has not verified; the driver should check the whole
    /// torrent (and start it again from what the check finds).
    SeedModeFailed {
        /// The torrent.
        torrent: TorrentId,
        /// The piece that failed.
        piece: PieceIndex,
    },
    /// A torrent added by magnet link (`Session::add_magnet`) has its metadata, verified
    /// against the info hash. Its peers stay connected, and it serves the metadata to others,
    /// but it downloads nothing until the driver has opened storage for `info` and called
    /// `Session::start_torrent` (with the pieces storage already holds).
    MetadataReceived {
        /// The torrent.
        torrent: TorrentId,
        /// The info dictionary.
        info: std::sync::Arc<crate::metainfo::Info>,
    },
    /// A disk error stopped the torrent's downloading.
    TorrentError {
        /// The torrent.
        torrent: TorrentId,
        /// What went wrong.
        error: String,
    },
    /// A peer of a public torrent told us where its DHT node listens (BEP 5 `port`): its IP
    /// and that UDP port. The session running the DHT takes it itself (`Dht::add_node`);
    /// others pass it on for the driver to forward there.
    DhtNode {
        /// The node's address.
        addr: SocketAddr,
    },
    /// A peer of a public torrent said (BEP 10 `yourip`) at which address it sees us: a vote
    /// for our external address, which the DHT's node id follows (BEP 42) once enough
    /// different peers agree (`Session::vote_external_addr`). Passed on like `DhtNode`.
    ExternalAddrVote {
        /// The address the peer sees.
        ip: ::core::net::IpAddr,
        /// The peer's own address (one vote per voter).
        voter: ::core::net::IpAddr,
    },
    /// What the DHT node this session runs reports (lookups' peers, hops, ends).
    Dht(crate::dht::DhtEvent),
}

/// Why a connection was closed. Every reason is counted per torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer broke the protocol.
    Violation(Violation),
    /// The TCP connection did not come up in time.
    ConnectTimeout,
    /// The TCP connection was refused or failed before it came up.
    ConnectFailed,
    /// The peer did not complete its handshake in time.
    HandshakeTimeout,
    /// The peer sent nothing for too long.
    Inactive,
    /// The driver reported the socket closed or failed.
    RemoteClosed,
    /// The bytes that opened the connection are not a BitTorrent handshake.
    NotBitTorrent(HandshakeError),
    /// The peer's encrypted (MSE/PE) handshake failed or asked for what we do not support.
    Encryption(MseError),
    /// The peer opened with a plain BitTorrent handshake, and our policy requires
    /// encryption (`Encryption::Require`).
    EncryptionRequired,
    /// The peer asked for a torrent we do not have.
    UnknownTorrent,
    /// We dialled for one torrent and the peer answered for another.
    WrongInfoHash,
    /// We connected to ourselves.
    SelfConnection,
    /// We already have a connection to this peer id on this torrent.
    DuplicatePeer,
    /// The torrent has its maximum of peers.
    TooManyPeers,
    /// The session has its maximum of connections.
    TooManyConnections,
    /// The peer's IP address holds `Config::max_peers_per_ip` connections to the torrent.
    TooManyFromIp,
    /// The torrent was full, and the peer (idle and useless to both sides) made room for a
    /// newcomer (`Config::evict_idle_after`).
    Evicted,
    /// The peer's address is banned for sending corrupt data.
    Banned,
    /// We and the peer both have everything; there is nothing to exchange.
    BothSeeds,
    /// The torrent was removed.
    TorrentRemoved,
    /// The peer sent more than `limits::MAX_HANDOFF_BUFFER` while its connection moved to
    /// the loop that owns its torrent, before anyone had answered its handshake.
    HandOffFlood,
}

impl CloseReason {
    /// A short stable name, for counters and JSON reports.
    pub fn name(&self) -> &'static str {
        match self {
            CloseReason::Violation(v) => v.name(),
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::Inactive => "inactive",
            CloseReason::RemoteClosed => "remote_closed",
            CloseReason::NotBitTorrent(_) => "not_bittorrent",
            CloseReason::Encryption(e) => e.name(),
            CloseReason::EncryptionRequired => "encryption_required",
            CloseReason::UnknownTorrent => "unknown_torrent",
            CloseReason::WrongInfoHash => "wrong_info_hash",
            CloseReason::SelfConnection => "self_connection",
            CloseReason::DuplicatePeer => "duplicate_peer",
            CloseReason::TooManyPeers => "too_many_peers",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::TooManyFromIp => "too_many_peers_from_ip",
            CloseReason::Evicted => "evicted_idle",
            CloseReason::Banned => "banned",
            CloseReason::BothSeeds => "both_seeds",
            CloseReason::TorrentRemoved => "torrent_removed",
            CloseReason::HandOffFlood => "handoff_flood",
        }
    }
}

/// The ways a peer can break the protocol. Each closes that peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A message that does not decode.
    Malformed(MessageError),
    /// A `bitfield`, `have all` or `have none` after the first message.
    LateBitfield,
    /// A Fast-extension message from a peer that did not announce the extension.
    FastNotNegotiated,
    /// An `extended` message from a peer that did not announce BEP 10.
    ExtendedNotNegotiated,
    /// A malformed extension handshake.
    BadExtendedHandshake,
    /// A piece index past the torrent's end.
    BadPieceIndex,
    /// A request, cancel, reject or piece whose block lies outside its piece.
    BadBlock,
    /// A request longer than we serve.
    RequestTooLong,
    /// A request for a piece we never said we have.
    RequestForMissingPiece,
    /// More queued requests than we advertised, while choked.
    TooManyRequests,
    /// A malformed `ut_metadata` message, or a metadata piece of the wrong size.
    BadMetadata,
    /// A `metadata_size` of 0 or past `limits::MAX_METADATA_SIZE`.
    BadMetadataSize,
    /// Metadata that does not hash to the info hash, traced to this peer.
    CorruptMetadata,
    /// A malformed `ut_pex` message.
    BadPex,
    /// More than `limits::MAX_PRE_METADATA_BUFFER` bytes of messages before the metadata
    /// arrived.
    PreMetadataFlood,
    /// BEP 52 `hash request`s faster than we answer them, or while the peer does not read
    /// what we send.
    HashRequestFlood,
    /// BEP 52 `hashes` that do not fit the request we sent or fail their proof.
    BadHashes,
}

impl Violation {
    /// A short stable name, for counters and JSON reports.
    pub fn name(&self) -> &'static str {
        match self {
            Violation::Malformed(_) => "malformed_message",
            Violation::LateBitfield => "late_bitfield",
            Violation::FastNotNegotiated => "fast_not_negotiated",
            Violation::ExtendedNotNegotiated => "extended_not_negotiated",
            Violation::BadExtendedHandshake => "bad_extended_handshake",
            Violation::BadPieceIndex => "bad_piece_index",
            Violation::BadBlock => "bad_block",
            Violation::RequestTooLong => "request_too_long",
            Violation::RequestForMissingPiece => "request_for_missing_piece",
            Violation::TooManyRequests => "too_many_requests",
            Violation::BadMetadata => "bad_metadata",
            Violation::BadMetadataSize => "bad_metadata_size",
            Violation::CorruptMetadata => "corrupt_metadata",
            Violation::BadPex => "bad_pex",
            Violation::PreMetadataFlood => "pre_metadata_flood",
            Violation::HashRequestFlood => "hash_request_flood",
            Violation::BadHashes => "bad_hashes",
        }
    }
}
