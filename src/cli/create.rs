//! `ringtorrent create`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::format;
use ringtorrent::metainfo::create::{create, CreateOptions};
use ringtorrent::metainfo::MetaVersion;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file or folder to share.
    path: PathBuf,
    /// Tracker announce URL. Repeat for backup tiers; separate URLs with commas to put them
    /// in one tier (as mktorrent does). None makes a trackerless torrent.
    #[arg(short = 'a', long = "announce", value_name = "URL[,URL...]")]
    announce: Vec<String>,
    /// Piece length in bytes, a power of two from 16K to 64M (e.g. 262144, 256K, 1M).
    /// Default: picked from the total size, aiming at 1000 to 2000 pieces.
    #[arg(short = 'l', long, value_name = "SIZE", value_parser = format::parse_size)]
    piece_length: Option<u64>,
    /// Mark the torrent private (BEP 27): peers only from its trackers.
    #[arg(short = 'p', long)]
    private: bool,
    /// Where to write the torrent. Default: `<name>.torrent` in the current folder.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite the output file if it exists.
    #[arg(short = 'f', long)]
    force: bool,
    /// A comment to store in the torrent.
    #[arg(short = 'c', long)]
    comment: Option<String>,
    /// A `source` tag for the info dictionary (private trackers use it; it changes the hash).
    #[arg(short = 's', long)]
    source: Option<String>,
    /// Web seed URL (BEP 19). Repeatable.
    #[arg(short = 'w', long = "web-seed", value_name = "URL")]
    web_seeds: Vec<String>,
    /// Leave out the creation date, so the same input always gives the same file.
    #[arg(short = 'd', long)]
    no_date: bool,
    /// Make a BitTorrent v2-only torrent (BEP 52: SHA-256 merkle trees per file), the
    /// info dictionary libtorrent 2.0 writes. Only v2 clients can use it.
    #[arg(long, conflicts_with = "hybrid")]
    v2: bool,
    /// Make a hybrid torrent (BEP 52): v1 and v2 in one info dictionary, with padding files
    /// so that every file starts on a piece boundary, as libtorrent 2.0 and qBittorrent make
    /// them. Reachable by v1 and v2 clients. Default: a v1 torrent, as mktorrent makes.
    #[arg(long)]
    hybrid: bool,
}

pub fn run(args: Args) -> Result<()> {
    let trackers = args
        .announce
        .iter()
        .map(|tier| {
            tier.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let creation_date = if args.no_date {
        None
    } else {
        Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        )
    };
    let opts = CreateOptions {
        path: args.path.clone(),
        trackers,
        piece_len: args.piece_length,
        private: args.private,
        comment: args.comment,
        source: args.source,
        web_seeds: args.web_seeds,
        creation_date,
        version: match (args.v2, args.hybrid) {
            (true, _) => MetaVersion::V2,
            (_, true) => MetaVersion::Hybrid,
            _ => MetaVersion::V1,
        },
    };

    let progress = AtomicU64::new(0);
    let bar = ProgressBar::hidden();
    let created = std::thread::scope(|scope| {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (opts, progress) = (&opts, &progress);
        scope.spawn(move || {
            let _ = done_tx.send(create(opts, progress));
        });
        // The total is unknown until the folder is scanned; show bytes hashed as they come.
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("hashing {bytes} ({bytes_per_sec}) {elapsed}")
                .expect("valid template"),
        );
        // Wake on completion at once, or every 100 ms to redraw.
        let result = loop {
            match done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(result) => break result,
                Err(_) => bar.set_position(progress.load(Ordering::Relaxed)),
            }
        };
        bar.finish_and_clear();
        result
    })
    .with_context(|| format!("cannot make a torrent from {}", args.path.display()))?;

    let info = &created.torrent.info;
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", info.name())));
    if output.exists() && !args.force {
        bail!("{} exists; use --force to overwrite it", output.display());
    }
    std::fs::write(&output, &created.bytes)
        .with_context(|| format!("cannot write {}", output.display()))?;
    outln!("wrote {}", output.display());
    if info.version().has_v1() {
        outln!("info hash:  {}", info.info_hash());
    }
    if let Some(v2) = info.info_hash_v2() {
        outln!("info hash v2: {v2}");
    }
    let real_files = info.files().iter().filter(|f| !f.attr.padding).count();
    outln!(
        "size:       {} in {} file{}, {} pieces of {}",
        format::bytes(info.total_len()),
        real_files,
        if real_files == 1 { "" } else { "s" },
        info.lengths().piece_count(),
        format::bytes(u64::from(info.lengths().piece_len())),
    );
    Ok(())
}
