//! Who we upload to: the choker of one torrent.
//!
//! # What it does
//!
//! Uploading to many peers at once spreads the uplink thin and makes TCP behave badly, so a
//! client serves a few peers at a time ("unchokes" them) and refuses the rest. The choker
//! decides which, from a snapshot of the torrent's peers that the caller hands to
//! [`Choker::rechoke`], and answers with the changes only.
//!
//! - **Leeching** (BEP 3): every [`ChokerConfig::interval`] the
//!   [`ChokerConfig::upload_slots`] interested peers that gave us the most over the last round
//!   are unchoked (snubbed peers last), which rewards the peers that reciprocate. Peers that
//!   gave us more than the slowest of those but are not interested are unchoked too, so they
//!   can start downloading the moment they become interested; when one does, the slowest
//!   regular peer is choked so the interested count stays at `upload_slots`. Ties in rate
//!   (typically everyone at zero when we have just started) fall through to the seeding
//!   order, as in libtorrent, so an uplink nobody reciprocates is still shared fairly.
//! - **Seeding**: nobody can reciprocate, so [`SeedChokeMode`] decides: round-robin turns,
//!   fastest upload, anti-leech (favour peers near the start or end of the download), or
//!   everyone interested.
//! - **Local peers** ([`ChokePeer::local`]: loopback and the local network) are unchoked
//!   whenever they are interested, outside the slot count, as libtorrent does by default:
//!   choking shares a scarce uplink, and they do not compete for it.
//! - **Optimistic unchoke**: one extra interested peer, picked at random every
//!   [`ChokerConfig::optimistic_interval`], with new connections three times as likely, so the
//!   choker keeps discovering peers better than the current ones and newcomers get their first
//!   pieces to trade (BEP 3). It applies in every mode but [`SeedChokeMode::Unlimited`].
//!
//! # Regular rounds and minimal steps
//!
//! A call at or after [`Choker::next_due`], or for [`RechokeReason::BecameSeed`], is a regular
//! round: the whole set is recomputed, and the optimistic slot rotates if its interval has
//! passed. Any other call (interest changed, a peer left, or a timer that fired early) makes
//! only the changes needed to keep the counts right: a free slot goes to the best waiting peer
//! at once, an excess one is taken from the worst holder, and an optimistic slot whose peer
//! left or lost interest is given to a new one. Everything else waits for the next round, which
//! is what keeps the choker from "fibrillating" (BEP 3's word for choking and unchoking quickly).
//! The optimistic rotation is checked at regular rounds only, so its period rounds up to a
//! multiple of `interval` (libtorrent counts it in rounds the same way).
//!
//! # Contract with the caller
//!
//! The caller passes every peer of the torrent, each key once, applies every change returned
//! before the next call, and keeps `last_unchoked` and `uploaded_since_unchoke` up to date when
//! it applies an unchoke. The result does not depend on the order of `peers`: candidates are
//! ranked by total orders that end in the peer key, and the random draw walks them in that
//! ranked order. A rechoke costs one sort of the interested peers, O(n log n), and allocates
//! only the returned vector (two scratch vectors are kept between calls).

use std::time::Duration;

use super::rng::Rng;
use super::time::Time;
use super::types::PeerKey;

/// Regular unchoke slots by default: BEP 3's "four", which libtorrent also keeps for a single
/// torrent. More slots split a home uplink into streams too thin to finish pieces quickly.
pub const DEFAULT_UPLOAD_SLOTS: usize = 4;

/// Time between regular rechokes by default. BEP 3: "only changing who's choked once every ten
/// seconds" avoids fibrillation, and is long enough for a rate to be measured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Time between optimistic rotations by default: BEP 3's 30 seconds, three regular rounds, long
/// enough for a newly unchoked peer to ramp up and show its rate.
pub const DEFAULT_OPTIMISTIC_INTERVAL: Duration = Duration::from_secs(30);

/// How many pieces a round-robin turn should deliver: libtorrent's `seeding_piece_quota`
/// default. Twenty whole pieces give the peer enough to trade with others once its turn ends,
/// which is the point of seeding.
pub const ROUND_ROBIN_QUOTA_PIECES: u64 = 20;

/// The round-robin quota when the piece length is not known: [`ROUND_ROBIN_QUOTA_PIECES`] of
/// 1 MiB, the piece length mktorrent and qBittorrent pick for torrents of a few GiB. Use
/// [`ChokerConfig::with_piece_len`] to derive it from the torrent's own piece length.
pub const DEFAULT_ROUND_ROBIN_QUOTA: u64 = ROUND_ROBIN_QUOTA_PIECES * 1024 * 1024;

/// The shortest round-robin turn, whatever the quota: a fast seedbox link moves 20 MiB in under
/// a second, and rotating that often would be fibrillation. One minute is libtorrent's bound.
pub const ROUND_ROBIN_MIN_HOLD: Duration = Duration::from_secs(60);

/// The longest round-robin turn, quota reached or not. On a slow uplink (a home seeder sharing
/// 100 kB/s over four slots) 20 MiB takes fourteen minutes, and a queue of thirty peers would
/// wait hours for a turn. Five minutes still moves several MiB at 25 kB/s, so a slow turn
/// still ends with pieces to trade.
pub const ROUND_ROBIN_MAX_HOLD: Duration = Duration::from_secs(300);

/// How much likelier a new connection is to win the optimistic draw: BEP 3's "three times as
/// likely", so a newcomer soon gets pieces to trade.
pub const NEW_PEER_WEIGHT: u64 = 3;

/// A connection counts as new for the optimistic draw while it is younger than this many
/// optimistic intervals (or if it was never unchoked): three rotations, 90 s by default, is
/// the period in which BEP 3's weighting lets it start as the optimistic peer.
pub const NEW_PEER_INTERVALS: u32 = 3;

/// The anti-leech score's scale: per mille of the distance from the middle of the download, as
/// in libtorrent. Progress differences under a thousandth tie and fall through to the
/// waiting-time order, so float noise in `progress` cannot reorder peers.
const ANTI_LEECH_SCALE: u64 = 1000;

const _: () = assert!(ROUND_ROBIN_MIN_HOLD.as_secs() < ROUND_ROBIN_MAX_HOLD.as_secs());
const _: () = assert!(DEFAULT_INTERVAL.as_secs() <= DEFAULT_OPTIMISTIC_INTERVAL.as_secs());

/// How the regular slots are given out while we seed, when download rates say nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedChokeMode {
    /// Interested peers take turns: a peer keeps its slot until it has received
    /// [`ChokerConfig::round_robin_quota`] bytes (and held the slot at least
    /// [`ROUND_ROBIN_MIN_HOLD`]), or held it [`ROUND_ROBIN_MAX_HOLD`], or stopped requesting
    /// for a whole round; then the peer that has waited longest since its last unchoke gets
    /// it. This spreads pieces across the swarm, which is why it is libtorrent's default.
    #[default]
    RoundRobin,
    /// Keep the peers we upload to fastest: the most bytes per second out of the uplink, at
    /// the cost of fairness (a slow peer may never get a turn but the optimistic one).
    FastestUpload,
    /// Prefer peers that have just started or nearly finished (libtorrent's anti-leech score,
    /// after Chow et al., "Improving BitTorrent: A Simple Approach"): newcomers need a first
    /// piece to trade, finishers become seeds, and leechers that linger mid-way and leave
    /// once done get the least.
    AntiLeech,
    /// Unchoke every interested peer, with no optimistic slot: for a seedbox whose uplink is
    /// larger than its peers can take, where choking only wastes capacity.
    Unlimited,
}

