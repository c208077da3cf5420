//! `ringtorrent::Client` as a library, without the binary: two clients on loopback, events as
//! they happen, handles (status, files, peers, pause, resume, limits, remove), the state
//! folder across a restart, magnet links, typed errors, shutdown; and `examples/download.rs`
//! run against a seeding client.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ringtorrent::client::{
    AddTorrent, Client, ClientConfig, ClientError, ClientEvent, DataSource, Events, TorrentState,
};

/// Every wait here has this bound; the transfers are a few MiB on loopback.
const LIMIT: Duration = Duration::from_secs(60);

fn config(data: &Path) -> ClientConfig {
    common::client_config(data, 2)
}

/// A payload of `len` bytes in `dir/name` and its torrent's bytes.
fn make(dir: &Path, name: &str, len: usize) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    common::write_payload(&dir.join(name), len, 7);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join(name),
        piece_len: Some(64 * 1024),
        ..Default::default()
    };
    ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

/// A client seeding `torrent` from `dir`.
fn seeder(dir: &Path, torrent: &[u8]) -> Client {
    common::seeding_client(dir, torrent, 2)
}

/// The events until `done` says stop (or the bound passes, which fails the test).
fn until(events: &Events, done: impl FnMut(&ClientEvent) -> bool) -> Vec<ClientEvent> {
    common::events_until(events, LIMIT, done)
}

#[test]
fn a_download_reports_every_step_as_it_happens() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"), "file.bin", 1_000_000);
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    let leech = Client::start(config(&tmp.path().join("leech"))).unwrap();
    let events = leech.subscribe();
    let t = leech
        .add(AddTorrent::bytes(torrent.clone()).peers(seed.listen_addr()))
        .unwrap();
    let seen = until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    let hash = t.info_hash();
    assert!(
        matches!(&seen[0], ClientEvent::Added { info_hash, source: DataSource::New, pieces: 16, .. } if *info_hash == hash),
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .any(|e| matches!(e, ClientEvent::PeerConnected { addr, .. } if Some(*addr) == seed.listen_addr())));
    let mut pieces: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::PieceVerified { piece, .. } => Some(*piece),
            _ => None,
        })
        .collect();
    pieces.sort();
    assert_eq!(pieces, (0..16).collect::<Vec<_>>());
    let status = t.status().unwrap();
    assert_eq!(
        (status.state, status.bytes_left, status.pieces_have),
        (TorrentState::Seeding, 0, 16)
    );
    assert_eq!(status.downloaded, 1_000_000);
    let files = t.files().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].done, files[0].length), (1_000_000, 1_000_000));
    let m = leech.metrics();
    assert_eq!((m.pieces_verified, m.downloaded), (16, 1_000_000));
    assert_eq!(m.loops.len(), 2);
    leech.shutdown();
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("leech"));
    // Subscriptions end with the client.
    assert!(events.recv_timeout(Duration::from_secs(1)).is_none());
    assert!(events.is_closed());
}

#[test]
fn a_downloaded_torrent_paused_and_resumed_keeps_its_pieces() {
    // Its files were created empty when it was added; by the time it resumes they hold
    // everything, and resuming must not take them for new (the soak found it starting over).
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"), "file.bin", 1_000_000);
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    // With a state folder, so a stopped torrent's pieces are in its resume data.
    let leech = Client::start(ClientConfig {
        state_dir: Some(tmp.path().join("state")),
        ..config(&tmp.path().join("leech"))
    })
    .unwrap();
    let events = leech.subscribe();
    let t = leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    // No peer to fetch anything again from.
    seed.shutdown();
    t.pause().unwrap();
    // Stopped, its files still show what it holds (the web UI and the WebAPI read this).
    let files = t.files().unwrap();
    assert_eq!((files[0].done, files[0].length), (1_000_000, 1_000_000));
    assert_eq!(t.status().unwrap().pieces_have, 16);
    t.resume().unwrap();
    let status = t.status().unwrap();
    assert_eq!(
        (status.state, status.pieces_have),
        (TorrentState::Seeding, 16)
    );
    leech.shutdown();
}

/// Whether this process holds `path` open or mapped (deleted files included).
fn holds(path: &Path) -> bool {
    let name = path.to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().filter_map(|e| {
        std::fs::read_link(e.ok()?.path())
            .ok()
            .map(|l| l.to_string_lossy().into_owned())
    });
    maps.lines().any(|l| l.contains(&name)) || fds.into_iter().any(|l| l.starts_with(&name))
}

