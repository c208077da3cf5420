//! `ringtorrent swarm-load`: `gen` writes a pattern torrent and its data; `run` points
//! synthetic peers at a client and reports what it did under them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::format;
use super::tracker_load::{emit, parse_shard};
use super::transfer::{backend, load_torrent, Io};
use ringtorrent::load::is_loopback_target;
use ringtorrent::load::swarm::{self, pattern, Mode, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write a torrent and its pattern data (every byte a function of its offset, so the
    /// generator never reads disk and checks what it receives without storing it).
    ///
    /// Example: ringtorrent swarm-load gen --size 1024 --piece-length 1M -o /dev/shm/load
    Gen(GenArgs),
    /// Run synthetic peers against a client: seeds (upload), leechers (download) or both.
    ///
    /// Example: ringtorrent swarm-load run --target 127.0.0.1:6881 --torrent t.torrent \
    ///          --mode download --peers 1000 --source-ips 127.0.0.2-127.0.0.254
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct GenArgs {
    /// Payload size in MiB.
    #[arg(long, value_name = "MB")]
    size: u64,
    /// Piece length (16K to 16M, a power of two).
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = format::parse_size)]
    piece_length: u64,
    /// Split the payload into this many files under a folder.
    #[arg(long, default_value_t = 1)]
    files: usize,
    /// Folder to write `swarm-load.torrent` and `data/` into.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Upload,
    Download,
    Dual,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The client under test, HOST:PORT (loopback unless --allow-remote).
    #[arg(long)]
    target: String,
    /// The torrent the client seeds or leeches (from `swarm-load gen`).
    #[arg(long)]
    torrent: PathBuf,
    /// upload: the peers seed and the target leeches; download: the peers leech from the
    /// target; dual: half and half.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Synthetic peers (across all shards).
    #[arg(long, default_value_t = 100)]
    peers: usize,
    /// Run for this many seconds (leechers start over after each full pass). Without it, the
    /// run ends when every leecher has everything and the target has every piece.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Give up after this many seconds in any case.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    timeout: f64,
    /// Requests each leecher keeps in flight.
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// Reconnect after this many blocks on a connection.
    #[arg(long, value_name = "K")]
    churn_blocks: Option<u64>,
    /// Share of the seeding peers (0 to 1, at least one when above 0) that corrupt every
    /// block they serve: the target must reject those blocks and ban those peers.
    #[arg(long, default_value_t = 0.0)]
    corrupt_rate: f64,
    /// Share of the leeching peers (0 to 1, at least one when above 0) that send their first
    /// requests and then never read their socket: the target's send queues for them fill
    /// and stay full (they send keep-alives so that it keeps them). They do not count
    /// towards the end of a run without --duration.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    slow_readers: f64,
    /// Local addresses to connect from, in turn: a range A-B (IPv4) or a list A,B,...
    /// Spread many peers over addresses: clients cap connections per address (ringtorrent
    /// takes 8 from one IP per torrent by default, `--max-peers-per-ip`).
    #[arg(long, value_name = "RANGE")]
    source_ips: Option<String>,
    /// Run part I of N of the peers (from several processes or machines); merge the JSON
    /// reports with `report merge`.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Dials in progress at once.
    #[arg(long, default_value_t = 256)]
    max_half_open: usize,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Seed for the peers' choices (piece orders, corrupted blocks).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report here.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Allow a target outside loopback.
    #[arg(long)]
    allow_remote: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Gen(a) => gen(a),
        Command::Run(a) => run_load(a),
    }
}

fn gen(a: GenArgs) -> Result<()> {
    let size = a
        .size
        .checked_mul(1 << 20)
        .ok_or_else(|| anyhow!("--size {} MiB is too large", a.size))?;
    let g = pattern::gen(&a.dir, size, a.piece_length, a.files).map_err(|e| anyhow!(e))?;
    outln!(
        "wrote {} ({} in {} file(s), {} pieces) and its data under {}",
        g.torrent_path.display(),
        format::bytes(size),
        g.torrent.info.files().len(),
        g.torrent.info.lengths().piece_count(),
        g.data_dir.display()
    );
    Ok(())
}

/// `A-B` (IPv4, inclusive) or `A,B,...`.
fn parse_ips(text: &str) -> Result<Vec<IpAddr>> {
    if let Some((a, b)) = text.split_once('-') {
        let (a, b): (Ipv4Addr, Ipv4Addr) = (
            a.trim()
                .parse()
                .context("--source-ips: bad start address")?,
            b.trim().parse().context("--source-ips: bad end address")?,
        );
        let (a, b) = (u32::from(a), u32::from(b));
        if a > b || b - a >= 1 << 16 {
            bail!("--source-ips: need A <= B and at most 65536 addresses");
        }
        return Ok((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect());
    }
    text.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("--source-ips: `{s}` is not an address"))
        })
        .collect()
}

fn run_load(a: RunArgs) -> Result<()> {
    let target: SocketAddr = a
        .target
        .to_socket_addrs()
        .with_context(|| format!("--target `{}` is not HOST:PORT", a.target))?
        .next()
        .ok_or_else(|| anyhow!("--target `{}` has no address", a.target))?;
    if !is_loopback_target(&target) && !a.allow_remote {
        bail!("--target {target} is not on loopback; pass --allow-remote to load it anyway");
    }
    if !(0.0..=1.0).contains(&a.corrupt_rate) {
        bail!("--corrupt-rate must be between 0 and 1");
    }
    if !(0.0..=1.0).contains(&a.slow_readers) {
        bail!("--slow-readers must be between 0 and 1");
    }
    let source_ips = a
        .source_ips
        .as_deref()
        .map(parse_ips)
        .transpose()?
        .unwrap_or_default();
    if source_ips.iter().any(|ip| !ip.is_loopback()) && !a.allow_remote {
        bail!("--source-ips must be loopback addresses unless --allow-remote is given");
    }
    let info = load_torrent(&a.torrent)?;
    let opts = Options {
        target,
        info: Arc::clone(&info),
        mode: match a.mode {
            ModeArg::Upload => Mode::Upload,
            ModeArg::Download => Mode::Download,
            ModeArg::Dual => Mode::Dual,
        },
        peers: a.peers.max(1),
        duration: a.duration.map(Duration::from_secs_f64),
        timeout: Duration::from_secs_f64(a.timeout.max(0.1)),
        pipeline: a.pipeline.max(1),
        churn_blocks: a.churn_blocks.filter(|&k| k > 0),
        corrupt_rate: a.corrupt_rate,
        slow_readers: a.slow_readers,
        source_ips,
        shard: a.shard.as_deref().map(parse_shard).transpose()?,
        max_half_open: a.max_half_open.max(1),
        backend: backend(a.io)?,
        seed: a.seed,
    };
    let quiet = a.json;
    let report = swarm::run(&opts, |p| {
        if !quiet {
            let stalled = if p.stalled > 0 {
                format!("  {} stalled", p.stalled)
            } else {
                String::new()
            };
            eprintln!(
                "{:6.1} s  down {}  up {}  {} connected{stalled}",
                p.elapsed,
                format::bytes(p.down),
                format::bytes(p.up),
                p.connected
            );
        }
    })
    .context("the load run failed")?;
    emit(&report, a.json, a.output.as_ref())
}
