//! Announcing every active torrent of `serve`: one [`Announcer`] per torrent, all sharing one
//! [`TrackerIo`] (one UDP socket, HTTP on worker threads), pumped by the control thread. Peers
//! the trackers return go to the torrent's loop. A torrent paused or removed, and every torrent
//! at shutdown, sends `stopped` (boundedly) before its announcer goes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringtorrent::core::{InfoHash, PeerId, Time};
use ringtorrent::tracker::{Announcer, Mode, Progress, TrackerConfig, TrackerEvent, TrackerIo};

struct Entry {
    owner: u64,
    announcer: Announcer,
    completed: bool,
}

/// Every torrent's announcer.
pub struct Trackers {
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
}

/// How long `stopped` may take before an announcer is dropped anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl Trackers {
    /// Announcers for a session with `peer_id` listening on `port`. Without a UDP socket (an
    /// unusual sandbox) nothing announces, with a warning.
    pub fn new(peer_id: PeerId, port: u16) -> Trackers {
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
        }
    }

    /// Announce round trips so far, microseconds.
    pub fn latency_us(&self) -> &hdrhistogram::Histogram<u64> {
        &self.latency_us
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Starts announcing `hash` to `tiers` (nothing if it names none).
    pub fn add(&mut self, hash: InfoHash, tiers: &[Vec<String>], progress: Progress) {
        if tiers.is_empty() || self.active.contains_key(&hash) {
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
            super::super::random_u64(),
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

    /// Sends `stopped` for `hash` and forgets it once the trackers answered (or 5 s passed).
    pub fn remove(&mut self, hash: InfoHash) {
        if let Some(mut e) = self.active.remove(&hash) {
            let now = self.now();
            e.announcer.stop(now);
            self.stopping.push((e, Instant::now() + STOP_TIMEOUT));
        }
    }

    /// Feeds progress, fires timers, carries out requests; returns the peers trackers gave.
    pub fn pump(
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
                    TrackerEvent::Announced { response, took, .. } => {
                        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
                        self.latency_us.saturating_record(micros.max(1));
                        if !response.peers.is_empty() {
                            found.push((*hash, response.peers));
                        }
                    }
                    TrackerEvent::Error { url, error } => {
                        tracing::warn!("tracker {url} ({hash}): {error}")
                    }
                    TrackerEvent::Warning { url, message } => {
                        tracing::warn!("tracker {url} ({hash}) warns: {message}")
                    }
                    _ => {}
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

    /// Sends `stopped` for every torrent and waits (at most 5 s) for the trackers.
    pub fn stop_all(&mut self) {
        let hashes: Vec<InfoHash> = self.active.keys().copied().collect();
        for h in hashes {
            self.remove(h);
        }
        let empty = BTreeMap::new();
        while !self.stopping.is_empty() {
            self.pump(&empty);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
