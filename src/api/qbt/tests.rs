//! The JSON shapes and the pure logic of the WebAPI: state names, `torrents/info` fields and
//! types, filters and sorting, `sync/maindata` deltas, trackers, the log, parameters.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::sync::{Snapshot, SyncState};
use super::torrents::{self, Extra};
use super::{log, Params, Times};
use crate::client::{
    PeerInfo, ShareLimits, TorrentState, TorrentStatus, TrackerState, TrackerStatus,
};

fn status(hash: char, state: TorrentState) -> TorrentStatus {
    TorrentStatus {
        info_hash: hash.to_string().repeat(40),
        name: format!("name {hash}"),
        size: 1000,
        pieces: 10,
        pieces_have: 5,
        progress: 0.5,
        bytes_left: 500,
        state,
        download_rate: 0,
        upload_rate: 0,
        downloaded: 500,
        uploaded: 250,
        peers: 0,
        upload_limit: None,
        download_limit: Some(1234),
        source: "qbt".into(),
        save_dir: PathBuf::from("/data"),
        error: None,
        category: None,
        tags: Vec::new(),
        uploaded_total: 250,
        downloaded_total: 500,
        ratio: 0.25,
        seeding_time: 0,
        inactive_time: 0,
        share_limits: ShareLimits::default(),
        effective_share_limits: ShareLimits::default(),
        queue_position: 1,
        force_start: false,
        sequential: false,
        first_last_piece_priority: false,
        checking: None,
        moving: None,
        added_on: 1_700_000_000,
        completed_on: None,
    }
}

fn times() -> Times {
    Times {
        added: 1_700_000_000,
        completed: None,
        completed_at: None,
        active: Duration::ZERO,
        running_since: None,
    }
}

fn object(st: &TorrentStatus) -> Map<String, Value> {
    torrents::info_object(st, &Extra::default(), &times())
}

#[test]
fn state_names_are_qbittorrents() {
    let mut st = status('a', TorrentState::Downloading);
    assert_eq!(torrents::state_name(&st, false), "stalledDL");
    st.download_rate = 10;
    assert_eq!(torrents::state_name(&st, false), "downloading");
    st.state = TorrentState::Seeding;
    assert_eq!(torrents::state_name(&st, false), "stalledUP");
    st.upload_rate = 10;
    assert_eq!(torrents::state_name(&st, false), "uploading");
    st.state = TorrentState::Paused;
    assert_eq!(torrents::state_name(&st, true), "pausedDL");
    st.bytes_left = 0;
    assert_eq!(torrents::state_name(&st, true), "pausedUP");
    st.state = TorrentState::Metadata;
    assert_eq!(torrents::state_name(&st, false), "metaDL");
    assert_eq!(torrents::state_name(&st, true), "pausedDL");
    st.state = TorrentState::Error;
    st.error = Some("disk full".into());
    assert_eq!(torrents::state_name(&st, false), "error");
    st.error = Some("its data went missing: a.bin not found".into());
    assert_eq!(torrents::state_name(&st, false), "missingFiles");
}

