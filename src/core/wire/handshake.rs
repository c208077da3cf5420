//! The 68-byte BitTorrent handshake (BEP 3) and its reserved bits.
//!
//! Layout: the byte 19, the 19 bytes `BitTorrent protocol`, 8 reserved bytes, the 20-byte info
//! hash and the 20-byte peer id. The first 48 bytes can be decoded on their own
//! ([`Handshake::decode_prefix`]): a listening driver learns the info hash from them and routes
//! the connection to its torrent (or drops it) before the peer id arrives, which some clients
//! send only after they have seen our handshake.

use std::fmt;

use super::error::HandshakeError;
use super::input::{Decoded, SplitBytes};
use crate::core::types::{InfoHash, PeerId};

/// The protocol name every BitTorrent v1 handshake carries after its length byte.
pub const PROTOCOL_NAME: &[u8; 19] = b"BitTorrent protocol";

/// The length of a whole handshake: 1 + 19 + 8 + 20 + 20 bytes.
pub const HANDSHAKE_LEN: usize = 68;

/// The length of the part of a handshake up to and including the info hash, which is what a
/// listening driver needs to route a connection.
pub const HANDSHAKE_PREFIX_LEN: usize = 48;

const NAME_END: usize = 20;
const RESERVED_END: usize = 28;

/// A reserved-bit capability that this codec knows by name.
///
/// The codec only reports and sets these bits; what a connection may do when they are (or are
/// not) set on both sides is the core's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReservedFlag {
    /// The peer runs a DHT node (BEP 5) and may send `port` messages: `reserved[7] & 0x01`.
    Dht,
    /// The peer supports the Fast extension (BEP 6): `reserved[7] & 0x04`.
    Fast,
    /// The peer supports the extension protocol (BEP 10): `reserved[5] & 0x10`.
    ExtensionProtocol,
    /// The peer speaks BitTorrent v2 (BEP 52) and may upgrade a hybrid torrent's connection
    /// to its v2 info hash: `reserved[7] & 0x10`.
    V2,
}

impl ReservedFlag {
    /// Every named flag, in the order they are listed when printed.
    pub const ALL: [ReservedFlag; 4] = [
        ReservedFlag::Dht,
        ReservedFlag::Fast,
        ReservedFlag::ExtensionProtocol,
        ReservedFlag::V2,
    ];

    /// The flag's position as BEP 10 counts it: bit number from the right of the 64-bit
    /// big-endian reserved field, starting at 0 (so BEP 10's own bit is 20).
    pub const fn bit(self) -> u8 {
        match self {
            ReservedFlag::Dht => 0,
            ReservedFlag::Fast => 2,
            ReservedFlag::ExtensionProtocol => 20,
            ReservedFlag::V2 => 4,
        }
    }

    /// A short lower-case name for logs and the command line.
    pub const fn name(self) -> &'static str {
        match self {
            ReservedFlag::Dht => "dht",
            ReservedFlag::Fast => "fast",
            ReservedFlag::ExtensionProtocol => "extension protocol",
            ReservedFlag::V2 => "v2",
        }
    }

    const fn from_bit(bit: u8) -> Option<ReservedFlag> {
        match bit {
            0 => Some(ReservedFlag::Dht),
            2 => Some(ReservedFlag::Fast),
            20 => Some(ReservedFlag::ExtensionProtocol),
            4 => Some(ReservedFlag::V2),
            _ => None,
        }
    }
}

impl fmt::Display for ReservedFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One set bit of a [`Reserved`] field, named when the codec knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservedBit {
    /// A bit with a name.
    Known(ReservedFlag),
    /// A bit this codec has no name for, numbered as in [`ReservedFlag::bit`]. Other clients
    /// set several (libtorrent's v2 upgrade bit, Azureus messaging, NAT traversal...), and
    /// showing them helps identify a peer.
    Unknown(u8),
}

impl fmt::Display for ReservedBit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReservedBit::Known(flag) => f.write_str(flag.name()),
            ReservedBit::Unknown(bit) => write!(f, "bit {bit}"),
        }
    }
}

/// The 8 reserved bytes of a handshake, where clients announce optional capabilities.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Reserved([u8; 8]);

impl Reserved {
    /// No capability announced.
    pub const NONE: Reserved = Reserved([0; 8]);

