//! `link-emu`: an emulated network link between two network namespaces, in user space, the
//! way mahimahi does it (this kernel has no `netem`).
//!
//! `link-emu run --link SPEC [--duration SECS]` makes a user namespace and two network
//! namespaces in it, A and B, each with a TUN device `le0` (A is 10.77.0.1, B is 10.77.0.2,
//! point to point) and loopback up, then moves every packet from one TUN to the other through
//! a [`Lane`] per direction that applies the link's rules (delay, jitter, loss, reordering,
//! rate with a drop-tail queue). It prints `ready a=PID b=PID` once the link is up: run
//! programs on either side with `nsenter -t PID -U -n --preserve-credentials PROGRAM...`.
//! It stops at the deadline, when its parent exits, or on SIGTERM/SIGINT/SIGHUP, and then
//! prints each direction's counters on stderr. The namespaces hold only what is started in
//! them and go away with the last process inside.
//!
//! Small measuring tools to run on either side: `udp-echo`, `udp-probe` (round trips, loss,
//! reordering), `tcp-sink` and `tcp-source` (a bulk TCP flow and its rate).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use link_emu::{Fate, Lane, Rules};

/// The address of side A; B is [`ADDR_B`].
const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const TUN_NAME: &str = "le0";
/// Packets in flight per direction at most (a bound on memory when there is no rate limit).
const MAX_PENDING: usize = 65_536;
/// Packets read from one TUN per wake-up at most, so one busy direction cannot starve the other.
const READ_BATCH: usize = 256;

const USAGE: &str = "usage:
  link-emu run --link SPEC [--duration SECS]
      SPEC: comma-separated, e.g. 50ms,1%,100mbit or delay=20ms,jitter=2ms,loss=1%,
      reorder=2%,gap=5ms,rate=10mbit,queue=256k,seed=7 (delay is one-way, in each direction)
  link-emu udp-echo ADDR:PORT [--duration SECS]
  link-emu udp-probe ADDR:PORT [--count N] [--interval-us US] [--size BYTES]
  link-emu tcp-sink ADDR:PORT [--duration SECS] [--progress-ms MS]
  link-emu tcp-source ADDR:PORT [--seconds SECS]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("udp-echo") => cmd_udp_echo(&args[1..]),
        Some("udp-probe") => cmd_udp_probe(&args[1..]),
        Some("tcp-sink") => cmd_tcp_sink(&args[1..]),
        Some("tcp-source") => cmd_tcp_source(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("link-emu: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--name VALUE` options after one positional argument (or none when `positional` is false).
struct Opts {
    positional: Option<String>,
    named: Vec<(String, String)>,
}

impl Opts {
    fn parse(args: &[String], positional: bool, known: &[&str]) -> Result<Opts, String> {
        let mut opts = Opts {
            positional: None,
            named: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if !known.contains(&name) {
                    return Err(format!("unknown option --{name}\n{USAGE}"));
                }
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                opts.named.push((name.to_string(), v.clone()));
            } else if positional && opts.positional.is_none() {
                opts.positional = Some(a.clone());
            } else {
                return Err(format!("unexpected argument {a:?}\n{USAGE}"));
            }
        }
        if positional && opts.positional.is_none() {
            return Err(USAGE.to_string());
        }
        Ok(opts)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v:?}: not a number")),
        }
    }

    fn addr(&self) -> Result<SocketAddr, String> {
        let a = self.positional.as_deref().unwrap_or_default();
        a.parse().map_err(|_| format!("{a:?}: not an ADDR:PORT"))
    }

    fn secs(&self, name: &str, default: f64) -> Result<Duration, String> {
        let s: f64 = self.num(name, default)?;
        if !(0.0..=86_400.0).contains(&s) {
            return Err(format!("--{name} {s}: out of range"));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// The monotonic clock in nanoseconds, the clock the timerfd is armed on.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn write_file(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))
}

/// An `ifreq` naming `name` (shorter than IFNAMSIZ), everything else zero.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers and sockaddrs);
    // all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    ifr
}

/// Opens a TUN device `le0` (IP packets, no packet-information header) in the current network
/// namespace, non-blocking.
fn open_tun() -> Result<OwnedFd, String> {
    let path = CString::new("/dev/net/tun").unwrap();
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("/dev/net/tun"));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = ifreq(TUN_NAME);
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `ifr` is and outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(os_err("TUNSETIFF"));
    }
    Ok(fd)
}

