//! `ringtorrent serve` as a user runs it, on 127.0.0.1: the control API (every route and its
//! errors), the watch folder (added, garbage ignored, removed), a restart that does not hash
//! again what was verified, SIGTERM's clean stop, bad configs, and a leecher downloading from
//! it. Every process is ended by PID and has its own config and state; requests go through a
//! minimal HTTP client here.

mod common;

use std::time::{Duration, Instant};

use common::serve::{torrent, Serve};
use common::{loopback_addr, ringtorrent, run_bounded, run_ok, Proc, START_LIMIT};

/// Waits until `f` holds, up to `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn the_api_adds_lists_limits_pauses_resumes_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let (t, hash) = torrent(dir.path(), "api.bin", 1_000_003, 1);
    let serve = Serve::start(dir.path(), &[]);
    let bytes = std::fs::read(&t).unwrap();

    let (status, v) = serve.json("POST", "/torrents", &bytes);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["info_hash"], hash.as_str());
    let (status, _) = serve.json("POST", "/torrents", &bytes);
    assert_eq!(status, 409, "the same torrent twice");
    let (status, v) = serve.json("GET", "/torrents", b"");
    assert_eq!(status, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        v[0]["state"], "seeding",
        "its data was there and checked: {v}"
    );
    assert_eq!(v[0]["progress"], 1.0);

    let path = format!("/torrents/{hash}/limits");
    let (status, v) = serve.json("PUT", &path, br#"{"upload": 1048576, "download": null}"#);
    assert_eq!(status, 200, "{v}");
    let (_, v) = serve.json("GET", &format!("/torrents/{hash}"), b"");
    assert_eq!(v["upload_limit"], 1048576);
    assert_eq!(v["download_limit"], serde_json::Value::Null);

    let (status, v) = serve.json("POST", &format!("/torrents/{hash}/pause"), b"");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        serve.json("GET", &format!("/torrents/{hash}"), b"").1["state"],
        "paused"
    );
    let (status, _) = serve.json("POST", &format!("/torrents/{hash}/resume"), b"");
    assert_eq!(status, 200);
    assert_eq!(
        serve.json("GET", &format!("/torrents/{hash}"), b"").1["state"],
        "seeding"
    );
    let (status, v) = serve.json("GET", &format!("/torrents/{hash}/peers"), b"");
    assert_eq!((status, v), (200, serde_json::json!([])));

    // Errors are 4xx with a message, and the session goes on.
    let unknown = "ab".repeat(20);
    for (method, path, body, want) in [
        ("GET", format!("/torrents/{unknown}"), &b""[..], 404),
        ("GET", "/torrents/not-a-hash".to_string(), b"", 400),
        ("PUT", path.clone(), b"{nope", 400),
        ("PUT", path.clone(), br#"{"upload": "fast"}"#, 400),
        ("POST", "/torrents".to_string(), b"d4:infoi1ee", 400),
        ("POST", "/torrents".to_string(), b"{\"x\": ", 400),
        (
            "POST",
            "/torrents".to_string(),
            br#"{"magnet": "magnet:?xt=urn:btih:00"}"#,
            400,
        ),
        ("POST", "/torrents".to_string(), br#"{"magnet": 7}"#, 400),
        ("DELETE", format!("/torrents/{unknown}"), b"", 404),
        ("GET", "/nowhere".to_string(), b"", 404),
    ] {
        let (status, v) = serve.json(method, &path, body);
        assert_eq!(status, want, "{method} {path}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (status, text) = serve.http("GET", "/metrics", b"");
    assert_eq!(status, 200);
    for metric in [
        "ringtorrent_uploaded_bytes_total",
        "ringtorrent_pieces_verified_total",
        "ringtorrent_peers{state=\"connected\"}",
        "ringtorrent_disk_queue_depth",
        "ringtorrent_upload_buffered_bytes",
        "ringtorrent_connections_accepted_total",
        "ringtorrent_loop_turns_total{loop=\"1\"}",
        "ringtorrent_torrents{state=\"active\"} 1",
        "ringtorrent_request_latency_seconds_count",
        "ringtorrent_hash_wait_seconds_count",
        "ringtorrent_announce_seconds_count",
        "ringtorrent_descriptors{state=\"limit\"}",
        "ringtorrent_descriptors{state=\"open\"}",
        "ringtorrent_connection_limit{kind=\"budget\"}",
        "ringtorrent_connection_limit{kind=\"max_connections\"}",
    ] {
        assert!(text.contains(metric), "{metric} missing:\n{text}");
    }

    // Removing with its data deletes the file; the session is empty again.
    let (status, _) = serve.json("DELETE", &format!("/torrents/{hash}?delete_data=true"), b"");
    assert_eq!(status, 200);
    assert!(!dir.path().join("data/api.bin").exists());
    assert_eq!(serve.json("GET", "/torrents", b"").1, serde_json::json!([]));
    assert!(serve.stop().success());
}

#[test]
fn the_watch_folder_adds_ignores_garbage_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let (t, hash) = torrent(dir.path(), "watched.bin", 300_001, 2);
    let w = watch.to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("serve.toml"), "watch_interval = 1\n").unwrap();
    let serve = Serve::start(dir.path(), &["--watch-dir", &w]);
    std::fs::write(watch.join("garbage.torrent"), b"this is not bencode").unwrap();
    std::fs::copy(&t, watch.join("good.torrent")).unwrap();
    let listed = |serve: &Serve| serve.json("GET", "/torrents", b"").1;
    assert!(
        eventually(Duration::from_secs(15), || listed(&serve)[0]["info_hash"]
            == hash.as_str()),
        "{}",
        serve.log()
    );
    assert_eq!(
        listed(&serve).as_array().unwrap().len(),
        1,
        "the garbage file added nothing"
    );
    assert!(
        serve.log().contains("garbage.torrent not added"),
        "{}",
        serve.log()
    );
    // Nothing changes: inotify says so, and the folder is not scanned again each second.
    let metric = |serve: &Serve, name: &str| -> u64 {
        let (_, text) = serve.http("GET", "/metrics", b"");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(metric(&serve, "ringtorrent_watch_notified"), 1);
    assert_eq!(metric(&serve, "ringtorrent_watch_files"), 2);
    // The scan that added the file may have raced the tail of the copy's events, which then
    // bring one more (idle) scan; a tick that skips has drained them all.
    let settled = metric(&serve, "ringtorrent_watch_skipped_total");
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &serve,
            "ringtorrent_watch_skipped_total"
        ) > settled),
        "no tick skipped its scan:\n{}",
        serve.log()
    );
    let (scans, skipped) = (
        metric(&serve, "ringtorrent_watch_scans_total"),
        metric(&serve, "ringtorrent_watch_skipped_total"),
    );
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(metric(&serve, "ringtorrent_watch_scans_total"), scans);
    assert!(metric(&serve, "ringtorrent_watch_skipped_total") >= skipped + 2);
    // Rewritten in place (the folder's listing unchanged): the new torrent is added.
    let (other, other_hash) = torrent(dir.path(), "rewritten.bin", 200_003, 5);
    std::fs::write(watch.join("good.torrent"), std::fs::read(&other).unwrap()).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || listed(&serve)
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["info_hash"] == other_hash.as_str())),
        "{}",
        serve.log()
    );
    assert!(metric(&serve, "ringtorrent_watch_scans_total") > scans);
    assert!(
        eventually(Duration::from_secs(15), || listed(&serve)
            .as_array()
            .unwrap()
            .len()
            == 1),
        "the torrent the file held before stays: {}",
        listed(&serve)
    );
    std::fs::remove_file(watch.join("good.torrent")).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || listed(&serve)
            == serde_json::json!([])),
        "{}",
        serve.log()
    );
    assert!(dir.path().join("data/watched.bin").exists(), "data kept");
    assert!(serve.stop().success());
}

