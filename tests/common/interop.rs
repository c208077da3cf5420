//! What the interop tests with real clients share: the transfer cases every client is checked
//! on, ringtorrent's side of a transfer (seed and download on a chosen backend), processes
//! ended by PID when dropped, free loopback ports, and the byte-for-byte comparison.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    loopback_addr, ringtorrent, run_bounded, run_ok, sandboxed, support, write_payload, write_tree,
    START_LIMIT,
};

/// A torrent's shape.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    /// One file of this many bytes.
    Single(usize),
    /// `write_tree`'s files (smaller than a piece, an empty file, nested folders) plus one
    /// file of this many bytes, in a folder.
    Tree(usize),
}

/// One transfer case: every client is checked on each, both directions, both backends.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub layout: Layout,
    /// `ringtorrent create -l` value.
    pub piece_len: &'static str,
    pub private: bool,
}

/// The cases the issue asks for: an odd-sized single file; a multi-file torrent with files
/// smaller than a piece, an empty file and nested folders; piece lengths of 16 KiB, 256 KiB
/// and 4 MiB (a few pieces, the last one short); a private torrent. Small, so that sixteen
/// transfers per client fit in seconds.
pub const CASES: [Case; 4] = [
    Case {
        name: "odd",
        layout: Layout::Single(1_000_003),
        piece_len: "16K",
        private: false,
    },
    Case {
        name: "tree",
        layout: Layout::Tree(600_001),
        piece_len: "256K",
        private: false,
    },
    Case {
        name: "big",
        layout: Layout::Single(9_437_201),
        piece_len: "4M",
        private: false,
    },
    Case {
        name: "private",
        layout: Layout::Tree(1_500_007),
        piece_len: "256K",
        private: true,
    },
];

/// Both I/O backends of ringtorrent.
pub const BACKENDS: [&str; 2] = ["uring", "epoll"];

/// A torrent and the folder that holds its complete data (the save folder: a single file,
/// or the torrent's top folder, lies directly in it).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub label: String,
    pub torrent: PathBuf,
    pub data: PathBuf,
}

/// Writes the payload of `case` under `dir` and makes its torrent with `ringtorrent create`.
/// `tag` makes names unique and `seed` makes the payload (and so the info hash) unique,
/// so that several transfers can share one client.
pub fn prepare(dir: &Path, case: &Case, tag: &str, seed: u64) -> Prepared {
    let label = format!("{}-{tag}", case.name);
    let data = dir.join(format!("{label}-data"));
    let input = match case.layout {
        Layout::Single(len) => {
            let file = data.join(format!("{label}.bin"));
            write_payload(&file, len, seed);
            file
        }
        Layout::Tree(len) => {
            let root = data.join(&label);
            write_tree(&root);
            write_payload(&root.join("big/part.bin"), len, seed);
            root
        }
    };
    let torrent = dir.join(format!("{label}.torrent"));
    let mut cmd = ringtorrent();
    cmd.arg("create")
        .arg(&input)
        .args(["-l", case.piece_len, "-o"])
        .arg(&torrent);
    if case.private {
        cmd.arg("--private");
    }
    run_ok(&mut cmd);
    let info = super::info_json(&torrent);
    assert_eq!(info["private"], case.private, "{label}: {info}");
    Prepared {
        label,
        torrent,
        data,
    }
}

pub use super::Proc;

/// A candidate loopback port: free just now, and given to no other test in this process.
/// Only for programs that must be told their port (see [`super::start_listening`], which
/// checks the child is the one listening and tries again otherwise); ringtorrent and the
/// libtorrent helpers bind port 0 and say which port they got.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Starts `ringtorrent seed` for `p` on 127.0.0.1 (any free port) with backend `io`,
/// dialling each of `peers`; returns it with the address it listens on.
pub fn rt_seed(p: &Prepared, io: &str, peers: &[String], work: &Path) -> (Proc, String) {
    rt_seed_with(p, io, peers, &[], work)
}

/// As [`rt_seed`], with `extra` arguments (`--encryption require`; a `--duration` of its own
/// replaces the default 150 s).
pub fn rt_seed_with(
    p: &Prepared,
    io: &str,
    peers: &[String],
    extra: &[&str],
    work: &Path,
) -> (Proc, String) {
    let log = work.join(format!("rt-seed-{}-{io}.log", p.label));
    let mut cmd = ringtorrent();
    cmd.arg("seed")
        .arg(&p.torrent)
        .arg(&p.data)
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--io", io, "--state-dir"])
        .arg(work.join(format!("rt-seed-state-{}-{io}", p.label)))
        .args(extra);
    if !extra.contains(&"--duration") {
        cmd.args(["--duration", "150"]);
    }
    for peer in peers {
        cmd.args(["--peer", peer]);
    }
    let proc = Proc::watch(
        &format!("ringtorrent seed {} --io {io}", p.label),
        &mut cmd,
        &log,
    );
    let line = proc.first_line(START_LIMIT);
    let addr = loopback_addr(&line);
    assert!(line.contains(io), "{line}");
    (proc, addr)
}

