//! `ringtorrent handshake`: a one-shot debugging tool. It connects to one peer, exchanges
//! handshakes and listens briefly for what the peer volunteers (extension handshake, piece
//! availability). Blocking `std::net` is right here: one connection, no event loop needed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use ringtorrent::core::wire::{
    Decoded, Decoder, ExtendedHandshake, Handshake, Message, Reserved, ReservedFlag, SplitBytes,
    EXTENDED_HANDSHAKE_ID,
};
use ringtorrent::core::InfoHash;
use ringtorrent::limits::HANDSHAKE_TIMEOUT_SECS;
use ringtorrent::metainfo::{Magnet, Torrent};

/// How long to keep listening after the handshake for the extension handshake and the
/// peer's pieces; clients send both right away.
const LISTEN_AFTER_HANDSHAKE: Duration = Duration::from_secs(3);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The torrent to ask about: a .torrent file or a magnet link.
    torrent: String,
    /// The peer, as HOST:PORT (e.g. 127.0.0.1:6881, [::1]:6881, seedbox.example:51413).
    peer: String,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, default_value_t = HANDSHAKE_TIMEOUT_SECS, value_name = "SECONDS")]
    timeout: u64,
    /// Print one JSON object instead of text, for scripts.
    #[arg(long)]
    json: bool,
}

/// What the peer told us.
struct Report {
    addr: SocketAddr,
    connect_time: Duration,
    handshake: Handshake,
    extended: Option<ExtendedHandshake>,
    pieces: Option<Pieces>,
    messages: Vec<String>,
}

/// The peer's piece availability as far as it told us.
struct Pieces {
    how: &'static str,
    have: u64,
    total: Option<u32>,
}

pub fn run(args: Args) -> Result<()> {
    let (info_hash, piece_count) = target(&args.torrent)?;
    let addr = resolve(&args.peer)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let report = talk(addr, info_hash, piece_count, timeout)?;
    if args.json {
        outln!("{}", to_json(&report));
    } else {
        print_text(&report);
    }
    Ok(())
}

fn target(input: &str) -> Result<(InfoHash, Option<u32>)> {
    if input.starts_with("magnet:") {
        let magnet = Magnet::parse(input).context("invalid magnet link")?;
        return Ok((magnet.info_hash, None));
    }
    let bytes = std::fs::read(Path::new(input)).with_context(|| format!("cannot read {input}"))?;
    let torrent =
        Torrent::from_bytes(&bytes).with_context(|| format!("{input} is not a valid torrent"))?;
    Ok((
        torrent.info_hash(),
        Some(torrent.info.lengths().piece_count()),
    ))
}

fn resolve(peer: &str) -> Result<SocketAddr> {
    if let Ok(addr) = peer.parse() {
        return Ok(addr);
    }
    let mut addrs = peer
        .to_socket_addrs()
        .map_err(|e| anyhow!("invalid peer address `{peer}` (expected HOST:PORT): {e}"))?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("invalid peer address `{peer}`: the name has no address"))
}

