//! The generator's own model of the swarm: which torrents exist, how popular each is, the
//! simulated peers and where each is in its lifecycle, and the checks of a tracker's replies
//! against that model. No I/O; times are microseconds since the run's epoch.
//!
//! Torrents are global: torrent `g`'s info hash is SHA-1 of `seed` and `g`, so every shard
//! and worker (and `--print-hashes`, which writes a whitelist) agrees on them. A worker owns
//! the torrents `g` with `g % parts == part` (`parts` = shards x workers); taking every k-th
//! torrent of a Zipf ranking leaves a Zipf ranking with the same exponent, so each worker's
//! share has the popularity shape of the whole.
//!
//! A tracker knows a peer by address and announced port; all simulated peers share the
//! generator's address, so each gets a port of its own within its torrent (from 10000 up).
//! The seedbox profile adds one identity (peer id, key, port 6881, one connection id) that
//! announces many torrents as a seeder.
//!
//! The model changes when an announce is *sent* (the tracker applies it on arrival). A reply's
//! counts are compared with the model allowing one difference per other announce in flight on
//! that torrent and per announce whose fate is unknown (it timed out: the tracker may or may
//! not have applied it).
//!
//! What the model expects where trackers differ (is the announcing peer counted? listed? does
//! scrape count downloads? what does numwant 0 mean?) comes from [`Conventions`], learned
//! from the replies themselves (see [`super::conventions`]).

use std::collections::BinaryHeap;

use sha1::{Digest, Sha1};

use super::conventions::{Convention, Conventions};
use crate::core::{InfoHash, PeerId, Rng};
use crate::tracker::AnnounceEvent;

/// How torrent popularity falls off with rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Popularity {
    /// Weight of rank `r` (from 1) is `r^-s`.
    Zipf(f64),
    /// aquatic_udp_load_test's shape: `T/P + exp(6.5 - 500 r / T)` for `T` torrents and `P`
    /// peers (a steep head, then a floor).
    Aquatic,
}

/// The population's settings.
#[derive(Debug, Clone)]
pub struct PopulationConfig {
    /// Seeds hashes, peer ids and every random choice.
    pub seed: u64,
    /// Torrents in the whole run (all shards).
    pub torrents: u32,
    /// Peers in the whole run (all shards).
    pub peers: u32,
    /// Popularity shape.
    pub popularity: Popularity,
    /// Fraction of peers that start as seeders.
    pub seeder_ratio: f64,
    /// Torrents the seedbox identity announces (0: no seedbox), whole run.
    pub seedbox_torrents: u32,
}

/// Torrent `g`'s info hash.
pub fn info_hash(seed: u64, g: u32) -> InfoHash {
    let mut h = Sha1::new();
    h.update(b"ringtorrent tracker-load");
    h.update(seed.to_le_bytes());
    h.update(g.to_le_bytes());
    InfoHash::from_bytes(h.finalize().into())
}

/// Cumulative weights over ranks, for sampling by binary search.
#[derive(Debug, Clone)]
pub struct Sampler {
    cdf: Vec<f64>,
}

impl Sampler {
    /// A sampler over `n` ranks (ranks of the whole run, `stride` apart starting at `first`,
    /// so a worker's share keeps the global shape).
    pub fn new(pop: Popularity, n: usize, first: u32, stride: u32, total: u32, peers: u32) -> Self {
        let mut acc = 0.0;
        let cdf = (0..n)
            .map(|i| {
                let rank = f64::from(first) + (i as f64) * f64::from(stride);
                acc += match pop {
                    Popularity::Zipf(s) => (rank + 1.0).powf(-s),
                    Popularity::Aquatic => {
                        let t = f64::from(total.max(1));
                        t / f64::from(peers.max(1)) + (6.5 - 500.0 * rank / t).exp()
                    }
                };
                acc
            })
            .collect();
        Sampler { cdf }
    }

    /// A rank in `0..n`.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let Some(&total) = self.cdf.last() else {
            return 0;
        };
        let x = rng.unit() * total;
        self.cdf
            .partition_point(|&c| c <= x)
            .min(self.cdf.len() - 1)
    }
}

/// Where a peer is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not announced (or stopped): the tracker should not list it.
    Off,
    /// Announced and not stopped.
    On,
}

/// One simulated peer in one torrent.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Index into the worker's torrents.
    pub torrent: u32,
    /// Stable peer id.
    pub peer_id: PeerId,
    /// Stable key.
    pub key: u32,
    /// Announced port, unique within the torrent.
    pub port: u16,
    /// Which connection id it uses ([`Model::conns`]); the seedbox's entries share one.
    pub conn: u32,
    /// Which of the worker's sockets it sends from.
    pub socket: u16,
    /// Whether it has everything (left = 0).
    pub seeder: bool,
    /// Whether it started as a seeder (a restart after `stopped` starts as that again).
    pub born_seeder: bool,
    /// Lifecycle phase as the model has applied it.
    pub phase: Phase,
    /// The event its next announce carries.
    pub next: AnnounceEvent,
    /// When that announce is due (honouring intervals).
    pub due: u64,
    /// An announce of this peer is in flight.
    pub inflight: bool,
    /// An announce of this peer timed out: the tracker may hold either state.
    pub uncertain: bool,
    /// Announces of its torrent in flight when its own was sent: a tracker may apply any of
    /// them after answering it (replies and requests cross on many sockets and connections).
    pub overlap: u32,
    /// Its next announce (no event) is its first with `left=0`: it finished without telling
    /// the tracker `completed`.
    pub finishing: bool,
}