#[test]
fn pause_resume_limits_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("data"), "file.bin", 300_000);
    let client = Client::start(ClientConfig {
        state_dir: Some(tmp.path().join("state")),
        ..config(&tmp.path().join("data"))
    })
    .unwrap();
    let events = client.subscribe();
    let t = client.add(AddTorrent::bytes(torrent.clone())).unwrap();
    // The data was there: checked, complete.
    match events.try_recv() {
        Some(ClientEvent::Added {
            verified: 5,
            source: DataSource::Checked { .. },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    t.pause().unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Paused);
    assert!(matches!(
        events.try_recv(),
        Some(ClientEvent::Paused { .. })
    ));
    // Pausing saved resume data.
    let resume = ringtorrent::storage::resume_path(&tmp.path().join("state/resume"), t.info_hash());
    assert!(resume.exists());
    t.resume().unwrap();
    assert!(matches!(
        events.try_recv(),
        Some(ClientEvent::Resumed { .. })
    ));
    let s = t.status().unwrap();
    assert_eq!((s.state, s.pieces_have), (TorrentState::Seeding, 5));
    t.set_limits(Some(1 << 20), None).unwrap();
    assert_eq!(t.status().unwrap().upload_limit, Some(1 << 20));
    assert!(matches!(
        t.set_limits(Some(0), None),
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        client.add(AddTorrent::bytes(torrent.clone())),
        Err(ClientError::AlreadyAdded(h)) if h == t.info_hash()
    ));
    assert!(matches!(
        client.add(AddTorrent::bytes(b"d4:infoi1ee".to_vec())),
        Err(ClientError::InvalidTorrent(_))
    ));
    assert!(matches!(
        client.add(AddTorrent::magnet("magnet:?xt=urn:btih:zz")),
        Err(ClientError::InvalidMagnet(_))
    ));
    let file = tmp.path().join("data/file.bin");
    assert!(holds(&file), "a seeding torrent has its file open");
    t.remove(true).unwrap();
    assert!(!file.exists());
    // Deleted means gone: no descriptor or mapping keeps the file (and its disk space).
    assert!(!holds(&file), "the removed torrent's file is still open");
    assert!(!resume.exists());
    assert!(matches!(t.status(), Err(ClientError::UnknownTorrent(_))));
    assert!(client.get(t.info_hash()).is_none());
    let again = client.torrents();
    client.shutdown();
    assert!(again.is_empty());
}

#[test]
fn a_state_folder_brings_torrents_back_without_a_check() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("data"), "file.bin", 400_000);
    let state = tmp.path().join("state");
    let remembering = || ClientConfig {
        state_dir: Some(state.clone()),
        remember_torrents: true,
        ..config(&tmp.path().join("data"))
    };
    let first = Client::start(remembering()).unwrap();
    let t = first
        .add(AddTorrent::bytes(torrent).label("test").paused(false))
        .unwrap();
    let hash = t.info_hash();
    t.set_limits(None, Some(123_456)).unwrap();
    first.shutdown();
    // The handle outlives its client and says so.
    assert!(matches!(t.status(), Err(ClientError::ShutDown)));

    let second = Client::start(remembering()).unwrap();
    let events = second.subscribe();
    let t = second.get(hash).expect("the torrent came back");
    let s = t.status().unwrap();
    assert_eq!(
        (s.state, s.pieces_have, s.source.as_str(), s.download_limit),
        (TorrentState::Seeding, 7, "test", Some(123_456))
    );
    second.shutdown();
    // It was added before the subscription: no event for it.
    assert!(events.try_recv().is_none());

    // Without remember_torrents, the state folder keeps resume data only: the same torrent
    // added again is resumed, not checked.
    let third = Client::start(ClientConfig {
        state_dir: Some(state.clone()),
        ..config(&tmp.path().join("data"))
    })
    .unwrap();
    assert!(third.torrents().is_empty());
    let events = third.subscribe();
    let bytes = std::fs::read(state.join(format!("torrents/{}.torrent", hash.to_hex()))).unwrap();
    third.add(AddTorrent::bytes(bytes)).unwrap();
    assert!(matches!(
        events.try_recv(),
        Some(ClientEvent::Added {
            source: DataSource::Resumed,
            verified: 7,
            ..
        })
    ));
    third.shutdown();
}

