//! Asking one peer who it is: a blocking handshake exchange for debugging
//! (`ringtorrent handshake`), over the same wire codec as the engine. Blocking `std::net` is
//! right here: one connection, no event loop needed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::core::wire::{
    Decoded, Decoder, ExtendedHandshake, Handshake, Message, Reserved, ReservedFlag, SplitBytes,
    EXTENDED_HANDSHAKE_ID,
};
use crate::core::InfoHash;

/// How long to keep listening after the handshake for the extension handshake and the
/// peer's pieces; clients send both right away.
const LISTEN_AFTER_HANDSHAKE: Duration = Duration::from_secs(3);

/// Why a probe failed, in words for the user (refused, timed out, wrong torrent...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(String);

/// A `ProbeError` from a format string.
macro_rules! fail {
    ($($t:tt)*) => { ProbeError(format!($($t)*)) };
}

/// Returns a `ProbeError` from a format string.
macro_rules! bail {
    ($($t:tt)*) => { return Err(ProbeError(format!($($t)*))) };
}

impl From<std::io::Error> for ProbeError {
    fn from(e: std::io::Error) -> ProbeError {
        ProbeError(e.to_string())
    }
}

/// What a peer told us in a handshake exchange ([`probe_peer`]).
#[derive(Debug)]
pub struct PeerProbe {
    /// Its address.
    pub addr: SocketAddr,
    /// How long the TCP connection took.
    pub connect_time: Duration,
    /// Its handshake.
    pub handshake: Handshake,
    /// Its extension handshake (BEP 10), if it sent one.
    pub extended: Option<ExtendedHandshake>,
    /// Its pieces, as far as it said.
    pub pieces: Option<Pieces>,
    /// The messages it sent after the handshake, by name.
    pub messages: Vec<String>,
}

/// The peer's piece availability as far as it told us.
#[derive(Debug)]
pub struct Pieces {
    /// How it said so: `bitfield`, `have all`, `have none` or `have`.
    pub how: &'static str,
    /// Pieces it has.
    pub have: u64,
    /// Pieces in the torrent, when known.
    pub total: Option<u32>,
}

/// Connects to `addr`, exchanges handshakes for `info_hash` (offering BEP 6 and BEP 10), and
/// listens briefly for what the peer volunteers: its extension handshake and its pieces
/// (checked against `piece_count` when known). Blocking, one connection: a debugging tool's
/// exchange (`ringtorrent handshake`), not the engine's. Every wait is bounded by `timeout`.
pub fn probe_peer(
    addr: SocketAddr,
    info_hash: InfoHash,
    piece_count: Option<u32>,
    timeout: Duration,
) -> Result<PeerProbe, ProbeError> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => {
            fail!("connection refused by {addr}: nothing listens there")
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            fail!(
                "timed out connecting to {addr} after {}s",
                timeout.as_secs()
            )
        }
        _ => fail!("cannot connect to {addr}: {e}"),
    })?;
    let connect_time = started.elapsed();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;

    let reserved = Reserved::NONE
        .with(ReservedFlag::ExtensionProtocol, true)
        .with(ReservedFlag::Fast, true);
    let ours = Handshake::new(reserved, info_hash, super::random_peer_id());
    stream
        .write_all(&ours.to_bytes())
        .map_err(|e| fail!("cannot send the handshake to {addr}: {e}"))?;

    let mut buf = Vec::with_capacity(64 * 1024);
    let handshake = loop {
        match Handshake::decode(SplitBytes::single(&buf)).map_err(|e| fail!("{addr} is {e}"))? {
            Decoded::Complete { value, consumed } => {
                buf.drain(..consumed);
                break value;
            }
            Decoded::Incomplete { .. } => match read_more(&mut stream, &mut buf) {
                Ok(true) => {}
                Ok(false) => bail!(
                    "{addr} closed the connection during the handshake (it probably does not have this torrent)"
                ),
                Err(e) if is_timeout(&e) => {
                    bail!("timed out waiting for the handshake from {addr} after {}s", timeout.as_secs())
                }
                Err(e) => bail!("connection to {addr} failed during the handshake: {e}"),
            },
        }
    };
    if handshake.info_hash != info_hash {
        bail!(
            "{addr} answered for info hash {}, not {info_hash}",
            handshake.info_hash
        );
    }

    if handshake.reserved.contains(ReservedFlag::ExtensionProtocol) {
        let ext = ExtendedHandshake {
            client: Some(concat!("ringtorrent ", env!("CARGO_PKG_VERSION")).to_owned()),
            request_queue: Some(250),
            your_ip: Some(addr.ip()),
            ..Default::default()
        };
        let payload = ext.to_bencode().to_bytes();
        let mut out = Vec::new();
        Message::Extended {
            id: EXTENDED_HANDSHAKE_ID,
            payload: SplitBytes::single(&payload),
        }
        .encode(&mut out);
        // Best effort: a peer that hangs up now has still answered the handshake.
        let _ = stream.write_all(&out);
    }

    let mut report = PeerProbe {
        addr,
        connect_time,
        handshake,
        extended: None,
        pieces: None,
        messages: Vec::new(),
    };
    listen(&mut stream, &mut buf, piece_count, &mut report);
    Ok(report)
}

/// Reads what the peer sends right after the handshake until it has told us its extension
/// handshake (when it offers BEP 10) and its pieces, it hangs up, or a short window passes.
fn listen(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    piece_count: Option<u32>,
    report: &mut PeerProbe,
) {
    let deadline = Instant::now() + LISTEN_AFTER_HANDSHAKE;
    let wants_ext = report
        .handshake
        .reserved
        .contains(ReservedFlag::ExtensionProtocol);
    let decoder = Decoder::new().with_piece_count(piece_count);
    loop {
        loop {
            let (name, consumed) = match decoder.decode(SplitBytes::single(buf)) {
                Ok(Decoded::Complete { value, consumed }) => {
                    (note(&value, piece_count, report), consumed)
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    report.messages.push(format!("malformed message: {e}"));
                    return;
                }
            };
            report.messages.push(name);
            buf.drain(..consumed);
        }
        let done = report.pieces.is_some() && (!wants_ext || report.extended.is_some());
        let left = deadline.saturating_duration_since(Instant::now());
        if done || left.is_zero() || report.messages.len() > 64 {
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
        match read_more(stream, buf) {
            Ok(true) => {}
            _ => return,
        }
    }
}

/// Records what one message says and returns its name for the message log.
fn note(msg: &Message<'_>, piece_count: Option<u32>, report: &mut PeerProbe) -> String {
    let set = |report: &mut PeerProbe, how, have| {
        report.pieces = Some(Pieces {
            how,
            have,
            total: piece_count,
        })
    };
    match msg {
        Message::Bitfield { bits } => {
            let have = bits.iter().map(|b| u64::from(b.count_ones())).sum();
            set(report, "bitfield", have);
        }
        Message::HaveAll => set(report, "have all", piece_count.map_or(0, u64::from)),
        Message::HaveNone => set(report, "have none", 0),
        Message::Have { .. } => match &mut report.pieces {
            Some(p) => p.have += 1,
            None => set(report, "have", 1),
        },
        Message::Extended {
            id: EXTENDED_HANDSHAKE_ID,
            payload,
        } => match ExtendedHandshake::decode(*payload) {
            Ok(ext) => report.extended = Some(ext),
            Err(e) => return format!("extended handshake (unreadable: {e})"),
        },
        _ => {}
    }
    match msg.id() {
        Some(id) => format!("{id:?}"),
        None => "KeepAlive".to_owned(),
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
