//! Signals and output, the same for every command: SIGINT, SIGTERM and SIGHUP stop each
//! long-running command cleanly (resume data saved, temporary files removed), a second signal
//! exits at once, and printing into a closed pipe ends a command quietly, by SIGPIPE. (SIGHUP
//! makes `serve` reload its config instead: tests/systemd.rs.)
//!
//! Every child here is ended by PID when a test fails (`Guard`), its output is read on threads
//! with a deadline on every wait, and it runs with HOME pointing into the test's folder.

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ringtorrent, run_ok, write_payload, Guard};

/// The bound on every wait here.
const LIMIT: Duration = Duration::from_secs(120);

/// `ringtorrent` with HOME and XDG folders inside `dir`, so nothing reaches the user's own.
fn rt(dir: &Path) -> Command {
    let mut cmd = ringtorrent();
    cmd.env("HOME", dir.join("home"))
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null());
    cmd
}

/// Spawns `cmd` with stderr (and stdout) read line by line on threads; lines arrive on the
/// channel, tagged with their stream.
fn spawn_lines(cmd: &mut Command) -> (Guard, mpsc::Receiver<(bool, String)>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((true, line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((false, line));
        }
    });
    (Guard(child), rx)
}

/// Waits for a line containing `needle`; returns every line seen up to it.
fn wait_for(rx: &mpsc::Receiver<(bool, String)>, needle: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {needle:?} in time; seen:\n{seen}"),
        }
    }
}

