//! Files opened on demand (`Storage::open_lazy`, what a restart from resume data uses): no
//! descriptor until a block is asked for, a file changed or removed while unopened is refused
//! (never read as the pieces the resume data vouched for), a full check takes the files as
//! they are, and the process-wide cap on held files still bounds the descriptors when more
//! torrents are read than the cap.
//!
//! The cap is process-wide: every test here takes `CAP` so that the one that lowers it runs
//! alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ringtorrent::bencode::OwnedValue;
use ringtorrent::core::BlockRef;
use ringtorrent::metainfo::{Info, Torrent};
use ringtorrent::storage::{
    check, Allocation, FileState, OpenMode, Storage, StorageError, StorageOptions,
};
use sha1::{Digest, Sha1};

const PIECE: u64 = 16 * 1024;

static CAP: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    CAP.lock().unwrap_or_else(|e| e.into_inner())
}

/// A torrent named `name` of `files` (path, length) over pseudo-random bytes, written under
/// `dir`.
fn torrent(dir: &Path, name: &str, files: &[(&str, u64)], seed: u64) -> Arc<Info> {
    let mut payload = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    for &(path, len) in files {
        let mut bytes = Vec::with_capacity(len as usize);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        let file = dir.join(name).join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &bytes).unwrap();
        payload.extend_from_slice(&bytes);
    }
    let pieces: Vec<u8> = payload
        .chunks(PIECE as usize)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();
    let list = files
        .iter()
        .map(|&(path, len)| {
            let mut d = BTreeMap::new();
            d.insert(b"length".to_vec(), OwnedValue::Int(len as i64));
            d.insert(
                b"path".to_vec(),
                OwnedValue::List(path.split('/').map(OwnedValue::str).collect()),
            );
            OwnedValue::Dict(d)
        })
        .collect();
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str(name));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(PIECE as i64));
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
    info.insert(b"files".to_vec(), OwnedValue::List(list));
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    let bytes = OwnedValue::Dict(root).to_bytes();
    Arc::new(Torrent::from_bytes(&bytes).unwrap().info)
}

/// Descriptors of this process open on something under `dir` (folders included).
fn held_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

fn lazy(info: &Arc<Info>, dir: &Path) -> Storage {
    Storage::open_lazy(
        info.clone(),
        dir,
        StorageOptions::new(OpenMode::Create),
        &[],
    )
    .expect("every file is there as an open would leave it")
}

/// Piece `piece` of `storage`'s torrent: one block, as pieces here are 16 KiB.
fn block(storage: &Storage, piece: u32) -> BlockRef {
    let lengths = storage.info().lengths();
    let mut blocks = lengths.blocks(lengths.piece(piece).unwrap());
    let b = blocks.next().unwrap();
    assert!(blocks.next().is_none());
    b
}

fn piece_ok(storage: &Storage, piece: u32) -> bool {
    let mut buf = vec![0; PIECE as usize];
    storage.read_block(block(storage, piece), &mut buf).unwrap();
    let hash: [u8; 20] = Sha1::digest(&buf).into();
    let info = storage.info();
    &hash == info.piece_hash(info.lengths().piece(piece).unwrap())
}

fn touch(path: &Path, later: Duration) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.set_modified(mtime + later).unwrap();
}

#[test]
fn a_lazy_storage_holds_no_descriptor_until_a_file_is_read() {
    let _cap = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let info = torrent(dir, "t", &[("a.bin", 2 * PIECE), ("b.bin", 2 * PIECE)], 1);
    let storage = lazy(&info, dir);
    assert_eq!(held_under(dir), 0, "not even the folder is held");
    assert!(storage.has_unopened_files());
    assert!(storage
        .file_states()
        .all(|s| matches!(s, FileState::Present { created: false, .. })));
    // The stamps resume data is validated against come from the stat, no open.
    let stamps = storage.opened_file_stamps().unwrap();
    assert_eq!(stamps[0].unwrap().size, 2 * PIECE);
    assert_eq!(held_under(dir), 0);

    assert!(piece_ok(&storage, 0));
    assert_eq!(held_under(dir), 1, "the file read is held, not its folder");
    assert!(storage.has_unopened_files(), "b.bin is still unopened");
    assert!(piece_ok(&storage, 3));
    assert_eq!(held_under(dir), 2);
    assert!(!storage.has_unopened_files());
    // A write opens the file it goes to, with write access.
    let info2 = torrent(dir, "w", &[("c.bin", PIECE)], 2);
    let writer = lazy(&info2, dir);
    writer
        .write_block(block(&writer, 0), &vec![7; PIECE as usize])
        .unwrap();
    writer.sync().unwrap();
    assert_eq!(
        std::fs::read(dir.join("w/c.bin")).unwrap(),
        vec![7; PIECE as usize]
    );
    assert!(!storage.changed_on_disk() && !writer.changed_on_disk());
}

