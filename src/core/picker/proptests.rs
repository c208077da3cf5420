//! Random sequences of everything a torrent does to its picker, checked against a plain model
//! of requests, deliveries and pieces had, and against the picker's own invariants.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::core::Rng;

const PEERS: u8 = 6;

#[derive(Debug, Clone)]
enum Target {
    /// One of the peer's outstanding requests (or any block if it has none).
    Own(Index),
    /// Any block of the torrent, requested or not.
    Any(u32, u32),
}

#[derive(Debug, Clone)]
enum Op {
    Join {
        peer: u8,
        seed: bool,
        bits: u64,
    },
    Leave {
        peer: u8,
    },
    Have {
        peer: u8,
        piece: u32,
    },
    Pick {
        peer: u8,
        max: u8,
        restrict: Option<Vec<u32>>,
        suggested: Vec<u32>,
    },
    Receive {
        peer: u8,
        target: Target,
    },
    Drop {
        peer: u8,
        target: Target,
    },
    Verify {
        piece: u32,
        ok: bool,
    },
    VerifyComplete {
        which: Index,
        ok: bool,
    },
    Priority {
        piece: u32,
        prio: u8,
    },
    AllPriorities {
        prios: Vec<u8>,
    },
    Sequential(bool),
    /// A caller bug: a peer that never joined leaves.
    BogusLeave {
        seed: bool,
        bits: u64,
    },
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => any::<Index>().prop_map(Target::Own),
        1 => (0..1024u32, 0..8u32).prop_map(|(p, b)| Target::Any(p, b)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0..PEERS;
    prop_oneof![
        2 => (peer.clone(), any::<bool>(), any::<u64>())
            .prop_map(|(peer, seed, bits)| Op::Join { peer, seed, bits }),
        1 => peer.clone().prop_map(|peer| Op::Leave { peer }),
        2 => (peer.clone(), 0..1024u32).prop_map(|(peer, piece)| Op::Have { peer, piece }),
        6 => (
            peer.clone(),
            0..12u8,
            proptest::option::weighted(0.2, proptest::collection::vec(0..1024u32, 0..4)),
            proptest::collection::vec(0..1024u32, 0..3),
        )
            .prop_map(|(peer, max, restrict, suggested)| Op::Pick { peer, max, restrict, suggested }),
        6 => (peer.clone(), target()).prop_map(|(peer, target)| Op::Receive { peer, target }),
        2 => (peer, target()).prop_map(|(peer, target)| Op::Drop { peer, target }),
        1 => (0..1024u32, any::<bool>()).prop_map(|(piece, ok)| Op::Verify { piece, ok }),
        3 => (any::<Index>(), prop::bool::weighted(0.8))
            .prop_map(|(which, ok)| Op::VerifyComplete { which, ok }),
        1 => (0..1024u32, 0..3u8).prop_map(|(piece, prio)| Op::Priority { piece, prio }),
        1 => proptest::collection::vec(0..3u8, 300).prop_map(|prios| Op::AllPriorities { prios }),
        1 => any::<bool>().prop_map(Op::Sequential),
        1 => (any::<bool>(), any::<u64>()).prop_map(|(seed, bits)| Op::BogusLeave { seed, bits }),
    ]
}

fn prio(x: u8) -> Priority {
    [Priority::Skip, Priority::Normal, Priority::High][usize::from(x % 3)]
}

type BlockId = (u32, u32);

/// What the core would know: who is connected with what, who was asked for which block, who
/// delivered which, and which pieces passed.
struct Model {
    n: u32,
    peers: BTreeMap<u8, Option<Bitfield>>,
    requests: BTreeMap<BlockId, BTreeSet<PeerKey>>,
    received: BTreeMap<BlockId, PeerKey>,
    had: BTreeSet<u32>,
    prio: Vec<Priority>,
    /// False once a caller bug made availability unpredictable.
    counts_exact: bool,
}

impl Model {
    fn peer_pieces(&self, peer: u8) -> Option<PeerPieces<'_>> {
        self.peers.get(&peer).map(|bits| match bits {
            None => PeerPieces::All,
            Some(b) => PeerPieces::Some(b),
        })
    }

    fn bitfield(&self, raw: u64) -> Bitfield {
        let mut b = Bitfield::new(self.n);
        for i in 0..self.n {
            // Wider torrents repeat the 64-bit pattern, so bitfields can be large enough to
            // take the bulk (stale buckets, rebuild) path.
            if raw >> (i % 64) & 1 == 1 {
                b.set(i);
            }
        }
        b
    }

    fn outstanding(&self, peer: PeerKey) -> Vec<BlockId> {
        self.requests
            .iter()
            .filter(|(_, who)| who.contains(&peer))
            .map(|(&id, _)| id)
            .collect()
    }

