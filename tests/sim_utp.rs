//! The seeded simulator over uTP: the real uTP endpoint (LEDBAT, selective acks,
//! retransmission) in every node, over a simulated datagram network with real per-packet
//! loss and drop-tail queues. Deterministic (fixed seeds); each test runs in seconds in a
//! debug build. (Same seed, same report over uTP: `tests/swarm.rs`, `same_seed_same_report`.)

use std::time::Duration;

use ringtorrent::driver::sim::{simulate, SimConfig, SimReport, Transport};

fn run(config: SimConfig) -> SimReport {
    let report = simulate(config).expect("valid simulation");
    println!("{report}");
    report
}

/// 20 leechers and a seed, 2 MiB, over uTP only.
fn utp_swarm() -> SimConfig {
    SimConfig {
        leechers: 20,
        seeds: 1,
        size: 2 << 20,
        piece_len: 64 << 10,
        transport: Transport::Utp,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    }
}

#[test]
fn utp_swarm_with_loss_completes_byte_exact() {
    let r = run(SimConfig {
        loss: 0.03,
        seed: 31,
        ..utp_swarm()
    });
    assert_eq!(r.completed, 20, "every leecher finishes");
    assert!(r.every_byte_right);
    assert_eq!(r.transport, "utp");
    assert_eq!(
        r.transports.get("tcp"),
        None,
        "a TCP connection in a uTP swarm"
    );
    assert!(r.transports.get("utp").copied().unwrap_or(0) >= 40);
    let u = r.utp.expect("uTP figures");
    // Loss really dropped packets, about as often as asked, and uTP recovered them.
    let rate = u.packets_lost as f64 / u.packets_sent as f64;
    assert!((0.02..0.04).contains(&rate), "loss rate {rate}");
    assert!(u.retransmits > 0, "nothing was resent");
    assert!(
        u.fast_resends > 0,
        "selective acks never triggered a resend"
    );
    assert!(u.mean_window >= 1200.0, "window {}", u.mean_window);
    assert_eq!(u.fallbacks, 0);
}

#[test]
fn utp_without_loss_resends_nothing() {
    // The contrast to the test above: with no loss and room in the queues, no packet is
    // lost and none is resent (a resend here would be a spurious time-out). Everyone is
    // there from the start: a SYN to a leecher not yet joined would go unanswered and be
    // resent, rightly.
    let r = run(SimConfig {
        seed: 32,
        leechers: 10,
        join_spread: Duration::ZERO,
        ..utp_swarm()
    });
    assert_eq!(r.completed, 10);
    assert!(r.every_byte_right);
    let u = r.utp.expect("uTP figures");
    assert_eq!(u.packets_lost, 0);
    assert_eq!(u.queue_drops, 0);
    assert_eq!(u.unanswered, 0);
    assert_eq!(u.timeouts, 0, "a spurious time-out");
    assert_eq!(u.retransmits, 0, "a spurious resend");
}

#[test]
fn ledbat_fills_the_queue_to_its_target_and_drop_tail_bounds_it() {
    // One seed, one leecher, a slow uplink (1 MB/s) and a 300 ms buffer: LEDBAT grows the
    // window until its own queuing delay nears the 100 ms target, and holds it there, well
    // short of the buffer (no drops). With a 20 ms buffer, the queue overflows first: drops,
    // recovered.
    let slow = SimConfig {
        leechers: 1,
        seeds: 1,
        seed: 33,
        up_rate: 1_000_000,
        join_spread: Duration::ZERO,
        ..utp_swarm()
    };
    let r = run(SimConfig {
        queue_limit: Duration::from_millis(300),
        ..slow.clone()
    });
    assert_eq!(r.completed, 1);
    assert!(r.every_byte_right);
    let u = r.utp.expect("uTP figures");
    assert_eq!(u.queue_drops, 0, "LEDBAT overflowed a 300 ms buffer");
    assert!(
        (30.0..150.0).contains(&u.mean_queue_ms),
        "LEDBAT's queue: {} ms",
        u.mean_queue_ms
    );
    let r = run(SimConfig {
        queue_limit: Duration::from_millis(20),
        ..slow
    });
    assert_eq!(r.completed, 1);
    assert!(r.every_byte_right);
    let u = r.utp.expect("uTP figures");
    assert!(u.queue_drops > 0, "a 20 ms buffer never overflowed");
    assert!(u.mean_queue_ms <= 40.0, "queue {} ms", u.mean_queue_ms);
    assert!(u.retransmits > 0);
}

#[test]
fn mixed_transports_complete() {
    // Nodes take tcp, utp and both in turn (the seed is tcp): uTP-only and TCP-only nodes
    // cannot reach each other and meet through the `both` ones; a `both` node's uTP dial to
    // a TCP-only node gets no answer and falls back to TCP, as the engine's does.
    let r = run(SimConfig {
        loss: 0.02,
        seed: 34,
        transport_mix: vec![Transport::Tcp, Transport::Utp, Transport::Both],
        ..utp_swarm()
    });
    assert_eq!(r.completed, 20);
    assert!(r.every_byte_right);
    assert_eq!(r.transport, "tcp,utp,both");
    assert!(r.transports.get("tcp").copied().unwrap_or(0) > 0);
    assert!(r.transports.get("utp").copied().unwrap_or(0) > 0);
    let u = r.utp.expect("uTP figures");
    assert!(u.fallbacks > 0, "no uTP dial fell back to TCP");
    assert!(u.unanswered > 0, "no SYN went to a TCP-only node");
    assert!(u.packets_lost > 0 && u.retransmits > 0);
}

#[test]
fn corrupt_seeds_are_banned_over_utp() {
    let r = run(SimConfig {
        leechers: 15,
        seeds: 1,
        corrupt: 3,
        loss: 0.02,
        seed: 35,
        ..utp_swarm()
    });
    assert_eq!(r.completed, 15);
    assert!(r.every_byte_right, "corrupt data survived verification");
    assert!(r.hash_failures > 0, "corrupt peers did send bad pieces");
    assert_eq!(r.corrupt_peers_banned, 3, "every corrupt peer is banned");
    assert_eq!(r.honest_peers_banned, 0);
    assert!(r.closes.get("banned").copied().unwrap_or(0) > 0);
}

#[test]
fn churn_over_utp_completes() {
    // Leechers leave (their endpoints reset every connection) and come back with a fresh
    // endpoint; packets in flight to the old one are dropped as unknown.
    let r = run(SimConfig {
        leechers: 10,
        seed: 36,
        loss: 0.01,
        churn_mean_online: Some(Duration::from_secs(3)),
        churn_offline: Duration::from_secs(1),
        ..utp_swarm()
    });
    assert_eq!(r.completed, 10);
    assert!(r.every_byte_right);
}

#[test]
fn silent_peers_are_timed_out_over_utp() {
    // A silent node's endpoint completes the uTP handshake and acks what it is sent, but
    // nothing above it answers: the core's handshake time-out must still fire.
    let mut config = SimConfig {
        leechers: 5,
        silent: 3,
        seed: 37,
        ..utp_swarm()
    };
    config.core.handshake_timeout = Duration::from_millis(200);
    let r = run(config);
    assert_eq!(r.completed, 5);
    assert!(r.every_byte_right);
    assert!(
        r.closes.get("handshake_timeout").copied().unwrap_or(0) > 0,
        "{:?}",
        r.closes
    );
}
