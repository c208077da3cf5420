//! The watch folder: `.torrent` files dropped in are added, files removed take their torrent
//! out of the session (its data kept), and a file rewritten with another torrent swaps one
//! for the other.
//!
//! A scan reads the folder and stats every `.torrent` in it, so at a seedbox's 10,000 files
//! polling every `watch_interval` seconds costs tens of thousands of system calls a minute
//! for nothing. Where the kernel offers it, inotify says when the folder changed (a file
//! created, written and closed, moved in or out, deleted, its attributes changed): a tick
//! with nothing reported scans nothing. A full scan still runs every [`SAFETY_SCAN`], for
//! what inotify cannot see (a network filesystem changed by another machine). Without
//! inotify (its watch limit reached, or a filesystem that refuses it), every tick scans, as
//! before.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ringtorrent::client::{AddTorrent, Client, ClientError};
use ringtorrent::core::InfoHash;

/// With inotify, a full scan at least this often anyway.
pub const SAFETY_SCAN: Duration = Duration::from_secs(60);

/// The most bytes of inotify events read per tick (the kernel queue is bounded too; past it
/// the kernel reports an overflow, which means "scan").
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A file in the watch folder, as last seen.
struct Watched {
    modified: Option<SystemTime>,
    /// The torrent it added, or why it was refused (reported once per version of the file).
    outcome: Result<InfoHash, String>,
}

/// What the watcher did, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct WatchStats {
    /// Full scans of the folder.
    pub scans: u64,
    /// Ticks that scanned nothing because inotify reported no change.
    pub skipped: u64,
    /// `.torrent` files in the folder at the last scan.
    pub files: usize,
    /// Whether inotify watches the folder.
    pub notified: bool,
}

/// One watch folder and what it has added.
pub struct Watcher {
    dir: PathBuf,
    watched: BTreeMap<PathBuf, Watched>,
    inotify: Option<OwnedFd>,
    /// The first scan also removes torrents whose file went while we were not running.
    first: bool,
    next_full: Instant,
    stats: WatchStats,
}