/// A connection id slot (BEP 15): one per peer, one shared by the seedbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conn {
    /// The id and when it was obtained.
    pub id: Option<(u64, u64)>,
}

/// What the model knows of one torrent.
#[derive(Debug, Clone)]
pub struct TorrentState {
    /// The info hash.
    pub hash: InfoHash,
    /// Peers announced and not stopped, by kind.
    pub seeders: u32,
    /// Peers announced and not stopped, still downloading.
    pub leechers: u32,
    /// `completed` events sent.
    pub completed: u32,
    /// Announces in flight.
    pub inflight: u32,
    /// Announces whose fate is unknown (timed out).
    pub uncertain: u32,
    /// Announces sent so far (each announce's number, to count those sent after it).
    pub seq: u64,
    /// Peer index by announced port, from `FIRST_PORT` up (ports are handed out densely).
    pub ports: Vec<u32>,
    /// The seedbox's peer index in this torrent ([`SEEDBOX_PORT`]), if it announces it.
    pub seedbox: Option<u32>,
}

impl TorrentState {
    /// The peer that announced `port` in this torrent.
    pub fn peer_at(&self, port: u16) -> Option<u32> {
        if port == SEEDBOX_PORT {
            return self.seedbox;
        }
        let i = usize::from(port.checked_sub(FIRST_PORT)?);
        self.ports.get(i).copied()
    }

    /// Peers this torrent has (ordinary ones and the seedbox).
    pub fn peer_count(&self) -> usize {
        self.ports.len() + usize::from(self.seedbox.is_some())
    }
}

/// Lifecycle settings.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// Ignore intervals: a peer's next step is taken whenever it is picked.
    pub hammer: bool,
    /// Chance that a leecher's next announce is `completed`.
    pub complete_chance: f64,
    /// Of those completions, the fraction sent as a plain announce with `left=0` instead of
    /// the `completed` event (a tracker makes the peer a seeder either way, and counts a
    /// download only for the event).
    pub silent_completion: f64,
    /// Chance that a peer's next announce is `stopped`.
    pub stop_chance: f64,
    /// Interval jitter, a fraction (0.1: +-10%).
    pub jitter: f64,
    /// Interval assumed when a reply gives none (HTTP failures, timeouts), microseconds.
    pub default_interval_us: u64,
}

/// The outcome of checking a reply against the model; each `true` field is a counter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Check {
    /// Seeders or leechers differ from the model by more than the tolerance.
    pub counts_wrong: bool,
    /// More peers than numwant.
    pub over_numwant: u32,
    /// The same peer twice.
    pub duplicates: u32,
    /// A peer that is stopped (and not in flight or uncertain).
    pub stopped_returned: u32,
    /// A port no peer of this torrent announced.
    pub unknown: u32,
    /// The announcing peer listed by a tracker that was found never to list it.
    pub self_returned: u32,
    /// A reply that contradicts a convention in a way no other counter names: numwant 0 got
    /// no peers from a tracker found to give its default list then, or a list of every other
    /// live peer left out the announcing peer of a tracker found to list it.
    pub inconsistent: u32,
    /// When asked for and something is wrong: the reply and what the model expected.
    pub example: Option<String>,
}

impl Check {
    /// Whether any check failed.
    pub fn wrong(&self) -> bool {
        self.counts_wrong
            || self.over_numwant > 0
            || self.duplicates > 0
            || self.stopped_returned > 0
            || self.unknown > 0
            || self.self_returned > 0
            || self.inconsistent > 0
    }

    /// The failed checks, in words.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if self.counts_wrong {
            v.push("counts fit no consistent convention".to_string());
        }
        for (n, what) in [
            (self.over_numwant, "peer(s) over numwant"),
            (self.duplicates, "duplicate peer(s)"),
            (self.stopped_returned, "stopped peer(s) returned"),
            (self.unknown, "unknown peer(s)"),
            (self.self_returned, "announcing peer listed"),
            (
                self.inconsistent,
                "against a convention (numwant 0 without peers, or itself missing from a full list)",
            ),
        ] {
            if n > 0 {
                v.push(format!("{n} {what}"));
            }
        }
        v.join(", ")
    }
}

