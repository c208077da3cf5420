//! The piece picker: which blocks to request from which peer, and what became of them.
//!
//! The picker tracks, for one torrent, which pieces we have, which we want (per-piece
//! [`Priority`]), how many connected peers have each piece (availability), and the state of
//! every block of the pieces being downloaded. [`Picker::pick`] chooses blocks for a peer in
//! this order:
//!
//! 1. free blocks of **partial pieces** the peer has (highest priority, then rarest, then
//!    closest to completion first), so pieces finish, get verified and can be traded;
//! 2. **suggested** pieces (BEP 6) the peer has;
//! 3. in [`PickMode::Sequential`], the lowest wanted missing piece first (higher priority
//!    levels before lower);
//! 4. until [`PickerConfig::initial_random_pieces`] pieces are had, **random** pieces, so a
//!    new peer quickly has something to trade;
//! 5. otherwise **rarest first** among the wanted missing pieces, higher priority first, ties
//!    broken at random so that many peers do not converge on one piece;
//! 6. **endgame**: when the peer has no free block left for us, blocks other peers already
//!    requested (never one this peer requested), up to
//!    [`PickerConfig::endgame_max_requesters`] requesters per block; by default
//!    ([`PickerConfig::strict_endgame`]) only once no wanted block is free anywhere.
//!
//! Blocks picked in one call come from as few pieces as possible, in block order, so requests
//! are contiguous and few pieces are partial at once.
//!
//! # Data structures and costs
//!
//! A piece is in one of three states:
//!
//! ```text
//!   fresh --first block picked--> partial --hash passed--> had
//!     ^                             |  |
//!     +--last request dropped, -----+  +--hash failed: back to fresh, its deliverers returned
//!        nothing received
//! ```
//!
//! - A table with one 12-byte entry per piece: peer count, priority, state, and a slot (the
//!   position in its availability bucket when fresh, its index among partials when partial).
//!   With the bucket entry and two bitfields (had, wanted-and-missing) a piece costs about
//!   16 bytes: 16 MB for a million pieces.
//!   Seeds are not counted per piece: they are a single counter added to every piece's
//!   availability, so a seed joining or leaving is O(1).
//! - **Fresh wanted pieces** sit in one set of buckets per priority level (Top, High, Normal):
//!   one vector per availability value. An availability change (`peer_has`) moves a piece from
//!   one bucket to the next with a `swap_remove` and a `push`: O(1). Rarest-first walks the
//!   buckets from the rarest, starting each at a random offset (the random tie-break), and
//!   stops as soon as it has enough blocks: O(pieces examined), which is a handful for a peer
//!   that has most pieces. For a peer that has few pieces the picker instead scans the peer's
//!   bitfield against the wanted-missing bitfield 64 pieces at a time, O(pieces / 64 + the
//!   peer's pieces); it chooses whichever is cheaper from the counts. Skipped and had pieces
//!   are in no bucket, so they cost nothing to skip.
//! - A peer joining with a large bitfield (at least a quarter of the fresh pieces), or a bulk
//!   priority change, only updates counters and marks the buckets stale; the next pick
//!   rebuilds them in O(pieces / 64 + wanted missing pieces), as libtorrent's "dirty" flag does.
//!   Smaller joins and leaves move each piece: O(the peer's pieces).
//! - **Partial pieces** live in a dense vector (a slab without holes: removal swaps the last
//!   one in), each with one 8-byte entry per block, so per-block memory is bounded by the
//!   pieces in flight. Partial pieces that still have free blocks are also listed apart, so
//!   step 1 looks only at those, not at every piece being downloaded. `block_received`,
//!   `request_dropped` and `piece_verified` are O(blocks in the piece) at most, O(1) for the
//!   lookup.
//! - Endgame walks the partial pieces, O(partials x blocks per piece); it runs only when the
//!   peer has nothing free to give.
//!
//! Everything is deterministic given the [`Rng`] passed to `pick`: no hash map is iterated.

mod buckets;
mod partial;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use buckets::Buckets;
use partial::{Arrival, Block, BlockState, Partial};

use crate::core::{Bitfield, BlockRef, Lengths, PeerKey, PieceIndex, Rng};
use crate::limits::BLOCK_LEN;
use crate::metainfo::Info;

/// How much we want a file or a piece. Ordered: `Skip < Normal < High < Top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Not downloaded at all: the user deselected the file.
    Skip,
    /// Downloaded in the usual order.
    #[default]
    Normal,
    /// Downloaded before every `Normal` piece, for files the user wants first.
    High,
    /// Downloaded before every `High` piece: qBittorrent's "maximal", and the first and last
    /// pieces of each wanted file under first/last-piece priority.
    Top,
}

/// The order in which fresh pieces are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PickMode {
    /// Rarest first with random tie-breaks: the best order for the swarm, and the default.
    #[default]
    RarestFirst,
    /// Lowest index first, for streaming a file while it downloads. It hurts the swarm
    /// (everyone asks for the same pieces), so it is a per-torrent opt-in.
    Sequential,
}

/// The picker's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickerConfig {
    /// Pieces to pick at random, ignoring rarity, until this many are had. Default 4,
    /// libtorrent's `initial_picker_threshold`: rare pieces are slow to get (few peers have
    /// them), so a newcomer first grabs whatever is quickest, to have something to trade.
    pub initial_random_pieces: u32,
    /// Most peers that may have requested one block at once in endgame, the first requester
    /// included. Default 2: a second copy from another peer rescues a block stuck on a slow
    /// peer, while each extra requester wastes up to one block of bandwidth. Values below 2
    /// disable endgame duplicates.
    pub endgame_max_requesters: u8,
    /// Whether duplicate (endgame) requests wait for the whole download to be in endgame
    /// ([`Picker::is_endgame`]). Default true, libtorrent's `strict_end_game_mode`: a peer
    /// whose pieces are all being fetched from others gets nothing rather than doubling
    /// their requests. False: any peer with no free block for us may duplicate.
    pub strict_endgame: bool,
}

