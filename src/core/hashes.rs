//! BEP 52's hash messages in terms of a torrent's merkle trees: where a `hash request` falls
//! in a file's tree ([`locate`]), the answer from the piece layers we hold ([`LayerTrees`]),
//! and the check of an answer we asked for ([`verify`]). Pure: no I/O, no clock.
//!
//! A file's tree has `2^height` leaves (its 16 KiB blocks, padded with zero leaves); layer
//! `b` counted up from the leaves holds `2^(height - b)` nodes. A request names a file by its
//! `pieces root`, a `base` layer, `length` nodes of it starting at `index` (a power of two, a
//! multiple of it), and `proof_layers`: the answer carries the `length` nodes, then the
//! uncles that climb from the subtree they form towards the root, bottom first, one per
//! layer from `log2(length)` up to `proof_layers` layers above the base (the layers the
//! nodes themselves give are not repeated). With `proof_layers = height - base - 1` the
//! uncles reach the root.
//!
//! We answer only at the piece layer (`base = log2(piece length / 16 KiB)`), from the piece
//! layers the torrent carries; leaf requests (`base = 0`), which would need the data read
//! back, are rejected, as BEP 52 allows.

use std::collections::BTreeMap;
use std::time::Duration;

use super::api::Violation;
use super::config::Config;
use super::peer::Peer;
use super::wire::{HashRequest, Message, SplitBytes};
use super::Time;
use crate::limits::MAX_HASHES_PER_REQUEST;
use crate::metainfo::merkle::{self, Hash};
use crate::metainfo::{V2File, V2Info};

/// Hash requests answered per peer and second; more are rejected. libtorrent keeps at most
/// two in flight, so an honest peer never comes near this.
pub(crate) const HASH_REQUESTS_PER_SEC: u32 = 32;

/// Whether to answer a peer's hash request: `Ok(true)` to answer it, `Ok(false)` to reject
/// it (over [`HASH_REQUESTS_PER_SEC`]), and an error for a peer that asks while it holds
/// `send_buffer_high` unread: it asks faster than it reads, and nothing more is queued for it.
pub(crate) fn admit(peer: &mut Peer, config: &Config, now: Time) -> Result<bool, Violation> {
    if peer.send.len() >= config.send_buffer_high {
        return Err(Violation::HashRequestFlood);
    }
    let (since, count) = &mut peer.hash_window;
    if now.saturating_since(*since) >= Duration::from_secs(1) {
        *since = now;
        *count = 0;
    }
    *count += 1;
    Ok(*count <= HASH_REQUESTS_PER_SEC)
}

/// Queues the answer to `r`: `hashes` when there are some, else `hash reject`. Returns
/// whether the driver must be told.
pub(crate) fn send_answer(
    peer: &mut Peer,
    r: HashRequest,
    hashes: Option<&[Hash]>,
    now: Time,
) -> bool {
    match hashes {
        Some(hashes) => {
            let flat = hashes.concat();
            let msg = Message::Hashes {
                request: r,
                hashes: SplitBytes::single(&flat),
            };
            peer.queue(&msg, now)
        }
        None => peer.queue(&Message::HashReject(r), now),
    }
}

/// Where a request falls: which file of the torrent's tree and that tree's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Located {
    /// Index into [`V2Info::files`].
    pub(crate) file: usize,
    /// The file's tree height: log2 of its padded leaf count.
    pub(crate) height: u32,
}

/// `log2(piece length / 16 KiB)`: the layer of piece hashes, counted from the leaves.
pub(crate) fn piece_layer_height(piece_len: u64) -> u32 {
    (piece_len / merkle::BLOCK_LEN).max(1).trailing_zeros()
}

/// The tree height of a file of `length` bytes (0 for an empty file, which has no tree).
fn tree_height(length: u64) -> u32 {
    let blocks = merkle::block_count(length);
    blocks
        .checked_next_power_of_two()
        .map_or(64, u64::trailing_zeros)
}

/// Finds the file `r` names and checks every number against its tree: the base layer is
/// below the root, `length` a power of two from 2 to [`MAX_HASHES_PER_REQUEST`], `index` a
/// multiple of it, the nodes inside the layer, the proof below the root. `None`: the request
/// does not fit this torrent, whatever we hold.
pub(crate) fn locate(v2: &V2Info, r: &HashRequest) -> Option<Located> {
    let file = v2
        .files
        .iter()
        .position(|f| f.pieces_root == Some(r.root))?;
    let height = tree_height(v2.files.get(file)?.length);
    let fits = r.base < height
        && r.length.is_power_of_two()
        && (2..=MAX_HASHES_PER_REQUEST).contains(&r.length)
        && r.index % r.length == 0
        && u64::from(r.index) + u64::from(r.length) <= 1u64 << (height - r.base)
        && r.proof_layers < height - r.base;
    fits.then_some(Located { file, height })
}

