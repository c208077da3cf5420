//! Lower-case hexadecimal encoding and decoding, used for info hashes and peer ids.

use std::fmt::Write as _;

/// Encodes `bytes` as lower-case hexadecimal.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes hexadecimal (either case) into exactly `N` bytes, or `None` if `text` is not
/// `2 * N` hexadecimal digits.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// The value of one hexadecimal digit (either case).
pub fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x12];
        assert_eq!(encode(&bytes), "007f80ff12");
        assert_eq!(decode::<5>("007F80fF12"), Some(bytes));
    }

    #[test]
    fn rejects_bad_digits_and_lengths() {
        assert_eq!(decode::<2>("abc"), None);
        assert_eq!(decode::<2>("abcg"), None);
        assert_eq!(decode::<2>("abcdef"), None);
    }
}
