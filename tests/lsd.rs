//! Local service discovery (BEP 14) between real processes, in a network namespace each test
//! makes for itself (`unshare -rn`: a user and a network namespace, no privilege needed),
//! whose loopback carries the IPv4 group (`ip route add 239.0.0.0/8 dev lo src 127.0.0.1`):
//! nothing leaves the namespace and nothing outside it is heard. The outer tests re-run this
//! binary inside the namespace on one `#[ignore]`d inner test each (they refuse to run
//! outside it), bounded in time; every process an inner test starts is ended by its handle.
//!
//! - Two ringtorrent processes, a `seed` and a `download` given no peer and no tracker, find
//!   each other by LSD and transfer byte-exact, on both I/O backends; a third socket joined to
//!   the group captures every announce meanwhile, and a private torrent seeded and downloaded
//!   there (and downloaded by its magnet link, which cannot know it is private) never appears
//!   in one.
//! - libtorrent (python3-libtorrent 2.0.8, `enable_lsd`) leeches from a ringtorrent seed with
//!   LSD its only peer source, and a ringtorrent download finds a libtorrent seed, with
//!   libtorrent saying it parsed ringtorrent's announce.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{ringtorrent, run_bounded, run_ok, same_tree, support, write_payload, Proc, Stream};
use ringtorrent::core::InfoHash;
use ringtorrent::lsd::{parse, GROUP_V4, GROUP_V6, HOST_V6, LSD_PORT, MAX_SEND_LEN};

/// What the inner tests find in the environment to know they are inside the namespace.
const INSIDE: &str = "RINGTORRENT_LSD_NETNS";

/// The namespace's loopback up, carrying the IPv4 group.
const ROUTED: &str = "ip link set lo up && ip link set lo multicast on \
                      && ip route add 239.0.0.0/8 dev lo src 127.0.0.1";
/// The loopback up, multicast allowed on it, but no route for the group: only a socket told
/// to send from 127.0.0.1 (`--lsd-interface`) reaches it.
const UNROUTED: &str = "ip link set lo up && ip link set lo multicast on";
/// No IPv4 route for the group, and a veth pair with IPv6 (duplicate address detection off,
/// so the link-local addresses are usable at once), which carries the IPv6 group.
const IPV6_ONLY: &str = "ip link set lo up && sysctl -qw net.ipv6.conf.default.accept_dad=0 \
                         && ip link add v0 type veth peer name v1 \
                         && ip link set v0 up && ip link set v1 up";

/// Runs the inner test `name` of this binary in a fresh user and network namespace set up
/// by `setup`, and fails with its output unless it passed.
fn in_namespace(setup: &str, name: &str, limit: Duration) {
    let exe = std::env::current_exe().unwrap();
    let script =
        format!("{setup} && exec \"$0\" --exact \"$1\" --ignored --nocapture --test-threads=1");
    let out = run_bounded(
        Command::new("unshare")
            .args(["-rn", "sh", "-c", &script])
            .arg(&exe)
            .arg(name)
            .env(INSIDE, "1"),
        limit,
    );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("test result: ok. 1 passed"),
        "{name} in its namespace: {}\n{text}",
        out.status
    );
}

fn inside() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "an inner test: run by its outer test inside a network namespace"
    );
}

#[test]
fn two_ringtorrents_find_each_other_and_private_torrents_stay_silent() {
    in_namespace(
        ROUTED,
        "inner_transfer_and_private",
        Duration::from_secs(90),
    );
}

#[test]
fn libtorrent_and_ringtorrent_find_each_other() {
    in_namespace(ROUTED, "inner_libtorrent", Duration::from_secs(90));
}

#[test]
fn lsd_interface_picks_the_interface() {
    in_namespace(UNROUTED, "inner_interface", Duration::from_secs(90));
}

#[test]
fn announces_reach_the_ipv6_group() {
    in_namespace(IPV6_ONLY, "inner_ipv6", Duration::from_secs(60));
}

/// A socket joined to the IPv4 group that keeps every datagram until stopped.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(SocketAddr, Vec<u8>)>>,
}

