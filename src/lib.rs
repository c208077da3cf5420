//! ringtorrent: a BitTorrent engine for Linux, seeder and leecher, one io_uring (or epoll)
//! event loop per core over a sans-IO protocol core.
//!
//! Start at [`client`]: [`client::Client`] is the engine every `ringtorrent` command runs
//! on. Start one, add torrents (.torrent files, their bytes, magnet links), read what
//! happens from its events, and shut it down:
//!
//! ```no_run
//! use ringtorrent::client::{AddTorrent, Client, ClientConfig, ClientEvent};
//!
//! let client = Client::start(ClientConfig::default())?;
//! let events = client.subscribe();
//! let torrent = client.add(AddTorrent::parse("file.torrent"))?;
//! while let Some(event) = events.recv() {
//!     if let ClientEvent::Completed { .. } = event {
//!         break;
//!     }
//! }
//! println!("{} done", torrent.status()?.name);
//! client.shutdown();
//! # Ok::<(), ringtorrent::client::ClientError>(())
//! ```
//!
//! The floors below it, as `ARCHITECTURE.md` maps them:
//!
//! - [`client`]: the engine: torrents added, run on their loops, announced, resumed, stopped.
//! - [`driver`]: the event loops (io_uring, epoll) and the seeded simulator, one loop per
//!   core ([`driver::shard`]), over the [`driver::Protocol`] contract.
//! - [`core`]: the sans-IO protocol core (wire codec, MSE, peers, picker, choker, metadata
//!   exchange, peer exchange, sessions): no sockets, files, clock or global randomness.
//! - [`storage`]: a torrent's files: mapped, preallocated, hashed on a pool, resumed.
//! - [`tracker`]: the tracker client (HTTP, HTTPS, UDP), sans-IO but for `tracker::io`.
//! - [`metainfo`] validates `.torrent` files and magnet links into types that cannot describe
//!   anything unsafe (no path escapes, consistent lengths), and authors new torrents;
//!   [`bencode`] decodes with exact byte spans and bounded resources.
//! - [`load`]: the load generators (`tracker-load`, `swarm-load`) and their report format.
//! - [`api`]: the pieces of a control API no web page can drive and no client can exhaust
//!   (a bounded hyper server on one thread, Host/Origin/CORS policy, logins, sessions and API
//!   keys, request parsing), which `serve` is wired from.
//! - [`limits`]: the bounds on what the wire and files may say, each with its reason;
//!   [`wake`]: the queue-plus-eventfd that wakes a loop.
//! - `cli` (in the binary) parses arguments and displays; it builds no engine of its own.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod api;
pub mod bencode;
pub mod client;
pub mod core;
pub mod dht;
pub mod driver;
pub mod entropy;
pub mod limits;
pub mod load;
pub mod lsd;
pub mod metainfo;
pub mod net_addr;
pub mod storage;
pub mod tracker;
pub mod utp;
pub mod wake;
