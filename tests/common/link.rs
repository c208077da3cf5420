//! Peers on two sides of an emulated link instead of loopback: `tools/link-emu` makes a user
//! namespace with two network namespaces, A (10.77.0.1) and B (10.77.0.2), joined through TUN
//! devices by a user-space link with the rules asked (delay, jitter, loss, reordering, rate;
//! see its `--help`). [`Link::command`] runs a program on either side; only those two
//! addresses exist there. The emulator is bounded by the limit given and ended by its handle.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{sandboxed, Proc, START_LIMIT};

/// Side A's address (where the tests put the seed).
pub const ADDR_A: &str = "10.77.0.1";
/// Side B's address.
pub const ADDR_B: &str = "10.77.0.2";

/// One side of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// The `link-emu` binary, built (release, in its own crate's target folder) once per test
/// process: a few seconds, and nothing to do when scripts/test.sh built it already.
pub fn link_emu() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/link-emu");
        let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args([
                "build",
                "--release",
                "--locked",
                "--quiet",
                "--manifest-path",
            ])
            .arg(dir.join("Cargo.toml"))
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("cargo, to build tools/link-emu");
        assert!(
            out.status.success(),
            "building tools/link-emu failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("target/release/link-emu")
    })
}

/// A running emulated link and the processes that stand for its sides.
pub struct Link {
    emu: Proc,
    a: u32,
    b: u32,
}

impl Link {
    /// Starts a link with the rules of `spec` (e.g. `20ms,1%,50mbit`: one-way delay, loss,
    /// rate) that ends by itself after `limit`; its log goes into `dir`.
    pub fn start(spec: &str, limit: Duration, dir: &Path) -> Link {
        let mut cmd = Command::new(link_emu());
        cmd.args(["run", "--link", spec, "--duration"])
            .arg(limit.as_secs().max(1).to_string())
            .stdin(Stdio::null());
        let emu = Proc::watch("link-emu", &mut cmd, &dir.join("link-emu.log"));
        let line = emu.wait_line(START_LIMIT, "ready", |_, l| l.starts_with("ready "));
        let pid = |key: &str| -> u32 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        let (a, b) = (pid("a="), pid("b="));
        Link { emu, a, b }
    }

    /// `program` run on `side` (by `nsenter`, which becomes the program: its PID is the
    /// program's). Add its arguments and start it as any command.
    pub fn command(&self, side: Side, program: impl AsRef<OsStr>) -> Command {
        let pid = match side {
            Side::A => self.a,
            Side::B => self.b,
        };
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &pid.to_string(),
            "-U",
            "-n",
            "--preserve-credentials",
            "--",
        ])
        .arg(program);
        cmd
    }

    /// The `ringtorrent` binary on `side`, sandboxed like [`super::ringtorrent`].
    pub fn ringtorrent(&self, side: Side) -> Command {
        let mut cmd = self.command(side, env!("CARGO_BIN_EXE_ringtorrent"));
        sandboxed(&mut cmd).stdin(Stdio::null());
        cmd
    }

    /// Stops the emulator (SIGTERM) and returns its log, which ends with each direction's
    /// counters: `a->b: offered N lost N queue_full N reordered N delivered N ...`.
    pub fn finish(mut self) -> String {
        // SAFETY: kill(2) on the PID of our own child, not yet reaped (the Proc holds it).
        unsafe { libc::kill(self.emu.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.emu.wait_exit(Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "{}", self.emu.log());
        self.emu.log()
    }
}

/// Counter `key` of direction `dir` (`"a->b"` or `"b->a"`) in the log [`Link::finish`] returns.
pub fn counter(log: &str, dir: &str, key: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix(dir).and_then(|r| r.strip_prefix(':')))
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == key)?;
            words.get(i + 1)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {dir} {key} in\n{log}"))
}
