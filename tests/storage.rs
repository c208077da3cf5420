//! Storage against a real filesystem: round trips across file boundaries and padding, every
//! refusal (disk full, wrong sizes, read-only and forbidden folders, symlinks leading out),
//! the disk pool's completions through eventfds, and resume data validation. What needs a
//! second process (an open as `nobody`, resume data after `kill -9`) is in
//! `tests/storage_processes.rs`.
//!
//! Some tests mount a tmpfs, which needs root; they fail with a clear message otherwise, and
//! unmount on the way out, panics included.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringtorrent::bencode::OwnedValue;
use ringtorrent::core::Bitfield;
use ringtorrent::core::{BlockRef, InfoHash};
use ringtorrent::metainfo::{Info, Torrent};
use ringtorrent::storage::{
    completion_queue, Allocation, Completion, DiskJob, DiskPool, DiskPoolConfig, FileStamp,
    FileState, OpenMode, Outcome, ResumeData, ResumeError, Storage, StorageError, StorageOptions,
};
use sha1::{Digest, Sha1};

mod common;

// ---------------------------------------------------------------------------------------
// Helpers

/// A file of a test torrent: path below the torrent's folder, length, padding.
struct F(&'static str, u64, bool);

/// Builds a multi-file torrent named `name` over deterministic data (zeros in padding
/// files) and returns it with its payload.
fn torrent(name: &str, files: &[F], piece_len: u64) -> (Arc<Info>, Vec<u8>) {
    let mut payload = Vec::new();
    let mut state = 0x1234_5678_9abc_def1u64;
    for f in files {
        for _ in 0..f.1 {
            if f.2 {
                payload.push(0);
            } else {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                payload.push(state as u8);
            }
        }
    }
    let pieces: Vec<u8> = payload
        .chunks(piece_len as usize)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();
    let list = files
        .iter()
        .map(|f| {
            let mut d = BTreeMap::new();
            d.insert(b"length".to_vec(), OwnedValue::Int(f.1 as i64));
            d.insert(
                b"path".to_vec(),
                OwnedValue::List(f.0.split('/').map(OwnedValue::str).collect()),
            );
            if f.2 {
                d.insert(b"attr".to_vec(), OwnedValue::str("p"));
            }
            OwnedValue::Dict(d)
        })
        .collect();
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str(name));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(piece_len as i64));
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
    info.insert(b"files".to_vec(), OwnedValue::List(list));
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    let bytes = OwnedValue::Dict(root).to_bytes();
    (Arc::new(Torrent::from_bytes(&bytes).unwrap().info), payload)
}

/// Small files, a padding file, an empty file and nested folders, so that blocks and pieces
/// cross file boundaries in every way.
fn layout() -> (Arc<Info>, Vec<u8>) {
    torrent(
        "t",
        &[
            F("a.bin", 10_000, false),
            F(".pad/6384", 6_384, true),
            F("d/b.bin", 40_000, false),
            F("d/e/empty", 0, false),
            F("d/e/c.bin", 70_001, false),
            F("z.bin", 1, false),
        ],
        32_768,
    )
}

fn blocks(info: &Info) -> Vec<BlockRef> {
    let l = info.lengths();
    l.pieces()
        .flat_map(|p| l.blocks(p).collect::<Vec<_>>())
        .collect()
}

fn slice(info: &Info, payload: &[u8], b: BlockRef) -> Vec<u8> {
    let start = (info.lengths().offset_of(b.piece) + u64::from(b.offset)) as usize;
    payload[start..start + b.len as usize].to_vec()
}

/// Writes every block in a scrambled order.
fn write_all(storage: &Storage, payload: &[u8]) {
    let info = storage.info().clone();
    let mut all = blocks(&info);
    all.reverse();
    all.rotate_left(3);
    for b in all {
        storage.write_block(b, &slice(&info, payload, b)).unwrap();
    }
}

fn assert_all_read_back(storage: &Storage, payload: &[u8]) {
    let info = storage.info().clone();
    for b in blocks(&info) {
        let mut out = vec![0xEE; b.len as usize];
        storage.read_block(b, &mut out).unwrap();
        assert_eq!(out, slice(&info, payload, b), "block {b:?}");
    }
    let mut piece = Vec::new();
    for p in info.lengths().pieces() {
        storage.read_piece(p, &mut piece).unwrap();
        let start = info.lengths().offset_of(p) as usize;
        assert_eq!(piece, &payload[start..start + piece.len()]);
        assert_eq!(
            &storage.hash_piece(p).unwrap(),
            info.piece_hash(p),
            "piece {p:?}"
        );
    }
}

fn require_root(what: &str) {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root to {what}; run the tests as root (CI does), it is not skipped"
    );
}

