//! Hashing pieces as their blocks are written, so that verifying a downloaded piece does not
//! read it back from the page cache (`perf/2026-12-02-recv-hash-on-arrival.md`).
//!
//! Only torrents judged by SHA1 (v1 and hybrid) hash on arrival: a v2-only torrent's pieces
//! are judged by SHA-256 merkle hashes, read back at verification
//! (`perf/2026-12-03-v2-arrival.md`).
//!
//! Each piece being written may have an [`Arrival`]: a running SHA1 over the piece's first
//! `next` bytes, fed by [`Storage::write_block`](super::Storage::write_block) with the very
//! bytes it has just written, while it holds the piece's stripe lock exclusively. A block
//! written ahead of `next` (the pool runs writes in parallel, so they can finish out of order,
//! and far out of order when a loaded machine preempts one of its threads) is held as a
//! `Bytes` (a reference to the receive buffer, no copy) until the gap before it is written, up
//! to [`MAX_PENDING_PER_PIECE`] per piece and [`MAX_PENDING`] per storage; past that the block
//! is only remembered as written, and when the running hash reaches it, it is read back from
//! the mapping (the write holding the stripe lock keeps it stable).
//!
//! **The verdict is always about the bytes on disk.** The hash covers bytes exactly as they
//! were written, in the order the stripe lock let the writes through, and any write that
//! overlaps bytes already hashed or held (an endgame duplicate, perhaps different bytes from
//! a hostile peer) or that fails part-way drops the piece's state, so verification hashes the
//! whole piece from the mapping. Verification takes the state out under the stripe lock held
//! shared, so no write can land between the state it uses and the bytes it reads after it.
//!
//! Bounded: at most [`MAX_ARRIVALS`] pieces have a state per storage (a piece past that is
//! simply read back), and the state goes when its piece is verified (matched or not), or with
//! the storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::core::{BlockRef, PieceIndex};
use crate::metainfo::Info;

/// Pieces with a running hash per storage. A leecher has a few pieces per peer in flight; a
/// piece without a state is verified by reading it back, as before. About 200 bytes each.
pub(super) const MAX_ARRIVALS: usize = 256;

/// Blocks held out of order per piece (a 512 KiB stretch): the pool's write threads
/// reordering, even with one of them preempted for a while; not a piece whose first block
/// never came (its later blocks are read back when it does).
pub(super) const MAX_PENDING_PER_PIECE: usize = 32;

/// Blocks held out of order per storage. Each holds a reference to a receive buffer (whose
/// allocation holds a few blocks), so this bounds what arrivals can keep alive: 2 MiB of
/// blocks, a few times that in buffers.
pub(super) const MAX_PENDING: usize = 128;

/// One piece's running hash.
#[derive(Debug)]
struct Arrival {
    /// SHA1 over the piece's bytes `[0, next)`, as written.
    hasher: Sha1,
    next: u32,
    /// Blocks written beyond `next`, with the bytes written.
    pending: Vec<(BlockRef, Bytes)>,
    /// Blocks written beyond `next` that could not be held: read back when `next` gets there.
    /// At most one per block of the piece (a second write of a block drops the state).
    skipped: Vec<BlockRef>,
}

/// The running hashes of one storage's pieces.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    pieces: Mutex<HashMap<u32, Arrival>>,
    pending: AtomicUsize,
}

