//! `TorrentHandle::reannounce` (qBittorrent's `torrents/reannounce`): a torrent whose tracker
//! said "come back in 30 minutes" announces again at once when asked. The tracker is a local
//! HTTP one that records each announce.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ringtorrent::client::{AddTorrent, Client, ClientConfig, IoChoice};

fn torrent(dir: &Path, url: &str) -> Vec<u8> {
    common::write_payload(&dir.join("file.bin"), 100_000, 3);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join("file.bin"),
        trackers: vec![vec![url.to_string()]],
        ..Default::default()
    };
    ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

#[test]
fn a_reannounce_announces_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, announces) =
        common::http_tracker::fixed_reply(b"d8:intervali1800e5:peers0:e".to_vec());
    let bytes = torrent(tmp.path(), &format!("http://127.0.0.1:{port}/announce"));
    let client = Client::start(ClientConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        loops: 1,
        io: IoChoice::Auto,
        data_dir: tmp.path().to_path_buf(),
        trackers: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let t = client.add(AddTorrent::bytes(bytes)).unwrap();
    let first = announces
        .recv_timeout(Duration::from_secs(30))
        .expect("the first announce");
    assert!(first.contains("event=started"), "{first}");
    // The tracker said 30 minutes; nothing more comes by itself.
    assert!(announces.recv_timeout(Duration::from_millis(300)).is_err());
    let asked = Instant::now();
    t.reannounce().unwrap();
    let again = announces
        .recv_timeout(Duration::from_secs(5))
        .expect("a reannounce announces at once");
    let took = asked.elapsed();
    assert!(again.starts_with("GET /announce?"), "{again}");
    assert!(!again.contains("event="), "a regular announce: {again}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    eprintln!("reannounce reached the tracker after {took:?}");
    client.shutdown();
}
