//! IPv6 from the command line: transfers over `::1` on both I/O backends (`--bind ::1`, a
//! `--peer [::1]:PORT`), the default dual-stack listener taking IPv4 and IPv6 connections
//! while `--bind 0.0.0.0` and `--bind ::1` keep to their family, bind addresses refused with a
//! reason, libtorrent over `::1` both ways, and an HTTP tracker's `peers6` (BEP 7) dialled. Every process is ended by PID, bounded in
//! time; every payload is compared byte for byte.

mod common;

use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{
    ringtorrent, run_bounded, run_ok, same_tree, support, write_payload, Proc, START_LIMIT,
};

/// A payload and its torrent in `dir`: `data/v6.bin`, `v6.torrent`.
fn payload(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    write_payload(&data.join("v6.bin"), 3_000_017, 61);
    let torrent = dir.join("v6.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("v6.bin"))
            .args(["-l", "64K", "-o"])
            .arg(&torrent),
    );
    (data, torrent)
}

/// The address in the seed's "seeding NAME on ADDR with BACKEND" line.
fn seeding_addr(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// `ringtorrent seed` of `torrent` from `data` bound to `bind` (any free port), with `extra`
/// flags; returns it with the address it says it listens on.
fn start_seed(
    dir: &Path,
    torrent: &Path,
    data: &Path,
    bind: &str,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let name = format!("seed-{}", extra.join("-"));
    let seed = Proc::watch(
        &name,
        ringtorrent()
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--port", "0", "--bind", bind, "--duration", "120"])
            .arg("--state-dir")
            .arg(dir.join(format!("{name}-state")))
            .args(extra),
        &dir.join(format!("{name}.log")),
    );
    let addr = seeding_addr(&seed.first_line(START_LIMIT));
    (seed, addr)
}

/// Downloads `torrent` into `out` with `extra` flags; fails the test if it fails.
fn download(torrent: &Path, out: &Path, extra: &[&str]) {
    let result = run_bounded(
        ringtorrent()
            .arg("download")
            .arg(torrent)
            .arg("-o")
            .arg(out)
            .args(["--timeout", "90", "--state-dir"])
            .arg(out.with_extension("state"))
            .args(extra),
        Duration::from_secs(120),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

fn transfer_over_v6_loopback(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    let (_seed, addr) = start_seed(dir.path(), &torrent, &data, "::1", &["--io", io]);
    assert_eq!(addr.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    let out = dir.path().join("out");
    let peer = format!("[::1]:{}", addr.port());
    download(
        &torrent,
        &out,
        &["--bind", "::1", "--peer", &peer, "--io", io],
    );
    same_tree(&data, &out);
}

#[test]
fn transfer_over_ipv6_loopback_uring() {
    transfer_over_v6_loopback("uring");
}

#[test]
fn transfer_over_ipv6_loopback_epoll() {
    transfer_over_v6_loopback("epoll");
}

/// Whether a TCP connection to `addr` is accepted within a second.
fn connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn the_default_listener_takes_both_families_and_explicit_binds_keep_to_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    // `--bind ::` (the default): a leecher over 127.0.0.1 and one over ::1 both finish.
    let (_seed, addr) = start_seed(dir.path(), &torrent, &data, "::", &["--io", "uring"]);
    assert_eq!(addr.ip(), "::".parse::<std::net::IpAddr>().unwrap());
    for (i, peer) in [
        format!("127.0.0.1:{}", addr.port()),
        format!("[::1]:{}", addr.port()),
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(format!("out{i}"));
        download(&torrent, &out, &["--bind", "127.0.0.1", "--peer", peer]);
        same_tree(&data, &out);
    }
    // `--bind 0.0.0.0` is IPv4 only, `--bind ::1` IPv6 only.
    let (_v4, v4) = start_seed(dir.path(), &torrent, &data, "0.0.0.0", &["--io", "epoll"]);
    assert!(connects(SocketAddr::from(([127, 0, 0, 1], v4.port()))));
    assert!(!connects(SocketAddr::from((
        std::net::Ipv6Addr::LOCALHOST,
        v4.port()
    ))));
    let (_v6, v6) = start_seed(dir.path(), &torrent, &data, "::1", &["--io", "epoll"]);
    assert!(connects(v6));
    assert!(!connects(SocketAddr::from(([127, 0, 0, 1], v6.port()))));
}

#[test]
fn bad_bind_addresses_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    for (bind, says) in [
        ("localhost", "host names are not accepted"),
        ("::1:x", "[IPv6]:PORT"),
        ("[::1]:99999", "from 0 to 65535"),
    ] {
        let result = run_bounded(
            ringtorrent().arg("seed").arg(&torrent).arg(&data).args([
                "--port",
                "0",
                "--bind",
                bind,
                "--duration",
                "5",
            ]),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{bind}: {stderr}");
        assert!(
            stderr.contains("--bind") && stderr.contains(says),
            "{bind}: {stderr}"
        );
    }
    // With a port, --bind names the port too.
    let (_seed, addr) = start_seed(dir.path(), &torrent, &data, "[::1]:0", &[]);
    assert!(addr.is_ipv6() && addr.port() != 0);
}

#[test]
fn ringtorrent_leeches_from_libtorrent_over_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    let seed = Proc::watch(
        "lt_seed.py",
        Command::new("/usr/bin/python3")
            .arg(support("lt_seed.py"))
            .arg(&torrent)
            .arg(&data)
            .args(["--listen-ip", "::1"])
            .stdin(Stdio::piped()),
        &dir.path().join("lt-seed.log"),
    );
    let line = seed.first_line(START_LIMIT);
    let info: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("lt_seed.py said {line:?}: {e}\n{}", seed.log()));
    let peer = format!("[::1]:{}", info["port"]);
    for io in ["uring", "epoll"] {
        let out = dir.path().join(format!("out-{io}"));
        download(
            &torrent,
            &out,
            &["--bind", "::1", "--peer", &peer, "--io", io],
        );
        same_tree(&data, &out);
    }
}

#[test]
fn libtorrent_leeches_from_ringtorrent_over_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    let (_seed, addr) = start_seed(dir.path(), &torrent, &data, "::1", &["--io", "uring"]);
    let out = dir.path().join("lt-out");
    let result = run_bounded(
        Command::new("/usr/bin/python3")
            .arg(support("lt_leech.py"))
            .arg(&torrent)
            .arg(&out)
            .args(["--listen-ip", "::1", "--timeout", "60", "--peer"])
            .arg(format!("[::1]:{}", addr.port())),
        Duration::from_secs(90),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    same_tree(&data, &out);
}

#[test]
fn a_peer_from_a_trackers_peers6_is_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("v6.bin"), 1_000_003, 62);
    // The seed listens on ::1 alone; the leecher learns of it only from the tracker.
    let plain = dir.path().join("plain.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("v6.bin"))
            .args(["-l", "64K", "-o"])
            .arg(&plain),
    );
    let (_seed, addr) = start_seed(dir.path(), &plain, &data, "::1", &["--io", "epoll"]);
    // An HTTP tracker that gives no IPv4 peers and, in `peers6`, the seed at [::1].
    let mut body = b"d8:intervali1800e5:peers0:6:peers618:".to_vec();
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&addr.port().to_be_bytes());
    body.push(b'e');
    let (tracker, requests) = common::http_tracker::fixed_reply(body);
    let torrent = dir.path().join("v6.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("v6.bin"))
            .args(["-l", "64K", "-a"])
            .arg(format!("http://127.0.0.1:{tracker}/announce"))
            .arg("-o")
            .arg(&torrent),
    );
    let out = dir.path().join("out");
    download(&torrent, &out, &["--bind", "::1", "--io", "uring"]);
    same_tree(&data, &out);
    let first = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(first.starts_with("GET /announce?info_hash="), "{first}");
    // Listening on loopback alone, we have no global IPv6 address to tell it (BEP 7).
    assert!(!first.contains("ipv6="), "{first}");
}

