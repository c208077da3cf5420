//! The DHT on the command line: the flags `download`, `seed` and `serve` share
//! ([`DhtArgs`]), and `ringtorrent dht get-peers`, a node of its own (a UDP socket and the
//! sans-IO [`Dht`], no client) that runs one lookup and prints it hop by hop.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use ringtorrent::client::dht::{self as client_dht, DhtSettings, DEFAULT_BOOTSTRAP};
use ringtorrent::core::{InfoHash, Time};
use ringtorrent::dht::{Dht, DhtConfig, DhtEvent};
use ringtorrent::metainfo::Magnet;

/// Replaces the built-in bootstrap routers when no `--dht-bootstrap` (or config key) says
/// otherwise: comma-separated `HOST:PORT`s; empty: none (a node that only learns from
/// peers' `port` messages and torrents' `nodes`).
pub const BOOTSTRAP_ENV: &str = "RINGTORRENT_DHT_BOOTSTRAP";

/// The DHT flags of `download`, `seed` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct DhtArgs {
    /// A DHT node to start from, HOST:PORT; repeatable. Default: router.bittorrent.com:6881,
    /// dht.transmissionbt.com:6881, router.utorrent.com:6881, dht.libtorrent.org:25401 (or
    /// the list in $RINGTORRENT_DHT_BOOTSTRAP, comma-separated). A loopback or private
    /// address here lets the node keep loopback and private nodes (a LAN, a test).
    #[arg(id = "dht_bootstrap", long = "dht-bootstrap", value_name = "HOST:PORT", value_parser = host_port)]
    pub bootstrap: Vec<String>,
    /// Run no DHT node: peers come only from trackers, --peer and peer exchange.
    #[arg(id = "no_dht", long = "no-dht", conflicts_with_all = ["dht_bootstrap", "dht_port"])]
    pub no_dht: bool,
    /// The DHT node's own UDP port (0: any free port). Default: the peer listen port, as
    /// other clients do.
    #[arg(id = "dht_port", long = "dht-port", value_name = "PORT")]
    pub port: Option<u16>,
}

impl DhtArgs {
    /// The client's DHT settings: `config_bootstrap` is a config file's list, which the
    /// flags override and which overrides the environment and the defaults.
    pub fn settings(&self, config_bootstrap: Option<&[String]>) -> DhtSettings {
        DhtSettings {
            enabled: !self.no_dht,
            bootstrap: bootstrap_list(&self.bootstrap, config_bootstrap),
            port: self.port,
            ..DhtSettings::default()
        }
    }
}

