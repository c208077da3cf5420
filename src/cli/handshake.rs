//! `ringtorrent handshake`: a one-shot debugging tool. The library's
//! [`ringtorrent::client::probe_peer`] connects to one peer, exchanges handshakes and
//! listens briefly for what the peer volunteers; this prints what it found.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use ringtorrent::client::{probe_peer, PeerProbe as Report, Pieces};
use ringtorrent::core::wire::{Reserved, ReservedFlag};
use ringtorrent::core::InfoHash;
use ringtorrent::limits::HANDSHAKE_TIMEOUT_SECS;
use ringtorrent::metainfo::{Magnet, Torrent};

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

pub fn run(args: Args) -> Result<()> {
    let (info_hash, piece_count) = target(&args.torrent)?;
    let addr = resolve(&args.peer)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let report = probe_peer(addr, info_hash, piece_count, timeout)?;
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