/// Sets one IPv4 address of interface `name` with a SIOCSIF* request.
fn set_if_addr(
    sock: RawFd,
    name: &str,
    request: libc::c_ulong,
    addr: Ipv4Addr,
) -> Result<(), String> {
    let mut ifr = ifreq(name);
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes; the union member is a sockaddr, and
    // the kernel reads it as the sockaddr_in its family says.
    unsafe {
        std::ptr::write(
            &mut ifr.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut libc::sockaddr_in,
            sin,
        )
    };
    // SAFETY: the SIOCSIF* address requests read one ifreq, which `ifr` is.
    if unsafe { libc::ioctl(sock, request as _, &mut ifr) } < 0 {
        return Err(os_err(&format!("address {addr} on {name}")));
    }
    Ok(())
}

/// Brings interface `name` up.
fn set_up(sock: RawFd, name: &str) -> Result<(), String> {
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read/write one ifreq, which `ifr` is; the flags
    // member of the union is the one these requests use.
    unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr) < 0 {
            return Err(os_err(&format!("flags of {name}")));
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &mut ifr) < 0 {
            return Err(os_err(&format!("bringing {name} up")));
        }
    }
    Ok(())
}

/// Opens the TUN in the current network namespace, addresses it `local` with `peer` at the
/// other end, and brings it and loopback up.
fn side(local: Ipv4Addr, peer: Ipv4Addr) -> Result<OwnedFd, String> {
    let tun = open_tun()?;
    // SAFETY: plain arguments; the result is checked.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(os_err("socket"));
    }
    // SAFETY: just opened, owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let s = sock.as_raw_fd();
    set_if_addr(s, TUN_NAME, libc::SIOCSIFADDR, local)?;
    set_if_addr(s, TUN_NAME, libc::SIOCSIFDSTADDR, peer)?;
    set_if_addr(s, TUN_NAME, libc::SIOCSIFNETMASK, Ipv4Addr::BROADCAST)?;
    set_up(s, TUN_NAME)?;
    set_up(s, "lo")?;
    Ok(tun)
}

/// The current network namespace, as a file to `setns` back into.
fn this_netns() -> Result<OwnedFd, String> {
    std::fs::File::open("/proc/self/ns/net")
        .map(OwnedFd::from)
        .map_err(|e| format!("/proc/self/ns/net: {e}"))
}

/// Forks a process that stays in the current network namespace and waits there until this
/// process ends, so others can join it by its PID. Returns its PID.
fn holder(close: &[RawFd]) -> Result<libc::pid_t, String> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: this process is single-threaded here, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY (the whole child): plain system calls on descriptors this process owns; the
    // child never returns into the parent's code, it waits and is killed with its parent.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        for fd in close {
            libc::close(*fd);
        }
        loop {
            libc::pause();
        }
    }
}

/// A packet waiting to come out at the far end: earliest first, then in arrival order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    at: u64,
    seq: u64,
    data: Vec<u8>,
}

struct Direction {
    lane: Lane,
    from: RawFd,
    to: RawFd,
    pending: BinaryHeap<Reverse<Pending>>,
    overflow: u64,
    write_failed: u64,
    delivered: u64,
}

impl Direction {
    /// Reads what the source TUN has (a batch at most) into the lane.
    fn read(&mut self, buf: &mut [u8], seq: &mut u64) -> Result<(), String> {
        for _ in 0..READ_BATCH {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::read(self.from, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                    _ => Err(format!("reading the TUN: {e}")),
                };
            }
            let n = n as usize;
            if let Fate::Deliver(at) = self.lane.offer(now_ns(), n) {
                if self.pending.len() >= MAX_PENDING {
                    self.overflow += 1;
                    continue;
                }
                *seq += 1;
                self.pending.push(Reverse(Pending {
                    at,
                    seq: *seq,
                    data: buf[..n].to_vec(),
                }));
            }
        }
        Ok(())
    }

    /// Writes every packet due by `now` to the destination TUN.
    fn deliver(&mut self, now: u64) {
        while self.pending.peek().is_some_and(|p| p.0.at <= now) {
            let Some(Reverse(p)) = self.pending.pop() else {
                break;
            };
            // SAFETY: `p.data` is valid for reads of its length.
            let n = unsafe { libc::write(self.to, p.data.as_ptr().cast(), p.data.len()) };
            if n < 0 {
                self.write_failed += 1;
            } else {
                self.delivered += 1;
            }
        }
    }

    fn report(&self, name: &str) -> String {
        let s = self.lane.stats;
        format!(
            "{name}: offered {} lost {} queue_full {} reordered {} delivered {} overflow {} write_failed {} bytes {}",
            s.offered, s.lost, s.queue_full, s.reordered, self.delivered, self.overflow, self.write_failed, s.bytes
        )
    }
}

