//! The tracker client: HTTP (BEP 3, BEP 7, BEP 23, BEP 48) and UDP (BEP 15) announce and
//! scrape, over BEP 12 multi-tracker tiers.
//!
//! Like the core, the protocol part is sans-IO. [`Announcer`] is one torrent's state machine:
//! its inputs are `now`, tracker replies and timer expiries, and its outputs are
//! [`Request`]s (send this UDP datagram, make this HTTP request), [`TrackerEvent`]s (peers
//! found, a reply, an error) and the next deadline. The codecs ([`udp`], [`http`]) are pure
//! functions with typed errors and the bounds in [`crate::limits`]. Only [`io`] touches
//! sockets, threads and DNS; `tests/tracker_purity.rs` checks that the rest does not.
//!
//! ```text
//!   url.rs      TrackerUrl: udp:// http:// https:// parsed once; announce -> scrape (BEP 48)
//!   udp.rs      BEP 15 packets: connect, announce, scrape, error; encode + check-then-parse
//!   http.rs     query string, GET request, HTTP/1.1 reply (length, chunked, close), bencode
//!   announcer.rs  Announcer: tiers, events, intervals, back-off, retransmission (STATE below)
//!   io.rs       TrackerIo: a non-blocking UDP socket per family, HTTP on worker threads
//! ```

pub mod announcer;
pub mod http;
pub mod io;
pub mod udp;
pub mod url;

#[cfg(test)]
mod proptests;

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::{InfoHash, PeerId};

pub use announcer::{Announcer, LinkId, Mode, Progress, Request, TrackerConfig, TrackerEvent};
pub use io::TrackerIo;
pub use url::{Scheme, TrackerUrl};

/// The `event` of an announce (BEP 3; BEP 15 numbers them 0 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceEvent {
    /// A regular announce.
    None,
    /// The first announce to a tracker.
    Started,
    /// The download finished (sent once, never for a torrent that started complete).
    Completed,
    /// The torrent is being removed or the program is exiting.
    Stopped,
}

impl AnnounceEvent {
    /// The HTTP query value, or `None` for a regular announce (which sends no `event`).
    pub fn as_query(self) -> Option<&'static str> {
        match self {
            AnnounceEvent::None => None,
            AnnounceEvent::Started => Some("started"),
            AnnounceEvent::Completed => Some("completed"),
            AnnounceEvent::Stopped => Some("stopped"),
        }
    }

    /// The BEP 15 number.
    pub fn as_udp(self) -> u32 {
        match self {
            AnnounceEvent::None => 0,
            AnnounceEvent::Completed => 1,
            AnnounceEvent::Started => 2,
            AnnounceEvent::Stopped => 3,
        }
    }

    /// A lower-case name for output.
    pub fn name(self) -> &'static str {
        self.as_query().unwrap_or("none")
    }
}

/// Everything an announce says about us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// The port we accept peers on.
    pub port: u16,
    /// Payload bytes sent since `started`.
    pub uploaded: u64,
    /// Payload bytes received since `started`.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// Why we announce.
    pub event: AnnounceEvent,
    /// How many peers we would like.
    pub numwant: u32,
    /// A random number that lets the tracker tell us apart if our address changes.
    pub key: u32,
    /// The `tracker id` the tracker gave us, echoed back (HTTP only).
    pub tracker_id: Option<Vec<u8>>,
    /// Our global IPv6 address, for BEP 7's `ipv6` parameter (HTTP only: BEP 15's announce
    /// has a 4-byte IP field alone).
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// A tracker's answer to an announce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// How long to wait before the next regular announce.
    pub interval: Duration,
    /// The shortest wait the tracker tolerates, if it says.
    pub min_interval: Option<Duration>,
    /// An id to send back in later announces (HTTP only).
    pub tracker_id: Option<Vec<u8>>,
    /// A message for the user; the announce still succeeded.
    pub warning: Option<String>,
    /// Peers with the whole torrent, if the tracker says.
    pub seeders: Option<u32>,
    /// Peers still downloading, if the tracker says.
    pub leechers: Option<u32>,
    /// Peers, IPv4 and IPv6, at most [`crate::limits::MAX_TRACKER_PEERS`].
    pub peers: Vec<SocketAddr>,
}

