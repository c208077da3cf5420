//! What the trackers said, as `TorrentHandle::tracker_status` and qBittorrent's
//! `torrents/trackers` report it: seedbox tools (qbit_manage) act on a tracker's status and
//! message ("unregistered"). Two local HTTP trackers: one answers with counts and a peer, one
//! refuses the torrent.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ringtorrent::api::qbt::{torrents, Params, WebApi, WebSettings};
use ringtorrent::client::{
    AddTorrent, Client, ClientConfig, IoChoice, TorrentHandle, TrackerState, TrackerStatus,
};

/// An HTTP tracker on a loopback port answering every request with `body`; its announce URL.
fn tracker(body: &[u8]) -> String {
    let (port, _) = common::http_tracker::fixed_reply(body.to_vec());
    format!("http://127.0.0.1:{port}/announce")
}

fn torrent(dir: &Path, name: &str, url: &str) -> Vec<u8> {
    common::write_payload(&dir.join(name), 100_000, 3);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join(name),
        trackers: vec![vec![url.to_string()]],
        ..Default::default()
    };
    ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

/// The torrent's one tracker once it is no longer "not contacted" nor "updating".
fn settled(t: &TorrentHandle) -> TrackerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = t.tracker_status().unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        if !matches!(
            list[0].state,
            TrackerState::NotContacted | TrackerState::Updating
        ) {
            return list[0].clone();
        }
        assert!(Instant::now() < deadline, "never answered: {list:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn trackers_report_working_with_counts_and_not_working_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // One peer (127.0.0.1:9, nothing listens there), 5 seeds, 7 leechers.
    let good = tracker(
        b"d8:completei5e10:incompletei7e8:intervali1800e5:peers6:\x7f\x00\x00\x01\x00\x09e",
    );
    let bad = tracker(b"d14:failure reason20:Unregistered torrente");
    let client = Client::start(ClientConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        loops: 1,
        io: IoChoice::Auto,
        data_dir: tmp.path().to_path_buf(),
        trackers: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let ok = client
        .add(AddTorrent::bytes(torrent(tmp.path(), "a.bin", &good)))
        .unwrap();
    let refused = client
        .add(AddTorrent::bytes(torrent(tmp.path(), "b.bin", &bad)))
        .unwrap();

    let s = settled(&ok);
    assert_eq!(
        (s.state, s.message.as_str(), s.tier),
        (TrackerState::Working, "", 0)
    );
    assert_eq!(
        (s.peers, s.seeds, s.leeches, s.downloaded),
        (Some(1), Some(5), Some(7), None)
    );
    let next = s
        .next_announce
        .expect("the tracker in use has a next announce");
    assert!(
        next > Duration::from_secs(1700) && next <= Duration::from_secs(1800),
        "{next:?}"
    );
    let s = settled(&refused);
    assert_eq!(s.state, TrackerState::NotWorking);
    assert_eq!(s.message, "Unregistered torrent");
    assert_eq!(s.seeds, None);
    eprintln!("both trackers settled after {:?}", started.elapsed());

    // The WebAPI's numbers: 2 working with counts, 4 not working with the tracker's reason.
    let auth = ringtorrent::api::auth::Auth::new(ringtorrent::api::auth::AuthConfig {
        session_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    let api = WebApi::new(std::sync::Arc::new(auth), WebSettings::default());
    let rows = |t: &TorrentHandle| {
        let hash = t.info_hash().to_hex();
        let r = torrents::handle(
            &api,
            &client,
            "trackers",
            &Params::from_pairs(&[("hash", &hash)]),
            false,
        )
        .expect("served");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        // After DHT, PeX and LSD.
        v.as_array().unwrap()[3].clone()
    };
    let row = rows(&ok);
    assert_eq!(row["url"], serde_json::json!(good));
    assert_eq!(
        (
            &row["status"],
            &row["num_peers"],
            &row["num_seeds"],
            &row["num_leeches"],
            &row["num_downloaded"],
            &row["msg"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(5),
            &serde_json::json!(7),
            &serde_json::json!(-1),
            &serde_json::json!("")
        )
    );
    let row = rows(&refused);
    assert_eq!(
        (&row["status"], &row["msg"], &row["num_seeds"]),
        (
            &serde_json::json!(4),
            &serde_json::json!("Unregistered torrent"),
            &serde_json::json!(-1)
        )
    );
    client.shutdown();
}
