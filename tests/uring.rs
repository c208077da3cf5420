//! The io_uring driver on real sockets over 127.0.0.1, in one process: transfers between two
//! io_uring drivers and between io_uring and epoll (each side in its own thread, as `demo`
//! runs them), compared byte for byte; junk connections that the session closes while a
//! transfer runs (the cancel-and-close path and slot reuse); and dropping a driver with
//! operations in flight; the probe, working here and naming seccomp when a filter refuses
//! io_uring. Every loop is bounded in time. The machines these tests run on have io_uring:
//! where it is refused (a container's seccomp profile, `kernel.io_uring_disabled`) the tests
//! fail with the probe's reason instead of passing without having run; `--io auto` falls back
//! to epoll there, which the epoll tests cover.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::write_payload;
use ringtorrent::core::api::TorrentId;
use ringtorrent::core::config::Config;
use ringtorrent::core::{Bitfield, PeerId, Session, Time};
use ringtorrent::driver::epoll::EpollDriver;
use ringtorrent::driver::uring::{probe, UringDriver, UringOptions};
use ringtorrent::driver::Driver;
use ringtorrent::entropy::OsKeys;
use ringtorrent::metainfo::create::{create, CreateOptions};
use ringtorrent::metainfo::Info;
use ringtorrent::storage::{DiskPool, DiskPoolConfig, OpenMode, Storage};

/// Fails the test with the probe's reason where io_uring is unavailable: a failing probe is a
/// regression to see, not a reason to skip.
fn require_uring() {
    if let Err(e) = probe() {
        panic!("io_uring probe failed: {e}");
    }
}

fn session(seed: u64) -> Session {
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&seed.to_le_bytes());
    Session::new(
        Config::default(),
        PeerId::generate(id),
        seed,
        Box::new(OsKeys::new().unwrap()),
        Time::ZERO,
    )
}

fn side(
    uring: bool,
    info: &Arc<Info>,
    dir: &Path,
    seeding: bool,
    pool: &Arc<DiskPool>,
    seed: u64,
    tiny_recv: bool,
) -> (Driver, TorrentId) {
    let mode = if seeding {
        OpenMode::ReadOnly
    } else {
        OpenMode::Create
    };
    let storage = Arc::new(Storage::open(info.clone(), dir, mode).unwrap());
    let n = info.lengths().piece_count();
    let have = if seeding {
        Bitfield::full(n)
    } else {
        Bitfield::new(n)
    };
    let listen = Some(loopback_listener());
    let epoch = Instant::now();
    let mut d = if uring {
        let options = if tiny_recv {
            UringOptions {
                recv_buffers: 2,
                recv_buffer_len: 4096,
            }
        } else {
            UringOptions::default()
        };
        Driver::from(
            UringDriver::with_options(session(seed), listen, pool.clone(), epoch, options).unwrap(),
        )
    } else {
        Driver::from(EpollDriver::new(session(seed), listen, pool.clone(), epoch).unwrap())
    };
    let now = d.now();
    let t = d.session().add_torrent(info.clone(), &have, now).unwrap();
    d.attach_storage(t, storage);
    (d, t)
}

/// A listener on a free loopback port.
fn loopback_listener() -> std::net::TcpListener {
    let addr = "127.0.0.1:0".parse().unwrap();
    ringtorrent::driver::net::bind_listeners(addr, 1)
        .unwrap()
        .remove(0)
}

/// Makes a payload and its torrent under `dir/seed`.
fn payload(dir: &Path, len: usize, piece_len: u64) -> Arc<Info> {
    let path = dir.join("seed").join("payload.bin");
    write_payload(&path, len, 7);
    let made = create(
        &CreateOptions {
            path,
            piece_len: Some(piece_len),
            ..Default::default()
        },
        &AtomicU64::new(0),
    )
    .unwrap();
    Arc::new(made.torrent.info)
}

