//! [`Announcer`]: one torrent's tracker state machine, sans-IO.
//!
//! ## States
//!
//! The announcer is `Running`, `Stopping` or `Done`. While running, at most one exchange is
//! in flight (`active`); when none is and `next_announce` has come, it picks the first
//! tracker in tier order (BEP 12: tiers in the torrent's order, trackers shuffled within a
//! tier once, at start) that is not backing off and not inside its `min interval`.
//!
//! Each tracker (`Link`) has at most one exchange in flight:
//!
//! ```text
//!   UDP:  Idle -> Connect(tid) -> Request(tid, connection id) -> Idle
//!         (a connection id younger than 60 s skips Connect; a timeout retransmits the same
//!          packet after 15 * 2^n s, n <= udp_max_retransmits, reconnecting first if the
//!          connection id expired meanwhile; then the exchange fails)
//!   HTTP: Idle -> Http(id) -> Idle           (one reply or the HTTP time-out)
//! ```
//!
//! An answer promotes the tracker to the front of its tier, marks `started` as delivered to
//! it, clears a pending `completed`, and schedules the next announce after the tracker's
//! `interval`. Regular announces never come sooner than the tracker's `min interval` (nor
//! [`TrackerConfig::min_interval_floor`]); the events (`started`, `completed` once,
//! `stopped`) go out when they happen, as libtorrent and Transmission send them, so the
//! tracker's counts are right even for a client that finishes and exits at once.
//! A failure backs the tracker off (`backoff_base * 2^(failures-1)`, at most `backoff_max`,
//! plus up to a quarter of random jitter), reports the error once per tracker until it
//! answers again, and falls through to the next tracker, then the next tier, at once.
//!
//! `stop` cancels the running exchange and sends `stopped` to every tracker that saw
//! `started`, waiting at most `stop_timeout`. The one-shot modes ([`Mode::Once`],
//! [`Mode::Scrape`]) try each tracker once in the same order and end at the first answer or
//! when every tracker has failed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::url::{Scheme, TrackerUrl};
use super::{http, udp};
use super::{AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeStats, TrackerError};
use crate::core::{InfoHash, PeerId, Rng, Time};
use crate::limits;

/// The announcer's knobs, with the defaults real clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Peers asked for per announce. 200 is libtorrent's default; more rarely helps.
    pub numwant: u32,
    /// BEP 15's base retransmission time-out: 15 s, doubled after every retransmission.
    pub udp_timeout: Duration,
    /// Retransmissions of one UDP request before the tracker counts as failed (BEP 15
    /// allows n up to 8, about an hour in all). 3 gives up after 15+30+60+120 s = 3.75 min,
    /// so a dead first tracker does not keep a torrent without peers for an hour; the
    /// back-off then retries it later. Tests lower this and `udp_timeout`.
    pub udp_max_retransmits: u32,
    /// How long one HTTP exchange may take (connect, request, whole reply).
    pub http_timeout: Duration,
    /// How long a UDP connection id stays usable: BEP 15 says one minute.
    pub connection_id_lifetime: Duration,
    /// The interval when a tracker gives none: 30 minutes, as most trackers use.
    pub default_interval: Duration,
    /// The shortest interval we accept from any tracker, so one that says `interval 0`
    /// cannot make us hammer it.
    pub min_interval_floor: Duration,
    /// The first back-off after a failure.
    pub backoff_base: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
    /// How long `stopped` announces may take at shutdown.
    pub stop_timeout: Duration,
    /// Our global IPv6 address, sent as BEP 7's `ipv6` parameter on HTTP announces so a
    /// tracker reached over IPv4 can hand it to IPv6 peers. `None` (the default) sends none;
    /// the client sets it only where it listens on IPv6 and has a global unicast address
    /// (see `Client::start`).
    pub ipv6: Option<std::net::Ipv6Addr>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            numwant: 200,
            udp_timeout: Duration::from_secs(15),
            udp_max_retransmits: 3,
            http_timeout: Duration::from_secs(30),
            connection_id_lifetime: Duration::from_secs(60),
            default_interval: Duration::from_secs(30 * 60),
            min_interval_floor: Duration::from_secs(60),
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(60 * 60),
            stop_timeout: Duration::from_secs(5),
            ipv6: None,
        }
    }
}