impl Capture {
    /// On the IPv4 group.
    fn start() -> Capture {
        let fd = reusable(libc::AF_INET);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: LSD_PORT.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(GROUP_V4.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `sa` is a valid sockaddr_in whose size is passed; bind(2) only reads it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let socket = UdpSocket::from(fd);
        socket
            .join_multicast_v4(&GROUP_V4, &std::net::Ipv4Addr::UNSPECIFIED)
            .unwrap();
        Capture::run(socket)
    }

    /// On the IPv6 group, all interfaces' traffic as the default one joins it.
    fn start_v6() -> Capture {
        let fd = reusable(libc::AF_INET6);
        let sa = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: LSD_PORT.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: GROUP_V6.octets(),
            },
            sin6_scope_id: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_in6 whose size is passed; bind(2) only reads it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let socket = UdpSocket::from(fd);
        socket.join_multicast_v6(&GROUP_V6, 0).unwrap();
        Capture::run(socket)
    }

    fn run(socket: UdpSocket) -> Capture {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    got.push((from, buf[..n].to_vec()));
                }
            }
            got
        });
        Capture { stop, thread }
    }

    fn finish(self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A UDP socket of `domain` with SO_REUSEADDR and SO_REUSEPORT, as the clients' are.
fn reusable(domain: libc::c_int) -> OwnedFd {
    {
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            let one: libc::c_int = 1;
            // SAFETY: `one` is a live c_int whose size is passed; the kernel only reads it.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        }
        fd
    }
}

fn make_torrent(
    dir: &Path,
    name: &str,
    len: usize,
    seed: u64,
    private: bool,
) -> (PathBuf, InfoHash) {
    let data = dir.join(format!("{name}-data"));
    write_payload(&data.join(format!("{name}.bin")), len, seed);
    let torrent = dir.join(format!("{name}.torrent"));
    let mut cmd = ringtorrent();
    cmd.args(["create", "-d", "-l", "64K", "-o"])
        .arg(&torrent)
        .arg(data.join(format!("{name}.bin")));
    if private {
        cmd.arg("--private");
    }
    run_ok(&mut cmd);
    let t = ringtorrent::metainfo::Torrent::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    (torrent, t.info_hash())
}

/// `ringtorrent seed` of `torrent` from `data`, LSD its only way to be found, watched.
fn rt_seed(work: &Path, tag: &str, torrent: &Path, data: &Path, io: &str) -> Proc {
    rt_seed_with(work, tag, torrent, data, io, &[], "on")
}

fn rt_seed_with(
    work: &Path,
    tag: &str,
    torrent: &Path,
    data: &Path,
    io: &str,
    extra: &[&str],
    lsd_env: &str,
) -> Proc {
    let seed = Proc::watch(
        tag,
        ringtorrent()
            .env("RINGTORRENT_LSD", lsd_env)
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--port", "0", "--io", io, "--duration", "60"])
            .args(extra)
            .arg("--state-dir")
            .arg(work.join(format!("{tag}-state"))),
        &work.join(format!("{tag}.log")),
    );
    seed.first_line(common::START_LIMIT);
    seed
}

/// Waits for `leech` (at most 40 s) and fails with both logs unless it succeeded with a
/// copy of `data` in `out`.
fn finished(what: &str, leech: &mut Proc, seed: &Proc, data: &Path, out: &Path) {
    let status = leech
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("{what} still running\n{}", leech.log()));
    assert!(
        status.success(),
        "{what}: {status}\n{}\n{}",
        leech.log(),
        seed.log()
    );
    same_tree(data, out);
}

/// `ringtorrent download` of `torrent` into `out` with no peer and no tracker, run to the end
/// (at most `secs`).
fn rt_download(work: &Path, tag: &str, torrent: &Path, out: &Path, io: &str, secs: u64) -> Proc {
    rt_download_with(work, tag, torrent, out, secs, &["--io", io], "on")
}

fn rt_download_with(
    work: &Path,
    tag: &str,
    torrent: &Path,
    out: &Path,
    secs: u64,
    extra: &[&str],
    lsd_env: &str,
) -> Proc {
    Proc::watch(
        tag,
        ringtorrent()
            .env("RINGTORRENT_LSD", lsd_env)
            .arg("download")
            .arg(torrent)
            .arg("-o")
            .arg(out)
            .args(["--port", "0", "--timeout", &secs.to_string()])
            .args(extra)
            .arg("--state-dir")
            .arg(work.join(format!("{tag}-state"))),
        &work.join(format!("{tag}.log")),
    )
}