#[test]
fn a_file_changed_while_unopened_is_refused_and_keeps_its_old_stamp() {
    let _cap = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let info = torrent(dir, "t", &[("a.bin", 2 * PIECE), ("b.bin", 2 * PIECE)], 3);
    let storage = lazy(&info, dir);
    let before = storage.file_stamps().unwrap();
    // Same size, new bytes, a new modification time.
    std::fs::write(dir.join("t/a.bin"), vec![0xEE; 2 * PIECE as usize]).unwrap();
    touch(&dir.join("t/a.bin"), Duration::from_secs(3));
    let mut buf = vec![0; PIECE as usize];
    let err = storage
        .read_block(block(&storage, 0), &mut buf)
        .unwrap_err();
    assert!(matches!(err, StorageError::Changed { .. }), "{err:?}");
    assert!(storage.changed_on_disk());
    // Every later access is refused too, and nothing stays open for it.
    assert!(matches!(
        storage.read_block(block(&storage, 1), &mut buf),
        Err(StorageError::Changed { .. })
    ));
    assert!(matches!(
        storage.write_block(block(&storage, 1), &buf),
        Err(StorageError::Changed { .. })
    ));
    assert_eq!(held_under(dir), 0);
    // Resume data taken now records the stamp the pieces were verified against, so the
    // next start finds the change instead of trusting the new bytes.
    assert_eq!(storage.file_stamps().unwrap()[0], before[0]);
    assert_ne!(
        Storage::open(info.clone(), dir, OpenMode::Create)
            .unwrap()
            .file_stamps()
            .unwrap()[0],
        before[0]
    );
    // The other file is untouched and still served.
    assert!(piece_ok(&storage, 2));

    // A size change is refused the same way.
    let storage = lazy(&info, dir);
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("t/b.bin"))
        .unwrap()
        .set_len(PIECE)
        .unwrap();
    let err = storage
        .read_block(block(&storage, 2), &mut buf)
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Changed { change, .. } if change.contains("size")),
        "{err:?}"
    );
}

#[test]
fn a_file_removed_while_unopened_reads_as_missing() {
    let _cap = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let info = torrent(dir, "t", &[("a.bin", PIECE), ("b.bin", PIECE)], 4);
    let storage = lazy(&info, dir);
    std::fs::remove_file(dir.join("t/b.bin")).unwrap();
    let mut buf = vec![0; PIECE as usize];
    let err = storage
        .read_block(block(&storage, 1), &mut buf)
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::Missing { path } if path.ends_with("t/b.bin")),
        "{err:?}"
    );
    assert!(!storage.changed_on_disk(), "missing, not changed");
    assert!(piece_ok(&storage, 0));
}

#[test]
fn a_check_takes_unopened_files_as_they_are() {
    let _cap = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let info = torrent(dir, "t", &[("a.bin", 2 * PIECE), ("b.bin", 2 * PIECE)], 5);
    let storage = lazy(&info, dir);
    // The bytes of piece 3 change, and the file's time with them.
    let mut b = std::fs::read(dir.join("t/b.bin")).unwrap();
    b[PIECE as usize + 9] ^= 0xFF;
    std::fs::write(dir.join("t/b.bin"), &b).unwrap();
    touch(&dir.join("t/b.bin"), Duration::from_secs(3));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let report = check(&storage, &pool, &AtomicU64::new(0));
    assert_eq!(
        report.pieces_with(ringtorrent::storage::PieceVerdict::Failed),
        [3]
    );
    assert_eq!(
        report.pieces_with(ringtorrent::storage::PieceVerdict::Complete),
        [0, 1, 2]
    );
    assert!(
        !storage.changed_on_disk(),
        "the check took the file as it is"
    );
}

