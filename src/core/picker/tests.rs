use std::collections::BTreeSet;

use super::*;

const A: PeerKey = PeerKey(1);
const B: PeerKey = PeerKey(2);
const C: PeerKey = PeerKey(3);

/// `pieces` pieces of `blocks` 16 KiB blocks each.
fn lengths(pieces: u32, blocks: u32) -> Lengths {
    let piece_len = u64::from(blocks * BLOCK_LEN);
    Lengths::new(u64::from(pieces) * piece_len, piece_len).unwrap()
}

fn config(initial_random_pieces: u32) -> PickerConfig {
    PickerConfig {
        initial_random_pieces,
        ..PickerConfig::default()
    }
}

/// A picker with nothing had and rarest-first from the first piece.
fn picker(pieces: u32, blocks: u32) -> Picker {
    let l = lengths(pieces, blocks);
    Picker::new(l, &Bitfield::new(pieces), config(0))
}

fn bits(n: u32, set: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(n);
    for &i in set {
        b.set(i);
    }
    b
}

fn idx(p: &Picker, i: u32) -> PieceIndex {
    p.lengths.piece(i).unwrap()
}

fn block(p: &Picker, piece: u32, b: u32) -> BlockRef {
    p.lengths.block(idx(p, piece), b).unwrap()
}

fn pick(
    p: &mut Picker,
    peer: PeerKey,
    has: PeerPieces<'_>,
    max: usize,
    rng: &mut Rng,
) -> Vec<BlockRef> {
    pick_with(p, peer, has, max, None, &[], rng)
}

fn pick_with(
    p: &mut Picker,
    peer: PeerKey,
    has: PeerPieces<'_>,
    max: usize,
    restrict: Option<&[PieceIndex]>,
    suggested: &[PieceIndex],
    rng: &mut Rng,
) -> Vec<BlockRef> {
    let mut out = Vec::new();
    p.pick(peer, has, max, restrict, suggested, rng, &mut out);
    p.check_invariants();
    out
}

/// `(piece, block number)` of each block, for readable assertions.
fn ids(blocks: &[BlockRef]) -> Vec<(u32, u32)> {
    blocks
        .iter()
        .map(|b| (b.piece.get(), b.offset / BLOCK_LEN))
        .collect()
}

fn pieces_of(blocks: &[BlockRef]) -> BTreeSet<u32> {
    blocks.iter().map(|b| b.piece.get()).collect()
}

/// Makes each piece `i` available from `counts[i]` bitfield peers.
fn with_counts(p: &mut Picker, counts: &[u32]) {
    let n = counts.len() as u32;
    let max = counts.iter().copied().max().unwrap_or(0);
    for k in 0..max {
        let set: Vec<u32> = (0..n).filter(|&i| counts[i as usize] > k).collect();
        p.peer_joined(PeerPieces::Some(&bits(n, &set)));
    }
}

#[test]
fn several_blocks_come_from_one_piece_in_order() {
    let mut p = picker(10, 4);
    let mut rng = Rng::new(1);
    let got = pick(&mut p, A, PeerPieces::All, 3, &mut rng);
    let piece = got[0].piece.get();
    assert_eq!(ids(&got), vec![(piece, 0), (piece, 1), (piece, 2)]);
    // Six more: the rest of that piece, then one whole fresh piece, then one more.
    let got = pick(&mut p, A, PeerPieces::All, 6, &mut rng);
    assert_eq!(ids(&got[..1]), vec![(piece, 3)]);
    assert_eq!(pieces_of(&got[1..5]).len(), 1);
    assert_eq!(got[1].offset, 0);
    assert_eq!(p.partial_count(), 3);
}

#[test]
fn partial_pieces_come_first() {
    let mut p = picker(10, 4);
    let mut rng = Rng::new(2);
    let a = pick(&mut p, A, PeerPieces::All, 2, &mut rng);
    let piece = a[0].piece.get();
    // Another peer finishes requesting the piece A started before anything new is begun.
    let b = pick(&mut p, B, PeerPieces::All, 2, &mut rng);
    assert_eq!(ids(&b), vec![(piece, 2), (piece, 3)]);
    // A peer without that piece starts another.
    let others: Vec<u32> = (0..10).filter(|&i| i != piece).collect();
    let has = bits(10, &others);
    let c = pick(&mut p, C, PeerPieces::Some(&has), 1, &mut rng);
    assert_ne!(c[0].piece.get(), piece);
}

#[test]
fn partial_pieces_by_priority_then_rarity() {
    let mut p = picker(10, 4);
    let mut rng = Rng::new(3);
    let (three, five) = (idx(&p, 3), idx(&p, 5));
    pick_with(&mut p, A, PeerPieces::All, 1, Some(&[three]), &[], &mut rng);
    pick_with(&mut p, A, PeerPieces::All, 1, Some(&[five]), &[], &mut rng);
    p.peer_has(three);
    p.peer_has(three);
    // Both partial: piece 5 is rarer.
    let got = pick(&mut p, B, PeerPieces::All, 1, &mut rng);
    assert_eq!(ids(&got), vec![(5, 1)]);
    // Piece 3 becomes High: it goes first despite being more common.
    p.set_piece_priority(three, Priority::High);
    let got = pick(&mut p, B, PeerPieces::All, 1, &mut rng);
    assert_eq!(ids(&got), vec![(3, 1)]);
}

