//! Piece verification throughput: the disk pool hashing 64 MiB of pieces (256 KiB to 4 MiB)
//! from a mapped file in the page cache (tmpfs), against the `sha1` crate on one core over
//! a buffer in memory. `scripts/bench-hashing.sh` runs this beside `openssl speed sha1` and
//! prints the ratios (target: the pool at 90% or more of openssl per core times cores).
//!
//! - `sha1_one_core/N`: `Sha1::digest` of an N-byte buffer hashed again and again, so it
//!   stays in the CPU's caches: what `openssl speed` measures.
//! - `sha1_64mib_one_core/{direct,prefetched}`: 64 MiB in 1 MiB pieces, more than the caches
//!   hold, as pieces are when they are verified: `Sha1::digest` as is, and with the software
//!   prefetch that `Storage::hash_piece` uses.
//! - `pool_verify/N`: every piece of a 64 MiB file verified on the pool (one thread per
//!   core), results drained through the completion queue as an event loop would.
//! - `pool_verify_fresh_map/N`: the same through a freshly opened storage each time, so every
//!   page is faulted into the new mapping: the cost a piece pays when it is verified right
//!   after its blocks were written.
//!
//! Each pool benchmark runs twice: timed by the wall clock (`pool_verify*`), and by the
//! process's CPU time (`cpu_pool_verify*`), which is how `openssl speed` times itself unless
//! given `-elapsed`. On a shared machine the CPU-time figures compare per-core efficiency
//! with openssl's without the noise of other load; the wall-clock ones show the scaling.
//!
//! Run with `cargo bench --bench hashing` (add `-- --quick` for a short run).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ringtorrent::bencode::OwnedValue;
use ringtorrent::metainfo::{Info, Torrent};
use ringtorrent::storage::{
    completion_queue, sha1_prefetched, CompletionSender, Completions, DiskJob, DiskPool,
    DiskPoolConfig, OpenMode, Outcome, Storage,
};
use sha1::{Digest, Sha1};

const TOTAL: usize = 64 << 20;
const SIZES: [usize; 3] = [256 << 10, 1 << 20, 4 << 20];

fn payload() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..TOTAL)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A single-file torrent over `data` in pieces of `piece_len`, its file written to `dir`.
fn setup(dir: &Path, data: &[u8], piece_len: usize) -> Arc<Info> {
    let name = format!("bench-{piece_len}.bin");
    let pieces: Vec<u8> = data
        .chunks(piece_len)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str(&name));
    info.insert(b"length".to_vec(), OwnedValue::Int(data.len() as i64));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(piece_len as i64));
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    std::fs::write(dir.join(&name), data).unwrap();
    Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    )
}

fn verify_all(pool: &DiskPool, storage: &Arc<Storage>, tx: &CompletionSender, rx: &Completions) {
    let info = storage.info().clone();
    let count = info.lengths().piece_count() as usize;
    for piece in info.lengths().pieces() {
        let job = DiskJob::Verify {
            piece,
            expected: Some(*info.piece_hash(piece)),
            blocks: false,
        };
        pool.submit(storage, u64::from(piece.get()), job, tx);
    }
    let mut done = Vec::with_capacity(count);
    while done.len() < count {
        if rx.wait(Duration::from_secs(10)) {
            rx.acknowledge();
        }
        rx.drain(usize::MAX, &mut done);
    }
    for c in &done {
        assert!(
            matches!(
                c.outcome,
                Outcome::Verified {
                    result: Ok(true),
                    ..
                }
            ),
            "{c:?}"
        );
    }
    black_box(done);
}

/// Criterion measurement by CPU time used by the whole process (all pool threads).
struct CpuTime;

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for CpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        process_cpu()
    }
    fn end(&self, started: Duration) -> Duration {
        process_cpu() - started
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Formats CPU nanoseconds (and bytes per CPU second) like criterion's wall time.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e-3, "µs cpu")
        } else if typical < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let bytes = match *throughput {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => b as f64,
            Throughput::Elements(e) | Throughput::ElementsAndBytes { elements: e, .. } => e as f64,
            Throughput::Bits(b) => b as f64 / 8.0,
        };
        values.iter_mut().for_each(|v| *v = bytes / *v * 1e9 / 1e6);
        "MB/s cpu"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn benches(c: &mut Criterion) {
    let data = payload();
    let mut group = c.benchmark_group("sha1_one_core");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| Sha1::digest(black_box(&data[..size])))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sha1_64mib_one_core");
    group
        .sample_size(20)
        .throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("direct", |b| {
        b.iter(|| {
            for piece in data.chunks(1 << 20) {
                black_box(Sha1::digest(piece));
            }
        })
    });
    group.bench_function("prefetched", |b| {
        b.iter(|| {
            for piece in data.chunks(1 << 20) {
                black_box(sha1_prefetched(piece));
            }
        })
    });
    group.finish();

    pool_benches(c, "");
}

fn cpu_benches(c: &mut Criterion<CpuTime>) {
    pool_benches(c, "cpu_");
}

fn pool_benches<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let data = payload();
    // Data in the page cache without a disk behind it: the benchmark is about hashing.
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pool = DiskPool::new(DiskPoolConfig {
        hash_threads: cores,
        io_threads: 1,
    })
    .unwrap();
    let (tx, rx) = completion_queue().unwrap();

    let mut group = c.benchmark_group(format!("{prefix}pool_verify"));
    group
        .sample_size(20)
        .throughput(Throughput::Bytes(TOTAL as u64));
    for size in SIZES {
        let info = setup(tmp.path(), &data, size);
        let storage = Arc::new(Storage::open(info, tmp.path(), OpenMode::ReadOnly).unwrap());
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| verify_all(&pool, &storage, &tx, &rx))
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("{prefix}pool_verify_fresh_map"));
    group
        .sample_size(20)
        .throughput(Throughput::Bytes(TOTAL as u64));
    for size in SIZES {
        let info = setup(tmp.path(), &data, size);
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_batched(
                || Arc::new(Storage::open(info.clone(), tmp.path(), OpenMode::ReadOnly).unwrap()),
                |storage| verify_all(&pool, &storage, &tx, &rx),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(hashing, benches);
criterion_group! {
    name = hashing_cpu;
    config = Criterion::default().with_measurement(CpuTime);
    targets = cpu_benches
}
criterion_main!(hashing, hashing_cpu);
