//! Transfers between ringtorrent and Transmission 3.00 (Debian's `transmission-daemon`,
//! driven with `transmission-remote` from `transmission-cli`, both installed by
//! scripts/test.sh), both directions, every case of `common::interop::CASES`, both I/O
//! backends. Each test runs one daemon holding all eight of its torrents at once, so
//! Transmission's ten-second pulses (it decides interest and unchokes on them) are waited
//! out once per test rather than once per transfer. Every payload is compared byte for byte,
//! the daemon and every other process are ended by PID, and everything stays on 127.0.0.1.
//! The daemon must be given its ports: it counts as started once it is seen listening on
//! them itself, else it starts again on others.
//!
//! Transmission 3.00 never creates zero-length files, so its downloads are compared without
//! them (every other file byte for byte); ringtorrent's downloads are compared whole.
//!
//! Transmission never dials peers on 127.x (it counts them as bogus addresses), so
//! ringtorrent dials it in both directions: a seed with `--peer` once the torrent is added,
//! a leecher with `--peer` once Transmission has checked its data.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::interop::{
    compare_trees, compare_trees_but_empty_files, compare_within, download_ok, free_port, prepare,
    rt_download, rt_seed, run_all, Prepared, Proc, BACKENDS, CASES,
};
use common::{run_bounded, sandboxed, wait_listening_by};

/// A `transmission-daemon -f` with its own configuration folder, RPC and peer ports on
/// 127.0.0.1, no DHT, LPD, uTP, PEX or port mapping, no queueing, no ratio limits.
struct Transmission {
    proc: Proc,
    rpc: String,
    peer_port: u16,
}

impl Transmission {
    /// Starts the daemon on two candidate ports (RPC and peers), and again on fresh ones
    /// until it is the process listening on both and it answers RPC.
    fn start(work: &Path) -> Transmission {
        let config = work.join("transmission-config");
        std::fs::create_dir_all(&config).unwrap();
        let mut why = Vec::new();
        for _ in 0..5 {
            let (rpc_port, peer_port) = (free_port(), free_port());
            let settings = serde_json::json!({
                "dht-enabled": false,
                "lpd-enabled": false,
                "utp-enabled": false,
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
                // 1: prefer encryption (its default); ringtorrent's plaintext dials are accepted.
                "encryption": 1,
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
    fn ready(&mut self, rpc_port: u16) -> Result<(), String> {
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

    fn try_remote(&self, args: &[&str]) -> (bool, String) {
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

    fn remote(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_remote(args);
        assert!(
            ok,
            "transmission-remote {args:?}: {text}\n{}",
            self.proc.log()
        );
        text
    }

    /// Adds `torrent`, saving into (or seeding from) `dir`.
    fn add(&self, torrent: &Path, dir: &Path) {
        let text = self.remote(&["-a", torrent.to_str().unwrap(), "-w", dir.to_str().unwrap()]);
        assert!(text.contains("success"), "{text}");
    }

    /// Each torrent's (name, done, status) from `transmission-remote -l`.
    fn list(&self) -> Vec<(String, String, String)> {
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
    fn wait_connected(&self, hash: &str, done: &AtomicBool, limit: Duration) -> Result<(), String> {
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
    fn wait_complete(&self, names: &[String], limit: Duration) -> Result<(), String> {
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

/// The name Transmission shows for a prepared torrent.
fn name_of(p: &Prepared) -> String {
    common::info_json(&p.torrent)["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn hash_of(p: &Prepared) -> String {
    common::info_json(&p.torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every case on both backends, each with its own payload; `tag` tells the directions apart.
fn prepare_all(work: &Path, tag: &str) -> Vec<(Prepared, &'static str)> {
    let mut all = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        for (j, io) in BACKENDS.into_iter().enumerate() {
            let seed = 200 + (i * 2 + j) as u64 + if tag == "to" { 50 } else { 0 };
            all.push((prepare(work, case, &format!("{tag}-tr-{io}"), seed), io));
        }
    }
    all
}

#[test]
fn transmission_leeches_every_case_from_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let tr = Transmission::start(work);
    let all = prepare_all(work, "to");
    let outs: Vec<PathBuf> = all
        .iter()
        .map(|(p, _)| work.join(format!("{}-out", p.label)))
        .collect();
    for ((p, _), out) in all.iter().zip(&outs) {
        std::fs::create_dir_all(out).unwrap();
        tr.add(&p.torrent, out);
    }
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    // Transmission drops an incoming handshake while another one from the same IP is in
    // progress, so the seeds start one after another, each once the previous one is in.
    let mut seeds = Vec::new();
    for (p, io) in &all {
        seeds.push(rt_seed(p, io, std::slice::from_ref(&peer), work).0);
        tr.wait_connected(
            &hash_of(p),
            &AtomicBool::new(false),
            Duration::from_secs(40),
        )
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.label, seeds.last().unwrap().log()));
    }
    let names: Vec<String> = all.iter().map(|(p, _)| name_of(p)).collect();
    if let Err(e) = tr.wait_complete(&names, Duration::from_secs(100)) {
        let logs: Vec<String> = seeds.iter().map(Proc::log).collect();
        panic!("{e}\n{}\n{}", tr.proc.log(), logs.join("\n"));
    }
    let jobs = all
        .iter()
        .zip(&outs)
        .map(|((p, io), out)| {
            (
                format!("ringtorrent -> transmission {} --io {io}", p.label),
                {
                    move || {
                        compare_within(
                            &p.data,
                            out,
                            compare_trees_but_empty_files,
                            Duration::from_secs(20),
                        )
                    }
                },
            )
        })
        .collect();
    run_all(jobs);
}

#[test]
fn ringtorrent_leeches_every_case_from_transmission_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let tr = Transmission::start(work);
    let all = prepare_all(work, "from");
    for (p, _) in &all {
        tr.add(&p.torrent, &p.data);
    }
    let names: Vec<String> = all.iter().map(|(p, _)| name_of(p)).collect();
    tr.wait_complete(&names, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Transmission did not verify its data: {e}"));
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    // The downloads start one after another, each once Transmission has the previous one
    // connected (it drops a second incoming handshake from the same IP while one is on).
    let done: Vec<AtomicBool> = all.iter().map(|_| AtomicBool::new(false)).collect();
    let jobs = all
        .iter()
        .enumerate()
        .map(|(i, (p, io))| {
            let peer = peer.clone();
            let (tr, all, done) = (&tr, &all, &done);
            (
                format!("transmission -> ringtorrent {} --io {io}", p.label),
                {
                    move || {
                        if i > 0 {
                            let previous = &hash_of(&all[i - 1].0);
                            tr.wait_connected(previous, &done[i - 1], Duration::from_secs(40))?;
                        }
                        let out = work.join(format!("{}-out", p.label));
                        let result = rt_download(p, &out, io, &[peer], &[], work);
                        done[i].store(true, Ordering::SeqCst);
                        download_ok(&p.label, &result)
                            .map_err(|e| format!("{e}\n{}", tr.proc.log()))?;
                        compare_trees(&p.data, &out)
                    }
                },
            )
        })
        .collect();
    run_all(jobs);
}