/// The choker's settings; [`Default`] gives BEP 3's values and round-robin seeding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Regular unchoke slots, not counting the optimistic one (default
    /// [`DEFAULT_UPLOAD_SLOTS`]). BEP 3 counts its optimistic peer among its four; set 3 here
    /// for exactly that. Zero leaves only the optimistic slot.
    pub upload_slots: usize,
    /// Time between regular rechokes (default [`DEFAULT_INTERVAL`]). Zero makes every call a
    /// regular round.
    pub interval: Duration,
    /// Time between optimistic rotations (default [`DEFAULT_OPTIMISTIC_INTERVAL`]); checked at
    /// regular rounds, so it takes effect rounded up to a multiple of `interval`.
    pub optimistic_interval: Duration,
    /// How slots are given out while we seed.
    pub seed_mode: SeedChokeMode,
    /// Bytes a peer receives in one round-robin turn before it yields its slot (default
    /// [`DEFAULT_ROUND_ROBIN_QUOTA`]; see [`ChokerConfig::with_piece_len`]). It is measured by
    /// the caller's `uploaded_since_unchoke`, and bounded in time by [`ROUND_ROBIN_MIN_HOLD`]
    /// and [`ROUND_ROBIN_MAX_HOLD`].
    pub round_robin_quota: u64,
}

impl Default for ChokerConfig {
    fn default() -> ChokerConfig {
        ChokerConfig {
            upload_slots: DEFAULT_UPLOAD_SLOTS,
            interval: DEFAULT_INTERVAL,
            optimistic_interval: DEFAULT_OPTIMISTIC_INTERVAL,
            seed_mode: SeedChokeMode::RoundRobin,
            round_robin_quota: DEFAULT_ROUND_ROBIN_QUOTA,
        }
    }
}

impl ChokerConfig {
    /// The same settings with the round-robin quota set to [`ROUND_ROBIN_QUOTA_PIECES`] pieces
    /// of `piece_len` bytes, so that a turn delivers whole pieces whatever the torrent's piece
    /// size (libtorrent counts its quota in pieces for the same reason).
    pub fn with_piece_len(mut self, piece_len: u64) -> ChokerConfig {
        self.round_robin_quota = piece_len.saturating_mul(ROUND_ROBIN_QUOTA_PIECES);
        self
    }
}

/// One peer as the choker sees it: a snapshot the torrent fills in for each rechoke.
#[derive(Debug, Clone, PartialEq)]
pub struct ChokePeer {
    /// The peer's key in its torrent.
    pub key: PeerKey,
    /// The peer said it is interested in our pieces (`peer_interested`).
    pub interested: bool,
    /// We are not choking the peer now (`!am_choking`).
    pub unchoked: bool,
    /// Bytes per second of payload the peer sent us over the last round; the leeching rank.
    pub down_rate: u64,
    /// Bytes per second of payload we sent the peer over the last round; the fastest-upload
    /// rank. It is ignored while the peer is choked, since it is then only the tail of
    /// requests in flight when we choked it.
    pub up_rate: u64,
    /// When the connection was established; a peer never unchoked has waited since then.
    pub connected_at: Time,
    /// When we last unchoked the peer, if ever: the round-robin queue order and turn length.
    pub last_unchoked: Option<Time>,
    /// Payload bytes sent to the peer since its last unchoke: the round-robin quota's meter.
    pub uploaded_since_unchoke: u64,
    /// The fraction of the torrent the peer has, `0.0..=1.0`, for anti-leech seeding (values
    /// outside are clamped, NaN counts as 0). A peer can hide its `have`s to look like a
    /// newcomer forever, so the caller should use the larger of what it announced and what we
    /// uploaded to it, as libtorrent does.
    pub progress: f32,
    /// The peer has every piece. It can never want our data, so it never takes a slot.
    pub is_seed: bool,
    /// The peer stopped sending blocks we requested from it; it ranks last while we leech.
    pub snubbed: bool,
    /// The peer is on this host or the local network: unchoked whenever it is interested,
    /// outside the slots (libtorrent's default for local peers). Choking exists to share a
    /// scarce uplink; a LAN or loopback peer does not compete for it.
    pub local: bool,
}

/// Why a rechoke is asked for. [`RechokeReason::BecameSeed`] forces a regular round; the
/// others make one only when it is due, and otherwise only the minimal changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RechokeReason {
    /// The timer set from [`Choker::next_due`] fired.
    Timer,
    /// A peer sent `interested` or `not interested`. A newly connected peer needs no call: it
    /// is not interested yet.
    InterestChanged,
    /// A peer disconnected (it is absent from `peers`).
    PeerLeft,
    /// We completed the torrent: the ranking switches from download rates to the seed mode.
    BecameSeed,
}

/// A rank is compared lexicographically, smaller first; the last field is the peer key, so
/// two distinct peers never tie and the sort is a total order.
type Rank = [u64; 6];

/// The choker of one torrent; see the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Choker {
    config: ChokerConfig,
    /// When the next regular round is due.
    next_regular: Time,
    /// The optimistic slot rotates at the first regular round at or after this.
    next_optimistic: Time,
    /// The peer holding the optimistic slot, if any.
    optimistic: Option<PeerKey>,
    /// Whether the last call was made while seeding; a change forces a regular round.
    seeding: bool,
    /// Scratch: the eligible interested peers with their ranks, best first.
    ranked: Vec<(Rank, u32)>,
    /// Scratch: the state each peer (by index into `peers`) should end the call in.
    want: Vec<bool>,
}

impl Choker {
    /// A choker whose first regular round is due at `now`, so the first interested peers do
    /// not wait a whole interval to be served.
    pub fn new(config: ChokerConfig, now: Time) -> Choker {
        Choker {
            config,
            next_regular: now,
            next_optimistic: now,
            optimistic: None,
            seeding: false,
            ranked: Vec::new(),
            want: Vec::new(),
        }
    }

    /// When the next regular rechoke is due; the core schedules its timer from this and calls
    /// [`Choker::rechoke`] with [`RechokeReason::Timer`] then.
    pub fn next_due(&self) -> Time {
        self.next_regular
    }

    /// The peer holding the optimistic slot, so the torrent can report it (and so tests can
    /// tell it from the regular ones).
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// The settings in force.
    pub fn config(&self) -> &ChokerConfig {
        &self.config
    }

