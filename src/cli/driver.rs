//! `--io`: the event loops behind the commands, io_uring or epoll, chosen once at start-up.
//! The choice itself is the library's ([`driver::resolve`]); this maps the flag onto it and
//! words its outcome for the user (`swarm-load`, which runs its own loops).

use anyhow::{anyhow, Result};

use ringtorrent::driver::{self, Backend, IoChoice};

/// `--io`: which I/O backend runs the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Io {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring only.
    Uring,
    /// epoll only.
    Epoll,
}

impl From<Io> for IoChoice {
    fn from(io: Io) -> IoChoice {
        match io {
            Io::Auto => IoChoice::Auto,
            Io::Uring => IoChoice::Uring,
            Io::Epoll => IoChoice::Epoll,
        }
    }
}

/// Resolves `--io`: `auto` probes io_uring and falls back to epoll with a note on stderr;
/// `uring` fails with the probe's reason where io_uring is unavailable.
pub fn backend(io: Io) -> Result<Backend> {
    let resolved = driver::resolve(io.into())
        .map_err(|e| anyhow!("--io uring: {e}; use --io epoll or --io auto"))?;
    if let Some(e) = resolved.fallback {
        eprintln!("note: {e}; using epoll");
    }
    Ok(resolved.backend)
}