/// What the announcer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A torrent's life: `started`, regular announces, `completed`, `stopped`.
    Regular,
    /// One announce with this event, to the first tracker that answers.
    Once(AnnounceEvent),
    /// One scrape of these hashes, from the first tracker that answers.
    Scrape(Vec<InfoHash>),
}

/// The torrent's counters, handed in by the driver before announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes received.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
}

/// A tracker of this announcer, as named in requests and replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u32);

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Send `packet` to `host:port` (resolving the host if needed) from the UDP socket of
    /// the address family it resolves to, and hand back datagrams from that address whose
    /// transaction id is `transaction` through [`Announcer::handle_udp`].
    Udp {
        /// The tracker.
        link: LinkId,
        /// Host name or IP literal.
        host: String,
        /// UDP port.
        port: u16,
        /// The transaction id in `packet`.
        transaction: u32,
        /// The datagram.
        packet: Vec<u8>,
    },
    /// Make this HTTP(S) request and hand back the reply through [`Announcer::handle_http`].
    Http {
        /// The tracker.
        link: LinkId,
        /// Names this request in the reply.
        id: u64,
        /// Where to connect (scheme, host, port).
        url: TrackerUrl,
        /// The complete request bytes.
        request: Vec<u8>,
        /// Give up after this long.
        timeout: Duration,
    },
}

/// What happened, for the driver and the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerEvent {
    /// A tracker answered an announce; its peers are in `response.peers`.
    Announced {
        /// The tracker.
        url: String,
        /// The event we sent.
        event: AnnounceEvent,
        /// Its reply.
        response: AnnounceResponse,
        /// From the exchange's first packet (a UDP connect, where one was needed) to the
        /// reply, retransmissions included.
        took: Duration,
    },
    /// A tracker answered a scrape.
    Scraped {
        /// The tracker.
        url: String,
        /// Counts per requested hash it knew.
        stats: Vec<(InfoHash, ScrapeStats)>,
    },
    /// A tracker failed; reported once until it answers again.
    Error {
        /// The tracker.
        url: String,
        /// Why.
        error: TrackerError,
    },
    /// A tracker answered with a `warning message` (reported when it changes).
    Warning {
        /// The tracker.
        url: String,
        /// Its text.
        message: String,
    },
}

