//! Storage behaviour that needs a second process: an open refused for lack of permission
//! (root ignores permission bits, so the open runs as `nobody`), and resume data that is the
//! old or the new version, never a mix, after the saving process is killed mid-write.
//!
//! This target has its own `main` (`harness = false` in Cargo.toml): run with
//! `RT_STORAGE_CHILD` set, it plays the child named there instead of running tests, so no test
//! exists only to be a child's entry point and `--include-ignored` finds nothing vacuous. Run
//! without it, it runs the tests below like libtest does (a name filter, `--exact`, `--skip`,
//! `--list`), one after another, and exits non-zero if any failed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringtorrent::core::{Bitfield, InfoHash};
use ringtorrent::metainfo::create::{create, CreateOptions};
use ringtorrent::metainfo::Info;
use ringtorrent::storage::{FileStamp, OpenMode, ResumeData, Storage, StorageError};

/// Names the child to play; unset in the parent.
const CHILD: &str = "RT_STORAGE_CHILD";

/// Every wait on a child ends by then, whatever the machine's load.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

const TESTS: &[(&str, fn())] = &[
    (
        "permission_denied_names_the_path",
        permission_denied_names_the_path,
    ),
    (
        "resume_file_is_old_or_new_after_kill_9",
        resume_file_is_old_or_new_after_kill_9,
    ),
];

fn main() {
    if let Ok(role) = std::env::var(CHILD) {
        match role.as_str() {
            "open-as-nobody" => child_open_as_nobody(),
            "save-resume" => child_save_resume(),
            other => panic!("{CHILD}={other}: no such child"),
        }
        return;
    }
    run_tests();
}

/// The part of libtest's command line that selects tests; everything else it accepts
/// (`--include-ignored`, `--nocapture`, `--test-threads N`, ...) changes nothing here: these
/// tests are not ignored, print as they go and run one at a time.
fn run_tests() {
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let (mut exact, mut list, mut only_ignored) = (false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--ignored" => only_ignored = true,
            "--skip" => skips.extend(args.next()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                args.next();
            }
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    let matches = |name: &str, pattern: &String| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern.as_str())
        }
    };
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|_| !only_ignored)
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let started = Instant::now();
        let ok = std::panic::catch_unwind(*test).is_ok();
        println!(
            "test {name} ... {} ({:.1} s)",
            if ok { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures: {}", failed.join(", "));
        std::process::exit(101);
    }
}

// ---------------------------------------------------------------------------------------
// Children

