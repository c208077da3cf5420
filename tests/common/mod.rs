//! Helpers shared by the integration tests: running the `ringtorrent` binary and reference
//! tools with a time bound, in a home of their own, guarded from the moment they start and
//! read with a deadline on every wait; and writing deterministic payloads.

#![allow(dead_code)]

pub mod fake_tracker;
pub mod http_tracker;
pub mod interop;
pub mod link;
pub mod opentracker;
pub mod purity;
pub mod serve;
pub mod transmission;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a child may take to say it is ready (its port, its first line). Generous: it only
/// bounds a hang, and a loaded machine may take seconds to start a process.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// The `ringtorrent` binary built for this test run, in a home of its own (see [`sandboxed`])
/// and with stdin closed.
pub fn ringtorrent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringtorrent"));
    sandboxed(&mut cmd).stdin(Stdio::null());
    cmd
}

/// The folder that the homes of this test process's children lie in: made on first use,
/// removed when the process exits (by `atexit`, which runs when the harness returns from main
/// and when it calls `exit` after a failure).
static SANDBOX: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_sandbox() {
    if let Some(root) = SANDBOX.get() {
        let _ = std::fs::remove_dir_all(root);
    }
}

fn sandbox_root() -> &'static Path {
    SANDBOX.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("ringtorrent-test-homes-")
            .tempdir()
            .expect("a temporary folder for the children's homes")
            .keep();
        // SAFETY: atexit(3) takes a function of no arguments that returns nothing; this one
        // only removes a folder, and `SANDBOX` is set before it can run.
        unsafe { libc::atexit(remove_sandbox) };
        root
    })
}

/// Points HOME and the XDG folders (config, state, data, cache) of `cmd` at a fresh folder of
/// its own, and leaves the DHT without bootstrap routers, so that a child started without `--config` or `--state-dir` neither reads the
/// user's `~/.config/ringtorrent/serve.toml` nor writes resume data into
/// `~/.local/state/ringtorrent`, and no two children share such a folder by accident.
pub fn sandboxed(cmd: &mut Command) -> &mut Command {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let home = sandbox_root().join(format!("home-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&home).unwrap();
    cmd.env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        // The DHT's default bootstrap routers are public hosts: a test never contacts them
        // (a test of the DHT names its own node with --dht-bootstrap).
        .env("RINGTORRENT_DHT_BOOTSTRAP", "")
        // Nor does one announce itself on the host's LAN by local service discovery, or find
        // another test's processes that way (tests/lsd.rs turns it on, in namespaces).
        .env("RINGTORRENT_LSD", "off")
}

/// The first `127.0.0.1:PORT` word of `line` (`seed`'s first line, `download`'s "listening
/// on"), or a panic that shows the line.
pub fn loopback_addr(line: &str) -> String {
    line.split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no 127.0.0.1:PORT in {line:?}"))
        .to_owned()
}

/// A script in `tests/support/`.
pub fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// Runs `cmd` to completion, killing it (by PID) if it outlives `limit`. Its output is read
/// while it runs (on two threads), so a child writing more than a pipe holds cannot block.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    output_within(cmd, limit)
}

/// As [`run_bounded`], with the standard streams as the caller set them: those that are
/// pipes are read while it runs; the others come back empty.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{cmd:?} ran past {limit:?}; stderr: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs `cmd` and returns its stdout, failing the test with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run_bounded(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes `len` deterministic pseudo-random bytes (xorshift from `seed`) to `path`, creating
/// its folders.
pub fn write_payload(path: &Path, len: usize, seed: u64) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, data).unwrap();
}

/// A multi-file tree that exercises ordering and layout edge cases: files smaller than a
/// piece, empty files, nested folders, and names whose order differs between a byte-wise
/// comparison of full paths (mktorrent's) and a component-wise one (`a-b` vs `a/b`).
pub fn write_tree(root: &Path) {
    write_payload(&root.join("a-b"), 1000, 1);
    write_payload(&root.join("a/b"), 70_001, 2);
    write_payload(&root.join("a/c/deep/x.bin"), 300_000, 3);
    write_payload(&root.join("A.txt"), 17, 4);
    write_payload(&root.join("a.b"), 5, 5);
    write_payload(&root.join("z/empty"), 0, 6);
    write_payload(&root.join("z/ü-ünicode.txt"), 33_333, 7);
    write_payload(&root.join("z/.hidden"), 1234, 8);
}

