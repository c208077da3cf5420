//! The HTTP worker: up to `--sockets` non-blocking TCP connections per worker, one request
//! in flight on each, requests and replies through [`crate::tracker::http`]. With
//! keep-alive a connection is reused while the tracker keeps it open; a tracker that closes
//! after every reply (opentracker does) costs a connection per request, counted as
//! `http.connects`. A request written to a kept-alive connection the tracker had just closed
//! is sent again once on a fresh one (`http.retried_on_closed`).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::model::Model;
use super::udp::record_check;
use super::{micros, plan, Action, LoadConfig, Pace, Plan, Schedule, Stats, Worker};
use crate::core::{InfoHash, Rng};
use crate::limits;
use crate::tracker::http as codec;
use crate::tracker::{AnnounceEvent, AnnounceRequest, TrackerError};

#[derive(Debug, Clone)]
enum Job {
    Announce {
        peer: u32,
        numwant: u32,
        slot: u64,
        applied: bool,
        event: AnnounceEvent,
        seq: u64,
    },
    Scrape {
        /// Torrents, and each one's announce count when the scrape was planned.
        torrents: Vec<(u32, u64)>,
        slot: u64,
    },
}

impl Job {
    fn action(&self) -> Action {
        match self {
            Job::Announce { .. } => Action::Announce,
            Job::Scrape { .. } => Action::Scrape,
        }
    }

    fn slot(&self) -> u64 {
        match self {
            Job::Announce { slot, .. } | Job::Scrape { slot, .. } => *slot,
        }
    }
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    job: Option<Job>,
    deadline: u64,
    /// Replies already read on this connection (a reused one may have been closed).
    served: u32,
}

/// One HTTP worker.
pub struct HttpWorker {
    cfg: Arc<LoadConfig>,
    model: Model,
    rng: Rng,
    epoch: Instant,
    conns: Vec<Conn>,
    queue: VecDeque<Job>,
    stats: Stats,
}

