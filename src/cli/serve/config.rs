//! `serve`'s settings: a TOML file in which every key is optional (defaults below), unknown
//! keys are an error naming the key, and flags override the file. `ringtorrent config print`
//! writes [`TEMPLATE`], the defaults with a comment for each key; a test keeps it equal to
//! [`ServeConfig::default`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

use ringtorrent::api::auth::{Auth, AuthConfig};
use ringtorrent::api::guard::Policy;
use ringtorrent::client::{QueueConfig, ShareAction, ShareLimits};
use ringtorrent::core::Encryption;

use super::super::format;

/// The default settings, documented, as `config print` writes them.
pub const TEMPLATE: &str = r#"# ringtorrent serve: every key is optional; these are the defaults.
# Flags given to `ringtorrent serve` override the file. SIGHUP (`systemctl reload`) reads it
# again: rate limits, [share_limits], [queue], the watch folder, the log level and the API's
# credentials, hosts and CORS origins change at once; the log names the keys that need a
# restart, and a file with a mistake changes nothing.

# Address and port peers connect to: IP:PORT, [IPv6]:PORT or an IP alone (port 6881).
# "[::]" listens on IPv4 and IPv6 both (IPv4 alone on a host without IPv6), "0.0.0.0" on
# IPv4 only, "[::1]" on IPv6 loopback only.
listen = "[::]:6881"
# Protocol encryption (MSE/PE) of peer connections, both ways:
# "prefer": dial encrypted offering RC4 and plaintext, accept every kind of connection,
#   select plaintext when the peer offers both and RC4 when it insists; a handshake refused
#   one way is tried once the other way (what worked is remembered per peer).
# "require": RC4-encrypted connections only, incoming and outgoing; plaintext peers are
#   refused (like qBittorrent's "Require encryption", Transmission's `encryption: 2`).
# "plaintext": never start encryption; a peer that starts it is still answered.
encryption = "prefer"
# Transports for peer connections, as libtorrent: "both" dials uTP (BEP 29, over UDP on the
# listen port, or the DHT's port when set) first and falls back to TCP, remembering per peer
# what failed, and accepts both; "tcp" or "utp" only one.
transport = "both"
# Local service discovery (BEP 14): announce public torrents on the local network's
# multicast group (239.192.152.143:6771, [ff15::efc0:988f]:6771) and dial the peers heard
# there. Never for private torrents.
lsd = true
# The IPv4 address of the interface it uses; "": the system's choice (and IPv6 too).
lsd_interface = ""
# The control API (HTTP + JSON, and /metrics). Without credentials (api_password_hash or
# api_keys below) it must be on a loopback address: anything else is refused at start.
api = "127.0.0.1:7070"
# Host names the API answers to besides localhost and IP addresses, against DNS rebinding
# (a page whose name resolves to this machine is refused): the name a browser or a reverse
# proxy uses, e.g. ["seedbox.example.com"]; "*" turns the check off.
api_hosts = []
# Origins whose pages may call the API (CORS), e.g. ["https://ui.example.com"]. Empty:
# preflights (OPTIONS) are refused, and so is any request other than GET and HEAD whose
# Origin or Referer is not the API's own.
api_cors_origins = []
# The user name that logs in (POST /auth/login sets a session cookie). With it,
# api_password_hash; "" for no login.
api_username = ""
# The password's argon2id hash, never the password: `ringtorrent config hash-password`
# reads the password on standard input and prints this line.
api_password_hash = ""
# API keys for scripts (Authorization: Bearer KEY), as their hashes:
# `ringtorrent config api-key` makes a key and prints its line.
api_keys = []
# How long a login session lasts unused, in seconds.
api_session_timeout = 3600
# Whether GET /metrics is served without credentials (for a Prometheus that sends none;
# Prometheus can also send an API key: `authorization: { credentials: KEY }`).
api_metrics_public = false
# Connections the API holds open at once; more wait until one closes.
api_max_connections = 128
# Where torrents' data lives (each torrent's files are created under it).
data_dir = "~/.local/share/ringtorrent/data"
# How new files get their disk space, as libtorrent's storage modes: "full" reserves every
# file's space when the torrent is added (`fallocate`), so a disk that others fill later
# cannot stop the download; "sparse" sets each file's size and allocates blocks as they are
# written (libtorrent's and qBittorrent's default). Either way a torrent larger than the free
# space is refused when added; a disk that fills during a sparse download stops that torrent
# with the error, keeping every block already written.
allocation = "full"
# Where the session's state lives: torrent files, their settings and resume data.
state_dir = "~/.local/state/ringtorrent/serve"
# A folder watched for .torrent files: one dropped in is added (its data checked against
# resume state), one removed is removed from the session (its data kept). Empty: no folder.
watch_dir = ""
# How often the watch folder is checked, in seconds. It is read only when inotify reported
# a change since (and at least once a minute); where inotify is unavailable, every time.
watch_interval = 2
# Event loops, one per thread; 0 means one per core.
threads = 0
# I/O backend: "auto" (io_uring where the kernel allows it, else epoll), "uring" or "epoll".
io = "auto"
# Log level: "error", "warn", "info", "debug" or "trace" (RINGTORRENT_LOG overrides it).
log = "info"

