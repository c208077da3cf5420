//! Announcing every active torrent: one [`Announcer`] per torrent, all sharing one
//! [`TrackerIo`] (one UDP socket, HTTP on worker threads), pumped by the client's
//! housekeeping thread. Peers the trackers return (less ourselves) go back to the caller for
//! the torrent's loop. A torrent paused or removed, and every torrent at shutdown, sends
//! `stopped` (boundedly) before its announcer goes; a torrent that completes sends
//! `completed` at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::events::{ClientEvent, Publisher};
use crate::core::{InfoHash, PeerId, Time};
use crate::tracker::{
    Announcer, Mode, Progress, TrackerConfig, TrackerError, TrackerEvent, TrackerIo,
};

/// Where a tracker stands with a torrent, as its last exchange left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerState {
    /// Not asked yet in this run (or the torrent is not running).
    NotContacted,
    /// Its last announce was answered.
    Working,
    /// An announce to it is on its way.
    Updating,
    /// Its last announce failed (refused, unreachable, a bad reply).
    NotWorking,
}

/// One tracker of a torrent: what its last announce (or scrape) said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackerStatus {
    /// Its announce URL.
    pub url: String,
    /// Its tier, from 0.
    pub tier: usize,
    /// Where it stands.
    pub state: TrackerState,
    /// The tracker's `failure reason` when it refused, what went wrong when it failed
    /// otherwise, its `warning message` when it answered with one; empty else.
    pub message: String,
    /// Peers it gave in its last reply.
    pub peers: Option<u32>,
    /// Seeds it counts (last announce or scrape), if it said.
    pub seeds: Option<u32>,
    /// Leechers it counts, if it said.
    pub leeches: Option<u32>,
    /// Completed downloads it counts (scrape only), if known.
    pub downloaded: Option<u32>,
    /// How long until the next regular announce goes to it (the tracker in use, while none
    /// is in flight).
    pub next_announce: Option<Duration>,
}