#[test]
#[ignore = "run inside its own network namespace by two_ringtorrents_find_each_other_and_private_torrents_stay_silent"]
fn inner_transfer_and_private() {
    inside();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let (public, public_hash) = make_torrent(work, "public", 3_000_000, 1, false);
    let (private, private_hash) = make_torrent(work, "private", 500_000, 2, true);
    let capture = Capture::start();
    let started = Instant::now();

    // The private torrent: seeded and wanted, the whole time the public one transfers.
    let private_seed = rt_seed(
        work,
        "private-seed",
        &private,
        &work.join("private-data"),
        "epoll",
    );
    let mut private_leech = rt_download(
        work,
        "private-leech",
        &private,
        &work.join("private-out"),
        "epoll",
        300,
    );
    // Its magnet link: nothing says it is private until the metadata comes, which it never
    // does here, so it must not be announced either.
    let magnet = PathBuf::from(format!("magnet:?xt=urn:btih:{}", private_hash.to_hex()));
    let mut magnet_leech = rt_download(
        work,
        "magnet-leech",
        &magnet,
        &work.join("magnet-out"),
        "epoll",
        300,
    );

    for io in common::interop::BACKENDS {
        let seed = rt_seed(
            work,
            &format!("seed-{io}"),
            &public,
            &work.join("public-data"),
            io,
        );
        let out = work.join(format!("out-{io}"));
        let mut leech = rt_download(work, &format!("leech-{io}"), &public, &out, io, 30);
        finished(
            &format!("download ({io})"),
            &mut leech,
            &seed,
            &work.join("public-data"),
            &out,
        );
        drop(seed);
    }
    // Past the private torrents' start-up announces (0, 2 and 6 s), had there been any.
    let quiet_until = Duration::from_secs(8);
    if let Some(left) = quiet_until.checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    let got = capture.finish();
    assert!(
        private_leech.child.try_wait().unwrap().is_none(),
        "the private download ended: it found a peer?\n{}",
        private_leech.log()
    );
    drop(private_seed);
    assert!(
        magnet_leech.child.try_wait().unwrap().is_none(),
        "the magnet download ended\n{}",
        magnet_leech.log()
    );
    drop(private_leech);
    drop(magnet_leech);

    let mut public_announcers = std::collections::BTreeSet::new();
    for (from, datagram) in &got {
        assert!(
            datagram.len() <= MAX_SEND_LEN,
            "{} bytes from {from}",
            datagram.len()
        );
        let a = parse(datagram).unwrap_or_else(|e| {
            panic!(
                "{from} sent a malformed announce ({e}): {:?}",
                String::from_utf8_lossy(datagram)
            )
        });
        assert!(
            !a.hashes.contains(&private_hash),
            "the private torrent was announced: {:?}",
            String::from_utf8_lossy(datagram)
        );
        if a.hashes.contains(&public_hash) {
            public_announcers.insert(a.cookie.map(str::to_owned));
        }
    }
    // Four processes announced the public torrent (two seeds, two downloads): the capture
    // works, so the private torrent's absence means something.
    assert!(
        public_announcers.len() >= 4,
        "{public_announcers:?} of {} datagrams",
        got.len()
    );
}

