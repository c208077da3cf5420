//! The tracker client against a real opentracker on 127.0.0.1 (HTTP and UDP on one port):
//! announce and scrape replies, `stopped` taking a peer out of the next scrape, and a
//! libtorrent seed and a ringtorrent leecher finding each other through it.
//!
//! Debian's opentracker is whitelist-only, refuses to run as root and chroots: it is
//! started with `-u nobody -d DIR -w whitelist`, the whitelist holding the info hashes the
//! test made, and ended by PID. Every child has its own state folder and is read with a
//! deadline.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::opentracker::OpenTracker;
use common::{
    info_json, ringtorrent, run_bounded, run_ok, support, write_payload, Proc, START_LIMIT,
};
use serde_json::Value;

/// Makes a torrent of a fresh payload announcing to `tracker`; returns (torrent, data
/// folder, info hash).
fn make_torrent(dir: &Path, name: &str, len: usize, tracker: &str) -> (PathBuf, PathBuf, String) {
    let data = dir.join(format!("{name}-data"));
    let file = data.join(format!("{name}.bin"));
    write_payload(&file, len, len as u64 ^ name.len() as u64);
    let torrent = dir.join(format!("{name}.torrent"));
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(&file)
            .args(["-a", tracker, "--piece-length", "32K", "-f", "-o"])
            .arg(&torrent),
    );
    let hash = info_json(&torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_string();
    (torrent, data, hash)
}

/// Runs `ringtorrent <args> --json` and parses its output (which it prints on failure too).
fn json_of(args: &[&str], torrent: &Path) -> (bool, Value) {
    let out = run_bounded(
        ringtorrent()
            .arg(args[0])
            .arg(torrent)
            .args(&args[1..])
            .args([
                "--json",
                "--udp-timeout-ms",
                "500",
                "--http-timeout-ms",
                "5000",
            ]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), value)
}

fn announce(torrent: &Path, tracker: &str, port: u16, event: &str, left: u64) -> Value {
    let (ok, v) = json_of(
        &[
            "announce",
            "--tracker",
            tracker,
            "--port",
            &port.to_string(),
            "--event",
            event,
            "--left",
            &left.to_string(),
        ],
        torrent,
    );
    assert!(ok, "announce failed: {v}");
    assert_eq!(v["tracker"], tracker);
    v
}

/// The tracker's (seeders, completed, leechers), or `None` if it does not know the torrent.
fn try_scrape(torrent: &Path, tracker: &str) -> Option<(u64, u64, u64)> {
    let (ok, v) = json_of(&["scrape", "--tracker", tracker], torrent);
    assert!(ok, "scrape failed: {v}");
    let n = |k: &str| v[k].as_u64().unwrap();
    (v["known"] == true).then(|| (n("seeders"), n("completed"), n("leechers")))
}

fn scrape(torrent: &Path, tracker: &str) -> (u64, u64, u64) {
    try_scrape(torrent, tracker).expect("the tracker knows the torrent")
}

#[test]
fn announce_and_scrape_over_http_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let (http_torrent, _, http_hash) = make_torrent(dir.path(), "h", 100_000, "http://x/announce");
    let (udp_torrent, _, udp_hash) = make_torrent(dir.path(), "u", 120_000, "udp://x:1");
    let tracker = OpenTracker::start(&[http_hash, udp_hash]);
    for (torrent, url, port) in [
        (&http_torrent, tracker.http(), 40_001u16),
        (&udp_torrent, tracker.udp(), 40_002),
    ] {
        let peer = format!("127.0.0.1:{port}");
        let v = announce(torrent, &url, port, "started", 1000);
        assert!(v["interval"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["leechers"], 1, "{v}");
        assert_eq!(v["seeders"], 0, "{v}");
        // opentracker lists the announcer itself.
        assert!(
            v["peers"].as_array().unwrap().iter().any(|p| p == &peer),
            "{v}"
        );
        assert_eq!(scrape(torrent, &url), (0, 0, 1));

        // A second peer, a seeder: the first one gets it back as a peer.
        let seeder = announce(torrent, &url, port + 100, "started", 0);
        assert_eq!(
            (&seeder["seeders"], &seeder["leechers"]),
            (&1.into(), &1.into())
        );
        let v = announce(torrent, &url, port, "none", 1000);
        let want = format!("127.0.0.1:{}", port + 100);
        assert!(
            v["peers"].as_array().unwrap().iter().any(|p| p == &want),
            "{v}"
        );

        // The leecher completes, then stops; each shows in the next scrape.
        announce(torrent, &url, port, "completed", 0);
        assert_eq!(scrape(torrent, &url), (2, 1, 0));
        announce(torrent, &url, port, "stopped", 0);
        assert_eq!(scrape(torrent, &url), (1, 1, 0));
        announce(torrent, &url, port + 100, "stopped", 0);
        assert_eq!(scrape(torrent, &url), (0, 1, 0));
    }
}

