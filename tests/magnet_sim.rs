//! Magnet links and peer exchange through the seeded simulator: leechers that start from the
//! info hash alone fetch the metadata from seeds (BEP 9), reject a peer serving corrupt
//! metadata, and leechers that only knew the seed find each other by PEX (BEP 11).

use std::time::Duration;

use ringtorrent::driver::sim::{simulate, SimConfig, SimReport};

fn run(config: SimConfig) -> SimReport {
    let report = simulate(config).expect("valid simulation");
    println!("{report}");
    println!(
        "metadata received {} (wrong {}), leecher links {}",
        report.metadata_received, report.metadata_wrong, report.leecher_links
    );
    report
}

#[test]
fn magnet_leechers_fetch_the_metadata_then_the_data() {
    let r = run(SimConfig {
        leechers: 10,
        seeds: 2,
        size: 4 << 20,
        piece_len: 64 << 10,
        magnet: true,
        seed: 21,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    });
    assert_eq!(r.completed, 10);
    assert!(r.every_byte_right);
    assert_eq!(r.metadata_received, 10);
    assert_eq!(r.metadata_wrong, 0);
}

#[test]
fn a_peer_serving_corrupt_metadata_is_rejected_and_the_download_completes() {
    // 16 KiB pieces of 16 MiB: 20 KiB of metadata in two pieces, so an attempt can mix a
    // good peer's piece with the bad one's and the culprit must be found.
    let r = run(SimConfig {
        leechers: 4,
        seeds: 2,
        bad_metadata: 2,
        size: 16 << 20,
        piece_len: 16 << 10,
        magnet: true,
        seed: 22,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    });
    assert_eq!(r.completed, 4);
    assert!(r.every_byte_right);
    assert_eq!(r.metadata_wrong, 0);
    assert_eq!(r.metadata_received, 4);
    assert!(
        r.closes.get("corrupt_metadata").copied().unwrap_or(0) >= 1,
        "{:?}",
        r.closes
    );
}

#[test]
fn pex_lets_leechers_that_only_knew_the_seed_find_each_other() {
    let config = SimConfig {
        leechers: 2,
        seeds: 1,
        size: 8 << 20,
        piece_len: 64 << 10,
        seeds_only: true,
        up_rate: 100_000,
        seed: 23,
        time_limit: Duration::from_secs(600),
        ..SimConfig::default()
    };
    let r = run(config.clone());
    assert_eq!(r.completed, 2);
    assert!(r.every_byte_right);
    assert!(
        r.leecher_links >= 2,
        "the leechers met: {}",
        r.leecher_links
    );
    // Without PEX they never meet.
    let mut off = config;
    off.core.pex = false;
    let r = run(off);
    assert_eq!(r.leecher_links, 0);
}