/// One worker's share of the population and the swarm model.
#[derive(Debug)]
pub struct Model {
    /// Torrents this worker owns.
    pub torrents: Vec<TorrentState>,
    /// Their popularity (scrapes pick by it).
    pub sampler: Sampler,
    /// Peers this worker owns.
    pub peers: Vec<Peer>,
    /// Connection id slots.
    pub conns: Vec<Conn>,
    /// Lifecycle settings.
    pub life: Lifecycle,
    /// The target's conventions, as given or detected so far.
    pub conventions: Conventions,
    /// The longest peer list any reply gave (a tracker's cap is at least this).
    max_listed: u32,
    /// (Reverse due time, peer) for honour mode.
    due: BinaryHeap<(std::cmp::Reverse<u64>, u32)>,
    /// Per peer: stopped and neither in flight nor uncertain (a tracker must not list it).
    /// Kept beside [`Model::peers`] so that checking a reply's 30-odd peers reads one dense
    /// byte each instead of a 56-byte `Peer` each, scattered over megabytes.
    quiet: Vec<bool>,
    /// Per peer: how many announces its torrent had sent when its last `stopped` was
    /// answered. Only an announce sent after that (numbered higher) reached the tracker
    /// surely after it applied the `stopped`: requests leave over many sockets and
    /// connections, so one sent earlier, even after the `stopped` was sent, may have been
    /// answered before it, and may list the peer.
    stopped_seq: Vec<u64>,
}

/// The port the seedbox announces.
pub const SEEDBOX_PORT: u16 = 6881;
/// The first port of ordinary peers.
const FIRST_PORT: u16 = 10_000;

impl Model {
    /// Builds part `part` of `parts` of the population, with `sockets` sockets to spread
    /// peers over.
    pub fn build(
        cfg: &PopulationConfig,
        part: u32,
        parts: u32,
        sockets: u16,
        life: Lifecycle,
    ) -> Model {
        let mut rng = Rng::new(cfg.seed ^ (u64::from(part) << 32) ^ 0x0074_7261_636b_6572);
        let owned: Vec<u32> = (part..cfg.torrents).step_by(parts as usize).collect();
        let mut torrents: Vec<TorrentState> = owned
            .iter()
            .map(|&g| TorrentState {
                hash: info_hash(cfg.seed, g),
                seeders: 0,
                leechers: 0,
                completed: 0,
                inflight: 0,
                uncertain: 0,
                seq: 0,
                ports: Vec::new(),
                seedbox: None,
            })
            .collect();
        let sampler = Sampler::new(
            cfg.popularity,
            owned.len(),
            part,
            parts,
            cfg.torrents,
            cfg.peers,
        );
        let share = cfg.peers / parts + u32::from(part < cfg.peers % parts);
        let mut peers = Vec::with_capacity(share as usize);
        let mut next_port: Vec<u16> = vec![FIRST_PORT; torrents.len()];
        let mut conns = Vec::with_capacity(share as usize + 1);
        if !torrents.is_empty() {
            for _ in 0..share {
                let t = sampler.sample(&mut rng);
                if next_port[t] == u16::MAX {
                    continue; // over 55k peers in one torrent: skip the rest
                }
                let port = next_port[t];
                next_port[t] += 1;
                let seeder = rng.chance(cfg.seeder_ratio);
                conns.push(Conn::default());
                peers.push(Peer {
                    torrent: t as u32,
                    peer_id: random_id(&mut rng),
                    key: rng.next_u64() as u32,
                    port,
                    conn: conns.len() as u32 - 1,
                    socket: rng.below(u64::from(sockets.max(1))) as u16,
                    seeder,
                    born_seeder: seeder,
                    phase: Phase::Off,
                    next: AnnounceEvent::Started,
                    due: 0,
                    inflight: false,
                    uncertain: false,
                    overlap: 0,
                    finishing: false,
                });
            }
            let seedbox =
                cfg.seedbox_torrents / parts + u32::from(part < cfg.seedbox_torrents % parts);
            if seedbox > 0 {
                let mut id_rng = Rng::new(cfg.seed ^ 0x5eed_b0c5);
                let peer_id = random_id(&mut id_rng);
                let key = id_rng.next_u64() as u32;
                conns.push(Conn::default());
                let conn = conns.len() as u32 - 1;
                for t in 0..(seedbox as usize).min(torrents.len()) {
                    peers.push(Peer {
                        torrent: t as u32,
                        peer_id,
                        key,
                        port: SEEDBOX_PORT,
                        conn,
                        socket: 0,
                        seeder: true,
                        born_seeder: true,
                        phase: Phase::Off,
                        next: AnnounceEvent::Started,
                        due: 0,
                        inflight: false,
                        uncertain: false,
                        overlap: 0,
                        finishing: false,
                    });
                }
            }
        }
        for (i, p) in peers.iter().enumerate() {
            let t = &mut torrents[p.torrent as usize];
            if p.port == SEEDBOX_PORT {
                t.seedbox = Some(i as u32);
            } else {
                debug_assert_eq!(usize::from(p.port - FIRST_PORT), t.ports.len());
                t.ports.push(i as u32);
            }
        }
        let quiet = vec![true; peers.len()];
        // Arrivals spread over the first interval-ish (honour mode): the first second gets a
        // burst no real swarm sends. Hammer mode ignores due times.
        let spread = life.default_interval_us.min(10_000_000);
        let due = peers
            .iter_mut()
            .enumerate()
            .map(|(i, p)| {
                p.due = rng.below(spread.max(1));
                (std::cmp::Reverse(p.due), i as u32)
            })
            .collect();
        Model {
            torrents,
            sampler,
            peers,
            conns,
            life,
            conventions: Conventions::auto(),
            max_listed: 0,
            due,
            stopped_seq: vec![0; quiet.len()],
            quiet,
        }
    }