/// A tmpfs mounted for one test, unmounted (lazily, so an open file cannot keep it) when
/// dropped, panics included.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str, read_only: bool) -> Mount {
        require_root("mount a tmpfs");
        std::fs::create_dir_all(dir).unwrap();
        let c = |s: &[u8]| CString::new(s).unwrap();
        let target = c(dir.as_os_str().as_bytes());
        let data = c(options.as_bytes());
        let flags = if read_only { libc::MS_RDONLY } else { 0 };
        // SAFETY: all strings are valid and NUL-terminated for the call.
        let rc = unsafe {
            libc::mount(
                c(b"tmpfs").as_ptr(),
                target.as_ptr(),
                c(b"tmpfs").as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_across_file_boundaries_and_padding() {
    let (info, payload) = layout();
    for options in [
        StorageOptions::new(OpenMode::Create),
        StorageOptions {
            hold_open: false,
            ..StorageOptions::new(OpenMode::Create)
        },
        StorageOptions {
            refuse_symlinks: true,
            ..StorageOptions::new(OpenMode::Create)
        },
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::open_with(info.clone(), tmp.path(), options).unwrap();
        // Preallocated at open, padding never created, the empty file created.
        assert_eq!(
            files_under(tmp.path()),
            [
                "t",
                "t/a.bin",
                "t/d",
                "t/d/b.bin",
                "t/d/e",
                "t/d/e/c.bin",
                "t/d/e/empty",
                "t/z.bin"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            std::fs::metadata(tmp.path().join("t/d/e/c.bin"))
                .unwrap()
                .len(),
            70_001
        );
        assert!(storage.file_states().all(|s| matches!(
            s,
            FileState::Present { created: true, .. } | FileState::NotStored
        )));

        write_all(&storage, &payload);
        assert_all_read_back(&storage, &payload);
        storage.sync().unwrap();
        // The bytes on disk are the payload minus the padding.
        assert_eq!(
            std::fs::read(tmp.path().join("t/a.bin")).unwrap(),
            &payload[..10_000]
        );
        assert_eq!(
            std::fs::read(tmp.path().join("t/d/e/c.bin")).unwrap(),
            &payload[56_384..126_385]
        );
        assert!(!tmp.path().join("t/.pad").exists());
        drop(storage);

        // Reopened, everything is still there and nothing is recreated.
        let again = Storage::open_with(info.clone(), tmp.path(), options).unwrap();
        assert!(again.file_states().all(|s| matches!(
            s,
            FileState::Present { created: false, .. } | FileState::NotStored
        )));
        assert_all_read_back(&again, &payload);
    }
}

#[test]
fn padding_writes_are_ignored_and_read_as_zeros() {
    let (info, payload) = layout();
    let tmp = tempfile::tempdir().unwrap();
    let storage = Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap();
    // Block 0 of piece 0 holds a.bin's first 10,000 bytes and 6,384 of padding.
    let b = info
        .lengths()
        .block(info.lengths().piece(0).unwrap(), 0)
        .unwrap();
    let mut data = slice(&info, &payload, b);
    data[10_000..].fill(0xFF);
    storage.write_block(b, &data).unwrap();
    let mut out = vec![0; b.len as usize];
    storage.read_block(b, &mut out).unwrap();
    assert_eq!(out, slice(&info, &payload, b));
    assert!(!tmp.path().join("t/.pad").exists());
}

#[test]
fn read_only_storage_refuses_writes_and_reports_missing_and_short_files() {
    let (info, payload) = layout();
    let tmp = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap();
        write_all(&storage, &payload);
    }
    std::fs::remove_file(tmp.path().join("t/d/b.bin")).unwrap();
    let c = std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("t/d/e/c.bin"))
        .unwrap();
    c.set_len(50_000).unwrap();
    let before = files_under(tmp.path());

    let storage = Storage::open(info.clone(), tmp.path(), OpenMode::ReadOnly).unwrap();
    let states: Vec<_> = storage.file_states().collect();
    assert_eq!(states[2], FileState::Missing);
    assert_eq!(states[4], FileState::WrongSize { actual: 50_000 });
    let l = info.lengths();
    let piece = |i| l.piece(i).unwrap();
    let first = l.block(piece(0), 0).unwrap();
    assert!(matches!(
        storage.write_block(first, &slice(&info, &payload, first)),
        Err(StorageError::ReadOnly { .. })
    ));
    // Block 0 (a.bin and padding) is intact, but piece 0 runs on into the missing b.bin.
    let mut out = vec![0; first.len as usize];
    storage.read_block(first, &mut out).unwrap();
    assert_eq!(out, slice(&info, &payload, first));
    assert!(matches!(
        storage.hash_piece(piece(0)),
        Err(StorageError::Missing { path }) if path.ends_with("t/d/b.bin")
    ));
    // Piece 2 lies in the part of c.bin that is left; piece 3 past its end.
    assert_eq!(
        &storage.hash_piece(piece(2)).unwrap(),
        info.piece_hash(piece(2))
    );
    assert!(matches!(
        storage.hash_piece(piece(3)),
        Err(StorageError::ShortFile {
            len: 50_000,
            needed: 70_001,
            ..
        })
    ));
    assert_eq!(
        files_under(tmp.path()),
        before,
        "read-only open changed the folder"
    );
}

// ---------------------------------------------------------------------------------------
// Refusals

#[test]
fn existing_file_of_wrong_size_is_refused_and_left_untouched() {
    let (info, payload) = layout();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("t/d/e")).unwrap();
    std::fs::write(tmp.path().join("t/d/e/c.bin"), b"hello").unwrap();

    let err = Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap_err();
    match &err {
        StorageError::WrongSize {
            path,
            expected,
            actual,
        } => {
            assert!(path.ends_with("t/d/e/c.bin"));
            assert_eq!((*expected, *actual), (70_001, 5));
        }
        other => panic!("expected WrongSize, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("c.bin is 5 bytes but the torrent says 70001"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("t/d/e/c.bin")).unwrap(),
        b"hello"
    );
    // Refused before anything was created.
    assert_eq!(
        files_under(tmp.path()),
        ["t", "t/d", "t/d/e", "t/d/e/c.bin"].map(PathBuf::from)
    );

    // Resizing only when asked; the existing bytes stay.
    let storage = Storage::open(info.clone(), tmp.path(), OpenMode::CreateResize).unwrap();
    let c = std::fs::read(tmp.path().join("t/d/e/c.bin")).unwrap();
    assert_eq!((c.len(), &c[..5]), (70_001, &b"hello"[..]));
    write_all(&storage, &payload);
    assert_all_read_back(&storage, &payload);
}

#[test]
fn disk_full_is_refused_up_front_with_sizes_and_path() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let _mount = Mount::tmpfs(&mnt, "size=4m", false);
    let (info, _) = torrent(
        "big",
        &[F("one", 3 << 20, false), F("two", 3 << 20, false)],
        1 << 20,
    );
    let err = Storage::open(info, &mnt, OpenMode::Create).unwrap_err();
    match &err {
        StorageError::NoSpace {
            path,
            needed,
            available,
        } => {
            assert_eq!(path, &mnt);
            assert_eq!(*needed, 6 << 20);
            assert!(*available <= 4 << 20, "{available}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("not enough space") && text.contains(&mnt.display().to_string()),
        "{text}"
    );
    assert!(
        files_under(&mnt).is_empty(),
        "left files behind: {:?}",
        files_under(&mnt)
    );
}

/// Writes a file of zeros in `dir` until the filesystem is full; returns its path.
fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    path
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn sparse_allocation_checks_space_up_front_and_a_disk_filled_later_fails_the_write_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let _mount = Mount::tmpfs(&mnt, "size=8m", false);
    let sparse = StorageOptions {
        allocation: Allocation::Sparse,
        ..StorageOptions::new(OpenMode::Create)
    };

    // The up-front check still refuses what cannot fit, creating nothing.
    let (big, _) = torrent("big", &[F("one", 9 << 20, false)], 1 << 20);
    match Storage::open_with(big, &mnt, sparse) {
        Err(StorageError::NoSpace { needed, .. }) => assert_eq!(needed, 9 << 20),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(files_under(&mnt).is_empty());

    // What fits gets its size and no blocks.
    let (info, payload) = torrent("sp", &[F("one", 6 << 20, false)], 1 << 20);
    let storage = Storage::open_with(info.clone(), &mnt, sparse).unwrap();
    let file = mnt.join("sp/one");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 6 << 20);
    assert!(allocated(&file) < 64 * 1024, "{}", allocated(&file));
    assert!(matches!(
        storage.file_states().next(),
        Some(FileState::Present {
            created: true,
            sparse: true
        })
    ));

    // Piece 0 written; then another program fills the disk.
    let piece0: Vec<BlockRef> = blocks(&info)
        .into_iter()
        .filter(|b| b.piece.get() == 0)
        .collect();
    for &b in &piece0 {
        storage.write_block(b, &slice(&info, &payload, b)).unwrap();
    }
    assert!(allocated(&file) >= 1 << 20);
    let filler = fill_disk(&mnt);

    // The next write fails with the file's name and says why; piece 0 is intact.
    let next = blocks(&info)
        .into_iter()
        .find(|b| b.piece.get() == 1)
        .unwrap();
    let err = storage
        .write_block(next, &slice(&info, &payload, next))
        .unwrap_err();
    match &err {
        StorageError::NoSpace { path, .. } => assert_eq!(path, &file),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(err.to_string().contains("not enough space"), "{err}");
    let piece = piece0[0].piece;
    assert!(storage.verify_piece(piece, info.piece_hash(piece)).unwrap());

    // Space freed, the download goes on where it stopped and completes.
    std::fs::remove_file(filler).unwrap();
    write_all(&storage, &payload);
    assert_all_read_back(&storage, &payload);
}

#[test]
fn a_download_whose_disk_fills_stops_with_the_error_and_loses_nothing() {
    use ringtorrent::client::{AddTorrent, Client, ClientConfig, Limits, TorrentState};
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    common::write_payload(&seed_dir.join("pack/big.bin"), 6 << 20, 7);
    let bytes = ringtorrent::metainfo::create::create(
        &ringtorrent::metainfo::create::CreateOptions {
            path: seed_dir.join("pack"),
            piece_len: Some(256 * 1024),
            ..Default::default()
        },
        &std::sync::atomic::AtomicU64::new(0),
    )
    .unwrap()
    .bytes;
    let seed = common::seeding_client(&seed_dir, &bytes, 1);
    let mnt = tmp.path().join("small");
    let _mount = Mount::tmpfs(&mnt, "size=8m", false);
    // Sparse files, the download slowed so the disk can be filled part-way.
    let config = || ClientConfig {
        allocation: ringtorrent::client::Allocation::Sparse,
        state_dir: Some(tmp.path().join("state")),
        limits: Limits {
            download_rate: Some(1 << 20),
            ..Limits::default()
        },
        ..common::client_config(&mnt, 1)
    };
    let leech = Client::start(config()).unwrap();
    let add = || AddTorrent::bytes(bytes.clone()).peers(seed.listen_addr());
    let t = leech.add(add()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.status().unwrap().pieces_have < 4 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let filler = fill_disk(&mnt);
    let status = loop {
        let st = t.status().unwrap();
        if st.state == TorrentState::Error {
            break st;
        }
        assert!(Instant::now() < deadline, "no error: {st:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let error = status.error.clone().unwrap_or_default();
    assert!(
        error.contains("not enough space") && error.contains("big.bin"),
        "{error}"
    );
    assert!(status.pieces_have >= 4 && status.pieces_have < status.pieces);
    leech.shutdown();

    // Every piece it had verified is on disk.
    let info = Arc::new(Torrent::from_bytes(&bytes).unwrap().info);
    let storage = Storage::open(info, &mnt, OpenMode::ReadOnly).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    let report = ringtorrent::storage::check(&storage, &pool, &Default::default());
    let complete = report.pieces_with(ringtorrent::storage::PieceVerdict::Complete);
    assert!(
        complete.len() as u32 >= status.pieces_have,
        "{} complete, {} reported",
        complete.len(),
        status.pieces_have
    );
    drop(storage);

    // Space freed, the same torrent added again finishes from where it stopped.
    std::fs::remove_file(filler).unwrap();
    let leech = Client::start(config()).unwrap();
    let t = leech.add(add()).unwrap();
    assert!(t.status().unwrap().pieces_have >= status.pieces_have);
    while t.status().unwrap().state != TorrentState::Seeding {
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "not finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    leech.shutdown();
    seed.shutdown();
    assert_eq!(
        std::fs::read(mnt.join("pack/big.bin")).unwrap(),
        std::fs::read(seed_dir.join("pack/big.bin")).unwrap()
    );
}

#[test]
fn full_allocation_reserves_the_space_so_a_disk_filled_later_cannot_fail_a_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let _mount = Mount::tmpfs(&mnt, "size=8m", false);
    let (info, payload) = torrent("full", &[F("one", 6 << 20, false)], 1 << 20);
    let full = StorageOptions {
        allocation: Allocation::Full,
        ..StorageOptions::new(OpenMode::Create)
    };
    let storage = Storage::open_with(info, &mnt, full).unwrap();
    assert!(allocated(&mnt.join("full/one")) >= 6 << 20);
    assert!(matches!(
        storage.file_states().next(),
        Some(FileState::Present {
            created: true,
            sparse: false
        })
    ));
    fill_disk(&mnt);
    write_all(&storage, &payload);
    assert_all_read_back(&storage, &payload);
}

/// The resident size of this process's mappings of `path`, from /proc/self/smaps.
fn mapped_rss(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(name);
        } else if inside && line.starts_with("Rss:") {
            let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            total += kb * 1024;
        }
    }
    total
}

#[test]
fn a_full_check_leaves_no_pages_mapped_and_the_data_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (info, payload) = torrent("rel", &[F("one", 4 << 20, false)], 1 << 20);
    let storage = Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap();
    write_all(&storage, &payload);
    drop(storage);
    let storage = Storage::open(info.clone(), tmp.path(), OpenMode::ReadOnly).unwrap();
    let file = tmp.path().join("rel/one");
    // Hashing through the mapping maps its pages...
    for p in info.lengths().pieces() {
        assert!(storage.hash_piece(p).is_ok());
    }
    assert!(mapped_rss(&file) >= 3 << 20, "{}", mapped_rss(&file));
    // ... and releasing a piece unmaps its pages again; the data stays readable.
    for p in info.lengths().pieces() {
        storage.release_piece(p);
    }
    assert!(mapped_rss(&file) < 64 * 1024, "{}", mapped_rss(&file));
    assert_all_read_back(&storage, &payload);

    // A full check does it piece by piece.
    drop(storage);
    let storage = Storage::open(info, tmp.path(), OpenMode::ReadOnly).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    let report = ringtorrent::storage::check(&storage, &pool, &Default::default());
    assert!(report.is_complete());
    assert!(mapped_rss(&file) < 64 * 1024, "{}", mapped_rss(&file));
}

#[test]
fn a_batch_of_jobs_completes_every_job_once_with_its_token() {
    // 4 MiB of 16 KiB blocks: 256 writes in one batch, then 256 reads and the verifications
    // in another; every result comes back once, under its own token.
    let (info, payload) = torrent("batch", &[F("one", 4 << 20, false)], 1 << 20);
    let tmp = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap());
    let pool = DiskPool::new(DiskPoolConfig {
        hash_threads: 2,
        io_threads: 4,
    })
    .unwrap();
    let (tx, rx) = completion_queue().unwrap();
    let all = blocks(&info);
    let writes = all
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let data = slice(&info, &payload, b).into();
            (storage.clone(), i as u64, DiskJob::Write { block: b, data })
        })
        .collect();
    pool.submit_batch(writes, &tx);
    for c in drain_all(&rx, all.len()) {
        let Outcome::Written { block, result } = c.outcome else {
            panic!("{c:?}")
        };
        result.unwrap();
        assert_eq!(all[c.token as usize], block);
    }
    let mut jobs: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(i, &b)| (storage.clone(), i as u64, DiskJob::Read { block: b }))
        .collect();
    for p in info.lengths().pieces() {
        let token = (all.len() + p.as_usize()) as u64;
        let expected = Some(*info.piece_hash(p));
        let job = DiskJob::Verify {
            piece: p,
            expected,
            blocks: false,
        };
        jobs.push((storage.clone(), token, job));
    }
    let n = jobs.len();
    pool.submit_batch(jobs, &tx);
    let mut seen = vec![false; n];
    for c in drain_all(&rx, n) {
        assert!(!std::mem::replace(&mut seen[c.token as usize], true));
        match c.outcome {
            Outcome::Read { block, result } => {
                assert_eq!(all[c.token as usize], block);
                assert_eq!(&result.unwrap()[..], &slice(&info, &payload, block)[..]);
            }
            Outcome::Verified { result, .. } => assert!(result.unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert!(storage.wait_idle(Duration::from_secs(10)));
}

#[test]
fn fallocate_enospc_part_way_names_the_file_and_removes_what_was_created() {
    // 1500 one-byte files pass the up-front check (1500 bytes needed, 4 MiB free), but tmpfs
    // allocates a 4 KiB page for each, so fallocate runs out at about the 1000th file. The
    // error names that file, and every file and folder the open created is removed.
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let _mount = Mount::tmpfs(&mnt, "size=4m", false);
    let files: Vec<F> = (0..1500)
        .map(|i| {
            F(
                Box::leak(format!("d{}/f{i}", i / 100).into_boxed_str()),
                1,
                false,
            )
        })
        .collect();
    let (info, _) = torrent("many", &files, 16_384);
    let err = Storage::open(info, &mnt, OpenMode::Create).unwrap_err();
    match &err {
        StorageError::NoSpace { path, needed, .. } => {
            assert!(path.starts_with(mnt.join("many")), "{path:?}");
            assert_eq!(*needed, 1);
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(
        files_under(&mnt).is_empty(),
        "left behind: {} entries",
        files_under(&mnt).len()
    );
}

#[test]
fn read_only_filesystem_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    let _mount = Mount::tmpfs(&ro, "size=1m", true);
    let (info, _) = layout();
    let err = Storage::open(info, &ro, OpenMode::Create).unwrap_err();
    match &err {
        StorageError::ReadOnly { path, action } => {
            assert!(path.starts_with(&ro), "{path:?}");
            assert_eq!(*action, "create folder");
        }
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    assert!(err.to_string().contains(&ro.display().to_string()));
}

#[test]
fn symlinks_leading_out_are_refused() {
    let (info, _) = layout();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("d")).unwrap();
    std::fs::write(outside.join("a.bin"), b"precious").unwrap();

    // The torrent's folder itself is a link out.
    let dl = tmp.path().join("dl1");
    std::fs::create_dir(&dl).unwrap();
    std::os::unix::fs::symlink(&outside, dl.join("t")).unwrap();
    for refuse in [false, true] {
        let options = StorageOptions {
            refuse_symlinks: refuse,
            ..StorageOptions::new(OpenMode::Create)
        };
        let err = Storage::open_with(info.clone(), &dl, options).unwrap_err();
        assert!(
            matches!(&err, StorageError::PathEscape { path } if path.starts_with(&dl)),
            "{err:?}"
        );
        assert!(err.to_string().contains("symbolic link"));
    }

    // One file is a link to a file outside, absolute or relative.
    for (n, target) in [
        (2, outside.join("a.bin")),
        (3, PathBuf::from("../../outside/a.bin")),
    ] {
        let dl = tmp.path().join(format!("dl{n}"));
        std::fs::create_dir_all(dl.join("t")).unwrap();
        std::os::unix::fs::symlink(&target, dl.join("t/a.bin")).unwrap();
        let err = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap_err();
        assert!(
            matches!(&err, StorageError::PathEscape { path } if path.ends_with("t/a.bin")),
            "{err:?}"
        );
        assert!(!dl.join("t/d").exists(), "created folders before refusing");
    }
    assert_eq!(std::fs::read(outside.join("a.bin")).unwrap(), b"precious");
    assert!(files_under(&outside.join("d")).is_empty());

    // A link that stays inside is followed (openat2) unless refused.
    let dl = tmp.path().join("dl4");
    std::fs::create_dir_all(dl.join("t/real")).unwrap();
    std::os::unix::fs::symlink("real", dl.join("t/d")).unwrap();
    let refused = Storage::open_with(
        info.clone(),
        &dl,
        StorageOptions {
            refuse_symlinks: true,
            ..StorageOptions::new(OpenMode::Create)
        },
    );
    assert!(
        matches!(refused, Err(StorageError::PathEscape { .. })),
        "{refused:?}"
    );
    // Without openat2 (Linux 5.6) every link is refused; the machines these tests run on
    // have it, so a refusal here is a regression, not a reason to skip.
    let storage = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap_or_else(|e| {
        panic!("a link that stays inside the folder must be followed (openat2): {e}")
    });
    drop(storage);
    assert!(dl.join("t/real/b.bin").exists());
}

// ---------------------------------------------------------------------------------------
// The disk pool

fn drain_all(rx: &ringtorrent::storage::Completions, n: usize) -> Vec<Completion> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions",
            got.len()
        );
        if rx.wait(Duration::from_millis(100)) {
            rx.acknowledge();
        }
        rx.drain(usize::MAX, &mut got);
    }
    got
}

