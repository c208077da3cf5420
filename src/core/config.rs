//! The core's knobs, each with its default and the reason for it. Drivers and the simulator
//! build a [`Config`] (from flags or a config file) and hand it to the session.

use std::time::Duration;

use crate::limits::{BLOCK_LEN, MAX_BLOCK_LEN};

use super::choker::ChokerConfig;
use super::picker::PickerConfig;

/// Everything the protocol core can be tuned by.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an outgoing TCP connection may take to come up. libtorrent uses 15 s; on a
    /// loaded seedbox a peer that slow to answer a SYN is not worth the slot.
    pub connect_timeout: Duration,
    /// How long a connected peer may take to complete its handshake. 10 s, as libtorrent:
    /// a real client answers within one round trip.
    pub handshake_timeout: Duration,
    /// A peer that sends nothing at all (not even a keep-alive) for this long is dropped.
    /// Clients send keep-alives every 2 minutes at most, so 4 minutes is two missed ones.
    pub inactivity_timeout: Duration,
    /// Send a keep-alive after this long without sending anything (BEP 3's two minutes).
    pub keepalive_interval: Duration,
    /// A request outstanding this long is given back to the picker and the peer marked
    /// snubbed. libtorrent's default is 60 s; at loopback and LAN speeds 20 s is already
    /// hundreds of round trips.
    pub request_timeout: Duration,
    /// The request pipeline aims to keep this much of a peer's download time in flight
    /// (libtorrent's `request_queue_time`, 3 s): enough to cover a round trip at any rate.
    pub request_queue_time: Duration,
    /// Fewest requests kept outstanding with a peer that unchokes us, whatever its rate, so
    /// that a new or slow peer still fills one round trip.
    pub min_requests: usize,
    /// Most requests kept outstanding with one peer (and what we ask before its `reqq` is
    /// known is the lesser of this and 250, BEP 10's suggested default).
    pub max_requests: usize,
    /// Requests we queue from one peer before rejecting more; advertised as our `reqq`.
    /// Bounds the memory a peer can make us hold (12 bytes a request). libtorrent keeps up
    /// to 500 requests outstanding and advertises 2000 itself; at 500 we were rejecting
    /// near the bound when serving it.
    pub max_queued_requests: usize,
    /// Longest block we serve. 16 KiB is what every client asks for and what libtorrent and
    /// Transmission accept; it may be raised to [`MAX_BLOCK_LEN`].
    pub max_request_len: u32,
    /// Block reads in flight to disk for one peer; more queue as requests.
    pub max_reads_per_peer: usize,
    /// The per-peer send watermark scales with the peer's upload rate: this percentage of a
    /// second of it (libtorrent's `send_buffer_watermark_factor`, 50). Half a second of
    /// data queued in user space, on top of the kernel's socket buffer, keeps a fast peer's
    /// socket fed across a disk read, while a peer that does not read has a rate near zero
    /// and gets the low watermark. See [`Config::send_watermark`].
    pub send_buffer_factor: u32,
    /// The least a peer's watermark can be: 32 KiB, two blocks, so one can be read from
    /// disk while the other is being sent. libtorrent's `send_buffer_low_watermark` is
    /// 10 KiB, under one block, which serialises the read and the send of a new peer.
    pub send_buffer_low: usize,
    /// The most a peer's watermark can be: 512 KiB, libtorrent's `send_buffer_watermark`
    /// (500 KiB) rounded to whole blocks. Block reads for a peer stop while its queued bytes
    /// (waiting to be sent, taken by the driver but not yet accepted by the kernel, and
    /// being read from disk) reach its watermark, so a peer that requests and never reads
    /// holds at most this plus one block.
    pub send_buffer_high: usize,
    /// Block payload the whole session may hold for uploads (queued to send, taken by the
    /// driver, and being read from disk), across all peers and torrents: past it, block
    /// reads start only for peers holding none, so a crowd of slow readers holds at most
    /// this plus one block each while every peer still gets one block at a time.
    /// libtorrent bounds the same memory with its disk buffer pool (`cache_size`).
    /// 64 MiB: at 1 GB/s it is 60 ms of sending, far more than a disk read takes.
    pub upload_buffer_budget: usize,
    /// Allowed-fast pieces offered to each peer (BEP 6 suggests 10).
    pub allowed_fast_set_size: u32,
    /// Connections per torrent; past it, incoming ones are refused and none are dialled.
    pub max_peers_per_torrent: usize,
    /// Connections across the session (handshaking ones included). The client holds it
    /// below the process's descriptor budget (`client::DescriptorBudget`).
    pub max_connections: usize,
    /// Connections one IP address may hold to one torrent, incoming and outgoing, handshaking
    /// ones included. Past it an incoming connection is refused (`too_many_peers_from_ip`)
    /// and known addresses at that IP are not dialled. Incoming connections whose handshake
    /// has not named a torrent yet are held to it across the session (each loop's), so one
    /// address cannot fill `max_connections` with handshakes it never sends. libtorrent allows one
    /// (`allow_multiple_connections_per_ip` off), which locks out the second user behind a
    /// shared NAT or carrier-grade NAT address; 8 leaves room for a household or a few
    /// clients on one host, while an address flooding a torrent of 200 slots gets 4% of them.
    /// Per torrent, because a torrent's peers all live on one loop (an exact count) and a
    /// torrent's slots are what a flood takes from others; the session-wide
    /// `max_connections` bounds the rest. It also stops peer exchange from making us dial
    /// hundreds of ports of one host.
    pub max_peers_per_ip: usize,
    /// When a torrent (or the session) is full, an incoming peer may replace one that is idle
    /// and useless: we are not interested in it and it is not interested in us, nothing is
    /// requested or moving either way, and it has been connected at least this long (and the
    /// newcomer's address holds fewer connections than its own). libtorrent drops
    /// such peers after its `inactivity_timeout` (10 minutes) once a torrent is near its
    /// limit; here a peer goes only when a newcomer needs its slot, so a shorter minimum
    /// costs nothing while the torrent has room, and a newcomer cannot be evicted by the
    /// next one before it had time to become useful.
    pub evict_idle_after: Duration,
    /// Outgoing connection attempts in progress at once per torrent, so a tracker reply of
    /// 200 peers does not open 200 sockets in one tick.
    pub max_half_open: usize,
    /// Unchoke peers on this host or the local network whenever they are interested, outside
    /// the upload slots: choking shares a scarce uplink, and a LAN or loopback peer does not
    /// compete for it (libtorrent does the same by default; a seedbox serving a local swarm
    /// should not make its peers queue for four slots).
    pub unchoke_local_peers: bool,
    /// Delay before dialling a peer again after its connection closed.
    pub reconnect_delay: Duration,
    /// Delay before dialling again a peer whose dial failed (refused, timed out, or closed
    /// before the handshake, e.g. a client still checking its data, which drops every
    /// connection meanwhile): doubled with each failure in a row, up to 64 times. Short at
    /// first, so a seed that is starting up costs seconds, not half a minute.
    pub dial_retry_delay: Duration,
    /// Delay before dialling again a peer that was sending us blocks until its connection
    /// closed (Transmission retries such peers after 5 s too): a seed restarting or a brief
    /// network fault should not stall a download for the full `reconnect_delay`. Failed
    /// dials after that back off from `reconnect_delay` as usual.
    pub reconnect_delay_useful: Duration,
    /// How often the session's housekeeping runs (timeouts, keep-alives, rates, dialling).
    pub tick: Duration,
    /// Session-wide upload limit in bytes per second (libtorrent's `upload_rate_limit`,
    /// Transmission's upload speed limit); `None` or 0 is unlimited. A seedbox shares its
    /// uplink with other services, and a home user's upload saturating the link stalls their
    /// own downloads' requests. Counted in block payload when its disk read is issued; each
    /// torrent may have a lower limit of its own ([`Session::set_rate_limits`]).
    ///
    /// [`Session::set_rate_limits`]: super::session::Session::set_rate_limits
    pub upload_rate_limit: Option<u64>,
    /// Session-wide download limit in bytes per second (libtorrent's `download_rate_limit`);
    /// `None` or 0 is unlimited. Leaves room on the link for everything else. Enforced by
    /// pacing our requests (a request spends its block's length), since bytes already asked
    /// for will arrive anyway; per-torrent limits as for upload.
    pub download_rate_limit: Option<u64>,
    /// A metadata piece (BEP 9) asked for and not answered this long is asked of another
    /// peer, and the slow peer is left alone for as long. A piece is 16 KiB, one round trip
    /// at any usable rate; libtorrent gives up after 5 s too.
    pub metadata_request_timeout: Duration,
    /// Peer exchange (BEP 11, `ut_pex`) on torrents that are not private. On by default, as in
    /// every major client.
    pub pex: bool,
    /// Our global IPv6 address, told to peers as the BEP 10 extension handshake's `ipv6`
    /// (so an IPv4 peer learns where else we are reachable); `None` (the default) tells none.
    /// The client sets it by the rule of the tracker `ipv6` parameter
    /// (`net_addr::announce_ipv6`).
    pub our_ipv6: Option<::core::net::Ipv6Addr>,
    /// The UDP port of our DHT node (BEP 5), or `None` when the DHT is off: with it, our
    /// handshakes set the DHT reserved bit, and a peer that sets it too is sent a `port`
    /// message and may tell us of its own node (`Event::DhtNode`). Never for private torrents.
    pub dht_port: Option<u16>,
    /// Message stream encryption (MSE/PE): whether we dial encrypted, and what we accept.
    /// `Prefer` by default, as libtorrent's `pe_enabled`.
    pub encryption: Encryption,
    /// Fault injection for simulations and tests: serve metadata pieces with their last byte
    /// flipped, as a hostile peer would. Never set it otherwise.
    #[doc(hidden)]
    pub corrupt_metadata: bool,
    /// Choking algorithm settings.
    pub choker: ChokerConfig,
    /// Piece picking settings.
    pub picker: PickerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            inactivity_timeout: Duration::from_secs(240),
            keepalive_interval: Duration::from_secs(120),
            request_timeout: Duration::from_secs(20),
            request_queue_time: Duration::from_secs(3),
            min_requests: 4,
            max_requests: 500,
            max_queued_requests: 2000,
            max_request_len: BLOCK_LEN,
            max_reads_per_peer: 8,
            send_buffer_factor: 50,
            send_buffer_low: 2 * BLOCK_LEN as usize,
            send_buffer_high: 32 * BLOCK_LEN as usize,
            upload_buffer_budget: 64 << 20,
            allowed_fast_set_size: 10,
            max_peers_per_torrent: 200,
            max_connections: 2000,
            max_peers_per_ip: 8,
            evict_idle_after: Duration::from_secs(60),
            max_half_open: 32,
            unchoke_local_peers: true,
            reconnect_delay: Duration::from_secs(30),
            dial_retry_delay: Duration::from_secs(5),
            reconnect_delay_useful: Duration::from_secs(5),
            tick: Duration::from_millis(500),
            upload_rate_limit: None,
            download_rate_limit: None,
            metadata_request_timeout: Duration::from_secs(5),
            pex: true,
            our_ipv6: None,
            dht_port: None,
            encryption: Encryption::Prefer,
            corrupt_metadata: false,
            choker: ChokerConfig::default(),
            picker: PickerConfig::default(),
        }
    }
}

