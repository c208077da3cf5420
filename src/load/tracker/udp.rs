//! The BEP 15 worker: several connected, non-blocking UDP sockets (one source port each),
//! requests encoded with [`crate::tracker::udp`], replies routed by transaction id, every
//! peer's connection id obtained with a `connect` before its first announce and again once
//! it is older than the lifetime, retransmission after the time-out, and late replies (to a
//! request already counted as timed out) told apart from replies that match nothing.
//!
//! System calls are batched: requests are encoded into a per-socket outbox and sent with one
//! `sendmmsg` per socket when a turn's sending is done, and replies are drained with
//! `recvmmsg`, up to `READ_BURST` at a time. Latency is unchanged by the batching in open
//! loop (timed from the scheduled slot); in closed loop it is timed from when the request was
//! queued, a few microseconds before the batch goes out. A reply's receive time is taken once
//! per `recvmmsg` batch, right after the call returns, and the batch is processed at once (no
//! system call in between: follow-up requests are only queued).

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::model::Model;
use super::{micros, plan, Action, LoadConfig, Pace, Plan, Schedule, Stats, Worker};
use crate::core::{InfoHash, Rng};
use crate::tracker::udp::{self as codec, UdpReply};
use crate::tracker::AnnounceRequest;

/// Datagrams read from one socket before looking at the others and the schedule (one
/// `recvmmsg`).
const READ_BURST: usize = 64;
/// Datagrams handed to one `sendmmsg`.
const SEND_BATCH: usize = 64;
/// Open-loop slots issued in one turn before reading replies.
const SEND_BURST: usize = 64;

#[derive(Debug, Clone)]
enum Req {
    Connect,
    Announce {
        event: crate::tracker::AnnounceEvent,
        numwant: u32,
        /// The announce's number within its torrent (0 until the model applied it).
        seq: u64,
    },
    /// Torrents, and each one's announce count when the scrape was planned.
    Scrape(Vec<(u32, u64)>),
}

impl Req {
    fn action(&self) -> Action {
        match self {
            Req::Connect => Action::Connect,
            Req::Announce { .. } => Action::Announce,
            Req::Scrape(_) => Action::Scrape,
        }
    }
}

#[derive(Debug)]
struct Pending {
    peer: u32,
    req: Req,
    /// For a connect sent because a request needed an id: that request, sent on the reply.
    then: Option<Req>,
    /// When the slot was scheduled (open loop) or first sent (closed loop), µs.
    slot: u64,
    attempt: u32,
    /// A deliberately wrong connection id (`--bad-connection-id`): not in the model.
    faulty: bool,
    conn_id: u64,
}

/// One UDP worker.
pub struct UdpWorker {
    cfg: Arc<LoadConfig>,
    model: Model,
    rng: Rng,
    socks: Vec<UdpSocket>,
    ipv6: bool,
    epoch: Instant,
    pending: HashMap<u32, Pending>,
    /// (deadline, transaction, attempt), in send order (deadlines only grow).
    deadlines: VecDeque<(u64, u32, u32)>,
    /// Transactions that timed out recently, with their action, to recognise late replies.
    late: HashMap<u32, Action>,
    late_order: VecDeque<(u64, u32)>,
    next_tx: u32,
    /// Per socket: datagrams encoded and not yet sent.
    out: Vec<Outbox>,
    /// `recvmmsg` target: `READ_BURST` slots of `slot` bytes.
    rbuf: Vec<u8>,
    slot: usize,
    stats: Stats,
}

/// Datagrams queued on one socket, back to back in `data`; `ends[i]` is where the i-th ends.
#[derive(Debug, Default)]
struct Outbox {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl UdpWorker {
    /// Opens `cfg.sockets` sockets connected to the target.
    pub fn new(
        cfg: Arc<LoadConfig>,
        model: Model,
        rng: Rng,
        epoch: Instant,
        worker: u32,
    ) -> std::io::Result<UdpWorker> {
        let ipv6 = cfg.target.is_ipv6();
        let bind: SocketAddr = match (ipv6, super::super::is_loopback_target(&cfg.target)) {
            (false, true) => "127.0.0.1:0".parse().expect("literal"),
            (true, true) => "[::1]:0".parse().expect("literal"),
            (false, false) => "0.0.0.0:0".parse().expect("literal"),
            (true, false) => "[::]:0".parse().expect("literal"),
        };
        // The largest reply we ask for: an announce with the most peers, a scrape of the
        // most torrents, rounded up; anything longer is counted truncated and malformed.
        let entry = if ipv6 { 18 } else { 6 };
        let most_peers = cfg.numwant.iter().copied().max().unwrap_or(0).min(10_000) as usize;
        let slot = (20 + entry * most_peers)
            .max(8 + 12 * cfg.scrape_sizes.1.min(1_000) as usize)
            .max(2048)
            .next_power_of_two()
            .min(65_536);
        let mut socks = Vec::new();
        for _ in 0..cfg.sockets.max(1) {
            let s = UdpSocket::bind(bind)?;
            s.connect(cfg.target)?;
            s.set_nonblocking(true)?;
            super::super::set_recv_buffer(s.as_raw_fd(), 4 << 20);
            socks.push(s);
        }
        Ok(UdpWorker {
            out: (0..socks.len()).map(|_| Outbox::default()).collect(),
            cfg,
            model,
            rng,
            socks,
            ipv6,
            epoch,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            late: HashMap::new(),
            late_order: VecDeque::new(),
            next_tx: worker.wrapping_mul(0x1000_0000),
            rbuf: vec![0u8; READ_BURST * slot],
            slot,
            stats: Stats::default(),
        })
    }