#[test]
fn info_objects_have_qbittorrents_fields_and_types() {
    let o = object(&status('a', TorrentState::Downloading));
    let ints = [
        "added_on",
        "amount_left",
        "completed",
        "completion_on",
        "dl_limit",
        "dlspeed",
        "downloaded",
        "downloaded_session",
        "eta",
        "last_activity",
        "max_ratio",
        "max_seeding_time",
        "num_complete",
        "num_incomplete",
        "num_leechs",
        "num_seeds",
        "priority",
        "ratio_limit",
        "seeding_time",
        "seeding_time_limit",
        "seen_complete",
        "size",
        "time_active",
        "total_size",
        "trackers_count",
        "up_limit",
        "uploaded",
        "uploaded_session",
        "upspeed",
    ];
    for k in ints {
        assert!(
            o[k].is_i64() || o[k].is_u64(),
            "{k} is an integer: {}",
            o[k]
        );
    }
    for k in ["progress", "ratio", "availability"] {
        assert!(o[k].is_f64(), "{k} is a float: {}", o[k]);
    }
    let strings = [
        "category",
        "content_path",
        "download_path",
        "hash",
        "infohash_v1",
        "infohash_v2",
        "magnet_uri",
        "name",
        "save_path",
        "state",
        "tags",
        "tracker",
    ];
    for k in strings {
        assert!(o[k].is_string(), "{k} is a string: {}", o[k]);
    }
    for k in [
        "auto_tmm",
        "f_l_piece_prio",
        "force_start",
        "seq_dl",
        "super_seeding",
    ] {
        assert!(o[k].is_boolean(), "{k} is a boolean: {}", o[k]);
    }
    assert_eq!(o["hash"], json!("a".repeat(40)));
    assert_eq!(o["dl_limit"], json!(1234));
    assert_eq!(o["up_limit"], json!(0), "no limit is 0");
    assert_eq!(o["eta"], json!(torrents::MAX_ETA), "stalled: infinite");
    assert_eq!(o["completed"], json!(500));
    assert_eq!(o["ratio"], json!(0.25), "the engine's all-time ratio");
    assert_eq!(o["completion_on"], json!(-1));
    assert_eq!(o["content_path"], json!("/data/name a"));
}

#[test]
fn magnet_uris_escape_names_and_trackers() {
    let tiers = vec![vec!["http://t/a?x=1".to_string()]];
    assert_eq!(
        torrents::magnet_uri("ab", "a b&c", &tiers),
        "magnet:?xt=urn:btih:ab&dn=a%20b%26c&tr=http%3A%2F%2Ft%2Fa%3Fx%3D1"
    );
}

