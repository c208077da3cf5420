//! `ringtorrent serve` run as a user runs it, for the tests: started on loopback, talked to
//! over its HTTP API, stopped with SIGTERM, killed by PID if a test fails first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ringtorrent, run_ok};

/// A running `serve`, killed by PID when dropped.
pub struct Serve {
    pub child: Child,
    /// The control API, HOST:PORT.
    pub api: String,
    /// Where peers connect, HOST:PORT.
    pub peers: String,
    pub stderr: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `serve` on 127.0.0.1 (any free ports, two loops) with its data in `dir/data`
    /// and its state in `dir/state`, its log in `dir/serve.log`.
    pub fn start(dir: &Path, extra: &[&str]) -> Serve {
        Serve::start_in(dir, &dir.join("data"), extra)
    }

    /// As [`Serve::start`], with the data in `data`.
    pub fn start_in(dir: &Path, data: &Path, extra: &[&str]) -> Serve {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .unwrap();
        let mut child = ringtorrent()
            .arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
                "--threads",
                "2",
            ])
            .arg("--data-dir")
            .arg(data)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .env("RINGTORRENT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut peers, mut api) = (String::new(), String::new());
        out.read_line(&mut peers).unwrap();
        out.read_line(&mut api).unwrap();
        let peers = peers.trim().strip_prefix("peers: ").unwrap_or_else(|| {
            panic!(
                "{peers} / {}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap()
            )
        });
        let api = api.trim().strip_prefix("api: http://").unwrap().to_owned();
        Serve {
            child,
            api,
            peers: peers.to_owned(),
            stderr: dir.join("serve.log"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// One HTTP request; returns the status and the body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(&self.api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        let text = String::from_utf8_lossy(&reply).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    pub fn json(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let (status, text) = self.http(method, path, body);
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        run_ok(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