[dht]
# A DHT node (BEP 5, with BEP 32's IPv6 table on a dual-stack listen address): public
# torrents are announced and looked up there every 15 minutes; private ones never are.
enabled = true
# Nodes to start from, "HOST:PORT" (resolved at start), used when the saved table
# (state_dir/dht.dat) is empty. Default: router.bittorrent.com:6881,
# dht.transmissionbt.com:6881, router.utorrent.com:6881, dht.libtorrent.org:25401 (or
# $RINGTORRENT_DHT_BOOTSTRAP, comma-separated). A loopback or private address here lets
# the node keep loopback and private nodes.
# bootstrap = ["router.bittorrent.com:6881"]
# The node's UDP port. Default: the port of `listen`, as other clients do.
# port = 6881

[limits]
# Connections across the session, handshaking ones included (split evenly between the
# event loops).
max_connections = 20000
# Connections per torrent.
max_peers_per_torrent = 200
# Connections one IP address may hold to one torrent, incoming and outgoing: enough for a
# few clients behind one NAT, while one address cannot fill a torrent's slots.
max_peers_per_ip = 8
# Regular upload slots per torrent (plus one optimistic).
upload_slots = 4
# Who gets the upload slots while seeding: "round-robin", "fastest", "anti-leech" or
# "unlimited" (every interested peer: for an uplink larger than the slots can take).
seed_choke = "round-robin"
# Session-wide rate limits in bytes per second, with K/M/G suffixes (powers of 1024);
# "" means unlimited. The event loops share them, each second moving what one loop leaves
# unused to the loops that need it. Per-torrent limits are set through the API.
upload_rate = ""
download_rate = ""
# Block data held in memory for uploads (read from disk, waiting for peers' sockets), for
# the whole process, with K/M/G suffixes; split between the event loops. Each peer also has
# its own watermark (half a second of its upload rate, 32K to 512K). Past this, peers get
# one block at a time: a crowd of peers that request and never read holds at most this
# plus 16 KiB each.
upload_buffer = "64M"

[share_limits]
# What a torrent may share before `action` happens to it: -1 is no limit. Torrents take
# these unless given their own (PUT /torrents/<hash>/share_limits). Values set through the
# API (PUT /share_limits) are kept in the state folder and override these.
# Uploaded over downloaded (qBittorrent's ratio: a torrent added with its data counts its
# size as downloaded).
ratio = -1.0
# Seconds of seeding.
seeding_time = -1
# Seconds of seeding without sending or receiving any payload.
inactive_seeding_time = -1
# "stop" (paused), "remove" (data kept) or "remove_with_data".
action = "stop"

[queue]
# At most so many torrents run at once; the rest wait their turn, reported "queued"
# (force-started torrents run regardless). Values set through the API (PUT /queue) are kept
# in the state folder and override these.
enabled = false
# -1 is no limit.
max_active_downloads = 3
max_active_uploads = 3
max_active_torrents = 5
# A torrent slower than both rates below for slow_inactive_secs is not counted.
dont_count_slow = false
slow_download_rate = "2K"
slow_upload_rate = "2K"
slow_inactive_secs = 60
"#;

