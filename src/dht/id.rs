//! Node ids: XOR distance, bucket ranges, random ids, and BEP 42's ids derived from the node's
//! external IP (crc32c of the masked address), which others can check against the address a
//! node speaks from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::core::Rng;

use super::NodeId;

impl NodeId {
    /// A uniformly random id.
    pub fn random(rng: &mut Rng) -> NodeId {
        let mut id = [0u8; 20];
        rng.fill(&mut id);
        NodeId(id)
    }

    /// The XOR distance to `other`, comparable as a big-endian number.
    pub fn distance(&self, other: &[u8; 20]) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, slot) in d.iter_mut().enumerate() {
            *slot = self.0[i] ^ other[i];
        }
        d
    }

    /// How many leading bits this id shares with `other` (160 when equal).
    pub fn common_prefix(&self, other: &[u8; 20]) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }

    /// A random id that shares exactly `prefix` leading bits with this one (for refreshing the
    /// bucket of that depth); `prefix` of 160 or more returns this id.
    pub fn random_at_depth(&self, prefix: usize, rng: &mut Rng) -> NodeId {
        if prefix >= 160 {
            return *self;
        }
        let mut id = NodeId::random(rng).0;
        for bit in 0..=prefix {
            let byte = bit / 8;
            let mask = 0x80u8 >> (bit % 8);
            let mine = self.0[byte] & mask;
            // Equal on the prefix, different on the bit after it.
            let want = if bit == prefix { mine ^ mask } else { mine };
            id[byte] = (id[byte] & !mask) | want;
        }
        NodeId(id)
    }

    /// A BEP 42 id for `ip`, with its random parts from `rng`.
    pub fn bep42(ip: IpAddr, rng: &mut Rng) -> NodeId {
        let r = (rng.next_u64() & 0xff) as u8;
        let mut id = NodeId::random(rng).0;
        let crc = bep42_crc(ip, r);
        id[0] = (crc >> 24) as u8;
        id[1] = (crc >> 16) as u8;
        id[2] = ((crc >> 8) as u8 & 0xf8) | (id[2] & 0x07);
        id[19] = r;
        NodeId(id)
    }

    /// Whether this id satisfies BEP 42 for a node at `ip`. Addresses BEP 42 exempts (loopback,
    /// private, link-local) satisfy it with any id.
    pub fn valid_for(&self, ip: IpAddr) -> bool {
        if is_bep42_exempt(ip) {
            return true;
        }
        let crc = bep42_crc(ip, self.0[19]);
        self.0[0] == (crc >> 24) as u8
            && self.0[1] == (crc >> 16) as u8
            && (self.0[2] & 0xf8) == ((crc >> 8) as u8 & 0xf8)
    }
}

/// BEP 42's crc32c of the masked address with the random 3 bits `r` worked in.
fn bep42_crc(ip: IpAddr, r: u8) -> u32 {
    match ip {
        IpAddr::V4(v4) => {
            let masked = u32::from(v4) & 0x030f_3fff;
            let with_r = masked | (u32::from(r & 0x07) << 29);
            crc32c(&with_r.to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let high = u128::from(v6) >> 64;
            let masked = (high as u64) & 0x0103_070f_1f3f_7fff;
            let with_r = masked | (u64::from(r & 0x07) << 61);
            crc32c(&with_r.to_be_bytes())
        }
    }
}

/// CRC-32C (Castagnoli), bitwise: it runs once per id check, on 4 or 8 bytes.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// Addresses BEP 42 does not apply to: loopback, private and link-local ranges.
pub fn is_bep42_exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || is_v6_local(&v6),
    }
}

/// Unique-local (fc00::/7) and link-local (fe80::/10) IPv6 ranges.
fn is_v6_local(v6: &Ipv6Addr) -> bool {
    let first = v6.segments()[0];
    (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

/// Whether a node at `ip` may be routed to when private addresses are not allowed: not
/// loopback, private, link-local, unspecified, multicast, broadcast or documentation space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                || v4 == Ipv4Addr::new(255, 255, 255, 255))
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || is_v6_local(&v6))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex20(s: &str) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap();
        }
        out
    }

    /// The table of bep_0042.rst: IP, rand, and an example id (its first 21 bits and last byte
    /// are what BEP 42 fixes).
    const VECTORS: [(&str, u8, &str); 5] = [
        (
            "124.31.75.21",
            1,
            "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401",
        ),
        (
            "21.75.31.124",
            86,
            "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256",
        ),
        (
            "65.23.51.170",
            22,
            "a5d43220bc8f112a3d426c84764f8c2a1150e616",
        ),
        (
            "84.124.73.14",
            65,
            "1b0321dd1bb1fe518101ceef99462b947a01ff41",
        ),
        (
            "43.213.53.83",
            90,
            "e56f6cbf5b7c4be0237986d5243b87aa6d51305a",
        ),
    ];

    #[test]
    fn bep42_test_vectors() {
        for (ip, r, example) in VECTORS {
            let ip: IpAddr = ip.parse().unwrap();
            let example = NodeId(hex20(example));
            assert!(example.valid_for(ip), "{ip}");
            let crc = bep42_crc(ip, r);
            assert_eq!(example.0[0], (crc >> 24) as u8, "{ip}");
            assert_eq!(example.0[1], (crc >> 16) as u8, "{ip}");
            assert_eq!(example.0[2] & 0xf8, (crc >> 8) as u8 & 0xf8, "{ip}");
            // One bit off in the prefix and it no longer matches.
            let mut bad = example;
            bad.0[1] ^= 0x10;
            assert!(!bad.valid_for(ip), "{ip}");
        }
    }

    #[test]
    fn generated_ids_validate_and_exempt_ranges_pass() {
        let mut rng = Rng::new(7);
        for ip in ["124.31.75.21", "2001:db8::1", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            let id = NodeId::bep42(ip, &mut rng);
            assert!(id.valid_for(ip));
            assert!(!id.valid_for("1.2.3.4".parse().unwrap()) || ip.to_string() == "1.2.3.4");
        }
        let any = NodeId([0x42; 20]);
        assert!(any.valid_for("127.0.0.1".parse().unwrap()));
        assert!(any.valid_for("192.168.1.9".parse().unwrap()));
        assert!(!any.valid_for("124.31.75.21".parse().unwrap()));
    }

    #[test]
    fn crc32c_known_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn distance_prefix_and_depth() {
        let a = NodeId([0; 20]);
        let mut b = [0u8; 20];
        b[2] = 0x10;
        assert_eq!(a.common_prefix(&b), 19);
        assert_eq!(a.common_prefix(&a.0), 160);
        assert_eq!(a.distance(&b), b);
        let mut rng = Rng::new(1);
        for depth in [0, 1, 7, 8, 9, 100, 159] {
            let r = a.random_at_depth(depth, &mut rng);
            assert_eq!(a.common_prefix(&r.0), depth);
        }
    }

    #[test]
    fn public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2a00:1450::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
