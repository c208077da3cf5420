//! Trackers that misbehave, played by fake servers in the test on 127.0.0.1: short, garbage,
//! wrong-transaction and spoofed UDP replies, error packets, HTTP servers that hang or send
//! garbage. The client must survive all of it, retransmit or fall through as BEP 15 and
//! BEP 12 say, and still get the peers from the tracker that behaves. Time-outs are cut from
//! BEP 15's 15 s to one or two seconds: short enough that every test ends within seconds,
//! long enough that a loaded machine still answers on loopback in time, so only the
//! deliberate silences time out. Elapsed time is never asserted, only bounded (by
//! `run_bounded` and loop deadlines) so that a hang fails.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ringtorrent, run_bounded, run_ok, write_payload};
use ringtorrent::core::{InfoHash, PeerId, Time};
use ringtorrent::tracker::{
    AnnounceEvent, Announcer, Mode, Progress, TrackerConfig, TrackerError, TrackerEvent, TrackerIo,
};
use serde_json::Value;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn connect_reply(tid: u32, id: u64) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&tid.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p
}

fn announce_reply(tid: u32, peers: &[[u8; 6]]) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 1];
    p.extend_from_slice(&tid.to_be_bytes());
    for v in [600u32, 1, 1] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    for peer in peers {
        p.extend_from_slice(peer);
    }
    p
}

/// What the fake UDP tracker received: (action, transaction id) per request.
type Log = Arc<Mutex<Vec<(u32, u32)>>>;

/// A UDP tracker that answers through `script(n_connects, n_announces, action, tid, from,
/// socket, spoofer)`; runs until the test process ends (its socket has a short read
/// time-out and the thread is detached).
fn fake_udp<F>(mut script: F) -> (SocketAddr, Log)
where
    F: FnMut(usize, usize, u32, u32, SocketAddr, &UdpSocket, &UdpSocket) + Send + 'static,
{
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let log: Log = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (mut connects, mut announces) = (0, 0);
        let started = Instant::now();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while started.elapsed() < Duration::from_secs(60) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if n < 16 {
                continue;
            }
            let (action, tid) = (be32(&buf, 8), be32(&buf, 12));
            seen.lock().unwrap().push((action, tid));
            match action {
                0 => connects += 1,
                _ => announces += 1,
            }
            script(connects, announces, action, tid, from, &socket, &spoofer);
        }
    });
    (addr, log)
}

fn torrent(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("f.bin");
    write_payload(&file, 40_000, 9);
    let torrent = dir.join("f.torrent");
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(&file)
            .args(["-a", "http://unused.invalid/announce", "-o"])
            .arg(&torrent),
    );
    torrent
}

fn announce_json(torrent: &Path, trackers: &[String], extra: &[&str]) -> (bool, Value) {
    let mut cmd = ringtorrent();
    cmd.arg("announce").arg(torrent).arg("--json").args(extra);
    for t in trackers {
        cmd.args(["--tracker", t]);
    }
    let out = run_bounded(&mut cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), v)
}