    /// Brings peer `i`'s entry in [`Model::quiet`] up to date after a change of its state.
    fn sync(&mut self, i: u32) {
        let p = &self.peers[i as usize];
        self.quiet[i as usize] = p.phase == Phase::Off && !p.inflight && !p.uncertain;
    }

    /// The peer whose announce is due first, if due by `now` (honour mode), taken off the
    /// schedule; or, in hammer mode, a random peer with nothing in flight (a few tries).
    pub fn next_peer(&mut self, now: u64, rng: &mut Rng) -> Option<u32> {
        if self.peers.is_empty() {
            return None;
        }
        if self.life.hammer {
            for _ in 0..4 {
                let i = rng.index(self.peers.len());
                if !self.peers[i].inflight {
                    return Some(i as u32);
                }
            }
            return None;
        }
        match self.due.peek() {
            Some(&(std::cmp::Reverse(t), i)) if t <= now => {
                self.due.pop();
                Some(i)
            }
            _ => None,
        }
    }

    /// Applies peer `i`'s next announce to the model as it is sent; returns its event and
    /// its number within the torrent (for [`Model::check_announce`]).
    pub fn on_send(&mut self, i: u32) -> (AnnounceEvent, u64) {
        let p = &mut self.peers[i as usize];
        let t = &mut self.torrents[p.torrent as usize];
        p.inflight = true;
        p.overlap = t.inflight;
        t.inflight += 1;
        t.seq += 1;
        let seq = t.seq;
        let event = p.next;
        match event {
            AnnounceEvent::Started => {
                if p.phase == Phase::Off {
                    p.phase = Phase::On;
                    if p.seeder {
                        t.seeders += 1;
                    } else {
                        t.leechers += 1;
                    }
                }
            }
            AnnounceEvent::Completed => {
                if p.phase == Phase::On && !p.seeder {
                    t.leechers -= 1;
                    t.seeders += 1;
                }
                p.seeder = true;
                t.completed += 1;
            }
            AnnounceEvent::Stopped => {
                if p.phase == Phase::On {
                    if p.seeder {
                        t.seeders -= 1;
                    } else {
                        t.leechers -= 1;
                    }
                }
                p.phase = Phase::Off;
            }
            AnnounceEvent::None => {
                if p.finishing && p.phase == Phase::On && !p.seeder {
                    t.leechers -= 1;
                    t.seeders += 1;
                    p.seeder = true;
                }
                p.finishing = false;
            }
        }
        self.sync(i);
        (event, seq)
    }

    /// Peer `i`'s announce ended: `interval_us` from the reply (`None` when there was no
    /// usable reply), `min_interval_us` likewise; `lost` when it timed out. Picks its next
    /// step and schedules it.
    pub fn on_done(
        &mut self,
        i: u32,
        now: u64,
        interval_us: Option<u64>,
        min_interval_us: Option<u64>,
        lost: bool,
        rng: &mut Rng,
    ) {
        let life = self.life;
        let p = &mut self.peers[i as usize];
        let t = &mut self.torrents[p.torrent as usize];
        p.inflight = false;
        t.inflight = t.inflight.saturating_sub(1);
        if lost {
            p.uncertain = true;
            t.uncertain += 1;
        }
        let interval = interval_us.unwrap_or(life.default_interval_us).max(1);
        let floor = min_interval_us.unwrap_or(0);
        let jittered = {
            let f = 1.0 + life.jitter * (2.0 * rng.unit() - 1.0);
            ((interval as f64 * f) as u64).max(floor)
        };
        p.finishing = false;
        if p.phase == Phase::Off {
            self.stopped_seq[i as usize] = t.seq;
        }
        let (next, wait) = match p.phase {
            Phase::Off => {
                p.seeder = p.born_seeder;
                (
                    AnnounceEvent::Started,
                    (interval as f64 * rng.unit()) as u64,
                )
            }
            Phase::On => {
                if !p.seeder && rng.chance(life.complete_chance) {
                    let silent = rng.chance(life.silent_completion);
                    p.finishing = silent;
                    (
                        if silent {
                            AnnounceEvent::None
                        } else {
                            AnnounceEvent::Completed
                        },
                        (interval as f64 * rng.unit()) as u64,
                    )
                } else if rng.chance(life.stop_chance) {
                    (
                        AnnounceEvent::Stopped,
                        (interval as f64 * rng.unit()) as u64,
                    )
                } else {
                    (AnnounceEvent::None, jittered)
                }
            }
        };
        p.next = next;
        p.due = now + wait;
        let due = p.due;
        self.sync(i);
        if !life.hammer {
            self.due.push((std::cmp::Reverse(due), i));
        }
    }

