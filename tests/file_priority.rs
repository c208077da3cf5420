//! File priorities, sequential download and first/last-piece priority through
//! `ringtorrent::Client`: a deselected file is neither created nor fetched until it is
//! selected, priorities and the download order survive a restart, and a sequential download
//! from one seed verifies its pieces in order.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ringtorrent::client::{
    AddTorrent, Client, ClientConfig, ClientEvent, Events, FilePriority, TorrentState,
};

/// Every wait here has this bound; the transfers are a few MiB on loopback.
const LIMIT: Duration = Duration::from_secs(60);

const PIECE: usize = 64 * 1024;

fn config(data: &Path) -> ClientConfig {
    common::client_config(data, 1)
}

/// Files `dir/tree/{names}` of the given lengths, and the torrent of `dir/tree`.
fn make_tree(dir: &Path, files: &[(&str, usize)], piece_len: usize) -> Vec<u8> {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for (i, (name, len)) in files.iter().enumerate() {
        common::write_payload(&tree.join(name), *len, 11 + i as u64);
    }
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: tree,
        piece_len: Some(piece_len as u64),
        ..Default::default()
    };
    ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

/// A client seeding `torrent` from `dir`.
fn seeder(dir: &Path, torrent: &[u8]) -> Client {
    common::seeding_client(dir, torrent, 1)
}

/// The events until `done` says stop (or the bound passes, which fails the test).
fn until(events: &Events, done: impl FnMut(&ClientEvent) -> bool) -> Vec<ClientEvent> {
    common::events_until(events, LIMIT, done)
}

fn same_file(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

#[test]
fn a_deselected_file_is_not_created_until_selected_and_priorities_survive_a_restart() {
    use FilePriority::{High, Normal, Skip};
    let tmp = tempfile::tempdir().unwrap();
    // b.bin starts and ends on piece boundaries, so no wanted piece touches it.
    let files = [
        ("a.bin", 4 * PIECE),
        ("b.bin", 5 * PIECE),
        ("c.bin", 200_000),
    ];
    let torrent = make_tree(&tmp.path().join("seed"), &files, PIECE);
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    let data = tmp.path().join("leech");
    let state = tmp.path().join("state");
    let remembering = || ClientConfig {
        state_dir: Some(state.clone()),
        remember_torrents: true,
        ..config(&data)
    };

    let leech = Client::start(remembering()).unwrap();
    let events = leech.subscribe();
    let mut add = AddTorrent::bytes(torrent.clone()).peers(seed.listen_addr());
    add.file_priorities = Some(vec![Normal, Skip, High]);
    add.sequential = true;
    let t = leech.add(add).unwrap();
    let hash = t.info_hash();
    // Not even created while the rest downloads.
    assert!(!data.join("tree/b.bin").exists());
    until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    let s = t.status().unwrap();
    assert_eq!((s.state, s.bytes_left), (TorrentState::Seeding, 0));
    assert!(s.sequential && !s.first_last_piece_priority);
    assert!(!data.join("tree/b.bin").exists());
    same_file(
        &tmp.path().join("seed/tree/a.bin"),
        &data.join("tree/a.bin"),
    );
    same_file(
        &tmp.path().join("seed/tree/c.bin"),
        &data.join("tree/c.bin"),
    );
    let prios: Vec<FilePriority> = t.files().unwrap().iter().map(|f| f.priority).collect();
    assert_eq!(prios, vec![Normal, Skip, High]);
    t.set_first_last_piece_priority(true).unwrap();
    leech.shutdown();

    // The same state folder: priorities and order settings come back, nothing is missing.
    let leech = Client::start(remembering()).unwrap();
    let events = leech.subscribe();
    let t = leech.get(hash).expect("the torrent came back");
    let s = t.status().unwrap();
    assert_eq!(s.error, None);
    assert_eq!(s.state, TorrentState::Seeding);
    assert!(s.sequential && s.first_last_piece_priority);
    let files_now = t.files().unwrap();
    let prios: Vec<FilePriority> = files_now.iter().map(|f| f.priority).collect();
    assert_eq!(prios, vec![Normal, Skip, High]);
    assert!(!files_now[1].wanted);
    assert!(!data.join("tree/b.bin").exists());

    // Selecting it creates and downloads it.
    t.set_file_priorities(vec![Normal, Normal, High]).unwrap();
    assert!(data.join("tree/b.bin").exists());
    t.add_peers(&[seed.listen_addr().unwrap()]).unwrap();
    until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    assert_eq!(t.status().unwrap().bytes_left, 0);
    leech.shutdown();
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &data);
}