#[test]
fn pool_results_reach_each_owner_through_its_eventfd() {
    let (info, payload) = layout();
    let tmp = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap());
    let pool = DiskPool::new(DiskPoolConfig {
        hash_threads: 2,
        io_threads: 2,
    })
    .unwrap();
    let (tx1, rx1) = completion_queue().unwrap();
    let (tx2, rx2) = completion_queue().unwrap();
    assert!(!rx1.wait(Duration::ZERO), "signalled before any job");

    // Writes through the pool, answered on owner 1.
    let all = blocks(&info);
    for (i, &b) in all.iter().enumerate() {
        let job = DiskJob::Write {
            block: b,
            data: slice(&info, &payload, b).into(),
        };
        pool.submit(&storage, i as u64, job, &tx1);
    }
    for c in drain_all(&rx1, all.len()) {
        let Outcome::Written { block, result } = c.outcome else {
            panic!("{c:?}")
        };
        result.unwrap();
        assert_eq!(all[c.token as usize], block);
    }

    // Verifications: owner 1 asks for every piece (one with a wrong expected hash), owner
    // 2 for piece 0 only; each gets exactly its own answers.
    let l = info.lengths();
    for p in l.pieces() {
        let mut expected = *info.piece_hash(p);
        if p.get() == 2 {
            expected[0] ^= 1;
        }
        pool.submit(
            &storage,
            1000 + u64::from(p.get()),
            DiskJob::Verify {
                piece: p,
                expected: Some(expected),
                blocks: false,
            },
            &tx1,
        );
    }
    let p0 = l.piece(0).unwrap();
    pool.submit(
        &storage,
        7,
        DiskJob::Verify {
            piece: p0,
            expected: Some(*info.piece_hash(p0)),
            blocks: false,
        },
        &tx2,
    );

    let got = drain_all(&rx1, l.piece_count() as usize);
    assert_eq!(got.len(), l.piece_count() as usize);
    for c in got {
        let Outcome::Verified {
            piece,
            result,
            block_hashes,
        } = c.outcome
        else {
            panic!("{c:?}")
        };
        assert_eq!(c.token, 1000 + u64::from(piece.get()));
        assert_eq!(result.unwrap(), piece.get() != 2, "piece {piece:?}");
        // A piece that fails comes back with its blocks hashed, for smart ban.
        if piece.get() == 2 {
            assert_eq!(block_hashes.len(), l.blocks_in(piece) as usize);
        } else {
            assert!(block_hashes.is_empty());
        }
    }
    let got2 = drain_all(&rx2, 1);
    assert!(matches!(
        got2[0].outcome,
        Outcome::Verified {
            result: Ok(true),
            ..
        }
    ));
    assert_eq!(got2[0].token, 7);
    let mut none = Vec::new();
    assert!(!rx1.drain(usize::MAX, &mut none) && none.is_empty());

    // Reads come back with the data; a bounded drain says when more remain.
    for (i, &b) in all.iter().enumerate() {
        pool.submit(&storage, i as u64, DiskJob::Read { block: b }, &tx2);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < all.len() {
        assert!(Instant::now() < deadline);
        rx2.wait(Duration::from_millis(100));
        rx2.acknowledge();
        let before = got.len();
        let more = rx2.drain(1, &mut got);
        assert!(got.len() <= before + 1);
        if more {
            assert_eq!(got.len(), before + 1);
        }
    }
    for c in got {
        let Outcome::Read { block, result } = c.outcome else {
            panic!()
        };
        assert_eq!(&result.unwrap()[..], slice(&info, &payload, block));
    }
}