/// Checks a `HOST:PORT` (an IPv6 literal in brackets) without resolving it.
pub fn host_port(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{s}`: `{port}` is not a port (1-65535)"))?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ok = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && !host.contains(':'),
    };
    if !ok {
        return Err(format!(
            "`{s}`: `{host}` is not a host name or address (IPv6 in brackets: [::1]:6881)"
        ));
    }
    Ok(s.to_owned())
}

/// The bootstrap nodes: the flags', else the config file's, else $RINGTORRENT_DHT_BOOTSTRAP,
/// else the well-known routers.
pub fn bootstrap_list(flags: &[String], config: Option<&[String]>) -> Vec<String> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    if let Some(c) = config {
        return c.to_vec();
    }
    if let Ok(env) = std::env::var(BOOTSTRAP_ENV) {
        return env
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Look a torrent's peers up in the DHT and print the lookup hop by hop (who answered,
    /// how many closer nodes and peers each gave), then the peers found. Runs a node of its
    /// own on a UDP port for the lookup only; announces nothing.
    ///
    /// Example: ringtorrent dht get-peers 0123456789abcdef0123456789abcdef01234567
    ///          ringtorrent dht get-peers 'magnet:?xt=urn:btih:...' --dht-bootstrap 10.0.0.5:6881
    GetPeers(GetPeersArgs),
}

#[derive(Debug, clap::Args)]
struct GetPeersArgs {
    /// The info hash (40 hex digits, or 32 base32 characters), or a magnet link.
    hash: String,
    /// A DHT node to start from, HOST:PORT; repeatable (default as for `download`).
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT", value_parser = host_port)]
    bootstrap: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Address to bind the node's UDP socket to (port 0: any free port). The default `[::]:0`
    /// asks both the IPv4 and the IPv6 DHT (BEP 32), falling back to `0.0.0.0:0` on a host
    /// without IPv6; an IPv4 address asks only IPv4 nodes, an IPv6 one only IPv6 nodes.
    #[arg(long, default_value = "[::]:0")]
    bind: SocketAddr,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::GetPeers(a) => get_peers(a),
    }
}

fn parse_hash(s: &str) -> Result<InfoHash> {
    if s.starts_with("magnet:") {
        let m = Magnet::parse(s).map_err(|e| anyhow!("invalid magnet link: {e}"))?;
        return Ok(m.info_hash);
    }
    Magnet::parse(&format!("magnet:?xt=urn:btih:{s}"))
        .map(|m| m.info_hash)
        .map_err(|_| anyhow!("`{s}` is not an info hash (40 hex digits or 32 base32 characters)"))
}

fn get_peers(a: GetPeersArgs) -> Result<()> {
    let hash = parse_hash(&a.hash)?;
    let dual = a.bind.is_ipv6() && a.bind.ip().is_unspecified();
    let bind = if dual && !ringtorrent::net_addr::ipv6_available() {
        SocketAddr::from(([0, 0, 0, 0], a.bind.port()))
    } else {
        a.bind
    };
    let socket: UdpSocket =
        ringtorrent::driver::net::bind_udp(bind).with_context(|| format!("cannot bind {bind}"))?;
    let local = socket.local_addr()?;
    let dual = local.is_ipv6() && local.ip().is_unspecified();
    let names = bootstrap_list(&a.bootstrap, None);
    let resolved = client_dht::resolve(&names, Duration::from_secs(5));
    let bootstrap: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|b| b.is_ipv6() == local.is_ipv6() || dual)
        .collect();
    if bootstrap.is_empty() && !resolved.is_empty() {
        bail!(
            "no bootstrap node is reachable from a socket on {local}: {} (bind [::]:0 for both families)",
            names.join(", ")
        );
    }
    if bootstrap.is_empty() {
        bail!(
            "no bootstrap node could be resolved from {}",
            names.join(", ")
        );
    }
    let config = DhtConfig {
        allow_private: bootstrap.iter().any(|b| client_dht::is_private(b.ip())),
        ipv4: local.is_ipv4() || dual,
        ipv6: local.is_ipv6(),
        bootstrap: bootstrap.clone(),
        trace_lookups: true,
        ..DhtConfig::default()
    };
    let epoch = Instant::now();
    let now = || Time::from_micros(epoch.elapsed().as_micros() as u64);
    let mut dht = Dht::new(config, ringtorrent::client::random_u64(), now());
    outln!(
        "looking up {hash} from {} (node {local}, bootstrap {})",
        hex(&dht.id().0),
        bootstrap
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let lookup = dht.get_peers(hash, None, now());
    // bind_udp makes a non-blocking socket; this loop waits in recv_from with a timeout.
    socket.set_nonblocking(false)?;
    let deadline = epoch + Duration::from_secs(a.timeout.max(1));
    let mut peers: Vec<SocketAddr> = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut done = None;
    while done.is_none() {
        while let Some(t) = dht.poll_transmit() {
            let to = match (t.to, local.is_ipv6()) {
                (SocketAddr::V4(v4), true) => {
                    SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
                }
                (to, _) => to,
            };
            let _ = socket.send_to(&t.payload, to);
        }
        while let Some(event) = dht.poll_event() {
            match event {
                DhtEvent::Hop {
                    lookup: l,
                    hop,
                    from,
                    nodes,
                    peers: p,
                } if l == lookup => {
                    outln!("hop {hop}: {from} gave {nodes} nodes, {p} peers");
                }
                DhtEvent::Peers {
                    lookup: l,
                    peers: p,
                    ..
                } if l == lookup => {
                    for peer in p {
                        if !peers.contains(&peer) {
                            peers.push(peer);
                        }
                    }
                }
                DhtEvent::LookupDone {
                    lookup: l,
                    responded,
                    ..
                } if l == lookup => done = Some(responded),
                _ => {}
            }
        }
        if done.is_some() {
            break;
        }
        let t = now();
        if Instant::now() >= deadline {
            break;
        }
        let until_timer = dht
            .poll_timeout()
            .map_or(Duration::from_millis(200), |d| d.saturating_since(t));
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = until_timer.min(left).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let from = unmap(from);
                if buf[..n].first() == Some(&b'd') {
                    dht.handle_datagram(from, &buf[..n], now());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // An ICMP error for something we sent: the next datagram is fine.
            Err(_) => {}
        }
        let t = now();
        if dht.poll_timeout().is_some_and(|d| d <= t) {
            dht.handle_timeout(t);
        }
    }
    match done {
        Some(responded) => outln!("lookup done: {responded} nodes answered"),
        None => outln!("lookup not done after {} s", a.timeout),
    }
    outln!("{} peers", peers.len());
    for p in &peers {
        outln!("peer {p}");
    }
    Ok(())
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_nodes_must_be_host_and_port() {
        for ok in ["router.bittorrent.com:6881", "127.0.0.1:1", "[::1]:6881"] {
            assert_eq!(host_port(ok).as_deref(), Ok(ok));
        }
        for bad in ["router", "host:0", "host:x", ":6881", "::1:6881", "[zz]:1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
