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

/// The textbook RC4 with a byte table, as the reference `Rc4`'s `u32` table is measured
/// against in the same run (same key schedule, same output).
struct ByteRc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl ByteRc4 {
    fn new(key: &[u8]) -> ByteRc4 {
        let mut s = [0u8; 256];
        for (n, b) in s.iter_mut().enumerate() {
            *b = n as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        ByteRc4 { s, i: 0, j: 0 }
    }

    fn apply(&mut self, data: &mut [u8]) {
        let (mut i, mut j) = (self.i, self.j);
        let s = &mut self.s;
        for b in data {
            i = i.wrapping_add(1);
            let si = s[i as usize];
            j = j.wrapping_add(si);
            let sj = s[j as usize];
            s[i as usize] = sj;
            s[j as usize] = si;
            *b ^= s[si.wrapping_add(sj) as usize];
        }
        (self.i, self.j) = (i, j);
    }
}

fn rc4(c: &mut Criterion) {
    let data = block();
    let mut g = c.benchmark_group("rc4");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("copy_16k", |b| {
        b.iter(|| black_box(black_box(&data[..]).to_vec()))
    });
    // The two tables give the same key stream.
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    Rc4::new(b"an mse key, twenty b").apply(&mut a);
    ByteRc4::new(b"an mse key, twenty b").apply(&mut b);
    assert_eq!(a, b);
    let mut bytes = ByteRc4::new(b"an mse key, twenty b");
    let mut buf = data.clone();
    g.bench_function("apply_in_place_16k_byte_table", |b| {
        b.iter(|| bytes.apply(black_box(&mut buf)))
    });
    let mut cipher = Rc4::new_mse(b"an mse key, twenty b");
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
