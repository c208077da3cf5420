//! [`ClientConfig`]: everything a [`super::Client`] is started with, each field with its
//! default and why.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::dht::DhtSettings;
use super::policy::{QueueConfig, ShareLimits};
use crate::core::choker::SeedChokeMode;
use crate::core::config::{Config, Encryption};
use crate::core::PeerId;
pub use crate::driver::{IoChoice, Transport};
pub use crate::storage::Allocation;

/// Session-wide limits. Each event loop runs its own session, so the client splits them:
/// connections and the upload buffer evenly (torrents spread evenly over the loops by info
/// hash), rates evenly at first and then, every second, by demand (see `share.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Upload limit for the whole client, bytes per second (`None`: unlimited).
    pub upload_rate: Option<u64>,
    /// Download limit for the whole client, bytes per second (`None`: unlimited).
    pub download_rate: Option<u64>,
    /// Connections across the client, handshaking ones included.
    pub max_connections: usize,
    /// Connections per torrent.
    pub max_peers_per_torrent: usize,
    /// Connections one IP address may hold to one torrent, either way (see
    /// `core::Config::max_peers_per_ip` for the default and why).
    pub max_peers_per_ip: usize,
    /// Regular upload slots per torrent (plus one optimistic).
    pub upload_slots: usize,
    /// Who gets the upload slots while seeding.
    pub seed_choke: SeedChokeMode,
    /// Block payload held for uploads across the client, in bytes (being read from disk and
    /// queued to send): `Config::upload_buffer_budget`, split between the loops. Past it,
    /// peers get one block at a time, so slow readers cannot run the process out of memory.
    pub upload_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let core = Config::default();
        Limits {
            upload_rate: None,
            download_rate: None,
            max_connections: core.max_connections,
            max_peers_per_torrent: core.max_peers_per_torrent,
            max_peers_per_ip: core.max_peers_per_ip,
            upload_slots: core.choker.upload_slots,
            seed_choke: core.choker.seed_mode,
            upload_buffer: core.upload_buffer_budget,
        }
    }
}

/// How a [`super::Client`] runs. `ClientConfig::default()` listens on `[::]:6881` (both
/// IPv4 and IPv6, or IPv4 alone on a host without IPv6), runs
/// one event loop per core on io_uring where possible, and keeps no state on disk.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where peers connect to (port 0: any free port; [`super::Client::listen_addr`] tells
    /// which). `[::]` listens on IPv4 and IPv6 both, falling back to `0.0.0.0` where the host
    /// has no IPv6; `0.0.0.0` and other IPv4 addresses on IPv4 only, `::1` and other IPv6
    /// addresses on IPv6 only (see [`crate::driver::net::bind_listeners`]). `None`: accept no
    /// connections, only dial out (a metadata fetch, a test).
    pub listen: Option<SocketAddr>,
    /// Event loops, one thread each; 0 means one per core. Torrents are spread over them by
    /// info hash.
    pub loops: usize,
    /// The I/O backend.
    pub io: IoChoice,
    /// Where torrents' data goes when [`super::AddTorrent::save_dir`] does not say.
    pub data_dir: PathBuf,
    /// How new files get their disk space: [`Allocation::Full`] (the default: `fallocate`
    /// when the torrent is opened) or [`Allocation::Sparse`] (libtorrent's and qBittorrent's
    /// default). The free space is checked at open either way.
    pub allocation: Allocation,
    /// Where resume data is kept (`resume/<hash>.resume`), and with
    /// [`ClientConfig::remember_torrents`] the torrents themselves. `None`: nothing is kept,
    /// and every restart checks the data again.
    pub state_dir: Option<PathBuf>,
    /// Keep every added torrent (its .torrent or magnet link and its settings) in
    /// `state_dir/torrents` and add them all again when a client starts on the same folder:
    /// a seedbox. Off for one-shot commands.
    pub remember_torrents: bool,
    /// Session-wide limits.
    pub limits: Limits,
    /// Our peer id. `None`: a fresh random one with ringtorrent's prefix.
    pub peer_id: Option<PeerId>,
    /// Announce to the torrents' trackers (`false`: peers come only from
    /// [`super::AddTorrent::peers`], [`super::TorrentHandle::add_peers`] and peer exchange).
    pub trackers: bool,
    /// Local service discovery (BEP 14): announce the public torrents on the LAN's multicast
    /// group and dial the peers heard there. Off in the library's default (many clients of
    /// a test or an embedder on one host would find each other); the commands turn it on
    /// unless `--no-lsd`.
    pub lsd: bool,
    /// The IPv4 address of the interface LSD joins the group on and sends from (set: IPv4
    /// only, on that interface). `None`: where the listener is; a listener on every address
    /// takes the kernel's choice of interface and IPv6 too, one bound to an address takes the
    /// interface holding it (so a client on 127.0.0.1 announces on this host only).
    pub lsd_interface: Option<Ipv4Addr>,
    /// How often resume data is saved while torrents run (it is saved at pause and stop
    /// too). A crash (a kill, a power cut) loses at most this much verification work: pieces
    /// verified since the last save are checked again, never trusted. Default 60 s; a shorter
    /// interval costs a write and an fsync per torrent that verified pieces since.
    pub resume_interval: Duration,
    /// Protocol encryption (MSE/PE): `prefer` (the default), `require` or `plaintext`; see
    /// [`Encryption`]. Overrides `core.encryption`.
    pub encryption: Encryption,
    /// The client's share limits (default: none; action stop), which torrents' -2 fields
    /// take. Values set at run time ([`super::Client::set_share_limits`]) are kept in the
    /// state folder's `preferences.json` and override these at the next start.
    pub share_limits: ShareLimits,
    /// Queueing (default: off, every torrent runs). Kept like [`ClientConfig::share_limits`].
    pub queue: QueueConfig,
    /// The DHT node (off by default here; the commands turn it on): see [`DhtSettings`].
    pub dht: DhtSettings,
    /// Which transports peers are dialled and accepted on: `both` (the default, as
    /// libtorrent: dials try uTP first and fall back to TCP, remembering per address what
    /// failed), `tcp` or `utp`. uTP runs on the UDP socket the DHT uses (the listen port, or
    /// [`DhtSettings::port`]), on loop 0, whatever loop owns the torrent.
    pub transport: Transport,
    /// The protocol core's settings beyond [`ClientConfig::limits`] (which override the
    /// matching fields here), for embedders and tests that tune it.
    pub core: Config,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            listen: Some(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 6881))),
            loops: 0,
            io: IoChoice::Auto,
            data_dir: PathBuf::from("."),
            allocation: Allocation::default(),
            state_dir: None,
            remember_torrents: false,
            limits: Limits::default(),
            peer_id: None,
            trackers: true,
            lsd: false,
            lsd_interface: None,
            resume_interval: Duration::from_secs(60),
            encryption: Encryption::default(),
            share_limits: ShareLimits::NONE,
            queue: QueueConfig::default(),
            dht: DhtSettings::default(),
            transport: Transport::default(),
            core: Config::default(),
        }
    }
}