/// Reads the `ringtorrent info --json` of a torrent.
pub fn info_json(torrent: &Path) -> serde_json::Value {
    let out = run_ok(ringtorrent().arg("info").arg("--json").arg(torrent));
    serde_json::from_str(&out).unwrap()
}

/// Asserts that every file under `a` is under `b` with the same bytes.
pub fn same_tree(a: &Path, b: &Path) {
    let mut files = Vec::new();
    collect(a, a, &mut files);
    assert!(!files.is_empty());
    for rel in files {
        let x = std::fs::read(a.join(&rel)).unwrap();
        let y = std::fs::read(b.join(&rel))
            .unwrap_or_else(|e| panic!("{}: {e}", b.join(&rel).display()));
        assert!(x == y, "{} differs", rel.display());
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

/// A child process ended by PID when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which of a child's streams a line came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// A started process, killed by PID (and reaped) when dropped, so it ends even when the test
/// fails; it is guarded from the moment it is spawned. Its output goes to a log file shown on
/// failure; a watched one ([`Proc::watch`]) also hands its lines over, so that a test waits
/// for what the process says, with a deadline, instead of sleeping.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// What failure messages call it.
    pub name: String,
    /// Where its output goes.
    pub log: PathBuf,
    /// Behind a lock so that a `&Proc` may be shared between threads (a daemon several jobs
    /// talk to).
    lines: Option<Mutex<Receiver<(Stream, String)>>>,
}

impl Proc {
    /// Starts `cmd` (stdin closed) with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let file = File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            child,
            name: name.to_owned(),
            log: log.to_owned(),
            lines: None,
        }
    }

    /// Starts `cmd` (stdin as the caller set it) with stdout and stderr read line by line on
    /// threads: each line is appended to `log`, then handed to [`Proc::wait_line`].
    pub fn watch(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let file = Arc::new(Mutex::new(File::create(log).unwrap()));
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let proc = Proc {
            child,
            name: name.to_owned(),
            log: log.to_owned(),
            lines: Some(Mutex::new(rx)),
        };
        read_lines(Stream::Out, out, file.clone(), tx.clone());
        read_lines(Stream::Err, err, file, tx);
        proc
    }

    /// What the process wrote so far.
    pub fn log(&self) -> String {
        format!(
            "--- {} log ({}):\n{}",
            self.name,
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Waits up to `limit` for a line (of a watched process) that `wanted` accepts and returns
    /// it; lines before it are passed over (they stay in the log). Panics, showing the log, at
    /// the deadline or when the process closed its output first.
    pub fn wait_line(
        &self,
        limit: Duration,
        what: &str,
        mut wanted: impl FnMut(Stream, &str) -> bool,
    ) -> String {
        let lines = self.lines.as_ref().expect("a watched process");
        let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((stream, line)) if wanted(stream, &line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{} did not say {what} in {limit:?}\n{}",
                        self.name,
                        self.log()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{} ended before saying {what}\n{}", self.name, self.log())
                }
            }
        }
    }

    /// The first line on stdout, within `limit`.
    pub fn first_line(&self, limit: Duration) -> String {
        self.wait_line(limit, "a first line on stdout", |s, _| s == Stream::Out)
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running. For a
    /// watched process, its last lines are in the log once this returns.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The readers end at end of file, once they have logged the last line.
        if let Some(lines) = &self.lines {
            let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
            while let Ok(_) | Err(RecvTimeoutError::Timeout) =
                lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if Instant::now() > deadline {
                    break;
                }
            }
        }
        Some(status)
    }

    /// Its PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line on a thread of its own until end of file: each line is appended
/// to `log`, then sent on `tx` (a receiver gone is no reason to stop reading: a child writing
/// into a pipe nobody reads would block).
fn read_lines(
    stream: Stream,
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<File>>,
    tx: mpsc::Sender<(Stream, String)>,
) {
    std::thread::spawn(move || {
        each_line(pipe, |line| {
            {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(log, "{line}");
            }
            let _ = tx.send((stream, line));
        })
    });
}