impl Default for PickerConfig {
    fn default() -> Self {
        PickerConfig {
            initial_random_pieces: 4,
            endgame_max_requesters: 2,
            strict_endgame: true,
        }
    }
}

/// What a peer has. Seeds are `All`, so they cost no per-piece counting: the picker keeps one
/// seed counter instead of touching every piece's availability.
#[derive(Debug, Clone, Copy)]
pub enum PeerPieces<'a> {
    /// The peer has every piece.
    All,
    /// The peer has the pieces in this set.
    Some(&'a Bitfield),
}

impl PeerPieces<'_> {
    /// Whether the peer has `piece`.
    pub fn has(&self, piece: PieceIndex) -> bool {
        self.has_index(piece.get())
    }

    fn has_index(&self, piece: u32) -> bool {
        match self {
            PeerPieces::All => true,
            PeerPieces::Some(bits) => bits.get(piece),
        }
    }
}

/// What a block that arrived was to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReceived {
    /// First copy of a block we wanted. `cancel`: other peers that also requested it
    /// (endgame) and should get a `cancel`.
    New {
        /// Whether every block of the piece has now arrived, so it can be hashed.
        piece_complete: bool,
        /// The other peers that requested this block and should be sent a `cancel`.
        cancel: Vec<PeerKey>,
    },
    /// We already had this block (endgame duplicate or late arrival): wasted bytes.
    Duplicate,
    /// The sender did not ask for it (or its request was dropped, or another peer's request
    /// is outstanding), or the piece is already verified or no longer wanted. The data must
    /// not be written. After a piece is verified its requests are forgotten, so a copy that
    /// was legitimately requested and crossed a `cancel` also lands here: the core's own
    /// per-peer request list tells that case from a misbehaving peer.
    Unrequested,
}

/// The priority of each piece from the priority of each file: a piece takes the highest
/// priority among the non-padding files it overlaps, so a piece shared by a wanted and a
/// skipped file is downloaded. A piece whose files are all skipped (or padding) is `Skip`.
/// Files past the end of `file_priorities` count as `Normal`.
pub fn piece_priorities(info: &Info, file_priorities: &[Priority]) -> Vec<Priority> {
    info.lengths()
        .pieces()
        .map(|piece| {
            info.piece_spans(piece)
                .filter(|span| !span.padding)
                .map(|span| {
                    file_priorities
                        .get(span.file)
                        .copied()
                        .unwrap_or(Priority::Normal)
                })
                .max()
                .unwrap_or(Priority::Skip)
        })
        .collect()
}

/// [`piece_priorities`], with first/last-piece priority when `first_last` is set: the first
/// and the last piece of each wanted (non-padding, non-empty) file are raised to
/// [`Priority::Top`], so a player can read a file's header and index (often at its end)
/// before the rest arrives (qBittorrent's `firstLastPiecePrio`).
pub fn piece_priorities_first_last(
    info: &Info,
    file_priorities: &[Priority],
    first_last: bool,
) -> Vec<Priority> {
    let mut prios = piece_priorities(info, file_priorities);
    if !first_last {
        return prios;
    }
    let piece_len = u64::from(info.lengths().piece_len()).max(1);
    for (i, f) in info.files().iter().enumerate() {
        let wanted = file_priorities.get(i).copied().unwrap_or(Priority::Normal) > Priority::Skip;
        if f.attr.padding || f.length == 0 || !wanted {
            continue;
        }
        let first = (f.offset / piece_len) as usize;
        let last = ((f.offset + f.length - 1) / piece_len) as usize;
        for p in [first, last] {
            if let Some(slot) = prios.get_mut(p) {
                *slot = Priority::Top;
            }
        }
    }
    prios
}

/// Marks "no slot" in the piece table and "not listed" in a partial's `free_pos`.
const NONE: u32 = u32::MAX;

/// Priority levels that are downloaded, each with its own buckets: Top, High, then Normal.
const LEVELS: usize = 3;

/// Block vectors of finished partial pieces kept for reuse, so that starting a piece does not
/// allocate in the steady state. 64 covers the pieces a busy torrent starts between two
/// completions; more would only hold memory.
const SPARE_BLOCK_VECS: usize = 64;

/// A peer bitfield counts as "large" (update counters only and rebuild the buckets at the
/// next pick) from this share of the fresh pieces on: moving that many pieces one by one
/// costs about as much as one rebuild.
const BULK_SHARE_DIVISOR: u32 = 4;

/// Below this many pieces a bitfield is never "large": a rebuild still walks every word of the
/// torrent's bitfield, which is not worth it for a handful of pieces.
const BULK_MIN_PIECES: u32 = 64;

fn level_of(prio: Priority) -> Option<usize> {
    match prio {
        Priority::Top => Some(0),
        Priority::High => Some(1),
        Priority::Normal => Some(2),
        Priority::Skip => None,
    }
}

/// One piece's entry in the piece table.
#[derive(Debug, Clone, Copy)]
struct PieceSlot {
    /// Connected non-seed peers that have the piece (seeds are counted once, globally).
    count: u32,
    /// The piece's position in its bucket when fresh and wanted, its index in `partials`
    /// when partial; meaningless otherwise.
    slot: u32,
    prio: Priority,
    partial: bool,
}

