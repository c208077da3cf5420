//! Magnet links on real sockets over 127.0.0.1: ringtorrent fetching the metadata (BEP 9)
//! from a libtorrent seed by `x.pe` and `--peer` and then the data, byte-identical; `info` on
//! a magnet; and two ringtorrent leechers that only knew their seed finding each other by
//! peer exchange (BEP 11). Every started process is ended by PID and read with a deadline.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    info_json, loopback_addr, ringtorrent, run_bounded, run_ok, same_tree, support, write_payload,
    write_tree, Proc, START_LIMIT,
};

/// Runs `ringtorrent download` of `what` into `out`; fails the test if it fails, and returns
/// its stderr.
fn download(what: &str, out: &Path, state: &Path, extra: &[&str]) -> String {
    let result = run_bounded(
        ringtorrent()
            .arg("download")
            .arg(what)
            .arg("-o")
            .arg(out)
            .arg("--state-dir")
            .arg(state)
            .args(["--bind", "127.0.0.1", "--timeout", "60"])
            .args(extra),
        Duration::from_secs(90),
    );
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(result.status.success(), "{stderr}");
    stderr
}

#[test]
fn magnet_from_a_libtorrent_seed_by_x_pe_and_by_peer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_tree(&data.join("tree"));
    write_payload(&data.join("tree/big.bin"), 3_000_017, 51);
    let torrent = dir.path().join("tree.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("tree"))
            .args(["-l", "32K", "-o"])
            .arg(&torrent),
    );
    let hash = info_json(&torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let lt_seed = Proc::watch(
        "lt_seed.py",
        Command::new("/usr/bin/python3")
            .arg(support("lt_seed.py"))
            .arg(&torrent)
            .arg(&data)
            .stdin(Stdio::piped()),
        &dir.path().join("lt-seed.log"),
    );
    let line = lt_seed.first_line(START_LIMIT);
    let seed: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("lt_seed.py said {line:?}: {e}\n{}", lt_seed.log()));
    let addr = format!("127.0.0.1:{}", seed["port"]);

    // `info` fetches and shows the metadata, as for the .torrent file.
    let magnet = format!("magnet:?xt=urn:btih:{hash}");
    let shown = run_ok(ringtorrent().args([
        "info",
        "--json",
        &magnet,
        "--peer",
        &addr,
        "--timeout",
        "30",
    ]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let file = info_json(&torrent);
    for key in ["name", "info_hash", "total_length", "piece_count", "files"] {
        assert_eq!(shown[key], file[key], "{key}");
    }

    // By x.pe, then by --peer: metadata then data, byte for byte.
    let with_pe = format!("{magnet}&dn=tree&x.pe={addr}");
    let out = dir.path().join("out-pe");
    let said = download(
        &with_pe,
        &out,
        &dir.path().join("state-pe"),
        &["--threads", "1"],
    );
    assert!(said.contains("fetching the metadata"), "{said}");
    same_tree(&data, &out);
    let out = dir.path().join("out-peer");
    download(
        &magnet,
        &out,
        &dir.path().join("state-peer"),
        &["--peer", &addr],
    );
    same_tree(&data, &out);
}

#[test]
fn leechers_that_only_knew_the_seed_find_each_other_by_pex() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("p.bin"), 3_000_000, 52);
    let torrent = dir.path().join("p.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("p.bin"))
            .args(["-l", "64K", "-o"])
            .arg(&torrent),
    );
    let hash = info_json(&torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    // A slow seed, so that the leechers are still downloading when PEX introduces them.
    let seed_proc = Proc::watch(
        "ringtorrent seed",
        ringtorrent()
            .arg("seed")
            .arg(&torrent)
            .arg(&data)
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "60"])
            .args(["--threads", "1", "--upload-limit", "400K"])
            .arg("--state-dir")
            .arg(dir.path().join("state-seed")),
        &dir.path().join("seed.log"),
    );
    let seed = loopback_addr(&seed_proc.first_line(START_LIMIT));
    let magnet = format!("magnet:?xt=urn:btih:{hash}");
    let leech = |name: &str| {
        let out = dir.path().join(name);
        let state = dir.path().join(format!("state-{name}"));
        let magnet = magnet.clone();
        let seed = seed.clone();
        std::thread::spawn(move || {
            let said = download(&magnet, &out, &state, &["--peer", &seed, "--threads", "1"]);
            (out, said)
        })
    };
    let a = leech("a");
    std::thread::sleep(Duration::from_millis(300));
    let b = leech("b");
    let (a_out, a_said) = a.join().unwrap();
    let (b_out, b_said) = b.join().unwrap();
    same_tree(&data, &a_out);
    same_tree(&data, &b_out);
    // Each progress line names the peers connected: at some point the seed and the other.
    assert!(
        a_said.contains(" 2 peers") || b_said.contains(" 2 peers"),
        "{a_said}\n{b_said}"
    );
}

/// BEP 53 `so=`: a magnet link that selects files downloads those and finishes; the others
/// are not fetched.
#[test]
fn a_magnet_link_with_so_downloads_only_the_selected_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_tree(&data.join("tree"));
    let torrent = dir.path().join("tree.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(data.join("tree"))
            .args(["-l", "16K", "-o"])
            .arg(&torrent),
    );
    let info = info_json(&torrent);
    let hash = info["info_hash"].as_str().unwrap().to_owned();
    let files = info["files"].as_array().unwrap();
    let index = files
        .iter()
        .position(|f| f["path"].as_str().is_some_and(|p| p.ends_with("x.bin")))
        .unwrap_or_else(|| panic!("{info:#}"));
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
    let addr = loopback_addr(&seed.first_line(START_LIMIT));
    let out = dir.path().join("out");
    let uri = format!("magnet:?xt=urn:btih:{hash}&so={index}&x.pe={addr}");
    let stderr = download(&uri, &out, &dir.path().join("state"), &[]);
    assert!(
        stderr.contains(&format!("selects 1 of {} files", files.len())),
        "{stderr}"
    );
    let want = std::fs::read(data.join("tree/a/c/deep/x.bin")).unwrap();
    assert_eq!(
        std::fs::read(out.join("tree/a/c/deep/x.bin")).unwrap(),
        want
    );
    // Another file, sharing no piece with x.bin, was not fetched.
    let other = std::fs::read(out.join("tree/z/ü-ünicode.txt")).unwrap_or_default();
    assert_ne!(
        other,
        std::fs::read(data.join("tree/z/ü-ünicode.txt")).unwrap()
    );
}
