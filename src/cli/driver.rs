//! `--io` and `--threads`: the event loops behind the commands, io_uring or epoll, chosen once
//! at start-up, and how many. The choice itself is the library's ([`driver::resolve`],
//! [`driver::loop_count`]); this maps the flags onto it and words its outcome for the user.

use anyhow::{anyhow, Result};

use super::transfer::Io;
use ringtorrent::driver::{self, IoChoice};
pub use ringtorrent::driver::{Backend, Driver};

/// Resolves `--io`: `auto` probes io_uring and falls back to epoll with a note on stderr;
/// `uring` fails with the probe's reason where io_uring is unavailable.
pub fn backend(io: Io) -> Result<Backend> {
    let choice = match io {
        Io::Auto => IoChoice::Auto,
        Io::Uring => IoChoice::Uring,
        Io::Epoll => IoChoice::Epoll,
    };
    let resolved = driver::resolve(choice)
        .map_err(|e| anyhow!("--io uring: {e}; use --io epoll or --io auto"))?;
    if let Some(e) = resolved.fallback {
        eprintln!("note: {e}; using epoll");
    }
    Ok(resolved.backend)
}

/// Resolves `--threads`: 0 means one event loop per core available to the process.
pub fn threads(requested: usize) -> usize {
    driver::loop_count(requested)
}
