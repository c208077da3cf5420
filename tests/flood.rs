//! Fairness and descriptors under abuse (issue 17), on loopback with real processes: one
//! address opening hundreds of idle, handshaked connections (`tests/support/flood.py`), and a
//! seed started under a 64-descriptor limit. Every child is guarded by PID and waited for
//! with a deadline; every payload is compared byte for byte.
//!
//! - The per-IP cap: of 200 connections from 127.0.0.2 the seed keeps 8 and refuses the rest
//!   at once, and a leecher from 127.0.0.1 downloads while they are held. Before the cap, the
//!   flood filled `max_peers` and the leecher was refused for as long as it stayed.
//! - The descriptor budget: under `prlimit --nofile=64:64` the seed says once that it lowered
//!   `max_connections` and by how much, answers or refuses every connection of a flood of 200
//!   (none is left waiting in the listen backlog), and serves a leecher once the flood left.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    loopback_addr, ringtorrent, same_tree, sandboxed, support, Proc, Stream, START_LIMIT,
};

/// The bound on a wait for what a child says.
const LIMIT: Duration = Duration::from_secs(120);

/// A payload and its torrent under `dir`; returns (data folder, torrent, info hash).
fn payload(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let (torrent, hash) = common::serve::torrent(dir, "flood.bin", 3_000_017, 17);
    (dir.join("data"), torrent, hash)
}

/// Starts `ringtorrent seed` on 127.0.0.1 (any free port), with `nofile` as its descriptor
/// limit (soft and hard) when given; returns it with its address.
fn start_seed(
    dir: &Path,
    torrent: &Path,
    data: &Path,
    nofile: Option<u32>,
    extra: &[&str],
) -> (Proc, String) {
    let mut cmd = match nofile {
        Some(n) => {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={n}:{n}"))
                .arg(env!("CARGO_BIN_EXE_ringtorrent"));
            sandboxed(&mut cmd).stdin(Stdio::null());
            cmd
        }
        None => ringtorrent(),
    };
    cmd.arg("seed")
        .arg(torrent)
        .arg(data)
        .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "300"])
        .arg("--state-dir")
        .arg(dir.join("seed-state"))
        .args(extra);
    let seed = Proc::watch("seed", &mut cmd, &dir.join("seed.log"));
    let addr = loopback_addr(&seed.first_line(START_LIMIT));
    (seed, addr)
}

/// What `flood.py` reported about its connections.
struct Flood {
    proc: Proc,
    handshaked: u64,
    refused: u64,
    pending: u64,
}

