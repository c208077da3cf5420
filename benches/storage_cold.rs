//! How blocks get into and out of memory-mapped files without the event loop taking page
//! faults on cold pages: the measurement behind `perf/2026-11-24-storage-cold-pages.md`.
//!
//! Every variant moves the same 16 KiB blocks (pieces in a seeded random order, the blocks of
//! a piece in order, as a peer requests them) between memory and a file on a real disk, with
//! the page cache emptied before each cold run. For variants that copy on the calling thread
//! (the event loop's place) it reports how long each copy held that thread; for variants that
//! copy on a pool it reports throughput and the loop's hand-off cost. The check variants hash
//! a whole file from the mapping or through `pread`.
//!
//! Run through `scripts/bench-storage.sh` (root: it writes `/proc/sys/vm/drop_caches`).
//! `cargo bench` without `--dir` cannot measure (it does not know a real disk) and fails
//! saying how to run it. Run without `--bench` (as `cargo test --benches` does) it is a
//! self-check: every variant once over an 8 MiB file in a temporary folder, without
//! dropping the page cache (no root needed, nothing cold, nothing measured worth keeping).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use memmap2::{Advice, MmapOptions, MmapRaw};
use rayon::prelude::*;
use ringtorrent::bencode::OwnedValue;
use ringtorrent::core::BlockRef;
use ringtorrent::metainfo::{Info, Torrent};
use ringtorrent::storage::{
    self as rts, completion_queue, DiskJob, DiskPool, DiskPoolConfig, OpenMode, Storage,
};
use sha1::{Digest, Sha1};

const BLOCK: usize = 16 * 1024;
const PAGE: usize = 4096;

struct Args {
    dir: PathBuf,
    file_mib: u64,
    piece_kib: usize,
    pieces: usize,
    threads: usize,
    depth: usize,
    rounds: usize,
    only: Option<String>,
    /// Drop the page cache before each cold run (false in the self-check).
    cold: bool,
}

/// The arguments, with the temporary folder of the self-check to keep while it runs; or why
/// this run cannot measure.
fn parse_args() -> Result<(Args, Option<tempfile::TempDir>), String> {
    let mut args = Args {
        dir: PathBuf::new(),
        file_mib: 2048,
        piece_kib: 256,
        pieces: 512,
        threads: 2,
        depth: 64,
        rounds: 3,
        only: None,
        cold: true,
    };
    let mut have_dir = false;
    let mut bench = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("option needs a value");
        match a.as_str() {
            "--dir" => {
                args.dir = PathBuf::from(val());
                have_dir = true;
            }
            "--file-mib" => args.file_mib = val().parse().unwrap(),
            "--piece-kib" => args.piece_kib = val().parse().unwrap(),
            "--pieces" => args.pieces = val().parse().unwrap(),
            "--threads" => args.threads = val().parse().unwrap(),
            "--depth" => args.depth = val().parse().unwrap(),
            "--rounds" => args.rounds = val().parse().unwrap(),
            "--only" => args.only = Some(val()),
            "--bench" => bench = true,
            _ => {}
        }
    }
    if have_dir {
        return Ok((args, None));
    }
    if bench {
        return Err(
            "storage_cold: needs --dir DIR on a real disk and root; run \
                    scripts/bench-storage.sh. Nothing measured."
                .into(),
        );
    }
    let tmp = tempfile::tempdir().map_err(|e| format!("storage_cold: temporary folder: {e}"))?;
    let smoke = Args {
        dir: tmp.path().to_path_buf(),
        file_mib: 8,
        pieces: 8,
        depth: 8,
        rounds: 1,
        cold: false,
        ..args
    };
    Ok((smoke, Some(tmp)))
}

/// Empties the page cache (after writing back dirty pages) and checks that the file is gone
/// from it; nothing in the self-check.
fn drop_caches(args: &Args, path: &Path) {
    if !args.cold {
        return;
    }
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1\n")
        .expect("cannot write /proc/sys/vm/drop_caches: run as root");
    let resident = residency(path);
    assert!(resident < 0.01, "{resident:.3} of the file still cached");
}

