//! Identifier types shared by every layer: they are checked once, when they are built, so the
//! functions that take them need not check again.

use ::core::net::{IpAddr, SocketAddr};
use std::fmt;

use super::hex;

/// The SHA1 of the exact bytes of a torrent's `info` dictionary (BitTorrent v1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash([u8; 20]);

impl InfoHash {
    /// Wraps 20 raw bytes. Every 20-byte value is a possible SHA1 output, so this cannot fail.
    pub const fn from_bytes(bytes: [u8; 20]) -> Self {
        InfoHash(bytes)
    }

    /// Takes the hash from a slice that must be exactly 20 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(InfoHash(bytes.try_into().ok()?))
    }

    /// Parses 40 hexadecimal digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode::<20>(text).map(InfoHash)
    }

    /// The raw 20 bytes, as they go on the wire.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// Lower-case hexadecimal, the form every client and tracker web page shows.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

/// A BitTorrent v2 info hash (BEP 52): the SHA-256 of the info dictionary's exact bytes.
/// Handshakes, trackers and the DHT carry it truncated to 20 bytes ([`InfoHashV2::truncated`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHashV2([u8; 32]);

impl InfoHashV2 {
    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        InfoHashV2(bytes)
    }

    /// Parses 64 hexadecimal digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode::<32>(text).map(InfoHashV2)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 20 bytes, the form v2 peers use in handshakes, tracker announces and DHT
    /// lookups (BEP 52).
    pub fn truncated(&self) -> InfoHash {
        let mut short = [0u8; 20];
        short.copy_from_slice(&self.0[..20]);
        InfoHash(short)
    }

    /// Lower-case hexadecimal.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHashV2({})", self.to_hex())
    }
}

/// A peer's 20-byte id from its handshake. Any bytes are allowed by the protocol.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId([u8; 20]);

impl PeerId {
    /// Wraps 20 raw bytes.
    pub const fn from_bytes(bytes: [u8; 20]) -> Self {
        PeerId(bytes)
    }

    /// Takes the id from a slice that must be exactly 20 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(PeerId(bytes.try_into().ok()?))
    }

    /// Builds an Azureus-style id, `-RT0100-` followed by twelve bytes the caller draws from
    /// its own (seeded) randomness. The core never draws randomness itself.
    pub fn generate(random: [u8; 12]) -> Self {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(PEER_ID_PREFIX);
        // Keep the random tail printable, as most clients do, so logs and trackers show it.
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        for (dst, r) in id[8..].iter_mut().zip(random) {
            *dst = ALPHABET[usize::from(r) % ALPHABET.len()];
        }
        PeerId(id)
    }

    /// The raw 20 bytes.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// Lower-case hexadecimal.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// The id with printable ASCII kept and every other byte escaped as `\xNN`, so that
    /// `-lt0D80-...` style prefixes can be read by a person.
    pub fn printable(&self) -> String {
        let mut s = String::with_capacity(20);
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                s.push(char::from(b));
            } else {
                s.push_str(&format!("\\x{b:02x}"));
            }
        }
        s
    }

    /// The client named by an Azureus-style prefix (`-XXvvvv-`), e.g. `libtorrent 2.0.8.0`
    /// for `-LT2080-`, or `None` when the id does not follow that convention.
    pub fn client(&self) -> Option<String> {
        let id = &self.0;
        if id[0] != b'-' || id[7] != b'-' {
            return None;
        }
        let code = std::str::from_utf8(&id[1..3]).ok()?;
        if !id[1..3].iter().all(u8::is_ascii_alphanumeric)
            || !id[3..7].iter().all(u8::is_ascii_alphanumeric)
        {
            return None;
        }
        let name = match code {
            "RT" => "ringtorrent",
            "LT" => "libtorrent (rasterbar)",
            "lt" => "libTorrent (rakshasa)",
            "TR" => "Transmission",
            "qB" => "qBittorrent",
            "DE" => "Deluge",
            "AZ" => "Vuze",
            "UT" => "µTorrent",
            "BT" => "BitTorrent",
            "rq" | "RQ" => "rqbit",
            "A2" => "aria2",
            _ => return Some(format!("unknown client {code}")),
        };
        let version: Vec<String> = id[3..7]
            .iter()
            .map(|&c| char::from(c).to_string())
            .collect();
        Some(format!("{name} {}", version.join(".")))
    }
}

/// The prefix of ringtorrent's own peer ids: client code `RT`, version 0.1.0.0.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-RT0100-";

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.printable())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.printable())
    }
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports
/// for an IPv4 peer) turned back into the IPv4 address it carries; any other address as is.
/// Peer addresses inside the engine are never IPv4-mapped: one peer has one address whichever
/// socket it came through, so per-IP caps, bans, PEX and the choker's local-peer test see it
/// the same way.
pub fn unmap_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// `addr` with its IP unmapped as [`unmap_ip`] does, its port kept.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap_ip(addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_hash_hex_round_trip() {
        let h = InfoHash::from_bytes([0xab; 20]);
        assert_eq!(InfoHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(InfoHash::from_slice(&[0u8; 19]), None);
    }

    #[test]
    fn generated_peer_id_is_printable_and_prefixed() {
        let id = PeerId::generate([0, 1, 2, 3, 250, 251, 252, 253, 254, 255, 7, 8]);
        assert_eq!(&id.as_bytes()[..8], PEER_ID_PREFIX);
        assert!(id.as_bytes().iter().all(u8::is_ascii_graphic));
        assert_eq!(id.client().as_deref(), Some("ringtorrent 0.1.0.0"));
    }

    #[test]
    fn printable_escapes_binary() {
        let mut raw = *b"-LT2080-abcdefghijkl";
        raw[19] = 0;
        let id = PeerId::from_bytes(raw);
        assert_eq!(id.printable(), "-LT2080-abcdefghijk\\x00");
        assert_eq!(
            id.client().as_deref(),
            Some("libtorrent (rasterbar) 2.0.8.0")
        );
        assert_eq!(PeerId::from_bytes([0xff; 20]).client(), None);
    }

    #[test]
    fn unmapping() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:6881".parse().unwrap();
        assert_eq!(unmap(mapped), "10.1.2.3:6881".parse().unwrap());
        for plain in [
            "[::1]:1",
            "[fe80::1]:2",
            "127.0.0.1:3",
            "[::]:4",
            "[64:ff9b::1.2.3.4]:5",
        ] {
            let a: SocketAddr = plain.parse().unwrap();
            assert_eq!(unmap(a), a, "{plain}");
        }
    }
}

/// A peer connection's key within one torrent (its slot in the torrent's peer slab). The picker
/// and choker name peers by it; it is only meaningful inside the torrent that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u32);
