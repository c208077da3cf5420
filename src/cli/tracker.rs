//! `ringtorrent announce` and `ringtorrent scrape`: one-shot tracker exchanges for people
//! debugging trackers. (Torrents the engine runs are announced by the library's client.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use ringtorrent::core::Time;
use ringtorrent::metainfo::Torrent;
use ringtorrent::tracker::{
    AnnounceEvent, Announcer, Mode, Progress, TrackerConfig, TrackerEvent, TrackerIo,
};

/// `--event` of `announce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventArg {
    /// A regular announce (no event).
    None,
    /// `started`.
    Started,
    /// `completed`.
    Completed,
    /// `stopped` (the tracker forgets this address and port).
    Stopped,
}

/// Options both commands share.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The .torrent file.
    torrent: PathBuf,
    /// Use this tracker instead of the torrent's (repeatable; all in one tier).
    #[arg(long = "tracker", value_name = "URL")]
    trackers: Vec<String>,
    /// Print one JSON object instead of text, for scripts.
    #[arg(long)]
    json: bool,
    /// UDP: wait this long for the first reply, doubled after each retransmission (BEP 15
    /// says 15 s).
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    udp_timeout_ms: u64,
    /// UDP: retransmissions of one request before trying the next tracker.
    #[arg(long, default_value_t = 2)]
    retransmits: u32,
    /// HTTP: time allowed for one exchange.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    http_timeout_ms: u64,
    /// HTTPS: also trust the CA certificates in this PEM file (besides the Mozilla roots).
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AnnounceArgs {
    #[command(flatten)]
    common: Common,
    /// The announce's event.
    #[arg(long, value_enum, default_value_t = EventArg::Started)]
    event: EventArg,
    /// The port to announce (where peers would reach us).
    #[arg(long, default_value_t = 6881)]
    port: u16,
    /// Bytes left to announce (default: the whole torrent, i.e. a fresh leecher; 0 for a
    /// seeder).
    #[arg(long)]
    left: Option<u64>,
    /// How many peers to ask for.
    #[arg(long, default_value_t = 50)]
    numwant: u32,
}

#[derive(Debug, clap::Args)]
pub struct ScrapeArgs {
    #[command(flatten)]
    common: Common,
}

fn load(path: &Path) -> Result<Torrent> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Torrent::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", path.display()))
}

fn tiers(common: &Common, torrent: &Torrent) -> Result<Vec<Vec<String>>> {
    let tiers = if common.trackers.is_empty() {
        torrent.trackers.clone()
    } else {
        vec![common.trackers.clone()]
    };
    if tiers.is_empty() {
        bail!("the torrent names no tracker (give one with --tracker URL)");
    }
    Ok(tiers)
}

fn config(common: &Common) -> TrackerConfig {
    TrackerConfig {
        udp_timeout: Duration::from_millis(common.udp_timeout_ms.max(1)),
        udp_max_retransmits: common.retransmits,
        http_timeout: Duration::from_millis(common.http_timeout_ms.max(1)),
        ..TrackerConfig::default()
    }
}

/// Runs a one-shot announcer to its end, returning every event it produced.
fn run_once(announcer: &mut Announcer, common: &Common) -> Result<Vec<TrackerEvent>> {
    let mut io = TrackerIo::new().context("cannot open a UDP socket")?;
    if let Some(path) = &common.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        io.add_ca_pem(&pem)
            .with_context(|| format!("{} holds no usable certificate", path.display()))?;
    }
    Ok(io.run_to_end(announcer))
}

fn errors_json(events: &[TrackerEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| match e {
            TrackerEvent::Error { url, error } => {
                Some(json!({ "tracker": url, "error": error.to_string() }))
            }
            _ => None,
        })
        .collect()
}

fn print_errors(events: &[TrackerEvent]) {
    for e in events {
        match e {
            TrackerEvent::Error { url, error } => outln!("{url}: failed: {error}"),
            TrackerEvent::Warning { url, message } => outln!("{url}: warning: {message}"),
            _ => {}
        }
    }
}

