//! BitTorrent v2 merkle trees (BEP 52), as pure functions over SHA-256 hashes.
//!
//! A file's tree has one leaf per 16 KiB block of the file (the last block may be shorter; its
//! leaf is the SHA-256 of the bytes there are). The leaf count is padded to a power of two
//! with zero hashes (32 zero bytes), and each node is the SHA-256 of its two children
//! concatenated. The root is the file's `pieces root`. A piece of `piece length` bytes covers
//! `piece length / 16 KiB` leaves; the nodes at that height form the file's *piece layer*,
//! which the torrent's `piece layers` carries for every file larger than one piece. A piece
//! layer's own padding (past the file's last piece) is the root of a subtree of zero leaves,
//! not a zero hash.
//!
//! A file of at most one piece has no piece layer: its root, over its leaves padded to the
//! next power of two, is what its one piece must hash to ([`file_root`]).

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// The leaf size: every file is hashed in 16 KiB blocks.
pub const BLOCK_LEN: u64 = 16 * 1024;

/// The most proof hashes [`verify_proof`] takes: a tree of at most 2^63 leaves.
pub const MAX_PROOF_LEN: usize = 63;

/// The hash of one block of data (a leaf).
pub fn leaf(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// The parent of two nodes.
pub fn parent(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of a subtree of `2^height` zero leaves: the padding a layer `height` levels above
/// the leaves uses.
pub fn pad_hash(height: u32) -> Hash {
    let mut h = [0u8; 32];
    for _ in 0..height {
        h = parent(&h, &h);
    }
    h
}

/// The number of 16 KiB blocks (leaves) in `len` bytes.
pub fn block_count(len: u64) -> u64 {
    len.div_ceil(BLOCK_LEN)
}

/// The root of a tree whose bottom layer is `layer` (nodes `height` levels above the leaves),
/// padded to `width` nodes (a power of two, at least `layer.len()`) with `pad_hash(height)`.
/// An empty layer gives the pad of the whole width.
pub fn root_of_layer(layer: &[Hash], height: u32, width: usize) -> Hash {
    debug_assert!(width.is_power_of_two() && width >= layer.len());
    let mut pad = pad_hash(height);
    let mut nodes: Vec<Hash> = layer.to_vec();
    let mut width = width.max(1);
    while width > 1 {
        let next: Vec<Hash> = (0..width / 2)
            .map(|i| {
                let left = nodes.get(2 * i).unwrap_or(&pad);
                let right = nodes.get(2 * i + 1).unwrap_or(&pad);
                parent(left, right)
            })
            .take(nodes.len().div_ceil(2))
            .collect();
        nodes = next;
        pad = parent(&pad, &pad);
        width /= 2;
    }
    nodes.first().copied().unwrap_or(pad)
}

/// The `pieces root` of a file from its leaves (at least one). The leaf count is padded to the
/// next power of two with zero hashes.
pub fn file_root(leaves: &[Hash]) -> Hash {
    root_of_layer(leaves, 0, leaves.len().next_power_of_two())
}

/// The piece layer of a file from its leaves: one hash per `blocks_per_piece` leaves (a power
/// of two), the last piece's leaves padded with zero hashes.
pub fn piece_layer(leaves: &[Hash], blocks_per_piece: usize) -> Vec<Hash> {
    leaves
        .chunks(blocks_per_piece.max(1))
        .map(|piece| root_of_layer(piece, 0, blocks_per_piece.max(1)))
        .collect()
}

/// The root a piece layer hashes up to, for pieces of `blocks_per_piece` leaves (a power of
/// two): the layer padded to a power of two with roots of all-zero pieces. Compare with the
/// file's `pieces root` to check a `piece layers` entry.
pub fn root_from_piece_layer(layer: &[Hash], blocks_per_piece: usize) -> Hash {
    let height = blocks_per_piece.max(1).trailing_zeros();
    root_of_layer(layer, height, layer.len().next_power_of_two())
}

/// The hash that the piece at index `piece` of a file must have: the entry of its piece layer,
/// or for a file of at most one piece (no layer) its root.
pub fn expected_piece_hash(root: &Hash, layer: Option<&[Hash]>, piece: usize) -> Option<Hash> {
    match layer {
        Some(layer) => layer.get(piece).copied(),
        None if piece == 0 => Some(*root),
        None => None,
    }
}

/// The hash of one piece's data as [`expected_piece_hash`] states it. `whole_file_piece` is
/// true for the one piece of a file no longer than a piece, whose leaves are padded only to
/// the next power of two (it is the file's root); any other piece is padded to
/// `blocks_per_piece` leaves.
pub fn piece_hash(data: &[u8], blocks_per_piece: usize, whole_file_piece: bool) -> Hash {
    let leaves: Vec<Hash> = if data.is_empty() {
        vec![leaf(&[])]
    } else {
        data.chunks(BLOCK_LEN as usize).map(leaf).collect()
    };
    if whole_file_piece {
        file_root(&leaves)
    } else {
        root_of_layer(&leaves, 0, blocks_per_piece.max(1))
    }
}

/// Checks that `node`, at position `index` of its layer, hashes up through `proof` (its
/// uncles, bottom first) to `root`. A proof longer than [`MAX_PROOF_LEN`] is refused.
pub fn verify_proof(node: &Hash, mut index: u64, proof: &[Hash], root: &Hash) -> bool {
    if proof.len() > MAX_PROOF_LEN {
        return false;
    }
    let mut h = *node;
    for sibling in proof {
        h = if index % 2 == 0 {
            parent(&h, sibling)
        } else {
            parent(sibling, &h)
        };
        index /= 2;
    }
    index == 0 && h == *root
}

/// The uncles of the node at `index` in `layer` (padded to a power of two with
/// `pad_hash(height)`), bottom first: what [`verify_proof`] takes to reach the root.
pub fn proof(layer: &[Hash], height: u32, mut index: usize) -> Vec<Hash> {
    let mut nodes = layer.to_vec();
    let mut pad = pad_hash(height);
    let mut width = layer.len().next_power_of_two();
    let mut out = Vec::new();
    while width > 1 {
        out.push(nodes.get(index ^ 1).copied().unwrap_or(pad));
        nodes = (0..nodes.len().div_ceil(2))
            .map(|i| {
                let left = nodes.get(2 * i).unwrap_or(&pad);
                let right = nodes.get(2 * i + 1).unwrap_or(&pad);
                parent(left, right)
            })
            .collect();
        pad = parent(&pad, &pad);
        index /= 2;
        width /= 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_root(mut layer: Vec<Hash>) -> Hash {
        while layer.len() > 1 {
            layer = layer.chunks(2).map(|p| parent(&p[0], &p[1])).collect();
        }
        layer[0]
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf(&[i as u8; 100])).collect()
    }

    #[test]
    fn pad_hashes_are_roots_of_zero_subtrees() {
        assert_eq!(pad_hash(0), [0; 32]);
        assert_eq!(pad_hash(2), naive_root(vec![[0; 32]; 4]));
    }

    #[test]
    fn file_root_pads_with_zero_leaves() {
        let l = leaves(5);
        let mut padded = l.clone();
        padded.resize(8, [0; 32]);
        assert_eq!(file_root(&l), naive_root(padded));
        assert_eq!(file_root(&l[..1]), l[0]);
    }

    #[test]
    fn piece_layer_hashes_up_to_the_file_root() {
        for n in [1, 3, 4, 5, 9, 17] {
            let l = leaves(n);
            for bpp in [1, 2, 4] {
                let layer = piece_layer(&l, bpp);
                assert_eq!(layer.len(), n.div_ceil(bpp));
                // A file of more than one piece: the layer reaches the root. (A file of one
                // piece is padded to the next power of two only, which may be narrower.)
                if n > bpp {
                    assert_eq!(
                        root_from_piece_layer(&layer, bpp),
                        file_root(&l),
                        "{n} {bpp}"
                    );
                }
            }
        }
    }

    #[test]
    fn proofs_verify_and_wrong_ones_do_not() {
        let l = leaves(11);
        let root = file_root(&l);
        for i in 0..l.len() {
            let p = proof(&l, 0, i);
            assert_eq!(p.len(), 4);
            assert!(verify_proof(&l[i], i as u64, &p, &root));
            assert!(!verify_proof(&l[i], (i ^ 1) as u64, &p, &root));
            assert!(!verify_proof(&l[i], i as u64 + 16, &p, &root));
            let mut bad = p.clone();
            bad[1][0] ^= 1;
            assert!(!verify_proof(&l[i], i as u64, &bad, &root));
        }
        // A piece-layer node proves up to the root too.
        let layer = piece_layer(&l, 4);
        let p = proof(&layer, 2, 2);
        assert!(verify_proof(&layer[2], 2, &p, &root));
        assert!(!verify_proof(&layer[2], 2, &vec![[0; 32]; 64], &root));
    }

    #[test]
    fn piece_hash_matches_layer_and_root() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let l: Vec<Hash> = data.chunks(16384).map(leaf).collect();
        let layer = piece_layer(&l, 2);
        assert_eq!(piece_hash(&data[..32768], 2, false), layer[0]);
        assert_eq!(piece_hash(&data[98304..], 2, false), layer[3]);
        let short = [leaf(&data[..16384]), leaf(&data[16384..20000])];
        assert_eq!(
            piece_hash(&data[..20000], 4, true),
            parent(&short[0], &short[1])
        );
        assert_eq!(piece_hash(&[], 4, true), leaf(&[]));
    }
}