/// A child of this test binary, killed by its PID when dropped (a failing test included),
/// with its stdout read line by line on a thread so that every wait has a deadline.
struct Kid {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Kid {
    fn spawn(role: &str, env: &[(&str, &std::ffi::OsStr)]) -> Kid {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(CHILD, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        Kid {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The child's next line on stdout, or `None` once it has closed stdout (exited).
    fn next_line(&self) -> Option<String> {
        match self.lines.recv_timeout(CHILD_LIMIT) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the child said nothing for {CHILD_LIMIT:?}")
            }
        }
    }

    fn expect_line(&self, want: &str) {
        match self.next_line() {
            Some(line) if line == want => {}
            other => panic!("expected {want:?} from the child, got {other:?}"),
        }
    }

    fn kill(&mut self) {
        // SAFETY: a plain kill of our own child, by its id, before it has been reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
    }

    /// Waits for the child to exit (killing it past `CHILD_LIMIT`); returns its status, the
    /// rest of its stdout and its stderr.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + CHILD_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("the child ran past {CHILD_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let rest: Vec<String> =
            std::iter::from_fn(|| self.lines.recv_timeout(CHILD_LIMIT).ok()).collect();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, rest, stderr)
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Permission denied

fn require_root(what: &str) {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root to {what}; run the tests as root (CI does), it is not skipped"
    );
}

/// A multi-file torrent named `t` over a small folder made under `dir`.
fn small_torrent(dir: &Path) -> Info {
    let src = dir.join("t");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.bin"), vec![7u8; 10_000]).unwrap();
    std::fs::write(src.join("d/b.bin"), vec![9u8; 40_000]).unwrap();
    create(
        &CreateOptions {
            path: src,
            piece_len: Some(32_768),
            ..Default::default()
        },
        &AtomicU64::new(0),
    )
    .unwrap()
    .torrent
    .info
}

fn permission_denied_names_the_path() {
    require_root("drop to another user in a child process");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dl = tmp.path().join("dl");
    std::fs::create_dir(&dl).unwrap();
    std::fs::set_permissions(&dl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = tmp.path().join("src");
    let kid = Kid::spawn(
        "open-as-nobody",
        &[
            ("RT_TEST_DL", dl.as_os_str()),
            ("RT_TEST_SRC", src.as_os_str()),
        ],
    );
    let (status, out, err) = kid.finish();
    let out = out.join("\n");
    assert!(status.success(), "{status}: {out}\n{err}");
    let want = format!(
        "RESULT permission denied: cannot create folder {}",
        dl.join("t").display()
    );
    assert!(out.starts_with(&want), "{out}\n{err}");
    assert!(!dl.join("t").exists());
}

/// Makes the torrent as root, then opens it below `RT_TEST_DL` as `nobody` and prints the
/// error.
fn child_open_as_nobody() {
    let dl = PathBuf::from(std::env::var_os("RT_TEST_DL").expect("RT_TEST_DL"));
    let src = PathBuf::from(std::env::var_os("RT_TEST_SRC").expect("RT_TEST_SRC"));
    let info = small_torrent(&src);
    // SAFETY: plain syscalls; this process has one thread of its own.
    unsafe {
        assert_eq!(libc::setgid(65534), 0);
        assert_eq!(libc::setuid(65534), 0);
    }
    match Storage::open(info.into(), &dl, OpenMode::Create) {
        Err(e @ StorageError::PermissionDenied { .. }) => println!("RESULT {e}"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Resume data after kill -9

/// Two versions of a large resume file (a few MB: a write takes several milliseconds).
fn versions() -> (ResumeData, ResumeData) {
    let make = |fill: u8, mtime: i64| {
        let count = 80_000u32;
        let mut bits = vec![fill; count.div_ceil(8) as usize];
        *bits.last_mut().unwrap() = 0;
        ResumeData {
            info_hash: InfoHash::from_bytes([0xAB; 20]),
            verified: Bitfield::from_wire(&bits[..], count).unwrap(),
            files: (0..100_000)
                .map(|i| {
                    Some(FileStamp {
                        size: i * 1000,
                        mtime_ns: mtime + i as i64,
                    })
                })
                .collect(),
        }
    };
    (
        make(0x55, 1_700_000_000_000_000_000),
        make(0xAA, 1_800_000_000_000_000_000),
    )
}

/// Where a round's kill lands.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// The child's own write stops after this many bytes of the new file: the kernel refuses
    /// the write past `RLIMIT_FSIZE` with SIGXFSZ, whose handler sends the child SIGKILL.
    MidWrite(u64),
    /// The child says it has saved; the parent sends SIGKILL.
    AfterSave,
    /// The child says it starts saving; the parent sends SIGKILL at once, so the kill lands
    /// wherever the save has got to (writing, syncing, renaming or done).
    Anywhere,
}

fn resume_file_is_old_or_new_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (a, b) = versions();
    let len = a.to_bytes().len() as u64;
    assert_eq!(len, b.to_bytes().len() as u64);
    a.save(&state).unwrap();
    let mut current = 'a';
    let (mut kept_old, mut took_new, mut mid_write) = (0, 0, 0);
    let mut mid = 1..;
    for round in 0..16 {
        let kill = match round % 4 {
            1 => Kill::AfterSave,
            3 => Kill::Anywhere,
            _ => Kill::MidWrite(len * mid.next().unwrap() / 9),
        };
        let new = if current == 'a' { 'b' } else { 'a' };
        let mut env = vec![
            ("RT_TEST_STATE", state.as_os_str().to_owned()),
            ("RT_TEST_VERSION", new.to_string().into()),
        ];
        if let Kill::MidWrite(cut) = kill {
            env.push(("RT_TEST_CUT", cut.to_string().into()));
        }
        let env: Vec<_> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let mut kid = Kid::spawn("save-resume", &env);
        kid.expect_line("saving");
        match kill {
            Kill::MidWrite(_) => {}
            Kill::AfterSave => {
                kid.expect_line("saved");
                kid.kill();
            }
            Kill::Anywhere => kid.kill(),
        }
        let (status, rest, err) = kid.finish();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round} ({kill:?}): the child was not killed: {status}, {rest:?}, {err}"
        );

        let loaded = ResumeData::load(&state, a.info_hash).unwrap_or_else(|e| {
            panic!("round {round} ({kill:?}): resume data unreadable after kill -9: {e}")
        });
        let got = if loaded == a {
            'a'
        } else if loaded == b {
            'b'
        } else {
            panic!("round {round} ({kill:?}): a mix of versions")
        };
        match kill {
            Kill::MidWrite(cut) => {
                assert!(rest.is_empty(), "round {round}: saved after all: {rest:?}");
                // Proof that the kill landed mid-write: a file in the folder stops at the cut.
                let partial: Vec<u64> = leftovers(&state, a.info_hash)
                    .iter()
                    .map(|p| std::fs::metadata(p).unwrap().len())
                    .collect();
                assert_eq!(
                    partial,
                    [cut],
                    "round {round}: no half-written file of {cut} bytes; files: {partial:?}"
                );
                mid_write += 1;
                assert_eq!(
                    got, current,
                    "round {round}: killed mid-write, not the old file"
                );
            }
            Kill::AfterSave => {
                assert_eq!(
                    got, new,
                    "round {round}: saved, then killed: not the new file"
                );
            }
            Kill::Anywhere => {}
        }
        if got == current {
            kept_old += 1;
        } else {
            took_new += 1;
        }
        current = got;
        // Temporary files of killed saves are left behind; clear them for the next round.
        for p in leftovers(&state, a.info_hash) {
            std::fs::remove_file(p).unwrap();
        }
    }
    eprintln!(
        "after kill -9: old version kept {kept_old} times ({mid_write} kills mid-write), \
         new version {took_new} times"
    );
    assert_eq!(mid_write, 8);
    assert!(kept_old >= 8 && took_new >= 4, "{kept_old} {took_new}");
}

/// Files in the state folder other than the resume file itself.
fn leftovers(state: &Path, info_hash: InfoHash) -> Vec<PathBuf> {
    let resume = format!("{}.resume", info_hash.to_hex());
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != resume.as_str()))
        .collect()
}

