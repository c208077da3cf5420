//! Checks against libtorrent 2.0 (python3-libtorrent from Debian, installed by scripts/test.sh):
//! our info hashes and layouts match its reading of torrents made by mktorrent and by
//! libtorrent itself, and `ringtorrent handshake` talks to a libtorrent seed. Every process
//! started here is ended by PID, and all traffic stays on 127.0.0.1.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    info_json, interop, refusing_port, ringtorrent, run_bounded, run_ok, support, write_payload,
    write_tree, Proc, START_LIMIT,
};
use serde_json::Value;

fn lt_info(torrent: &Path) -> Value {
    serde_json::from_str(&run_ok(
        Command::new("/usr/bin/python3")
            .arg(support("lt_info.py"))
            .arg(torrent),
    ))
    .unwrap()
}

fn lt_create(input: &Path, out: &Path, piece_len: u64, extra: &[&str]) {
    run_ok(
        Command::new("/usr/bin/python3")
            .arg(support("lt_create.py"))
            .arg(input)
            .arg(out)
            .args([
                "--piece-length",
                &piece_len.to_string(),
                "--tracker",
                "http://127.0.0.1:6969/announce",
            ])
            .args(extra),
    );
}

fn mktorrent(input: &Path, out: &Path) {
    run_ok(
        Command::new("mktorrent")
            .args(["-l", "16", "-a", "http://127.0.0.1:6969/announce", "-o"])
            .arg(out)
            .arg(input),
    );
}

/// Compares our reading of `torrent` with libtorrent's.
fn assert_same_reading(torrent: &Path) {
    let ours = info_json(torrent);
    let theirs = lt_info(torrent);
    assert_eq!(
        ours["info_hash"],
        theirs["info_hash"],
        "info hash of {}",
        torrent.display()
    );
    assert_eq!(ours["name"], theirs["name"]);
    assert_eq!(ours["total_length"], theirs["total_size"]);
    assert_eq!(ours["piece_length"], theirs["piece_length"]);
    assert_eq!(ours["piece_count"], theirs["num_pieces"]);
    let files = |v: &Value, path: &str, len: &str| -> Vec<(String, u64)> {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f[path].as_str().unwrap().to_owned(),
                    f[len].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        files(&ours, "path", "length"),
        files(&theirs, "path", "size"),
        "files of {}",
        torrent.display()
    );
}

#[test]
fn info_hash_and_layout_match_libtorrent() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.bin");
    write_payload(&single, 777_777, 11);
    let tree = dir.path().join("tree");
    write_tree(&tree);

    let cases = [
        ("mk-single.torrent", &single, None),
        ("mk-multi.torrent", &tree, None),
        ("lt-single.torrent", &single, Some(&[][..])),
        ("lt-multi.torrent", &tree, Some(&[][..])),
        ("lt-multi-private.torrent", &tree, Some(&["--private"][..])),
        ("lt-multi-padded.torrent", &tree, Some(&["--pad"][..])),
    ];
    for (name, input, lt) in cases {
        let out = dir.path().join(name);
        match lt {
            None => mktorrent(input, &out),
            Some(extra) => lt_create(input, &out, 32_768, extra),
        }
        assert_same_reading(&out);
    }
    // The padded torrent really has padding files, and we flag them.
    let padded = info_json(&dir.path().join("lt-multi-padded.torrent"));
    assert!(padded["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["padding"] == true));
    assert_eq!(
        info_json(&dir.path().join("lt-multi-private.torrent"))["private"],
        true
    );
}

/// A libtorrent seed on 127.0.0.1, ended by PID when dropped.
struct Seed {
    _proc: Proc,
    port: u16,
    info: Value,
}

impl Seed {
    /// Starts it; its log goes beside the torrent.
    fn start(torrent: &Path, data: &Path) -> Seed {
        let proc = Proc::watch(
            "lt_seed.py",
            Command::new("/usr/bin/python3")
                .arg(support("lt_seed.py"))
                .arg(torrent)
                .arg(data)
                .stdin(Stdio::piped()),
            &torrent.with_extension("lt-seed.log"),
        );
        let line = proc.first_line(START_LIMIT);
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("lt_seed.py printed {line:?}: {e}\n{}", proc.log()));
        let port = info["port"].as_u64().unwrap() as u16;
        Seed {
            _proc: proc,
            port,
            info,
        }
    }
}

fn handshake(torrent: &Path, addr: &str, extra: &[&str]) -> std::process::Output {
    run_bounded(
        ringtorrent()
            .arg("handshake")
            .arg(torrent)
            .arg(addr)
            .args(extra),
        Duration::from_secs(60),
    )
}