impl HttpWorker {
    /// A worker with no connection open yet.
    pub fn new(cfg: Arc<LoadConfig>, model: Model, rng: Rng, epoch: Instant) -> HttpWorker {
        HttpWorker {
            cfg,
            model,
            rng,
            epoch,
            conns: Vec::new(),
            queue: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    fn in_flight(&self) -> usize {
        self.queue.len() + self.conns.iter().filter(|c| c.job.is_some()).count()
    }

    fn issue(&mut self, slot: u64, now: u64) {
        match plan(&self.cfg, &mut self.model, now, &mut self.rng) {
            Plan::Idle | Plan::Connect(_) => self.stats.bump("slots.idle"),
            Plan::Announce(peer) => {
                let numwant = self.cfg.numwant[self.rng.index(self.cfg.numwant.len())];
                self.model.reserve(peer);
                self.stats.outcome(Action::Announce, "sent");
                self.queue.push_back(Job::Announce {
                    peer,
                    numwant,
                    slot,
                    applied: false,
                    event: AnnounceEvent::None,
                    seq: 0,
                });
            }
            Plan::Scrape(_, mut torrents) => {
                torrents.truncate(limits::MAX_SCRAPE_HASHES_HTTP);
                let torrents = torrents.iter().map(|&t| (t, self.model.seq(t))).collect();
                self.stats.outcome(Action::Scrape, "sent");
                self.queue.push_back(Job::Scrape { torrents, slot });
            }
        }
    }

    fn request_bytes(&mut self, job: &mut Job) -> Vec<u8> {
        let target = match job {
            Job::Announce {
                peer,
                numwant,
                applied,
                event,
                seq,
                ..
            } => {
                if !*applied {
                    self.model.unreserve(*peer);
                    (*event, *seq) = self.model.on_send(*peer);
                    *applied = true;
                }
                let p = &self.model.peers[*peer as usize];
                let req = AnnounceRequest {
                    info_hash: self.model.torrents[p.torrent as usize].hash,
                    peer_id: p.peer_id,
                    port: p.port,
                    uploaded: 0,
                    downloaded: 0,
                    left: self.model.left(*peer),
                    event: *event,
                    numwant: *numwant,
                    key: p.key,
                    tracker_id: None,
                    ipv6: None,
                };
                codec::announce_target_with(&self.cfg.url, &req, self.cfg.compact)
            }
            Job::Scrape { torrents, .. } => {
                let hashes: Vec<InfoHash> = torrents
                    .iter()
                    .map(|&(t, _)| self.model.torrents[t as usize].hash)
                    .collect();
                codec::scrape_target(&self.cfg.url, &hashes).unwrap_or_else(|_| "/scrape".into())
            }
        };
        codec::request_with(&self.cfg.url, &target, self.cfg.keep_alive)
    }

    /// Hands queued jobs to idle connections, opening new ones up to the limit.
    fn dispatch(&mut self, now: u64) {
        while !self.queue.is_empty() {
            let idle = self.conns.iter().position(|c| c.job.is_none());
            let idx = match idle {
                Some(i) => i,
                None if self.conns.len() < usize::from(self.cfg.sockets.max(1)) => {
                    match self.open() {
                        Some(c) => {
                            self.conns.push(c);
                            self.conns.len() - 1
                        }
                        None => {
                            let job = self.queue.pop_front().expect("non-empty");
                            self.stats.outcome(job.action(), "io_error");
                            self.fail(job, now, false);
                            continue;
                        }
                    }
                }
                None => return,
            };
            let mut job = self.queue.pop_front().expect("non-empty");
            let bytes = self.request_bytes(&mut job);
            let c = &mut self.conns[idx];
            c.out = bytes;
            c.written = 0;
            c.inbuf.clear();
            c.deadline = now + self.cfg.timeout.as_micros() as u64;
            c.job = Some(job);
            self.flush(idx);
        }
    }

    fn open(&mut self) -> Option<Conn> {
        self.stats.bump("http.connects");
        let stream = TcpStream::connect_timeout(&self.cfg.target, self.cfg.timeout).ok()?;
        stream.set_nonblocking(true).ok()?;
        let _ = stream.set_nodelay(true);
        Some(Conn {
            stream,
            out: Vec::new(),
            written: 0,
            inbuf: Vec::with_capacity(2048),
            job: None,
            deadline: 0,
            served: 0,
        })
    }

    fn flush(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    // Reading will find the connection closed.
                    c.written = c.out.len();
                }
            }
        }
    }

    /// Reads what a connection has; finishes its job when the reply is whole.
    fn read(&mut self, idx: usize, now: u64) {
        let mut eof = false;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let c = &mut self.conns[idx];
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let c = &mut self.conns[idx];
        let Some(job) = c.job.take() else {
            if eof || !c.inbuf.is_empty() {
                // An idle connection closed (or sent junk): drop it.
                self.conns.swap_remove(idx);
            }
            return;
        };
        if eof && c.inbuf.is_empty() && c.served > 0 {
            // The tracker closed a kept-alive connection as we reused it: once more on a
            // fresh one.
            self.stats.bump("http.retried_on_closed");
            self.conns.swap_remove(idx);
            self.queue.push_front(job);
            return;
        }
        match codec::parse_reply(&c.inbuf, eof) {
            Ok(codec::HttpProgress::Incomplete) => c.job = Some(job),
            Ok(codec::HttpProgress::Done { status, body }) => {
                c.served += 1;
                if eof || !self.cfg.keep_alive {
                    self.conns.swap_remove(idx);
                    if !eof {
                        self.stats.bump("http.closed_by_us");
                    }
                } else {
                    c.inbuf.clear();
                }
                self.finish(job, status, &body, now);
            }
            Err(_) => {
                self.conns.swap_remove(idx);
                self.stats.outcome(job.action(), "malformed");
                self.fail(job, now, false);
            }
        }
    }

    fn finish(&mut self, job: Job, status: u16, body: &[u8], now: u64) {
        let action = job.action();
        self.stats.latency[action as usize].record(now.saturating_sub(job.slot()));
        if status != 200 {
            self.stats.outcome(action, "http_status");
            self.fail(job, now, false);
            return;
        }
        match job {
            Job::Announce {
                peer, numwant, seq, ..
            } => match codec::parse_announce(body) {
                Ok(r) => {
                    self.stats.outcome(action, "ok");
                    let c = self.model.check_announce(
                        peer,
                        seq,
                        numwant,
                        r.seeders,
                        r.leechers,
                        r.peers.iter().map(|a| a.port()),
                        self.stats.want_example(),
                    );
                    record_check(&mut self.stats, c);
                    let us = |d: Duration| d.as_micros() as u64;
                    let interval = (!r.interval.is_zero()).then(|| us(r.interval));
                    self.model.on_done(
                        peer,
                        now,
                        interval,
                        r.min_interval.map(us),
                        false,
                        &mut self.rng,
                    );
                }
                Err(e) => {
                    self.stats.outcome(
                        action,
                        if matches!(e, TrackerError::Failure(_)) {
                            "failure"
                        } else {
                            "malformed"
                        },
                    );
                    self.fail(job_announce(peer), now, false);
                }
            },
            Job::Scrape { torrents, .. } => {
                let hashes: Vec<InfoHash> = torrents
                    .iter()
                    .map(|&(t, _)| self.model.torrents[t as usize].hash)
                    .collect();
                match codec::parse_scrape(body, &hashes) {
                    Ok(entries) => {
                        self.stats.outcome(action, "ok");
                        let mut ok = true;
                        for (h, s) in entries {
                            if let Some(k) = hashes.iter().position(|&x| x == h) {
                                let (t, seq) = torrents[k];
                                let wrong = self.model.check_scrape(
                                    t,
                                    seq,
                                    s.seeders,
                                    s.leechers,
                                    s.completed,
                                );
                                ok &= wrong.is_none();
                                self.stats.example(wrong);
                            }
                        }
                        self.stats.bump(if ok {
                            "check.scrape_counts_ok"
                        } else {
                            "check.scrape_counts_wrong"
                        });
                    }
                    Err(e) => self.stats.outcome(
                        action,
                        if matches!(e, TrackerError::Failure(_)) {
                            "failure"
                        } else {
                            "malformed"
                        },
                    ),
                }
            }
        }
    }

    /// A job ended without a usable reply.
    fn fail(&mut self, job: Job, now: u64, timed_out: bool) {
        if let Job::Announce { peer, applied, .. } = job {
            if applied {
                self.model
                    .on_done(peer, now, None, None, true, &mut self.rng);
                if !timed_out {
                    self.stats.bump("model.refused_announce");
                }
            } else {
                self.model.unreserve(peer);
                self.model.release(peer, now, &mut self.rng);
            }
        }
    }

    fn expire(&mut self, now: u64) {
        let mut i = 0;
        while i < self.conns.len() {
            if self.conns[i].job.is_some() && self.conns[i].deadline <= now {
                let job = self.conns[i].job.take().expect("checked");
                self.conns.swap_remove(i);
                self.stats.outcome(job.action(), "timeout");
                self.fail(job, now, true);
            } else {
                i += 1;
            }
        }
    }
}