/// A client seeding on the default dual-stack listener with `io` and two loops; peers that
/// connect over 127.0.0.1 and over ::1 are listed by the engine as `127.0.0.1:P` and
/// `[::1]:P`, never as `[::ffff:127.0.0.1]:P`.
fn dual_stack_peer_list(io: ringtorrent::client::IoChoice) {
    use ringtorrent::client::{AddTorrent, Client, ClientConfig, TorrentState};
    use ringtorrent::core::wire::{Handshake, Reserved};
    use ringtorrent::core::PeerId;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    write_payload(&dir.path().join("file.bin"), 100_000, 3);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.path().join("file.bin"),
        ..Default::default()
    };
    let bytes = ringtorrent::metainfo::create::create(&opts, &Default::default())
        .unwrap()
        .bytes;
    let client = Client::start(ClientConfig {
        listen: Some("[::]:0".parse().unwrap()),
        loops: 2,
        io,
        data_dir: dir.path().to_path_buf(),
        trackers: false,
        ..Default::default()
    })
    .unwrap();
    let listen = client.listen_addr().unwrap();
    assert!(listen.is_ipv6() && listen.ip().is_unspecified(), "{listen}");
    let t = client.add(AddTorrent::bytes(bytes).seed_only()).unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);
    let mut streams = Vec::new();
    let mut want = Vec::new();
    for (i, ip) in ["127.0.0.1", "::1"].into_iter().enumerate() {
        // Peer ids differ: a second connection from the same id is closed as a duplicate.
        let id = PeerId::from_bytes([7 + i as u8; 20]);
        let hs = Handshake::new(Reserved::NONE, t.info_hash(), id);
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let mut s = TcpStream::connect((ip, listen.port())).unwrap();
        s.write_all(&hs.to_bytes()).unwrap();
        want.push(s.local_addr().unwrap().to_string());
        streams.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        seen = t.peers().unwrap().into_iter().map(|p| p.addr).collect();
        seen.sort();
        if seen.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    want.sort();
    assert_eq!(seen, want);
    assert!(seen.iter().any(|a| a.starts_with("127.0.0.1:")), "{seen:?}");
    client.shutdown();
}