    /// Marks peer `i` busy (a connect for its announce is in flight) without applying
    /// anything.
    pub fn reserve(&mut self, i: u32) {
        self.peers[i as usize].inflight = true;
        self.sync(i);
    }

    /// Undoes [`Model::reserve`].
    pub fn unreserve(&mut self, i: u32) {
        self.peers[i as usize].inflight = false;
        self.sync(i);
    }

    /// Puts peer `i` back on the schedule with its step untaken (its announce was not sent
    /// or was not the model's business), due again at `now` plus up to a second.
    pub fn release(&mut self, i: u32, now: u64, rng: &mut Rng) {
        if !self.life.hammer {
            let due = now + rng.below(1_000_000);
            self.peers[i as usize].due = due;
            self.due.push((std::cmp::Reverse(due), i));
        }
    }

    /// Checks an announce reply for peer `i` (already applied by [`Model::on_send`], which
    /// numbered it `seq`; still counted in flight) against the model and the target's
    /// conventions (learning them while they are unknown). Replies from several sockets are
    /// read in any order, so the counts may differ by one for every other announce in flight
    /// and every announce sent after this one. With `explain`, a wrong reply's
    /// [`Check::example`] says what came and what was expected.
    #[allow(clippy::too_many_arguments)]
    pub fn check_announce(
        &mut self,
        i: u32,
        seq: u64,
        numwant: u32,
        seeders: Option<u32>,
        leechers: Option<u32>,
        ports: impl Iterator<Item = u16>,
        explain: bool,
    ) -> Check {
        let p = &self.peers[i as usize];
        let t = &self.torrents[p.torrent as usize];
        let later = u32::try_from(t.seq.saturating_sub(seq)).unwrap_or(u32::MAX);
        let tolerance = t
            .inflight
            .saturating_sub(1)
            .max(p.overlap)
            .saturating_add(later)
            .saturating_add(t.uncertain);
        // The announcing peer's own share of the model's counts (none once it stopped).
        let (own_s, own_l) = match (p.phase, p.seeder) {
            (Phase::On, true) => (1, 0),
            (Phase::On, false) => (0, 1),
            (Phase::Off, _) => (0, 0),
        };
        let (want_s, want_l) = (t.seeders, t.leechers);
        let off = |got: Option<u32>, want: u32| got.is_some_and(|g| g.abs_diff(want) > tolerance);
        let fits_counted = !off(seeders, want_s) && !off(leechers, want_l);
        let fits_uncounted = !off(seeders, want_s.saturating_sub(own_s))
            && !off(leechers, want_l.saturating_sub(own_l));
        let others_on = (want_s + want_l).saturating_sub(own_s + own_l);
        let (own_port, on) = (p.port, p.phase == Phase::On);
        let mut c = Check::default();
        let mut seen = Vec::with_capacity(64);
        let mut own_listed = false;
        for port in ports {
            if seen.contains(&port) {
                c.duplicates += 1;
                continue;
            }
            seen.push(port);
            if port == own_port {
                own_listed = true;
                continue;
            }
            match t.peer_at(port) {
                None => c.unknown += 1,
                Some(j) => {
                    if self.quiet[j as usize] && self.stopped_seq[j as usize] < seq {
                        c.stopped_returned += 1;
                    }
                }
            }
        }
        let listed = seen.len() as u32;
        c.counts_wrong =
            !self
                .conventions
                .judge(Convention::CountsSelf, fits_counted, fits_uncounted);
        // Listing itself is evidence that the tracker may; leaving itself out of a list that
        // holds every other live peer, with room for more (numwant and a longer list seen
        // before), is evidence that it never does. Only without concurrency (tolerance 0).
        let (may, never) = if own_listed {
            (true, false)
        } else {
            let complete = on
                && tolerance == 0
                && numwant > 0
                && listed == others_on
                && listed < numwant
                && listed < self.max_listed;
            (!complete, true)
        };
        if !self.conventions.judge(Convention::ReturnsSelf, may, never) {
            if own_listed {
                c.self_returned = 1;
            } else {
                c.inconsistent = 1;
            }
        }
        if numwant == 0 {
            // Peers for numwant 0 mean "the default list"; none while others were surely
            // there means "no peers".
            let (default, none) = if listed > 0 {
                (true, false)
            } else {
                (others_on <= tolerance, true)
            };
            if !self
                .conventions
                .judge(Convention::ZeroNumwantDefault, default, none)
            {
                if listed > 0 {
                    c.over_numwant = listed + c.duplicates;
                } else {
                    c.inconsistent = 1;
                }
            }
        } else {
            c.over_numwant = (listed + c.duplicates).saturating_sub(numwant);
        }
        self.max_listed = self.max_listed.max(listed);
        if explain && c.wrong() {
            let p = &self.peers[i as usize];
            let t = &self.torrents[p.torrent as usize];
            c.example = Some(format!(
                "announce of torrent {} by the {} at port {} (event {:?}, numwant {numwant}): \
                 the tracker said seeders {} leechers {} and listed {listed} peer(s){}; the \
                 model holds {want_s} seeders and {want_l} leechers counting the announcing \
                 peer ({}), {others_on} other live peer(s), tolerance {tolerance}; {}",
                t.hash.to_hex(),
                if p.seeder { "seeder" } else { "leecher" },
                p.port,
                p.next,
                seeders.map_or("-".to_string(), |v| v.to_string()),
                leechers.map_or("-".to_string(), |v| v.to_string()),
                if own_listed { " including itself" } else { "" },
                match self.conventions.get(Convention::CountsSelf) {
                    Some(true) => "counted by this tracker",
                    Some(false) => "left out by this tracker",
                    None => "not yet known whether this tracker counts it",
                },
                c.describe()
            ));
        }
        c
    }