fn cmd_run(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args, false, &["link", "duration"])?;
    let rules = Rules::parse(opts.get("link").unwrap_or("")).map_err(|e| e.to_string())?;
    let duration = opts.secs("duration", 300.0)?;
    // SAFETY: getppid/getuid/getgid have no preconditions.
    let (parent, uid, gid) = unsafe { (libc::getppid(), libc::getuid(), libc::getgid()) };

    // A user namespace for the rights (no privilege needed), and network namespace A with it.
    // SAFETY: a plain system call; this process is still single-threaded, as it requires.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } < 0 {
        return Err(os_err("unshare(user, net)"));
    }
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
    write_file("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    let tun_a = side(ADDR_A, ADDR_B)?;
    let ns_a = this_netns()?;
    // Network namespace B, in the same user namespace.
    // SAFETY: as above.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
        return Err(os_err("unshare(net)"));
    }
    let tun_b = side(ADDR_B, ADDR_A)?;
    let fds = [tun_a.as_raw_fd(), tun_b.as_raw_fd()];
    let pid_b = holder(&fds)?;
    // Back into A before forking its holder, so that it is there from its first instant: one
    // who joins it as soon as "ready" is printed finds A.
    // SAFETY: `ns_a` is an open namespace file; this process is single-threaded.
    if unsafe { libc::setns(ns_a.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(os_err("setns(A)"));
    }
    let pid_a = holder(&fds)?;
    drop(ns_a);

    // Stop signals arrive on a descriptor, so the counters are printed on the way out.
    // SAFETY: `mask` is a valid sigset built by sigemptyset/sigaddset before use.
    let sigfd = unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut mask, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if sigfd < 0 {
        return Err(os_err("signalfd"));
    }
    // SAFETY: just opened, owned by nothing else.
    let sigfd = unsafe { OwnedFd::from_raw_fd(sigfd) };
    // SAFETY: plain arguments; the result is checked.
    let timer = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if timer < 0 {
        return Err(os_err("timerfd_create"));
    }
    // SAFETY: just opened, owned by nothing else.
    let timer = unsafe { OwnedFd::from_raw_fd(timer) };
    // SAFETY: plain arguments; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(os_err("epoll_create1"));
    }
    // SAFETY: just opened, owned by nothing else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (token, fd) in [
        (0u64, tun_a.as_raw_fd()),
        (1, tun_b.as_raw_fd()),
        (2, timer.as_raw_fd()),
        (3, sigfd.as_raw_fd()),
    ] {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(os_err("epoll_ctl"));
        }
    }

    let mut dirs = [
        Direction {
            lane: Lane::new(rules.clone(), 1),
            from: tun_a.as_raw_fd(),
            to: tun_b.as_raw_fd(),
            pending: BinaryHeap::new(),
            overflow: 0,
            write_failed: 0,
            delivered: 0,
        },
        Direction {
            lane: Lane::new(rules.clone(), 2),
            from: tun_b.as_raw_fd(),
            to: tun_a.as_raw_fd(),
            pending: BinaryHeap::new(),
            overflow: 0,
            write_failed: 0,
            delivered: 0,
        },
    ];
    println!("ready a={pid_a} b={pid_b} addr_a={ADDR_A} addr_b={ADDR_B} link {rules}");
    io::stdout().flush().map_err(|e| e.to_string())?;

    let deadline = now_ns() + duration.as_nanos() as u64;
    let mut buf = vec![0u8; 65_536];
    let mut seq = 0u64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
    let why = 'run: loop {
        let now = now_ns();
        for d in &mut dirs {
            d.deliver(now);
        }
        if now >= deadline {
            break "deadline";
        }
        // SAFETY: no preconditions.
        if unsafe { libc::getppid() } != parent {
            break "parent gone";
        }
        // Wake for the next packet due, and at least every 100 ms to check on the parent.
        let next = dirs
            .iter()
            .filter_map(|d| d.pending.peek().map(|p| p.0.at))
            .chain([now + 100_000_000, deadline])
            .min()
            .unwrap_or(deadline);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (next / 1_000_000_000) as libc::time_t,
                tv_nsec: (next % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        unsafe {
            libc::timerfd_settime(
                timer.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: `events` is valid for writes of its length.
        let n = unsafe {
            libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1)
        };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_err("epoll_wait"));
        }
        for ev in &events[..n as usize] {
            match ev.u64 {
                0 | 1 => dirs[ev.u64 as usize].read(&mut buf, &mut seq)?,
                2 => {
                    let mut expirations = 0u64;
                    // SAFETY: reads 8 bytes into a u64; EAGAIN when nothing expired is fine.
                    unsafe {
                        libc::read(timer.as_raw_fd(), (&mut expirations as *mut u64).cast(), 8)
                    };
                }
                _ => break 'run "signal",
            }
        }
    };
    eprintln!("link-emu: stopped ({why})");
    eprintln!("{}", dirs[0].report("a->b"));
    eprintln!("{}", dirs[1].report("b->a"));
    Ok(())
}

