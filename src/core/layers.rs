//! Fetching a v2 torrent's piece layers from peers (BEP 52), for a magnet link whose info
//! dictionary arrived without them: each file's layer is asked for in chunks of at most
//! [`MAX_HASHES_PER_REQUEST`] piece hashes, each with the proof up to the file's root, so
//! every answer is checked on its own and a peer that sends bad hashes is known at once.
//! A rejected or unanswered chunk is asked again (of another peer, the first waits out a
//! back-off); once every chunk is in, the layers are set on the `Info` (checked against the
//! roots once more) and the magnet's metadata is complete. Pure: no I/O, no clock.
//!
//! Files with the same root (identical contents) share their chunks. Bounds: the chunks are
//! the torrent's piece count over 512 plus one per distinct root, and what is held is the
//! layers the torrent needs anyway.

use super::hashes::{locate, piece_layer_height, verify, Located};
use super::wire::HashRequest;
use super::{PeerKey, Time};
use crate::limits::MAX_HASHES_PER_REQUEST;
use crate::metainfo::merkle::Hash;
use crate::metainfo::Info;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Missing,
    Requested { peer: PeerKey, at: Time },
    Have(Vec<Hash>),
}

#[derive(Debug)]
struct Chunk {
    request: HashRequest,
    at: Located,
    /// How many of the chunk's hashes are real pieces (the rest pad the layer).
    pieces: usize,
    state: State,
}

/// The piece layers still to fetch for an `Info` (see the module doc).
#[derive(Debug)]
pub(crate) struct LayerFetch {
    info: Info,
    chunks: Vec<Chunk>,
}

/// What an answer from a peer did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Not one of our requests to this peer (late, or never asked): ignored.
    Unasked,
    /// The chunk is in.
    Taken,
    /// Hashes that fail their proof: the peer lies.
    Bad,
}

impl LayerFetch {
    /// The fetch for `info`'s missing layers, or `info` back when none is missing.
    pub(crate) fn new(info: Info) -> Result<LayerFetch, Box<Info>> {
        let Some(v2) = info.v2() else {
            return Err(Box::new(info));
        };
        let base = piece_layer_height(u64::from(info.lengths().piece_len()));
        let mut chunks = Vec::new();
        let mut roots = std::collections::BTreeSet::new();
        for f in v2
            .files
            .iter()
            .filter(|f| f.needs_layer() && f.layer.is_none())
        {
            let Some(root) = f.pieces_root else { continue };
            if !roots.insert(root) {
                continue;
            }
            let mut index = 0u32;
            while index < f.piece_count {
                let left = f.piece_count - index;
                let length = left.next_power_of_two().min(MAX_HASHES_PER_REQUEST);
                let probe = HashRequest {
                    root,
                    base,
                    index,
                    length,
                    proof_layers: 0,
                };
                // The tree's height sets how far the proof must reach.
                let Some(at) = locate(v2, &probe) else {
                    return Err(Box::new(info));
                };
                let request = HashRequest {
                    proof_layers: at.height - base - 1,
                    ..probe
                };
                chunks.push(Chunk {
                    request,
                    at,
                    pieces: left.min(length) as usize,
                    state: State::Missing,
                });
                index += length;
            }
        }
        if chunks.is_empty() {
            return Err(Box::new(info));
        }
        Ok(LayerFetch { info, chunks })
    }

    /// The next chunk to ask `peer` for, marked as asked; `None` when every chunk is asked
    /// or in.
    pub(crate) fn next_for(&mut self, peer: PeerKey, now: Time) -> Option<HashRequest> {
        let c = self.chunks.iter_mut().find(|c| c.state == State::Missing)?;
        c.state = State::Requested { peer, at: now };
        Some(c.request)
    }

    fn asked_of(&mut self, peer: PeerKey, r: &HashRequest) -> Option<&mut Chunk> {
        self.chunks.iter_mut().find(|c| {
            c.request == *r && matches!(c.state, State::Requested { peer: p, .. } if p == peer)
        })
    }

