//! Seed mode (`AddTorrent::seed_mode`, what cross-seeding adds with qBittorrent's
//! `skip_checking`): a torrent added over data it has not checked serves at once, verifies each
//! piece the first time a peer asks for it, and on a piece that fails stops serving what it
//! has not verified and checks the whole torrent, then serves only what the check found.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ringtorrent::client::{
    AddTorrent, Client, ClientConfig, ClientEvent, DataSource, TorrentState,
};

const LIMIT: Duration = Duration::from_secs(60);
const PIECE: usize = 64 * 1024;
const LEN: usize = 16 * PIECE;

fn config(data: &Path) -> ClientConfig {
    common::client_config(data, 1)
}

/// A 16-piece payload in `dir/file.bin` and its torrent.
fn make(dir: &Path) -> Vec<u8> {
    common::single_file_torrent(&dir.join("file.bin"), LEN, PIECE, 11)
}

#[test]
fn a_seed_mode_torrent_serves_at_once_and_checks_each_piece_on_first_read() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"));
    let seed = Client::start(config(&tmp.path().join("seed"))).unwrap();
    let seed_events = seed.subscribe();
    let t = seed
        .add(AddTorrent::bytes(torrent.clone()).seed_mode())
        .unwrap();
    // No check: taken on trust, seeding at once.
    let added = common::first_event(&seed_events, LIMIT, |e| {
        matches!(e, ClientEvent::Added { .. })
    });
    assert!(
        matches!(
            added,
            ClientEvent::Added {
                source: DataSource::Trusted,
                ..
            }
        ),
        "{added:?}"
    );
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);
    assert_eq!(seed.metrics().pieces_verified, 0, "nothing hashed at add");

    let leech = Client::start(config(&tmp.path().join("leech"))).unwrap();
    let leech_events = leech.subscribe();
    leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    common::first_event(&leech_events, LIMIT, |e| {
        matches!(e, ClientEvent::Completed { .. })
    });
    // Each piece was verified once, as it was first read.
    assert_eq!(seed.metrics().pieces_verified, 16);
    assert_eq!(leech.metrics().pieces_failed, 0);
    leech.shutdown();
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("leech"));
}

#[test]
fn a_corrupt_piece_found_in_seed_mode_stops_serving_and_checks_the_torrent() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = make(&tmp.path().join("seed"));
    // Piece 3 on the seed's disk is not what the torrent says.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("seed/file.bin"))
        .unwrap();
    f.seek(SeekFrom::Start((3 * PIECE + 100) as u64)).unwrap();
    f.write_all(b"cross-seeded the wrong release").unwrap();
    drop(f);

    let seed = Client::start(config(&tmp.path().join("seed"))).unwrap();
    let seed_events = seed.subscribe();
    let t = seed
        .add(AddTorrent::bytes(torrent.clone()).seed_mode())
        .unwrap();
    assert_eq!(t.status().unwrap().pieces_have, 16, "taken on trust");

    let leech = Client::start(config(&tmp.path().join("leech"))).unwrap();
    let lt = leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    // The seed finds piece 3 bad when it is first asked for, checks everything, and holds
    // the 15 good pieces.
    let failed = common::first_event(&seed_events, LIMIT, |e| {
        matches!(e, ClientEvent::HashFailed { .. })
    });
    assert!(
        matches!(failed, ClientEvent::HashFailed { piece: 3, .. }),
        "{failed:?}"
    );
    common::wait_until("the seed's check", LIMIT, || {
        t.status().is_ok_and(|s| s.pieces_have == 15)
    });
    // The leecher gets every good piece (it reconnects to the checked seed) and never a
    // byte of the bad one.
    lt.add_peers(&[seed.listen_addr().unwrap()]).unwrap();
    common::wait_until("the good pieces", LIMIT, || {
        lt.status()
            .is_ok_and(|s| s.pieces_have == 15 && s.bytes_left == PIECE as u64)
    });
    assert_eq!(
        leech.metrics().pieces_failed,
        0,
        "no corrupt block was served"
    );
    // Counted, though the torrent has left its loop for the check since.
    assert_eq!(seed.metrics().pieces_failed, 1, "the seed-mode failure");
    leech.shutdown();
    seed.shutdown();
}

#[test]
fn a_recheck_runs_without_holding_the_client() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seed");
    common::write_payload(&dir.join("big.bin"), 96 << 20, 3);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join("big.bin"),
        piece_len: Some(1 << 20),
        ..Default::default()
    };
    let torrent = ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes;
    let client = Client::start(config(&dir)).unwrap();
    let t = client.add(AddTorrent::bytes(torrent).seed_mode()).unwrap();
    let checker = {
        let t = t.clone();
        std::thread::spawn(move || t.recheck())
    };
    // While the check hashes 96 MiB, the client answers, and says what it is doing.
    let mut seen_checking = false;
    let deadline = Instant::now() + LIMIT;
    while !checker.is_finished() {
        assert!(Instant::now() < deadline, "the check did not end");
        let asked = Instant::now();
        let st = t.status().unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "status waited on the check"
        );
        if st.state == TorrentState::Checking {
            assert!(st.checking.is_some_and(|f| (0.0..=1.0).contains(&f)));
            seen_checking = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    checker.join().unwrap().unwrap();
    assert!(seen_checking, "the torrent showed its check");
    let st = t.status().unwrap();
    assert_eq!(
        (st.state, st.pieces_have, st.checking),
        (TorrentState::Seeding, 96, None)
    );
    client.shutdown();
}
