//! Events: what happens to torrents, pushed to every subscriber as it happens.
//!
//! The event loops and the client's housekeeping thread publish; each [`Events`] returned by
//! [`super::Client::subscribe`] has its own queue. A queue is bounded
//! ([`EVENT_QUEUE_CAPACITY`]) so a subscriber that stops reading cannot make the client hold
//! unbounded memory: when it is full the oldest event is dropped and the subscriber gets a
//! [`ClientEvent::Lagged`] with the count before the next one. Publishing never blocks a loop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::core::InfoHash;
use crate::metainfo::Info;

/// Events held for one subscriber before the oldest are dropped. A piece verified is one
/// event; at 16 KiB pieces and 1 GB/s that is 60,000 a second, so a subscriber that reads a
/// few times a second keeps up, and a stalled one costs at most a few MiB.
pub const EVENT_QUEUE_CAPACITY: usize = 65_536;

/// How the pieces of a torrent just added were found on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// Its files were just created: nothing to check.
    New,
    /// Resume data, still true of every file, named the verified pieces.
    Resumed,
    /// The data was hashed, taking `secs`; `resume_rejected` says why resume data was not
    /// used, if there was some.
    Checked {
        /// Seconds the check took.
        secs: f64,
        /// Why resume data was refused, if there was any.
        resume_rejected: Option<String>,
    },
    /// The caller said the data is complete ([`super::AddTorrent::trust_data`]).
    Trusted,
    /// Its files are gone since it was last seen: it is held, not refilled, until resumed.
    Missing,
    /// Added by magnet link: nothing is on disk before the metadata comes.
    Magnet,
}

/// Something that happened to a torrent.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A torrent was added (or reloaded from the state folder).
    Added {
        /// Its info hash.
        info_hash: InfoHash,
        /// Its name (a magnet link's `dn`, or the hash, before the metadata).
        name: String,
        /// Pieces verified on disk.
        verified: u32,
        /// Pieces in all (0 before the metadata).
        pieces: u32,
        /// How those pieces were found.
        source: DataSource,
    },
    /// A magnet link's metadata arrived and matched the info hash.
    MetadataReceived {
        /// Its info hash.
        info_hash: InfoHash,
        /// The verified info dictionary.
        info: Arc<Info>,
    },
    /// A torrent added by magnet link started downloading, its storage opened.
    Started {
        /// Its info hash.
        info_hash: InfoHash,
        /// Pieces verified on disk.
        verified: u32,
    },
    /// A piece passed its hash check.
    PieceVerified {
        /// The torrent.
        info_hash: InfoHash,
        /// The piece.
        piece: u32,
    },
    /// A piece failed its hash check (it will be downloaded again).
    HashFailed {
        /// The torrent.
        info_hash: InfoHash,
        /// The piece.
        piece: u32,
    },
    /// Every wanted piece is verified.
    Completed {
        /// The torrent.
        info_hash: InfoHash,
    },
    /// A peer joined a torrent (its handshake completed).
    PeerConnected {
        /// The torrent.
        info_hash: InfoHash,
        /// The peer.
        addr: SocketAddr,
    },
    /// A peer was banned from a torrent for sending data that failed its hash (smart ban:
    /// its IP is refused from then on).
    PeerBanned {
        /// The torrent.
        info_hash: InfoHash,
        /// The peer.
        addr: SocketAddr,
    },
    /// A tracker answered an announce.
    TrackerReplied {
        /// The torrent.
        info_hash: InfoHash,
        /// The tracker.
        url: String,
        /// Peers it gave.
        peers: usize,
        /// Seeders it counts, if it says.
        seeders: Option<u32>,
        /// Leechers it counts, if it says.
        leechers: Option<u32>,
    },
    /// A tracker failed (reported once until it answers again).
    TrackerFailed {
        /// The torrent.
        info_hash: InfoHash,
        /// The tracker.
        url: String,
        /// Why.
        error: String,
    },
    /// A torrent stopped on an error (its storage failed); it stays in the client.
    Error {
        /// The torrent.
        info_hash: InfoHash,
        /// What happened.
        message: String,
    },
    /// A torrent reached a share limit; `action` (stop, remove or remove with data) follows.
    ShareLimitReached {
        /// The torrent.
        info_hash: InfoHash,
        /// Which: `ratio`, `seeding_time` or `inactive_seeding_time`.
        limit: &'static str,
        /// What is done about it.
        action: super::ShareAction,
    },
    /// A torrent was paused.
    Paused {
        /// The torrent.
        info_hash: InfoHash,
    },
    /// A torrent was resumed.
    Resumed {
        /// The torrent.
        info_hash: InfoHash,
    },
    /// A torrent was removed.
    Removed {
        /// The torrent.
        info_hash: InfoHash,
        /// Whether its files were deleted.
        data_deleted: bool,
    },
    /// This subscriber did not read fast enough: `missed` events were dropped before the
    /// next one.
    Lagged {
        /// Events dropped.
        missed: u64,
    },
}