#[test]
fn a_restart_trusts_resume_data_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (t, hash) = torrent(dir.path(), "restart.bin", 2_000_017, 3);
    let serve = Serve::start(dir.path(), &[]);
    assert_eq!(
        serve
            .json("POST", "/torrents", &std::fs::read(&t).unwrap())
            .0,
        201
    );
    let (status, _) = serve.json("POST", &format!("/torrents/{hash}/pause"), b"");
    assert_eq!(status, 200);
    let first_log = serve.log();
    assert!(
        first_log.contains("restart.bin: checking the data"),
        "{first_log}"
    );
    let status = serve.stop();
    assert!(status.success(), "SIGTERM: {status:?}");

    let serve = Serve::start(dir.path(), &[]);
    let (_, v) = serve.json("GET", "/torrents", b"");
    assert_eq!(v[0]["info_hash"], hash.as_str(), "{v}");
    assert_eq!(v[0]["state"], "paused", "settings survive the restart");
    assert_eq!(
        serve
            .json("POST", &format!("/torrents/{hash}/resume"), b"")
            .0,
        200
    );
    assert_eq!(serve.json("GET", "/torrents", b"").1[0]["state"], "seeding");
    let log = serve.log();
    let checks = log.matches("restart.bin: checking the data").count();
    assert_eq!(checks, 1, "the restart hashed again:\n{log}");

    // A leecher downloads from it.
    let out = dir.path().join("leech");
    let leech_state = dir.path().join("leech-state");
    let result = run_bounded(
        ringtorrent()
            .arg("download")
            .arg(&t)
            .arg("-o")
            .arg(&out)
            .args([
                "--peer",
                &serve.peers,
                "--bind",
                "127.0.0.1",
                "--timeout",
                "60",
            ])
            .arg("--state-dir")
            .arg(&leech_state),
        Duration::from_secs(90),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("restart.bin")).unwrap(),
        std::fs::read(dir.path().join("data/restart.bin")).unwrap()
    );
    assert!(serve.stop().success());
}

