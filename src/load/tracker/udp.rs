//! The BEP 15 worker: several connected, non-blocking UDP sockets (one source port each),
//! requests encoded with [`crate::tracker::udp`], replies routed by transaction id, every
//! peer's connection id obtained with a `connect` before its first announce and again once
//! it is older than the lifetime, retransmission after the time-out, and late replies (to a
//! request already counted as timed out) told apart from replies that match nothing.

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

/// Datagrams read from one socket before looking at the others and the schedule.
const READ_BURST: usize = 64;
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
    buf: Vec<u8>,
    stats: Stats,
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
        let mut socks = Vec::new();
        for _ in 0..cfg.sockets.max(1) {
            let s = UdpSocket::bind(bind)?;
            s.connect(cfg.target)?;
            s.set_nonblocking(true)?;
            super::super::set_recv_buffer(s.as_raw_fd(), 4 << 20);
            socks.push(s);
        }
        Ok(UdpWorker {
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
            buf: Vec::with_capacity(1500),
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

    fn send(&mut self, tx: u32, p: &Pending) {
        self.buf.clear();
        match &p.req {
            Req::Connect => codec::encode_connect(&mut self.buf, tx),
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
                };
                codec::encode_announce(&mut self.buf, p.conn_id, tx, &req);
            }
            Req::Scrape(ts) => {
                let hashes: Vec<InfoHash> = ts
                    .iter()
                    .map(|&(t, _)| self.model.torrents[t as usize].hash)
                    .collect();
                codec::encode_scrape(&mut self.buf, p.conn_id, tx, &hashes);
            }
        }
        let sock = &self.socks[usize::from(self.model.peers[p.peer as usize].socket)];
        if let Err(e) = sock.send(&self.buf) {
            // A full socket buffer or a refused port: the time-out decides what happens.
            self.stats.bump(if e.kind() == ErrorKind::WouldBlock {
                "send.would_block"
            } else {
                "send.error"
            });
        }
    }

    /// Reads every socket until it has nothing (or a burst); returns datagrams read.
    fn receive(&mut self, rbuf: &mut [u8]) -> usize {
        let mut n = 0;
        for s in 0..self.socks.len() {
            for _ in 0..READ_BURST {
                match self.socks[s].recv(rbuf) {
                    Ok(len) => {
                        n += 1;
                        self.on_datagram(&rbuf[..len]);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        // ECONNREFUSED from an ICMP port-unreachable: the tracker is gone;
                        // requests will time out.
                        self.stats.bump("recv.error");
                        break;
                    }
                }
            }
        }
        n
    }

    fn on_datagram(&mut self, packet: &[u8]) {
        let now = micros(self.epoch);
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
                    ok &= self
                        .model
                        .scrape_ok(t, seq, s.seeders, s.leechers, s.completed);
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
        let mut rbuf = vec![0u8; 65_536];
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
            } else if self.pending.is_empty() || now > end + drain {
                break;
            }
            busy += self.receive(&mut rbuf);
            self.expire(micros(self.epoch));
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
        std::mem::take(&mut self.stats)
    }
}