/// The piece picker of one torrent. See the module documentation for the rules and costs.
#[derive(Debug, Clone)]
pub struct Picker {
    lengths: Lengths,
    config: PickerConfig,
    mode: PickMode,
    blocks_per_piece: u32,
    blocks_in_last: u32,
    pieces: Vec<PieceSlot>,
    /// Pieces that passed their hash check.
    have: Bitfield,
    /// Pieces wanted (priority above Skip) and not had: the interest test runs on its words.
    want_missing: Bitfield,
    /// Fresh wanted pieces by priority level and availability; stale while `dirty`.
    levels: [Buckets; LEVELS],
    /// Whether `levels` must be rebuilt before use.
    dirty: bool,
    /// Fresh wanted pieces (those in `levels`, or due to be after a rebuild).
    fresh: u32,
    /// Pieces with per-block state, densely packed.
    partials: Vec<Partial>,
    /// Partial pieces (by piece index) that have at least one free block.
    with_free: Vec<u32>,
    seeds: u32,
    bytes_left: u64,
    /// Per level: no piece below this index is both of that level and not had.
    cursors: [u32; LEVELS],
    spare: Vec<Vec<Block>>,
    /// Reused buffers, so that `pick` does not allocate in the steady state.
    scratch: Vec<u32>,
    keyed: Vec<(u64, u32)>,
}

impl Picker {
    /// A picker for a torrent of `lengths`, with the pieces in `have` already verified and
    /// every piece `Normal`. O(pieces / 64 + pieces had); the buckets are built at the first
    /// pick.
    pub fn new(lengths: Lengths, have: &Bitfield, config: PickerConfig) -> Picker {
        let n = lengths.piece_count();
        debug_assert_eq!(have.len(), n);
        let mut own = Bitfield::new(n);
        let mut want_missing = Bitfield::full(n);
        let mut bytes_left = lengths.total_len();
        let last_len = u64::from(lengths.last_piece_len());
        for p in have.ones().take_while(|&p| p < n) {
            own.set(p);
            want_missing.clear(p);
            bytes_left -= if p + 1 == n {
                last_len
            } else {
                u64::from(lengths.piece_len())
            };
        }
        let blocks_per_piece = lengths.piece_len().div_ceil(BLOCK_LEN);
        let blocks_in_last = lengths.last_piece_len().div_ceil(BLOCK_LEN);
        Picker {
            lengths,
            config,
            mode: PickMode::default(),
            blocks_per_piece,
            blocks_in_last,
            pieces: vec![
                PieceSlot {
                    count: 0,
                    slot: NONE,
                    prio: Priority::Normal,
                    partial: false,
                };
                n as usize
            ],
            fresh: n - own.count(),
            have: own,
            want_missing,
            levels: Default::default(),
            dirty: true,
            partials: Vec::new(),
            with_free: Vec::new(),
            seeds: 0,
            bytes_left,
            cursors: [0; LEVELS],
            spare: Vec::new(),
            scratch: Vec::new(),
            keyed: Vec::new(),
        }
    }

    /// Sets every piece's priority (from [`piece_priorities`]). A piece being downloaded keeps
    /// its blocks when skipped, so nothing is lost if it is wanted again; it is no longer
    /// picked and its late blocks are reported `Unrequested`. O(pieces); the buckets are
    /// rebuilt at the next pick.
    pub fn set_piece_priorities(&mut self, priorities: &[Priority]) {
        debug_assert_eq!(priorities.len(), self.pieces.len());
        // A bulk change: re-sort once at the next pick rather than moving piece by piece.
        self.dirty = true;
        for (p, &prio) in priorities.iter().enumerate().take(self.pieces.len()) {
            self.set_priority_of(p as u32, prio);
        }
        self.cursors = [0; LEVELS];
    }

    /// Sets one piece's priority, in O(1): for a user raising one piece (a streaming player's
    /// next piece) without recomputing them all.
    pub fn set_piece_priority(&mut self, piece: PieceIndex, priority: Priority) {
        if piece.get() < self.piece_count() {
            self.set_priority_of(piece.get(), priority);
            self.cursors = [0; LEVELS];
        }
    }

    /// The priority of `piece` (`Skip` for an index outside the torrent).
    pub fn piece_priority(&self, piece: PieceIndex) -> Priority {
        self.pieces
            .get(piece.as_usize())
            .map_or(Priority::Skip, |s| s.prio)
    }

    /// Chooses the order fresh pieces are started in; partial pieces always come first.
    pub fn set_mode(&mut self, mode: PickMode) {
        self.mode = mode;
    }

    /// The order fresh pieces are started in.
    pub fn mode(&self) -> PickMode {
        self.mode
    }

    /// Counts a connected peer's pieces into availability: O(1) for a seed, O(its pieces)
    /// otherwise. The core must later call [`Picker::peer_left`] with the same pieces (its
    /// bitfield updated by every [`Picker::peer_has`] since).
    pub fn peer_joined(&mut self, has: PeerPieces<'_>) {
        match has {
            PeerPieces::All => self.seeds = self.seeds.saturating_add(1),
            PeerPieces::Some(bits) => self.count_bitfield(bits, true),
        }
    }

    /// Takes a disconnected peer's pieces out of availability. Counts saturate at zero, so an
    /// inconsistent caller skews availability but cannot break the picker.
    pub fn peer_left(&mut self, has: PeerPieces<'_>) {
        match has {
            PeerPieces::All => self.seeds = self.seeds.saturating_sub(1),
            PeerPieces::Some(bits) => self.count_bitfield(bits, false),
        }
    }

    /// Counts a `have` message: one more peer has `piece`. O(1).
    pub fn peer_has(&mut self, piece: PieceIndex) {
        if let Some(s) = self.pieces.get(piece.as_usize()) {
            let count = s.count.saturating_add(1);
            self.set_count(piece.get(), count);
        }
    }

    /// How many connected peers (seeds included) have `piece`.
    pub fn availability(&self, piece: PieceIndex) -> u32 {
        self.pieces
            .get(piece.as_usize())
            .map_or(0, |s| s.count.saturating_add(self.seeds))
    }

