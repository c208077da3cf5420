//! Metadata and peer exchange with libtorrent (`tests/support/lt_peer.py`, PEX on):
//!
//! - a libtorrent leecher given only a magnet link and our seed's address fetches the
//!   metadata from us (BEP 9 upload) and then the data, byte-exact;
//! - libtorrent dials a peer it learned from our `ut_pex` (and from nowhere else);
//! - we dial a peer we learned from libtorrent's `ut_pex` (and from nowhere else).
//!
//! Each waits on what the peers report (a line from the script, the client's peer list),
//! with a deadline; every child is ended by PID on drop.

mod common;
mod gaps;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gaps::Kid;
use ringtorrent::client::{AddTorrent, Client, ClientConfig, Limits};

const LIMIT: Duration = Duration::from_secs(45);

/// `lt_peer.py` with `args`, its stderr in `dir/<name>.log`.
fn lt_peer(name: &str, args: &[&str], dir: &Path) -> Kid {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(common::support("lt_peer.py"))
        .args(args)
        .args(["--max-seconds", "90"])
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    gaps::homeless(&mut cmd, dir);
    Kid::spawn("lt_peer.py", &mut cmd)
}

/// The port of the script's first line.
fn port(kid: &Kid) -> u16 {
    kid.line(LIMIT, |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v["port"].as_u64().map(|p| p as u16)
    })
}

/// A leecher client that downloads slowly (so that it stays a leecher for the whole test),
/// with peer exchange on or off.
fn slow_leecher(dir: &Path, pex: bool) -> Client {
    let mut config = ClientConfig {
        limits: Limits {
            download_rate: Some(48 * 1024),
            ..Limits::default()
        },
        ..gaps::config(dir)
    };
    config.core.pex = pex;
    Client::start(config).unwrap()
}

#[test]
fn a_libtorrent_leecher_fetches_the_metadata_from_our_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let (torrent, hash) = gaps::make(&tmp.path().join("seed"), "f.bin", 1_500_000, 65536);
    let seed = gaps::seeder(&tmp.path().join("seed"), &torrent);
    let addr = seed.listen_addr().unwrap().to_string();
    let magnet = format!("magnet:?xt=urn:btih:{}", hash.to_hex());
    let out = tmp.path().join("lt");
    std::fs::create_dir_all(&out).unwrap();
    let lt = lt_peer(
        "lt",
        &["--magnet", &magnet, out.to_str().unwrap(), "--peer", &addr],
        tmp.path(),
    );
    port(&lt);
    let got = lt.line(LIMIT, |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v["metadata"].as_str().map(str::to_owned)
    });
    assert_eq!(got, hash.to_hex());
    lt.line(LIMIT, |l| l.contains("\"complete\"").then_some(()));
    let m = seed.metrics();
    assert!(m.uploaded >= 1_500_000, "the data came from us: {m:?}");
    drop(lt);
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &out);
}

#[test]
fn libtorrent_dials_a_peer_it_learned_from_our_pex() {
    let tmp = tempfile::tempdir().unwrap();
    let (torrent, _) = gaps::make(&tmp.path().join("seed"), "f.bin", 2_000_000, 65536);
    std::fs::write(tmp.path().join("f.torrent"), &torrent).unwrap();
    // Our seed, and our leecher connected to it: the seed knows the leecher's listen port.
    // The leecher itself learns nothing by PEX, so that it cannot dial libtorrent first.
    let seed = gaps::seeder(&tmp.path().join("seed"), &torrent);
    let seed_addr = seed.listen_addr().unwrap();
    let ours = slow_leecher(&tmp.path().join("ours"), false);
    let ours_addr = ours.listen_addr().unwrap();
    let t = ours
        .add(AddTorrent::bytes(torrent.clone()).peers([seed_addr]))
        .unwrap();
    gaps::eventually(LIMIT, "our leecher connects to our seed", || {
        (t.peers().unwrap().len() == 1).then_some(())
    });
    // libtorrent knows only the seed; the seed's PEX tells it of our leecher.
    let out = tmp.path().join("lt");
    std::fs::create_dir_all(&out).unwrap();
    let lt = lt_peer(
        "lt",
        &[
            "--torrent",
            tmp.path().join("f.torrent").to_str().unwrap(),
            out.to_str().unwrap(),
            "--peer",
            &seed_addr.to_string(),
            "--download-limit",
            "50000",
        ],
        tmp.path(),
    );
    port(&lt);
    let want = ours_addr.to_string();
    lt.line(LIMIT, |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["peer"].as_str() == Some(&want)).then(|| {
            assert_eq!(v["pex"], true, "learned by PEX: {v}");
            assert_eq!(v["outgoing"], true, "{v}");
        })
    });
    drop(lt);
    ours.shutdown();
    seed.shutdown();
}

#[test]
fn we_dial_a_peer_we_learned_from_libtorrents_pex() {
    let tmp = tempfile::tempdir().unwrap();
    let (torrent, _) = gaps::make(&tmp.path().join("seed"), "f.bin", 2_000_000, 65536);
    let file = tmp.path().join("f.torrent");
    std::fs::write(&file, &torrent).unwrap();
    let file = file.to_str().unwrap();
    // A libtorrent seed (slow, so nobody finishes) and a libtorrent leecher connected to it,
    // which learns nobody by PEX (so that it cannot dial us first).
    let lt_seed = lt_peer(
        "lt-seed",
        &[
            "--torrent",
            file,
            tmp.path().join("seed").to_str().unwrap(),
            "--seed",
            "--upload-limit",
            "60000",
        ],
        tmp.path(),
    );
    let seed_port = port(&lt_seed);
    let lt_leech_dir = tmp.path().join("lt");
    std::fs::create_dir_all(&lt_leech_dir).unwrap();
    let lt_leech = lt_peer(
        "lt-leech",
        &[
            "--torrent",
            file,
            lt_leech_dir.to_str().unwrap(),
            "--peer",
            &format!("127.0.0.1:{seed_port}"),
            "--no-pex",
        ],
        tmp.path(),
    );
    let leech_port = port(&lt_leech);
    // A piece from the seed: the two are well past their handshakes, so the seed knows the
    // leecher's listen port and lists it in the first PEX message it sends.
    lt_leech.line(LIMIT, |l| l.starts_with("{\"pieces\": ").then_some(()));
    // Ours knows only the libtorrent seed; its PEX tells us of the libtorrent leecher.
    let ours = slow_leecher(&tmp.path().join("ours"), true);
    let seed_addr: SocketAddr = format!("127.0.0.1:{seed_port}").parse().unwrap();
    let t = ours
        .add(AddTorrent::bytes(torrent).peers([seed_addr]))
        .unwrap();
    let want = format!("127.0.0.1:{leech_port}");
    let peer = gaps::eventually(LIMIT, "we dial the peer libtorrent told us of", || {
        t.peers().unwrap().into_iter().find(|p| p.addr == want)
    });
    assert!(peer.outgoing, "{peer:?}");
    ours.shutdown();
}
