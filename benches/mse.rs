//! Protocol encryption costs: RC4 over 16 KiB blocks (in place, as received bytes are
//! decrypted, and copied through the cipher, as queued blocks are encrypted) next to a plain
//! copy of the same block, and one whole MSE/PE handshake (two 768-bit Diffie-Hellman key
//! pairs and the shared secret on each side), which a connection pays once.
//!
//! Run with `cargo bench --bench mse` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringtorrent::core::mse::{Initiator, Rc4, Responder, Step, CRYPTO_PLAINTEXT, CRYPTO_RC4};
use ringtorrent::core::InfoHash;
use ringtorrent::limits::BLOCK_LEN;

fn block() -> Vec<u8> {
    (0..BLOCK_LEN).map(|i| (i % 251) as u8).collect()
}

fn rc4(c: &mut Criterion) {
    let data = block();
    let mut g = c.benchmark_group("rc4");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("copy_16k", |b| {
        b.iter(|| black_box(black_box(&data[..]).to_vec()))
    });
    let mut cipher = Rc4::new_mse(b"an mse key, twenty b");
    let mut buf = data.clone();
    g.bench_function("apply_in_place_16k", |b| {
        b.iter(|| cipher.apply(black_box(&mut buf)))
    });
    g.bench_function("apply_into_16k", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            cipher.apply_into(black_box(&data), &mut out);
            black_box(out)
        })
    });
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let hash = InfoHash::from_bytes([7; 20]);
    let torrents = [hash];
    c.bench_function("mse_handshake_both_sides", |b| {
        b.iter(|| {
            let (mut a, first) = Initiator::new(
                [1; 20],
                hash,
                CRYPTO_RC4 | CRYPTO_PLAINTEXT,
                vec![],
                vec![],
                vec![],
            );
            let mut r = Responder::new([2; 20], vec![], CRYPTO_RC4);
            let Ok(Step::Send(yb)) = r.feed(&first, &torrents) else {
                panic!("Yb")
            };
            let Ok(Step::Send(req)) = a.feed(&yb) else {
                panic!("request")
            };
            let Ok(Step::Established { send, .. }) = r.feed(&req, &torrents) else {
                panic!("established")
            };
            black_box(a.feed(&send).is_ok())
        })
    });
}

criterion_group!(benches, rc4, handshake);
criterion_main!(benches);
