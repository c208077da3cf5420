//! `swarm-load` against real clients on 127.0.0.1: synthetic leechers download from a
//! ringtorrent seed and a libtorrent seed (download mode), synthetic seeds feed a ringtorrent
//! leecher and a libtorrent leecher (upload mode), with corrupting seeds the target must ban,
//! and two shard reports that `report merge` adds exactly. Every process is ended by PID and
//! binds a port of its own choosing, which it reports.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{loopback_addr, ringtorrent, run_bounded, run_ok, support, Proc, START_LIMIT};

const MIB: u64 = 1 << 20;

/// `swarm-load gen` into `dir`: returns the torrent and the data folder.
fn gen(
    dir: &Path,
    mib: u64,
    piece: &str,
    files: usize,
) -> (std::path::PathBuf, std::path::PathBuf) {
    run_ok(
        ringtorrent()
            .args(["swarm-load", "gen", "--size", &mib.to_string()])
            .args(["--piece-length", piece, "--files", &files.to_string(), "-o"])
            .arg(dir),
    );
    (dir.join("swarm-load.torrent"), dir.join("data"))
}

/// Runs `swarm-load run --json` with `args` and returns the report.
fn load(torrent: &Path, target: &str, args: &[&str]) -> serde_json::Value {
    let out = run_bounded(
        ringtorrent()
            .args(["swarm-load", "run", "--target", target, "--torrent"])
            .arg(torrent)
            .args(["--json", "--timeout", "60"])
            .args(args),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn counter(r: &serde_json::Value, name: &str) -> u64 {
    r["counters"][name].as_u64().unwrap_or(0)
}

/// A `ringtorrent seed` on 127.0.0.1 (any free port), with the address it reported.
fn rt_seed(torrent: &Path, data: &Path, work: &Path, io: &str) -> (Proc, String) {
    let proc = Proc::watch(
        &format!("ringtorrent seed --io {io}"),
        ringtorrent()
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args([
                "--duration",
                "90",
                "--max-peers",
                "500",
                "--io",
                io,
                "--state-dir",
            ])
            .arg(work.join(format!("seed-state-{io}"))),
        &work.join(format!("seed-{io}.log")),
    );
    let addr = loopback_addr(&proc.first_line(START_LIMIT));
    (proc, addr)
}

/// Download mode: every synthetic leecher downloads the whole payload and every block checks
/// out; the report's bytes are peers x payload.
fn download_mode_against(target: &str, torrent: &Path, peers: u64, size: u64, io: &str) {
    let r = load(
        torrent,
        target,
        &[
            "--mode",
            "download",
            "--peers",
            &peers.to_string(),
            "--io",
            io,
            "--source-ips",
            "127.0.0.2-127.0.0.100",
        ],
    );
    assert_eq!(counter(&r, "run.timed_out"), 0, "{r:#}");
    assert_eq!(counter(&r, "peers.passes"), peers, "{r:#}");
    assert_eq!(counter(&r, "bytes.down"), peers * size, "{r:#}");
    assert_eq!(counter(&r, "blocks.bad"), 0);
    assert_eq!(
        counter(&r, "blocks.ok"),
        peers * size.div_ceil(16 * 1024),
        "{r:#}"
    );
    assert!(r["histograms"]["latency_us.request_to_block"]["counts"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
}

#[test]
fn synthetic_leechers_download_from_a_ringtorrent_seed() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB in three files, so pieces cross files.
    let (torrent, data) = gen(dir.path(), 8, "256K", 3);
    let size = 8 * MIB;
    for io in ["uring", "epoll"] {
        let (_seed, addr) = rt_seed(&torrent, &data, dir.path(), io);
        download_mode_against(&addr, &torrent, 20, size, io);
    }
}

#[test]
fn synthetic_leechers_download_from_a_libtorrent_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data) = gen(dir.path(), 4, "64K", 1);
    // lt_seed.py runs while its stdin is open: the pipe to it lives as long as `seed`.
    let seed = Proc::watch(
        "lt_seed.py",
        Command::new("/usr/bin/python3")
            .arg(support("lt_seed.py"))
            .arg(&torrent)
            .arg(&data)
            .args(["--max-seconds", "90"])
            .stdin(std::process::Stdio::piped()),
        &dir.path().join("lt-seed.log"),
    );
    let line = seed.first_line(START_LIMIT);
    let info: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("lt_seed.py said {line:?}: {e}\n{}", seed.log()));
    let port = info["port"].as_u64().unwrap();
    download_mode_against(&format!("127.0.0.1:{port}"), &torrent, 10, 4 * MIB, "uring");
}