fn talk(
    addr: SocketAddr,
    info_hash: InfoHash,
    piece_count: Option<u32>,
    timeout: Duration,
) -> Result<Report> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        ErrorKind::ConnectionRefused => {
            anyhow!("connection refused by {addr}: nothing listens there")
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            anyhow!(
                "timed out connecting to {addr} after {}s",
                timeout.as_secs()
            )
        }
        _ => anyhow!("cannot connect to {addr}: {e}"),
    })?;
    let connect_time = started.elapsed();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;

    let reserved = Reserved::NONE
        .with(ReservedFlag::ExtensionProtocol, true)
        .with(ReservedFlag::Fast, true);
    let ours = Handshake::new(reserved, info_hash, ringtorrent::client::random_peer_id());
    stream
        .write_all(&ours.to_bytes())
        .map_err(|e| anyhow!("cannot send the handshake to {addr}: {e}"))?;

    let mut buf = Vec::with_capacity(64 * 1024);
    let handshake = loop {
        match Handshake::decode(SplitBytes::single(&buf)).map_err(|e| anyhow!("{addr} is {e}"))? {
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

    let mut report = Report {
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
    report: &mut Report,
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
fn note(msg: &Message<'_>, piece_count: Option<u32>, report: &mut Report) -> String {
    let set = |report: &mut Report, how, have| {
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

fn reserved_names(r: &Reserved) -> Vec<String> {
    r.bits().map(|b| b.to_string()).collect()
}

fn to_json(r: &Report) -> serde_json::Value {
    let hs = &r.handshake;
    let ext = r.extended.as_ref().map(|e| {
        json!({
            "v": e.client,
            "p": e.listen_port,
            "reqq": e.request_queue,
            "metadata_size": e.metadata_size,
            "upload_only": e.upload_only,
            "yourip": e.your_ip.map(|ip| ip.to_string()),
            "ipv4": e.ipv4.map(|ip| ip.to_string()),
            "ipv6": e.ipv6.map(|ip| ip.to_string()),
            "m": e.extensions,
        })
    });
    json!({
        "address": r.addr.to_string(),
        "connect_ms": r.connect_time.as_secs_f64() * 1000.0,
        "info_hash": hs.info_hash.to_hex(),
        "peer_id": {
            "hex": hs.peer_id.to_hex(),
            "printable": hs.peer_id.printable(),
            "client": hs.peer_id.client(),
        },
        "reserved": {
            "hex": ringtorrent::core::hex::encode(hs.reserved.as_bytes()),
            "dht": hs.reserved.contains(ReservedFlag::Dht),
            "fast": hs.reserved.contains(ReservedFlag::Fast),
            "extension_protocol": hs.reserved.contains(ReservedFlag::ExtensionProtocol),
            "bits": reserved_names(&hs.reserved),
        },
        "extended_handshake": ext,
        "pieces": r.pieces.as_ref().map(|p| json!({"how": p.how, "have": p.have, "total": p.total})),
        "messages": r.messages,
    })
}

fn print_text(r: &Report) {
    let hs = &r.handshake;
    outln!(
        "peer:         {} (connected in {:.1} ms)",
        r.addr,
        r.connect_time.as_secs_f64() * 1000.0
    );
    outln!("peer id:      {}", hs.peer_id.printable());
    outln!("peer id hex:  {}", hs.peer_id.to_hex());
    if let Some(client) = hs.peer_id.client() {
        outln!("client:       {client}");
    }
    let bits = reserved_names(&hs.reserved);
    outln!(
        "reserved:     {} ({})",
        ringtorrent::core::hex::encode(hs.reserved.as_bytes()),
        if bits.is_empty() {
            "no extensions".to_owned()
        } else {
            bits.join(", ")
        }
    );
    match &r.extended {
        Some(e) => {
            outln!("extension handshake (BEP 10):");
            if let Some(v) = &e.client {
                outln!("  client:         {v}");
            }
            if let Some(p) = e.listen_port {
                outln!("  listen port:    {p}");
            }
            if let Some(q) = e.request_queue {
                outln!("  request queue:  {q}");
            }
            if let Some(m) = e.metadata_size {
                outln!("  metadata size:  {m} bytes");
            }
            if let Some(ip) = e.your_ip {
                outln!("  sees us at:     {ip}");
            }
            if let Some(u) = e.upload_only {
                outln!("  upload only:    {}", if u { "yes" } else { "no" });
            }
            let m: Vec<String> = e
                .extensions
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            outln!(
                "  extensions:     {}",
                if m.is_empty() {
                    "none".to_owned()
                } else {
                    m.join(", ")
                }
            );
        }
        None if hs.reserved.contains(ReservedFlag::ExtensionProtocol) => {
            outln!("extension handshake (BEP 10): offered but not received")
        }
        None => outln!("extension handshake (BEP 10): not offered"),
    }
    match &r.pieces {
        Some(Pieces {
            how,
            have,
            total: Some(total),
        }) => outln!("pieces:       {have} of {total} ({how})"),
        Some(Pieces {
            how,
            have,
            total: None,
        }) => outln!("pieces:       {have} ({how})"),
        None => outln!("pieces:       not announced"),
    }
    if !r.messages.is_empty() {
        outln!("messages:     {}", r.messages.join(", "));
    }
}
