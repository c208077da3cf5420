//! `ringtorrent download` and `ringtorrent seed`: arguments, and progress on the terminal.
//! The engine is the library's [`Client`]; this file only says what to add and shows what
//! happens.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use super::driver::{backend, Io};
use super::format;
use super::signals::{self, Interrupted};
use ringtorrent::client::{
    AddTorrent, Client, ClientConfig, ClientEvent, DataSource, Events, FileStatus, Limits,
    TorrentHandle,
};
use ringtorrent::client::{Allocation, Transport};
use ringtorrent::core::Encryption;
use ringtorrent::metainfo::{Info, Torrent};

#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// The .torrent file, or a magnet link (quote it in the shell): its metadata is fetched
    /// from the link's peers (`x.pe`), `--peer`s and trackers (`tr`) first.
    torrent: PathBuf,
    /// Folder to download into (the torrent's files and folders are created inside it).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    dir: PathBuf,
    /// A peer to connect to, HOST:PORT. Repeatable.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Keep seeding after the download completes (until interrupted).
    #[arg(long)]
    seed: bool,
    /// Port to accept peers on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Give up after this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Download only these files: indices counted from 0 in the order `info` lists them
    /// (padding files not counted), comma-separated, ranges allowed: `0,2-4`.
    #[arg(long, value_name = "LIST", value_parser = parse_file_list)]
    files: Option<FileList>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// `--files`: inclusive ranges of file indices.
#[derive(Debug, Clone)]
pub struct FileList(Vec<(usize, usize)>);

