//! Peer wire codec benchmarks: decoding and encoding `piece` messages with 16 KiB blocks and
//! `request` messages, from one slice and from a ring buffer split in two.
//!
//! Run with `cargo bench --bench wire` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringtorrent::core::wire::{
    encode_piece_header, BlockRequest, Decoded, Decoder, Message, SplitBytes,
};
use ringtorrent::limits::BLOCK_LEN;

/// Messages per batch: one iteration decodes or encodes a whole batch, so the per-iteration
/// overhead of the harness does not dominate messages that take nanoseconds.
const PIECES: usize = 64;
const REQUESTS: usize = 1024;

fn block() -> Vec<u8> {
    (0..BLOCK_LEN).map(|i| (i % 251) as u8).collect()
}

fn piece(i: usize, data: &[u8]) -> Message<'_> {
    Message::Piece {
        piece: i as u32,
        offset: 0,
        data: SplitBytes::single(data),
    }
}

fn request(i: usize) -> Message<'static> {
    Message::Request(BlockRequest {
        piece: i as u32,
        offset: (i as u32 % 16) * BLOCK_LEN,
        len: BLOCK_LEN,
    })
}

fn stream(messages: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    messages.flatten().collect()
}

/// Decodes every frame in `input` and returns a checksum so nothing is optimized away.
fn decode_all(decoder: &Decoder, mut input: SplitBytes<'_>) -> usize {
    let mut sum = 0;
    while let Ok(Decoded::Complete { value, consumed }) = decoder.decode(input) {
        sum += match value {
            Message::Piece { data, .. } => data.len(),
            Message::Request(r) => r.piece as usize,
            _ => 0,
        };
        input = match input.split_at(consumed) {
            Some((_, rest)) => rest,
            None => break,
        };
    }
    sum
}

fn encoded(message: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    message.encode(&mut out);
    out
}

fn bench_decode(c: &mut Criterion) {
    let data = block();
    let decoder = Decoder::new();
    let pieces = stream((0..PIECES).map(|i| encoded(&piece(i, &data))));
    let requests = stream((0..REQUESTS).map(|i| encoded(&request(i))));

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(pieces.len() as u64));
    group.bench_function("piece_16k", |b| {
        b.iter(|| decode_all(&decoder, SplitBytes::single(black_box(&pieces))))
    });
    // Split inside a block, the way a ring buffer wraps: the block comes back in two parts.
    let (a, z) = pieces.split_at(pieces.len() / 2 + 4099);
    group.bench_function("piece_16k_split", |b| {
        b.iter(|| decode_all(&decoder, SplitBytes::new(black_box(a), black_box(z))))
    });
    // What a driver does with a received block: decode, then copy it to its piece buffer.
    let mut dest = vec![0u8; BLOCK_LEN as usize];
    group.bench_function("piece_16k_split_copy_out", |b| {
        b.iter(|| {
            let mut input = SplitBytes::new(black_box(a), black_box(z));
            while let Ok(Decoded::Complete { value, consumed }) = decoder.decode(input) {
                if let Message::Piece { data, .. } = value {
                    data.copy_to(&mut dest);
                }
                input = input
                    .split_at(consumed)
                    .map_or_else(Default::default, |s| s.1);
            }
            black_box(&dest);
        })
    });

    group.throughput(Throughput::Elements(REQUESTS as u64));
    group.bench_function("request", |b| {
        b.iter(|| decode_all(&decoder, SplitBytes::single(black_box(&requests))))
    });
    // Split inside a request's fields, so one request is read across the wrap.
    let (a, z) = requests.split_at(requests.len() / 2 + 7);
    group.bench_function("request_split", |b| {
        b.iter(|| decode_all(&decoder, SplitBytes::new(black_box(a), black_box(z))))
    });
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let data = block();
    let mut out = Vec::with_capacity(PIECES * (BLOCK_LEN as usize + 13) + REQUESTS * 17);

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(
        (PIECES * (BLOCK_LEN as usize + 13)) as u64,
    ));
    group.bench_function("piece_16k", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..PIECES {
                piece(i, black_box(&data)).encode(&mut out);
            }
            black_box(out.len())
        })
    });

    group.throughput(Throughput::Elements(PIECES as u64));
    group.bench_function("piece_header_only", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..PIECES {
                encode_piece_header(black_box(i as u32), 0, BLOCK_LEN, &mut out);
            }
            black_box(out.len())
        })
    });

    group.throughput(Throughput::Elements(REQUESTS as u64));
    group.bench_function("request", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..REQUESTS {
                request(black_box(i)).encode(&mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