    fn conn_id(&self, peer: u32, now: u64) -> Option<u64> {
        let c = self.model.conns[self.model.peers[peer as usize].conn as usize];
        let life = self.cfg.conn_id_lifetime.as_micros() as u64;
        c.id.filter(|&(_, at)| now.saturating_sub(at) < life)
            .map(|(id, _)| id)
    }

    fn issue(&mut self, slot: u64, now: u64) {
        match plan(&self.cfg, &mut self.model, now, &mut self.rng) {
            Plan::Idle => self.stats.bump("slots.idle"),
            Plan::Connect(p) => self.start(p, Req::Connect, None, slot, false, 0),
            Plan::Announce(p) => {
                let numwant = self.cfg.numwant[self.rng.index(self.cfg.numwant.len())];
                let faulty = self.rng.chance(self.cfg.bad_conn_id);
                let event = self.model.peers[p as usize].next;
                let mut req = Req::Announce {
                    event,
                    numwant,
                    seq: 0,
                };
                if faulty {
                    // Not the model's business: put the peer back on its schedule.
                    let id = self.conn_id(p, now).unwrap_or(0) ^ 0x0bad_c0de_0bad_c0de;
                    self.model.release(p, now, &mut self.rng);
                    self.start(p, req, None, slot, true, id);
                } else if let Some(id) = self.conn_id(p, now) {
                    if let Req::Announce { seq, .. } = &mut req {
                        *seq = self.model.on_send(p).1;
                    }
                    self.start(p, req, None, slot, false, id);
                } else {
                    self.model.reserve(p);
                    self.start(p, Req::Connect, Some(req), slot, false, 0);
                }
            }
            Plan::Scrape(p, torrents) => {
                let req = Req::Scrape(torrents.iter().map(|&t| (t, self.model.seq(t))).collect());
                match self.conn_id(p, now) {
                    Some(id) => self.start(p, req, None, slot, false, id),
                    None => self.start(p, Req::Connect, Some(req), slot, false, 0),
                }
            }
        }
    }

    fn start(&mut self, peer: u32, req: Req, then: Option<Req>, slot: u64, faulty: bool, id: u64) {
        if faulty {
            self.stats.bump("fault.bad_connection_id_sent");
        }
        self.send_new(peer, req, then, slot, faulty, id);
    }

    /// Sends a request under a fresh transaction id (counted as sent: every datagram but
    /// retransmissions is).
    fn send_new(
        &mut self,
        peer: u32,
        req: Req,
        then: Option<Req>,
        slot: u64,
        faulty: bool,
        id: u64,
    ) {
        let mut tx = self.next_tx;
        while self.pending.contains_key(&tx) || self.late.contains_key(&tx) {
            tx = tx.wrapping_add(1);
        }
        self.next_tx = tx.wrapping_add(1);
        self.stats.outcome(req.action(), "sent");
        let p = Pending {
            peer,
            req,
            then,
            slot,
            attempt: 0,
            faulty,
            conn_id: id,
        };
        self.send(tx, &p);
        let now = micros(self.epoch);
        self.deadlines
            .push_back((now + self.cfg.timeout.as_micros() as u64, tx, 0));
        self.pending.insert(tx, p);
    }

