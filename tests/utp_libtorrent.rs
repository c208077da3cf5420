//! The sans-IO uTP endpoint (`ringtorrent::utp`) against libtorrent 2.0 with TCP switched off
//! (`enable_incoming_tcp`/`enable_outgoing_tcp` false, uTP on: `lt_seed.py`/`lt_leech.py
//! --utp-only`), on 127.0.0.1: both roles of the handshake (we dial; libtorrent dials us) and
//! both directions of data (we download a torrent from libtorrent's seed; libtorrent downloads
//! it from us and verifies every piece), byte-exact.
//!
//! The endpoint is not wired into the engine's loops yet, so the peer on our side is a
//! minimal BitTorrent peer written here (handshake, bitfield, interested/unchoke, requests and
//! pieces) on a plain UDP socket and the test's own clock: what is checked is uTP itself.
//! libtorrent dials in plaintext (`--out-enc-policy disabled`): MSE is the session's, above
//! the stream, and this peer does not speak it. Every process started here is ended by PID
//! (its `Proc` handle) and each transfer is bounded in time.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::interop::{lt_seed_with, prepare, Case, Layout, Prepared};
use common::{support, Proc, START_LIMIT};
use ringtorrent::core::Time;
use ringtorrent::metainfo::Torrent;
use ringtorrent::utp::{Endpoint, EndpointConfig, UtpEvent, UtpHandle};

const CASE: Case = Case {
    name: "utp",
    layout: Layout::Single(3_000_017),
    piece_len: "256K",
    private: false,
};

const LIMIT: Duration = Duration::from_secs(60);
const BLOCK: u32 = 16 * 1024;

/// A minimal BitTorrent peer over one uTP connection of an [`Endpoint`].
struct Peer {
    socket: UdpSocket,
    ep: Endpoint,
    epoch: Instant,
    conn: Option<UtpHandle>,
    inbuf: Vec<u8>,
    closed: bool,
    buf: Vec<u8>,
}