pub fn announce(args: AnnounceArgs) -> Result<()> {
    let torrent = load(&args.common.torrent)?;
    let tiers = tiers(&args.common, &torrent)?;
    let event = match args.event {
        EventArg::None => AnnounceEvent::None,
        EventArg::Started => AnnounceEvent::Started,
        EventArg::Completed => AnnounceEvent::Completed,
        EventArg::Stopped => AnnounceEvent::Stopped,
    };
    let left = args.left.unwrap_or(torrent.info.total_len());
    let mut config = config(&args.common);
    config.numwant = args.numwant;
    let mut announcer = Announcer::new(
        config,
        Mode::Once(event),
        torrent.info.info_hash(),
        ringtorrent::client::random_peer_id(),
        args.port,
        &tiers,
        Progress {
            uploaded: 0,
            downloaded: 0,
            left,
        },
        ringtorrent::client::random_u64(),
        Time::ZERO,
    );
    let events = run_once(&mut announcer, &args.common)?;
    let answer = events.iter().find_map(|e| match e {
        TrackerEvent::Announced { url, response, .. } => Some((url, response)),
        _ => None,
    });
    if args.common.json {
        let mut out = json!({
            "info_hash": torrent.info.info_hash().to_hex(),
            "event": event.name(),
            "errors": errors_json(&events),
            "tracker": null,
        });
        if let Some((url, r)) = answer {
            out["tracker"] = json!(url);
            out["interval"] = json!(r.interval.as_secs());
            out["min_interval"] = json!(r.min_interval.map(|d| d.as_secs()));
            out["seeders"] = json!(r.seeders);
            out["leechers"] = json!(r.leechers);
            out["warning"] = json!(r.warning);
            out["tracker_id"] = json!(r.tracker_id.as_ref().map(|t| String::from_utf8_lossy(t)));
            out["peers"] = json!(r
                .peers
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>());
        }
        outln!("{out}");
    } else {
        print_errors(&events);
        if let Some((url, r)) = answer {
            outln!("{url}: announce ({}) answered", event.name());
            let min = r.min_interval.map_or(String::new(), |m| {
                format!(", min interval {} s", m.as_secs())
            });
            outln!("  interval {} s{min}", r.interval.as_secs());
            let count = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
            outln!(
                "  seeders {}, leechers {}",
                count(r.seeders),
                count(r.leechers)
            );
            if let Some(id) = &r.tracker_id {
                outln!("  tracker id {}", String::from_utf8_lossy(id));
            }
            outln!("  {} peers", r.peers.len());
            for p in &r.peers {
                outln!("    {p}");
            }
        }
    }
    if answer.is_none() {
        bail!("no tracker answered");
    }
    Ok(())
}

pub fn scrape(args: ScrapeArgs) -> Result<()> {
    let torrent = load(&args.common.torrent)?;
    let tiers = tiers(&args.common, &torrent)?;
    let hash = torrent.info.info_hash();
    let mut announcer = Announcer::new(
        config(&args.common),
        Mode::Scrape(vec![hash]),
        hash,
        ringtorrent::client::random_peer_id(),
        0,
        &tiers,
        Progress::default(),
        ringtorrent::client::random_u64(),
        Time::ZERO,
    );
    let events = run_once(&mut announcer, &args.common)?;
    let answer = events.iter().find_map(|e| match e {
        TrackerEvent::Scraped { url, stats } => {
            Some((url, stats.iter().find(|(h, _)| *h == hash).map(|(_, s)| *s)))
        }
        _ => None,
    });
    if args.common.json {
        let mut out = json!({
            "info_hash": hash.to_hex(),
            "errors": errors_json(&events),
            "tracker": null,
        });
        if let Some((url, stats)) = answer {
            out["tracker"] = json!(url);
            out["known"] = json!(stats.is_some());
            let s = stats.unwrap_or_default();
            out["seeders"] = json!(s.seeders);
            out["completed"] = json!(s.completed);
            out["leechers"] = json!(s.leechers);
        }
        outln!("{out}");
    } else {
        print_errors(&events);
        match answer {
            Some((url, Some(s))) => outln!(
                "{url}: seeders {}, completed {}, leechers {}",
                s.seeders,
                s.completed,
                s.leechers
            ),
            Some((url, None)) => outln!("{url}: the tracker does not know this torrent"),
            None => {}
        }
    }
    if answer.is_none() {
        bail!("no tracker answered");
    }
    Ok(())
}