    /// Picks up to `max_blocks` blocks for `peer` and marks them requested by it. `restrict`:
    /// when Some, only these pieces may be picked (allowed-fast pieces while the peer chokes
    /// us). `suggested`: pieces the peer suggested (BEP 6), preferred after partial pieces.
    /// Appends to `out`. See the module documentation for the order and the costs; `restrict`
    /// and `suggested` add O(their length) per candidate considered, so keep them short (the
    /// core bounds both).
    #[allow(clippy::too_many_arguments)]
    pub fn pick(
        &mut self,
        peer: PeerKey,
        has: PeerPieces<'_>,
        max_blocks: usize,
        restrict: Option<&[PieceIndex]>,
        suggested: &[PieceIndex],
        rng: &mut Rng,
        out: &mut Vec<BlockRef>,
    ) {
        if max_blocks == 0 || self.want_missing.is_none() {
            return;
        }
        if self.dirty {
            self.rebuild();
        }
        let mut left = self.pick_partials(peer, has, restrict, max_blocks, out);
        for s in suggested {
            if left == 0 {
                return;
            }
            let p = s.get();
            if self.is_fresh_wanted(p) && has.has_index(p) && allowed(restrict, p) {
                left = self.start_and_take(p, peer, left, out);
            }
        }
        if left == 0 {
            return;
        }
        let mut sel = std::mem::take(&mut self.scratch);
        sel.clear();
        match restrict {
            Some(pieces) => self.select_restricted(pieces, has, left, rng, &mut sel),
            None if self.mode == PickMode::Sequential => {
                self.select_sequential(has, left, &mut sel)
            }
            None => {
                let random = self.have.count() < self.config.initial_random_pieces;
                match has {
                    PeerPieces::Some(bits) if self.sparse_is_cheaper(bits) => {
                        self.select_sparse(bits, random, left, rng, &mut sel);
                    }
                    _ if random => self.select_random(has, left, rng, &mut sel),
                    _ => self.select_rarest(has, left, rng, &mut sel),
                }
            }
        }
        for &p in &sel {
            if left == 0 {
                break;
            }
            left = self.start_and_take(p, peer, left, out);
        }
        self.scratch = sel;
        // In strict mode, duplicate requests only in endgame proper, when no wanted block
        // anywhere is free: before that a peer with nothing free for us waits, as in
        // libtorrent, instead of doubling other peers' requests and wasting their bandwidth.
        if left > 0 && (!self.config.strict_endgame || self.is_endgame()) {
            self.pick_busy(peer, has, restrict, left, rng, out);
        }
    }

    /// Forgets `peer`'s request for `block` (choked, rejected, timed out, disconnected). The
    /// block is free again unless other peers still requested it. A block the peer never
    /// requested changes nothing.
    pub fn request_dropped(&mut self, peer: PeerKey, block: BlockRef) {
        let Some((p, b)) = self.block_index(block) else {
            return;
        };
        let Some(idx) = self.partial_of(p) else {
            return;
        };
        self.drop_request_at(idx, b, peer);
    }

    /// Records that `peer` delivered `block`, remembering the peer so a failed hash check can
    /// name it. See [`BlockReceived`] for the outcomes.
    pub fn block_received(&mut self, peer: PeerKey, block: BlockRef) -> BlockReceived {
        let Some((p, b)) = self.block_index(block) else {
            return BlockReceived::Unrequested;
        };
        let Some(idx) = self.partial_of(p) else {
            return BlockReceived::Unrequested;
        };
        if self.pieces[p as usize].prio == Priority::Skip {
            // The files were deselected while the request was out: the data must not be
            // written, and the request is over.
            self.drop_request_at(idx, b, peer);
            return BlockReceived::Unrequested;
        }
        let part = &mut self.partials[idx];
        match part.receive(b, peer) {
            Arrival::New(cancel) => BlockReceived::New {
                piece_complete: part.is_complete(),
                cancel,
            },
            Arrival::Duplicate => BlockReceived::Duplicate,
            Arrival::Unrequested => BlockReceived::Unrequested,
        }
    }

    /// The piece's hash was checked. Ok: it becomes had. Failed: every block is free again,
    /// and the peers that delivered its blocks are returned (sorted, deduplicated) so the core
    /// can ban a lone sender. Ok, or a piece that is had or has no blocks, returns nothing.
    /// Also the way to mark pieces found on disk at start-up: `piece_verified(p, true)`.
    pub fn piece_verified(&mut self, piece: PieceIndex, ok: bool) -> Vec<PeerKey> {
        let p = piece.get();
        if p >= self.piece_count() || self.have.get(p) {
            return Vec::new();
        }
        let partial = self.partial_of(p);
        if !ok {
            let Some(idx) = partial else {
                return Vec::new();
            };
            let peers = self.partials[idx].deliverers();
            self.retire_partial(idx);
            return peers;
        }
        match partial {
            Some(idx) => self.remove_partial(idx),
            None => self.remove_fresh(p),
        }
        self.have.set(p);
        if self.want_missing.clear(p) {
            self.bytes_left -= u64::from(self.piece_len(p));
        }
        Vec::new()
    }

    /// Who delivered each block of `piece`, in block order (`None` for a block not received);
    /// empty when the piece is not partial. Smart ban's record of a piece that failed.
    pub fn block_deliverers(&self, piece: PieceIndex) -> Vec<Option<PeerKey>> {
        self.partial_of(piece.get()).map_or_else(Vec::new, |idx| {
            self.partials[idx]
                .blocks
                .iter()
                .map(|b| (b.state == BlockState::Received).then_some(b.peer))
                .collect()
        })
    }