/// How many uncle hashes answer a request for `length` nodes with `proof_layers`: one per
/// layer from the subtree's root (`log2(length)` above the base) to `proof_layers` above it.
pub(crate) fn uncle_count(length: u32, proof_layers: u32) -> u32 {
    (proof_layers + 1).saturating_sub(length.trailing_zeros())
}

/// The layers of each file's tree from its piece layer up to its root, padded, built the
/// first time a peer asks for that file's hashes (one SHA-256 per node above the piece
/// layer, once). Memory: at most twice the piece layers the torrent already holds.
#[derive(Default)]
pub(crate) struct LayerTrees {
    trees: BTreeMap<usize, Vec<Vec<Hash>>>,
}

impl LayerTrees {
    /// The answer to `r` (the base layer's nodes, then the uncles), or `None` to reject it:
    /// it does not fit the torrent, asks below the piece layer, or names a file whose piece
    /// layer we lack.
    pub(crate) fn answer(
        &mut self,
        v2: &V2Info,
        piece_len: u64,
        r: &HashRequest,
    ) -> Option<Vec<Hash>> {
        let at = locate(v2, r)?;
        let piece_height = piece_layer_height(piece_len);
        if r.base != piece_height {
            return None;
        }
        let file = v2.files.get(at.file)?;
        let tree = match self.trees.entry(at.file) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(build(file, piece_height)?),
        };
        let (index, length) = (r.index as usize, r.length as usize);
        let mut out: Vec<Hash> = tree.first()?.get(index..index + length)?.to_vec();
        let k = r.length.trailing_zeros() as usize;
        for i in 0..uncle_count(r.length, r.proof_layers) as usize {
            let layer = tree.get(k + i)?;
            out.push(*layer.get((index >> (k + i)) ^ 1)?);
        }
        Some(out)
    }
}

/// A file's layers from its piece layer (padded to a power of two with the roots of zero
/// pieces) up to its root; `None` when the file has no piece layer.
fn build(file: &V2File, piece_height: u32) -> Option<Vec<Vec<Hash>>> {
    if !file.needs_layer() {
        return None;
    }
    let layer = file.layer.as_ref()?;
    let width = layer.len().checked_next_power_of_two()?;
    let mut nodes = layer.clone();
    nodes.resize(width, merkle::pad_hash(piece_height));
    let mut tree = vec![nodes];
    while tree.last().is_some_and(|l| l.len() > 1) {
        let below = tree.last()?;
        let up: Vec<Hash> = below
            .chunks_exact(2)
            .map(|pair| merkle::parent(&pair[0], &pair[1]))
            .collect();
        tree.push(up);
    }
    Some(tree)
}

