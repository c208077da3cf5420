//! A restart and an add of several of `add_many`'s chunks (256 torrents each), which the
//! hashing threads read and open while the control thread registers. What that could break:
//! a torrent lost or counted twice at a chunk's edge, one damaged torrent taking others
//! with it, or a torrent visible before it is whole. A restart with torrents damaged in
//! different ways, and an add watched from another thread, check each.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ringtorrent::client::{AddTorrent, Client, ClientConfig, TorrentState};
use ringtorrent::core::InfoHash;

/// More than two of `add_many`'s chunks (256), so the batch crosses chunk edges.
const COUNT: usize = 600;
const LEN: usize = 16 * 1024;

fn config(data: &Path, state: &Path) -> ClientConfig {
    ClientConfig {
        state_dir: Some(state.to_path_buf()),
        remember_torrents: true,
        ..common::client_config(data, 2)
    }
}

/// `COUNT` one-piece payloads `data/f<i>.bin` and their torrents (bytes, info hash).
fn make(data: &Path) -> Vec<(Vec<u8>, InfoHash)> {
    (0..COUNT)
        .map(|i| {
            let bytes = common::single_file_torrent(
                &data.join(format!("f{i}.bin")),
                LEN,
                LEN,
                i as u64 + 1,
            );
            let hash = ringtorrent::metainfo::Torrent::from_bytes(&bytes)
                .unwrap()
                .info
                .info_hash();
            (bytes, hash)
        })
        .collect()
}

#[test]
fn a_restart_with_damaged_torrents_brings_every_other_one_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, state) = (tmp.path().join("data"), tmp.path().join("state"));
    let torrents = make(&data);
    let client = Client::start(config(&data, &state)).unwrap();
    let adds = torrents
        .iter()
        .map(|(b, _)| AddTorrent::bytes(b.clone()))
        .collect();
    for r in client.add_many(adds) {
        assert_eq!(r.unwrap().status().unwrap().pieces_have, 1);
    }
    client.shutdown();

    // Damage four torrents, in different chunks, each its own way.
    let hex = |i: usize| torrents[i].1.to_hex();
    // Resume data that does not parse: checked again, and its data is fine.
    let bad_resume = 3;
    std::fs::write(
        state.join(format!("resume/{}.resume", hex(bad_resume))),
        b"d5:not a resume file",
    )
    .unwrap();
    // A payload gone: held with the reason, not recreated.
    let gone = 255;
    std::fs::remove_file(data.join(format!("f{gone}.bin"))).unwrap();
    // A payload rewritten (same size, a new modification time): checked, found wrong.
    let changed = 256;
    let path = data.join(format!("f{changed}.bin"));
    std::fs::write(&path, vec![0xEE; LEN]).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.set_modified(mtime + std::time::Duration::from_secs(2))
        .unwrap();
    drop(f);
    // The kept .torrent file itself unreadable: that torrent alone is not loaded.
    let bad_torrent = 513;
    std::fs::write(
        state.join(format!("torrents/{}.torrent", hex(bad_torrent))),
        b"d4:infoi3ee",
    )
    .unwrap();

    let client = Client::start(config(&data, &state)).unwrap();
    let listed = client.torrents();
    assert_eq!(
        listed.len(),
        COUNT - 1,
        "every torrent but the unreadable one"
    );
    let mut seen = std::collections::HashSet::new();
    for t in &listed {
        assert!(seen.insert(t.info_hash()), "{} listed twice", t.info_hash());
    }
    for (i, (_, hash)) in torrents.iter().enumerate() {
        let t = client.get(*hash);
        if i == bad_torrent {
            assert!(t.is_none(), "the unreadable torrent is not loaded");
            continue;
        }
        let s = t.expect("loaded").status().unwrap();
        match i {
            _ if i == gone => {
                assert_eq!(s.pieces_have, 0);
                assert_eq!(s.state, TorrentState::Error, "held: {s:?}");
                assert!(
                    s.error.as_deref().is_some_and(|e| e.contains("missing")),
                    "{s:?}"
                );
            }
            _ if i == changed => assert_eq!(s.pieces_have, 0, "checked, not trusted"),
            _ => {
                assert_eq!(s.pieces_have, 1, "torrent {i}");
                assert_eq!(s.state, TorrentState::Seeding, "torrent {i}");
            }
        }
    }
    // The torrent whose resume data did not parse has its piece: found by a check.
    client.shutdown();
}

#[test]
fn another_thread_sees_a_torrent_only_once_it_is_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, state) = (tmp.path().join("data"), tmp.path().join("state"));
    let torrents = make(&data);
    let client = Client::start(config(&data, &state)).unwrap();
    let done = AtomicBool::new(false);
    let (looks, max_seen) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut looks, mut max_seen) = (0, 0);
            loop {
                let finished = done.load(Ordering::Acquire);
                let listed = client.torrents();
                for t in &listed {
                    // Listed means whole: its status answers, its data found, in its loop.
                    let st = t.status().expect("a listed torrent has a status");
                    assert_eq!(st.pieces_have, 1, "listed before its check ended: {st:?}");
                    assert_eq!(st.state, TorrentState::Seeding, "{st:?}");
                }
                looks += 1;
                max_seen = max_seen.max(listed.len());
                if finished {
                    return (looks, max_seen);
                }
                std::thread::yield_now();
            }
        });
        let adds = torrents
            .iter()
            .map(|(b, _)| AddTorrent::bytes(b.clone()))
            .collect();
        let results = client.add_many(adds);
        assert_eq!(results.len(), COUNT);
        assert!(results.iter().all(Result::is_ok));
        done.store(true, Ordering::Release);
        watcher.join().unwrap()
    });
    assert!(looks >= 1);
    assert_eq!(max_seen, COUNT, "the last look saw every torrent");
    client.shutdown();
}
