//! The client's seedbox policy, engine-level: categories and tags, share limits (a seed that
//! reaches its ratio stops; one past its seeding time is removed with its data) and queueing
//! (limits, positions, force start), each kept across a restart. In-process clients on
//! loopback, small payloads, bounded waits.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ringtorrent::client::{
    AddTorrent, Client, ClientConfig, ClientError, ClientEvent, Events, QueueConfig, QueueMove,
    ShareAction, ShareLimits, TorrentHandle, TorrentState,
};

/// Every wait here has this bound.
const LIMIT: Duration = Duration::from_secs(60);

fn config(data: &Path, state: Option<&Path>) -> ClientConfig {
    ClientConfig {
        state_dir: state.map(Path::to_path_buf),
        remember_torrents: state.is_some(),
        ..common::client_config(data, 2)
    }
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

/// Waits for an event `pick` accepts (or fails the test past the bound).
fn wait_for(events: &Events, mut pick: impl FnMut(&ClientEvent) -> bool) -> ClientEvent {
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events
            .recv_timeout(left)
            .unwrap_or_else(|| panic!("timed out; events so far: {seen:?}"));
        if pick(&e) {
            return e;
        }
        seen.push(e);
    }
}

/// Waits until `t`'s state is `state`.
fn wait_state(t: &TorrentHandle, state: TorrentState) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = t.status().unwrap().state;
        if now == state {
            return;
        }
        assert!(Instant::now() < deadline, "still {now:?}, not {state:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn categories_and_tags_are_kept_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, state, tv) = (
        tmp.path().join("data"),
        tmp.path().join("state"),
        tmp.path().join("tv"),
    );
    // The data is in the category's folder only.
    let torrent = make(&tv, "file.bin", 100_000);
    let client = Client::start(config(&data, Some(&state))).unwrap();
    client.create_category("tv", Some(tv.clone())).unwrap();
    assert!(matches!(
        client.create_category("tv", None),
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(client.create_category("a//b", None).is_err());
    // Added with a category and no save folder: its data goes to the category's.
    let t = client
        .add(
            AddTorrent::bytes(torrent.clone())
                .category("tv")
                .tags(["hd", " new "]),
        )
        .unwrap();
    let s = t.status().unwrap();
    assert_eq!((s.save_dir, s.state), (tv.clone(), TorrentState::Seeding));
    assert!(!data.join("file.bin").exists());
    assert_eq!(s.category.as_deref(), Some("tv"));
    assert_eq!(s.tags, ["hd", "new"]);
    assert_eq!(client.tags(), ["hd", "new"]);
    // Tags on and off; a tag added to a torrent is created.
    t.add_tags(&["x265".into()]).unwrap();
    t.remove_tags(&["new".into()]).unwrap();
    assert_eq!(t.status().unwrap().tags, ["hd", "x265"]);
    assert!(t.add_tags(&["a,b".into()]).is_err());
    client.create_tags(&["spare".into()]).unwrap();
    client.delete_tags(&["hd".into()]).unwrap();
    assert_eq!(client.tags(), ["new", "spare", "x265"]);
    assert_eq!(t.status().unwrap().tags, ["x265"]);
    // Categories: an unknown one is refused; one created later can be set, edited, removed.
    assert!(t.set_category(Some("movies")).is_err());
    client.create_category("movies", None).unwrap();
    client
        .edit_category("movies", Some(tmp.path().join("m")))
        .unwrap();
    assert!(client.edit_category("nope", None).is_err());
    t.set_category(Some("movies")).unwrap();
    client.remove_categories(&["movies".into()]).unwrap();
    assert_eq!(t.status().unwrap().category, None);
    t.set_category(Some("tv")).unwrap();
    let hash = t.info_hash();
    client.shutdown();

    let again = Client::start(config(&data, Some(&state))).unwrap();
    let cats = again.categories();
    assert_eq!(cats.len(), 1);
    assert_eq!(
        (cats[0].name.as_str(), cats[0].save_path.as_ref()),
        ("tv", Some(&tv))
    );
    assert_eq!(again.tags(), ["new", "spare", "x265"]);
    let s = again.get(hash).unwrap().status().unwrap();
    assert_eq!(
        (s.category.as_deref(), s.tags, s.state),
        (Some("tv"), vec!["x265".to_string()], TorrentState::Seeding)
    );
    again.shutdown();
}

#[test]
fn a_seed_stops_at_its_ratio_and_keeps_its_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let state = tmp.path().join("state");
    let torrent = make(&seed_dir, "file.bin", 1_000_000);
    let seed = Client::start(config(&seed_dir, Some(&state))).unwrap();
    let events = seed.subscribe();
    let limits = ShareLimits {
        ratio: 0.5,
        ..ShareLimits::USE_GLOBAL
    };
    let t = seed
        .add(AddTorrent::bytes(torrent.clone()).share_limits(limits))
        .unwrap();
    let s = t.status().unwrap();
    assert_eq!((s.state, s.ratio), (TorrentState::Seeding, 0.0));
    assert_eq!(s.share_limits, limits);
    assert_eq!(s.effective_share_limits.action, ShareAction::Stop);
    assert!(ShareLimits {
        ratio: -3.0,
        ..limits
    }
    .check(false)
    .is_err());
    assert!(t
        .set_share_limits(ShareLimits {
            ratio: -3.0,
            ..limits
        })
        .is_err());

    let leech = Client::start(config(&tmp.path().join("leech"), None)).unwrap();
    leech
        .add(AddTorrent::bytes(torrent).peers(seed.listen_addr()))
        .unwrap();
    // Uploaded over its size (it downloaded nothing) reaches 0.5: it stops.
    let e = wait_for(&events, |e| {
        matches!(e, ClientEvent::ShareLimitReached { .. })
    });
    assert!(
        matches!(
            e,
            ClientEvent::ShareLimitReached {
                limit: "ratio",
                action: ShareAction::Stop,
                ..
            }
        ),
        "{e:?}"
    );
    wait_for(&events, |e| matches!(e, ClientEvent::Paused { .. }));
    let s = t.status().unwrap();
    assert_eq!(s.state, TorrentState::Paused);
    assert!(s.ratio >= 0.5, "{s:?}");
    assert!(s.uploaded_total >= 500_000, "{s:?}");
    leech.shutdown();
    let hash = t.info_hash();
    seed.shutdown();

    // The totals (and so the ratio) and the limits come back with it.
    let again = Client::start(config(&seed_dir, Some(&state))).unwrap();
    let back = again.get(hash).unwrap().status().unwrap();
    assert_eq!(back.state, TorrentState::Paused);
    assert_eq!(back.uploaded_total, s.uploaded_total);
    assert_eq!(back.ratio, s.ratio);
    assert_eq!(back.share_limits, limits);
    again.shutdown();
}