/// The fraction of `path`'s pages in the page cache, by `mincore` over a fresh mapping.
fn residency(path: &Path) -> f64 {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let map = MmapOptions::new().map_raw_read_only(&file).unwrap();
    let pages = len.div_ceil(PAGE);
    let mut vec = vec![0u8; pages];
    // SAFETY: the mapping is `len` bytes long and `vec` holds one byte per page of it.
    let rc = unsafe { libc::mincore(map.as_mut_ptr().cast(), len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64
}

/// The blocks to move: `pieces` distinct pieces in a seeded random order, each piece's blocks
/// in order.
fn schedule(args: &Args) -> Vec<u64> {
    let piece = (args.piece_kib * 1024) as u64;
    let total_pieces = args.file_mib * 1024 * 1024 / piece;
    let mut order: Vec<u64> = (0..total_pieces).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order.truncate(args.pieces);
    order
        .iter()
        .flat_map(|p| (0..piece / BLOCK as u64).map(move |b| p * piece + b * BLOCK as u64))
        .collect()
}

#[derive(Default, Clone)]
struct Outcome {
    wall_s: f64,
    bytes: u64,
    /// Per-block time the calling ("loop") thread was held, in nanoseconds.
    held_ns: Vec<u64>,
    /// Time for msync/fsync after the writes, where relevant.
    flush_s: f64,
}

impl Outcome {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.wall_s / 1e6
    }
    fn pct(&self, p: f64) -> f64 {
        if self.held_ns.is_empty() {
            return 0.0;
        }
        let mut v = self.held_ns.clone();
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
    }
    fn held_total_s(&self) -> f64 {
        self.held_ns.iter().sum::<u64>() as f64 / 1e9
    }
}

fn map_rw(path: &Path) -> (File, Arc<MmapRaw>) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let map = MmapOptions::new().map_raw(&file).unwrap();
    (file, Arc::new(map))
}

fn copy_out(map: &MmapRaw, off: u64, buf: &mut [u8]) {
    // SAFETY: `off + buf.len()` lies inside the mapping (the schedule stays in the file), and
    // nothing else touches these bytes while the benchmark copies them.
    unsafe {
        std::ptr::copy_nonoverlapping(map.as_ptr().add(off as usize), buf.as_mut_ptr(), buf.len())
    };
}

fn copy_in(map: &MmapRaw, off: u64, buf: &[u8]) {
    // SAFETY: as in `copy_out`; the mapping is writable.
    unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr(), map.as_mut_ptr().add(off as usize), buf.len())
    };
}

#[derive(Clone, Copy, PartialEq)]
enum Read {
    LoopNormal,
    LoopRandom,
    LoopRandomWillneedPiece,
    LoopWillneedAhead(usize),
    PoolMmapNormal,
    PoolMmapRandom,
    PoolMmapRandomWillneedPiece,
    PoolMmapRandomPopulatePiece,
    PoolPread,
    PoolPreadWillneedPiece,
}

