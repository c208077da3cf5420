//! Every bound on input that comes from outside lives here, with the reason for its value.
//!
//! Relations between the constants are checked at compile time, so changing one cannot quietly
//! break another.

/// The unit of transfer on the wire. Every client since 2008 requests 16 KiB blocks, and many
/// (libtorrent, Transmission) refuse larger requests by default.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// The largest block length a peer may be configured to accept in a request; larger requests
/// are a protocol violation even when the user raises the serving limit.
pub const MAX_BLOCK_LEN: u32 = 128 * 1024;

/// The smallest piece length a torrent may declare. Smaller pieces make no sense with 16 KiB
/// blocks and are not produced by any maintained tool.
pub const MIN_PIECE_LEN: u64 = BLOCK_LEN as u64;

/// The largest piece length a torrent may declare. libtorrent refuses more than 128 MiB; no
/// tool makes pieces larger than 64 MiB, and a piece is held whole in memory while it is
/// verified, so a bigger one is a memory attack, not a real torrent.
pub const MAX_PIECE_LEN: u64 = 64 * 1024 * 1024;

/// The largest `.torrent` file (and, later, metadata from a peer) accepted. 1 TiB in 256 KiB
/// pieces needs an 80 MiB `pieces` string, but real torrents that large use larger pieces;
/// 32 MiB covers 1.6 million pieces and keeps a hostile file from exhausting memory.
pub const MAX_TORRENT_FILE_LEN: usize = 32 * 1024 * 1024;

/// Deepest nesting of lists and dictionaries in bencode. Real torrents nest four levels
/// (`info` -> `files` -> file -> `path`); libtorrent allows 100. The decoder recurses, so this
/// also bounds its stack use.
pub const MAX_BENCODE_DEPTH: usize = 64;

/// Most values (integers, strings, lists, dictionaries, and dictionary keys, which count as
/// values) in one bencode document. It admits a torrent of [`MAX_FILES`] files at
/// [`BENCODE_VALUES_PER_FILE`] each plus [`BENCODE_VALUES_OUTSIDE_FILES`]; the decoded tree
/// costs roughly 48 bytes a value (64 for a dictionary entry), so this bounds the tree at a
/// few hundred MiB even for a hostile input.
pub const MAX_BENCODE_VALUES: usize = 7_000_000;

/// Bencode values one entry of `info.files` costs at the least: its dictionary, the `length`
/// key and integer, the `path` key and list, and one path component.
pub const BENCODE_VALUES_PER_FILE: usize = 6;

/// Bencode values a torrent may spend outside `info.files`: a few dozen keys and values in
/// the root and `info` dictionaries, and [`MAX_TRACKERS`] trackers each in a tier of its own
/// (a list and a string each).
pub const BENCODE_VALUES_OUTSIDE_FILES: usize = 256 + 2 * MAX_TRACKERS;

/// Most files in one torrent. The largest public torrents hold a few hundred thousand files.
pub const MAX_FILES: usize = 1_000_000;

/// Longest path component, in bytes: Linux's `NAME_MAX`. A longer name cannot be created, so
/// it is rejected when the torrent is read rather than when the first block arrives.
pub const MAX_PATH_COMPONENT_LEN: usize = 255;

/// Deepest folder nesting inside a torrent; Linux's `PATH_MAX` (4096) is reached long before.
pub const MAX_PATH_DEPTH: usize = 64;

/// Most pieces in one torrent: the `pieces` string is bounded by the file size limit anyway;
/// this keeps piece indices well inside `u32` and bitfields under the message size limit.
pub const MAX_PIECES: u64 = (MAX_TORRENT_FILE_LEN / 20) as u64;

/// The largest total payload of one torrent: 2^50 bytes (1 PiB). Lengths past this are a sign
/// of a corrupt or hostile file and would overflow offset arithmetic near `u64::MAX`.
pub const MAX_TORRENT_LEN: u64 = 1 << 50;

/// Most trackers across all tiers of `announce-list`; real torrents carry a few dozen.
pub const MAX_TRACKERS: usize = 1024;

/// The longest peer wire message accepted (its length prefix, not counting the 4 prefix bytes).
/// It must hold a bitfield for [`MAX_PIECES`] pieces and a `piece` message with a
/// [`MAX_BLOCK_LEN`] block; anything longer is a hostile length prefix.
pub const MAX_MESSAGE_LEN: u32 = 1 << 21;

/// Most hashes of a base layer one BEP 52 `hash request` may ask for: BEP 52 says requests
/// should not ask for more than 512, and libtorrent asks for piece layers 512 at a time. A
/// longer request is rejected; the `hashes` answering it fit one message on any connection.
pub const MAX_HASHES_PER_REQUEST: u32 = 512;

/// The length prefix of the largest `hashes` message we accept or send: the 49-byte header,
/// [`MAX_HASHES_PER_REQUEST`] hashes and an uncle for each of the 63 layers a tree can have.
pub const MAX_HASHES_MESSAGE_LEN: u32 = 49 + 32 * (MAX_HASHES_PER_REQUEST + 63);

