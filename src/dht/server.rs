//! What answering others needs besides the table: write tokens from a rotating secret, the
//! store of announced peers, and the rate limits on queries answered.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::core::{InfoHash, Rng, Time};

/// How often the token secret changes (a token stays valid for one to two periods).
pub const SECRET_ROTATION: Duration = Duration::from_secs(5 * 60);
/// Bytes of SHA1 kept as a token.
pub const TOKEN_LEN: usize = 8;
/// How long an announced peer is kept without a new announce.
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);
/// Peers returned in one `values` (fits a datagram with 8 nodes of each family).
pub const MAX_VALUES_SENT: usize = 100;
/// Stored peers looked at for one answer (they are then filtered by family).
pub const MAX_STORED_SCAN: usize = 400;

/// Write tokens: SHA1(secret || ip) truncated, with the current and the previous secret.
#[derive(Clone, Debug)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated: Time,
}

impl Tokens {
    /// Fresh secrets from `rng`.
    pub fn new(rng: &mut Rng, now: Time) -> Tokens {
        let mut current = [0u8; 16];
        let mut previous = [0u8; 16];
        rng.fill(&mut current);
        rng.fill(&mut previous);
        Tokens {
            current,
            previous,
            rotated: now,
        }
    }

    fn make(secret: &[u8; 16], ip: IpAddr) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        let digest = h.finalize();
        digest.iter().take(TOKEN_LEN).copied().collect()
    }

    /// The token for a node at `ip`.
    pub fn token(&self, ip: IpAddr) -> Vec<u8> {
        Tokens::make(&self.current, ip)
    }

    /// Whether `token` is one we gave `ip` within the last one or two periods.
    pub fn check(&self, ip: IpAddr, token: &[u8]) -> bool {
        token == Tokens::make(&self.current, ip).as_slice()
            || token == Tokens::make(&self.previous, ip).as_slice()
    }

    /// Rotates when the period is over; returns when it next wants to.
    pub fn tick(&mut self, now: Time, rng: &mut Rng) -> Time {
        if now.saturating_since(self.rotated) >= SECRET_ROTATION {
            self.previous = self.current;
            rng.fill(&mut self.current);
            self.rotated = now;
        }
        self.rotated + SECRET_ROTATION
    }
}

/// Announced peers, bounded in torrents and in peers per torrent; oldest evicted first.
#[derive(Clone, Debug, Default)]
pub struct PeerStore {
    /// Per torrent: peers and when they last announced (oldest first).
    torrents: BTreeMap<InfoHash, VecDeque<(SocketAddr, Time)>>,
    peers: usize,
}

impl PeerStore {
    /// Records an announce; evicts the oldest peer of the torrent, or the torrent whose newest
    /// announce is oldest, to stay within the bounds.
    pub fn announce(
        &mut self,
        info_hash: InfoHash,
        peer: SocketAddr,
        now: Time,
        max_torrents: usize,
        max_peers: usize,
    ) {
        if max_torrents == 0 || max_peers == 0 {
            return;
        }
        if !self.torrents.contains_key(&info_hash) && self.torrents.len() >= max_torrents {
            let stalest = self
                .torrents
                .iter()
                .min_by_key(|(_, list)| list.back().map(|(_, t)| *t))
                .map(|(ih, _)| *ih);
            if let Some(ih) = stalest {
                if let Some(list) = self.torrents.remove(&ih) {
                    self.peers = self.peers.saturating_sub(list.len());
                }
            }
        }
        let list = self.torrents.entry(info_hash).or_default();
        if let Some(pos) = list.iter().position(|(a, _)| *a == peer) {
            list.remove(pos);
            self.peers = self.peers.saturating_sub(1);
        }
        while list.len() >= max_peers {
            list.pop_front();
            self.peers = self.peers.saturating_sub(1);
        }
        list.push_back((peer, now));
        self.peers += 1;
    }

    /// Up to `n` peers for `info_hash`, newest first.
    pub fn get(&self, info_hash: &InfoHash, n: usize) -> Vec<SocketAddr> {
        self.torrents
            .get(info_hash)
            .map(|list| list.iter().rev().take(n).map(|(a, _)| *a).collect())
            .unwrap_or_default()
    }

    /// Drops peers that have not announced for [`PEER_TTL`].
    pub fn expire(&mut self, now: Time) {
        let mut removed = 0;
        self.torrents.retain(|_, list| {
            while list
                .front()
                .is_some_and(|(_, t)| now.saturating_since(*t) >= PEER_TTL)
            {
                list.pop_front();
                removed += 1;
            }
            !list.is_empty()
        });
        self.peers = self.peers.saturating_sub(removed);
    }

    /// Torrents with peers.
    pub fn torrents(&self) -> usize {
        self.torrents.len()
    }

    /// Peers, all torrents.
    pub fn peers(&self) -> usize {
        self.peers
    }
}

/// A token bucket: `rate` per second, bursts up to `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Time,
}

