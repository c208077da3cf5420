//! `ringtorrent serve` run as a user runs it, for the tests: started on loopback with a config
//! of the test's own, talked to over its HTTP API, stopped with SIGTERM, killed by PID if a
//! test fails first.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{first_lines, ringtorrent, run_ok, write_payload, START_LIMIT};

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
    /// and its state in `dir/state`, its log in `dir/serve.log`, and the (empty) config
    /// `dir/serve.toml` unless `extra` names one.
    pub fn start(dir: &Path, extra: &[&str]) -> Serve {
        Serve::start_in(dir, &dir.join("data"), extra)
    }

    /// As [`Serve::start`], with the data in `data`.
    pub fn start_in(dir: &Path, data: &Path, extra: &[&str]) -> Serve {
        Serve::start_via(dir, data, ringtorrent(), extra)
    }

    /// As [`Serve::start`], with `env` added to its environment.
    pub fn start_with_env(dir: &Path, env: &[(&str, &std::ffi::OsStr)], extra: &[&str]) -> Serve {
        let mut cmd = ringtorrent();
        for (k, v) in env {
            cmd.env(k, v);
        }
        Serve::start_via(dir, &dir.join("data"), cmd, extra)
    }

    /// As [`Serve::start`], with at most `nofile` descriptors (`prlimit`, soft and hard).
    pub fn start_with_nofile(dir: &Path, nofile: u64, extra: &[&str]) -> Serve {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ringtorrent"));
        super::sandboxed(&mut cmd);
        Serve::start_via(dir, &dir.join("data"), cmd, extra)
    }

    /// `serve` run by `cmd` (the binary, or a launcher followed by it).
    fn start_via(dir: &Path, data: &Path, mut cmd: Command, extra: &[&str]) -> Serve {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .unwrap();
        cmd.stdin(Stdio::null());
        cmd.arg("serve")
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
            .arg(dir.join("state"));
        if !extra.contains(&"--config") {
            let config = dir.join("serve.toml");
            if !config.exists() {
                std::fs::write(&config, "").unwrap();
            }
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .args(extra)
            .env("RINGTORRENT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut serve = Serve {
            child,
            api: String::new(),
            peers: String::new(),
            stderr: dir.join("serve.log"),
        };
        // `peers: HOST:PORT` then `api: http://HOST:PORT`, read with a deadline: a serve that
        // hangs before saying them fails the test (and is killed) instead of hanging it.
        let said = first_lines(serve.child.stdout.take().unwrap(), 2, START_LIMIT)
            .unwrap_or_else(|e| panic!("serve said {e}\n{}", serve.log()));
        let peers = said[0].trim().strip_prefix("peers: ");
        let api = said[1].trim().strip_prefix("api: http://");
        let (Some(peers), Some(api)) = (peers, api) else {
            panic!("serve said {said:?}\n{}", serve.log())
        };
        serve.peers = peers.to_owned();
        serve.api = api.to_owned();
        serve
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
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
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

    /// One request with extra header lines (each `Name: value`); returns the status, the
    /// head (status line and headers) and the body. Sent with `Host: localhost` unless
    /// `headers` has a Host.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> (u16, String, String) {
        let mut s = TcpStream::connect(&self.api).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("host:"))
        {
            head.push_str("Host: localhost\r\n");
        }
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str(&format!(
            "Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply).into_owned();
        assert!(text.starts_with("HTTP/1.1 "), "not an answer: {text:?}");
        let status = text[9..12].parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status, head.to_owned(), body.to_owned())
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

/// A payload under `dir/data/<name>` and its torrent at `dir/<name>.torrent`; returns the
/// torrent's path and info hash.
pub fn torrent(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, String) {
    let data = dir.join("data").join(name);
    write_payload(&data, len, seed);
    let path = dir.join(format!("{name}.torrent"));
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(&data)
            .args(["-l", "64K", "-o"])
            .arg(&path),
    );
    let info = run_ok(ringtorrent().arg("info").arg(&path).arg("--json"));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    (path, v["info_hash"].as_str().unwrap().to_owned())
}