    fn forget_piece(&mut self, piece: u32) {
        self.requests.retain(|&(p, _), _| p != piece);
        self.received.retain(|&(p, _), _| p != piece);
    }

    fn wanted_missing(&self, piece: u32) -> bool {
        self.prio[piece as usize] > Priority::Skip && !self.had.contains(&piece)
    }
}

fn resolve(p: &Picker, model: &Model, peer: PeerKey, target: &Target) -> Option<BlockRef> {
    let (piece, b) = match target {
        Target::Own(i) => {
            let mine = model.outstanding(peer);
            if mine.is_empty() {
                return None;
            }
            mine[i.index(mine.len())]
        }
        &Target::Any(piece, b) => (piece % model.n, b),
    };
    let piece = p.lengths.piece(piece)?;
    p.lengths.block(piece, b % p.lengths.blocks_in(piece))
}

/// The picker's per-block state must be exactly the model's requests and deliveries.
fn compare(p: &Picker, model: &Model) {
    p.check_invariants();
    let mut requests = BTreeMap::new();
    let mut received = BTreeMap::new();
    for part in &p.partials {
        for (b, block) in part.blocks.iter().enumerate() {
            let id = (part.piece, b as u32);
            match block.state {
                BlockState::Free => {}
                BlockState::Requested => {
                    let mut who: BTreeSet<PeerKey> = part
                        .extra
                        .iter()
                        .filter(|&&(x, _)| x == id.1)
                        .map(|&(_, q)| q)
                        .collect();
                    who.insert(block.peer);
                    requests.insert(id, who);
                }
                BlockState::Received => {
                    received.insert(id, block.peer);
                }
            }
        }
    }
    assert_eq!(requests, model.requests, "requested blocks");
    assert_eq!(received, model.received, "received blocks");
    let had: BTreeSet<u32> = p.have().ones().collect();
    assert_eq!(had, model.had);
    let complete = (0..model.n).all(|i| !model.wanted_missing(i));
    assert_eq!(p.is_complete(), complete);
    assert_eq!(p.is_seed(), model.had.len() as u32 == model.n);
    let left: u64 = (0..model.n)
        .filter(|&i| model.wanted_missing(i))
        .map(|i| u64::from(p.lengths.len_of(p.lengths.piece(i).unwrap())))
        .sum();
    assert_eq!(p.bytes_left(), left);
    // Endgame: not complete and no wanted missing block is free.
    assert_eq!(p.is_endgame(), !complete && free_blocks(p, model) == 0);
    if model.counts_exact {
        let seeds = model.peers.values().filter(|b| b.is_none()).count() as u32;
        for i in 0..model.n {
            let bitfields = model.peers.values().flatten().filter(|b| b.get(i)).count() as u32;
            assert_eq!(
                p.availability(p.lengths.piece(i).unwrap()),
                seeds + bitfields
            );
        }
    }
}

/// Wanted missing blocks that nobody requested and nobody delivered.
fn free_blocks(p: &Picker, model: &Model) -> usize {
    (0..model.n)
        .filter(|&i| model.wanted_missing(i))
        .map(|i| {
            let piece = p.lengths.piece(i).unwrap();
            (0..p.lengths.blocks_in(piece))
                .filter(|&b| {
                    !model.requests.contains_key(&(i, b)) && !model.received.contains_key(&(i, b))
                })
                .count()
        })
        .sum()
}

/// Checks one pick's output against the rules, then records it in the model.
fn check_pick(
    p: &Picker,
    model: &mut Model,
    peer: PeerKey,
    has: Option<&Bitfield>,
    max: usize,
    restrict: Option<&[PieceIndex]>,
    out: &[BlockRef],
) {
    let peer_has = |i: u32| has.is_none_or(|b| b.get(i));
    let allowed = |i: u32| restrict.is_none_or(|r| r.iter().any(|x| x.get() == i));
    let cap = usize::from(p.config.endgame_max_requesters);
    let eligible = |m: &Model, i: u32| m.wanted_missing(i) && peer_has(i) && allowed(i);
    let free_for_peer = |m: &Model| {
        (0..m.n).filter(|&i| eligible(m, i)).any(|i| {
            let piece = p.lengths.piece(i).unwrap();
            (0..p.lengths.blocks_in(piece))
                .any(|b| !m.requests.contains_key(&(i, b)) && !m.received.contains_key(&(i, b)))
        })
    };
    assert!(out.len() <= max);
    let mut duplicated = false;
    for blk in out {
        let id = (blk.piece.get(), blk.offset / BLOCK_LEN);
        assert_eq!(p.lengths.block(blk.piece, id.1), Some(*blk), "a real block");
        assert!(
            eligible(model, id.0),
            "picked {id:?}: not wanted, had, or not allowed"
        );
        assert!(!model.received.contains_key(&id), "picked a received block");
        let who = model.requests.entry(id).or_default();
        assert!(!who.contains(&peer), "picked {id:?} twice for one peer");
        if !who.is_empty() {
            duplicated = true;
            assert!(who.len() < cap, "more requesters than the cap");
        }
        who.insert(peer);
    }
    // Strict endgame: duplicates only once no wanted block is free anywhere.
    let endgame = !p.config.strict_endgame || free_blocks(p, model) == 0;
    if duplicated {
        assert!(
            !free_for_peer(model),
            "endgame duplicate while free blocks remained"
        );
        assert!(endgame, "endgame duplicate before endgame");
    }
    if out.len() < max {
        // Nothing left: no free block, and no block the peer could duplicate.
        assert!(!free_for_peer(model), "stopped short with free blocks left");
        for (&(i, _), who) in &model.requests {
            if endgame && eligible(model, i) {
                assert!(
                    who.contains(&peer) || who.len() >= cap.max(1),
                    "stopped short with endgame blocks left"
                );
            }
        }
    }
}