    /// The peers that delivered blocks of `piece` so far (sorted, deduplicated); empty when
    /// the piece is not partial. For crediting or blaming peers without verifying.
    pub fn contributors(&self, piece: PieceIndex) -> Vec<PeerKey> {
        self.partial_of(piece.get())
            .map_or_else(Vec::new, |idx| self.partials[idx].deliverers())
    }

    /// The pieces we have (verified).
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether we want `piece` at all (priority above `Skip`), had or not.
    pub fn is_wanted(&self, piece: PieceIndex) -> bool {
        self.piece_priority(piece) > Priority::Skip
    }

    /// Whether a peer with these pieces has a wanted piece we lack: whether to be interested.
    /// O(1) for a seed, O(pieces / 64) at worst otherwise.
    pub fn is_interesting(&self, has: PeerPieces<'_>) -> bool {
        match has {
            PeerPieces::All => !self.want_missing.is_none(),
            PeerPieces::Some(bits) => bits
                .words()
                .iter()
                .zip(self.want_missing.words())
                .any(|(a, b)| a & b != 0),
        }
    }

    /// Whether `piece` is wanted and not had: whether a peer's `have` for it makes the peer
    /// interesting. O(1), for per-peer interest counters.
    pub fn is_piece_interesting(&self, piece: PieceIndex) -> bool {
        self.want_missing.get(piece.get())
    }

    /// Whether every wanted piece is had (the download is finished; we may still not be a
    /// seed if some files are skipped).
    pub fn is_complete(&self) -> bool {
        self.want_missing.is_none()
    }

    /// Whether every piece is had.
    pub fn is_seed(&self) -> bool {
        self.have.is_full()
    }

    /// Whether the download is in endgame: not complete, and no wanted missing block is free
    /// (every one is requested or received). False once complete.
    pub fn is_endgame(&self) -> bool {
        !self.is_complete()
            && self.fresh == 0
            && self
                .with_free
                .iter()
                .all(|&p| self.pieces[p as usize].prio == Priority::Skip)
    }

    /// Wanted bytes not yet verified: what the tracker's `left` reports.
    pub fn bytes_left(&self) -> u64 {
        self.bytes_left
    }

    /// How many pieces have per-block state (being downloaded, or received and awaiting
    /// their hash check): for statistics and tests.
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    // ---- internals ----

    fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    fn piece_len(&self, p: u32) -> u32 {
        if p + 1 == self.piece_count() {
            self.lengths.last_piece_len()
        } else {
            self.lengths.piece_len()
        }
    }

    fn blocks_in(&self, p: u32) -> u32 {
        if p + 1 == self.piece_count() {
            self.blocks_in_last
        } else {
            self.blocks_per_piece
        }
    }

    /// The piece and block number of `block`, if it is exactly one of the piece's 16 KiB
    /// blocks: a `reject` or `piece` at an odd offset or length matches nothing we requested.
    fn block_index(&self, block: BlockRef) -> Option<(u32, u32)> {
        let p = block.piece.get();
        if p >= self.piece_count() || block.offset % BLOCK_LEN != 0 {
            return None;
        }
        let b = block.offset / BLOCK_LEN;
        let expected = self.lengths.block(block.piece, b)?;
        (expected.len == block.len).then_some((p, b))
    }

    fn block_ref(&self, p: u32, b: u32) -> Option<BlockRef> {
        self.lengths
            .piece(p)
            .and_then(|piece| self.lengths.block(piece, b))
    }

    fn partial_of(&self, p: u32) -> Option<usize> {
        let s = self.pieces.get(p as usize)?;
        s.partial.then_some(s.slot as usize)
    }

    fn is_fresh_wanted(&self, p: u32) -> bool {
        self.pieces
            .get(p as usize)
            .is_some_and(|s| !s.partial && s.prio > Priority::Skip && !self.have.get(p))
    }

    /// Adds (`up`) or removes a peer's pieces from the counts. A large bitfield marks the
    /// buckets stale and only touches the counters (about a nanosecond a piece); a small one
    /// moves each piece between buckets.
    fn count_bitfield(&mut self, bits: &Bitfield, up: bool) {
        if bits.count() >= BULK_MIN_PIECES && bits.count() >= self.fresh / BULK_SHARE_DIVISOR {
            self.dirty = true;
        }
        for (i, &word) in bits.words().iter().enumerate() {
            let mut x = word;
            while x != 0 {
                let bit = x.leading_zeros();
                x &= !(1u64 << (63 - bit));
                let p = i * 64 + bit as usize;
                // A bitfield longer than the torrent: the rest lies past the end too.
                let Some(slot) = self.pieces.get_mut(p) else {
                    return;
                };
                let count = if up {
                    slot.count.saturating_add(1)
                } else {
                    slot.count.saturating_sub(1)
                };
                if self.dirty {
                    slot.count = count;
                } else {
                    self.set_count(p as u32, count);
                }
            }
        }
    }

    /// Rebuilds the buckets from the piece table: O(pieces / 64 + wanted missing pieces).
    fn rebuild(&mut self) {
        for level in &mut self.levels {
            level.clear();
        }
        for p in self.want_missing.ones() {
            let s = &mut self.pieces[p as usize];
            if let (false, Some(l)) = (s.partial, level_of(s.prio)) {
                s.slot = self.levels[l].insert(p, s.count);
            }
        }
        self.levels.iter_mut().for_each(Buckets::finish_rebuild);
        self.dirty = false;
    }

    /// Puts a fresh (not had, not partial) piece into its bucket, if it is wanted.
    fn insert_fresh(&mut self, p: u32) {
        let s = self.pieces[p as usize];
        if let Some(l) = level_of(s.prio) {
            self.fresh += 1;
            if !self.dirty {
                self.pieces[p as usize].slot = self.levels[l].insert(p, s.count);
            }
        }
    }

