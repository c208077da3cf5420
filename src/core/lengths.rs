//! Piece and block arithmetic for one torrent, and the validated index types built from it.
//!
//! A [`PieceIndex`] or [`BlockRef`] can only be obtained from [`Lengths`], which checks it
//! against the torrent; functions that take them need not (and do not) check again. That is
//! what keeps a hostile `have 4294967295` or `request` at a bogus offset from ever reaching
//! the arithmetic below.

use crate::limits::{BLOCK_LEN, MAX_PIECES, MAX_PIECE_LEN, MAX_TORRENT_LEN, MIN_PIECE_LEN};

/// A piece index known to exist in the torrent whose [`Lengths`] made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceIndex(u32);

impl PieceIndex {
    /// The index as a number, for the wire and for array indexing.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The index as a `usize`, for indexing per-piece tables.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// A block known to lie inside one piece of the torrent: `len` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// The piece holding the block.
    pub piece: PieceIndex,
    /// The byte offset of the block inside the piece.
    pub offset: u32,
    /// The block's length in bytes, never zero.
    pub len: u32,
}

/// Why a torrent's lengths were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LengthsError {
    /// The piece length is not a power of two or lies outside the accepted range.
    #[error("piece length {0} is not a power of two between {MIN_PIECE_LEN} and {MAX_PIECE_LEN}")]
    PieceLength(u64),
    /// The total length is zero or over the limit.
    #[error("total length {0} is not between 1 and {MAX_TORRENT_LEN} bytes")]
    TotalLength(u64),
    /// More pieces than the limit.
    #[error("{0} pieces is over the limit of {MAX_PIECES}")]
    TooManyPieces(u64),
}

/// The lengths of a torrent: total payload, piece length, piece count and last piece length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    total_len: u64,
    piece_len: u32,
    piece_count: u32,
    last_piece_len: u32,
}

impl Lengths {
    /// Checks a torrent's total length and piece length and derives the rest.
    pub fn new(total_len: u64, piece_len: u64) -> Result<Self, LengthsError> {
        if !piece_len.is_power_of_two() || !(MIN_PIECE_LEN..=MAX_PIECE_LEN).contains(&piece_len) {
            return Err(LengthsError::PieceLength(piece_len));
        }
        if total_len == 0 || total_len > MAX_TORRENT_LEN {
            return Err(LengthsError::TotalLength(total_len));
        }
        let piece_count = total_len.div_ceil(piece_len);
        if piece_count > MAX_PIECES {
            return Err(LengthsError::TooManyPieces(piece_count));
        }
        let last_piece_len = total_len - (piece_count - 1) * piece_len;
        // All three fit: piece_len <= 64 MiB, piece_count <= MAX_PIECES < u32::MAX.
        Ok(Lengths {
            total_len,
            piece_len: piece_len as u32,
            piece_count: piece_count as u32,
            last_piece_len: last_piece_len as u32,
        })
    }

    /// The payload's total length in bytes.
    pub const fn total_len(&self) -> u64 {
        self.total_len
    }

    /// The nominal piece length (every piece but possibly the last).
    pub const fn piece_len(&self) -> u32 {
        self.piece_len
    }

    /// How many pieces the torrent has (at least one).
    pub const fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// The length of the last piece, between 1 and the piece length.
    pub const fn last_piece_len(&self) -> u32 {
        self.last_piece_len
    }

    /// Checks a piece index from outside (the wire, a resume file).
    pub fn piece(&self, index: u32) -> Option<PieceIndex> {
        (index < self.piece_count).then_some(PieceIndex(index))
    }

    /// Every piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> {
        (0..self.piece_count).map(PieceIndex)
    }

    /// The length of `piece`.
    pub fn len_of(&self, piece: PieceIndex) -> u32 {
        if piece.0 + 1 == self.piece_count {
            self.last_piece_len
        } else {
            self.piece_len
        }
    }

    /// The offset of `piece`'s first byte in the torrent's payload.
    pub fn offset_of(&self, piece: PieceIndex) -> u64 {
        u64::from(piece.0) * u64::from(self.piece_len)
    }

    /// How many 16 KiB blocks `piece` is requested in.
    pub fn blocks_in(&self, piece: PieceIndex) -> u32 {
        self.len_of(piece).div_ceil(BLOCK_LEN)
    }

    /// The `n`th 16 KiB block of `piece`, or `None` past the piece's end.
    pub fn block(&self, piece: PieceIndex, n: u32) -> Option<BlockRef> {
        let offset = n.checked_mul(BLOCK_LEN)?;
        let piece_len = self.len_of(piece);
        (offset < piece_len).then(|| BlockRef {
            piece,
            offset,
            len: BLOCK_LEN.min(piece_len - offset),
        })
    }

    /// Every block of `piece`, in order.
    pub fn blocks(&self, piece: PieceIndex) -> impl Iterator<Item = BlockRef> + '_ {
        (0..self.blocks_in(piece)).filter_map(move |n| self.block(piece, n))
    }

    /// Checks a block reference from outside (a `request`, `piece`, `cancel` or `reject`):
    /// the piece exists and `len` bytes from `offset` lie inside it. Whether the length is
    /// acceptable for serving is policy, decided by the caller.
    pub fn block_at(&self, piece: u32, offset: u32, len: u32) -> Option<BlockRef> {
        let piece = self.piece(piece)?;
        let end = offset.checked_add(len)?;
        (len > 0 && end <= self.len_of(piece)).then_some(BlockRef { piece, offset, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_counts() {
        let l = Lengths::new(1_000_000, 262_144).unwrap();
        assert_eq!(
            (l.piece_count(), l.last_piece_len()),
            (4, 1_000_000 - 3 * 262_144)
        );
        let exact = Lengths::new(4 * 262_144, 262_144).unwrap();
        assert_eq!((exact.piece_count(), exact.last_piece_len()), (4, 262_144));
        let tiny = Lengths::new(1, 16384).unwrap();
        assert_eq!((tiny.piece_count(), tiny.last_piece_len()), (1, 1));
    }

    #[test]
    fn refuses_bad_lengths() {
        assert_eq!(
            Lengths::new(10, 3 << 14),
            Err(LengthsError::PieceLength(3 << 14))
        );
        assert_eq!(Lengths::new(10, 8192), Err(LengthsError::PieceLength(8192)));
        assert_eq!(
            Lengths::new(10, 128 << 20),
            Err(LengthsError::PieceLength(128 << 20))
        );
        assert_eq!(Lengths::new(0, 16384), Err(LengthsError::TotalLength(0)));
        assert!(matches!(
            Lengths::new(MAX_TORRENT_LEN, 16384),
            Err(LengthsError::TooManyPieces(_))
        ));
    }

    #[test]
    fn blocks_and_requests() {
        let l = Lengths::new(262_144 + 20_000, 262_144).unwrap();
        let last = l.piece(1).unwrap();
        assert_eq!(l.piece(2), None);
        assert_eq!(l.blocks_in(last), 2);
        let blocks: Vec<_> = l.blocks(last).collect();
        assert_eq!(
            blocks[1],
            BlockRef {
                piece: last,
                offset: 16384,
                len: 20_000 - 16384
            }
        );
        assert_eq!(l.blocks(l.piece(0).unwrap()).count(), 16);
        assert!(l.block_at(1, 16384, 3616).is_some());
        assert!(l.block_at(1, 16384, 3617).is_none());
        assert!(l.block_at(1, u32::MAX, 2).is_none());
        assert!(l.block_at(0, 0, 0).is_none());
        assert!(l.block_at(7, 0, 1).is_none());
    }
}
