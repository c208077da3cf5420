//! The DHT against libtorrent 2.0's on loopback: a libtorrent node (tests/support/lt_dht.py,
//! routing and search IP restrictions off) is every test's bootstrap node, no tracker runs,
//! and the torrents are reached by bare magnet links (`magnet:?xt=urn:btih:HASH`), so the DHT
//! is the only way the peers meet. Every process is ended by PID; each test is bounded to
//! about a minute.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::interop::{compare_trees, prepare, rt_seed_with, Case, Layout, Prepared, Proc};
use common::{info_json, ringtorrent, run_bounded, support, START_LIMIT};
use serde_json::Value;

const PUBLIC: Case = Case {
    name: "dht",
    layout: Layout::Single(700_001),
    piece_len: "64K",
    private: false,
};

const PRIVATE: Case = Case {
    name: "dhtprivate",
    layout: Layout::Single(300_007),
    piece_len: "64K",
    private: true,
};

/// `lt_dht.py MODE ARGS`, watched; returns it with its first stdout line (JSON).
fn lt_dht(
    mode: &str,
    args: &[&str],
    bootstrap: Option<u16>,
    work: &Path,
    tag: &str,
) -> (Proc, Value) {
    let log = work.join(format!("lt-dht-{mode}-{tag}.log"));
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(support("lt_dht.py")).arg(mode).args(args);
    if let Some(port) = bootstrap {
        cmd.args(["--bootstrap", &format!("127.0.0.1:{port}")]);
    }
    cmd.args(["--max-seconds", "75"]).stdin(Stdio::piped());
    let proc = Proc::watch(&format!("lt_dht.py {mode} {tag}"), &mut cmd, &log);
    let line = proc.first_line(START_LIMIT);
    let v: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("lt_dht.py printed {line:?}: {e}\n{}", proc.log()));
    (proc, v)
}

/// The bootstrap node every test starts from.
fn lt_node(work: &Path, tag: &str) -> (Proc, u16) {
    let (proc, v) = lt_dht("node", &[], None, work, tag);
    (proc, v["port"].as_u64().unwrap() as u16)
}

fn bootstrap_args(port: u16) -> Vec<String> {
    vec!["--dht-bootstrap".into(), format!("127.0.0.1:{port}")]
}