fn read_variant(
    args: &Args,
    path: &Path,
    blocks: &[u64],
    v: Read,
    pool: &rayon::ThreadPool,
) -> Outcome {
    let piece = (args.piece_kib * 1024) as u64;
    let (_file, map) = map_rw(path);
    let file = Arc::new(File::open(path).unwrap());
    match v {
        Read::LoopRandom
        | Read::LoopRandomWillneedPiece
        | Read::LoopWillneedAhead(_)
        | Read::PoolMmapRandom
        | Read::PoolMmapRandomWillneedPiece
        | Read::PoolMmapRandomPopulatePiece => map.advise(Advice::Random).unwrap(),
        Read::PoolPread | Read::PoolPreadWillneedPiece => {
            fadvise(&file, 0, 0, libc::POSIX_FADV_RANDOM)
        }
        _ => {}
    }
    let mut out = Outcome {
        bytes: (blocks.len() * BLOCK) as u64,
        ..Default::default()
    };
    let start = Instant::now();
    match v {
        Read::LoopNormal
        | Read::LoopRandom
        | Read::LoopRandomWillneedPiece
        | Read::LoopWillneedAhead(_) => {
            let mut buf = vec![0u8; BLOCK];
            let piece_starts: Vec<u64> =
                blocks.iter().copied().filter(|o| o % piece == 0).collect();
            let mut piece_no = 0;
            if let Read::LoopWillneedAhead(d) = v {
                for p in piece_starts.iter().take(d) {
                    map.advise_range(Advice::WillNeed, *p as usize, piece as usize)
                        .unwrap();
                }
            }
            for &off in blocks {
                let t = Instant::now();
                if off % piece == 0 {
                    match v {
                        Read::LoopRandomWillneedPiece => map
                            .advise_range(Advice::WillNeed, off as usize, piece as usize)
                            .unwrap(),
                        Read::LoopWillneedAhead(d) => {
                            if let Some(p) = piece_starts.get(piece_no + d) {
                                map.advise_range(Advice::WillNeed, *p as usize, piece as usize)
                                    .unwrap();
                            }
                        }
                        _ => {}
                    }
                    piece_no += 1;
                }
                copy_out(&map, off, &mut buf);
                out.held_ns.push(t.elapsed().as_nanos() as u64);
                std::hint::black_box(&buf);
            }
        }
        _ => {
            let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
            let mut free: Vec<Vec<u8>> = (0..args.depth).map(|_| vec![0u8; BLOCK]).collect();
            let mut next = 0;
            let mut done = 0;
            while done < blocks.len() {
                while next < blocks.len() && !free.is_empty() {
                    let t = Instant::now();
                    let mut buf = free.pop().unwrap();
                    let off = blocks[next];
                    let (map, file, tx) = (map.clone(), file.clone(), tx.clone());
                    pool.spawn(move || {
                        match v {
                            Read::PoolPread => file.read_exact_at(&mut buf, off).unwrap(),
                            Read::PoolPreadWillneedPiece => {
                                if off % piece == 0 {
                                    fadvise(&file, off, piece, libc::POSIX_FADV_WILLNEED);
                                }
                                file.read_exact_at(&mut buf, off).unwrap()
                            }
                            Read::PoolMmapRandomPopulatePiece => {
                                if off % piece == 0 {
                                    populate(&map, off as usize, piece as usize);
                                }
                                copy_out(&map, off, &mut buf)
                            }
                            Read::PoolMmapRandomWillneedPiece => {
                                if off % piece == 0 {
                                    map.advise_range(
                                        Advice::WillNeed,
                                        off as usize,
                                        piece as usize,
                                    )
                                    .unwrap();
                                }
                                copy_out(&map, off, &mut buf)
                            }
                            _ => copy_out(&map, off, &mut buf),
                        }
                        tx.send((off, buf)).unwrap();
                    });
                    next += 1;
                    out.held_ns.push(t.elapsed().as_nanos() as u64);
                }
                let (_, buf) = rx.recv().unwrap();
                let t = Instant::now();
                std::hint::black_box(&buf);
                free.push(buf);
                done += 1;
                *out.held_ns.last_mut().unwrap() += t.elapsed().as_nanos() as u64;
            }
        }
    }
    out.wall_s = start.elapsed().as_secs_f64();
    out
}

fn fadvise(file: &File, off: u64, len: u64, advice: libc::c_int) {
    // SAFETY: plain fadvise on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), off as i64, len as i64, advice) };
    assert_eq!(rc, 0);
}