    /// Replaces the settings (a user changed the slot count or the seed mode). Slot counts are
    /// enforced from the next call of any kind; rankings change at the next regular round.
    pub fn set_config(&mut self, config: ChokerConfig) {
        self.config = config;
    }

    /// Rechokes the torrent's `peers` (every peer, each key once, in any order) and returns the
    /// changes only, chokes first, each group in key order: `(peer, true)` means unchoke it,
    /// `(peer, false)` choke it. `reason` says why the call is made; see the module
    /// documentation for what a regular round and a minimal step change. `rng` is drawn from
    /// only when an optimistic peer is picked.
    pub fn rechoke(
        &mut self,
        now: Time,
        seeding: bool,
        peers: &[ChokePeer],
        reason: RechokeReason,
        rng: &mut Rng,
    ) -> Vec<(PeerKey, bool)> {
        let regular_round = reason == RechokeReason::BecameSeed
            || seeding != self.seeding
            || now >= self.next_regular;
        self.seeding = seeding;
        let unlimited = seeding && self.config.seed_mode == SeedChokeMode::Unlimited;

        // The optimistic peer keeps its slot while it is still there, interested and unchoked,
        // until a regular round finds its interval over.
        let outgoing = self.optimistic;
        let outgoing_idx = outgoing.and_then(|key| peers.iter().position(|p| p.key == key));
        let outgoing_valid = !unlimited
            && outgoing_idx.is_some_and(|i| {
                let p = &peers[i];
                p.unchoked && p.interested && !p.is_seed
            });
        let rotate = regular_round && now >= self.next_optimistic;
        let kept = if outgoing_valid && !rotate {
            outgoing_idx
        } else {
            None
        };
        if kept.is_none() {
            self.optimistic = None;
        }

        self.want.clear();
        self.want.extend(peers.iter().map(|p| p.unchoked));
        self.ranked.clear();
        for (i, p) in peers.iter().enumerate() {
            if p.interested && !p.is_seed && !p.local && Some(i) != kept {
                let r = rank(&self.config, seeding, p, now, outgoing);
                self.ranked.push((r, i as u32));
            }
        }
        self.ranked.sort_unstable();

        if regular_round {
            self.regular_round(seeding, unlimited, peers, kept);
            self.next_regular = now + self.config.interval;
        } else {
            self.minimal_step(unlimited);
        }
        for (want, p) in self.want.iter_mut().zip(peers) {
            if p.local && p.interested && !p.is_seed {
                *want = true;
            }
        }
        if !unlimited && kept.is_none() {
            let fallback = outgoing_idx.filter(|_| outgoing_valid);
            self.pick_optimistic(now, peers, outgoing, fallback, rng);
        }

        let mut changes: Vec<(PeerKey, bool)> = peers
            .iter()
            .zip(&self.want)
            .filter(|(p, &want)| p.unchoked != want)
            .map(|(p, &want)| (p.key, want))
            .collect();
        // Chokes first, so the caller frees upload bandwidth before it hands more out.
        changes.sort_unstable_by_key(|&(key, unchoke)| (unchoke, key));
        changes
    }

    /// Recomputes the whole unchoke set into `want` (the optimistic slot aside).
    fn regular_round(
        &mut self,
        seeding: bool,
        unlimited: bool,
        peers: &[ChokePeer],
        kept: Option<usize>,
    ) {
        self.want.fill(false);
        if let Some(i) = kept {
            self.want[i] = true;
        }
        let take = if unlimited {
            self.ranked.len()
        } else {
            self.config.upload_slots.min(self.ranked.len())
        };
        for &(_, i) in &self.ranked[..take] {
            self.want[i as usize] = true;
        }
        if seeding || self.config.upload_slots == 0 {
            // A peer not interested in a seed wants nothing from it; a choked one costs nothing.
            return;
        }
        // BEP 3: peers that upload to us faster than the slowest regular one, but are not
        // interested, are unchoked too, so they can download at once when they become
        // interested. With slots to spare any peer that sends us data qualifies; the ones that
        // send nothing lose nothing, since a free slot is theirs the moment they ask.
        let threshold = if take == self.config.upload_slots {
            peers[self.ranked[take - 1].1 as usize].down_rate
        } else {
            0
        };
        for (want, p) in self.want.iter_mut().zip(peers) {
            if !p.interested && !p.is_seed && !p.snubbed && p.down_rate > threshold {
                *want = true;
            }
        }
    }

    /// Between rounds, keeps the number of regular interested unchoked peers at the slot
    /// count: frees the worst holders if there are too many (an unchoked peer became
    /// interested), fills free slots with the best waiting peers if there are too few.
    fn minimal_step(&mut self, unlimited: bool) {
        if unlimited {
            for &(_, i) in &self.ranked {
                self.want[i as usize] = true;
            }
            return;
        }
        let slots = self.config.upload_slots;
        let mut holders = self
            .ranked
            .iter()
            .filter(|&&(_, i)| self.want[i as usize])
            .count();
        if holders > slots {
            for &(_, i) in self.ranked.iter().rev() {
                if holders == slots {
                    break;
                }
                if self.want[i as usize] {
                    self.want[i as usize] = false;
                    holders -= 1;
                }
            }
        } else {
            for &(_, i) in &self.ranked {
                if holders >= slots {
                    break;
                }
                if !self.want[i as usize] {
                    self.want[i as usize] = true;
                    holders += 1;
                }
            }
        }
    }

    /// Gives the free optimistic slot to a random interested peer that is choked and stays
    /// choked, new connections weighted [`NEW_PEER_WEIGHT`] times. The outgoing optimistic
    /// peer is passed over while anyone else waits, so a rotation always changes hands; it
    /// keeps the slot only when nobody else could take it.
    fn pick_optimistic(
        &mut self,
        now: Time,
        peers: &[ChokePeer],
        outgoing: Option<PeerKey>,
        outgoing_valid_idx: Option<usize>,
        rng: &mut Rng,
    ) {
        let new_age = self.config.optimistic_interval * NEW_PEER_INTERVALS;
        let weight = |p: &ChokePeer| {
            if p.last_unchoked.is_none() || now - p.connected_at < new_age {
                NEW_PEER_WEIGHT
            } else {
                1
            }
        };
        let eligible = |i: usize| {
            let p = &peers[i];
            !p.unchoked && !self.want[i] && Some(p.key) != outgoing
        };
        let total: u64 = self
            .ranked
            .iter()
            .map(|&(_, i)| i as usize)
            .filter(|&i| eligible(i))
            .map(|i| weight(&peers[i]))
            .sum();
        let chosen = if total == 0 {
            outgoing_valid_idx.filter(|&i| !self.want[i])
        } else {
            let mut ticket = rng.below(total);
            self.ranked
                .iter()
                .map(|&(_, i)| i as usize)
                .filter(|&i| eligible(i))
                .find(|&i| {
                    let w = weight(&peers[i]);
                    if ticket < w {
                        true
                    } else {
                        ticket -= w;
                        false
                    }
                })
        };
        if let Some(i) = chosen {
            self.want[i] = true;
            self.optimistic = Some(peers[i].key);
            self.next_optimistic = now + self.config.optimistic_interval;
        }
    }
}

