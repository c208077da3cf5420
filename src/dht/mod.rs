//! The mainline DHT (BEP 5, with BEP 32's IPv6 table and BEP 42's node ids), sans-IO.
//!
//! INTERFACE SKELETON (branch `dht-api`): the signatures below are the contract between the
//! core (`dht-core` branch: everything behind these functions) and the drivers and client
//! (`dht-wire` branch: the UDP socket, the session/loop that owns a `Dht`, scheduling,
//! persistence, commands). The core may add to this API; it should not change what is here
//! without saying so in its report. Bodies here are placeholders to keep the tree compiling.
//!
//! Like the peer-wire [`crate::core::Session`], a `Dht` takes datagrams and timer expiries with
//! `now` and hands back datagrams to send, events and its next deadline. It owns a seeded RNG
//! (transaction ids, token secrets, node id when no external address is known); it never reads
//! a clock or a socket. Addresses are plain: a driver unmaps IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`) to `SocketAddr::V4` before handing them in, and one `Dht` serves both
//! families (an IPv4 routing table and an IPv6 one, BEP 32).
//!
//! The driver drains, after every input: `poll_transmit` until `None`, then `poll_event`, then
//! waits no longer than `poll_timeout`.

use std::net::{IpAddr, SocketAddr};

use crate::core::{InfoHash, Time};

/// A 160-bit node id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub [u8; 20]);

/// Tuning, with defaults a public node uses.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Nodes to start from when the table is empty (already resolved by the caller).
    pub bootstrap: Vec<SocketAddr>,
    /// Which families to run (the IPv4 table, the IPv6 table).
    pub ipv4: bool,
    /// See `ipv4`.
    pub ipv6: bool,
    /// Accept nodes on loopback and private ranges (otherwise only the bootstrap nodes
    /// themselves may be such addresses). Tests and LANs turn this on.
    pub allow_private: bool,
    /// Emit `DhtEvent::Hop` for each response a lookup gets (for `dht get-peers`).
    pub trace_lookups: bool,
    /// Queries answered per second, overall (rate limit on what it answers).
    pub max_queries_per_sec: u32,
    /// Info hashes whose announced peers are stored, and peers stored per info hash.
    pub max_stored_torrents: usize,
    /// See `max_stored_torrents`.
    pub max_peers_per_torrent: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            bootstrap: Vec::new(),
            ipv4: true,
            ipv6: true,
            allow_private: false,
            trace_lookups: false,
            max_queries_per_sec: 500,
            max_stored_torrents: 3000,
            max_peers_per_torrent: 100,
        }
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The bencoded KRPC message.
    pub payload: Vec<u8>,
}

/// Identifies one `get_peers` lookup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LookupId(pub u64);

/// What a lookup reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// Peers for `info_hash` (as they arrive, deduplicated within the lookup).
    Peers {
        /// The lookup.
        lookup: LookupId,
        /// The torrent.
        info_hash: InfoHash,
        /// Peer addresses (compact form from `values`).
        peers: Vec<SocketAddr>,
    },
    /// With `trace_lookups`: a node answered a lookup.
    Hop {
        /// The lookup.
        lookup: LookupId,
        /// Hop number (distance in rounds from the start, 0 = queried from the table).
        hop: u32,
        /// Who answered.
        from: SocketAddr,
        /// Closer nodes it gave.
        nodes: usize,
        /// Peers it gave.
        peers: usize,
    },
    /// The lookup ended (converged, or ran out of nodes); announced to `announced` nodes
    /// when it was asked to announce.
    LookupDone {
        /// The lookup.
        lookup: LookupId,
        /// The torrent.
        info_hash: InfoHash,
        /// Nodes that answered.
        responded: usize,
        /// `announce_peer` queries sent.
        announced: usize,
    },
}

/// Counters and gauges for metrics and the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Nodes in the IPv4 table.
    pub nodes_v4: usize,
    /// Nodes in the IPv6 table.
    pub nodes_v6: usize,
    /// Lookups running.
    pub lookups_active: usize,
    /// Lookups started since creation.
    pub lookups_total: u64,
    /// `announce_peer` queries we sent.
    pub announces_sent: u64,
    /// Queries we answered.
    pub queries_answered: u64,
    /// Queries dropped by the rate limit.
    pub queries_dropped: u64,
    /// Datagrams that were not valid KRPC.
    pub invalid_messages: u64,
    /// Info hashes with stored peers.
    pub stored_torrents: usize,
    /// Peers stored, all torrents.
    pub stored_peers: usize,
}

/// A DHT node.
pub struct Dht {
    _config: DhtConfig,
}

impl Dht {
    /// A new node; its id is random from `seed` until `set_external_addr` gives a BEP 42 one.
    pub fn new(config: DhtConfig, seed: u64, _now: Time) -> Dht {
        let _ = seed;
        Dht { _config: config }
    }

    /// A node restored from `save`'s bytes (its id and table). Bad bytes are an error, and
    /// the caller starts a fresh node instead.
    pub fn restore(config: DhtConfig, saved: &[u8], seed: u64, now: Time) -> Result<Dht, String> {
        let _ = saved;
        Ok(Dht::new(config, seed, now))
    }

    /// The id and the good nodes of both tables, bencoded, for the state folder.
    pub fn save(&self) -> Vec<u8> {
        Vec::new()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        NodeId([0; 20])
    }

    /// Our address as others see it (a tracker's `external ip`, a peer's `yourip`, KRPC `ip`):
    /// the id is regenerated to satisfy BEP 42 if it does not already.
    pub fn set_external_addr(&mut self, _ip: IpAddr, _now: Time) {}

    /// A node to try (a `port` message, a torrent's `nodes`): pinged, and kept if it answers.
    pub fn add_node(&mut self, _addr: SocketAddr, _now: Time) {}

    /// A datagram that arrived (the caller already checked its first byte is `d`).
    pub fn handle_datagram(&mut self, _from: SocketAddr, _data: &[u8], _now: Time) {}

    /// Timers: retransmits, time-outs, bucket refresh, token rotation, expiry of stored peers.
    pub fn handle_timeout(&mut self, _now: Time) {}

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        None
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        None
    }

    /// Starts a `get_peers` lookup for `info_hash`; with `announce = Some(port)` it ends by
    /// sending `announce_peer` (that port, or `implied_port` when `port` is 0) to the closest
    /// nodes that gave a token.
    pub fn get_peers(
        &mut self,
        _info_hash: InfoHash,
        _announce: Option<u16>,
        _now: Time,
    ) -> LookupId {
        LookupId(0)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> DhtStats {
        DhtStats::default()
    }
}