/// The length prefix of the largest `bitfield` message: its id byte and one bit for each of
/// [`MAX_PIECES`] pieces (205 KiB).
pub const MAX_BITFIELD_MESSAGE_LEN: u32 = 1 + MAX_PIECES.div_ceil(8) as u32;

/// The length prefix of a `piece` message carrying a [`MAX_BLOCK_LEN`] block: its id byte,
/// index and offset, then the block.
pub const MAX_PIECE_MESSAGE_LEN: u32 = 9 + MAX_BLOCK_LEN;

/// The longest message accepted on a connection to a torrent whose metadata is known: the
/// larger of a `piece` message and the largest `bitfield`, since both are legitimate. It is
/// lower than [`MAX_MESSAGE_LEN`] to bound what each connection buffers; the decoder still
/// checks a bitfield's exact length against the torrent's own piece count.
pub const MAX_TORRENT_MESSAGE_LEN: u32 = if MAX_BITFIELD_MESSAGE_LEN > MAX_PIECE_MESSAGE_LEN {
    MAX_BITFIELD_MESSAGE_LEN
} else {
    MAX_PIECE_MESSAGE_LEN
};

/// Bytes an incoming connection may send while it moves from the loop that accepted it to the
/// loop that owns its torrent (thread-per-core sharding): its handshake and what a client
/// pipelines behind it (bitfield, extension handshake) take a few KiB, and a bitfield at most
/// one [`MAX_MESSAGE_LEN`] message; twice that is slack, and more is a peer flooding a
/// connection nobody has answered yet.
pub const MAX_HANDOFF_BUFFER: usize = 2 * MAX_MESSAGE_LEN as usize;

/// Most bencode values in one BEP 10 extended handshake. Real ones hold a few dozen (a dozen
/// extensions in `m` plus a handful of keys); without this a 2 MiB payload of tiny values
/// would decode into tens of MiB of tree.
pub const MAX_EXTENDED_HANDSHAKE_VALUES: usize = 4096;

/// The largest info dictionary fetched from peers by magnet link (BEP 9). The whole of it is
/// held in memory while it arrives and is hashed on the event loop once complete, so it must
/// stay well under [`MAX_TORRENT_FILE_LEN`]. 16 MiB holds the piece hashes of 838,000 pieces
/// (more than 800 GiB at 1 MiB pieces, or a 100,000-file tree of a few GiB); libtorrent's
/// `max_metadata_size` defaults to 3 MiB and real torrents rarely pass 1 MiB, so a peer
/// announcing more is lying or the torrent is not worth a magnet.
pub const MAX_METADATA_SIZE: u64 = 16 * 1024 * 1024;

/// Bytes of ordinary messages (bitfield, haves, choke state) a peer may send before we have
/// the metadata to understand them; they are kept and handled once it arrives. A bitfield for
/// the largest torrent is 200 KiB; twice the largest message is slack for haves on top, and
/// more is a peer flooding a connection that cannot be served yet.
pub const MAX_PRE_METADATA_BUFFER: usize = 2 * MAX_MESSAGE_LEN as usize;

/// Most peers taken from (and put in) one `ut_pex` message, added and dropped each. BEP 11
/// asks senders for at most 50 of each, which is also what libtorrent sends; more from a peer
/// is ignored rather than trusted.
pub const MAX_PEX_PEERS: usize = 50;

/// Seconds between our `ut_pex` messages to one peer: BEP 11 says at most one a minute.
pub const PEX_INTERVAL_SECS: u64 = 60;

/// Most peer addresses one torrent remembers (from trackers, the user, magnet links and
/// peer exchange). Each costs about 64 bytes; a torrent connects to at most a few hundred,
/// and 10,000 candidates outlast any swarm's churn, while a flood of PEX messages or tracker
/// replies cannot grow the list without bound.
pub const MAX_KNOWN_PEERS: usize = 10_000;

/// Files held open by storage across the whole process, each costing one descriptor (kept
/// for `pwrite`) and one mapping; past it a file is opened for each access. 4096 stays well
/// under the kernel's default `vm.max_map_count` (65530) and leaves descriptors for sockets
/// once `RLIMIT_NOFILE` is raised, as a seedbox must; libtorrent's default file pool is 40.
pub const MAX_OPEN_FILES: usize = 4096;

/// The largest resume file read. A million files (`MAX_FILES`) take about 40 bytes each
/// (`li<size>ei<mtime ns>ee`) and the bitfield for `MAX_PIECES` 200 KiB, so 64 MiB holds
/// the largest torrent with room; anything larger is damage, not data.
pub const MAX_RESUME_FILE_LEN: usize = 64 * 1024 * 1024;

/// Seconds the `handshake` command waits for a connection and for each reply.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// The largest tracker response read (HTTP headers and body together, or one UDP datagram).
/// A compact announce reply with 200 peers is 1.2 KB and a scrape of 64 torrents 4 KB; 1 MiB
/// leaves room for dictionary-model replies with thousands of peers and bounds what a hostile
/// tracker can make us buffer.
pub const MAX_TRACKER_RESPONSE_LEN: usize = 1024 * 1024;

