//! Zero-copy sends through io_uring against today's `SENDMSG`, on loopback TCP: the
//! measurement the design asks for before block sends adopt `send_zc`
//! (`../shared/design/engine.md`, item 4). Results: `perf/2026-11-24-send-zc.md`.
//!
//! One thread sends through its own ring (set up as the driver's: `SINGLE_ISSUER |
//! DEFER_TASKRUN` where the kernel has them) with one send in flight on the socket, as the
//! driver has per connection; another thread drains the other end of the connection with
//! blocking 1 MiB reads. Each run uses a fresh connection. Three shapes of send:
//!
//! - `block`: one 16 KiB block per call, a 13-byte `piece` header then the 16 KiB payload.
//! - `batch`: 64 such blocks per call (about 1 MiB, as the driver's `SEND_BATCH`).
//! - `big`: one 1 MiB buffer per call.
//!
//! and five ways of sending each:
//!
//! - `sendmsg`: `SENDMSG` over iovecs, header and payload as separate chunks (today's path).
//! - `sendmsg_zc`: `SENDMSG_ZC` over the same iovecs.
//! - `send`: plain `SEND` of one contiguous buffer (for `block`/`batch`, records laid out as
//!   header + payload back to back, the layout a single-buffer send needs): the control that
//!   separates the effect of the layout from the effect of zero copy.
//! - `send_zc`: `SEND_ZC` of the same contiguous buffer.
//! - `send_zc_fixed`: `SEND_ZC` from a registered (fixed) buffer.
//!
//! A zero-copy send completes twice: the result (with `IORING_CQE_F_MORE`) and later a
//! notification (`IORING_CQE_F_NOTIF`) once the kernel no longer reads the memory. The next
//! send may start after the result, but a buffer is reused only after its notification: the
//! payload pool is split into units taken in turn, and the sender waits on a unit whose
//! notification is still outstanding. Every zero-copy send asks for
//! `IORING_SEND_ZC_REPORT_USAGE`, and the notifications carrying
//! `IORING_NOTIF_USAGE_ZC_COPIED` (the kernel copied after all) are counted.
//!
//! Reported per variant: throughput (bytes received / wall time), process CPU (user + sys of
//! every thread: sender, reader, any io-wq worker) per GB, the sending thread's CPU per GB,
//! and each variant's ratio to `sendmsg` of the same shape in the same round.
//!
//! `cargo bench --bench send_zc -- [--mib N] [--rounds R] [--pool-mib P] [--only SUBSTR]`, or
//! `scripts/bench-send-zc.sh`. Run without `--bench` (as `cargo test --benches` does), it
//! sends 4 MiB per variant, checks the received bytes against what was sent, and exits. Where
//! io_uring or a variant is unavailable it says so and exits non-zero: a run that measured
//! less than asked never passes as a success.

use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Instant;

use io_uring::{cqueue, opcode, types, IoUring};
use memmap2::MmapMut;

/// A `piece` message's header: length prefix, id, index, begin.
const HDR: usize = 13;
const BLOCK: usize = 16 * 1024;
/// A block with its header in front, as one contiguous record.
const REC: usize = HDR + BLOCK;
/// Blocks per call in the `batch` shape: 64 x 16 KiB is the driver's `SEND_BATCH` (1 MiB).
const BATCH: usize = 64;
const BIG: usize = 1 << 20;

/// `IORING_SEND_ZC_REPORT_USAGE` (6.2+): the notification's `res` says whether the kernel
/// copied. Not exported by the `io-uring` crate.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, bit 31 of a notification's `res`.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    Block,
    Batch,
    Big,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    SendMsg,
    SendMsgZc,
    Send,
    SendZc,
    SendZcFixed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Variant {
    shape: Shape,
    method: Method,
}