#[test]
fn bad_configs_and_a_taken_port_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let out = run_bounded(
        ringtorrent().arg("serve").arg("--config").arg(&config),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen"), "{err}");

    // config print is a valid config.
    let printed = run_ok(ringtorrent().args(["config", "print"]));
    std::fs::write(&config, printed).unwrap();
    run_ok(ringtorrent().args(["config", "check"]).arg(&config));

    // The test holds the API's port; the config is an empty one of the test's own.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = run_bounded(
        ringtorrent()
            .arg("serve")
            .arg("--config")
            .arg(&empty)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--api",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .arg("--state-dir")
            .arg(dir.path().join("s")),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// A torrent whose data vanished while the seedbox was down is held with a clear error, not
/// given empty files to download again; the other torrents serve on; putting the data back
/// and resuming brings it back without a download.
#[test]
fn a_torrent_whose_data_vanished_is_held_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (a, hash_a) = torrent(dir.path(), "kept.bin", 300_007, 4);
    let (b, hash_b) = torrent(dir.path(), "gone.bin", 300_011, 5);
    let serve = Serve::start(dir.path(), &[]);
    for t in [&a, &b] {
        assert_eq!(
            serve
                .json("POST", "/torrents", &std::fs::read(t).unwrap())
                .0,
            201
        );
    }
    assert!(serve.stop().success());
    let data = dir.path().join("data/gone.bin");
    let aside = dir.path().join("gone.bin.aside");
    std::fs::rename(&data, &aside).unwrap();

    let serve = Serve::start(dir.path(), &[]);
    let (_, v) = serve.json("GET", &format!("/torrents/{hash_b}"), b"");
    assert_eq!(v["state"], "error", "{v}");
    assert!(v["error"].as_str().unwrap().contains("gone.bin"), "{v}");
    assert!(!data.exists(), "no empty file was made in its place");
    assert_eq!(
        serve.json("GET", &format!("/torrents/{hash_a}"), b"").1["state"],
        "seeding"
    );

    std::fs::rename(&aside, &data).unwrap();
    assert_eq!(
        serve
            .json("POST", &format!("/torrents/{hash_b}/resume"), b"")
            .0,
        200
    );
    let (_, v) = serve.json("GET", &format!("/torrents/{hash_b}"), b"");
    assert_eq!(v["state"], "seeding", "{v}");
    assert_eq!(v["error"], serde_json::Value::Null);
    assert!(serve.stop().success());
}

