//! `ringtorrent info`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::format;
use ringtorrent::metainfo::{Magnet, Torrent};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .torrent file, or a magnet link (quote it in the shell).
    input: String,
    /// Print one JSON object instead of text, for scripts.
    #[arg(long)]
    json: bool,
    /// For a magnet link: a peer to fetch the metadata from, HOST:PORT. Repeatable. With a
    /// peer here, in the link's `x.pe`, or with `--fetch`, the metadata is fetched (BEP 9)
    /// and shown as for a .torrent file.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// For a magnet link: fetch the metadata from its peers, trackers (`tr`) and the DHT.
    #[arg(long)]
    fetch: bool,
    /// Seconds to wait for the metadata.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// For a magnet link: protocol encryption of the connections that fetch the metadata
    /// (prefer, require or plaintext).
    #[arg(long, value_name = "POLICY", default_value_t = ringtorrent::core::Encryption::Prefer)]
    encryption: ringtorrent::core::Encryption,
    /// For a magnet link with `--fetch`: the DHT finds its peers too (as for `download`).
    #[command(flatten)]
    dht: super::dht::DhtArgs,
}

pub fn run(args: Args) -> Result<()> {
    if args.input.starts_with("magnet:") {
        let magnet = Magnet::parse(&args.input).context("invalid magnet link")?;
        let peers = super::transfer::resolve(&args.peers)?;
        if peers.is_empty() && ringtorrent::client::magnet_peers(&magnet).is_empty() && !args.fetch
        {
            print_magnet(&magnet, args.json);
            return Ok(());
        }
        let timeout = std::time::Duration::from_secs(args.timeout);
        let dht = args.dht.settings(None);
        let info = fetch_metadata(&args.input, peers, timeout, args.encryption, dht)
            .context("cannot fetch the metadata")?;
        let torrent = Torrent {
            info: (*info).clone(),
            trackers: if magnet.trackers.is_empty() {
                Vec::new()
            } else {
                vec![magnet.trackers.clone()]
            },
            url_list: magnet.web_seeds.clone(),
            nodes: Vec::new(),
            comment: None,
            created_by: None,
            creation_date: None,
        };
        if args.json {
            outln!("{}", torrent_json(&torrent));
        } else {
            print_torrent(&torrent);
        }
        return Ok(());
    }
    let path = Path::new(&args.input);
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let torrent = Torrent::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", path.display()))?;
    if args.json {
        outln!("{}", torrent_json(&torrent));
    } else {
        print_torrent(&torrent);
    }
    Ok(())
}

/// Fetches a magnet link's metadata from `peers`, the link's own and its trackers, with a
/// client that accepts no connections and opens no storage.
fn fetch_metadata(
    uri: &str,
    peers: Vec<std::net::SocketAddr>,
    timeout: std::time::Duration,
    encryption: ringtorrent::core::Encryption,
    dht: ringtorrent::client::DhtSettings,
) -> Result<std::sync::Arc<ringtorrent::metainfo::Info>> {
    use ringtorrent::client::{AddTorrent, ClientConfig};
    super::signals::catch();
    let client = super::transfer::start_client(ClientConfig {
        listen: None,
        loops: 1,
        encryption,
        dht,
        ..ClientConfig::default()
    })?;
    let events = client.subscribe();
    let torrent = client.add(AddTorrent::magnet(uri).peers(peers).metadata_only())?;
    let deadline = std::time::Instant::now() + timeout;
    let info = super::transfer::wait_metadata(&torrent, &events, Some(deadline), false);
    client.shutdown();
    info
}

fn torrent_json(t: &Torrent) -> serde_json::Value {
    let info = &t.info;
    let files: Vec<_> = info
        .files()
        .iter()
        .map(|f| {
            let mut file = json!({"path": f.display_path(), "length": f.length, "offset": f.offset, "padding": f.attr.padding});
            // Only where they differ: what the torrent says, and what a symlink points to.
            if let Some(given) = &f.given_path {
                file["given_path"] = json!(given);
            }
            if f.attr.symlink {
                file["symlink_target"] = json!(f.symlink_target.as_ref().map(|t| t.join("/")));
            }
            file
        })
        .collect();
    json!({
        "name": info.name(),
        "given_name": info.given_name(),
        "info_hash": info.version().has_v1().then(|| info.info_hash().to_hex()),
        "info_hash_v2": info.info_hash_v2().map(|h| h.to_hex()),
        "meta_version": info.version().as_str(),
        "total_length": info.total_len(),
        "piece_length": info.lengths().piece_len(),
        "piece_count": info.lengths().piece_count(),
        "last_piece_length": info.lengths().last_piece_len(),
        "single_file": info.is_single_file(),
        "private": info.is_private(),
        "source": info.source(),
        "files": files,
        "trackers": t.trackers,
        "url_list": t.url_list,
        "comment": t.comment,
        "created_by": t.created_by,
        "creation_date": t.creation_date,
    })
}