fn info_hash(p: &Prepared) -> String {
    info_json(&p.torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `ringtorrent dht get-peers HASH` from the node at `port`, bounded.
fn get_peers(hash: &str, port: u16, timeout: u64) -> Output {
    let mut cmd = ringtorrent();
    cmd.args(["dht", "get-peers", hash, "--bind", "127.0.0.1:0"])
        .args(bootstrap_args(port))
        .args(["--timeout", &timeout.to_string()]);
    run_bounded(&mut cmd, Duration::from_secs(timeout + 15))
}

/// Runs `get-peers` until its output lists `peer` (or `limit` passes); returns the last
/// output either way.
fn get_peers_until(hash: &str, port: u16, peer: &str, limit: Duration) -> (bool, String) {
    let end = Instant::now() + limit;
    loop {
        let out = get_peers(hash, port, 5);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let found = text.lines().any(|l| l.trim() == format!("peer {peer}"));
        if found || Instant::now() >= end {
            return (found, text);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `ringtorrent seed` of `p` announcing through the node at `port`.
fn rt_dht_seed(p: &Prepared, io: &str, port: u16, work: &Path) -> (Proc, String) {
    let b = bootstrap_args(port);
    let extra: Vec<&str> = b
        .iter()
        .map(String::as_str)
        .chain(["--duration", "75"])
        .collect();
    rt_seed_with(p, io, &[], &extra, work)
}

/// `ringtorrent download` of a bare magnet link into `out`, the DHT its only source.
fn rt_dht_download(hash: &str, out: &Path, io: &str, port: u16, work: &Path) -> Output {
    let mut cmd = ringtorrent();
    cmd.arg("download")
        .arg(format!("magnet:?xt=urn:btih:{hash}"))
        .arg("-o")
        .arg(out)
        .args(["--bind", "127.0.0.1", "--io", io, "--timeout", "50"])
        .arg("--state-dir")
        .arg(work.join(format!("rt-leech-state-{io}")))
        .args(bootstrap_args(port));
    run_bounded(&mut cmd, Duration::from_secs(65))
}

fn download_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A ringtorrent seed (io_uring) announces through the libtorrent node; a ringtorrent
/// leecher (epoll) with only the bare magnet link and the bootstrap node finds it and
/// downloads the payload byte for byte.
#[test]
fn ringtorrent_leecher_finds_ringtorrent_seed_through_libtorrent_node() {
    let work = tempfile::tempdir().unwrap();
    let p = prepare(work.path(), &PUBLIC, "rr", 21);
    let hash = info_hash(&p);
    let (_node, port) = lt_node(work.path(), "rr");
    let (_seed, seed_addr) = rt_dht_seed(&p, "uring", port, work.path());
    let (found, text) = get_peers_until(&hash, port, &seed_addr, Duration::from_secs(20));
    assert!(found, "the seed's announce never reached the node:\n{text}");
    let out = work.path().join("out");
    let got = rt_dht_download(&hash, &out, "epoll", port, work.path());
    download_ok("ringtorrent download (epoll) of a bare magnet", &got);
    compare_trees(&p.data, &out).unwrap();
}

/// A libtorrent leecher given a bare magnet link, with the DHT as its only source, finds a
/// ringtorrent seed (epoll) and downloads from it.
#[test]
fn libtorrent_leecher_finds_ringtorrent_seed() {
    let work = tempfile::tempdir().unwrap();
    let p = prepare(work.path(), &PUBLIC, "lr", 22);
    let hash = info_hash(&p);
    let (_node, port) = lt_node(work.path(), "lr");
    let (_seed, seed_addr) = rt_dht_seed(&p, "epoll", port, work.path());
    let (found, text) = get_peers_until(&hash, port, &seed_addr, Duration::from_secs(20));
    assert!(found, "the seed's announce never reached the node:\n{text}");
    let out = work.path().join("out");
    let magnet = format!("magnet:?xt=urn:btih:{hash}");
    let out_s = out.to_str().unwrap();
    let (mut leech, _) = lt_dht("leech", &[&magnet, out_s], Some(port), work.path(), "lr");
    let done = leech.wait_line(Duration::from_secs(60), "done", |_, l| {
        l.contains("\"done\"")
    });
    assert!(done.contains("true"), "{done}");
    assert!(leech
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    compare_trees(&p.data, &out).unwrap();
}

/// A ringtorrent leecher (io_uring) with a bare magnet link finds a libtorrent seed that
/// announced to the DHT (and `info --fetch` reads the link's metadata the same way).
#[test]
fn ringtorrent_leecher_finds_libtorrent_seed() {
    let work = tempfile::tempdir().unwrap();
    let p = prepare(work.path(), &PUBLIC, "rl", 23);
    let hash = info_hash(&p);
    let (_node, port) = lt_node(work.path(), "rl");
    let torrent = p.torrent.to_str().unwrap();
    let data = p.data.to_str().unwrap();
    let (_seed, v) = lt_dht("seed", &[torrent, data], Some(port), work.path(), "rl");
    assert_eq!(v["info_hash"].as_str(), Some(hash.as_str()));
    let seed_addr = format!("127.0.0.1:{}", v["port"]);
    let (found, text) = get_peers_until(&hash, port, &seed_addr, Duration::from_secs(25));
    assert!(found, "libtorrent's announce never showed:\n{text}");
    // `info --fetch` of the bare link: the metadata from a peer the DHT found.
    let mut cmd = ringtorrent();
    cmd.args([
        "info",
        &format!("magnet:?xt=urn:btih:{hash}"),
        "--fetch",
        "--json",
    ])
    .args(["--timeout", "30"])
    .args(bootstrap_args(port));
    let info = run_bounded(&mut cmd, Duration::from_secs(45));
    download_ok("info --fetch of a bare magnet", &info);
    let json: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(json["info_hash"].as_str(), Some(hash.as_str()), "{json}");
    let out = work.path().join("out");
    let got = rt_dht_download(&hash, &out, "uring", port, work.path());
    download_ok("ringtorrent download (io_uring) of a bare magnet", &got);
    compare_trees(&p.data, &out).unwrap();
}

/// `dht get-peers` prints the lookup hop by hop and the seed's address; and a private
/// torrent seeded beside it with the DHT on is never announced: a lookup for it, after the
/// public one was found, finds nobody.
#[test]
fn get_peers_shows_hops_and_the_seed_and_never_a_private_torrent() {
    let work = tempfile::tempdir().unwrap();
    let public = prepare(work.path(), &PUBLIC, "gp", 24);
    let private = prepare(work.path(), &PRIVATE, "gp", 25);
    let (_node, port) = lt_node(work.path(), "gp");
    let (_private_seed, private_addr) = rt_dht_seed(&private, "epoll", port, work.path());
    let (_seed, seed_addr) = rt_dht_seed(&public, "uring", port, work.path());
    let (found, text) = get_peers_until(
        &info_hash(&public),
        port,
        &seed_addr,
        Duration::from_secs(20),
    );
    assert!(found, "the public seed was not found:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("hop 0: 127.0.0.1:{port} gave"))),
        "no hop from the bootstrap node:\n{text}"
    );
    assert!(text.contains("lookup done"), "{text}");
    // The private seed started first, so it had at least as long to announce.
    let out = get_peers(&info_hash(&private), port, 5);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("hop 0:"), "the lookup ran:\n{text}");
    assert!(
        text.lines().any(|l| l == "0 peers") && !text.contains(&private_addr),
        "a private torrent was announced:\n{text}"
    );
}

/// `--dht-port` puts the node on a UDP port of its own (not the peer port); the routing table
/// is saved to the state folder's `dht.dat` at shutdown, and a restart on the same folder,
/// whose only bootstrap node is dead, still reaches the libtorrent node from the saved table
/// and announces there.
#[test]
fn dht_port_is_real_and_the_table_outlives_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let p = prepare(work.path(), &PUBLIC, "st", 26);
    let hash = info_hash(&p);
    let (_node, port) = lt_node(work.path(), "st");
    let state = work.path().join("state");
    let dht_port = common::interop::free_port();
    let seed = |bootstrap: u16, dht_port: Option<u16>, run: u32| {
        let mut cmd = ringtorrent();
        cmd.arg("seed")
            .arg(&p.torrent)
            .arg(&p.data)
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "6"])
            .arg("--state-dir")
            .arg(&state)
            .args(bootstrap_args(bootstrap));
        if let Some(d) = dht_port {
            cmd.args(["--dht-port", &d.to_string()]);
        }
        let log = work.path().join(format!("rt-seed-st-{run}.log"));
        let proc = Proc::watch(&format!("ringtorrent seed run {run}"), &mut cmd, &log);
        let addr = common::loopback_addr(&proc.first_line(START_LIMIT));
        (proc, addr)
    };
    let (mut first, first_addr) = seed(port, Some(dht_port), 1);
    let end = Instant::now() + Duration::from_secs(5);
    while common::udp_socket(first.id(), dht_port) != common::Listener::Ours {
        assert!(
            Instant::now() < end,
            "no UDP socket on --dht-port {dht_port}\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !first_addr.ends_with(&format!(":{dht_port}")),
        "{first_addr}"
    );
    let (found, text) = get_peers_until(&hash, port, &first_addr, Duration::from_secs(5));
    assert!(found, "first run not announced:\n{text}");
    let status = first.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{}", first.log());
    let saved = std::fs::read(state.join("dht.dat")).expect("dht.dat written at shutdown");
    assert!(!saved.is_empty());

    // Port 1 on loopback: nobody answers there.
    let (mut second, second_addr) = seed(1, None, 2);
    assert_ne!(second_addr, first_addr);
    let (found, text) = get_peers_until(&hash, port, &second_addr, Duration::from_secs(5));
    assert!(
        found,
        "the restarted node did not reach the saved node:\n{text}\n{}",
        second.log()
    );
    assert!(!second.log().contains("not restored"), "{}", second.log());
    let _ = second.wait_exit(Duration::from_secs(20));
}

/// `serve` with the DHT: `GET /dht` and `/metrics` show the nodes it knows, and so does
/// qBittorrent's `transfer/info`.
#[test]
fn serve_shows_its_dht_nodes() {
    let work = tempfile::tempdir().unwrap();
    let (_node, port) = lt_node(work.path(), "serve");
    let bootstrap = format!("127.0.0.1:{port}");
    let serve = common::serve::Serve::start(work.path(), &["--dht-bootstrap", &bootstrap]);
    let end = Instant::now() + Duration::from_secs(20);
    let dht = loop {
        let (status, dht) = serve.json("GET", "/dht", b"");
        assert_eq!(status, 200, "{dht}");
        if dht["nodes"].as_u64().unwrap_or(0) >= 1 || Instant::now() > end {
            break dht;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(dht["enabled"], true, "{dht}");
    assert!(
        dht["nodes_ipv4"].as_u64().unwrap() >= 1,
        "{dht}\n{}",
        serve.log()
    );
    assert!(
        dht["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{dht}"
    );
    let (_, metrics) = serve.http("GET", "/metrics", b"");
    let nodes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ringtorrent_dht_nodes{family=\"ipv4\"} "))
        .unwrap_or_else(|| panic!("no DHT gauge in:\n{metrics}"));
    assert!(nodes.parse::<f64>().unwrap() >= 1.0, "{nodes}");
    assert!(
        metrics.contains("ringtorrent_dht_lookups_total"),
        "{metrics}"
    );
    let (status, info) = serve.json("GET", "/api/v2/transfer/info", b"");
    assert_eq!(status, 200, "{info}");
    assert!(info["dht_nodes"].as_u64().unwrap() >= 1, "{info}");
}

/// A torrent's own DHT nodes (BEP 5 `nodes`, here by name) are where a node whose only
/// bootstrap node is dead finds the DHT: the seed announces through the libtorrent node the
/// torrent names.
#[test]
fn a_torrents_nodes_lead_to_the_dht() {
    let work = tempfile::tempdir().unwrap();
    let p = prepare(work.path(), &PUBLIC, "nodes", 27);
    let (_node, port) = lt_node(work.path(), "nodes");
    let mut bytes = std::fs::read(&p.torrent).unwrap();
    assert_eq!(bytes.pop(), Some(b'e'));
    bytes.extend_from_slice(format!("5:nodesll9:localhosti{port}eeee").as_bytes());
    std::fs::write(&p.torrent, &bytes).unwrap();
    let hash = info_hash(&p);
    // Port 1 on loopback: nobody answers there.
    let (seed, seed_addr) = rt_dht_seed(&p, "epoll", 1, work.path());
    let (found, text) = get_peers_until(&hash, port, &seed_addr, Duration::from_secs(30));
    assert!(
        found,
        "the seed never reached the torrent's node:\n{text}\n{}",
        seed.log()
    );
}