#[test]
fn udp_garbage_short_spoofed_and_wrong_transaction_replies_are_survived() {
    let peers = [[10, 0, 0, 1, 0x1a, 0xe1], [10, 0, 0, 2, 0x1a, 0xe2]];
    let (addr, log) = fake_udp(move |connects, announces, action, tid, from, s, spoofer| {
        match action {
            0 if connects == 1 => {
                // Not answers: too short to route, someone else's transaction, and the right
                // transaction from the wrong address. The client must retransmit.
                s.send_to(&[0, 0, 0], from).unwrap();
                s.send_to(&connect_reply(tid ^ 0x5a5a, 1), from).unwrap();
                spoofer.send_to(&connect_reply(tid, 2), from).unwrap();
            }
            0 => {
                s.send_to(&connect_reply(tid, 0x1234), from).unwrap();
            }
            _ if announces == 1 => {
                // The right transaction but half a peer: this tracker has failed.
                let mut bad = announce_reply(tid, &[]);
                bad.extend_from_slice(&[1, 2, 3]);
                s.send_to(&bad, from).unwrap();
            }
            _ => {
                s.send_to(&announce_reply(tid, &peers), from).unwrap();
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let torrent = torrent(dir.path());
    // Two names for the same server, in one tier: the first one tried gets the bad reply
    // and the client falls through to the second (resolved on a worker thread).
    let trackers = [
        format!("udp://127.0.0.1:{}", addr.port()),
        format!("udp://localhost:{}/announce", addr.port()),
    ];
    let (ok, v) = announce_json(
        &torrent,
        &trackers,
        &["--udp-timeout-ms", "1000", "--retransmits", "2"],
    );
    assert!(ok, "{v}");
    assert_eq!(
        v["peers"],
        serde_json::json!(["10.0.0.1:6881", "10.0.0.2:6882"])
    );
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v}");
    assert!(
        errors[0]["error"].as_str().unwrap().contains("malformed"),
        "{v}"
    );

    let log = log.lock().unwrap().clone();
    // The unanswered connect was retransmitted with the same transaction id.
    assert_eq!(log[0].0, 0);
    assert_eq!(log[1], log[0], "{log:?}");
    // Every request has its own transaction id otherwise: a transaction id seen again is
    // always a retransmission of the request just before (on a loaded machine a reply may
    // come after the time-out, so more retransmissions are allowed, never reuse).
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in log.iter().enumerate() {
        if !seen.insert(entry.1) {
            assert_eq!(*entry, log[i - 1], "transaction id reused: {log:?}");
        }
    }
    assert!(
        seen.len() >= 3,
        "a connect and two announces at least: {log:?}"
    );
}

#[test]
fn udp_error_packet_backs_off_then_retries_and_succeeds() {
    let (addr, _log) = fake_udp(|_, announces, action, tid, from, s, _| {
        if action == 0 {
            s.send_to(&connect_reply(tid, 7), from).unwrap();
        } else if announces == 1 {
            let mut e = vec![0, 0, 0, 3];
            e.extend_from_slice(&tid.to_be_bytes());
            e.extend_from_slice(b"busy, try later");
            s.send_to(&e, from).unwrap();
        } else {
            s.send_to(&announce_reply(tid, &[[127, 0, 0, 1, 0, 80]]), from)
                .unwrap();
        }
    });
    // Every request here is answered, so the UDP time-out never needs to fire: 5 s keeps a
    // loaded machine from retransmitting. The back-off is what is measured, on the clock
    // the announcer is given.
    let config = TrackerConfig {
        udp_timeout: Duration::from_secs(5),
        udp_max_retransmits: 1,
        backoff_base: Duration::from_millis(300),
        ..TrackerConfig::default()
    };
    let mut announcer = Announcer::new(
        config,
        Mode::Regular,
        InfoHash::from_bytes([1; 20]),
        PeerId::from_bytes(*b"-RT0100-abcdefghijkl"),
        6881,
        &[vec![format!("udp://127.0.0.1:{}", addr.port())]],
        Progress {
            left: 10,
            ..Progress::default()
        },
        42,
        Time::ZERO,
    );
    let mut io = TrackerIo::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let epoch = Instant::now();
    let now = || Time::from_micros(epoch.elapsed().as_micros() as u64);
    let mut events = Vec::new();
    let mut failed_at = None;
    let mut announced_at = None;
    while announced_at.is_none() {
        assert!(
            epoch.elapsed() < Duration::from_secs(60),
            "no announce in 60 s: {events:?}"
        );
        let now = now();
        io.pump(1, &mut announcer, now);
        while let Some(e) = announcer.poll_event() {
            match e {
                TrackerEvent::Error { .. } => failed_at = Some(now),
                TrackerEvent::Announced { .. } => announced_at = Some(now),
                _ => {}
            }
            events.push(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        matches!(&events[0], TrackerEvent::Error { error: TrackerError::Failure(m), .. } if m == "busy, try later"),
        "{events:?}"
    );
    let TrackerEvent::Announced {
        event, response, ..
    } = &events[1]
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        *event,
        AnnounceEvent::Started,
        "started until a tracker took it"
    );
    assert_eq!(response.peers, vec!["127.0.0.1:80".parse().unwrap()]);
    // The retry waited out the back-off (300 ms plus jitter) on the announcer's clock. A
    // lower bound: a slow machine only makes the wait longer.
    let waited = announced_at.unwrap().saturating_since(failed_at.unwrap());
    assert!(
        waited >= Duration::from_millis(250),
        "retried after {waited:?}"
    );
    // stopped goes out and is answered; the announcer then is done.
    announcer.stop(now());
    let stopping = Instant::now();
    while !announcer.is_done() {
        assert!(
            stopping.elapsed() < Duration::from_secs(60),
            "stopped was not answered in 60 s"
        );
        io.pump(1, &mut announcer, now());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn http_trackers_that_hang_or_send_garbage_are_survived() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate().take(3) {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).into_owned());
                match n {
                    // Says nothing until the client gives up (or the test process ends): a
                    // client without a time-out runs into `run_bounded`'s limit and fails.
                    0 => std::thread::sleep(Duration::from_secs(300)),
                    1 => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nnot bencode");
                    }
                    _ => {
                        let body: &[u8] = b"d8:intervali900e15:warning message4:hey!5:peersld2:ip8:10.9.8.74:porti99eeee";
                        let mut reply = format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                            body.len()
                        )
                        .into_bytes();
                        reply.extend_from_slice(body);
                        reply.extend_from_slice(b"\r\n0\r\n\r\n");
                        let _ = stream.write_all(&reply);
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let torrent = torrent(dir.path());
    let trackers = [
        format!("http://127.0.0.1:{port}/announce"),
        format!("http://localhost:{port}/announce"),
        format!("http://127.0.0.1:{port}/x/announce?passkey=k"),
    ];
    let (ok, v) = announce_json(&torrent, &trackers, &["--http-timeout-ms", "2000"]);
    assert!(ok, "{v}");
    assert_eq!(v["peers"], serde_json::json!(["10.9.8.7:99"]));
    assert_eq!(v["warning"], "hey!");
    let errors = v["errors"].to_string();
    assert_eq!(v["errors"].as_array().unwrap().len(), 2, "{errors}");
    assert!(errors.contains("no reply after"), "{errors}");
    assert!(errors.contains("not bencode"), "{errors}");
    let requests = requests.lock().unwrap();
    assert_eq!(requests.len(), 3);
    for r in requests.iter() {
        assert!(r.starts_with("GET /"), "{r}");
        assert!(
            r.contains("info_hash=") && r.contains("event=started"),
            "{r}"
        );
    }
}