/// Seeds from one driver in a thread, leeches into another here, compares the bytes.
/// `junk` raw connections send garbage to the seeder while the transfer runs.
/// `tiny_recv` gives io_uring drivers a ring of two 4 KiB receive buffers, which the kernel
/// runs dry all the time (each time ending the multishot receive with ENOBUFS).
fn transfer(seed_uring: bool, leech_uring: bool, junk: usize, tiny_recv: bool) {
    let dir = tempfile::tempdir().unwrap();
    let info = payload(dir.path(), 3 * 1024 * 1024 + 17, 64 * 1024);
    let pool = Arc::new(DiskPool::new(DiskPoolConfig::default()).unwrap());
    let (mut seeder, _) = side(
        seed_uring,
        &info,
        &dir.path().join("seed"),
        true,
        &pool,
        1,
        tiny_recv,
    );
    let addr = seeder.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                seeder.turn(Duration::from_millis(20), &mut |_| {}).unwrap();
            }
            let open = seeder.session().connection_count();
            // Dropped here: an io_uring driver is torn down by the thread that turned it.
            drop(seeder);
            open
        })
    };
    // Peers that connect, send a bad handshake and linger: the session closes them. A first
    // byte other than 19 starts an encrypted (MSE) handshake, which waits for up to 628
    // bytes (Ya, PadA, the sync hash) before it can call them junk; 700 is past that.
    let junk: Vec<TcpStream> = (0..junk)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(&[i as u8; 700]);
            s
        })
        .collect();
    let leech_dir = dir.path().join("leech");
    std::fs::create_dir_all(&leech_dir).unwrap();
    let (mut leecher, t) = side(leech_uring, &info, &leech_dir, false, &pool, 2, tiny_recv);
    let now = leecher.now();
    leecher.session().add_peers(t, &[addr], now);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leecher.session().is_complete(t) {
        assert!(
            Instant::now() < deadline,
            "the transfer did not finish in 60 s"
        );
        leecher
            .turn(Duration::from_millis(20), &mut |_| {})
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let open = thread.join().unwrap();
    // The junk peers are gone; the leecher may be too (two seeds part).
    assert!(open <= 1, "{open} connections left on the seeder");
    drop(junk);
    drop(leecher);
    let a = std::fs::read(dir.path().join("seed/payload.bin")).unwrap();
    let b = std::fs::read(leech_dir.join("payload.bin")).unwrap();
    assert!(a == b, "the downloaded bytes differ");
}

#[test]
fn uring_to_uring() {
    require_uring();
    transfer(true, true, 0, false);
}

#[test]
fn uring_seeds_epoll() {
    require_uring();
    transfer(true, false, 0, false);
}

#[test]
fn epoll_seeds_uring() {
    require_uring();
    transfer(false, true, 0, false);
}

/// Junk peers are closed by the session (`Action::Close`: cancel, then close when the last
/// operation ends) while a transfer runs, so slots are freed and reused under load.
#[test]
fn uring_closes_junk_peers_during_a_transfer() {
    require_uring();
    transfer(true, true, 64, false);
}

/// With two 4 KiB receive buffers the provided ring runs dry constantly; each receive ends
/// with ENOBUFS, is re-armed, and no byte is lost or reordered.
#[test]
fn uring_survives_an_empty_buffer_ring() {
    require_uring();
    transfer(true, true, 0, true);
}

/// Dropping a driver with an accept, receives and the eventfd read in flight cancels them and
/// returns promptly.
#[test]
fn uring_drop_with_operations_in_flight() {
    require_uring();
    // What is asserted is that the drop returns (it cancels rather than waits for peers
    // that will never send), not how fast: the deadline only stops a hang. The driver lives
    // and is dropped on one thread, as the ring requires; this one watches the clock.
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let pool = Arc::new(DiskPool::new(DiskPoolConfig::default()).unwrap());
        let mut d = Driver::from(
            UringDriver::new(session(3), Some(loopback_listener()), pool, Instant::now()).unwrap(),
        );
        let addr = d.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.session().connection_count() < clients.len() {
            assert!(Instant::now() < deadline, "connections were not accepted");
            d.turn(Duration::from_millis(10), &mut |_| {}).unwrap();
        }
        drop(d);
        let _ = done.send(());
        drop(clients);
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => worker.join().unwrap(),
        // The worker panicked: show its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("dropping the driver with operations in flight did not return in 60 s")
        }
    }
}

#[test]
fn probe_succeeds_here() {
    probe().unwrap_or_else(|e| panic!("io_uring probe failed: {e}"));
}

/// A seccomp filter refusing `io_uring_setup` (as Docker's default profile does) on one
/// thread: the probe there fails and its reason names io_uring and seccomp.
#[test]
fn probe_names_seccomp_when_a_filter_refuses_io_uring() {
    let reason = std::thread::spawn(|| {
        refuse_io_uring_setup_on_this_thread();
        probe()
    })
    .join()
    .unwrap()
    .expect_err("the probe passed with io_uring_setup refused");
    assert!(
        reason.contains("io_uring") && reason.contains("seccomp"),
        "{reason}"
    );
}

/// Installs, on the calling thread only, a seccomp filter answering `io_uring_setup` with
/// EPERM and allowing every other call.
fn refuse_io_uring_setup_on_this_thread() {
    // seccomp_data: the call number is the first 32-bit word.
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, both alive for the call, which copies them. Without
    // SECCOMP_FILTER_FLAG_TSYNC the filter and no_new_privs bind this thread only, which
    // ends right after the probe.
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            0,
            "no_new_privs: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}