/// What the last exchange with a tracker said (kept while the torrent pauses).
#[derive(Debug, Clone, Default)]
struct Last {
    working: Option<bool>,
    message: String,
    peers: Option<u32>,
    seeds: Option<u32>,
    leeches: Option<u32>,
    downloaded: Option<u32>,
}

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
    /// What each torrent's trackers last said, by URL; kept while a torrent is paused,
    /// dropped by [`Trackers::forget`].
    last: BTreeMap<InfoHash, BTreeMap<String, Last>>,
    next_owner: u64,
    epoch: Instant,
    peer_id: PeerId,
    port: u16,
    /// BEP 7's `ipv6` parameter for HTTP announces ([`crate::net_addr::announce_ipv6`]).
    ipv6: Option<std::net::Ipv6Addr>,
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
    /// Announcers for a client with `peer_id` listening on `port`, telling HTTP trackers
    /// `ipv6` if given. Without a UDP socket (an unusual sandbox) nothing announces, with a
    /// warning.
    pub(crate) fn new(
        peer_id: PeerId,
        port: u16,
        ipv6: Option<std::net::Ipv6Addr>,
        events: Publisher,
    ) -> Trackers {
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
            last: BTreeMap::new(),
            next_owner: 0,
            epoch: Instant::now(),
            peer_id,
            port,
            ipv6,
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
            TrackerConfig {
                ipv6: self.ipv6,
                ..TrackerConfig::default()
            },
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

    /// Each of `tiers`' trackers, none contacted (a client that announces nothing).
    pub(crate) fn unknown(tiers: &[Vec<String>]) -> Vec<TrackerStatus> {
        let mut out = Vec::new();
        for (tier, urls) in tiers.iter().enumerate() {
            for url in urls {
                out.push(TrackerStatus {
                    url: url.clone(),
                    tier,
                    state: TrackerState::NotContacted,
                    message: String::new(),
                    peers: None,
                    seeds: None,
                    leeches: None,
                    downloaded: None,
                    next_announce: None,
                });
            }
        }
        out
    }

    /// Drops what `hash`'s trackers said (the torrent left the client).
    pub(crate) fn forget(&mut self, hash: InfoHash) {
        self.last.remove(&hash);
    }

    /// Each of `tiers`' trackers as `hash`'s announcer last left it, in tier order.
    pub(crate) fn status(&self, hash: InfoHash, tiers: &[Vec<String>]) -> Vec<TrackerStatus> {
        let now = self.now();
        let announcer = self.active.get(&hash).map(|e| &e.announcer);
        let in_flight = announcer.map(Announcer::in_flight).unwrap_or_default();
        // The tracker in use: the first of the order that answered.
        let next = announcer.and_then(|a| {
            let at = a.next_announce()?;
            let url = a.order().into_iter().find(|u| {
                self.last
                    .get(&hash)
                    .and_then(|l| l.get(*u))
                    .is_some_and(|l| l.working == Some(true))
            })?;
            Some((url.to_string(), at.saturating_since(now)))
        });
        let empty = BTreeMap::new();
        let last = self.last.get(&hash).unwrap_or(&empty);
        let mut out = Vec::new();
        for (tier, urls) in tiers.iter().enumerate() {
            for url in urls {
                let l = last.get(url).cloned().unwrap_or_default();
                let state = if in_flight.contains(&url.as_str()) {
                    TrackerState::Updating
                } else {
                    match l.working {
                        None => TrackerState::NotContacted,
                        Some(true) => TrackerState::Working,
                        Some(false) => TrackerState::NotWorking,
                    }
                };
                out.push(TrackerStatus {
                    url: url.clone(),
                    tier,
                    state,
                    message: l.message,
                    peers: l.peers,
                    seeds: l.seeds,
                    leeches: l.leeches,
                    downloaded: l.downloaded,
                    next_announce: next.as_ref().filter(|(u, _)| u == url).map(|(_, d)| *d),
                });
            }
        }
        out
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
                            .map(crate::net_addr::unmap)
                            .filter(|p| {
                                !(p.port() == own
                                    && (p.ip().is_loopback() || p.ip().is_unspecified()))
                            })
                            .collect();
                        let last = self.last.entry(*hash).or_default();
                        let l = last.entry(url.clone()).or_default();
                        l.working = Some(true);
                        l.message = response.warning.clone().unwrap_or_default();
                        l.peers = Some(peers.len() as u32);
                        l.seeds = response.seeders.or(l.seeds);
                        l.leeches = response.leechers.or(l.leeches);
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
                        let last = self.last.entry(*hash).or_default();
                        let l = last.entry(url.clone()).or_default();
                        l.working = Some(false);
                        l.message = match &error {
                            // The tracker's own words, as qBittorrent shows them.
                            TrackerError::Failure(reason) => reason.clone(),
                            other => other.to_string(),
                        };
                        self.events.publish(ClientEvent::TrackerFailed {
                            info_hash: *hash,
                            url,
                            error: error.to_string(),
                        });
                    }
                    TrackerEvent::Warning { url, message } => {
                        tracing::warn!("tracker {url} ({hash}) warns: {message}")
                    }
                    TrackerEvent::Scraped { url, stats } => {
                        let last = self.last.entry(*hash).or_default();
                        let l = last.entry(url).or_default();
                        for (_, st) in stats.iter().filter(|(h, _)| h == hash) {
                            l.seeds = Some(st.seeders);
                            l.leeches = Some(st.leechers);
                            l.downloaded = Some(st.completed);
                        }
                    }
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

    /// Lets `completed` announces still on their way, or due within 3 s, reach the trackers,
    /// then sends `stopped` for every torrent and waits (at most 5 s more) for the trackers.
    pub(crate) fn stop_all(&mut self) {
        let empty = BTreeMap::new();
        let started = Instant::now();
        let deadline = self.now() + COMPLETED_TIMEOUT;
        // Only a `completed` that can still go out in time is waited for: one held back by
        // every tracker's back-off (an unreachable tracker) would only cost the wait.
        while self
            .active
            .values()
            .any(|e| e.announcer.completed_due_by(deadline))
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
