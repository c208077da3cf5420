//! The client's side of the DHT (BEP 5): the node's UDP socket and its `Dht`, which live on
//! loop 0 (the socket is bound once, without `SO_REUSEPORT`, so every datagram reaches the
//! one session that runs the node), and the housekeeping thread's part:
//!
//! - at start: the socket bound on the listen address and port (or [`DhtSettings::port`],
//!   `bind`) and given to loop 0; then, on a thread of its own so that a slow name lookup
//!   does not hold the start up, the bootstrap nodes resolved (bounded in time) and the
//!   routing table restored from the state folder's `dht.dat` (a bad file: a fresh node,
//!   with a warning) (`node`), the node put into loop 0's session, and the lookups begun;
//! - every tick (`Lookups::due`): a `get_peers` lookup, announcing our listen port, for
//!   every active torrent that is not private (a magnet link counts as public), when it
//!   starts and then every [`DhtSettings::announce_interval`], sooner
//!   (`FEW_PEERS_RETRY`) while it downloads with fewer than `FEW_PEERS` peers, and again
//!   after `RETRY_FIRST` (doubling) when no node answered; at most
//!   `MAX_LOOKUPS_PER_CHECK` started a second;
//! - the peers lookups find (`Event::Dht` from loop 0) go to the torrent's own loop as
//!   `add_peers`, as trackers' do; a peer's `port` message (`Event::DhtNode`) from another
//!   loop goes to loop 0's node, and so do peers' `yourip` votes and a torrent's `nodes`
//!   (names resolved on the `resolver` thread);
//! - the table saved to `dht.dat` every `SAVE_EVERY` and at shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::state::State;
use crate::core::{InfoHash, Time};
use crate::dht::{Dht, DhtConfig, DhtStats};

/// The well-known routers a node starts from when told nothing else.
pub const DEFAULT_BOOTSTRAP: [&str; 4] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// The state folder's file that keeps the node's id and routing table.
pub const STATE_FILE: &str = "dht.dat";

/// How long resolving the bootstrap nodes' names may take (on the `rt-dht-start` thread,
/// before the node runs).
const RESOLVE_LIMIT: Duration = Duration::from_secs(5);

/// How often the routing table is saved while running (it is saved at shutdown too).
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(10 * 60);

/// A downloading torrent with fewer connected peers than this looks up again sooner.
pub(crate) const FEW_PEERS: usize = 5;

/// How soon: a lookup costs a few dozen datagrams.
pub(crate) const FEW_PEERS_RETRY: Duration = Duration::from_secs(60);

/// A lookup that no node answered (the table still empty at start, a network down) is tried
/// again after this, doubling with each failure in a row up to the announce interval.
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(10);

/// How often the schedule is looked at (the housekeeping thread ticks every 50 ms; a pass
/// over every torrent is for once a second).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Lookups started per check at most, longest due first: a seedbox of 10,000 torrents
/// starts them over about 17 minutes rather than all at once (libtorrent likewise bounds
/// its announces in flight, `active_dht_limit`).
pub(crate) const MAX_LOOKUPS_PER_CHECK: usize = 10;

/// How the client runs its DHT node.
#[derive(Debug, Clone, PartialEq)]
pub struct DhtSettings {
    /// Run a node. Off in `ClientConfig::default()` (an embedder opts in); on by default in
    /// the `download`, `seed` and `serve` commands (`--no-dht` turns it off).
    pub enabled: bool,
    /// Nodes to start from, `HOST:PORT`, resolved at start (default: [`DEFAULT_BOOTSTRAP`]).
    /// Used when the saved table is empty or gone.
    pub bootstrap: Vec<String>,
    /// The node's UDP port. `None`: the listen port, as other clients do (the same number
    /// for TCP peers and UDP nodes).
    pub port: Option<u16>,
    /// Accept nodes on loopback and private addresses. Turned on by itself when a bootstrap
    /// node is such an address (a LAN, a test); otherwise only public nodes are kept.
    pub allow_private: bool,
    /// How often each torrent is looked up and announced again (15 minutes, as libtorrent).
    pub announce_interval: Duration,
}