fn rows() -> Vec<(String, Map<String, Value>)> {
    let mut a = status('a', TorrentState::Downloading);
    a.name = "Beta".into();
    a.download_rate = 5;
    let mut b = status('b', TorrentState::Seeding);
    b.name = "alpha".into();
    b.bytes_left = 0;
    let c = status('c', TorrentState::Paused);
    [a, b, c]
        .iter()
        .map(|s| (s.info_hash.clone(), object(s)))
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn info_filters_sorts_and_pages() {
    let list = |pairs: &[(&str, &str)]| torrents::list(rows(), &Params::from_pairs(pairs)).unwrap();
    assert_eq!(names(&list(&[])).len(), 3);
    assert_eq!(
        names(&list(&[("filter", "downloading")])),
        ["Beta", "name c"]
    );
    assert_eq!(names(&list(&[("filter", "seeding")])), ["alpha"]);
    assert_eq!(names(&list(&[("filter", "completed")])), ["alpha"]);
    assert_eq!(names(&list(&[("filter", "paused")])), ["name c"]);
    assert_eq!(names(&list(&[("filter", "stopped")])), ["name c"]);
    assert_eq!(names(&list(&[("filter", "active")])), ["Beta"]);
    assert_eq!(names(&list(&[("filter", "stalled")])), ["alpha"]);
    assert_eq!(names(&list(&[("filter", "errored")])).len(), 0);
    assert_eq!(
        names(&list(&[("category", "tv")])).len(),
        0,
        "no categories yet"
    );
    assert_eq!(names(&list(&[("category", "")])).len(), 3);
    assert_eq!(names(&list(&[("tag", "x")])).len(), 0);
    let b = "b".repeat(40);
    let c = "C".repeat(40);
    assert_eq!(
        names(&list(&[("hashes", &format!("{b}|{c}"))])),
        ["alpha", "name c"]
    );
    assert_eq!(
        names(&list(&[("sort", "name")])),
        ["alpha", "Beta", "name c"],
        "case-insensitive, as qBittorrent's natural sort"
    );
    assert_eq!(
        names(&list(&[("sort", "name"), ("reverse", "true")])),
        ["name c", "Beta", "alpha"]
    );
    assert_eq!(
        names(&list(&[("sort", "name"), ("limit", "1"), ("offset", "1")])),
        ["Beta"]
    );
    assert_eq!(
        names(&list(&[("sort", "name"), ("offset", "-1")])),
        ["name c"],
        "a negative offset counts from the end"
    );
    assert!(torrents::list(rows(), &Params::from_pairs(&[("limit", "x")])).is_err());
}

fn snapshot(rows: Vec<(String, Map<String, Value>)>, speed: u64) -> Snapshot {
    let mut server_state = Map::new();
    server_state.insert("dl_info_speed".into(), json!(speed));
    server_state.insert("connection_status".into(), json!("connected"));
    Snapshot {
        torrents: rows.into_iter().collect(),
        server_state,
        ..Default::default()
    }
}

#[test]
fn maindata_sends_full_updates_then_deltas() {
    let mut sync = SyncState::default();
    let first = sync.answer(0, snapshot(rows(), 1));
    assert_eq!(first["full_update"], json!(true));
    assert_eq!(first["rid"], json!(1));
    assert_eq!(first["torrents"].as_object().unwrap().len(), 3);
    assert_eq!(first["categories"], json!({}));
    assert_eq!(first["tags"], json!([]));
    assert!(first["server_state"]["connection_status"].is_string());

    // One torrent's progress changes, one leaves, one arrives; the speed changes.
    let mut next = rows();
    next[0].1.insert("progress".into(), json!(0.75));
    next.remove(2);
    let d = status('d', TorrentState::Downloading);
    next.push((d.info_hash.clone(), object(&d)));
    let delta = sync.answer(1, snapshot(next.clone(), 2));
    assert_eq!(delta["rid"], json!(2));
    assert!(delta.get("full_update").is_none(), "{delta}");
    let t = delta["torrents"].as_object().unwrap();
    assert_eq!(t["a".repeat(40).as_str()], json!({ "progress": 0.75 }));
    assert!(!t.contains_key(&"b".repeat(40)), "unchanged: left out");
    assert_eq!(
        t["d".repeat(40).as_str()]["name"],
        json!("name d"),
        "new: whole"
    );
    assert_eq!(delta["torrents_removed"], json!(["c".repeat(40)]));
    assert_eq!(delta["server_state"], json!({ "dl_info_speed": 2 }));
    assert!(delta.get("categories").is_none());

    // Nothing changed: only the rid.
    let same = sync.answer(2, snapshot(next.clone(), 2));
    assert_eq!(same, json!({ "rid": 3 }));

    // An unknown or forgotten rid: a full update.
    assert_eq!(
        sync.answer(999, snapshot(next.clone(), 2))["full_update"],
        json!(true)
    );
    for _ in 0..super::sync::KEPT_SNAPSHOTS {
        sync.answer(0, snapshot(next.clone(), 2));
    }
    assert_eq!(
        sync.answer(2, snapshot(next, 2))["full_update"],
        json!(true)
    );
}

fn tracker(url: &str, tier: usize, state: TrackerState) -> TrackerStatus {
    TrackerStatus {
        url: url.into(),
        tier,
        state,
        message: String::new(),
        peers: None,
        seeds: None,
        leeches: None,
        downloaded: None,
        next_announce: None,
    }
}

#[test]
fn trackers_list_starts_with_qbittorrents_pseudo_entries() {
    let v = torrents::trackers(
        &[
            tracker("udp://a", 0, TrackerState::NotContacted),
            tracker("http://b", 1, TrackerState::NotContacted),
        ],
        false,
    );
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 5);
    assert_eq!(a[0]["url"], json!("** [DHT] **"));
    assert_eq!(a[1]["url"], json!("** [PeX] **"));
    assert_eq!(a[1]["status"], json!(2));
    assert_eq!(a[2]["url"], json!("** [LSD] **"));
    assert_eq!(a[3]["tier"], json!(0));
    assert_eq!(a[4]["tier"], json!(1));
    for t in a {
        for k in [
            "num_peers",
            "num_seeds",
            "num_leeches",
            "num_downloaded",
            "status",
            "tier",
        ] {
            assert!(t[k].is_i64() || t[k].is_u64(), "{k}: {t}");
        }
        assert!(t["msg"].is_string());
    }
    let private = torrents::trackers(&[], true);
    assert_eq!(
        private[1]["status"],
        json!(0),
        "no PeX on a private torrent"
    );
}

