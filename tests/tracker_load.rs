//! `ringtorrent tracker-load` against a real opentracker on 127.0.0.1 (UDP and HTTP on one
//! port), whitelisting the hashes `--print-hashes` gives: runs that complete with counts
//! that agree with the generator's model, wrong connection ids reported as errors, a stopped
//! tracker reported as time-outs (not a hang), shard reports merged, and the loopback guard.
//!
//! Debian's opentracker is whitelist-only, refuses to run as root and chroots: it is started
//! with `-u nobody -d DIR -w whitelist` and ended by PID (as in `tests/tracker.rs`).
//!
//! Counts are checked, never speed: every run gets a time-out far above a loopback round
//! trip, a lost packet (a full socket buffer on a loaded machine) is allowed as a time-out
//! within a small share, and the only bound on elapsed time is `run_bounded`'s, against hangs.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::fake_tracker::{FakeTracker, Fault};
use common::opentracker::OpenTracker;
use common::{ringtorrent, run_bounded};
use serde_json::Value;

const TORRENTS: u32 = 50;

fn hashes(seed: u64) -> Vec<String> {
    let out = run_bounded(
        ringtorrent().args([
            "tracker-load",
            "udp://127.0.0.1:1",
            "--print-hashes",
            "--torrents",
            &TORRENTS.to_string(),
            "--seed",
            &seed.to_string(),
        ]),
        Duration::from_secs(20),
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let hs: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(hs.len(), TORRENTS as usize);
    hs
}

/// opentracker whitelisting the torrents of every run seeded with `seeds`.
fn tracker_for(seeds: &[u64]) -> OpenTracker {
    let all: Vec<String> = seeds.iter().flat_map(|&s| hashes(s)).collect();
    OpenTracker::start(&all)
}

/// A time-out per attempt far above any loopback round trip, even on a loaded machine; it
/// costs nothing unless a packet is lost (a run ends once nothing is in flight).
const TIMEOUT_MS: &str = "5000";

/// Runs `tracker-load URL ARGS --json` (bounded) and returns its report. `--timeout-ms` is
/// `TIMEOUT_MS` unless `args` sets it.
fn load(url: &str, seed: u64, args: &[&str]) -> Value {
    let mut cmd = ringtorrent();
    cmd.args(["tracker-load", url, "--json", "--torrents"])
        .arg(TORRENTS.to_string())
        .args(["--seed", &seed.to_string()]);
    if !args.contains(&"--timeout-ms") {
        cmd.args(["--timeout-ms", TIMEOUT_MS]);
    }
    let out = run_bounded(cmd.args(args), Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tracker-load failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn c(report: &Value, name: &str) -> u64 {
    report["counters"][name].as_u64().unwrap_or(0)
}

/// opentracker's conventions: counts and may list the announcing peer, counts downloads,
/// numwant 0 gets no peers.
const OPENTRACKER: [(&str, &str); 4] = [
    ("counts-self", "yes"),
    ("returns-self", "yes"),
    ("counts-downloads", "yes"),
    ("zero-numwant-default", "no"),
];

/// aquatic's (and the fake's): the announcing peer neither counted nor listed, downloaded
/// always 0, numwant 0 gets the default list.
const AQUATIC: [(&str, &str); 4] = [
    ("counts-self", "no"),
    ("returns-self", "no"),
    ("counts-downloads", "no"),
    ("zero-numwant-default", "yes"),
];

/// Every one of `workers` workers detected each convention as `want` says, none was
/// contradicted. `returns-self=no` needs a reply listing every other peer with room to
/// spare, which a hammer run may not give: undetected passes there.
fn assert_conventions(r: &Value, workers: u64, want: [(&str, &str); 4]) {
    for (k, v) in want {
        let got = c(r, &format!("convention.{k}.{v}"));
        let undetected = c(r, &format!("convention.{k}.undetected"));
        if k == "returns-self" && v == "no" {
            assert_eq!(got + undetected, workers, "{k}: {}", r["counters"]);
        } else {
            assert_eq!(got, workers, "{k}={v}: {}", r["counters"]);
        }
        assert_eq!(c(r, &format!("convention.{k}.conflicts")), 0, "{k}");
    }
}

/// Everything the model checks; time-outs (lost packets: the model tolerates their unknown
/// fate) only within 2% of what was sent.
fn assert_correct(r: &Value) {
    for bad in [
        "check.counts_wrong",
        "check.over_numwant",
        "check.duplicate_peer",
        "check.stopped_peer_returned",
        "check.unknown_peer",
        "check.scrape_counts_wrong",
        "check.self_returned",
        "check.inconsistent_convention",
        "announce.malformed",
        "announce.error",
        "reply.wrong_txid",
    ] {
        assert_eq!(c(r, bad), 0, "{bad}: {}", r["counters"]);
    }
    let timeouts: u64 = ["connect.timeout", "announce.timeout", "scrape.timeout"]
        .iter()
        .map(|k| c(r, k))
        .sum();
    let sent: u64 = ["connect.sent", "announce.sent", "scrape.sent"]
        .iter()
        .map(|k| c(r, k))
        .sum();
    assert!(
        timeouts * 50 <= sent,
        "{timeouts} of {sent} timed out: {}",
        r["counters"]
    );
    assert!(c(r, "announce.ok") > 100, "{}", r["counters"]);
    assert_eq!(c(r, "check.counts_ok"), c(r, "announce.ok"));
    assert!(c(r, "check.scrape_counts_ok") > 0, "{}", r["counters"]);
    let h = &r["histograms"]["latency_us.announce"]["counts"];
    let n: u64 = h
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .sum();
    assert_eq!(n, c(r, "announce.ok"));
}

#[test]
fn udp_run_against_opentracker_agrees_with_the_model() {
    let t = tracker_for(&[11]);
    let url = format!("udp://127.0.0.1:{}", t.port);
    // Hammer: every peer's lifecycle (started, regular, completed, stopped, started again)
    // runs many times in two seconds, with a seedbox and mixed numwant.
    let r = load(
        &url,
        11,
        &[
            "--peers",
            "500",
            "--hammer",
            "--rate",
            "1500",
            "--duration",
            "2",
            "--numwant",
            "0,5,50,200",
            "--scrape-size",
            "1-74",
            "--seedbox",
            "20",
            "--stop-chance",
            "0.1",
            "--complete-chance",
            "0.2",
            "--silent-completion",
            "0.5",
            "--workers",
            "2",
        ],
    );
    assert_correct(&r);
    assert!(c(&r, "connect.ok") > 0);
    assert_eq!(r["tool"], "tracker-load");
    assert_conventions(&r, 2, OPENTRACKER);
}

#[test]
fn http_run_against_opentracker_agrees_with_the_model() {
    let t = tracker_for(&[12]);
    let url = format!("http://127.0.0.1:{}/announce", t.port);
    let r = load(
        &url,
        12,
        &[
            "--peers",
            "300",
            "--hammer",
            "--rate",
            "400",
            "--duration",
            "2",
            "--numwant",
            "0,5,50",
            "--scrape-size",
            "1-20",
            "--stop-chance",
            "0.1",
            "--complete-chance",
            "0.2",
            "--silent-completion",
            "0.5",
        ],
    );
    assert_correct(&r);
    assert_conventions(&r, 1, OPENTRACKER);
    // opentracker closes after every reply: one connection per request.
    assert!(c(&r, "http.connects") >= c(&r, "announce.ok"));
}

#[test]
fn wrong_connection_ids_are_reported_as_errors() {
    let t = tracker_for(&[13]);
    let url = format!("udp://127.0.0.1:{}", t.port);
    let r = load(
        &url,
        13,
        &[
            "--peers",
            "200",
            "--hammer",
            "--rate",
            "500",
            "--duration",
            "1",
            "--scrape-weight",
            "0",
            "--bad-connection-id",
            "1",
        ],
    );
    let sent = c(&r, "fault.bad_connection_id_sent");
    assert!(sent > 100, "{}", r["counters"]);
    assert_eq!(c(&r, "fault.bad_connection_id_refused"), sent);
    assert_eq!(c(&r, "announce.error"), sent);
    assert_eq!(c(&r, "announce.ok"), 0);
}

#[test]
fn a_stopped_tracker_is_reported_as_timeouts_not_a_hang() {
    // A stopped tracker's port, held by the test so that no other process can take it: a
    // UDP socket bound there and connected to itself matches no other sender, so every
    // packet sent to it gets the kernel's port-unreachable answer, as a closed port does.
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    held.connect(held.local_addr().unwrap()).unwrap();
    let url = format!("udp://{}", held.local_addr().unwrap());
    let r = load(
        &url,
        14,
        &[
            "--peers",
            "2000",
            "--hammer",
            "--rate",
            "200",
            "--duration",
            "1",
            "--timeout-ms",
            "200",
            "--retransmits",
            "1",
        ],
    );
    // Not a hang: `load` bounds the run. Every connect was sent twice and timed out.
    assert!(c(&r, "connect.timeout") > 50, "{}", r["counters"]);
    // The kernel's port-unreachable answers show as receive errors, never as replies.
    assert!(c(&r, "recv.error") > 0, "{}", r["counters"]);
    assert_eq!(c(&r, "connect.timeout"), c(&r, "connect.sent"));
    assert_eq!(c(&r, "connect.retransmit"), c(&r, "connect.sent"));
    assert_eq!(c(&r, "connect.ok") + c(&r, "announce.ok"), 0);
}

#[test]
fn shard_reports_merge_exactly_and_tools_do_not_mix() {
    let t = tracker_for(&[15]);
    let url = format!("udp://127.0.0.1:{}", t.port);
    let dir = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for i in 0..2 {
        let path = dir.path().join(format!("s{i}.json"));
        let r = load(
            &url,
            15,
            &[
                "--peers",
                "200",
                "--hammer",
                "--rate",
                "400",
                "--duration",
                "1",
                "--shard",
                &format!("{i}/2"),
                "-o",
                path.to_str().unwrap(),
            ],
        );
        assert_correct(&r);
        assert_eq!(r["shard"], serde_json::json!([i, 2]));
        reports.push((path, r));
    }
    let out = run_bounded(
        ringtorrent()
            .args(["report", "merge", "--json"])
            .arg(&reports[0].0)
            .arg(&reports[1].0),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["announce.ok", "connect.ok", "scrape.ok", "check.counts_ok"] {
        assert_eq!(
            c(&merged, k),
            c(&reports[0].1, k) + c(&reports[1].1, k),
            "{k}"
        );
    }
    let count = |r: &Value| -> u64 {
        r["histograms"]["latency_us.announce"]["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count(&merged), count(&reports[0].1) + count(&reports[1].1));
    // The text table renders too.
    let text = run_bounded(
        ringtorrent()
            .args(["report", "merge"])
            .arg(&reports[0].0)
            .arg(&reports[1].0),
        Duration::from_secs(20),
    );
    assert!(String::from_utf8_lossy(&text.stdout).contains("p99.9"));

    let mut other = reports[1].1.clone();
    other["tool"] = "swarm-load".into();
    let other_path = dir.path().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let out = run_bounded(
        ringtorrent()
            .args(["report", "merge"])
            .arg(&reports[0].0)
            .arg(&other_path),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot merge different tools"));
}

#[test]
fn targets_outside_loopback_are_refused_unless_allowed() {
    let out = run_bounded(
        ringtorrent().args(["tracker-load", "udp://192.0.2.1:6969", "--duration", "1"]),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );
}

/// The hammer run the fake trackers get: every lifecycle step, mixed numwant (0 included),
/// scrapes of up to 20 torrents.
fn fake_run(url: &str, seed: u64, extra: &[&str]) -> Value {
    let mut args = vec![
        "--peers",
        "300",
        "--hammer",
        "--rate",
        "600",
        "--duration",
        "2",
        "--numwant",
        "0,5,50,200",
        "--scrape-size",
        "1-20",
        "--stop-chance",
        "0.1",
        "--complete-chance",
        "0.2",
        "--silent-completion",
        "0.5",
    ];
    args.extend_from_slice(extra);
    load(url, seed, &args)
}

#[test]
fn a_correct_tracker_with_aquatics_conventions_is_never_wrong() {
    let udp = FakeTracker::udp(Fault::None);
    let r = fake_run(
        &format!("udp://127.0.0.1:{}", udp.port),
        21,
        &["--workers", "2"],
    );
    assert_correct(&r);
    assert_conventions(&r, 2, AQUATIC);
    let http = FakeTracker::http(Fault::None);
    let url = format!("http://127.0.0.1:{}/announce", http.port);
    let r = fake_run(&url, 22, &[]);
    assert_correct(&r);
    assert_conventions(&r, 1, AQUATIC);
    // Told opentracker's conventions instead, every counted reply is wrong, and the report
    // shows one.
    let r = fake_run(&url, 23, &["--conventions", "opentracker"]);
    assert!(c(&r, "check.counts_wrong") > 100, "{}", r["counters"]);
    let ex = r["params"]["wrong_examples"][0].as_str().unwrap_or("");
    assert!(
        ex.contains("counted by this tracker") && ex.contains("tolerance"),
        "{ex}"
    );
}

#[test]
fn trackers_that_break_rules_are_caught_whatever_their_conventions() {
    for (fault, counter) in [
        (Fault::Miscount, "check.counts_wrong"),
        (Fault::ReturnsStopped, "check.stopped_peer_returned"),
        (Fault::IgnoresNumwant, "check.over_numwant"),
    ] {
        let t = FakeTracker::udp(fault);
        let r = fake_run(&format!("udp://127.0.0.1:{}", t.port), 24, &[]);
        assert!(c(&r, counter) > 50, "{fault:?}: {}", r["counters"]);
        assert!(
            r["params"]["wrong_examples"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{fault:?}: {}",
            r["params"]
        );
    }
    let t = FakeTracker::http(Fault::Miscount);
    let r = fake_run(&format!("http://127.0.0.1:{}/announce", t.port), 25, &[]);
    assert!(c(&r, "check.counts_wrong") > 50, "{}", r["counters"]);
    assert!(c(&r, "check.scrape_counts_wrong") > 10, "{}", r["counters"]);
}

#[test]
fn the_table_says_which_conventions_were_detected_and_shows_a_wrong_reply() {
    let t = FakeTracker::udp(Fault::Miscount);
    let out = run_bounded(
        ringtorrent().args([
            "tracker-load",
            &format!("udp://127.0.0.1:{}", t.port),
            "--torrents",
            "20",
            "--peers",
            "100",
            "--hammer",
            "--rate",
            "300",
            "--duration",
            "1",
            "--timeout-ms",
            TIMEOUT_MS,
            "--conventions",
            "counts-downloads=no",
        ]),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tracker conventions (--conventions counts-downloads=no; what it")
            && text.contains("scrape downloaded is always 0")
            && text.contains("  wrong: announce of torrent"),
        "{text}"
    );
    // A convention that does not exist is refused.
    let out = run_bounded(
        ringtorrent().args([
            "tracker-load",
            "udp://127.0.0.1:1",
            "--conventions",
            "counts-everyone=yes",
        ]),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown convention"));
}