    /// Queues a request's datagram on its peer's socket; [`UdpWorker::flush`] sends it.
    fn send(&mut self, tx: u32, p: &Pending) {
        let sock = usize::from(self.model.peers[p.peer as usize].socket);
        let buf = &mut self.out[sock].data;
        match &p.req {
            Req::Connect => codec::encode_connect(buf, tx),
            Req::Announce { event, numwant, .. } => {
                let peer = &self.model.peers[p.peer as usize];
                let req = AnnounceRequest {
                    info_hash: self.model.torrents[peer.torrent as usize].hash,
                    peer_id: peer.peer_id,
                    port: peer.port,
                    uploaded: 0,
                    downloaded: 0,
                    left: self.model.left(p.peer),
                    event: *event,
                    numwant: *numwant,
                    key: peer.key,
                    tracker_id: None,
                    ipv6: None,
                };
                codec::encode_announce(buf, p.conn_id, tx, &req);
            }
            Req::Scrape(ts) => {
                let hashes: Vec<InfoHash> = ts
                    .iter()
                    .map(|&(t, _)| self.model.torrents[t as usize].hash)
                    .collect();
                codec::encode_scrape(buf, p.conn_id, tx, &hashes);
            }
        }
        let ob = &mut self.out[sock];
        ob.ends.push(ob.data.len());
    }