#[derive(Debug, Clone)]
enum Job {
    Announce(AnnounceRequest),
    Scrape(Vec<InfoHash>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    UdpConnect {
        transaction: u32,
    },
    UdpRequest {
        transaction: u32,
        connection_id: u64,
    },
    Http {
        id: u64,
    },
}

#[derive(Debug, Clone)]
struct Pending {
    job: Job,
    stage: Stage,
    /// Retransmissions so far of the current UDP packet (n in 15 * 2^n).
    attempt: u32,
    /// When the exchange began, for the time-out message.
    began: Time,
    deadline: Time,
    /// The last packet sent, for retransmission.
    packet: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Link {
    url: TrackerUrl,
    connection: Option<(u64, Time)>,
    pending: Option<Pending>,
    failures: u32,
    retry_at: Time,
    error_reported: bool,
    /// Failed in a one-shot round.
    failed_once: bool,
    last_warning: Option<String>,
    started: bool,
    last_announce: Option<Time>,
    min_interval: Duration,
    /// The `min interval` the tracker itself last gave, if any (a forced reannounce waits
    /// for this one only).
    tracker_min_interval: Option<Duration>,
    tracker_id: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Stopping { deadline: Time },
    Done,
}

/// One torrent's tracker client. See the module documentation for its states.
#[derive(Debug)]
pub struct Announcer {
    config: TrackerConfig,
    mode: Mode,
    info_hash: InfoHash,
    peer_id: PeerId,
    port: u16,
    key: u32,
    rng: Rng,
    links: Vec<Link>,
    /// Indices into `links`, tier by tier, in the order they are tried.
    tiers: Vec<Vec<usize>>,
    progress: Progress,
    state: State,
    next_announce: Time,
    active: Option<usize>,
    completed_pending: bool,
    /// Whether the torrent had bytes left when we started, so `completed` makes sense.
    started_incomplete: bool,
    next_http_id: u64,
    requests: VecDeque<Request>,
    events: VecDeque<TrackerEvent>,
    /// Datagrams dropped because their transaction id or length did not fit.
    ignored_packets: u64,
}

impl Announcer {
    /// An announcer for the trackers in `tiers` (the torrent's BEP 12 tiers). URLs that do
    /// not parse are reported once as [`TrackerEvent::Error`] and left out. The first
    /// announce is due at `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: TrackerConfig,
        mode: Mode,
        info_hash: InfoHash,
        peer_id: PeerId,
        port: u16,
        tiers: &[Vec<String>],
        progress: Progress,
        seed: u64,
        now: Time,
    ) -> Announcer {
        let mut rng = Rng::new(seed);
        let mut links = Vec::new();
        let mut order = Vec::new();
        let mut events = VecDeque::new();
        for tier in tiers {
            let mut indices = Vec::new();
            for raw in tier {
                if links.len() >= limits::MAX_TRACKERS {
                    break;
                }
                match TrackerUrl::parse(raw) {
                    Ok(url) => {
                        indices.push(links.len());
                        links.push(Link::new(url, now));
                    }
                    Err(error) => events.push_back(TrackerEvent::Error {
                        url: raw.clone(),
                        error,
                    }),
                }
            }
            rng.shuffle(&mut indices);
            if !indices.is_empty() {
                order.push(indices);
            }
        }
        let key = rng.next_u64() as u32;
        Announcer {
            config,
            mode,
            info_hash,
            peer_id,
            port,
            key,
            rng,
            links,
            tiers: order,
            progress,
            state: State::Running,
            next_announce: now,
            active: None,
            completed_pending: false,
            started_incomplete: progress.left > 0,
            next_http_id: 1,
            requests: VecDeque::new(),
            events,
            ignored_packets: 0,
        }
    }

    /// The trackers in the order they would be tried now (tier by tier).
    pub fn order(&self) -> Vec<&str> {
        self.tiers
            .iter()
            .flatten()
            .map(|&i| self.links[i].url.raw.as_str())
            .collect()
    }

    /// The trackers with an exchange in flight now (an announce or scrape on its way).
    pub fn in_flight(&self) -> Vec<&str> {
        self.links
            .iter()
            .filter(|l| l.pending.is_some())
            .map(|l| l.url.raw.as_str())
            .collect()
    }

    /// When the next regular announce is due, while running with none in flight.
    pub fn next_announce(&self) -> Option<Time> {
        (self.state == State::Running && self.mode == Mode::Regular && self.active.is_none())
            .then_some(self.next_announce)
    }

    /// The URL of a link.
    pub fn url(&self, link: LinkId) -> Option<&TrackerUrl> {
        self.links.get(link.0 as usize).map(|l| &l.url)
    }

    /// Updates the counters sent with the next announce.
    pub fn set_progress(&mut self, progress: Progress) {
        self.progress = progress;
    }

    /// The torrent finished downloading: `completed` goes out now (or as soon as the
    /// exchange in flight ends). Only once, and never for a torrent that started complete.
    pub fn completed(&mut self, now: Time) {
        if !self.started_incomplete || self.mode != Mode::Regular || self.state != State::Running {
            return;
        }
        self.started_incomplete = false;
        self.completed_pending = true;
        if self.active.is_none() {
            self.next_announce = self.next_announce.min(now);
        }
        self.step(now);
    }