extern "C" fn kill_self(_: libc::c_int) {
    // SAFETY: getpid and kill are async-signal-safe and cannot fail here.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// Saves version `RT_TEST_VERSION` of the resume data into `RT_TEST_STATE`, saying "saving"
/// before and "saved" after; with `RT_TEST_CUT`, the save dies by SIGKILL once it has written
/// that many bytes. After saving it waits for the parent to kill it (or to go away).
fn child_save_resume() {
    let state = PathBuf::from(std::env::var_os("RT_TEST_STATE").expect("RT_TEST_STATE"));
    let (a, b) = versions();
    let data = match std::env::var("RT_TEST_VERSION").as_deref() {
        Ok("a") => a,
        Ok("b") => b,
        other => panic!("RT_TEST_VERSION: {other:?}"),
    };
    if let Ok(cut) = std::env::var("RT_TEST_CUT") {
        let cut: u64 = cut.parse().unwrap();
        let limit = libc::rlimit {
            rlim_cur: cut,
            rlim_max: cut,
        };
        // SAFETY: a valid handler for a signal we may handle, and a valid rlimit; this
        // process writes no other file from here on.
        unsafe {
            assert_ne!(
                libc::signal(libc::SIGXFSZ, kill_self as *const () as libc::sighandler_t),
                libc::SIG_ERR
            );
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "saving").unwrap();
    out.flush().unwrap();
    data.save(&state).unwrap();
    writeln!(out, "saved").unwrap();
    out.flush().unwrap();
    // Blocks until the parent kills this process, or ends when the parent is gone.
    let _ = std::io::stdin().read_line(&mut String::new());
}
