//! Drivers run the sans-IO core against the world: they own sockets, files and the clock.
//! Three of them run the same core: io_uring (the default where the kernel allows it), epoll
//! (the fallback), and the seeded simulator.
//!
//! [`Driver`] is the one entry point for the real two: an event loop running any
//! [`Protocol`] (the engine's [`Session`] by default, or `swarm-load`'s peers) on the
//! [`Backend`] chosen at start-up. [`resolve`] makes that choice from what the user asked for
//! ([`IoChoice`]), probing io_uring and falling back to epoll with the reason;
//! [`loop_count`] says how many loops to run; [`shard`] runs one per core.
//!
//! Both backends embed the same loop core (`loop_core.rs`: the protocol, the clock, the disk
//! bridge, the mail, the counters and the turn's sequence) and keep to themselves only how
//! they talk to the kernel.

mod disk;
pub mod epoll;
mod loop_core;
pub mod net;
pub mod protocol;
pub mod shard;
pub mod sim;
mod udp_batch;
pub mod uring;
pub mod utp_link;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::api::{Event, TorrentId};
use crate::core::{Session, Time};
use crate::storage::{DiskPool, Storage};
use epoll::EpollDriver;
use loop_core::{LoopCore, LoopIo};
pub use protocol::Protocol;
use shard::Mailbox;
use uring::UringDriver;
pub use utp_link::{Transport, UtpStats};

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
    /// Datagrams read from the loop's UDP socket (only the loop that owns it has one).
    pub datagrams_received: u64,
    /// Of those, dropped unread: neither a bencoded dictionary (first byte `d`) nor a uTP
    /// packet for a loop that runs uTP, or
    /// too large.
    pub datagrams_dropped: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams the kernel refused (a full send buffer, an unreachable address): dropped.
    pub datagrams_unsent: u64,
    /// Entries read from the UDP socket's error queue: ICMP errors about datagrams we sent
    /// (port or host unreachable, too big), which end or steer uTP connections.
    pub udp_errors: u64,
    /// The uTP connections this loop's protocol holds, and their traffic.
    pub utp: UtpStats,
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

/// Which backend a user asked for (`--io`, or the `io` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoChoice {
    /// io_uring where this process may use it, else epoll.
    #[default]
    Auto,
    /// io_uring, or an error saying why it cannot be used.
    Uring,
    /// epoll.
    Epoll,
}

/// Why io_uring cannot be used here: the reason [`uring::probe`] gave (a refusing sysctl or
/// seccomp profile, an old kernel, a missing feature), in a sentence fit for a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct UringUnavailable {
    /// The probe's explanation.
    pub reason: String,
}

/// What [`resolve`] chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The backend to run the loops on.
    pub backend: Backend,
    /// Set when [`IoChoice::Auto`] fell back to epoll: why io_uring was passed over, for the
    /// caller to show (the library prints nothing).
    pub fallback: Option<UringUnavailable>,
}

/// Turns the user's choice into a backend, probing io_uring (a few hundred microseconds)
/// unless epoll was asked for. `Auto` falls back to epoll and says why in
/// [`Resolved::fallback`]; `Uring` fails with the probe's reason where io_uring is unavailable.
pub fn resolve(choice: IoChoice) -> Result<Resolved, UringUnavailable> {
    let probe = || uring::probe().map_err(|reason| UringUnavailable { reason });
    match choice {
        IoChoice::Epoll => Ok(Resolved {
            backend: Backend::Epoll,
            fallback: None,
        }),
        IoChoice::Uring => probe().map(|()| Resolved {
            backend: Backend::Uring,
            fallback: None,
        }),
        IoChoice::Auto => Ok(match probe() {
            Ok(()) => Resolved {
                backend: Backend::Uring,
                fallback: None,
            },
            Err(e) => Resolved {
                backend: Backend::Epoll,
                fallback: Some(e),
            },
        }),
    }
}

/// How many event loops to run for `requested`: 0 means one per core available to the
/// process (its CPU affinity and cgroup quota included), at least one.
pub fn loop_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// One event loop running the protocol `P` on either backend. (The backends are boxed:
/// about 1 KiB each.) Every method but [`Driver::turn`] is a field access behind one `match`;
/// the turn runs the backend's own monomorphic loop.
pub struct Driver<P: Protocol = Session> {
    io: Io<P>,
    stopped: bool,
}

enum Io<P: Protocol> {
    Uring(Box<UringDriver<P>>),
    Epoll(Box<EpollDriver<P>>),
}

