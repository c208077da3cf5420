//! Moves bytes between two uTP endpoints (`ringtorrent::utp`) over loopback UDP, each on a
//! thread of its own with a plain socket and the monotonic clock, then the same bytes over a
//! loopback TCP connection; prints one JSON line with each one's rate and CPU per GiB
//! (user + system time of the process during that transfer). For `scripts/bench-utp.sh`.
//!
//! Usage: utp_pair [MIB] (default 256)
//!
//! This measures the uTP layer alone: the engine's loops do not carry uTP yet.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringtorrent::core::Time;
use ringtorrent::utp::{Endpoint, EndpointConfig, UtpEvent, UtpHandle};

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points to
    // enough memory for one; we read it only when it reports success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct Side {
    socket: UdpSocket,
    ep: Endpoint,
    epoch: Instant,
    conn: Option<UtpHandle>,
    buf: Vec<u8>,
}

impl Side {
    fn new(seed: u64) -> Side {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A window of packets must fit the kernel's queue (its default, 208 KiB, holds about
        // 90 full packets), as the engine's UDP socket will be sized.
        ringtorrent::load::set_recv_buffer(socket.as_raw_fd(), 4 << 20);
        Side {
            socket,
            ep: Endpoint::new(EndpointConfig::default(), seed),
            epoch: Instant::now(),
            conn: None,
            buf: vec![0; 65536],
        }
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn send(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            let _ = self.socket.send_to(&t.payload, t.to);
        }
    }

    fn pump(&mut self) {
        self.send();
        let now = self.now();
        let wait = self
            .ep
            .poll_timeout()
            .map_or(Duration::from_millis(5), |t| t.saturating_since(now))
            .clamp(Duration::from_micros(50), Duration::from_millis(5));
        self.socket.set_read_timeout(Some(wait)).unwrap();
        for i in 0..512 {
            if i == 1 {
                self.socket.set_nonblocking(true).unwrap();
            }
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let now = self.now();
                    self.ep.handle_datagram(from, &self.buf[..n], now);
                }
                Err(_) => break,
            }
        }
        self.socket.set_nonblocking(false).unwrap();
        let now = self.now();
        self.ep.handle_timeout(now);
        while let Some(e) = self.ep.poll_event() {
            if let UtpEvent::Incoming(h, _) | UtpEvent::Connected(h) = e {
                self.conn.get_or_insert(h);
            }
        }
        self.send();
    }
}

fn utp(total: usize) -> (f64, f64) {
    let mut rx = Side::new(1);
    let to = rx.socket.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let rx_done = done.clone();
    let receiver = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut out = vec![0u8; 1 << 16];
        while got < total {
            rx.pump();
            if let Some(h) = rx.conn {
                loop {
                    let now = rx.now();
                    let n = rx.ep.read(h, &mut out, now);
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
            }
        }
        rx_done.store(true, Ordering::Release);
        // The last acks, so the sender sees everything delivered.
        for _ in 0..10 {
            rx.pump();
        }
    });
    let mut tx = Side::new(2);
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let cpu = cpu_seconds();
    let now = tx.now();
    let h = tx.ep.connect(to, now).unwrap();
    let mut sent = 0usize;
    // Write everything, then keep the connection running until the receiver has it all.
    while !done.load(Ordering::Acquire) {
        if sent < total {
            let now = tx.now();
            let end = (total - sent).min(chunk.len());
            sent += tx.ep.write(h, &chunk[..end], now);
        }
        tx.pump();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    receiver.join().unwrap();
    (elapsed, cpu)
}

fn tcp(total: usize) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
    });
    let start = Instant::now();
    let cpu = cpu_seconds();
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let mut sent = 0;
    while sent < total {
        let end = (total - sent).min(chunk.len());
        s.write_all(&chunk[..end]).unwrap();
        sent += end;
    }
    receiver.join().unwrap();
    (start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;
    let gib = total as f64 / f64::from(1u32 << 30);
    let (u_s, u_cpu) = utp(total);
    let (t_s, t_cpu) = tcp(total);
    println!(
        "{{\"mib\": {mib}, \"utp_mb_s\": {:.1}, \"utp_cpu_s_per_gib\": {:.2}, \"tcp_mb_s\": {:.1}, \"tcp_cpu_s_per_gib\": {:.2}}}",
        total as f64 / u_s / 1e6,
        u_cpu / gib,
        total as f64 / t_s / 1e6,
        t_cpu / gib
    );
}