/// Upload mode: synthetic seeds feed a leecher, which completes byte for byte; a tenth of
/// the seeds corrupt every block, and the target drops them (it bans them) and still
/// finishes from the others.
#[test]
fn synthetic_seeds_feed_a_ringtorrent_leecher_and_corrupt_ones_are_banned() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data) = gen(dir.path(), 8, "64K", 1);
    let out = dir.path().join("out");
    let leecher = Proc::watch(
        "ringtorrent download",
        ringtorrent()
            .arg("download")
            .arg(&torrent)
            .arg("-o")
            .arg(&out)
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--seed", "--timeout", "60", "--state-dir"])
            .arg(dir.path().join("leech-state")),
        &dir.path().join("leecher.log"),
    );
    let addr = loopback_addr(&leecher.wait_line(START_LIMIT, "where it listens", |_, l| {
        l.contains("listening on")
    }));
    let r = load(
        &torrent,
        &addr,
        &[
            "--mode",
            "upload",
            "--peers",
            "20",
            "--corrupt-rate",
            "0.1",
            "--source-ips",
            "127.0.0.2-127.0.0.100",
        ],
    );
    assert_eq!(counter(&r, "run.timed_out"), 0, "{r:#}\n{}", leecher.log());
    assert!(counter(&r, "bytes.up") >= 8 * MIB, "{r:#}");
    assert!(counter(&r, "blocks.corrupt_sent") > 0, "{r:#}");
    assert_eq!(
        counter(&r, "corrupt_peers.dropped"),
        2,
        "both corrupting seeds (a tenth of 20) are dropped by the target: {r:#}"
    );
    let name = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    assert_eq!(
        std::fs::read(out.join(&name)).unwrap(),
        std::fs::read(data.join(&name)).unwrap()
    );
    drop(leecher);
}

#[test]
fn synthetic_seeds_feed_a_libtorrent_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data) = gen(dir.path(), 4, "64K", 1);
    let out = dir.path().join("out");
    let mut leecher = Proc::watch(
        "lt_leech.py",
        Command::new("/usr/bin/python3")
            .arg(support("lt_leech.py"))
            .arg(&torrent)
            .arg(&out)
            .args(["--timeout", "60"])
            .stdin(std::process::Stdio::null()),
        &dir.path().join("lt-leech.log"),
    );
    let addr = loopback_addr(&leecher.wait_line(START_LIMIT, "where it listens", |_, l| {
        l.contains("listening on")
    }));
    let r = load(&torrent, &addr, &["--mode", "upload", "--peers", "8"]);
    let status = leecher.wait_exit(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", leecher.log());
    assert!(counter(&r, "bytes.up") >= 4 * MIB, "{r:#}");
    let name = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    assert_eq!(
        std::fs::read(out.join(&name)).unwrap(),
        std::fs::read(data.join(&name)).unwrap()
    );
}

/// Two shards of one run, merged: the counters add up to the whole run's, and a report of
/// another tool cannot be merged in.
#[test]
fn shard_reports_merge_into_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data) = gen(dir.path(), 2, "64K", 1);
    let (_seed, addr) = rt_seed(&torrent, &data, dir.path(), "uring");
    let mut files = Vec::new();
    let mut passes = 0;
    for i in 0..2 {
        let path = dir.path().join(format!("shard{i}.json"));
        let shard = format!("{i}/2");
        let r = load(
            &torrent,
            &addr,
            &[
                "--mode",
                "download",
                "--peers",
                "7",
                "--shard",
                &shard,
                "-o",
                path.to_str().unwrap(),
            ],
        );
        assert_eq!(r["shard"], serde_json::json!([i, 2]));
        passes += counter(&r, "peers.passes");
        files.push(path);
    }
    assert_eq!(passes, 7, "the shards split the seven peers between them");
    let out = run_ok(
        ringtorrent()
            .args(["report", "merge", "--json"])
            .args(&files),
    );
    let merged: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counter(&merged, "peers.passes"), 7);
    assert_eq!(counter(&merged, "bytes.down"), 7 * 2 * MIB);
    assert_eq!(counter(&merged, "blocks.ok"), 7 * 2 * MIB / (16 * 1024));
    // The text table names the tool's figures.
    let text = run_ok(ringtorrent().args(["report", "merge"]).args(&files));
    assert!(text.contains("Jain's fairness"), "{text}");
    // Another tool's report does not mix in.
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    other["tool"] = "tracker-load".into();
    let odd = dir.path().join("other.json");
    std::fs::write(&odd, other.to_string()).unwrap();
    let out = run_bounded(
        ringtorrent()
            .args(["report", "merge"])
            .arg(&files[1])
            .arg(&odd),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tracker-load"));
}

/// Churn: each synthetic leecher drops its connection every 40 blocks and dials again; every
/// one still downloads everything, byte-checked, and the report counts the reconnections.
#[test]
fn churning_leechers_still_download_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data) = gen(dir.path(), 2, "64K", 1);
    let (_seed, addr) = rt_seed(&torrent, &data, dir.path(), "epoll");
    let r = load(
        &torrent,
        &addr,
        &[
            "--mode",
            "download",
            "--peers",
            "4",
            "--churn-blocks",
            "40",
            "--io",
            "epoll",
        ],
    );
    assert_eq!(counter(&r, "run.timed_out"), 0, "{r:#}");
    assert_eq!(counter(&r, "peers.passes"), 4, "{r:#}");
    assert_eq!(counter(&r, "blocks.bad"), 0);
    // 128 blocks each, a reconnect every 40: at least 3 per peer.
    assert!(counter(&r, "churn.reconnects") >= 12, "{r:#}");
    assert!(counter(&r, "conn.handshakes") >= 16, "{r:#}");
}
