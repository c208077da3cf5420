//! The process's file-descriptor budget: raise the soft `RLIMIT_NOFILE` to the hard limit,
//! then hold the session's connections below what is left once everything else that needs a
//! descriptor has its share.
//!
//! Every peer connection is a socket, and so is every accepted connection the session then
//! refuses; a process that runs out of descriptors fails `accept` (`EMFILE`) and everything
//! else that opens one: storage's files, tracker sockets, resume saves, the control API. The
//! default soft limit (1,024 under systemd) is far below the 20,000 connections `serve`
//! allows, while the hard limit usually allows far more, so `Client::start`
//! raises the soft limit first (as libtorrent's examples and Transmission do) and then shares
//! it out:
//!
//! - what is open already (stdio, the embedding program's descriptors), counted in
//!   `/proc/self/fd`;
//! - [`PER_LOOP`] for each event loop (its io_uring ring or epoll instance, the disk pool's
//!   eventfd, the listener, the probe's ring);
//! - storage's open files: an eighth of the limit, at least [`MIN_FILES`] and at most
//!   [`limits::MAX_OPEN_FILES`]; storage's process-wide cap on held files is set to it
//!   (`storage::set_open_file_cap`), plus [`PAST_CAP_PER_THREAD`] per disk-pool thread for
//!   an access past that cap;
//! - a sixteenth of the limit (between [`MIN_OTHER`] and [`MAX_OTHER`]) for trackers (UDP
//!   sockets, HTTP(S) connections, DNS), the control API, the state folder and resume saves;
//! - a reserve of a thirty-second of the limit (at least [`MIN_RESERVE`]), so that accepting a
//!   connection only to refuse it, or opening a file, still finds a descriptor when every
//!   connection is in use.
//!
//! What remains bounds `max_connections` (all loops together); a configured value above it is
//! lowered, and said once, with the numbers.

use std::io;

use crate::limits;

/// Descriptors each event loop holds: its ring or epoll instance, the eventfd the disk pool
/// and its mail share, the listener, and one for the short-lived probe ring.
pub const PER_LOOP: u64 = 4;

/// Descriptors one disk-pool thread may hold for an access past storage's cap on held files:
/// the file, and the data folder it is opened beneath when its storage holds no folder
/// descriptor (a restored torrent whose files open on demand, `Storage::open_lazy`).
pub const PAST_CAP_PER_THREAD: u64 = 2;

/// Most descriptors set aside for trackers (a UDP socket per address family, one HTTP(S)
/// connection per worker, DNS), the control API's connections, the state folder, resume
/// saves (a temporary file and its folder) and reading `.torrent` files.
pub const MAX_OTHER: u64 = 96;

/// The fewest set aside for them, under a very low limit.
pub const MIN_OTHER: u64 = 16;

/// The fewest files storage may hold open, whatever the limit.
pub const MIN_FILES: u64 = 8;

/// The smallest reserve kept free for accepts that will be refused and files opened for one
/// access.
pub const MIN_RESERVE: u64 = 8;

/// How the process's descriptors are shared, as computed when the client started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft `RLIMIT_NOFILE` found at start.
    pub soft_before: u64,
    /// The soft limit after raising it to the hard limit (unchanged if that failed).
    pub limit: u64,
    /// Descriptors already open when the client started.
    pub in_use: u64,
    /// Held back for the event loops.
    pub loops: u64,
    /// Held back for storage's files (its cap on held files, plus one per disk thread).
    pub files: u64,
    /// Held back for trackers, the API and the state folder.
    pub other: u64,
    /// Kept free so that accept failures and short-lived files are survived.
    pub reserve: u64,
    /// Connections the limit leaves room for: the most `max_connections` may be.
    pub connections: usize,
    /// `max_connections` as configured.
    pub configured: usize,
    /// `max_connections` as applied: the lesser of the two (at least 1).
    pub max_connections: usize,
}