/// A magnet link added through the API: the seedbox fetches the metadata from the link's
/// peer, then the data, and keeps it as a torrent (a restart loads it from the state folder).
#[test]
fn a_magnet_link_added_through_the_api_is_fetched_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    let (t, hash) = torrent(&seed_dir, "magnet.bin", 700_001, 6);
    let seed = Proc::watch(
        "ringtorrent seed",
        ringtorrent()
            .arg("seed")
            .arg(&t)
            .arg(seed_dir.join("data"))
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "60"])
            .arg("--state-dir")
            .arg(seed_dir.join("state")),
        &dir.path().join("seed.log"),
    );
    let addr = loopback_addr(&seed.first_line(START_LIMIT));
    let serve = Serve::start(dir.path(), &[]);
    let uri = format!("magnet:?xt=urn:btih:{hash}&dn=magnet.bin&x.pe={addr}");
    let body = serde_json::json!({ "magnet": uri }).to_string();
    let (status, v) = serve.json("POST", "/torrents", body.as_bytes());
    assert_eq!(status, 201, "{v}");
    let done = eventually(Duration::from_secs(30), || {
        serve.json("GET", &format!("/torrents/{hash}"), b"").1["state"] == "seeding"
    });
    drop(seed);
    assert!(done, "{}", serve.log());
    assert_eq!(
        std::fs::read(dir.path().join("data/magnet.bin")).unwrap(),
        std::fs::read(seed_dir.join("data/magnet.bin")).unwrap()
    );
    assert!(serve.stop().success());
    let serve = Serve::start(dir.path(), &[]);
    let (_, v) = serve.json("GET", &format!("/torrents/{hash}"), b"");
    assert_eq!(v["state"], "seeding", "kept as a torrent: {v}");
    assert!(serve.stop().success());
}

/// A metric's value on a `/metrics` page (the line `name value`, labels included in `name`).
fn metric(page: &str, name: &str) -> f64 {
    let line = page
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{page}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `/metrics` exports the process's CPU time (user and system counters, seconds) and the
/// CPU-seconds per GiB uploaded: NaN before anything was served, then the counters' sum over
/// the bytes uploaded, and the counters move while a leecher downloads.
#[test]
fn metrics_export_cpu_seconds_and_their_cost_per_gib_served() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = torrent(dir.path(), "cpu.bin", 8_000_009, 5);
    let serve = Serve::start(dir.path(), &[]);
    assert_eq!(
        serve
            .json("POST", "/torrents", &std::fs::read(&t).unwrap())
            .0,
        201
    );
    let scrape = || {
        let (status, page) = serve.http("GET", "/metrics", b"");
        assert_eq!(status, 200);
        page
    };
    let before = scrape();
    for help in [
        "# TYPE ringtorrent_cpu_seconds_total counter",
        "# TYPE ringtorrent_cpu_seconds_per_uploaded_gibibyte gauge",
    ] {
        assert!(before.contains(help), "{help} missing:\n{before}");
    }
    let cpu = |page: &str| {
        (
            metric(page, "ringtorrent_cpu_seconds_total{mode=\"user\"}"),
            metric(page, "ringtorrent_cpu_seconds_total{mode=\"system\"}"),
        )
    };
    let (user0, sys0) = cpu(&before);
    assert!(user0 > 0.0 && sys0 >= 0.0, "{user0} {sys0}");
    assert_eq!(metric(&before, "ringtorrent_uploaded_bytes_total"), 0.0);
    assert!(metric(&before, "ringtorrent_cpu_seconds_per_uploaded_gibibyte").is_nan());

    let out = dir.path().join("leech");
    let result = run_bounded(
        ringtorrent()
            .arg("download")
            .arg(&t)
            .arg("-o")
            .arg(&out)
            .args([
                "--peer",
                &serve.peers,
                "--bind",
                "127.0.0.1",
                "--timeout",
                "60",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("leech-state")),
        Duration::from_secs(90),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );

    let after = scrape();
    let (user1, sys1) = cpu(&after);
    assert!(
        user1 + sys1 > user0 + sys0 && user1 >= user0 && sys1 >= sys0,
        "serving 8 MB cost no CPU: {user0}+{sys0} -> {user1}+{sys1}"
    );
    let up = metric(&after, "ringtorrent_uploaded_bytes_total");
    assert!(up >= 8_000_009.0, "{up}");
    let per_gib = metric(&after, "ringtorrent_cpu_seconds_per_uploaded_gibibyte");
    let expect = (user1 + sys1) / (up / (1u64 << 30) as f64);
    assert!(
        per_gib > 0.0 && (per_gib - expect).abs() <= expect * 0.05,
        "{per_gib} against {expect}: the page's counters over its uploaded bytes"
    );
    assert!(serve.stop().success());
}