#[test]
fn a_torrent_the_tracker_refuses_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, _, _) = make_torrent(dir.path(), "refused", 50_000, "http://x/announce");
    let tracker = OpenTracker::start(&["00".repeat(20)]);
    // Over HTTP opentracker says why (`failure reason`); over UDP it sends an 8-byte reply,
    // too short for an announce reply. Both fall through to the next tracker, which is the
    // other one, so both errors are listed.
    let (ok, v) = json_of(
        &[
            "announce",
            "--tracker",
            &tracker.http(),
            "--tracker",
            &tracker.udp(),
        ],
        &torrent,
    );
    assert!(!ok, "{v}");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    let text = v["errors"].to_string();
    assert!(text.contains("not authorized"), "{text}");
    assert!(text.contains("too short"), "{text}");
}

/// A libtorrent seed that announces to `tracker`, ended by PID when dropped; it has said it
/// is seeding when this returns.
fn lt_seed(torrent: &Path, data: &Path, tracker: &str, dir: &Path) -> Proc {
    let seed = Proc::watch(
        "lt_seed.py",
        Command::new("/usr/bin/python3")
            .arg(support("lt_seed.py"))
            .arg(torrent)
            .arg(data)
            .args(["--tracker", tracker])
            .stdin(Stdio::piped()),
        &dir.join("lt-seed.log"),
    );
    let line = seed.first_line(START_LIMIT);
    serde_json::from_str::<Value>(&line)
        .unwrap_or_else(|e| panic!("lt_seed.py printed {line:?}: {e}\n{}", seed.log()));
    seed
}

/// Downloads from a libtorrent seed that only the tracker at `scheme` names, with the
/// `--io` backend `io`.
fn leech_through(scheme: &str, io: &str) {
    let dir = tempfile::tempdir().unwrap();
    // The info hash does not depend on the announce URL, so whitelist it first, then make
    // the torrent that names the tracker's real port (same payload, same hash).
    let (_, _, hash) = make_torrent(dir.path(), scheme, 3_000_000, "http://x/announce");
    let tracker = OpenTracker::start(std::slice::from_ref(&hash));
    let url = match scheme {
        "http" => tracker.http(),
        _ => tracker.udp(),
    };
    // The torrent names the tracker; nothing else tells either side where the other is.
    let (torrent, data, same) = make_torrent(dir.path(), scheme, 3_000_000, &url);
    assert_eq!(hash, same);
    let seed = lt_seed(&torrent, &data, &url, dir.path());
    // Wait until the seed's announce has reached the tracker.
    let started = Instant::now();
    loop {
        if try_scrape(&torrent, &url).is_some_and(|(seeders, _, _)| seeders >= 1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the libtorrent seed never announced"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out_dir = dir.path().join("out");
    let out = run_bounded(
        ringtorrent()
            .arg("download")
            .arg(&torrent)
            .arg("-o")
            .arg(&out_dir)
            .args(["--bind", "127.0.0.1", "--timeout", "60", "--io", io])
            .arg("--state-dir")
            .arg(dir.path().join("leech-state")),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "download through the {scheme} tracker failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = format!("{scheme}.bin");
    assert_eq!(
        std::fs::read(out_dir.join(&name)).unwrap(),
        std::fs::read(data.join(&name)).unwrap()
    );
    // The leecher sent `completed` when it finished and `stopped` on exit: one completed
    // download, and only the seed is left.
    assert_eq!(scrape(&torrent, &url), (1, 1, 0));
    drop(seed);
    drop(tracker);
}

#[test]
fn libtorrent_seed_and_ringtorrent_leecher_meet_through_http_tracker() {
    leech_through("http", "auto");
}

#[test]
fn libtorrent_seed_and_ringtorrent_leecher_meet_through_udp_tracker() {
    leech_through("udp", "epoll");
}

/// A private CA and a certificate for 127.0.0.1 signed by it, made with the openssl
/// command: (CA certificate, server certificate, server key), all PEM.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = run_bounded(
            Command::new("openssl").args(args).current_dir(dir),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat()
        .into_iter()
        .chain(["-days", "2", "-subj", "/CN=ringtorrent test CA"])
        .collect::<Vec<_>>(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-keyout", "leaf.key", "-out", "leaf.csr"],
        ]
        .concat()
        .into_iter()
        .chain(["-subj", "/CN=127.0.0.1"])
        .collect::<Vec<_>>(),
    );
    std::fs::write(
        p("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (p("ca.pem"), p("leaf.pem"), p("leaf.key"))
}

/// An HTTPS front for a plain HTTP tracker: TLS ended with rustls, each request passed to
/// `backend` and its reply passed back. Returns the port; the thread lives as long as the
/// test process.
fn tls_front(cert: &Path, key: &Path, backend: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let mut plain = TcpStream::connect(("127.0.0.1", backend)).unwrap();
                plain
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                plain.write_all(&request).unwrap();
                let mut reply = Vec::new();
                let _ = plain.read_to_end(&mut reply);
                let _ = tls.write_all(&reply);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

#[test]
fn announce_and_scrape_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, _, hash) = make_torrent(dir.path(), "s", 80_000, "http://x/announce");
    let tracker = OpenTracker::start(&[hash]);
    let (ca, cert, key) = make_certs(dir.path());
    let port = tls_front(&cert, &key, tracker.port);
    let url = format!("https://127.0.0.1:{port}/announce");
    let ca = ca.to_str().unwrap();
    let (ok, v) = json_of(
        &[
            "announce",
            "--tracker",
            &url,
            "--port",
            "40003",
            "--ca-file",
            ca,
        ],
        &torrent,
    );
    assert!(ok, "{v}");
    assert_eq!(
        (&v["tracker"], &v["leechers"]),
        (&url.clone().into(), &1.into())
    );
    let (ok, v) = json_of(&["scrape", "--tracker", &url, "--ca-file", ca], &torrent);
    assert!(ok, "{v}");
    assert_eq!((&v["seeders"], &v["leechers"]), (&0.into(), &1.into()));
    // Without the CA the certificate is refused: an error, not a crash.
    let (ok, v) = json_of(&["scrape", "--tracker", &url], &torrent);
    assert!(!ok, "{v}");
    assert!(v["errors"].to_string().contains("certificate"), "{v}");
}

#[test]
fn ringtorrent_seed_and_leecher_meet_through_udp_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, hash) = make_torrent(dir.path(), "rt", 1_500_000, "http://x/announce");
    let tracker = OpenTracker::start(std::slice::from_ref(&hash));
    let url = tracker.udp();
    let (torrent, data, _) = make_torrent(dir.path(), "rt", 1_500_000, &url);
    let seed = Proc::watch(
        "ringtorrent seed",
        ringtorrent()
            .arg("seed")
            .arg(&torrent)
            .arg(&data)
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "60"])
            .arg("--state-dir")
            .arg(dir.path().join("seed-state")),
        &dir.path().join("seed.log"),
    );
    let line = seed.first_line(START_LIMIT);
    assert!(line.starts_with("seeding"), "{line}");
    leech_through_tracker(&torrent, &url, &data, dir.path(), "rt.bin");
    assert_eq!(scrape(&torrent, &url), (1, 1, 0));
    drop(seed);
}

