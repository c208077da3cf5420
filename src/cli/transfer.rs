//! `ringtorrent download` and `ringtorrent seed`: the engine on real sockets, through the
//! epoll driver, with storage on memory-mapped files and hashing on the disk pool.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use super::driver::backend;
use super::driver::{Backend, Driver};
use super::format;
use ringtorrent::core::api::{Event, TorrentId};
use ringtorrent::core::config::Config;
use ringtorrent::core::{Bitfield, Session};
use ringtorrent::driver::shard::{self, LoopThread};
use ringtorrent::metainfo::{Info, Magnet, Torrent};
use ringtorrent::storage::{
    check, DiskPool, DiskPoolConfig, FileState, OpenMode, ResumeData, ResumeError, Storage,
};

/// `--io`: which I/O backend runs the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Io {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring only.
    Uring,
    /// epoll only.
    Epoll,
}

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
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Event loops, one per thread (0: one per core). The torrent lives on one of them; the
    /// others accept connections and hand them over.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Give up after this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Upload limit in bytes per second, for the whole session: plain bytes or with a K, M or
    /// G suffix, powers of 1024 (500K, 8M, 1.5M). Default: unlimited.
    #[arg(long, value_name = "RATE", value_parser = format::parse_rate)]
    upload_limit: Option<u64>,
    /// Download limit in bytes per second, as --upload-limit. Default: unlimited.
    #[arg(long, value_name = "RATE", value_parser = format::parse_rate)]
    download_limit: Option<u64>,
    /// Folder for resume data, so a restart need not re-check everything (default:
    /// $XDG_STATE_HOME/ringtorrent or ~/.local/state/ringtorrent).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
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
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    /// A peer to connect to and serve, HOST:PORT (for leechers that do not dial).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Event loops, one per thread (0: one per core). The torrent lives on one of them; the
    /// others accept connections and hand them over.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Most peers connected at once (a seedbox with memory to spare may raise it to tens of
    /// thousands).
    #[arg(long, default_value_t = Config::default().max_peers_per_torrent)]
    max_peers: usize,
    /// Who gets the upload slots: round-robin turns (libtorrent's default: a turn lasts a
    /// quota of pieces and at least a minute), the fastest peers, anti-leech (newcomers and
    /// finishers first), or unlimited (every interested peer, for an uplink larger than four
    /// peers can take).
    #[arg(long, value_enum, default_value_t = SeedChoke::RoundRobin)]
    seed_choke: SeedChoke,
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

/// One torrent running in one driver, the event loop that owns it; other loops, if any, run on
/// their own threads, accepting connections and handing this torrent's over.
pub struct Transfer {
    pub driver: Driver,
    /// The other loops; dropping them stops them.
    pub others: Vec<LoopThread>,
    pub torrent: TorrentId,
    pub info: Arc<Info>,
    /// The torrent's trackers, when it names any and the command announces.
    pub trackers: Option<super::tracker::Hook>,
    /// Where resume data is kept, if anywhere, and the storage it describes.
    resume: Option<Resume>,
}

/// Keeps a torrent's resume data current: after the start-up check, every
/// [`RESUME_EVERY`] while downloading (on a side thread, since saving syncs the files), and
/// when the download completes.
struct Resume {
    dir: PathBuf,
    storage: Arc<Storage>,
    last_save: Instant,
    saving: Arc<AtomicBool>,
}

/// Set by SIGINT or SIGTERM; the transfer loops notice it within one turn and stop cleanly
/// (resume data saved, trackers told `stopped`).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // A second signal means "now": exit without the clean stop (130, as a shell reports an
    // interrupted command).
    if INTERRUPTED.swap(true, Ordering::Relaxed) {
        // SAFETY: _exit is async-signal-safe and takes a plain integer.
        unsafe { libc::_exit(130) };
    }
}

/// Makes Ctrl-C (and SIGTERM) stop a transfer cleanly instead of killing the process.
pub fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `signal` has no preconditions beyond a valid signal number and handler; the
        // handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// The error a transfer loop returns when the user interrupted it.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// How often resume data is saved during a download: a crash loses at most this much
/// verification work (the data itself is re-checked, never trusted).
const RESUME_EVERY: Duration = Duration::from_secs(60);

impl Resume {
    fn save_now(&self, have: Bitfield) -> Result<()> {
        let data = ResumeData::capture(&self.storage, have)
            .map_err(|e| anyhow!("cannot save resume data: {e}"))?;
        data.save(&self.dir)
            .map_err(|e| anyhow!("cannot save resume data: {e}"))?;
        Ok(())
    }

