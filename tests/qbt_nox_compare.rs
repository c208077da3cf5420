//! The same qBittorrent WebAPI flow run against the real `qbittorrent-nox` (Debian's, which
//! scripts/test.sh installs) and against `serve`, with the real `qbittorrent-api` client
//! (tests/support/qbt_compare.py): log in, versions, preferences, add a seeding .torrent with
//! a category and tags and a stopped one, `torrents/info`, properties, files, trackers,
//! pieceStates, categories, tags, transfer/info, `sync/maindata` full and a delta after a stop.
//! Every key `serve` returns must exist in qBittorrent's answer with the same JSON type, and the
//! state names must agree; what differs is printed as a readable diff. Both processes run on
//! 127.0.0.1 with a profile or state folder of their own, and are ended by PID.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::interop::free_port;
use common::serve::Serve;
use common::{run_bounded, run_ok, support, write_payload, Proc, START_LIMIT};

const USER: &str = "admin";
const PASS: &str = "s3cret-pass";

/// The virtual environment's Python, with qbittorrent-api.
fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGTORRENT_QBT_PYTHON") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let python = target.join("qbt-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs qbittorrent-api there",
        python.display()
    );
    python
}

/// Writes `payload` into each of `folders` and returns a .torrent for it (mktorrent, 32 KiB
/// pieces, an announce URL nobody answers).
fn prepare(dir: &Path, name: &str, len: usize, seed: u64, folders: &[&Path]) -> PathBuf {
    for folder in folders {
        write_payload(&folder.join(name), len, seed);
    }
    let torrent = dir.join(format!("{name}.torrent"));
    run_ok(
        Command::new("mktorrent")
            .args(["-l", "15", "-a", "http://127.0.0.1:9/announce"])
            .args(["-c", "made for the comparison", "-o"])
            .arg(&torrent)
            .arg(folders[0].join(name)),
    );
    torrent
}

/// Starts qbittorrent-nox with the profile `dir/nox` (HOME inside it), its WebUI on a free
/// loopback port; returns it and its URL once the WebUI accepts connections.
fn start_nox(dir: &Path, save: &Path) -> (Proc, String) {
    let profile = dir.join("nox");
    let home = profile.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (webui, peers) = (free_port(), free_port());
    run_ok(
        Command::new(venv_python())
            .arg(support("qbt_compare.py"))
            .arg("conf")
            .arg(&profile)
            .args([webui.to_string(), peers.to_string()])
            .args([USER, PASS])
            .arg(save),
    );
    let nox = Proc::spawn(
        "qbittorrent-nox",
        Command::new("qbittorrent-nox")
            .arg(format!("--profile={}", profile.display()))
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache")),
        &dir.join("nox.log"),
    );
    let addr = format!("127.0.0.1:{webui}");
    let deadline = Instant::now() + START_LIMIT;
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "qbittorrent-nox's WebUI did not open {addr}\n{}",
            nox.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (nox, format!("http://{addr}"))
}

#[test]
fn serve_answers_as_qbittorrent_nox_does() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let nox_save = dir.path().join("nox-save");
    let rt_save = dir.path().join("rt-save");
    let folders = [nox_save.as_path(), rt_save.as_path()];
    let seeding = prepare(dir.path(), "seeding.bin", 300_000, 31, &folders);
    let stopped = prepare(dir.path(), "stopped.bin", 200_000, 37, &folders);

    let (nox, nox_url) = start_nox(dir.path(), &nox_save);
    let serve = Serve::start(
        dir.path(),
        &["--api-username", USER, "--api-password", PASS],
    );
    let out = run_bounded(
        Command::new(venv_python())
            .arg(support("qbt_compare.py"))
            .arg("compare")
            .arg(&nox_url)
            .arg(format!("http://{}", serve.api))
            .args([USER, PASS])
            .arg(&seeding)
            .arg(&stopped)
            .arg(&nox_save)
            .arg(&rt_save)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.starts_with("OK"),
        "serve and qbittorrent-nox differ ({}):\n{stderr}\nstdout: {stdout}\nserve log:\n{}\n{}",
        out.status,
        serve.log(),
        nox.log()
    );
    eprintln!(
        "{stderr}qbt_compare.py: {} (whole test {:.1} s)",
        stdout.lines().nth(1).unwrap_or(""),
        started.elapsed().as_secs_f64()
    );
}