/// A v2-only torrent (libtorrent's, `src/metainfo/testdata`): the pool verifies its pieces by
/// SHA-256 merkle hash against the piece layers when no SHA1 is given. A piece with one
/// corrupt block fails and comes back with its blocks' hashes, the evidence smart ban pins
/// the block's sender with; the others pass, padding included.
#[test]
fn pool_verifies_v2_pieces_by_merkle_hash() {
    let t = Torrent::from_bytes(include_bytes!("../src/metainfo/testdata/lt-v2.torrent")).unwrap();
    let info = Arc::new(t.info);
    let pat = |n: usize, mul: usize, add: usize| -> Vec<u8> {
        (0..n).map(|i| ((i * mul + add) % 251) as u8).collect()
    };
    let contents: BTreeMap<&str, Vec<u8>> = BTreeMap::from([
        ("top/a", pat(100_000, 7, 3)),
        ("top/empty", Vec::new()),
        ("top/sub/b", pat(40_000, 13, 1)),
        ("top/z", pat(16_384, 5, 2)),
    ]);
    let mut payload = Vec::new();
    for f in info.files() {
        match contents.get(f.display_path().as_str()) {
            Some(bytes) if !f.attr.padding => payload.extend_from_slice(bytes),
            _ => payload.resize(payload.len() + f.length as usize, 0),
        }
    }
    assert_eq!(payload.len() as u64, info.total_len());
    let tmp = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap());
    let pool = DiskPool::new(DiskPoolConfig {
        hash_threads: 2,
        io_threads: 2,
    })
    .unwrap();
    let (tx, rx) = completion_queue().unwrap();
    // Piece 4 is the first piece of `sub/b`: its second block arrives corrupt.
    let l = info.lengths();
    let corrupt = l.blocks(l.piece(4).unwrap()).nth(1).unwrap();
    let all = blocks(&info);
    for (i, &b) in all.iter().enumerate() {
        let mut data = slice(&info, &payload, b);
        if b == corrupt {
            data[100] ^= 0x55;
        }
        pool.submit(
            &storage,
            i as u64,
            DiskJob::Write {
                block: b,
                data: data.into(),
            },
            &tx,
        );
    }
    for c in drain_all(&rx, all.len()) {
        let Outcome::Written { result, .. } = c.outcome else {
            panic!("{c:?}")
        };
        result.unwrap();
    }
    for p in l.pieces() {
        let job = DiskJob::Verify {
            piece: p,
            expected: None,
            blocks: false,
        };
        pool.submit(&storage, u64::from(p.get()), job, &tx);
    }
    let got = drain_all(&rx, l.piece_count() as usize);
    assert_eq!(got.len(), 7);
    for c in got {
        let Outcome::Verified {
            piece,
            result,
            block_hashes,
        } = c.outcome
        else {
            panic!("{c:?}")
        };
        let bad = piece == corrupt.piece;
        assert_eq!(result.unwrap(), !bad, "piece {piece:?}");
        if bad {
            let honest: [u8; 20] = Sha1::digest(slice(&info, &payload, corrupt)).into();
            assert_eq!(block_hashes.len(), l.blocks_in(piece) as usize);
            assert_ne!(block_hashes[1], honest, "the corrupt block's evidence");
            let first = l.blocks(piece).next().unwrap();
            let first_hash: [u8; 20] = Sha1::digest(slice(&info, &payload, first)).into();
            assert_eq!(block_hashes[0], first_hash, "the honest block's evidence");
        } else {
            assert!(block_hashes.is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hashing on arrival: verification reads back only what the writes did not hash, and its
// verdict is always about the bytes on disk.

/// One 256 KiB file in 64 KiB pieces (four blocks each), opened for writing.
fn arrival_storage(tmp: &Path) -> (Arc<Storage>, Arc<Info>, Vec<u8>) {
    let (info, payload) = torrent("arr", &[F("a.bin", 256 << 10, false)], 64 << 10);
    let storage = Arc::new(Storage::open(info.clone(), tmp, OpenMode::Create).unwrap());
    (storage, info, payload)
}

fn piece_blocks(info: &Info, piece: u32) -> Vec<BlockRef> {
    let l = info.lengths();
    l.blocks(l.piece(piece).unwrap()).collect()
}

fn write_bytes(storage: &Storage, b: BlockRef, data: Vec<u8>) {
    storage.write_block_bytes(b, &data.into()).unwrap();
}

fn verify(storage: &Storage, info: &Info, piece: u32) -> bool {
    let p = info.lengths().piece(piece).unwrap();
    storage.verify_piece(p, info.piece_hash(p)).unwrap()
}

#[test]
fn blocks_written_in_order_are_hashed_on_arrival() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, info, payload) = arrival_storage(tmp.path());
    let p = info.lengths().piece(0).unwrap();
    for (i, b) in piece_blocks(&info, 0).into_iter().enumerate() {
        write_bytes(&storage, b, slice(&info, &payload, b));
        assert_eq!(storage.hashed_on_arrival(p), (i as u32 + 1) * (16 << 10));
    }
    assert!(verify(&storage, &info, 0));
    // Used up by the verification, matched or not.
    assert_eq!(storage.hashed_on_arrival(p), 0);
    // A second verification reads the piece back and agrees.
    assert!(verify(&storage, &info, 0));
}

#[test]
fn blocks_out_of_order_are_held_until_the_gap_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, info, payload) = arrival_storage(tmp.path());
    let p = info.lengths().piece(1).unwrap();
    let bs = piece_blocks(&info, 1);
    for &i in &[2usize, 1, 3] {
        write_bytes(&storage, bs[i], slice(&info, &payload, bs[i]));
        assert_eq!(storage.hashed_on_arrival(p), 0);
    }
    write_bytes(&storage, bs[0], slice(&info, &payload, bs[0]));
    assert_eq!(storage.hashed_on_arrival(p), 64 << 10);
    assert!(verify(&storage, &info, 1));

    // Without the bytes to hold (`write_block`), a block ahead is remembered as written and
    // read back from the file when the running hash reaches it.
    let p2 = info.lengths().piece(2).unwrap();
    let bs = piece_blocks(&info, 2);
    for &i in &[0usize, 2, 1, 3] {
        storage
            .write_block(bs[i], &slice(&info, &payload, bs[i]))
            .unwrap();
    }
    assert_eq!(storage.hashed_on_arrival(p2), 64 << 10);
    assert!(verify(&storage, &info, 2));
}

