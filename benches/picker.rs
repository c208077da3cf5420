//! Piece picker benchmarks on a 100,000-piece torrent (256 KiB pieces, 16 blocks each) with
//! 500 connected peers of varied completeness, 10% of the pieces had and 100 pieces in flight.
//!
//! - `pick16/*`: one `pick` of 16 blocks (a whole fresh piece) followed by dropping those 16
//!   requests, which returns the piece to its bucket, so every iteration does the same work:
//!   a rarest-first walk from a random offset, a piece started, 16 requests and 16 drops.
//! - `peer_has`: `have` messages for pieces in random order.
//! - `peer_join_leave`: a peer with half the pieces joining and leaving.
//!
//! Run with `cargo bench --bench picker` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringtorrent::core::picker::{PeerPieces, PickMode, Picker, PickerConfig};
use ringtorrent::core::{Bitfield, BlockRef, Lengths, PeerKey, Rng};

const PIECES: u32 = 100_000;
const PIECE_LEN: u64 = 256 * 1024;
const PEERS: u32 = 500;

/// A bitfield with each piece set with probability `density`.
fn random_bits(rng: &mut Rng, density: f64) -> Bitfield {
    let mut b = Bitfield::new(PIECES);
    for i in 0..PIECES {
        if rng.unit() < density {
            b.set(i);
        }
    }
    b
}

/// The swarm described in the module documentation, and the peers' bitfields.
fn swarm(rng: &mut Rng) -> (Picker, Vec<Bitfield>) {
    let lengths = Lengths::new(u64::from(PIECES) * PIECE_LEN, PIECE_LEN).unwrap();
    let mut picker = Picker::new(lengths, &Bitfield::new(PIECES), PickerConfig::default());
    let peers: Vec<Bitfield> = (0..PEERS)
        .map(|_| {
            let density = 0.05 + 0.9 * rng.unit();
            random_bits(rng, density)
        })
        .collect();
    for bits in &peers {
        picker.peer_joined(PeerPieces::Some(bits));
    }
    for i in (0..PIECES).step_by(10) {
        picker.piece_verified(lengths.piece(i).unwrap(), true);
    }
    let mut out = Vec::new();
    for (k, bits) in peers.iter().enumerate().take(100) {
        let key = PeerKey(k as u32);
        picker.pick(key, PeerPieces::Some(bits), 16, None, &[], rng, &mut out);
    }
    (picker, peers)
}

fn pick_and_drop(picker: &mut Picker, has: PeerPieces<'_>, rng: &mut Rng, out: &mut Vec<BlockRef>) {
    let peer = PeerKey(PEERS + 1);
    out.clear();
    picker.pick(peer, has, 16, None, &[], rng, out);
    for &block in out.iter() {
        picker.request_dropped(peer, block);
    }
    black_box(out.len());
}

fn bench_pick(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let (mut picker, _) = swarm(&mut rng);
    let mut out = Vec::with_capacity(16);
    let dense = random_bits(&mut rng, 0.9);
    let sparse = random_bits(&mut rng, 0.005);

    let mut group = c.benchmark_group("pick16");
    group.throughput(Throughput::Elements(16));
    group.bench_function("rarest_seed", |b| {
        b.iter(|| pick_and_drop(&mut picker, PeerPieces::All, &mut rng, &mut out))
    });
    group.bench_function("rarest_90pct_peer", |b| {
        b.iter(|| pick_and_drop(&mut picker, PeerPieces::Some(&dense), &mut rng, &mut out))
    });
    group.bench_function("rarest_0.5pct_peer", |b| {
        b.iter(|| pick_and_drop(&mut picker, PeerPieces::Some(&sparse), &mut rng, &mut out))
    });
    picker.set_mode(PickMode::Sequential);
    group.bench_function("sequential_90pct_peer", |b| {
        b.iter(|| pick_and_drop(&mut picker, PeerPieces::Some(&dense), &mut rng, &mut out))
    });
    group.finish();
}

fn bench_peer_has(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let (mut picker, _) = swarm(&mut rng);
    let lengths = Lengths::new(u64::from(PIECES) * PIECE_LEN, PIECE_LEN).unwrap();
    let order: Vec<_> = (0..4096)
        .map(|_| lengths.piece(rng.below(u64::from(PIECES)) as u32).unwrap())
        .collect();
    let mut group = c.benchmark_group("availability");
    group.throughput(Throughput::Elements(order.len() as u64));
    // Counts drift upwards over the run (hundreds of millions of `have`s over 100,000
    // pieces), which only adds buckets: each call stays one bucket move.
    group.bench_function("peer_has", |b| {
        b.iter(|| {
            for &piece in &order {
                picker.peer_has(black_box(piece));
            }
        })
    });
    group.finish();
}

fn bench_join_leave(c: &mut Criterion) {
    // A fresh swarm, so the `have` benchmark's drift does not skew the rebuild.
    let mut rng = Rng::new(3);
    let (mut picker, _) = swarm(&mut rng);
    let half = random_bits(&mut rng, 0.5);
    let mut group = c.benchmark_group("availability");
    group.throughput(Throughput::Elements(1));
    group.bench_function("peer_join_leave_50pct", |b| {
        b.iter(|| {
            picker.peer_joined(PeerPieces::Some(black_box(&half)));
            picker.peer_left(PeerPieces::Some(black_box(&half)));
        })
    });
    // The same, then a pick: the large bitfield made the buckets stale, so this pays the
    // rebuild (the full cost of a peer with a large bitfield coming and going).
    let mut out = Vec::with_capacity(16);
    group.bench_function("peer_join_leave_50pct_then_pick16", |b| {
        b.iter(|| {
            picker.peer_joined(PeerPieces::Some(black_box(&half)));
            picker.peer_left(PeerPieces::Some(black_box(&half)));
            pick_and_drop(&mut picker, PeerPieces::All, &mut rng, &mut out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_pick, bench_peer_has, bench_join_leave);
criterion_main!(benches);