#[test]
fn an_idle_seed_keeps_its_seeding_time_without_rewriting_its_settings_each_save() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let state = tmp.path().join("state");
    let torrent = make(&seed_dir, "idle.bin", 200_000);
    let fast_saves = || ClientConfig {
        resume_interval: Duration::from_millis(300),
        ..config(&seed_dir, Some(&state))
    };
    let seed = Client::start(fast_saves()).unwrap();
    let t = seed.add(AddTorrent::bytes(torrent)).unwrap();
    wait_state(&t, TorrentState::Seeding);
    let hash = t.info_hash();
    let settings = state.join(format!("torrents/{}.json", hash.to_hex()));
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    // Its settings are written when it is added; seeding alone adds nothing worth a write
    // for minutes, however often resume data is saved.
    std::thread::sleep(Duration::from_millis(1500));
    let written = stamp(&settings);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        stamp(&settings),
        written,
        "an idle seed's settings were rewritten"
    );
    let seeded = t.status().unwrap().seeding_time;
    assert!(seeded >= 3, "seeded {seeded} s");
    seed.shutdown();
    // The shutdown keeps what it seeded all the same.
    let again = Client::start(fast_saves()).unwrap();
    let back = again.get(hash).unwrap().status().unwrap();
    assert!(
        back.seeding_time >= seeded,
        "{} s seeded before the restart, {} s after",
        seeded,
        back.seeding_time
    );
    again.shutdown();
}

#[test]
fn a_global_seeding_time_limit_removes_with_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let state = tmp.path().join("state");
    let torrent = make(&data, "file.bin", 100_000);
    let client = Client::start(ClientConfig {
        share_limits: ShareLimits {
            seeding_time: 3600,
            ..ShareLimits::NONE
        },
        ..config(&data, Some(&state))
    })
    .unwrap();
    // -2 is for torrents only.
    assert!(client.set_share_limits(ShareLimits::USE_GLOBAL).is_err());
    // Set at run time, and kept.
    client
        .set_share_limits(ShareLimits {
            seeding_time: 1,
            action: ShareAction::RemoveWithData,
            ..ShareLimits::NONE
        })
        .unwrap();
    let events = client.subscribe();
    let t = client.add(AddTorrent::bytes(torrent.clone())).unwrap();
    let hash = t.info_hash();
    let e = wait_for(&events, |e| matches!(e, ClientEvent::Removed { .. }));
    assert!(
        matches!(e, ClientEvent::Removed { info_hash, data_deleted: true } if info_hash == hash),
        "{e:?}"
    );
    assert!(!data.join("file.bin").exists());
    assert!(client.get(hash).is_none());
    client.shutdown();
    let again = Client::start(config(&data, Some(&state))).unwrap();
    assert_eq!(again.share_limits().seeding_time, 1);
    assert_eq!(again.share_limits().action, ShareAction::RemoveWithData);
    assert!(again.torrents().is_empty());
    again.shutdown();
}

