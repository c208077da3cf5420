//! A small tracker for the tracker-load tests, on 127.0.0.1, UDP (BEP 15) or HTTP (compact
//! peers, one reply per connection), that follows aquatic's conventions (the announcing peer
//! is neither counted nor listed, scrape `downloaded` is always 0, numwant 0 or more than 30
//! gets 30) and can break one rule on purpose: miscount leechers, return stopped peers, or
//! ignore numwant. Its thread ends when the handle is dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the fake gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a correct tracker with aquatic's conventions.
    None,
    /// Two leechers too many in every announce reply and scrape.
    Miscount,
    /// Up to three peers that sent `stopped` (and have not started again) in every list.
    ReturnsStopped,
    /// Every live peer listed, whatever numwant says.
    IgnoresNumwant,
}

/// The default and largest peer list, as aquatic's default `max_response_peers`.
const MAX_PEERS: usize = 30;

#[derive(Default)]
struct Swarm {
    /// (port, seeder) of live peers, in arrival order.
    live: Vec<(u16, bool)>,
    stopped: Vec<u16>,
}

#[derive(Default)]
struct Swarms {
    fault: Option<Fault>,
    torrents: HashMap<[u8; 20], Swarm>,
}

struct Announce {
    hash: [u8; 20],
    port: u16,
    left: u64,
    /// 0 none, 1 completed, 2 started, 3 stopped (BEP 15's numbers).
    event: u32,
    numwant: i64,
}

impl Swarms {
    fn counts(&self, hash: &[u8; 20]) -> (u32, u32) {
        let Some(s) = self.torrents.get(hash) else {
            return (0, 0);
        };
        let seeders = s.live.iter().filter(|p| p.1).count() as u32;
        let mut leechers = s.live.len() as u32 - seeders;
        if self.fault == Some(Fault::Miscount) {
            leechers += 2;
        }
        (seeders, leechers)
    }

    /// Applies an announce and returns (seeders, leechers, ports) for its reply, taken before
    /// the announcing peer is put back (aquatic's way).
    fn announce(&mut self, a: &Announce) -> (u32, u32, Vec<u16>) {
        let fault = self.fault;
        let s = self.torrents.entry(a.hash).or_default();
        s.live.retain(|p| p.0 != a.port);
        let want = if a.numwant <= 0 {
            MAX_PEERS
        } else {
            (a.numwant as usize).min(MAX_PEERS)
        };
        let mut ports: Vec<u16> = s.live.iter().map(|p| p.0).collect();
        if fault != Some(Fault::IgnoresNumwant) {
            ports.truncate(want);
        }
        if fault == Some(Fault::ReturnsStopped) {
            ports.extend(s.stopped.iter().rev().take(3));
        }
        if a.event == 3 {
            if !s.stopped.contains(&a.port) {
                s.stopped.push(a.port);
            }
        } else {
            s.stopped.retain(|&p| p != a.port);
            s.live.push((a.port, a.left == 0));
        }
        // Counts without the announcing peer: taken with it out.
        let me = s
            .live
            .iter()
            .position(|p| p.0 == a.port)
            .map(|i| s.live.remove(i));
        let (seeders, leechers) = self.counts(&a.hash);
        if let Some(p) = me {
            self.torrents.get_mut(&a.hash).expect("entry").live.push(p);
        }
        (seeders, leechers, ports)
    }
}