#[test]
fn handshake_with_a_libtorrent_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("payload.bin"), 300_000, 5);
    let torrent = dir.path().join("payload.torrent");
    mktorrent(&data.join("payload.bin"), &torrent);
    let seed = Seed::start(&torrent, &data);
    let addr = format!("127.0.0.1:{}", seed.port);

    let out = handshake(&torrent, &addr, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let peer_id = report["peer_id"]["printable"].as_str().unwrap();
    assert!(
        peer_id.starts_with("-LT2"),
        "libtorrent peer id, got {peer_id}"
    );
    // lt_seed.py reports the peer id it gave libtorrent; a report without one is a broken
    // helper, not a reason to skip the comparison.
    let expected = seed.info["peer_id"]
        .as_str()
        .unwrap_or_else(|| panic!("lt_seed.py reported no peer_id: {}", seed.info));
    assert_eq!(report["peer_id"]["hex"], expected);
    assert!(report["reserved"]["extension_protocol"].as_bool().unwrap());
    assert!(report["reserved"]["fast"].as_bool().unwrap());
    let ext = &report["extended_handshake"];
    assert!(ext["v"].as_str().unwrap().contains("libtorrent"), "{ext}");
    assert!(ext["m"]["ut_metadata"].as_u64().unwrap() > 0, "{ext}");
    assert_eq!(
        report["pieces"]["have"], report["pieces"]["total"],
        "a seed has every piece: {report}"
    );

    // The text form names the client too.
    let text = handshake(&torrent, &addr, &[]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("libtorrent"));

    // A torrent the seed does not have: libtorrent drops the connection; one clear line.
    let other = dir.path().join("other.torrent");
    write_payload(&dir.path().join("other.bin"), 1000, 77);
    mktorrent(&dir.path().join("other.bin"), &other);
    let out = handshake(&other, &addr, &["--timeout", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("does not have this torrent") || err.contains("info hash"),
        "{err}"
    );
}

#[test]
fn handshake_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    write_payload(&dir.path().join("p.bin"), 1000, 1);
    let torrent = dir.path().join("p.torrent");
    mktorrent(&dir.path().join("p.bin"), &torrent);
    let one_line = |out: std::process::Output, want: &str| {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.to_lowercase().contains(want),
            "expected {want:?} in {err:?}"
        );
    };

    // Refused: a port the test holds without listening, so nobody else can listen there.
    let (_held, port) = refusing_port();
    one_line(
        handshake(&torrent, &format!("127.0.0.1:{port}"), &[]),
        "refused",
    );

    // Timeout: a listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    one_line(handshake(&torrent, &addr, &["--timeout", "1"]), "timed out");

    // Not a BitTorrent peer: a listener that answers like a web server.
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = web.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = web.accept().unwrap();
        let mut buf = [0u8; 68];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n and some more bytes to fill a handshake");
    });
    one_line(
        handshake(&torrent, &addr, &["--timeout", "5"]),
        "not a bittorrent peer",
    );
    server.join().unwrap();

    // Wrong info hash: a peer that answers with another torrent's hash.
    let liar = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = liar.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = liar.accept().unwrap();
        let mut buf = [0u8; 68];
        s.read_exact(&mut buf).unwrap();
        buf[28..48].copy_from_slice(&[0xee; 20]);
        s.write_all(&buf).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    one_line(handshake(&torrent, &addr, &["--timeout", "5"]), "info hash");
    server.join().unwrap();

    // Not an address at all.
    one_line(handshake(&torrent, "no-port-here", &[]), "address");
}

/// Every case of `common::interop::CASES` on both backends, each with its own payload.
fn all_cases(work: &Path, tag: &str, seed: u64) -> Vec<(interop::Prepared, &'static str)> {
    let mut all = Vec::new();
    for (i, case) in interop::CASES.iter().enumerate() {
        for (j, io) in interop::BACKENDS.into_iter().enumerate() {
            let tag = format!("{tag}-lt-{io}");
            all.push((
                interop::prepare(work, case, &tag, seed + (i * 2 + j) as u64),
                io,
            ));
        }
    }
    all
}

/// libtorrent (TCP only, no DHT, LSD, UPnP or NAT-PMP) leeches every case from a
/// ringtorrent seed on each backend, all at once; every file compared byte for byte.
#[test]
fn libtorrent_leeches_every_case_from_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let all = all_cases(work, "to", 300);
    interop::libtorrent_leeches_all(&all, work);
}

/// ringtorrent leeches every case from a libtorrent seed on each backend, all at once.
#[test]
fn ringtorrent_leeches_every_case_from_libtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let all = all_cases(work, "from", 400);
    let jobs = all
        .iter()
        .map(|(p, io)| {
            (
                format!("libtorrent -> ringtorrent {} --io {io}", p.label),
                {
                    move || {
                        let seed = Seed::start(&p.torrent, &p.data);
                        let out = work.join(format!("{}-out", p.label));
                        let peer = format!("127.0.0.1:{}", seed.port);
                        let result = interop::rt_download(p, &out, io, &[peer], &[], work);
                        interop::download_ok(&p.label, &result)?;
                        interop::compare_trees(&p.data, &out)
                    }
                },
            )
        })
        .collect();
    interop::run_all(jobs);
}
