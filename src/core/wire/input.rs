//! The decoder's view of its input, and what a decode attempt reports.
//!
//! A driver that reads into a ring buffer sees the unread bytes as up to two slices: the tail
//! of the buffer and its wrapped-around head. [`SplitBytes`] is that pair, borrowed, so the
//! codec can check and parse a frame in place without first copying it into one slice.
//! Payloads (bitfield bits, block data, extension payloads) come back as `SplitBytes` too,
//! and a caller copies them out only where it needs to.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroUsize;

/// A borrowed byte string stored as up to two consecutive slices (`first` then `second`).
///
/// It exists so that a ring buffer's two halves can be decoded without joining them. Equality
/// compares contents, not the place of the split, so two views of the same bytes split at
/// different points are equal. Every accessor is checked: nothing here can panic on an
/// out-of-range offset, which matters because offsets come from the network.
#[derive(Clone, Copy, Default)]
pub struct SplitBytes<'a> {
    first: &'a [u8],
    second: &'a [u8],
}

impl<'a> SplitBytes<'a> {
    /// Views `first` followed by `second` as one byte string.
    ///
    /// When `first` is empty the halves are swapped, so that a view whose bytes are contiguous
    /// always has them in `first` and [`as_contiguous`](Self::as_contiguous) stays cheap.
    pub const fn new(first: &'a [u8], second: &'a [u8]) -> Self {
        if first.is_empty() {
            SplitBytes {
                first: second,
                second: &[],
            }
        } else {
            SplitBytes { first, second }
        }
    }

    /// Views one contiguous slice, the common case for a plain `Vec` or a test.
    pub const fn single(bytes: &'a [u8]) -> Self {
        SplitBytes {
            first: bytes,
            second: &[],
        }
    }

    /// The total length of both halves.
    pub const fn len(&self) -> usize {
        // Two slices can each hold at most `isize::MAX` bytes, so the sum fits a `usize`.
        self.first.len() + self.second.len()
    }

    /// Whether the view holds no bytes at all.
    pub const fn is_empty(&self) -> bool {
        self.first.is_empty() && self.second.is_empty()
    }

    /// The two halves, for a caller that writes them out with vectored I/O.
    pub const fn as_slices(&self) -> (&'a [u8], &'a [u8]) {
        (self.first, self.second)
    }

    /// The bytes as one slice when they happen not to be split, without copying.
    pub const fn as_contiguous(&self) -> Option<&'a [u8]> {
        if self.second.is_empty() {
            Some(self.first)
        } else {
            None
        }
    }

    /// The bytes as one slice, borrowed when they are contiguous and copied when they are not.
    pub fn to_contiguous(&self) -> Cow<'a, [u8]> {
        match self.as_contiguous() {
            Some(bytes) => Cow::Borrowed(bytes),
            None => Cow::Owned(self.to_vec()),
        }
    }

    /// Copies the bytes into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.append_to(&mut out);
        out
    }

    /// Appends the bytes to `out`, for a caller that assembles data in a buffer it owns.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.first);
        out.extend_from_slice(self.second);
    }

    /// Copies as many bytes as fit into `dst`, from the start, and returns how many it copied.
    ///
    /// Copying the shorter of the two lengths, instead of panicking on a mismatch the way
    /// `copy_from_slice` does, keeps a length that came from the network from crashing us.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let mut copied = 0;
        for half in [self.first, self.second] {
            let Some(rest) = dst.get_mut(copied..) else {
                break;
            };
            let n = half.len().min(rest.len());
            if let (Some(to), Some(from)) = (rest.get_mut(..n), half.get(..n)) {
                to.copy_from_slice(from);
                copied += n;
            }
        }
        copied
    }

    /// The byte at `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<u8> {
        match self.first.get(index) {
            Some(&b) => Some(b),
            None => self
                .second
                .get(index.checked_sub(self.first.len())?)
                .copied(),
        }
    }

    /// Splits the view into the bytes before `mid` and the bytes from `mid` on, or returns
    /// `None` when `mid` is past the end.
    pub fn split_at(&self, mid: usize) -> Option<(SplitBytes<'a>, SplitBytes<'a>)> {
        match mid.checked_sub(self.first.len()) {
            Some(into_second) => {
                let (a, b) = self.second.split_at_checked(into_second)?;
                Some((SplitBytes::new(self.first, a), SplitBytes::single(b)))
            }
            None => {
                let (a, b) = self.first.split_at_checked(mid)?;
                Some((SplitBytes::single(a), SplitBytes::new(b, self.second)))
            }
        }
    }

    /// The bytes from `start` up to (not including) `end`, or `None` when the range is
    /// reversed or reaches past the end.
    pub fn subrange(&self, start: usize, end: usize) -> Option<SplitBytes<'a>> {
        let (head, _) = self.split_at(end)?;
        let (_, middle) = head.split_at(start)?;
        Some(middle)
    }

    /// Reads `N` bytes starting at `offset` into an array, or returns `None` when they are
    /// not all there. This is how fixed-size fields are read across the split.
    pub fn read_array<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        if let Some(bytes) = self.first.get(offset..end) {
            return bytes.try_into().ok();
        }
        let view = self.subrange(offset, end)?;
        let mut out = [0u8; N];
        (view.copy_to(&mut out) == N).then_some(out)
    }

    /// Whether the view begins with `prefix`.
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        match self.split_at(prefix.len()) {
            Some((head, _)) => head == *prefix,
            None => false,
        }
    }

    /// Iterates over the bytes one at a time, crossing the split transparently.
    pub fn iter(&self) -> impl Iterator<Item = u8> + 'a {
        self.first.iter().chain(self.second.iter()).copied()
    }

    /// Iterates over the non-empty halves, for bulk work such as hashing a block in place.
    pub fn chunks(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        [self.first, self.second]
            .into_iter()
            .filter(|half| !half.is_empty())
    }
}