/// The peer's place in the unchoke order, smaller first. Leeching ranks by what the peer gives
/// us (snubbed peers last) and breaks ties by the seeding order; seeding uses the seeding
/// order alone. `outgoing` is the optimistic peer at the start of the call: its slot was a
/// bonus turn, so round-robin does not count it as holding a regular slot.
fn rank(
    config: &ChokerConfig,
    seeding: bool,
    p: &ChokePeer,
    now: Time,
    outgoing: Option<PeerKey>,
) -> Rank {
    let [a, b, c] = seed_order(config, p, now, outgoing);
    let key = u64::from(p.key.0);
    if seeding {
        [0, 0, a, b, c, key]
    } else {
        [u64::from(p.snubbed), u64::MAX - p.down_rate, a, b, c, key]
    }
}

/// The seeding order of one peer, smaller first.
fn seed_order(
    config: &ChokerConfig,
    p: &ChokePeer,
    now: Time,
    outgoing: Option<PeerKey>,
) -> [u64; 3] {
    let waiting_since = p.last_unchoked.unwrap_or(p.connected_at).as_micros();
    // A choked peer's upload rate is the tail of requests in flight when it was choked; it
    // must not lift the peer above the ones really being served.
    let up_rate = if p.unchoked { p.up_rate } else { 0 };
    match config.seed_mode {
        // Unlimited needs no order while seeding; while leeching it breaks ties like
        // round-robin, the default.
        SeedChokeMode::RoundRobin | SeedChokeMode::Unlimited => {
            let holding = p.unchoked && Some(p.key) != outgoing;
            if !holding {
                // Waiting: the longest wait since the last turn goes first.
                [1, waiting_since, 0]
            } else if turn_over(config, p, now) {
                // Done: keeps the slot only if nobody is waiting.
                [2, u64::MAX - up_rate, 0]
            } else {
                // The status quo: a turn in progress is not interrupted.
                [0, u64::MAX - up_rate, 0]
            }
        }
        SeedChokeMode::FastestUpload => [u64::MAX - up_rate, waiting_since, 0],
        SeedChokeMode::AntiLeech => [
            ANTI_LEECH_SCALE - anti_leech_score(p.progress),
            waiting_since,
            0,
        ],
    }
}

/// Whether an unchoked peer's round-robin turn is over: quota delivered after the minimum
/// hold, or the maximum hold reached, or a whole round without a request (a slot the peer
/// does not use is better given to the next in line).
fn turn_over(config: &ChokerConfig, p: &ChokePeer, now: Time) -> bool {
    let held = now - p.last_unchoked.unwrap_or(p.connected_at);
    (held >= ROUND_ROBIN_MIN_HOLD && p.uploaded_since_unchoke >= config.round_robin_quota)
        || held >= ROUND_ROBIN_MAX_HOLD
        || (held >= config.interval && p.up_rate == 0)
}