    /// Takes a fresh piece out of its bucket, if it is wanted.
    fn remove_fresh(&mut self, p: u32) {
        let s = self.pieces[p as usize];
        if let Some(l) = level_of(s.prio) {
            self.fresh = self.fresh.saturating_sub(1);
            if !self.dirty {
                if let Some(moved) = self.levels[l].remove(s.count, s.slot) {
                    self.pieces[moved as usize].slot = s.slot;
                }
            }
        }
    }

    fn set_count(&mut self, p: u32, count: u32) {
        let s = self.pieces[p as usize];
        if s.count == count {
            return;
        }
        let bucketed = !s.partial && !self.have.get(p);
        if bucketed {
            self.remove_fresh(p);
        }
        self.pieces[p as usize].count = count;
        if bucketed {
            self.insert_fresh(p);
        }
    }

    fn set_priority_of(&mut self, p: u32, prio: Priority) {
        let s = self.pieces[p as usize];
        if s.prio == prio {
            return;
        }
        let had = self.have.get(p);
        let bucketed = !s.partial && !had;
        if bucketed {
            self.remove_fresh(p);
        }
        self.pieces[p as usize].prio = prio;
        if bucketed {
            self.insert_fresh(p);
        }
        if !had {
            let len = u64::from(self.piece_len(p));
            match (s.prio > Priority::Skip, prio > Priority::Skip) {
                (false, true) => {
                    self.want_missing.set(p);
                    self.bytes_left += len;
                }
                (true, false) => {
                    self.want_missing.clear(p);
                    self.bytes_left -= len;
                }
                _ => {}
            }
        }
    }

    fn list_with_free(&mut self, idx: usize) {
        let part = &mut self.partials[idx];
        if part.free_pos == NONE {
            part.free_pos = self.with_free.len() as u32;
            self.with_free.push(part.piece);
        }
    }

    fn unlist_with_free(&mut self, idx: usize) {
        let pos = self.partials[idx].free_pos;
        if pos == NONE {
            return;
        }
        self.partials[idx].free_pos = NONE;
        self.with_free.swap_remove(pos as usize);
        if let Some(&moved) = self.with_free.get(pos as usize) {
            let moved_idx = self.pieces[moved as usize].slot as usize;
            self.partials[moved_idx].free_pos = pos;
        }
    }

    /// Turns fresh piece `p` into a partial one with every block free; returns its index.
    fn start_partial(&mut self, p: u32) -> usize {
        self.remove_fresh(p);
        let blocks = self.spare.pop().unwrap_or_default();
        let idx = self.partials.len();
        self.partials
            .push(Partial::new(p, self.blocks_in(p), blocks));
        let s = &mut self.pieces[p as usize];
        s.partial = true;
        s.slot = idx as u32;
        self.list_with_free(idx);
        idx
    }

    /// Drops a partial piece's block state (it was verified, or is going back to fresh).
    fn remove_partial(&mut self, idx: usize) {
        self.unlist_with_free(idx);
        let part = self.partials.swap_remove(idx);
        if let Some(moved) = self.partials.get(idx) {
            self.pieces[moved.piece as usize].slot = idx as u32;
        }
        let s = &mut self.pieces[part.piece as usize];
        s.partial = false;
        s.slot = NONE;
        if self.spare.len() < SPARE_BLOCK_VECS {
            self.spare.push(part.blocks);
        }
    }

    /// Drops a partial piece's block state and makes it fresh again (every block free).
    fn retire_partial(&mut self, idx: usize) {
        let p = self.partials[idx].piece;
        self.remove_partial(idx);
        if !self.have.get(p) {
            self.insert_fresh(p);
        }
    }

    fn drop_request_at(&mut self, idx: usize, b: u32, peer: PeerKey) {
        let part = &mut self.partials[idx];
        if !part.drop_request(b, peer) {
            return;
        }
        if part.progress() == 0 {
            // Nothing requested or received any more: per-block state is no longer needed.
            self.retire_partial(idx);
        } else {
            self.list_with_free(idx);
        }
    }

    /// Requests up to `left` free blocks of partial piece `idx` from `peer`, in block order.
    fn take_free(
        &mut self,
        idx: usize,
        peer: PeerKey,
        mut left: usize,
        out: &mut Vec<BlockRef>,
    ) -> usize {
        let lengths = self.lengths;
        let part = &mut self.partials[idx];
        let Some(piece) = lengths.piece(part.piece) else {
            return left;
        };
        for b in 0..part.blocks.len() as u32 {
            if left == 0 || part.free == 0 {
                break;
            }
            if part.blocks[b as usize].state != BlockState::Free {
                continue;
            }
            if let Some(block) = lengths.block(piece, b) {
                part.request(b, peer);
                out.push(block);
                left -= 1;
            }
        }
        if part.free == 0 {
            self.unlist_with_free(idx);
        }
        left
    }

    fn start_and_take(
        &mut self,
        p: u32,
        peer: PeerKey,
        left: usize,
        out: &mut Vec<BlockRef>,
    ) -> usize {
        let idx = self.start_partial(p);
        self.take_free(idx, peer, left, out)
    }

    /// Step 1: free blocks of partial pieces the peer has.
    fn pick_partials(
        &mut self,
        peer: PeerKey,
        has: PeerPieces<'_>,
        restrict: Option<&[PieceIndex]>,
        mut left: usize,
        out: &mut Vec<BlockRef>,
    ) -> usize {
        if self.with_free.is_empty() {
            return left;
        }
        let mut keyed = std::mem::take(&mut self.keyed);
        keyed.clear();
        for &p in &self.with_free {
            let s = self.pieces[p as usize];
            let Some(level) = level_of(s.prio) else {
                continue;
            };
            if !has.has_index(p) || !allowed(restrict, p) {
                continue;
            }
            let mut key = (level as u64) << 62;
            if self.mode == PickMode::RarestFirst {
                // Rarest first among partials too, then the one closest to completion;
                // sequential mode leaves the tie to the piece index.
                let progress = u64::from(self.partials[s.slot as usize].progress().min(0xFFFF));
                key |= u64::from(s.count.min(COUNT_KEY_MAX)) << 16 | (0xFFFF - progress);
            }
            keyed.push((key, p));
        }
        keyed.sort_unstable();
        for &(_, p) in &keyed {
            if left == 0 {
                break;
            }
            let idx = self.pieces[p as usize].slot as usize;
            left = self.take_free(idx, peer, left, out);
        }
        self.keyed = keyed;
        left
    }