/// The encryption policy (MSE/PE, "protocol encryption"), with libtorrent's semantics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// Never start an encrypted handshake; still answer one (selecting plaintext when the
    /// peer offers it, RC4 when that is all it offers).
    Plaintext,
    /// Dial encrypted offering RC4 and plaintext, accept every kind of handshake, select
    /// plaintext when the peer offers both (it costs nothing) and RC4 when it insists. A
    /// handshake refused one way is redialled once the other way, and what worked is
    /// remembered per peer.
    #[default]
    Prefer,
    /// RC4 only, both ways: plaintext handshakes, and encrypted ones offering only
    /// plaintext, are refused.
    Require,
}

impl Encryption {
    /// The setting's name, as flags and config files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Encryption::Plaintext => "plaintext",
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
        }
    }
}

impl std::str::FromStr for Encryption {
    type Err = String;

    fn from_str(s: &str) -> Result<Encryption, String> {
        match s {
            "plaintext" => Ok(Encryption::Plaintext),
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            other => Err(format!(
                "unknown encryption policy {other:?}: expected plaintext, prefer or require"
            )),
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Config {
    /// Clamps settings that have hard bounds (a request length above [`MAX_BLOCK_LEN`], zero
    /// limits; a rate limit of 0 becomes `None`, unlimited) so that a config file cannot put
    /// the core outside what it was built for.
    pub fn sanitized(mut self) -> Config {
        self.max_request_len = self.max_request_len.clamp(BLOCK_LEN, MAX_BLOCK_LEN);
        self.min_requests = self.min_requests.max(1);
        self.max_requests = self.max_requests.max(self.min_requests);
        self.max_queued_requests = self.max_queued_requests.max(1);
        self.max_reads_per_peer = self.max_reads_per_peer.max(1);
        self.send_buffer_low = self.send_buffer_low.max(1);
        self.send_buffer_high = self.send_buffer_high.max(self.send_buffer_low);
        self.max_peers_per_torrent = self.max_peers_per_torrent.max(1);
        self.max_connections = self.max_connections.max(1);
        self.max_peers_per_ip = self.max_peers_per_ip.max(1);
        self.max_half_open = self.max_half_open.max(1);
        self.tick = self.tick.max(Duration::from_millis(10));
        self.upload_rate_limit = self.upload_rate_limit.filter(|&r| r > 0);
        self.download_rate_limit = self.download_rate_limit.filter(|&r| r > 0);
        self
    }

    /// How many bytes may be queued for a peer uploading at `rate` bytes per second before
    /// block reads for it stop: `send_buffer_factor` percent of a second of its rate, within
    /// `send_buffer_low..=send_buffer_high` (libtorrent's watermark).
    pub fn send_watermark(&self, rate: u64) -> usize {
        let scaled = u128::from(rate) * u128::from(self.send_buffer_factor) / 100;
        let scaled = usize::try_from(scaled).unwrap_or(usize::MAX);
        scaled.clamp(
            self.send_buffer_low,
            self.send_buffer_high.max(self.send_buffer_low),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_watermark_scales_with_rate_within_bounds() {
        let c = Config::default();
        // Libtorrent's shape: half a second of the rate, clamped.
        assert_eq!(c.send_watermark(0), 32 * 1024);
        assert_eq!(c.send_watermark(200_000), 100_000);
        assert_eq!(c.send_watermark(100 << 20), 512 * 1024);
        assert_eq!(c.send_watermark(u64::MAX), 512 * 1024);
        let odd = Config {
            send_buffer_low: 1 << 20,
            send_buffer_high: 10,
            ..Config::default()
        };
        // A high below the low never panics (clamp's precondition) and means the low.
        assert_eq!(odd.send_watermark(5), 1 << 20);
        let s = odd.sanitized();
        assert_eq!(s.send_buffer_high, 1 << 20);
    }
}