impl ClientConfig {
    /// The number of loops: `loops`, or one per core when it is 0.
    pub fn loop_count(&self) -> usize {
        crate::driver::loop_count(self.loops)
    }

    /// Each loop's core configuration: the limits applied, connection and rate limits split
    /// between `loops` loops.
    pub(crate) fn session_config(&self, loops: usize) -> Config {
        let loops = loops.max(1);
        let share = |v: u64| (v / loops as u64).max(1);
        let mut core = self.core.clone();
        core.max_connections = (self.limits.max_connections / loops).max(1);
        core.upload_buffer_budget = (self.limits.upload_buffer / loops).max(1);
        core.max_peers_per_torrent = self.limits.max_peers_per_torrent;
        core.max_peers_per_ip = self.limits.max_peers_per_ip;
        core.upload_rate_limit = self.limits.upload_rate.map(share);
        core.download_rate_limit = self.limits.download_rate.map(share);
        core.choker.upload_slots = self.limits.upload_slots.max(1);
        core.choker.seed_mode = self.limits.seed_choke;
        core.encryption = self.encryption;
        core.our_ipv6 = crate::net_addr::announce_ipv6(self.listen);
        core
    }

    /// The default state folder for one-shot commands: `$XDG_STATE_HOME/ringtorrent`, else
    /// `~/.local/state/ringtorrent`.
    pub fn default_state_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .map(|d| d.join("ringtorrent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_split_between_loops() {
        let c = ClientConfig {
            limits: Limits {
                upload_rate: Some(1000),
                download_rate: None,
                max_connections: 100,
                upload_buffer: 64 << 20,
                ..Limits::default()
            },
            ..ClientConfig::default()
        };
        let core = c.session_config(4);
        assert_eq!(core.max_connections, 25);
        assert_eq!(core.upload_buffer_budget, 16 << 20);
        assert_eq!(core.upload_rate_limit, Some(250));
        assert_eq!(core.download_rate_limit, None);
        // A limit smaller than the loop count still limits every loop.
        let tiny = ClientConfig {
            limits: Limits {
                upload_rate: Some(2),
                max_connections: 2,
                ..Limits::default()
            },
            ..ClientConfig::default()
        };
        let core = tiny.session_config(4);
        assert_eq!((core.max_connections, core.upload_rate_limit), (1, Some(1)));
    }
}