#[test]
fn rarest_first_among_what_the_peer_has() {
    let mut p = picker(10, 4);
    with_counts(&mut p, &[3, 3, 3, 2, 3, 3, 3, 1, 3, 3]);
    p.peer_joined(PeerPieces::All);
    assert_eq!(p.availability(idx(&p, 7)), 2);
    assert_eq!(p.availability(idx(&p, 0)), 4);
    let mut rng = Rng::new(4);
    let got = pick(&mut p, A, PeerPieces::All, 4, &mut rng);
    assert_eq!(pieces_of(&got), BTreeSet::from([7]));
    let got = pick(&mut p, A, PeerPieces::All, 4, &mut rng);
    assert_eq!(pieces_of(&got), BTreeSet::from([3]));
    // A peer without piece 3's successor in rarity picks the rarest it has.
    p.piece_verified(idx(&p, 7), true);
    let has = bits(10, &[0, 9]);
    let got = pick(&mut p, B, PeerPieces::Some(&has), 4, &mut rng);
    assert_eq!(got.len(), 4);
    assert!(pieces_of(&got).is_subset(&BTreeSet::from([0, 9])));
}

#[test]
fn random_tie_break_spreads_picks() {
    // Twenty clients (each with its own seed) facing ten equally rare pieces must not all
    // start the same one.
    let mut first = BTreeSet::new();
    for seed in 0..20 {
        let mut p = picker(10, 4);
        with_counts(&mut p, &[1; 10]);
        let got = pick(&mut p, A, PeerPieces::All, 1, &mut Rng::new(seed));
        first.insert(got[0].piece.get());
    }
    assert!(first.len() >= 5, "{first:?}");
    // Within one client, twenty peers asking for one block each of one-block pieces get
    // twenty different pieces, and consecutive picks are not in index order.
    let mut p = picker(40, 1);
    let mut rng = Rng::new(5);
    let mut seen = Vec::new();
    for peer in 0..20 {
        let got = pick(&mut p, PeerKey(peer), PeerPieces::All, 1, &mut rng);
        seen.push(got[0].piece.get());
    }
    let distinct: BTreeSet<u32> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 20);
    assert_ne!(seen, (0..20).collect::<Vec<_>>());
}

#[test]
fn sparse_peers_get_the_rarest_of_their_pieces_with_random_ties() {
    // Many one-block pieces and a peer with only a few: the word-scan path.
    let n = 20_000;
    let mut p = picker(n, 1);
    let popular: Vec<u32> = (0..n).collect();
    for _ in 0..3 {
        p.peer_joined(PeerPieces::Some(&bits(n, &popular)));
    }
    let theirs = [100, 5000, 7000, 15000, 19999];
    let has = bits(n, &theirs);
    p.peer_joined(PeerPieces::Some(&has));
    p.peer_left(PeerPieces::Some(&bits(n, &[5000])));
    assert!(p.sparse_is_cheaper(&has));
    let mut rng = Rng::new(6);
    let got = pick(&mut p, A, PeerPieces::Some(&has), 1, &mut rng);
    assert_eq!(ids(&got), vec![(5000, 0)]);
    // The other four are equally rare: different seeds pick different ones.
    let mut first = BTreeSet::new();
    for seed in 0..20 {
        let mut q = p.clone();
        let got = pick(&mut q, B, PeerPieces::Some(&has), 1, &mut Rng::new(seed));
        first.insert(got[0].piece.get());
    }
    assert!(first.len() >= 3 && !first.contains(&5000), "{first:?}");
}

#[test]
fn initial_pieces_are_random_then_rarest() {
    let l = lengths(100, 1);
    let mut p = Picker::new(l, &Bitfield::new(100), PickerConfig::default());
    let mut counts = [5; 100];
    counts[42] = 1;
    with_counts(&mut p, &counts);
    let mut hits = 0;
    for seed in 0..50 {
        let mut q = p.clone();
        let got = pick(&mut q, A, PeerPieces::All, 1, &mut Rng::new(seed));
        hits += u32::from(got[0].piece.get() == 42);
    }
    assert!(
        hits < 10,
        "random picks hit the rarest piece {hits} times in 50"
    );
    for i in 0..4 {
        p.piece_verified(idx(&p, i), true);
    }
    for seed in 0..10 {
        let mut q = p.clone();
        let got = pick(&mut q, A, PeerPieces::All, 1, &mut Rng::new(seed));
        assert_eq!(got[0].piece.get(), 42);
    }
}

