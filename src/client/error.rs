//! [`ClientError`]: why a client operation failed, typed so a caller can answer each case
//! (an API maps them to 400, 404, 409 and 500).

use std::path::PathBuf;

use crate::core::InfoHash;
use crate::storage::{ResumeError, StorageError};

/// Why a [`super::Client`] or [`super::TorrentHandle`] operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bytes are not a valid .torrent file.
    #[error("not a valid torrent: {0}")]
    InvalidTorrent(String),
    /// The text is not a valid magnet link.
    #[error("not a valid magnet link: {0}")]
    InvalidMagnet(String),
    /// A setting or argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A torrent with this info hash is in the client already.
    #[error("torrent {0} is already added")]
    AlreadyAdded(InfoHash),
    /// No torrent with this info hash is in the client.
    #[error("no torrent {0}")]
    UnknownTorrent(InfoHash),
    /// The torrent has no metadata yet (added by magnet link, still fetching it).
    #[error("torrent {0} has no metadata yet")]
    NoMetadata(InfoHash),
    /// Its files could not be opened, created, read or written.
    #[error("{name}: {source}")]
    Storage {
        /// The torrent's name.
        name: String,
        /// What went wrong, with the path and what to do.
        #[source]
        source: StorageError,
    },
    /// Resume data could not be saved.
    #[error("cannot save resume data of {name}: {source}")]
    Resume {
        /// The torrent's name.
        name: String,
        /// Why.
        #[source]
        source: ResumeError,
    },
    /// A file or folder of the client's own (state, settings) could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we tried: "create", "write", "read", "delete".
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The requested I/O backend is not available here.
    #[error("io_uring: {0}; use epoll or auto")]
    Backend(String),
    /// The event loops could not start (the listen address is taken, no threads).
    #[error("cannot start the event loops: {0}")]
    Start(String),
    /// An event loop did not answer in time (it is stuck, or gone).
    #[error("event loop {0} did not answer")]
    LoopUnavailable(u32),
    /// The protocol core refused the torrent (its limits are reached).
    #[error("the session refused torrent {0}")]
    Refused(InfoHash),
    /// The client was shut down.
    #[error("the client is shut down")]
    ShutDown,
}

impl ClientError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ClientError::Io {
            action,
            path,
            source,
        }
    }
}