impl<'a> From<&'a [u8]> for SplitBytes<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        SplitBytes::single(bytes)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for SplitBytes<'a> {
    fn from(bytes: &'a [u8; N]) -> Self {
        SplitBytes::single(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for SplitBytes<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        SplitBytes::single(bytes)
    }
}

impl<'a> From<(&'a [u8], &'a [u8])> for SplitBytes<'a> {
    fn from((first, second): (&'a [u8], &'a [u8])) -> Self {
        SplitBytes::new(first, second)
    }
}

impl PartialEq<[u8]> for SplitBytes<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        match other.split_at_checked(self.first.len()) {
            Some((a, b)) => self.first == a && self.second == b,
            None => false,
        }
    }
}

impl PartialEq for SplitBytes<'_> {
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        match other.split_at(self.first.len()) {
            Some((a, b)) => a == *self.first && b == *self.second,
            None => false,
        }
    }
}

impl Eq for SplitBytes<'_> {}

impl fmt::Debug for SplitBytes<'_> {
    /// Shows the length and at most the first 16 bytes, so that logging a message that
    /// carries a 16 KiB block stays readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 16;
        write!(f, "SplitBytes(len={}, ", self.len())?;
        for b in self.iter().take(SHOWN) {
            write!(f, "{b:02x}")?;
        }
        if self.len() > SHOWN {
            f.write_str("..")?;
        }
        f.write_str(")")
    }
}

/// What a decode attempt that found nothing wrong reports: either a value and how many bytes
/// it used, or that more bytes must arrive first.
///
/// Errors are kept apart from this (in the `Result` around it) because "wait for more" is
/// the normal state of a connection while an error means the peer misbehaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decoded<T> {
    /// A whole frame was buffered and parsed. `consumed` is its length including any length
    /// prefix: the caller drops that many bytes from its buffer.
    Complete {
        /// The decoded value, which may borrow from the input.
        value: T,
        /// How many input bytes the value took.
        consumed: usize,
    },
    /// The frame is not whole yet. `needed` is the least number of further bytes after which
    /// trying again can give a different answer; once a frame's length is known it is exactly
    /// the rest of that frame, so a driver can size its next read by it.
    Incomplete {
        /// The least number of additional bytes to wait for.
        needed: NonZeroUsize,
    },
}

impl<T> Decoded<T> {
    /// The value and consumed length, or `None` while incomplete; handy in tests and loops.
    pub fn complete(self) -> Option<(T, usize)> {
        match self {
            Decoded::Complete { value, consumed } => Some((value, consumed)),
            Decoded::Incomplete { .. } => None,
        }
    }

    /// Whether a whole value was decoded.
    pub const fn is_complete(&self) -> bool {
        matches!(self, Decoded::Complete { .. })
    }