/// Everything the child still prints until it exits.
fn rest(rx: &mpsc::Receiver<(bool, String)>) -> String {
    let mut seen = String::new();
    while let Ok((_, line)) = rx.recv_timeout(LIMIT) {
        seen.push_str(&line);
        seen.push('\n');
    }
    seen
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn wait(mut guard: Guard) -> std::process::ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the child did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn make_torrent(
    dir: &Path,
    len: usize,
    announce: Option<&str>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_payload(&data.join("payload.bin"), len, 5);
    let torrent = dir.join("payload.torrent");
    let mut cmd = rt(dir);
    cmd.arg("create")
        .arg(data.join("payload.bin"))
        .args(["-l", "64K", "-o"])
        .arg(&torrent);
    if let Some(url) = announce {
        cmd.args(["-a", url]);
    }
    run_ok(&mut cmd);
    (torrent, data)
}

#[test]
fn demo_stopped_by_a_signal_leaves_nothing_behind() {
    for (sig, when) in [
        (libc::SIGHUP, "making a"),
        (libc::SIGINT, "leeching over loopback"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let (child, rx) = spawn_lines(
            rt(dir.path())
                .args(["demo", "--size", "1G", "--quiet", "--work-dir"])
                .arg(&work),
        );
        wait_for(&rx, when);
        signal(&child.0, sig);
        let said = rest(&rx);
        let status = wait(child);
        assert_eq!(status.code(), Some(1), "signal {sig}: {said}");
        assert!(said.contains("interrupted"), "{said}");
        let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
        assert!(left.is_empty(), "signal {sig} left {left:?}");
    }
}

#[test]
fn download_stopped_by_sigterm_saves_resume_data_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data) = make_torrent(dir.path(), 6 << 20, None);
    // A seed paced at 1 MiB/s, so the download is still running when the signal comes.
    let (seed, seed_rx) = spawn_lines(
        rt(dir.path())
            .arg("seed")
            .arg(&torrent)
            .arg(&data)
            .args(["--port", "0", "--bind", "127.0.0.1", "--upload-limit", "1M"])
            .arg("--state-dir")
            .arg(dir.path().join("seed-state")),
    );
    let line = wait_for(&seed_rx, "seeding");
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .to_owned();
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    let download = || {
        let mut cmd = rt(dir.path());
        cmd.arg("download")
            .arg(&torrent)
            .arg("-o")
            .arg(&out)
            .args(["--peer", &addr, "--bind", "127.0.0.1", "--threads", "1"])
            .arg("--state-dir")
            .arg(&state);
        cmd
    };
    let (child, rx) = spawn_lines(&mut download());
    // A progress line says some bytes came (one a second, when stderr is not a terminal).
    let deadline = Instant::now() + LIMIT;
    loop {
        let said = wait_for(&rx, "%");
        if !said.contains(" 0.0%") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    signal(&child.0, libc::SIGTERM);
    let said = rest(&rx);
    assert_eq!(wait(child).code(), Some(1), "{said}");
    assert!(said.contains("interrupted with"), "{said}");
    let resume: Vec<_> = std::fs::read_dir(state.join("resume")).unwrap().collect();
    assert_eq!(resume.len(), 1, "{said}");
    // Again: what was verified is not fetched again, and the rest comes.
    let (again, rx) = spawn_lines(&mut download());
    let said = rest(&rx);
    assert!(wait(again).success(), "{said}");
    let resumed: u32 = said
        .lines()
        .find_map(|l| l.strip_prefix("resumed: ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(resumed > 0, "{said}");
    common::same_tree(&data, &out);
    drop(seed);
}

#[test]
fn seed_and_serve_stop_cleanly_on_int_term_and_hup() {
    // (serve takes SIGHUP as "reload the config": tests/systemd.rs.)
    let dir = tempfile::tempdir().unwrap();
    let (torrent, data) = make_torrent(dir.path(), 1 << 20, None);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let (child, rx) = spawn_lines(
            rt(dir.path())
                .arg("seed")
                .arg(&torrent)
                .arg(&data)
                .args(["--port", "0", "--bind", "127.0.0.1"])
                .arg("--state-dir")
                .arg(dir.path().join("seed-state")),
        );
        wait_for(&rx, "seeding");
        signal(&child.0, sig);
        let said = rest(&rx);
        assert!(wait(child).success(), "seed, signal {sig}: {said}");
        assert!(said.contains("stopped: uploaded"), "{said}");
        if sig == libc::SIGHUP {
            continue;
        }

        let config = dir.path().join("serve.toml");
        std::fs::write(&config, "").unwrap();
        let (child, rx) = spawn_lines(
            rt(dir.path())
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
                .arg("--data-dir")
                .arg(&data)
                .arg("--state-dir")
                .arg(dir.path().join("serve-state"))
                .arg("--watch-dir")
                .arg(dir.path())
                .env("RINGTORRENT_LOG", "info"),
        );
        // The watch folder holds the torrent: serve adds it, checks it, seeds it.
        wait_for(&rx, "added payload.bin");
        signal(&child.0, sig);
        let said = rest(&rx);
        assert!(wait(child).success(), "serve, signal {sig}: {said}");
        assert!(said.contains("stopped in"), "{said}");
        assert!(
            std::fs::read_dir(dir.path().join("serve-state/resume"))
                .unwrap()
                .count()
                == 1,
            "{said}"
        );
    }
}

/// A UDP tracker (BEP 15) that answers `connect` and the first announce, then stays silent,
/// so a client's `stopped` waits for its deadline.
fn silent_after_start(socket: UdpSocket, announced: mpsc::Sender<u32>) {
    let mut buf = [0u8; 2048];
    let mut answered = false;
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        if n < 16 {
            continue;
        }
        let action = u32::from_be_bytes(buf[8..12].try_into().unwrap());
        let tid = &buf[12..16];
        match action {
            0 => {
                let mut reply = vec![0, 0, 0, 0];
                reply.extend_from_slice(tid);
                reply.extend_from_slice(&[7; 8]);
                let _ = socket.send_to(&reply, from);
            }
            1 if n >= 98 => {
                let event = u32::from_be_bytes(buf[80..84].try_into().unwrap());
                let _ = announced.send(event);
                if !answered {
                    answered = true;
                    let mut reply = vec![0, 0, 0, 1];
                    reply.extend_from_slice(tid);
                    reply.extend_from_slice(&1800u32.to_be_bytes());
                    reply.extend_from_slice(&[0; 8]);
                    let _ = socket.send_to(&reply, from);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}/announce", socket.local_addr().unwrap());
    let (tx, announced) = mpsc::channel();
    std::thread::spawn(move || silent_after_start(socket, tx));
    let (torrent, data) = make_torrent(dir.path(), 1 << 20, Some(&url));
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "").unwrap();
    let serve =
        common::serve::Serve::start_in(dir.path(), &data, &["--config", config.to_str().unwrap()]);
    let (status, _) = serve.http("POST", "/torrents", &std::fs::read(&torrent).unwrap());
    assert_eq!(status, 201);
    assert_eq!(announced.recv_timeout(LIMIT), Ok(2));
    // `started` was answered once the metrics count an announce round trip.
    let deadline = Instant::now() + LIMIT;
    while !serve
        .http("GET", "/metrics", b"")
        .1
        .contains("ringtorrent_announce_seconds_count 1")
    {
        assert!(Instant::now() < deadline, "{}", serve.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The signal makes serve send `stopped` (3), which the tracker leaves unanswered: the
    // clean stop waits for it (5 s at most). A second signal does not wait.
    signal(&serve.child, libc::SIGTERM);
    assert_eq!(announced.recv_timeout(LIMIT), Ok(3), "{}", serve.log());
    signal(&serve.child, libc::SIGTERM);
    let mut serve = serve;
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{}", serve.log());
    assert!(!serve.log().contains("stopped in"), "{}", serve.log());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (torrent, _) = make_torrent(dir.path(), 1 << 20, None);
    let commands: [&[&str]; 3] = [
        &["info", torrent.to_str().unwrap()],
        &["simulate", "--peers", "3", "--size", "1M"],
        &["config", "print"],
    ];
    for args in commands {
        // A pipe whose reading end is closed before the command writes anything.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fds[0] is ours, open, and closed once.
        unsafe { libc::close(fds[0]) };
        // SAFETY: fds[1] is ours and open; the Stdio takes it over.
        let write_end = unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        let out = common::output_within(
            rt(dir.path())
                .args(args)
                .stdout(write_end)
                .stderr(Stdio::piped()),
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {stderr}"
        );
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