    /// Checks a scrape's counts for worker torrent `t` against the model, allowing one
    /// difference per announce in flight now or when the scrape was sent (`mark` was
    /// [`Model::seq`] then), sent after the scrape, or of unknown fate; `completed` against
    /// the [`Convention::CountsDownloads`] convention. `None` when they agree, else what is
    /// wrong.
    pub fn check_scrape(
        &mut self,
        t: u32,
        mark: u64,
        seeders: u32,
        leechers: u32,
        completed: u32,
    ) -> Option<String> {
        let ts = &self.torrents[t as usize];
        let (seq, overlap) = (mark >> 24, (mark & u64::from(MARK_INFLIGHT_MAX)) as u32);
        let later = u32::try_from(ts.seq.saturating_sub(seq)).unwrap_or(u32::MAX);
        let tol = ts
            .inflight
            .max(overlap)
            .saturating_add(later)
            .saturating_add(ts.uncertain);
        let (want_s, want_l, want_c) = (ts.seeders, ts.leechers, ts.completed);
        let peers_ok = seeders.abs_diff(want_s) <= tol && leechers.abs_diff(want_l) <= tol;
        let counted = completed.abs_diff(want_c) <= tol;
        let downloads_ok =
            self.conventions
                .judge(Convention::CountsDownloads, counted, completed == 0);
        if peers_ok && downloads_ok {
            return None;
        }
        Some(format!(
            "scrape of torrent {}: the tracker said seeders {seeders} leechers {leechers} \
             downloaded {completed}; the model holds {want_s} seeders, {want_l} leechers, \
             {want_c} completed events ({}), tolerance {tol}",
            ts.hash.to_hex(),
            match self.conventions.get(Convention::CountsDownloads) {
                Some(true) => "this tracker counts them",
                Some(false) => "this tracker reports 0",
                None => "not yet known whether this tracker counts them",
            }
        ))
    }

    /// A mark of torrent `t`'s state, taken when a scrape is sent: its announce count so far
    /// and how many were in flight (a tracker may apply those after answering the scrape).
    pub fn seq(&self, t: u32) -> u64 {
        let t = &self.torrents[t as usize];
        (t.seq << 24) | u64::from(t.inflight.min(MARK_INFLIGHT_MAX))
    }

    /// The `left` a peer announces.
    pub fn left(&self, i: u32) -> u64 {
        if self.peers[i as usize].seeder {
            0
        } else {
            1 << 30
        }
    }
}

/// The most announces in flight a scrape's mark ([`Model::seq`]) records: its low 24 bits.
const MARK_INFLIGHT_MAX: u32 = (1 << 24) - 1;