    /// `hashes` from `peer` answering `r`.
    pub(crate) fn on_hashes(&mut self, peer: PeerKey, r: &HashRequest, hashes: &[Hash]) -> Answer {
        let Some(c) = self.asked_of(peer, r) else {
            return Answer::Unasked;
        };
        match verify(&c.request, c.at, hashes) {
            Some(mut nodes) => {
                nodes.truncate(c.pieces);
                c.state = State::Have(nodes);
                Answer::Taken
            }
            None => {
                c.state = State::Missing;
                Answer::Bad
            }
        }
    }

    /// `peer` rejected `r`: the chunk is asked elsewhere. Returns whether it was ours.
    pub(crate) fn on_reject(&mut self, peer: PeerKey, r: &HashRequest) -> bool {
        match self.asked_of(peer, r) {
            Some(c) => {
                c.state = State::Missing;
                true
            }
            None => false,
        }
    }

    /// Chunks asked before `before` go back to missing; returns whom they were asked of.
    pub(crate) fn expire(&mut self, before: Time) -> Vec<PeerKey> {
        let mut slow = Vec::new();
        for c in &mut self.chunks {
            if let State::Requested { peer, at } = c.state {
                if at < before {
                    c.state = State::Missing;
                    slow.push(peer);
                }
            }
        }
        slow
    }

    /// A peer left: what it was asked goes back to missing.
    pub(crate) fn drop_peer(&mut self, peer: PeerKey) {
        for c in &mut self.chunks {
            if matches!(c.state, State::Requested { peer: p, .. } if p == peer) {
                c.state = State::Missing;
            }
        }
    }

    /// Requests to `peer` not yet answered.
    pub(crate) fn asked(&self, peer: PeerKey) -> u32 {
        self.chunks
            .iter()
            .filter(|c| matches!(c.state, State::Requested { peer: p, .. } if p == peer))
            .count() as u32
    }

    /// Whether every chunk is in.
    pub(crate) fn is_done(&self) -> bool {
        self.chunks
            .iter()
            .all(|c| matches!(c.state, State::Have(_)))
    }

