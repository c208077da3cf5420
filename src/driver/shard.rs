//! Thread-per-core: one event loop (a [`Driver`] and its [`Session`]) per core, torrents
//! sharded across them by info hash, and the mail that passes between them. [`build`],
//! [`LoopThread`] and mail work for any [`Protocol`] (`swarm-load` runs its peers on them
//! too); only sessions hand connections over.
//!
//! - Each loop owns the torrents [`shard_of`] maps to it, and every connection of those
//!   torrents; nothing on the data path is shared or locked.
//! - Each loop has its own listener on the shared port ([`super::net::bind_listeners`], with
//!   `SO_REUSEPORT`), so the kernel spreads incoming connections over the loops. A loop that
//!   accepts a connection for a torrent it does not own runs the handshake until the torrent is
//!   named (the first 48 bytes, or MSE's encrypted request), then hands the socket and the
//!   connection's state to the owner ([`Mail::Adopt`]; see "Sharding" in
//!   [`crate::core::session`]).
//! - Anything else a loop must be told (add a torrent, read its statistics, stop) is a
//!   closure run on it between turns ([`Mail::Run`]).
//!
//! Mail arrives on a [`crate::wake`] queue that shares the loop's disk eventfd, so one armed
//! read (or one epoll registration) wakes the loop for both.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::disk::DiskBridge;
use super::net::bind_listeners;
use super::utp_link::UtpMail;
use super::{Backend, Driver, Protocol};
use crate::core::api::Event;
use crate::core::session::HandOff;
use crate::core::{InfoHash, Session};
use crate::storage::DiskPool;
use crate::wake::{WakeQueue, WakeSender};

/// Work for a loop, run on its thread between turns.
pub type Run<P = Session> = Box<dyn FnOnce(&mut Driver<P>) + Send>;

/// What one loop can post to another.
pub enum Mail<P: Protocol = Session> {
    /// An incoming connection for a torrent the receiving loop owns.
    Adopt {
        /// The connected socket.
        stream: TcpStream,
        /// Where its handshake stands.
        handoff: Box<HandOff>,
    },
    /// Run this on the loop.
    Run(Run<P>),
    /// uTP traffic between loop 0, which runs the endpoint, and a loop whose session holds a
    /// uTP connection (see `super::utp_link`).
    Utp(UtpMail),
}

/// Where to post a loop's mail.
pub type Mailbox<P = Session> = WakeSender<Mail<P>>;

/// Mail handled per loop turn, so a flood of hand-offs cannot starve a loop's own sockets.
const MAX_MAIL_PER_TURN: usize = 256;

/// The loop that owns the torrent with `hash`, of `shards` loops: the info hash is already
/// uniformly distributed, so its first 8 bytes modulo the count spread torrents evenly.
pub fn shard_of(hash: &InfoHash, shards: usize) -> u32 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(head) % shards.max(1) as u64) as u32
}

/// A loop's mail: its inbox, every loop's mailbox (once linked), and the closures received
/// and not yet run. Every loop holds one (in its [`super::loop_core::LoopCore`]).
pub(crate) struct PostOffice<P: Protocol> {
    inbox: WakeQueue<Mail<P>>,
    own: Mailbox<P>,
    shards: Option<Arc<[Mailbox<P>]>>,
    runs: Vec<Run<P>>,
    buf: Vec<Mail<P>>,
    /// Mail left in the inbox after a capped drain: the next turn must not sleep.
    pub(crate) backlog: bool,
}

impl<P: Protocol> PostOffice<P> {
    /// An inbox that wakes the same eventfd as `disk`'s completions.
    pub(crate) fn new(disk: &DiskBridge) -> PostOffice<P> {
        let (own, inbox) = disk.queue().sibling();
        PostOffice {
            inbox,
            own,
            shards: None,
            runs: Vec::new(),
            buf: Vec::new(),
            backlog: false,
        }
    }

    pub(crate) fn mailbox(&self) -> Mailbox<P> {
        self.own.clone()
    }

    pub(crate) fn link(&mut self, shards: Arc<[Mailbox<P>]>) {
        self.shards = Some(shards);
    }

    /// Takes up to a turn's worth of mail: connections go to `adopt`, closures wait for
    /// [`PostOffice::take_runs`]. Call after the eventfd was consumed (see [`crate::wake`]).
    pub(crate) fn collect(
        &mut self,
        mut adopt: impl FnMut(TcpStream, HandOff),
        mut utp: impl FnMut(UtpMail),
    ) {
        self.backlog = self.inbox.drain(MAX_MAIL_PER_TURN, &mut self.buf);
        for mail in self.buf.drain(..) {
            match mail {
                Mail::Adopt { stream, handoff } => adopt(stream, *handoff),
                Mail::Run(run) => self.runs.push(run),
                Mail::Utp(m) => utp(m),
            }
        }
    }