fn parse_file_list(s: &str) -> Result<FileList, String> {
    let mut ranges = Vec::new();
    for part in s.split(',').map(str::trim) {
        let num = |n: &str| {
            n.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{part}` is not a file index or a range like 2-4"))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if a > b {
            return Err(format!("`{part}`: the range ends before it starts"));
        }
        ranges.push((a, b));
    }
    Ok(FileList(ranges))
}

impl FileList {
    /// The selection over `info`'s files (padding files included, always wanted), or an
    /// error naming an index past the last file.
    fn selection(&self, info: &Info) -> Result<Vec<bool>> {
        let real = info.files().iter().filter(|f| !f.attr.padding).count();
        if let Some(&(_, last)) = self.0.iter().find(|&&(_, b)| b >= real) {
            bail!(
                "--files: file index {last} is out of range: the torrent has {real} files (0-{})",
                real.saturating_sub(1)
            );
        }
        let mut index = 0;
        Ok(info
            .files()
            .iter()
            .map(|f| {
                if f.attr.padding {
                    return true;
                }
                let i = index;
                index += 1;
                self.0.iter().any(|&(a, b)| (a..=b).contains(&i))
            })
            .collect())
    }
}

/// What `download` and `seed` both say of the engine.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// Address to listen on: an IP (`::` listens on IPv4 and IPv6 both, falling back to IPv4
    /// alone on a host without IPv6; `0.0.0.0` on IPv4 only; `::1` on IPv6 only), or with a
    /// port, IP:PORT or [IPv6]:PORT (which then overrides --port).
    #[arg(long, default_value = "::")]
    bind: String,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Event loops, one per thread (0: one per core). The torrent lives on one of them; the
    /// others accept connections and hand them over.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Upload limit in bytes per second, for the whole session: plain bytes or with a K, M or
    /// G suffix, powers of 1024 (500K, 8M, 1.5M). Default: unlimited.
    #[arg(long, value_name = "RATE", value_parser = format::parse_rate)]
    upload_limit: Option<u64>,
    /// Download limit in bytes per second, as --upload-limit. Default: unlimited.
    #[arg(long, value_name = "RATE", value_parser = format::parse_rate)]
    download_limit: Option<u64>,
    /// Folder for resume data, so a restart need not re-check the data (default:
    /// $XDG_STATE_HOME/ringtorrent or ~/.local/state/ringtorrent).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Seconds between resume data saves while running (also saved when stopped): a crash
    /// re-checks at most what was verified since the last save.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    resume_interval: u64,
    /// Connections one IP address may hold to the torrent, incoming and outgoing (enough for
    /// a few clients behind one NAT; one address cannot take every slot).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_peers_per_ip)]
    max_peers_per_ip: usize,
    /// Protocol encryption (MSE/PE): prefer (dial encrypted, accept everything, fall back to
    /// plaintext), require (RC4-encrypted connections only, both ways) or plaintext (never
    /// start encryption; still answer a peer that does).
    #[arg(long, value_name = "POLICY", default_value_t = Encryption::Prefer)]
    encryption: Encryption,
    /// Transports for peer connections: both (dial uTP first, fall back to TCP; accept
    /// both), tcp or utp. uTP runs on the UDP socket of the listen port (or --dht-port).
    #[arg(long, value_name = "TRANSPORT", default_value_t = Transport::Both)]
    transport: Transport,
    /// How new files get their disk space: full (reserve it all with fallocate before the
    /// download starts) or sparse (set the size; blocks are allocated as they are written,
    /// as libtorrent and qBittorrent do). Either way a torrent larger than the free space is
    /// refused at the start.
    #[arg(long, value_name = "MODE", default_value_t = Allocation::Full)]
    allocation: Allocation,
    /// No local service discovery (BEP 14: announcing the torrent on the local network's
    /// multicast group and dialling the peers heard there; never for a private torrent).
    #[arg(long)]
    no_lsd: bool,
    /// The IPv4 address of the interface local service discovery uses (default: the
    /// system's choice, IPv6 too).
    #[arg(long, value_name = "IP")]
    lsd_interface: Option<std::net::Ipv4Addr>,
    #[command(flatten)]
    dht: super::dht::DhtArgs,
}

/// Turns local service discovery off in every command when `off` (as `--no-lsd`, and over
/// serve's `lsd` key): for sandboxes, containers on a shared network and test harnesses,
/// where clients on one host or LAN must not find each other by chance. `on` or unset: the
/// flags and config decide.
pub const LSD_ENV: &str = "RINGTORRENT_LSD";

/// Whether [`LSD_ENV`] leaves local service discovery to the flags and config.
pub fn lsd_allowed_by_env() -> Result<bool> {
    match std::env::var(LSD_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(true),
        Ok(v) => match v.to_ascii_lowercase().as_str() {
            "" | "on" | "1" | "true" | "yes" => Ok(true),
            "off" | "0" | "false" | "no" => Ok(false),
            _ => Err(anyhow!("${LSD_ENV}={v:?}: expected `on` or `off`")),
        },
        Err(e) => Err(anyhow!("${LSD_ENV}: {e}")),
    }
}

impl EngineArgs {
    /// The client these arguments describe, listening on `port`, data in `dir`.
    fn config(&self, port: u16, dir: &std::path::Path, limits: Limits) -> Result<ClientConfig> {
        Ok(ClientConfig {
            listen: Some(listen_addr(&self.bind, port)?),
            loops: self.threads,
            io: self.io.into(),
            data_dir: dir.to_path_buf(),
            allocation: self.allocation,
            state_dir: self
                .state_dir
                .clone()
                .or_else(ClientConfig::default_state_dir),
            resume_interval: Duration::from_secs(self.resume_interval),
            limits: Limits {
                upload_rate: self.upload_limit,
                download_rate: self.download_limit,
                max_peers_per_ip: self.max_peers_per_ip,
                ..limits
            },
            encryption: self.encryption,
            transport: self.transport,
            lsd: !self.no_lsd && lsd_allowed_by_env()?,
            lsd_interface: self.lsd_interface,
            dht: self.dht.settings(None),
            ..ClientConfig::default()
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The .torrent file.
    torrent: PathBuf,
    /// Folder that holds the torrent's data (as `download -o` would have made it).
    dir: PathBuf,
    /// Port to accept peers on (0: any free port, printed at start).
    #[arg(long, default_value_t = 6881)]
    port: u16,
    /// A peer to connect to and serve, HOST:PORT (for leechers that do not dial).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Most peers connected at once (a seedbox with memory to spare may raise it to tens of
    /// thousands).
    #[arg(long, default_value_t = Limits::default().max_peers_per_torrent)]
    max_peers: usize,
    /// Who gets the upload slots: round-robin turns (libtorrent's default: a turn lasts a
    /// quota of pieces and at least a minute), the fastest peers, anti-leech (newcomers and
    /// finishers first), or unlimited (every interested peer, for an uplink larger than four
    /// peers can take).
    #[arg(long, value_enum, default_value_t = SeedChoke::RoundRobin)]
    seed_choke: SeedChoke,
    #[command(flatten)]
    engine: EngineArgs,
}

/// `--seed-choke`: the seeding choker's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeedChoke {
    /// Turns of a quota of pieces each.
    RoundRobin,
    /// The peers we upload to fastest.
    Fastest,
    /// Newcomers and finishers first.
    AntiLeech,
    /// Every interested peer.
    Unlimited,
}

impl From<SeedChoke> for ringtorrent::core::choker::SeedChokeMode {
    fn from(c: SeedChoke) -> Self {
        use ringtorrent::core::choker::SeedChokeMode as M;
        match c {
            SeedChoke::RoundRobin => M::RoundRobin,
            SeedChoke::Fastest => M::FastestUpload,
            SeedChoke::AntiLeech => M::AntiLeech,
            SeedChoke::Unlimited => M::Unlimited,
        }
    }
}

pub fn load_torrent(path: &std::path::Path) -> Result<Arc<Info>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let torrent = Torrent::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", path.display()))?;
    Ok(Arc::new(torrent.info))
}

pub fn resolve(peers: &[String]) -> Result<Vec<SocketAddr>> {
    peers
        .iter()
        .map(|p| {
            p.to_socket_addrs()
                .map_err(|e| anyhow!("invalid peer `{p}` (expected HOST:PORT): {e}"))?
                .next()
                .ok_or_else(|| anyhow!("peer `{p}` has no address"))
        })
        .collect()
}

fn listen_addr(bind: &str, port: u16) -> Result<SocketAddr> {
    ringtorrent::net_addr::parse_bind(bind, port).map_err(|e| anyhow!("--bind: {e}"))
}

/// Starts a client, saying on stderr why io_uring was not used when `auto` fell back.
pub fn start_client(config: ClientConfig) -> Result<Client> {
    let client = Client::start(config)?;
    if let Some(note) = client.backend_note() {
        eprintln!("note: {note}");
    }
    // `serve` logs through tracing, which has said it already; the one-shot commands do not.
    if let Some(note) = client.descriptors().note() {
        if !tracing::dispatcher::has_been_set() {
            eprintln!("warning: {note}");
        }
    }
    if let Some(addr) = client.dht_addr() {
        if !tracing::dispatcher::has_been_set() {
            eprintln!("DHT node on {addr}");
        }
    }
    Ok(client)
}

/// Says how a torrent's pieces were found on disk, from its `Added` event.
pub fn report_added(event: &ClientEvent) {
    let ClientEvent::Added {
        verified,
        pieces,
        source,
        ..
    } = event
    else {
        return;
    };
    match source {
        DataSource::Resumed => eprintln!("resumed: {verified} of {pieces} pieces verified before"),
        DataSource::Checked {
            secs,
            resume_rejected,
        } => {
            if let Some(why) = resume_rejected {
                eprintln!("resume data not used: {why}; the data was checked instead");
            }
            if *verified > 0 {
                eprintln!(
                    "checked existing data: {verified} of {pieces} pieces present ({secs:.1} s)"
                );
            }
        }
        _ => {}
    }
}

/// Runs until `torrent` is complete (or `deadline`, or a signal), showing progress from its
/// events and status; returns how long it took. Tracker failures are shown as they come.
pub fn wait_complete(
    torrent: &TorrentHandle,
    events: &Events,
    deadline: Option<Instant>,
    quiet: bool,
) -> Result<Duration> {
    let started = Instant::now();
    let hash = torrent.info_hash();
    let info = torrent.info()?;
    let total = info.as_ref().map_or(0, |i| i.total_len());
    let mut progress = Progress::new(total, info, quiet);
    let mut next_files = Instant::now();
    loop {
        let status = torrent.status()?;
        let files = if Instant::now() >= next_files {
            next_files = Instant::now() + Duration::from_millis(250);
            Some(torrent.files()?)
        } else {
            None
        };
        let wanted_total = status.size;
        progress.update(
            wanted_total.saturating_sub(status.bytes_left),
            wanted_total,
            status.peers,
            files.as_deref(),
        );
        if status.bytes_left == 0 {
            break;
        }
        if signals::interrupted() {
            progress.finish();
            return Err(Interrupted.into());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            progress.finish();
            bail!(
                "gave up: the download did not finish in time ({} left)",
                format::bytes(status.bytes_left)
            );
        }
        // Events wake the wait at once; the status above is drawn at least ten times a second.
        let until = Instant::now() + Duration::from_millis(100);
        while let Some(event) = events.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            match event {
                ClientEvent::Completed { info_hash } if info_hash == hash => break,
                ClientEvent::Error { info_hash, message } if info_hash == hash => {
                    progress.finish();
                    bail!("download stopped: {message}");
                }
                ClientEvent::TrackerFailed { url, error, .. } if !quiet => {
                    progress.suspend(|| eprintln!("tracker {url}: {error}"));
                }
                // Said even when quiet: which peer sent corrupt data is worth knowing.
                ClientEvent::PeerBanned { info_hash, addr } if info_hash == hash => {
                    progress.suspend(|| eprintln!("banned {addr}: it sent corrupt data"));
                }
                _ => {}
            }
        }
    }
    progress.finish();
    Ok(started.elapsed())
}

/// Waits until `deadline` (or forever) or a signal.
pub fn wait_until(deadline: Option<Instant>) {
    while deadline.is_none_or(|d| Instant::now() < d) && !signals::interrupted() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a magnet torrent's metadata (and its storage to open), showing tracker failures;
/// returns the metadata.
pub fn wait_metadata(
    torrent: &TorrentHandle,
    events: &Events,
    deadline: Option<Instant>,
    started_too: bool,
) -> Result<Arc<Info>> {
    let hash = torrent.info_hash();
    let mut got = None;
    loop {
        if let (Some(info), false) = (&got, started_too) {
            return Ok(Arc::clone(info));
        }
        if signals::interrupted() {
            return Err(Interrupted.into());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let peers = torrent.status().map_or(0, |s| s.peers);
            bail!("gave up: no verified metadata in time ({peers} peers connected)");
        }
        match events.recv_timeout(Duration::from_millis(100)) {
            Some(ClientEvent::MetadataReceived { info_hash, info }) if info_hash == hash => {
                got = Some(info);
            }
            Some(ClientEvent::Started { info_hash, .. }) if info_hash == hash => {
                if let Some(info) = got.take() {
                    return Ok(info);
                }
                if let Some(info) = torrent.info()? {
                    return Ok(info);
                }
            }
            Some(ClientEvent::Error { info_hash, message }) if info_hash == hash => {
                bail!("{message}")
            }
            Some(ClientEvent::TrackerFailed { url, error, .. }) => {
                eprintln!("tracker {url}: {error}")
            }
            _ => {}
        }
    }
}

pub fn download(args: DownloadArgs) -> Result<()> {
    signals::catch();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let deadline = (args.timeout > 0).then(|| Instant::now() + Duration::from_secs(args.timeout));
    let client = start_client(
        args.engine
            .config(args.port, &args.dir, Limits::default())?,
    )?;
    let backend = client.backend();
    let events = client.subscribe();
    let arg = args.torrent.to_string_lossy();
    let mut add = AddTorrent::parse(&arg).peers(resolve(&args.peers)?);
    let magnet = matches!(add.source, ringtorrent::client::TorrentSource::Magnet(_));
    if let (Some(list), ringtorrent::client::TorrentSource::File(path)) = (&args.files, &add.source)
    {
        // A .torrent: the selection is known before anything is created.
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let t = Torrent::from_bytes(&bytes).context("invalid torrent file")?;
        add.files = Some(list.selection(&t.info)?);
    } else if let (Some(list), true) = (&args.files, magnet) {
        // A magnet link: a first guess (padding files are not known yet) so that files left
        // out are not created when the metadata comes; corrected then.
        let last = list.0.iter().map(|&(_, b)| b).max().unwrap_or(0);
        let n = last.saturating_add(1).min(ringtorrent::limits::MAX_FILES);
        add.files = Some(
            (0..n)
                .map(|i| list.0.iter().any(|&(a, b)| (a..=b).contains(&i)))
                .collect(),
        );
    }
    let mut selects = false;
    if let ringtorrent::client::TorrentSource::Magnet(uri) = &add.source {
        let m = ringtorrent::metainfo::Magnet::parse(uri).context("invalid magnet link")?;
        eprintln!(
            "fetching the metadata of {} from {} peers and {} trackers",
            m.info_hash,
            add.peers.len() + ringtorrent::client::magnet_peers(&m).len(),
            m.trackers.len()
        );
        selects = m.select_only.is_some();
    }
    let torrent = client.add(add)?;
    let info = if magnet {
        match wait_metadata(&torrent, &events, deadline, true) {
            Err(e) if e.is::<Interrupted>() => {
                client.shutdown();
                bail!("interrupted before the metadata arrived")
            }
            other => other?,
        }
    } else {
        torrent.info()?.context("the torrent has no metadata")?
    };
    while let Some(e) = events.try_recv() {
        report_added(&e);
    }
    if let (true, Some(list)) = (magnet, &args.files) {
        let chosen = match list.selection(&info) {
            Ok(c) => c,
            Err(e) => {
                client.shutdown();
                return Err(e);
            }
        };
        torrent.set_files(chosen)?;
    }
    if args.files.is_some() {
        let files = torrent.files()?;
        let chosen = files.iter().filter(|f| f.wanted).count();
        eprintln!("--files selects {chosen} of {} files", files.len());
    } else if selects {
        // BEP 53 `so=`: only the files the link selects are downloaded.
        let files = torrent.files()?;
        let chosen = files.iter().filter(|f| f.wanted).count();
        eprintln!("the link selects {chosen} of {} files", files.len());
    }
    eprintln!(
        "downloading {} ({}) with {backend}, listening on {}",
        info.name(),
        format::bytes(info.total_len()),
        client
            .listen_addr()
            .map_or("nothing".into(), |a| a.to_string())
    );
    let took = match wait_complete(&torrent, &events, deadline, false) {
        Ok(took) => took,
        Err(e) if e.is::<Interrupted>() => {
            let left = torrent.status().map_or(0, |s| s.bytes_left);
            client.shutdown();
            bail!(
                "interrupted with {} left; run the same command again to resume",
                format::bytes(left)
            );
        }
        Err(e) => {
            // Why no peer got far enough (a refused handshake, an encryption policy that
            // does not match the peers') is the first thing to look at.
            report_closes(&client);
            return Err(e);
        }
    };
    outln!(
        "done: {} in {:.2} s ({}/s)",
        format::bytes(info.total_len()),
        took.as_secs_f64(),
        format::bytes((info.total_len() as f64 / took.as_secs_f64().max(1e-6)) as u64)
    );
    if args.seed {
        eprintln!("seeding; interrupt to stop");
        wait_until(None);
    }
    client.shutdown();
    Ok(())
}

pub fn seed(args: SeedArgs) -> Result<()> {
    signals::catch();
    let info = load_torrent(&args.torrent)?;
    let mut config = args.engine.config(
        args.port,
        &args.dir,
        Limits {
            max_peers_per_torrent: args.max_peers,
            seed_choke: args.seed_choke.into(),
            ..Limits::default()
        },
    )?;
    // The connection limit is split between the loops, but the one torrent lives on one of
    // them and holds every peer: each loop may hold `--max-peers` and some handshakes.
    config.limits.max_connections = (args.max_peers + 64) * config.loop_count();
    let client = start_client(config)?;
    let events = client.subscribe();
    let torrent = client.add(
        AddTorrent::file(&args.torrent)
            .seed_only()
            .peers(resolve(&args.peers)?),
    )?;
    while let Some(e) = events.try_recv() {
        report_added(&e);
    }
    let have = torrent.status()?.pieces_have;
    if have < info.lengths().piece_count() {
        eprintln!(
            "warning: only {have} of {} pieces are present; serving those",
            info.lengths().piece_count()
        );
    }
    // The port line is on stdout, first, so scripts can read it.
    outln!(
        "seeding {} on {} with {}",
        info.name(),
        client
            .listen_addr()
            .map_or("nothing".into(), |a| a.to_string()),
        client.backend()
    );
    let loops = client.loop_count();
    if loops > 1 {
        eprintln!("{loops} event loops accept connections; the torrent's own loop serves them");
    }
    let deadline = (args.duration > 0).then(|| Instant::now() + Duration::from_secs(args.duration));
    wait_until(deadline);
    let uploaded = torrent.status().map_or(0, |s| s.uploaded);
    let adopted = client.metrics().handoffs_adopted;
    report_closes(&client);
    client.shutdown();
    eprintln!(
        "stopped: uploaded {}; {adopted} connections came through another event loop",
        format::bytes(uploaded)
    );
    Ok(())
}

/// Says on stderr which connections closed, by reason, if any did: `connections closed:
/// encryption_required 2, remote_closed 1` (the names of the `connections_closed_total`
/// metric), so that a download that found no peer to talk to says why.
pub fn report_closes(client: &Client) {
    let closes = client.metrics().closes;
    if !closes.is_empty() {
        let each: Vec<String> = closes.iter().map(|(why, n)| format!("{why} {n}")).collect();
        eprintln!("connections closed: {}", each.join(", "));
    }
}

/// Most per-file bars shown at once under the overall bar: the first files not yet complete.
const MAX_FILE_BARS: usize = 8;

/// Shows download progress: on a terminal an overall bar and, for a multi-file torrent, one
/// bar per file being completed; otherwise a plain line per second.
pub struct Progress {
    multi: MultiProgress,
    bar: ProgressBar,
    files: Vec<(usize, ProgressBar)>,
    info: Option<Arc<Info>>,
    plain: bool,
    last_line: Instant,
    started: Instant,
}

impl Progress {
    /// Progress for `total` bytes; per-file bars when `info` is given and has several files.
    pub fn new(total: u64, info: Option<Arc<Info>>, quiet: bool) -> Progress {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let multi = if quiet || !terminal {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        let bar = multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .expect("valid template"),
        );
        let info = info.filter(|i| !i.is_single_file() && terminal && !quiet);
        Progress {
            multi,
            bar,
            files: Vec::new(),
            info,
            plain: !terminal && !quiet,
            last_line: Instant::now(),
            started: Instant::now(),
        }
    }

    /// Shows `done` of `total` bytes and, when given, each file's verified bytes.
    pub fn update(&mut self, done: u64, total: u64, peers: usize, files: Option<&[FileStatus]>) {
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.set_message(format!("{peers} peers"));
        if let (true, Some(files)) = (self.info.is_some(), files) {
            self.update_files(files);
        }
        if self.plain && self.last_line.elapsed() >= Duration::from_secs(1) {
            self.last_line = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "{:5.1}%  {} of {}  {}/s  {peers} peers",
                100.0 * done as f64 / total.max(1) as f64,
                format::bytes(done),
                format::bytes(total),
                format::bytes((done as f64 / secs) as u64)
            );
        }
    }

    fn update_files(&mut self, files: &[FileStatus]) {
        let shown: Vec<(usize, u64)> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.wanted && f.length > 0 && f.done < f.length)
            .take(MAX_FILE_BARS)
            .map(|(i, f)| (i, f.done))
            .collect();
        // Bars for files no longer shown (complete, or pushed out) go away.
        let keep: Vec<usize> = shown.iter().map(|(i, _)| *i).collect();
        self.files.retain(|(i, bar)| {
            let kept = keep.contains(i);
            if !kept {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            kept
        });
        for (i, done) in shown {
            if !self.files.iter().any(|(j, _)| *j == i) {
                let f = &files[i];
                let bar = self.multi.add(ProgressBar::new(f.length));
                bar.set_style(
                    ProgressStyle::with_template("  {bar:30} {bytes:>10}/{total_bytes:10} {msg}")
                        .expect("valid template"),
                );
                bar.set_message(f.path.clone());
                self.files.push((i, bar));
            }
            if let Some((_, bar)) = self.files.iter().find(|(j, _)| *j == i) {
                bar.set_position(done);
            }
        }
    }

    /// Runs `f` (which prints) with the bars out of the way.
    pub fn suspend(&self, f: impl FnOnce()) {
        self.multi.suspend(f)
    }

    pub fn finish(&self) {
        for (_, bar) in &self.files {
            bar.finish_and_clear();
        }
        self.bar.finish_and_clear();
    }
}
