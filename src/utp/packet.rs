//! The uTP packet codec (BEP 29): the 20-byte header and the extension chain, of which the
//! selective-ack extension (type 1) is read and written and any other is skipped.
//!
//! ```text
//! 0       4       8               16              24              32
//! +-------+-------+---------------+---------------+---------------+
//! | type  | ver   | extension     | connection_id                 |
//! +-------+-------+---------------+---------------+---------------+
//! | timestamp_microseconds                                        |
//! | timestamp_difference_microseconds                             |
//! | wnd_size                                                      |
//! | seq_nr                        | ack_nr                        |
//! +---------------+---------------+---------------+---------------+
//! ```
//!
//! Every field is big-endian. The first byte is `type << 4 | 1`, so a uTP packet starts with
//! 0x01, 0x11, 0x21, 0x31 or 0x41, never with `d` (0x64), the first byte of a KRPC datagram:
//! that is how the drivers tell the two apart on their one UDP socket ([`is_utp`]).
//!
//! Decoding reads only what the length allows and never panics; a datagram that is not a
//! well-formed packet is an error the caller drops.

/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;

/// The longest selective-ack bitmask we write, in bytes: 32 bytes cover 256 packets past
/// `ack_nr + 1`. A longer one from a peer is read (its length is a byte, so bounded).
pub const MAX_SACK_LEN: usize = 32;

/// Extensions a packet may chain before we stop reading (each costs two bytes at least, so
/// this also bounds the work one datagram causes).
const MAX_EXTENSIONS: usize = 8;

/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;

/// A packet's type (the high nibble of its first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// Payload: the next bytes of the stream, one sequence number each.
    Data = 0,
    /// The sender has no more data; takes a sequence number.
    Fin = 1,
    /// An acknowledgement without payload; takes no sequence number.
    State = 2,
    /// The connection is torn down at once.
    Reset = 3,
    /// Opens a connection.
    Syn = 4,
}

impl Type {
    fn from_nibble(n: u8) -> Option<Type> {
        Some(match n {
            0 => Type::Data,
            1 => Type::Fin,
            2 => Type::State,
            3 => Type::Reset,
            4 => Type::Syn,
            _ => return None,
        })
    }
}

/// Whether a datagram's first byte could start a uTP packet (any type, version 1). The
/// drivers use it to route datagrams between the DHT and uTP.
pub fn is_utp(datagram: &[u8]) -> bool {
    datagram
        .first()
        .is_some_and(|&b| b & 0x0f == VERSION && b >> 4 <= 4)
}

/// The fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The packet's type.
    pub kind: Type,
    /// The connection id the receiver files this packet under.
    pub conn_id: u16,
    /// The sender's clock, low 32 bits of microseconds.
    pub timestamp: u32,
    /// The sender's clock minus the timestamp of the last packet it received from us.
    pub timestamp_diff: u32,
    /// Bytes the sender can still receive.
    pub wnd_size: u32,
    /// This packet's sequence number (for STATE: the next one the sender will use).
    pub seq_nr: u16,
    /// The last sequence number the sender received in order.
    pub ack_nr: u16,
}

/// A decoded packet, borrowing its payload and selective-ack bitmask from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The fixed header.
    pub header: Header,
    /// The selective-ack bitmask: bit `i` (least significant bit of byte 0 first) says packet
    /// `ack_nr + 2 + i` was received. Empty when absent.
    pub sack: &'a [u8],
    /// The payload (DATA only carries one; others' are ignored).
    pub payload: &'a [u8],
}

