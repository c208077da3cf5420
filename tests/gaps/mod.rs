//! Helpers of the `gaps_*` tests: children guarded from the moment they start and read with
//! deadlines, `serve` kept out of the user's home, a minimal HTTP client, seeding clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringtorrent::client::{AddTorrent, Client, ClientConfig, IoChoice, TorrentState};
use ringtorrent::core::InfoHash;

/// A child process, ended by PID when dropped; its stdout lines arrive on `lines`.
pub struct Kid {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub name: &'static str,
}

impl Kid {
    /// Starts `cmd` with stdout piped (read on a thread, so nothing blocks on it) and stdin
    /// piped (kept open while the child lives: some helpers stop at end of input).
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Kid {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Kid { child, lines, name }
    }

    /// The first line (within `limit`) for which `f` gives a value.
    pub fn line<T>(&self, limit: Duration, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(v) = f(&l) {
                        return v;
                    }
                    seen.push(l);
                }
                Err(e) => panic!(
                    "{}: no such line ({e:?}) in {limit:?}; saw {seen:?}",
                    self.name
                ),
            }
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for it to exit on its own.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} ran past {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it gives a value, failing the test with `what` after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Points HOME and the XDG folders of a child into `dir`, so nothing it does lands in the
/// user's home.
pub fn homeless<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("home/.config"))
        .env("XDG_STATE_HOME", dir.join("home/.local/state"))
        .env("XDG_DATA_HOME", dir.join("home/.local/share"))
        .env("XDG_CACHE_HOME", dir.join("home/.cache"))
}

/// A payload of `len` bytes in `dir/name` and its torrent (`piece_len` pieces), made by the
/// library; returns the torrent's bytes and its info hash.
pub fn make(dir: &Path, name: &str, len: usize, piece_len: u64) -> (Vec<u8>, InfoHash) {
    std::fs::create_dir_all(dir).unwrap();
    super::common::write_payload(&dir.join(name), len, 11);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join(name),
        piece_len: Some(piece_len),
        ..Default::default()
    };
    let bytes = ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes;
    let hash = ringtorrent::metainfo::Torrent::from_bytes(&bytes)
        .unwrap()
        .info
        .info_hash();
    (bytes, hash)
}

/// A client's configuration for the tests: loopback, any port, no trackers, no state.
pub fn config(data: &Path) -> ClientConfig {
    ClientConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        loops: 2,
        io: IoChoice::Auto,
        data_dir: data.to_path_buf(),
        trackers: false,
        ..ClientConfig::default()
    }
}

/// A client seeding `torrent` from `dir`, unlimited.
pub fn seeder(dir: &Path, torrent: &[u8]) -> Client {
    let client = Client::start(config(dir)).unwrap();
    let t = client
        .add(AddTorrent::bytes(torrent.to_vec()).seed_only())
        .unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);
    client
}

/// `ringtorrent serve` on loopback: its config an empty file, its data, state and home in
/// the test's folder, two loops. Ended by PID when dropped.
pub struct Serve {
    pub kid: Kid,
    pub api: SocketAddr,
    pub peers: SocketAddr,
    pub log: PathBuf,
}

impl Serve {
    pub fn start(dir: &Path, extra: &[&str]) -> Serve {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("serve.toml");
        std::fs::write(&config, "").unwrap();
        let log = dir.join("serve.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = super::common::ringtorrent();
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .args(["--threads", "2"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("RINGTORRENT_LOG", "info")
            .stderr(stderr);
        homeless(&mut cmd, dir);
        let kid = Kid::spawn("serve", &mut cmd);
        let limit = Duration::from_secs(30);
        let peers = kid.line(limit, |l| l.strip_prefix("peers: ")?.trim().parse().ok());
        let api = kid.line(limit, |l| {
            l.strip_prefix("api: http://")?
                .trim()
                .trim_end_matches('/')
                .parse()
                .ok()
        });
        Serve {
            kid,
            api,
            peers,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request with a JSON (or empty) answer.
    pub fn json(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let (status, text) = http(self.api, method, path, body);
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A torrent's status, through the API.
    pub fn status(&self, hash: &InfoHash) -> serde_json::Value {
        let (code, v) = self.json("GET", &format!("/torrents/{}", hash.to_hex()), b"");
        assert_eq!(code, 200, "{v}");
        v
    }
}

/// One HTTP/1.1 request (`Connection: close`), bounded by a 30 s socket timeout: the status
/// and the body.
pub fn http(api: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    raw(api, head.as_bytes(), body, false)
}

/// Sends `head` then `body`, shutting the write side if `shut`, and reads the answer: its
/// status and body, or status 0 when the server closed without answering. A server may
/// answer and close before reading all of the body (a 413): errors writing the body or
/// reading past the answer are not the test's concern.
pub fn raw(api: SocketAddr, head: &[u8], body: &[u8], shut: bool) -> (u16, String) {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head).unwrap();
    let _ = s.write_all(body);
    if shut {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    if text.is_empty() {
        return (0, text);
    }
    assert!(text.starts_with("HTTP/1."), "not an HTTP answer: {text:?}");
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}