#[test]
fn sequential_takes_the_lowest_missing_piece_partial_first() {
    let mut p = picker(10, 4);
    p.set_mode(PickMode::Sequential);
    with_counts(&mut p, &[9, 9, 9, 9, 9, 9, 1, 9, 9, 9]);
    p.piece_verified(idx(&p, 0), true);
    p.piece_verified(idx(&p, 1), true);
    let mut rng = Rng::new(7);
    let got = pick(&mut p, A, PeerPieces::All, 6, &mut rng);
    assert_eq!(
        ids(&got),
        vec![(2, 0), (2, 1), (2, 2), (2, 3), (3, 0), (3, 1)]
    );
    let got = pick(&mut p, B, PeerPieces::All, 2, &mut rng);
    assert_eq!(ids(&got), vec![(3, 2), (3, 3)]);
    let has = bits(10, &[2, 3, 5, 6]);
    let got = pick(&mut p, C, PeerPieces::Some(&has), 1, &mut rng);
    assert_eq!(ids(&got), vec![(5, 0)]);
    // A High piece comes before every Normal one, in sequential mode too.
    p.set_piece_priority(idx(&p, 8), Priority::High);
    let got = pick(&mut p, C, PeerPieces::All, 5, &mut rng);
    assert_eq!(ids(&got), vec![(5, 1), (5, 2), (5, 3), (8, 0), (8, 1)]);
}

#[test]
fn priorities_order_pieces_and_skip_excludes_them() {
    let mut p = picker(6, 2);
    with_counts(&mut p, &[0, 0, 5, 1, 1, 1]);
    let full = 2 * u64::from(BLOCK_LEN);
    assert_eq!(p.bytes_left(), 6 * full);
    let mut prios = vec![Priority::Normal; 6];
    prios[0] = Priority::Skip;
    prios[1] = Priority::Skip;
    prios[2] = Priority::High;
    p.set_piece_priorities(&prios);
    assert!(!p.is_wanted(idx(&p, 0)) && p.is_wanted(idx(&p, 2)));
    assert_eq!(p.bytes_left(), 4 * full);
    let mut rng = Rng::new(8);
    let got = pick(&mut p, A, PeerPieces::All, 2, &mut rng);
    assert_eq!(
        pieces_of(&got),
        BTreeSet::from([2]),
        "High before rarer Normal"
    );
    let got = pick(&mut p, A, PeerPieces::All, 100, &mut rng);
    assert_eq!(
        pieces_of(&got),
        BTreeSet::from([3, 4, 5]),
        "Skip never picked"
    );
    for i in 2..6 {
        assert!(!p.is_complete());
        p.piece_verified(idx(&p, i), true);
    }
    assert!(p.is_complete() && !p.is_seed());
    assert_eq!(p.bytes_left(), 0);
    assert!(pick(&mut p, A, PeerPieces::All, 10, &mut rng).is_empty());
    // Wanting a skipped piece again reopens the download.
    p.set_piece_priority(idx(&p, 0), Priority::Normal);
    assert!(!p.is_complete());
    assert_eq!(p.bytes_left(), full);
    let got = pick(&mut p, A, PeerPieces::All, 10, &mut rng);
    assert_eq!(pieces_of(&got), BTreeSet::from([0]));
}

#[test]
fn skipping_a_partial_piece_stops_it() {
    let mut p = picker(4, 2);
    let mut rng = Rng::new(9);
    let zero = idx(&p, 0);
    let got = pick_with(&mut p, A, PeerPieces::All, 1, Some(&[zero]), &[], &mut rng);
    assert_eq!(ids(&got), vec![(0, 0)]);
    p.set_piece_priority(zero, Priority::Skip);
    let got = pick_with(&mut p, B, PeerPieces::All, 1, Some(&[zero]), &[], &mut rng);
    assert!(got.is_empty());
    // Its late block is not written, and its request is over.
    assert_eq!(
        p.block_received(A, block(&p, 0, 0)),
        BlockReceived::Unrequested
    );
    assert_eq!(p.partial_count(), 0);
    p.check_invariants();
}

