//! Signals and output, the same for every command.
//!
//! - SIGINT, SIGTERM and SIGHUP (a closed terminal) ask for a clean stop: the command notices
//!   [`interrupted`] within a fraction of a second, saves resume data, announces `stopped`,
//!   removes its temporary files and exits: with status 0 when stopping was its normal end
//!   (`seed`, `serve`), 1 with what was left undone otherwise (`download`, `demo`). A second
//!   signal exits at once, with 128 + its number. `serve` is the exception: there SIGHUP
//!   reloads the config ([`catch_with_reload`]), as daemons do.
//! - Writing to a closed pipe (`ringtorrent info x.torrent | head -1`) ends the process the
//!   way it ends every Unix tool, by SIGPIPE, quietly. Rust ignores SIGPIPE so that a write to
//!   a closed socket is an error rather than a death; the engine's sockets rely on that, so
//!   the signal stays ignored and [`out`] turns a broken pipe on stdout into that death.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signal that asked us to stop, or 0.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if SIGNAL.swap(signal, Ordering::Relaxed) != 0 {
        // SAFETY: _exit is async-signal-safe and takes a plain integer.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP stop the command cleanly instead of killing the process.
pub fn catch() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `signal` has no preconditions beyond a valid signal number and handler; the
        // handler only touches an atomic and calls `_exit`, both async-signal-safe.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}

/// Set by SIGHUP under [`catch_with_reload`].
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_reload(_signal: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

/// As [`catch`], except that SIGHUP asks for a reload ([`take_reload`]) instead of a stop:
/// for `serve`, a daemon, whose SIGHUP means "read your config again" (systemd's
/// `ExecReload=kill -HUP $MAINPID`).
pub fn catch_with_reload() {
    catch();
    let handler: extern "C" fn(libc::c_int) = on_reload;
    // SAFETY: as in `catch`: a valid signal number and a handler that only stores to an
    // atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGHUP, handler as libc::sighandler_t);
    }
}

/// Whether a reload was asked for since the last call.
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::Relaxed)
}

/// Whether a stop was asked for.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::Relaxed) != 0
}

/// The error a command returns when a signal stopped it.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Writes to stdout; a reader that went away ends the process by SIGPIPE, as any tool's.
pub fn out(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            die_of_sigpipe();
        }
        // Any other failure (a full disk behind a redirection) is the user's to see.
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

fn die_of_sigpipe() -> ! {
    // SAFETY: restoring the default action and raising a signal have no preconditions; the
    // default action of SIGPIPE ends the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}
