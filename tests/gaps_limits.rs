//! Rate limits on real sockets: a seed with all of loopback's bandwidth, and a limited side.
//! At every reading, the bytes that arrived since the start stay within the limit times the
//! time since the start, plus its burst. This is a correctness bound, not a tuning figure,
//! and it holds however loaded the machine is: a limit paces what is asked for (download)
//! or read for sending (upload), so nothing can arrive that was not allowed by then, and a
//! reading is taken as the time after it, so a late answer cannot make a rate look higher.
//! (A bound over shorter windows would not hold: a seed stalled by the machine's load sends
//! what was asked of it meanwhile all at once.)
//!
//! - `ClientConfig::limits.download_rate` of a library client (two loops sharing it);
//! - `serve --download-limit` leeching and `serve --upload-limit` seeding.

mod common;
mod gaps;

use std::time::{Duration, Instant};

use gaps::Serve;
use ringtorrent::client::{AddTorrent, Client, ClientConfig, Limits, TorrentHandle};

const LIMIT: Duration = Duration::from_secs(60);
const RATE: u64 = 1 << 20;
const SIZE: usize = 3 << 20;
/// What may arrive beyond `RATE` x time: each loop's bucket starts with a burst of a tenth
/// of a second (at least two blocks), and the loops' shares are moved once a second. Half a
/// second of the rate covers it with room to spare.
const ALLOWANCE: u64 = RATE / 2;

/// Reads `read` until it reports `done`, checking at every reading that what arrived since
/// the start is within the bound.
fn check_rate(what: &str, mut read: impl FnMut() -> (u64, bool)) {
    let start = Instant::now();
    let mut worst = 0.0f64;
    let total = loop {
        let (bytes, done) = read();
        let elapsed = start.elapsed();
        let allowed = RATE as f64 * elapsed.as_secs_f64() + ALLOWANCE as f64;
        worst = worst.max(bytes as f64 / allowed);
        assert!(
            bytes as f64 <= allowed,
            "{what}: {bytes} bytes in {elapsed:?}, more than {allowed} (limit {RATE} B/s)"
        );
        if done {
            break bytes;
        }
        assert!(elapsed < LIMIT, "{what}: not done in {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(total >= SIZE as u64, "{what}: {total} bytes");
    println!(
        "{what}: {total} bytes in {:?}, at most {:.0}% of limit x time + burst",
        start.elapsed(),
        worst * 100.0
    );
}

fn leech_status(t: &TorrentHandle) -> (u64, bool) {
    let s = t.status().unwrap();
    (s.downloaded, s.bytes_left == 0)
}

#[test]
fn a_client_download_limit_holds_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let (torrent, _) = gaps::make(&tmp.path().join("seed"), "f.bin", SIZE, 65536);
    let seed = gaps::seeder(&tmp.path().join("seed"), &torrent);
    let leech = Client::start(ClientConfig {
        limits: Limits {
            download_rate: Some(RATE),
            ..Limits::default()
        },
        ..gaps::config(&tmp.path().join("leech"))
    })
    .unwrap();
    let t = leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    check_rate("client download limit", || leech_status(&t));
    leech.shutdown();
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("leech"));
}

#[test]
fn serve_session_limits_hold_both_ways_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let (torrent, hash) = gaps::make(&tmp.path().join("seed"), "f.bin", SIZE, 65536);
    let seed = gaps::seeder(&tmp.path().join("seed"), &torrent);
    let sdir = tmp.path().join("serve");
    let rate = RATE.to_string();
    let serve = Serve::start(&sdir, &["--download-limit", &rate, "--upload-limit", &rate]);

    // serve leeching from an unlimited seed, through a magnet link.
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe={}",
        hash.to_hex(),
        seed.listen_addr().unwrap()
    );
    let body = serde_json::json!({ "magnet": magnet }).to_string();
    let (code, v) = serve.json("POST", "/torrents", body.as_bytes());
    assert_eq!(code, 201, "{v}");
    check_rate("serve --download-limit", || {
        let v = serve.status(&hash);
        (
            v["downloaded"].as_u64().unwrap_or(0),
            v["state"] == "seeding",
        )
    });
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &sdir.join("data"));

    // serve seeding to an unlimited leecher.
    let leech = Client::start(gaps::config(&tmp.path().join("leech"))).unwrap();
    let t = leech
        .add(AddTorrent::bytes(torrent).peers([serve.peers]))
        .unwrap();
    check_rate("serve --upload-limit", || leech_status(&t));
    leech.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("leech"));
    drop(serve);
}
