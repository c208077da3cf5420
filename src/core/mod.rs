//! The sans-IO protocol core.
//!
//! Nothing under `core/` touches a socket or a file, reads the clock or draws randomness of
//! its own: time arrives as an argument, and randomness comes from the seed a `Session` is
//! built with (each torrent's own generator is seeded from the session's). `tests/core_purity.rs` enforces
//! this by scanning the sources. That is what lets the io_uring driver, the epoll driver and
//! the seeded simulator run exactly the same protocol code.

pub mod api;
pub mod bitfield;
pub mod choker;
pub mod config;
mod context;
mod fast;
mod hashes;
pub mod hex;
mod known;
mod layers;
pub mod lengths;
pub mod limiter;
mod metadata;
pub mod mse;
mod peer;
mod peers;
pub mod picker;
pub mod rate;
pub mod rng;
mod sendbuf;
pub mod session;
mod smartban;
pub mod time;
mod torrent;
pub mod types;
mod votes;
pub mod wire;

#[cfg(test)]
mod encryption_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod handoff_tests;
#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod recv_tests;
#[cfg(test)]
mod upload_tests;
#[cfg(test)]
mod v2_wire_tests;

pub use bitfield::Bitfield;
pub use config::Encryption;
pub use lengths::{BlockRef, Lengths, PieceIndex};
pub use peer::Crypto;
pub use rng::Rng;
pub use sendbuf::SendBuf;
pub use session::Session;
pub use time::Time;
pub use torrent::TorrentStats;
pub use types::{InfoHash, InfoHashV2, PeerId, PeerKey};
