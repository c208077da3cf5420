//! Fresh pieces of one priority level, grouped by availability.
//!
//! Bucket `a` holds, in no particular order, every piece of the level whose per-piece peer
//! count is `a`. A piece's position in its bucket (its slot) is kept by the caller in its
//! piece table, so a piece is found, moved or removed in O(1): removal is a `swap_remove`
//! (the caller fixes the slot of the piece that moved into the hole) and insertion a `push`.
//! Walking the buckets in order visits pieces rarest first.
//!
//! libtorrent keeps one vector with bucket boundaries instead, so that an availability change
//! is a swap with the bucket's edge; removing a piece there costs a swap per bucket above it.
//! Here every operation is O(1) whatever the number of buckets, at the price of one small
//! vector per availability value (at most one per connected peer, plus one).

/// Shrink a bucket only when it is at most a quarter full and its capacity exceeds this many
/// slots: below that the memory is negligible and reallocating would cost more than it saves.
/// Without shrinking, pieces drifting upwards together (hundreds of peers joining with nearly
/// full bitfields) would leave a full-torrent capacity behind in every bucket they crossed.
const SHRINK_MIN_CAPACITY: usize = 64;

/// Halves a bucket's capacity while it is at most a quarter full (and not tiny), so total
/// capacity stays within a small factor of the pieces held plus a constant per bucket.
fn shrink(bucket: &mut Vec<u32>) {
    while bucket.capacity() > SHRINK_MIN_CAPACITY && bucket.len() <= bucket.capacity() / 4 {
        bucket.shrink_to(bucket.capacity() / 2);
    }
}

/// The pieces of one priority level, one vector per availability value.
#[derive(Debug, Clone, Default)]
pub(super) struct Buckets {
    buckets: Vec<Vec<u32>>,
    len: usize,
}

impl Buckets {
    /// How many pieces the level holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The buckets, rarest first.
    pub(super) fn buckets(&self) -> &[Vec<u32>] {
        &self.buckets
    }

    /// Empties the level for a rebuild. The buckets keep their memory: the rebuilt level is
    /// usually shaped much like the old one, so refilling it mostly avoids reallocating.
    pub(super) fn clear(&mut self) {
        for bucket in &mut self.buckets {
            bucket.clear();
        }
        self.len = 0;
    }

    /// Adds `piece` with availability `count` and returns its slot in that bucket.
    pub(super) fn insert(&mut self, piece: u32, count: u32) -> u32 {
        let count = count as usize;
        if self.buckets.len() <= count {
            self.buckets.resize_with(count + 1, Vec::new);
        }
        let bucket = &mut self.buckets[count];
        bucket.push(piece);
        self.len += 1;
        // A bucket never holds more than the torrent's piece count, which fits in a u32.
        (bucket.len() - 1) as u32
    }

    /// Removes the piece at `slot` of bucket `count`. Returns the piece that was moved into
    /// `slot` to fill the hole, whose recorded slot the caller must update.
    pub(super) fn remove(&mut self, count: u32, slot: u32) -> Option<u32> {
        let bucket = self.buckets.get_mut(count as usize)?;
        let slot = slot as usize;
        if slot >= bucket.len() {
            debug_assert!(false, "slot {slot} out of bucket {count}");
            return None;
        }
        bucket.swap_remove(slot);
        self.len -= 1;
        let moved = bucket.get(slot).copied();
        shrink(bucket);
        self.trim();
        moved
    }

    /// Drops trailing empty buckets, so that walks stop at the most common piece.
    fn trim(&mut self) {
        while self.buckets.last().is_some_and(Vec::is_empty) {
            self.buckets.pop();
        }
    }

    /// Ends a rebuild: returns the memory of buckets left mostly empty, and drops trailing
    /// empty ones.
    pub(super) fn finish_rebuild(&mut self) {
        self.buckets.iter_mut().for_each(shrink);
        self.trim();
    }

    /// The pieces in bucket order, starting at the `start`th and wrapping around: a uniform
    /// random start gives a uniform random piece without regard to availability. Yields
    /// slices so the caller's loop stays tight. O(number of buckets) to find the start.
    pub(super) fn slices_from(&self, start: usize) -> impl Iterator<Item = &[u32]> {
        let mut skip = start.min(self.len);
        let mut first = 0;
        let mut offset = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            if skip < b.len() {
                first = i;
                offset = skip;
                break;
            }
            skip -= b.len();
            first = i + 1;
        }
        let buckets = &self.buckets;
        let head = buckets.get(first).map(|b| &b[offset..]);
        let middle = buckets.iter().skip(first + 1).map(Vec::as_slice);
        let wrapped = buckets.iter().take(first).map(Vec::as_slice);
        let tail = buckets.get(first).map(|b| &b[..offset]);
        head.into_iter().chain(middle).chain(wrapped).chain(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_walk() {
        let mut b = Buckets::default();
        assert_eq!(b.insert(7, 2), 0);
        assert_eq!(b.insert(8, 2), 1);
        assert_eq!(b.insert(9, 0), 0);
        assert_eq!(b.len(), 3);
        // Removing slot 0 of bucket 2 moves piece 8 into it.
        assert_eq!(b.remove(2, 0), Some(8));
        assert_eq!(b.remove(2, 0), None);
        assert_eq!(b.buckets().len(), 1, "trailing empty buckets are dropped");
        assert_eq!(b.remove(5, 0), None, "missing bucket is ignored");
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn slices_from_wraps_around() {
        let mut b = Buckets::default();
        for (piece, count) in [(0, 0), (1, 0), (2, 1), (3, 3), (4, 3)] {
            b.insert(piece, count);
        }
        for start in 0..5 {
            let order: Vec<u32> = b.slices_from(start).flatten().copied().collect();
            let mut expected: Vec<u32> = (0..5).collect();
            expected.rotate_left(start);
            assert_eq!(order, expected, "start {start}");
        }
        assert_eq!(b.slices_from(99).flatten().count(), 5);
    }
}