fn run(ops: Vec<Op>, pieces: u32, blocks: u32, short_last: u32, seed: u64, initial: u32) {
    let piece_len = u64::from(blocks * BLOCK_LEN);
    let total = u64::from(pieces) * piece_len - u64::from(short_last) % piece_len;
    let lengths = Lengths::new(total, piece_len).unwrap();
    let n = lengths.piece_count();
    let cfg = PickerConfig {
        initial_random_pieces: initial,
        endgame_max_requesters: (seed % 4) as u8,
        strict_endgame: seed & 4 == 0,
    };
    let mut p = Picker::new(lengths, &Bitfield::new(n), cfg);
    let mut rng = Rng::new(seed);
    let mut model = Model {
        n,
        peers: BTreeMap::new(),
        requests: BTreeMap::new(),
        received: BTreeMap::new(),
        had: BTreeSet::new(),
        prio: vec![Priority::Normal; n as usize],
        counts_exact: true,
    };
    for op in ops {
        match op {
            Op::Join { peer, seed, bits } => {
                if model.peers.contains_key(&peer) {
                    continue;
                }
                let b = (!seed).then(|| model.bitfield(bits));
                model.peers.insert(peer, b);
                p.peer_joined(model.peer_pieces(peer).unwrap());
            }
            Op::Leave { peer } => {
                if !model.peers.contains_key(&peer) {
                    continue;
                }
                let key = PeerKey(peer.into());
                for id in model.outstanding(key) {
                    let piece = p.lengths.piece(id.0).unwrap();
                    p.request_dropped(key, p.lengths.block(piece, id.1).unwrap());
                    let who = model.requests.get_mut(&id).unwrap();
                    who.remove(&key);
                    if who.is_empty() {
                        model.requests.remove(&id);
                    }
                }
                p.peer_left(model.peer_pieces(peer).unwrap());
                model.peers.remove(&peer);
            }
            Op::Have { peer, piece } => {
                let piece = piece % n;
                if let Some(Some(b)) = model.peers.get_mut(&peer) {
                    if b.set(piece) {
                        p.peer_has(p.lengths.piece(piece).unwrap());
                    }
                }
            }
            Op::Pick {
                peer,
                max,
                restrict,
                suggested,
            } => {
                let Some(has) = model.peers.get(&peer).cloned() else {
                    continue;
                };
                let to_index = |v: &[u32]| -> Vec<PieceIndex> {
                    v.iter().map(|&i| p.lengths.piece(i % n).unwrap()).collect()
                };
                let restrict = restrict.map(|r| to_index(&r));
                let suggested = to_index(&suggested);
                let pieces = match &has {
                    None => PeerPieces::All,
                    Some(b) => PeerPieces::Some(b),
                };
                let mut out = Vec::new();
                let key = PeerKey(peer.into());
                let max = usize::from(max);
                p.pick(
                    key,
                    pieces,
                    max,
                    restrict.as_deref(),
                    &suggested,
                    &mut rng,
                    &mut out,
                );
                check_pick(
                    &p,
                    &mut model,
                    key,
                    has.as_ref(),
                    max,
                    restrict.as_deref(),
                    &out,
                );
            }
            Op::Receive { peer, target } => {
                let key = PeerKey(peer.into());
                let Some(blk) = resolve(&p, &model, key, &target) else {
                    continue;
                };
                let id = (blk.piece.get(), blk.offset / BLOCK_LEN);
                let got = p.block_received(key, blk);
                let partial = model
                    .requests
                    .keys()
                    .chain(model.received.keys())
                    .any(|&(i, _)| i == id.0);
                if model.had.contains(&id.0) || !partial {
                    assert_eq!(got, BlockReceived::Unrequested);
                } else if model.prio[id.0 as usize] == Priority::Skip {
                    assert_eq!(got, BlockReceived::Unrequested);
                    if let Some(who) = model.requests.get_mut(&id) {
                        who.remove(&key);
                        if who.is_empty() {
                            model.requests.remove(&id);
                        }
                    }
                } else if model.received.contains_key(&id) {
                    assert_eq!(got, BlockReceived::Duplicate);
                } else if model.requests.get(&id).is_some_and(|w| w.contains(&key)) {
                    let mut others = model.requests.remove(&id).unwrap();
                    others.remove(&key);
                    model.received.insert(id, key);
                    let piece = blk.piece;
                    let complete = (0..p.lengths.blocks_in(piece))
                        .all(|b| model.received.contains_key(&(id.0, b)));
                    match got {
                        BlockReceived::New {
                            piece_complete,
                            cancel,
                        } => {
                            assert_eq!(piece_complete, complete);
                            assert_eq!(cancel.into_iter().collect::<BTreeSet<_>>(), others);
                        }
                        other => panic!("expected New, got {other:?}"),
                    }
                } else {
                    assert_eq!(got, BlockReceived::Unrequested);
                }
            }
            Op::Drop { peer, target } => {
                let key = PeerKey(peer.into());
                let Some(blk) = resolve(&p, &model, key, &target) else {
                    continue;
                };
                let id = (blk.piece.get(), blk.offset / BLOCK_LEN);
                p.request_dropped(key, blk);
                if let Some(who) = model.requests.get_mut(&id) {
                    who.remove(&key);
                    if who.is_empty() {
                        model.requests.remove(&id);
                    }
                }
            }
            Op::Verify { piece, ok } => verify(&mut p, &mut model, piece % n, ok),
            Op::VerifyComplete { which, ok } => {
                let complete: Vec<u32> = (0..n)
                    .filter(|&i| {
                        let piece = p.lengths.piece(i).unwrap();
                        (0..p.lengths.blocks_in(piece))
                            .all(|b| model.received.contains_key(&(i, b)))
                    })
                    .collect();
                if !complete.is_empty() {
                    verify(
                        &mut p,
                        &mut model,
                        complete[which.index(complete.len())],
                        ok,
                    );
                }
            }
            Op::Priority { piece, prio: x } => {
                let piece = piece % n;
                p.set_piece_priority(p.lengths.piece(piece).unwrap(), prio(x));
                model.prio[piece as usize] = prio(x);
            }
            Op::AllPriorities { prios } => {
                let prios: Vec<Priority> =
                    prios.iter().take(n as usize).map(|&x| prio(x)).collect();
                p.set_piece_priorities(&prios);
                model.prio = prios;
            }
            Op::Sequential(on) => p.set_mode(if on {
                PickMode::Sequential
            } else {
                PickMode::RarestFirst
            }),
            Op::BogusLeave { seed, bits } => {
                let b = model.bitfield(bits);
                p.peer_left(if seed {
                    PeerPieces::All
                } else {
                    PeerPieces::Some(&b)
                });
                model.counts_exact = false;
            }
        }
        compare(&p, &model);
    }
}

