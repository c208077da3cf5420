//! A client restarted from its state folder restores torrents from resume data without
//! opening their files (`Storage::open_lazy`): no descriptor on a payload until a peer asks
//! for a block. A file changed while the torrent sat unopened is caught when a peer first
//! asks: its bytes are not served, the data is checked again, and only the pieces the check
//! finds are served. A file removed meanwhile is reported as missing.

mod common;

use std::path::Path;
use std::time::Duration;

use ringtorrent::client::{AddTorrent, Client, ClientConfig, ClientEvent, Events, TorrentHandle};

const LIMIT: Duration = Duration::from_secs(60);
const PIECE: usize = 64 * 1024;
const LEN: usize = 16 * PIECE;

fn config(data: &Path, state: Option<&Path>) -> ClientConfig {
    ClientConfig {
        state_dir: state.map(Path::to_path_buf),
        remember_torrents: state.is_some(),
        ..common::client_config(data, 1)
    }
}

/// A 16-piece payload in `dir/file.bin` and its torrent.
fn make(dir: &Path) -> Vec<u8> {
    common::single_file_torrent(&dir.join("file.bin"), LEN, PIECE, 17)
}

/// Descriptors of this process open on `path`.
fn held(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

/// Seeds the torrent of `seed/file.bin` once (checked, resume data saved at shutdown), then
/// starts the seed again from its state folder and returns it with its events, subscribed
/// before the torrent was restored.
fn restarted_seed(tmp: &Path) -> (Client, Events, Vec<u8>) {
    let seed_dir = tmp.join("seed");
    let state = tmp.join("state");
    let torrent = make(&seed_dir);
    let first_run = Client::start(config(&seed_dir, Some(&state))).unwrap();
    let t = first_run.add(AddTorrent::bytes(torrent.clone())).unwrap();
    assert_eq!(t.status().unwrap().pieces_have, 16);
    drop(t);
    first_run.shutdown();
    common::wait_until("the first run to close the payload", LIMIT, || {
        held(&seed_dir.join("file.bin")) == 0
    });

    let seed = Client::start(config(&seed_dir, Some(&state))).unwrap();
    let events = seed.subscribe();
    (seed, events, torrent)
}

fn only_torrent(client: &Client) -> TorrentHandle {
    let mut all = client.torrents();
    assert_eq!(all.len(), 1);
    all.pop().unwrap()
}

#[test]
fn a_restored_torrent_opens_no_file_until_a_peer_asks() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, _events, torrent) = restarted_seed(tmp.path());
    let payload = tmp.path().join("seed/file.bin");
    let t = only_torrent(&seed);
    assert_eq!(t.status().unwrap().pieces_have, 16, "from resume data");
    assert_eq!(
        seed.metrics().pieces_verified,
        0,
        "nothing hashed at restart"
    );
    assert_eq!(held(&payload), 0, "the payload is not open");

    let leech = Client::start(config(&tmp.path().join("leech"), None)).unwrap();
    let leech_events = leech.subscribe();
    leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    common::first_event(&leech_events, LIMIT, |e| {
        matches!(e, ClientEvent::Completed { .. })
    });
    assert_eq!(leech.metrics().pieces_failed, 0);
    assert_eq!(held(&payload), 1, "opened once, for the peer, and held");
    leech.shutdown();
    seed.shutdown();
    common::same_tree(&tmp.path().join("seed"), &tmp.path().join("leech"));
}

#[test]
fn a_file_changed_while_unopened_is_checked_again_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, events, torrent) = restarted_seed(tmp.path());
    let payload = tmp.path().join("seed/file.bin");
    let t = only_torrent(&seed);
    assert_eq!(t.status().unwrap().pieces_have, 16);
    // Piece 5 is overwritten behind the seed's back (same size, a new modification time).
    let mut bytes = std::fs::read(&payload).unwrap();
    bytes[5 * PIECE..6 * PIECE].fill(0xEE);
    std::fs::write(&payload, &bytes).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&payload)
        .unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    f.set_modified(mtime + Duration::from_secs(2)).unwrap();
    drop(f);

    let leech = Client::start(config(&tmp.path().join("leech"), None)).unwrap();
    let lt = leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    // The first read finds the change: an error, then a check that finds piece 5 bad.
    let err = common::first_event(&events, LIMIT, |e| matches!(e, ClientEvent::Error { .. }));
    assert!(
        matches!(&err, ClientEvent::Error { message, .. } if message.contains("changed")),
        "{err:?}"
    );
    common::wait_until("the seed's check", LIMIT, || {
        t.status().is_ok_and(|s| s.pieces_have == 15)
    });
    // The leecher gets every good piece from the checked seed, and never a byte of piece 5.
    lt.add_peers(&[seed.listen_addr().unwrap()]).unwrap();
    common::wait_until("the good pieces", LIMIT, || {
        lt.status()
            .is_ok_and(|s| s.pieces_have == 15 && s.bytes_left == PIECE as u64)
    });
    assert_eq!(
        leech.metrics().pieces_failed,
        0,
        "no changed byte was served"
    );
    leech.shutdown();
    seed.shutdown();
}

#[test]
fn a_file_removed_while_unopened_is_reported_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (seed, events, torrent) = restarted_seed(tmp.path());
    let payload = tmp.path().join("seed/file.bin");
    let t = only_torrent(&seed);
    assert_eq!(t.status().unwrap().pieces_have, 16, "from resume data");
    std::fs::remove_file(&payload).unwrap();

    let leech = Client::start(config(&tmp.path().join("leech"), None)).unwrap();
    let lt = leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    let err = common::first_event(&events, LIMIT, |e| matches!(e, ClientEvent::Error { .. }));
    assert!(
        matches!(&err, ClientEvent::Error { message, .. }
            if message.contains("missing") && message.contains("file.bin")),
        "{err:?}"
    );
    // Nothing was served, and the file was not made again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lt.status().unwrap().pieces_have, 0);
    assert!(!payload.exists());
    assert_eq!(t.status().unwrap().pieces_have, 16, "no check was started");
    leech.shutdown();
    seed.shutdown();
}