#[test]
fn a_duplicate_write_makes_verification_read_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, info, payload) = arrival_storage(tmp.path());
    let bs = piece_blocks(&info, 0);
    let bad = |b: BlockRef| vec![0xA5u8; b.len as usize];

    // Good bytes hashed, then a duplicate with other bytes lands on disk: must fail.
    for &b in &bs {
        write_bytes(&storage, b, slice(&info, &payload, b));
    }
    write_bytes(&storage, bs[1], bad(bs[1]));
    assert_eq!(storage.hashed_on_arrival(bs[1].piece), 0);
    assert!(!verify(&storage, &info, 0));

    // Bad bytes hashed, then the good ones overwrite them: what is on disk is right, so it
    // must pass, whichever block was overwritten (the first starts a fresh running hash).
    for (i, _) in bs.iter().enumerate() {
        for &b in &bs {
            write_bytes(&storage, b, bad(b));
        }
        write_bytes(&storage, bs[i], slice(&info, &payload, bs[i]));
        for (j, &b) in bs.iter().enumerate() {
            if j != i {
                write_bytes(&storage, b, slice(&info, &payload, b));
            }
        }
        assert!(verify(&storage, &info, 0), "overwritten block {i}");
    }

    // A held block (ahead of the running hash) overwritten: the second bytes count.
    write_bytes(&storage, bs[2], bad(bs[2]));
    write_bytes(&storage, bs[2], slice(&info, &payload, bs[2]));
    for &i in &[0usize, 1, 3] {
        write_bytes(&storage, bs[i], slice(&info, &payload, bs[i]));
    }
    assert!(verify(&storage, &info, 0));
    write_bytes(&storage, bs[3], slice(&info, &payload, bs[3]));
    write_bytes(&storage, bs[3], bad(bs[3]));
    for &i in &[0usize, 1, 2] {
        write_bytes(&storage, bs[i], slice(&info, &payload, bs[i]));
    }
    assert!(!verify(&storage, &info, 0));

    // The same with blocks remembered rather than held (no `Bytes`): read back or not, the
    // bytes that count are the last ones written.
    let put = |b: BlockRef, data: &[u8]| storage.write_block(b, data).unwrap();
    put(bs[2], &bad(bs[2]));
    put(bs[2], &slice(&info, &payload, bs[2]));
    for &i in &[0usize, 1, 3] {
        put(bs[i], &slice(&info, &payload, bs[i]));
    }
    assert!(verify(&storage, &info, 0));
    put(bs[3], &slice(&info, &payload, bs[3]));
    put(bs[3], &bad(bs[3]));
    for &i in &[0usize, 1, 2] {
        put(bs[i], &slice(&info, &payload, bs[i]));
    }
    assert!(!verify(&storage, &info, 0));
}

