//! BEP 6's canonical allowed-fast set: the pieces a peer may download from us while choked,
//! derived from its IPv4 address and the info hash so every client offers the same pieces.

use ::core::net::IpAddr;

use sha1::{Digest, Sha1};

use super::InfoHash;

/// The first `k` pieces of `ip`'s allowed-fast set for a torrent of `piece_count` pieces, in
/// generation order. BEP 6 defines it for IPv4 only; IPv6 peers get none. A torrent with no
/// more than `k` pieces gets none either, since the set would be the whole torrent.
pub fn allowed_fast_set(ip: IpAddr, info_hash: &InfoHash, piece_count: u32, k: u32) -> Vec<u32> {
    let IpAddr::V4(v4) = ip else {
        return Vec::new();
    };
    if piece_count <= k {
        return Vec::new();
    }
    let mut x = Vec::with_capacity(24);
    x.extend_from_slice(&(u32::from(v4) & 0xFFFF_FF00).to_be_bytes());
    x.extend_from_slice(info_hash.as_bytes());
    let mut set = Vec::with_capacity(k as usize);
    while set.len() < k as usize {
        let digest: [u8; 20] = Sha1::digest(&x).into();
        for chunk in digest.chunks_exact(4) {
            if set.len() >= k as usize {
                break;
            }
            let y = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let index = y % piece_count;
            if !set.contains(&index) {
                set.push(index);
            }
        }
        x = digest.to_vec();
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example results published in BEP 6.
    #[test]
    fn matches_bep_6_examples() {
        let ip: IpAddr = "80.4.4.200".parse().unwrap();
        let hash = InfoHash::from_bytes([0xaa; 20]);
        assert_eq!(
            allowed_fast_set(ip, &hash, 1313, 7),
            vec![1059, 431, 808, 1217, 287, 376, 1188]
        );
        assert_eq!(
            allowed_fast_set(ip, &hash, 1313, 9),
            vec![1059, 431, 808, 1217, 287, 376, 1188, 353, 508]
        );
    }

    #[test]
    fn none_for_ipv6_or_tiny_torrents() {
        let hash = InfoHash::from_bytes([1; 20]);
        assert!(allowed_fast_set("::1".parse().unwrap(), &hash, 1000, 10).is_empty());
        assert!(allowed_fast_set("1.2.3.4".parse().unwrap(), &hash, 10, 10).is_empty());
    }
}