    /// Whether scanning the peer's bitfield word by word beats walking the buckets. Walking
    /// examines about `fresh / peer's pieces` pieces per hit (one random bit lookup each);
    /// the scan costs a pass over the words plus one entry per piece of the peer. Word
    /// operations are cheaper than lookups, hence the factor of 2.
    fn sparse_is_cheaper(&self, bits: &Bitfield) -> bool {
        let peer = u64::from(bits.count()).max(1);
        let scan = self.want_missing.words().len() as u64 + peer;
        u64::from(self.fresh) * 2 > scan * peer
    }

    /// Steps 4 and 5 for a peer with few pieces: its fresh wanted pieces, in priority order,
    /// then (unless `random`) rarest first, ties broken by a random key.
    fn select_sparse(
        &mut self,
        bits: &Bitfield,
        random: bool,
        need: usize,
        rng: &mut Rng,
        sel: &mut Vec<u32>,
    ) {
        let mut keyed = std::mem::take(&mut self.keyed);
        keyed.clear();
        for (i, (&w, &m)) in bits
            .words()
            .iter()
            .zip(self.want_missing.words())
            .enumerate()
        {
            let mut x = w & m;
            while x != 0 {
                let bit = x.leading_zeros();
                x &= !(1u64 << (63 - bit));
                let p = i as u32 * 64 + bit;
                let s = self.pieces[p as usize];
                let Some(level) = level_of(s.prio) else {
                    continue;
                };
                if s.partial {
                    continue;
                }
                let count = if random {
                    0
                } else {
                    u64::from(s.count.min(COUNT_KEY_MAX))
                };
                let key = (level as u64) << 62 | count << 32 | (rng.next_u64() >> 32);
                keyed.push((key, p));
            }
        }
        keyed.sort_unstable();
        self.take_selection(&keyed, need, sel);
        self.keyed = keyed;
    }