/// Checks an answer to our own request `r` (located as `at`), which asked the piece layer
/// for a proof up to the root: `hashes` must be the `length` nodes and exactly the uncles
/// that lead from them to `root`. Returns the nodes.
pub(crate) fn verify(r: &HashRequest, at: Located, hashes: &[Hash]) -> Option<Vec<Hash>> {
    let length = r.length as usize;
    let uncles = uncle_count(r.length, r.proof_layers) as usize;
    if hashes.len() != length.checked_add(uncles)? {
        return None;
    }
    // The request must reach the root, or the proof proves nothing.
    if r.proof_layers.checked_add(1)? != at.height.checked_sub(r.base)? {
        return None;
    }
    let (nodes, proof) = hashes.split_at(length);
    let sub_root = merkle::root_of_layer(nodes, 0, length);
    let index = u64::from(r.index / r.length);
    merkle::verify_proof(&sub_root, index, proof, &r.root).then(|| nodes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::InfoHashV2;

    const PIECE: u64 = 4 * merkle::BLOCK_LEN; // 4 leaves a piece: the piece layer is 2.

    /// A file of `blocks` leaves, its tree and the matching `V2File`.
    fn file(blocks: usize) -> (V2File, Vec<Hash>) {
        let leaves: Vec<Hash> = (0..blocks)
            .map(|i| merkle::leaf(&i.to_le_bytes()))
            .collect();
        let layer = merkle::piece_layer(&leaves, 4);
        let root = merkle::file_root(&leaves);
        assert_eq!(merkle::root_from_piece_layer(&layer, 4), root);
        let f = V2File {
            file: 0,
            length: blocks as u64 * merkle::BLOCK_LEN,
            pieces_root: Some(root),
            first_piece: 0,
            piece_count: layer.len() as u32,
            layer: Some(layer.clone()),
        };
        (f, layer)
    }

    fn info(f: V2File) -> V2Info {
        V2Info {
            info_hash: InfoHashV2::from_bytes([1; 32]),
            files: vec![f],
        }
    }

    fn req(root: Hash, base: u32, index: u32, length: u32, proof_layers: u32) -> HashRequest {
        HashRequest {
            root,
            base,
            index,
            length,
            proof_layers,
        }
    }

    #[test]
    fn answers_verify_against_the_root_for_every_aligned_request() {
        // 37 pieces: a piece layer of 64 padded nodes, a tree of 256 leaves (height 8).
        let (f, layer) = file(37 * 4 - 3);
        let root = f.pieces_root.unwrap();
        let v2 = info(f);
        let mut trees = LayerTrees::default();
        for length in [2u32, 4, 8, 16, 32, 64] {
            for index in (0..64).step_by(length as usize) {
                let r = req(root, 2, index, length, 8 - 2 - 1);
                let at = locate(&v2, &r).unwrap();
                assert_eq!(at.height, 8);
                let hashes = trees.answer(&v2, PIECE, &r).unwrap();
                let nodes = verify(&r, at, &hashes).expect("a true answer verifies");
                for (i, n) in nodes.iter().enumerate() {
                    let want = layer
                        .get(index as usize + i)
                        .copied()
                        .unwrap_or(merkle::pad_hash(2));
                    assert_eq!(*n, want, "length {length} index {index} node {i}");
                }
                // Any changed hash, node or uncle, fails.
                for bad in 0..hashes.len() {
                    let mut h = hashes.clone();
                    h[bad][0] ^= 1;
                    assert!(verify(&r, at, &h).is_none(), "{length} {index} {bad}");
                }
                // So do a missing or an extra hash.
                assert!(verify(&r, at, &hashes[1..]).is_none());
                let mut more = hashes.clone();
                more.push([0; 32]);
                assert!(verify(&r, at, &more).is_none());
            }
        }
    }

    #[test]
    fn requests_that_do_not_fit_the_tree_are_refused() {
        let (f, _) = file(37 * 4);
        let root = f.pieces_root.unwrap();
        let v2 = info(f);
        let ok = req(root, 2, 0, 8, 5);
        assert!(locate(&v2, &ok).is_some());
        let bad = [
            req([9; 32], 2, 0, 8, 5), // unknown root
            req(root, 8, 0, 2, 0),    // base at the root
            req(root, 2, 0, 3, 5),    // not a power of two
            req(root, 2, 0, 1, 5),    // fewer than two
            req(root, 2, 4, 8, 5),    // index not a multiple of length
            req(root, 2, 64, 2, 5),   // past the layer
            req(root, 2, 0, 128, 5),  // longer than the layer
            req(root, 2, 0, 8, 6),    // proof up to the root itself
            req(root, 2, 0, 1024, 5), // over the bound
            req(root, 2, !1, 2, 5),
            req(root, u32::MAX, 0, 2, u32::MAX),
        ];
        let mut trees = LayerTrees::default();
        for r in bad {
            assert!(locate(&v2, &r).is_none(), "{r:?}");
            assert!(trees.answer(&v2, PIECE, &r).is_none());
        }
        // Leaf requests fit the tree but are not answered.
        let leaves = req(root, 0, 0, 4, 7);
        assert!(locate(&v2, &leaves).is_some());
        assert!(trees.answer(&v2, PIECE, &leaves).is_none());
        // Nor is a file whose layer we lack.
        let mut missing = v2.clone();
        missing.files[0].layer = None;
        assert!(LayerTrees::default().answer(&missing, PIECE, &ok).is_none());
    }

    #[test]
    fn uncles_are_counted_as_libtorrent_counts_them() {
        // 512 nodes and a proof of 9 layers above them: the 9 layers inside the subtree
        // less one are implied, one uncle; libtorrent: proof_layers - log2(count) + 1.
        assert_eq!(uncle_count(512, 9), 1);
        assert_eq!(uncle_count(512, 8), 0);
        assert_eq!(uncle_count(2, 0), 0);
        assert_eq!(uncle_count(2, 5), 5);
        assert_eq!(uncle_count(4, 0), 0);
    }
}