    fn save_in_background(&mut self, have: Bitfield) {
        if self.saving.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_save = Instant::now();
        let (storage, dir, saving) = (self.storage.clone(), self.dir.clone(), self.saving.clone());
        std::thread::spawn(move || {
            if let Err(e) = ResumeData::capture(&storage, have)
                .map_err(|e| e.to_string())
                .and_then(|d| d.save(&dir).map(|_| ()).map_err(|e| e.to_string()))
            {
                eprintln!("warning: cannot save resume data: {e}");
            }
            saving.store(false, Ordering::Release);
        });
    }
}

/// The default folder for resume data: `$XDG_STATE_HOME/ringtorrent`, else
/// `~/.local/state/ringtorrent`.
pub fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("ringtorrent"))
}

pub fn load_torrent(path: &Path) -> Result<Arc<Info>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let torrent = Torrent::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid torrent", path.display()))?;
    Ok(Arc::new(torrent.info))
}

/// A magnet link's `x.pe` peers that resolve (host names through the system resolver).
pub fn magnet_peers(magnet: &Magnet) -> Vec<SocketAddr> {
    magnet
        .peers
        .iter()
        .filter_map(|p| {
            p.socket_addr().or_else(|| {
                (p.to_string().as_str())
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
            })
        })
        .collect()
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

/// Opens storage, learns which pieces are already there (by hashing them on the pool), and
/// starts a session and driver for the torrent.
#[allow(clippy::too_many_arguments)]
pub fn start(
    backend: Backend,
    threads: usize,
    info: Arc<Info>,
    dir: &Path,
    mode: OpenMode,
    listen: Option<SocketAddr>,
    pool: Arc<DiskPool>,
    known_complete: bool,
    quiet: bool,
    config: Config,
    state_dir: Option<&Path>,
) -> Result<Transfer> {
    let opened = open_storage(&info, dir, mode, &pool, known_complete, quiet, state_dir)?;
    let (mut driver, others) = launch(backend, threads, listen, pool, config, info.info_hash())?;
    let now = driver.now();
    let torrent = driver
        .session()
        .add_torrent(info.clone(), &opened.have, now)
        .ok_or_else(|| anyhow!("the torrent could not be added"))?;
    let resume = opened.resume(state_dir)?;
    driver.attach_storage(torrent, opened.storage);
    Ok(Transfer {
        driver,
        others,
        torrent,
        info,
        trackers: None,
        resume,
    })
}

/// Starts the loops for a torrent known by its magnet link, fetches its metadata from
/// `peers` (and the magnet's trackers), then opens storage and starts the torrent in place:
/// the peers that gave the metadata stay connected and go on with the data.
#[allow(clippy::too_many_arguments)]
pub fn start_magnet(
    backend: Backend,
    threads: usize,
    magnet: &Magnet,
    peers: &[SocketAddr],
    dir: &Path,
    listen: Option<SocketAddr>,
    pool: Arc<DiskPool>,
    quiet: bool,
    config: Config,
    state_dir: Option<&Path>,
    deadline: Option<Instant>,
) -> Result<Transfer> {
    let hash = magnet.info_hash;
    let (mut driver, others) = launch(backend, threads, listen, pool.clone(), config, hash)?;
    let now = driver.now();
    let torrent = driver
        .session()
        .add_magnet(hash, now)
        .ok_or_else(|| anyhow!("the torrent could not be added"))?;
    driver.session().add_peers(torrent, peers, now);
    let tiers = [magnet.trackers.clone()];
    let mut trackers =
        super::tracker::Hook::start_tiers(&tiers, hash, &mut driver, torrent, quiet)?;
    let info = wait_metadata(&mut driver, torrent, trackers.as_mut(), deadline)?;
    let opened = open_storage(&info, dir, OpenMode::Create, &pool, false, quiet, state_dir)?;
    let resume = opened.resume(state_dir)?;
    driver.attach_storage(torrent, opened.storage);
    let now = driver.now();
    if !driver.session().start_torrent(torrent, &opened.have, now) {
        bail!("the torrent could not be started");
    }
    // BEP 53 `so=`: only the files the link selects are downloaded (indices in the info
    // dictionary's file order, padding files included).
    if let Some(ranges) = &magnet.select_only {
        use ringtorrent::core::picker::Priority;
        let priorities: Vec<Priority> = (0..info.files().len() as u32)
            .map(|i| {
                if ranges.iter().any(|r| r.contains(i)) {
                    Priority::Normal
                } else {
                    Priority::Skip
                }
            })
            .collect();
        if !quiet {
            let chosen = priorities.iter().filter(|p| **p != Priority::Skip).count();
            eprintln!("the link selects {chosen} of {} files", priorities.len());
        }
        driver
            .session()
            .set_file_priorities(torrent, &priorities, now);
    }
    Ok(Transfer {
        driver,
        others,
        torrent,
        info,
        trackers,
        resume,
    })
}

/// Fetches a magnet link's metadata from `peers` (and its trackers) on one epoll or io_uring
/// loop that accepts no connections, within `timeout`; for `info`.
pub fn fetch_metadata(
    magnet: &Magnet,
    peers: &[SocketAddr],
    timeout: Duration,
) -> Result<Arc<Info>> {
    catch_interrupts();
    let backend = backend(Io::Auto)?;
    let hash = magnet.info_hash;
    let (mut driver, _others) = launch(backend, 1, None, pool()?, Config::default(), hash)?;
    let now = driver.now();
    let torrent = driver
        .session()
        .add_magnet(hash, now)
        .ok_or_else(|| anyhow!("the torrent could not be added"))?;
    driver.session().add_peers(torrent, peers, now);
    let tiers = [magnet.trackers.clone()];
    let mut trackers = super::tracker::Hook::start_tiers(&tiers, hash, &mut driver, torrent, true)?;
    let info = wait_metadata(
        &mut driver,
        torrent,
        trackers.as_mut(),
        Some(Instant::now() + timeout),
    )?;
    if let Some(mut t) = trackers {
        t.stop(&mut driver);
    }
    Ok(info)
}

/// Turns the loop until the magnet torrent's metadata arrives and checks out.
pub fn wait_metadata(
    driver: &mut Driver,
    torrent: TorrentId,
    mut trackers: Option<&mut super::tracker::Hook>,
    deadline: Option<Instant>,
) -> Result<Arc<Info>> {
    let mut got = None;
    let mut failure = None;
    loop {
        if interrupted() {
            return Err(Interrupted.into());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let peers = driver.session().peer_count(torrent);
            bail!("gave up: no verified metadata in time ({peers} peers connected)");
        }
        driver.turn(Duration::from_millis(100), &mut |e| match e {
            Event::MetadataReceived { torrent: t, info } if *t == torrent => {
                got = Some(info.clone());
            }
            Event::TorrentError { torrent: t, error } if *t == torrent => {
                failure = Some(error.clone());
            }
            _ => {}
        })?;
        if let Some(t) = trackers.as_deref_mut() {
            t.pump(driver);
        }
        if let Some(error) = failure.take() {
            bail!("{error}");
        }
        if let Some(info) = got.take() {
            return Ok(info);
        }
    }
}

/// Starts one event loop per thread; returns the one that owns `hash`, the others running
/// on their own threads and routing its connections to it.
fn launch(
    backend: Backend,
    threads: usize,
    listen: Option<SocketAddr>,
    pool: Arc<DiskPool>,
    config: Config,
    hash: ringtorrent::core::InfoHash,
) -> Result<(Driver, Vec<LoopThread>)> {
    let epoch = Instant::now();
    let peer_id = super::random_peer_id();
    let mut drivers = shard::build(backend, threads, listen, pool, epoch, |_| {
        Session::new(
            config.clone(),
            peer_id,
            super::random_u64(),
            ringtorrent::core::Time::ZERO,
        )
    })
    .with_context(|| match listen {
        Some(addr) => format!("cannot start the {backend} event loops listening on {addr}"),
        None => format!("cannot start the {backend} event loops"),
    })?;
    let owner = shard::shard_of(&hash, drivers.len()) as usize;
    for (i, d) in drivers.iter_mut().enumerate() {
        if i != owner {
            d.session().set_route(hash, Some(owner as u32));
        }
    }
    let driver = drivers.remove(owner);
    let mut others = Vec::with_capacity(drivers.len());
    for (i, d) in drivers.into_iter().enumerate() {
        others.push(
            LoopThread::spawn(d, format!("rt-loop-{i}"), |_| {})
                .context("cannot start an event loop thread")?,
        );
    }
    Ok((driver, others))
}

/// A torrent's storage, opened, with the pieces it holds.
struct Opened {
    storage: Arc<Storage>,
    have: Bitfield,
    /// Whether the data was checked (so resume data should be written now).
    checked: bool,
}

impl Opened {
    /// The resume-data keeper, saving what the check found.
    fn resume(&self, state_dir: Option<&Path>) -> Result<Option<Resume>> {
        let resume = state_dir.map(|dir| Resume {
            dir: dir.to_path_buf(),
            storage: self.storage.clone(),
            last_save: Instant::now(),
            saving: Arc::new(AtomicBool::new(false)),
        });
        if let (Some(r), true) = (&resume, self.checked) {
            std::fs::create_dir_all(&r.dir)
                .with_context(|| format!("cannot create {}", r.dir.display()))?;
            r.save_now(self.have.clone())?;
        }
        Ok(resume)
    }
}

/// Opens storage and learns which pieces are already there: from resume data, or by
/// hashing them on the pool.
fn open_storage(
    info: &Arc<Info>,
    dir: &Path,
    mode: OpenMode,
    pool: &DiskPool,
    known_complete: bool,
    quiet: bool,
    state_dir: Option<&Path>,
) -> Result<Opened> {
    let storage = Arc::new(
        Storage::open(info.clone(), dir, mode)
            .with_context(|| format!("cannot open the torrent's files under {}", dir.display()))?,
    );
    let piece_count = info.lengths().piece_count();
    // Files this open just created hold zeros: hashing them would only prove that.
    let all_new = storage.file_states().all(|s| {
        matches!(
            s,
            FileState::Present { created: true, .. } | FileState::NotStored
        )
    });
    // Resume data names the pieces verified before; it is trusted only if every file is as
    // it was when the data was saved.
    let restored = match state_dir.filter(|_| !known_complete && !all_new) {
        Some(d) => match ResumeData::restore(d, &storage) {
            Ok(have) => Some(have),
            Err(ResumeError::NotFound(_)) => None,
            Err(e) => {
                if !quiet {
                    eprintln!("resume data not used: {e}; checking the data instead");
                }
                None
            }
        },
        None => None,
    };
    let checked = !known_complete && !all_new && restored.is_none();
    let have = if known_complete {
        Bitfield::full(piece_count)
    } else if let Some(have) = restored {
        if !quiet {
            eprintln!(
                "resumed: {} of {} pieces verified before",
                have.count(),
                piece_count
            );
        }
        have
    } else if all_new {
        Bitfield::new(piece_count)
    } else {
        let progress = AtomicU64::new(0);
        let started = Instant::now();
        let report = check(&storage, pool.hash_pool(), &progress);
        let have = report.verified(info.lengths());
        if !quiet && have.count() > 0 {
            eprintln!(
                "checked existing data: {} of {} pieces present ({:.1} s)",
                have.count(),
                piece_count,
                started.elapsed().as_secs_f64()
            );
        }
        have
    };
    Ok(Opened {
        storage,
        have,
        checked,
    })
}

fn listen_addr(bind: &str, port: u16) -> Result<SocketAddr> {
    format!("{bind}:{port}")
        .parse()
        .map_err(|_| anyhow!("invalid --bind address `{bind}`"))
}

fn pool() -> Result<Arc<DiskPool>> {
    Ok(Arc::new(
        DiskPool::new(DiskPoolConfig::default())
            .map_err(|e| anyhow!("cannot start the disk pool: {e}"))?,
    ))
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
    last_files: Instant,
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
            last_files: Instant::now(),
            started: Instant::now(),
        }
    }

    /// Shows `done` of `total` bytes and, a few times a second, each file's share of the
    /// verified pieces in `have`.
    pub fn update(&mut self, done: u64, total: u64, peers: usize, have: Option<&Bitfield>) {
        self.bar.set_position(done);
        self.bar.set_message(format!("{peers} peers"));
        if let (Some(info), Some(have)) = (self.info.clone(), have) {
            if self.last_files.elapsed() >= Duration::from_millis(250) {
                self.last_files = Instant::now();
                self.update_files(&info, have);
            }
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

    fn update_files(&mut self, info: &Info, have: &Bitfield) {
        let lengths = info.lengths();
        let piece_len = u64::from(lengths.piece_len());
        let mut shown = Vec::new();
        for (i, f) in info.files().iter().enumerate() {
            if shown.len() >= MAX_FILE_BARS {
                break;
            }
            if f.attr.padding || f.length == 0 {
                continue;
            }
            let (start, end) = (f.offset, f.offset + f.length);
            let done: u64 = (start / piece_len..=(end - 1) / piece_len)
                .filter(|&p| have.get(p as u32))
                .map(|p| end.min((p + 1) * piece_len) - start.max(p * piece_len))
                .sum();
            if done < f.length {
                shown.push((i, done));
            }
        }
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
                let f = &info.files()[i];
                let bar = self.multi.add(ProgressBar::new(f.length));
                bar.set_style(
                    ProgressStyle::with_template("  {bar:30} {bytes:>10}/{total_bytes:10} {msg}")
                        .expect("valid template"),
                );
                bar.set_message(f.display_path());
                self.files.push((i, bar));
            }
            if let Some((_, bar)) = self.files.iter().find(|(j, _)| *j == i) {
                bar.set_position(done);
            }
        }
    }

    pub fn finish(&self) {
        for (_, bar) in &self.files {
            bar.finish_and_clear();
        }
        self.bar.finish_and_clear();
    }
}