    /// Posts uTP mail to loop `shard` (dropped where there is no such loop).
    pub(crate) fn send_to(&self, shard: u32, mail: UtpMail) {
        if let Some(mailbox) = self.shards.as_ref().and_then(|s| s.get(shard as usize)) {
            mailbox.send(Mail::Utp(mail));
        }
    }

    /// Closures received, to run with the whole driver in hand.
    pub(crate) fn take_runs(&mut self) -> Vec<Run<P>> {
        std::mem::take(&mut self.runs)
    }

    /// Sends a connection to the loop that owns its torrent. Without such a loop (not linked,
    /// or a shard number out of range) the socket is dropped, which closes it.
    pub(crate) fn forward(&self, stream: TcpStream, handoff: HandOff) {
        if let Some(mailbox) = self
            .shards
            .as_ref()
            .and_then(|s| s.get(handoff.shard() as usize))
        {
            mailbox.send(Mail::Adopt {
                stream,
                handoff: Box::new(handoff),
            });
        }
    }
}

/// `n` drivers of kind `backend`, one per loop, linked so they can hand connections to each
/// other, each listening on `listen` (one shared port) if given. `session(i)` makes loop `i`'s
/// session (or other [`Protocol`]); every loop should use the same peer id.
pub fn build<P: Protocol>(
    backend: Backend,
    n: usize,
    listen: Option<SocketAddr>,
    disk: Arc<DiskPool>,
    epoch: Instant,
    mut session: impl FnMut(u32) -> P,
) -> io::Result<Vec<Driver<P>>> {
    let n = n.max(1);
    let mut listeners: Vec<Option<std::net::TcpListener>> = match listen {
        Some(addr) => bind_listeners(addr, n)?.into_iter().map(Some).collect(),
        None => (0..n).map(|_| None).collect(),
    };
    let mut drivers = Vec::with_capacity(n);
    for (i, listener) in listeners.iter_mut().enumerate() {
        drivers.push(Driver::new(
            backend,
            session(i as u32),
            listener.take(),
            disk.clone(),
            epoch,
        )?);
    }
    let mailboxes: Arc<[Mailbox<P>]> = drivers.iter().map(Driver::mailbox).collect();
    for (i, d) in drivers.iter_mut().enumerate() {
        d.link(mailboxes.clone());
        d.core_mut().utp.shard = i as u32;
    }
    Ok(drivers)
}

/// How long an idle loop thread sleeps between checks; mail wakes it at once regardless.
const IDLE_TURN: Duration = Duration::from_secs(1);

/// A loop running on its own thread. Dropping it stops the loop and waits for the thread.
pub struct LoopThread<P: Protocol + Send + 'static = Session> {
    mailbox: Mailbox<P>,
    handle: Option<JoinHandle<io::Result<()>>>,
}

impl<P: Protocol + Send + 'static> LoopThread<P> {
    /// Starts `driver`'s loop on a new thread named `name`. Events go to `on_event`.
    pub fn spawn(
        mut driver: Driver<P>,
        name: String,
        mut on_event: impl FnMut(&Event) + Send + 'static,
    ) -> io::Result<LoopThread<P>> {
        let mailbox = driver.mailbox();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            while !driver.is_stopped() {
                driver.turn(IDLE_TURN, &mut on_event)?;
            }
            // Dropped here, on the thread that turned it (an io_uring requirement).
            drop(driver);
            Ok(())
        })?;
        Ok(LoopThread {
            mailbox,
            handle: Some(handle),
        })
    }

    /// Runs `f` on the loop between two turns.
    pub fn post(&self, f: impl FnOnce(&mut Driver<P>) + Send + 'static) {
        self.mailbox.send(Mail::Run(Box::new(f)));
    }

    /// Stops the loop and returns how it ended.
    pub fn stop(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        self.mailbox.send(Mail::Run(Box::new(Driver::stop)));
        handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("an event loop thread panicked")))
    }
}

impl<P: Protocol + Send + 'static> Drop for LoopThread<P> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_hashes() {
        let mut counts = [0u32; 4];
        for i in 0..4000u32 {
            let mut bytes = [0u8; 20];
            // Info hashes are SHA1 outputs: any well-mixed bytes stand in for them.
            let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
            for b in bytes.iter_mut() {
                x ^= x >> 33;
                x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
                *b = x as u8;
            }
            counts[shard_of(&InfoHash::from_bytes(bytes), 4) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
        assert_eq!(shard_of(&InfoHash::from_bytes([7; 20]), 1), 0);
    }
}