/// MADV_POPULATE_READ (Linux 5.14): fault the range in now, reading it if need be.
fn populate(map: &MmapRaw, off: usize, len: usize) {
    // SAFETY: the range lies inside the mapping; populating changes no contents.
    let rc = unsafe { libc::madvise(map.as_mut_ptr().add(off).cast(), len, 22) };
    assert_eq!(
        rc,
        0,
        "MADV_POPULATE_READ: {}",
        std::io::Error::last_os_error()
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Write {
    LoopMmap,
    PoolMmap,
    PoolMmapRandom,
    PoolPwrite,
}

fn write_variant(
    args: &Args,
    path: &Path,
    blocks: &[u64],
    v: Write,
    pool: &rayon::ThreadPool,
) -> Outcome {
    let (file, map) = map_rw(path);
    let file = Arc::new(file);
    let mut out = Outcome {
        bytes: (blocks.len() * BLOCK) as u64,
        ..Default::default()
    };
    let data = vec![0xA5u8; BLOCK];
    if v == Write::PoolMmapRandom {
        map.advise(Advice::Random).unwrap();
    }
    let start = Instant::now();
    match v {
        Write::LoopMmap => {
            for &off in blocks {
                let t = Instant::now();
                copy_in(&map, off, &data);
                out.held_ns.push(t.elapsed().as_nanos() as u64);
            }
        }
        _ => {
            let (tx, rx) = mpsc::channel::<Vec<u8>>();
            let mut free: Vec<Vec<u8>> = (0..args.depth).map(|_| data.clone()).collect();
            let mut next = 0;
            let mut done = 0;
            while done < blocks.len() {
                while next < blocks.len() && !free.is_empty() {
                    let t = Instant::now();
                    let buf = free.pop().unwrap();
                    let off = blocks[next];
                    let (map, file, tx) = (map.clone(), file.clone(), tx.clone());
                    pool.spawn(move || {
                        if v == Write::PoolPwrite {
                            file.write_all_at(&buf, off).unwrap();
                        } else {
                            copy_in(&map, off, &buf);
                        }
                        tx.send(buf).unwrap();
                    });
                    next += 1;
                    out.held_ns.push(t.elapsed().as_nanos() as u64);
                }
                let buf = rx.recv().unwrap();
                free.push(buf);
                done += 1;
            }
        }
    }
    out.wall_s = start.elapsed().as_secs_f64();
    let t = Instant::now();
    if v == Write::PoolPwrite {
        file.sync_data().unwrap();
    } else {
        map.flush().unwrap();
    }
    out.flush_s = t.elapsed().as_secs_f64();
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Hash {
    MmapNormal,
    MmapSequential,
    MmapSequentialWillneed,
    MmapSequentialPopulate,
    Pread,
    PreadWillneed,
}

fn hash_variant(args: &Args, path: &Path, v: Hash, pool: &rayon::ThreadPool) -> Outcome {
    let piece = args.piece_kib * 1024;
    let (file, map) = map_rw(path);
    let len = map.len();
    match v {
        Hash::MmapSequential | Hash::MmapSequentialWillneed | Hash::MmapSequentialPopulate => {
            map.advise(Advice::Sequential).unwrap()
        }
        Hash::Pread | Hash::PreadWillneed => fadvise(&file, 0, 0, libc::POSIX_FADV_SEQUENTIAL),
        Hash::MmapNormal => {}
    }
    let start = Instant::now();
    let pieces = len / piece;
    let hashes: Vec<[u8; 20]> = pool.install(|| {
        (0..pieces)
            .into_par_iter()
            .with_min_len(1)
            .map_init(
                || vec![0u8; piece],
                |buf, i| {
                    let off = i * piece;
                    match v {
                        Hash::Pread | Hash::PreadWillneed => {
                            if v == Hash::PreadWillneed && off + 2 * piece <= len {
                                fadvise(
                                    &file,
                                    (off + piece) as u64,
                                    piece as u64,
                                    libc::POSIX_FADV_WILLNEED,
                                );
                            }
                            file.read_exact_at(buf, off as u64).unwrap();
                            Sha1::digest(&buf[..]).into()
                        }
                        _ => {
                            if v == Hash::MmapSequentialWillneed && off + 2 * piece <= len {
                                map.advise_range(Advice::WillNeed, off + piece, piece)
                                    .unwrap();
                            }
                            if v == Hash::MmapSequentialPopulate {
                                populate(&map, off, piece);
                            }
                            // SAFETY: the range lies inside the mapping and nothing writes to
                            // the file while it is hashed.
                            let s =
                                unsafe { std::slice::from_raw_parts(map.as_ptr().add(off), piece) };
                            Sha1::digest(s).into()
                        }
                    }
                },
            )
            .collect()
    });
    std::hint::black_box(hashes);
    Outcome {
        wall_s: start.elapsed().as_secs_f64(),
        bytes: (pieces * piece) as u64,
        ..Default::default()
    }
}

/// A single-file torrent over `path` (piece hashes all zero: throughput does not depend on
/// whether pieces pass).
fn torrent_for(path: &Path, piece: usize) -> Arc<Info> {
    let len = path.metadata().map(|m| m.len()).unwrap_or(0);
    let mut info = std::collections::BTreeMap::new();
    let name = path.file_name().unwrap().to_str().unwrap();
    info.insert(b"name".to_vec(), OwnedValue::str(name));
    info.insert(b"length".to_vec(), OwnedValue::Int(len as i64));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(piece as i64));
    let count = len.div_ceil(piece as u64) as usize;
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(vec![0; count * 20]));
    let mut root = std::collections::BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    )
}

