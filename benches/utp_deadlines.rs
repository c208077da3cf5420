//! The uTP endpoint's next deadline with 1,000 and 10,000 connections: the heap's
//! `poll_timeout` (what the loop asks every turn) against `poll_timeout_by_scan`, the scan of
//! every connection it replaced, on the same endpoint in the same run. `turn/*` is a quiet
//! loop turn's uTP part: `poll_timeout`, then `handle_timeout` with nothing due (before the
//! heap, `handle_timeout` scanned every connection too).
//!
//! Run with `cargo bench --bench utp_deadlines` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringtorrent::core::Time;
use ringtorrent::utp::{Endpoint, EndpointConfig};

/// An endpoint with `n` connections dialled to distinct peers (their SYN timers pending).
fn endpoint(n: usize) -> Endpoint {
    let mut e = Endpoint::new(
        EndpointConfig {
            max_connections: n,
            ..EndpointConfig::default()
        },
        1,
    );
    for i in 0..n {
        let peer = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881));
        e.connect(peer, Time::from_millis(i as u64)).unwrap();
    }
    while e.poll_transmit().is_some() {}
    e
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("utp_deadline");
    for n in [1_000, 10_000] {
        let mut e = endpoint(n);
        assert_eq!(e.poll_timeout(), e.poll_timeout_by_scan());
        g.bench_with_input(BenchmarkId::new("heap", n), &n, |b, _| {
            b.iter(|| black_box(e.poll_timeout()))
        });
        g.bench_with_input(BenchmarkId::new("scan", n), &n, |b, _| {
            b.iter(|| black_box(e.poll_timeout_by_scan()))
        });
        // A quiet turn: nothing is due yet.
        let quiet = Time::from_millis(1);
        g.bench_with_input(BenchmarkId::new("turn_heap", n), &n, |b, _| {
            b.iter(|| {
                let t = black_box(e.poll_timeout());
                e.handle_timeout(quiet);
                t
            })
        });
        g.bench_with_input(BenchmarkId::new("turn_scan", n), &n, |b, _| {
            b.iter(|| {
                // What a turn cost before: the deadline scan, and handle_timeout's own scan
                // for connections due.
                let t = black_box(e.poll_timeout_by_scan());
                let due = e.poll_timeout_by_scan().is_some_and(|d| d <= quiet);
                black_box(due);
                t
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