fn verify(p: &mut Picker, model: &mut Model, piece: u32, ok: bool) {
    let got = p.piece_verified(p.lengths.piece(piece).unwrap(), ok);
    if model.had.contains(&piece) {
        assert!(got.is_empty());
        return;
    }
    if ok {
        assert!(got.is_empty());
        model.had.insert(piece);
    } else {
        let deliverers: BTreeSet<PeerKey> = model
            .received
            .iter()
            .filter(|&(&(i, _), _)| i == piece)
            .map(|(_, &who)| who)
            .collect();
        assert_eq!(got, deliverers.into_iter().collect::<Vec<_>>());
    }
    model.forget_piece(piece);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_picker_consistent(
        ops in proptest::collection::vec(op(), 1..200),
        pieces in 1..16u32,
        blocks_log in 0..3u32,
        short_last in 0..65536u32,
        seed in any::<u64>(),
        initial in 0..3u32,
    ) {
        run(ops, pieces, 1 << blocks_log, short_last, seed, initial);
    }

    /// Wider torrents: bulk joins and leaves (stale buckets, rebuilt at the next pick), and
    /// the bucket walks rather than the word scan.
    #[test]
    fn random_operations_on_wider_torrents(
        ops in proptest::collection::vec(op(), 1..200),
        pieces in 64..300u32,
        short_last in 0..65536u32,
        seed in any::<u64>(),
        initial in 0..3u32,
    ) {
        run(ops, pieces, 1, short_last, seed, initial);
    }
}