    /// Step 5: walks the buckets rarest first, each from a random offset.
    fn select_rarest(&self, has: PeerPieces<'_>, need: usize, rng: &mut Rng, sel: &mut Vec<u32>) {
        let mut blocks = 0usize;
        for level in &self.levels {
            for bucket in level.buckets() {
                if bucket.is_empty() {
                    continue;
                }
                let (before, after) = bucket.split_at(rng.index(bucket.len()));
                for &p in after.iter().chain(before) {
                    if has.has_index(p) {
                        sel.push(p);
                        blocks += self.blocks_in(p) as usize;
                        if blocks >= need {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Step 4: a uniformly random start within each level, whatever the availability.
    fn select_random(&self, has: PeerPieces<'_>, need: usize, rng: &mut Rng, sel: &mut Vec<u32>) {
        let mut blocks = 0usize;
        for level in &self.levels {
            if level.len() == 0 {
                continue;
            }
            for slice in level.slices_from(rng.index(level.len())) {
                for &p in slice {
                    if has.has_index(p) {
                        sel.push(p);
                        blocks += self.blocks_in(p) as usize;
                        if blocks >= need {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Step 3: the lowest-indexed fresh pieces, level by level, scanning the wanted-missing
    /// words from each level's cursor.
    fn select_sequential(&mut self, has: PeerPieces<'_>, need: usize, sel: &mut Vec<u32>) {
        let n = self.piece_count();
        let mut blocks = 0usize;
        for level in 0..LEVELS {
            if self.levels[level].len() == 0 {
                continue;
            }
            let mut c = self.cursors[level];
            while c < n
                && (self.have.get(c) || level_of(self.pieces[c as usize].prio) != Some(level))
            {
                c += 1;
            }
            self.cursors[level] = c;
            let words = self.want_missing.words();
            let first = (c / 64) as usize;
            for (i, &word) in words.iter().enumerate().skip(first) {
                let peer_word = match has {
                    PeerPieces::All => u64::MAX,
                    PeerPieces::Some(bits) => bits.words().get(i).copied().unwrap_or(0),
                };
                let mut x = word & peer_word;
                if i == first {
                    // Drop the bits of pieces below the cursor.
                    x &= u64::MAX >> (c % 64);
                }
                while x != 0 {
                    let bit = x.leading_zeros();
                    x &= !(1u64 << (63 - bit));
                    let p = i as u32 * 64 + bit;
                    let s = self.pieces[p as usize];
                    if s.partial || level_of(s.prio) != Some(level) {
                        continue;
                    }
                    sel.push(p);
                    blocks += self.blocks_in(p) as usize;
                    if blocks >= need {
                        return;
                    }
                }
            }
        }
    }

    /// Steps 3 to 5 when only `restrict`'s pieces may be picked: a short list, so it is
    /// simply sorted.
    fn select_restricted(
        &mut self,
        restrict: &[PieceIndex],
        has: PeerPieces<'_>,
        need: usize,
        rng: &mut Rng,
        sel: &mut Vec<u32>,
    ) {
        let mut keyed = std::mem::take(&mut self.keyed);
        keyed.clear();
        for piece in restrict {
            let p = piece.get();
            if !self.is_fresh_wanted(p) || !has.has_index(p) || keyed.iter().any(|&(_, q)| q == p) {
                continue;
            }
            let s = self.pieces[p as usize];
            let level = level_of(s.prio).unwrap_or(LEVELS) as u64;
            let key = match self.mode {
                PickMode::Sequential => level << 62 | u64::from(p),
                PickMode::RarestFirst => {
                    level << 62
                        | u64::from(s.count.min(COUNT_KEY_MAX)) << 32
                        | (rng.next_u64() >> 32)
                }
            };
            keyed.push((key, p));
        }
        keyed.sort_unstable();
        self.take_selection(&keyed, need, sel);
        self.keyed = keyed;
    }

    fn take_selection(&self, keyed: &[(u64, u32)], need: usize, sel: &mut Vec<u32>) {
        let mut blocks = 0usize;
        for &(_, p) in keyed {
            if blocks >= need {
                break;
            }
            sel.push(p);
            blocks += self.blocks_in(p) as usize;
        }
    }

    /// Step 6, endgame: blocks other peers requested and this one did not, fewest requesters
    /// first, from partial pieces visited in a random rotation.
    fn pick_busy(
        &mut self,
        peer: PeerKey,
        has: PeerPieces<'_>,
        restrict: Option<&[PieceIndex]>,
        mut left: usize,
        rng: &mut Rng,
        out: &mut Vec<BlockRef>,
    ) {
        let cap = self.config.endgame_max_requesters;
        let count = self.partials.len();
        if cap < 2 || count == 0 {
            return;
        }
        let start = rng.index(count);
        for requesters in 1..cap {
            for k in 0..count {
                let idx = (start + k) % count;
                let part = &self.partials[idx];
                let p = part.piece;
                if part.requested == 0
                    || self.pieces[p as usize].prio == Priority::Skip
                    || !has.has_index(p)
                    || !allowed(restrict, p)
                {
                    continue;
                }
                for b in 0..part.blocks.len() as u32 {
                    let part = &self.partials[idx];
                    let block = part.blocks[b as usize];
                    if block.state != BlockState::Requested
                        || block.requesters != requesters
                        || part.is_requester(b, peer)
                    {
                        continue;
                    }
                    if let Some(r) = self.block_ref(p, b) {
                        self.partials[idx].add_requester(b, peer);
                        out.push(r);
                        left -= 1;
                        if left == 0 {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Checks every internal invariant; panics with a description when one is broken.
    #[cfg(test)]
    fn check_invariants(&self) {
        let n = self.piece_count();
        let mut fresh = 0;
        let mut bytes_left = 0u64;
        for p in 0..n {
            let s = self.pieces[p as usize];
            let had = self.have.get(p);
            let wanted = s.prio > Priority::Skip;
            assert_eq!(
                self.want_missing.get(p),
                wanted && !had,
                "want_missing of {p}"
            );
            if wanted && !had {
                bytes_left += u64::from(self.piece_len(p));
            }
            assert!(!(had && s.partial), "piece {p} had and partial");
            if s.partial {
                assert_eq!(
                    self.partials[s.slot as usize].piece, p,
                    "partial slot of {p}"
                );
            } else if wanted && !had {
                fresh += 1;
                if !self.dirty {
                    let l = level_of(s.prio).unwrap();
                    let bucket = &self.levels[l].buckets()[s.count as usize];
                    assert_eq!(bucket[s.slot as usize], p, "bucket slot of {p}");
                }
            }
        }
        assert_eq!(self.fresh, fresh, "fresh count");
        assert_eq!(self.bytes_left, bytes_left, "bytes left");
        if !self.dirty {
            let bucketed: usize = self.levels.iter().map(Buckets::len).sum();
            assert_eq!(bucketed, fresh as usize, "pieces in buckets");
            for level in &self.levels {
                let total: usize = level.buckets().iter().map(Vec::len).sum();
                assert_eq!(total, level.len());
            }
        }
        let mut listed = 0;
        for (idx, part) in self.partials.iter().enumerate() {
            let s = self.pieces[part.piece as usize];
            assert!(
                s.partial && s.slot as usize == idx,
                "partial {idx} back-link"
            );
            assert_eq!(part.blocks.len() as u32, self.blocks_in(part.piece));
            let mut counts = [0u32; 3];
            for (b, block) in part.blocks.iter().enumerate() {
                let extras: Vec<PeerKey> = part
                    .extra
                    .iter()
                    .filter(|&&(x, _)| x as usize == b)
                    .map(|&(_, q)| q)
                    .collect();
                match block.state {
                    BlockState::Free => counts[0] += 1,
                    BlockState::Requested => {
                        counts[1] += 1;
                        assert_eq!(usize::from(block.requesters), 1 + extras.len());
                        let mut all = extras.clone();
                        all.push(block.peer);
                        all.sort_unstable();
                        all.dedup();
                        assert_eq!(all.len(), 1 + extras.len(), "a peer requested twice");
                    }
                    BlockState::Received => counts[2] += 1,
                }
                if block.state != BlockState::Requested {
                    assert!(
                        extras.is_empty(),
                        "extra requesters of a block not requested"
                    );
                }
            }
            assert_eq!(
                counts,
                [part.free, part.requested, part.received],
                "block counters"
            );
            assert!(
                part.progress() > 0,
                "partial piece with nothing in flight or received"
            );
            if part.free > 0 {
                listed += 1;
                assert_eq!(self.with_free[part.free_pos as usize], part.piece);
            } else {
                assert_eq!(part.free_pos, NONE);
            }
        }
        assert_eq!(listed, self.with_free.len(), "with_free size");
    }
}

/// Keys sort by availability in 30 bits (more peers than a billion is not a real torrent).
const COUNT_KEY_MAX: u32 = (1 << 30) - 1;

fn allowed(restrict: Option<&[PieceIndex]>, p: u32) -> bool {
    restrict.is_none_or(|r| r.iter().any(|x| x.get() == p))
}