/// Everything `serve` can be set by.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Peer listen address.
    pub listen: String,
    /// `prefer`, `require` or `plaintext`.
    pub encryption: String,
    /// `both`, `tcp` or `utp`.
    pub transport: String,
    /// Local service discovery on.
    pub lsd: bool,
    /// Its interface's IPv4 address ("" for the system's choice).
    pub lsd_interface: String,
    /// Control API address.
    pub api: String,
    /// Extra host names the API answers to.
    pub api_hosts: Vec<String>,
    /// Origins allowed cross-origin (CORS).
    pub api_cors_origins: Vec<String>,
    /// The user name that logs in ("" for none).
    pub api_username: String,
    /// Its password's argon2id hash ("" for none).
    pub api_password_hash: String,
    /// API keys' hashes.
    pub api_keys: Vec<String>,
    /// Seconds a login session lasts unused.
    pub api_session_timeout: u64,
    /// Whether `GET /metrics` needs no credentials.
    pub api_metrics_public: bool,
    /// Connections the API holds at once.
    pub api_max_connections: usize,
    /// Data folder.
    pub data_dir: String,
    /// `sparse` or `full`.
    pub allocation: String,
    /// State folder.
    pub state_dir: String,
    /// Watch folder ("" for none).
    pub watch_dir: String,
    /// Seconds between watch folder scans.
    pub watch_interval: u64,
    /// Event loops (0: one per core).
    pub threads: usize,
    /// `auto`, `uring` or `epoll`.
    pub io: String,
    /// Log level.
    pub log: String,
    /// Limits.
    pub limits: Limits,
    /// `[share_limits]`.
    pub share_limits: ShareLimitsConf,
    /// `[queue]`.
    pub queue: QueueConf,
    /// `[dht]`.
    pub dht: DhtConf,
}

/// `[dht]`: the DHT node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhtConf {
    /// Run a node.
    pub enabled: bool,
    /// Bootstrap nodes (`None`: the environment's, else the well-known routers).
    pub bootstrap: Option<Vec<String>>,
    /// UDP port (`None`: the listen port).
    pub port: Option<u16>,
}

impl Default for DhtConf {
    fn default() -> Self {
        DhtConf {
            enabled: true,
            bootstrap: None,
            port: None,
        }
    }
}

/// `[share_limits]`: the client's share limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShareLimitsConf {
    /// Ratio (-1: none).
    pub ratio: f64,
    /// Seconds of seeding (-1: none).
    pub seeding_time: i64,
    /// Seconds of inactive seeding (-1: none).
    pub inactive_seeding_time: i64,
    /// `stop`, `remove` or `remove_with_data`.
    pub action: String,
}

impl Default for ShareLimitsConf {
    fn default() -> Self {
        ShareLimitsConf {
            ratio: -1.0,
            seeding_time: -1,
            inactive_seeding_time: -1,
            action: "stop".into(),
        }
    }
}

/// `[queue]`: queueing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConf {
    /// Queueing on.
    pub enabled: bool,
    /// Downloading torrents at once (-1: no limit).
    pub max_active_downloads: i64,
    /// Seeding torrents at once.
    pub max_active_uploads: i64,
    /// Torrents at once.
    pub max_active_torrents: i64,
    /// Slow torrents are not counted.
    pub dont_count_slow: bool,
    /// Slow download rate (a rate).
    pub slow_download_rate: String,
    /// Slow upload rate.
    pub slow_upload_rate: String,
    /// Seconds below both rates to be slow.
    pub slow_inactive_secs: u64,
}