impl Variant {
    fn name(self) -> String {
        let shape = match self.shape {
            Shape::Block => "block 16K+13",
            Shape::Batch => "batch 64 blocks",
            Shape::Big => "big 1 MiB",
        };
        let method = match self.method {
            Method::SendMsg => "sendmsg",
            Method::SendMsgZc => "sendmsg_zc",
            Method::Send => "send",
            Method::SendZc => "send_zc",
            Method::SendZcFixed => "send_zc_fixed",
        };
        format!("{shape} / {method}")
    }

    /// Blocks of the payload pool that one unit (one call's worth) covers.
    fn blocks_per_unit(self) -> usize {
        match self.shape {
            Shape::Block => 1,
            Shape::Batch | Shape::Big => BATCH,
        }
    }

    fn unit_len(self) -> usize {
        match self.shape {
            Shape::Block => REC,
            Shape::Batch => BATCH * REC,
            Shape::Big => BIG,
        }
    }

    fn zero_copy(self) -> bool {
        matches!(
            self.method,
            Method::SendMsgZc | Method::SendZc | Method::SendZcFixed
        )
    }

    fn vectored(self) -> bool {
        matches!(self.method, Method::SendMsg | Method::SendMsgZc)
    }
}

const SHAPES: [Shape; 3] = [Shape::Block, Shape::Batch, Shape::Big];
const METHODS: [Method; 5] = [
    Method::SendMsg,
    Method::Send,
    Method::SendMsgZc,
    Method::SendZc,
    Method::SendZcFixed,
];

/// The memory sends read from. Built once, never written while the ring exists.
struct Pools {
    blocks: usize,
    /// `blocks` payloads of 16 KiB, page-aligned, back to back (so 64 of them are also one
    /// 1 MiB buffer for the `big` shape).
    payload: MmapMut,
    /// One 13-byte header per block, in a separate allocation (as the session's coalesced
    /// control buffer is).
    headers: Vec<u8>,
    /// Header + payload of each block back to back, `REC` bytes each.
    records: MmapMut,
}

impl Pools {
    fn new(blocks: usize) -> io::Result<Pools> {
        let mut payload = MmapMut::map_anon(blocks * BLOCK)?;
        let mut records = MmapMut::map_anon(blocks * REC)?;
        let mut headers = vec![0u8; blocks * HDR];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for b in payload.iter_mut() {
            // xorshift: bytes that do not repeat with any short period.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for i in 0..blocks {
            let h = &mut headers[i * HDR..(i + 1) * HDR];
            h[..4].copy_from_slice(&((BLOCK + 9) as u32).to_be_bytes());
            h[4] = 7; // piece
            h[5..9].copy_from_slice(&((i / 16) as u32).to_be_bytes());
            h[9..13].copy_from_slice(&(((i % 16) * BLOCK) as u32).to_be_bytes());
            let r = &mut records[i * REC..(i + 1) * REC];
            r[..HDR].copy_from_slice(h);
            r[HDR..].copy_from_slice(&payload[i * BLOCK..(i + 1) * BLOCK]);
        }
        Ok(Pools {
            blocks,
            payload,
            headers,
            records,
        })
    }

    /// The memory one unit's send reads, in stream order.
    fn slices(&self, v: Variant, unit: usize) -> Vec<&[u8]> {
        let first = unit * v.blocks_per_unit();
        match (v.shape, v.vectored()) {
            (Shape::Big, _) => vec![&self.payload[first * BLOCK..first * BLOCK + BIG]],
            (_, false) => vec![&self.records[first * REC..first * REC + v.unit_len()]],
            (_, true) => (first..first + v.blocks_per_unit())
                .flat_map(|i| {
                    [
                        &self.headers[i * HDR..(i + 1) * HDR],
                        &self.payload[i * BLOCK..(i + 1) * BLOCK],
                    ]
                })
                .collect(),
        }
    }