fn block_of(info: &Info, off: u64) -> BlockRef {
    let l = info.lengths();
    let piece = (off / u64::from(l.piece_len())) as u32;
    let within = (off % u64::from(l.piece_len())) as u32;
    l.block_at(piece, within, BLOCK as u32).unwrap()
}

/// Blocks through ringtorrent's own `Storage` and `DiskPool`, as the driver will use them:
/// reads (`Storage::read_block`, which prefetches the piece at its first block) or writes
/// (`pwrite`), `depth` in flight, completions drained through the eventfd.
fn storage_variant(args: &Args, storage: &Arc<Storage>, blocks: &[u64], write: bool) -> Outcome {
    let pool = DiskPool::new(DiskPoolConfig {
        hash_threads: 1,
        io_threads: args.threads,
    })
    .unwrap();
    let (tx, rx) = completion_queue().unwrap();
    let info = storage.info().clone();
    let mut out = Outcome {
        bytes: (blocks.len() * BLOCK) as u64,
        ..Default::default()
    };
    // Jobs in flight at most: `args.depth`.
    let mut free = args.depth;
    let (mut next, mut done) = (0, 0);
    let mut got = Vec::new();
    // Writes take slices of one shared buffer (no copy, as the drivers hand over blocks).
    let shared = bytes::Bytes::from(vec![0xA5u8; 1 << 20]);
    let start = Instant::now();
    while done < blocks.len() {
        while next < blocks.len() && free > 0 {
            let t = Instant::now();
            free -= 1;
            let block = block_of(&info, blocks[next]);
            let job = if write {
                DiskJob::Write {
                    block,
                    data: shared.slice(..block.len as usize),
                }
            } else {
                DiskJob::Read { block }
            };
            pool.submit(storage, next as u64, job, &tx);
            next += 1;
            out.held_ns.push(t.elapsed().as_nanos() as u64);
        }
        rx.wait(std::time::Duration::from_secs(10));
        let t = Instant::now();
        rx.acknowledge();
        rx.drain(usize::MAX, &mut got);
        for c in got.drain(..) {
            match c.outcome {
                rts::Outcome::Read { result, .. } => drop(result.unwrap()),
                rts::Outcome::Written { result, .. } => result.unwrap(),
                other => panic!("unexpected completion {other:?}"),
            }
            free += 1;
            done += 1;
        }
        *out.held_ns.last_mut().unwrap() += t.elapsed().as_nanos() as u64;
    }
    out.wall_s = start.elapsed().as_secs_f64();
    if write {
        let t = Instant::now();
        storage.sync().unwrap();
        out.flush_s = t.elapsed().as_secs_f64();
    }
    out
}

fn make_file(path: &Path, len: u64) {
    if path.metadata().map(|m| m.len() == len).unwrap_or(false) {
        return;
    }
    let file = File::create(path).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let mut state = 1u64;
    for off in (0..len).step_by(chunk.len()) {
        for w in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all_at(&chunk, off).unwrap();
    }
    file.sync_all().unwrap();
}

/// An empty file of `len` bytes (only so that `torrent_for` can read the length).
fn make_sized(path: &Path, len: u64) {
    File::create(path).unwrap().set_len(len).unwrap();
}