#[test]
fn set_files_keeps_the_priority_of_files_still_wanted() {
    use FilePriority::{High, Maximal, Normal, Skip};
    let tmp = tempfile::tempdir().unwrap();
    let files = [("a.bin", PIECE), ("b.bin", PIECE), ("c.bin", PIECE)];
    let torrent = make_tree(&tmp.path().join("seed"), &files, PIECE);
    let client = Client::start(config(&tmp.path().join("seed"))).unwrap();
    let t = client
        .add(AddTorrent::bytes(torrent).seed_only().paused(true))
        .unwrap();
    t.set_file_priorities(vec![High, Maximal, Normal]).unwrap();
    t.set_files(vec![true, false, true]).unwrap();
    let prios: Vec<FilePriority> = t.files().unwrap().iter().map(|f| f.priority).collect();
    assert_eq!(prios, vec![High, Skip, Normal]);
    t.set_files(vec![true, true, true]).unwrap();
    let prios: Vec<FilePriority> = t.files().unwrap().iter().map(|f| f.priority).collect();
    assert_eq!(prios, vec![High, Normal, Normal]);
    assert!(t.set_file_priorities(vec![Normal]).is_err());
    client.shutdown();
}

#[test]
fn a_sequential_download_from_one_seed_verifies_pieces_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let pieces = 128;
    let torrent = make_tree(
        &tmp.path().join("seed"),
        &[("x.bin", pieces * 4 * PIECE - 1000)],
        4 * PIECE,
    );
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    let leech = Client::start(config(&tmp.path().join("leech"))).unwrap();
    let events = leech.subscribe();
    let mut add = AddTorrent::bytes(torrent).peers(seed.listen_addr());
    add.sequential = true;
    leech.add(add).unwrap();
    let seen = until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    let order: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::PieceVerified { piece, .. } => Some(*piece),
            _ => None,
        })
        .collect();
    assert_eq!(order.len(), pieces);
    // Pieces are requested in order; hashing in parallel may swap neighbours, and BEP 6's
    // allowed-fast pieces (asked while choked, at most 10) may come first. Rarest first
    // (random among equals from one seed) would displace nearly every piece by ~pieces/3.
    let displaced = order
        .iter()
        .enumerate()
        .filter(|&(pos, &p)| (pos as i64 - i64::from(p)).abs() > 12)
        .count();
    assert!(displaced <= 10, "verified out of order: {order:?}");
    leech.shutdown();
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("leech"));
}

