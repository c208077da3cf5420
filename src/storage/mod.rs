//! Storage: a torrent's files on disk, block reads and writes across file boundaries, piece
//! hashing on a pool, resume data, and full checks.
//!
//! # How blocks move (measured: `perf/2026-11-24-storage-cold-pages.md`)
//!
//! - **The event loop never touches file data.** Copying a cold block out of a mapping held
//!   the copying thread for 0.2 to 9 ms (p99), even with `MADV_WILLNEED` issued just before;
//!   prefetching pieces ahead helped the median but not the tail. So every call in this module
//!   that touches file data runs on a pool thread ([`DiskPool`]), and results come back through a per-loop
//!   [`Completions`] queue and its eventfd.
//! - **Writes use `pwrite`, never the mapping.** Overwriting cold data through a mapping reads
//!   every page first (30 times slower than `pwrite` here), and a write fault that cannot
//!   allocate (a full copy-on-write filesystem) is a `SIGBUS`, where `pwrite` returns ENOSPC.
//!   So mappings are read-only (`PROT_READ`) and a stray write through one cannot happen.
//!   Receiving blocks from the socket straight into a writable mapping (one copy instead of
//!   two) was measured and did not pay on tmpfs: a page faulted in for writing is cleared
//!   first, which a whole-page `pwrite` never does (`perf/2026-12-03-leech-direct.md`).
//! - **Reads and hashing use the mapping** (no copy for hashing; the hasher prefetches 2 KiB
//!   ahead, which doubles its speed on pieces not in the CPU's caches), with `MADV_RANDOM` while
//!   serving (the default: this machine's 8 MiB readahead otherwise reads 8 MiB around every
//!   fault) plus `MADV_WILLNEED` over the whole piece when its first block is read, and
//!   `MADV_SEQUENTIAL` for a full check ([`Access`]).
//! - **Blocks for peers are not copied** ([`Storage::read_block_shared`]): the pool faults
//!   the block in (`MADV_POPULATE_READ`, one call over a batch's neighbouring blocks:
//!   [`Storage::read_blocks_shared`]) and returns `Bytes` pointing into the mapping, so
//!   the kernel copies it into the socket straight from the page cache
//!   (`perf/2026-12-02-send-from-mapping.md`). The one call a loop makes here,
//!   [`Storage::read_block_resident`], answers only when `mincore` finds every page of the
//!   block cached: touches no file data, so the send's faults are minor ones
//!   (`perf/2026-12-03-seed-send.md`).
//!
//! # Files
//!
//! [`Storage::open`] resolves every path below the download folder with
//! `openat2(RESOLVE_BENEATH)` (or, without it, a component walk that follows no symlink), so a
//! symlink planted inside the folder cannot redirect a write outside it. It checks every
//! existing file before it changes anything, checks free space with `statvfs` (a torrent
//! larger than the free space is an error when it is added), creates folders and files, and
//! gives them their space as [`Allocation`] says: reserved with `fallocate` ([`Allocation::Full`],
//! so a disk that others fill later cannot fail a write), or only their size
//! ([`Allocation::Sparse`]: such a disk fails the write that finds it full with ENOSPC, never a
//! `SIGBUS`, since writes use `pwrite`). Files are mapped once and
//! their descriptors kept for `pwrite`, up to [`limits::MAX_OPEN_FILES`] across the process
//! (fewer when the descriptor limit is low: [`set_open_file_cap`]);
//! past that a file is opened for each access.
//!
//! A torrent restored from resume data need not touch its files until it is asked for data
//! ([`Storage::open_lazy`]): each file is only stat'ed by path (beneath the download folder,
//! by the same rules) and opened, mapped and held on its first read or write. The stat is what
//! the resume data is validated against; the first open compares the file with it again, and
//! a file whose size or modification time changed meanwhile is not served
//! ([`StorageError::Changed`], [`Storage::changed_on_disk`]): the client checks the data
//! again. A file removed meanwhile reads as [`StorageError::Missing`]. Until a file is asked
//! for, it holds no descriptor, so ten thousand idle torrents hold only their folders'.
//!
//! Files the caller does not want ([`Storage::open_selected`]'s `skip`: deselected files that
//! no wanted piece touches) are not created either until a later open wants them.
//!
//! BEP 47 padding files are never created: they read as zeros, and writes to them are
//! ignored (as libtorrent does): the piece hash is computed over the zeros we hold, so a
//! peer's non-zero padding cannot make a piece pass or fail wrongly.
//!
//! A file truncated by another program while mapped makes reads past its new end fault with
//! `SIGBUS` (the kernel's own copies out of the mapping, into a socket, fail with `EFAULT`
//! instead, and populating a block reports a read error); ringtorrent does not defend
//! against that in its own reads (libtorrent installs a signal handler
//! and longjmps, which Rust cannot do soundly).

mod arrival;
mod check;
mod error;
mod pool;
mod relocate;
mod resume;
pub(crate) mod sys;
mod workers;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use memmap2::{Advice, MmapOptions, MmapRaw};
use sha1::{Digest, Sha1};

use crate::core::{BlockRef, PieceIndex};
use crate::limits;
use crate::metainfo::{FileEntry, FileSpan, Info};
use sys::Resolve;

pub use check::{check, CheckReport, FileCheck, FileVerdict, PieceVerdict};
pub use error::StorageError;
pub use pool::{
    completion_queue, BatchJob, Completion, CompletionSender, Completions, DiskJob, DiskPool,
    DiskPoolConfig, Outcome,
};
pub use relocate::{move_files, move_size, MOVE_SUFFIX};
pub use resume::{resume_path, FileStamp, ResumeData, ResumeError, RESUME_VERSION};

/// How [`Storage::open`] treats the files on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Seeding or checking data already there: nothing is created or changed, files are
    /// opened read-only, and missing or wrong-size files are recorded in
    /// `Storage::files` instead of failing, so a check can report them. Writes fail.
    ReadOnly,
    /// Downloading: create missing folders and files and preallocate them. An existing file
    /// of the wrong size is an error ([`StorageError::WrongSize`]) and is left untouched.
    Create,
    /// Like [`OpenMode::Create`], but a file of the wrong size is cut or extended to the
    /// torrent's size. Data past a file's new end is lost: only when the user asked.
    CreateResize,
}

/// Options for [`Storage::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// How existing files are treated.
    pub mode: OpenMode,
    /// Keep each file's descriptor and mapping open (within [`limits::MAX_OPEN_FILES`] for
    /// the process). `false` opens a file for each access: slower, for tests of that path
    /// and for torrents that should hold no descriptors.
    pub hold_open: bool,
    /// Refuse every symlink inside the download folder, even one that stays inside. Without
    /// this, links that stay inside are followed where the kernel has `openat2` (Linux 5.6)
    /// and refused where it has not.
    pub refuse_symlinks: bool,
    /// How the create modes give new files their space.
    pub allocation: Allocation,
}

impl StorageOptions {
    /// The given mode, files held open, space preallocated ([`Allocation::Full`]).
    pub fn new(mode: OpenMode) -> Self {
        StorageOptions {
            mode,
            hold_open: true,
            refuse_symlinks: false,
            allocation: Allocation::Full,
        }
    }
}

/// How files being downloaded get their disk space. Either way the free space is checked
/// when the files are opened, so a torrent larger than the free space is refused up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocation {
    /// Reserve every file's blocks with `fallocate` when it is opened (the default): a disk
    /// that other programs fill later cannot make a write fail (except on copy-on-write
    /// filesystems), and files are laid out in one piece. Measured cheaper than sparse on
    /// tmpfs, where pages are allocated either way and in bulk here
    /// (`perf/2026-12-03-cpu-leech.md`).
    #[default]
    Full,
    /// Set each file's size only (a sparse file), as libtorrent and qBittorrent do by default:
    /// blocks are allocated as they are written, and a partly downloaded torrent takes only
    /// what it has. If the disk fills during the download, the write that finds it full fails
    /// with [`StorageError::NoSpace`] naming the file, the torrent stops with that error, and
    /// every block written before stays.
    Sparse,
}

impl Allocation {
    /// The name used in configuration files and flags: `full` or `sparse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Allocation::Full => "full",
            Allocation::Sparse => "sparse",
        }
    }
}

impl std::fmt::Display for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Allocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Allocation::Full),
            "sparse" => Ok(Allocation::Sparse),
            _ => Err(format!("{s:?} is not an allocation: full or sparse")),
        }
    }
}

/// The expected access pattern, passed to the kernel as `madvise`/`fadvise` hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Serving and downloading: blocks of scattered pieces. No readahead around faults;
    /// [`Storage::read_block`] prefetches the piece itself. The default.
    Random,
    /// A full check: every piece in order, with aggressive readahead.
    Sequential,
}

/// What was found on disk for one file of the torrent when the storage was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// A BEP 47 padding file, or a zero-length symlink entry: nothing on disk.
    NotStored,
    /// The file is there with the torrent's size.
    Present {
        /// Whether this open created it.
        created: bool,
        /// Whether the file is not fully allocated ([`Allocation::Sparse`], or a filesystem
        /// that refused `fallocate`), so a disk filled by others shows up as a failed write
        /// instead of at open.
        sparse: bool,
    },
    /// The file does not exist ([`OpenMode::ReadOnly`], or a file skipped by
    /// [`Storage::open_selected`]).
    Missing,
    /// The file exists with another size ([`OpenMode::ReadOnly`] only); the bytes that both
    /// sizes cover can still be read and checked.
    WrongSize {
        /// Its length on disk.
        actual: u64,
    },
}