    /// Announces to every tracker now, as libtorrent's `force_reannounce` does behind
    /// qBittorrent's `reannounce`: each tracker not in an exchange gets one at once, its
    /// back-off and [`TrackerConfig::min_interval_floor`] not waited for. Only a `min
    /// interval` the tracker itself gave is honoured: a tracker still inside it is left to
    /// the regular schedule, brought forward to when it passes. Regular mode only.
    pub fn reannounce(&mut self, now: Time) {
        if self.state != State::Running || self.mode != Mode::Regular {
            return;
        }
        let order: Vec<usize> = self.tiers.iter().flatten().copied().collect();
        let mut later: Option<Time> = None;
        for i in order {
            let l = &self.links[i];
            if l.pending.is_some() {
                continue;
            }
            if let (Some(last), Some(min)) = (l.last_announce, l.tracker_min_interval) {
                let ready = last + min;
                if ready > now {
                    later = Some(later.map_or(ready, |t: Time| t.min(ready)));
                    continue;
                }
            }
            self.links[i].retry_at = now;
            let job = Job::Announce(self.announce_request(i, self.event_for(i)));
            self.begin(i, job, now);
        }
        if let (Some(at), None) = (later, self.active) {
            self.next_announce = self.next_announce.min(at);
        }
    }

    /// Sends `stopped` to every tracker that saw `started`; [`Announcer::is_done`] turns
    /// true when they have answered, failed, or `stop_timeout` passed.
    pub fn stop(&mut self, now: Time) {
        if self.state != State::Running {
            return;
        }
        if let Some(i) = self.active.take() {
            self.links[i].pending = None;
        }
        self.state = State::Stopping {
            deadline: now + self.config.stop_timeout,
        };
        for i in 0..self.links.len() {
            if self.links[i].started && self.mode == Mode::Regular {
                let job = Job::Announce(self.announce_request(i, AnnounceEvent::Stopped));
                self.begin(i, job, now);
            }
        }
        self.finish_stop_if_idle();
    }

    /// Whether a `completed` is waiting to be acknowledged by a tracker.
    pub fn completed_pending(&self) -> bool {
        self.completed_pending
    }

    /// Whether a pending `completed` is on its way or will be by `deadline`: an exchange is
    /// in flight, or the next announce is due by then. A `completed` that waits out every
    /// tracker's back-off is not, so a client shutting down need not wait for it.
    pub fn completed_due_by(&self, deadline: Time) -> bool {
        self.completed_pending
            && self.state == State::Running
            && (self.active.is_some() || self.next_announce <= deadline)
    }

    /// True when nothing more will happen: a one-shot round ended, or `stop` finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Datagrams ignored so far because they were too short to route or answered no
    /// transaction in flight.
    pub fn ignored_packets(&self) -> u64 {
        self.ignored_packets
    }

    /// The next request for the driver.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TrackerEvent> {
        self.events.pop_front()
    }