#[test]
fn a_failed_piece_downloads_again_and_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, info, payload) = arrival_storage(tmp.path());
    let p = info.lengths().piece(3).unwrap();
    let bs = piece_blocks(&info, 3);
    for (i, &b) in bs.iter().enumerate() {
        let mut data = slice(&info, &payload, b);
        if i == 2 {
            data[100] ^= 1;
        }
        write_bytes(&storage, b, data);
    }
    assert_eq!(storage.hashed_on_arrival(p), 64 << 10);
    assert!(!verify(&storage, &info, 3));
    assert_eq!(storage.hashed_on_arrival(p), 0);
    for &b in &bs {
        write_bytes(&storage, b, slice(&info, &payload, b));
    }
    assert_eq!(storage.hashed_on_arrival(p), 64 << 10);
    assert!(verify(&storage, &info, 3));
}

#[test]
fn padding_is_hashed_as_zeros_whatever_the_peer_sent() {
    let (info, payload) = layout();
    let tmp = tempfile::tempdir().unwrap();
    let storage = Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap();
    let l = info.lengths();
    for p in l.pieces() {
        for b in l.blocks(p) {
            // Non-zero bytes everywhere the payload has zeros (padding included): the
            // padding part must still be hashed as the zeros we hold.
            let mut data = slice(&info, &payload, b);
            for (span, at) in info.block_spans(b).scan(0usize, |at, s| {
                let here = *at;
                *at += s.len as usize;
                Some((s, here))
            }) {
                if span.padding {
                    data[at..at + span.len as usize].fill(0x5A);
                }
            }
            storage.write_block_bytes(b, &data.into()).unwrap();
        }
        assert!(storage.hashed_on_arrival(p) > 0);
        assert!(
            storage.verify_piece(p, info.piece_hash(p)).unwrap(),
            "{p:?}"
        );
    }
}

#[test]
fn running_hashes_are_bounded() {
    // 400 single-block pieces, each begun: past the bound, pieces are simply read back.
    let tmp = tempfile::tempdir().unwrap();
    let (info, payload) = torrent("many", &[F("m.bin", 400 * (16 << 10), false)], 16 << 10);
    let storage = Storage::open(info.clone(), tmp.path(), OpenMode::Create).unwrap();
    let l = info.lengths();
    for p in l.pieces() {
        let b = l.blocks(p).next().unwrap();
        storage
            .write_block_bytes(b, &slice(&info, &payload, b).into())
            .unwrap();
    }
    let tracked = l
        .pieces()
        .filter(|&p| storage.hashed_on_arrival(p) > 0)
        .count();
    assert!((1..400).contains(&tracked), "{tracked} running hashes");
    for p in l.pieces() {
        assert!(storage.verify_piece(p, info.piece_hash(p)).unwrap());
    }
    assert_eq!(
        l.pieces()
            .filter(|&p| storage.hashed_on_arrival(p) > 0)
            .count(),
        0
    );
}

