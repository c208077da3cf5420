//! A Transmission 3.00 daemon (Debian's `transmission-daemon`, driven with
//! `transmission-remote`) on 127.0.0.1 for the interop tests, ended by PID when dropped.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::interop::free_port;
use super::{run_bounded, sandboxed, wait_listening_by, Proc};

/// A `transmission-daemon -f` with its own configuration folder, RPC and peer ports on
/// 127.0.0.1, no DHT, LPD, uTP (unless asked), PEX or port mapping, no queueing, no ratio limits.
pub struct Transmission {
    pub proc: Proc,
    pub rpc: String,
    pub peer_port: u16,
}

impl Transmission {
    /// Starts the daemon on two candidate ports (RPC and peers), and again on fresh ones
    /// until it is the process listening on both and it answers RPC. `encryption` is its
    /// setting of that name: 0 prefers plaintext, 1 prefers encryption (its default), 2
    /// requires it (RC4 only, both ways).
    pub fn start(work: &Path, encryption: u8) -> Transmission {
        Transmission::start_with(work, encryption, false)
    }

    /// As [`Transmission::start`], with uTP on (`utp-enabled`) when `utp`.
    pub fn start_with(work: &Path, encryption: u8, utp: bool) -> Transmission {
        let config = work.join("transmission-config");
        std::fs::create_dir_all(&config).unwrap();
        let mut why = Vec::new();
        for _ in 0..5 {
            let (rpc_port, peer_port) = (free_port(), free_port());
            let settings = serde_json::json!({
                "dht-enabled": false,
                "lpd-enabled": false,
                "utp-enabled": utp,
                "pex-enabled": false,
                "port-forwarding-enabled": false,
                "peer-port": peer_port,
                "peer-port-random-on-start": false,
                "bind-address-ipv4": "127.0.0.1",
                "bind-address-ipv6": "::1",
                "rpc-port": rpc_port,
                "rpc-bind-address": "127.0.0.1",
                "rpc-authentication-required": false,
                "rpc-whitelist-enabled": true,
                "rpc-whitelist": "127.0.0.1",
                "rpc-host-whitelist-enabled": false,
                "download-dir": work.join("transmission-default").to_str().unwrap(),
                "incomplete-dir-enabled": false,
                "watch-dir-enabled": false,
                "rename-partial-files": false,
                "download-queue-enabled": false,
                "seed-queue-enabled": false,
                "queue-stalled-enabled": false,
                "ratio-limit-enabled": false,
                "idle-seeding-limit-enabled": false,
                "speed-limit-down-enabled": false,
                "speed-limit-up-enabled": false,
                "alt-speed-enabled": false,
                "blocklist-enabled": false,
                "start-added-torrents": true,
                "encryption": encryption,
                "message-level": 1,
            });
            std::fs::write(config.join("settings.json"), settings.to_string()).unwrap();
            let mut cmd = Command::new("transmission-daemon");
            sandboxed(&mut cmd).arg("-f").arg("-g").arg(&config);
            let proc = Proc::spawn(
                "transmission-daemon",
                &mut cmd,
                &work.join("transmission.log"),
            );
            let mut t = Transmission {
                proc,
                rpc: format!("127.0.0.1:{rpc_port}"),
                peer_port,
            };
            match t.ready(rpc_port) {
                Ok(()) => return t,
                Err(e) => why.push(e),
            }
        }
        panic!("transmission-daemon did not start:\n{}", why.join("\n"));
    }

    /// Waits until the daemon itself listens on its RPC and peer ports and answers RPC.
    pub fn ready(&mut self, rpc_port: u16) -> Result<(), String> {
        let limit = Duration::from_secs(20);
        wait_listening_by(&mut self.proc, rpc_port, limit)?;
        wait_listening_by(&mut self.proc, self.peer_port, limit)?;
        let started = Instant::now();
        while !self.try_remote(&["-l"]).0 {
            if started.elapsed() > limit {
                return Err(format!("no RPC answer\n{}", self.proc.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn try_remote(&self, args: &[&str]) -> (bool, String) {
        let out = run_bounded(
            Command::new("transmission-remote")
                .arg(&self.rpc)
                .args(args),
            Duration::from_secs(20),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn remote(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_remote(args);
        assert!(
            ok,
            "transmission-remote {args:?}: {text}\n{}",
            self.proc.log()
        );
        text
    }

    /// Adds `torrent`, saving into (or seeding from) `dir`.
    pub fn add(&self, torrent: &Path, dir: &Path) {
        let text = self.remote(&["-a", torrent.to_str().unwrap(), "-w", dir.to_str().unwrap()]);
        assert!(text.contains("success"), "{text}");
    }

    /// Each torrent's (name, done, status) from `transmission-remote -l`.
    pub fn list(&self) -> Vec<(String, String, String)> {
        let text = self.remote(&["-l"]);
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Vec::new();
        };
        let (status_at, name_at) = (header.find("Status").unwrap(), header.find("Name").unwrap());
        lines
            .filter(|l| !l.starts_with("Sum:") && l.len() > name_at)
            .map(|l| {
                let done = l.split_whitespace().nth(1).unwrap_or("").to_owned();
                let status = l.get(status_at..name_at).unwrap_or("").trim().to_owned();
                (l[name_at..].trim().to_owned(), done, status)
            })
            .collect()
    }

    /// Waits until Transmission has a peer connected for the torrent with this info hash (or
    /// until `done` is set).
    pub fn wait_connected(
        &self,
        hash: &str,
        done: &AtomicBool,
        limit: Duration,
    ) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if done.load(Ordering::SeqCst) {
                return Ok(());
            }
            let info = self.remote(&["-t", hash, "-i"]);
            let connected = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("Peers: connected to "))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.trim().parse::<u32>().ok())
                .unwrap_or(0);
            if connected > 0 {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(format!("no peer connected after {limit:?}:\n{info}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every torrent named in `names` is at 100% and in a state other than
    /// verifying, up to `limit`; on time-out, says which are not.
    pub fn wait_complete(&self, names: &[String], limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let list = self.list();
            let pending: Vec<_> = names
                .iter()
                .filter(|n| {
                    !list.iter().any(|(name, done, status)| {
                        name == *n && done == "100%" && !status.contains("Verif")
                    })
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "not complete after {limit:?}: {pending:?}; list: {list:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
