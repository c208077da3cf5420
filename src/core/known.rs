//! Peer addresses a torrent knows of (from trackers, the user, magnet links and PEX), whether
//! and when to dial them, and the IPs banned from the torrent. Part of a torrent's `PeerSet`
//! (`peers.rs`), with its metadata or still fetching it (`metadata.rs`), and carried from the
//! second to the first.

use std::collections::{BTreeMap, BTreeSet};

use ::core::net::{IpAddr, SocketAddr};

use super::api::CloseReason;
use super::config::Config;
use super::Time;

/// Longest back-off between attempts to dial a peer that keeps failing.
const MAX_RECONNECT_BACKOFF_SHIFT: u32 = 5;

/// A peer address we know of, and whether to dial it.
#[derive(Debug, Clone)]
struct KnownPeer {
    state: KnownState,
    next_try: Time,
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownState {
    Idle,
    Connecting,
    Connected,
    /// Never dial again (banned, or nothing to exchange).
    Done,
}

/// Known addresses and banned IPs.
#[derive(Debug, Default)]
pub(crate) struct KnownPeers {
    map: BTreeMap<SocketAddr, KnownPeer>,
    banned: BTreeSet<IpAddr>,
}

impl KnownPeers {
    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        self.banned.contains(&ip)
    }

    pub(crate) fn ban(&mut self, ip: IpAddr) {
        self.banned.insert(ip);
    }

    /// Remembers addresses to dial, up to `max` known in all (banned IPs are skipped).
    pub(crate) fn add(&mut self, addrs: &[SocketAddr], now: Time, max: usize) {
        for &addr in addrs {
            if self.banned.contains(&addr.ip()) || self.map.len() >= max {
                continue;
            }
            self.map.entry(addr).or_insert(KnownPeer {
                state: KnownState::Idle,
                next_try: now,
                failures: 0,
            });
        }
    }

    /// Whether a dial is in progress.
    pub(crate) fn any_connecting(&self) -> bool {
        self.map.values().any(|k| k.state == KnownState::Connecting)
    }

    /// A connection to `addr` completed its handshake.
    pub(crate) fn connected(&mut self, addr: SocketAddr) {
        if let Some(k) = self.map.get_mut(&addr) {
            k.state = KnownState::Connected;
            k.failures = 0;
        }
    }

    /// A connection to `addr` closed for `reason`; `useful`: it was sending us data moments
    /// ago, worth trying again soon.
    pub(crate) fn closed(
        &mut self,
        addr: SocketAddr,
        reason: &CloseReason,
        useful: bool,
        config: &Config,
        now: Time,
    ) {
        if let Some(k) = self.map.get_mut(&addr) {
            k.state = match reason {
                CloseReason::Banned | CloseReason::BothSeeds | CloseReason::SelfConnection => {
                    KnownState::Done
                }
                _ if k.state == KnownState::Done => KnownState::Done,
                _ => KnownState::Idle,
            };
            k.next_try = now
                + if useful {
                    config.reconnect_delay_useful
                } else {
                    config.reconnect_delay
                };
        }
    }

    /// Picks up to `max` known peers to dial now (within the torrent's room, given `peers`
    /// connected) and marks them as being dialled. `per_ip` counts the connected peers by
    /// IP: an address whose IP already holds `Config::max_peers_per_ip` of them (dials in
    /// progress included) waits.
    pub(crate) fn candidates(
        &mut self,
        now: Time,
        config: &Config,
        max: usize,
        peers: usize,
        mut per_ip: BTreeMap<IpAddr, usize>,
    ) -> Vec<SocketAddr> {
        let mut connecting = 0;
        for (addr, k) in &self.map {
            if k.state == KnownState::Connecting {
                connecting += 1;
                *per_ip.entry(addr.ip()).or_default() += 1;
            }
        }
        let room = config
            .max_peers_per_torrent
            .saturating_sub(peers + connecting);
        let max = max
            .min(room)
            .min(config.max_half_open.saturating_sub(connecting));
        let mut picked = Vec::new();
        for (addr, k) in self.map.iter_mut() {
            if picked.len() >= max {
                break;
            }
            if k.state == KnownState::Idle && k.next_try <= now {
                let at_ip = per_ip.entry(addr.ip()).or_default();
                if *at_ip >= config.max_peers_per_ip {
                    continue;
                }
                *at_ip += 1;
                k.state = KnownState::Connecting;
                picked.push(*addr);
            }
        }
        picked
    }

    /// A dial failed or a connection closed before its handshake.
    pub(crate) fn failed(&mut self, addr: SocketAddr, config: &Config, now: Time) {
        if let Some(k) = self.map.get_mut(&addr) {
            if k.state == KnownState::Connecting {
                k.state = KnownState::Idle;
                k.failures += 1;
                let shift = k.failures.min(MAX_RECONNECT_BACKOFF_SHIFT);
                k.next_try = now + config.reconnect_delay * (1 << shift) / 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_dials_to_one_ip_than_the_per_ip_cap() {
        let config = Config {
            max_peers_per_ip: 2,
            ..Config::default()
        };
        let now = Time::from_secs(1);
        let mut known = KnownPeers::default();
        // Peer exchange could name a hundred ports of one host.
        let host: Vec<SocketAddr> = (0..100)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], 1000 + p)))
            .collect();
        known.add(&host, now, 1000);
        known.add(&[SocketAddr::from(([10, 0, 0, 2], 1))], now, 1000);
        // One peer at the host is connected already: one more dial there, and the other host.
        let connected = BTreeMap::from([(IpAddr::from([10, 0, 0, 1]), 1)]);
        let picked = known.candidates(now, &config, 10, 1, connected);
        assert_eq!(picked.len(), 2, "{picked:?}");
        assert_eq!(picked.iter().filter(|a| a.port() >= 1000).count(), 1);
        // The dial in progress counts too: nothing more for that host.
        let connected = BTreeMap::from([(IpAddr::from([10, 0, 0, 1]), 1)]);
        assert!(known.candidates(now, &config, 10, 1, connected).is_empty());
    }
}