/// A running fake tracker.
pub struct FakeTracker {
    /// Its port.
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl FakeTracker {
    /// Starts a UDP (BEP 15) fake.
    pub fn udp(fault: Fault) -> FakeTracker {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swarms = Swarms {
                fault: Some(fault),
                ..Swarms::default()
            };
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let b = &buf[..n];
                if n < 16 {
                    continue;
                }
                let (action, tx) = (be32(b, 8), be32(b, 12));
                let mut out = Vec::with_capacity(1024);
                out.extend_from_slice(&action.to_be_bytes());
                out.extend_from_slice(&tx.to_be_bytes());
                match action {
                    0 => out.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes()),
                    1 if n >= 98 => {
                        let a = Announce {
                            hash: b[16..36].try_into().unwrap(),
                            left: u64::from_be_bytes(b[64..72].try_into().unwrap()),
                            event: be32(b, 80),
                            numwant: i64::from(be32(b, 92) as i32),
                            port: u16::from_be_bytes([b[96], b[97]]),
                        };
                        let (s, l, ports) = swarms.announce(&a);
                        out.extend_from_slice(&1800u32.to_be_bytes());
                        out.extend_from_slice(&l.to_be_bytes());
                        out.extend_from_slice(&s.to_be_bytes());
                        for p in ports {
                            out.extend_from_slice(&[127, 0, 0, 1]);
                            out.extend_from_slice(&p.to_be_bytes());
                        }
                    }
                    2 => {
                        for h in b[16..].chunks_exact(20) {
                            let (s, l) = swarms.counts(h.try_into().unwrap());
                            for v in [s, 0, l] {
                                out.extend_from_slice(&v.to_be_bytes());
                            }
                        }
                    }
                    _ => continue,
                }
                let _ = sock.send_to(&out, from);
            }
        });
        FakeTracker {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Starts an HTTP fake (`/announce`, `/scrape`, compact peers, `Connection: close`).
    pub fn http(fault: Fault) -> FakeTracker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swarms = Swarms {
                fault: Some(fault),
                ..Swarms::default()
            };
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut req = Vec::new();
                let mut chunk = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req);
                let target = line.split_whitespace().nth(1).unwrap_or("");
                let body = http_reply(&mut swarms, target);
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                out.extend_from_slice(&body);
                let _ = conn.write_all(&out);
            }
        });
        FakeTracker {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

/// Percent-decodes a query value.
fn unescape(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(x) = u8::from_str_radix(hex, 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn http_reply(swarms: &mut Swarms, target: &str) -> Vec<u8> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<(&str, Vec<u8>)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, unescape(v)))
        .collect();
    let get = |k: &str| params.iter().find(|p| p.0 == k).map(|p| p.1.clone());
    let num = |k: &str| {
        get(k)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    if path.ends_with("/scrape") {
        let mut body = b"d5:filesd".to_vec();
        for (_, h) in params.iter().filter(|p| p.0 == "info_hash") {
            let Ok(hash) = <[u8; 20]>::try_from(h.as_slice()) else {
                continue;
            };
            let (s, l) = swarms.counts(&hash);
            body.extend_from_slice(b"20:");
            body.extend_from_slice(&hash);
            body.extend_from_slice(
                format!("d8:completei{s}e10:downloadedi0e10:incompletei{l}ee").as_bytes(),
            );
        }
        body.extend_from_slice(b"ee");
        return body;
    }
    let Some(Ok(hash)) = get("info_hash").map(|h| <[u8; 20]>::try_from(h.as_slice())) else {
        return b"d14:failure reason7:no hashe".to_vec();
    };
    let event = match get("event").as_deref() {
        Some(b"completed") => 1,
        Some(b"started") => 2,
        Some(b"stopped") => 3,
        _ => 0,
    };
    let a = Announce {
        hash,
        port: num("port").unwrap_or(0) as u16,
        left: num("left").unwrap_or(1) as u64,
        event,
        numwant: num("numwant").unwrap_or(-1),
    };
    let (s, l, ports) = swarms.announce(&a);
    let mut peers = Vec::new();
    for p in ports {
        peers.extend_from_slice(&[127, 0, 0, 1]);
        peers.extend_from_slice(&p.to_be_bytes());
    }
    let mut body = format!(
        "d8:completei{s}e10:incompletei{l}e8:intervali1800e5:peers{}:",
        peers.len()
    )
    .into_bytes();
    body.extend_from_slice(&peers);
    body.push(b'e');
    body
}