/// Why a datagram is not a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than 20 bytes, or an extension runs past the end.
    #[error("truncated uTP packet")]
    Truncated,
    /// The version nibble is not 1.
    #[error("unknown uTP version")]
    Version,
    /// The type nibble is above 4.
    #[error("unknown uTP packet type")]
    Type,
    /// An empty selective-ack bitmask, or too many extensions.
    #[error("malformed uTP extension")]
    Extension,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes one datagram.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let first = *datagram.first().ok_or(DecodeError::Truncated)?;
    if datagram.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if first & 0x0f != VERSION {
        return Err(DecodeError::Version);
    }
    let kind = Type::from_nibble(first >> 4).ok_or(DecodeError::Type)?;
    let t = DecodeError::Truncated;
    let header = Header {
        kind,
        conn_id: be16(datagram, 2).ok_or(t)?,
        timestamp: be32(datagram, 4).ok_or(t)?,
        timestamp_diff: be32(datagram, 8).ok_or(t)?,
        wnd_size: be32(datagram, 12).ok_or(t)?,
        seq_nr: be16(datagram, 16).ok_or(t)?,
        ack_nr: be16(datagram, 18).ok_or(t)?,
    };
    let mut next = datagram.get(1).copied().ok_or(t)?;
    let mut at = HEADER_LEN;
    let mut sack: &[u8] = &[];
    let mut count = 0;
    while next != 0 {
        count += 1;
        if count > MAX_EXTENSIONS {
            return Err(DecodeError::Extension);
        }
        let ext = next;
        next = *datagram.get(at).ok_or(t)?;
        let len = usize::from(*datagram.get(at + 1).ok_or(t)?);
        let body = datagram.get(at + 2..at + 2 + len).ok_or(t)?;
        at += 2 + len;
        if ext == 1 {
            // BEP 29 wants a multiple of 4; any non-empty length is read, bit by bit.
            if len == 0 {
                return Err(DecodeError::Extension);
            }
            sack = body;
        }
    }
    Ok(Packet {
        header,
        sack,
        payload: datagram.get(at..).unwrap_or_default(),
    })
}

/// Appends a packet to `out`: the header, a selective-ack extension when `sack` is not empty
/// (its length must be a multiple of 4, at most [`MAX_SACK_LEN`]; longer is cut), then the
/// payload.
pub fn encode(header: &Header, sack: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    encode_padded(header, sack, payload, 0, out);
}

/// The extension type of padding: unknown to BEP 29, so a peer skips it (libtorrent and
/// libutp step over any extension by its length). Path MTU probes are padded with it.
pub const PADDING_EXTENSION: u8 = 0x7e;

/// The most padding one packet carries: the extensions left beside a selective ack, each
/// up to 255 bytes with its two-byte head.
pub const MAX_PADDING: usize = (MAX_EXTENSIONS - 1) * 257;

