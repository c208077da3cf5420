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
    /// For a magnet link: fetch the metadata from its peers and trackers (`tr`).
    #[arg(long)]
    fetch: bool,
    /// Seconds to wait for the metadata.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

pub fn run(args: Args) -> Result<()> {
    if args.input.starts_with("magnet:") {
        let magnet = Magnet::parse(&args.input).context("invalid magnet link")?;
        let mut peers = super::transfer::resolve(&args.peers)?;
        peers.extend(super::transfer::magnet_peers(&magnet));
        if peers.is_empty() && !args.fetch {
            print_magnet(&magnet, args.json);
            return Ok(());
        }
        let timeout = std::time::Duration::from_secs(args.timeout);
        let info = super::transfer::fetch_metadata(&magnet, &peers, timeout)
            .context("cannot fetch the metadata")?;
        let torrent = Torrent {
            info: (*info).clone(),
            trackers: if magnet.trackers.is_empty() {
                Vec::new()
            } else {
                vec![magnet.trackers.clone()]
            },
            url_list: magnet.web_seeds.clone(),
            comment: None,
            created_by: None,
            creation_date: None,
        };
        if args.json {
            println!("{}", torrent_json(&torrent));
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
        println!("{}", torrent_json(&torrent));
    } else {
        print_torrent(&torrent);
    }
    Ok(())
}

fn torrent_json(t: &Torrent) -> serde_json::Value {
    let info = &t.info;
    let files: Vec<_> = info
        .files()
        .iter()
        .map(|f| json!({"path": f.display_path(), "length": f.length, "offset": f.offset, "padding": f.attr.padding}))
        .collect();
    json!({
        "name": info.name(),
        "info_hash": info.info_hash().to_hex(),
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
    println!("name:         {}", info.name());
    println!("info hash:    {}", info.info_hash());
    println!(
        "size:         {} ({} bytes)",
        format::bytes(info.total_len()),
        info.total_len()
    );
    println!(
        "pieces:       {} of {} (last {})",
        l.piece_count(),
        format::bytes(u64::from(l.piece_len())),
        format::bytes(u64::from(l.last_piece_len()))
    );
    println!(
        "private:      {}",
        if info.is_private() { "yes" } else { "no" }
    );
    if let Some(source) = info.source() {
        println!("source:       {source}");
    }
    if let Some(by) = &t.created_by {
        println!("created by:   {by}");
    }
    if let Some(date) = t.creation_date {
        println!("created:      {}", format::unix_time(date));
    }
    if let Some(comment) = &t.comment {
        println!("comment:      {comment}");
    }
    if t.trackers.is_empty() {
        println!("trackers:     none (trackerless)");
    } else {
        println!("trackers:");
        for (i, tier) in t.trackers.iter().enumerate() {
            println!("  tier {}:     {}", i + 1, tier.join(", "));
        }
    }
    if !t.url_list.is_empty() {
        println!("web seeds:    {}", t.url_list.join(", "));
    }
    let real: Vec<_> = info.files().iter().filter(|f| !f.attr.padding).collect();
    let padding = info.files().len() - real.len();
    if padding > 0 {
        println!("files:        {} (+{padding} padding)", real.len());
    } else {
        println!("files:        {}", real.len());
    }
    for f in real {
        println!("  {:>12}  {}", format::bytes(f.length), f.display_path());
    }
}

fn print_magnet(m: &Magnet, json: bool) {
    let peers: Vec<String> = m.peers.iter().map(ToString::to_string).collect();
    if json {
        let value = json!({
            "name": m.display_name,
            "info_hash": m.info_hash.to_hex(),
            "trackers": m.trackers,
            "peers": peers,
            "web_seeds": m.web_seeds,
            "exact_length": m.exact_length,
        });
        println!("{value}");
        return;
    }
    println!(
        "name:         {}",
        m.display_name.as_deref().unwrap_or("(none given)")
    );
    println!("info hash:    {}", m.info_hash);
    match m.exact_length {
        Some(len) => println!("size:         {} ({len} bytes)", format::bytes(len)),
        None => println!("size:         unknown until the metadata is fetched from peers"),
    }
    if m.trackers.is_empty() {
        println!("trackers:     none");
    } else {
        println!("trackers:");
        m.trackers.iter().for_each(|t| println!("  {t}"));
    }
    if !peers.is_empty() {
        println!("peers:        {}", peers.join(", "));
    }
    if !m.web_seeds.is_empty() {
        println!("web seeds:    {}", m.web_seeds.join(", "));
    }
}