#[test]
fn a_dual_stack_client_lists_ipv4_peers_unmapped_uring() {
    dual_stack_peer_list(ringtorrent::client::IoChoice::Uring);
}

#[test]
fn a_dual_stack_client_lists_ipv4_peers_unmapped_epoll() {
    dual_stack_peer_list(ringtorrent::client::IoChoice::Epoll);
}

/// A BEP 15 UDP tracker on [::1] that answers every announce with the one peer
/// `[::1]:peer_port` (18 bytes: over IPv6, peers are IPv6). Its thread stops when `stop`
/// is dropped or after two minutes. Returns its port and the number of announces answered.
fn udp6_tracker(
    peer_port: u16,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    mpsc::Sender<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let socket = std::net::UdpSocket::bind("[::1]:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let announces = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = announces.clone();
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 1500];
        while std::time::Instant::now() < end
            && matches!(stopped.try_recv(), Err(mpsc::TryRecvError::Empty))
        {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let p = &buf[..n];
            if n < 16 {
                continue;
            }
            let action = u32::from_be_bytes(p[8..12].try_into().unwrap());
            let tid = &p[12..16];
            let mut reply = Vec::new();
            match action {
                0 => {
                    reply.extend_from_slice(&0u32.to_be_bytes());
                    reply.extend_from_slice(tid);
                    reply.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
                }
                1 if n >= 98 => {
                    reply.extend_from_slice(&1u32.to_be_bytes());
                    reply.extend_from_slice(tid);
                    reply.extend_from_slice(&1800u32.to_be_bytes());
                    reply.extend_from_slice(&0u32.to_be_bytes());
                    reply.extend_from_slice(&1u32.to_be_bytes());
                    reply.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                    reply.extend_from_slice(&peer_port.to_be_bytes());
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                _ => continue,
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    (port, announces, stop)
}

#[test]
fn a_peer_from_a_udp_tracker_over_ipv6_is_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("v6.bin"), 1_000_003, 63);
    let plain = dir.path().join("plain.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("v6.bin"))
            .args(["-l", "64K", "-o"])
            .arg(&plain),
    );
    let (_seed, addr) = start_seed(dir.path(), &plain, &data, "::1", &["--io", "uring"]);
    let (tracker, announces, _stop) = udp6_tracker(addr.port());
    let torrent = dir.path().join("v6.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("v6.bin"))
            .args(["-l", "64K", "-a"])
            .arg(format!("udp://[::1]:{tracker}/announce"))
            .arg("-o")
            .arg(&torrent),
    );
    let out = dir.path().join("out");
    download(&torrent, &out, &["--bind", "::", "--io", "epoll"]);
    same_tree(&data, &out);
    assert!(announces.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn without_ipv6_the_default_listener_falls_back_to_ipv4() {
    // A network namespace of our own (user namespace for the rights) with IPv6 turned off on
    // every interface: `/proc/net/if_inet6` is empty there.
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    let script = "ip link set lo up && \
                  echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && \
                  echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6 && \
                  test -z \"$(cat /proc/net/if_inet6)\" && \
                  exec \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args(["-rn", "sh", "-c", script, "sh"])
        .arg(env!("CARGO_BIN_EXE_ringtorrent"))
        .arg("seed")
        .arg(&torrent)
        .arg(&data)
        .args(["--port", "0", "--duration", "1", "--state-dir"])
        .arg(dir.path().join("ns-state"));
    common::sandboxed(&mut cmd);
    let result = run_bounded(&mut cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stdout}\n{stderr}");
    let addr = seeding_addr(stdout.lines().next().unwrap_or_default());
    assert_eq!(addr.ip(), std::net::IpAddr::from([0, 0, 0, 0]), "{stdout}");
    assert_ne!(addr.port(), 0);
}

/// `dht get-peers` by default binds `[::]`, so an IPv6 bootstrap node (a seed's DHT node on
/// `::1`) answers it; told `--bind 0.0.0.0:0` it says why no node is reachable.
#[test]
fn dht_get_peers_asks_an_ipv6_node() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    let (_seed, addr) = start_seed(dir.path(), &torrent, &data, "::1", &["--io", "epoll"]);
    let hash = ringtorrent::metainfo::Torrent::from_bytes(&std::fs::read(&torrent).unwrap())
        .unwrap()
        .info
        .info_hash()
        .to_hex();
    let node = format!("[::1]:{}", addr.port());
    let out = run_bounded(
        ringtorrent().args([
            "dht",
            "get-peers",
            &hash,
            "--dht-bootstrap",
            &node,
            "--timeout",
            "10",
        ]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("hop 0: {node} gave")), "{text}");
    assert!(text.contains("lookup done: 1 nodes answered"), "{text}");
    let out = run_bounded(
        ringtorrent().args([
            "dht",
            "get-peers",
            &hash,
            "--dht-bootstrap",
            &node,
            "--bind",
            "0.0.0.0:0",
        ]),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no bootstrap node is reachable from a socket on 0.0.0.0"),
        "{err}"
    );
}