/// A batch of adds opens its torrents on the pool's threads at once; each still gets its own
/// result, in the order given, and `Added` comes in that order; the queue is kept once for
/// the batch and comes back in the same order.
#[test]
fn a_batch_keeps_each_torrents_result_and_order() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let torrents: Vec<Vec<u8>> = (0..3)
        .map(|i| make(&data, &format!("f{i}.bin"), 100_000 + i * 1000))
        .collect();
    let state = tmp.path().join("state");
    let remembering = || ClientConfig {
        state_dir: Some(state.clone()),
        remember_torrents: true,
        ..config(&data)
    };
    let client = Client::start(remembering()).unwrap();
    let events = client.subscribe();
    let results = client.add_many(vec![
        AddTorrent::bytes(torrents[0].clone()),
        AddTorrent::bytes(b"not a torrent".to_vec()),
        AddTorrent::bytes(torrents[1].clone()),
        AddTorrent::bytes(torrents[0].clone()),
        AddTorrent::file(tmp.path().join("no such file.torrent")),
        AddTorrent::bytes(torrents[2].clone()),
    ]);
    assert_eq!(results.len(), 6);
    let ok: Vec<_> = [0, 2, 5]
        .iter()
        .map(|&i| {
            results[i]
                .as_ref()
                .expect("a good torrent is added")
                .info_hash()
        })
        .collect();
    assert!(matches!(results[1], Err(ClientError::InvalidTorrent(_))));
    assert!(matches!(results[3], Err(ClientError::AlreadyAdded(h)) if h == ok[0]));
    assert!(matches!(results[4], Err(ClientError::Io { .. })));
    let added: Vec<_> = until(
        &events,
        |e| matches!(e, ClientEvent::Added { info_hash, .. } if *info_hash == ok[2]),
    )
    .into_iter()
    .filter_map(|e| match e {
        ClientEvent::Added {
            info_hash,
            source: DataSource::Checked { .. },
            verified,
            ..
        } => Some((info_hash, verified)),
        _ => None,
    })
    .collect();
    assert_eq!(added, ok.iter().map(|h| (*h, 2)).collect::<Vec<_>>());
    let queue = |dir: &Path| -> Vec<String> {
        serde_json::from_slice(&std::fs::read(dir.join("queue.json")).unwrap()).unwrap()
    };
    let hex: Vec<String> = ok.iter().map(|h| h.to_hex()).collect();
    assert_eq!(queue(&state), hex);
    client.shutdown();
    // Back from the state folder: every one, resumed, the queue as it was.
    let again = Client::start(remembering()).unwrap();
    for h in &ok {
        let s = again.get(*h).expect("it came back").status().unwrap();
        assert_eq!((s.state, s.pieces_have), (TorrentState::Seeding, 2));
    }
    assert_eq!(again.torrents().len(), 3);
    again.shutdown();
    assert_eq!(queue(&state), hex);
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn added_and_completion_times_survive_a_restart() {
    // Seedbox tools age torrents by them: they must not reset when the client restarts.
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"), "file.bin", 1_000_000);
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    let state = tmp.path().join("state");
    let remembering = || ClientConfig {
        state_dir: Some(state.clone()),
        remember_torrents: true,
        ..config(&tmp.path().join("leech"))
    };
    let before = unix_now();
    let first = Client::start(remembering()).unwrap();
    let events = first.subscribe();
    let t = first
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    let hash = t.info_hash();
    let added = t.status().unwrap().added_on;
    assert!(added >= before && added <= unix_now(), "{added}");
    until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    // The completion is recorded by the housekeeping thread, just after the event.
    let deadline = Instant::now() + LIMIT;
    let completed = loop {
        if let Some(c) = t.status().unwrap().completed_on {
            break c;
        }
        assert!(Instant::now() < deadline, "no completion time");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(added <= completed && completed <= unix_now());
    seed.shutdown();
    first.shutdown();
    // A second later, a reset would show.
    std::thread::sleep(Duration::from_millis(1100));
    let second = Client::start(remembering()).unwrap();
    let s = second.get(hash).expect("remembered").status().unwrap();
    assert_eq!(s.state, TorrentState::Seeding);
    assert_eq!((s.added_on, s.completed_on), (added, Some(completed)));
    second.shutdown();

    // A torrent added with all its data is complete when added.
    let third = Client::start(config(&tmp.path().join("seed"))).unwrap();
    let bytes = std::fs::read(state.join(format!("torrents/{}.torrent", hash.to_hex()))).unwrap();
    let s = third
        .add(AddTorrent::bytes(bytes))
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(s.completed_on, Some(s.added_on));
    third.shutdown();
}

#[test]
fn a_magnet_link_fetches_its_metadata_and_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"), "file.bin", 500_000);
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    let hash = ringtorrent::metainfo::Torrent::from_bytes(&torrent)
        .unwrap()
        .info
        .info_hash();
    let leech = Client::start(config(&tmp.path().join("leech"))).unwrap();
    let events = leech.subscribe();
    let uri = format!(
        "magnet:?xt=urn:btih:{}&dn=file.bin&x.pe={}",
        hash.to_hex(),
        seed.listen_addr().unwrap()
    );
    let t = leech.add(AddTorrent::magnet(uri)).unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Metadata);
    assert_eq!(t.status().unwrap().name, "file.bin");
    let seen = until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    let order: Vec<&str> = seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Added { .. } => Some("added"),
            ClientEvent::MetadataReceived { .. } => Some("metadata"),
            ClientEvent::Started { .. } => Some("started"),
            ClientEvent::Completed { .. } => Some("completed"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["added", "metadata", "started", "completed"]);
    assert_eq!(t.info().unwrap().unwrap().info_hash(), hash);
    leech.shutdown();
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("leech"));
}

