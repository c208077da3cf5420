//! `scripts/shard-local.sh`, the local rehearsal of the Kubernetes load Jobs: two shards of
//! `swarm-load` (download mode against a ringtorrent seed on 127.0.0.1, a fixed amount of
//! work: every synthetic leecher downloads the whole payload once) started as the Indexed
//! Job starts its pods, merged with `report merge`, count what one unsharded run of the same
//! seed counts.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{loopback_addr, ringtorrent, run_bounded, run_ok, Proc, START_LIMIT};

/// A counter of a report (a report leaves out those that stayed zero).
fn counter(r: &serde_json::Value, name: &str) -> u64 {
    r["counters"][name].as_u64().unwrap_or(0)
}

/// How many samples a histogram of a report holds.
fn samples(r: &serde_json::Value, name: &str) -> u64 {
    r["histograms"][name]["counts"]
        .as_array()
        .unwrap_or_else(|| panic!("no histogram {name}: {r}"))
        .iter()
        .map(|c| c[1].as_u64().unwrap())
        .sum()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn two_local_shards_merge_to_the_counts_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    run_ok(
        ringtorrent()
            .args([
                "swarm-load",
                "gen",
                "--size",
                "4",
                "--piece-length",
                "64K",
                "-o",
            ])
            .arg(work),
    );
    let torrent = work.join("swarm-load.torrent");
    let seed = Proc::watch(
        "ringtorrent seed",
        ringtorrent()
            .arg("seed")
            .arg(&torrent)
            .arg(work.join("data"))
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "120"])
            .args(["--max-peers", "100", "--state-dir"])
            .arg(work.join("seed-state")),
        &work.join("seed.log"),
    );
    let target = loopback_addr(&seed.first_line(START_LIMIT));
    let torrent_arg = torrent.to_str().unwrap();
    // Six leechers from six addresses (the seed takes at most 8 from one), seed 7.
    let tool_args = [
        "swarm-load",
        "run",
        "--target",
        &target,
        "--torrent",
        torrent_arg,
        "--mode",
        "download",
        "--peers",
        "6",
        "--source-ips",
        "127.0.0.2-127.0.0.7",
        "--timeout",
        "60",
        "--seed",
        "7",
    ];

    let whole = work.join("whole.json");
    let out = run_bounded(
        ringtorrent().args(tool_args).arg("--output").arg(&whole),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let reports = work.join("reports");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/shard-local.sh");
    let out = run_bounded(
        Command::new("bash")
            .arg(&script)
            .arg("2")
            .args(tool_args)
            .env("RINGTORRENT", env!("CARGO_BIN_EXE_ringtorrent"))
            .env("REPORTS", &reports)
            .env("HOME", work)
            .env("RINGTORRENT_DHT_BOOTSTRAP", "")
            .env("RINGTORRENT_LSD", "off"),
        Duration::from_secs(120),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");

    let whole = read_json(&whole);
    let merged = read_json(&reports.join("swarm-load.json"));
    // Each shard ran its part of the peers, as `--shard I/2`, and knew its index.
    for i in 0..2u64 {
        let shard = read_json(&reports.join(format!("swarm-load-shard-{i}.json")));
        assert_eq!(shard["shard"], serde_json::json!([i, 2]), "{shard}");
        assert_eq!(counter(&shard, "peers.passes"), 3, "{shard}");
    }
    assert_eq!(counter(&whole, "run.timed_out"), 0, "{whole}");
    assert_eq!(counter(&merged, "run.timed_out"), 0, "{merged}");
    for name in [
        "bytes.down",
        "bytes.up",
        "blocks.ok",
        "blocks.bad",
        "peers.passes",
        "peers.gave_up",
        "fair.n",
        "conn.connected",
        "conn.handshakes",
    ] {
        assert_eq!(
            counter(&merged, name),
            counter(&whole, name),
            "{name}: merged {merged}\nwhole {whole}"
        );
    }
    assert_eq!(counter(&whole, "bytes.down"), 6 * 4 * (1 << 20), "{whole}");
    assert_eq!(counter(&whole, "blocks.ok"), 6 * 4 * 64, "{whole}");
    // The merged histograms hold every shard's samples: one per block, one per handshake.
    for name in [
        "latency_us.request_to_block",
        "latency_us.dial_to_handshake",
    ] {
        assert_eq!(samples(&merged, name), samples(&whole, name), "{name}");
    }
    assert_eq!(samples(&merged, "latency_us.request_to_block"), 6 * 4 * 64);
    drop(seed);
}