#[test]
fn trackers_report_qbittorrents_status_numbers_message_and_counts() {
    let mut working = tracker("http://w", 0, TrackerState::Working);
    (working.peers, working.seeds, working.leeches) = (Some(3), Some(5), Some(7));
    let mut refused = tracker("http://r", 1, TrackerState::NotWorking);
    refused.message = "Unregistered torrent".into();
    let v = torrents::trackers(
        &[
            tracker("udp://n", 0, TrackerState::NotContacted),
            working,
            tracker("http://u", 0, TrackerState::Updating),
            refused,
        ],
        false,
    );
    let a = &v.as_array().unwrap()[3..];
    let status: Vec<_> = a.iter().map(|t| t["status"].as_i64().unwrap()).collect();
    assert_eq!(status, [1, 2, 3, 4]);
    assert_eq!(
        (&a[1]["num_peers"], &a[1]["num_seeds"], &a[1]["num_leeches"]),
        (&json!(3), &json!(5), &json!(7))
    );
    assert_eq!(a[1]["num_downloaded"], json!(-1), "unknown: -1");
    assert_eq!(a[0]["num_seeds"], json!(-1));
    assert_eq!(a[3]["msg"], json!("Unregistered torrent"));
}

#[test]
fn log_filters_by_kind_and_id_and_stays_bounded() {
    let mut l = log::Log::new();
    l.push(log::NORMAL, "one".into());
    l.push(log::WARNING, "two".into());
    l.push(log::INFO, "three".into());
    let all = l.since(-1, 0xff);
    assert_eq!(all.as_array().unwrap().len(), 3);
    for m in all.as_array().unwrap() {
        assert!(m["id"].is_i64() && m["timestamp"].is_i64() && m["type"].is_u64());
        assert!(m["message"].is_string());
    }
    assert_eq!(l.since(-1, log::WARNING)[0]["message"], json!("two"));
    assert_eq!(l.since(1, 0xff).as_array().unwrap().len(), 1);
    for i in 0..log::MAX_MESSAGES + 10 {
        l.push(log::NORMAL, i.to_string());
    }
    assert_eq!(
        l.since(-1, 0xff).as_array().unwrap().len(),
        log::MAX_MESSAGES
    );
}

#[test]
fn params_read_flags_integers_and_required_keys() {
    let p = Params::from_pairs(&[
        ("a", "True"),
        ("b", "0"),
        ("n", "12"),
        ("n", "13"),
        ("x", "y"),
    ]);
    assert_eq!(p.flag("a"), Some(true));
    assert_eq!(p.flag("b"), Some(false));
    assert_eq!(p.flag("c"), None);
    assert_eq!(p.int("n").unwrap(), Some(13), "the last value wins");
    assert!(p.int("x").is_err());
    assert_eq!(p.required("zz").unwrap_err().status, 400);
    assert_eq!(super::limit_of(-1), None);
    assert_eq!(super::limit_of(0), None);
    assert_eq!(super::limit_of(5), Some(5));
}

#[test]
fn peer_flags_follow_qbittorrents_letters() {
    let p = PeerInfo {
        addr: "127.0.0.1:6881".into(),
        client: Some("libtorrent".into()),
        outgoing: false,
        am_choking: true,
        am_interested: true,
        peer_choking: false,
        peer_interested: false,
        download_rate: 1,
        upload_rate: 0,
        progress: 1.0,
        snubbed: false,
        encryption: "rc4",
    };
    let (flags, desc) = super::sync::peer_flags(&p);
    assert_eq!(flags, "D I E");
    assert_eq!(desc.lines().count(), 3);
    let o = super::sync::peer_object(&p);
    assert_eq!(o["ip"], json!("127.0.0.1"));
    assert_eq!(o["port"], json!(6881));
    assert!(o["progress"].is_f64() && o["dl_speed"].is_u64());
}