impl Default for DhtSettings {
    fn default() -> Self {
        DhtSettings {
            enabled: false,
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            port: None,
            allow_private: false,
            announce_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// Whether `ip` is an address a public DHT would refuse (loopback, private, link-local,
/// unique-local): a bootstrap node there means a LAN or a test.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private(v4.into()),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

/// Resolves `HOST:PORT` names, each on a thread of its own, waiting at most `limit` for all
/// of them (a name whose lookup hangs is given up, with a warning). IP literals need no
/// lookup.
pub fn resolve(names: &[String], limit: Duration) -> Vec<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    let mut waiting = 0;
    let mut out = Vec::new();
    for name in names {
        if let Ok(addr) = name.parse::<SocketAddr>() {
            out.push(addr);
            continue;
        }
        let (tx, name) = (tx.clone(), name.clone());
        let spawned = std::thread::Builder::new()
            .name("rt-dht-resolve".into())
            .spawn(move || {
                let found = name.to_socket_addrs().map(Iterator::collect::<Vec<_>>);
                let _ = tx.send((name, found));
            });
        if spawned.is_ok() {
            waiting += 1;
        }
    }
    let deadline = Instant::now() + limit;
    while waiting > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(addrs))) => {
                waiting -= 1;
                out.extend(addrs);
            }
            Ok((name, Err(e))) => {
                waiting -= 1;
                tracing::warn!("DHT bootstrap node {name}: {e}");
            }
            Err(_) => {
                tracing::warn!("DHT bootstrap: {waiting} name(s) not resolved in time");
                break;
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Binds the node's socket on `listen`'s address (port: `settings.port`, else `listen`'s).
pub(crate) fn bind(settings: &DhtSettings, listen: SocketAddr) -> Result<UdpSocket, String> {
    let addr = SocketAddr::new(listen.ip(), settings.port.unwrap_or(listen.port()));
    crate::driver::net::bind_udp(addr)
        .map_err(|e| format!("cannot open the DHT's UDP socket on {addr}: {e}"))
}

/// The node for a socket bound at `local` (its families), with the bootstrap nodes resolved
/// (at most [`RESOLVE_LIMIT`]: run it off the loops and the client's lock) and the table
/// restored from `saved` if given.
pub(crate) fn node(
    settings: &DhtSettings,
    local: SocketAddr,
    saved: Option<Vec<u8>>,
    seed: u64,
    now: Time,
) -> Dht {
    let v6 = local.is_ipv6();
    // A dual-stack socket ([::]) runs both tables; an IPv4 one only the IPv4 table, and an
    // IPv6-only address only the IPv6 one.
    let ipv4 = !v6 || local.ip().is_unspecified();
    let bootstrap: Vec<SocketAddr> = resolve(&settings.bootstrap, RESOLVE_LIMIT)
        .into_iter()
        .filter(|a| if a.is_ipv4() { ipv4 } else { v6 })
        .collect();
    let allow_private = settings.allow_private || bootstrap.iter().any(|a| is_private(a.ip()));
    let config = DhtConfig {
        bootstrap,
        ipv4,
        ipv6: v6,
        allow_private,
        ..DhtConfig::default()
    };
    match saved {
        Some(bytes) => Dht::restore(config.clone(), &bytes, seed, now).unwrap_or_else(|e| {
            tracing::warn!("{STATE_FILE}: not restored ({e}); starting a fresh DHT node");
            Dht::new(config, seed, now)
        }),
        None => Dht::new(config, seed, now),
    }
}

/// Names of nodes (a torrent's `nodes`) waiting for the resolver thread: past this many, more
/// are dropped rather than queued.
const MAX_NAMES_QUEUED: usize = 64;

/// A thread that resolves node names one at a time (a lookup may take seconds, which no loop
/// and no holder of the client's lock may wait for) and hands each address to `add`. It
/// ends when the returned sender is dropped.
pub(crate) fn resolver(
    add: impl Fn(SocketAddr) + Send + 'static,
) -> std::io::Result<mpsc::SyncSender<(String, u16)>> {
    let (tx, rx) = mpsc::sync_channel::<(String, u16)>(MAX_NAMES_QUEUED);
    std::thread::Builder::new()
        .name("rt-dht-resolve".into())
        .spawn(move || {
            for (host, port) in rx {
                match (host.as_str(), port).to_socket_addrs() {
                    Ok(addrs) => addrs.for_each(&add),
                    Err(e) => tracing::debug!("DHT node {host}:{port}: {e}"),
                }
            }
        })?;
    Ok(tx)
}

/// When each torrent is next looked up.
pub(crate) struct Lookups {
    /// The port announced (our TCP listen port); `None`: look up without announcing.
    pub announce_port: Option<u16>,
    /// Where node names go to be resolved (see [`resolver`]).
    pub names: Option<mpsc::SyncSender<(String, u16)>>,
    interval: Duration,
    next: HashMap<InfoHash, Instant>,
    /// Lookups in a row that no node answered, per torrent.
    failures: HashMap<InfoHash, u32>,
    /// When the schedule is next looked at.
    next_check: Option<Instant>,
    /// When the table is next saved.
    pub next_save: Instant,
    /// The node is in loop 0's session (`Work::DhtReady`): lookups may start.
    pub ready: bool,
}

/// A torrent as the scheduler sees it.
pub(crate) struct Candidate {
    pub hash: InfoHash,
    /// In its loop's session (not paused or queued).
    pub active: bool,
    /// Its metadata says private (never on the DHT).
    pub private: bool,
    /// Announce it (not a metadata-only fetch).
    pub announce: bool,
}

impl Lookups {
    pub(crate) fn new(announce_port: Option<u16>, interval: Duration) -> Lookups {
        Lookups {
            announce_port,
            names: None,
            interval,
            next: HashMap::new(),
            failures: HashMap::new(),
            next_check: None,
            next_save: Instant::now() + SAVE_EVERY,
            ready: false,
        }
    }

    /// Whether the schedule should be looked at now (once a second).
    pub(crate) fn check_due(&mut self, now: Instant) -> bool {
        if self.next_check.is_some_and(|t| now < t) {
            return false;
        }
        self.next_check = Some(now + CHECK_EVERY);
        true
    }

    /// The lookups due now, longest due first and at most [`MAX_LOOKUPS_PER_CHECK`]:
    /// `(hash, announce port)`. A torrent that left the session (or turned out private) is
    /// forgotten, so it is looked up at once when it comes back.
    pub(crate) fn due(
        &mut self,
        torrents: impl Iterator<Item = Candidate>,
        now: Instant,
    ) -> Vec<(InfoHash, Option<u16>)> {
        let mut due = Vec::new();
        let mut keep = HashMap::with_capacity(self.next.len());
        for t in torrents {
            if !t.active || t.private {
                continue;
            }
            let next = self.next.get(&t.hash).copied().unwrap_or(now);
            if next <= now {
                due.push((next, t.hash, self.announce_port.filter(|_| t.announce)));
            }
            keep.insert(t.hash, next);
        }
        due.sort_by_key(|(next, hash, _)| (*next, *hash));
        due.truncate(MAX_LOOKUPS_PER_CHECK);
        for (_, hash, _) in &due {
            keep.insert(*hash, now + self.interval);
        }
        self.failures.retain(|h, _| keep.contains_key(h));
        self.next = keep;
        due.into_iter().map(|(_, h, p)| (h, p)).collect()
    }

    /// A lookup ended with `responded` nodes answering: none, and it is tried again soon
    /// ([`RETRY_FIRST`], doubling), else the count of failures starts over.
    pub(crate) fn lookup_done(&mut self, hash: InfoHash, responded: usize, now: Instant) {
        if responded > 0 {
            self.failures.remove(&hash);
            return;
        }
        let Some(next) = self.next.get_mut(&hash) else {
            return;
        };
        let failures = self.failures.entry(hash).or_default();
        let wait = RETRY_FIRST
            .saturating_mul(1 << (*failures).min(16))
            .min(self.interval);
        *failures = failures.saturating_add(1);
        *next = (*next).min(now + wait);
    }

    /// A torrent that is still downloading has `peers` connected: with few, it is looked
    /// up again within [`FEW_PEERS_RETRY`].
    pub(crate) fn note_peers(
        &mut self,
        hash: InfoHash,
        downloading: bool,
        peers: usize,
        now: Instant,
    ) {
        if downloading && peers < FEW_PEERS {
            if let Some(next) = self.next.get_mut(&hash) {
                *next = (*next).min(now + FEW_PEERS_RETRY);
            }
        }
    }
}

impl State {
    /// Starts the lookups that are due (on loop 0, where the node runs), and saves the table
    /// when that is due.
    pub(crate) fn pump_dht(&mut self, now: Instant) {
        let Some(lookups) = self.dht.as_mut().filter(|l| l.ready) else {
            return;
        };
        if !lookups.check_due(now) {
            return;
        }
        let candidates = self.torrents.iter().map(|(hash, e)| Candidate {
            hash: *hash,
            active: e.id.is_some(),
            private: e.info.as_ref().is_some_and(|i| i.is_private()),
            announce: !e.metadata_only,
        });
        let due = lookups.due(candidates, now);
        let save = now >= lookups.next_save;
        if save {
            lookups.next_save = now + SAVE_EVERY;
        }
        if !due.is_empty() {
            if let Some(l) = self.loops.first() {
                l.post(move |d| {
                    let now = d.now();
                    if let Some(node) = d.session().dht_mut() {
                        for (hash, announce) in due {
                            node.get_peers(hash, announce, now);
                        }
                    }
                });
            }
        }
        if save {
            self.save_dht();
        }
    }

    /// Peers a lookup found: to the torrent's loop, unless it is not running or private
    /// (BEP 27: a private torrent takes no DHT peers, whoever asked), and without ourselves.
    pub(crate) fn dht_peers(&mut self, hash: InfoHash, mut peers: Vec<SocketAddr>) {
        let Some(e) = self.torrents.get(&hash) else {
            return;
        };
        let (Some(id), shard) = (e.id, e.shard) else {
            return;
        };
        if e.info.as_ref().is_some_and(|i| i.is_private()) {
            return;
        }
        let own = self.dht.as_ref().and_then(|l| l.announce_port);
        peers.retain(|p| {
            !(Some(p.port()) == own && (p.ip().is_loopback() || p.ip().is_unspecified()))
        });
        if peers.is_empty() {
            return;
        }
        if let Some(l) = self.loops.get(shard as usize) {
            l.post(move |d| {
                let now = d.now();
                d.session().add_peers(id, &peers, now);
            });
        }
    }

    /// A node to try (a peer's `port` message, a torrent's `nodes`), for loop 0's node.
    pub(crate) fn dht_node(&self, addr: SocketAddr) {
        if self.dht.is_none() {
            return;
        }
        if let Some(l) = self.loops.first() {
            l.post(move |d| {
                let now = d.now();
                d.session().dht_add_node(addr, now);
            });
        }
    }

    /// A lookup ended (see [`Lookups::lookup_done`]).
    pub(crate) fn dht_lookup_done(&mut self, hash: InfoHash, responded: usize) {
        if let Some(l) = self.dht.as_mut() {
            l.lookup_done(hash, responded, Instant::now());
        }
    }

    /// A torrent's DHT node given by name: resolved on the resolver thread (dropped when its
    /// queue is full), then tried by loop 0's node.
    pub(crate) fn dht_node_name(&self, host: &str, port: u16) {
        if let Some(names) = self.dht.as_ref().and_then(|l| l.names.as_ref()) {
            let _ = names.try_send((host.to_owned(), port));
        }
    }

    /// A peer's word on our external address, for loop 0's tally.
    pub(crate) fn external_addr_vote(&self, ip: IpAddr, voter: IpAddr) {
        if self.dht.is_none() {
            return;
        }
        if let Some(l) = self.loops.first() {
            l.post(move |d| {
                let now = d.now();
                d.session().vote_external_addr(ip, voter, now);
            });
        }
    }

    /// Writes the node's id and table to the state folder's `dht.dat` (through a rename).
    pub(crate) fn save_dht(&self) {
        let Some(store) = self.store.as_ref().filter(|_| self.dht.is_some()) else {
            return;
        };
        match self.call(0, |d| d.session().dht().map(Dht::save)) {
            Ok(Some(bytes)) if !bytes.is_empty() => {
                if let Err(e) = store.save_bytes(STATE_FILE, &bytes) {
                    tracing::warn!("the DHT's table was not saved: {e}");
                }
            }
            _ => {}
        }
    }

    /// The node's counters, if it runs.
    pub(crate) fn dht_stats(&self) -> Option<DhtStats> {
        self.dht.as_ref()?;
        self.call(0, |d| d.session().dht().map(Dht::stats))
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(b: u8) -> InfoHash {
        InfoHash::from_bytes([b; 20])
    }

    fn candidate(b: u8, active: bool, private: bool) -> Candidate {
        Candidate {
            hash: hash(b),
            active,
            private,
            announce: true,
        }
    }

    #[test]
    fn public_active_torrents_are_looked_up_at_start_then_every_interval() {
        let mut l = Lookups::new(Some(6881), Duration::from_secs(900));
        let t0 = Instant::now();
        let all = || {
            vec![
                candidate(1, true, false),
                candidate(2, true, true),
                candidate(3, false, false),
            ]
            .into_iter()
        };
        assert_eq!(l.due(all(), t0), vec![(hash(1), Some(6881))]);
        assert!(l.due(all(), t0 + Duration::from_secs(899)).is_empty());
        assert_eq!(
            l.due(all(), t0 + Duration::from_secs(900)),
            vec![(hash(1), Some(6881))]
        );
        // Few peers while downloading: sooner.
        let t1 = t0 + Duration::from_secs(901);
        l.note_peers(hash(1), true, 1, t1);
        assert_eq!(l.due(all(), t1 + FEW_PEERS_RETRY).len(), 1);
        // A seed with few peers keeps the interval.
        let t2 = t1 + FEW_PEERS_RETRY;
        l.note_peers(hash(1), false, 0, t2);
        assert!(l.due(all(), t2 + FEW_PEERS_RETRY).is_empty());
    }

    #[test]
    fn lookups_are_spread_longest_due_first() {
        let mut l = Lookups::new(Some(1), Duration::from_secs(900));
        let t0 = Instant::now();
        let many = || (0..25u8).map(|b| candidate(b, true, false));
        let mut seen = std::collections::BTreeSet::new();
        for round in 0..3 {
            let due = l.due(many(), t0 + Duration::from_secs(round));
            assert!(due.len() <= MAX_LOOKUPS_PER_CHECK);
            for (h, _) in due {
                assert!(seen.insert(h), "each once");
            }
        }
        assert_eq!(seen.len(), 25, "every torrent within three rounds");
        assert!(l.check_due(t0));
        assert!(!l.check_due(t0 + Duration::from_millis(500)));
        assert!(l.check_due(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_lookup_nobody_answered_is_tried_again_sooner_and_sooner_less() {
        let mut l = Lookups::new(Some(1), Duration::from_secs(900));
        let t0 = Instant::now();
        let one = || std::iter::once(candidate(1, true, false));
        assert_eq!(l.due(one(), t0).len(), 1);
        l.lookup_done(hash(1), 0, t0);
        assert!(l
            .due(one(), t0 + RETRY_FIRST - Duration::from_secs(1))
            .is_empty());
        let t1 = t0 + RETRY_FIRST;
        assert_eq!(l.due(one(), t1).len(), 1);
        l.lookup_done(hash(1), 0, t1);
        assert!(l.due(one(), t1 + RETRY_FIRST).is_empty(), "doubled");
        let t2 = t1 + RETRY_FIRST * 2;
        assert_eq!(l.due(one(), t2).len(), 1);
        l.lookup_done(hash(1), 3, t2);
        assert!(
            l.due(one(), t2 + Duration::from_secs(899)).is_empty(),
            "answered"
        );
    }

    #[test]
    fn a_private_torrent_is_never_looked_up() {
        let mut l = Lookups::new(Some(1), Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..5 {
            let now = t0 + Duration::from_secs(i * 10);
            assert!(l
                .due(std::iter::once(candidate(9, true, true)), now)
                .is_empty());
        }
    }

    #[test]
    fn a_paused_torrent_is_looked_up_again_when_it_resumes() {
        let mut l = Lookups::new(None, Duration::from_secs(900));
        let t0 = Instant::now();
        assert_eq!(
            l.due(std::iter::once(candidate(1, true, false)), t0),
            vec![(hash(1), None)]
        );
        assert!(l
            .due(std::iter::once(candidate(1, false, false)), t0)
            .is_empty());
        assert_eq!(
            l.due(std::iter::once(candidate(1, true, false)), t0).len(),
            1
        );
    }

    #[test]
    fn private_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:db8::1", "::ffff:1.2.3.4"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literals_resolve_without_a_lookup() {
        let got = resolve(
            &["127.0.0.1:6881".into(), "[::1]:7".into()],
            Duration::from_millis(1),
        );
        assert_eq!(got.len(), 2);
    }
}
