//! Moving a torrent's data (`TorrentHandle::move_storage`, qBittorrent's `setLocation`): a
//! seed keeps seeding from its new folder, a move across file systems copies safely and
//! keeps resume data valid (no check), and a move interrupted half-way is finished when the
//! client starts again, nothing lost: from a half-moved state built by hand, and from a real
//! `serve` killed with SIGKILL in the middle of a 256 MiB copy across file systems.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ringtorrent::client::{
    AddTorrent, Client, ClientConfig, ClientEvent, TorrentHandle, TorrentState,
};

const LIMIT: Duration = Duration::from_secs(60);

fn config(data: &Path) -> ClientConfig {
    common::client_config(data, 1)
}

/// A torrent of the folder `dir/pack` (its files written first by the caller).
fn torrent_of(dir: &Path) -> Vec<u8> {
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join("pack"),
        piece_len: Some(256 * 1024),
        ..Default::default()
    };
    ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_moved(t: &TorrentHandle) {
    wait_for("the move to end", || {
        t.status().unwrap().state != TorrentState::Moving
    });
}

/// Every file below `root`, relative, with its bytes.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn a_moved_seed_keeps_seeding_from_its_new_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_payload(&data.join("pack/a.bin"), 3 << 20, 1);
    common::write_payload(&data.join("pack/sub/b.bin"), 1_500_000, 2);
    common::write_payload(&data.join("pack/sub/c.txt"), 1000, 3);
    let torrent = torrent_of(&data);
    let before = snapshot(&data);

    let seed = Client::start(ClientConfig {
        state_dir: Some(tmp.path().join("state")),
        ..config(&data)
    })
    .unwrap();
    let t = seed.add(AddTorrent::bytes(torrent.clone())).unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);

    // Refused: empty, and inside the folder it is in.
    assert!(t.move_storage("").is_err());
    assert!(t.move_storage(data.join("pack/inner")).is_err());
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);

    let new = tmp.path().join("elsewhere/new");
    t.move_storage(&new).unwrap();
    wait_moved(&t);
    let st = t.status().unwrap();
    assert_eq!(st.state, TorrentState::Seeding, "{st:?}");
    assert_eq!(st.pieces_have, st.pieces);
    assert_eq!(st.save_dir, std::fs::canonicalize(&new).unwrap());
    assert_eq!(st.moving, None);
    assert_eq!(snapshot(&new), before, "every file moved, byte for byte");
    assert!(
        !data.join("pack").exists(),
        "the old folder is left empty and removed"
    );

    // A second client downloads it from the new place.
    let leech_dir = tmp.path().join("leech");
    let leech = Client::start(config(&leech_dir)).unwrap();
    let events = leech.subscribe();
    leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events
            .recv_timeout(left)
            .expect("the download completes in time");
        if matches!(e, ClientEvent::Completed { .. }) {
            break;
        }
    }
    leech.shutdown();
    seed.shutdown();
    assert_eq!(
        snapshot(&leech_dir),
        before,
        "downloaded byte-exact from the new folder"
    );
}

