//! Helpers shared by the integration tests: running the `ringtorrent` binary and reference
//! tools with a time bound, and writing deterministic payloads.

#![allow(dead_code)]

pub mod interop;
pub mod opentracker;
pub mod purity;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `ringtorrent` binary built for this test run.
pub fn ringtorrent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringtorrent"))
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
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
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
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with stdout piped and returns it (ended by PID on drop) with its first line.
pub fn start_with_first_line(cmd: &mut Command) -> (Guard, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Guard(cmd.stdout(Stdio::piped()).spawn().unwrap());
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}