impl Arrivals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arrival>> {
        // A panic while it was held (a bug) leaves at worst a stale state, which the
        // overlap rules still keep honest; verification of that piece may read more.
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `block` was just written with `data` (`owned`: the same bytes as a `Bytes`, when the
    /// caller has them, so a block ahead of the running hash can be held without a copy).
    /// `read_back` feeds a block as stored, `false` if it could not be read. The caller holds
    /// the piece's stripe lock exclusively, which orders this against every other write and
    /// verification of the piece.
    pub(super) fn written(
        &self,
        info: &Info,
        block: BlockRef,
        data: &[u8],
        owned: Option<&Bytes>,
        read_back: impl Fn(&mut Sha1, BlockRef) -> bool,
    ) {
        let piece = block.piece.get();
        // Taken out while it is worked on: the stripe lock keeps this piece's other writes
        // and its verification out, and other pieces need the map only for a moment.
        let (existing, full) = {
            let mut map = self.lock();
            let existing = map.remove(&piece);
            (existing, map.len() >= MAX_ARRIVALS)
        };
        let start = block.offset;
        let end = block.offset + block.len;
        let mut arrival = match existing {
            Some(a)
                if start < a.next
                    || a.pending.iter().any(|(b, _)| overlaps(b, start, end))
                    || a.skipped.iter().any(|b| overlaps(b, start, end)) =>
            {
                // Bytes already hashed or held were overwritten: what the running hash
                // covers may no longer be on disk. Start again only if this block begins
                // a fresh chain.
                self.release(&a);
                if start != 0 || full {
                    return;
                }
                new_arrival()
            }
            Some(a) => a,
            None if full => return,
            None => new_arrival(),
        };
        if start == arrival.next {
            feed(info, &mut arrival.hasher, block, data);
            arrival.next = end;
            loop {
                let next = arrival.next;
                if let Some(i) = arrival.pending.iter().position(|(b, _)| b.offset == next) {
                    let (b, bytes) = arrival.pending.swap_remove(i);
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    feed(info, &mut arrival.hasher, b, &bytes);
                    arrival.next = b.offset + b.len;
                } else if let Some(i) = arrival.skipped.iter().position(|b| b.offset == next) {
                    let b = arrival.skipped.swap_remove(i);
                    if !read_back(&mut arrival.hasher, b) {
                        // Verification will say what is wrong with the piece.
                        self.release(&arrival);
                        return;
                    }
                    arrival.next = b.offset + b.len;
                } else {
                    break;
                }
            }
        } else {
            let held = owned.filter(|_| {
                arrival.pending.len() < MAX_PENDING_PER_PIECE
                    && self
                        .pending
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            (n < MAX_PENDING).then_some(n + 1)
                        })
                        .is_ok()
            });
            match held {
                Some(bytes) => arrival.pending.push((block, bytes.clone())),
                None => arrival.skipped.push(block),
            }
        }
        self.lock().insert(piece, arrival);
    }

    /// A write to `piece` failed, perhaps part-way: forget what was hashed.
    pub(super) fn forget(&self, piece: PieceIndex) {
        if let Some(a) = self.lock().remove(&piece.get()) {
            self.release(&a);
        }
    }

    /// Takes `piece`'s running hash for verification: the hasher and how many of the piece's
    /// first bytes it covers. The caller holds the stripe lock (shared at least) until it has
    /// hashed the rest, so that no write changes the piece in between.
    pub(super) fn take(&self, piece: PieceIndex) -> Option<(Sha1, u32)> {
        let a = self.lock().remove(&piece.get())?;
        self.release(&a);
        Some((a.hasher, a.next))
    }

    /// How many of `piece`'s first bytes its running hash covers (0 without one).
    pub(super) fn covered(&self, piece: PieceIndex) -> u32 {
        self.lock().get(&piece.get()).map_or(0, |a| a.next)
    }

    fn release(&self, a: &Arrival) {
        self.pending.fetch_sub(a.pending.len(), Ordering::Relaxed);
    }
}

fn new_arrival() -> Arrival {
    Arrival {
        hasher: Sha1::new(),
        next: 0,
        pending: Vec::new(),
        skipped: Vec::new(),
    }
}

fn overlaps(b: &BlockRef, start: u32, end: u32) -> bool {
    b.offset < end && start < b.offset + b.len
}

/// Feeds the bytes `block` left on disk: `data`, except zeros where the block lies in a
/// padding file (writes there are ignored, and the piece is hashed over zeros).
fn feed(info: &Info, hasher: &mut Sha1, block: BlockRef, data: &[u8]) {
    let mut at = 0usize;
    for span in info.block_spans(block) {
        let len = span.len as usize;
        if span.padding {
            let mut left = len;
            while left > 0 {
                let n = left.min(super::ZEROS.len());
                hasher.update(&super::ZEROS[..n]);
                left -= n;
            }
        } else {
            hasher.update(&data[at..at + len]);
        }
        at += len;
    }
}