    /// Wraps the 8 bytes as received; every bit pattern is allowed.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Reserved(bytes)
    }

    /// The 8 bytes as they go on the wire.
    pub const fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// Whether bit `bit` (counted from the right, see [`ReservedFlag::bit`]) is set; bits past
    /// 63 are never set.
    pub const fn bit(&self, bit: u8) -> bool {
        match mask(bit) {
            Some(mask) => u64::from_be_bytes(self.0) & mask != 0,
            None => false,
        }
    }

    /// Returns a copy with bit `bit` set or cleared; bits past 63 are ignored.
    pub const fn with_bit(self, bit: u8, on: bool) -> Self {
        let bits = u64::from_be_bytes(self.0);
        let bits = match mask(bit) {
            Some(mask) if on => bits | mask,
            Some(mask) => bits & !mask,
            None => bits,
        };
        Reserved(bits.to_be_bytes())
    }

    /// Whether the named capability is announced.
    pub const fn contains(&self, flag: ReservedFlag) -> bool {
        self.bit(flag.bit())
    }

    /// Returns a copy with the named capability set or cleared, for building our handshake in
    /// a `const`.
    pub const fn with(self, flag: ReservedFlag, on: bool) -> Self {
        self.with_bit(flag.bit(), on)
    }

    /// Sets or clears the named capability.
    pub fn set(&mut self, flag: ReservedFlag, on: bool) {
        *self = self.with(flag, on);
    }

    /// Whether the peer runs a DHT node (BEP 5).
    pub const fn dht(&self) -> bool {
        self.contains(ReservedFlag::Dht)
    }

    /// Announces or withdraws a DHT node (BEP 5).
    pub fn set_dht(&mut self, on: bool) {
        self.set(ReservedFlag::Dht, on);
    }

    /// Whether the peer supports the Fast extension (BEP 6).
    pub const fn fast(&self) -> bool {
        self.contains(ReservedFlag::Fast)
    }

    /// Announces or withdraws the Fast extension (BEP 6).
    pub fn set_fast(&mut self, on: bool) {
        self.set(ReservedFlag::Fast, on);
    }

    /// Whether the peer supports the extension protocol (BEP 10).
    pub const fn extension_protocol(&self) -> bool {
        self.contains(ReservedFlag::ExtensionProtocol)
    }

    /// Announces or withdraws the extension protocol (BEP 10).
    pub fn set_extension_protocol(&mut self, on: bool) {
        self.set(ReservedFlag::ExtensionProtocol, on);
    }

    /// Every set bit, named where known, from bit 63 down to bit 0 (the order the bytes are
    /// sent in), so that a log line shows everything a peer announced.
    pub fn bits(&self) -> impl Iterator<Item = ReservedBit> + '_ {
        (0..64u8)
            .rev()
            .filter(|&bit| self.bit(bit))
            .map(|bit| match ReservedFlag::from_bit(bit) {
                Some(flag) => ReservedBit::Known(flag),
                None => ReservedBit::Unknown(bit),
            })
    }

    /// Only the bits this codec has no name for.
    pub fn unknown(&self) -> Reserved {
        ReservedFlag::ALL
            .iter()
            .fold(*self, |reserved, &flag| reserved.with(flag, false))
    }
}

/// The mask of bit `bit` (counted from the right) in the reserved bytes read as a big-endian
/// `u64`, or `None` past bit 63.
const fn mask(bit: u8) -> Option<u64> {
    1u64.checked_shl(bit as u32)
}

impl fmt::Display for Reserved {
    /// Lists the set bits by name, for example `dht, fast, extension protocol, bit 43`, or
    /// `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for bit in self.bits() {
            if any {
                f.write_str(", ")?;
            }
            write!(f, "{bit}")?;
            any = true;
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reserved(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ": {self})")
    }
}

/// The part of a handshake that identifies the torrent, available before the peer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandshakePrefix {
    /// The capabilities the peer announces.
    pub reserved: Reserved,
    /// The torrent the peer wants to talk about.
    pub info_hash: InfoHash,
}

/// A whole BitTorrent handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// The capabilities the sender announces.
    pub reserved: Reserved,
    /// The torrent the connection is about.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