impl Peer {
    fn new() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        Peer {
            socket,
            ep: Endpoint::new(EndpointConfig::default(), 7),
            epoch: Instant::now(),
            conn: None,
            inbuf: Vec::new(),
            closed: false,
            buf: vec![0; 65536],
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Sends what is queued, waits (at most 5 ms, or until the endpoint's timer) for
    /// datagrams, runs the timers, and takes in what became readable.
    fn pump(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            let _ = self.socket.send_to(&t.payload, t.to);
        }
        let now = self.now();
        let wait = self
            .ep
            .poll_timeout()
            .map_or(Duration::from_millis(5), |t| t.saturating_since(now))
            .clamp(Duration::from_micros(100), Duration::from_millis(5));
        self.socket.set_read_timeout(Some(wait)).unwrap();
        for i in 0..256 {
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
            match e {
                UtpEvent::Incoming(h, _) | UtpEvent::Connected(h) => {
                    self.conn.get_or_insert(h);
                }
                UtpEvent::Closed(h, reason) if Some(h) == self.conn => {
                    eprintln!("uTP connection closed: {reason:?}");
                    self.closed = true;
                }
                _ => {}
            }
        }
        if let Some(h) = self.conn {
            loop {
                let now = self.now();
                let n = self.ep.read(h, &mut self.buf, now);
                if n == 0 {
                    break;
                }
                self.inbuf.extend_from_slice(&self.buf[..n]);
            }
        }
        while let Some(t) = self.ep.poll_transmit() {
            let _ = self.socket.send_to(&t.payload, t.to);
        }
    }

    fn wait_conn(&mut self, deadline: Instant) -> UtpHandle {
        while self.conn.is_none() || self.ep.connection(self.conn.unwrap()).is_none() {
            assert!(Instant::now() < deadline, "no uTP connection");
            self.pump();
        }
        self.conn.unwrap()
    }

    fn write_all(&mut self, mut data: &[u8], deadline: Instant) {
        let h = self.conn.expect("connected");
        while !data.is_empty() {
            assert!(!self.closed, "connection closed while writing");
            assert!(Instant::now() < deadline, "write timed out");
            let now = self.now();
            let n = self.ep.write(h, data, now);
            data = &data[n..];
            self.pump();
        }
    }

    /// libtorrent's handshake, or `None` if the connection ended (or `deadline` passed)
    /// before it came.
    fn try_handshake(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        while self.inbuf.len() < 68 {
            let ended = self.closed
                || self
                    .conn
                    .and_then(|h| self.ep.connection(h))
                    .is_none_or(|c| c.eof());
            if ended || Instant::now() > deadline {
                return None;
            }
            self.pump();
        }
        Some(self.inbuf.drain(..68).collect())
    }

    /// The next length-prefixed message (keep-alives skipped), or the handshake (`hs`).
    fn next(&mut self, hs: bool, deadline: Instant) -> Vec<u8> {
        loop {
            let need = if hs {
                68
            } else if self.inbuf.len() >= 4 {
                4 + u32::from_be_bytes(self.inbuf[..4].try_into().unwrap()) as usize
            } else {
                4
            };
            if self.inbuf.len() >= need && (hs || self.inbuf.len() >= 4) {
                let msg: Vec<u8> = self.inbuf.drain(..need).collect();
                if !hs && msg.len() == 4 {
                    continue;
                }
                return msg;
            }
            assert!(!self.closed, "connection closed while reading");
            assert!(Instant::now() < deadline, "read timed out");
            self.pump();
        }
    }
}

fn handshake(info_hash: &[u8; 20]) -> Vec<u8> {
    let mut v = vec![19];
    v.extend_from_slice(b"BitTorrent protocol");
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(info_hash);
    v.extend_from_slice(b"-RT0000-utp-interop0");
    v
}

fn msg(id: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(id);
    v.extend_from_slice(body);
    v
}

struct Setup {
    _dir: tempfile::TempDir,
    prepared: Prepared,
    info_hash: [u8; 20],
    piece_len: u64,
    payload: Vec<u8>,
}

fn setup(tag: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let prepared = prepare(dir.path(), &CASE, tag, 23);
    let torrent = Torrent::from_bytes(&std::fs::read(&prepared.torrent).unwrap()).unwrap();
    let info_hash: [u8; 20] =
        ringtorrent::core::hex::decode::<20>(&torrent.info_hash().to_hex()).expect("hex info hash");
    let piece_len = u64::from(torrent.info.lengths().piece_len());
    let payload = std::fs::read(prepared.data.join(format!("{}.bin", prepared.label))).unwrap();
    Setup {
        _dir: dir,
        prepared,
        info_hash,
        piece_len,
        payload,
    }
}

/// Downloads the whole payload from the libtorrent peer on `peer`'s connection.
fn download(peer: &mut Peer, s: &Setup, we_dialled: bool) {
    let deadline = Instant::now() + LIMIT;
    peer.wait_conn(deadline);
    if we_dialled {
        peer.write_all(&handshake(&s.info_hash), deadline);
    }
    let hs = peer.next(true, deadline);
    assert_eq!(&hs[28..48], &s.info_hash, "libtorrent's handshake");
    if !we_dialled {
        peer.write_all(&handshake(&s.info_hash), deadline);
    }
    peer.write_all(&msg(2, &[]), deadline); // interested
    let total = s.payload.len() as u64;
    let mut blocks: Vec<(u32, u32, u32)> = Vec::new();
    let mut offset = 0u64;
    while offset < total {
        let piece = (offset / s.piece_len) as u32;
        let begin = (offset % s.piece_len) as u32;
        let len = (BLOCK as u64)
            .min(total - offset)
            .min(s.piece_len - begin as u64) as u32;
        blocks.push((piece, begin, len));
        offset += u64::from(len);
    }
    let mut got = vec![0u8; s.payload.len()];
    let mut received = 0usize;
    let mut next_block = 0usize;
    let mut outstanding = 0usize;
    let mut unchoked = false;
    while received < blocks.len() {
        if unchoked {
            while outstanding < 64 && next_block < blocks.len() {
                let (p, b, l) = blocks[next_block];
                let mut body = p.to_be_bytes().to_vec();
                body.extend_from_slice(&b.to_be_bytes());
                body.extend_from_slice(&l.to_be_bytes());
                peer.write_all(&msg(6, &body), deadline);
                next_block += 1;
                outstanding += 1;
            }
        }
        let m = peer.next(false, deadline);
        match m[4] {
            0 => unchoked = false,
            1 => unchoked = true,
            7 => {
                let p = u32::from_be_bytes(m[5..9].try_into().unwrap()) as u64;
                let b = u32::from_be_bytes(m[9..13].try_into().unwrap()) as u64;
                let at = (p * s.piece_len + b) as usize;
                let data = &m[13..];
                got[at..at + data.len()].copy_from_slice(data);
                received += 1;
                outstanding -= 1;
            }
            _ => {}
        }
    }
    assert!(got == s.payload, "the payload differs");
    let c = peer.ep.connection(peer.conn.unwrap()).unwrap();
    eprintln!("download done: {:?}", c.stats());
}

/// Serves the payload to the libtorrent peer until `stop`.
fn serve(peer: &mut Peer, s: &Setup, we_dialled: bool, stop: &AtomicBool) {
    let deadline = Instant::now() + LIMIT;
    peer.wait_conn(deadline);
    if we_dialled {
        // libtorrent refuses connections while it checks the (empty) files it just added:
        // dial again until it takes one.
        let remote = peer.ep.connection(peer.conn.unwrap()).unwrap().peer();
        loop {
            peer.write_all(&handshake(&s.info_hash), deadline);
            if let Some(hs) = peer.try_handshake(Instant::now() + Duration::from_secs(3)) {
                peer.inbuf.splice(0..0, hs);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "libtorrent never took our connection"
            );
            let now = peer.now();
            if let Some(h) = peer.conn.take() {
                peer.ep.abort(h, now);
            }
            peer.closed = false;
            peer.inbuf.clear();
            std::thread::sleep(Duration::from_millis(300));
            let now = peer.now();
            peer.ep.connect(remote, now).unwrap();
            peer.wait_conn(deadline);
        }
    }
    let hs = peer.next(true, deadline);
    assert_eq!(&hs[28..48], &s.info_hash, "libtorrent's handshake");
    if !we_dialled {
        peer.write_all(&handshake(&s.info_hash), deadline);
    }
    let pieces = s.payload.len().div_ceil(s.piece_len as usize);
    let mut bitfield = vec![0u8; pieces.div_ceil(8)];
    for i in 0..pieces {
        bitfield[i / 8] |= 0x80 >> (i % 8);
    }
    peer.write_all(&msg(5, &bitfield), deadline);
    peer.write_all(&msg(1, &[]), deadline); // unchoke
    while !stop.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "libtorrent did not finish");
        if peer.inbuf.len() < 4
            || peer.inbuf.len()
                < 4 + u32::from_be_bytes(peer.inbuf[..4].try_into().unwrap()) as usize
        {
            if peer.closed {
                return;
            }
            peer.pump();
            continue;
        }
        let m = peer.next(false, deadline);
        if m[4] == 6 && m.len() == 17 {
            let p = u32::from_be_bytes(m[5..9].try_into().unwrap()) as u64;
            let b = u32::from_be_bytes(m[9..13].try_into().unwrap()) as u64;
            let l = u32::from_be_bytes(m[13..17].try_into().unwrap()) as usize;
            let at = (p * s.piece_len + b) as usize;
            let mut body = m[5..13].to_vec();
            body.extend_from_slice(&s.payload[at..at + l]);
            peer.write_all(&msg(7, &body), deadline);
        }
    }
}