/// Runs `ringtorrent download` of `p` into `out` with backend `io` from `peers`, within 90 s
/// (or the `--timeout` in `extra`).
pub fn rt_download(
    p: &Prepared,
    out: &Path,
    io: &str,
    peers: &[String],
    extra: &[&str],
    work: &Path,
) -> Output {
    let mut cmd = ringtorrent();
    cmd.arg("download")
        .arg(&p.torrent)
        .arg("-o")
        .arg(out)
        .args(["--bind", "127.0.0.1", "--io", io])
        .arg("--state-dir")
        .arg(work.join(format!("rt-leech-state-{}-{io}", p.label)))
        .args(extra);
    if !extra.contains(&"--timeout") {
        cmd.args(["--timeout", "90"]);
    }
    for peer in peers {
        cmd.args(["--peer", peer]);
    }
    run_bounded(&mut cmd, Duration::from_secs(110))
}

/// Starts `ringtorrent download` of `p` into `out` with backend `io` from `peers`, listening
/// on 127.0.0.1 (any free port); returns it with the address it listens on, for peers to
/// dial. [`finished`] waits for it.
pub fn rt_leech(
    p: &Prepared,
    out: &Path,
    io: &str,
    peers: &[String],
    work: &Path,
) -> (Proc, String) {
    let mut cmd = ringtorrent();
    cmd.arg("download")
        .arg(&p.torrent)
        .arg("-o")
        .arg(out)
        .args(["--bind", "127.0.0.1", "--port", "0", "--timeout", "90"])
        .args(["--io", io, "--state-dir"])
        .arg(work.join(format!("rt-leech-state-{}-{io}", p.label)));
    for peer in peers {
        cmd.args(["--peer", peer]);
    }
    let log = work.join(format!("rt-leech-{}-{io}.log", p.label));
    let proc = Proc::watch(
        &format!("ringtorrent download {} --io {io}", p.label),
        &mut cmd,
        &log,
    );
    let line = proc.wait_line(START_LIMIT, "where it listens", |_, l| {
        l.contains("listening on")
    });
    (proc, loopback_addr(&line))
}

/// Waits (110 s at most) for a download started with [`rt_leech`] to succeed.
pub fn finished(what: &str, leech: &mut Proc) -> Result<(), String> {
    match leech.wait_exit(Duration::from_secs(110)) {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!(
            "{what}: download failed ({status})\n{}",
            leech.log()
        )),
        None => Err(format!("{what}: download still running\n{}", leech.log())),
    }
}