    /// The registered-buffer index that holds a contiguous unit (see `Bench::new`).
    fn fixed_index(v: Variant) -> u16 {
        match v.shape {
            Shape::Block | Shape::Batch => 0,
            Shape::Big => 1,
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy, Default)]
struct Outcome {
    bytes: u64,
    wall_s: f64,
    cpu_process_s: f64,
    cpu_sender_s: f64,
    calls: u64,
    notifs: u64,
    copied: u64,
}

impl Outcome {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / 1e9 / self.wall_s
    }
    fn cpu_per_gb(&self) -> f64 {
        self.cpu_process_s / (self.bytes as f64 / 1e9)
    }
    fn sender_per_gb(&self) -> f64 {
        self.cpu_sender_s / (self.bytes as f64 / 1e9)
    }
}

struct Bench {
    /// Declared first so that it is dropped before the memory below. A run that succeeds
    /// has reaped every result and notification before it returns, so nothing is in flight
    /// then; after a run fails, `main` measures nothing more and ends.
    ring: IoUring,
    setup: &'static str,
    /// The iovec array and message header of the one `SENDMSG`/`SENDMSG_ZC` in flight;
    /// rebuilt only when no send is in flight.
    iov: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
    pools: Pools,
    fixed: bool,
}

fn build_ring() -> io::Result<(IoUring, &'static str)> {
    let mut builder = IoUring::builder();
    builder
        .setup_cqsize(512)
        .setup_single_issuer()
        .setup_defer_taskrun();
    if let Ok(ring) = builder.build(256) {
        return Ok((ring, "SINGLE_ISSUER | DEFER_TASKRUN"));
    }
    IoUring::builder()
        .setup_cqsize(512)
        .build(256)
        .map(|r| (r, "plain"))
}

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed value we own; all-zero bytes is a
    // valid `rusage`.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// FNV-1a, to check in the quick mode that the stream received is the stream sent.
fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Reads the connection to its end; returns the byte count and, if asked, the FNV hash.
fn drain(mut rx: TcpStream, hash: bool) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut h) = (0u64, FNV_START);
    loop {
        match rx.read(&mut buf) {
            Ok(0) => return Ok((n, h)),
            Ok(k) => {
                n += k as u64;
                if hash {
                    h = fnv(h, &buf[..k]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Bench {
    fn new(blocks: usize) -> io::Result<Bench> {
        let (ring, setup) = build_ring()?;
        let pools = Pools::new(blocks)?;
        let regions = [
            libc::iovec {
                iov_base: pools.records.as_ptr() as *mut libc::c_void,
                iov_len: pools.records.len(),
            },
            libc::iovec {
                iov_base: pools.payload.as_ptr() as *mut libc::c_void,
                iov_len: pools.payload.len(),
            },
        ];
        // SAFETY: both regions are mappings owned by `pools`, which the returned `Bench` owns
        // and drops only after the ring (field order), so they stay valid for as long as they
        // are registered. The kernel only reads them (sends).
        let fixed = unsafe { ring.submitter().register_buffers(&regions) };
        if let Err(e) = &fixed {
            eprintln!("register_buffers failed ({e}); the send_zc_fixed variants are skipped");
        }
        // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid value.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        Ok(Bench {
            ring,
            setup,
            iov: Vec::with_capacity(2 * BATCH),
            msg: Box::new(msg),
            pools,
            fixed: fixed.is_ok(),
        })
    }

    /// Whether the kernel has the zero-copy opcodes.
    fn supports(&self, v: Variant) -> bool {
        let mut probe = io_uring::Probe::new();
        if self.ring.submitter().register_probe(&mut probe).is_err() {
            return false;
        }
        match v.method {
            Method::SendMsg => probe.is_supported(opcode::SendMsg::CODE),
            Method::Send => probe.is_supported(opcode::Send::CODE),
            Method::SendMsgZc => probe.is_supported(opcode::SendMsgZc::CODE),
            Method::SendZc => probe.is_supported(opcode::SendZc::CODE),
            Method::SendZcFixed => self.fixed && probe.is_supported(opcode::SendZc::CODE),
        }
    }

    /// The submission for the rest of `unit` from byte `off` on. Points `iov`/`msg` at the
    /// pools for the vectored methods.
    fn entry(
        &mut self,
        v: Variant,
        unit: usize,
        off: usize,
        fd: types::Fd,
    ) -> io_uring::squeue::Entry {
        let slices = self.pools.slices(v, unit);
        let ud = unit as u64;
        if v.vectored() {
            self.iov.clear();
            let mut skip = off;
            for s in slices {
                if skip >= s.len() {
                    skip -= s.len();
                    continue;
                }
                self.iov.push(libc::iovec {
                    iov_base: s[skip..].as_ptr() as *mut libc::c_void,
                    iov_len: s.len() - skip,
                });
                skip = 0;
            }
            self.msg.msg_iov = self.iov.as_mut_ptr();
            self.msg.msg_iovlen = self.iov.len() as _;
            let msg = &*self.msg as *const libc::msghdr;
            let flags = libc::MSG_NOSIGNAL as u32;
            return match v.method {
                Method::SendMsg => opcode::SendMsg::new(fd, msg).flags(flags).build(),
                _ => opcode::SendMsgZc::new(fd, msg)
                    .flags(flags)
                    .ioprio(SEND_ZC_REPORT_USAGE)
                    .build(),
            }
            .user_data(ud);
        }
        let rest = &slices[0][off..];
        let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
        let flags = libc::MSG_NOSIGNAL;
        match v.method {
            Method::Send => opcode::Send::new(fd, ptr, len).flags(flags).build(),
            Method::SendZc => opcode::SendZc::new(fd, ptr, len)
                .flags(flags)
                .zc_flags(SEND_ZC_REPORT_USAGE)
                .build(),
            _ => opcode::SendZc::new(fd, ptr, len)
                .flags(flags)
                .zc_flags(SEND_ZC_REPORT_USAGE)
                .buf_index(Some(Pools::fixed_index(v)))
                .build(),
        }
        .user_data(ud)
    }

    /// Waits for at least one completion and hands back all that are ready as
    /// `(user_data, res, flags)`.
    fn reap(&mut self, out: &mut Vec<(u64, i32, u32)>) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        out.clear();
        out.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        Ok(())
    }

    /// Sends at least `bytes` (whole units) over a fresh loopback connection and measures it.
    fn run(&mut self, v: Variant, bytes: u64, verify: bool) -> io::Result<Outcome> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let tx = TcpStream::connect(listener.local_addr()?)?;
        let (rx, _) = listener.accept()?;
        // As the driver's sockets.
        tx.set_nonblocking(true)?;
        tx.set_nodelay(true)?;
        rx.set_nodelay(true)?;
        let units_in_pool = self.pools.blocks / v.blocks_per_unit();
        let unit_len = v.unit_len() as u64;
        let units = bytes.div_ceil(unit_len);
        let reader = thread::spawn(move || drain(rx, verify));
        let fd = types::Fd(tx.as_raw_fd());

        let mut out = Outcome::default();
        let mut pending = vec![0u32; units_in_pool];
        let mut pending_total = 0u64;
        let mut cqes = Vec::with_capacity(64);
        let mut expect = FNV_START;
        let (proc0, thread0, start) = (
            rusage(libc::RUSAGE_SELF),
            rusage(libc::RUSAGE_THREAD),
            Instant::now(),
        );
        for n in 0..units {
            let unit = (n % units_in_pool as u64) as usize;
            if verify {
                for s in self.pools.slices(v, unit) {
                    expect = fnv(expect, s);
                }
            }
            // The unit's memory is reused only after its last notification.
            while pending[unit] > 0 {
                self.reap(&mut cqes)?;
                for &c in &cqes {
                    assert!(cqueue::notif(c.2), "a result with no send in flight");
                    notif(c, &mut pending, &mut out);
                    pending_total -= 1;
                }
            }
            let mut off = 0usize;
            while off < v.unit_len() {
                let entry = self.entry(v, unit, off, fd);
                // SAFETY: the entry names memory in `self.pools` (and for the vectored
                // methods `self.iov` and `self.msg`), all owned by `self`, which drops the
                // ring first; `iov`/`msg` are not touched until this send's result is reaped
                // below, and the unit's pool memory is never written. A zero-copy send's
                // pages are reused only after its notification (`pending`), and every run
                // reaps all notifications before it returns.
                unsafe { self.ring.submission().push(&entry) }
                    .map_err(|_| io::Error::other("submission queue full"))?;
                out.calls += 1;
                let mut result = None;
                while result.is_none() {
                    self.reap(&mut cqes)?;
                    for &c in &cqes {
                        if cqueue::notif(c.2) {
                            notif(c, &mut pending, &mut out);
                            pending_total -= 1;
                        } else {
                            if cqueue::more(c.2) {
                                pending[c.0 as usize] += 1;
                                pending_total += 1;
                            }
                            result = Some(c.1);
                        }
                    }
                }
                let res = result.unwrap_or(0);
                if res < 0 {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                off += res as usize;
                out.bytes += res as u64;
            }
        }
        while pending_total > 0 {
            self.reap(&mut cqes)?;
            for &c in &cqes {
                notif(c, &mut pending, &mut out);
                pending_total -= 1;
            }
        }
        tx.shutdown(Shutdown::Write)?;
        let (got, hash) = reader
            .join()
            .map_err(|_| io::Error::other("reader panicked"))??;
        out.wall_s = start.elapsed().as_secs_f64();
        out.cpu_process_s = rusage(libc::RUSAGE_SELF) - proc0;
        out.cpu_sender_s = rusage(libc::RUSAGE_THREAD) - thread0;
        if got != out.bytes {
            return Err(io::Error::other(format!(
                "sent {} bytes, received {got}",
                out.bytes
            )));
        }
        if verify && hash != expect {
            return Err(io::Error::other("received bytes differ from those sent"));
        }
        Ok(out)
    }
}

/// Counts a zero-copy notification and releases its unit.
fn notif(cqe: (u64, i32, u32), pending: &mut [u32], out: &mut Outcome) {
    pending[cqe.0 as usize] -= 1;
    out.notifs += 1;
    if cqe.1 as u32 & NOTIF_USAGE_ZC_COPIED != 0 {
        out.copied += 1;
    }
}

struct Args {
    bench: bool,
    mib: u64,
    rounds: usize,
    pool_mib: usize,
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        bench: false,
        mib: 1024,
        rounds: 5,
        pool_mib: 64,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().expect("option needs a value");
        match a.as_str() {
            "--bench" => args.bench = true,
            "--mib" => args.mib = val().parse().expect("--mib N"),
            "--rounds" => args.rounds = val().parse().expect("--rounds N"),
            "--pool-mib" => args.pool_mib = val().parse().expect("--pool-mib N"),
            "--only" => args.only = Some(val()),
            _ => {}
        }
    }
    args
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}-{hi:.2}")
}