/// Runs the driver until the torrent is complete (or `deadline`), showing progress.
pub fn run_download(t: &mut Transfer, deadline: Option<Instant>, quiet: bool) -> Result<Duration> {
    let total = t.info.total_len();
    let started = Instant::now();
    let mut progress = Progress::new(total, Some(t.info.clone()), quiet);
    let mut failure = None;
    while !t.driver.session().is_complete(t.torrent) {
        if interrupted() {
            progress.finish();
            let have = t.driver.session().have(t.torrent).cloned();
            if let (Some(r), Some(have)) = (t.resume.as_ref(), have) {
                r.save_now(have)?;
            }
            return Err(Interrupted.into());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            progress.finish();
            bail!(
                "gave up: the download did not finish in time ({} left)",
                format::bytes(t.driver.session().bytes_left(t.torrent))
            );
        }
        let id = t.torrent;
        t.driver.turn(Duration::from_millis(100), &mut |e| {
            if let Event::TorrentError { torrent, error } = e {
                if *torrent == id {
                    failure = Some(error.clone());
                }
            }
        })?;
        if let Some(trackers) = t.trackers.as_mut() {
            trackers.pump(&mut t.driver);
        }
        if let Some(error) = failure.take() {
            progress.finish();
            bail!("download stopped: {error}");
        }
        let left = t.driver.session().bytes_left(t.torrent);
        let peers = t.driver.session().peer_count(t.torrent);
        progress.update(
            total - left,
            total,
            peers,
            t.driver.session().have(t.torrent),
        );
        if let Some(r) = t
            .resume
            .as_mut()
            .filter(|r| r.last_save.elapsed() >= RESUME_EVERY)
        {
            if let Some(have) = t.driver.session().have(t.torrent) {
                r.save_in_background(have.clone());
            }
        }
    }
    progress.finish();
    let took = started.elapsed();
    let have = t.driver.session().have(t.torrent).cloned();
    if let (Some(r), Some(have)) = (t.resume.as_ref(), have) {
        r.save_now(have)?;
    }
    Ok(took)
}