impl Default for QueueConf {
    fn default() -> Self {
        QueueConf {
            enabled: false,
            max_active_downloads: 3,
            max_active_uploads: 3,
            max_active_torrents: 5,
            dont_count_slow: false,
            slow_download_rate: "2K".into(),
            slow_upload_rate: "2K".into(),
            slow_inactive_secs: 60,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Session-wide connections.
    pub max_connections: usize,
    /// Connections per torrent.
    pub max_peers_per_torrent: usize,
    /// Connections per IP address per torrent.
    pub max_peers_per_ip: usize,
    /// Regular upload slots per torrent.
    pub upload_slots: usize,
    /// Seeding choker mode.
    pub seed_choke: String,
    /// Session upload limit ("" for none).
    pub upload_rate: String,
    /// Session download limit ("" for none).
    pub download_rate: String,
    /// Upload buffer for the whole process (a size).
    pub upload_buffer: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "[::]:6881".into(),
            encryption: Encryption::default().name().into(),
            transport: "both".into(),
            lsd: true,
            lsd_interface: String::new(),
            api: "127.0.0.1:7070".into(),
            api_hosts: Vec::new(),
            api_cors_origins: Vec::new(),
            api_username: String::new(),
            api_password_hash: String::new(),
            api_keys: Vec::new(),
            api_session_timeout: 3600,
            api_metrics_public: false,
            api_max_connections: 128,
            data_dir: "~/.local/share/ringtorrent/data".into(),
            allocation: "full".into(),
            state_dir: "~/.local/state/ringtorrent/serve".into(),
            watch_dir: String::new(),
            watch_interval: 2,
            threads: 0,
            io: "auto".into(),
            log: "info".into(),
            limits: Limits::default(),
            share_limits: ShareLimitsConf::default(),
            queue: QueueConf::default(),
            dht: DhtConf::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20000,
            max_peers_per_torrent: 200,
            max_peers_per_ip: 8,
            upload_slots: 4,
            seed_choke: "round-robin".into(),
            upload_rate: String::new(),
            download_rate: String::new(),
            upload_buffer: "64M".into(),
        }
    }
}

impl ServeConfig {
    /// Reads `path`; a missing file is an error (the caller decides whether to look).
    pub fn load(path: &Path) -> Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text; unknown keys and wrong types are errors naming the key.
    pub fn parse(text: &str) -> Result<ServeConfig> {
        let config = Self::parse_unchecked(text)?;
        config.check()?;
        Ok(config)
    }

    /// Reads `path` without [`ServeConfig::check`]ing what it says: for `serve`, whose flags
    /// may complete the file (`--api-password` for an API the file puts on every address)
    /// before the whole is checked.
    pub fn load_unchecked(path: &Path) -> Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse_unchecked(&text)
            .with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text (keys and types only).
    fn parse_unchecked(text: &str) -> Result<ServeConfig> {
        // toml's message names the line, the key and what was expected.
        toml::from_str(text).map_err(|e| anyhow!("{e}"))
    }

    /// The peer listen address (`listen`; an IP alone listens on port 6881).
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr> {
        ringtorrent::net_addr::parse_bind(&self.listen, 6881).map_err(|e| anyhow!("listen: {e}"))
    }

    /// Rejects values that parse but make no sense, naming the key.
    pub fn check(&self) -> Result<()> {
        self.io_backend()?;
        self.encryption()?;
        self.transport()?;
        self.allocation()?;
        self.lsd_interface()?;
        self.seed_choke()?;
        self.rates()?;
        self.upload_buffer()?;
        self.share_limits()?;
        self.queue()?;
        if self.limits.max_peers_per_ip == 0 {
            return Err(anyhow!("limits.max_peers_per_ip must be at least 1"));
        }
        for node in self.dht.bootstrap.iter().flatten() {
            super::super::dht::host_port(node).map_err(|e| anyhow!("dht.bootstrap: {e}"))?;
        }
        if self.watch_interval == 0 {
            return Err(anyhow!("watch_interval must be at least 1 second"));
        }
        self.listen_addr()?;
        self.api
            .parse::<std::net::SocketAddr>()
            .map_err(|_| anyhow!("api = {:?} is not an address like 127.0.0.1:7070", self.api))?;
        if self.api_max_connections == 0 {
            return Err(anyhow!("api_max_connections must be at least 1"));
        }
        Policy::new(&self.api_hosts, &self.api_cors_origins).map_err(|e| anyhow!(e))?;
        let auth = Auth::new(self.auth_config()).map_err(|e| anyhow!(e))?;
        let api: std::net::SocketAddr = self.api.parse().expect("checked above");
        if !auth.required() && !api.ip().is_loopback() {
            return Err(anyhow!(
                "api = {:?} is not a loopback address, and no credentials are set: anyone who \
                 can reach it could add torrents and delete data. Set api_username with \
                 api_password_hash (ringtorrent config hash-password) or api_keys (ringtorrent \
                 config api-key), or --api-username and --api-password; or keep the API on \
                 127.0.0.1 and reach it through a reverse proxy or an SSH tunnel",
                self.api
            ));
        }
        Ok(())
    }