/// Checks that a download succeeded; the error names what and shows its stderr.
pub fn download_ok(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: download failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every file under `seed` (empty ones included) is in `copy`, byte for byte.
pub fn compare_trees(seed: &Path, copy: &Path) -> Result<(), String> {
    compare(seed, copy, false)
}

/// Like [`compare_trees`], but an empty file may be missing from `copy`: Transmission 3.00
/// never creates zero-length files (4.0 does).
pub fn compare_trees_but_empty_files(seed: &Path, copy: &Path) -> Result<(), String> {
    compare(seed, copy, true)
}

fn compare(seed: &Path, copy: &Path, empty_may_be_missing: bool) -> Result<(), String> {
    let mut files = Vec::new();
    collect(seed, seed, &mut files);
    if files.is_empty() {
        return Err(format!("no files under {}", seed.display()));
    }
    for rel in files {
        let want = std::fs::read(seed.join(&rel)).unwrap();
        if want.is_empty() && empty_may_be_missing && !copy.join(&rel).exists() {
            continue;
        }
        let got = std::fs::read(copy.join(&rel))
            .map_err(|e| format!("{}: {e}", copy.join(&rel).display()))?;
        if want != got {
            return Err(format!(
                "{} differs ({} bytes, want {})",
                copy.join(&rel).display(),
                got.len(),
                want.len()
            ));
        }
    }
    Ok(())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

/// Compares with `compare` until the copy matches or `limit` passes (a client may still be
/// flushing its cache when it reports completion).
pub fn compare_within(
    seed: &Path,
    copy: &Path,
    compare: fn(&Path, &Path) -> Result<(), String>,
    limit: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match compare(seed, copy) {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > limit => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs every job on its own thread at once and fails the test with every error (each
/// labelled) if any failed, after all have finished.
pub fn run_all<F>(jobs: Vec<(String, F)>)
where
    F: FnOnce() -> Result<(), String> + Send,
{
    let started = Instant::now();
    let results: Vec<(String, Result<(), String>, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(label, job)| {
                s.spawn(move || {
                    let t = Instant::now();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                        .unwrap_or_else(|e| {
                            Err(e
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "panicked".into()))
                        });
                    (label, r, t.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (label, r, took) in &results {
        eprintln!(
            "{label}: {} in {:.1} s",
            if r.is_ok() { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
        if let Err(e) = r {
            failures.push(format!("== {label}: {e}"));
        }
    }
    eprintln!(
        "{} transfers in {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

/// aria2c for one torrent, listening on 127.0.0.1:`port`, saving into (or seeding from)
/// `dir`, with no DHT, PEX or LPD and a hard stop after two and a half minutes.
pub fn aria2(port: u16, dir: &Path) -> Command {
    let mut cmd = Command::new("aria2c");
    sandboxed(&mut cmd)
        .args([
            "--no-conf=true",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--enable-peer-exchange=false",
            "--bt-enable-lpd=false",
            "--interface=127.0.0.1",
            "--console-log-level=notice",
            "--summary-interval=0",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--file-allocation=none",
            "--bt-stop-timeout=60",
            "--stop=150",
        ])
        .arg(format!("--listen-port={port}"))
        .arg(format!("--dir={}", dir.display()));
    cmd
}

/// Starts `tests/support/lt_seed.py` (libtorrent, TCP only) for `p`, dialling each of
/// `peers`; returns it with the port it listens on. Its stdin stays open as long as the
/// returned process lives (closing it ends the seed).
pub fn lt_seed(p: &Prepared, peers: &[String], work: &Path) -> (Proc, u16) {
    lt_seed_with(p, peers, &[], work)
}

/// As [`lt_seed`], with `extra` arguments for `lt_seed.py` (`--in-enc-policy forced`, ...).
pub fn lt_seed_with(p: &Prepared, peers: &[String], extra: &[&str], work: &Path) -> (Proc, u16) {
    let log = work.join(format!("lt-seed-{}.log", p.label));
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(super::support("lt_seed.py"))
        .arg(&p.torrent)
        .arg(&p.data)
        .args(extra);
    for peer in peers {
        cmd.args(["--peer", peer]);
    }
    cmd.stdin(Stdio::piped());
    let proc = Proc::watch(&format!("lt_seed.py {}", p.label), &mut cmd, &log);
    let line = proc.first_line(START_LIMIT);
    let info: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("lt_seed.py printed {line:?}: {e}\n{}", proc.log()));
    let port = info["port"].as_u64().unwrap() as u16;
    (proc, port)
}

/// libtorrent (`lt_leech.py`) leeches each prepared case from a ringtorrent seed on its
/// backend, all at once; every file compared byte for byte.
pub fn libtorrent_leeches_all(all: &[(Prepared, &'static str)], work: &Path) {
    libtorrent_leeches_all_with(all, work, &[], &[]);
}

/// As [`libtorrent_leeches_all`], with `seed_args` for each ringtorrent seed and
/// `leech_args` for each `lt_leech.py` (`--transport utp` and `--utp-only`, say).
pub fn libtorrent_leeches_all_with(
    all: &[(Prepared, &'static str)],
    work: &Path,
    seed_args: &[&str],
    leech_args: &[&str],
) {
    let how = [seed_args, leech_args].concat().join(" ");
    let jobs = all
        .iter()
        .map(|(p, io)| {
            let how = &how;
            (
                format!("ringtorrent -> libtorrent {} --io {io} {how}", p.label),
                move || {
                    let (seed, addr) = rt_seed_with(p, io, &[], seed_args, work);
                    let out = work.join(format!("{}-out", p.label));
                    let result = run_bounded(
                        Command::new("/usr/bin/python3")
                            .arg(support("lt_leech.py"))
                            .arg(&p.torrent)
                            .arg(&out)
                            .args(leech_args)
                            .args(["--peer", &addr, "--timeout", "60"]),
                        Duration::from_secs(90),
                    );
                    if !result.status.success() {
                        return Err(format!(
                            "lt_leech.py {how} failed: {}\n{}",
                            String::from_utf8_lossy(&result.stderr),
                            seed.log()
                        ));
                    }
                    compare_trees(&p.data, &out)
                },
            )
        })
        .collect();
    run_all(jobs);
}