impl Bucket {
    fn take(&mut self, now: Time, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sources tracked by the per-address limit.
pub const MAX_TRACKED_SOURCES: usize = 512;
/// Queries per second answered to one address.
pub const PER_SOURCE_RATE: f64 = 20.0;
/// Burst allowed to one address.
pub const PER_SOURCE_BURST: f64 = 40.0;

/// The limits on queries answered: one bucket overall, and one per source address (a bounded
/// table, evicting the least recently seen) so one flooder cannot use the whole allowance.
#[derive(Clone, Debug)]
pub struct RateLimit {
    global: Bucket,
    per_second: f64,
    sources: BTreeMap<IpAddr, Bucket>,
}

impl RateLimit {
    /// `per_second` queries overall, a second's worth of burst.
    pub fn new(per_second: u32, now: Time) -> RateLimit {
        let per_second = f64::from(per_second);
        RateLimit {
            global: Bucket {
                tokens: per_second,
                last: now,
            },
            per_second,
            sources: BTreeMap::new(),
        }
    }

    /// Whether a query from `ip` may be answered now.
    pub fn allow(&mut self, ip: IpAddr, now: Time) -> bool {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_TRACKED_SOURCES {
            // Sources whose bucket has refilled carry no state worth keeping.
            let full_after = Duration::from_secs_f64(PER_SOURCE_BURST / PER_SOURCE_RATE);
            self.sources
                .retain(|_, b| now.saturating_since(b.last) < full_after);
            if self.sources.len() >= MAX_TRACKED_SOURCES {
                let oldest = self
                    .sources
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    self.sources.remove(&oldest);
                }
            }
        }
        let source = self.sources.entry(ip).or_insert(Bucket {
            tokens: PER_SOURCE_BURST,
            last: now,
        });
        if !source.take(now, PER_SOURCE_RATE, PER_SOURCE_BURST) {
            return false;
        }
        self.global
            .take(now, self.per_second, self.per_second.max(1.0))
    }

    /// Sources tracked (for tests).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rotate_and_the_previous_one_is_accepted() {
        let mut rng = Rng::new(1);
        let t0 = Time::from_secs(0);
        let mut tokens = Tokens::new(&mut rng, t0);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let other: IpAddr = "1.2.3.5".parse().unwrap();
        let tok = tokens.token(ip);
        assert_eq!(tok.len(), TOKEN_LEN);
        assert!(tokens.check(ip, &tok));
        assert!(!tokens.check(other, &tok));
        assert!(!tokens.check(ip, b"nonsense"));
        // Not yet time: nothing changes.
        assert_eq!(
            tokens.tick(Time::from_secs(60), &mut rng),
            t0 + SECRET_ROTATION
        );
        assert_eq!(tokens.token(ip), tok);
        // One rotation: still accepted, but a new one is handed out.
        tokens.tick(t0 + SECRET_ROTATION, &mut rng);
        assert!(tokens.check(ip, &tok));
        assert_ne!(tokens.token(ip), tok);
        // Two rotations: expired.
        tokens.tick(t0 + SECRET_ROTATION * 2, &mut rng);
        assert!(!tokens.check(ip, &tok));
    }

    #[test]
    fn peer_store_is_bounded_and_expires() {
        let mut s = PeerStore::default();
        let t0 = Time::from_secs(0);
        for t in 0..5u8 {
            let ih = InfoHash::from_bytes([t; 20]);
            for p in 0..10u16 {
                let peer = SocketAddr::from(([1, 1, 1, t], 1000 + p));
                s.announce(ih, peer, t0 + Duration::from_secs(u64::from(t)), 3, 4);
            }
        }
        assert_eq!(s.torrents(), 3);
        assert_eq!(s.peers(), 12);
        // The stalest torrents went first; the newest peers stayed.
        assert!(s.get(&InfoHash::from_bytes([0; 20]), 10).is_empty());
        let got = s.get(&InfoHash::from_bytes([4; 20]), 10);
        assert_eq!(got.first(), Some(&SocketAddr::from(([1, 1, 1, 4], 1009))));
        assert_eq!(got.len(), 4);
        // A re-announce moves a peer to the back without growing the list.
        s.announce(
            InfoHash::from_bytes([4; 20]),
            SocketAddr::from(([1, 1, 1, 4], 1006)),
            Time::from_secs(100),
            3,
            4,
        );
        assert_eq!(s.peers(), 12);
        s.expire(Time::from_secs(99) + PEER_TTL);
        assert_eq!(s.peers(), 1);
        s.expire(Time::from_secs(100) + PEER_TTL);
        assert_eq!((s.peers(), s.torrents()), (0, 0));
    }

    #[test]
    fn rate_limit_bounds_one_source_and_all() {
        let t0 = Time::from_secs(10);
        let mut r = RateLimit::new(100, t0);
        let flooder: IpAddr = "6.6.6.6".parse().unwrap();
        let allowed = (0..1000).filter(|_| r.allow(flooder, t0)).count();
        assert_eq!(allowed, PER_SOURCE_BURST as usize);
        // Other sources still get the rest of the global allowance.
        let mut others = 0;
        for i in 0..1000u32 {
            let ip = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            if r.allow(ip, t0) {
                others += 1;
            }
        }
        assert_eq!(others, 100 - PER_SOURCE_BURST as usize);
        assert!(r.tracked() <= MAX_TRACKED_SOURCES);
        // Over ten seconds one source gets at most its rate (plus burst).
        let mut got = 0;
        for ms in 0..10_000u64 {
            if r.allow(flooder, t0 + Duration::from_millis(1000 + ms)) {
                got += 1;
            }
        }
        assert!(
            got <= (PER_SOURCE_RATE * 11.0 + PER_SOURCE_BURST) as usize,
            "{got}"
        );
        assert!(got >= (PER_SOURCE_RATE * 9.0) as usize, "{got}");
    }
}