/// Serves until `deadline` (or forever).
pub fn run_seed(t: &mut Transfer, deadline: Option<Instant>) -> Result<()> {
    while deadline.is_none_or(|d| Instant::now() < d) && !interrupted() {
        t.driver.turn(Duration::from_millis(200), &mut |_| {})?;
        if let Some(trackers) = t.trackers.as_mut() {
            trackers.pump(&mut t.driver);
        }
    }
    Ok(())
}

pub fn download(args: DownloadArgs) -> Result<()> {
    catch_interrupts();
    let backend = backend(args.io)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let listen = listen_addr(&args.bind, args.port)?;
    let deadline = (args.timeout > 0).then(|| Instant::now() + Duration::from_secs(args.timeout));
    let config = Config {
        upload_rate_limit: args.upload_limit,
        download_rate_limit: args.download_limit,
        ..Config::default()
    };
    let state_dir = args.state_dir.clone().or_else(default_state_dir);
    let mut peers = resolve(&args.peers)?;
    let magnet = args
        .torrent
        .to_str()
        .filter(|s| s.starts_with("magnet:"))
        .map(Magnet::parse)
        .transpose()
        .context("invalid magnet link")?;
    let mut t = if let Some(magnet) = magnet {
        peers.extend(magnet_peers(&magnet));
        eprintln!(
            "fetching the metadata of {} from {} peers and {} trackers",
            magnet.info_hash,
            peers.len(),
            magnet.trackers.len()
        );
        match start_magnet(
            backend,
            super::driver::threads(args.threads),
            &magnet,
            &peers,
            &args.dir,
            Some(listen),
            pool()?,
            false,
            config,
            state_dir.as_deref(),
            deadline,
        ) {
            Err(e) if e.is::<Interrupted>() => bail!("interrupted before the metadata arrived"),
            other => other?,
        }
    } else {
        let info = load_torrent(&args.torrent)?;
        let mut t = start(
            backend,
            super::driver::threads(args.threads),
            info,
            &args.dir,
            OpenMode::Create,
            Some(listen),
            pool()?,
            false,
            false,
            config,
            state_dir.as_deref(),
        )?;
        let now = t.driver.now();
        t.driver.session().add_peers(t.torrent, &peers, now);
        t.trackers = super::tracker::Hook::start(&args.torrent, &mut t.driver, t.torrent, false)?;
        t
    };
    let info = t.info.clone();
    eprintln!(
        "downloading {} ({}) with {backend}, listening on {}",
        info.name(),
        format::bytes(info.total_len()),
        t.driver
            .local_addr()
            .map_or("nothing".into(), |a| a.to_string())
    );
    let took = match run_download(&mut t, deadline, false) {
        Ok(took) => took,
        Err(e) if e.is::<Interrupted>() => {
            if let Some(mut trackers) = t.trackers.take() {
                trackers.stop(&mut t.driver);
            }
            let left = format::bytes(t.driver.session().bytes_left(t.torrent));
            bail!("interrupted with {left} left; run the same command again to resume");
        }
        Err(e) => return Err(e),
    };
    println!(
        "done: {} in {:.2} s ({}/s)",
        format::bytes(info.total_len()),
        took.as_secs_f64(),
        format::bytes((info.total_len() as f64 / took.as_secs_f64().max(1e-6)) as u64)
    );
    if args.seed {
        eprintln!("seeding; interrupt to stop");
        run_seed(&mut t, None)?;
    }
    if let Some(mut trackers) = t.trackers.take() {
        trackers.stop(&mut t.driver);
    }
    Ok(())
}