#[test]
fn smart_ban_gets_block_hashes_of_the_bytes_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, info, payload) = arrival_storage(tmp.path());
    let pool = DiskPool::new(DiskPoolConfig {
        hash_threads: 2,
        io_threads: 4,
    })
    .unwrap();
    let (tx, rx) = completion_queue().unwrap();
    let bs = piece_blocks(&info, 1);
    let good: Vec<[u8; 20]> = bs
        .iter()
        .map(|&b| Sha1::digest(slice(&info, &payload, b)).into())
        .collect();
    let run = |corrupt: Option<usize>, blocks: bool| {
        for (i, &b) in bs.iter().enumerate() {
            let mut data = slice(&info, &payload, b);
            if corrupt == Some(i) {
                data[7] ^= 0xFF;
            }
            pool.submit(
                &storage,
                0,
                DiskJob::Write {
                    block: b,
                    data: data.into(),
                },
                &tx,
            );
        }
        drain_all(&rx, bs.len());
        let piece = bs[0].piece;
        let expected = *info.piece_hash(piece);
        pool.submit(
            &storage,
            1,
            DiskJob::Verify {
                piece,
                expected: Some(expected),
                blocks,
            },
            &tx,
        );
        let c = drain_all(&rx, 1).pop().unwrap();
        let Outcome::Verified {
            result,
            block_hashes,
            ..
        } = c.outcome
        else {
            panic!("{c:?}")
        };
        (result.unwrap(), block_hashes)
    };
    // A failure comes with every block's hash; only the corrupt block's differs.
    let (ok, hashes) = run(Some(2), false);
    assert!(!ok);
    assert_eq!(hashes.len(), 4);
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(h == &good[i], i != 2, "block {i}");
    }
    // The good copy, asked with its blocks (a suspect piece).
    let (ok, hashes) = run(None, true);
    assert!(ok);
    assert_eq!(hashes, good);
    let (ok, hashes) = run(None, false);
    assert!(ok);
    assert!(hashes.is_empty());
}

// ---------------------------------------------------------------------------------------
// Resume data

#[test]
fn resume_is_trusted_only_when_nothing_changed() {
    let (info, payload) = layout();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dl = tmp.path().join("dl");
    let storage = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap();
    assert!(matches!(
        ResumeData::restore(&state, &storage),
        Err(ResumeError::NotFound(_))
    ));
    write_all(&storage, &payload);
    let l = info.lengths();
    let mut verified = Bitfield::new(l.piece_count());
    verified.set(0);
    verified.set(3);
    let data = ResumeData::capture(&storage, verified.clone()).unwrap();
    let path = data.save(&state).unwrap();
    assert_eq!(
        path,
        state.join(format!("{}.resume", info.info_hash().to_hex()))
    );
    // Only the resume file is left: no temporary file behind.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
    assert_eq!(ResumeData::restore(&state, &storage).unwrap(), verified);

    // A file modified since: refused, naming it.
    let b = dl.join("t/d/b.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    let err = ResumeData::restore(&state, &storage).unwrap_err();
    assert!(
        matches!(&err, ResumeError::FileChanged { path, .. } if path == &b),
        "{err:?}"
    );
    assert!(err.to_string().contains("modified"), "{err}");

    // A file of another size: refused.
    data.save(&state).unwrap();
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        FileStamp {
            size: m.len(),
            mtime_ns: 0,
        }
    };
    let mut grown = ResumeData::capture(&storage, verified.clone()).unwrap();
    grown.save(&state).unwrap();
    assert!(ResumeData::restore(&state, &storage).is_ok());
    grown.files[0] = Some(FileStamp {
        size: stamp(&dl.join("t/a.bin")).size + 1,
        ..grown.files[0].unwrap()
    });
    grown.save(&state).unwrap();
    let err = ResumeData::restore(&state, &storage).unwrap_err();
    assert!(
        err.to_string().contains("size was 10001 bytes, now 10000"),
        "{err}"
    );

    // A missing file: refused.
    let fresh = ResumeData::capture(&storage, verified.clone()).unwrap();
    fresh.save(&state).unwrap();
    std::fs::remove_file(dl.join("t/z.bin")).unwrap();
    let err = ResumeData::restore(&state, &storage).unwrap_err();
    assert!(err.to_string().contains("missing now"), "{err}");

    // Another torrent's data under this torrent's name, garbage, a future version.
    let other = ResumeData {
        info_hash: InfoHash::from_bytes([9; 20]),
        ..fresh.clone()
    };
    std::fs::write(&path, other.to_bytes()).unwrap();
    assert!(matches!(
        ResumeData::restore(&state, &storage),
        Err(ResumeError::WrongTorrent { .. })
    ));
    std::fs::write(&path, b"d7:versioni1e4:junk").unwrap();
    assert!(matches!(
        ResumeData::restore(&state, &storage),
        Err(ResumeError::Corrupt(_))
    ));
    let future: Vec<u8> = {
        let bytes = fresh.to_bytes();
        let at = bytes
            .windows(12)
            .position(|w| w == b"7:versioni1e")
            .unwrap();
        [&bytes[..at], b"7:versioni2e", &bytes[at + 12..]].concat()
    };
    std::fs::write(&path, future).unwrap();
    let err = ResumeData::restore(&state, &storage).unwrap_err();
    assert!(matches!(err, ResumeError::UnknownVersion(2)), "{err:?}");
}