fn main() {
    let args = parse_args();
    let (mib, rounds, pool_mib) = if args.bench {
        (args.mib, args.rounds, args.pool_mib)
    } else {
        (4, 1, 4)
    };
    let mut bench = match Bench::new(pool_mib.max(2) * 1024 * 1024 / BLOCK) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("send_zc: cannot set up io_uring here ({e}); nothing measured");
            std::process::exit(1);
        }
    };
    let asked: Vec<Variant> = SHAPES
        .iter()
        .flat_map(|&shape| METHODS.iter().map(move |&method| Variant { shape, method }))
        .filter(|v| {
            args.only
                .as_ref()
                .is_none_or(|s| v.name().contains(s.as_str()))
        })
        .collect();
    if asked.is_empty() {
        eprintln!("send_zc: no variant matches --only; nothing measured");
        std::process::exit(1);
    }
    let (variants, unsupported): (Vec<Variant>, Vec<Variant>) =
        asked.into_iter().partition(|&v| bench.supports(v));
    for v in &unsupported {
        eprintln!(
            "{}: not supported here, not measured (the run will fail)",
            v.name()
        );
    }
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "kernel {}; ring {}; {} MiB per variant per round, {rounds} rounds, pool {pool_mib} MiB",
        uname.trim(),
        bench.setup,
        mib
    );
    let bytes = mib * 1024 * 1024;
    let mut failed = false;
    if args.bench {
        // Warm-up, not counted: first-touch costs of the connection path and the pools.
        for &v in &variants {
            if let Err(e) = bench.run(v, 64 << 20, false) {
                eprintln!("{}: {e}", v.name());
                failed = true;
                break;
            }
        }
    }
    let mut results: Vec<Vec<Option<Outcome>>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        // Each round rotates the order and every other round reverses it, so no variant
        // always runs next to the same neighbours or at the same point of a round.
        let n = variants.len();
        let mut order: Vec<usize> = (0..n).map(|i| (i + round * 3) % n).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            if failed {
                // Operations of the failed run may still be in flight: stop here.
                break;
            }
            let v = variants[i];
            match bench.run(v, bytes, !args.bench) {
                Ok(o) => {
                    println!(
                        "round {round} {:<34} {:6.2} GB/s  cpu {:5.3} s/GB (sender {:5.3})  \
                         calls {} notifs {} copied {}",
                        v.name(),
                        o.gbps(),
                        o.cpu_per_gb(),
                        o.sender_per_gb(),
                        o.calls,
                        o.notifs,
                        o.copied
                    );
                    results[i].push(Some(o));
                }
                Err(e) => {
                    println!("round {round} {:<34} failed: {e}", v.name());
                    results[i].push(None);
                    failed = true;
                }
            }
        }
    }
    if !unsupported.is_empty() {
        let names: Vec<String> = unsupported.iter().map(|v| v.name()).collect();
        eprintln!("send_zc: not measured here: {}", names.join(", "));
        failed = true;
    }
    if !args.bench {
        if failed {
            std::process::exit(1);
        }
        return;
    }

    println!();
    println!(
        "| variant | GB/s median (range) | x sendmsg GB/s (range) | CPU s/GB median (range) | \
         x sendmsg CPU (range) | sender thread s/GB | ZC notifs copied / total |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, v) in variants.iter().enumerate() {
        let reference = variants
            .iter()
            .position(|r| r.shape == v.shape && r.method == Method::SendMsg);
        let mut gbps = Vec::new();
        let mut cpu = Vec::new();
        let mut sender = Vec::new();
        let mut rg = Vec::new();
        let mut rc = Vec::new();
        let (mut notifs, mut copied) = (0, 0);
        for (round, o) in results[i].iter().enumerate() {
            let Some(o) = o else { continue };
            gbps.push(o.gbps());
            cpu.push(o.cpu_per_gb());
            sender.push(o.sender_per_gb());
            notifs += o.notifs;
            copied += o.copied;
            if let Some(r) = reference.and_then(|r| results[r].get(round).copied().flatten()) {
                rg.push(o.gbps() / r.gbps());
                rc.push(o.cpu_per_gb() / r.cpu_per_gb());
            }
        }
        if gbps.is_empty() {
            continue;
        }
        let zc = if v.zero_copy() {
            format!("{copied} / {notifs}")
        } else {
            "-".into()
        };
        let ratio = |r: &mut Vec<f64>| {
            if r.is_empty() {
                "-".to_string()
            } else {
                let s = spread(r);
                format!("{:.2}x ({s})", median(r))
            }
        };
        let (sg, sc) = (spread(&gbps), spread(&cpu));
        println!(
            "| {} | {:.2} ({sg}) | {} | {:.3} ({sc}) | {} | {:.3} | {zc} |",
            v.name(),
            median(&mut gbps),
            ratio(&mut rg),
            median(&mut cpu),
            ratio(&mut rc),
            median(&mut sender),
        );
    }
    if failed {
        std::process::exit(1);
    }
}
