//! Upload and download rate limits, through the seeded simulator: a limit is never exceeded
//! (bytes moved never above limit x elapsed + burst), every leecher still finishes with every
//! byte right, generous limits and limits of nothing stop nothing, and blocks timed out on
//! slow peers go elsewhere. Deterministic (fixed seeds, virtual time).
//!
//! How close to the limit a transfer runs, how evenly peers share one, and what a generous
//! limit costs are tuning, not correctness: `benches/sim_figures.rs` measures and prints them
//! (`cargo bench --bench sim_figures`).

use std::time::Duration;

use ringtorrent::core::config::Config;
use ringtorrent::core::limiter::TokenBucket;
use ringtorrent::core::Time;
use ringtorrent::driver::sim::{simulate, SimConfig, SimReport};

const MIB: u64 = 1 << 20;

fn run(config: SimConfig) -> SimReport {
    let report = simulate(config).expect("valid simulation");
    println!("{report}");
    report
}

/// One seed, leechers joining at once, 256 KiB pieces; links far faster than any limit here
/// (10 MB/s up, 50 MB/s down), so the limits are what binds.
fn base(leechers: usize, size: u64) -> SimConfig {
    SimConfig {
        leechers,
        seeds: 1,
        size,
        piece_len: 256 << 10,
        join_spread: Duration::ZERO,
        time_limit: Duration::from_secs(600),
        seed: 21,
        ..SimConfig::default()
    }
}

fn limited(up: Option<u64>, down: Option<u64>) -> Config {
    Config {
        upload_rate_limit: up,
        download_rate_limit: down,
        ..Config::default()
    }
}

/// The most a token bucket of `limit` bytes a second lets through in `secs`: the rate over
/// the time, the burst it starts full with, and one block (a take larger than what is left
/// may leave it in debt by up to a block).
fn allowed(limit: u64, secs: f64) -> u64 {
    let burst = TokenBucket::new(Some(limit), Time::ZERO).burst();
    (limit as f64 * secs).ceil() as u64 + burst + 16 * 1024
}

fn assert_within(what: &str, bytes: u64, secs: f64, allowed: u64) {
    println!("{what}: {bytes} B in {secs:.3} s, at most {allowed} B allowed");
    assert!(
        bytes <= allowed,
        "{what}: {bytes} B in {secs:.3} s is over the limit (at most {allowed} B)"
    );
}

#[test]
fn limited_seed_never_exceeds_its_upload_limit() {
    let limit = MIB;
    let size = 8 * MIB;
    let mut config = base(1, size);
    config.seed_core = Some(limited(Some(limit), None));
    let r = run(config);
    assert_eq!(r.completed, 1);
    assert!(r.every_byte_right);
    let secs = r.download_s.as_ref().unwrap().max;
    assert_within("seed upload", size, secs, allowed(limit, secs));
}

#[test]
fn limited_leecher_never_exceeds_its_download_limit() {
    // Two unlimited seeds could give 20 MB/s; the leecher paces its requests to 1.5 MiB/s.
    let limit = 3 * MIB / 2;
    let size = 12 * MIB;
    let mut config = base(1, size);
    config.seeds = 2;
    config.core = limited(None, Some(limit));
    config.seed_core = Some(Config::default());
    let r = run(config);
    assert_eq!(r.completed, 1);
    assert!(r.every_byte_right);
    let secs = r.download_s.as_ref().unwrap().max;
    assert_within("leecher download", size, secs, allowed(limit, secs));
}

#[test]
fn peers_sharing_a_limited_seed_stay_within_it_together() {
    // Leechers upload almost nothing (1 B/s), so everything comes from the seed: the limit
    // holds for the sum of both. (How evenly the seed splits it is in the bench.)
    let limit = MIB;
    let size = 4 * MIB;
    let mut config = base(2, size);
    config.core = limited(Some(1), None);
    config.seed_core = Some(limited(Some(limit), None));
    let r = run(config);
    assert_eq!(r.completed, 2);
    assert!(r.every_byte_right);
    // What the two received came from the seed, under its limit, and from each other, each
    // under 1 B/s.
    let secs = r.download_s.as_ref().unwrap().max;
    let most = allowed(limit, secs) + 2 * allowed(1, secs);
    assert_within("two leechers' downloads", 2 * size, secs, most);
}

#[test]
fn generous_limits_stop_nothing() {
    // Limits far above what the links can carry still run through the token buckets; the
    // swarm must finish as an unlimited one does, byte-exact. (What they cost in completion
    // time is in the bench.)
    let config = SimConfig {
        leechers: 8,
        seeds: 1,
        size: 4 * MIB,
        piece_len: 64 << 10,
        seed: 22,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    };
    let free = run(config.clone());
    let mut capped = config;
    capped.core = limited(Some(1 << 40), Some(1 << 40));
    let capped = run(capped);
    assert_eq!(free.completed, 8);
    assert!(free.every_byte_right);
    assert_eq!(capped.completed, 8);
    assert!(capped.every_byte_right);
    assert_eq!(capped.hash_failures, 0);
}

#[test]
fn unlimited_config_is_the_default() {
    let c = Config::default();
    assert_eq!(c.upload_rate_limit, None);
    assert_eq!(c.download_rate_limit, None);
    let zero = limited(Some(0), Some(0)).sanitized();
    assert_eq!(
        zero.upload_rate_limit, None,
        "0 means unlimited, as in libtorrent"
    );
    assert_eq!(zero.download_rate_limit, None);
}

/// Three leechers that upload almost nothing (1 B/s) to each other: their requests to one
/// another time out. Each timed-out block must go to the seed, not back to the slow peer that
/// sat on it; before the tick topped up responsive peers first, two slow peers could hold
/// an endgame block between them for good and one leecher never finished.
#[test]
fn blocks_timed_out_on_slow_peers_go_to_the_seed() {
    // 16 MiB at 1 MiB/s takes 16 s; two minutes is ample. Seeds 1 to 8 all stalled before.
    let mut config = base(4, 4 * MIB);
    config.seed = 4;
    config.time_limit = Duration::from_secs(120);
    config.core = limited(Some(1), None);
    config.seed_core = Some(limited(Some(MIB), None));
    let r = run(config);
    assert_eq!(r.completed, 4, "every leecher finishes");
    assert!(r.every_byte_right);
}