/// A restart validates resume data against the stamps of the descriptors its storage just
/// opened (one fstat each): they are the stamps the paths give, so the same data is
/// trusted, and a file changed before the open is still refused.
#[test]
fn resume_validated_on_opened_descriptors_trusts_and_refuses_as_by_path() {
    let (info, payload) = layout();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dl = tmp.path().join("dl");
    let storage = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap();
    write_all(&storage, &payload);
    let verified = Bitfield::full(info.lengths().piece_count());
    ResumeData::capture(&storage, verified.clone())
        .unwrap()
        .save(&state)
        .unwrap();
    drop(storage);

    let reopened = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap();
    assert_eq!(
        reopened.opened_file_stamps().unwrap(),
        reopened.file_stamps().unwrap()
    );
    let loaded = ResumeData::load(&state, info.info_hash());
    assert_eq!(
        ResumeData::restore_opened(loaded, &reopened).unwrap(),
        verified
    );
    drop(reopened);

    // Changed while nothing held it: the next open refuses the data, naming the file.
    let b = dl.join("t/d/b.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
    drop(f);
    let reopened = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap();
    let err = ResumeData::restore_opened(ResumeData::load(&state, info.info_hash()), &reopened)
        .unwrap_err();
    assert!(
        matches!(&err, ResumeError::FileChanged { path, .. } if path == &b),
        "{err:?}"
    );
    // No resume data: not found, as by path.
    std::fs::remove_dir_all(&state).unwrap();
    assert!(matches!(
        ResumeData::restore_opened(ResumeData::load(&state, info.info_hash()), &reopened),
        Err(ResumeError::NotFound(_))
    ));
}

/// BEP 47 `x`: a file the torrent marks executable is created executable (as libtorrent
/// makes it; the umask still applies), and the others are not.
#[test]
fn executable_files_are_created_executable() {
    use std::os::unix::fs::PermissionsExt;
    let file = |path: &[&str], attr: Option<&str>| {
        let mut d = BTreeMap::new();
        d.insert(b"length".to_vec(), OwnedValue::Int(100));
        d.insert(
            b"path".to_vec(),
            OwnedValue::List(path.iter().map(|c| OwnedValue::str(c)).collect()),
        );
        if let Some(a) = attr {
            d.insert(b"attr".to_vec(), OwnedValue::str(a));
        }
        OwnedValue::Dict(d)
    };
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str("exe"));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(16384));
    info.insert(
        b"pieces".to_vec(),
        OwnedValue::Bytes(Sha1::digest([0u8; 200]).to_vec()),
    );
    info.insert(
        b"files".to_vec(),
        OwnedValue::List(vec![
            file(&["bin", "run.sh"], Some("x")),
            file(&["data.txt"], None),
        ]),
    );
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    let info = Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    );
    let tmp = tempfile::tempdir().unwrap();
    let _storage = Storage::open(info, tmp.path(), OpenMode::Create).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(tmp.path().join(p))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_ne!(
        mode("exe/bin/run.sh") & 0o100,
        0,
        "{:o}",
        mode("exe/bin/run.sh")
    );
    assert_eq!(
        mode("exe/data.txt") & 0o111,
        0,
        "{:o}",
        mode("exe/data.txt")
    );
}

/// A torrent of two files and BEP 47 symlink entries (`attr` `l`, `symlink path`).
fn symlink_torrent() -> Arc<Info> {
    let file = |path: &[&str], len: i64, link: Option<&[&str]>| {
        let mut d = BTreeMap::new();
        d.insert(b"length".to_vec(), OwnedValue::Int(len));
        d.insert(
            b"path".to_vec(),
            OwnedValue::List(path.iter().map(|c| OwnedValue::str(c)).collect()),
        );
        if let Some(target) = link {
            d.insert(b"attr".to_vec(), OwnedValue::str("l"));
            d.insert(
                b"symlink path".to_vec(),
                OwnedValue::List(target.iter().map(|c| OwnedValue::str(c)).collect()),
            );
        }
        OwnedValue::Dict(d)
    };
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str("sym"));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(16384));
    info.insert(
        b"pieces".to_vec(),
        OwnedValue::Bytes(Sha1::digest([0u8; 200]).to_vec()),
    );
    info.insert(
        b"files".to_vec(),
        OwnedValue::List(vec![
            file(&["bin", "run.sh"], 100, None),
            file(&["data.txt"], 100, None),
            file(&["links", "to-data"], 0, Some(&["data.txt"])),
            file(&["links", "deep", "up"], 0, Some(&["bin", "run.sh"])),
            file(&["links", "folder"], 0, Some(&["bin"])),
            file(&["escape"], 0, Some(&["..", "..", "..", "etc", "passwd"])),
            file(&["nowhere"], 0, Some(&["missing.txt"])),
        ]),
    );
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    Arc::new(
        Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    )
}

/// BEP 47 `l`: symlink entries whose target is a file or folder of the torrent are created as
/// relative symlinks in their place, as libtorrent creates them (`../data.txt`), and lead
/// where the torrent says; a target outside the torrent (or not in it) makes no link. The
/// payload is written to the files, never through a link.
#[test]
fn symlinks_are_created_inside_the_folder_as_libtorrent_makes_them() {
    let info = symlink_torrent();
    let tmp = tempfile::tempdir().unwrap();
    let dl = tmp.path().join("dl");
    let storage = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap();
    let payload: Vec<u8> = (0..200u32).map(|i| (i * 13) as u8).collect();
    for b in blocks(&info) {
        storage.write_block(b, &slice(&info, &payload, b)).unwrap();
    }
    drop(storage);
    let link = |p: &str| std::fs::read_link(dl.join(p)).ok();
    assert_eq!(
        link("sym/links/to-data"),
        Some(PathBuf::from("../data.txt"))
    );
    assert_eq!(
        link("sym/links/deep/up"),
        Some(PathBuf::from("../../bin/run.sh"))
    );
    assert_eq!(link("sym/links/folder"), Some(PathBuf::from("../bin")));
    assert_eq!(link("sym/escape"), None);
    assert!(!dl.join("sym/escape").exists());
    assert_eq!(link("sym/nowhere"), None);
    // Each leads to the torrent's own bytes.
    let data = std::fs::read(dl.join("sym/links/to-data")).unwrap();
    assert_eq!(data, &payload[100..]);
    let run = std::fs::read(dl.join("sym/links/deep/up")).unwrap();
    assert_eq!(run, &payload[..100]);
    assert!(dl.join("sym/links/folder/run.sh").is_file());
    // Opening again finds the same links and keeps them.
    let again = Storage::open(info.clone(), &dl, OpenMode::Create).unwrap();
    drop(again);
    assert_eq!(
        link("sym/links/to-data"),
        Some(PathBuf::from("../data.txt"))
    );
}

/// A link's place already taken (a file of the user's, or a folder on the way that is a
/// symlink leading out of the download folder) is left as it is: nothing is replaced,
/// followed or created outside.
#[test]
fn symlinks_never_replace_what_is_there_or_lead_out() {
    let info = symlink_torrent();
    let tmp = tempfile::tempdir().unwrap();
    let dl = tmp.path().join("dl");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(dl.join("sym/links")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // `links/deep` leads out; `links/to-data` is the user's file.
    std::os::unix::fs::symlink(&outside, dl.join("sym/links/deep")).unwrap();
    std::fs::write(dl.join("sym/links/to-data"), b"mine").unwrap();
    let storage = Storage::open(info, &dl, OpenMode::Create).unwrap();
    drop(storage);
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "something was created outside: {:?}",
        files_under(&outside)
    );
    let meta = std::fs::symlink_metadata(dl.join("sym/links/to-data")).unwrap();
    assert!(meta.is_file());
    assert_eq!(
        std::fs::read(dl.join("sym/links/to-data")).unwrap(),
        b"mine"
    );
    assert_eq!(
        std::fs::read_link(dl.join("sym/links/deep")).unwrap(),
        outside,
        "the user's symlink is left alone"
    );
    // The link that had room is made.
    assert_eq!(
        std::fs::read_link(dl.join("sym/links/folder")).unwrap(),
        PathBuf::from("../bin")
    );
}