#[test]
fn the_queue_runs_torrents_in_order_and_force_start_skips_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let state = tmp.path().join("state");
    // Three torrents with no data and no peers: downloading forever.
    let torrents: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let bytes = make(
                &tmp.path().join("src"),
                &format!("f{i}.bin"),
                70_000 + i * 1000,
            );
            bytes
        })
        .collect();
    let queue = QueueConfig {
        enabled: true,
        max_active_downloads: 1,
        max_active_torrents: 2,
        ..QueueConfig::default()
    };
    let client = Client::start(ClientConfig {
        queue,
        ..config(&data, Some(&state))
    })
    .unwrap();
    let handles: Vec<TorrentHandle> = torrents
        .iter()
        .map(|b| client.add(AddTorrent::bytes(b.clone())).unwrap())
        .collect();
    let states =
        || -> Vec<TorrentState> { handles.iter().map(|t| t.status().unwrap().state).collect() };
    let positions = || -> Vec<usize> {
        handles
            .iter()
            .map(|t| t.status().unwrap().queue_position)
            .collect()
    };
    use TorrentState::{Downloading as D, Queued as Q};
    assert_eq!(states(), [D, Q, Q]);
    assert_eq!(positions(), [1, 2, 3]);
    // The last to the top: it runs, the first waits.
    handles[2].queue_move(QueueMove::Top).unwrap();
    assert_eq!(positions(), [2, 3, 1]);
    assert_eq!(states(), [Q, Q, D]);
    handles[2].queue_move(QueueMove::Down).unwrap();
    assert_eq!(positions(), [1, 3, 2]);
    assert_eq!(states(), [D, Q, Q]);
    // Force-started: runs whatever the queue says, and is not counted.
    handles[1].set_force_start(true).unwrap();
    assert_eq!(states(), [D, D, Q]);
    assert!(handles[1].status().unwrap().force_start);
    // Paused, the first leaves room for the next; resumed, it queues behind it.
    handles[0].pause().unwrap();
    assert_eq!(states(), [TorrentState::Paused, D, D]);
    handles[0].resume().unwrap();
    assert_eq!(states(), [D, D, Q]);
    client.shutdown();

    // Order, force start and queueing come back.
    let again = Client::start(config(&data, Some(&state))).unwrap();
    assert!(
        !again.queue_config().enabled,
        "the config's, none set at run time"
    );
    again.shutdown();
    let again = Client::start(ClientConfig {
        queue,
        ..config(&data, Some(&state))
    })
    .unwrap();
    let handles: Vec<TorrentHandle> = handles
        .iter()
        .map(|t| again.get(t.info_hash()).unwrap())
        .collect();
    let states =
        || -> Vec<TorrentState> { handles.iter().map(|t| t.status().unwrap().state).collect() };
    assert_eq!(states(), [D, D, Q]);
    assert_eq!(
        handles
            .iter()
            .map(|t| t.status().unwrap().queue_position)
            .collect::<Vec<_>>(),
        [1, 3, 2]
    );
    // Queueing turned off at run time: everything runs, and that is kept.
    again
        .set_queue_config(QueueConfig {
            enabled: false,
            ..queue
        })
        .unwrap();
    assert_eq!(states(), [D, D, D]);
    again.shutdown();
    let last = Client::start(ClientConfig {
        queue,
        ..config(&data, Some(&state))
    })
    .unwrap();
    assert!(!last.queue_config().enabled);
    last.shutdown();
}

#[test]
fn slow_torrents_are_not_counted_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let torrents: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            make(
                &tmp.path().join("src"),
                &format!("f{i}.bin"),
                70_000 + i * 1000,
            )
        })
        .collect();
    let client = Client::start(ClientConfig {
        queue: QueueConfig {
            enabled: true,
            max_active_downloads: 1,
            dont_count_slow: true,
            slow_inactive_secs: 1,
            ..QueueConfig::default()
        },
        ..config(&data, None)
    })
    .unwrap();
    let a = client.add(AddTorrent::bytes(torrents[0].clone())).unwrap();
    let b = client.add(AddTorrent::bytes(torrents[1].clone())).unwrap();
    assert_eq!(b.status().unwrap().state, TorrentState::Queued);
    // No peers: the first is slow after a second, and no longer counted; the second runs.
    wait_state(&b, TorrentState::Downloading);
    assert_eq!(a.status().unwrap().state, TorrentState::Downloading);
    client.shutdown();
}