impl Handshake {
    /// Builds a handshake; every combination of fields is valid.
    pub const fn new(reserved: Reserved, info_hash: InfoHash, peer_id: PeerId) -> Self {
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// The 68 bytes as they go on the wire.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        let parts: [&[u8]; 5] = [
            &[19],
            PROTOCOL_NAME,
            self.reserved.as_bytes(),
            self.info_hash.as_bytes(),
            self.peer_id.as_bytes(),
        ];
        let mut at = 0;
        for part in parts {
            for (dst, &src) in out.iter_mut().skip(at).zip(part) {
                *dst = src;
            }
            at += part.len();
        }
        out
    }

    /// Appends the 68 handshake bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Decodes a whole handshake from the start of `input`.
    ///
    /// A wrong protocol length byte or name is reported as soon as the first wrong byte is
    /// buffered, so a stray HTTP request or port scan is dropped without waiting for 68 bytes.
    pub fn decode<'a>(
        input: impl Into<SplitBytes<'a>>,
    ) -> Result<Decoded<Handshake>, HandshakeError> {
        let input = input.into();
        let prefix = match Handshake::decode_prefix(input)? {
            Decoded::Complete { value, .. } => value,
            Decoded::Incomplete { .. } => {
                return Ok(Decoded::need(HANDSHAKE_LEN.saturating_sub(input.len())));
            }
        };
        let rest = input.split_at(HANDSHAKE_PREFIX_LEN).map(|(_, rest)| rest);
        Ok(match rest.map(Handshake::decode_peer_id) {
            Some(Decoded::Complete { value, .. }) => Decoded::Complete {
                value: Handshake::new(prefix.reserved, prefix.info_hash, value),
                consumed: HANDSHAKE_LEN,
            },
            _ => Decoded::need(HANDSHAKE_LEN.saturating_sub(input.len())),
        })
    }

    /// Decodes the first 48 bytes of a handshake (through the info hash); `consumed` is 48.
    ///
    /// A listening driver calls this to find the torrent, then reads the peer id with
    /// [`decode_peer_id`](Self::decode_peer_id) from the bytes after the prefix.
    pub fn decode_prefix<'a>(
        input: impl Into<SplitBytes<'a>>,
    ) -> Result<Decoded<HandshakePrefix>, HandshakeError> {
        let input = input.into();
        check_protocol(input)?;
        let reserved = input.read_array::<8>(NAME_END);
        let info_hash = input.read_array::<20>(RESERVED_END);
        Ok(match (reserved, info_hash) {
            (Some(reserved), Some(info_hash)) => Decoded::Complete {
                value: HandshakePrefix {
                    reserved: Reserved::from_bytes(reserved),
                    info_hash: InfoHash::from_bytes(info_hash),
                },
                consumed: HANDSHAKE_PREFIX_LEN,
            },
            _ => Decoded::need(HANDSHAKE_PREFIX_LEN.saturating_sub(input.len())),
        })
    }

    /// Decodes the 20-byte peer id that ends a handshake, from input that starts right after
    /// the prefix. Any 20 bytes are a valid peer id, so this can only be incomplete.
    pub fn decode_peer_id<'a>(input: impl Into<SplitBytes<'a>>) -> Decoded<PeerId> {
        let input = input.into();
        match input.read_array::<20>(0) {
            Some(bytes) => Decoded::Complete {
                value: PeerId::from_bytes(bytes),
                consumed: 20,
            },
            None => Decoded::need(20usize.saturating_sub(input.len())),
        }
    }
}

