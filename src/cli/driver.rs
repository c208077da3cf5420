//! `--io` and `--threads`: the event loops behind the commands, io_uring or epoll, chosen once
//! at start-up, and how many.

use anyhow::{anyhow, Result};

use super::transfer::Io;
use ringtorrent::driver::uring;
pub use ringtorrent::driver::{Backend, Driver};

/// Resolves `--io`: `auto` probes io_uring and falls back to epoll with a note on stderr;
/// `uring` fails with the probe's reason where io_uring is unavailable.
pub fn backend(io: Io) -> Result<Backend> {
    match io {
        Io::Epoll => Ok(Backend::Epoll),
        Io::Uring => uring::probe()
            .map(|()| Backend::Uring)
            .map_err(|e| anyhow!("--io uring: {e}; use --io epoll or --io auto")),
        Io::Auto => Ok(match uring::probe() {
            Ok(()) => Backend::Uring,
            Err(e) => {
                eprintln!("note: {e}; using epoll");
                Backend::Epoll
            }
        }),
    }
}

/// Resolves `--threads`: 0 means one event loop per core available to the process.
pub fn threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}