fn lt_leech(s: &Setup, peers: &[String], work: &Path) -> Proc {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(support("lt_leech.py"))
        .arg(&s.prepared.torrent)
        .arg(work.join("lt-leech-save"))
        .args([
            "--utp-only",
            "--timeout",
            "60",
            "--out-enc-policy",
            "disabled",
        ]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    cmd.stdin(Stdio::null());
    Proc::watch(
        "lt_leech.py --utp-only",
        &mut cmd,
        &work.join("lt-leech.log"),
    )
}

#[test]
fn we_dial_libtorrent_over_utp_and_download() {
    let s = setup("dial-down");
    let work = tempfile::tempdir().unwrap();
    let (_seed, port) = lt_seed_with(
        &s.prepared,
        &[],
        &["--utp-only", "--out-enc-policy", "disabled"],
        work.path(),
    );
    let mut peer = Peer::new();
    let now = peer.now();
    peer.ep
        .connect(SocketAddr::from(([127, 0, 0, 1], port)), now)
        .unwrap();
    download(&mut peer, &s, true);
}

#[test]
fn libtorrent_dials_us_over_utp_and_we_download() {
    let s = setup("accept-down");
    let work = tempfile::tempdir().unwrap();
    let mut peer = Peer::new();
    let ours = peer.addr().to_string();
    let (_seed, _port) = lt_seed_with(
        &s.prepared,
        &[ours],
        &["--utp-only", "--out-enc-policy", "disabled"],
        work.path(),
    );
    download(&mut peer, &s, false);
}

fn upload(s: Setup, we_dial: bool) {
    let work = tempfile::tempdir().unwrap();
    let mut peer = Peer::new();
    let peers = if we_dial {
        vec![]
    } else {
        vec![peer.addr().to_string()]
    };
    let leech = lt_leech(&s, &peers, work.path());
    if we_dial {
        let line = leech.wait_line(START_LIMIT, "its listening address", |_, l| {
            l.contains("listening on")
        });
        let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        leech.wait_line(START_LIMIT, "that the torrent is in", |_, l| {
            l.contains("torrent added")
        });
        let now = peer.now();
        peer.ep
            .connect(SocketAddr::from(([127, 0, 0, 1], port)), now)
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            serve(&mut peer, &s, we_dial, &stop);
            (peer, s)
        })
    };
    let line = leech.wait_line(LIMIT, "that it completed", |_, l| l.contains("\"mb_s\""));
    stop.store(true, Ordering::Relaxed);
    let (_peer, s) = server.join().expect("the serving side");
    let got = std::fs::read(
        work.path()
            .join("lt-leech-save")
            .join(format!("{}.bin", s.prepared.label)),
    )
    .unwrap();
    assert!(got == s.payload, "libtorrent's copy differs");
    eprintln!("libtorrent downloaded over uTP: {line}");
}

#[test]
fn we_dial_libtorrent_over_utp_and_it_downloads() {
    upload(setup("dial-up"), true);
}

#[test]
fn libtorrent_dials_us_over_utp_and_downloads() {
    upload(setup("accept-up"), false);
}