impl ClientEvent {
    /// The torrent it is about, if any.
    pub fn info_hash(&self) -> Option<InfoHash> {
        use ClientEvent::*;
        match self {
            Added { info_hash, .. }
            | MetadataReceived { info_hash, .. }
            | Started { info_hash, .. }
            | PieceVerified { info_hash, .. }
            | HashFailed { info_hash, .. }
            | Completed { info_hash }
            | PeerConnected { info_hash, .. }
            | PeerBanned { info_hash, .. }
            | TrackerReplied { info_hash, .. }
            | TrackerFailed { info_hash, .. }
            | Error { info_hash, .. }
            | ShareLimitReached { info_hash, .. }
            | Paused { info_hash }
            | Resumed { info_hash }
            | Removed { info_hash, .. } => Some(*info_hash),
            Lagged { .. } => None,
        }
    }
}

struct Queue {
    events: VecDeque<ClientEvent>,
    missed: u64,
    closed: bool,
}

struct Inbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The publishing side: every live subscriber's queue.
#[derive(Clone, Default)]
pub(crate) struct Publisher {
    subscribers: Arc<Mutex<Vec<Weak<Inbox>>>>,
}

impl Publisher {
    /// A new subscriber's receiving end.
    pub(crate) fn subscribe(&self) -> Events {
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                missed: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&inbox));
        Events { inbox }
    }

    /// Delivers `event` to every subscriber; never blocks on a slow one.
    pub(crate) fn publish(&self, event: ClientEvent) {
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for inbox in subs.iter().filter_map(Weak::upgrade) {
            let mut q = inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.events.len() >= EVENT_QUEUE_CAPACITY {
                q.events.pop_front();
                q.missed += 1;
            }
            q.events.push_back(event.clone());
            drop(q);
            inbox.ready.notify_one();
        }
    }

    /// Ends every subscription: receivers get what is queued, then `None`.
    pub(crate) fn close(&self) {
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for inbox in subs.iter().filter_map(Weak::upgrade) {
            inbox.queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            inbox.ready.notify_all();
        }
    }
}

/// One subscriber's events, in the order they happened. Dropping it unsubscribes.
pub struct Events {
    inbox: Arc<Inbox>,
}

impl Events {
    fn take(q: &mut Queue) -> Option<ClientEvent> {
        if q.missed > 0 {
            let missed = std::mem::take(&mut q.missed);
            return Some(ClientEvent::Lagged { missed });
        }
        q.events.pop_front()
    }

    /// The next event, waiting for it; `None` once the client shut down and every event was
    /// read.
    pub fn recv(&self) -> Option<ClientEvent> {
        let mut q = self.inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = Self::take(&mut q) {
                return Some(e);
            }
            if q.closed {
                return None;
            }
            q = self.inbox.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next event if one comes within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<ClientEvent> {
        let deadline = Instant::now() + timeout;
        let mut q = self.inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = Self::take(&mut q) {
                return Some(e);
            }
            let now = Instant::now();
            if q.closed || now >= deadline {
                return None;
            }
            q = self
                .inbox
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<ClientEvent> {
        Self::take(&mut self.inbox.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the client shut down (events may still be queued).
    pub fn is_closed(&self) -> bool {
        self.inbox
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed
    }
}

impl Iterator for Events {
    type Item = ClientEvent;
    fn next(&mut self) -> Option<ClientEvent> {
        self.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(piece: u32) -> ClientEvent {
        ClientEvent::PieceVerified {
            info_hash: InfoHash::from_bytes([1; 20]),
            piece,
        }
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order() {
        let p = Publisher::default();
        let (a, b) = (p.subscribe(), p.subscribe());
        for i in 0..3 {
            p.publish(verified(i));
        }
        for s in [&a, &b] {
            for i in 0..3 {
                match s.try_recv() {
                    Some(ClientEvent::PieceVerified { piece, .. }) => assert_eq!(piece, i),
                    other => panic!("{other:?}"),
                }
            }
            assert!(s.try_recv().is_none());
        }
        // One that left is not published to any more.
        drop(b);
        p.publish(verified(9));
        assert_eq!(p.subscribers.lock().unwrap().len(), 2);
        assert!(a.recv_timeout(Duration::from_millis(10)).is_some());
    }

    #[test]
    fn a_stalled_subscriber_is_bounded_and_told_what_it_missed() {
        let p = Publisher::default();
        let s = p.subscribe();
        for i in 0..(EVENT_QUEUE_CAPACITY as u32 + 5) {
            p.publish(verified(i));
        }
        match s.try_recv() {
            Some(ClientEvent::Lagged { missed }) => assert_eq!(missed, 5),
            other => panic!("{other:?}"),
        }
        match s.try_recv() {
            Some(ClientEvent::PieceVerified { piece, .. }) => assert_eq!(piece, 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn close_wakes_a_waiting_subscriber() {
        let p = Publisher::default();
        let s = p.subscribe();
        let waiter = std::thread::spawn(move || s.recv().is_none());
        std::thread::sleep(Duration::from_millis(20));
        p.close();
        assert!(waiter.join().unwrap());
    }
}
