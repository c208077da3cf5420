//! `TorrentHandle::reannounce` (qBittorrent's `torrents/reannounce`): a torrent whose tracker
//! said "come back in 30 minutes" announces again at once when asked. The tracker is a local
//! HTTP one that records each announce.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringtorrent::client::{AddTorrent, Client, ClientConfig, IoChoice};

/// An HTTP tracker on a loopback port answering every announce with a 30-minute interval;
/// each request's first line is sent on the channel.
fn tracker() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let body = b"d8:intervali1800e5:peers0:e";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(body);
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn torrent(dir: &Path, url: &str) -> Vec<u8> {
    common::write_payload(&dir.join("file.bin"), 100_000, 3);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join("file.bin"),
        trackers: vec![vec![url.to_string()]],
        ..Default::default()
    };
    ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

#[test]
fn a_reannounce_announces_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, announces) = tracker();
    let bytes = torrent(tmp.path(), &format!("http://127.0.0.1:{port}/announce"));
    let client = Client::start(ClientConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        loops: 1,
        io: IoChoice::Auto,
        data_dir: tmp.path().to_path_buf(),
        trackers: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let t = client.add(AddTorrent::bytes(bytes)).unwrap();
    let first = announces
        .recv_timeout(Duration::from_secs(30))
        .expect("the first announce");
    assert!(first.contains("event=started"), "{first}");
    // The tracker said 30 minutes; nothing more comes by itself.
    assert!(announces.recv_timeout(Duration::from_millis(300)).is_err());
    let asked = Instant::now();
    t.reannounce().unwrap();
    let again = announces
        .recv_timeout(Duration::from_secs(5))
        .expect("a reannounce announces at once");
    let took = asked.elapsed();
    assert!(again.starts_with("GET /announce?"), "{again}");
    assert!(!again.contains("event="), "a regular announce: {again}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    eprintln!("reannounce reached the tracker after {took:?}");
    client.shutdown();
}