fn cmd_udp_echo(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args, true, &["duration"])?;
    let sock = UdpSocket::bind(opts.addr()?).map_err(|e| format!("bind: {e}"))?;
    let deadline = Instant::now() + opts.secs("duration", 60.0)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    println!(
        "listening {}",
        sock.local_addr().map_err(|e| e.to_string())?
    );
    io::stdout().flush().map_err(|e| e.to_string())?;
    let mut buf = [0u8; 65_536];
    let mut echoed = 0u64;
    while Instant::now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if sock.send_to(&buf[..n], from).is_ok() {
                echoed += 1;
            }
        }
    }
    // The reader may be gone by now; the count is for people watching.
    let _ = writeln!(io::stdout(), "echoed {echoed}");
    Ok(())
}

fn cmd_udp_probe(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args, true, &["count", "interval-us", "size"])?;
    let to = opts.addr()?;
    let count: u64 = opts.num("count", 1000)?;
    let interval = Duration::from_micros(opts.num("interval-us", 1000)?);
    let size: usize = opts.num::<usize>("size", 64)?.clamp(16, 1400);
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    sock.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    let start = Instant::now();
    let mut rtts: Vec<f64> = Vec::new();
    let mut seen = vec![false; count as usize];
    let (mut max_seq, mut reordered, mut duplicates) = (None::<u64>, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    let mut receive_until = |until: Instant, sock: &UdpSocket| loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let wait = (until - now).max(Duration::from_micros(50));
        let _ = sock.set_read_timeout(Some(wait));
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if n < 16 {
            continue;
        }
        let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
        let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        let Some(slot) = seen.get_mut(seq as usize) else {
            continue;
        };
        if *slot {
            duplicates += 1;
            continue;
        }
        *slot = true;
        let elapsed = start.elapsed().as_nanos() as u64;
        rtts.push(elapsed.saturating_sub(sent) as f64 / 1e6);
        match max_seq {
            Some(m) if seq < m => reordered += 1,
            _ => max_seq = Some(seq),
        }
    };
    let mut packet = vec![0u8; size];
    for seq in 0..count {
        receive_until(start + interval * seq as u32, &sock);
        packet[..8].copy_from_slice(&seq.to_le_bytes());
        packet[8..16].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_le_bytes());
        let _ = sock.send(&packet);
    }
    receive_until(Instant::now() + Duration::from_secs(2), &sock);
    rtts.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "sent {count} received {} reordered {reordered} duplicates {duplicates} rtt_ms min {:.2} median {:.2} p99 {:.2} max {:.2}",
        rtts.len(),
        pick(0.0),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}

fn cmd_tcp_sink(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args, true, &["duration", "progress-ms"])?;
    let listener = TcpListener::bind(opts.addr()?).map_err(|e| format!("bind: {e}"))?;
    let deadline = Instant::now() + opts.secs("duration", 60.0)?;
    let progress: u64 = opts.num("progress-ms", 0)?;
    let progress = (progress > 0).then(|| Duration::from_millis(progress));
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    println!(
        "listening {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    io::stdout().flush().map_err(|e| e.to_string())?;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, from)) => {
                std::thread::spawn(move || sink(stream, from, deadline, progress));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(())
}

/// Reads `stream` to its end (or the deadline) and prints what came and how fast, from the
/// first byte to the last; with `progress`, also a line `progress BYTES SECS` that often
/// (bytes so far, seconds since the connection came), for a rate over any window.
fn sink(mut stream: TcpStream, from: SocketAddr, deadline: Instant, progress: Option<Duration>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 256 * 1024];
    let (mut bytes, mut first, mut last) = (0u64, None::<Instant>, Instant::now());
    let start = Instant::now();
    let mut next_report = start;
    while Instant::now() < deadline {
        if let Some(every) = progress {
            if Instant::now() >= next_report {
                next_report += every;
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "progress {bytes} {:.3}", start.elapsed().as_secs_f64());
                let _ = out.flush();
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last = Instant::now();
                first.get_or_insert(last);
                bytes += n as u64;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    let mbit = if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e6
    } else {
        0.0
    };
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "received {bytes} from {from} in {secs:.3} s = {mbit:.3} mbit/s"
    );
    let _ = out.flush();
}

fn cmd_tcp_source(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args, true, &["seconds"])?;
    let to = opts.addr()?;
    let seconds = opts.secs("seconds", 5.0)?;
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .map_err(|e| format!("connect {to}: {e}"))?;
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < seconds {
        match stream.write(&chunk) {
            Ok(n) => sent += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    println!("sent {sent} in {:.3} s", start.elapsed().as_secs_f64());
    Ok(())
}