impl DescriptorBudget {
    /// Raises the soft limit, computes the budget for `loops` loops and `disk_threads` disk
    /// threads, and sets storage's cap on held files. `configured` is the session-wide
    /// `max_connections` asked for.
    pub(crate) fn apply(configured: usize, loops: usize, disk_threads: usize) -> DescriptorBudget {
        let (soft_before, limit) = raise_nofile().unwrap_or((1024, 1024));
        let in_use = open_descriptors().unwrap_or(16);
        let budget =
            DescriptorBudget::compute(soft_before, limit, in_use, loops, disk_threads, configured);
        let held_files = budget
            .files
            .saturating_sub(PAST_CAP_PER_THREAD * disk_threads as u64)
            .max(1);
        crate::storage::set_open_file_cap(held_files as usize);
        budget
    }

    /// The arithmetic `Client::start` applies, without touching the process: the soft limit
    /// before and after raising it, descriptors open, loops, disk threads, and the
    /// configured `max_connections`.
    pub fn compute(
        soft_before: u64,
        limit: u64,
        in_use: u64,
        loops: usize,
        disk_threads: usize,
        configured: usize,
    ) -> DescriptorBudget {
        let loops = PER_LOOP * loops.max(1) as u64;
        let files = (limit / 8).clamp(MIN_FILES, limits::MAX_OPEN_FILES as u64)
            + PAST_CAP_PER_THREAD * disk_threads as u64;
        let other = (limit / 16).clamp(MIN_OTHER, MAX_OTHER);
        let reserve = (limit / 32).max(MIN_RESERVE);
        let left = limit.saturating_sub(in_use + loops + files + other + reserve);
        let connections = usize::try_from(left).unwrap_or(usize::MAX);
        DescriptorBudget {
            soft_before,
            limit,
            in_use,
            loops,
            files,
            other,
            reserve,
            connections,
            configured,
            max_connections: configured.min(connections).max(1),
        }
    }

    /// Whether `max_connections` had to be lowered.
    pub fn lowered(&self) -> bool {
        self.max_connections < self.configured
    }

    /// What to tell the user when `max_connections` was lowered, with the numbers.
    pub fn note(&self) -> Option<String> {
        self.lowered().then(|| {
            format!(
                "max_connections {} lowered to {}: the descriptor limit (RLIMIT_NOFILE) is {} \
                 ({} in use at start, {} for the event loops, {} for files, {} for trackers \
                 and the API, {} in reserve); raise the hard limit (ulimit -Hn, systemd's \
                 LimitNOFILE=) to allow more",
                self.configured,
                self.max_connections,
                self.limit,
                self.in_use,
                self.loops,
                self.files,
                self.other,
                self.reserve
            )
        })
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or to the kernel's `nr_open` when the
/// hard limit is infinite). Returns the soft limit before and after.
fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    if before != libc::RLIM_INFINITY && before < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit read by the call only.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok((before, target));
        }
    }
    Ok((before, before.min(target)))
}

/// Descriptors open in this process now (the listing's own excepted).
pub(crate) fn open_descriptors() -> io::Result<u64> {
    let n = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_limit_leaves_the_configured_connections_alone() {
        let b = DescriptorBudget::compute(1024, 1 << 20, 10, 4, 8, 20_000);
        assert_eq!(b.files, limits::MAX_OPEN_FILES as u64 + 2 * 8);
        assert_eq!(b.max_connections, 20_000);
        assert!(!b.lowered() && b.note().is_none());
    }

    #[test]
    fn a_small_limit_lowers_max_connections_with_every_share_accounted_for() {
        let b = DescriptorBudget::compute(1024, 1024, 10, 2, 4, 20_000);
        assert_eq!((b.loops, b.files, b.reserve), (8, 128 + 2 * 4, 32));
        let shares = b.in_use + b.loops + b.files + b.other + b.reserve;
        assert_eq!(b.connections as u64, 1024 - shares);
        assert_eq!(b.max_connections, b.connections);
        let note = b.note().expect("lowered");
        assert_eq!(b.other, 64);
        assert!(note.contains("20000 lowered to 774"), "{note}");
        // `ulimit -n 64`: the shares shrink with the limit and still leave some connections.
        let small = DescriptorBudget::compute(64, 64, 10, 1, 4, 200);
        assert_eq!((small.files, small.other, small.reserve), (16, 16, 8));
        assert_eq!(small.max_connections, 10);
        // A limit below the shares leaves one connection, not none.
        let tiny = DescriptorBudget::compute(32, 32, 10, 1, 4, 200);
        assert_eq!((tiny.connections, tiny.max_connections), (0, 1));
    }
}