impl Watcher {
    /// Watches `dir` (nothing is read until the first [`Watcher::tick`]).
    pub fn new(dir: PathBuf) -> Watcher {
        let inotify = match notifier(&dir) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::info!(
                    "watch folder {}: no change notifications ({e}); scanning it every tick",
                    dir.display()
                );
                None
            }
        };
        Watcher {
            stats: WatchStats {
                notified: inotify.is_some(),
                ..WatchStats::default()
            },
            dir,
            watched: BTreeMap::new(),
            inotify,
            first: true,
            next_full: Instant::now(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    /// One tick (every `watch_interval`): scans the folder if it may have changed.
    pub fn tick(&mut self, client: &Client) {
        let now = Instant::now();
        let changed = match &self.inotify {
            None => true,
            Some(fd) => match drain(fd) {
                Ok(changed) => changed,
                Err(e) => {
                    // The folder itself went, or was moved: scanning says so, and polling
                    // takes over (a new folder of that name is a new inode to watch).
                    tracing::warn!(
                        "watch folder {}: notifications stopped ({e}); scanning it every tick",
                        self.dir.display()
                    );
                    self.inotify = None;
                    self.stats.notified = false;
                    true
                }
            },
        };
        if changed || self.first || now >= self.next_full {
            self.next_full = now + SAFETY_SCAN;
            self.scan(client);
        } else {
            self.stats.skipped += 1;
        }
    }

    /// One pass over the folder: new or changed `.torrent` files are added, files gone take
    /// their torrent out of the session (data kept). A file that is not a torrent is reported
    /// once (until it changes) and otherwise ignored.
    fn scan(&mut self, client: &Client) {
        self.stats.scans += 1;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot read the watch folder {}: {e}", self.dir.display());
                return;
            }
        };
        let mut present = HashSet::new();
        // New or changed files, added in one batch (one round trip per event loop; their
        // files read and parsed on the disk pool's hashing threads).
        let mut adds = Vec::new();
        let mut adding = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "torrent") {
                continue;
            }
            // One stat, following a link as `is_file` does.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().ok();
            let known = self
                .watched
                .get(&path)
                .is_some_and(|w| w.modified == modified);
            present.insert(path.clone());
            if known {
                continue;
            }
            // Read and parsed by `add_many`, on all cores, not one file at a time here.
            adds.push(AddTorrent::file(path.clone()).label(format!("watch:{}", path.display())));
            adding.push((path, modified));
        }
        self.stats.files = present.len();
        let mut replaced_by_file = Vec::new();
        for ((path, modified), result) in adding.into_iter().zip(client.add_many(adds)) {
            let outcome = match result {
                Ok(handle) => Ok(handle.info_hash()),
                Err(ClientError::AlreadyAdded(hash)) => Ok(hash),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &outcome {
                tracing::warn!("watch folder: {} not added: {e}", path.display());
            }
            // A file rewritten with another torrent: the one it held before goes, as if the
            // file had been removed and a new one dropped in.
            let replaced = match (self.watched.get(&path), &outcome) {
                (
                    Some(Watched {
                        outcome: Ok(old), ..
                    }),
                    Ok(new),
                ) if old != new => Some(*old),
                _ => None,
            };
            self.watched
                .insert(path.clone(), Watched { modified, outcome });
            if let Some(old) = replaced {
                replaced_by_file.push((path, old));
            }
        }
        let gone: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        let mut dropped: Vec<(PathBuf, InfoHash)> = replaced_by_file;
        for path in gone {
            if let Some(Watched {
                outcome: Ok(hash), ..
            }) = self.watched.remove(&path)
            {
                dropped.push((path, hash));
            }
        }
        if dropped.is_empty() && !self.first {
            return;
        }
        let sources = client.sources();
        for (path, hash) in dropped {
            // Only what the folder added goes when the file goes.
            let label = format!("watch:{}", path.display());
            if sources.iter().any(|(h, s)| *h == hash && *s == label) {
                if let Err(e) = super::remove(client, hash) {
                    tracing::warn!("watch folder: cannot remove {hash}: {e:#}");
                }
            }
        }
        if std::mem::take(&mut self.first) {
            // Torrents the folder added whose file went while we were not running.
            for (hash, source) in sources {
                if let Some(path) = source.strip_prefix("watch:") {
                    let path = PathBuf::from(path);
                    if path.starts_with(&self.dir)
                        && !present.contains(&path)
                        && !self.watched.contains_key(&path)
                    {
                        if let Err(e) = super::remove(client, hash) {
                            tracing::warn!("watch folder: cannot remove {hash}: {e:#}");
                        }
                    }
                }
            }
        }
    }
}

/// An inotify descriptor watching `dir` for every change a scan would see.
fn notifier(dir: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: inotify_init1 takes flags only; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by inotify_init1 and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    let mask = libc::IN_CREATE
        | libc::IN_CLOSE_WRITE
        | libc::IN_MOVED_TO
        | libc::IN_MOVED_FROM
        | libc::IN_DELETE
        | libc::IN_ATTRIB
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF
        | libc::IN_ONLYDIR;
    // SAFETY: `fd` is a live inotify descriptor and `path` a NUL-terminated string that
    // outlives the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
    if wd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Reads what inotify queued (at most [`MAX_EVENT_BYTES`]); `Ok(true)` when the folder may
/// have changed for a scan: a `.torrent` name touched, the queue overflowed, or more was
/// queued than read. `Err` when the watch ended (the folder deleted or moved).
fn drain(fd: &OwnedFd) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 4096];
    let mut changed = false;
    let mut read_total = 0;
    loop {
        // SAFETY: `buf` is valid for writes of its length, and `fd` is a live descriptor.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock => Ok(changed),
                std::io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        let n = n as usize;
        if n == 0 {
            return Ok(changed);
        }
        match parse_events(&buf[..n]) {
            Events::Ended => {
                return Err(std::io::Error::other("the folder was deleted or moved"));
            }
            Events::Changed => changed = true,
            Events::Unrelated => {}
        }
        read_total += n;
        if read_total >= MAX_EVENT_BYTES {
            // Whatever is left says only that something changed: scan, and let the rest be.
            return Ok(true);
        }
    }
}

