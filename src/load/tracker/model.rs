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

use std::collections::BinaryHeap;

use sha1::{Digest, Sha1};

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
    /// Chance that a peer's next announce is `stopped`.
    pub stop_chance: f64,
    /// Interval jitter, a fraction (0.1: +-10%).
    pub jitter: f64,
    /// Interval assumed when a reply gives none (HTTP failures, timeouts), microseconds.
    pub default_interval_us: u64,
}

/// The outcome of checking a reply against the model; each `true` field is a counter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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
    /// (Reverse due time, peer) for honour mode.
    due: BinaryHeap<(std::cmp::Reverse<u64>, u32)>,
    /// Per peer: stopped and neither in flight nor uncertain (a tracker must not list it).
    /// Kept beside [`Model::peers`] so that checking a reply's 30-odd peers reads one dense
    /// byte each instead of a 56-byte `Peer` each, scattered over megabytes.
    quiet: Vec<bool>,
    /// Per peer: the number (within its torrent) of its last `stopped` announce. Replies are
    /// read from many sockets in any order, so a reply to an announce sent before that
    /// `stopped` may still list the peer after the `stopped` was answered; only a reply to
    /// an announce sent after it must not.
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
                self.stopped_seq[i as usize] = seq;
            }
            AnnounceEvent::None => {}
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
                    (
                        AnnounceEvent::Completed,
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
    /// numbered it `seq`; still counted in flight) against the model. Replies from several
    /// sockets are read in any order, so the counts may differ by one for every other
    /// announce in flight and every announce sent after this one.
    pub fn check_announce(
        &self,
        i: u32,
        seq: u64,
        numwant: u32,
        seeders: Option<u32>,
        leechers: Option<u32>,
        ports: impl Iterator<Item = u16>,
    ) -> Check {
        let p = &self.peers[i as usize];
        let t = &self.torrents[p.torrent as usize];
        let later = u32::try_from(t.seq.saturating_sub(seq)).unwrap_or(u32::MAX);
        let tolerance = t
            .inflight
            .saturating_sub(1)
            .saturating_add(later)
            .saturating_add(t.uncertain);
        let off = |got: Option<u32>, want: u32| got.is_some_and(|g| g.abs_diff(want) > tolerance);
        let mut c = Check {
            counts_wrong: off(seeders, t.seeders) || off(leechers, t.leechers),
            ..Check::default()
        };
        let mut seen = Vec::with_capacity(64);
        for port in ports {
            if seen.contains(&port) {
                c.duplicates += 1;
                continue;
            }
            seen.push(port);
            match t.peer_at(port) {
                None => c.unknown += 1,
                Some(j) => {
                    if self.quiet[j as usize] && self.stopped_seq[j as usize] < seq {
                        c.stopped_returned += 1;
                    }
                }
            }
        }
        c.over_numwant = (seen.len() as u32 + c.duplicates).saturating_sub(numwant);
        c
    }

    /// Torrent `t`'s announce count so far, taken when a scrape is sent.
    pub fn seq(&self, t: u32) -> u64 {
        self.torrents[t as usize].seq
    }

    /// Whether a scrape's counts for worker torrent `t` agree with the model, allowing one
    /// difference per announce in flight, sent after the scrape (`seq` was [`Model::seq`]
    /// then) or of unknown fate.
    pub fn scrape_ok(&self, t: u32, seq: u64, seeders: u32, leechers: u32, completed: u32) -> bool {
        let t = &self.torrents[t as usize];
        let later = u32::try_from(t.seq.saturating_sub(seq)).unwrap_or(u32::MAX);
        let tol = t.inflight.saturating_add(later).saturating_add(t.uncertain);
        seeders.abs_diff(t.seeders) <= tol
            && leechers.abs_diff(t.leechers) <= tol
            && completed.abs_diff(t.completed) <= tol
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
            let c = m.check_announce(i, seq, 50, None, None, std::iter::empty());
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
    fn checks_find_what_is_wrong() {
        let mut m = Model::build(&cfg(), 0, 1, 1, life(true));
        let i = 0;
        let (_, seq) = m.on_send(i);
        let t = m.peers[0].torrent as usize;
        let port = m.peers[0].port;
        let (s, l) = (m.torrents[t].seeders, m.torrents[t].leechers);
        assert_eq!(
            m.check_announce(i, seq, 50, Some(s), Some(l), [port].into_iter()),
            Check::default()
        );
        let c = m.check_announce(i, seq, 1, Some(s + 5), Some(l), [port, port, 1].into_iter());
        assert!(c.counts_wrong);
        assert_eq!((c.duplicates, c.unknown, c.over_numwant), (1, 1, 2));
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
