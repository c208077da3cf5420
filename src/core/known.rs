//! Peer addresses a torrent knows of (from trackers, the user, magnet links and PEX), whether
//! and when to dial them, and the IPs banned from the torrent. Part of a torrent's `PeerSet`
//! (`peers.rs`), with its metadata or still fetching it (`metadata.rs`), and carried from the
//! second to the first.

use std::collections::{BTreeMap, BTreeSet};

use ::core::net::{IpAddr, SocketAddr};

use super::api::CloseReason;
use super::config::{Config, Encryption};
use super::types::unmap;
use super::Time;

/// Longest back-off between attempts to dial a peer that keeps failing: 2^6 times
/// `Config::dial_retry_delay` (about 5 minutes by default).
const MAX_RECONNECT_BACKOFF_SHIFT: u32 = 6;

/// A peer address we know of, and whether to dial it.
#[derive(Debug, Clone)]
struct KnownPeer {
    state: KnownState,
    next_try: Time,
    failures: u32,
    /// Under `Encryption::Prefer`: dial it with the encrypted handshake (`Some(true)`, also
    /// what PEX's "prefers encryption" flag says) or the plain one (`Some(false)`), as last
    /// worked or last learned; `None`, nothing known (encrypted first).
    encrypt: Option<bool>,
    /// A handshake was refused since the last one that worked, and the method switched:
    /// the next refusal waits out the back-off instead of redialling at once.
    switched: bool,
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
            // Trackers' `peers6` and PEX's `added6` may carry IPv4-mapped addresses: the
            // engine holds the IPv4 form only (see `types::unmap`).
            let addr = unmap(addr);
            if self.banned.contains(&addr.ip()) || self.map.len() >= max {
                continue;
            }
            self.map.entry(addr).or_insert(KnownPeer {
                state: KnownState::Idle,
                next_try: now,
                failures: 0,
                encrypt: None,
                switched: false,
            });
        }
    }

    /// Remembers addresses from peer exchange with their BEP 11 flags. The sender sets
    /// "prefers encryption" (0x01) for a peer it is connected to over MSE/PE; without it, the
    /// two are connected in plain. Under `Encryption::Prefer`, while nothing else is known of
    /// the address, it is first dialled the way that works for the sender: encrypted with the
    /// flag, plain without (which saves a refused encrypted dial to a client with encryption
    /// off).
    pub(crate) fn add_flagged(&mut self, addrs: &[(SocketAddr, u8)], now: Time, max: usize) {
        for &(addr, flags) in addrs {
            let addr = unmap(addr);
            self.add(&[addr], now, max);
            if let Some(k) = self.map.get_mut(&addr) {
                k.encrypt.get_or_insert(flags & 0x01 != 0);
            }
        }
    }

    /// Whether to dial `addr` with the encrypted handshake under `policy`.
    pub(crate) fn dial_encrypted(&self, addr: SocketAddr, policy: Encryption) -> bool {
        match policy {
            Encryption::Plaintext => false,
            Encryption::Require => true,
            Encryption::Prefer => self.map.get(&addr).and_then(|k| k.encrypt).unwrap_or(true),
        }
    }

    /// Whether a dial is in progress.
    pub(crate) fn any_connecting(&self) -> bool {
        self.map.values().any(|k| k.state == KnownState::Connecting)
    }

    /// A connection to `addr` completed its handshake, `encrypted` (MSE/PE) or not: the
    /// method is remembered for the next dial.
    pub(crate) fn connected(&mut self, addr: SocketAddr, encrypted: bool) {
        if let Some(k) = self.map.get_mut(&addr) {
            k.state = KnownState::Connected;
            k.failures = 0;
            k.encrypt = Some(encrypted);
            k.switched = false;
        }
    }

    /// Under `Encryption::Prefer`, the peer at `addr` refused our handshake (closed the
    /// connection or never answered it) after the TCP connection came up: the next dial
    /// uses the other method, at once the first time (libtorrent's retry), after the usual
    /// back-off when it was refused since the switch too (the refusal may have had another
    /// cause, so the methods keep alternating). Other policies: a plain failure.
    pub(crate) fn handshake_refused(
        &mut self,
        addr: SocketAddr,
        encrypted: bool,
        config: &Config,
        now: Time,
    ) {
        let Some(k) = self.map.get_mut(&addr) else {
            return;
        };
        if config.encryption != Encryption::Prefer || k.state != KnownState::Connecting {
            return self.failed(addr, config, now);
        }
        k.encrypt = Some(!encrypted);
        if k.switched {
            return self.failed(addr, config, now);
        }
        k.switched = true;
        k.state = KnownState::Idle;
        k.next_try = now;
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
                let shift = (k.failures - 1).min(MAX_RECONNECT_BACKOFF_SHIFT);
                k.next_try = now + config.dial_retry_delay * (1 << shift);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pex_flags_choose_the_first_dial_under_prefer_only() {
        let now = Time::from_secs(1);
        let mut known = KnownPeers::default();
        let (flagged, plain, tracker): (SocketAddr, SocketAddr, SocketAddr) = (
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:1".parse().unwrap(),
            "10.0.0.3:1".parse().unwrap(),
        );
        known.add(&[tracker], now, 100);
        known.add_flagged(&[(flagged, 0x11), (plain, 0x10), (tracker, 0)], now, 100);
        let first = |k: &KnownPeers, p| [flagged, plain, tracker].map(|a| k.dial_encrypted(a, p));
        assert_eq!(first(&known, Encryption::Prefer), [true, false, false]);
        assert_eq!(first(&known, Encryption::Require), [true; 3]);
        assert_eq!(first(&known, Encryption::Plaintext), [false; 3]);
        // What the peer itself showed wins over what PEX said.
        known.connected(plain, true);
        known.add_flagged(&[(plain, 0)], now, 100);
        assert!(known.dial_encrypted(plain, Encryption::Prefer));
        let fresh = KnownPeers::default();
        assert!(
            fresh.dial_encrypted(tracker, Encryption::Prefer),
            "unknown: encrypted"
        );
    }

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

    #[test]
    fn failed_dials_back_off_from_a_few_seconds_doubling_to_a_cap() {
        let config = Config::default();
        let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut known = KnownPeers::default();
        let mut now = Time::from_secs(1);
        known.add(&[peer], now, 100);
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert_eq!(
                known.candidates(now, &config, 10, 0, BTreeMap::new()),
                [peer]
            );
            known.failed(peer, &config, now);
            let next = known.map[&peer].next_try;
            assert!(
                known
                    .candidates(
                        now + (next.saturating_since(now) - Duration::from_millis(1)),
                        &config,
                        10,
                        0,
                        BTreeMap::new()
                    )
                    .is_empty(),
                "not before the back-off"
            );
            waits.push(next.saturating_since(now).as_secs());
            now = next;
        }
        // A seed still checking its data drops us: we try again in seconds, not half a minute.
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 320, 320]);
        // A handshake resets the count.
        assert_eq!(
            known.candidates(now, &config, 10, 0, BTreeMap::new()),
            [peer]
        );
        known.connected(peer, false);
        assert_eq!(known.map[&peer].failures, 0);
    }
}