fn random_id(rng: &mut Rng) -> PeerId {
    let mut tail = [0u8; 12];
    rng.fill(&mut tail);
    PeerId::generate(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(hammer: bool) -> Lifecycle {
        Lifecycle {
            hammer,
            complete_chance: 0.2,
            silent_completion: 0.5,
            stop_chance: 0.1,
            jitter: 0.1,
            default_interval_us: 1_000_000,
        }
    }

    fn cfg() -> PopulationConfig {
        PopulationConfig {
            seed: 1,
            torrents: 100,
            peers: 1000,
            popularity: Popularity::Zipf(1.0),
            seeder_ratio: 0.5,
            seedbox_torrents: 10,
        }
    }

    #[test]
    fn parts_split_torrents_and_peers_and_keep_ports_unique() {
        let parts: Vec<Model> = (0..3)
            .map(|p| Model::build(&cfg(), p, 3, 4, life(true)))
            .collect();
        assert_eq!(parts.iter().map(|m| m.torrents.len()).sum::<usize>(), 100);
        // 1000 ordinary peers plus 10 seedbox entries.
        assert_eq!(parts.iter().map(|m| m.peers.len()).sum::<usize>(), 1010);
        for m in &parts {
            let ports: usize = m.torrents.iter().map(|t| t.peer_count()).sum();
            assert_eq!(ports, m.peers.len());
        }
        // Zipf: the most popular torrent of part 0 (global rank 0) has the most peers.
        let m = &parts[0];
        let counts: Vec<usize> = m.torrents.iter().map(|t| t.peer_count()).collect();
        assert!(counts[0] > counts[counts.len() - 1] * 5, "{counts:?}");
    }

    #[test]
    fn lifecycle_keeps_counts() {
        let mut m = Model::build(&cfg(), 0, 1, 1, life(true));
        let mut rng = Rng::new(3);
        for step in 0..20_000u64 {
            let Some(i) = m.next_peer(step, &mut rng) else {
                continue;
            };
            let (_, seq) = m.on_send(i);
            let c = m.check_announce(i, seq, 50, None, None, std::iter::empty(), false);
            assert_eq!(c, Check::default());
            m.on_done(i, step, Some(1_000_000), None, false, &mut rng);
        }
        for (ti, t) in m.torrents.iter().enumerate() {
            let on = |seed: bool| {
                m.peers
                    .iter()
                    .filter(|p| {
                        p.torrent as usize == ti && p.phase == Phase::On && p.seeder == seed
                    })
                    .count() as u32
            };
            assert_eq!((t.seeders, t.leechers), (on(true), on(false)));
            assert_eq!(t.inflight, 0);
        }
        for (i, p) in m.peers.iter().enumerate() {
            let quiet = p.phase == Phase::Off && !p.inflight && !p.uncertain;
            assert_eq!(m.quiet[i], quiet, "peer {i}");
        }
        assert!(m.torrents.iter().any(|t| t.completed > 0));
    }

    #[test]
    fn a_reply_may_miss_announces_that_were_in_flight_when_it_was_asked() {
        let mut m = Model::build(&cfg(), 0, 1, 1, life(true));
        let t = m.peers[0].torrent;
        let peers: Vec<u32> = (0..m.peers.len() as u32)
            .filter(|&j| m.peers[j as usize].torrent == t)
            .take(2)
            .collect();
        let (b, a) = (peers[0], peers[1]);
        let before = (
            m.torrents[t as usize].seeders,
            m.torrents[t as usize].leechers,
        );
        let mark = m.seq(t);
        // B's `started` goes out, then A's; the tracker answers B, then A as if B had not
        // come yet (it may apply B after answering A).
        let (_, _) = m.on_send(b);
        let (_, seq_a) = m.on_send(a);
        let mut rng = Rng::new(1);
        m.on_done(b, 0, Some(1_000_000), None, false, &mut rng);
        let (s, l) = before;
        let a_peer = m.peers[a as usize].seeder;
        let (s, l) = if a_peer { (s + 1, l) } else { (s, l + 1) };
        let c = m.check_announce(a, seq_a, 50, Some(s), Some(l), std::iter::empty(), false);
        assert!(!c.counts_wrong, "{c:?}");
        // Off by two is more than one overlapping announce explains.
        let c = m.check_announce(a, seq_a, 50, Some(s + 2), Some(l), std::iter::empty(), true);
        assert!(c.counts_wrong);
        // A scrape sent before both may see neither, both or either.
        let (s0, l0) = before;
        assert!(c.example.is_some_and(|e| e.contains("tolerance 1")));
        assert_eq!(m.check_scrape(t, mark, s0, l0, 0), None);
        assert!(m.check_scrape(t, mark, s0 + 5, l0, 0).is_some());
    }

    #[test]
    fn checks_find_what_is_wrong() {
        let mut m = Model::build(&cfg(), 0, 1, 1, life(true));
        let i = 0;
        let (_, seq) = m.on_send(i);
        let t = m.peers[0].torrent as usize;
        let port = m.peers[0].port;
        let (s, l) = (m.torrents[t].seeders, m.torrents[t].leechers);
        assert_eq!(
            m.check_announce(i, seq, 50, Some(s), Some(l), [port].into_iter(), false),
            Check::default()
        );
        let c = m.check_announce(
            i,
            seq,
            1,
            Some(s + 5),
            Some(l),
            [port, port, 1].into_iter(),
            false,
        );
        assert!(c.counts_wrong);
        assert_eq!((c.duplicates, c.unknown, c.over_numwant), (1, 1, 2));
    }

    /// A tracker applying announces one at a time, with a convention: counts and lists with
    /// or without the announcing peer, downloads counted or not, numwant 0 as none or 30, and
    /// optionally a rule it breaks.
    struct Sim {
        counts_self: bool,
        counts_downloads: bool,
        zero_default: bool,
        fault: Option<&'static str>,
        /// Per worker torrent: (port, seeder) of live peers, and `completed` events.
        swarms: Vec<(Vec<(u16, bool)>, u32)>,
        stopped: Vec<Vec<u16>>,
    }

    impl Sim {
        fn new(
            m: &Model,
            counts_self: bool,
            zero_default: bool,
            fault: Option<&'static str>,
        ) -> Sim {
            Sim {
                counts_self,
                counts_downloads: counts_self,
                zero_default,
                fault,
                swarms: vec![(Vec::new(), 0); m.torrents.len()],
                stopped: vec![Vec::new(); m.torrents.len()],
            }
        }

        /// (seeders, leechers, ports) for peer `i`'s announce.
        fn announce(
            &mut self,
            m: &Model,
            i: u32,
            event: AnnounceEvent,
            numwant: u32,
        ) -> (u32, u32, Vec<u16>) {
            let p = &m.peers[i as usize];
            let (swarm, done) = &mut self.swarms[p.torrent as usize];
            swarm.retain(|&(port, _)| port != p.port);
            let count = |sw: &Vec<(u16, bool)>| {
                let s = sw.iter().filter(|x| x.1).count() as u32;
                (s, sw.len() as u32 - s)
            };
            let (mut s, mut l) = count(swarm);
            let mut ports: Vec<u16> = swarm.iter().map(|x| x.0).collect();
            if event == AnnounceEvent::Stopped {
                self.stopped[p.torrent as usize].push(p.port);
            } else {
                if event == AnnounceEvent::Completed {
                    *done += 1;
                }
                swarm.push((p.port, p.seeder));
                if self.counts_self {
                    (s, l) = count(swarm);
                    ports.push(p.port);
                }
            }
            let want = match (numwant, self.zero_default) {
                (0, true) => 30,
                (n, _) => n.min(200),
            };
            ports.truncate(want as usize);
            match self.fault {
                Some("miscount") => l += 2,
                Some("stopped") => ports.extend(self.stopped[p.torrent as usize].iter().take(3)),
                Some("numwant") => {
                    ports = swarm.iter().map(|x| x.0).collect();
                }
                _ => {}
            }
            (s, l, ports)
        }

        fn scrape(&self, t: u32) -> (u32, u32, u32) {
            let (sw, done) = &self.swarms[t as usize];
            let s = sw.iter().filter(|x| x.1).count() as u32;
            (
                s,
                sw.len() as u32 - s,
                if self.counts_downloads { *done } else { 0 },
            )
        }
    }

    /// Runs 5000 announces (and a scrape after each) one at a time against `sim`; returns
    /// the summed checks' wrong counts and the model.
    fn run_sim(mut sim: Sim, mut m: Model) -> (u32, u32, Model) {
        let mut rng = Rng::new(5);
        let (mut wrong, mut scrape_wrong) = (0, 0);
        for step in 0..5000u64 {
            let Some(i) = m.next_peer(step, &mut rng) else {
                continue;
            };
            let numwant = [0, 5, 50, 200][rng.index(4)];
            let (event, seq) = m.on_send(i);
            let (s, l, ports) = sim.announce(&m, i, event, numwant);
            let c = m.check_announce(i, seq, numwant, Some(s), Some(l), ports.into_iter(), true);
            wrong += u32::from(c.wrong());
            m.on_done(i, step, Some(1_000_000), None, false, &mut rng);
            let t = m.peers[i as usize].torrent;
            let mark = m.seq(t);
            let (s, l, d) = sim.scrape(t);
            scrape_wrong += u32::from(m.check_scrape(t, mark, s, l, d).is_some());
        }
        (wrong, scrape_wrong, m)
    }

    #[test]
    fn each_real_convention_is_detected_and_never_judged_wrong() {
        for (counts_self, zero_default) in [(true, false), (false, true)] {
            let m = Model::build(&cfg(), 0, 1, 1, life(true));
            let sim = Sim::new(&m, counts_self, zero_default, None);
            let (wrong, scrape_wrong, m) = run_sim(sim, m);
            assert_eq!((wrong, scrape_wrong), (0, 0), "counts_self {counts_self}");
            let c = &m.conventions;
            assert_eq!(c.get(Convention::CountsSelf), Some(counts_self));
            assert_eq!(c.get(Convention::ReturnsSelf), Some(counts_self));
            assert_eq!(c.get(Convention::CountsDownloads), Some(counts_self));
            assert_eq!(c.get(Convention::ZeroNumwantDefault), Some(zero_default));
        }
    }

    #[test]
    fn a_tracker_that_breaks_a_rule_is_still_caught() {
        for fault in ["miscount", "stopped", "numwant"] {
            for counts_self in [true, false] {
                let m = Model::build(&cfg(), 0, 1, 1, life(true));
                let sim = Sim::new(&m, counts_self, false, Some(fault));
                let (wrong, _, _) = run_sim(sim, m);
                assert!(
                    wrong > 500,
                    "{fault} counts_self {counts_self}: {wrong} wrong"
                );
            }
        }
        // Given the wrong convention, a correct tracker is wrong on every counted reply.
        let mut m = Model::build(&cfg(), 0, 1, 1, life(true));
        m.conventions = Conventions::opentracker();
        let sim = Sim::new(&m, false, true, None);
        let (wrong, scrape_wrong, _) = run_sim(sim, m);
        assert!(wrong > 2000 && scrape_wrong > 100, "{wrong} {scrape_wrong}");
    }

    #[test]
    fn samplers_follow_the_shape() {
        let s = Sampler::new(Popularity::Zipf(1.2), 1000, 0, 1, 1000, 1000);
        let mut rng = Rng::new(9);
        let mut hits = [0u32; 1000];
        for _ in 0..100_000 {
            hits[s.sample(&mut rng)] += 1;
        }
        assert!(hits[0] > hits[1] && hits[1] > hits[9] && hits[9] > hits[999]);
        let a = Sampler::new(Popularity::Aquatic, 1000, 0, 1, 1000, 2000);
        let x = a.sample(&mut rng);
        assert!(x < 1000);
    }
}