    /// The API's credentials as the library's [`AuthConfig`].
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            username: self.api_username.clone(),
            password_hash: self.api_password_hash.clone(),
            api_keys: self.api_keys.clone(),
            session_ttl: std::time::Duration::from_secs(self.api_session_timeout),
        }
    }

    /// `io` as the CLI's `--io`.
    pub fn io_backend(&self) -> Result<super::super::transfer::Io> {
        use super::super::transfer::Io;
        match self.io.as_str() {
            "auto" => Ok(Io::Auto),
            "uring" => Ok(Io::Uring),
            "epoll" => Ok(Io::Epoll),
            other => Err(anyhow!(
                "io = {other:?}: expected \"auto\", \"uring\" or \"epoll\""
            )),
        }
    }

    /// `encryption` as the policy.
    pub fn encryption(&self) -> Result<Encryption> {
        self.encryption.parse().map_err(|_| {
            anyhow!(
                "encryption = {:?}: expected \"prefer\", \"require\" or \"plaintext\"",
                self.encryption
            )
        })
    }

    /// `transport` as the policy.
    pub fn transport(&self) -> Result<ringtorrent::client::Transport> {
        self.transport
            .parse()
            .map_err(|e| anyhow!("transport = {:?}: {e}", self.transport))
    }

    /// `allocation` as the storage's mode.
    pub fn allocation(&self) -> Result<ringtorrent::client::Allocation> {
        self.allocation
            .parse()
            .map_err(|e| anyhow!("allocation = {:?}: {e}", self.allocation))
    }

    /// `lsd_interface` as an address (`None` for "").
    pub fn lsd_interface(&self) -> Result<Option<std::net::Ipv4Addr>> {
        if self.lsd_interface.is_empty() {
            return Ok(None);
        }
        self.lsd_interface.parse().map(Some).map_err(|_| {
            anyhow!(
                "lsd_interface = {:?} is not an IPv4 address like 192.168.1.10",
                self.lsd_interface
            )
        })
    }

    /// `limits.seed_choke` as the core's mode.
    pub fn seed_choke(&self) -> Result<ringtorrent::core::choker::SeedChokeMode> {
        use ringtorrent::core::choker::SeedChokeMode as M;
        match self.limits.seed_choke.as_str() {
            "round-robin" => Ok(M::RoundRobin),
            "fastest" => Ok(M::FastestUpload),
            "anti-leech" => Ok(M::AntiLeech),
            "unlimited" => Ok(M::Unlimited),
            other => Err(anyhow!(
                "limits.seed_choke = {other:?}: expected \"round-robin\", \"fastest\", \
                 \"anti-leech\" or \"unlimited\""
            )),
        }
    }

    /// `limits.upload_rate` and `limits.download_rate` in bytes per second.
    pub fn rates(&self) -> Result<(Option<u64>, Option<u64>)> {
        let parse = |key: &str, v: &str| -> Result<Option<u64>> {
            if v.is_empty() {
                return Ok(None);
            }
            format::parse_rate(v)
                .map(Some)
                .map_err(|e| anyhow!("limits.{key} = {v:?}: {e}"))
        };
        Ok((
            parse("upload_rate", &self.limits.upload_rate)?,
            parse("download_rate", &self.limits.download_rate)?,
        ))
    }

    /// `[share_limits]` as the client's.
    pub fn share_limits(&self) -> Result<ShareLimits> {
        let c = &self.share_limits;
        let action: ShareAction = c
            .action
            .parse()
            .map_err(|e| anyhow!("share_limits.action = {e}"))?;
        if action == ShareAction::Default {
            return Err(anyhow!(
                "share_limits.action = \"default\": expected \"stop\", \"remove\" or \
                 \"remove_with_data\""
            ));
        }
        let limits = ShareLimits {
            ratio: c.ratio,
            seeding_time: c.seeding_time,
            inactive_seeding_time: c.inactive_seeding_time,
            action,
        };
        limits
            .check(true)
            .map_err(|e| anyhow!("[share_limits]: {e}"))?;
        Ok(limits)
    }

    /// `[queue]` as the client's.
    pub fn queue(&self) -> Result<QueueConfig> {
        let q = &self.queue;
        let rate = |key: &str, v: &str| -> Result<u64> {
            format::parse_rate(v).map_err(|e| anyhow!("queue.{key} = {v:?}: {e}"))
        };
        for (key, v) in [
            ("max_active_downloads", q.max_active_downloads),
            ("max_active_uploads", q.max_active_uploads),
            ("max_active_torrents", q.max_active_torrents),
        ] {
            if v < -1 {
                return Err(anyhow!("queue.{key} = {v}: expected -1 (no limit) or more"));
            }
        }
        Ok(QueueConfig {
            enabled: q.enabled,
            max_active_downloads: q.max_active_downloads,
            max_active_uploads: q.max_active_uploads,
            max_active_torrents: q.max_active_torrents,
            dont_count_slow: q.dont_count_slow,
            slow_download_rate: rate("slow_download_rate", &q.slow_download_rate)?,
            slow_upload_rate: rate("slow_upload_rate", &q.slow_upload_rate)?,
            slow_inactive_secs: q.slow_inactive_secs,
        })
    }

    /// `limits.upload_buffer` in bytes.
    pub fn upload_buffer(&self) -> Result<usize> {
        let v = &self.limits.upload_buffer;
        format::parse_size(v)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow!("limits.upload_buffer = {v:?}: expected a size such as 64M"))
    }

    /// A path setting with `~` expanded.
    pub fn path(value: &str) -> PathBuf {
        match value.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(rest))
                .unwrap_or_else(|| PathBuf::from(value)),
            None => PathBuf::from(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_the_defaults() {
        assert_eq!(
            ServeConfig::parse(TEMPLATE).unwrap(),
            ServeConfig::default()
        );
        assert_eq!(ServeConfig::parse("").unwrap(), ServeConfig::default());
    }

    #[test]
    fn listen_takes_ipv6_literals() {
        for (text, want) in [
            ("listen = \"[::]:6881\"", "[::]:6881"),
            ("listen = \"::1\"", "[::1]:6881"),
            ("listen = \"[::1]:7000\"", "[::1]:7000"),
            ("listen = \"0.0.0.0\"", "0.0.0.0:6881"),
            ("listen = \"127.0.0.1:0\"", "127.0.0.1:0"),
        ] {
            let c = ServeConfig::parse(text).unwrap();
            assert_eq!(c.listen_addr().unwrap(), want.parse().unwrap(), "{text}");
        }
        let e = format!(
            "{:#}",
            ServeConfig::parse("listen = \"::1:7000:x\"").unwrap_err()
        );
        assert!(e.contains("listen") && e.contains("[IPv6]:PORT"), "{e}");
    }

    #[test]
    fn lsd_keys_read_as_the_clients() {
        let c = ServeConfig::default();
        assert!(c.lsd);
        assert_eq!(c.lsd_interface().unwrap(), None);
        let c = ServeConfig::parse("lsd = false\nlsd_interface = \"192.168.1.10\"").unwrap();
        assert!(!c.lsd);
        assert_eq!(
            c.lsd_interface().unwrap(),
            Some(std::net::Ipv4Addr::new(192, 168, 1, 10))
        );
        let e = ServeConfig::parse("lsd_interface = \"eth0\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lsd_interface"), "{e}");
    }

    #[test]
    fn dht_keys_are_read_and_checked() {
        let c = ServeConfig::parse(
            "[dht]\nenabled = false\nbootstrap = [\"10.0.0.5:6881\"]\nport = 6882",
        )
        .unwrap();
        assert_eq!(
            c.dht,
            DhtConf {
                enabled: false,
                bootstrap: Some(vec!["10.0.0.5:6881".into()]),
                port: Some(6882),
            }
        );
        assert_eq!(ServeConfig::parse("").unwrap().dht, DhtConf::default());
        let e = ServeConfig::parse("[dht]\nbootstrap = [\"router\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dht.bootstrap"), "{e}");
        let e = ServeConfig::parse("[dht]\nprot = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = ServeConfig::parse("lisen = \"0.0.0.0:1\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = ServeConfig::parse("[limits]\nmax_conections = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_conections"), "{e}");
        let e = ServeConfig::parse("threads = \"four\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threads"), "{e}");
        let e = ServeConfig::parse("io = \"kqueue\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("io"), "{e}");
        let e = ServeConfig::parse("encryption = \"forced\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("encryption"), "{e}");
        let e = ServeConfig::parse("transport = \"sctp\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("transport"), "{e}");
        use ringtorrent::client::Transport;
        assert_eq!(ServeConfig::default().transport().unwrap(), Transport::Both);
        for t in [Transport::Tcp, Transport::Utp, Transport::Both] {
            let c = ServeConfig::parse(&format!("transport = \"{t}\"")).unwrap();
            assert_eq!(c.transport().unwrap(), t);
        }
        let e = ServeConfig::parse("[limits]\nupload_rate = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("upload_rate"), "{e}");
        let e = ServeConfig::parse("api = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api"), "{e}");
        for (text, key) in [
            ("api = \"0.0.0.0:7070\"", "credentials"),
            ("api_username = \"admin\"", "api_password_hash"),
            (
                "api_username = \"a\"\napi_password_hash = \"secret\"",
                "api_password_hash",
            ),
            ("api_keys = [\"abc\"]", "api_keys"),
            ("api_hosts = [\"a/b\"]", "api_hosts"),
            ("api_cors_origins = [\"example.com\"]", "api_cors_origins"),
            ("api_session_timeout = 0", "api_session_timeout"),
            ("api_max_connections = 0", "api_max_connections"),
        ] {
            let e = format!("{:#}", ServeConfig::parse(text).unwrap_err());
            assert!(e.contains(key), "{text}: {e}");
        }
        let key = ringtorrent::api::auth::new_api_key().unwrap();
        let open = format!("api = \"0.0.0.0:7070\"\napi_keys = [\"{}\"]", key.hash);
        ServeConfig::parse(&open).expect("a non-loopback API with credentials");
        let c = ServeConfig::parse("threads = 3\n[limits]\nupload_rate = \"8M\"").unwrap();
        assert_eq!(c.threads, 3);
        assert_eq!(c.encryption().unwrap(), Encryption::Prefer);
        for policy in [
            Encryption::Plaintext,
            Encryption::Prefer,
            Encryption::Require,
        ] {
            let c = ServeConfig::parse(&format!("encryption = \"{policy}\"")).unwrap();
            assert_eq!(c.encryption().unwrap(), policy);
        }
        assert_eq!(c.rates().unwrap(), (Some(8 << 20), None));
    }

    #[test]
    fn share_limits_and_queue_read_as_the_clients() {
        let d = ServeConfig::default();
        assert_eq!(d.share_limits().unwrap(), ShareLimits::NONE);
        assert_eq!(d.queue().unwrap(), QueueConfig::default());
        let c = ServeConfig::parse(
            "[share_limits]\nratio = 2.0\nseeding_time = 3600\naction = \"remove_with_data\"\n\
             [queue]\nenabled = true\nmax_active_downloads = -1\nslow_upload_rate = \"1M\"",
        )
        .unwrap();
        let l = c.share_limits().unwrap();
        assert_eq!(
            (l.ratio, l.seeding_time, l.action),
            (2.0, 3600, ShareAction::RemoveWithData)
        );
        let q = c.queue().unwrap();
        assert!(q.enabled);
        assert_eq!((q.max_active_downloads, q.slow_upload_rate), (-1, 1 << 20));
        for (text, key) in [
            ("[share_limits]\nratio = -2.0", "share_limits"),
            (
                "[share_limits]\naction = \"explode\"",
                "share_limits.action",
            ),
            ("[share_limits]\nseeding_tme = 1", "seeding_tme"),
            (
                "[queue]\nmax_active_torrents = -5",
                "queue.max_active_torrents",
            ),
            (
                "[queue]\nslow_download_rate = \"quick\"",
                "queue.slow_download_rate",
            ),
        ] {
            let e = format!("{:#}", ServeConfig::parse(text).unwrap_err());
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