/// What one read of inotify events says.
#[derive(Debug, PartialEq, Eq)]
enum Events {
    /// Nothing a scan would notice (other files' changes).
    Unrelated,
    /// A `.torrent` file changed, or the queue overflowed.
    Changed,
    /// The folder itself went.
    Ended,
}

/// Parses `struct inotify_event` records (wd, mask, cookie, len, then `len` bytes of
/// NUL-padded name); a truncated record counts as a change.
fn parse_events(mut bytes: &[u8]) -> Events {
    const HEADER: usize = 16;
    let mut changed = false;
    while !bytes.is_empty() {
        let Some(header) = bytes.get(..HEADER) else {
            return Events::Changed;
        };
        let field = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&header[i..i + 4]);
            u32::from_ne_bytes(b)
        };
        let mask = field(4);
        let len = field(12) as usize;
        let Some(name) = bytes.get(HEADER..HEADER + len) else {
            return Events::Changed;
        };
        bytes = &bytes[HEADER + len..];
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
            return Events::Ended;
        }
        if mask & libc::IN_Q_OVERFLOW != 0 {
            changed = true;
            continue;
        }
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name.ends_with(b".torrent") || mask & libc::IN_ISDIR != 0 {
            changed = true;
        }
    }
    if changed {
        Events::Changed
    } else {
        Events::Unrelated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        if !padded.is_empty() {
            padded.push(0);
            while padded.len() % 16 != 0 {
                padded.push(0);
            }
        }
        let mut v = Vec::new();
        v.extend_from_slice(&1i32.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(padded.len() as u32).to_ne_bytes());
        v.extend_from_slice(&padded);
        v
    }

    #[test]
    fn events_are_parsed_by_name_and_bounds() {
        let other = event(libc::IN_CLOSE_WRITE, "movie.mkv.part");
        assert_eq!(parse_events(&other), Events::Unrelated);
        let mut two = other.clone();
        two.extend(event(libc::IN_MOVED_TO, "new.torrent"));
        assert_eq!(parse_events(&two), Events::Changed);
        assert_eq!(
            parse_events(&event(libc::IN_Q_OVERFLOW, "")),
            Events::Changed
        );
        assert_eq!(
            parse_events(&event(libc::IN_DELETE_SELF, "")),
            Events::Ended
        );
        // Truncated: a header cut short, or a name longer than what was read.
        assert_eq!(parse_events(&two[..10]), Events::Changed);
        assert_eq!(parse_events(&two[..two.len() - 1]), Events::Changed);
    }

    #[test]
    fn inotify_reports_a_torrent_dropped_in_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let fd = notifier(dir.path()).unwrap();
        assert!(!drain(&fd).unwrap(), "nothing happened yet");
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert!(!drain(&fd).unwrap(), "not a torrent");
        std::fs::write(dir.path().join("a.torrent"), b"d4:infod").unwrap();
        assert!(drain(&fd).unwrap());
        assert!(!drain(&fd).unwrap(), "read once");
        // Rewritten in place: the folder's listing is the same, the file is not.
        std::fs::write(dir.path().join("a.torrent"), b"d4:infoe").unwrap();
        assert!(drain(&fd).unwrap());
        std::fs::remove_file(dir.path().join("a.torrent")).unwrap();
        assert!(drain(&fd).unwrap());
        let moved = dir.path().with_extension("moved");
        std::fs::rename(dir.path(), &moved).unwrap();
        assert!(drain(&fd).is_err(), "the folder moved away");
        std::fs::rename(&moved, dir.path()).unwrap();
    }
}