#[test]
fn a_move_across_file_systems_copies_and_keeps_resume_data() {
    // /dev/shm is a tmpfs; cargo's temporary folder for tests (under target/) is on the
    // disk that holds the build.
    let shm = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let dest_root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (a, b) = (
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(dest_root.path()).unwrap().dev(),
    );
    assert_ne!(
        a, b,
        "/dev/shm and target/ must be two file systems for this test"
    );
    let data = shm.path().join("data");
    common::write_payload(&data.join("pack/big.bin"), 48 << 20, 4);
    common::write_payload(&data.join("pack/sub/small.bin"), 100_000, 5);
    let torrent = torrent_of(&data);
    let before = snapshot(&data);

    // Resume data lives in the state folder.
    let client = Client::start(ClientConfig {
        state_dir: Some(dest_root.path().join("state")),
        ..config(&data)
    })
    .unwrap();
    let t = client.add(AddTorrent::bytes(torrent)).unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);

    // One byte changed behind the client's back, its file's modification time put back:
    // resume data still matches the file stamps, so if the moved torrent has every piece,
    // nothing checked the data (a check would find this piece bad).
    let big = data.join("pack/big.bin");
    let mtime = std::fs::metadata(&big).unwrap().modified().unwrap();
    t.pause().unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
        f.seek(SeekFrom::Start(12345)).unwrap();
        f.write_all(&[!before[0].1[12345]]).unwrap();
        f.set_modified(mtime).unwrap();
    }
    t.resume().unwrap();
    let st = t.status().unwrap();
    assert_eq!(st.pieces_have, st.pieces, "resumed on its resume data");
    let after_tamper = snapshot(&data);

    let new = dest_root.path().join("moved");
    t.move_storage(&new).unwrap();
    let st = t.status().unwrap();
    assert_eq!(
        st.state,
        TorrentState::Moving,
        "48 MiB copied across file systems takes a while"
    );
    assert!(
        st.moving.is_some_and(|f| (0.0..=1.0).contains(&f)),
        "{:?}",
        st.moving
    );
    let mut seen = 0.0f64;
    wait_for("the move to end", || {
        let st = t.status().unwrap();
        seen = seen.max(st.moving.unwrap_or(0.0));
        st.state != TorrentState::Moving
    });
    let st = t.status().unwrap();
    assert_eq!(st.state, TorrentState::Seeding, "{st:?}");
    assert_eq!(
        st.pieces_have, st.pieces,
        "resume data kept: no check after the move"
    );
    assert_eq!(st.save_dir, std::fs::canonicalize(&new).unwrap());
    assert_eq!(snapshot(&new), after_tamper, "copied byte for byte");
    assert!(
        !data.join("pack").exists(),
        "the source is deleted after the copy"
    );
    let leftovers: Vec<_> = snapshot(&new)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with(".rtmove"))
        .collect();
    assert!(leftovers.is_empty());
    eprintln!(
        "cross-fs: /dev/shm (st_dev {a}) -> {} (st_dev {b}); progress seen up to {seen:.2}",
        dest_root.path().display()
    );
    client.shutdown();
}

#[test]
fn a_move_interrupted_half_way_is_finished_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let state = tmp.path().join("state");
    common::write_payload(&data.join("pack/one.bin"), 700_000, 6);
    common::write_payload(&data.join("pack/sub/two.bin"), 900_000, 7);
    common::write_payload(&data.join("pack/sub/three.bin"), 500_000, 8);
    let torrent = torrent_of(&data);
    let before = snapshot(&data);
    let cfg = || ClientConfig {
        state_dir: Some(state.clone()),
        remember_torrents: true,
        ..config(&data)
    };
    let client = Client::start(cfg()).unwrap();
    let t = client.add(AddTorrent::bytes(torrent)).unwrap();
    let hash = t.info_hash();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);
    client.shutdown();

    // The state a crash in the middle of a move across file systems leaves: the intent
    // kept, one file moved, one copied into place but its source not yet deleted, one
    // still at the source with a half-written copy beside its destination.
    let new = std::fs::canonicalize(tmp.path()).unwrap().join("new");
    let from = std::fs::canonicalize(&data).unwrap();
    let settings = state.join(format!("torrents/{}.json", hash.to_hex()));
    let mut s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    s["moving"] = serde_json::json!({ "from": from, "to": new });
    std::fs::write(&settings, serde_json::to_vec(&s).unwrap()).unwrap();
    std::fs::create_dir_all(new.join("pack/sub")).unwrap();
    std::fs::rename(data.join("pack/one.bin"), new.join("pack/one.bin")).unwrap();
    let two = data.join("pack/sub/two.bin");
    std::fs::copy(&two, new.join("pack/sub/two.bin")).unwrap();
    let mtime = std::fs::metadata(&two).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(new.join("pack/sub/two.bin"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::write(new.join("pack/sub/three.bin.rtmove"), vec![0u8; 1234]).unwrap();

    let client = Client::start(cfg()).unwrap();
    let t = client.get(hash).expect("remembered");
    wait_for("it to seed", || {
        t.status().unwrap().state == TorrentState::Seeding
    });
    let st = t.status().unwrap();
    assert_eq!(st.pieces_have, st.pieces);
    assert_eq!(st.save_dir, new);
    assert_eq!(
        snapshot(&new),
        before,
        "nothing lost, no temporary file left"
    );
    assert!(!data.join("pack").exists());
    client.shutdown();
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    assert!(s["moving"].is_null(), "the intent is cleared: {s}");
    assert_eq!(s["save_dir"], serde_json::json!(new));
}

#[test]
fn a_move_that_cannot_finish_is_rolled_back_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let state = tmp.path().join("state");
    common::write_payload(&data.join("pack/one.bin"), 600_000, 9);
    common::write_payload(&data.join("pack/two.bin"), 300_000, 10);
    let torrent = torrent_of(&data);
    let before = snapshot(&data);
    let cfg = || ClientConfig {
        state_dir: Some(state.clone()),
        remember_torrents: true,
        ..config(&data)
    };
    let client = Client::start(cfg()).unwrap();
    let hash = client.add(AddTorrent::bytes(torrent)).unwrap().info_hash();
    client.shutdown();

    // A crash right after the intent was kept, and the destination gone since (a disk
    // unmounted: here a file stands where its folder would be created).
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, b"in the way").unwrap();
    let settings = state.join(format!("torrents/{}.json", hash.to_hex()));
    let mut s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    s["moving"] = serde_json::json!({ "from": data, "to": blocker.join("new") });
    std::fs::write(&settings, serde_json::to_vec(&s).unwrap()).unwrap();

    let client = Client::start(cfg()).unwrap();
    let t = client.get(hash).expect("remembered");
    wait_for("it to seed", || {
        t.status().unwrap().state == TorrentState::Seeding
    });
    let st = t.status().unwrap();
    assert_eq!(st.pieces_have, st.pieces);
    assert_eq!(st.save_dir, data);
    assert_eq!(snapshot(&data), before, "the data stays where it was");
    client.shutdown();
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    assert!(s["moving"].is_null(), "{s}");
}

