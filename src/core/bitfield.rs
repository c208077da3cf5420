//! A set of pieces, one bit each, laid out as the wire's `bitfield` message lays it out: piece 0
//! is the high bit of the first byte. Words are `u64` with piece `i` at bit `63 - i % 64` of word
//! `i / 64`, so conversion to and from the wire is a big-endian byte copy and set operations run
//! 64 pieces at a time.

use super::wire::{validate_bitfield, BitfieldError, SplitBytes};

/// A fixed-length set of pieces.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    words: Vec<u64>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty set for `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            words: vec![0; (len as usize).div_ceil(64)],
            len,
            ones: 0,
        }
    }

    /// The set of all `len` pieces.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for w in &mut b.words {
            *w = u64::MAX;
        }
        b.clear_spare();
        b.ones = len;
        b
    }

    /// Reads a wire bitfield, checking its length and that no spare bit is set.
    pub fn from_wire<'a>(
        bits: impl Into<SplitBytes<'a>>,
        len: u32,
    ) -> Result<Bitfield, BitfieldError> {
        let bits = bits.into();
        validate_bitfield(bits, len)?;
        let mut b = Bitfield::new(len);
        for (i, byte) in bits.iter().enumerate() {
            b.words[i / 8] |= u64::from(byte) << (56 - 8 * (i % 8));
        }
        b.ones = b.words.iter().map(|w| w.count_ones()).sum();
        Ok(b)
    }

    /// The wire form: `ceil(len / 8)` bytes, spare bits zero.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.words.len() * 8);
        for w in &self.words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.truncate((self.len as usize).div_ceil(8));
        out
    }

    fn clear_spare(&mut self) {
        let rem = self.len % 64;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= !(u64::MAX >> rem);
            }
        }
    }

    fn locate(i: u32) -> (usize, u64) {
        ((i / 64) as usize, 1u64 << (63 - i % 64))
    }

    /// How many pieces the set is sized for.
    pub const fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set is sized for no pieces at all.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many pieces are in the set.
    pub const fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is in the set.
    pub const fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether no piece is in the set.
    pub const fn is_none(&self) -> bool {
        self.ones == 0
    }

    /// Whether piece `i` is in the set; `false` past the end.
    pub fn get(&self, i: u32) -> bool {
        let (w, m) = Bitfield::locate(i);
        i < self.len && self.words[w] & m != 0
    }

    /// Adds piece `i`; returns whether it was newly added. Ignored past the end.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let (w, m) = Bitfield::locate(i);
        let new = self.words[w] & m == 0;
        self.words[w] |= m;
        self.ones += u32::from(new);
        new
    }

    /// Removes piece `i`; returns whether it was in the set.
    pub fn clear(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let (w, m) = Bitfield::locate(i);
        let was = self.words[w] & m != 0;
        self.words[w] &= !m;
        self.ones -= u32::from(was);
        was
    }

    /// The pieces in the set, in increasing order.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut word = w;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.leading_zeros();
                word &= !(1u64 << (63 - bit));
                Some(wi as u32 * 64 + bit)
            })
        })
    }

    /// How many pieces are in both `self` and `other` but not in `exclude`: for a peer's
    /// bitfield, the pieces it could give us (`other` = wanted, `exclude` = what we have).
    /// All three must be sized alike.
    pub fn count_and_not(&self, other: &Bitfield, exclude: &Bitfield) -> u32 {
        debug_assert!(self.len == other.len && self.len == exclude.len);
        self.words
            .iter()
            .zip(&other.words)
            .zip(&exclude.words)
            .map(|((a, b), c)| (a & b & !c).count_ones())
            .sum()
    }

    /// The raw words, for set operations elsewhere in the core.
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_layout() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0) && b.set(9) && !b.set(9) && !b.set(10));
        assert_eq!(b.to_wire(), vec![0b1000_0000, 0b0100_0000]);
        assert_eq!(
            Bitfield::from_wire(&[0b1000_0000u8, 0b0100_0000][..], 10).unwrap(),
            b
        );
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 9]);
        assert!(
            Bitfield::from_wire(&[0xff, 0xff][..], 10).is_err(),
            "spare bits set"
        );
        assert!(Bitfield::from_wire(&[0xff][..], 10).is_err(), "too short");
        assert_eq!(b.count(), 2);
        assert!(b.clear(0) && !b.clear(0));
        assert_eq!(b.count(), 1);
    }

    #[test]
    fn full_has_no_spare_bits() {
        for len in [1, 63, 64, 65, 130] {
            let b = Bitfield::full(len);
            assert!(b.is_full());
            assert_eq!(b.ones().count() as u32, len);
            assert_eq!(Bitfield::from_wire(&b.to_wire()[..], len).unwrap(), b);
        }
    }

    #[test]
    fn count_and_not() {
        let mut peer = Bitfield::new(200);
        let wanted = Bitfield::full(200);
        let mut have = Bitfield::new(200);
        for i in [1, 70, 150, 199] {
            peer.set(i);
        }
        have.set(70);
        assert_eq!(peer.count_and_not(&wanted, &have), 3);
    }
}