/// libtorrent's anti-leech score: `ANTI_LEECH_SCALE` at progress 0 and 1, falling linearly to
/// 0 at the middle of the download.
fn anti_leech_score(progress: f32) -> u64 {
    let progress = if progress.is_nan() {
        0.0
    } else {
        f64::from(progress.clamp(0.0, 1.0))
    };
    let score = ((progress - 0.5).abs() * 2.0 * ANTI_LEECH_SCALE as f64).round();
    (score as u64).min(ANTI_LEECH_SCALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// `secs` seconds before `t`.
    fn before(t: Time, secs: u64) -> Time {
        Time::from_micros(t.as_micros() - secs * 1_000_000)
    }

    /// An interested leecher connected at the epoch, never unchoked, rates zero.
    fn peer(key: u32) -> ChokePeer {
        ChokePeer {
            local: false,
            key: PeerKey(key),
            interested: true,
            unchoked: false,
            down_rate: 0,
            up_rate: 0,
            connected_at: Time::ZERO,
            last_unchoked: None,
            uploaded_since_unchoke: 0,
            progress: 0.5,
            is_seed: false,
            snubbed: false,
        }
    }

    /// A torrent's side of the contract: applies every change, keeps the unchoke bookkeeping,
    /// and checks the choker's invariants after each call.
    struct Swarm {
        choker: Choker,
        peers: Vec<ChokePeer>,
        rng: Rng,
        now: Time,
        seeding: bool,
        /// When set, each call sees the peers in a fresh random order.
        shuffle_input: Option<Rng>,
    }

    impl Swarm {
        fn new(config: ChokerConfig, peers: Vec<ChokePeer>, seed: u64) -> Swarm {
            Swarm {
                choker: Choker::new(config, Time::ZERO),
                peers,
                rng: Rng::new(seed),
                now: Time::ZERO,
                seeding: false,
                shuffle_input: None,
            }
        }

        fn at(&mut self, secs: u64) -> &mut Swarm {
            self.now = Time::from_secs(secs);
            self
        }

        fn get(&mut self, key: u32) -> &mut ChokePeer {
            self.peers.iter_mut().find(|p| p.key.0 == key).unwrap()
        }

        fn rechoke(&mut self, reason: RechokeReason) -> Vec<(PeerKey, bool)> {
            let mut input = self.peers.clone();
            if let Some(shuffler) = &mut self.shuffle_input {
                shuffler.shuffle(&mut input);
            }
            let changes =
                self.choker
                    .rechoke(self.now, self.seeding, &input, reason, &mut self.rng);
            for &(key, unchoke) in &changes {
                let now = self.now;
                let p = self.get(key.0);
                assert_ne!(p.unchoked, unchoke, "redundant change for {key:?}");
                p.unchoked = unchoke;
                if unchoke {
                    p.last_unchoked = Some(now);
                    p.uploaded_since_unchoke = 0;
                }
            }
            self.check_invariants(&changes);
            changes
        }

        fn check_invariants(&self, changes: &[(PeerKey, bool)]) {
            let mut keys: Vec<PeerKey> = changes.iter().map(|c| c.0).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(
                keys.len(),
                changes.len(),
                "a peer changed twice: {changes:?}"
            );
            let unlimited =
                self.seeding && self.choker.config().seed_mode == SeedChokeMode::Unlimited;
            let opt = self.choker.optimistic();
            if let Some(key) = opt {
                let p = self.peers.iter().find(|p| p.key == key).unwrap();
                assert!(
                    p.unchoked && p.interested && !p.is_seed,
                    "bad optimistic {p:?}"
                );
                assert!(!unlimited);
            }
            // Local peers are unchoked outside the slots.
            for p in &self.peers {
                if p.local && p.interested && !p.is_seed {
                    assert!(p.unchoked, "a local peer left choked: {p:?}");
                }
            }
            let eligible =
                |p: &&ChokePeer| p.interested && !p.is_seed && !p.local && Some(p.key) != opt;
            let regular = self
                .peers
                .iter()
                .filter(eligible)
                .filter(|p| p.unchoked)
                .count();
            let waiting = self
                .peers
                .iter()
                .filter(eligible)
                .filter(|p| !p.unchoked)
                .count();
            if unlimited {
                assert_eq!(waiting, 0, "unlimited left an interested peer choked");
            } else {
                let slots = self.choker.config().upload_slots;
                assert!(
                    regular <= slots,
                    "{regular} regular unchokes for {slots} slots"
                );
                assert!(
                    regular == slots || waiting == 0,
                    "a slot is free while {waiting} interested peers wait"
                );
            }
            for p in &self.peers {
                assert!(
                    !(p.is_seed && changes.contains(&(p.key, true))),
                    "seed {:?} unchoked",
                    p.key
                );
            }
        }

        fn unchoked(&self) -> Vec<u32> {
            let mut keys: Vec<u32> = self
                .peers
                .iter()
                .filter(|p| p.unchoked)
                .map(|p| p.key.0)
                .collect();
            keys.sort_unstable();
            keys
        }

        /// The unchoked peers other than the optimistic one.
        fn regular(&self) -> Vec<u32> {
            let opt = self.choker.optimistic();
            let mut keys: Vec<u32> = self
                .peers
                .iter()
                .filter(|p| p.unchoked && Some(p.key) != opt)
                .map(|p| p.key.0)
                .collect();
            keys.sort_unstable();
            keys
        }

        fn optimistic(&self) -> u32 {
            self.choker.optimistic().expect("an optimistic peer").0
        }
    }

    /// Ten interested peers, peer `k` sending us `k * 100` B/s.
    fn ten_by_rate() -> Vec<ChokePeer> {
        (0..10)
            .map(|k| ChokePeer {
                down_rate: u64::from(k) * 100,
                ..peer(k)
            })
            .collect()
    }

    use RechokeReason::{BecameSeed, InterestChanged, PeerLeft, Timer};

    #[test]
    fn leeching_unchokes_the_best_interested_downloaders() {
        let mut s = Swarm::new(ChokerConfig::default(), ten_by_rate(), 1);
        let changes = s.at(0).rechoke(Timer);
        assert_eq!(s.regular(), vec![6, 7, 8, 9]);
        let opt = s.optimistic();
        assert!(opt <= 5);
        assert_eq!(s.unchoked().len(), 5);
        // Changes only: five unchokes, nothing else, in key order.
        assert_eq!(changes.len(), 5);
        assert!(changes.iter().all(|&(_, u)| u));
        assert!(changes.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(s.choker.next_due(), Time::from_secs(10));
    }

    #[test]
    fn leeching_follows_rates_at_each_round_and_skips_snubbed_peers() {
        let mut s = Swarm::new(ChokerConfig::default(), ten_by_rate(), 2);
        s.at(0).rechoke(Timer);
        let opt = s.optimistic();
        // Peer 9 stops sending (snubbed); peers 0 and 1 become the fastest.
        s.get(9).snubbed = true;
        s.get(0).down_rate = 5000;
        s.get(1).down_rate = 4000;
        let changes = s.at(10).rechoke(Timer);
        assert_eq!(s.regular(), vec![0, 1, 7, 8]);
        assert_eq!(s.optimistic(), opt, "the optimistic slot holds for 30 s");
        assert!(changes.contains(&(PeerKey(9), false)));
        assert!(changes.contains(&(PeerKey(6), false)));
    }

    #[test]
    fn timer_before_due_changes_nothing() {
        let mut s = Swarm::new(ChokerConfig::default(), ten_by_rate(), 3);
        s.at(0).rechoke(Timer);
        s.get(0).down_rate = 1_000_000;
        assert!(s.at(5).rechoke(Timer).is_empty());
        assert!(s.at(9).rechoke(InterestChanged).is_empty());
        assert!(!s.at(10).rechoke(Timer).is_empty());
        assert!(s.regular().contains(&0) || s.optimistic() == 0);
    }

    #[test]
    fn faster_uninterested_peers_are_unchoked_and_the_worst_yields_on_interest() {
        let mut peers: Vec<ChokePeer> = (0..9)
            .map(|k| ChokePeer {
                down_rate: u64::from(k) * 100,
                ..peer(k)
            })
            .collect();
        // 20 is faster than the slowest regular peer (500 B/s), 21 slower, 22 a seed, 23
        // snubbed: only 20 is worth unchoking ahead of its interest.
        peers.push(ChokePeer {
            interested: false,
            down_rate: 10_000,
            ..peer(20)
        });
        peers.push(ChokePeer {
            interested: false,
            down_rate: 50,
            ..peer(21)
        });
        peers.push(ChokePeer {
            interested: false,
            is_seed: true,
            down_rate: 90_000,
            ..peer(22)
        });
        peers.push(ChokePeer {
            interested: false,
            snubbed: true,
            down_rate: 9_000,
            ..peer(23)
        });
        let mut s = Swarm::new(ChokerConfig::default(), peers, 4);
        s.at(0).rechoke(Timer);
        assert_eq!(s.regular(), vec![5, 6, 7, 8, 20]);
        assert!(s.optimistic() <= 4);

        // 20 becomes interested between rounds: the slowest regular peer (5) is choked so the
        // interested regular peers stay at four, and nothing else moves.
        s.get(20).interested = true;
        assert_eq!(s.at(3).rechoke(InterestChanged), vec![(PeerKey(5), false)]);
        assert_eq!(s.regular(), vec![6, 7, 8, 20]);
    }

    #[test]
    fn a_free_slot_goes_to_a_newly_interested_peer_at_once_in_every_mode() {
        let modes = [
            SeedChokeMode::RoundRobin,
            SeedChokeMode::FastestUpload,
            SeedChokeMode::AntiLeech,
            SeedChokeMode::Unlimited,
        ];
        for seeding in [false, true] {
            for mode in modes {
                let config = ChokerConfig {
                    seed_mode: mode,
                    ..ChokerConfig::default()
                };
                let peers = vec![
                    peer(0),
                    peer(1),
                    ChokePeer {
                        interested: false,
                        ..peer(2)
                    },
                ];
                let mut s = Swarm::new(config, peers, 5);
                s.seeding = seeding;
                s.at(0).rechoke(Timer);
                assert_eq!(s.unchoked(), vec![0, 1], "{mode:?} seeding={seeding}");
                s.get(2).interested = true;
                let changes = s.at(2).rechoke(InterestChanged);
                assert_eq!(
                    changes,
                    vec![(PeerKey(2), true)],
                    "{mode:?} seeding={seeding}"
                );
            }
        }
    }

    #[test]
    fn with_all_slots_taken_a_new_interest_waits_or_takes_the_free_optimistic_slot() {
        let mut peers: Vec<ChokePeer> = (0..4)
            .map(|k| ChokePeer {
                down_rate: 100,
                ..peer(k)
            })
            .collect();
        peers.push(ChokePeer {
            interested: false,
            ..peer(4)
        });
        peers.push(ChokePeer {
            interested: false,
            ..peer(5)
        });
        let mut s = Swarm::new(ChokerConfig::default(), peers, 6);
        s.at(0).rechoke(Timer);
        assert_eq!(s.unchoked(), vec![0, 1, 2, 3]);
        assert_eq!(
            s.choker.optimistic(),
            None,
            "nobody to unchoke optimistically"
        );
        // The optimistic slot is free: the first newcomer gets it...
        s.get(4).interested = true;
        assert_eq!(s.at(1).rechoke(InterestChanged), vec![(PeerKey(4), true)]);
        assert_eq!(s.optimistic(), 4);
        // ...and the next one waits for the rotation.
        s.get(5).interested = true;
        assert!(s.at(2).rechoke(InterestChanged).is_empty());
        assert!(s.at(10).rechoke(Timer).is_empty());
        // Peer 4 got its slot at 1 s; rotations are checked at regular rounds, so the first
        // one at or after 31 s (40 s) rotates it.
        assert!(s.at(20).rechoke(Timer).is_empty());
        assert!(s.at(30).rechoke(Timer).is_empty());
        assert_eq!(s.optimistic(), 4, "the optimistic peer has its 30 s");
        assert_eq!(
            s.at(40).rechoke(Timer),
            vec![(PeerKey(4), false), (PeerKey(5), true)]
        );
        assert_eq!(s.optimistic(), 5);
    }

    #[test]
    fn a_peer_that_left_frees_its_slot_for_the_next_best() {
        let mut s = Swarm::new(ChokerConfig::default(), ten_by_rate(), 7);
        s.at(0).rechoke(Timer);
        let opt = s.optimistic();
        s.peers.retain(|p| p.key != PeerKey(9));
        let next_best = (0..=5).rev().find(|&k| k != opt).unwrap();
        assert_eq!(s.at(4).rechoke(PeerLeft), vec![(PeerKey(next_best), true)]);
        assert_eq!(s.optimistic(), opt);

        // When the optimistic peer leaves, its slot is drawn again at once.
        s.peers.retain(|p| p.key != PeerKey(opt));
        let changes = s.at(5).rechoke(PeerLeft);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0], (PeerKey(s.optimistic()), true));
    }

    #[test]
    fn an_optimistic_peer_that_loses_interest_is_replaced() {
        let mut s = Swarm::new(ChokerConfig::default(), ten_by_rate(), 8);
        s.at(0).rechoke(Timer);
        let old = s.optimistic();
        s.get(old).interested = false;
        let changes = s.at(3).rechoke(InterestChanged);
        let new = s.optimistic();
        assert_ne!(new, old);
        // The old one stays unchoked until the next round: it costs nothing while uninterested.
        assert_eq!(changes, vec![(PeerKey(new), true)]);
        let changes = s.at(10).rechoke(Timer);
        assert!(changes.contains(&(PeerKey(old), false)), "{changes:?}");
    }

    #[test]
    fn optimistic_rotates_every_30_s_to_a_choked_interested_peer_and_not_more_often() {
        let mut peers = ten_by_rate();
        peers.push(ChokePeer {
            interested: false,
            ..peer(10)
        });
        peers.push(ChokePeer {
            is_seed: true,
            interested: false,
            ..peer(11)
        });
        let mut s = Swarm::new(ChokerConfig::default(), peers, 9);
        let mut rotations = Vec::new();
        let mut last = None;
        // The driver ticks every second; only the due calls may rotate.
        for second in 0..=125 {
            let choked_before: Vec<u32> = s
                .peers
                .iter()
                .filter(|p| !p.unchoked && p.interested)
                .map(|p| p.key.0)
                .collect();
            s.at(second).rechoke(Timer);
            let opt = s.choker.optimistic();
            if opt != last {
                rotations.push(second);
                let opt = opt.unwrap().0;
                assert!(
                    choked_before.contains(&opt),
                    "{opt} was not a choked interested peer"
                );
                assert!(opt <= 5, "a regular peer became the optimistic one");
                last = s.choker.optimistic();
            }
        }
        assert_eq!(rotations, vec![0, 30, 60, 90, 120]);
    }

    #[test]
    fn new_connections_are_three_times_as_likely_to_be_picked() {
        let now = Time::ZERO + HOUR * 2;
        let mut counts = [0u32; 4];
        let trials = 20_000;
        for seed in 0..trials {
            let mut peers: Vec<ChokePeer> = (10..14)
                .map(|k| ChokePeer {
                    down_rate: 1_000_000,
                    ..peer(k)
                })
                .collect();
            // 0: connected a minute ago (new by age). 1: connected an hour ago but never
            // unchoked (new by never having had a chance). 2, 3: old and already tried.
            peers.push(ChokePeer {
                connected_at: before(now, 60),
                last_unchoked: Some(before(now, 30)),
                ..peer(0)
            });
            peers.push(ChokePeer {
                connected_at: before(now, 3600),
                last_unchoked: None,
                ..peer(1)
            });
            for k in [2, 3] {
                peers.push(ChokePeer {
                    connected_at: before(now, 3600),
                    last_unchoked: Some(before(now, 1200)),
                    ..peer(k)
                });
            }
            let mut choker = Choker::new(ChokerConfig::default(), now);
            let mut rng = Rng::new(seed);
            choker.rechoke(now, false, &peers, Timer, &mut rng);
            counts[choker.optimistic().unwrap().0 as usize] += 1;
        }
        // Expected shares: 3/8, 3/8, 1/8, 1/8.
        let new = f64::from(counts[0] + counts[1]);
        let old = f64::from(counts[2] + counts[3]);
        let ratio = new / old;
        assert!(
            (2.8..3.2).contains(&ratio),
            "ratio {ratio}, counts {counts:?}"
        );
        for (k, &c) in counts.iter().enumerate() {
            let expected = if k < 2 { 0.375 } else { 0.125 };
            let share = f64::from(c) / f64::from(trials as u32);
            assert!(
                (share - expected).abs() < 0.02,
                "peer {k}: {share}, counts {counts:?}"
            );
        }
    }

    #[test]
    fn seeding_fastest_upload_keeps_the_fastest_and_ignores_residual_rates() {
        let config = ChokerConfig {
            seed_mode: SeedChokeMode::FastestUpload,
            ..ChokerConfig::default()
        };
        let mut peers: Vec<ChokePeer> = [100, 500, 300, 400, 200]
            .iter()
            .enumerate()
            .map(|(k, &up)| ChokePeer {
                unchoked: true,
                up_rate: up,
                last_unchoked: Some(Time::ZERO),
                ..peer(k as u32)
            })
            .collect();
        // 5 was choked last round; its rate is what was still in flight.
        peers.push(ChokePeer {
            up_rate: 10_000,
            last_unchoked: Some(Time::ZERO),
            ..peer(5)
        });
        peers.push(peer(6));
        let mut s = Swarm::new(config, peers, 10);
        s.seeding = true;
        let changes = s.at(0).rechoke(Timer);
        assert_eq!(
            s.regular(),
            vec![1, 2, 3, 4],
            "kept by upload rate: 500, 300, 400, 200"
        );
        assert!(changes.contains(&(PeerKey(0), false)));
        assert!([5, 6].contains(&s.optimistic()));
    }

    #[test]
    fn seeding_anti_leech_prefers_peers_near_the_start_or_the_end() {
        let config = ChokerConfig {
            seed_mode: SeedChokeMode::AntiLeech,
            ..ChokerConfig::default()
        };
        let progress = [0.5, 0.0, 0.45, 0.99, 0.6, 0.05, 0.3, f32::NAN];
        let peers = progress
            .iter()
            .enumerate()
            .map(|(k, &progress)| ChokePeer {
                progress,
                ..peer(k as u32)
            })
            .collect();
        let mut s = Swarm::new(config, peers, 11);
        s.seeding = true;
        s.at(0).rechoke(Timer);
        // Scores: 0.0 and NaN -> 1000, 0.99 -> 980, 0.05 -> 900; then 0.3 -> 400, 0.6 -> 200.
        assert_eq!(s.regular(), vec![1, 3, 5, 7]);
        assert_eq!(anti_leech_score(0.5), 0);
        assert_eq!(anti_leech_score(1.0), ANTI_LEECH_SCALE);
        assert_eq!(anti_leech_score(-3.0), ANTI_LEECH_SCALE);
        assert_eq!(anti_leech_score(0.25), anti_leech_score(0.75));
    }

    #[test]
    fn seeding_round_robin_orders_turns() {
        let now = Time::from_secs(1000);
        let ago = |secs: u64| Some(before(now, secs));
        let mib = 1024 * 1024;
        let holder = |k: u32, held: u64, uploaded: u64, up_rate: u64| ChokePeer {
            unchoked: true,
            last_unchoked: ago(held),
            uploaded_since_unchoke: uploaded,
            up_rate,
            ..peer(k)
        };
        let peers = vec![
            holder(0, 70, 30 * mib, 1_000_000), // quota delivered after the minimum hold: done
            holder(1, 70, mib, 100_000),        // under quota: keeps its turn
            holder(2, 20, 30 * mib, 2_000_000), // over quota but under a minute: keeps it
            holder(3, 400, mib, 1_000),         // past the maximum hold: done
            holder(7, 30, 0, 0),                // a whole round without a request: done
            ChokePeer {
                last_unchoked: ago(500),
                ..peer(4)
            },
            ChokePeer {
                connected_at: before(now, 300),
                ..peer(5)
            },
            ChokePeer {
                last_unchoked: ago(100),
                ..peer(6)
            },
        ];
        let mut choker = Choker::new(ChokerConfig::default(), now);
        let changes = choker.rechoke(now, true, &peers, Timer, &mut Rng::new(12));
        // Turns in progress (2, 1), then the longest waiting (4 since 500 s ago, 5 since it
        // connected 300 s ago); 6 is the only choked peer left, so it is the optimistic one.
        assert_eq!(
            changes,
            vec![
                (PeerKey(0), false),
                (PeerKey(3), false),
                (PeerKey(7), false),
                (PeerKey(4), true),
                (PeerKey(5), true),
                (PeerKey(6), true),
            ]
        );
        assert_eq!(choker.optimistic(), Some(PeerKey(6)));
    }

    /// Seeds to eight peers with two slots for an hour, each unchoked peer taking 200 kB/s
    /// (so the 20 MiB quota lasts about 105 s). Returns each peer's share of the upload
    /// relative to the mean, and the shortest regular turn that ended.
    fn seeding_shares(mode: SeedChokeMode, seed: u64) -> (Vec<f64>, u64) {
        let config = ChokerConfig {
            upload_slots: 2,
            seed_mode: mode,
            ..ChokerConfig::default()
        };
        let mut s = Swarm::new(config, (0..8).map(peer).collect(), seed);
        s.seeding = true;
        let mut received = [0u64; 8];
        let mut turn_start = [None::<u64>; 8];
        let mut shortest_turn = u64::MAX;
        for second in 0..=3600u64 {
            s.now = Time::from_secs(second);
            if s.now >= s.choker.next_due() {
                s.rechoke(Timer);
            }
            let regular = s.regular();
            for (k, start) in turn_start.iter_mut().enumerate() {
                match (regular.contains(&(k as u32)), *start) {
                    (true, None) => *start = Some(second),
                    (false, Some(begun)) => {
                        shortest_turn = shortest_turn.min(second - begun);
                        *start = None;
                    }
                    _ => {}
                }
            }
            for p in &mut s.peers {
                p.up_rate = if p.unchoked { 200_000 } else { 0 };
                p.uploaded_since_unchoke += p.up_rate;
                received[p.key.0 as usize] += p.up_rate;
            }
        }
        let mean = received.iter().sum::<u64>() as f64 / 8.0;
        (
            received.iter().map(|&r| r as f64 / mean).collect(),
            shortest_turn,
        )
    }

    #[test]
    fn seeding_round_robin_shares_the_uplink_and_keeps_turns_whole() {
        for seed in [13, 14, 15] {
            let (shares, shortest_turn) = seeding_shares(SeedChokeMode::RoundRobin, seed);
            // One turn is about a sixth of a peer's hourly share, so +-40% allows for a turn
            // more or less plus the luck of the optimistic draws.
            assert!(
                shares.iter().all(|s| (0.6..1.4).contains(s)),
                "seed {seed}: {shares:?}"
            );
            assert!(shortest_turn >= 60, "a turn ended after {shortest_turn} s");
        }
        // The same measure tells fastest-upload apart: two peers keep the uplink.
        let (shares, _) = seeding_shares(SeedChokeMode::FastestUpload, 13);
        assert!(shares.iter().any(|s| !(0.6..1.4).contains(s)), "{shares:?}");
    }

    #[test]
    fn seeding_unlimited_unchokes_every_interested_peer() {
        let config = ChokerConfig {
            seed_mode: SeedChokeMode::Unlimited,
            ..ChokerConfig::default()
        };
        let mut peers: Vec<ChokePeer> = (0..50).map(peer).collect();
        peers.extend((50..55).map(|k| ChokePeer {
            interested: false,
            ..peer(k)
        }));
        peers.extend((55..57).map(|k| ChokePeer {
            interested: false,
            is_seed: true,
            ..peer(k)
        }));
        let mut s = Swarm::new(config, peers, 14);
        s.seeding = true;
        s.at(0).rechoke(Timer);
        assert_eq!(s.unchoked(), (0..50).collect::<Vec<u32>>());
        assert_eq!(s.choker.optimistic(), None);
        s.get(50).interested = true;
        assert_eq!(s.at(1).rechoke(InterestChanged), vec![(PeerKey(50), true)]);
        s.get(3).interested = false;
        assert!(s.at(2).rechoke(InterestChanged).is_empty());
        assert_eq!(s.at(10).rechoke(Timer), vec![(PeerKey(3), false)]);
    }

    #[test]
    fn becoming_a_seed_rechokes_at_once_by_the_seed_order() {
        let config = ChokerConfig {
            seed_mode: SeedChokeMode::AntiLeech,
            ..ChokerConfig::default()
        };
        let mut peers = ten_by_rate();
        // 0..=3 are newcomers: last by download rate, first by anti-leech score.
        for p in &mut peers[..4] {
            p.progress = 0.01;
        }
        peers.push(ChokePeer {
            interested: false,
            down_rate: 100_000,
            ..peer(10)
        });
        let mut s = Swarm::new(config, peers, 15);
        s.at(0).rechoke(Timer);
        assert_eq!(s.regular(), vec![6, 7, 8, 9, 10]);
        let opt = s.optimistic();

        s.seeding = true;
        let changes = s.at(4).rechoke(BecameSeed);
        assert!(
            changes.contains(&(PeerKey(10), false)),
            "uninterested peers are choked"
        );
        assert_eq!(
            s.choker.next_due(),
            Time::from_secs(14),
            "a regular round, out of turn"
        );
        assert_eq!(s.optimistic(), opt, "the optimistic peer keeps its 30 s");
        // Newcomers first, then the rest by waiting time (all equal) and key.
        let expected: Vec<u32> = (0..10).filter(|&k| k != opt).take(4).collect();
        assert_eq!(s.regular(), expected);
    }

    #[test]
    fn seeds_never_take_a_slot() {
        let peers: Vec<ChokePeer> = (0..6)
            .map(|k| ChokePeer {
                is_seed: true,
                interested: k % 2 == 0,
                down_rate: 1 << 20,
                ..peer(k)
            })
            .collect();
        for seeding in [false, true] {
            let mut s = Swarm::new(ChokerConfig::default(), peers.clone(), 16);
            s.seeding = seeding;
            assert!(s.at(0).rechoke(Timer).is_empty());
            assert_eq!(s.choker.optimistic(), None);
        }
    }

    #[test]
    fn a_round_with_nothing_new_changes_nothing() {
        let mut s = Swarm::new(ChokerConfig::default(), ten_by_rate(), 17);
        s.at(0).rechoke(Timer);
        assert!(s.at(0).rechoke(Timer).is_empty());
        assert!(s.at(10).rechoke(Timer).is_empty());
        assert!(s.at(20).rechoke(Timer).is_empty());
    }

    /// Plays a random scenario: peers come and go, change interest and rates, and halfway
    /// through we become a seed. Returns every call's changes.
    fn random_scenario(
        seed: u64,
        shuffle_input: bool,
        mode: SeedChokeMode,
    ) -> Vec<Vec<(PeerKey, bool)>> {
        let mut world = Rng::new(seed ^ 0xfeed);
        let config = ChokerConfig {
            seed_mode: mode,
            upload_slots: 3,
            ..ChokerConfig::default()
        };
        let mut s = Swarm::new(config, Vec::new(), seed);
        if shuffle_input {
            s.shuffle_input = Some(Rng::new(!seed));
        }
        let mut next_key = 0;
        let mut log = Vec::new();
        for step in 0..400u64 {
            s.now = Time::from_millis(step * 700);
            let reason = match world.below(5) {
                0 if s.peers.len() < 40 => {
                    s.peers.push(ChokePeer {
                        connected_at: s.now,
                        interested: world.chance(0.5),
                        down_rate: world.below(1000),
                        progress: world.unit() as f32,
                        ..peer(next_key)
                    });
                    next_key += 1;
                    InterestChanged
                }
                1 if !s.peers.is_empty() => {
                    let i = world.index(s.peers.len());
                    s.peers.swap_remove(i);
                    PeerLeft
                }
                2 if !s.peers.is_empty() => {
                    let i = world.index(s.peers.len());
                    s.peers[i].interested = !s.peers[i].interested;
                    InterestChanged
                }
                _ => {
                    for p in &mut s.peers {
                        p.down_rate = world.below(1000);
                        p.up_rate = if p.unchoked { world.below(1000) } else { 0 };
                        p.uploaded_since_unchoke += p.up_rate;
                        p.snubbed = world.chance(0.05);
                    }
                    Timer
                }
            };
            let reason = if step == 200 {
                s.seeding = true;
                BecameSeed
            } else {
                reason
            };
            log.push(s.rechoke(reason));
        }
        log
    }

    #[test]
    fn deterministic_for_the_same_seed_whatever_the_input_order() {
        for mode in [
            SeedChokeMode::RoundRobin,
            SeedChokeMode::FastestUpload,
            SeedChokeMode::AntiLeech,
            SeedChokeMode::Unlimited,
        ] {
            for seed in 0..20 {
                let a = random_scenario(seed, false, mode);
                let b = random_scenario(seed, false, mode);
                let c = random_scenario(seed, true, mode);
                assert_eq!(a, b);
                assert_eq!(
                    a, c,
                    "input order changed the result ({mode:?}, seed {seed})"
                );
                assert!(a.iter().any(|changes| !changes.is_empty()));
            }
        }
        assert_ne!(
            random_scenario(1, false, SeedChokeMode::RoundRobin),
            random_scenario(2, false, SeedChokeMode::RoundRobin)
        );
    }

    #[test]
    fn zero_slots_leave_only_the_optimistic_one() {
        let config = ChokerConfig {
            upload_slots: 0,
            ..ChokerConfig::default()
        };
        let mut s = Swarm::new(config, ten_by_rate(), 18);
        s.at(0).rechoke(Timer);
        assert_eq!(s.unchoked().len(), 1);
        assert!(s.regular().is_empty());
    }

    #[test]
    fn config_helpers() {
        let config = ChokerConfig::default().with_piece_len(4 * 1024 * 1024);
        assert_eq!(config.round_robin_quota, 80 * 1024 * 1024);
        assert_eq!(ChokerConfig::default().seed_mode, SeedChokeMode::RoundRobin);
        let mut choker = Choker::new(ChokerConfig::default(), Time::from_secs(5));
        assert_eq!(choker.next_due(), Time::from_secs(5));
        choker.set_config(config.clone());
        assert_eq!(choker.config(), &config);
    }

    #[test]
    fn local_peers_are_unchoked_outside_the_slots() {
        // Ten interested peers, four slots; two of them are local: both get unchoked at once,
        // and four of the remote ones (plus the optimistic one) still have the slots.
        let mut peers = ten_by_rate();
        peers[0].local = true;
        peers[1].local = true;
        let mut s = Swarm::new(ChokerConfig::default(), peers, 4);
        s.at(0).rechoke(Timer);
        assert!(
            s.get(0).unchoked && s.get(1).unchoked,
            "local peers unchoked"
        );
        let remote_regular = (2..10)
            .filter(|&k| s.get(k).unchoked && Some(PeerKey(k)) != s.choker.optimistic())
            .count();
        assert_eq!(remote_regular, 4, "the slots still go to remote peers");
        // A local peer that loses interest is not kept unchoked by the exemption.
        s.get(0).interested = false;
        s.at(1).rechoke(InterestChanged);
        assert!(s.get(1).unchoked);
    }
}
