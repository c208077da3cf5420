//! The storage boundary's error type. Every variant names the path at fault and, where the
//! user can do something about it, what.

use std::io;
use std::path::PathBuf;

/// Why opening, reading or writing a torrent's files failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The filesystem has too little free space for the files still to be allocated.
    #[error(
        "not enough space for {path}: {needed} more bytes needed, {available} bytes free on its filesystem; free some space or choose another download folder"
    )]
    NoSpace {
        /// The file being allocated, or the download folder when checked up front.
        path: PathBuf,
        /// Bytes still to allocate.
        needed: u64,
        /// Bytes free on that filesystem when it was checked.
        available: u64,
    },
    /// A file exists with a size other than the torrent's. It is left untouched: it may hold
    /// data that another check would find valid, or belong to something else.
    #[error(
        "{path} is {actual} bytes but the torrent says {expected}; it was left as it is (move it away, or open with resizing allowed to let ringtorrent change it)"
    )]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Its length in the torrent.
        expected: u64,
        /// Its length on disk.
        actual: u64,
    },
    /// Resolving the path would leave the download folder through a symbolic link.
    #[error(
        "{path} leads outside the download folder through a symbolic link; refusing to follow it"
    )]
    PathEscape {
        /// The path inside the download folder.
        path: PathBuf,
    },
    /// The path exists but is not a regular file (a folder, a FIFO, a device...).
    #[error("{path} exists but is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The system refused access (EACCES, EPERM).
    #[error("permission denied: cannot {action} {path}; check its owner and permissions")]
    PermissionDenied {
        /// The file or folder.
        path: PathBuf,
        /// What was being done, e.g. `create folder`.
        action: &'static str,
    },
    /// The filesystem is mounted read-only (EROFS), or the storage was opened read-only.
    #[error("cannot {action} {path}: read-only")]
    ReadOnly {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
    },
    /// A file the data lives in does not exist (read-only storage, e.g. `check`).
    #[error("{path} is missing")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file is shorter than the data asked for (read-only storage).
    #[error("{path} is {len} bytes, too short to hold bytes up to {needed}")]
    ShortFile {
        /// The file.
        path: PathBuf,
        /// Its length on disk.
        len: u64,
        /// The end offset that was asked for.
        needed: u64,
    },
    /// Any other system error.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The system's error.
        source: io::Error,
    },
    /// A file opened on demand ([`super::Storage::open_lazy`]) is not the one its resume
    /// data described: its size or modification time changed while it sat unopened. Its
    /// bytes are not served; the torrent's data must be checked again.
    #[error(
        "{path} changed since its resume data was saved ({change}); its data must be checked again"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// What differs.
        change: String,
    },
    /// The pool's threads could not be started.
    #[error("cannot start the disk threads: {0}")]
    Pool(String),
}

impl StorageError {
    /// Classifies a system error on `path` into the variant a user can act on.
    pub(crate) fn from_io(path: PathBuf, action: &'static str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => StorageError::PermissionDenied { path, action },
            Some(libc::EROFS) => StorageError::ReadOnly { path, action },
            Some(libc::EXDEV) => StorageError::PathEscape { path },
            _ => StorageError::Io {
                path,
                action,
                source,
            },
        }
    }
}