    /// The `Info` with every fetched layer set, once [`is_done`](Self::is_done).
    pub(crate) fn finish(self) -> Result<Info, String> {
        let LayerFetch { mut info, chunks } = self;
        let mut layer: Vec<Hash> = Vec::new();
        let mut root = None;
        for c in chunks {
            let State::Have(nodes) = c.state else {
                return Err("piece layers incomplete".into());
            };
            if root != Some(c.request.root) {
                if let Some(r) = root {
                    if !info.set_piece_layer(&r, &layer) {
                        return Err("a fetched piece layer does not match its root".into());
                    }
                }
                root = Some(c.request.root);
                layer.clear();
            }
            layer.extend(nodes);
        }
        if let Some(r) = root {
            if !info.set_piece_layer(&r, &layer) {
                return Err("a fetched piece layer does not match its root".into());
            }
        }
        match info.v2().is_some_and(|v2| v2.has_piece_layers()) {
            true => Ok(info),
            false => Err("piece layers incomplete".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::bencode::OwnedValue;
    use crate::core::hashes::LayerTrees;
    use crate::metainfo::{merkle, Torrent};

    /// The leaves of a file of `len` bytes whose byte `i` is `i * 7 % 251`.
    fn leaves(len: usize) -> Vec<Hash> {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        data.chunks(16384).map(merkle::leaf).collect()
    }

    /// A v2-only torrent in 16 KiB pieces of two files of `pieces` pieces with the same
    /// contents (so a shared root) and one of 3 pieces, with its piece layers and without.
    fn torrents(pieces: usize) -> (Info, Info) {
        let mut tree = BTreeMap::new();
        let mut layers = BTreeMap::new();
        for (name, len) in [
            ("a", pieces * 16384),
            ("b", pieces * 16384),
            ("c", 3 * 16384 - 5),
        ] {
            let l = leaves(len);
            let root = merkle::file_root(&l);
            let mut file = BTreeMap::new();
            file.insert(b"length".to_vec(), OwnedValue::Int(len as i64));
            file.insert(b"pieces root".to_vec(), OwnedValue::Bytes(root.to_vec()));
            let mut entry = BTreeMap::new();
            entry.insert(Vec::new(), OwnedValue::Dict(file));
            tree.insert(name.as_bytes().to_vec(), OwnedValue::Dict(entry));
            layers.insert(
                root.to_vec(),
                OwnedValue::Bytes(merkle::piece_layer(&l, 1).concat()),
            );
        }
        let mut info = BTreeMap::new();
        info.insert(b"file tree".to_vec(), OwnedValue::Dict(tree));
        info.insert(b"meta version".to_vec(), OwnedValue::Int(2));
        info.insert(b"name".to_vec(), OwnedValue::str("t"));
        info.insert(b"piece length".to_vec(), OwnedValue::Int(16384));
        let mut root = BTreeMap::new();
        root.insert(b"info".to_vec(), OwnedValue::Dict(info));
        root.insert(b"piece layers".to_vec(), OwnedValue::Dict(layers));
        let full = Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info;
        let bare = Info::from_bytes(full.raw()).unwrap();
        assert!(full.v2().unwrap().has_piece_layers());
        assert!(!bare.v2().unwrap().has_piece_layers());
        (full, bare)
    }

    #[test]
    fn layers_come_in_chunks_with_proofs_and_liars_are_caught() {
        let (full, bare) = torrents(1100);
        let mut fetch = LayerFetch::new(bare).unwrap();
        let piece_len = 16384;
        let mut seed = LayerTrees::default();
        let (honest, liar) = (PeerKey(1), PeerKey(2));
        let now = Time::from_secs(5);
        let mut asked = 0;
        while let Some(r) = fetch.next_for(liar, now) {
            // a and b share chunks: 1100 pieces take 512 + 512 + 128 (76 padded), c one.
            assert!(r.length <= 512 && r.index % r.length == 0, "{r:?}");
            let mut hashes = seed.answer(full.v2().unwrap(), piece_len, &r).unwrap();
            hashes[0][5] ^= 1;
            assert_eq!(fetch.on_hashes(liar, &r, &hashes), Answer::Bad);
            // Asked of the honest peer instead; an answer from one not asked is ignored.
            let again = fetch.next_for(honest, now).unwrap();
            assert_eq!(again, r);
            let hashes = seed.answer(full.v2().unwrap(), piece_len, &r).unwrap();
            assert_eq!(fetch.on_hashes(liar, &r, &hashes), Answer::Unasked);
            assert_eq!(fetch.on_hashes(honest, &r, &hashes), Answer::Taken);
            asked += 1;
        }
        assert_eq!(asked, 4);
        assert!(fetch.is_done());
        let info = fetch.finish().unwrap();
        assert_eq!(info.v2(), full.v2());
        assert_eq!(info.piece_layers_bencoded(), full.piece_layers_bencoded());
        // What a client saves for the magnet reads back with every layer.
        let mut saved = b"d4:info".to_vec();
        saved.extend_from_slice(info.raw());
        saved.extend_from_slice(b"12:piece layers");
        saved.extend_from_slice(&info.piece_layers_bencoded().unwrap());
        saved.push(b'e');
        assert_eq!(Torrent::from_bytes(&saved).unwrap().info.v2(), full.v2());
    }

    #[test]
    fn rejects_timeouts_and_departures_put_chunks_back() {
        let (_, bare) = torrents(600);
        let mut fetch = LayerFetch::new(bare).unwrap();
        let (a, b) = (PeerKey(1), PeerKey(2));
        let t0 = Time::from_secs(5);
        let r1 = fetch.next_for(a, t0).unwrap();
        let r2 = fetch.next_for(b, t0).unwrap();
        assert_ne!(r1, r2);
        assert_eq!((fetch.asked(a), fetch.asked(b)), (1, 1));
        assert!(!fetch.on_reject(b, &r1), "not asked of b");
        assert!(fetch.on_reject(a, &r1));
        assert_eq!(fetch.next_for(a, t0), Some(r1));
        fetch.drop_peer(a);
        assert_eq!(fetch.asked(a), 0);
        assert_eq!(
            fetch.next_for(b, t0 + std::time::Duration::from_secs(1)),
            Some(r1)
        );
        assert_eq!(
            fetch.expire(t0 + std::time::Duration::from_millis(500)),
            vec![b]
        );
        assert_eq!(fetch.asked(b), 1);
        assert!(!fetch.is_done());
        assert!(fetch.finish().is_err());
    }
}