#[test]
fn open_lazy_declines_what_an_open_would_change() {
    let _cap = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let info = torrent(dir, "t", &[("a.bin", PIECE), ("b.bin", PIECE)], 6);
    let options = StorageOptions::new(OpenMode::Create);
    // A file missing: an open creates it.
    std::fs::rename(dir.join("t/b.bin"), dir.join("t/b.off")).unwrap();
    assert!(Storage::open_lazy(info.clone(), dir, options, &[]).is_none());
    // ... unless it is skipped: then it stays missing, as an open leaves it.
    let skipped = Storage::open_lazy(info.clone(), dir, options, &[false, true]).unwrap();
    assert_eq!(skipped.file_states().nth(1), Some(FileState::Missing));
    // Another size: an open refuses it.
    std::fs::write(dir.join("t/b.bin"), b"short").unwrap();
    assert!(Storage::open_lazy(info.clone(), dir, options, &[]).is_none());
    // Sparse: a full allocation would preallocate it, a sparse one takes it.
    std::fs::remove_file(dir.join("t/b.bin")).unwrap();
    let f = std::fs::File::create(dir.join("t/b.bin")).unwrap();
    f.set_len(PIECE).unwrap();
    drop(f);
    let sparse = std::fs::metadata(dir.join("t/b.bin"))
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512 < PIECE)
        .unwrap();
    if sparse {
        assert!(Storage::open_lazy(info.clone(), dir, options, &[]).is_none());
    }
    let options = StorageOptions {
        allocation: Allocation::Sparse,
        ..options
    };
    assert!(Storage::open_lazy(info.clone(), dir, options, &[]).is_some());
    // A folder where a file should be.
    std::fs::remove_file(dir.join("t/b.bin")).unwrap();
    std::fs::create_dir(dir.join("t/b.bin")).unwrap();
    assert!(Storage::open_lazy(info, dir, options, &[]).is_none());
    // A symlink leading out of the folder is not followed.
    let out = tempfile::tempdir().unwrap();
    let info = torrent(out.path(), "u", &[("a.bin", PIECE)], 7);
    std::fs::create_dir_all(dir.join("u")).unwrap();
    std::os::unix::fs::symlink(out.path().join("u/a.bin"), dir.join("u/a.bin")).unwrap();
    assert!(Storage::open_lazy(info, dir, StorageOptions::new(OpenMode::Create), &[]).is_none());
}

#[test]
fn held_files_stay_within_the_cap_with_more_torrents_read_than_it() {
    let _cap = serial();
    const TORRENTS: usize = 12;
    const CAP_FILES: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let storages: Vec<Storage> = (0..TORRENTS)
        .map(|i| {
            let info = torrent(dir, &format!("t{i}"), &[("f.bin", 2 * PIECE)], i as u64);
            lazy(&info, dir)
        })
        .collect();
    assert_eq!(held_under(dir), 0);
    ringtorrent::storage::set_open_file_cap(CAP_FILES);
    let served = std::panic::catch_unwind(|| {
        for round in 0..2 {
            for s in &storages {
                assert!(piece_ok(s, round));
                let held = held_under(dir);
                assert!(
                    held <= CAP_FILES,
                    "{held} descriptors held, cap {CAP_FILES}"
                );
            }
        }
        // Files past the cap are opened for each access and closed after it.
        assert_eq!(held_under(dir), CAP_FILES);
    });
    drop(storages);
    ringtorrent::storage::set_open_file_cap(usize::MAX);
    assert_eq!(held_under(dir), 0);
    if let Err(e) = served {
        std::panic::resume_unwind(e);
    }
}

/// A single-file torrent `name` of `len` pseudo-random bytes, written at `dir/name`.
fn single_file(dir: &Path, name: &str, len: u64) -> Arc<Info> {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(dir.join(name), &bytes).unwrap();
    let pieces: Vec<u8> = bytes
        .chunks(PIECE as usize)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str(name));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(PIECE as i64));
    info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
    info.insert(b"length".to_vec(), OwnedValue::Int(len as i64));
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    let bytes = OwnedValue::Dict(root).to_bytes();
    Arc::new(Torrent::from_bytes(&bytes).unwrap().info)
}

#[test]
fn a_file_directly_in_the_folder_is_stat_ed_without_following_a_symlink() {
    let _cap = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let info = single_file(dir, "one.bin", 2 * PIECE);
    let storage = lazy(&info, dir);
    assert_eq!(held_under(dir), 0);
    assert!(piece_ok(&storage, 1));
    assert_eq!(held_under(dir), 1);
    drop(storage);
    // The same bytes behind a symlink (leading out of the folder): declined, not followed.
    let out = tempfile::tempdir().unwrap();
    std::fs::rename(dir.join("one.bin"), out.path().join("one.bin")).unwrap();
    std::os::unix::fs::symlink(out.path().join("one.bin"), dir.join("one.bin")).unwrap();
    let options = StorageOptions::new(OpenMode::Create);
    assert!(Storage::open_lazy(info.clone(), dir, options, &[]).is_none());
    // Gone: declined too (an open creates it).
    std::fs::remove_file(dir.join("one.bin")).unwrap();
    assert!(Storage::open_lazy(info, dir, options, &[]).is_none());
}