#[test]
#[ignore = "run inside its own network namespace by libtorrent_and_ringtorrent_find_each_other"]
fn inner_libtorrent() {
    inside();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let (torrent, hash) = make_torrent(work, "shared", 2_000_000, 3, false);
    let data = work.join("shared-data");

    // libtorrent leeches from a ringtorrent seed.
    let seed = rt_seed(work, "rt-seed", &torrent, &data, "epoll");
    let lt_out = work.join("lt-out");
    std::fs::create_dir_all(&lt_out).unwrap();
    let mut lt = Proc::watch(
        "lt-leech",
        Command::new("/usr/bin/python3")
            .arg(support("lt_lsd.py"))
            .arg("leech")
            .arg(&torrent)
            .arg(&lt_out)
            .args(["--timeout", "30"]),
        &work.join("lt-leech.log"),
    );
    finished("libtorrent", &mut lt, &seed, &data, &lt_out);
    drop(seed);

    // A ringtorrent download finds a libtorrent seed, and libtorrent understood our
    // announce (it logs only others' announces: its own carry its cookie).
    let lt_seed = Proc::watch(
        "lt-seed",
        Command::new("/usr/bin/python3")
            .arg(support("lt_lsd.py"))
            .arg("seed")
            .arg(&torrent)
            .arg(&data)
            .args(["--timeout", "40"]),
        &work.join("lt-seed.log"),
    );
    lt_seed.wait_line(common::START_LIMIT, "listening", |s, l| {
        s == Stream::Out && l.contains("listening on")
    });
    let out = work.join("rt-out");
    let mut leech = rt_download(work, "rt-leech", &torrent, &out, "epoll", 30);
    finished("download", &mut leech, &lt_seed, &data, &out);
    let heard = format!("heard {} from 127.0.0.1:", hash.to_hex());
    lt_seed.wait_line(
        Duration::from_secs(10),
        "that it heard our announce",
        |s, l| s == Stream::Out && l.contains(&heard),
    );
}

#[test]
#[ignore = "run inside its own network namespace by lsd_interface_picks_the_interface"]
fn inner_interface() {
    inside();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let (torrent, _) = make_torrent(work, "iface", 1_000_000, 4, false);
    let data = work.join("iface-data");
    // No route for the group: without --lsd-interface nothing is heard.
    let seed = rt_seed(work, "seed-default", &torrent, &data, "epoll");
    let mut leech = rt_download(
        work,
        "leech-default",
        &torrent,
        &work.join("out-default"),
        "epoll",
        4,
    );
    let status = leech
        .wait_exit(Duration::from_secs(15))
        .expect("bounded by --timeout");
    assert!(
        !status.success(),
        "found a peer with no route for the group\n{}",
        leech.log()
    );
    drop(seed);
    // Both sending from and joining on 127.0.0.1: they find each other.
    let iface = ["--lsd-interface", "127.0.0.1"];
    let seed = rt_seed_with(work, "seed-lo", &torrent, &data, "epoll", &iface, "on");
    // ... unless $RINGTORRENT_LSD turns it off.
    let mut leech = rt_download_with(
        work,
        "leech-off",
        &torrent,
        &work.join("out-off"),
        4,
        &iface,
        "off",
    );
    let status = leech
        .wait_exit(Duration::from_secs(15))
        .expect("bounded by --timeout");
    assert!(
        !status.success(),
        "found a peer with RINGTORRENT_LSD=off\n{}",
        leech.log()
    );
    let out = work.join("out-lo");
    let mut leech = rt_download_with(work, "leech-lo", &torrent, &out, 30, &iface, "on");
    finished("download", &mut leech, &seed, &data, &out);
    drop(seed);
    // Without --lsd-interface, a listener bound to 127.0.0.1 announces where it listens:
    // on the interface holding that address, not the (unrouted) default.
    let bind = ["--bind", "127.0.0.1"];
    let seed = rt_seed_with(work, "seed-bound", &torrent, &data, "epoll", &bind, "on");
    let out = work.join("out-bound");
    let mut leech = rt_download_with(work, "leech-bound", &torrent, &out, 30, &bind, "on");
    finished("download", &mut leech, &seed, &data, &out);
}

#[test]
#[ignore = "run inside its own network namespace by announces_reach_the_ipv6_group"]
fn inner_ipv6() {
    inside();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let (torrent, hash) = make_torrent(work, "six", 100_000, 5, false);
    let capture = Capture::start_v6();
    let seed = rt_seed(work, "seed-v6", &torrent, &work.join("six-data"), "epoll");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(seed);
    let got = capture.finish();
    let ours: Vec<_> = got
        .iter()
        .filter_map(|(from, d)| parse(d).ok().map(|a| (from, a, d)))
        .filter(|(_, a, _)| a.hashes.contains(&hash))
        .collect();
    assert!(!ours.is_empty(), "no announce on the IPv6 group: {got:?}");
    for (from, _, datagram) in ours {
        assert!(from.is_ipv6(), "{from}");
        let text = String::from_utf8_lossy(datagram);
        assert!(text.contains(&format!("Host: {HOST_V6}\r\n")), "{text}");
    }
}
