//! Drivers run the sans-IO core against the world: they own sockets, files and the clock.
//! Three of them run the same core: io_uring (the default where the kernel allows it), epoll
//! (the fallback), and the seeded simulator. [`Driver`] is either of the real two, chosen at
//! start-up; [`shard`] runs one per core.

mod disk;
pub mod epoll;
pub mod net;
pub mod protocol;
pub mod shard;
pub mod sim;
pub mod uring;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::api::{Event, TorrentId};
use crate::core::{Session, Time};
use crate::storage::{DiskPool, Storage};
use epoll::EpollDriver;
pub use protocol::Protocol;
use shard::Mailbox;
use uring::UringDriver;

/// Counters of one event loop, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Loop turns so far.
    pub turns: u64,
    /// Completions (io_uring) or readiness events (epoll) handled so far.
    pub completions: u64,
    /// Disk operations (reads, writes, hashes) submitted and not yet completed: the loop's
    /// share of the disk and hash queue.
    pub disk_in_flight: u64,
}

/// The kernel interface an event loop runs on.
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

/// One event loop, on either backend. (The drivers are boxed: about 1 KiB each.)
pub struct Driver {
    io: Io,
    stopped: bool,
}

enum Io {
    Uring(Box<UringDriver>),
    Epoll(Box<EpollDriver>),
}

macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match &$self.io {
            Io::Uring($d) => $e,
            Io::Epoll($d) => $e,
        }
    };
    (mut $self:expr, $d:ident => $e:expr) => {
        match &mut $self.io {
            Io::Uring($d) => $e,
            Io::Epoll($d) => $e,
        }
    };
}

impl Driver {
    /// A driver of kind `backend` for `session`, accepting on `listener` if given.
    pub fn new(
        backend: Backend,
        session: Session,
        listener: Option<TcpListener>,
        disk: Arc<DiskPool>,
        epoch: Instant,
    ) -> std::io::Result<Driver> {
        let io = match backend {
            Backend::Uring => {
                Io::Uring(Box::new(UringDriver::new(session, listener, disk, epoch)?))
            }
            Backend::Epoll => {
                Io::Epoll(Box::new(EpollDriver::new(session, listener, disk, epoch)?))
            }
        };
        Ok(Driver { io, stopped: false })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.io {
            Io::Uring(_) => Backend::Uring,
            Io::Epoll(_) => Backend::Epoll,
        }
    }

    /// The address we listen on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        each!(self, d => d.local_addr())
    }

    /// The session's clock reading now.
    pub fn now(&self) -> Time {
        each!(self, d => d.now())
    }

    /// The session.
    pub fn session(&mut self) -> &mut Session {
        each!(mut self, d => d.session())
    }

    /// Registers the storage that serves a torrent's disk operations.
    pub fn attach_storage(&mut self, torrent: TorrentId, storage: Arc<Storage>) {
        each!(mut self, d => d.attach_storage(torrent, storage))
    }

    /// The loop's counters.
    pub fn loop_stats(&self) -> LoopStats {
        each!(self, d => d.loop_stats())
    }

    /// Where other threads post this loop's mail.
    pub fn mailbox(&self) -> Mailbox {
        each!(self, d => d.mailbox())
    }

    /// Gives the loop every loop's mailbox, indexed by shard, so it can hand connections over.
    pub fn link(&mut self, shards: Arc<[Mailbox]>) {
        each!(mut self, d => d.link(shards))
    }

    /// One loop turn, waiting at most `max_wait`; then runs the closures mail brought.
    pub fn turn(
        &mut self,
        max_wait: Duration,
        on_event: &mut dyn FnMut(&Event),
    ) -> std::io::Result<()> {
        let runs = each!(mut self, d => {
            d.turn(max_wait, on_event)?;
            d.take_runs()
        });
        for run in runs {
            run(self);
        }
        Ok(())
    }

    /// Asks the loop running this driver to end after the current turn.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether [`Driver::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}