fn job_announce(peer: u32) -> Job {
    Job::Announce {
        peer,
        numwant: 0,
        slot: 0,
        applied: true,
        event: AnnounceEvent::None,
        seq: 0,
    }
}

impl Worker for HttpWorker {
    fn run_phase(&mut self, pace: Pace, start: u64, secs: f64) -> Stats {
        self.stats = Stats::default();
        let end = start + (secs * 1e6) as u64;
        let drain = self.cfg.timeout.as_micros() as u64;
        let mut schedule = Schedule::new(pace, start);
        while micros(self.epoch) < start {
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut fds: Vec<libc::pollfd> = Vec::new();
        loop {
            let now = micros(self.epoch);
            if now < end {
                match pace {
                    Pace::Closed(q) => {
                        while self.in_flight() < q as usize {
                            self.issue(now, now);
                        }
                    }
                    _ => {
                        while let Some(slot) = schedule.due(now, &mut self.rng) {
                            self.stats.add("max.schedule_lag_us", now - slot);
                            self.issue(slot, now);
                        }
                    }
                }
            } else if self.in_flight() == 0 || now > end + drain {
                break;
            }
            self.dispatch(now);
            fds.clear();
            for c in &self.conns {
                let mut ev = libc::POLLIN;
                if c.written < c.out.len() {
                    ev |= libc::POLLOUT;
                }
                fds.push(super::super::pollfd(c.stream.as_raw_fd(), ev));
            }
            let now = micros(self.epoch);
            let mut until = self
                .conns
                .iter()
                .filter(|c| c.job.is_some())
                .map(|c| c.deadline)
                .min()
                .unwrap_or(end + drain);
            if now < end {
                until = until.min(schedule.next_at().unwrap_or(end)).min(end);
            }
            let wait = Duration::from_micros(until.saturating_sub(now).min(50_000));
            super::super::wait(&mut fds, wait);
            // Highest index first: `read` may swap_remove.
            let now = micros(self.epoch);
            for i in (0..fds.len()).rev() {
                let r = fds[i].revents;
                if r & libc::POLLOUT != 0 {
                    self.flush(i);
                }
                if r & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read(i, now);
                }
            }
            self.expire(micros(self.epoch));
        }
        let now = micros(self.epoch);
        while let Some(job) = self.queue.pop_front() {
            self.stats.outcome(job.action(), "timeout");
            self.fail(job, now, true);
        }
        for i in (0..self.conns.len()).rev() {
            if let Some(job) = self.conns[i].job.take() {
                self.conns.swap_remove(i);
                self.stats.outcome(job.action(), "timeout");
                self.fail(job, now, true);
            }
        }
        self.stats.conventions(&self.model.conventions);
        std::mem::take(&mut self.stats)
    }
}
