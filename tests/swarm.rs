//! Protocol behaviour tested through the seeded simulator: whole swarms of the real core on a
//! virtual clock. Each test is deterministic (fixed seed) and runs in a few seconds.
//!
//! The tests assert correctness: everyone finishes, every byte right, bad peers banned,
//! nothing waits out a time-out it should not. How fair, how wasteful and how fast a swarm
//! is are tuning figures: `benches/sim_figures.rs` measures and prints them
//! (`cargo bench --bench sim_figures`).

use std::time::Duration;

use ringtorrent::driver::sim::{simulate, SimConfig, SimReport, Transport};

fn run(config: SimConfig) -> SimReport {
    let report = simulate(config).expect("valid simulation");
    println!("{report}");
    report
}

fn small() -> SimConfig {
    SimConfig {
        size: 4 << 20,
        piece_len: 64 << 10,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    }
}

#[test]
fn one_seed_fifty_leechers_complete_byte_exact() {
    let r = run(SimConfig {
        leechers: 50,
        seeds: 1,
        seed: 11,
        ..small()
    });
    assert_eq!(r.completed, 50, "every leecher finishes");
    assert!(r.every_byte_right);
    assert_eq!(r.hash_failures, 0);
    // Leechers meet each other, not only the seed (how evenly they then upload is in the
    // bench).
    assert!(
        r.leecher_links > 0,
        "leechers never connected to each other"
    );
}

#[test]
fn corrupt_peers_are_banned_and_the_swarm_completes() {
    let r = run(SimConfig {
        leechers: 20,
        seeds: 1,
        corrupt: 5,
        seed: 12,
        ..small()
    });
    assert_eq!(r.completed, 20);
    assert!(
        r.every_byte_right,
        "corrupt data never survives verification"
    );
    assert!(r.hash_failures > 0, "corrupt peers did send bad pieces");
    assert_eq!(
        r.corrupt_peers_banned, 5,
        "every corrupt peer is banned by someone"
    );
    assert!(r.closes.get("banned").copied().unwrap_or(0) > 0);
}

/// Smart ban: a piece that failed is refetched and compared block by block, so only the
/// peers whose block differs from the verified copy are banned; the honest peers that shared
/// a failed piece with a corrupt one are not. With 64 KiB pieces (the shape) a failed
/// piece mostly has one sender, banned at once; with 256 KiB pieces several peers share failed
/// pieces, which is where strikes banned honest peers (and where banning every earlier sender
/// instead of those whose block differs fails this test).
#[test]
fn smart_ban_bans_corrupt_peers_and_no_honest_one() {
    for (seed, leechers, corrupt, piece_len) in [
        (5, 40, 4, 64 << 10),
        (12, 20, 5, 256 << 10),
        (21, 30, 6, 256 << 10),
    ] {
        let config = || SimConfig {
            leechers,
            seeds: 2,
            corrupt,
            seed,
            piece_len,
            ..small()
        };
        let r = run(config());
        assert_eq!(r.completed, leechers, "seed {seed}");
        assert!(r.every_byte_right, "seed {seed}");
        assert!(
            r.hash_failures > 0,
            "seed {seed}: corrupt peers sent bad pieces"
        );
        assert_eq!(
            r.corrupt_peers_banned, corrupt,
            "seed {seed}: every corrupt peer is banned by someone"
        );
        assert_eq!(
            r.honest_peers_banned, 0,
            "seed {seed}: an honest peer was banned"
        );
        // Same seed, same report.
        assert_eq!(
            simulate(config()).expect("valid simulation"),
            r,
            "seed {seed}"
        );
    }
}

#[test]
fn churn_does_not_stop_completion() {
    let r = run(SimConfig {
        leechers: 30,
        seeds: 1,
        seed: 13,
        churn_mean_online: Some(Duration::from_secs(3)),
        churn_offline: Duration::from_secs(2),
        ..small()
    });
    assert_eq!(r.completed, 30);
    assert!(r.every_byte_right);
    assert!(
        r.closes.get("remote_closed").copied().unwrap_or(0) > 0,
        "peers did leave: {:?}",
        r.closes
    );
}

#[test]
fn loss_and_latency_still_complete() {
    let r = run(SimConfig {
        leechers: 10,
        seeds: 2,
        seed: 14,
        loss: 0.02,
        latency: Duration::from_millis(80),
        ..small()
    });
    assert_eq!(r.completed, 10);
    assert!(r.every_byte_right);
}

#[test]
fn silent_peers_are_timed_out() {
    // A short handshake time-out, so that it fires before the swarm finishes.
    let mut config = SimConfig {
        leechers: 5,
        seeds: 1,
        silent: 3,
        seed: 15,
        ..small()
    };
    config.core.handshake_timeout = Duration::from_millis(200);
    let r = run(config);
    assert_eq!(r.completed, 5);
    assert!(
        r.closes.get("handshake_timeout").copied().unwrap_or(0) > 0,
        "{:?}",
        r.closes
    );
}

#[test]
fn endgame_finishes_without_stalls() {
    // One leecher pulling from four seeds: at the end every missing block is outstanding at
    // some seed; endgame duplicates them so the last piece never waits on one deep queue.
    let r = run(SimConfig {
        leechers: 1,
        seeds: 4,
        seed: 16,
        join_spread: Duration::ZERO,
        ..small()
    });
    assert_eq!(r.completed, 1);
    assert!(r.every_byte_right);
    // A stall is a block left waiting on one peer until the request time-out gives it back;
    // without one the download ends well before that time-out could first fire (virtual
    // time, so this holds on any machine). How fast it ends is in the bench.
    let t = r.completion_s.unwrap();
    let timeout = SimConfig::default().core.request_timeout.as_secs_f64();
    assert!(
        t < timeout,
        "finished in {t} s: something waited out the {timeout} s time-out"
    );
}

#[test]
fn same_seed_same_report() {
    // Over TCP, and over uTP with real packet loss (the endpoints' timers, ids and the losses
    // drawn all replay).
    for (transport, loss) in [(Transport::Tcp, 0.0), (Transport::Utp, 0.02)] {
        let config = SimConfig {
            leechers: 8,
            seeds: 1,
            corrupt: 1,
            seed: 99,
            transport,
            loss,
            ..small()
        };
        let a = run(config.clone());
        let b = run(config);
        assert_eq!(a, b, "{transport}");
        assert_eq!(a.to_string(), b.to_string(), "{transport}");
        assert_eq!(a.transport, transport.to_string());
    }
}