/// Most peers taken from one announce reply (IPv4 and IPv6 together); the rest are dropped,
/// not an error. We ask for at most `numwant` (200 by default), and the session's own peer
/// list is bounded, so a tracker that sends more gains nothing.
pub const MAX_TRACKER_PEERS: usize = 2000;

/// Most info hashes in one UDP scrape: BEP 15 says about 74 fit, since 16 + 20 * 74 = 1496
/// bytes keeps the request inside a 1500-byte Ethernet frame.
pub const MAX_SCRAPE_HASHES_UDP: usize = 74;

/// Most info hashes in one HTTP scrape: each costs about 70 bytes of URL, and 64 keeps the
/// request line under 8 KiB, the smallest default limit among common HTTP servers.
pub const MAX_SCRAPE_HASHES_HTTP: usize = 64;

/// Longest tracker URL accepted (and longest host name, by DNS's own 253). Announce URLs with
/// passkeys run to a few hundred bytes; anything past 2 KiB is not a tracker.
pub const MAX_TRACKER_URL_LEN: usize = 2048;

/// Longest `failure reason` or `warning message` kept, in bytes; longer text is cut, since it
/// is only shown to a person.
pub const MAX_TRACKER_MESSAGE_LEN: usize = 1024;

/// Longest `tracker id` kept and sent back; real ones are a few dozen bytes.
pub const MAX_TRACKER_ID_LEN: usize = 256;

/// DHT nodes kept from a torrent's `nodes` list (BEP 5): each is pinged when the torrent
/// starts, so a crafted file must not make us ping thousands. Real files list a handful.
pub const MAX_TORRENT_DHT_NODES: usize = 32;

/// Blocks' worth of smart-ban evidence (who sent which block of a failed piece, and its SHA1)
/// one torrent keeps, about 40 bytes each: 2.5 MiB at most. Enough for 16 failed pieces of
/// the largest allowed size at once, or thousands of typical ones; past it the oldest failed
/// piece is forgotten (its senders go unpunished rather than memory growing with an attack).
pub const MAX_SMART_BAN_RECORDS: usize = 1 << 16;

/// Different copies of one block smart ban remembers: one per sender that sent other bytes
/// than the copies already kept. A block refetched more often than this from new senders is
/// under attack from many addresses, which a cap on memory must not follow.
pub const MAX_SMART_BAN_COPIES: usize = 8;

const _: () = assert!(MAX_METADATA_SIZE <= MAX_TORRENT_FILE_LEN as u64);
const _: () = assert!(MAX_PIECE_LEN.is_power_of_two() && MIN_PIECE_LEN.is_power_of_two());
const _: () = assert!(MIN_PIECE_LEN <= MAX_PIECE_LEN);
const _: () = assert!(MAX_BLOCK_LEN as u64 <= MIN_PIECE_LEN * 8);
const _: () = assert!(MAX_BITFIELD_MESSAGE_LEN as u64 == 1 + MAX_PIECES.div_ceil(8));
const _: () = assert!(MAX_BITFIELD_MESSAGE_LEN <= MAX_TORRENT_MESSAGE_LEN);
const _: () = assert!(MAX_PIECE_MESSAGE_LEN <= MAX_TORRENT_MESSAGE_LEN);
const _: () = assert!(MAX_TORRENT_MESSAGE_LEN <= MAX_MESSAGE_LEN);
const _: () = assert!(MAX_HASHES_MESSAGE_LEN <= MAX_TORRENT_MESSAGE_LEN);
const _: () = assert!(MAX_PIECES < u32::MAX as u64);
const _: () = assert!(
    MAX_FILES * BENCODE_VALUES_PER_FILE + BENCODE_VALUES_OUTSIDE_FILES <= MAX_BENCODE_VALUES
);
const _: () = assert!(16 + 20 * MAX_SCRAPE_HASHES_UDP <= 1500);
const _: () = assert!(20 + 18 * MAX_TRACKER_PEERS <= MAX_TRACKER_RESPONSE_LEN);
const _: () = assert!(MAX_SMART_BAN_RECORDS as u64 >= 16 * (MAX_PIECE_LEN / BLOCK_LEN as u64));

/// How much room a driver reading straight into a connection's receive buffer
/// (`Session::recv_buffer`) is given when the buffer has less than [`RECV_MIN_SPARE`] free:
/// enough for one read to take a loopback burst of 16 blocks.
pub const RECV_READ_LEN: usize = 256 * 1024;

/// Below this much free room a receive buffer grows by [`RECV_READ_LEN`] before a read.
pub const RECV_MIN_SPARE: usize = 32 * 1024;

/// Free room a receive buffer holding part of a message may keep once its socket is drained
/// (`Session::recv_drained`); more is given back by copying the part into a buffer of its own
/// size, so a quiet peer holds what it sent plus at most this.
pub const RECV_KEEP_SPARE: usize = 32 * 1024;