    /// Transforms the value, keeping the consumed length or the bytes still needed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decoded<U> {
        match self {
            Decoded::Complete { value, consumed } => Decoded::Complete {
                value: f(value),
                consumed,
            },
            Decoded::Incomplete { needed } => Decoded::Incomplete { needed },
        }
    }

    /// Reports that `needed` more bytes are required. `needed` must not be zero; a zero would
    /// be a bug in the caller, and is reported as one byte so that the caller still waits.
    pub(crate) fn need(needed: usize) -> Self {
        Decoded::Incomplete {
            needed: NonZeroUsize::new(needed).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &[u8] = b"0123456789";

    fn every_split(data: &[u8]) -> impl Iterator<Item = SplitBytes<'_>> {
        (0..=data.len()).map(move |i| {
            let (a, b) = data.split_at(i);
            SplitBytes::new(a, b)
        })
    }

    #[test]
    fn new_moves_a_lone_second_half_first() {
        let v = SplitBytes::new(&[], DATA);
        assert_eq!(v.as_contiguous(), Some(DATA));
        assert_eq!(v.as_slices(), (DATA, &[][..]));
        assert!(SplitBytes::new(b"a", b"b").as_contiguous().is_none());
        assert!(SplitBytes::default().is_empty());
    }

    #[test]
    fn accessors_agree_across_every_split() {
        for v in every_split(DATA) {
            assert_eq!(v.len(), DATA.len());
            assert_eq!(v.to_vec(), DATA);
            assert_eq!(&*v.to_contiguous(), DATA);
            assert_eq!(v.iter().collect::<Vec<_>>(), DATA);
            assert_eq!(v.chunks().flatten().copied().collect::<Vec<_>>(), DATA);
            assert_eq!(v, *DATA);
            assert_eq!(v, SplitBytes::single(DATA));
            assert!(v.starts_with(b"0123"));
            assert!(!v.starts_with(b"0124"));
            assert!(!v.starts_with(b"0123456789a"));
            for (i, &b) in DATA.iter().enumerate() {
                assert_eq!(v.get(i), Some(b));
            }
            assert_eq!(v.get(DATA.len()), None);
            assert_eq!(v.get(usize::MAX), None);
            for start in 0..=DATA.len() {
                for end in start..=DATA.len() {
                    assert_eq!(v.subrange(start, end).unwrap(), DATA[start..end]);
                }
                let (a, b) = v.split_at(start).unwrap();
                assert_eq!(a, DATA[..start]);
                assert_eq!(b, DATA[start..]);
            }
            assert_eq!(v.subrange(3, 2), None);
            assert_eq!(v.subrange(0, 11), None);
            assert_eq!(v.split_at(11), None);
            assert_eq!(v.read_array::<4>(3), Some(*b"3456"));
            assert_eq!(v.read_array::<4>(6), Some(*b"6789"));
            assert_eq!(v.read_array::<4>(7), None);
            assert_eq!(v.read_array::<4>(usize::MAX), None);
        }
    }

    #[test]
    fn copy_to_copies_what_fits() {
        for v in every_split(DATA) {
            let mut small = [0u8; 4];
            assert_eq!(v.copy_to(&mut small), 4);
            assert_eq!(&small, b"0123");
            let mut big = [b'x'; 12];
            assert_eq!(v.copy_to(&mut big), 10);
            assert_eq!(&big, b"0123456789xx");
            let mut out = b"ab".to_vec();
            v.append_to(&mut out);
            assert_eq!(out, b"ab0123456789");
        }
    }

    #[test]
    fn equality_ignores_the_split_but_not_the_contents() {
        let a = SplitBytes::new(b"abc", b"def");
        let b = SplitBytes::new(b"a", b"bcdef");
        assert_eq!(a, b);
        assert_ne!(a, SplitBytes::new(b"abc", b"deg"));
        assert_ne!(a, SplitBytes::new(b"abc", b"de"));
        assert!(a != *b"abcde".as_slice());
    }

    #[test]
    fn debug_is_short() {
        let block = [0xabu8; 16384];
        let s = format!("{:?}", SplitBytes::single(&block));
        assert!(s.starts_with("SplitBytes(len=16384, abab"));
        assert!(s.len() < 80, "{s}");
    }

    #[test]
    fn decoded_helpers() {
        let d: Decoded<u8> = Decoded::Complete {
            value: 1,
            consumed: 5,
        };
        assert!(d.is_complete());
        assert_eq!(d.map(u32::from).complete(), Some((1u32, 5)));
        let i: Decoded<u8> = Decoded::need(0);
        assert_eq!(
            i,
            Decoded::Incomplete {
                needed: NonZeroUsize::MIN
            }
        );
        assert_eq!(i.complete(), None);
    }
}