    /// Sends every queued datagram, one `sendmmsg` per socket and [`SEND_BATCH`] datagrams.
    fn flush(&mut self) {
        for s in 0..self.socks.len() {
            let ob = &mut self.out[s];
            let fd = self.socks[s].as_raw_fd();
            let mut done = 0;
            while done < ob.ends.len() {
                let batch = (ob.ends.len() - done).min(SEND_BATCH);
                // SAFETY: all-zero is a valid `iovec` and `mmsghdr` (null pointers, zero
                // lengths); both arrays live on this stack frame.
                let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
                for k in 0..batch {
                    let i = done + k;
                    let start = if i == 0 { 0 } else { ob.ends[i - 1] };
                    let bytes = &ob.data[start..ob.ends[i]];
                    iov[k].iov_base = bytes.as_ptr() as *mut libc::c_void;
                    iov[k].iov_len = bytes.len();
                    // No msg_name: the socket is connected.
                    msgs[k].msg_hdr.msg_iov = &mut iov[k];
                    msgs[k].msg_hdr.msg_iovlen = 1;
                }
                // SAFETY: `fd` is our open socket; `msgs[..batch]` are initialised headers
                // whose single iovec each points into `ob.data` (borrowed, unchanged until the
                // call returns) with in-bounds lengths; the kernel only reads the payloads and
                // writes each header's `msg_len`, all within `msgs[..batch]`.
                let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), batch as libc::c_uint, 0) };
                if r > 0 {
                    done += r as usize;
                    continue;
                }
                // A full socket buffer or a refused port: the time-out decides what happens.
                if std::io::Error::last_os_error().kind() == ErrorKind::WouldBlock {
                    self.stats
                        .add("send.would_block", (ob.ends.len() - done) as u64);
                    break;
                }
                self.stats.bump("send.error");
                done += 1;
            }
            ob.data.clear();
            ob.ends.clear();
        }
    }

    /// Reads every socket until it has nothing (or a burst), `READ_BURST` datagrams per
    /// `recvmmsg`; returns datagrams read.
    fn receive(&mut self) -> usize {
        let mut n = 0;
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let slot = self.slot;
        for s in 0..self.socks.len() {
            let fd = self.socks[s].as_raw_fd();
            // SAFETY: all-zero is a valid `iovec` and `mmsghdr`; both live on this frame.
            let mut iov: [libc::iovec; READ_BURST] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; READ_BURST] = unsafe { std::mem::zeroed() };
            for (k, chunk) in rbuf.chunks_exact_mut(slot).enumerate() {
                iov[k].iov_base = chunk.as_mut_ptr().cast();
                iov[k].iov_len = slot;
                msgs[k].msg_hdr.msg_iov = &mut iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `fd` is our open socket; each of the READ_BURST headers has one iovec
            // pointing at its own disjoint `slot`-byte chunk of `rbuf`, which we own and do not
            // touch during the call; no names or control buffers are asked for (null, 0); the
            // kernel writes at most `slot` bytes per chunk and each header's `msg_len` and
            // `msg_flags`. MSG_DONTWAIT with a null timeout: it returns what is queued now.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    READ_BURST as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                if std::io::Error::last_os_error().kind() != ErrorKind::WouldBlock {
                    // ECONNREFUSED from an ICMP port-unreachable: the tracker is gone;
                    // requests will time out.
                    self.stats.bump("recv.error");
                }
                continue;
            }
            // One receive time for the batch, taken now, before any of it is processed.
            let now = micros(self.epoch);
            for (k, m) in msgs[..r as usize].iter().enumerate() {
                if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    self.stats.bump("recv.truncated");
                }
                let len = (m.msg_len as usize).min(slot);
                self.on_datagram(&rbuf[k * slot..k * slot + len], now);
            }
            n += r as usize;
        }
        self.rbuf = rbuf;
        n
    }

    fn on_datagram(&mut self, packet: &[u8], now: u64) {
        let Some(tx) = codec::peek_transaction(packet) else {
            self.stats.bump("reply.too_short");
            return;
        };
        let Some(p) = self.pending.remove(&tx) else {
            match self.late.get(&tx) {
                Some(&a) => self.stats.outcome(a, "late"),
                None => self.stats.bump("reply.wrong_txid"),
            }
            return;
        };
        let action = p.req.action();
        let scrape_n = match &p.req {
            Req::Scrape(ts) => ts.len(),
            _ => 0,
        };
        let latency = now.saturating_sub(p.slot);
        let reply = codec::decode_reply(packet, self.ipv6, scrape_n);
        match (reply, &p.req) {
            (Ok(UdpReply::Connect { connection_id, .. }), Req::Connect) => {
                self.stats.outcome(action, "ok");
                self.stats.latency[action as usize].record(latency);
                let conn = self.model.peers[p.peer as usize].conn as usize;
                self.model.conns[conn].id = Some((connection_id, now));
                if let Some(mut then) = p.then {
                    if let Req::Announce { seq, .. } = &mut then {
                        self.model.unreserve(p.peer);
                        *seq = self.model.on_send(p.peer).1;
                    }
                    // The follow-up keeps the slot's time: its latency includes the connect.
                    self.stats.add(
                        match then {
                            Req::Scrape(_) => "scrape.after_connect",
                            _ => "announce.after_connect",
                        },
                        1,
                    );
                    self.send_new(p.peer, then, None, p.slot, false, connection_id);
                }
            }
            (
                Ok(UdpReply::Announce {
                    interval,
                    leechers,
                    seeders,
                    peers,
                    ..
                }),
                Req::Announce { numwant, seq, .. },
            ) => {
                self.stats.outcome(action, "ok");
                self.stats.latency[action as usize].record(latency);
                if p.faulty {
                    self.stats.bump("fault.bad_connection_id_accepted");
                    return;
                }
                let c = self.model.check_announce(
                    p.peer,
                    *seq,
                    *numwant,
                    Some(seeders),
                    Some(leechers),
                    peers.iter().map(|a| a.port()),
                    self.stats.want_example(),
                );
                record_check(&mut self.stats, c);
                let us = u64::from(interval) * 1_000_000;
                self.model
                    .on_done(p.peer, now, Some(us), None, false, &mut self.rng);
            }
            (Ok(UdpReply::Scrape { stats, .. }), Req::Scrape(ts)) => {
                self.stats.outcome(action, "ok");
                self.stats.latency[action as usize].record(latency);
                let mut ok = true;
                for (s, &(t, seq)) in stats.iter().zip(ts) {
                    let wrong = self
                        .model
                        .check_scrape(t, seq, s.seeders, s.leechers, s.completed);
                    ok &= wrong.is_none();
                    self.stats.example(wrong);
                }
                self.stats.bump(if ok {
                    "check.scrape_counts_ok"
                } else {
                    "check.scrape_counts_wrong"
                });
            }
            (Ok(UdpReply::Error { message, .. }), _) => {
                self.stats.outcome(action, "error");
                self.stats.latency[action as usize].record(latency);
                if p.faulty {
                    self.stats.bump("fault.bad_connection_id_refused");
                } else if message.to_ascii_lowercase().contains("connection id") {
                    let conn = self.model.peers[p.peer as usize].conn as usize;
                    self.model.conns[conn].id = None;
                }
                self.fail(&p, now, false);
            }
            (Ok(_), _) | (Err(_), _) => {
                self.stats.outcome(action, "malformed");
                if p.faulty {
                    self.stats.bump("fault.bad_connection_id_malformed");
                }
                self.fail(&p, now, false);
            }
        }
    }

    /// A request ended without a usable reply: keep the model honest.
    fn fail(&mut self, p: &Pending, now: u64, timed_out: bool) {
        if p.faulty {
            return;
        }
        match (&p.req, &p.then) {
            (Req::Announce { .. }, _) => {
                // A refusal means the tracker did not apply it; a time-out leaves it unknown.
                self.model
                    .on_done(p.peer, now, None, None, true, &mut self.rng);
                if !timed_out {
                    self.stats.bump("model.refused_announce");
                }
            }
            (Req::Connect, Some(Req::Announce { .. })) => {
                self.model.unreserve(p.peer);
                self.model.release(p.peer, now, &mut self.rng);
            }
            _ => {}
        }
    }

    fn expire(&mut self, now: u64) {
        let timeout = self.cfg.timeout.as_micros() as u64;
        while let Some(&(deadline, tx, attempt)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(p) = self.pending.get_mut(&tx) else {
                continue;
            };
            if p.attempt != attempt {
                continue;
            }
            let action = p.req.action();
            if p.attempt < self.cfg.retransmits {
                p.attempt += 1;
                let attempt = p.attempt;
                let p = self.pending.remove(&tx).expect("present");
                self.stats.outcome(action, "retransmit");
                self.send(tx, &p);
                self.pending.insert(tx, p);
                self.deadlines.push_back((now + timeout, tx, attempt));
            } else {
                let p = self.pending.remove(&tx).expect("present");
                self.stats.outcome(action, "timeout");
                if p.faulty {
                    self.stats.bump("fault.bad_connection_id_unanswered");
                }
                self.fail(&p, now, true);
                self.late.insert(tx, action);
                self.late_order
                    .push_back((now + 30 * timeout.max(100_000), tx));
            }
        }
        while let Some(&(until, tx)) = self.late_order.front() {
            if until > now {
                break;
            }
            self.late_order.pop_front();
            self.late.remove(&tx);
        }
    }
}