fn print_torrent(t: &Torrent) {
    let info = &t.info;
    let l = info.lengths();
    outln!("name:         {}", info.name());
    if let Some(given) = info.given_name() {
        outln!("  (given as   {given:?})");
    }
    if info.version().has_v1() {
        outln!("info hash:    {}", info.info_hash());
    }
    if let Some(v2) = info.info_hash_v2() {
        outln!("info hash v2: {v2}");
    }
    outln!("version:      {}", info.version().as_str());
    if info.v2().is_some_and(|v2| !v2.has_piece_layers()) {
        outln!("piece layers: missing (to be fetched from peers)");
    }
    outln!(
        "size:         {} ({} bytes)",
        format::bytes(info.total_len()),
        info.total_len()
    );
    outln!(
        "pieces:       {} of {} (last {})",
        l.piece_count(),
        format::bytes(u64::from(l.piece_len())),
        format::bytes(u64::from(l.last_piece_len()))
    );
    outln!(
        "private:      {}",
        if info.is_private() { "yes" } else { "no" }
    );
    if let Some(source) = info.source() {
        outln!("source:       {source}");
    }
    if let Some(by) = &t.created_by {
        outln!("created by:   {by}");
    }
    if let Some(date) = t.creation_date {
        outln!("created:      {}", format::unix_time(date));
    }
    if let Some(comment) = &t.comment {
        outln!("comment:      {comment}");
    }
    if t.trackers.is_empty() {
        outln!("trackers:     none (trackerless)");
    } else {
        outln!("trackers:");
        for (i, tier) in t.trackers.iter().enumerate() {
            outln!("  tier {}:     {}", i + 1, tier.join(", "));
        }
    }
    if !t.url_list.is_empty() {
        outln!("web seeds:    {}", t.url_list.join(", "));
    }
    let real: Vec<_> = info.files().iter().filter(|f| !f.attr.padding).collect();
    let padding = info.files().len() - real.len();
    if padding > 0 {
        outln!("files:        {} (+{padding} padding)", real.len());
    } else {
        outln!("files:        {}", real.len());
    }
    for f in real {
        let mut line = format!("  {:>12}  {}", format::bytes(f.length), f.display_path());
        if f.attr.symlink {
            match &f.symlink_target {
                Some(target) => line.push_str(&format!(" -> {}", target.join("/"))),
                None => line.push_str(" -> (not in the torrent)"),
            }
        }
        if let Some(given) = f.display_given_path() {
            line.push_str(&format!("  (given as {given})"));
        }
        outln!("{line}");
    }
}

fn print_magnet(m: &Magnet, json: bool) {
    let peers: Vec<String> = m.peers.iter().map(ToString::to_string).collect();
    if json {
        let value = json!({
            "name": m.display_name,
            "info_hash": (!m.is_v2_only()).then(|| m.info_hash.to_hex()),
            "info_hash_v2": m.info_hash_v2.map(|h| h.to_hex()),
            "trackers": m.trackers,
            "peers": peers,
            "web_seeds": m.web_seeds,
            "exact_length": m.exact_length,
        });
        outln!("{value}");
        return;
    }
    outln!(
        "name:         {}",
        m.display_name.as_deref().unwrap_or("(none given)")
    );
    if !m.is_v2_only() {
        outln!("info hash:    {}", m.info_hash);
    }
    if let Some(v2) = m.info_hash_v2 {
        outln!("info hash v2: {v2}");
    }
    match m.exact_length {
        Some(len) => outln!("size:         {} ({len} bytes)", format::bytes(len)),
        None => outln!("size:         unknown until the metadata is fetched from peers"),
    }
    if m.trackers.is_empty() {
        outln!("trackers:     none");
    } else {
        outln!("trackers:");
        m.trackers.iter().for_each(|t| outln!("  {t}"));
    }
    if !peers.is_empty() {
        outln!("peers:        {}", peers.join(", "));
    }
    if !m.web_seeds.is_empty() {
        outln!("web seeds:    {}", m.web_seeds.join(", "));
    }
}