/// As [`encode`], padded with [`PADDING_EXTENSION`]s to at least `size` bytes in all (one
/// byte more where one is missing, the smallest extension being two), at most
/// [`MAX_PADDING`] bytes of padding.
pub fn encode_padded(header: &Header, sack: &[u8], payload: &[u8], size: usize, out: &mut Vec<u8>) {
    let sack = &sack[..sack.len().min(MAX_SACK_LEN) / 4 * 4];
    let plain = HEADER_LEN + if sack.is_empty() { 0 } else { 2 + sack.len() } + payload.len();
    let mut pad = size.saturating_sub(plain).min(MAX_PADDING);
    if pad == 1 {
        pad = 2;
    }
    let start = out.len();
    out.reserve(plain + pad);
    let first_ext = match (sack.is_empty(), pad > 0) {
        (false, _) => 1,
        (true, true) => PADDING_EXTENSION,
        (true, false) => 0,
    };
    out.push((header.kind as u8) << 4 | VERSION);
    out.push(first_ext);
    out.extend_from_slice(&header.conn_id.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.timestamp_diff.to_be_bytes());
    out.extend_from_slice(&header.wnd_size.to_be_bytes());
    out.extend_from_slice(&header.seq_nr.to_be_bytes());
    out.extend_from_slice(&header.ack_nr.to_be_bytes());
    if !sack.is_empty() {
        out.push(if pad > 0 { PADDING_EXTENSION } else { 0 });
        out.push(sack.len() as u8);
        out.extend_from_slice(sack);
    }
    while pad > 0 {
        // Each extension takes 2..=257 bytes; never leave a single byte for the last.
        let mut take = pad.min(257);
        if pad - take == 1 {
            take -= 1;
        }
        pad -= take;
        out.push(if pad > 0 { PADDING_EXTENSION } else { 0 });
        out.push((take - 2) as u8);
        out.resize(out.len() + take - 2, 0);
    }
    out.extend_from_slice(payload);
    debug_assert!(out.len() - start >= size.min(plain + MAX_PADDING));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: Type) -> Header {
        Header {
            kind,
            conn_id: 0x1234,
            timestamp: 0xdead_beef,
            timestamp_diff: 7,
            wnd_size: 1 << 20,
            seq_nr: 0xfffe,
            ack_nr: 3,
        }
    }

    #[test]
    fn round_trip_with_and_without_sack() {
        for kind in [Type::Data, Type::Fin, Type::State, Type::Reset, Type::Syn] {
            let mut out = Vec::new();
            encode(&header(kind), &[], b"abc", &mut out);
            assert!(is_utp(&out));
            let p = decode(&out).unwrap();
            assert_eq!(p.header, header(kind));
            assert_eq!(p.payload, b"abc");
            assert!(p.sack.is_empty());
            let mut out = Vec::new();
            encode(&header(kind), &[0b101, 0, 0, 0x80], b"", &mut out);
            let p = decode(&out).unwrap();
            assert_eq!(p.sack, &[0b101, 0, 0, 0x80]);
            assert!(p.payload.is_empty());
        }
    }

    /// BEP 29's layout, byte by byte: a SYN as libtorrent sends one.
    #[test]
    fn spec_layout() {
        let mut out = Vec::new();
        encode(
            &Header {
                kind: Type::Syn,
                conn_id: 0xabcd,
                timestamp: 0x0102_0304,
                timestamp_diff: 0,
                wnd_size: 0x0010_0000,
                seq_nr: 1,
                ack_nr: 0,
            },
            &[],
            &[],
            &mut out,
        );
        assert_eq!(
            out,
            [0x41, 0, 0xab, 0xcd, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(out[0], 0x41);
        assert!(!is_utp(b"d1:ad2:id20:"));
        assert!(!is_utp(&[0x51]));
        assert!(!is_utp(&[0x42]));
        assert!(!is_utp(&[]));
    }

    #[test]
    fn unknown_extensions_are_skipped() {
        let mut out = Vec::new();
        encode(&header(Type::Data), &[], &[], &mut out);
        out[1] = 2; // an extension of type 2 ...
        out.extend_from_slice(&[1, 8, 1, 2, 3, 4, 5, 6, 7, 8]); // ... then a sack
        out.extend_from_slice(&[0, 4, 0xff, 0, 0, 0]);
        out.extend_from_slice(b"pay");
        let p = decode(&out).unwrap();
        assert_eq!(p.sack, &[0xff, 0, 0, 0]);
        assert_eq!(p.payload, b"pay");
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        let mut good = Vec::new();
        encode(&header(Type::State), &[1, 2, 3, 4], b"", &mut good);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[0] = 0x42;
        assert_eq!(decode(&bad), Err(DecodeError::Version));
        bad[0] = 0x51;
        assert_eq!(decode(&bad), Err(DecodeError::Type));
        let mut bad = good.clone();
        bad[21] = 0; // an empty sack
        assert_eq!(decode(&bad[..22]), Err(DecodeError::Extension));
        // An endless chain of extensions is cut off.
        let mut chain = Vec::new();
        encode(&header(Type::State), &[], b"", &mut chain);
        chain[1] = 9;
        for _ in 0..20 {
            chain.extend_from_slice(&[9, 0]);
        }
        assert_eq!(decode(&chain), Err(DecodeError::Extension));
    }

    #[test]
    fn padding_reaches_the_size_and_decodes_to_the_same_packet() {
        let h = header(Type::Data);
        let payload = vec![7u8; 100];
        for sack in [&[][..], &[1, 0, 0, 0][..]] {
            let mut plain = Vec::new();
            encode(&h, sack, &payload, &mut plain);
            for size in [
                0,
                plain.len(),
                plain.len() + 1,
                plain.len() + 2,
                500,
                1300,
                1420,
            ] {
                let mut out = Vec::new();
                encode_padded(&h, sack, &payload, size, &mut out);
                let want = if size == plain.len() + 1 {
                    size + 1
                } else {
                    size.max(plain.len())
                };
                assert_eq!(out.len(), want, "size {size}, sack {}", sack.len());
                let p = decode(&out).unwrap();
                assert_eq!(p.header, h);
                assert_eq!(p.sack, sack);
                assert_eq!(p.payload, &payload[..]);
            }
        }
        // Capped: never more padding than the decoder's extension limit reads.
        let mut out = Vec::new();
        encode_padded(&h, &[1, 0, 0, 0], &payload, 60_000, &mut out);
        assert!(decode(&out).is_ok());
    }
}