pub fn seed(args: SeedArgs) -> Result<()> {
    catch_interrupts();
    let backend = backend(args.io)?;
    let info = load_torrent(&args.torrent)?;
    let listen = listen_addr(&args.bind, args.port)?;
    let mut t = start(
        backend,
        super::driver::threads(args.threads),
        info.clone(),
        &args.dir,
        OpenMode::ReadOnly,
        Some(listen),
        pool()?,
        false,
        false,
        Config {
            max_peers_per_torrent: args.max_peers,
            max_connections: args.max_peers + 64,
            upload_rate_limit: args.upload_limit,
            download_rate_limit: args.download_limit,
            choker: ringtorrent::core::choker::ChokerConfig {
                seed_mode: args.seed_choke.into(),
                ..Default::default()
            },
            ..Config::default()
        },
        args.state_dir.clone().or_else(default_state_dir).as_deref(),
    )?;
    let have = t
        .driver
        .session()
        .have(t.torrent)
        .map_or(0, Bitfield::count);
    if have < info.lengths().piece_count() {
        eprintln!(
            "warning: only {have} of {} pieces are present; serving those",
            info.lengths().piece_count()
        );
    }
    let peers = resolve(&args.peers)?;
    let now = t.driver.now();
    t.driver.session().add_peers(t.torrent, &peers, now);
    t.trackers = super::tracker::Hook::start(&args.torrent, &mut t.driver, t.torrent, false)?;
    // The port line is on stdout, first, so scripts can read it.
    println!(
        "seeding {} on {} with {backend}",
        info.name(),
        t.driver
            .local_addr()
            .map_or("nothing".into(), |a| a.to_string())
    );
    let loops = t.others.len() + 1;
    if loops > 1 {
        eprintln!("{loops} event loops accept connections; the torrent's own loop serves them");
    }
    let deadline = (args.duration > 0).then(|| Instant::now() + Duration::from_secs(args.duration));
    run_seed(&mut t, deadline)?;
    if let Some(mut trackers) = t.trackers.take() {
        trackers.stop(&mut t.driver);
    }
    let uploaded = t
        .driver
        .session()
        .stats(t.torrent)
        .map_or(0, |s| s.uploaded);
    let adopted = t.driver.session().connection_stats().adopted;
    eprintln!(
        "stopped: uploaded {}; {adopted} connections came through another event loop",
        format::bytes(uploaded)
    );
    Ok(())
}