fn fresh_file(path: &Path, len: u64) {
    let _ = std::fs::remove_file(path);
    let file = File::create(path).unwrap();
    // SAFETY: plain fallocate on an open descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    file.sync_all().unwrap();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let (args, _tmp) = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    if !args.cold {
        println!(
            "self-check (no --bench): every variant once; the page cache is not dropped, so \
             \"cold\" runs are warm and no figure below is a measurement"
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .unwrap();
    std::fs::create_dir_all(&args.dir).unwrap();
    let data = args.dir.join("cold-data.bin");
    let fresh = args.dir.join("cold-fresh.bin");
    let len = args.file_mib << 20;
    make_file(&data, len);
    let blocks = schedule(&args);
    let piece_bytes = args.piece_kib * 1024;
    let want = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    println!(
        "file {} MiB at {}, {} pieces of {} KiB = {} blocks of 16 KiB ({} MiB), {} pool threads, {} in flight, {} rounds; medians",
        args.file_mib,
        args.dir.display(),
        args.pieces,
        args.piece_kib,
        blocks.len(),
        (blocks.len() * BLOCK) >> 20,
        args.threads,
        args.depth,
        args.rounds
    );

    let reads: [(&str, Read); 10] = [
        ("read loop mmap NORMAL", Read::LoopNormal),
        ("read loop mmap RANDOM", Read::LoopRandom),
        (
            "read loop mmap RANDOM + WILLNEED piece",
            Read::LoopRandomWillneedPiece,
        ),
        (
            "read loop mmap RANDOM + WILLNEED 8 pieces ahead",
            Read::LoopWillneedAhead(8),
        ),
        ("read pool mmap NORMAL", Read::PoolMmapNormal),
        ("read pool mmap RANDOM", Read::PoolMmapRandom),
        (
            "read pool mmap RANDOM + WILLNEED piece",
            Read::PoolMmapRandomWillneedPiece,
        ),
        (
            "read pool mmap RANDOM + POPULATE_READ piece",
            Read::PoolMmapRandomPopulatePiece,
        ),
        ("read pool pread (FADV_RANDOM)", Read::PoolPread),
        (
            "read pool pread (FADV_RANDOM) + FADV_WILLNEED piece",
            Read::PoolPreadWillneedPiece,
        ),
    ];
    let writes: [(&str, Write, bool); 8] = [
        ("write fresh (fallocated) loop mmap", Write::LoopMmap, true),
        ("write fresh (fallocated) pool mmap", Write::PoolMmap, true),
        (
            "write fresh (fallocated) pool mmap RANDOM",
            Write::PoolMmapRandom,
            true,
        ),
        (
            "write fresh (fallocated) pool pwrite",
            Write::PoolPwrite,
            true,
        ),
        ("overwrite cold data loop mmap", Write::LoopMmap, false),
        ("overwrite cold data pool mmap", Write::PoolMmap, false),
        (
            "overwrite cold data pool mmap RANDOM",
            Write::PoolMmapRandom,
            false,
        ),
        ("overwrite cold data pool pwrite", Write::PoolPwrite, false),
    ];
    let hashes: [(&str, Hash); 6] = [
        ("check mmap NORMAL", Hash::MmapNormal),
        ("check mmap SEQUENTIAL", Hash::MmapSequential),
        (
            "check mmap SEQUENTIAL + WILLNEED next piece",
            Hash::MmapSequentialWillneed,
        ),
        (
            "check mmap SEQUENTIAL + POPULATE_READ piece",
            Hash::MmapSequentialPopulate,
        ),
        ("check pread (FADV_SEQUENTIAL)", Hash::Pread),
        (
            "check pread (FADV_SEQUENTIAL) + FADV_WILLNEED next piece",
            Hash::PreadWillneed,
        ),
    ];

    type Row = (String, Vec<Outcome>);
    let mut rows: Vec<Row> = Vec::new();
    let mut record = |name: String, o: Outcome| match rows.iter_mut().find(|r| r.0 == name) {
        Some(r) => r.1.push(o),
        None => rows.push((name, vec![o])),
    };
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        for (name, v) in reads {
            if want(name) {
                drop_caches(&args, &data);
                record(
                    format!("{name} (cold)"),
                    read_variant(&args, &data, &blocks, v, &pool),
                );
            }
        }
        let name = "read pool ringtorrent Storage::read_block";
        if want(name) {
            drop_caches(&args, &data);
            let storage = Arc::new(
                Storage::open(
                    torrent_for(&data, piece_bytes),
                    &args.dir,
                    OpenMode::ReadOnly,
                )
                .unwrap(),
            );
            record(
                format!("{name} (cold)"),
                storage_variant(&args, &storage, &blocks, false),
            );
            record(
                format!("{name} (warm)"),
                storage_variant(&args, &storage, &blocks, false),
            );
        }
        for (name, v) in [reads[0], reads[6], reads[7], reads[8]] {
            if want(name) {
                // Warm: the pages are cached (the cold run just read them) but not mapped in
                // a fresh mapping, so mmap pays minor faults and pread a syscall.
                record(
                    format!("{name} (warm)"),
                    read_variant(&args, &data, &blocks, v, &pool),
                );
            }
        }
        for (name, v, is_fresh) in writes {
            if want(name) {
                let path = if is_fresh {
                    fresh_file(&fresh, len);
                    &fresh
                } else {
                    &data
                };
                drop_caches(&args, path);
                record(
                    name.to_string(),
                    write_variant(&args, path, &blocks, v, &pool),
                );
            }
        }
        let _ = std::fs::remove_file(&fresh);
        let name = "write fresh (fallocated) pool ringtorrent Storage::write_block";
        if want(name) {
            let dir = args.dir.join("fresh");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            make_sized(&dir.join("cold-data.bin"), len);
            let info = torrent_for(&dir.join("cold-data.bin"), piece_bytes);
            std::fs::remove_file(dir.join("cold-data.bin")).unwrap();
            let storage = Arc::new(Storage::open(info, &dir, OpenMode::Create).unwrap());
            drop_caches(&args, &dir.join("cold-data.bin"));
            record(
                name.to_string(),
                storage_variant(&args, &storage, &blocks, true),
            );
            drop(storage);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let name = "overwrite cold data pool ringtorrent Storage::write_block";
        if want(name) {
            let storage = Arc::new(
                Storage::open(torrent_for(&data, piece_bytes), &args.dir, OpenMode::Create)
                    .unwrap(),
            );
            drop_caches(&args, &data);
            record(
                name.to_string(),
                storage_variant(&args, &storage, &blocks, true),
            );
        }
        for (name, v) in hashes {
            if want(name) {
                drop_caches(&args, &data);
                record(
                    format!("{name} (cold)"),
                    hash_variant(&args, &data, v, &pool),
                );
            }
        }
        let name = "check ringtorrent storage::check";
        if want(name) {
            let storage = Storage::open(
                torrent_for(&data, piece_bytes),
                &args.dir,
                OpenMode::ReadOnly,
            )
            .unwrap();
            for temp in ["cold", "warm"] {
                if temp == "cold" {
                    drop_caches(&args, &data);
                }
                let start = Instant::now();
                let report = rts::check(&storage, &pool, &std::sync::atomic::AtomicU64::new(0));
                std::hint::black_box(report);
                record(
                    format!("{name} ({temp})"),
                    Outcome {
                        wall_s: start.elapsed().as_secs_f64(),
                        bytes: len,
                        ..Default::default()
                    },
                );
            }
        }
        for (name, v) in [hashes[1], hashes[3], hashes[4]] {
            if want(name) {
                // Warm: make sure the whole file is cached first.
                hash_variant(&args, &data, Hash::Pread, &pool);
                record(
                    format!("{name} (warm)"),
                    hash_variant(&args, &data, v, &pool),
                );
            }
        }
    }

    if rows.is_empty() {
        eprintln!("storage_cold: --only matched no variant; nothing measured");
        std::process::exit(1);
    }
    println!(
        "\n| variant | MB/s | loop held total s | held p50 µs | held p99 µs | held max µs | flush s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, outs) in &rows {
        let m = |f: &dyn Fn(&Outcome) -> f64| median(&mut outs.iter().map(f).collect::<Vec<_>>());
        let held = !outs[0].held_ns.is_empty();
        let dash = |x: f64, fmt: &dyn Fn(f64) -> String| if held { fmt(x) } else { "-".into() };
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} | {} |",
            m(&|o| o.mb_s()),
            dash(m(&|o| o.held_total_s()), &|x| format!("{x:.3}")),
            dash(m(&|o| o.pct(0.5)), &|x| format!("{x:.1}")),
            dash(m(&|o| o.pct(0.99)), &|x| format!("{x:.1}")),
            dash(m(&|o| o.pct(1.0)), &|x| format!("{x:.0}")),
            if outs[0].flush_s > 0.0 {
                format!("{:.3}", m(&|o| o.flush_s))
            } else {
                "-".into()
            },
        );
    }
}