/// Waits (bounded) until the tracker at `url` counts one seeder of `torrent`, then downloads
/// it with `ringtorrent download` knowing no peer but the tracker, and compares `file` with
/// the seed's copy in `data`.
fn leech_through_tracker(torrent: &Path, url: &str, data: &Path, dir: &Path, file: &str) {
    let started = Instant::now();
    while try_scrape(torrent, url).is_none_or(|(seeders, _, _)| seeders != 1) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the seed never announced"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out_dir = dir.join("out");
    let out = run_bounded(
        ringtorrent()
            .arg("download")
            .arg(torrent)
            .arg("-o")
            .arg(&out_dir)
            .args(["--bind", "127.0.0.1", "--timeout", "60", "--state-dir"])
            .arg(dir.join("leech-state")),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(out_dir.join(file)).unwrap(),
        std::fs::read(data.join(file)).unwrap()
    );
}

/// `serve` announces its torrents: a leecher that knows only the tracker finds the seedbox
/// through it, and when the seedbox stops (SIGTERM) it tells the tracker `stopped`, so the
/// tracker counts no seeder any more.
#[test]
fn serve_announces_its_torrents_and_says_stopped_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, hash) = make_torrent(dir.path(), "box", 1_200_000, "http://x/announce");
    let tracker = OpenTracker::start(std::slice::from_ref(&hash));
    let url = tracker.udp();
    let (torrent, data, _) = make_torrent(dir.path(), "box", 1_200_000, &url);
    let watch = dir.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    std::fs::copy(&torrent, watch.join("box.torrent")).unwrap();
    let w = watch.to_str().unwrap().to_owned();
    let serve = common::serve::Serve::start_in(dir.path(), &data, &["--watch-dir", &w]);
    leech_through_tracker(&torrent, &url, &data, dir.path(), "box.bin");
    let (_, metrics) = serve.http("GET", "/metrics", b"");
    let announces: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ringtorrent_announce_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(announces >= 1, "{metrics}");
    let status = serve.stop();
    assert!(status.success(), "{status:?}");
    let (seeders, _, _) = scrape(&torrent, &url);
    assert_eq!(seeders, 0, "the seedbox said stopped");
}