/// The torrent's files on disk. `Send + Sync`: every method takes `&self` and is meant to be
/// called from pool threads ([`DiskPool`]), never from an event loop (see the module doc).
///
/// Concurrency contract: calls may overlap freely, except that the caller (the core) must not
/// write a piece after submitting it for verification, nor write one block twice with
/// different data; storage serialises the memory accesses themselves (a lock stripe per
/// piece) but cannot know which write the caller meant to keep.
#[derive(Debug)]
pub struct Storage {
    info: Arc<Info>,
    dir: PathBuf,
    /// The download folder, which every file's path is resolved beneath. Held by an eager
    /// open; a storage of [`Storage::open_lazy`] holds none and opens the folder for each
    /// file it opens, so idle torrents hold no descriptor and busy ones only their files'.
    root: Option<OwnedFd>,
    writable: bool,
    resolve: Resolve,
    files: Vec<Slot>,
    stripes: Box<[RwLock<()>]>,
    /// Disk jobs submitted for this storage and not finished ([`DiskPool`] counts them), so
    /// resume data can wait until no write is left to change a file after it was stamped.
    jobs: AtomicUsize,
    /// Pieces hashed as their blocks are written (see `arrival.rs`).
    arrivals: arrival::Arrivals,
    /// [`StorageOptions::hold_open`], for files opened on demand.
    hold_open: bool,
    /// The last [`Access`] asked for is sequential (applied to files opened on demand).
    sequential: AtomicBool,
    /// A file opened on demand was found changed since it was stat'ed ([`Storage::open_lazy`]).
    changed: AtomicBool,
    /// A full check has begun: files opened on demand from now are taken as they are.
    accept_changes: AtomicBool,
}

#[derive(Debug)]
struct Slot {
    rel: PathBuf,
    len: u64,
    state: FileState,
    backing: Backing,
    dirty: AtomicBool,
    /// Set for a file [`Storage::open_lazy`] did not open (then `backing` is `Nothing`).
    lazy: Option<Box<Lazy>>,
}

/// A file opened on its first access: the stamp it had when the storage was opened (what
/// the resume data was validated against), and, once opened, what it became.
#[derive(Debug)]
struct Lazy {
    stamp: FileStamp,
    /// The held file, or (`Err`) how it differed from `stamp` when it was opened.
    opened: OnceLock<Result<Backing, String>>,
}

#[derive(Debug)]
enum Backing {
    /// Nothing to read or write: padding, zero length, or missing.
    Nothing,
    /// Descriptor (for `pwrite`) and read-only mapping held for the storage's life.
    Held {
        file: File,
        map: MmapRaw,
        /// Bytes readable: the torrent's length, or less for a short file (read-only mode).
        readable: u64,
        _budget: OpenFileBudget,
    },
    /// Opened for each access; `readable` as above.
    Reopen { readable: u64 },
}

/// Lock stripes per torrent. A stripe is held shared while a piece is read or hashed and
/// exclusively while a block of it is written; 64 makes two pieces in flight share a stripe
/// rarely (1 in 64) and costs under 1 KiB per torrent, where a lock per piece would cost
/// megabytes for the largest torrents.
const LOCK_STRIPES: usize = 64;

/// The most bytes [`Storage::read_blocks_shared`] makes resident with one `madvise`: a
/// peer's reads in flight (`max_reads_per_peer` blocks of 16 KiB) fit, and a pool thread
/// never walks more than this before the next block's result can go back.
pub const READ_RUN_MAX: u64 = 1 << 20;