#[test]
fn the_webapi_moves_with_qbittorrents_statuses() {
    use ringtorrent::api::qbt::{torrents, Params, WebApi, WebSettings};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::write_payload(&data.join("pack/a.bin"), 300_000, 11);
    let torrent = torrent_of(&data);
    let client = Client::start(config(&data)).unwrap();
    let t = client.add(AddTorrent::bytes(torrent)).unwrap();
    let hash = t.info_hash().to_hex();
    let auth = ringtorrent::api::auth::Auth::new(ringtorrent::api::auth::AuthConfig {
        session_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    let api = WebApi::new(std::sync::Arc::new(auth), WebSettings::default());
    let call = |name: &str, pairs: &[(&str, &str)]| {
        torrents::handle(&api, &client, name, &Params::from_pairs(pairs), true)
            .expect("served")
            .status
    };
    assert_eq!(
        call("setLocation", &[("hashes", &hash), ("location", " ")]),
        400
    );
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, b"a file").unwrap();
    let under_file = blocker.join("x");
    assert_eq!(
        call(
            "setLocation",
            &[
                ("hashes", &hash),
                ("location", under_file.to_str().unwrap())
            ]
        ),
        409
    );
    let new = tmp.path().join("new");
    assert_eq!(
        call(
            "setLocation",
            &[("hashes", &hash), ("location", new.to_str().unwrap())]
        ),
        200
    );
    wait_moved(&t);
    assert_eq!(
        t.status().unwrap().save_dir,
        std::fs::canonicalize(&new).unwrap()
    );
    assert!(new.join("pack/a.bin").exists());
    assert_eq!(call("reannounce", &[("hashes", &hash)]), 200);
    assert_eq!(call("reannounce", &[("hashes", "all")]), 200);
    client.shutdown();
}

/// `n` MiB of data that differs in every MiB: one generated MiB, each copy stamped with
/// `seed` and its index (`write_payload` of 256 MiB takes seconds in a debug build).
fn big_payload(n: usize, seed: u64) -> Vec<u8> {
    let mut block = Vec::new();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    common::write_payload(tmp.path(), 1 << 20, seed);
    block.extend_from_slice(&std::fs::read(tmp.path()).unwrap());
    let mut out = Vec::with_capacity(n << 20);
    for i in 0..n {
        let at = out.len();
        out.extend_from_slice(&block);
        out[at..at + 16].copy_from_slice(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat());
    }
    out
}

/// The real thing: `serve` killed with SIGKILL while it copies a torrent's 256 MiB across
/// file systems (/dev/shm to cargo's temporary folder), then started again on the same state
/// folder. The move is finished or rolled back: every file whole and byte-exact in exactly
/// one of the two folders, the torrent pointing there and seeding every piece, no `.rtmove`
/// temporary left.
#[test]
fn serve_killed_during_a_move_finishes_or_rolls_it_back_at_the_next_start() {
    use common::serve::Serve;
    let started = Instant::now();
    let shm = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let home = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(home.path()).unwrap().dev(),
        "/dev/shm and target/ must be two file systems for this test"
    );
    let data = shm.path().join("data");
    // Four files of 64 MiB: each is copied, synced, renamed, then its source unlinked, so
    // the copy runs long enough to be caught in the middle.
    for (i, name) in ["a.bin", "b.bin", "sub/c.bin", "sub/d.bin"]
        .iter()
        .enumerate()
    {
        let path = data.join("pack").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, big_payload(64, 20 + i as u64)).unwrap();
    }
    let torrent = {
        let opts = ringtorrent::metainfo::create::CreateOptions {
            path: data.join("pack"),
            piece_len: Some(1 << 20),
            ..Default::default()
        };
        ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
            .unwrap()
            .bytes
    };
    let before = snapshot(&data);
    let from = std::fs::canonicalize(&data).unwrap();
    let to = std::fs::canonicalize(home.path()).unwrap().join("moved");
    eprintln!("payload and torrent ready after {:?}", started.elapsed());

    let serve = Serve::start_in(home.path(), &data, &[]);
    let (status, v) = serve.json("POST", "/torrents", &torrent);
    assert_eq!(status, 201, "{v}\n{}", serve.log());
    let hash = v["info_hash"].as_str().expect("its info hash").to_owned();
    let one = format!("/torrents/{hash}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while serve.json("GET", &one, b"").1["state"] != "seeding" {
        assert!(Instant::now() < deadline, "not seeding: {}", serve.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("seeding after {:?}", started.elapsed());

    let body = serde_json::json!({ "location": to }).to_string();
    let (status, v) = serve.json("POST", &format!("{one}/move"), body.as_bytes());
    assert_eq!(status, 200, "{v}");
    // Caught in the middle of the copy, past its first file (so some files are in the new
    // folder, one is half copied, the rest still in the old one), then killed without
    // warning.
    let deadline = Instant::now() + Duration::from_secs(20);
    let fraction = loop {
        let v = serve.json("GET", &one, b"").1;
        let f = v["moving"].as_f64().unwrap_or(0.0);
        if v["state"] == "moving" && f > 0.3 && f < 1.0 {
            break f;
        }
        assert_eq!(
            v["state"], "moving",
            "the move ended before it was caught ({v}): make it longer"
        );
        assert!(Instant::now() < deadline, "never moving: {v}");
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut serve = serve;
    serve.child.kill().unwrap(); // SIGKILL, to its PID
    let status = serve.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let leftover = |root: &Path| {
        snapshot(root)
            .into_iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".rtmove"))
    };
    // Split between the folders: the first file moved (its source unlinked), the others not.
    assert!(to.join("pack/a.bin").exists() && !from.join("pack/a.bin").exists());
    assert!(from.join("pack/sub/d.bin").exists());
    eprintln!(
        "killed at {:.0}% after {:?}; a temporary copy {}",
        fraction * 100.0,
        started.elapsed(),
        if leftover(&to) { "left" } else { "not left" }
    );
    drop(serve);

    let serve = Serve::start_in(home.path(), &data, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = serve.json("GET", &one, b"").1;
        if v["state"] == "seeding" && v["pieces_have"] == v["pieces"] {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "not seeding: {v}\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let at = PathBuf::from(v["save_dir"].as_str().unwrap());
    let other = if at == to {
        &from
    } else {
        assert_eq!(at, from, "{v}");
        &to
    };
    assert_eq!(
        snapshot(&at),
        before,
        "whole and byte-exact in {}",
        at.display()
    );
    assert!(
        !other.exists() || snapshot(other).is_empty(),
        "nothing of it left in {}: {:?}",
        other.display(),
        snapshot(other).iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert!(!leftover(&at), "no temporary left");
    eprintln!(
        "after the restart: seeding {} pieces from {} ({}), {:?} in all",
        v["pieces"],
        at.display(),
        if at == to { "finished" } else { "rolled back" },
        started.elapsed()
    );
    assert!(serve.stop().success());
}