#[test]
fn build_info_and_preferences_have_the_keys_clients_read() {
    let b = super::app::build_info();
    for k in ["qt", "libtorrent", "boost", "openssl"] {
        assert!(b[k].is_string(), "{k}");
    }
    assert!(b["bitness"].is_u64());
    let auth = crate::api::auth::Auth::new(crate::api::auth::AuthConfig {
        session_ttl: std::time::Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    let api = super::WebApi::new(
        std::sync::Arc::new(auth),
        super::WebSettings {
            save_path: "/srv/data".into(),
            listen_port: 6881,
            upload_limit: Some(1000),
            ..Default::default()
        },
    );
    let p = super::app::preferences_with(
        &api,
        &crate::client::QueueConfig::default(),
        &ShareLimits::NONE,
    );
    assert_eq!(p["save_path"], json!("/srv/data"));
    assert_eq!(p["listen_port"], json!(6881));
    assert_eq!(p["up_limit"], json!(1000));
    assert_eq!(p["dl_limit"], json!(0));
    for k in [
        "queueing_enabled",
        "max_ratio_enabled",
        "max_seeding_time_enabled",
        "dht",
        "pex",
    ] {
        assert!(p[k].is_boolean(), "{k}");
    }
    for k in [
        "max_active_downloads",
        "max_active_uploads",
        "max_active_torrents",
        "max_ratio_act",
    ] {
        assert!(p[k].is_i64() || p[k].is_u64(), "{k}");
    }
}

#[test]
fn force_started_torrents_show_forced_states() {
    let mut st = status('a', TorrentState::Downloading);
    st.force_start = true;
    assert_eq!(torrents::state_name(&st, false), "forcedDL");
    st.state = TorrentState::Seeding;
    assert_eq!(torrents::state_name(&st, false), "forcedUP");
    st.state = TorrentState::Metadata;
    assert_eq!(torrents::state_name(&st, false), "forcedMetaDL");
    st.state = TorrentState::Paused;
    assert_eq!(torrents::state_name(&st, true), "pausedDL", "paused wins");
    st.force_start = false;
    st.state = TorrentState::Queued;
    assert_eq!(torrents::state_name(&st, false), "queuedDL");
    st.bytes_left = 0;
    assert_eq!(torrents::state_name(&st, false), "queuedUP");
}

#[test]
fn info_objects_carry_category_tags_limits_and_queue_place() {
    let mut st = status('a', TorrentState::Seeding);
    st.category = Some("tv/hd".into());
    st.tags = vec!["a".into(), "b c".into()];
    st.ratio = 1.5;
    st.seeding_time = 600;
    st.force_start = true;
    st.share_limits = ShareLimits {
        ratio: 2.0,
        seeding_time: 120 * 60,
        inactive_seeding_time: -1,
        ..ShareLimits::USE_GLOBAL
    };
    st.effective_share_limits = ShareLimits {
        ratio: 2.0,
        seeding_time: 120 * 60,
        inactive_seeding_time: -1,
        ..ShareLimits::NONE
    };
    let x = Extra {
        priority: 3,
        trackers: vec![vec!["http://first.example/announce".into()]],
        working_tracker: "http://working.example/announce".into(),
        ..Extra::default()
    };
    let o = torrents::info_object(&st, &x, &times());
    assert_eq!(
        o["tracker"],
        json!("http://working.example/announce"),
        "the tracker that answered, not the first listed"
    );
    assert_eq!(o["category"], json!("tv/hd"));
    assert_eq!(
        o["tags"],
        json!("a, b c"),
        "comma and space, as qBittorrent"
    );
    assert_eq!(o["ratio"], json!(1.5));
    assert_eq!(o["seeding_time"], json!(600), "seconds");
    assert_eq!(
        o["ratio_limit"],
        json!(2),
        "Qt writes an integral double bare"
    );
    assert_eq!(o["max_ratio"], json!(2));
    assert_eq!(o["seeding_time_limit"], json!(120), "minutes");
    assert_eq!(o["max_seeding_time"], json!(120));
    assert_eq!(o["inactive_seeding_time_limit"], json!(-1));
    assert_eq!(o["max_inactive_seeding_time"], json!(-1));
    assert_eq!(o["priority"], json!(3));
    assert_eq!(o["force_start"], json!(true));
    assert_eq!(o["state"], json!("forcedUP"));
    let d = object(&status('b', TorrentState::Downloading));
    assert_eq!(d["ratio_limit"], json!(-2), "the client's");
    assert_eq!(d["seeding_time_limit"], json!(-2));
    assert_eq!(d["category"], json!(""));
    assert_eq!(d["tags"], json!(""));
    st.share_limits.ratio = 0.25;
    let o = torrents::info_object(&st, &x, &times());
    assert_eq!(o["ratio_limit"], json!(0.25));
}

#[test]
fn priorities_number_incomplete_torrents_in_queue_order() {
    let mut a = status('a', TorrentState::Downloading);
    a.queue_position = 3;
    let mut b = status('b', TorrentState::Seeding);
    b.bytes_left = 0;
    b.queue_position = 1;
    let mut c = status('c', TorrentState::Queued);
    c.queue_position = 2;
    let p = torrents::priorities(&[a, b, c]);
    assert_eq!(p["a".repeat(40).as_str()], 2);
    assert_eq!(
        p["b".repeat(40).as_str()],
        0,
        "a complete torrent has no queue place"
    );
    assert_eq!(p["c".repeat(40).as_str()], 1);
}

#[test]
fn info_filters_by_category_and_tag() {
    let mut a = status('a', TorrentState::Downloading);
    a.category = Some("tv".into());
    a.tags = vec!["hd".into(), "x".into()];
    let mut b = status('b', TorrentState::Downloading);
    b.category = Some("movies".into());
    b.tags = vec!["hdr".into()];
    let c = status('c', TorrentState::Downloading);
    let rows: Vec<_> = [a, b, c]
        .iter()
        .map(|s| (s.info_hash.clone(), object(s)))
        .collect();
    let hashes = |pairs: &[(&str, &str)]| -> Vec<String> {
        torrents::list(rows.clone(), &Params::from_pairs(pairs))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["hash"].as_str().unwrap()[..1].to_string())
            .collect()
    };
    assert_eq!(hashes(&[]), ["a", "b", "c"]);
    assert_eq!(hashes(&[("category", "tv")]), ["a"]);
    assert_eq!(
        hashes(&[("category", "")]),
        ["c"],
        "\"\": without a category"
    );
    assert_eq!(hashes(&[("category", "nope")]), Vec::<String>::new());
    assert_eq!(hashes(&[("tag", "hd")]), ["a"], "whole tags only");
    assert_eq!(hashes(&[("tag", "")]), ["c"], "\"\": untagged");
}

#[test]
fn maindata_deltas_carry_categories_and_tags() {
    let mut sync = SyncState::default();
    let mut s = snapshot(rows(), 1);
    s.categories
        .insert("tv".into(), json!({"name": "tv", "savePath": "/tv"}));
    s.tags = vec!["a".into(), "b".into()];
    let first = sync.answer(0, s.clone());
    assert_eq!(
        first["categories"],
        json!({"tv": {"name": "tv", "savePath": "/tv"}})
    );
    assert_eq!(first["tags"], json!(["a", "b"]));
    let rid = first["rid"].as_i64().unwrap();
    let same = sync.answer(rid, s.clone());
    for k in ["categories", "categories_removed", "tags", "tags_removed"] {
        assert!(same.get(k).is_none(), "nothing changed: no {k}: {same}");
    }
    let mut next = s.clone();
    next.categories.remove("tv");
    next.categories
        .insert("movies".into(), json!({"name": "movies", "savePath": ""}));
    next.tags = vec!["b".into(), "c".into()];
    let d = sync.answer(same["rid"].as_i64().unwrap(), next);
    assert_eq!(
        d["categories"],
        json!({"movies": {"name": "movies", "savePath": ""}})
    );
    assert_eq!(d["categories_removed"], json!(["tv"]));
    assert_eq!(d["tags"], json!(["c"]));
    assert_eq!(d["tags_removed"], json!(["a"]));
}

#[test]
fn share_limit_parameters_are_minutes_and_qbittorrents_ranges() {
    let l = torrents::share_limits_of(&Params::from_pairs(&[
        ("ratioLimit", "1.5"),
        ("seedingTimeLimit", "90"),
        ("inactiveSeedingTimeLimit", "-1"),
    ]))
    .unwrap();
    assert_eq!(
        (l.ratio, l.seeding_time, l.inactive_seeding_time),
        (1.5, 5400, -1)
    );
    let l = torrents::share_limits_of(&Params::from_pairs(&[])).unwrap();
    assert_eq!(l, ShareLimits::USE_GLOBAL, "absent: the client's");
    let l = torrents::share_limits_of(&Params::from_pairs(&[
        ("ratioLimit", "-5"),
        ("seedingTimeLimit", "-2"),
    ]))
    .unwrap();
    assert_eq!((l.ratio, l.seeding_time), (-1.0, -2));
    assert!(torrents::share_limits_of(&Params::from_pairs(&[("ratioLimit", "x")])).is_err());
    assert_eq!(torrents::secs_to_minutes(5400), 90);
    assert_eq!(torrents::secs_to_minutes(-2), -2);
    assert_eq!(torrents::tag_list(" a, ,b ,"), ["a", "b"]);
}

#[test]
fn categories_show_name_and_save_path() {
    let v = torrents::categories_json(&[
        crate::client::Category {
            name: "tv".into(),
            save_path: Some("/srv/tv".into()),
        },
        crate::client::Category {
            name: "misc".into(),
            save_path: None,
        },
    ]);
    assert_eq!(
        v,
        json!({
            "tv": {"name": "tv", "savePath": "/srv/tv"},
            "misc": {"name": "misc", "savePath": ""},
        })
    );
}

#[test]
fn preferences_show_queueing_and_share_limits() {
    let auth = crate::api::auth::Auth::new(crate::api::auth::AuthConfig {
        session_ttl: std::time::Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    let api = super::WebApi::new(std::sync::Arc::new(auth), super::WebSettings::default());
    let q = crate::client::QueueConfig {
        enabled: true,
        max_active_downloads: 1,
        max_active_uploads: -1,
        ..Default::default()
    };
    let sl = ShareLimits {
        ratio: 1.25,
        seeding_time: 3600,
        inactive_seeding_time: -1,
        action: crate::client::ShareAction::RemoveWithData,
    };
    let p = super::app::preferences_with(&api, &q, &sl);
    assert_eq!(p["queueing_enabled"], json!(true));
    assert_eq!(p["max_active_downloads"], json!(1));
    assert_eq!(p["max_active_uploads"], json!(-1));
    assert_eq!(p["max_active_torrents"], json!(5));
    assert_eq!(p["slow_torrent_dl_rate_threshold"], json!(2), "KiB/s");
    assert_eq!(p["max_ratio_enabled"], json!(true));
    assert_eq!(p["max_ratio"], json!(1.25));
    assert_eq!(p["max_seeding_time_enabled"], json!(true));
    assert_eq!(p["max_seeding_time"], json!(60), "minutes");
    assert_eq!(p["max_inactive_seeding_time_enabled"], json!(false));
    assert_eq!(p["max_ratio_act"], json!(3), "remove with the files");
    let p = super::app::preferences_with(&api, &q, &ShareLimits::NONE);
    assert_eq!(p["max_ratio_enabled"], json!(false));
    assert_eq!(p["max_ratio"], json!(-1));
    assert_eq!(p["max_ratio_act"], json!(0));
    for code in [0, 1, 3] {
        let a = super::app::share_action_of(code).unwrap();
        assert_eq!(super::app::share_action_code(a), code);
    }
    assert!(super::app::share_action_of(2).is_none(), "no super seeding");
}