#[test]
fn piece_priorities_follow_files() {
    use crate::bencode::OwnedValue as V;
    use std::collections::BTreeMap;
    let dict = |entries: Vec<(&str, V)>| {
        V::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    let file = |len: i64, name: &str, pad: bool| {
        let mut e = vec![
            ("length", V::Int(len)),
            ("path", V::List(vec![V::str(name)])),
        ];
        if pad {
            e.push(("attr", V::str("p")));
        }
        dict(e)
    };
    // Pieces of 16 KiB over: a (10000) + padding (6384) | b (20000) | c (16384).
    // Piece 0: a + pad. Piece 1: b. Piece 2: b + c. Piece 3: c.
    let files = vec![
        file(10000, "a", false),
        file(6384, "pad", true),
        file(20000, "b", false),
        file(16384, "c", false),
    ];
    let total = 10000 + 6384 + 20000 + 16384;
    let count = (total as usize).div_ceil(16384);
    let raw = dict(vec![
        ("name", V::str("t")),
        ("piece length", V::Int(16384)),
        ("pieces", V::Bytes(vec![0; 20 * count])),
        ("files", V::List(files)),
    ])
    .to_bytes();
    let info = Info::from_bytes(&raw).unwrap();
    assert_eq!(info.lengths().piece_count(), 4);
    let (s, n, h) = (Priority::Skip, Priority::Normal, Priority::High);
    // The padding file's priority never matters.
    assert_eq!(piece_priorities(&info, &[n, s, s, s]), vec![n, s, s, s]);
    assert_eq!(piece_priorities(&info, &[s, h, n, s]), vec![s, n, n, s]);
    assert_eq!(piece_priorities(&info, &[s, s, s, h]), vec![s, s, h, h]);
    assert_eq!(piece_priorities(&info, &[s, n, h, n]), vec![s, h, h, n]);
    // First/last-piece priority: each wanted file's first and last piece is Top.
    let t = Priority::Top;
    assert_eq!(
        piece_priorities_first_last(&info, &[s, n, h, n], false),
        vec![s, h, h, n]
    );
    // b spans pieces 1-2, c pieces 2-3; a is skipped.
    assert_eq!(
        piece_priorities_first_last(&info, &[s, n, n, n], true),
        vec![s, t, t, t]
    );
    assert_eq!(
        piece_priorities_first_last(&info, &[n, s, s, s], true),
        vec![t, s, s, s]
    );
}

#[test]
fn top_before_high_and_first_last_pieces_first() {
    // Two files of 4 pieces each (8 pieces): first/last of each is 0, 3, 4, 7.
    let mut p = picker(8, 1);
    let (n, t) = (Priority::Normal, Priority::Top);
    p.set_piece_priorities(&[t, n, n, t, t, n, n, t]);
    p.set_piece_priority(idx(&p, 1), Priority::High);
    let mut rng = Rng::new(3);
    let got = pick(&mut p, A, PeerPieces::All, 4, &mut rng);
    assert_eq!(pieces_of(&got), BTreeSet::from([0, 3, 4, 7]), "Top first");
    let got = pick(&mut p, A, PeerPieces::All, 1, &mut rng);
    assert_eq!(pieces_of(&got), BTreeSet::from([1]), "then High");
    p.check_invariants();
}

#[test]
fn sequential_picks_in_index_order_after_top_pieces() {
    let mut p = picker(8, 1);
    p.set_mode(PickMode::Sequential);
    let mut rng = Rng::new(5);
    let got = pick(&mut p, A, PeerPieces::All, 3, &mut rng);
    assert_eq!(ids(&got), vec![(0, 0), (1, 0), (2, 0)]);
    // With first/last pieces raised, those come first, then the rest in order.
    let mut q = picker(8, 1);
    q.set_mode(PickMode::Sequential);
    let (n, t) = (Priority::Normal, Priority::Top);
    q.set_piece_priorities(&[t, n, n, n, n, n, n, t]);
    let got = pick(&mut q, A, PeerPieces::All, 4, &mut rng);
    let order: Vec<u32> = got.iter().map(|b| b.piece.get()).collect();
    assert_eq!(order, vec![0, 7, 1, 2]);
    q.check_invariants();
}

#[test]
fn restrict_limits_picks_to_allowed_fast_pieces() {
    let mut p = picker(10, 2);
    with_counts(&mut p, &[5, 5, 5, 5, 5, 5, 5, 5, 5, 1]);
    let mut rng = Rng::new(10);
    // A partial piece outside the allowed set is not touched.
    let four = idx(&p, 4);
    pick_with(&mut p, A, PeerPieces::All, 1, Some(&[four]), &[], &mut rng);
    let allowed = [idx(&p, 5), idx(&p, 6), idx(&p, 6)];
    let has = bits(10, &[4, 5, 9]);
    let got = pick_with(
        &mut p,
        B,
        PeerPieces::Some(&has),
        10,
        Some(&allowed),
        &[],
        &mut rng,
    );
    assert_eq!(ids(&got), vec![(5, 0), (5, 1)]);
    let got = pick_with(
        &mut p,
        B,
        PeerPieces::All,
        10,
        Some(&allowed),
        &[],
        &mut rng,
    );
    assert_eq!(ids(&got), vec![(6, 0), (6, 1)]);
    // An empty allowed set picks nothing, endgame included.
    let got = pick_with(&mut p, C, PeerPieces::All, 10, Some(&[]), &[], &mut rng);
    assert!(got.is_empty());
}

#[test]
fn suggested_pieces_come_after_partials_before_rarest() {
    let mut p = picker(10, 4);
    with_counts(&mut p, &[5, 5, 5, 5, 5, 5, 5, 5, 5, 1]);
    let mut rng = Rng::new(11);
    let two = idx(&p, 2);
    pick_with(&mut p, A, PeerPieces::All, 2, Some(&[two]), &[], &mut rng);
    let suggested = [idx(&p, 6), idx(&p, 9)];
    let has = bits(10, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let got = pick_with(
        &mut p,
        B,
        PeerPieces::Some(&has),
        7,
        None,
        &suggested,
        &mut rng,
    );
    assert_eq!(
        ids(&got)[..6],
        [(2, 2), (2, 3), (6, 0), (6, 1), (6, 2), (6, 3)],
        "partial, then the suggestion the peer has"
    );
    assert_eq!(got.len(), 7);
    assert!(![2, 6, 9].contains(&got[6].piece.get()));
}

#[test]
fn endgame_duplicates_are_capped_and_never_to_the_same_peer() {
    let mut p = picker(2, 2);
    let mut rng = Rng::new(12);
    assert!(!p.is_endgame());
    let a = pick(&mut p, A, PeerPieces::All, 10, &mut rng);
    assert_eq!(a.len(), 4);
    assert!(p.is_endgame());
    assert!(
        pick(&mut p, A, PeerPieces::All, 10, &mut rng).is_empty(),
        "A has them all"
    );
    let b = pick(&mut p, B, PeerPieces::All, 10, &mut rng);
    assert_eq!(b.len(), 4, "B duplicates every block once");
    let b_set: BTreeSet<(u32, u32)> = ids(&b).into_iter().collect();
    assert_eq!(b_set.len(), 4);
    assert!(pick(&mut p, B, PeerPieces::All, 10, &mut rng).is_empty());
    assert!(
        pick(&mut p, C, PeerPieces::All, 10, &mut rng).is_empty(),
        "cap of 2 reached"
    );
    // A drops one request: C may take it as the second requester.
    p.request_dropped(A, block(&p, 0, 0));
    let c = pick(&mut p, C, PeerPieces::All, 10, &mut rng);
    assert_eq!(ids(&c), vec![(0, 0)]);
    // A peer lacking the pieces gets nothing.
    let none = bits(2, &[]);
    assert!(pick(&mut p, PeerKey(9), PeerPieces::Some(&none), 10, &mut rng).is_empty());

    // With a cap of 3, a third peer joins in; with 1, nobody duplicates.
    for (cap, expected) in [(3, 4), (1, 0)] {
        let l = lengths(2, 2);
        let cfg = PickerConfig {
            endgame_max_requesters: cap,
            ..config(0)
        };
        let mut q = Picker::new(l, &Bitfield::new(2), cfg);
        pick(&mut q, A, PeerPieces::All, 10, &mut rng);
        pick(&mut q, B, PeerPieces::All, 10, &mut rng);
        let c = pick(&mut q, C, PeerPieces::All, 10, &mut rng);
        assert_eq!(c.len(), expected, "cap {cap}");
    }
}

#[test]
fn strict_endgame_waits_until_nothing_is_free_anywhere() {
    for strict in [true, false] {
        let cfg = PickerConfig {
            strict_endgame: strict,
            ..config(0)
        };
        let mut p = Picker::new(lengths(2, 2), &Bitfield::new(2), cfg);
        let mut rng = Rng::new(24);
        let zero = idx(&p, 0);
        pick_with(&mut p, A, PeerPieces::All, 2, Some(&[zero]), &[], &mut rng);
        // B has only piece 0, all of it requested by A, while piece 1 is still free.
        let only_zero = bits(2, &[0]);
        let b = pick(&mut p, B, PeerPieces::Some(&only_zero), 2, &mut rng);
        assert!(!p.is_endgame());
        assert_eq!(b.len(), if strict { 0 } else { 2 }, "strict {strict}");
    }
}

#[test]
fn endgame_prefers_blocks_with_fewest_requesters() {
    let l = lengths(1, 4);
    let cfg = PickerConfig {
        endgame_max_requesters: 3,
        ..config(0)
    };
    let mut p = Picker::new(l, &Bitfield::new(1), cfg);
    let mut rng = Rng::new(13);
    pick(&mut p, A, PeerPieces::All, 4, &mut rng);
    let b = pick(&mut p, B, PeerPieces::All, 2, &mut rng);
    // C's first two picks are the blocks only A requested.
    let c = pick(&mut p, C, PeerPieces::All, 2, &mut rng);
    let b_set: BTreeSet<(u32, u32)> = ids(&b).into_iter().collect();
    assert!(ids(&c).iter().all(|x| !b_set.contains(x)), "{b:?} {c:?}");
}

#[test]
fn first_arrival_returns_cancels_and_later_copies_are_duplicates() {
    let mut p = picker(1, 2);
    let mut rng = Rng::new(14);
    pick(&mut p, A, PeerPieces::All, 2, &mut rng);
    pick(&mut p, B, PeerPieces::All, 2, &mut rng);
    pick(&mut p, C, PeerPieces::All, 2, &mut rng);
    let (b0, b1) = (block(&p, 0, 0), block(&p, 0, 1));
    assert_eq!(
        p.block_received(B, b0),
        BlockReceived::New {
            piece_complete: false,
            cancel: vec![A]
        }
    );
    assert_eq!(p.block_received(A, b0), BlockReceived::Duplicate);
    assert_eq!(
        p.block_received(A, b1),
        BlockReceived::New {
            piece_complete: true,
            cancel: vec![B]
        }
    );
    assert_eq!(p.block_received(B, b1), BlockReceived::Duplicate);
    // Late drops of fulfilled requests change nothing.
    p.request_dropped(B, b1);
    p.check_invariants();
    assert_eq!(p.piece_verified(idx(&p, 0), true), Vec::<PeerKey>::new());
    assert!(p.is_seed());
    assert_eq!(p.block_received(B, b1), BlockReceived::Unrequested);
}

#[test]
fn unrequested_blocks_are_detected() {
    let mut p = picker(4, 2);
    let mut rng = Rng::new(15);
    // Nobody asked for anything yet.
    assert_eq!(
        p.block_received(A, block(&p, 1, 0)),
        BlockReceived::Unrequested
    );
    let zero = idx(&p, 0);
    pick_with(&mut p, A, PeerPieces::All, 1, Some(&[zero]), &[], &mut rng);
    // Block 1 of a partial piece is still free; a different peer sends A's block.
    assert_eq!(
        p.block_received(A, block(&p, 0, 1)),
        BlockReceived::Unrequested
    );
    assert_eq!(
        p.block_received(B, block(&p, 0, 0)),
        BlockReceived::Unrequested
    );
    // An odd offset or length matches no block we asked for.
    let odd = p.lengths.block_at(0, 1, 100).unwrap();
    assert_eq!(p.block_received(A, odd), BlockReceived::Unrequested);
    let short = p.lengths.block_at(0, 0, 100).unwrap();
    assert_eq!(p.block_received(A, short), BlockReceived::Unrequested);
    p.request_dropped(A, odd);
    assert!(matches!(
        p.block_received(A, block(&p, 0, 0)),
        BlockReceived::New { .. }
    ));
    assert_eq!(
        p.block_received(A, block(&p, 0, 0)),
        BlockReceived::Duplicate
    );
    // A dropped request's late block is unrequested: the block is free again.
    pick_with(&mut p, B, PeerPieces::All, 1, Some(&[zero]), &[], &mut rng);
    p.request_dropped(B, block(&p, 0, 1));
    assert_eq!(
        p.block_received(B, block(&p, 0, 1)),
        BlockReceived::Unrequested
    );
    p.check_invariants();
}

#[test]
fn dropped_requests_free_blocks() {
    let mut p = picker(3, 4);
    let mut rng = Rng::new(16);
    let got = pick(&mut p, A, PeerPieces::All, 4, &mut rng);
    let piece = got[0].piece.get();
    p.request_dropped(A, got[1]);
    let again = pick(&mut p, B, PeerPieces::All, 1, &mut rng);
    assert_eq!(ids(&again), vec![(piece, 1)]);
    // Dropping a request that was never made, or made by someone else, changes nothing.
    p.request_dropped(C, got[2]);
    p.request_dropped(A, got[1]);
    p.request_dropped(A, block(&p, (piece + 1) % 3, 0));
    p.check_invariants();
    // Once nothing of the piece is requested or received, its block state goes away.
    for b in [got[0], got[2], got[3]] {
        p.request_dropped(A, b);
    }
    assert_eq!(p.partial_count(), 1);
    p.request_dropped(B, again[0]);
    assert_eq!(p.partial_count(), 0);
    p.check_invariants();
}

#[test]
fn failed_verification_frees_blocks_and_names_deliverers() {
    let mut p = picker(2, 4);
    let mut rng = Rng::new(17);
    let zero = idx(&p, 0);
    let only = Some(&[zero][..]);
    let a = pick_with(&mut p, A, PeerPieces::All, 2, only, &[], &mut rng);
    let b = pick_with(&mut p, B, PeerPieces::All, 1, only, &[], &mut rng);
    let c = pick_with(&mut p, C, PeerPieces::All, 1, only, &[], &mut rng);
    for (peer, blocks) in [(A, &a), (B, &b), (C, &c)] {
        for &blk in blocks.iter() {
            p.block_received(peer, blk);
        }
    }
    assert_eq!(p.contributors(zero), vec![A, B, C]);
    assert_eq!(p.piece_verified(zero, false), vec![A, B, C]);
    assert_eq!(p.partial_count(), 0);
    assert!(!p.have().get(0));
    let again = pick_with(&mut p, A, PeerPieces::All, 10, only, &[], &mut rng);
    assert_eq!(again.len(), 4, "every block is free again");
    // A failure for a piece nobody delivered names nobody.
    assert!(p.piece_verified(idx(&p, 1), false).is_empty());
    p.check_invariants();
}

#[test]
fn interest_helpers() {
    let mut p = picker(4, 1);
    p.piece_verified(idx(&p, 0), true);
    let mut prios = vec![Priority::Normal; 4];
    prios[1] = Priority::Skip;
    p.set_piece_priorities(&prios);
    assert!(!p.is_interesting(PeerPieces::Some(&bits(4, &[0, 1]))));
    assert!(p.is_interesting(PeerPieces::Some(&bits(4, &[0, 3]))));
    assert!(p.is_interesting(PeerPieces::All));
    assert!(!p.is_piece_interesting(idx(&p, 0)), "had");
    assert!(!p.is_piece_interesting(idx(&p, 1)), "skipped");
    assert!(p.is_piece_interesting(idx(&p, 2)));
    p.piece_verified(idx(&p, 2), true);
    p.piece_verified(idx(&p, 3), true);
    assert!(p.is_complete() && !p.is_seed() && !p.is_endgame());
    assert!(!p.is_interesting(PeerPieces::All));
}

#[test]
fn bytes_left_and_a_short_last_piece() {
    // Three 32 KiB pieces and a 20,000-byte last piece (blocks of 16384 and 3616 bytes).
    let l = Lengths::new(3 * 32768 + 20_000, 32768).unwrap();
    let mut p = Picker::new(l, &Bitfield::new(4), config(0));
    assert_eq!(p.bytes_left(), 3 * 32768 + 20_000);
    let last = idx(&p, 3);
    let mut rng = Rng::new(18);
    let got = pick_with(&mut p, A, PeerPieces::All, 10, Some(&[last]), &[], &mut rng);
    let lens: Vec<u32> = got.iter().map(|b| b.len).collect();
    assert_eq!(lens, vec![16384, 3616]);
    assert!(matches!(
        p.block_received(A, got[0]),
        BlockReceived::New {
            piece_complete: false,
            ..
        }
    ));
    assert!(matches!(
        p.block_received(A, got[1]),
        BlockReceived::New {
            piece_complete: true,
            ..
        }
    ));
    p.piece_verified(last, true);
    assert_eq!(p.bytes_left(), 3 * 32768);
    p.set_piece_priority(idx(&p, 0), Priority::Skip);
    assert_eq!(p.bytes_left(), 2 * 32768);
    // Skipping a piece already had changes nothing left to download.
    p.set_piece_priority(last, Priority::Skip);
    assert_eq!(p.bytes_left(), 2 * 32768);
    p.check_invariants();
}

#[test]
fn starting_with_pieces_had() {
    let l = lengths(5, 1);
    let have = bits(5, &[0, 4]);
    let mut p = Picker::new(l, &have, config(0));
    assert_eq!(p.have(), &have);
    assert_eq!(p.bytes_left(), 3 * u64::from(BLOCK_LEN));
    let got = pick(&mut p, A, PeerPieces::All, 10, &mut Rng::new(19));
    assert_eq!(pieces_of(&got), BTreeSet::from([1, 2, 3]));
}

#[test]
fn availability_counts_seeds_and_bitfields() {
    let mut p = picker(4, 1);
    let one = bits(4, &[1, 2]);
    p.peer_joined(PeerPieces::All);
    p.peer_joined(PeerPieces::Some(&one));
    p.peer_has(idx(&p, 3));
    let avail = |p: &Picker| {
        (0..4)
            .map(|i| p.availability(idx(p, i)))
            .collect::<Vec<_>>()
    };
    assert_eq!(avail(&p), vec![1, 2, 2, 2]);
    p.peer_left(PeerPieces::All);
    p.peer_left(PeerPieces::Some(&one));
    assert_eq!(avail(&p), vec![0, 0, 0, 1]);
    p.check_invariants();
}

#[test]
fn inconsistent_callers_cannot_break_it() {
    let mut p = picker(4, 2);
    let mut rng = Rng::new(20);
    // Leaves of peers that never joined, and a bitfield of the wrong size.
    p.peer_left(PeerPieces::All);
    p.peer_left(PeerPieces::Some(&bits(4, &[0, 1, 2, 3])));
    p.peer_joined(PeerPieces::Some(&bits(100, &[3, 50, 99])));
    p.peer_left(PeerPieces::Some(&bits(2, &[0])));
    assert_eq!(p.availability(idx(&p, 0)), 0);
    assert_eq!(p.availability(idx(&p, 3)), 1);
    p.check_invariants();
    // A piece index from a bigger torrent.
    let big = lengths(100, 1);
    let stranger = big.piece(77).unwrap();
    p.peer_has(stranger);
    assert_eq!(p.availability(stranger), 0);
    assert!(!p.is_wanted(stranger) && !p.is_piece_interesting(stranger));
    assert!(p.piece_verified(stranger, false).is_empty());
    p.piece_verified(stranger, true);
    p.set_piece_priority(stranger, Priority::High);
    let far = big.block(stranger, 0).unwrap();
    assert_eq!(p.block_received(A, far), BlockReceived::Unrequested);
    p.request_dropped(A, far);
    let got = pick_with(
        &mut p,
        A,
        PeerPieces::All,
        3,
        Some(&[stranger]),
        &[stranger],
        &mut rng,
    );
    assert!(got.is_empty());
    // Verification of a piece nobody downloaded: marks it had (a resume check).
    p.piece_verified(idx(&p, 2), true);
    assert!(p.have().get(2));
    assert!(p.piece_verified(idx(&p, 2), false).is_empty());
    p.check_invariants();
}

#[test]
fn large_joins_rebuild_the_order() {
    let n = 1000;
    let mut p = picker(n, 1);
    // Peers with most pieces make the buckets stale; the next pick rebuilds them.
    let most: Vec<u32> = (0..n).filter(|&i| i != 500).collect();
    for _ in 0..3 {
        p.peer_joined(PeerPieces::Some(&bits(n, &most)));
    }
    assert!(p.dirty);
    let mut rng = Rng::new(21);
    let got = pick(&mut p, A, PeerPieces::All, 1, &mut rng);
    assert_eq!(ids(&got), vec![(500, 0)]);
    assert!(!p.dirty);
    // Small updates keep the order current without a rebuild.
    p.peer_has(idx(&p, 7));
    p.peer_left(PeerPieces::Some(&bits(n, &[9])));
    assert!(!p.dirty);
    p.check_invariants();
    let got = pick(&mut p, A, PeerPieces::All, 1, &mut rng);
    assert_eq!(ids(&got), vec![(9, 0)]);
}

#[test]
fn zero_blocks_or_nothing_wanted_picks_nothing() {
    let mut p = picker(2, 1);
    let mut rng = Rng::new(22);
    assert!(pick(&mut p, A, PeerPieces::All, 0, &mut rng).is_empty());
    p.set_piece_priorities(&[Priority::Skip, Priority::Skip]);
    assert!(pick(&mut p, A, PeerPieces::All, 5, &mut rng).is_empty());
    assert!(p.is_complete() && !p.is_endgame());
}

#[test]
fn a_simulated_download_finishes() {
    // Ten peers with random halves of the torrent plus one seed; requests are answered,
    // rejected or corrupted at random until every piece is had.
    let n = 300;
    let l = Lengths::new(u64::from(n) * 65536 - 1000, 65536).unwrap();
    let mut p = Picker::new(l, &Bitfield::new(n), PickerConfig::default());
    let mut rng = Rng::new(23);
    let mut peers: Vec<Option<Bitfield>> = (0..10)
        .map(|_| {
            let mut b = Bitfield::new(n);
            for i in 0..n {
                if rng.chance(0.5) {
                    b.set(i);
                }
            }
            Some(b)
        })
        .collect();
    peers.push(None);
    for b in &peers {
        p.peer_joined(b.as_ref().map_or(PeerPieces::All, PeerPieces::Some));
    }
    let mut queues: Vec<Vec<BlockRef>> = vec![Vec::new(); peers.len()];
    let mut rounds = 0;
    while !p.is_complete() {
        rounds += 1;
        assert!(rounds < 10_000, "stuck: {} bytes left", p.bytes_left());
        for (k, bits) in peers.iter().enumerate() {
            let key = PeerKey(k as u32);
            let has = bits.as_ref().map_or(PeerPieces::All, PeerPieces::Some);
            let want = 8usize.saturating_sub(queues[k].len());
            p.pick(key, has, want, None, &[], &mut rng, &mut queues[k]);
            // Serve the oldest request, or drop it now and then.
            if queues[k].is_empty() {
                continue;
            }
            let blk = queues[k].remove(0);
            if rng.chance(0.1) {
                p.request_dropped(key, blk);
                continue;
            }
            if let BlockReceived::New {
                piece_complete,
                cancel,
            } = p.block_received(key, blk)
            {
                for c in cancel {
                    queues[c.0 as usize].retain(|b| *b != blk);
                }
                if piece_complete {
                    // Peer 3 corrupts what it sends: its pieces fail half the time and are
                    // fetched again.
                    let corrupt = p.contributors(blk.piece).contains(&PeerKey(3));
                    p.piece_verified(blk.piece, !corrupt || rng.chance(0.5));
                }
            }
            // A block that just arrived is never new twice.
            assert!(!matches!(
                p.block_received(key, blk),
                BlockReceived::New { .. }
            ));
        }
        if rounds % 97 == 0 {
            p.check_invariants();
        }
    }
    assert!(p.is_seed() && !p.is_endgame());
    assert_eq!(p.bytes_left(), 0);
    assert_eq!(p.partial_count(), 0);
    p.check_invariants();
}
