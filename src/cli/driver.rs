//! `--io`: the event loop behind the commands, io_uring or epoll, chosen once at start-up.
//! Both drivers have the same methods; [`Driver`] forwards them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::transfer::Io;
use ringtorrent::core::api::{Event, TorrentId};
use ringtorrent::core::{Session, Time};
use ringtorrent::driver::epoll::EpollDriver;
use ringtorrent::driver::uring::{self, UringDriver};
use ringtorrent::storage::{DiskPool, Storage};

/// The backend `--io` resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The io_uring driver.
    Uring,
    /// The epoll driver.
    Epoll,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// Resolves `--io`: `auto` probes io_uring and falls back to epoll with a note on stderr;
/// `uring` fails with the probe's reason where io_uring is unavailable.
pub fn backend(io: Io) -> Result<Backend> {
    match io {
        Io::Epoll => Ok(Backend::Epoll),
        Io::Uring => uring::probe()
            .map(|()| Backend::Uring)
            .map_err(|e| anyhow!("--io uring: {e}; use --io epoll or --io auto")),
        Io::Auto => Ok(match uring::probe() {
            Ok(()) => Backend::Uring,
            Err(e) => {
                eprintln!("note: {e}; using epoll");
                Backend::Epoll
            }
        }),
    }
}

/// One event loop, on either backend. (Boxed: the drivers are about 1 KiB each.)
pub enum Driver {
    /// io_uring.
    Uring(Box<UringDriver>),
    /// epoll.
    Epoll(Box<EpollDriver>),
}

impl Driver {
    /// A driver of kind `backend` for `session`, listening on `listen` if given.
    pub fn new(
        backend: Backend,
        session: Session,
        listen: Option<SocketAddr>,
        disk: Arc<DiskPool>,
        epoch: Instant,
    ) -> std::io::Result<Driver> {
        Ok(match backend {
            Backend::Uring => {
                Driver::Uring(Box::new(UringDriver::new(session, listen, disk, epoch)?))
            }
            Backend::Epoll => {
                Driver::Epoll(Box::new(EpollDriver::new(session, listen, disk, epoch)?))
            }
        })
    }

    /// The address we listen on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Driver::Uring(d) => d.local_addr(),
            Driver::Epoll(d) => d.local_addr(),
        }
    }

    /// The session's clock reading now.
    pub fn now(&self) -> Time {
        match self {
            Driver::Uring(d) => d.now(),
            Driver::Epoll(d) => d.now(),
        }
    }

    /// The session.
    pub fn session(&mut self) -> &mut Session {
        match self {
            Driver::Uring(d) => d.session(),
            Driver::Epoll(d) => d.session(),
        }
    }

    /// Registers the storage that serves a torrent's disk operations.
    pub fn attach_storage(&mut self, torrent: TorrentId, storage: Arc<Storage>) {
        match self {
            Driver::Uring(d) => d.attach_storage(torrent, storage),
            Driver::Epoll(d) => d.attach_storage(torrent, storage),
        }
    }

    /// One loop turn, waiting at most `max_wait`.
    pub fn turn(
        &mut self,
        max_wait: Duration,
        on_event: &mut dyn FnMut(&Event),
    ) -> std::io::Result<()> {
        match self {
            Driver::Uring(d) => d.turn(max_wait, on_event),
            Driver::Epoll(d) => d.turn(max_wait, on_event),
        }
    }
}