/// Adds a check's findings to the counters.
pub fn record_check(stats: &mut Stats, c: super::model::Check) {
    stats.add("check.self_returned", u64::from(c.self_returned));
    stats.add("check.inconsistent_convention", u64::from(c.inconsistent));
    stats.example(c.example);
    stats.bump(if c.counts_wrong {
        "check.counts_wrong"
    } else {
        "check.counts_ok"
    });
    stats.add("check.over_numwant", u64::from(c.over_numwant));
    stats.add("check.duplicate_peer", u64::from(c.duplicates));
    stats.add("check.stopped_peer_returned", u64::from(c.stopped_returned));
    stats.add("check.unknown_peer", u64::from(c.unknown));
}

impl Worker for UdpWorker {
    fn run_phase(&mut self, pace: Pace, start: u64, secs: f64) -> Stats {
        self.stats = Stats::default();
        let end = start + (secs * 1e6) as u64;
        let drain = self.cfg.timeout.as_micros() as u64 * u64::from(self.cfg.retransmits + 1);
        let mut schedule = Schedule::new(pace, start);
        let mut fds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| super::super::pollfd(s.as_raw_fd(), libc::POLLIN))
            .collect();
        while micros(self.epoch) < start {
            std::thread::sleep(Duration::from_micros(200));
        }
        loop {
            let now = micros(self.epoch);
            let mut busy = 0;
            if now < end {
                match pace {
                    Pace::Closed(q) => {
                        while self.pending.len() < q as usize && busy < SEND_BURST {
                            self.issue(now, now);
                            busy += 1;
                        }
                    }
                    _ => {
                        while busy < SEND_BURST {
                            let Some(slot) = schedule.due(now, &mut self.rng) else {
                                break;
                            };
                            self.stats.add("max.schedule_lag_us", now - slot);
                            self.issue(slot, now);
                            busy += 1;
                        }
                    }
                }
                self.flush();
            } else if self.pending.is_empty() || now > end + drain {
                break;
            }
            busy += self.receive();
            self.expire(micros(self.epoch));
            self.flush();
            if busy == 0 {
                let now = micros(self.epoch);
                let mut until = self.deadlines.front().map_or(end + drain, |d| d.0);
                if now < end {
                    until = until.min(schedule.next_at().unwrap_or(end)).min(end);
                }
                let wait = Duration::from_micros(until.saturating_sub(now).min(50_000));
                if !wait.is_zero() {
                    for f in &mut fds {
                        f.revents = 0;
                    }
                    super::super::wait(&mut fds, wait);
                }
            }
        }
        // Whatever is still pending past the drain is lost.
        let now = micros(self.epoch);
        let left: Vec<u32> = self.pending.keys().copied().collect();
        for tx in left {
            let p = self.pending.remove(&tx).expect("present");
            self.stats.outcome(p.req.action(), "timeout");
            self.fail(&p, now, true);
            self.late.insert(tx, p.req.action());
            self.late_order.push_back((now + 30_000_000, tx));
        }
        self.deadlines.clear();
        self.stats.conventions(&self.model.conventions);
        std::mem::take(&mut self.stats)
    }
}