impl Flood {
    /// `count` connections from `from` to `addr` for `hash`, each waited for at most `wait`.
    fn start(dir: &Path, addr: &str, hash: &str, count: u32, from: &str, wait: u32) -> Flood {
        let proc = Proc::watch(
            "flood",
            Command::new("python3")
                .arg(support("flood.py"))
                .args([addr, hash, &count.to_string(), "--from", from])
                .args(["--wait", &wait.to_string()])
                .stdin(Stdio::piped()),
            &dir.join("flood.log"),
        );
        let line = proc.wait_line(LIMIT, "its counts", |s, l| {
            s == Stream::Out && l.contains("handshaked")
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let n = |k: &str| v[k].as_u64().unwrap();
        Flood {
            handshaked: n("handshaked"),
            refused: n("refused"),
            pending: n("pending"),
            proc,
        }
    }

    /// Closes every connection; returns how many were still open.
    fn stop(mut self) -> u64 {
        drop(self.proc.child.stdin.take());
        let line = self.proc.wait_line(LIMIT, "how many it closed", |s, l| {
            s == Stream::Out && l.contains("closed")
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["closed"].as_u64().unwrap()
    }
}

/// `ringtorrent download` from `seed` into `out` (it dials from 127.0.0.1); fails the test if
/// it fails.
fn download(dir: &Path, torrent: &Path, out: &Path, seed: &str) {
    let mut cmd = ringtorrent();
    cmd.arg("download")
        .arg(torrent)
        .arg("-o")
        .arg(out)
        .args(["--bind", "127.0.0.1", "--port", "0", "--timeout", "90"])
        .args(["--peer", seed])
        .arg("--state-dir")
        .arg(dir.join("leech-state"));
    let out = common::run_bounded(&mut cmd, LIMIT);
    assert!(
        out.status.success(),
        "download failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_idle_flood_from_one_address_leaves_room_for_a_leecher_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent, hash) = payload(dir.path());
    let (seed, addr) = start_seed(dir.path(), &torrent, &data, None, &[]);
    let flood = Flood::start(dir.path(), &addr, &hash, 200, "127.0.0.2", 20);
    let log = || format!("{}\n{}", seed.log(), flood.proc.log());
    assert_eq!(
        (flood.handshaked, flood.refused, flood.pending),
        (8, 192, 0),
        "the seed keeps 8 of one address's connections and refuses the rest at once\n{}",
        log()
    );
    // While the eight are held, a leecher from another address is served.
    let out = dir.path().join("out");
    download(dir.path(), &torrent, &out, &addr);
    same_tree(&data, &out);
    assert_eq!(
        flood.stop(),
        8,
        "the flood's connections were held throughout"
    );
}

fn under_64_descriptors(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent, hash) = payload(dir.path());
    // Every connection is allowed by the per-IP cap here: only descriptors limit them.
    let (seed, addr) = start_seed(
        dir.path(),
        &torrent,
        &data,
        Some(64),
        &["--io", io, "--threads", "1", "--max-peers-per-ip", "1000"],
    );
    // Said on stderr before the first line on stdout, which `start_seed` waited for.
    let log = seed.log();
    let warning = log
        .lines()
        .find(|l| l.contains("lowered to"))
        .unwrap_or_else(|| panic!("no word of max_connections lowered\n{log}"));
    let allowed: u64 = warning
        .split("lowered to ")
        .nth(1)
        .and_then(|w| w.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {warning:?}"));
    assert!(
        warning.contains("max_connections 264 lowered") && warning.contains("is 64"),
        "{warning}"
    );
    assert!((1..64).contains(&allowed), "{warning}");
    let flood = Flood::start(dir.path(), &addr, &hash, 200, "127.0.0.2", 20);
    let log = || format!("{}\n{}", seed.log(), flood.proc.log());
    // Every connection was accepted, then kept or refused: none waits in the backlog for a
    // descriptor, and no more are kept than the budget allows.
    assert_eq!(flood.pending, 0, "{}", log());
    assert_eq!(flood.handshaked + flood.refused, 200, "{}", log());
    assert!(
        (1..=allowed).contains(&flood.handshaked),
        "{} kept, {allowed} allowed\n{}",
        flood.handshaked,
        log()
    );
    flood.stop();
    let out = dir.path().join("out");
    download(dir.path(), &torrent, &out, &addr);
    same_tree(&data, &out);
    let log = seed.log();
    assert_eq!(log.matches("lowered to").count(), 1, "said once\n{log}");
}

#[test]
fn a_seed_under_64_descriptors_survives_a_flood_and_serves_after_it_uring() {
    under_64_descriptors("uring");
}

#[test]
fn a_seed_under_64_descriptors_survives_a_flood_and_serves_after_it_epoll() {
    under_64_descriptors("epoll");
}

/// The cap as the client reports it: of 30 connections from one address, the torrent's peers
/// list holds 8, all from that address, and the metrics count the other 22 as refused for it.
#[test]
fn the_cap_shows_in_the_peers_list_and_the_metrics() {
    use ringtorrent::client::{AddTorrent, Client, ClientConfig};

    let dir = tempfile::tempdir().unwrap();
    let (data, torrent, hash) = payload(dir.path());
    let client = Client::start(ClientConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        loops: 2,
        data_dir: data,
        trackers: false,
        ..ClientConfig::default()
    })
    .unwrap();
    let handle = client.add(AddTorrent::file(&torrent).seed_only()).unwrap();
    let addr = client.listen_addr().unwrap().to_string();
    let flood = Flood::start(dir.path(), &addr, &hash, 30, "127.0.0.2", 20);
    assert_eq!(
        (flood.handshaked, flood.refused),
        (8, 22),
        "{}",
        flood.proc.log()
    );
    let peers = handle.peers().unwrap();
    assert_eq!(peers.len(), 8, "{peers:?}");
    assert!(
        peers.iter().all(|p| p.addr.starts_with("127.0.0.2:")),
        "{peers:?}"
    );
    let closes = client.metrics().closes;
    assert_eq!(
        closes.get("too_many_peers_from_ip"),
        Some(&22),
        "{closes:?}"
    );
    assert_eq!(flood.stop(), 8);
    client.shutdown();
}

/// Eviction end to end: a torrent filled by idle peers from one address takes a leecher from
/// another in place of one of them. The seed is a `Client` in this process whose core waits
/// one second (`evict_idle_after`) rather than the default minute before a peer counts as
/// idle; the rule is the same.
#[test]
fn a_full_torrent_replaces_an_idle_useless_peer_with_a_leecher() {
    use ringtorrent::client::{AddTorrent, Client, ClientConfig, Limits};
    use ringtorrent::core::config::Config;

    let dir = tempfile::tempdir().unwrap();
    let (data, torrent, hash) = payload(dir.path());
    let idle_after = Duration::from_secs(1);
    let client = Client::start(ClientConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        loops: 1,
        data_dir: data.clone(),
        trackers: false,
        limits: Limits {
            max_peers_per_torrent: 20,
            max_peers_per_ip: 1000,
            ..Limits::default()
        },
        core: Config {
            evict_idle_after: idle_after,
            ..Config::default()
        },
        ..ClientConfig::default()
    })
    .unwrap();
    client.add(AddTorrent::file(&torrent).seed_only()).unwrap();
    let addr = client.listen_addr().unwrap().to_string();
    let flood = Flood::start(dir.path(), &addr, &hash, 20, "127.0.0.2", 20);
    assert_eq!(
        (flood.handshaked, flood.refused),
        (20, 0),
        "{}",
        flood.proc.log()
    );
    // The rule's minimum age, not a wait for something to happen.
    std::thread::sleep(idle_after);
    let out = dir.path().join("out");
    download(dir.path(), &torrent, &out, &addr);
    same_tree(&data, &out);
    let closes = client.metrics().closes;
    assert_eq!(closes.get("evicted_idle"), Some(&1), "{closes:?}");
    assert_eq!(flood.stop(), 19, "one idle peer made room, the rest stayed");
    client.shutdown();
}