    /// When [`Announcer::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let pending = self
            .links
            .iter()
            .filter_map(|l| l.pending.as_ref().map(|p| p.deadline))
            .min();
        let other = match self.state {
            State::Running if self.active.is_none() && !self.links.is_empty() => {
                Some(self.next_announce)
            }
            State::Stopping { deadline } => Some(deadline),
            _ => None,
        };
        match (pending, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers: retransmissions, time-outs, announces that are due.
    pub fn handle_timeout(&mut self, now: Time) {
        for i in 0..self.links.len() {
            let Some(p) = self.links[i].pending.as_ref() else {
                continue;
            };
            if p.deadline > now {
                continue;
            }
            match p.stage {
                Stage::Http { .. } => {
                    let waited = now.saturating_since(p.began);
                    self.fail(i, TrackerError::Timeout(waited), now);
                }
                Stage::UdpConnect { .. } | Stage::UdpRequest { .. } => self.retransmit(i, now),
            }
        }
        if let State::Stopping { deadline } = self.state {
            if now >= deadline {
                for l in &mut self.links {
                    l.pending = None;
                }
                self.state = State::Done;
            }
        }
        self.step(now);
    }

    /// A datagram from the tracker `link` (the driver checked the source address). `ipv6`
    /// says which family the tracker was reached over, which fixes the peer entry size.
    pub fn handle_udp(&mut self, link: LinkId, ipv6: bool, packet: &[u8], now: Time) {
        let i = link.0 as usize;
        let Some(p) = self.links.get(i).and_then(|l| l.pending.as_ref()) else {
            self.ignored_packets += 1;
            return;
        };
        let expected = match p.stage {
            Stage::UdpConnect { transaction } | Stage::UdpRequest { transaction, .. } => {
                transaction
            }
            Stage::Http { .. } => {
                self.ignored_packets += 1;
                return;
            }
        };
        // Too short to hold a transaction id, or someone else's: not an answer; keep
        // waiting, and the retransmission timer still runs.
        if udp::peek_transaction(packet) != Some(expected) {
            self.ignored_packets += 1;
            return;
        }
        let scrape_count = match &p.job {
            Job::Scrape(hashes) => hashes.len().min(limits::MAX_SCRAPE_HASHES_UDP),
            Job::Announce(_) => 0,
        };
        let stage = p.stage;
        let reply = match udp::decode_reply(packet, ipv6, scrape_count) {
            Ok(r) => r,
            Err(e) => return self.fail(i, e, now),
        };
        match (stage, reply) {
            (_, udp::UdpReply::Error { message, .. }) => {
                self.fail(i, TrackerError::Failure(message), now)
            }
            (Stage::UdpConnect { .. }, udp::UdpReply::Connect { connection_id, .. }) => {
                self.links[i].connection = Some((connection_id, now));
                self.send_udp_request(i, connection_id, now);
            }
            (
                Stage::UdpRequest { .. },
                udp::UdpReply::Announce {
                    interval,
                    leechers,
                    seeders,
                    peers,
                    ..
                },
            ) if matches!(self.pending_job(i), Some(Job::Announce(_))) => {
                let response = AnnounceResponse {
                    interval: udp::interval(interval),
                    seeders: Some(seeders),
                    leechers: Some(leechers),
                    peers,
                    ..AnnounceResponse::default()
                };
                self.announced(i, response, now);
            }
            (Stage::UdpRequest { .. }, udp::UdpReply::Scrape { stats, .. }) => {
                let Some(Job::Scrape(hashes)) = self.pending_job(i) else {
                    return self.fail(
                        i,
                        TrackerError::UdpMalformed("unexpected scrape reply"),
                        now,
                    );
                };
                let stats = hashes.iter().copied().zip(stats).collect();
                self.scraped(i, stats, now);
            }
            _ => self.fail(
                i,
                TrackerError::UdpMalformed("reply action does not match the request"),
                now,
            ),
        }
    }

    /// The outcome of HTTP request `id` to `link`: the status and body, or why there is
    /// none.
    pub fn handle_http(
        &mut self,
        link: LinkId,
        id: u64,
        reply: Result<(u16, Vec<u8>), TrackerError>,
        now: Time,
    ) {
        let i = link.0 as usize;
        let Some(p) = self.links.get(i).and_then(|l| l.pending.as_ref()) else {
            return;
        };
        if p.stage != (Stage::Http { id }) {
            return;
        }
        let job = p.job.clone();
        let (status, body) = match reply {
            Ok(r) => r,
            Err(e) => return self.fail(i, e, now),
        };
        if status != 200 {
            // Some trackers explain a refusal in bencode even with an error status.
            let error = match http::parse_announce(&body) {
                Err(TrackerError::Failure(text)) => TrackerError::Failure(text),
                _ => TrackerError::HttpStatus(status),
            };
            return self.fail(i, error, now);
        }
        match job {
            Job::Announce(_) => match http::parse_announce(&body) {
                Ok(response) => self.announced(i, response, now),
                Err(e) => self.fail(i, e, now),
            },
            Job::Scrape(hashes) => match http::parse_scrape(&body, &hashes) {
                Ok(stats) => self.scraped(i, stats, now),
                Err(e) => self.fail(i, e, now),
            },
        }
    }

    /// The driver could not carry out a request for `link` (name resolution, a socket
    /// error). It counts as that tracker failing.
    pub fn handle_failure(&mut self, link: LinkId, error: TrackerError, now: Time) {
        let i = link.0 as usize;
        if self.links.get(i).is_some_and(|l| l.pending.is_some()) {
            self.fail(i, error, now);
        }
    }

    fn pending_job(&self, i: usize) -> Option<&Job> {
        self.links[i].pending.as_ref().map(|p| &p.job)
    }

    fn announce_request(&self, i: usize, event: AnnounceEvent) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: self.progress.uploaded,
            downloaded: self.progress.downloaded,
            left: self.progress.left,
            event,
            numwant: if event == AnnounceEvent::Stopped {
                0
            } else {
                self.config.numwant
            },
            key: self.key,
            tracker_id: self.links[i].tracker_id.clone(),
            ipv6: self.config.ipv6,
        }
    }

    /// Starts what is due: while running with nothing in flight, the next announce or
    /// one-shot attempt.
    fn step(&mut self, now: Time) {
        if self.state != State::Running || self.active.is_some() || now < self.next_announce {
            return;
        }
        let one_shot = self.mode != Mode::Regular;
        let mut earliest: Option<Time> = None;
        let mut pick = None;
        for &i in self.tiers.iter().flatten() {
            let l = &self.links[i];
            if l.pending.is_some() {
                // In an exchange of its own (a forced reannounce).
                continue;
            }
            if one_shot {
                if !l.failed_once {
                    pick = Some(i);
                    break;
                }
                continue;
            }
            let event = self.event_for(i);
            let mut ready_at = l.retry_at;
            if event == AnnounceEvent::None {
                if let Some(last) = l.last_announce {
                    ready_at = ready_at.max(last + l.min_interval);
                }
            }
            if ready_at <= now {
                pick = Some(i);
                break;
            }
            earliest = Some(earliest.map_or(ready_at, |e: Time| e.min(ready_at)));
        }
        let Some(i) = pick else {
            if one_shot || self.links.is_empty() {
                self.state = State::Done;
            } else if let Some(at) = earliest {
                self.next_announce = at;
            }
            return;
        };
        let job = match &self.mode {
            Mode::Regular => Job::Announce(self.announce_request(i, self.event_for(i))),
            Mode::Once(event) => Job::Announce(self.announce_request(i, *event)),
            Mode::Scrape(hashes) => Job::Scrape(hashes.clone()),
        };
        self.active = Some(i);
        self.begin(i, job, now);
    }

    fn event_for(&self, i: usize) -> AnnounceEvent {
        if !self.links[i].started {
            AnnounceEvent::Started
        } else if self.completed_pending {
            AnnounceEvent::Completed
        } else {
            AnnounceEvent::None
        }
    }

    /// Starts an exchange with link `i`.
    fn begin(&mut self, i: usize, job: Job, now: Time) {
        let link = &self.links[i];
        match link.url.scheme {
            Scheme::Udp => {
                let fresh = link.connection.filter(|&(_, at)| {
                    now.saturating_since(at) < self.config.connection_id_lifetime
                });
                self.links[i].pending = Some(Pending {
                    job,
                    stage: Stage::UdpConnect { transaction: 0 },
                    attempt: 0,
                    began: now,
                    deadline: now,
                    packet: Vec::new(),
                });
                match fresh {
                    Some((connection_id, _)) => self.send_udp_request(i, connection_id, now),
                    None => self.send_udp_connect(i, now),
                }
            }
            Scheme::Http | Scheme::Https => {
                let target = match &job {
                    Job::Announce(req) => Ok(http::announce_target(&link.url, req)),
                    Job::Scrape(hashes) => http::scrape_target(&link.url, hashes),
                };
                let target = match target {
                    Ok(t) => t,
                    Err(e) => {
                        self.links[i].pending = Some(Pending {
                            job,
                            stage: Stage::Http { id: 0 },
                            attempt: 0,
                            began: now,
                            deadline: now,
                            packet: Vec::new(),
                        });
                        return self.fail(i, e, now);
                    }
                };
                let id = self.next_http_id;
                self.next_http_id += 1;
                let request = http::request(&link.url, &target);
                self.requests.push_back(Request::Http {
                    link: LinkId(i as u32),
                    id,
                    url: link.url.clone(),
                    request,
                    timeout: self.config.http_timeout,
                });
                self.links[i].pending = Some(Pending {
                    job,
                    stage: Stage::Http { id },
                    attempt: 0,
                    began: now,
                    deadline: now + self.config.http_timeout,
                    packet: Vec::new(),
                });
            }
        }
    }

    fn transaction(&mut self) -> u32 {
        self.rng.next_u64() as u32
    }

    fn udp_deadline(&self, attempt: u32, now: Time) -> Time {
        now + self
            .config
            .udp_timeout
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
    }

    fn send_udp_connect(&mut self, i: usize, now: Time) {
        let transaction = self.transaction();
        let mut packet = Vec::with_capacity(16);
        udp::encode_connect(&mut packet, transaction);
        self.send_udp(i, Stage::UdpConnect { transaction }, packet, now);
    }

    fn send_udp_request(&mut self, i: usize, connection_id: u64, now: Time) {
        let transaction = self.transaction();
        let mut packet = Vec::with_capacity(98);
        match self.pending_job(i) {
            Some(Job::Announce(req)) => {
                udp::encode_announce(&mut packet, connection_id, transaction, req)
            }
            Some(Job::Scrape(hashes)) => {
                udp::encode_scrape(&mut packet, connection_id, transaction, hashes)
            }
            None => return,
        }
        self.send_udp(
            i,
            Stage::UdpRequest {
                transaction,
                connection_id,
            },
            packet,
            now,
        );
    }

    /// Records a new UDP packet as the pending one (retransmission count reset) and queues it.
    fn send_udp(&mut self, i: usize, stage: Stage, packet: Vec<u8>, now: Time) {
        let deadline = self.udp_deadline(0, now);
        let Some(p) = self.links[i].pending.as_mut() else {
            return;
        };
        p.stage = stage;
        p.attempt = 0;
        p.deadline = deadline;
        p.packet = packet;
        self.queue_udp(i);
    }

    fn queue_udp(&mut self, i: usize) {
        let link = &self.links[i];
        let Some(p) = link.pending.as_ref() else {
            return;
        };
        let transaction = match p.stage {
            Stage::UdpConnect { transaction } | Stage::UdpRequest { transaction, .. } => {
                transaction
            }
            Stage::Http { .. } => return,
        };
        self.requests.push_back(Request::Udp {
            link: LinkId(i as u32),
            host: link.url.host.clone(),
            port: link.url.port,
            transaction,
            packet: p.packet.clone(),
        });
    }

    fn retransmit(&mut self, i: usize, now: Time) {
        let max = match self.state {
            // At shutdown one retransmission at most: the stop deadline bounds it anyway.
            State::Stopping { .. } => self.config.udp_max_retransmits.min(1),
            _ => self.config.udp_max_retransmits,
        };
        let Some(p) = self.links[i].pending.as_ref() else {
            return;
        };
        if p.attempt >= max {
            let waited = now.saturating_since(p.began);
            return self.fail(i, TrackerError::Timeout(waited), now);
        }
        let attempt = p.attempt + 1;
        let stage = p.stage;
        let expired = self.links[i]
            .connection
            .is_none_or(|(_, at)| now.saturating_since(at) >= self.config.connection_id_lifetime);
        if matches!(stage, Stage::UdpRequest { .. }) && expired {
            // The connection id may be dead by now: get a new one first (BEP 15).
            self.links[i].connection = None;
            self.send_udp_connect(i, now);
        }
        let deadline = self.udp_deadline(attempt, now);
        let p = self.links[i].pending.as_mut().expect("checked above");
        p.attempt = attempt;
        p.deadline = deadline;
        if !(matches!(stage, Stage::UdpRequest { .. }) && expired) {
            self.queue_udp(i);
        }
    }

    fn announced(&mut self, i: usize, response: AnnounceResponse, now: Time) {
        let Some(p) = self.links[i].pending.take() else {
            return;
        };
        let Job::Announce(req) = p.job else {
            return;
        };
        let took = now.saturating_since(p.began);
        let floor = self.config.min_interval_floor;
        let link = &mut self.links[i];
        link.failures = 0;
        link.error_reported = false;
        link.retry_at = now;
        link.last_announce = Some(now);
        link.min_interval = response.min_interval.unwrap_or(floor).max(floor);
        link.tracker_min_interval = response.min_interval;
        if response.tracker_id.is_some() {
            link.tracker_id = response.tracker_id.clone();
        }
        link.started = req.event != AnnounceEvent::Stopped;
        if let Some(message) = &response.warning {
            if link.last_warning.as_ref() != Some(message) {
                link.last_warning = Some(message.clone());
                self.events.push_back(TrackerEvent::Warning {
                    url: link.url.raw.clone(),
                    message: message.clone(),
                });
            }
        }
        let interval = if response.interval.is_zero() {
            self.config.default_interval
        } else {
            response.interval
        }
        .max(link.min_interval);
        self.events.push_back(TrackerEvent::Announced {
            url: link.url.raw.clone(),
            event: req.event,
            response,
            took,
        });
        if req.event == AnnounceEvent::Completed {
            self.completed_pending = false;
        }
        if self.state == State::Running && self.mode == Mode::Regular {
            // A `completed` that arrived while this exchange was in flight goes out next.
            self.next_announce = if self.completed_pending {
                now
            } else {
                now + interval
            };
        }
        self.promote(i);
        self.succeeded(i, now);
    }

    fn scraped(&mut self, i: usize, stats: Vec<(InfoHash, ScrapeStats)>, now: Time) {
        self.links[i].pending = None;
        self.links[i].failures = 0;
        self.links[i].error_reported = false;
        self.events.push_back(TrackerEvent::Scraped {
            url: self.links[i].url.raw.clone(),
            stats,
        });
        self.promote(i);
        self.succeeded(i, now);
    }

    /// Common end of a successful exchange.
    fn succeeded(&mut self, i: usize, now: Time) {
        if self.active == Some(i) {
            self.active = None;
        }
        match self.state {
            State::Running if self.mode != Mode::Regular => self.state = State::Done,
            State::Stopping { .. } => self.finish_stop_if_idle(),
            _ => self.step(now),
        }
    }

    fn fail(&mut self, i: usize, error: TrackerError, now: Time) {
        self.links[i].pending = None;
        if let State::Stopping { .. } = self.state {
            self.finish_stop_if_idle();
            return;
        }
        let failures = self.links[i].failures.saturating_add(1);
        let base = self.config.backoff_base.as_micros() as u64;
        let backoff = base
            .saturating_mul(1u64 << (failures - 1).min(20))
            .min(self.config.backoff_max.as_micros() as u64);
        let jitter = self.rng.below(backoff / 4 + 1);
        let link = &mut self.links[i];
        link.failures = failures;
        link.failed_once = true;
        link.retry_at = now + Duration::from_micros(backoff + jitter);
        if !link.error_reported {
            link.error_reported = true;
            self.events.push_back(TrackerEvent::Error {
                url: link.url.raw.clone(),
                error,
            });
        }
        if self.active == Some(i) {
            self.active = None;
            // Fall through to the next tracker at once.
            self.next_announce = self.next_announce.min(now);
        }
        self.step(now);
    }

    /// Moves link `i` to the front of its tier (BEP 12).
    fn promote(&mut self, i: usize) {
        for tier in &mut self.tiers {
            if let Some(pos) = tier.iter().position(|&j| j == i) {
                tier[..=pos].rotate_right(1);
                return;
            }
        }
    }

    fn finish_stop_if_idle(&mut self) {
        if matches!(self.state, State::Stopping { .. })
            && self.links.iter().all(|l| l.pending.is_none())
        {
            self.state = State::Done;
        }
    }
}

impl Link {
    fn new(url: TrackerUrl, now: Time) -> Link {
        Link {
            url,
            connection: None,
            pending: None,
            failures: 0,
            retry_at: now,
            error_reported: false,
            failed_once: false,
            last_warning: None,
            started: false,
            last_announce: None,
            min_interval: Duration::ZERO,
            tracker_min_interval: None,
            tracker_id: None,
        }
    }
}

/// The peers of an [`TrackerEvent::Announced`], for drivers that only want those.
pub fn peers_of(event: &TrackerEvent) -> &[SocketAddr] {
    match event {
        TrackerEvent::Announced { response, .. } => &response.peers,
        _ => &[],
    }
}

#[cfg(test)]
mod tests;