/// A tracker's counts for one torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ScrapeStats {
    /// Peers with the whole torrent.
    pub seeders: u32,
    /// Completed downloads the tracker has seen.
    pub completed: u32,
    /// Peers still downloading.
    pub leechers: u32,
}

/// Why a tracker exchange failed. Each variant names what the tracker (or the network) did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The URL cannot name a tracker.
    #[error("invalid tracker URL: {0}")]
    InvalidUrl(&'static str),
    /// The URL's scheme is one this build does not speak.
    #[error("unsupported tracker scheme `{0}`")]
    UnsupportedScheme(String),
    /// The announce URL does not end in `announce`, so it has no scrape URL (BEP 48).
    #[error("this tracker has no scrape URL (its path does not end in `announce`)")]
    NoScrape,
    /// The host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// A socket error.
    #[error("network error: {0}")]
    Io(String),
    /// No reply within the time allowed (all retransmissions spent, for UDP).
    #[error("no reply after {0:?}")]
    Timeout(Duration),
    /// The HTTP reply is not HTTP/1.x.
    #[error("malformed HTTP reply: {0}")]
    MalformedHttp(&'static str),
    /// An HTTP status other than 200.
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// The reply is larger than [`crate::limits::MAX_TRACKER_RESPONSE_LEN`].
    #[error("reply over {} bytes", crate::limits::MAX_TRACKER_RESPONSE_LEN)]
    TooLarge,
    /// The HTTP body is not valid bencode.
    #[error("reply is not bencode: {0}")]
    Bencode(crate::bencode::DecodeError),
    /// A field of the reply is missing or has the wrong type or value.
    #[error("reply field `{field}`: {problem}")]
    Field {
        /// The field, e.g. `peers`.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The tracker refused: BEP 3's `failure reason` or a BEP 15 error packet.
    #[error("tracker says: {0}")]
    Failure(String),
    /// A UDP reply shorter than its action requires.
    #[error("UDP reply of {0} bytes is too short")]
    UdpShort(usize),
    /// A UDP reply with the wrong action or a body that is not whole peer entries.
    #[error("malformed UDP reply: {0}")]
    UdpMalformed(&'static str),
}

// Not `#[from]`: that would also make the inner error the `source`, and the text it already
// puts in `Display` would print twice in a `{:#}` chain.
impl From<crate::bencode::DecodeError> for TrackerError {
    fn from(e: crate::bencode::DecodeError) -> Self {
        TrackerError::Bencode(e)
    }
}

/// Text from a tracker, lossily decoded and cut at
/// [`crate::limits::MAX_TRACKER_MESSAGE_LEN`] bytes (on a character boundary).
pub(crate) fn tracker_text(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(crate::limits::MAX_TRACKER_MESSAGE_LEN)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    text.retain(|c| !c.is_control() || c == ' ');
    text
}

/// Adds peers to `out` from a compact string of `entry`-byte entries (6 for IPv4, 18 for
/// IPv6: address then big-endian port), up to [`crate::limits::MAX_TRACKER_PEERS`] in all.
/// Port 0 entries are skipped: nobody can be reached there.
pub(crate) fn compact_peers(
    bytes: &[u8],
    entry: usize,
    out: &mut Vec<SocketAddr>,
) -> Result<(), TrackerError> {
    debug_assert!(entry == 6 || entry == 18);
    if bytes.len() % entry != 0 {
        return Err(TrackerError::Field {
            field: if entry == 6 { "peers" } else { "peers6" },
            problem: "compact peer list is not a whole number of entries",
        });
    }
    for chunk in bytes.chunks_exact(entry) {
        if out.len() >= crate::limits::MAX_TRACKER_PEERS {
            break;
        }
        let (ip, port) = chunk.split_at(entry - 2);
        let port = u16::from_be_bytes([port[0], port[1]]);
        if port == 0 {
            continue;
        }
        let ip: std::net::IpAddr = if entry == 6 {
            <[u8; 4]>::try_from(ip).expect("4 bytes").into()
        } else {
            <[u8; 16]>::try_from(ip).expect("16 bytes").into()
        };
        out.push(SocketAddr::new(ip, port));
    }
    Ok(())
}