/// `ringtorrent download --files`: only the listed files (ranges allowed) are downloaded, a
/// file no listed file shares a piece with is not created, and an index past the last file is
/// a clear error.
#[test]
fn download_files_fetches_only_the_listed_files() {
    use common::{loopback_addr, ringtorrent, run_bounded, run_ok, Proc, START_LIMIT};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tree = data.join("d");
    // 32 KiB pieces; every file but the last a whole number of pieces.
    common::write_payload(&tree.join("one.bin"), 5 * 32 * 1024, 1);
    common::write_payload(&tree.join("three.bin"), 3 * 32 * 1024, 2);
    common::write_payload(&tree.join("two.bin"), 70_001, 3);
    common::write_payload(&tree.join("zz.bin"), 40_000, 4);
    let torrent = dir.path().join("d.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(&tree)
            .args(["-l", "32K", "-o"])
            .arg(&torrent),
    );
    let names: Vec<String> = common::info_json(&torrent)["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["padding"] != true)
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["d/one.bin", "d/three.bin", "d/two.bin", "d/zz.bin"].map(String::from),
        "the order the test relies on"
    );
    let seed = Proc::watch(
        "seed",
        ringtorrent()
            .arg("seed")
            .arg(&torrent)
            .arg(&data)
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "120"])
            .arg("--state-dir")
            .arg(dir.path().join("seed-state")),
        &dir.path().join("seed.log"),
    );
    let addr = loopback_addr(&seed.first_line(START_LIMIT));
    let download = |out: &Path, files: &str| {
        run_bounded(
            ringtorrent()
                .arg("download")
                .arg(&torrent)
                .arg("-o")
                .arg(out)
                .args(["--bind", "127.0.0.1", "--timeout", "90", "--peer", &addr])
                .args(["--files", files])
                .arg("--state-dir")
                .arg(out.with_extension("state")),
            Duration::from_secs(120),
        )
    };
    let out = dir.path().join("out");
    let result = download(&out, "0,2-3");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("selects 3 of 4 files"), "{stderr}");
    for name in ["one.bin", "two.bin", "zz.bin"] {
        same_file(&tree.join(name), &out.join("d").join(name));
    }
    assert!(
        !out.join("d/three.bin").exists(),
        "a deselected file was created"
    );

    // The same through a magnet link: the selection waits for the metadata.
    let hash = common::info_json(&torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = dir.path().join("mag");
    let result = run_bounded(
        ringtorrent()
            .arg("download")
            .arg(format!("magnet:?xt=urn:btih:{hash}&x.pe={addr}"))
            .arg("-o")
            .arg(&out)
            .args(["--bind", "127.0.0.1", "--timeout", "90", "--files", "0,2-3"])
            .arg("--state-dir")
            .arg(out.with_extension("state")),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("selects 3 of 4 files"), "{stderr}");
    for name in ["one.bin", "two.bin", "zz.bin"] {
        same_file(&tree.join(name), &out.join("d").join(name));
    }
    assert!(
        !out.join("d/three.bin").exists(),
        "a deselected file was created"
    );

    let bad = download(&dir.path().join("bad"), "1,4");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("file index 4 is out of range: the torrent has 4 files (0-3)"),
        "{stderr}"
    );
    let bad = download(&dir.path().join("bad2"), "1-x");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a file index"));
}

/// `serve`'s own JSON API: a torrent's files with their priorities, setting them, and the
/// download order; all kept across a restart.
#[test]
fn serve_api_sets_file_priorities_and_order_and_keeps_them() {
    use common::serve::{torrent, Serve};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let (t, hash) = torrent(dir.path(), "p.bin", 200_000, 3);
    let serve = Serve::start(dir.path(), &[]);
    let (status, v) = serve.json("POST", "/torrents", &std::fs::read(&t).unwrap());
    assert_eq!(status, 201, "{v}");
    let path = format!("/torrents/{hash}");
    let (status, v) = serve.json("GET", &format!("{path}/files"), b"");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v[0]["priority"].clone(), v[0]["wanted"].clone()),
        (json!("normal"), json!(true))
    );
    let (status, v) = serve.json(
        "PUT",
        &format!("{path}/files"),
        br#"{"priorities": ["high"]}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["priority"], "high");
    for bad in [
        &br#"{"priorities": ["urgent"]}"#[..],
        br#"{"priorities": ["high", "skip"]}"#,
        b"{}",
    ] {
        let (status, v) = serve.json("PUT", &format!("{path}/files"), bad);
        assert_eq!(status, 400, "{v}");
    }
    let (status, v) = serve.json("PUT", &format!("{path}/order"), br#"{"sequential": true}"#);
    assert_eq!(
        (status, v),
        (
            200,
            json!({"sequential": true, "first_last_piece_priority": false})
        )
    );
    let (status, _) = serve.json("PUT", &format!("{path}/order"), br#"{"sequential": 1}"#);
    assert_eq!(status, 400);
    let (status, _) = serve.json(
        "PUT",
        &format!("{path}/order"),
        br#"{"first_last_piece_priority": true}"#,
    );
    assert_eq!(status, 200);
    assert!(serve.stop().success());

    let serve = Serve::start(dir.path(), &[]);
    let (_, v) = serve.json("GET", &path, b"");
    assert_eq!(
        (
            v["sequential"].clone(),
            v["first_last_piece_priority"].clone()
        ),
        (json!(true), json!(true)),
        "{v}"
    );
    let (_, v) = serve.json("GET", &format!("{path}/files"), b"");
    assert_eq!(v[0]["priority"], "high", "{v}");
    assert!(serve.stop().success());
}
