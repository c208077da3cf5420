//! Transfers across an emulated link (tools/link-emu, see tests/common/link.rs) instead of
//! loopback: a seed in one network namespace, a leecher in the other, the link between them
//! with delay (20 ms each way), 1% loss, 1% reordering and a rate limit (50 Mbit/s). ringtorrent to ringtorrent on both I/O
//! backends (over TCP, and over uTP only), and libtorrent leeching from ringtorrent; every payload compared byte for byte,
//! and the emulator's counters show the packets went across the link and some were lost.
//! Everything is bounded in time and ended by its handle.

mod common;

use std::path::Path;
use std::time::Duration;

use common::link::{counter, Link, Side, ADDR_A, ADDR_B};
use common::{run_bounded, run_ok, same_tree, support, write_payload, Proc, START_LIMIT};

/// A 3 MiB payload (and its torrent, 256 KiB pieces) in `dir`.
fn payload(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    write_payload(&data.join("across.bin"), 3 << 20, 23);
    let torrent = dir.join("across.torrent");
    run_ok(
        common::ringtorrent()
            .arg("create")
            .arg(data.join("across.bin"))
            .args(["-l", "256K", "-o"])
            .arg(&torrent),
    );
    (data, torrent)
}

/// `ringtorrent seed` on side A with backend `io`; returns it and the address it listens on.
fn seed_on_a(link: &Link, dir: &Path, torrent: &Path, data: &Path, io: &str) -> (Proc, String) {
    seed_on_a_with(link, dir, torrent, data, io, &[])
}

/// As [`seed_on_a`], with `extra` arguments.
fn seed_on_a_with(
    link: &Link,
    dir: &Path,
    torrent: &Path,
    data: &Path,
    io: &str,
    extra: &[&str],
) -> (Proc, String) {
    let mut cmd = link.ringtorrent(Side::A);
    cmd.arg("seed")
        .arg(torrent)
        .arg(data)
        .args(["--port", "0", "--bind", ADDR_A, "--io", io])
        .args(extra)
        .args(["--duration", "150", "--state-dir"])
        .arg(dir.join("seed-state"));
    let seed = Proc::watch(&format!("seed --io {io}"), &mut cmd, &dir.join("seed.log"));
    let line = seed.first_line(START_LIMIT);
    let prefix = format!("{ADDR_A}:");
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}PORT in {line:?}"))
        .to_owned();
    (seed, addr)
}

/// The packets went across the link, in both directions, and the link lost and reordered
/// some of them.
fn link_was_used(log: &str) {
    for dir in ["a->b", "b->a"] {
        assert!(counter(log, dir, "delivered") > 100, "{log}");
    }
    assert!(counter(log, "a->b", "lost") > 0, "{log}");
    assert!(counter(log, "a->b", "reordered") > 0, "{log}");
}

fn ringtorrent_across(io: &str) {
    ringtorrent_across_with(io, &[]);
}

/// ringtorrent to ringtorrent across the lossy, reordering link, both given `extra`.
fn ringtorrent_across_with(io: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    let link = Link::start(
        "20ms,1%,50mbit,reorder=1%",
        Duration::from_secs(170),
        dir.path(),
    );
    let (_seed, addr) = seed_on_a_with(&link, dir.path(), &torrent, &data, io, extra);
    leech_on_b(&link, dir.path(), &torrent, &data, &addr, io, extra);
    link_was_used(&link.finish());
}

/// ringtorrent on side B downloads `torrent` from the seed at `addr` (with `extra` flags);
/// it must succeed, and its copy equal `data`.
fn leech_on_b(
    link: &Link,
    dir: &Path,
    torrent: &Path,
    data: &Path,
    addr: &str,
    io: &str,
    extra: &[&str],
) {
    let out = dir.join("out");
    let result = run_bounded(
        link.ringtorrent(Side::B)
            .arg("download")
            .arg(torrent)
            .arg("-o")
            .arg(&out)
            .args(["--bind", ADDR_B, "--peer", addr, "--io", io])
            .args(extra)
            .args(["--timeout", "120", "--state-dir"])
            .arg(dir.join("leech-state")),
        Duration::from_secs(140),
    );
    assert!(
        result.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    same_tree(data, &out);
}

#[test]
fn ringtorrent_to_ringtorrent_across_a_lossy_link_uring() {
    ringtorrent_across("uring");
}

#[test]
fn ringtorrent_to_ringtorrent_across_a_lossy_link_epoll() {
    ringtorrent_across("epoll");
}

/// Over uTP only (TCP refused and never dialled): the endpoint's retransmission and
/// reordering under the engine, byte-exact.
#[test]
fn ringtorrent_to_ringtorrent_over_utp_across_a_lossy_link_uring() {
    ringtorrent_across_with("uring", &["--transport", "utp"]);
}

#[test]
fn ringtorrent_to_ringtorrent_over_utp_across_a_lossy_link_epoll() {
    ringtorrent_across_with("epoll", &["--transport", "utp"]);
}

/// Over uTP only across a clean link whose devices have a 1400-byte MTU (the sockets send
/// with don't-fragment, so bigger datagrams are refused by the kernel with `EMSGSIZE` and
/// the MTU it names is read from the error queue): the transfer is byte-exact and path MTU
/// discovery settles just under the path. The seed's packets average more than a fixed
/// 1200-byte payload could make them (at most 1200 + 54 + 28 = 1282 bytes of IP packet,
/// with the largest selective ack), and none is over the MTU (the link carried them).
#[test]
fn utp_path_mtu_discovery_settles_under_a_1400_byte_link() {
    for io in ["uring", "epoll"] {
        mtu_1400_across(io);
    }
}

fn mtu_1400_across(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = payload(dir.path());
    let link = Link::start("1ms", Duration::from_secs(170), dir.path());
    for side in [Side::A, Side::B] {
        run_ok(
            link.command(side, "ip")
                .args(["link", "set", "dev", "le0", "mtu", "1400"]),
        );
    }
    let utp = ["--transport", "utp"];
    let (_seed, addr) = seed_on_a_with(&link, dir.path(), &torrent, &data, io, &utp);
    leech_on_b(&link, dir.path(), &torrent, &data, &addr, io, &utp);
    let log = link.finish();
    let (packets, bytes) = (
        counter(&log, "a->b", "offered"),
        counter(&log, "a->b", "bytes"),
    );
    assert!(packets > 2000, "{log}");
    let average = bytes / packets;
    eprintln!("{io}: a->b: {packets} packets, {bytes} bytes, {average} on average");
    assert!(
        (1290..=1400).contains(&average),
        "{io}: the seed's packets average {average} bytes\n{log}"
    );
}

#[test]
fn libtorrent_leeches_from_ringtorrent_across_a_lossy_reordering_link() {
    for io in common::interop::BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let (data, torrent) = payload(dir.path());
        let link = Link::start(
            "20ms,jitter=2ms,1%,reorder=1%,50mbit",
            Duration::from_secs(170),
            dir.path(),
        );
        let (_seed, addr) = seed_on_a(&link, dir.path(), &torrent, &data, io);
        let out = dir.path().join("out");
        let result = run_bounded(
            link.command(Side::B, "/usr/bin/python3")
                .arg(support("lt_leech.py"))
                .arg(&torrent)
                .arg(&out)
                .args(["--peer", &addr, "--listen-ip", ADDR_B, "--timeout", "120"]),
            Duration::from_secs(140),
        );
        assert!(
            result.status.success(),
            "libtorrent from --io {io}: {}\n{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        same_tree(&data, &out);
        let log = link.finish();
        link_was_used(&log);
    }
}
