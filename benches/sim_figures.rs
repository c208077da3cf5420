//! Tuning figures of the protocol core, measured in the seeded simulator (virtual time, so
//! each figure is the same on every machine and every run): how evenly a swarm's leechers
//! upload, how much endgame wastes, how fast an endgame ends, how close rate-limited
//! transfers run to their limit, how evenly a limited seed splits its rate, and what a
//! generous limit costs. `tests/swarm.rs` and `tests/rate_limits.rs` assert only correctness
//! (everyone finishes, every byte right, limits never exceeded); these are the numbers to
//! watch when tuning, each printed beside the target it was tuned to.
//!
//! `cargo bench --bench sim_figures`, or `scripts/bench-simulate.sh`, which runs it after the
//! large swarm. Run without `--bench` (as `cargo test --benches` does) it runs the same
//! scenarios as a self-check. It exits non-zero if a scenario does not complete (nothing to
//! measure); a figure off its target is reported, not failed.

use std::time::Duration;

use ringtorrent::core::config::Config;
use ringtorrent::driver::sim::{simulate, SimConfig, SimReport};

const MIB: u64 = 1 << 20;

/// One printed figure.
struct Figure {
    scenario: &'static str,
    name: &'static str,
    value: f64,
    target: &'static str,
    meets: bool,
}

fn run(what: &str, config: SimConfig) -> SimReport {
    let leechers = config.leechers;
    let r = simulate(config).unwrap_or_else(|e| {
        eprintln!("sim_figures: {what}: invalid simulation: {e}");
        std::process::exit(1);
    });
    if r.completed != leechers || !r.every_byte_right {
        eprintln!(
            "sim_figures: {what}: {} of {leechers} leechers finished (every byte right: {}); \
             nothing to measure\n{r}",
            r.completed, r.every_byte_right
        );
        std::process::exit(1);
    }
    r
}

fn small() -> SimConfig {
    SimConfig {
        size: 4 * MIB,
        piece_len: 64 << 10,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    }
}

/// As `tests/rate_limits.rs`: one seed, leechers joining at once, 256 KiB pieces, links far
/// faster than the limits.
fn rate_base(leechers: usize, size: u64) -> SimConfig {
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

fn main() {
    let mut figures = Vec::new();
    let mut add = |scenario, name, value: f64, target, meets: bool| {
        figures.push(Figure {
            scenario,
            name,
            value,
            target,
            meets,
        })
    };

    let s = "1 seed, 50 leechers, 4 MiB";
    let r = run(
        s,
        SimConfig {
            leechers: 50,
            seeds: 1,
            seed: 11,
            ..small()
        },
    );
    add(
        s,
        "leecher upload fairness (Jain)",
        r.upload_fairness,
        "> 0.3",
        r.upload_fairness > 0.3,
    );
    let waste = 100.0 * r.bytes_wasted as f64 / r.bytes_downloaded.max(1) as f64;
    add(s, "wasted % of downloaded", waste, "< 5", waste < 5.0);
    let t = r.completion_s.unwrap_or(f64::NAN);
    add(s, "last leecher done, s", t, "-", true);

    let s = "1 leecher, 4 seeds, 4 MiB (endgame)";
    let r = run(
        s,
        SimConfig {
            leechers: 1,
            seeds: 4,
            seed: 16,
            join_spread: Duration::ZERO,
            ..small()
        },
    );
    // 4 MiB at a 50 MB/s downlink is 0.08 s.
    let t = r.completion_s.unwrap_or(f64::NAN);
    add(s, "done, s", t, "< 5", t < 5.0);

    let s = "seed limited to 1 MiB/s, 8 MiB";
    let mut config = rate_base(1, 8 * MIB);
    config.seed_core = Some(limited(Some(MIB), None));
    let r = run(s, config);
    let achieved = (8 * MIB) as f64 / r.download_s.as_ref().unwrap().max / MIB as f64;
    add(
        s,
        "achieved / limit",
        achieved,
        "0.9-1.1",
        (0.9..=1.1).contains(&achieved),
    );

    let s = "leecher limited to 1.5 MiB/s, 2 seeds, 12 MiB";
    let limit = 3 * MIB / 2;
    let mut config = rate_base(1, 12 * MIB);
    config.seeds = 2;
    config.core = limited(None, Some(limit));
    config.seed_core = Some(Config::default());
    let r = run(s, config);
    let achieved = (12 * MIB) as f64 / r.download_s.as_ref().unwrap().max / limit as f64;
    add(
        s,
        "achieved / limit",
        achieved,
        "0.9-1.1",
        (0.9..=1.1).contains(&achieved),
    );

    // With a work-conserving seed the last leecher finishes at 2 x size / limit however the
    // seed splits its rate; the first finishes at the same time only if the split is even.
    let s = "2 leechers sharing a seed limited to 1 MiB/s, 4 MiB";
    let mut config = rate_base(2, 4 * MIB);
    config.core = limited(Some(1), None);
    config.seed_core = Some(limited(Some(MIB), None));
    let r = run(s, config);
    let d = r.download_s.as_ref().unwrap();
    add(
        s,
        "first / last done",
        d.min / d.max,
        ">= 0.9",
        d.min / d.max >= 0.9,
    );
    let achieved = (8 * MIB) as f64 / d.max / MIB as f64;
    add(
        s,
        "achieved / limit",
        achieved,
        "0.9-1.1",
        (0.9..=1.1).contains(&achieved),
    );

    let s = "8 leechers, limits of 1 TiB/s vs none";
    let config = SimConfig {
        leechers: 8,
        seeds: 1,
        size: 4 * MIB,
        piece_len: 64 << 10,
        seed: 22,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    };
    let free = run(s, config.clone());
    let mut capped = config;
    capped.core = limited(Some(1 << 40), Some(1 << 40));
    let capped = run(s, capped);
    let (a, b) = (
        free.completion_s.unwrap_or(f64::NAN),
        capped.completion_s.unwrap_or(f64::NAN),
    );
    let change = 100.0 * (b - a) / a;
    add(
        s,
        "completion time change %",
        change,
        "within 10",
        change.abs() <= 10.0,
    );

    println!("| scenario | figure | value | target | on target |");
    println!("|---|---|---:|---|---|");
    for f in &figures {
        println!(
            "| {} | {} | {:.4} | {} | {} |",
            f.scenario,
            f.name,
            f.value,
            f.target,
            if f.meets { "yes" } else { "NO" }
        );
    }
}