#[test]
fn a_metadata_only_magnet_opens_no_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"), "file.bin", 200_000);
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    let hash = ringtorrent::metainfo::Torrent::from_bytes(&torrent)
        .unwrap()
        .info
        .info_hash();
    let fetch = Client::start(ClientConfig {
        listen: None,
        ..config(&tmp.path().join("nothing"))
    })
    .unwrap();
    let events = fetch.subscribe();
    let uri = format!("magnet:?xt=urn:btih:{}", hash.to_hex());
    fetch
        .add(
            AddTorrent::magnet(uri)
                .peers(seed.listen_addr())
                .metadata_only(),
        )
        .unwrap();
    let seen = until(&events, |e| {
        matches!(e, ClientEvent::MetadataReceived { .. })
    });
    let ClientEvent::MetadataReceived { info, .. } = seen.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(info.info_hash(), hash);
    // Nothing arrives after it, and nothing was written.
    assert!(!matches!(
        events.recv_timeout(Duration::from_millis(300)),
        Some(ClientEvent::Started { .. })
    ));
    fetch.shutdown();
    seed.shutdown();
    assert_eq!(
        std::fs::read_dir(tmp.path().join("nothing"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_download_example_downloads_a_torrent() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"), "file.bin", 700_000);
    let file = tmp.path().join("file.torrent");
    std::fs::write(&file, &torrent).unwrap();
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    // Examples are built beside the test binaries (target/<profile>/examples).
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/download");
    if !example.exists() {
        // `cargo test --test client` builds no example; build it the way a user would.
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "download"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(built.success() && example.exists(), "{}", example.display());
    }
    let out = common::run_bounded(
        std::process::Command::new(&example)
            .arg(&file)
            .arg(tmp.path().join("out"))
            .arg(seed.listen_addr().unwrap().to_string()),
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("100.0%") && stdout.contains("done"),
        "{stdout}"
    );
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("out"));
}

/// Deleting a torrent's data never leaves the data folder: a folder of the torrent replaced by
/// a symlink to a folder outside keeps what it leads to, and a symlink in a file's place is
/// removed, not its target. The folders the torrent made are still removed once empty.
#[test]
fn deleting_data_does_not_follow_a_symlink_out() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let top = data.join("top");
    for (rel, text) in [
        ("a/b/one.bin", "one"),
        ("c/two.bin", "two"),
        ("link/three.bin", "three"),
    ] {
        std::fs::create_dir_all(top.join(rel).parent().unwrap()).unwrap();
        std::fs::write(top.join(rel), text).unwrap();
    }
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: top.clone(),
        ..Default::default()
    };
    let torrent = ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes;
    let client = Client::start(config(&data)).unwrap();
    let t = client.add(AddTorrent::bytes(torrent)).unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);
    // Outside the data folder: a folder holding a file of the same name, and a file.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("three.bin"), "precious").unwrap();
    std::fs::write(outside.join("target.bin"), "precious too").unwrap();
    std::fs::remove_dir_all(top.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, top.join("link")).unwrap();
    std::fs::remove_file(top.join("c/two.bin")).unwrap();
    std::os::unix::fs::symlink(outside.join("target.bin"), top.join("c/two.bin")).unwrap();

    t.remove(true).unwrap();
    assert_eq!(
        std::fs::read_to_string(outside.join("three.bin")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("target.bin")).unwrap(),
        "precious too"
    );
    // The symlink in a file's place went; the folders the torrent made went with their files.
    assert!(std::fs::symlink_metadata(top.join("c/two.bin")).is_err());
    assert!(!top.join("a").exists());
    assert!(!top.join("c").exists());
    // The symlinked folder is left, so `top` is not empty and stays too.
    assert!(std::fs::symlink_metadata(top.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    client.shutdown();
}

/// The exported `*_total` metrics are Prometheus counters, which never go down: what a torrent
/// sent and received still counts after it is paused (out of its loop's session), resumed
/// (a fresh session torrent, counting from zero) and removed.
#[test]
fn metrics_totals_never_drop_when_torrents_pause_or_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"), "file.bin", 1_000_000);
    let seed = seeder(&tmp.path().join("seed"), &torrent);
    let leech = Client::start(config(&tmp.path().join("leech"))).unwrap();
    let events = leech.subscribe();
    let t = leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    until(&events, |e| matches!(e, ClientEvent::Completed { .. }));
    let totals = |c: &Client| {
        let m = c.metrics();
        (m.downloaded, m.uploaded, m.pieces_verified)
    };
    let exported = |c: &Client, name: &str| -> f64 {
        let page = c.metrics().to_prometheus();
        let line = page
            .lines()
            .find(|l| l.starts_with(&format!("ringtorrent_{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{page}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (down, _, verified) = totals(&leech);
    assert!(down >= 1_000_000 && verified == 16, "{down} {verified}");
    let up = seed.metrics().uploaded;
    assert!(up >= 1_000_000, "the seed sent it: {up}");

    t.pause().unwrap();
    assert_eq!(totals(&leech), (down, 0, verified), "paused: kept");
    assert_eq!(exported(&leech, "downloaded_bytes_total"), down as f64);
    t.resume().unwrap();
    assert_eq!(totals(&leech).0, down, "resumed: not counted twice");
    t.remove(false).unwrap();
    assert_eq!(totals(&leech), (down, 0, verified), "removed: kept");
    assert_eq!(exported(&leech, "pieces_verified_total"), verified as f64);

    let s = seed.torrents().pop().unwrap();
    s.pause().unwrap();
    assert!(seed.metrics().uploaded >= up, "the seed's uploads, paused");
    s.remove(false).unwrap();
    assert!(seed.metrics().uploaded >= up, "the seed's uploads, removed");
    assert_eq!(
        exported(&seed, "uploaded_bytes_total"),
        seed.metrics().uploaded as f64
    );
    leech.shutdown();
    seed.shutdown();
}

/// A peer that dials while a torrent's data is being checked is answered when the check
/// ends, instead of being refused as unknown and coming back only after its redial back-off
/// (what made a leecher started beside a checking seed wait 5 s).
#[test]
fn a_peer_that_dials_during_a_check_is_answered_when_it_ends() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seed");
    // Large enough that its check outlasts a connection and a handshake on loopback.
    let torrent = make(&dir, "big.bin", 128 << 20);
    let seed = seeder(&dir, &torrent);
    let handle = seed.torrents().pop().unwrap();
    let hash = handle.info_hash();
    let addr = seed.listen_addr().unwrap();
    let mut handshake = vec![19u8];
    handshake.extend_from_slice(b"BitTorrent protocol");
    handshake.extend_from_slice(&[0; 8]);
    handshake.extend_from_slice(hash.as_bytes());
    handshake.extend_from_slice(b"-XX0001-checkwaiter0");
    // The handshake must arrive while the check runs; on a loaded machine the check may
    // end first, so a few tries.
    let mut during = None;
    for _ in 0..5 {
        handle.start_recheck().unwrap();
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        peer.write_all(&handshake).unwrap();
        if handle.status().unwrap().state == TorrentState::Checking {
            during = Some(peer);
            break;
        }
    }
    let mut peer = during.expect("a handshake sent while the data was being checked");
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reply = [0u8; 68];
    if let Err(e) = peer.read_exact(&mut reply) {
        panic!(
            "not answered after the check: {e}; closes {:?}, held {}",
            seed.metrics().closes,
            seed.metrics().held_during_check
        );
    }
    assert_eq!(
        &reply[28..48],
        hash.as_bytes(),
        "our handshake, for the torrent"
    );
    assert_eq!(handle.status().unwrap().state, TorrentState::Seeding);
    let m = seed.metrics();
    assert_eq!(m.held_during_check, 1, "held, then answered");
    assert_eq!(m.closes.get("unknown_torrent"), None);
    seed.shutdown();
}
