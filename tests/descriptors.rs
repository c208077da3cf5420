//! An event loop out of descriptors: `accept` fails with EMFILE while connections wait in the
//! listen backlog. The loop must neither spin nor die, and must take the backlog once
//! descriptors free up, even when no new connection arrives to wake the listener again.
//!
//! This test lowers the soft `RLIMIT_NOFILE` of its own process, so it lives alone in this
//! binary (no other test shares the limit). The flood runs in a child process
//! (`tests/support/flood.py`), whose sockets count against its own limit.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{support, Proc, Stream};
use ringtorrent::core::config::Config;
use ringtorrent::core::wire::{Handshake, Reserved};
use ringtorrent::core::{InfoHash, PeerId, Session, Time};
use ringtorrent::driver::epoll::EpollDriver;
use ringtorrent::driver::uring::{probe, UringDriver};
use ringtorrent::driver::Driver;
use ringtorrent::entropy::OsKeys;
use ringtorrent::storage::{DiskPool, DiskPoolConfig};

/// Connections the flood opens; the loop has room for about a third of them.
const FLOOD: u64 = 90;

/// Descriptors the process may open beyond those open when the limit is lowered: the loop's
/// own (ring or epoll, eventfd, listener), the flood's pipes while it is spawned, and about
/// thirty connections.
const HEADROOM: u64 = 44;

/// What the loop's thread reports while it turns.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    turns: AtomicU64,
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 - 1
}

fn set_soft_nofile(n: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call's duration.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let before = lim.rlim_cur;
    lim.rlim_cur = n;
    // SAFETY: `lim` is a valid rlimit, read by the call only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    before
}

/// Waits, with a deadline, until `done` holds; panics with `what` otherwise.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exhaust(uring: bool) {
    let hash = InfoHash::from_bytes([7; 20]);
    // Lowered before the loop is made: io_uring reads the limit when an accept is armed, and
    // a multishot accept keeps what it read.
    let before = set_soft_nofile(open_descriptors() + HEADROOM);
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let (addr_tx, addr_rx) = mpsc::channel();
    let worker = {
        let (stop, counters) = (stop.clone(), counters.clone());
        std::thread::spawn(move || {
            // A magnet torrent needs no storage; every connection may join it.
            let config = Config {
                max_peers_per_ip: 10_000,
                max_peers_per_torrent: 10_000,
                max_connections: 10_000,
                ..Config::default()
            };
            let mut session = Session::new(
                config,
                PeerId::generate([3; 12]),
                3,
                Box::new(OsKeys::new().unwrap()),
                Time::ZERO,
            );
            session.add_magnet(hash, Time::ZERO).unwrap();
            let listener =
                ringtorrent::driver::net::bind_listeners("127.0.0.1:0".parse().unwrap(), 1)
                    .unwrap()
                    .remove(0);
            let pool = Arc::new(DiskPool::new(DiskPoolConfig::default()).unwrap());
            let mut d = if uring {
                Driver::from(
                    UringDriver::new(session, Some(listener), pool, Instant::now()).unwrap(),
                )
            } else {
                Driver::from(
                    EpollDriver::new(session, Some(listener), pool, Instant::now()).unwrap(),
                )
            };
            addr_tx.send(d.local_addr().unwrap()).unwrap();
            while !stop.load(Ordering::Acquire) {
                // A long wait: the loop turns only for what happens, so turns count work.
                d.turn(Duration::from_secs(1), &mut |_| {}).unwrap();
                let s = d.session();
                counters
                    .accepted
                    .store(s.connection_stats().accepted, Ordering::Release);
                counters
                    .open
                    .store(s.connection_count() as u64, Ordering::Release);
                counters
                    .turns
                    .store(d.loop_stats().turns, Ordering::Release);
            }
        })
    };
    let addr = addr_rx.recv().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut flood = Proc::watch(
        "flood",
        Command::new("python3")
            .arg(support("flood.py"))
            .args([&addr.to_string(), &hash.to_string(), &FLOOD.to_string()])
            .args(["--wait", "5"])
            .stdin(Stdio::piped()),
        &dir.path().join("flood.log"),
    );
    let line = flood.wait_line(Duration::from_secs(60), "its counts", |s, l| {
        s == Stream::Out && l.contains("handshaked")
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let (handshaked, pending) = (
        v["handshaked"].as_u64().unwrap(),
        v["pending"].as_u64().unwrap(),
    );
    // The loop filled its descriptors and `accept` failed with the rest still waiting.
    assert!(handshaked > 0 && pending > 0, "{line}\n{}", flood.log());
    assert_eq!(
        counters.accepted.load(Ordering::Acquire),
        handshaked,
        "{line}"
    );
    // Out of descriptors, the loop waits: retrying every 50 ms, not spinning.
    let turns = counters.turns.load(Ordering::Acquire);
    let measured = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let per_second =
        (counters.turns.load(Ordering::Acquire) - turns) as f64 / measured.elapsed().as_secs_f64();
    assert!(
        per_second < 200.0,
        "{per_second:.0} turns a second while out of descriptors"
    );
    // The flood leaves: its connections close, descriptors free up, and the loop takes what
    // waited in the backlog (closed by now too) although nothing new arrives.
    drop(flood.child.stdin.take());
    flood.wait_line(Duration::from_secs(60), "that it closed", |s, l| {
        s == Stream::Out && l.contains("closed")
    });
    wait_for("the backlog taken", Duration::from_secs(30), || {
        counters.accepted.load(Ordering::Acquire) == FLOOD
    });
    wait_for("every connection closed", Duration::from_secs(30), || {
        counters.open.load(Ordering::Acquire) == 0
    });
    // And a new peer is answered.
    let mut peer = TcpStream::connect(addr).unwrap();
    let ours = Handshake::new(Reserved::NONE, hash, PeerId::generate([9; 12]));
    std::io::Write::write_all(&mut peer, &ours.to_bytes()).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut theirs = [0u8; 68];
    std::io::Read::read_exact(&mut peer, &mut theirs).unwrap();
    assert_eq!(&theirs[28..48], hash.as_bytes());
    set_soft_nofile(before);
    stop.store(true, Ordering::Release);
    worker.join().unwrap();
}

#[test]
fn out_of_descriptors_a_loop_backs_off_and_takes_the_backlog_once_they_free() {
    // One backend after the other: both share this process's limit. A failing io_uring
    // probe is a regression to see (as in tests/uring.rs), not a reason to skip.
    if let Err(e) = probe() {
        panic!("io_uring probe failed: {e}");
    }
    exhaust(true);
    exhaust(false);
}