impl<P: Protocol> Driver<P> {
    /// A driver of kind `backend` for `session` (or any [`Protocol`]), accepting on
    /// `listener` if given (see [`net::bind_listeners`]). Fails where the backend cannot be
    /// set up; choose it with [`resolve`] first.
    pub fn new(
        backend: Backend,
        session: P,
        listener: Option<TcpListener>,
        disk: Arc<DiskPool>,
        epoch: Instant,
    ) -> std::io::Result<Driver<P>> {
        Ok(match backend {
            Backend::Uring => UringDriver::new(session, listener, disk, epoch)?.into(),
            Backend::Epoll => EpollDriver::new(session, listener, disk, epoch)?.into(),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.io {
            Io::Uring(_) => Backend::Uring,
            Io::Epoll(_) => Backend::Epoll,
        }
    }

    fn core(&self) -> &LoopCore<P> {
        match &self.io {
            Io::Uring(d) => &d.core,
            Io::Epoll(d) => &d.core,
        }
    }

    pub(crate) fn core_mut(&mut self) -> &mut LoopCore<P> {
        match &mut self.io {
            Io::Uring(d) => &mut d.core,
            Io::Epoll(d) => &mut d.core,
        }
    }

    /// The address we listen on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.core().local_addr()
    }

    /// Gives this loop the UDP socket (made non-blocking here): datagrams starting with `d`
    /// go to [`Protocol::handle_datagram`], [`Protocol::poll_datagram`]'s go out on it. One
    /// loop only should have it (see `shard`). Call before the loop's first turn.
    pub fn set_udp(&mut self, socket: UdpSocket) -> std::io::Result<()> {
        match &mut self.io {
            Io::Uring(d) => d.set_udp(socket),
            Io::Epoll(d) => d.set_udp(socket),
        }
    }

    /// Sets which transports this loop dials and accepts on ([`Transport`]). `utp_running`
    /// says whether the loop with the UDP socket runs uTP ([`Driver::run_utp`]); without it
    /// every dial goes over TCP. Call on every loop before the first turn.
    pub fn set_transport(&mut self, transport: Transport, utp_running: bool) {
        let shard = self.core().utp.shard;
        self.core_mut().utp.configure(shard, transport, utp_running);
    }

    /// Runs the uTP endpoint for every loop on this one, which must be loop 0 and have the
    /// UDP socket ([`Driver::set_udp`]): uTP packets on it go to the endpoint, whose
    /// connections are byte streams to this loop's protocol and, by mail, to the other
    /// loops' (see [`utp_link`]). `seed` seeds its connection ids.
    pub fn run_utp(&mut self, config: crate::utp::EndpointConfig, seed: u64) {
        self.core_mut().utp.host(config, seed);
    }

    /// The uTP endpoint's counters, on the loop that runs it.
    pub fn utp_endpoint_stats(&self) -> Option<crate::utp::EndpointStats> {
        self.core().utp.endpoint_stats()
    }

    /// The UDP socket's address, if this loop has one.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.core().udp_addr()
    }

    /// The session's clock reading now.
    pub fn now(&self) -> Time {
        self.core().now()
    }

    /// The session (or other protocol), to add torrents and peers or read statistics.
    pub fn session(&mut self) -> &mut P {
        &mut self.core_mut().proto
    }

    /// Registers the storage that serves a torrent's disk operations.
    pub fn attach_storage(&mut self, torrent: TorrentId, storage: Arc<Storage>) {
        self.core_mut().disk.attach(torrent, storage);
    }

    /// Forgets a torrent's storage: call it when the torrent leaves the session, or its
    /// files stay open (and, deleted, keep their disk space) for as long as the loop runs.
    pub fn detach_storage(&mut self, torrent: TorrentId) {
        self.core_mut().disk.detach(torrent);
    }

    /// The loop's counters.
    pub fn loop_stats(&self) -> LoopStats {
        self.core().loop_stats()
    }

    /// Where other threads post this loop's mail.
    pub fn mailbox(&self) -> Mailbox<P> {
        self.core().post.mailbox()
    }

    /// Gives the loop every loop's mailbox, indexed by shard, so it can hand connections over.
    pub fn link(&mut self, shards: Arc<[Mailbox<P>]>) {
        self.core_mut().post.link(shards);
    }

    /// One loop turn, waiting at most `max_wait`, handing every event to `on_event`; then
    /// runs the closures mail brought. With io_uring, the first turn binds the loop to the
    /// calling thread: later turns, and the drop, belong on that thread (see [`uring`]).
    pub fn turn(
        &mut self,
        max_wait: Duration,
        on_event: &mut dyn FnMut(&Event),
    ) -> std::io::Result<()> {
        match &mut self.io {
            Io::Uring(d) => d.run_turn(max_wait, on_event)?,
            Io::Epoll(d) => d.run_turn(max_wait, on_event)?,
        }
        for run in self.core_mut().post.take_runs() {
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

impl<P: Protocol> From<UringDriver<P>> for Driver<P> {
    /// An io_uring loop made directly (to size its receive buffers, say) as a [`Driver`].
    fn from(d: UringDriver<P>) -> Driver<P> {
        Driver {
            io: Io::Uring(Box::new(d)),
            stopped: false,
        }
    }
}

impl<P: Protocol> From<EpollDriver<P>> for Driver<P> {
    /// An epoll loop made directly as a [`Driver`].
    fn from(d: EpollDriver<P>) -> Driver<P> {
        Driver {
            io: Io::Epoll(Box::new(d)),
            stopped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_is_taken_without_probing() {
        let r = resolve(IoChoice::Epoll).unwrap();
        assert_eq!(r.backend, Backend::Epoll);
        assert_eq!(r.fallback, None);
    }

    #[test]
    fn auto_agrees_with_the_probe() {
        let r = resolve(IoChoice::Auto).unwrap();
        match uring::probe() {
            Ok(()) => assert_eq!((r.backend, r.fallback), (Backend::Uring, None)),
            Err(reason) => {
                assert_eq!(r.backend, Backend::Epoll);
                assert_eq!(r.fallback, Some(UringUnavailable { reason }));
            }
        }
        assert_eq!(resolve(IoChoice::Uring).is_ok(), uring::probe().is_ok());
    }

    #[test]
    fn zero_loops_means_one_per_core() {
        assert_eq!(loop_count(3), 3);
        assert!(loop_count(0) >= 1);
    }
}
