//! ringtorrent: a BitTorrent engine for Linux.
//!
//! The crate is split along the design in `ARCHITECTURE.md`:
//!
//! - [`core`] is the sans-IO protocol core: no sockets, files, clock or global randomness.
//!   Today it holds the shared identifier types and the peer wire codec.
//! - [`bencode`] decodes bencode with exact byte spans and bounded resources, and encodes it.
//! - [`metainfo`] validates `.torrent` files and magnet links into types that cannot describe
//!   anything unsafe (no path escapes, consistent lengths), and authors new torrents.
//! - [`storage`] holds a torrent's files: mapped, preallocated, hashed on a pool, resumed.
//! - [`load`] holds the load generators (`tracker-load`) and their shared report format.
//! - [`limits`] is the one home of every bound on input that comes from outside.
//! - `cli` (in the binary) turns all of it into the `ringtorrent` command.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod bencode;
pub mod client;
pub mod core;
pub mod driver;
pub mod limits;
pub mod load;
pub mod metainfo;
pub mod storage;
pub mod tracker;
pub mod wake;