/// Checks the length byte and as much of the protocol name as has arrived.
fn check_protocol(input: SplitBytes<'_>) -> Result<(), HandshakeError> {
    match input.get(0) {
        None | Some(19) => {}
        Some(found) => return Err(HandshakeError::ProtocolLength { found }),
    }
    let have = input.len().min(NAME_END);
    let name = input.subrange(1.min(have), have).unwrap_or_default();
    if name.iter().zip(PROTOCOL_NAME.iter()).all(|(a, &b)| a == b) {
        Ok(())
    } else {
        Err(HandshakeError::ProtocolName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handshake {
        let mut reserved = Reserved::NONE;
        reserved.set_dht(true);
        reserved.set_fast(true);
        reserved.set_extension_protocol(true);
        Handshake::new(
            reserved,
            InfoHash::from_bytes([0xaa; 20]),
            PeerId::from_bytes(*b"-RT0100-abcdefghijkl"),
        )
    }

    #[test]
    fn encodes_the_documented_layout() {
        let bytes = sample().to_bytes();
        assert_eq!(bytes[0], 19);
        assert_eq!(&bytes[1..20], PROTOCOL_NAME);
        assert_eq!(&bytes[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x05]);
        assert_eq!(&bytes[28..48], &[0xaa; 20]);
        assert_eq!(&bytes[48..68], b"-RT0100-abcdefghijkl");
        let mut out = vec![1, 2];
        sample().encode(&mut out);
        assert_eq!(&out[2..], &bytes[..]);
    }

    #[test]
    fn decodes_at_every_split_and_with_trailing_bytes() {
        let mut bytes = sample().to_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 1, 2]);
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            let got = Handshake::decode((a, b)).unwrap();
            assert_eq!(got.complete(), Some((sample(), 68)));
            let prefix = Handshake::decode_prefix((a, b))
                .unwrap()
                .complete()
                .unwrap();
            assert_eq!(prefix.0.info_hash, sample().info_hash);
            assert_eq!(prefix.0.reserved, sample().reserved);
            assert_eq!(prefix.1, 48);
        }
    }

    #[test]
    fn reports_how_much_is_missing() {
        let bytes = sample().to_bytes();
        for have in 0..HANDSHAKE_LEN {
            let got = Handshake::decode(&bytes[..have]).unwrap();
            assert_eq!(got, Decoded::need(HANDSHAKE_LEN - have), "have {have}");
            let prefix = Handshake::decode_prefix(&bytes[..have]).unwrap();
            if have < HANDSHAKE_PREFIX_LEN {
                assert_eq!(prefix, Decoded::need(HANDSHAKE_PREFIX_LEN - have));
            } else {
                assert!(prefix.is_complete());
                let id = Handshake::decode_peer_id(&bytes[HANDSHAKE_PREFIX_LEN..have]);
                assert_eq!(id, Decoded::need(HANDSHAKE_LEN - have));
            }
        }
        let id = Handshake::decode_peer_id(&bytes[HANDSHAKE_PREFIX_LEN..]);
        assert_eq!(id.complete(), Some((sample().peer_id, 20)));
    }

    #[test]
    fn rejects_a_wrong_length_byte_at_once() {
        let err = Handshake::decode(b"G").unwrap_err();
        assert_eq!(err, HandshakeError::ProtocolLength { found: b'G' });
        assert!(err.to_string().contains("not a BitTorrent peer"));
        let mut bytes = sample().to_bytes();
        bytes[0] = 18;
        assert_eq!(
            Handshake::decode_prefix(&bytes).unwrap_err(),
            HandshakeError::ProtocolLength { found: 18 }
        );
    }

    #[test]
    fn rejects_a_wrong_name_as_soon_as_it_differs() {
        let err = Handshake::decode(b"\x13BitTorrent_").unwrap_err();
        assert_eq!(err, HandshakeError::ProtocolName);
        assert!(err.to_string().contains("not a BitTorrent peer"));
        assert!(!Handshake::decode(b"\x13BitTorrent ").unwrap().is_complete());
        let mut bytes = sample().to_bytes();
        bytes[19] = b'L';
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            assert_eq!(
                Handshake::decode((a, b)).unwrap_err(),
                HandshakeError::ProtocolName
            );
        }
    }

    #[test]
    fn reserved_flags_match_the_beps() {
        let mut r = Reserved::NONE;
        r.set_dht(true);
        assert_eq!(r.as_bytes()[7], 0x01);
        r.set_fast(true);
        assert_eq!(r.as_bytes()[7], 0x05);
        r.set_extension_protocol(true);
        assert_eq!(r.as_bytes()[5], 0x10);
        assert!(r.dht() && r.fast() && r.extension_protocol());
        r.set_fast(false);
        assert!(!r.fast() && r.dht());
        assert_eq!(r.as_bytes()[7], 0x01);
        const OURS: Reserved = Reserved::NONE
            .with(ReservedFlag::Fast, true)
            .with(ReservedFlag::ExtensionProtocol, true);
        assert_eq!(OURS.as_bytes(), &[0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert!(!Reserved::NONE.bit(64));
        assert_eq!(Reserved::NONE.with_bit(200, true), Reserved::NONE);
    }

    #[test]
    fn reserved_lists_known_and_unknown_bits() {
        // libtorrent: extension protocol, fast, dht and the v2 upgrade bit (reserved[7] & 0x10).
        let r = Reserved::from_bytes([0x80, 0, 0, 0, 0, 0x10, 0, 0x15]);
        assert!(r.contains(ReservedFlag::V2));
        let r = r.with(ReservedFlag::V2, false).with_bit(4, true);
        assert_eq!(r.as_bytes()[7], 0x15);
        let bits: Vec<ReservedBit> = r.bits().collect();
        assert_eq!(
            bits,
            [
                ReservedBit::Unknown(63),
                ReservedBit::Known(ReservedFlag::ExtensionProtocol),
                ReservedBit::Known(ReservedFlag::V2),
                ReservedBit::Known(ReservedFlag::Fast),
                ReservedBit::Known(ReservedFlag::Dht),
            ]
        );
        assert_eq!(r.to_string(), "bit 63, extension protocol, v2, fast, dht");
        assert_eq!(
            r.unknown(),
            Reserved::from_bytes([0x80, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(Reserved::NONE.to_string(), "none");
        assert_eq!(
            format!("{:?}", Reserved::NONE.with(ReservedFlag::Dht, true)),
            "Reserved(0000000000000001: dht)"
        );
        for flag in ReservedFlag::ALL {
            assert!(Reserved::NONE.with(flag, true).contains(flag));
            assert_eq!(Reserved::NONE.with(flag, true).unknown(), Reserved::NONE);
        }
    }
}
