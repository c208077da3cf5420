//! Upload and download rate limits, through the seeded simulator: a limited seed serves at
//! its limit, a limited leecher downloads at its limit, peers sharing a limited seed get even
//! shares, and limits of nothing change nothing. Deterministic (fixed seeds); each test moves
//! several virtual seconds of data so that the initial burst is a small part of it.

use std::time::Duration;

use ringtorrent::core::config::Config;
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

/// Achieved rate over a transfer of `bytes` taking `secs`, as a fraction of `limit`.
fn ratio(bytes: u64, secs: f64, limit: u64) -> f64 {
    bytes as f64 / secs / limit as f64
}

#[test]
fn limited_seed_serves_at_its_upload_limit() {
    let limit = MIB;
    let size = 8 * MIB;
    let mut config = base(1, size);
    config.seed_core = Some(limited(Some(limit), None));
    let r = run(config);
    assert_eq!(r.completed, 1);
    assert!(r.every_byte_right);
    let secs = r.download_s.as_ref().unwrap().max;
    let achieved = ratio(size, secs, limit);
    println!("upload limit {limit} B/s: {size} B in {secs:.3} s = {achieved:.4} of the limit");
    assert!((0.9..=1.1).contains(&achieved), "{achieved}");
}

#[test]
fn limited_leecher_downloads_at_its_download_limit() {
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
    let achieved = ratio(size, secs, limit);
    println!("download limit {limit} B/s: {size} B in {secs:.3} s = {achieved:.4} of the limit");
    assert!((0.9..=1.1).contains(&achieved), "{achieved}");
}

#[test]
fn peers_sharing_a_limited_seed_get_even_shares() {
    // With a work-conserving seed the last leecher finishes at 2 x size / limit however the
    // seed splits its rate; the first finishes at the same time only if the split is even.
    // Leechers upload almost nothing (1 B/s), so they cannot make up for an unfair seed.
    let limit = MIB;
    let size = 4 * MIB;
    let mut config = base(2, size);
    config.core = limited(Some(1), None);
    config.seed_core = Some(limited(Some(limit), None));
    let r = run(config);
    assert_eq!(r.completed, 2);
    assert!(r.every_byte_right);
    let d = r.download_s.as_ref().unwrap();
    println!(
        "2 leechers, seed limit {limit} B/s: first {:.3} s, last {:.3} s, first/last {:.4}, \
         total {:.4} of the limit",
        d.min,
        d.max,
        d.min / d.max,
        ratio(2 * size, d.max, limit)
    );
    assert!(d.min / d.max >= 0.9, "first {} s, last {} s", d.min, d.max);
    let achieved = ratio(2 * size, d.max, limit);
    assert!((0.9..=1.1).contains(&achieved), "{achieved}");
}

#[test]
fn generous_limits_change_nothing() {
    // Limits far above what the links can carry still run through the token buckets; the
    // swarm must finish as an unlimited one does (same completion, byte-exact).
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
    assert_eq!(capped.completed, 8);
    assert!(capped.every_byte_right);
    let (a, b) = (free.completion_s.unwrap(), capped.completion_s.unwrap());
    println!("unlimited {a:.3} s, limited at 1 TiB/s {b:.3} s");
    assert!((b - a).abs() <= a * 0.1, "{a} vs {b}");
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