/// Calls `f` with each line of `pipe` (without its line end; bytes that are not UTF-8
/// replaced) until end of file or an error.
fn each_line(pipe: impl Read, mut f: impl FnMut(String)) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        f(line.trim_end_matches(['\n', '\r']).to_owned());
    }
}

/// Reads `pipe` (a child's stdout) on a thread of its own and returns its first `n` lines,
/// waiting at most `limit`; `Err` says what came before the deadline or the end of file.
/// The thread keeps reading (and dropping) what follows, so the child never writes into a
/// closed pipe.
pub fn first_lines(
    pipe: impl Read + Send + 'static,
    n: usize,
    limit: Duration,
) -> Result<Vec<String>, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        each_line(pipe, |line| {
            let _ = tx.send(line);
        })
    });
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => got.push(line),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("{got:?} and nothing more in {limit:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("{got:?}, then the output closed"))
            }
        }
    }
    Ok(got)
}

/// Who listens on a loopback TCP port, as the kernel's tables say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Nobody yet.
    Nobody,
    /// The process whose PID was asked about.
    Ours,
    /// Another process: the port was taken between choosing it and the child's bind.
    Other,
}

/// Who listens on TCP 127.0.0.1:`port` (or the wildcard): `pid`, someone else, or nobody.
/// A third-party program that must be given a port is checked this way, so that a test never
/// talks to a stranger that happened to take the port first.
pub fn tcp_listener(pid: u32, port: u16) -> Listener {
    socket_owner(pid, "/proc/net/tcp", port, Some("0A"))
}

/// Whether `pid` holds a UDP socket bound to 127.0.0.1:`port` (or the wildcard), as
/// [`tcp_listener`].
pub fn udp_socket(pid: u32, port: u16) -> Listener {
    socket_owner(pid, "/proc/net/udp", port, None)
}

fn socket_owner(pid: u32, table: &str, port: u16, state: Option<&str>) -> Listener {
    let text = std::fs::read_to_string(table).unwrap_or_default();
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, st, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            let (ip, p) = local.split_once(':')?;
            let here = (ip == "0100007F" || ip == "00000000")
                && u16::from_str_radix(p, 16).ok()? == port
                && state.is_none_or(|s| *st == s);
            here.then(|| format!("socket:[{inode}]"))
        })
        .collect();
    if inodes.is_empty() {
        return Listener::Nobody;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten();
    let ours = fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    });
    if ours {
        Listener::Ours
    } else {
        Listener::Other
    }
}