/// A block inside a file's read-only mapping, owned by the [`Bytes`] that
/// [`Storage::read_block_shared`] returns: the storage it holds keeps the mapping alive.
struct MappedBlock {
    _storage: Arc<Storage>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr..ptr + len` is read-only memory of a mapping that `_storage` owns and that no
// one unmaps while this value lives; reading it from any thread is sound.
unsafe impl Send for MappedBlock {}

impl AsRef<[u8]> for MappedBlock {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `Send` above: the range is inside a live `PROT_READ` mapping (checked
        // against the file's length when the value was made). Bytes changed by another
        // program show through, as with any shared file.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Faults `start..start + len` of `map` into this process's page tables, reading from the
/// disk what is not cached, so that a later access (the kernel's copy into a socket) does not
/// wait. `EFAULT` means the range is past the file's end now (truncated by someone else).
/// Kernels before 5.14 lack `MADV_POPULATE_READ` (`EINVAL`): then the pages are only asked
/// for (`MADV_WILLNEED`).
fn populate(map: &MmapRaw, start: usize, len: usize) -> io::Result<()> {
    let page = page_size();
    let first = start / page * page;
    let end = start + len;
    // SAFETY: the range lies inside the mapping (the caller checked it), its start rounded
    // down to a page boundary, which stays inside since the mapping starts on one;
    // MADV_POPULATE_READ only reads, never changes memory.
    let rc = unsafe {
        libc::madvise(
            map.as_ptr().add(first) as *mut libc::c_void,
            end - first,
            libc::MADV_POPULATE_READ,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) => {
            // A hint: failure only costs speed.
            let _ = map.advise_range(Advice::WillNeed, first, end - first);
            Ok(())
        }
        Some(libc::EFAULT) => Err(e),
        // EINTR, EAGAIN, ENOMEM: let the send fault the pages in.
        _ => Ok(()),
    }
}

/// Whether `file` is still at least `end` bytes long (`fstat`). `mincore` alone cannot tell:
/// a truncation that cuts a large folio may keep the folio cached, and a page past the end
/// then reads as resident though touching it faults. Any error answers no.
fn still_covers(file: &File, end: u64) -> bool {
    // SAFETY: `stat` is a plain C struct for which all-zero bytes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open (the `File` owns it) and `st` is a valid `stat` to fill.
    let rc = unsafe { libc::fstat(file.as_raw_fd(), &mut st) };
    rc == 0 && u64::try_from(st.st_size).is_ok_and(|size| size >= end)
}

/// Whether every page of `start..start + len` of `map` is in the page cache (`mincore`).
/// Any error answers no, which sends the block the slow, checked way.
fn resident(map: &MmapRaw, start: usize, len: usize) -> bool {
    let page = page_size();
    let first = start / page * page;
    let end = start + len;
    let pages = (end - first).div_ceil(page);
    // A block is at most a few pages: 16 KiB is 4, and the largest request we serve
    // (`max_request_len`) fits 64 bytes of vector with 4 KiB pages. Larger ones go the slow way.
    let mut vec = [0u8; 64];
    if pages == 0 || pages > vec.len() {
        return false;
    }
    // SAFETY: the range lies inside the mapping (the caller checked it against the mapped
    // length), its start rounded down to a page boundary, which stays inside since the
    // mapping starts on one; `vec` holds one byte for each of the `pages` pages. mincore
    // only reports, it changes nothing.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().add(first) as *mut libc::c_void,
            end - first,
            vec.as_mut_ptr(),
        )
    };
    rc == 0 && vec[..pages].iter().all(|b| b & 1 == 1)
}

/// The size of a memory page.
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    })
}

/// Zeros fed to the hasher for padding files.
static ZEROS: [u8; limits::BLOCK_LEN as usize] = [0; limits::BLOCK_LEN as usize];

/// Files held open (descriptor and mapping) across every storage in the process.
static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// The most files held open across the process: [`limits::MAX_OPEN_FILES`], or less when the
/// descriptor limit is lower (`set_open_file_cap`, from the client's descriptor budget).
static OPEN_FILES_CAP: AtomicUsize = AtomicUsize::new(limits::MAX_OPEN_FILES);

/// Caps the files held open across the process at `n` (at most
/// [`limits::MAX_OPEN_FILES`], at least 1); past it a file is opened for each access. The
/// client sets it from its descriptor budget, so files cannot take the descriptors its
/// connections were promised. Files already held stay open.
pub fn set_open_file_cap(n: usize) {
    OPEN_FILES_CAP.store(n.clamp(1, limits::MAX_OPEN_FILES), Ordering::Release);
}

/// One unit of [`OPEN_FILES`], given back when dropped.
#[derive(Debug)]
struct OpenFileBudget(());

impl OpenFileBudget {
    fn take() -> Option<Self> {
        OPEN_FILES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < OPEN_FILES_CAP.load(Ordering::Acquire)).then_some(n + 1)
            })
            .ok()
            .map(|_| OpenFileBudget(()))
    }
}

impl Drop for OpenFileBudget {
    fn drop(&mut self) {
        OPEN_FILES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The download folder's descriptor: held by the storage, or opened for one use.
enum Root<'a> {
    Held(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl Root<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Root::Held(fd) => *fd,
            Root::Opened(fd) => fd.as_fd(),
        }
    }
}

/// A file's entry in the plan made before anything on disk changes.
struct Found {
    fd: Option<OwnedFd>,
    actual: Option<u64>,
    allocated: u64,
    dev: u64,
}

/// What [`Storage::open`] created, removed again if a later step fails.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

impl Undo {
    fn run(self, root: BorrowedFd<'_>, resolve: Resolve) {
        // Best effort: the open already failed and reports that error. Only what this call
        // created is removed, and a folder only if it is empty.
        for rel in self.files.iter().rev() {
            let _ = remove_beneath(root, rel, false, resolve);
        }
        for rel in self.folders.iter().rev() {
            let _ = remove_beneath(root, rel, true, resolve);
        }
    }
}

fn remove_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    folder: bool,
    resolve: Resolve,
) -> io::Result<()> {
    let name = Path::new(
        rel.file_name()
            .expect("a relative path of plain components"),
    );
    match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        None => sys::unlinkat(root, name, folder),
        Some(parent) => {
            let dir =
                sys::open_beneath(root, parent, libc::O_RDONLY | libc::O_DIRECTORY, 0, resolve)?;
            sys::unlinkat(dir.as_fd(), name, folder)
        }
    }
}

/// Deletes the files of `info` below `download_dir`, then the folders of the torrent that this
/// leaves empty, never leaving `download_dir`.
///
/// Each file is unlinked relative to its parent folder, which is opened beneath
/// `download_dir` without following any symlink: deleting cannot be undone, so a folder of
/// the torrent that is a symlink (wherever it leads) is left alone with everything behind it,
/// even where writing would have followed it. A symlink in a file's own place is removed
/// itself, never what it points to. Files already gone, and files behind such a folder, are
/// skipped; any other failure stops with the path it happened at.
pub(crate) fn delete_files(download_dir: &Path, info: &Info) -> Result<(), (PathBuf, io::Error)> {
    let resolve = Resolve::NoSymlinks;
    let root = match sys::open_dir(download_dir) {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err((download_dir.to_path_buf(), e)),
    };
    let skipped = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound
            || matches!(
                e.raw_os_error(),
                Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
            )
    };
    let mut folders = HashSet::new();
    for f in info.files() {
        let rel = f.relative_path();
        folders.extend(rel.ancestors().skip(1).map(Path::to_path_buf));
        if f.attr.padding {
            continue;
        }
        match remove_beneath(root.as_fd(), &rel, false, resolve) {
            Ok(()) => {}
            Err(e) if skipped(&e) => {}
            Err(e) => return Err((download_dir.join(rel), e)),
        }
    }
    // Deepest first, so that a folder is empty once its subfolders are gone; one that is not
    // empty (files the torrent did not make) or is a symlink stays.
    let mut folders: Vec<PathBuf> = folders
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    folders.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in folders {
        let _ = remove_beneath(root.as_fd(), &rel, true, resolve);
    }
    Ok(())
}

/// The target a BEP 47 symlink entry's link holds: `target` (a path of the torrent, in the
/// same frame as `link`) relative to the link's folder, as libtorrent writes it
/// (`../x/y`). Both are paths of plain components below the download folder, so the result
/// never leads above it.
pub(crate) fn link_target(link: &[String], target: &[String]) -> PathBuf {
    let folder = link.split_last().map_or(&[][..], |(_, f)| f);
    let common = folder
        .iter()
        .zip(target)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..folder.len() {
        out.push("..");
    }
    for c in &target[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Creates the torrent's BEP 47 symlinks, as libtorrent does, once its files exist: each
/// entry whose target resolved inside the torrent (`metainfo/sanitize.rs`) becomes a
/// relative symlink in its place. Its folders are made or opened without following any
/// symlink, so the link lands inside the download folder; nothing is ever written through
/// a link (no file of the torrent lies behind one: a path is never both a file and a
/// folder). Something already in a link's place is left as it is, unless it is the same
/// link. Links are not payload: a failure is said, not fatal.
fn make_links(info: &Info, dir: &Path, root: BorrowedFd<'_>) {
    for entry in info.files().iter().filter(|e| e.attr.symlink && !stored(e)) {
        let Some(target) = entry.symlink_target.as_deref() else {
            continue;
        };
        let rel = entry.relative_path();
        let want = link_target(&entry.path, target);
        let made = relocate::make_parent(root, &rel).and_then(|parent| {
            let name = Path::new(rel.file_name().unwrap_or_default());
            match sys::symlinkat(&want, parent.as_fd(), name) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    match sys::readlinkat(parent.as_fd(), name) {
                        Ok(held)
                            if held == std::os::unix::ffi::OsStrExt::as_bytes(want.as_os_str()) =>
                        {
                            Ok(())
                        }
                        _ => Err(e),
                    }
                }
                other => other,
            }
        });
        if let Err(e) = made {
            tracing::warn!(
                "symlink {} -> {} not created: {e}",
                dir.join(&rel).display(),
                want.display()
            );
        }
    }
}

/// Whether a file has bytes on disk: not padding, and not an empty BEP 47 symlink entry
/// (created as a symlink by [`make_links`], never written).
fn stored(entry: &FileEntry) -> bool {
    let empty_symlink = entry.attr.symlink && entry.length == 0;
    !(entry.attr.padding || empty_symlink)
}

impl Storage {
    /// Opens (and, in the create modes, creates and preallocates) `info`'s files under
    /// `download_dir`, holding them open. See [`Storage::open_with`].
    pub fn open(
        info: Arc<Info>,
        download_dir: &Path,
        mode: OpenMode,
    ) -> Result<Storage, StorageError> {
        Self::open_with(info, download_dir, StorageOptions::new(mode))
    }

    /// Opens `info`'s files under `download_dir`.
    ///
    /// Every existing file is examined before anything changes, so a refused open (wrong
    /// size, no space, a symlink leading out) leaves the disk as it was; if creating or
    /// preallocating fails part-way, the files and folders this call created are removed.
    pub fn open_with(
        info: Arc<Info>,
        download_dir: &Path,
        options: StorageOptions,
    ) -> Result<Storage, StorageError> {
        Self::open_selected(info, download_dir, options, &[])
    }

    /// Like [`Storage::open_with`], but in the create modes a file marked in `skip` (by index
    /// in [`Info::files`]; indices past its end are not skipped) that does not exist is
    /// neither created nor preallocated: it is [`FileState::Missing`], and its space is not
    /// counted. A skipped file that exists is opened as usual. Open again with a smaller
    /// `skip` to create such a file once it is wanted.
    pub fn open_selected(
        info: Arc<Info>,
        download_dir: &Path,
        options: StorageOptions,
        skip: &[bool],
    ) -> Result<Storage, StorageError> {
        let resolve = if options.refuse_symlinks {
            Resolve::NoSymlinks
        } else {
            Resolve::Auto
        };
        let mode = options.mode;
        let writable = mode != OpenMode::ReadOnly;
        let dir = download_dir.to_path_buf();
        // The folder is created only when it is not there: ten thousand torrents in one data
        // folder cost one open each, not a mkdir and a stat before it.
        let root = match sys::open_dir(&dir) {
            Err(e) if writable && e.raw_os_error() == Some(libc::ENOENT) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StorageError::from_io(dir.clone(), "create folder", e))?;
                sys::open_dir(&dir)
            }
            opened => opened,
        }
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => StorageError::Missing { path: dir.clone() },
            _ => StorageError::from_io(dir.clone(), "open folder", e),
        })?;
        // The folder's device, asked for only when a file is missing (a file found tells its
        // own).
        let mut root_dev = None;

        // 1. Examine what is there; change nothing.
        let access = if writable {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        let mut found = Vec::with_capacity(info.files().len());
        // A descriptor on each filesystem involved, for the space check.
        let mut on_dev: HashMap<u64, OwnedFd> = HashMap::new();
        let mut folder_dev: HashMap<PathBuf, u64> = HashMap::new();
        for entry in info.files() {
            if !stored(entry) {
                found.push(None);
                continue;
            }
            let rel = entry.relative_path();
            let path = dir.join(&rel);
            let flags = access | libc::O_NONBLOCK;
            match sys::open_beneath(root.as_fd(), &rel, flags, 0, resolve) {
                Ok(fd) => {
                    let st = sys::fstat(fd.as_fd())
                        .map_err(|e| StorageError::from_io(path.clone(), "examine", e))?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(StorageError::NotAFile { path });
                    }
                    let actual = st.st_size as u64;
                    if mode == OpenMode::Create && actual != entry.length {
                        return Err(StorageError::WrongSize {
                            path,
                            expected: entry.length,
                            actual,
                        });
                    }
                    if writable && !on_dev.contains_key(&st.st_dev) {
                        if let Ok(dup) = fd.try_clone() {
                            on_dev.insert(st.st_dev, dup);
                        }
                    }
                    found.push(Some(Found {
                        fd: Some(fd),
                        actual: Some(actual),
                        allocated: (st.st_blocks as u64).saturating_mul(512),
                        dev: st.st_dev,
                    }));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let dev = if writable {
                        nearest_dev(root.as_fd(), &rel, resolve, &mut folder_dev, &mut on_dev)
                    } else {
                        None
                    };
                    found.push(Some(Found {
                        fd: None,
                        actual: None,
                        allocated: 0,
                        dev: match (dev, root_dev) {
                            (Some(d), _) | (None, Some(d)) => d,
                            (None, None) => {
                                let d = sys::fstat(root.as_fd())
                                    .map_err(|e| StorageError::from_io(dir.clone(), "examine", e))?
                                    .st_dev;
                                root_dev = Some(d);
                                d
                            }
                        },
                    }));
                }
                Err(e) => return Err(open_error(path, e)),
            }
        }

        // 2. Enough space for what is still to allocate, per filesystem. fallocate's ENOSPC
        // stays the final word; this check refuses before anything is created.
        let skipped = |i: usize, f: &Found| f.fd.is_none() && skip.get(i).copied().unwrap_or(false);
        if writable {
            let mut needed: HashMap<u64, u64> = HashMap::new();
            for (i, (entry, f)) in info.files().iter().zip(&found).enumerate() {
                let Some(f) = f else { continue };
                if skipped(i, f) {
                    continue;
                }
                let more = entry.length.saturating_sub(f.allocated);
                let total = needed.entry(f.dev).or_default();
                *total = total.saturating_add(more);
            }
            for (dev, bytes) in needed {
                if bytes == 0 {
                    continue;
                }
                let fd = on_dev.get(&dev).map_or(root.as_fd(), |f| f.as_fd());
                let available = sys::free_bytes(fd)
                    .map_err(|e| StorageError::from_io(dir.clone(), "examine", e))?;
                if available < bytes {
                    return Err(StorageError::NoSpace {
                        path: dir.clone(),
                        needed: bytes,
                        available,
                    });
                }
            }
        }

        // 3. Create and preallocate; undo on failure.
        let mut undo = Undo::default();
        let skip: Vec<bool> = found
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().is_some_and(|f| skipped(i, f)))
            .collect();
        let result = Self::materialise(
            &info,
            &dir,
            root.as_fd(),
            (mode, options.allocation, &skip),
            resolve,
            &mut found,
            &mut undo,
        );
        let states = match result {
            Ok(states) => states,
            Err(e) => {
                undo.run(root.as_fd(), resolve);
                return Err(e);
            }
        };
        if writable {
            make_links(&info, &dir, root.as_fd());
        }

        // 4. Map and hold within the process budget.
        let mut files = Vec::with_capacity(info.files().len());
        for ((entry, f), state) in info.files().iter().zip(found).zip(states) {
            let readable = match state {
                FileState::Present { .. } => entry.length,
                FileState::WrongSize { actual } => actual.min(entry.length),
                FileState::NotStored | FileState::Missing => 0,
            };
            let backing = match f.and_then(|f| f.fd) {
                Some(fd) if readable > 0 => hold(fd, readable, options.hold_open),
                _ => Backing::Nothing,
            };
            files.push(Slot {
                rel: entry.relative_path(),
                len: entry.length,
                state,
                backing,
                dirty: AtomicBool::new(false),
                lazy: None,
            });
        }
        let storage = Self::assemble(info, dir, Some(root), (writable, resolve), files, options);
        storage.set_access(Access::Random);
        Ok(storage)
    }

    fn assemble(
        info: Arc<Info>,
        dir: PathBuf,
        root: Option<OwnedFd>,
        (writable, resolve): (bool, Resolve),
        files: Vec<Slot>,
        options: StorageOptions,
    ) -> Storage {
        let stripes = (0..LOCK_STRIPES.min(info.lengths().piece_count() as usize))
            .map(|_| RwLock::new(()))
            .collect();
        Storage {
            info,
            dir,
            root,
            writable,
            resolve,
            files,
            stripes,
            jobs: AtomicUsize::new(0),
            arrivals: arrival::Arrivals::default(),
            hold_open: options.hold_open,
            sequential: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            accept_changes: AtomicBool::new(false),
        }
    }

    /// Opens `info`'s storage under `download_dir` without opening its files: each is only
    /// stat'ed by path, beneath the folder by [`Storage::open_with`]'s rules, and opened (and
    /// mapped, within the process budget) on its first read or write. Meant for a torrent
    /// whose resume data is about to be validated against [`Storage::opened_file_stamps`],
    /// which here are the stamps just read.
    ///
    /// `None` when the files are not all as an open would leave them unchanged: a file
    /// missing (unless skipped), of another size or not a regular file, one a create mode
    /// would still preallocate, BEP 47 symlinks to make, or any error. The caller then opens
    /// with [`Storage::open_selected`], which creates, allocates or reports as it does.
    ///
    /// A file opened later is compared with its stamp: a size or modification time that
    /// changed meanwhile makes its reads and writes fail ([`StorageError::Changed`]) and
    /// sets [`Storage::changed_on_disk`], until a full check begins ([`check`]), which takes
    /// the files as they are then.
    pub fn open_lazy(
        info: Arc<Info>,
        download_dir: &Path,
        options: StorageOptions,
        skip: &[bool],
    ) -> Option<Storage> {
        let resolve = if options.refuse_symlinks {
            Resolve::NoSymlinks
        } else {
            Resolve::Auto
        };
        let writable = options.mode != OpenMode::ReadOnly;
        if info.files().iter().any(|e| e.attr.symlink) {
            return None;
        }
        let dir = download_dir.to_path_buf();
        // Opened only for a file in a subfolder: a file directly in the download folder is
        // stat'ed by its full path without following a symlink in its place, which no
        // open beneath the folder would do differently (a symlink there is not a regular
        // file: declined).
        let mut root: Option<OwnedFd> = None;
        let mut files = Vec::with_capacity(info.files().len());
        for (i, entry) in info.files().iter().enumerate() {
            let rel = entry.relative_path();
            let mut slot = Slot {
                rel,
                len: entry.length,
                state: FileState::NotStored,
                backing: Backing::Nothing,
                dirty: AtomicBool::new(false),
                lazy: None,
            };
            if !stored(entry) {
                files.push(slot);
                continue;
            }
            let stat = if slot.rel.components().count() == 1 {
                sys::lstat(&dir.join(&slot.rel))
            } else {
                if root.is_none() {
                    root = Some(sys::open_dir(&dir).ok()?);
                }
                let root = root.as_ref().expect("opened above").as_fd();
                sys::open_beneath(root, &slot.rel, libc::O_PATH, 0, resolve)
                    .and_then(|fd| sys::fstat(fd.as_fd()))
            };
            match stat {
                Ok(st) => {
                    if st.st_mode & libc::S_IFMT != libc::S_IFREG
                        || st.st_size as u64 != entry.length
                    {
                        return None;
                    }
                    let sparse = (st.st_blocks as u64).saturating_mul(512) < entry.length;
                    if writable && sparse && options.allocation != Allocation::Sparse {
                        return None;
                    }
                    slot.state = FileState::Present {
                        created: false,
                        sparse,
                    };
                    if entry.length > 0 {
                        slot.lazy = Some(Box::new(Lazy {
                            stamp: FileStamp {
                                size: entry.length,
                                mtime_ns: sys::mtime_ns(&st),
                            },
                            opened: OnceLock::new(),
                        }));
                    }
                }
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOENT)
                        && skip.get(i).copied().unwrap_or(false) =>
                {
                    slot.state = FileState::Missing;
                }
                Err(_) => return None,
            }
            files.push(slot);
        }
        // The folder is closed again: ten thousand idle torrents hold no descriptor.
        drop(root);
        Some(Self::assemble(
            info,
            dir,
            None,
            (writable, resolve),
            files,
            options,
        ))
    }

    /// Whether a file opened on demand was found changed since [`Storage::open_lazy`]
    /// stat'ed it: the pieces recorded for it cannot be trusted, and reads of it fail until
    /// the data is checked again by a storage opened anew.
    pub fn changed_on_disk(&self) -> bool {
        self.changed.load(Ordering::Acquire)
    }

    /// Whether some file is still to be opened on demand ([`Storage::open_lazy`]).
    pub fn has_unopened_files(&self) -> bool {
        self.files
            .iter()
            .any(|s| s.lazy.as_ref().is_some_and(|l| l.opened.get().is_none()))
    }

    /// From now on, files opened on demand are taken as they are: a full check is about to
    /// hash them (see [`check`]).
    pub(crate) fn accept_changes(&self) {
        self.accept_changes.store(true, Ordering::Release);
    }

    /// The download folder's descriptor: the one held, or one opened for the caller's use.
    fn root(&self) -> io::Result<Root<'_>> {
        match &self.root {
            Some(fd) => Ok(Root::Held(fd.as_fd())),
            None => sys::open_dir(&self.dir).map(Root::Opened),
        }
    }

    /// `slot`'s backing, opening the file first if it is opened on demand and not yet.
    fn backing<'a>(&self, slot: &'a Slot) -> Result<&'a Backing, StorageError> {
        let Some(lazy) = &slot.lazy else {
            return Ok(&slot.backing);
        };
        let opened = match lazy.opened.get() {
            Some(opened) => opened,
            None => {
                let opened = self.open_on_demand(slot, lazy)?;
                // Two threads may race here; the loser's file is closed as it is dropped.
                lazy.opened.get_or_init(|| opened)
            }
        };
        opened.as_ref().map_err(|change| StorageError::Changed {
            path: self.dir.join(&slot.rel),
            change: change.clone(),
        })
    }

    /// `slot`'s backing as it is now, opening nothing: a file not yet opened on demand (or
    /// found changed) has none.
    fn peek(slot: &Slot) -> &Backing {
        match slot.lazy.as_ref().and_then(|l| l.opened.get()) {
            Some(Ok(backing)) => backing,
            _ => &slot.backing,
        }
    }

    /// Opens a file of [`Storage::open_lazy`] for its first access and compares it with the
    /// stamp taken then: `Err` inside when it changed. An open that fails (the file removed:
    /// [`StorageError::Missing`]) is not remembered; the next access tries again.
    fn open_on_demand(
        &self,
        slot: &Slot,
        lazy: &Lazy,
    ) -> Result<Result<Backing, String>, StorageError> {
        let path = || self.dir.join(&slot.rel);
        let access = if self.writable {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        let flags = access | libc::O_NONBLOCK;
        let fd = self
            .root()
            .and_then(|root| sys::open_beneath(root.as_fd(), &slot.rel, flags, 0, self.resolve))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => StorageError::Missing { path: path() },
                _ => open_error(path(), e),
            })?;
        let st = sys::fstat(fd.as_fd()).map_err(|e| StorageError::from_io(path(), "examine", e))?;
        let (size, mtime_ns) = (st.st_size as u64, sys::mtime_ns(&st));
        let change = if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            Some("it is not a regular file now".to_owned())
        } else if size != lazy.stamp.size {
            Some(format!(
                "its size was {} bytes, now {size}",
                lazy.stamp.size
            ))
        } else if mtime_ns != lazy.stamp.mtime_ns {
            Some(format!(
                "it was modified (time was {} ns, now {mtime_ns} ns)",
                lazy.stamp.mtime_ns
            ))
        } else {
            None
        };
        let accept = self.accept_changes.load(Ordering::Acquire);
        match change {
            Some(change) if !accept || size != slot.len => {
                tracing::warn!("{}: {change}", path().display());
                self.changed.store(true, Ordering::Release);
                Ok(Err(change))
            }
            _ => {
                let backing = hold(fd, slot.len, self.hold_open);
                let access = if self.sequential.load(Ordering::Acquire) {
                    Access::Sequential
                } else {
                    Access::Random
                };
                advise(&backing, access);
                Ok(Ok(backing))
            }
        }
    }

    /// Creates and preallocates the files; `skip` (by index) are left missing.
    fn materialise(
        info: &Info,
        dir: &Path,
        root: BorrowedFd<'_>,
        (mode, allocation, skip): (OpenMode, Allocation, &[bool]),
        resolve: Resolve,
        found: &mut [Option<Found>],
        undo: &mut Undo,
    ) -> Result<Vec<FileState>, StorageError> {
        let mut ready_folders: HashSet<PathBuf> = HashSet::new();
        let mut states = Vec::with_capacity(found.len());
        for (i, (entry, f)) in info.files().iter().zip(found.iter_mut()).enumerate() {
            let Some(f) = f else {
                states.push(FileState::NotStored);
                continue;
            };
            if skip[i] {
                states.push(FileState::Missing);
                continue;
            }
            let rel = entry.relative_path();
            let path = dir.join(&rel);
            if mode == OpenMode::ReadOnly {
                states.push(match f.actual {
                    None => FileState::Missing,
                    Some(a) if a != entry.length => FileState::WrongSize { actual: a },
                    Some(_) => FileState::Present {
                        created: false,
                        sparse: f.allocated < entry.length,
                    },
                });
                continue;
            }
            let created = f.fd.is_none();
            if created {
                make_folders(root, dir, &rel, resolve, &mut ready_folders, undo)?;
                let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NONBLOCK;
                // BEP 47 `x`: executable, as libtorrent makes it (the umask still applies).
                let perms = if entry.attr.executable { 0o777 } else { 0o666 };
                let fd = sys::open_beneath(root, &rel, flags, perms, resolve)
                    .map_err(|e| open_error(path.clone(), e))?;
                undo.files.push(rel.clone());
                f.fd = Some(fd);
            }
            let fd = f.fd.as_ref().expect("opened above").as_fd();
            if mode == OpenMode::CreateResize && f.actual.is_some_and(|a| a > entry.length) {
                File::from(
                    fd.try_clone_to_owned()
                        .map_err(|e| StorageError::from_io(path.clone(), "resize", e))?,
                )
                .set_len(entry.length)
                .map_err(|e| StorageError::from_io(path.clone(), "resize", e))?;
            }
            let mut sparse = false;
            // An existing file that is already fully allocated needs nothing more, and
            // fallocate would still update its mtime, which resume data checks.
            let fully_allocated = !created && f.allocated >= entry.length;
            if allocation == Allocation::Sparse {
                // Only the size: blocks come as they are written. An existing file keeps
                // what it has (a short one was cut or extended above only if asked).
                if entry.length > 0 && f.actual.is_none_or(|a| a < entry.length) {
                    File::from(
                        fd.try_clone_to_owned()
                            .map_err(|e| StorageError::from_io(path.clone(), "resize", e))?,
                    )
                    .set_len(entry.length)
                    .map_err(|e| StorageError::from_io(path.clone(), "resize", e))?;
                }
                states.push(FileState::Present {
                    created,
                    sparse: f.allocated < entry.length,
                });
                continue;
            }
            if entry.length > 0 && !fully_allocated {
                match sys::fallocate(fd, entry.length) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                        let available = sys::free_bytes(fd).unwrap_or(0);
                        return Err(StorageError::NoSpace {
                            path,
                            needed: entry.length.saturating_sub(f.allocated),
                            available,
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        // No preallocation on this filesystem (some FUSE and network ones):
                        // a sparse file of the right size instead, reported in the state.
                        sparse = true;
                        let file = File::from(
                            fd.try_clone_to_owned()
                                .map_err(|e| StorageError::from_io(path.clone(), "resize", e))?,
                        );
                        file.set_len(entry.length)
                            .map_err(|e| StorageError::from_io(path.clone(), "resize", e))?;
                    }
                    Err(e) => return Err(StorageError::from_io(path, "preallocate", e)),
                }
            }
            states.push(FileState::Present { created, sparse });
        }
        Ok(states)
    }

    /// The torrent this storage holds.
    pub fn info(&self) -> &Arc<Info> {
        &self.info
    }

    /// Waits (at most `limit`) until no disk job for this storage is queued or running;
    /// returns whether it got there. Resume data taken after a torrent left its loop waits
    /// for this, so a block written a moment later cannot change a file's stamp after the
    /// resume data recorded it (which would cost a full check at the next start).
    pub fn wait_idle(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.jobs.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    pub(crate) fn job_started(&self) {
        self.jobs.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn job_done(&self) {
        self.jobs.fetch_sub(1, Ordering::AcqRel);
    }

    /// The download folder the files live under.
    pub fn download_dir(&self) -> &Path {
        &self.dir
    }

    /// What was found on disk for each file of the torrent (same order as
    /// [`Info::files`]) when the storage was opened.
    pub fn file_states(&self) -> impl ExactSizeIterator<Item = FileState> + '_ {
        self.files.iter().map(|s| s.state)
    }

    /// Whether files may be created and written (not [`OpenMode::ReadOnly`]).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The full path of file `index`.
    pub fn path_of(&self, index: usize) -> PathBuf {
        self.dir.join(&self.files[index].rel)
    }

    /// Writes `data` (exactly `block.len` bytes) at `block`, across file boundaries, with
    /// `pwrite`. Bytes that fall in padding files are dropped. The bytes written also feed
    /// the piece's running hash when they continue it (see `arrival.rs`), so that
    /// [`Storage::verify_piece`] need not read them back.
    pub fn write_block(&self, block: BlockRef, data: &[u8]) -> Result<(), StorageError> {
        self.write_block_with(block, data, None)
    }

    /// [`Storage::write_block`] for bytes held in a `Bytes`: a block that arrives ahead of
    /// its piece's running hash can then be held (a reference, no copy) until the blocks
    /// before it are written, instead of being read back at verification.
    pub fn write_block_bytes(&self, block: BlockRef, data: &Bytes) -> Result<(), StorageError> {
        self.write_block_with(block, data, Some(data))
    }

    fn write_block_with(
        &self,
        block: BlockRef,
        data: &[u8],
        owned: Option<&Bytes>,
    ) -> Result<(), StorageError> {
        assert_eq!(
            data.len(),
            block.len as usize,
            "block and data lengths differ"
        );
        if !self.writable {
            return Err(StorageError::ReadOnly {
                path: self.dir.clone(),
                action: "write to",
            });
        }
        let _guard = self.lock_exclusive(block.piece);
        let written = self.write_spans(block, data);
        match written {
            // A v2-only torrent's pieces are judged by SHA-256 (`verify_piece_v2`): a running
            // SHA1 would be computed for nothing.
            Ok(()) if !self.info.version().has_v1() => {}
            Ok(()) => self
                .arrivals
                .written(&self.info, block, data, owned, |hasher, b| {
                    let (from, to) = (b.offset, b.offset + b.len);
                    self.feed_stored(b.piece, hasher, from, to).is_ok()
                }),
            // Part of the block may be on disk: what the running hash covers may not be.
            Err(_) => self.arrivals.forget(block.piece),
        }
        written
    }

    fn write_spans(&self, block: BlockRef, data: &[u8]) -> Result<(), StorageError> {
        let mut at = 0usize;
        for span in self.info.block_spans(block) {
            let part = &data[at..at + span.len as usize];
            at += span.len as usize;
            if span.padding {
                continue;
            }
            let slot = &self.files[span.file];
            let result = match self.backing(slot)? {
                Backing::Held { file, .. } => file.write_all_at(part, span.file_offset),
                Backing::Reopen { .. } => self
                    .reopen(slot, true)
                    .and_then(|f| f.write_all_at(part, span.file_offset)),
                Backing::Nothing => {
                    return Err(StorageError::Missing {
                        path: self.dir.join(&slot.rel),
                    })
                }
            };
            result.map_err(|e| self.write_error(slot, span.len, e))?;
            slot.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Reads `block` into `out` (exactly `block.len` bytes). The first block of a piece
    /// (offset 0) asks the kernel to read the whole piece ahead, so the next blocks a peer
    /// requests are one I/O instead of one per 4 KiB page.
    pub fn read_block(&self, block: BlockRef, out: &mut [u8]) -> Result<(), StorageError> {
        assert_eq!(
            out.len(),
            block.len as usize,
            "block and buffer lengths differ"
        );
        if block.offset == 0 {
            self.prefetch_piece(block.piece);
        }
        let _guard = self.lock_shared(block.piece);
        let mut at = 0usize;
        for span in self.info.block_spans(block) {
            let part = &mut out[at..at + span.len as usize];
            at += span.len as usize;
            self.read_span(&span, part)?;
        }
        Ok(())
    }

    /// `block` as [`Bytes`] that point into the file's read-only mapping, for sending
    /// straight from the page cache: no buffer to zero, no copy. The `Bytes` hold the storage
    /// (and so its mappings) alive, whatever becomes of the torrent meanwhile. The block's
    /// pages are made resident first (`MADV_POPULATE_READ`), so whoever hands them to the
    /// kernel does not wait on the disk. A block that spans files or padding, or a file
    /// without a held mapping, is copied as [`Storage::read_block`] does.
    ///
    /// Only blocks of verified pieces are served, and the core never writes those, so the
    /// stripe lock [`Storage::read_block`] takes while copying has nothing to guard here. If
    /// another program truncates the file, making the block resident fails (`EFAULT`: a read
    /// error); if it does so while a block is in flight, the kernel's copy out of the mapping
    /// fails with `EFAULT` (the send fails and the connection closes). Code that reads the
    /// bytes in user space (an RC4 connection's cipher) is exposed to the `SIGBUS` of the
    /// module documentation, as any read from the mapping is.
    pub fn read_block_shared(self: &Arc<Self>, block: BlockRef) -> Result<Bytes, StorageError> {
        if block.offset == 0 {
            self.prefetch_piece(block.piece);
        }
        let mut spans = self.info.block_spans(block);
        if let (Some(span), None) = (spans.next(), spans.next()) {
            let slot = &self.files[span.file];
            let backing = if span.padding {
                &Backing::Nothing
            } else {
                self.backing(slot)?
            };
            if let Backing::Held { map, .. } = backing {
                self.check_readable(slot, backing, &span)?;
                let (start, len) = (span.file_offset as usize, span.len as usize);
                populate(map, start, len).map_err(|e| self.read_error(slot, e))?;
                // SAFETY: `check_readable` proved `start..start + len` lies inside the
                // mapping, which the `Arc<Storage>` the owner holds keeps mapped.
                let ptr = unsafe { map.as_ptr().add(start) };
                return Ok(Bytes::from_owner(MappedBlock {
                    _storage: self.clone(),
                    ptr,
                    len,
                }));
            }
        }
        let mut buf = vec![0; block.len as usize];
        self.read_block(block, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Several blocks as [`Storage::read_block_shared`] returns them, one result per block,
    /// in order. Blocks that follow one another in the same file (a peer's requests of one
    /// piece, as a pool batch carries them) are made resident with one `MADV_POPULATE_READ`
    /// over their union, up to [`READ_RUN_MAX`] bytes, instead of one each. When the union
    /// cannot be made resident (the file was truncated under it), each of its blocks is read
    /// on its own, so only the blocks past the new end fail.
    pub fn read_blocks_shared(
        self: &Arc<Self>,
        blocks: &[BlockRef],
    ) -> Vec<Result<Bytes, StorageError>> {
        let mut out = Vec::with_capacity(blocks.len());
        let mut i = 0;
        while let Some(&first) = blocks.get(i) {
            let Some((file, start, len)) = self.mapped_span(first) else {
                out.push(self.read_block_shared(first));
                i += 1;
                continue;
            };
            let mut end = start + len;
            let mut j = i + 1;
            while let Some(&next) = blocks.get(j) {
                match self.mapped_span(next) {
                    Some((f, s, l)) if f == file && s == end && end + l - start <= READ_RUN_MAX => {
                        end += l;
                        j += 1;
                    }
                    _ => break,
                }
            }
            let run = &blocks[i..j];
            i = j;
            if run.len() == 1 {
                out.push(self.read_block_shared(first));
                continue;
            }
            for block in run.iter().filter(|b| b.offset == 0) {
                self.prefetch_piece(block.piece);
            }
            let slot = &self.files[file];
            let backing = Self::peek(slot);
            let Backing::Held { map, .. } = backing else {
                out.extend(run.iter().map(|b| self.read_block_shared(*b)));
                continue;
            };
            let union = FileSpan {
                file,
                file_offset: start,
                len: end - start,
                padding: false,
            };
            let resident = self.check_readable(slot, backing, &union).is_ok()
                && populate(map, start as usize, (end - start) as usize).is_ok();
            if !resident {
                out.extend(run.iter().map(|b| self.read_block_shared(*b)));
                continue;
            }
            let mut at = start as usize;
            for block in run {
                // SAFETY: `check_readable` proved the union `start..end`, which holds this
                // block's `at..at + len`, lies inside the mapping, which the `Arc<Storage>`
                // the owner holds keeps mapped.
                let ptr = unsafe { map.as_ptr().add(at) };
                out.push(Ok(Bytes::from_owner(MappedBlock {
                    _storage: self.clone(),
                    ptr,
                    len: block.len as usize,
                })));
                at += block.len as usize;
            }
        }
        out
    }

    /// `block` as [`Storage::read_block_shared`] returns it, but only when every page of it is
    /// in the page cache now (`mincore`), so that the event loop can send it without a pool
    /// job: the kernel's copy into the socket then maps the pages with minor faults and never
    /// waits on the disk. `None` when any page is not cached, when the block spans files or
    /// padding, when its file has no held mapping, or when the file is shorter than recorded:
    /// the caller then asks the pool ([`Storage::read_blocks_shared`]), which reads what is
    /// missing and reports truncation as a read error. A page evicted between this check and
    /// the send is faulted back in by the send, as a page evicted while a pool-read block
    /// waits in a send queue already is.
    pub fn read_block_resident(self: &Arc<Self>, block: BlockRef) -> Option<Bytes> {
        let (file, start, len) = self.mapped_span(block)?;
        let slot = self.files.get(file)?;
        let Backing::Held {
            map,
            readable,
            file: fd,
            ..
        } = Self::peek(slot)
        else {
            return None;
        };
        if start + len > *readable || !still_covers(fd, start + len) {
            return None;
        }
        let (start, len) = (start as usize, len as usize);
        if !resident(map, start, len) {
            return None;
        }
        // SAFETY: `start..start + len` lies inside the mapping (at most `readable`, which is
        // at most the mapping's length), which the `Arc<Storage>` the owner holds keeps mapped.
        let ptr = unsafe { map.as_ptr().add(start) };
        Some(Bytes::from_owner(MappedBlock {
            _storage: self.clone(),
            ptr,
            len,
        }))
    }

    /// The file, offset and length of `block` when [`Storage::read_block_shared`] would point
    /// into a mapping for it: one span of a real file whose mapping is held.
    fn mapped_span(&self, block: BlockRef) -> Option<(usize, u64, u64)> {
        let mut spans = self.info.block_spans(block);
        match (spans.next(), spans.next()) {
            (Some(span), None) if !span.padding => match Self::peek(self.files.get(span.file)?) {
                Backing::Held { .. } => Some((span.file, span.file_offset, span.len)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Reads a whole piece into `out` (resized to the piece's length).
    pub fn read_piece(&self, piece: PieceIndex, out: &mut Vec<u8>) -> Result<(), StorageError> {
        out.resize(self.info.lengths().len_of(piece) as usize, 0);
        let _guard = self.lock_shared(piece);
        let mut at = 0usize;
        for span in self.info.piece_spans(piece) {
            let part = &mut out[at..at + span.len as usize];
            at += span.len as usize;
            self.read_span(&span, part)?;
        }
        Ok(())
    }

    /// The SHA1 of `piece` as stored, hashed straight from the mapping (padding as zeros).
    pub fn hash_piece(&self, piece: PieceIndex) -> Result<[u8; 20], StorageError> {
        let _guard = self.lock_shared(piece);
        self.hash_from(piece, Sha1::new(), 0)
    }

    /// Continues `hasher`, which covers the first `from` bytes of `piece`, over the rest as
    /// stored. The caller holds the piece's stripe lock.
    fn hash_from(
        &self,
        piece: PieceIndex,
        mut hasher: Sha1,
        from: u32,
    ) -> Result<[u8; 20], StorageError> {
        let len = self.info.lengths().len_of(piece);
        self.feed_stored(piece, &mut hasher, from, len)?;
        Ok(hasher.finalize().into())
    }

    /// Feeds bytes `[from, to)` of `piece` as stored to `hasher`. The caller holds the
    /// piece's stripe lock.
    fn feed_stored(
        &self,
        piece: PieceIndex,
        hasher: &mut Sha1,
        from: u32,
        to: u32,
    ) -> Result<(), StorageError> {
        let mut scratch = Vec::new();
        let mut skip = u64::from(from);
        let mut left = u64::from(to.saturating_sub(from));
        for mut span in self.info.piece_spans(piece) {
            if left == 0 {
                break;
            }
            if skip >= span.len {
                skip -= span.len;
                continue;
            }
            span.file_offset += skip;
            span.len = (span.len - skip).min(left);
            skip = 0;
            left -= span.len;
            if span.padding {
                let mut left = span.len as usize;
                while left > 0 {
                    let n = left.min(ZEROS.len());
                    hasher.update(&ZEROS[..n]);
                    left -= n;
                }
                continue;
            }
            let slot = &self.files[span.file];
            let backing = self.backing(slot)?;
            self.check_readable(slot, backing, &span)?;
            match backing {
                Backing::Held { map, .. } => {
                    self.guard_holes(slot, map, &span)?;
                    // SAFETY: `check_readable` proved the span lies inside the mapping. The
                    // stripe lock held above keeps this storage's own writes to the piece
                    // out; the mapping is read-only, so nothing in this process writes
                    // through it. Another process changing the file changes the bytes seen
                    // (the hash then fails), as with any shared file; truncation is the
                    // SIGBUS caveat in the module doc.
                    let bytes = unsafe {
                        std::slice::from_raw_parts(
                            map.as_ptr().add(span.file_offset as usize),
                            span.len as usize,
                        )
                    };
                    hash_prefetched(hasher, bytes);
                }
                Backing::Reopen { .. } => {
                    let file = self
                        .reopen(slot, false)
                        .map_err(|e| self.read_error(slot, e))?;
                    scratch.resize((span.len as usize).min(1 << 20), 0);
                    let mut done = 0u64;
                    while done < span.len {
                        let n = (span.len - done).min(scratch.len() as u64) as usize;
                        file.read_exact_at(&mut scratch[..n], span.file_offset + done)
                            .map_err(|e| self.read_error(slot, e))?;
                        hasher.update(&scratch[..n]);
                        done += n as u64;
                    }
                }
                Backing::Nothing => unreachable!("check_readable refuses files with no data"),
            }
        }
        Ok(())
    }

    /// Hashes `piece` and compares with `expected`. What its blocks' writes hashed on the
    /// way in is not read again (see `arrival.rs`); the running hash is used up either way.
    pub fn verify_piece(
        &self,
        piece: PieceIndex,
        expected: &[u8; 20],
    ) -> Result<bool, StorageError> {
        let _guard = self.lock_shared(piece);
        let (hasher, from) = self
            .arrivals
            .take(piece)
            .unwrap_or_else(|| (Sha1::new(), 0));
        Ok(&self.hash_from(piece, hasher, from)? == expected)
    }

    /// Whether `piece` matches its BEP 52 hash: the SHA-256 merkle root of its 16 KiB blocks,
    /// over the bytes of its file only (a v2 piece never spans files; the padding after a
    /// file is not hashed). `Ok(false)` when the hash is unknown (a v1 torrent, or a missing
    /// piece layer). Reads the piece whole; the check and v2-only torrents use it.
    pub fn verify_piece_v2(&self, piece: PieceIndex) -> Result<bool, StorageError> {
        let Some(v2) = self.info.v2() else {
            return Ok(false);
        };
        let Some((file, index)) = v2.file_of_piece(piece.get()) else {
            return Ok(false);
        };
        let Some(expected) = file.piece_hash(index) else {
            return Ok(false);
        };
        // A running SHA1 of the piece's arrival is of no use here.
        drop(self.arrivals.take(piece));
        let lengths = self.info.lengths();
        let piece_len = u64::from(lengths.piece_len());
        let mut data = vec![0u8; lengths.len_of(piece) as usize];
        let mut at = 0usize;
        for block in lengths.blocks(piece) {
            let len = block.len as usize;
            self.read_block(block, &mut data[at..at + len])?;
            at += len;
        }
        let real = (file.length - u64::from(index) * piece_len).min(piece_len) as usize;
        let blocks_per_piece = (piece_len / crate::metainfo::merkle::BLOCK_LEN) as usize;
        let hash = crate::metainfo::merkle::piece_hash(
            data.get(..real).unwrap_or(&data),
            blocks_per_piece,
            !file.needs_layer(),
        );
        Ok(hash == expected)
    }

    /// How many of `piece`'s first bytes its writes have hashed on the way in, which
    /// [`Storage::verify_piece`] will not read back (0: none, or no running hash).
    pub fn hashed_on_arrival(&self, piece: PieceIndex) -> u32 {
        self.arrivals.covered(piece)
    }

    /// The SHA1 of each block of `piece`, in order: the evidence smart ban compares across
    /// downloads of a piece that failed (see `core::smartban`). Only pieces under suspicion are
    /// hashed this way, on the hashing pool, never on an event loop.
    pub fn block_hashes(&self, piece: PieceIndex) -> Result<Vec<[u8; 20]>, StorageError> {
        let lengths = self.info.lengths();
        let mut buf = Vec::new();
        lengths
            .blocks(piece)
            .map(|block| {
                buf.resize(block.len as usize, 0);
                self.read_block(block, &mut buf)?;
                Ok(Sha1::digest(&buf).into())
            })
            .collect()
    }

    /// Asks the kernel to start reading `piece` into the page cache (`MADV_WILLNEED`); returns
    /// at once. Useful before hashing or serving a piece that may be cold.
    pub fn prefetch_piece(&self, piece: PieceIndex) {
        for span in self.info.piece_spans(piece) {
            if let Backing::Held { map, readable, .. } = Self::peek(&self.files[span.file]) {
                if span.file_offset < *readable {
                    let len = span.len.min(readable - span.file_offset);
                    // A hint: failure only costs speed.
                    let _ =
                        map.advise_range(Advice::WillNeed, span.file_offset as usize, len as usize);
                }
            }
        }
    }

    /// Drops this process's page-table entries for `piece`'s whole pages, once a full check
    /// has hashed it (`MADV_DONTNEED`; the data stays in the page cache, and a later read
    /// faults it back in). A check maps every page of the payload once: dropping them piece
    /// by piece, on the hashing threads, spares the single thread that would otherwise tear
    /// down the whole mapping's page tables at the end (`munmap`, or the process's exit),
    /// which was 2-3% of a 1 GiB `check`'s samples, all of it after the last piece.
    pub fn release_piece(&self, piece: PieceIndex) {
        let page = page_size();
        for span in self.info.piece_spans(piece) {
            if let Backing::Held { map, readable, .. } = Self::peek(&self.files[span.file]) {
                let start = span.file_offset.min(*readable) as usize;
                let end = (span.file_offset + span.len).min(*readable) as usize;
                // Whole pages only: a page shared with the next piece stays mapped for it.
                let first = start.div_ceil(page) * page;
                let last = end / page * page;
                if last > first {
                    // SAFETY: `first..last` lies inside the mapping (`readable` is at most
                    // its length) and starts on a page boundary. The mapping is a shared,
                    // read-only file mapping: MADV_DONTNEED only drops page-table entries,
                    // never data, and the next access reads the file's current contents,
                    // as any access to a shared mapping does. A hint: failure only costs
                    // the time it would have saved.
                    unsafe {
                        libc::madvise(
                            map.as_ptr().add(first) as *mut libc::c_void,
                            last - first,
                            libc::MADV_DONTNEED,
                        );
                    }
                }
            }
        }
    }

    /// Tells the kernel how the files will be read next (see [`Access`]).
    pub fn set_access(&self, access: Access) {
        self.sequential
            .store(access == Access::Sequential, Ordering::Release);
        for slot in &self.files {
            advise(Self::peek(slot), access);
        }
    }

    /// Makes every write so far durable (`fsync` of each file written since the last call),
    /// so that pieces verified until now may be recorded in resume data.
    pub fn sync(&self) -> Result<(), StorageError> {
        for slot in &self.files {
            if !slot.dirty.swap(false, Ordering::AcqRel) {
                continue;
            }
            // A file written was opened: `peek` sees it.
            let result = match Self::peek(slot) {
                Backing::Held { file, .. } => file.sync_all(),
                Backing::Reopen { .. } => self.reopen(slot, true).and_then(|f| f.sync_all()),
                Backing::Nothing => Ok(()),
            };
            if let Err(e) = result {
                slot.dirty.store(true, Ordering::Release);
                return Err(StorageError::from_io(self.dir.join(&slot.rel), "sync", e));
            }
        }
        Ok(())
    }

    /// The size and modification time of every file now, for resume data; `None` for files
    /// not stored (padding) or missing. Taken by path, not from held descriptors, so a file
    /// deleted or replaced behind the storage's back shows as such.
    ///
    /// A file [`Storage::open_lazy`] has not opened yet, or found changed when it did,
    /// gives the stamp taken at that open: what the pieces recorded for it were verified
    /// against. A file changed since then then fails the next validation instead of being
    /// trusted with pieces it may no longer hold.
    pub fn file_stamps(&self) -> Result<Vec<Option<FileStamp>>, StorageError> {
        self.files
            .iter()
            .map(|slot| match Self::unopened_stamp(slot) {
                Some(stamp) => Ok(Some(stamp)),
                None => self.stamp_by_path(slot),
            })
            .collect()
    }

    /// The stamp [`Storage::open_lazy`] took of `slot`, while the file is unopened or was
    /// found changed.
    fn unopened_stamp(slot: &Slot) -> Option<FileStamp> {
        let lazy = slot.lazy.as_ref()?;
        match lazy.opened.get() {
            None | Some(Err(_)) => Some(lazy.stamp),
            Some(Ok(_)) => None,
        }
    }

    /// [`Storage::file_stamps`] for a storage just opened: read from the descriptors it holds
    /// (one `fstat` each, no path walked), which are the files at those paths at open; by
    /// path for a file it holds none of. A storage that has been open a while may hold a file
    /// since replaced at its path: use [`Storage::file_stamps`] there.
    pub fn opened_file_stamps(&self) -> Result<Vec<Option<FileStamp>>, StorageError> {
        self.files
            .iter()
            .map(
                |slot| match (Self::unopened_stamp(slot), Self::peek(slot)) {
                    (Some(stamp), _) => Ok(Some(stamp)),
                    (None, Backing::Held { file, .. }) if slot.state != FileState::NotStored => {
                        let st = sys::fstat(file.as_fd()).map_err(|e| {
                            StorageError::from_io(self.dir.join(&slot.rel), "examine", e)
                        })?;
                        Ok(Some(FileStamp {
                            size: st.st_size as u64,
                            mtime_ns: sys::mtime_ns(&st),
                        }))
                    }
                    _ => self.stamp_by_path(slot),
                },
            )
            .collect()
    }

    fn stamp_by_path(&self, slot: &Slot) -> Result<Option<FileStamp>, StorageError> {
        if slot.state == FileState::NotStored {
            return Ok(None);
        }
        let path = || self.dir.join(&slot.rel);
        let flags = libc::O_PATH;
        let opened = self
            .root()
            .and_then(|root| sys::open_beneath(root.as_fd(), &slot.rel, flags, 0, self.resolve));
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(open_error(path(), e)),
        };
        let st = sys::fstat(fd.as_fd()).map_err(|e| StorageError::from_io(path(), "examine", e))?;
        Ok(Some(FileStamp {
            size: st.st_size as u64,
            mtime_ns: sys::mtime_ns(&st),
        }))
    }

    fn read_span(&self, span: &FileSpan, out: &mut [u8]) -> Result<(), StorageError> {
        if span.padding {
            out.fill(0);
            return Ok(());
        }
        let slot = &self.files[span.file];
        let backing = self.backing(slot)?;
        self.check_readable(slot, backing, span)?;
        match backing {
            Backing::Held { map, .. } => {
                self.guard_holes(slot, map, span)?;
                // SAFETY: `check_readable` proved the span lies inside the mapping and `out`
                // is exactly `span.len` bytes of our own memory, so the ranges cannot
                // overlap. The caller holds the piece's stripe lock (see `hash_piece`).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        map.as_ptr().add(span.file_offset as usize),
                        out.as_mut_ptr(),
                        out.len(),
                    )
                };
                Ok(())
            }
            Backing::Reopen { .. } => self
                .reopen(slot, false)
                .and_then(|f| f.read_exact_at(out, span.file_offset))
                .map_err(|e| self.read_error(slot, e)),
            Backing::Nothing => unreachable!("check_readable refuses files with no data"),
        }
    }

    /// In a file that is not fully allocated (`FileState::Present { sparse: true }`), faults
    /// the span in with `MADV_POPULATE_READ` before it is read through the mapping: on tmpfs
    /// a hole needs a new page even to be read, and on a full one that fault is a `SIGBUS`,
    /// which this turns into a read error (EFAULT). Fully allocated files skip it.
    fn guard_holes(&self, slot: &Slot, map: &MmapRaw, span: &FileSpan) -> Result<(), StorageError> {
        if let FileState::Present { sparse: true, .. } = slot.state {
            populate(map, span.file_offset as usize, span.len as usize)
                .map_err(|e| self.read_error(slot, e))?;
        }
        Ok(())
    }

    fn check_readable(
        &self,
        slot: &Slot,
        backing: &Backing,
        span: &FileSpan,
    ) -> Result<(), StorageError> {
        let readable = match (backing, slot.state) {
            (_, FileState::Missing) => {
                return Err(StorageError::Missing {
                    path: self.dir.join(&slot.rel),
                })
            }
            (Backing::Held { readable, .. } | Backing::Reopen { readable }, _) => *readable,
            (Backing::Nothing, _) => 0,
        };
        let end = span.file_offset + span.len;
        if end > readable {
            return Err(StorageError::ShortFile {
                path: self.dir.join(&slot.rel),
                len: match slot.state {
                    FileState::WrongSize { actual } => actual,
                    _ => readable,
                },
                needed: end,
            });
        }
        Ok(())
    }

    fn reopen(&self, slot: &Slot, write: bool) -> io::Result<File> {
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let root = self.root()?;
        sys::open_beneath(root.as_fd(), &slot.rel, flags, 0, self.resolve).map(File::from)
    }

    fn write_error(&self, slot: &Slot, len: u64, e: io::Error) -> StorageError {
        let path = self.dir.join(&slot.rel);
        if e.raw_os_error() == Some(libc::ENOSPC) {
            // Only on filesystems where preallocation does not reserve space for rewrites
            // (copy-on-write ones) or where the file is sparse.
            return StorageError::NoSpace {
                available: self
                    .root()
                    .and_then(|root| sys::free_bytes(root.as_fd()))
                    .unwrap_or(0),
                path,
                needed: len,
            };
        }
        StorageError::from_io(path, "write to", e)
    }

    fn read_error(&self, slot: &Slot, e: io::Error) -> StorageError {
        let path = self.dir.join(&slot.rel);
        match e.kind() {
            io::ErrorKind::UnexpectedEof => StorageError::ShortFile {
                path,
                len: slot.len,
                needed: slot.len,
            },
            io::ErrorKind::NotFound => StorageError::Missing { path },
            _ => StorageError::from_io(path, "read", e),
        }
    }

    fn stripe(&self, piece: PieceIndex) -> &RwLock<()> {
        &self.stripes[piece.as_usize() % self.stripes.len()]
    }

    fn lock_shared(&self, piece: PieceIndex) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a panic while it was held leaves nothing inconsistent.
        self.stripe(piece).read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_exclusive(&self, piece: PieceIndex) -> RwLockWriteGuard<'_, ()> {
        self.stripe(piece)
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Feeds `bytes` to `hasher` 1 KiB at a time while prefetching the kilobyte 2 KiB ahead.
///
/// Hashing a piece that is in memory but not in the CPU's caches ran at 1.2 GB/s here
/// (`openssl` as well), against 2.2 GB/s for data already in cache: SHA1 reads too slowly
/// for the hardware prefetcher to run ahead of it. Asking for the next lines explicitly
/// brings it to 2.1 GB/s without a copy (`perf/2026-11-24-hashing.md`).
fn hash_prefetched(hasher: &mut impl Digest, bytes: &[u8]) {
    const STEP: usize = 1024;
    const AHEAD: usize = 2 * STEP;
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + STEP).min(bytes.len());
        #[cfg(target_arch = "x86_64")]
        if let Some(next) = bytes.get(at + AHEAD..(at + AHEAD + STEP).min(bytes.len())) {
            for line in next.chunks(64) {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                // SAFETY: SSE, which `prefetcht0` needs, is part of the x86_64 baseline; a
                // prefetch only hints the cache and never faults, and the address is in
                // `bytes` anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
            }
        }
        hasher.update(&bytes[at..end]);
        at = end;
    }
}

/// The SHA1 of `bytes`, prefetching as [`Storage::hash_piece`] does: for data that is in
/// memory but likely not in the CPU's caches (the benchmarks compare it with a plain
/// `Sha1::digest`).
pub fn sha1_prefetched(bytes: &[u8]) -> [u8; 20] {
    let mut hasher = Sha1::new();
    hash_prefetched(&mut hasher, bytes);
    hasher.finalize().into()
}

/// Passes `access` to the kernel for a held file (hints: failure only costs speed).
fn advise(backing: &Backing, access: Access) {
    let (advice, fadvice) = match access {
        Access::Random => (Advice::Random, libc::POSIX_FADV_RANDOM),
        Access::Sequential => (Advice::Sequential, libc::POSIX_FADV_SEQUENTIAL),
    };
    if let Backing::Held { file, map, .. } = backing {
        let _ = map.advise(advice);
        sys::fadvise(file.as_fd(), 0, 0, fadvice);
    }
}

/// Maps `fd` read-only and keeps it, or falls back to opening per access when the process
/// budget is spent, the caller asked so, or the mapping fails (e.g. `vm.max_map_count`).
fn hold(fd: OwnedFd, readable: u64, hold_open: bool) -> Backing {
    let budget = if hold_open {
        OpenFileBudget::take()
    } else {
        None
    };
    let Some(budget) = budget else {
        return Backing::Reopen { readable };
    };
    let file = File::from(fd);
    let Ok(len) = usize::try_from(readable) else {
        return Backing::Reopen { readable };
    };
    match MmapOptions::new().len(len).map_raw_read_only(&file) {
        Ok(map) => Backing::Held {
            file,
            map,
            readable,
            _budget: budget,
        },
        Err(_) => Backing::Reopen { readable },
    }
}

/// The device of the nearest existing folder on the way to `rel` (`None`: the download
/// folder's), remembering a descriptor on it for the space check.
fn nearest_dev(
    root: BorrowedFd<'_>,
    rel: &Path,
    resolve: Resolve,
    cache: &mut HashMap<PathBuf, u64>,
    on_dev: &mut HashMap<u64, OwnedFd>,
) -> Option<u64> {
    let mut folder = rel.parent();
    while let Some(f) = folder.filter(|f| !f.as_os_str().is_empty()) {
        if let Some(&dev) = cache.get(f) {
            return Some(dev);
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        if let Ok(fd) = sys::open_beneath(root, f, flags, 0, resolve) {
            let dev = sys::fstat(fd.as_fd()).ok()?.st_dev;
            cache.insert(f.to_path_buf(), dev);
            on_dev.entry(dev).or_insert(fd);
            return Some(dev);
        }
        folder = f.parent();
    }
    None
}

/// Creates the folders on the way to `rel`, each relative to its parent's descriptor.
fn make_folders(
    root: BorrowedFd<'_>,
    dir: &Path,
    rel: &Path,
    resolve: Resolve,
    ready: &mut HashSet<PathBuf>,
    undo: &mut Undo,
) -> Result<(), StorageError> {
    let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if ready.contains(parent) {
        return Ok(());
    }
    let mut prefix = PathBuf::new();
    let mut held: Option<OwnedFd> = None;
    for comp in parent.components() {
        prefix.push(comp);
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let opened = match sys::open_beneath(root, &prefix, flags, 0, resolve) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let at = held.as_ref().map_or(root, |f| f.as_fd());
                match sys::mkdirat(at, Path::new(comp.as_os_str())) {
                    Ok(()) => undo.folders.push(prefix.clone()),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => {
                        return Err(StorageError::from_io(dir.join(&prefix), "create folder", e))
                    }
                }
                sys::open_beneath(root, &prefix, flags, 0, resolve)
            }
            other => other,
        };
        held = Some(opened.map_err(|e| open_error(dir.join(&prefix), e))?);
        ready.insert(prefix.clone());
    }
    Ok(())
}

/// Classifies a failed open: a symlink refused, a file where a folder should be, or the
/// general cases.
fn open_error(path: PathBuf, e: io::Error) -> StorageError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => StorageError::PathEscape { path },
        Some(libc::EISDIR) => StorageError::NotAFile { path },
        _ => StorageError::from_io(path, "open", e),
    }
}
