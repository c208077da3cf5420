//! Announcing every active torrent: one [`Announcer`] per torrent, all sharing one
//! [`TrackerIo`] (one UDP socket, HTTP on worker threads), pumped by the client's
//! housekeeping thread. Peers the trackers return (less ourselves) go back to the caller for
//! the torrent's loop. A torrent paused or removed, and every torrent at shutdown, sends
//! `stopped` (boundedly) before its announcer goes; a torrent that completes sends
//! `completed` at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::events::{ClientEvent, Publisher};
use crate::core::{InfoHash, PeerId, Time};
use crate::tracker::{Announcer, Mode, Progress, TrackerConfig, TrackerEvent, TrackerIo};

struct Entry {
    owner: u64,
    announcer: Announcer,
    completed: bool,
}

/// Every torrent's announcer.
pub(crate) struct Trackers {
    io: Option<TrackerIo>,
    active: BTreeMap<InfoHash, Entry>,
    /// Announcers sending `stopped`, kept until done or their deadline.
    stopping: Vec<(Entry, Instant)>,
    next_owner: u64,
    epoch: Instant,
    peer_id: PeerId,
    port: u16,
    /// Announce round trips (first packet to reply), microseconds.
    latency_us: hdrhistogram::Histogram<u64>,
    events: Publisher,
}

/// How long `stopped` may take before an announcer is dropped anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a `completed` the torrent just earned may take to reach its trackers at shutdown
/// before `stopped` goes instead.
const COMPLETED_TIMEOUT: Duration = Duration::from_secs(3);

impl Trackers {
    /// Announcers for a client with `peer_id` listening on `port`. Without a UDP socket (an
    /// unusual sandbox) nothing announces, with a warning.
    pub(crate) fn new(peer_id: PeerId, port: u16, events: Publisher) -> Trackers {
        let io = match TrackerIo::new() {
            Ok(io) => Some(io),
            Err(e) => {
                tracing::warn!("trackers disabled: cannot open a UDP socket: {e}");
                None
            }
        };
        Trackers {
            io,
            active: BTreeMap::new(),
            stopping: Vec::new(),
            next_owner: 0,
            epoch: Instant::now(),
            peer_id,
            port,
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            events,
        }
    }

    /// Announce round trips so far, microseconds.
    pub(crate) fn latency_us(&self) -> &hdrhistogram::Histogram<u64> {
        &self.latency_us
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Starts announcing `hash` to `tiers` (nothing if they name no tracker).
    pub(crate) fn add(&mut self, hash: InfoHash, tiers: &[Vec<String>], progress: Progress) {
        if tiers.iter().all(Vec::is_empty) || self.active.contains_key(&hash) {
            return;
        }
        let now = self.now();
        self.next_owner += 1;
        let announcer = Announcer::new(
            TrackerConfig::default(),
            Mode::Regular,
            hash,
            self.peer_id,
            self.port,
            tiers,
            progress,
            super::random_u64(),
            now,
        );
        self.active.insert(
            hash,
            Entry {
                owner: self.next_owner,
                announcer,
                completed: progress.left == 0,
            },
        );
    }

    /// Tells `hash`'s trackers it completed, now rather than at the next progress refresh.
    pub(crate) fn completed(&mut self, hash: InfoHash, progress: Progress) {
        let now = self.now();
        if let Some(e) = self.active.get_mut(&hash) {
            e.announcer.set_progress(progress);
            if !e.completed {
                e.completed = true;
                e.announcer.completed(now);
            }
        }
    }

    /// Asks `hash`'s trackers to announce now (see [`Announcer::reannounce`]); the next pump
    /// sends the requests.
    pub(crate) fn reannounce(&mut self, hash: InfoHash) {
        let now = self.now();
        if let Some(e) = self.active.get_mut(&hash) {
            e.announcer.reannounce(now);
        }
    }

    /// Sends `stopped` for `hash` and forgets it once the trackers answered (or 5 s passed).
    pub(crate) fn remove(&mut self, hash: InfoHash) {
        if let Some(mut e) = self.active.remove(&hash) {
            let now = self.now();
            e.announcer.stop(now);
            self.stopping.push((e, Instant::now() + STOP_TIMEOUT));
        }
    }

    /// Feeds progress, fires timers, carries out requests; returns the peers trackers gave,
    /// without our own address.
    pub(crate) fn pump(
        &mut self,
        progress: &BTreeMap<InfoHash, Progress>,
    ) -> Vec<(InfoHash, Vec<SocketAddr>)> {
        let now = self.now();
        let Some(io) = self.io.as_mut() else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for (hash, e) in self.active.iter_mut() {
            if let Some(p) = progress.get(hash) {
                e.announcer.set_progress(*p);
                if !e.completed && p.left == 0 {
                    e.completed = true;
                    e.announcer.completed(now);
                }
            }
            io.pump(e.owner, &mut e.announcer, now);
            while let Some(event) = e.announcer.poll_event() {
                match event {
                    TrackerEvent::Announced {
                        url,
                        response,
                        took,
                        ..
                    } => {
                        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
                        self.latency_us.saturating_record(micros.max(1));
                        // Trackers list us among the peers; dialling ourselves is pointless.
                        let own = self.port;
                        let peers: Vec<SocketAddr> = response
                            .peers
                            .into_iter()
                            .filter(|p| {
                                !(p.port() == own
                                    && (p.ip().is_loopback() || p.ip().is_unspecified()))
                            })
                            .collect();
                        self.events.publish(ClientEvent::TrackerReplied {
                            info_hash: *hash,
                            url,
                            peers: peers.len(),
                            seeders: response.seeders,
                            leechers: response.leechers,
                        });
                        if !peers.is_empty() {
                            found.push((*hash, peers));
                        }
                    }
                    TrackerEvent::Error { url, error } => {
                        tracing::warn!("tracker {url} ({hash}): {error}");
                        self.events.publish(ClientEvent::TrackerFailed {
                            info_hash: *hash,
                            url,
                            error: error.to_string(),
                        });
                    }
                    TrackerEvent::Warning { url, message } => {
                        tracing::warn!("tracker {url} ({hash}) warns: {message}")
                    }
                    TrackerEvent::Scraped { .. } => {}
                }
            }
        }
        let mut i = 0;
        while i < self.stopping.len() {
            let (e, deadline) = &mut self.stopping[i];
            io.pump(e.owner, &mut e.announcer, now);
            while e.announcer.poll_event().is_some() {}
            if e.announcer.is_done() || Instant::now() >= *deadline {
                let (e, _) = self.stopping.swap_remove(i);
                io.forget(e.owner);
            } else {
                i += 1;
            }
        }
        found
    }

    /// Lets `completed` announces still on their way reach the trackers (for at most 3 s),
    /// then sends `stopped` for every torrent and waits (at most 5 s more) for the trackers.
    pub(crate) fn stop_all(&mut self) {
        let empty = BTreeMap::new();
        let started = Instant::now();
        while self
            .active
            .values()
            .any(|e| e.announcer.completed_pending())
            && started.elapsed() < COMPLETED_TIMEOUT
        {
            self.pump(&empty);
            std::thread::sleep(Duration::from_millis(5));
        }
        let hashes: Vec<InfoHash> = self.active.keys().copied().collect();
        for h in hashes {
            self.remove(h);
        }
        while !self.stopping.is_empty() {
            self.pump(&empty);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