/// Waits up to `limit` until `proc` itself listens on TCP 127.0.0.1:`port`. `Err` (with its
/// log) when another process holds the port, when it exited, or at the deadline: the caller
/// then starts it again on a fresh port.
pub fn wait_listening_by(proc: &mut Proc, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match tcp_listener(proc.id(), port) {
            Listener::Ours => return Ok(()),
            Listener::Other => {
                return Err(format!("another process listens on {port}\n{}", proc.log()))
            }
            Listener::Nobody => {}
        }
        if let Some(status) = proc.child.try_wait().unwrap() {
            return Err(format!("{} exited ({status})\n{}", proc.name, proc.log()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} never listened on {port}\n{}",
                proc.name,
                proc.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a third-party program that must be told its port (aria2, transmission): `make`
/// builds its command for a port, and the program is started on a fresh candidate port until
/// it is the one listening there (a candidate taken meanwhile by someone else, or a failed
/// bind, means another try), at most five times.
pub fn start_listening(
    name: &str,
    log: &Path,
    limit: Duration,
    mut make: impl FnMut(u16) -> Command,
) -> Result<(Proc, u16), String> {
    let mut why = Vec::new();
    for _ in 0..5 {
        let port = interop::free_port();
        let mut proc = Proc::spawn(name, &mut make(port), log);
        match wait_listening_by(&mut proc, port, limit) {
            Ok(()) => return Ok((proc, port)),
            Err(e) => why.push(e),
        }
    }
    Err(format!("{name} never listened:\n{}", why.join("\n")))
}

/// A loopback TCP port that refuses connections, and that no other process can take while
/// the returned socket lives: a socket bound there that never listens (a port merely found
/// free could be taken, and answered, by anyone before the test dials it).
pub fn refusing_port() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: socket(2) with constant arguments; the descriptor it returns is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor that nothing else owns or closes.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_in is valid (family, port and address are set next).
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let at = (&raw mut addr).cast::<libc::sockaddr>();
    // SAFETY: `at` points to a sockaddr_in of `len` bytes that lives across both calls;
    // getsockname writes at most `len` bytes into it.
    unsafe {
        assert_eq!(libc::bind(fd.as_raw_fd(), at, len), 0, "bind");
        assert_eq!(
            libc::getsockname(fd.as_raw_fd(), at, &mut len),
            0,
            "getsockname"
        );
    }
    (fd, u16::from_be(addr.sin_port))
}

/// A single-file torrent's info dictionary named `t.bin`, of `pieces` pieces of `piece_len`
/// bytes whose hashes are all zero: for tests that drive a `Session` byte by byte and never
/// verify data.
pub fn test_info(piece_len: u64, pieces: u32) -> std::sync::Arc<ringtorrent::metainfo::Info> {
    use ringtorrent::bencode::OwnedValue;
    use std::collections::BTreeMap;
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str("t.bin"));
    info.insert(b"piece length".to_vec(), OwnedValue::Int(piece_len as i64));
    info.insert(
        b"pieces".to_vec(),
        OwnedValue::Bytes(vec![0; 20 * pieces as usize]),
    );
    info.insert(
        b"length".to_vec(),
        OwnedValue::Int((piece_len * u64::from(pieces)) as i64),
    );
    let mut root = BTreeMap::new();
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    std::sync::Arc::new(
        ringtorrent::metainfo::Torrent::from_bytes(&OwnedValue::Dict(root).to_bytes())
            .unwrap()
            .info,
    )
}

/// An in-process client for tests: listening on any loopback port, `loops` event loops,
/// no trackers, its data in `data`.
pub fn client_config(data: &Path, loops: usize) -> ringtorrent::client::ClientConfig {
    ringtorrent::client::ClientConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        loops,
        io: ringtorrent::client::IoChoice::Auto,
        data_dir: data.to_path_buf(),
        trackers: false,
        ..Default::default()
    }
}

/// An in-process client serving `torrent` from `dir` (seed only), checked to be seeding.
pub fn seeding_client(dir: &Path, torrent: &[u8], loops: usize) -> ringtorrent::client::Client {
    use ringtorrent::client::{AddTorrent, Client, TorrentState};
    let client = Client::start(client_config(dir, loops)).unwrap();
    let t = client
        .add(AddTorrent::bytes(torrent.to_vec()).seed_only())
        .unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);
    client
}

/// A single-file torrent (`piece_len`-byte pieces) over a new `len`-byte payload at `path`,
/// written from `seed`.
pub fn single_file_torrent(path: &Path, len: usize, piece_len: usize, seed: u64) -> Vec<u8> {
    write_payload(path, len, seed);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: path.to_path_buf(),
        piece_len: Some(piece_len as u64),
        ..Default::default()
    };
    ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes
}

/// Polls `done` every 50 ms; the test fails, naming `what`, if `limit` passes first.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first of a client's events that `pick` accepts, within `limit`.
pub fn first_event(
    events: &ringtorrent::client::Events,
    limit: Duration,
    pick: impl FnMut(&ringtorrent::client::ClientEvent) -> bool,
) -> ringtorrent::client::ClientEvent {
    let mut seen = events_until(events, limit, pick);
    seen.pop()
        .expect("events_until returns the event it stopped at")
}

/// A client's events until `done` says stop; the test fails if `limit` passes first.
pub fn events_until(
    events: &ringtorrent::client::Events,
    limit: Duration,
    mut done: impl FnMut(&ringtorrent::client::ClientEvent) -> bool,
) -> Vec<ringtorrent::client::ClientEvent> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = events
            .recv_timeout(left)
            .unwrap_or_else(|| panic!("timed out; events so far: {seen:?}"));
        let stop = done(&e);
        seen.push(e);
        if stop {
            return seen;
        }
    }
}
