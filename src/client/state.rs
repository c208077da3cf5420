//! The client's registry: every torrent, where it lives, and the operations on it. One
//! `State` sits behind the client's mutex; handles, the client and the housekeeping thread
//! take turns on it. An event loop is reached only by posting it a closure and waiting
//! (bounded) for the answer ([`State::call`]); loops never take this lock, so waiting on
//! one while holding it cannot deadlock.
//!
//! Where a torrent starts, runs and stops:
//!
//! - **start**: [`State::add_many`] validates it, opens (or creates) its files and learns
//!   which pieces are there (`open.rs`; a batch's torrents on all the disk pool's hashing
//!   threads at once), then [`State::activate`] puts it into its loop's session
//!   (the loop [`shard_of`] its info hash), tells the other loops to route its incoming
//!   connections there, and starts announcing it. A magnet link goes into its loop with no
//!   storage; when its loop reports the metadata, the housekeeping thread calls
//!   [`State::start_magnet`], which opens storage and starts it in place.
//! - **run**: the loop runs it; the housekeeping thread pumps its trackers, saves its resume
//!   data and shares the rate limits between the loops (`worker.rs`).
//! - **stop**: [`State::deactivate`] (pause, remove) takes it out of its loop, waits for its
//!   last disk writes, saves its resume data and sends `stopped` to its trackers. At
//!   shutdown the client does the same for every torrent at once: [`State::collect_haves`],
//!   the loops stopped, then [`State::save_haves`] and the trackers told.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::events::{ClientEvent, DataSource, Publisher};
use super::handle::{FilePriority, FileStatus, PeerInfo, TorrentState, TorrentStatus};
use super::metrics::{self, Metrics};
use super::open::{self, Opened};
use super::policy::{self, Category, QueueConfig, ShareLimits};
use super::store::{Settings, Store};
use super::trackers::Trackers;
use super::{AddTorrent, ClientError, Restored, TorrentSource};
use crate::core::api::TorrentId;
use crate::core::picker::Priority;
use crate::core::{Bitfield, InfoHash};
use crate::driver::shard::{shard_of, LoopThread};
use crate::driver::Driver;
use crate::metainfo::{Info, Magnet, Torrent};
use crate::storage::{Allocation, DiskPool, FileState, OpenMode, ResumeData, ResumeError, Storage};
use crate::tracker::Progress;

/// How long a loop may take to answer before the request fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many torrents of a batch are read, parsed and opened at once (on the disk pool's
/// hashing threads) before they are registered: enough to keep every core busy, few enough
/// that what is read for them is not all held at once.
const ADD_CHUNK: usize = 256;

/// How long resume data waits for a stopped torrent's last disk jobs: they are a few block
/// writes already queued, milliseconds even on a slow disk; past this the data is saved
/// anyway (and a changed file is checked at the next start).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Each loop's map from its session's torrent ids to info hashes, so the events it publishes
/// name torrents the way callers know them. Written on the loop's own thread (in the closures
/// that add and remove torrents), read there by its event callback.
pub(crate) type IdMap = Arc<Mutex<HashMap<TorrentId, InfoHash>>>;

/// What the registry knows of one torrent.
pub(crate) struct Entry {
    /// The metadata; `None` for a magnet link still fetching it.
    pub info: Option<Arc<Info>>,
    /// A name before the metadata (the magnet's `dn`).
    pub display_name: Option<String>,
    /// The magnet link, while its metadata is being fetched.
    pub magnet: Option<String>,
    /// Stop at the metadata: open no storage (a metadata fetch).
    pub metadata_only: bool,
    /// Tracker tiers.
    pub trackers: Vec<Vec<String>>,
    /// The .torrent file's comment, creator and date (none from a magnet link).
    pub meta: super::TorrentMeta,
    /// Its files, once opened.
    pub storage: Option<Arc<Storage>>,
    /// The loop that owns it.
    pub shard: u32,
    /// The session's id while in the session (active); `None` while paused.
    pub id: Option<TorrentId>,
    pub settings: Settings,
    /// Pieces verified when resume data was last saved; `None`: not saved since a check.
    pub saved: Option<u32>,
    /// Why it is held out of the session (its data went missing), until resumed.
    pub problem: Option<String>,
    /// Peers given when it was added, dialled when it starts.
    pub peers: Vec<SocketAddr>,
    /// This run's payload totals (uploaded, downloaded) when last seen; added to the
    /// settings' totals when it leaves the session.
    pub run_totals: (u64, u64),
    /// When it last sent or received payload (or started).
    pub last_activity: Instant,
    /// When its seeding time was last counted, while it seeds.
    pub seeding_since: Option<Instant>,
    /// Out of the session because the queue holds it (not paused).
    pub queued: bool,
    /// Every wanted piece verified, when last seen.
    pub complete: bool,
    /// Since when it runs slower than queueing's thresholds.
    pub slow_since: Option<Instant>,
    /// Its totals changed, or its seeding time grew by [`super::organize::SEEDING_SAVE_STEP`]
    /// or more, since its settings were last kept.
    pub counters_dirty: bool,
    /// `settings.seeding_ms` as last kept.
    pub seeding_saved_ms: u64,
    /// What the check at its add found, when the queue held it from the start: used when
    /// it first starts, so its data is not checked twice.
    pub held_have: Option<Bitfield>,
    /// Its data is being moved (`relocate.rs`): bytes done of the total.
    pub moving: Option<Arc<super::relocate::MoveProgress>>,
    /// Its data is being checked from scratch (`recheck`): bytes hashed so far.
    pub checking: Option<Arc<AtomicU64>>,
}

/// A check of a torrent's data from scratch, run without the registry's lock.
pub(crate) struct RecheckJob {
    pub storage: Arc<Storage>,
    pub pool: Arc<DiskPool>,
    pub progress: Arc<AtomicU64>,
}

impl RecheckJob {
    /// Hashes every piece (on the disk pool's hashing threads): the pieces that pass.
    pub fn run(&self) -> Bitfield {
        let info = self.storage.info();
        let report = crate::storage::check(&self.storage, self.pool.hash_pool(), &self.progress);
        report.verified(info.lengths())
    }
}

/// A torrent whose data is about to be checked, for [`State::expect`]: its info hash, a
/// hybrid's v2 name, and the loop that will own it.
type Expected = (InfoHash, Option<InfoHash>, u32);

/// A torrent to add with what could be read without the registry: its kept settings and its
/// file, read and parsed (`torrent` is `None` for a magnet link).
struct Parsed {
    add: AddTorrent,
    restored: Option<Settings>,
    torrent: Option<Result<Torrent, ClientError>>,
}

impl Parsed {
    /// Reads what `add` names (a .torrent file's bytes become [`TorrentSource::Bytes`]).
    fn read(mut add: AddTorrent) -> Parsed {
        let restored = add.restored.take().map(|r| match r {
            Restored::Settings(s) => *s,
            Restored::Beside(path) => Store::settings(&path),
        });
        let parse = |bytes: &[u8]| {
            Torrent::from_bytes(bytes).map_err(|e| ClientError::InvalidTorrent(e.to_string()))
        };
        let torrent = match &add.source {
            TorrentSource::Magnet(_) => None,
            TorrentSource::Bytes(bytes) => Some(parse(bytes)),
            TorrentSource::File(path) => match std::fs::read(path) {
                Ok(bytes) => {
                    let t = parse(&bytes);
                    add.source = TorrentSource::Bytes(bytes);
                    Some(t)
                }
                Err(e) => Some(Err(ClientError::io("read", path)(e))),
            },
        };
        Parsed {
            add,
            restored,
            torrent,
        }
    }
}

/// What [`State::prepare`] did with a torrent.
enum Prepare {
    /// Registered whole (a magnet link).
    Done(InfoHash),
    /// Its files are to be opened.
    Open(Box<Prepared>),
}

/// A torrent registered up to opening its files.
struct Prepared {
    hash: InfoHash,
    info: Arc<Info>,
    bytes: Vec<u8>,
    tiers: Vec<Vec<String>>,
    meta: super::TorrentMeta,
    settings: Settings,
    peers: Vec<SocketAddr>,
    trust_data: bool,
    recovered: bool,
    data_dir: PathBuf,
}

/// What [`Prepared`] says of the torrent itself: hash, info, .torrent bytes, trackers, meta.
type PreparedTorrent = (
    InfoHash,
    Arc<Info>,
    Vec<u8>,
    Vec<Vec<String>>,
    super::TorrentMeta,
);

/// A torrent whose files are open and whose settings are kept, for
/// [`State::finish_register`].
struct Registered {
    hash: InfoHash,
    info: Arc<Info>,
    tiers: Vec<Vec<String>>,
    meta: super::TorrentMeta,
    settings: Settings,
    peers: Vec<SocketAddr>,
    opened: Opened,
    problem: Option<String>,
    queued: bool,
}

/// What opening a torrent's files needs of the registry, shared by the threads that open a
/// batch.
struct OpenContext<'a> {
    pool: &'a DiskPool,
    allocation: Allocation,
    store: Option<&'a Store>,
    resume_dir: Option<PathBuf>,
    /// Queueing is on: a torrent added without force start waits for it.
    queueing: bool,
}

impl OpenContext<'_> {
    /// Opens a prepared torrent's files and learns what they hold (`open.rs`: resume data,
    /// else a check), keeps its .torrent file (when new) and its settings (before it is in
    /// the registry, as a torrent loaded again at the next start finds them).
    fn open(&self, p: Prepared) -> Result<Registered, ClientError> {
        let Prepared {
            hash,
            info,
            bytes,
            tiers,
            meta,
            settings,
            peers,
            trust_data,
            recovered,
            data_dir,
        } = p;
        // A torrent that had data here (it was added before and has resume data) whose files
        // are gone is held with the reason, not given fresh empty files to download again:
        // the disk or mount may just be missing, and a seedbox must not silently refill it.
        // Its resume data, read once: whether there is any says whether it had data here,
        // and `open` validates it against the files.
        let mut loaded = match (&self.resume_dir, settings.added != 0) {
            (Some(dir), true) => Some(ResumeData::load(dir, hash)),
            _ => None,
        };
        // Resume data that holds for the files as they are restores the torrent without
        // opening them (no file is missing then).
        if let (Some(Ok(_)), false) = (&loaded, trust_data || settings.seed_mode) {
            let Some(Ok(data)) = loaded.take() else {
                unreachable!("matched above")
            };
            let mode = if settings.seed_only {
                OpenMode::ReadOnly
            } else {
                OpenMode::Create
            };
            let skip = open::unneeded_files(&info, settings.priorities().as_deref());
            match open::open_resumed(&info, &data_dir, (mode, self.allocation, &skip), data) {
                Ok(opened) => {
                    return self.registered(
                        (hash, info, bytes, tiers, meta),
                        (settings, peers, recovered),
                        opened,
                        None,
                    )
                }
                Err(data) => loaded = Some(Ok(data)),
            }
        }
        let had_data = loaded
            .as_ref()
            .is_some_and(|r| !matches!(r, Err(ResumeError::NotFound(_))));
        let problem = (had_data && !settings.paused)
            .then(|| missing_data(&info, &data_dir, &settings))
            .flatten();
        let mode = if problem.is_some() || settings.seed_only {
            OpenMode::ReadOnly
        } else {
            OpenMode::Create
        };
        let opened = if problem.is_some() {
            let storage = Storage::open(info.clone(), &data_dir, mode).map_err(|source| {
                ClientError::Storage {
                    name: info.name().to_string(),
                    source,
                }
            })?;
            Opened {
                storage: Arc::new(storage),
                have: Bitfield::new(info.lengths().piece_count()),
                source: DataSource::Missing,
            }
        } else {
            let skip = open::unneeded_files(&info, settings.priorities().as_deref());
            open::open(
                &info,
                &data_dir,
                (mode, self.allocation, &skip),
                self.pool,
                trust_data || settings.seed_mode,
                (self.resume_dir.as_deref(), loaded),
            )?
        };
        self.registered(
            (hash, info, bytes, tiers, meta),
            (settings, peers, recovered),
            opened,
            problem,
        )
    }

    /// The end of [`OpenContext::open`]: the torrent's files opened as `opened`.
    fn registered(
        &self,
        (hash, info, bytes, tiers, meta): PreparedTorrent,
        (mut settings, peers, recovered): (Settings, Vec<SocketAddr>, bool),
        opened: Opened,
        problem: Option<String>,
    ) -> Result<Registered, ClientError> {
        let new = settings.added == 0;
        // One loaded from the state folder is there already.
        if let (Some(store), true) = (self.store, new) {
            store.save_torrent(&hash, &bytes)?;
        }
        if new {
            settings.added = now_unix();
        }
        if let Some(p) = &problem {
            tracing::warn!("{} ({hash}): {p}; held until resumed", info.name());
            settings.paused = true;
        }
        let complete = opened.have.count() == info.lengths().piece_count();
        // A torrent added with all its data is complete from now (as libtorrent counts it).
        let first_complete = complete && settings.completed.is_none();
        if first_complete {
            settings.completed = Some(now_unix());
        }
        let queued = !settings.paused && self.queueing && !settings.force_start;
        if let (Some(store), true) = (self.store, new || recovered || first_complete) {
            store.save_settings(&hash, &settings)?;
        }
        Ok(Registered {
            hash,
            info,
            tiers,
            meta,
            settings,
            peers,
            opened,
            problem,
            queued,
        })
    }
}

/// Why a torrent that had data under `dir` (it has resume data) cannot run: a file it needs
/// is gone.
fn missing_data(info: &Info, dir: &Path, settings: &Settings) -> Option<String> {
    // Files never created because nothing of them is wanted are not missing.
    let skip = open::unneeded_files(info, settings.priorities().as_deref());
    info.files()
        .iter()
        .enumerate()
        .filter(|&(i, f)| !f.attr.padding && f.length > 0 && !skip.get(i).copied().unwrap_or(false))
        .map(|(_, f)| f)
        .map(|f| dir.join(f.path.join("/")))
        .find(|p| !p.exists())
        .map(|p| {
            format!(
                "its data is missing ({} is gone): restore it and resume the torrent, or \
                 remove it",
                p.display()
            )
        })
}

impl Entry {
    /// A torrent just registered in `shard` with `settings`: nothing open, nothing counted,
    /// in no loop; the caller fills in what it knows.
    fn new(shard: u32, settings: Settings) -> Entry {
        Entry {
            seeding_saved_ms: settings.seeding_ms,
            info: None,
            display_name: None,
            magnet: None,
            metadata_only: false,
            trackers: Vec::new(),
            meta: super::TorrentMeta::default(),
            storage: None,
            shard,
            id: None,
            settings,
            saved: None,
            problem: None,
            peers: Vec::new(),
            run_totals: (0, 0),
            last_activity: Instant::now(),
            seeding_since: None,
            queued: false,
            complete: false,
            slow_since: None,
            counters_dirty: false,
            held_have: None,
            moving: None,
            checking: None,
        }
    }

    pub fn name(&self, hash: &InfoHash) -> String {
        match (&self.info, &self.display_name) {
            (Some(info), _) => info.name().to_string(),
            (None, Some(dn)) => dn.clone(),
            (None, None) => hash.to_hex(),
        }
    }

    /// The settings as kept: this run's totals added.
    pub fn kept_settings(&self) -> Settings {
        let mut s = self.settings.clone();
        s.uploaded_total += self.run_totals.0;
        s.downloaded_total += self.run_totals.1;
        s
    }

    fn mode(&self) -> OpenMode {
        if self.settings.seed_only {
            OpenMode::ReadOnly
        } else {
            OpenMode::Create
        }
    }
}

/// The session-wide limits and how they are shared out now.
#[derive(Default)]
pub(crate) struct SharedLimits {
    pub up: Option<u64>,
    pub down: Option<u64>,
    /// Each loop's share now, (up, down).
    pub shares: Vec<(u64, u64)>,
    /// Each loop's byte totals when last looked at, (up, down), and when.
    pub totals: Vec<(u64, u64)>,
    pub at: Option<Instant>,
}

/// What one loop reports of one of its torrents.
pub(crate) struct Live {
    pub id: TorrentId,
    pub have: u32,
    pub left: u64,
    pub rates: (u64, u64),
    pub downloaded: u64,
    pub uploaded: u64,
    pub peers: usize,
    pub error: Option<String>,
}

/// The registry and everything that runs the torrents in it.
pub(crate) struct State {
    pub loops: Vec<LoopThread>,
    pub maps: Vec<IdMap>,
    pub pool: Arc<DiskPool>,
    pub torrents: BTreeMap<InfoHash, Entry>,
    pub data_dir: PathBuf,
    /// How new files get their space ([`super::ClientConfig::allocation`]).
    pub allocation: Allocation,
    pub store: Option<Store>,
    pub trackers: Option<Trackers>,
    /// Local service discovery (BEP 14), when on.
    pub lsd: Option<super::lsd::LsdIo>,
    /// Last known progress of each active torrent, for the trackers.
    pub progress: BTreeMap<InfoHash, Progress>,
    pub limits: SharedLimits,
    pub events: Publisher,
    pub closed: bool,
    /// The categories, by name (`categories.json`).
    pub categories: BTreeMap<String, Category>,
    /// The tags (`tags.json`).
    pub tags: BTreeSet<String>,
    /// The client's share limits.
    pub share_limits: ShareLimits,
    /// Queueing.
    pub queue_config: QueueConfig,
    /// Every torrent, first in the queue to last (`queue.json`).
    pub queue: Vec<InfoHash>,
    /// The state folder's torrents are being loaded: they keep their kept queue places.
    pub queue_loading: bool,
    /// What torrents counted in their loops' sessions before they left them (paused,
    /// removed...), added to every [`Metrics`] snapshot so its totals never go down.
    pub departed: Metrics,
    /// The DHT lookups' schedule, when the node runs (on loop 0).
    pub dht: Option<super::dht::Lookups>,
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl State {
    fn resume_dir(&self) -> Option<PathBuf> {
        self.store.as_ref().map(Store::resume_dir)
    }

    /// Runs `f` on loop `shard` and waits for its answer.
    pub fn call<R: Send + 'static>(
        &self,
        shard: u32,
        f: impl FnOnce(&mut Driver) -> R + Send + 'static,
    ) -> Result<R, ClientError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let l = self
            .loops
            .get(shard as usize)
            .ok_or(ClientError::ShutDown)?;
        l.post(move |d| {
            let _ = tx.send(f(d));
        });
        rx.recv_timeout(CALL_TIMEOUT)
            .map_err(|_| ClientError::LoopUnavailable(shard))
    }

    /// Tells every loop but `owner` who owns `hash` (`owned: false`: nobody any more), and
    /// the hybrid's truncated v2 hash with it, which v2 peers dial.
    fn route(&self, hash: InfoHash, owner: u32, owned: bool) {
        let alias = self
            .torrents
            .get(&hash)
            .and_then(|e| e.info.as_ref())
            .and_then(|i| i.v2_alias());
        for (i, l) in self.loops.iter().enumerate() {
            if i as u32 != owner {
                let shard = owned.then_some(owner);
                l.post(move |d| {
                    d.session().set_route(hash, shard);
                    if let Some(alias) = alias {
                        d.session().set_route(alias, shard);
                    }
                });
            }
        }
    }

    pub(crate) fn entry(&self, hash: InfoHash) -> Result<&Entry, ClientError> {
        self.torrents
            .get(&hash)
            .ok_or(ClientError::UnknownTorrent(hash))
    }

    pub(crate) fn entry_mut(&mut self, hash: InfoHash) -> Result<&mut Entry, ClientError> {
        self.torrents
            .get_mut(&hash)
            .ok_or(ClientError::UnknownTorrent(hash))
    }

    pub(crate) fn save_settings(&self, hash: &InfoHash) -> Result<(), ClientError> {
        match (&self.store, self.torrents.get(hash)) {
            (Some(store), Some(e)) => store.save_settings(hash, &e.kept_settings()),
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------------------------ adding

    /// Adds torrents: each is registered (its files opened and checked or resumed), then all
    /// that are not paused go into their loops in one batch (one round trip per loop however
    /// many: a restart of ten thousand torrents must not cost ten thousand). What each torrent
    /// needs alone (its files and settings read and parsed, its storage opened and resumed or
    /// checked, its settings kept) runs on the disk pool's hashing threads, all cores at once;
    /// what touches the registry runs here, in the order given.
    pub fn add_many(&mut self, adds: Vec<AddTorrent>) -> Vec<Result<InfoHash, ClientError>> {
        use rayon::prelude::*;
        let started = Instant::now();
        let mut serial = Duration::ZERO;
        let pool = self.pool.clone();
        let mut results: Vec<Option<Result<InfoHash, ClientError>>> = Vec::new();
        let mut ready = Vec::new();
        let mut batch = std::collections::HashSet::new();
        let mut expected = Vec::new();
        let mut adds = adds.into_iter();
        // A chunk at a time, so what is read and parsed for a torrent is dropped once it is
        // registered: ten thousand parsed torrents held at once outgrew the registry itself.
        loop {
            let chunk: Vec<AddTorrent> = adds.by_ref().take(ADD_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            let parsed: Vec<Parsed> = pool
                .hash_pool()
                .install(|| chunk.into_par_iter().map(Parsed::read).collect());
            let t = Instant::now();
            let mut pending = Vec::new();
            for p in parsed {
                let i = results.len();
                results.push(match self.prepare(p, &mut batch) {
                    Ok(Prepare::Done(hash)) => Some(Ok(hash)),
                    Ok(Prepare::Open(p)) => {
                        pending.push((i, p));
                        None
                    }
                    Err(e) => Some(Err(e)),
                });
            }
            // New torrents whose data may be checked now: peers that dial meanwhile wait for
            // them. (Those loaded again from the state folder trust their resume data, and a
            // restart of thousands should not wait on the loops for them.)
            let n = self.loops.len();
            let checking: Vec<Expected> = pending
                .iter()
                .filter(|(_, p)| p.settings.added == 0 && !p.settings.paused)
                .filter(|(_, p)| !p.trust_data && !p.settings.seed_mode)
                .map(|(_, p)| (p.hash, p.info.v2_alias(), shard_of(&p.hash, n)))
                .collect();
            self.expect(&checking);
            expected.extend(checking);
            serial += t.elapsed();
            let ctx = OpenContext {
                pool: &pool,
                allocation: self.allocation,
                store: self.store.as_ref(),
                resume_dir: self.resume_dir(),
                queueing: self.queue_config.enabled,
            };
            let opened: Vec<(usize, Result<Registered, ClientError>)> =
                pool.hash_pool().install(|| {
                    pending
                        .into_par_iter()
                        .map(|(i, p)| (i, ctx.open(*p)))
                        .collect()
                });
            let t = Instant::now();
            for (i, r) in opened {
                results[i] = Some(match r {
                    Ok(r) => {
                        let (hash, have) = self.finish_register(r);
                        if let Some(have) = have {
                            ready.push((hash, have));
                        }
                        Ok(hash)
                    }
                    Err(e) => Err(e),
                });
            }
            serial += t.elapsed();
        }
        let registered = started.elapsed();
        if results.iter().any(|r| matches!(r, Some(Ok(_)))) && !self.queue_loading {
            let _ = self.save_queue();
        }
        let mut results: Vec<Result<InfoHash, ClientError>> = results
            .into_iter()
            .map(|r| r.expect("every torrent has a result"))
            .collect();
        let count = ready.len();
        let t = Instant::now();
        let failed = self.activate(ready);
        tracing::debug!(
            "add_many: {} torrents registered in {registered:?} ({serial:?} of it on this \
             thread), {count} activated in {:?}",
            results.len(),
            t.elapsed()
        );
        for r in results.iter_mut() {
            if let Ok(hash) = r {
                if failed.contains(hash) {
                    *r = Err(ClientError::Refused(*hash));
                }
            }
        }
        for hash in failed {
            self.torrents.remove(&hash);
            self.dequeue(hash);
        }
        self.settle_expected(&expected);
        if self.queue_config.enabled && !self.queue_loading {
            self.apply_queue_now();
        }
        results
    }

    /// The part of adding that touches the registry before the files are opened: settings
    /// (tags and categories created), the torrent parsed and not added already (`batch`: the
    /// info hashes this batch holds so far), a move the client stopped in finished. A magnet
    /// link is registered here whole.
    fn prepare(
        &mut self,
        parsed: Parsed,
        batch: &mut std::collections::HashSet<InfoHash>,
    ) -> Result<Prepare, ClientError> {
        let Parsed {
            add,
            restored,
            torrent,
        } = parsed;
        let AddTorrent {
            source,
            save_dir,
            paused,
            peers,
            files,
            upload_limit,
            download_limit,
            seed_only,
            trust_data,
            seed_mode,
            metadata_only,
            label,
            category,
            tags,
            share_limits,
            force_start,
            file_priorities,
            sequential,
            first_last_piece_priority,
            restored: _,
        } = add;
        let restored_marker = restored.as_ref().map(|_| ());
        let mut settings = match restored {
            Some(s) => s,
            None => {
                share_limits.check(false)?;
                let tags = self.take_tags(&tags)?;
                let save_dir = match (&category, save_dir) {
                    (_, Some(dir)) => Some(dir),
                    (Some(c), None) => self.use_category(c)?,
                    (None, None) => None,
                };
                Settings {
                    paused,
                    upload_limit,
                    download_limit,
                    source: label.unwrap_or_else(|| "api".into()),
                    added: 0,
                    save_dir,
                    files,
                    seed_only,
                    seed_mode,
                    category,
                    tags,
                    share_limits,
                    force_start,
                    sequential,
                    first_last_piece_priority,
                    ..Settings::default()
                }
            }
        };
        if let (Some(p), None) = (file_priorities, &restored_marker) {
            settings.set_priorities(p);
        }
        let (bytes, torrent) = match (source, torrent) {
            (TorrentSource::Magnet(uri), _) => {
                let (hash, _) = self.register_magnet(&uri, settings, peers, metadata_only)?;
                return Ok(Prepare::Done(hash));
            }
            (_, Some(Err(e))) => return Err(e),
            (TorrentSource::Bytes(bytes), Some(Ok(torrent))) => (bytes, torrent),
            (_, _) => unreachable!("Parsed::read reads every file and parses every torrent"),
        };
        let tiers = torrent.trackers.clone();
        if !torrent.info.is_private() {
            // BEP 5 `nodes`: IP literals are tried at once, names once resolved (on the
            // resolver thread: not here, under the lock).
            for (host, port) in &torrent.nodes {
                match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
                    Ok(ip) => self.dht_node(SocketAddr::new(ip, *port)),
                    Err(_) => self.dht_node_name(host, *port),
                }
            }
        }
        let meta = super::TorrentMeta {
            comment: torrent.comment.clone(),
            created_by: torrent.created_by.clone(),
            creation_date: torrent.creation_date,
        };
        let info = Arc::new(torrent.info);
        let hash = info.info_hash();
        if self.torrents.contains_key(&hash) || !batch.insert(hash) {
            return Err(ClientError::AlreadyAdded(hash));
        }
        if let Some(files) = &settings.priorities() {
            if files.len() != info.files().len() {
                batch.remove(&hash);
                return Err(ClientError::InvalidArgument(format!(
                    "the file selection names {} files; the torrent has {}",
                    files.len(),
                    info.files().len()
                )));
            }
        }
        // A move this torrent was in when the client stopped is finished (or rolled back)
        // before its data is looked at.
        let recovered = match settings.moving.take() {
            Some(intent) => {
                super::relocate::recover(&info, intent, &mut settings);
                true
            }
            None => false,
        };
        let data_dir = settings
            .save_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone());
        Ok(Prepare::Open(Box::new(Prepared {
            hash,
            info,
            bytes,
            tiers,
            meta,
            settings,
            peers,
            trust_data,
            recovered,
            data_dir,
        })))
    }

    /// The end of adding a torrent whose files [`OpenContext::open`] opened: into the
    /// registry and the queue, `Added` published. Returns the pieces it has when it should
    /// go into its loop now (not paused, not queued).
    fn finish_register(&mut self, r: Registered) -> (InfoHash, Option<Bitfield>) {
        let Registered {
            hash,
            info,
            tiers,
            meta,
            settings,
            peers,
            opened,
            problem,
            queued,
        } = r;
        let verified = opened.have.count();
        let saved = (!opened.unsaved()).then_some(verified);
        let complete = verified == info.lengths().piece_count();
        let go = !settings.paused && !queued;
        let held_have = queued.then(|| opened.have.clone());
        self.torrents.insert(
            hash,
            Entry {
                info: Some(info.clone()),
                trackers: tiers,
                meta,
                storage: Some(opened.storage),
                saved,
                problem,
                peers,
                queued,
                complete,
                held_have,
                ..Entry::new(shard_of(&hash, self.loops.len()), settings)
            },
        );
        self.enqueue_unsaved(hash);
        tracing::info!(
            "added {} ({hash}), {} of {} pieces verified",
            info.name(),
            verified,
            info.lengths().piece_count()
        );
        self.events.publish(ClientEvent::Added {
            info_hash: hash,
            name: info.name().to_string(),
            verified,
            pieces: info.lengths().piece_count(),
            source: opened.source,
        });
        (hash, go.then_some(opened.have))
    }

    /// Adds a magnet link: its loop fetches the metadata from the link's peers (`x.pe`), the
    /// given peers, its trackers (`tr`) and peer exchange; the housekeeping thread then calls
    /// [`State::start_magnet`]. Kept in the state folder as `<hash>.magnet` until then.
    fn register_magnet(
        &mut self,
        uri: &str,
        mut settings: Settings,
        mut peers: Vec<SocketAddr>,
        metadata_only: bool,
    ) -> Result<(InfoHash, Option<Bitfield>), ClientError> {
        let magnet = Magnet::parse(uri).map_err(|e| ClientError::InvalidMagnet(e.to_string()))?;
        // A `btmh`-only link names the torrent by its truncated v2 hash: the metadata is
        // checked by SHA-256 and, for a v2-only torrent, its piece layers come from peers.
        let v2_only = magnet.is_v2_only();
        let hash = magnet.info_hash;
        if self.torrents.contains_key(&hash) {
            return Err(ClientError::AlreadyAdded(hash));
        }
        peers.extend(magnet_peers(&magnet));
        // BEP 53 `so=`: only the files the link selects are downloaded; the selection is
        // applied when the metadata says how many files there are.
        if settings.files.is_none() {
            if let Some(ranges) = &magnet.select_only {
                let last = ranges.iter().map(|r| r.last).max().unwrap_or(0);
                let n = last.saturating_add(1).min(crate::limits::MAX_FILES as u32);
                settings.files = Some(
                    (0..n)
                        .map(|i| ranges.iter().any(|r| r.contains(i)))
                        .collect(),
                );
            }
        }
        if settings.source == "api" {
            settings.source = "magnet".into();
        }
        let shard = shard_of(&hash, self.loops.len());
        let map = self.maps[shard as usize].clone();
        // Into its loop with nobody to talk to yet: no peer can give it the metadata before
        // `Added` is published, so subscribers see `Added` first.
        let id = self
            .call(shard, move |d| {
                let now = d.now();
                let id = match v2_only {
                    true => d.session().add_magnet_v2(hash, now)?,
                    false => d.session().add_magnet(hash, now)?,
                };
                map.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, hash);
                Some(id)
            })?
            .ok_or(ClientError::Refused(hash))?;
        if !metadata_only {
            if let Some(store) = &self.store {
                store.save_magnet(&hash, uri)?;
            }
        }
        let tiers = if magnet.trackers.is_empty() {
            Vec::new()
        } else {
            vec![magnet.trackers.clone()]
        };
        // Unknown size: announce as a leecher with something left.
        let progress = Progress {
            uploaded: 0,
            downloaded: 0,
            left: 1,
        };
        if settings.added == 0 {
            settings.added = now_unix();
        }
        tracing::info!("added magnet {hash}; fetching its metadata");
        // A magnet link runs until its metadata arrives (not queued, not complete); the
        // queue takes it from there.
        let name = magnet.display_name.clone();
        self.torrents.insert(
            hash,
            Entry {
                display_name: name.clone(),
                magnet: Some(uri.to_string()),
                metadata_only,
                trackers: tiers.clone(),
                id: Some(id),
                saved: Some(0),
                peers: peers.clone(),
                ..Entry::new(shard, settings)
            },
        );
        self.enqueue(hash);
        self.events.publish(ClientEvent::Added {
            info_hash: hash,
            name: name.unwrap_or_else(|| hash.to_hex()),
            verified: 0,
            pieces: 0,
            source: DataSource::Magnet,
        });
        // Now the world may reach it: incoming connections routed, peers dialled, trackers.
        self.route(hash, shard, true);
        self.loops[shard as usize].post(move |d| {
            let now = d.now();
            d.session().add_peers(id, &peers, now);
        });
        self.progress.insert(hash, progress);
        if let Some(t) = self.trackers.as_mut() {
            t.add(hash, &tiers, progress);
        }
        Ok((hash, None))
    }

    /// Starts a magnet torrent whose metadata arrived: a .torrent is written to the state
    /// folder, storage opened (resume data or a check, as for any torrent) and the torrent
    /// started in place, keeping its peers.
    pub fn start_magnet(&mut self, hash: InfoHash, info: Arc<Info>) -> Result<(), ClientError> {
        let pool = self.pool.clone();
        let resume_dir = self.resume_dir();
        let data_dir = self.data_dir.clone();
        let allocation = self.allocation;
        let Some(e) = self.torrents.get_mut(&hash) else {
            return Ok(());
        };
        if e.magnet.is_none() {
            return Ok(());
        }
        e.info = Some(info.clone());
        if let Some(lsd) = self.lsd.as_mut() {
            lsd.torrents_changed();
        }
        if e.metadata_only {
            return Ok(());
        }
        e.magnet = None;
        let (Some(id), shard) = (e.id, e.shard) else {
            return Ok(());
        };
        if let Some(files) = e.settings.files.as_mut() {
            files.resize(info.files().len(), false);
        }
        if let Some(p) = e.settings.file_priorities.as_mut() {
            p.resize(info.files().len(), FilePriority::Skip);
        }
        let dir = e.settings.save_dir.clone().unwrap_or(data_dir);
        let skip = open::unneeded_files(&info, e.settings.priorities().as_deref());
        let opened = open::open(
            &info,
            &dir,
            (e.mode(), allocation, &skip),
            &pool,
            false,
            (resume_dir.as_deref(), None),
        );
        let opened = match opened {
            Ok(o) => o,
            Err(err) => {
                e.problem = Some(err.to_string());
                return Err(err);
            }
        };
        e.storage = Some(opened.storage.clone());
        e.saved = (!opened.unsaved()).then_some(opened.have.count());
        let order = Order::of(&e.settings);
        let (have, storage) = (opened.have.clone(), opened.storage.clone());
        let started = self.call(shard, move |d| {
            let now = d.now();
            let ok = d.session().start_torrent(id, &have, now);
            if ok {
                d.attach_storage(id, storage);
                order.apply(d, id, now);
            }
            ok
        })?;
        if !started {
            return Err(ClientError::Refused(hash));
        }
        if let Some(store) = &self.store {
            // The .torrent a user would have added: the verified info dictionary and the
            // link's trackers (keys in bencode's order: announce-list before info).
            let e = &self.torrents[&hash];
            store.save_torrent(&hash, &torrent_file(&info, &e.trackers))?;
            store.forget_magnet(&hash);
            store.save_settings(&hash, &e.settings)?;
        }
        tracing::info!("magnet {hash}: metadata received, {} started", info.name());
        self.events.publish(ClientEvent::Started {
            info_hash: hash,
            verified: opened.have.count(),
        });
        Ok(())
    }

    /// Puts registered torrents into their loops' sessions: one round trip per loop, and one
    /// message per loop for the routes. Returns the torrents a session refused.
    fn activate(&mut self, torrents: Vec<(InfoHash, Bitfield)>) -> Vec<InfoHash> {
        type Job = (
            InfoHash,
            Arc<Info>,
            Arc<Storage>,
            Bitfield,
            (Option<u64>, Option<u64>),
            Order,
            (Vec<SocketAddr>, bool),
        );
        let mut by_shard: BTreeMap<u32, Vec<Job>> = BTreeMap::new();
        for (hash, have) in torrents {
            let Some(e) = self.torrents.get(&hash) else {
                continue;
            };
            let (Some(info), Some(storage)) = (e.info.clone(), e.storage.clone()) else {
                continue;
            };
            by_shard.entry(e.shard).or_default().push((
                hash,
                info,
                storage,
                have,
                (e.settings.upload_limit, e.settings.download_limit),
                Order::of(&e.settings),
                (e.peers.clone(), e.settings.seed_mode),
            ));
        }
        let mut failed = Vec::new();
        let mut routes: Vec<(InfoHash, u32)> = Vec::new();
        for (shard, jobs) in by_shard {
            let hashes: Vec<InfoHash> = jobs.iter().map(|j| j.0).collect();
            let map = self.maps[shard as usize].clone();
            let started = self.call(shard, move |d| {
                let now = d.now();
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                jobs.into_iter()
                    .map(
                        |(hash, info, storage, have, (up, down), prio, (peers, seed_mode))| {
                            let id = d.session().add_torrent(info, &have, now);
                            let mut left = 0;
                            if let Some(id) = id {
                                map.insert(id, hash);
                                if seed_mode {
                                    d.session().set_seed_mode(id);
                                }
                                d.session().set_rate_limits(id, up, down, now);
                                prio.apply(d, id, now);
                                d.attach_storage(id, storage);
                                d.session().add_peers(id, &peers, now);
                                left = d.session().bytes_left(id);
                            }
                            (hash, id, left)
                        },
                    )
                    .collect::<Vec<_>>()
            });
            let Ok(started) = started else {
                failed.extend(hashes);
                continue;
            };
            for (hash, id, left) in started {
                let Some(id) = id else {
                    failed.push(hash);
                    continue;
                };
                routes.push((hash, shard));
                if let Some(alias) = self.torrents.get(&hash).and_then(|e| e.info.as_ref()) {
                    if let Some(alias) = alias.v2_alias() {
                        routes.push((alias, shard));
                    }
                }
                if let Some(lsd) = self.lsd.as_mut() {
                    lsd.torrents_changed();
                }
                let e = self.torrents.get_mut(&hash).expect("registered");
                e.id = Some(id);
                e.queued = false;
                e.last_activity = Instant::now();
                // What the first announce says is left: exact, from the session, so a seed
                // never announces as a leecher and then `completed`.
                let progress = Progress {
                    uploaded: 0,
                    downloaded: 0,
                    left,
                };
                self.progress.insert(hash, progress);
                if let Some(t) = self.trackers.as_mut() {
                    t.add(hash, &e.trackers, progress);
                }
            }
        }
        for (i, l) in self.loops.iter().enumerate() {
            let theirs: Vec<(InfoHash, u32)> = routes
                .iter()
                .filter(|(_, owner)| *owner != i as u32)
                .copied()
                .collect();
            if !theirs.is_empty() {
                l.post(move |d| {
                    for (hash, owner) in theirs {
                        d.session().set_route(hash, Some(owner));
                    }
                });
            }
        }
        failed
    }

    /// Tells the loops that these torrents (info hash, and a hybrid's v2 name) are on their
    /// way in, their data about to be checked: the loop that will own each holds incoming
    /// connections for it ([`crate::core::Session::expect_torrent`]) and the others route
    /// them there, so a peer that dials during the check is answered when it ends rather
    /// than refused. [`State::settle_expected`] undoes it for those that did not come.
    fn expect(&self, torrents: &[Expected]) {
        if torrents.is_empty() {
            return;
        }
        let mut answers = Vec::with_capacity(self.loops.len());
        for (i, l) in self.loops.iter().enumerate() {
            let i = i as u32;
            let names: Vec<(InfoHash, u32)> = torrents
                .iter()
                .flat_map(|&(hash, alias, owner)| {
                    std::iter::once(hash).chain(alias).map(move |h| (h, owner))
                })
                .collect();
            let (tx, rx) = mpsc::sync_channel(1);
            l.post(move |d| {
                for (name, owner) in names {
                    if owner == i {
                        d.session().expect_torrent(name);
                    } else {
                        d.session().set_route(name, Some(owner));
                    }
                }
                let _ = tx.send(());
            });
            answers.push(rx);
        }
        // A loop runs posted closures after the turn that brought them, so a connection in
        // that turn would not see them yet: the check starts once every loop has.
        for rx in answers {
            let _ = rx.recv_timeout(CALL_TIMEOUT);
        }
    }

    /// The end of [`State::expect`]: connections still held for a torrent that is not in its
    /// loop now (its add failed, it is paused or queued) are closed, and the routes to it
    /// removed.
    fn settle_expected(&self, torrents: &[Expected]) {
        if torrents.is_empty() {
            return;
        }
        let absent: Vec<(InfoHash, u32)> = torrents
            .iter()
            .filter(|(hash, ..)| self.torrents.get(hash).is_none_or(|e| e.id.is_none()))
            .flat_map(|&(hash, alias, owner)| {
                std::iter::once(hash).chain(alias).map(move |h| (h, owner))
            })
            .collect();
        if absent.is_empty() {
            return;
        }
        for (i, l) in self.loops.iter().enumerate() {
            let i = i as u32;
            let absent = absent.clone();
            l.post(move |d| {
                let now = d.now();
                for (name, owner) in absent {
                    if owner == i {
                        d.session().forget_expected(&name, now);
                    } else {
                        d.session().set_route(name, None);
                    }
                }
            });
        }
    }

    /// Takes a torrent out of its loop's session (closing its peers), saves its resume data
    /// and sends `stopped` to its trackers; it stays registered.
    pub(crate) fn deactivate(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        let Some(entry) = self.torrents.get(&hash) else {
            return Ok(());
        };
        let Some(id) = entry.id else {
            return Ok(());
        };
        let shard = entry.shard;
        if let Some(t) = self.trackers.as_mut() {
            t.remove(hash);
        }
        self.progress.remove(&hash);
        self.route(hash, shard, false);
        let map = self.maps[shard as usize].clone();
        let (have, totals, part) = self.call(shard, move |d| {
            let now = d.now();
            let have = d.session().have(id).cloned();
            let stats = d.session().stats(id);
            let totals = stats.map(|st| (st.uploaded, st.downloaded));
            let part = stats.map(metrics::torrent_part);
            d.session().remove_torrent(id, now);
            d.detach_storage(id);
            map.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            (have, totals, part)
        })?;
        if let Some(part) = part {
            self.departed.add(part);
        }
        let resume_dir = self.resume_dir();
        let entry = self.torrents.get_mut(&hash).expect("checked above");
        entry.id = None;
        // This run's totals and seeding time go into the settings (kept by the caller).
        let (up, down) = totals.unwrap_or(entry.run_totals);
        entry.settings.uploaded_total += up;
        entry.settings.downloaded_total += down;
        entry.run_totals = (0, 0);
        if let Some(since) = entry.seeding_since.take() {
            entry.settings.seeding_ms += since.elapsed().as_millis() as u64;
        }
        if let (Some(have), Some(storage), Some(dir)) = (have, &entry.storage, resume_dir) {
            entry.saved = Some(have.count());
            // Writes its loop submitted before it left may still be landing.
            storage.wait_idle(DRAIN_TIMEOUT);
            open::save_resume(storage, have, &dir)?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------------- state changes

    /// The first half of a check of the torrent's data from scratch (resume data ignored):
    /// takes it out of its loop, ends seed mode and marks it checking. The check itself runs
    /// without the registry's lock ([`super::TorrentHandle::recheck`]); then
    /// [`State::finish_recheck`].
    pub(crate) fn begin_recheck(&mut self, hash: InfoHash) -> Result<RecheckJob, ClientError> {
        if self.entry(hash)?.magnet.is_some() {
            return Err(ClientError::NoMetadata(hash));
        }
        self.refuse_while_moving(hash)?;
        self.refuse_while_checking(hash)?;
        self.reopen_if_changed(hash)?;
        self.deactivate(hash)?;
        let pool = self.pool.clone();
        let entry = self.entry_mut(hash)?;
        let storage = entry
            .storage
            .clone()
            .expect("torrents with metadata have storage");
        let progress = Arc::new(AtomicU64::new(0));
        entry.settings.seed_mode = false;
        entry.saved = None;
        entry.checking = Some(progress.clone());
        let expected = (hash, storage.info().v2_alias(), entry.shard);
        self.save_settings(&hash)?;
        // Peers that dial during the check wait for its end (unless it is paused meanwhile).
        if !self.entry(hash)?.settings.paused {
            self.expect(&[expected]);
        }
        Ok(RecheckJob {
            storage,
            pool,
            progress,
        })
    }

    /// Whether a file of the torrent, opened on its first access, was found changed since
    /// its resume data was validated (`Storage::open_lazy`), and no check has begun since:
    /// its data must be checked again.
    pub(crate) fn changed_on_disk(&self, hash: InfoHash) -> bool {
        self.torrents.get(&hash).is_some_and(|e| {
            e.checking.is_none() && e.storage.as_ref().is_some_and(|s| s.changed_on_disk())
        })
    }

    /// A storage that found a file changed since its resume data was validated refuses that
    /// file's reads: it is replaced by one opened anew, which takes the files as they are
    /// now, before they are checked.
    fn reopen_if_changed(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        let allocation = self.allocation;
        let entry = self.entry_mut(hash)?;
        let (Some(info), Some(old)) = (entry.info.clone(), entry.storage.as_ref()) else {
            return Ok(());
        };
        if !old.changed_on_disk() {
            return Ok(());
        }
        let dir = old.download_dir().to_path_buf();
        let skip = open::unneeded_files(&info, entry.settings.priorities().as_deref());
        let storage = open::open_storage(&info, &dir, (entry.mode(), allocation), &skip)?;
        entry.storage = Some(Arc::new(storage));
        Ok(())
    }

    /// The end of a check: `have` is what it found. Kept as resume data; the torrent goes
    /// back in its loop unless it was paused (or queued) meanwhile.
    pub(crate) fn finish_recheck(
        &mut self,
        hash: InfoHash,
        have: Bitfield,
    ) -> Result<(), ClientError> {
        let resume_dir = self.resume_dir();
        let entry = self.entry_mut(hash)?;
        entry.checking = None;
        let storage = entry
            .storage
            .clone()
            .expect("torrents with metadata have storage");
        let hold = entry.settings.paused || entry.queued;
        let expected = [(hash, storage.info().v2_alias(), entry.shard)];
        // What the check found is what its status shows while it stays out of its loop.
        entry.saved = Some(have.count());
        let saved = match resume_dir {
            Some(dir) => open::save_resume(&storage, have.clone(), &dir),
            None => Ok(()),
        };
        let refused = !hold && saved.is_ok() && self.activate(vec![(hash, have)]).contains(&hash);
        self.settle_expected(&expected);
        saved?;
        if refused {
            return Err(ClientError::Refused(hash));
        }
        Ok(())
    }

    /// Refuses what must wait for a check to end (remove, move, another check).
    pub(crate) fn refuse_while_checking(&self, hash: InfoHash) -> Result<(), ClientError> {
        if self.entry(hash)?.checking.is_some() {
            return Err(ClientError::InvalidArgument(format!(
                "{hash} is being checked; try again when the check has ended"
            )));
        }
        Ok(())
    }

    pub fn pause(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        let e = self.entry(hash)?;
        if e.magnet.is_some() {
            return Err(ClientError::NoMetadata(hash));
        }
        if e.settings.paused {
            return Ok(());
        }
        self.deactivate(hash)?;
        let e = self.entry_mut(hash)?;
        e.settings.paused = true;
        e.queued = false;
        self.save_settings(&hash)?;
        self.events.publish(ClientEvent::Paused { info_hash: hash });
        if self.queue_config.enabled {
            // Its place may go to a queued torrent.
            self.apply_queue_now();
        }
        Ok(())
    }

    pub fn resume(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        let e = self.entry(hash)?;
        if e.id.is_some() || e.magnet.is_some() || e.queued {
            return Ok(());
        }
        if e.checking.is_some() {
            // The check's end puts it back.
            self.entry_mut(hash)?.settings.paused = false;
            return self.save_settings(&hash);
        }
        if self.queues_new(e.settings.force_start) && e.problem.is_none() {
            // Its turn comes from the queue.
            let e = self.entry_mut(hash)?;
            e.settings.paused = false;
            e.queued = true;
            self.save_settings(&hash)?;
            self.events
                .publish(ClientEvent::Resumed { info_hash: hash });
            self.apply_queue_now();
            return Ok(());
        }
        self.start(hash)?;
        self.events
            .publish(ClientEvent::Resumed { info_hash: hash });
        Ok(())
    }

    /// Puts a torrent that is out of its loop (paused, held, queued) back in.
    pub(crate) fn start(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        let data_dir = self.data_dir.clone();
        let pool = self.pool.clone();
        let resume_dir = self.resume_dir();
        let allocation = self.allocation;
        let entry = self.entry_mut(hash)?;
        if entry.id.is_some() || entry.magnet.is_some() {
            return Ok(());
        }
        if entry.moving.is_some() {
            // It starts where its data went, when the move ends.
            entry.settings.paused = false;
            return self.save_settings(&hash);
        }
        let info = entry.info.clone().ok_or(ClientError::NoMetadata(hash))?;
        let dir = entry.settings.save_dir.clone().unwrap_or(data_dir);
        // A file found changed since its resume data was validated: opened anew, and
        // checked below unless its resume data (stamped before the change) says otherwise.
        let reopened =
            entry.problem.is_some() || entry.storage.as_ref().is_some_and(|s| s.changed_on_disk());
        if reopened {
            let skip = open::unneeded_files(&info, entry.settings.priorities().as_deref());
            let storage = open::open_storage(&info, &dir, (entry.mode(), allocation), &skip)?;
            entry.storage = Some(Arc::new(storage));
            entry.problem = None;
        }
        entry.settings.paused = false;
        let storage = entry
            .storage
            .clone()
            .expect("torrents with metadata have storage");
        let held = entry.held_have.take().filter(|_| !reopened);
        let expected = [(hash, info.v2_alias(), entry.shard)];
        let (have, source) = match held {
            Some(have) => (have, DataSource::Resumed),
            None => {
                // It may be checked: peers that dial meanwhile wait for it.
                self.expect(&expected);
                open::restore(&storage, &pool, false, reopened, resume_dir.as_deref())
            }
        };
        let entry = self.entry_mut(hash)?;
        if matches!(source, DataSource::Checked { .. }) {
            entry.saved = None;
        }
        let saved = self.save_settings(&hash);
        let refused = saved.is_ok() && self.activate(vec![(hash, have)]).contains(&hash);
        self.settle_expected(&expected);
        saved?;
        if refused {
            self.entry_mut(hash)?.settings.paused = true;
            return Err(ClientError::Refused(hash));
        }
        Ok(())
    }

    pub fn set_limits(
        &mut self,
        hash: InfoHash,
        up: Option<u64>,
        down: Option<u64>,
    ) -> Result<(), ClientError> {
        if up == Some(0) || down == Some(0) {
            return Err(ClientError::InvalidArgument(
                "a rate limit must be above 0 bytes per second (None: unlimited)".into(),
            ));
        }
        let entry = self.entry_mut(hash)?;
        entry.settings.upload_limit = up;
        entry.settings.download_limit = down;
        let (id, shard) = (entry.id, entry.shard);
        self.save_settings(&hash)?;
        if let Some(id) = id {
            self.call(shard, move |d| {
                let now = d.now();
                d.session().set_rate_limits(id, up, down, now);
            })?;
        }
        Ok(())
    }

    pub fn set_files(&mut self, hash: InfoHash, wanted: Vec<bool>) -> Result<(), ClientError> {
        // A wanted file keeps its priority; one wanted again is Normal.
        let old = self.entry(hash)?.settings.priorities().unwrap_or_default();
        let p = wanted
            .iter()
            .enumerate()
            .map(|(i, &w)| match (w, old.get(i).copied()) {
                (false, _) => FilePriority::Skip,
                (true, Some(p)) if p.wanted() => p,
                (true, _) => FilePriority::Normal,
            })
            .collect();
        self.set_file_priorities(hash, p)
    }

    pub fn set_file_priorities(
        &mut self,
        hash: InfoHash,
        prios: Vec<FilePriority>,
    ) -> Result<(), ClientError> {
        let allocation = self.allocation;
        let entry = self.entry_mut(hash)?;
        let info = entry.info.clone().ok_or(ClientError::NoMetadata(hash))?;
        if prios.len() != info.files().len() {
            return Err(ClientError::InvalidArgument(format!(
                "the selection names {} files; the torrent has {}",
                prios.len(),
                info.files().len()
            )));
        }
        let p = core_priorities(&prios);
        // A file wanted now that was skipped when the storage was opened is created: the
        // storage is opened again (existing files as they are) and replaces the old one.
        let skip = open::unneeded_files(&info, Some(&prios));
        let reopen = entry.storage.as_ref().filter(|s| {
            s.is_writable()
                && s.file_states().enumerate().any(|(i, st)| {
                    st == FileState::Missing && !skip.get(i).copied().unwrap_or(false)
                })
        });
        let (storage, old) = match reopen {
            Some(s) => {
                let dir = s.download_dir().to_path_buf();
                let opened = Arc::new(open::open_storage(
                    &info,
                    &dir,
                    (entry.mode(), allocation),
                    &skip,
                )?);
                (Some(opened.clone()), entry.storage.replace(opened))
            }
            None => (None, None),
        };
        entry.settings.set_priorities(prios);
        let (id, shard) = (entry.id, entry.shard);
        self.save_settings(&hash)?;
        if let Some(id) = id {
            self.call(shard, move |d| {
                let now = d.now();
                if let Some(s) = storage {
                    d.attach_storage(id, s);
                }
                d.session().set_file_priorities(id, &p, now);
            })?;
        }
        // What went through the old storage is made durable, as its successor's resume data
        // will count on it (it syncs only what it wrote itself).
        if let Some(old) = old {
            old.wait_idle(Duration::from_secs(5));
            if let Err(e) = old.sync() {
                tracing::warn!("{hash}: {e}");
            }
        }
        Ok(())
    }

    /// Sets sequential download and/or first/last-piece priority (`None`: unchanged).
    pub fn set_order(
        &mut self,
        hash: InfoHash,
        sequential: Option<bool>,
        first_last: Option<bool>,
    ) -> Result<(), ClientError> {
        let entry = self.entry_mut(hash)?;
        if let Some(on) = sequential {
            entry.settings.sequential = on;
        }
        if let Some(on) = first_last {
            entry.settings.first_last_piece_priority = on;
        }
        let (id, shard) = (entry.id, entry.shard);
        let (seq, fl) = (
            entry.settings.sequential,
            entry.settings.first_last_piece_priority,
        );
        self.save_settings(&hash)?;
        if let Some(id) = id {
            self.call(shard, move |d| {
                let now = d.now();
                d.session().set_sequential(id, seq);
                d.session().set_first_last_piece_priority(id, fl, now);
            })?;
        }
        Ok(())
    }

    pub fn add_peers(&mut self, hash: InfoHash, peers: Vec<SocketAddr>) -> Result<(), ClientError> {
        let entry = self.entry_mut(hash)?;
        entry.peers.extend(peers.iter().copied());
        let (id, shard) = (entry.id, entry.shard);
        if let Some(id) = id {
            self.loops[shard as usize].post(move |d| {
                let now = d.now();
                d.session().add_peers(id, &peers, now);
            });
        }
        Ok(())
    }

    pub fn remove(&mut self, hash: InfoHash, delete_data: bool) -> Result<(), ClientError> {
        self.refuse_while_moving(hash)?;
        self.refuse_while_checking(hash)?;
        let e = self.entry(hash)?;
        let (magnet, name) = (e.magnet.is_some(), e.name(&hash));
        if magnet {
            // Still fetching: nothing on disk but the link.
            if let Some(t) = self.trackers.as_mut() {
                t.remove(hash);
            }
            let e = self.torrents.remove(&hash).expect("checked above");
            self.route(hash, e.shard, false);
            if let Some(id) = e.id {
                let map = self.maps[e.shard as usize].clone();
                let part = self.call(e.shard, move |d| {
                    let now = d.now();
                    let part = d.session().stats(id).map(metrics::torrent_part);
                    d.session().remove_torrent(id, now);
                    d.detach_storage(id);
                    map.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    part
                })?;
                if let Some(part) = part {
                    self.departed.add(part);
                }
            }
        } else {
            self.deactivate(hash)?;
            let e = self.torrents.remove(&hash).expect("checked above");
            if delete_data {
                if let (Some(info), Some(storage)) = (&e.info, e.storage) {
                    let dir = storage.download_dir().to_path_buf();
                    drop(storage);
                    delete_files(&dir, info)?;
                }
            }
        }
        if let Some(store) = &self.store {
            store.forget(&hash);
        }
        if let Some(t) = self.trackers.as_mut() {
            t.forget(hash);
        }
        self.dequeue(hash);
        tracing::info!(
            "removed {name} ({hash}){}",
            if delete_data { " and its data" } else { "" }
        );
        self.events.publish(ClientEvent::Removed {
            info_hash: hash,
            data_deleted: delete_data && !magnet,
        });
        if self.queue_config.enabled {
            self.apply_queue_now();
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------- reports

    pub fn info(&self, hash: InfoHash) -> Result<Option<Arc<Info>>, ClientError> {
        Ok(self.entry(hash)?.info.clone())
    }

    pub(crate) fn live(&self, shard: u32) -> Result<Vec<Live>, ClientError> {
        self.call(shard, collect_live)
    }

    /// Every torrent's status: one round trip per loop.
    pub fn list(&self) -> Vec<TorrentStatus> {
        let mut by_loop: BTreeMap<(u32, TorrentId), Live> = BTreeMap::new();
        for shard in 0..self.loops.len() as u32 {
            for l in self.live(shard).unwrap_or_default() {
                by_loop.insert((shard, l.id), l);
            }
        }
        let positions: HashMap<InfoHash, usize> = self
            .queue
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i + 1))
            .collect();
        self.torrents
            .iter()
            .map(|(hash, e)| {
                let live = e.id.and_then(|id| by_loop.get(&(e.shard, id)));
                let pos = positions.get(hash).copied().unwrap_or(0);
                status(hash, e, live, self, pos)
            })
            .collect()
    }

    pub fn status(&self, hash: InfoHash) -> Result<TorrentStatus, ClientError> {
        let e = self.entry(hash)?;
        let live = match e.id {
            Some(id) => self.live(e.shard)?.into_iter().find(|l| l.id == id),
            None => None,
        };
        let pos = self.queue_position(hash);
        Ok(status(&hash, e, live.as_ref(), self, pos))
    }

    pub fn peers(&self, hash: InfoHash) -> Result<Vec<PeerInfo>, ClientError> {
        let e = self.entry(hash)?;
        let Some(id) = e.id else {
            return Ok(Vec::new());
        };
        let pieces = e
            .info
            .as_ref()
            .map_or(1, |i| i.lengths().piece_count().max(1));
        let peers = self.call(e.shard, move |d| {
            let now = d.now();
            d.session().peers(id, now)
        })?;
        Ok(peers
            .into_iter()
            .map(|p| PeerInfo {
                addr: p.addr.to_string(),
                client: p.client,
                outgoing: p.outgoing,
                am_choking: p.am_choking,
                am_interested: p.am_interested,
                peer_choking: p.peer_choking,
                peer_interested: p.peer_interested,
                download_rate: p.down_rate,
                upload_rate: p.up_rate,
                progress: f64::from(p.pieces) / f64::from(pieces),
                snubbed: p.snubbed,
                encryption: p.crypto.name(),
            })
            .collect())
    }

    pub fn files(&self, hash: InfoHash) -> Result<Vec<FileStatus>, ClientError> {
        let e = self.entry(hash)?;
        let Some(info) = e.info.clone() else {
            return Ok(Vec::new());
        };
        let have = match e.id {
            Some(id) => self.call(e.shard, move |d| d.session().have(id).cloned())?,
            // Queued since it was added: what its check found.
            None if e.held_have.is_some() => e.held_have.clone(),
            // Out of the session (stopped or queued): what its resume data says it holds,
            // the same pieces its status counts (`Entry::saved`).
            None if e.saved.is_some() => self.resume_dir().and_then(|dir| {
                crate::storage::ResumeData::load(&dir, info.info_hash())
                    .ok()
                    .map(|r| r.verified)
            }),
            None => None,
        };
        let piece_len = u64::from(info.lengths().piece_len());
        let prios = e.settings.priorities();
        Ok(info
            .files()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.attr.padding)
            .map(|(i, f)| {
                let done = match (&have, f.length) {
                    (_, 0) | (None, _) => 0,
                    (Some(have), _) => {
                        let (start, end) = (f.offset, f.offset + f.length);
                        (start / piece_len..=(end - 1) / piece_len)
                            .filter(|&p| have.get(p as u32))
                            .map(|p| end.min((p + 1) * piece_len) - start.max(p * piece_len))
                            .sum()
                    }
                };
                FileStatus {
                    path: f.display_path(),
                    length: f.length,
                    done,
                    wanted: e.settings.files.as_ref().is_none_or(|w| w[i]),
                    priority: prios
                        .as_ref()
                        .and_then(|p| p.get(i).copied())
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    pub fn request_latency(&self, hash: InfoHash) -> Result<Option<Histogram<u64>>, ClientError> {
        let e = self.entry(hash)?;
        let Some(id) = e.id else { return Ok(None) };
        self.call(e.shard, move |d| {
            d.session()
                .stats(id)
                .and_then(|st| st.request_latency_us.as_deref().cloned())
        })
    }

    pub fn metrics(&self) -> Metrics {
        let mut m = self.departed.clone();
        for shard in 0..self.loops.len() as u32 {
            if let Ok(part) = self.call(shard, metrics::gather) {
                m.add(part);
            }
        }
        if let Some(t) = &self.trackers {
            metrics::merge(&mut m.announce_us, Some(t.latency_us()));
        }
        if let Some(l) = &self.lsd {
            m.lsd = l.stats();
        }
        m.torrents_active = self.torrents.values().filter(|e| e.id.is_some()).count() as u64;
        m.torrents_paused = self.torrents.len() as u64 - m.torrents_active;
        m
    }

    // ------------------------------------------------------------------- housekeeping

    /// Saves resume data of the active torrents that verified pieces since the last save
    /// (`all`: of every active torrent).
    pub fn save_resume(&mut self, all: bool) {
        let haves = self.collect_haves();
        self.save_haves(haves, all, false);
    }

    /// Every active torrent's verified pieces, by (loop, id): one round trip per loop.
    pub fn collect_haves(&self) -> BTreeMap<(u32, TorrentId), Bitfield> {
        let mut haves = BTreeMap::new();
        for shard in 0..self.loops.len() as u32 {
            let got = self.call(shard, |d| {
                let s = d.session();
                s.torrent_ids()
                    .into_iter()
                    .filter(|id| !s.is_magnet(*id))
                    .filter_map(|id| Some((id, s.have(id)?.clone())))
                    .collect::<Vec<_>>()
            });
            for (id, have) in got.unwrap_or_default() {
                haves.insert((shard, id), have);
            }
        }
        haves
    }

    /// Saves `haves` (from [`State::collect_haves`]) as resume data: those that changed since
    /// the last save, or `all`. With `drain` (the loops have stopped), each storage's last
    /// disk jobs are waited for first, so no late write changes a file after it was stamped.
    pub fn save_haves(
        &mut self,
        mut haves: BTreeMap<(u32, TorrentId), Bitfield>,
        all: bool,
        drain: bool,
    ) {
        let Some(dir) = self.resume_dir() else { return };
        for e in self.torrents.values_mut() {
            let (Some(id), Some(storage)) = (e.id, &e.storage) else {
                continue;
            };
            let Some(have) = haves.remove(&(e.shard, id)) else {
                continue;
            };
            let count = have.count();
            if !all && e.saved == Some(count) {
                continue;
            }
            if drain {
                storage.wait_idle(DRAIN_TIMEOUT);
            }
            match open::save_resume(storage, have, &dir) {
                Ok(()) => e.saved = Some(count),
                Err(err) => tracing::warn!("{err}"),
            }
        }
    }

    /// Refreshes what the trackers are told from the loops (exact bytes left, totals).
    pub fn refresh_progress(&mut self) {
        for shard in 0..self.loops.len() as u32 {
            let Ok(live) = self.live(shard) else { continue };
            for l in live {
                let map = self.maps[shard as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let Some(hash) = map.get(&l.id).copied() else {
                    continue;
                };
                drop(map);
                if let Some(dht) = self.dht.as_mut() {
                    let magnet = self.torrents.get(&hash).is_some_and(|e| e.info.is_none());
                    dht.note_peers(hash, magnet || l.left > 0, l.peers, Instant::now());
                }
                if let Some(p) = self.progress.get_mut(&hash) {
                    *p = Progress {
                        uploaded: l.uploaded,
                        downloaded: l.downloaded,
                        left: l.left,
                    };
                }
            }
        }
    }

    /// Announces, and hands the peers trackers returned to the torrents' loops.
    pub fn pump_trackers(&mut self) {
        let Some(trackers) = self.trackers.as_mut() else {
            return;
        };
        for (hash, peers) in trackers.pump(&self.progress) {
            let Some(e) = self.torrents.get(&hash) else {
                continue;
            };
            let Some(id) = e.id else { continue };
            self.loops[e.shard as usize].post(move |d| {
                let now = d.now();
                d.session().add_peers(id, &peers, now);
            });
        }
    }

    /// Asks the torrent's trackers for peers now (`TorrentHandle::reannounce`); nothing for
    /// a torrent out of its loop.
    pub fn reannounce(&mut self, hash: InfoHash) -> Result<(), ClientError> {
        self.entry(hash)?;
        if let Some(t) = self.trackers.as_mut() {
            t.reannounce(hash);
        }
        Ok(())
    }

    /// A torrent completed: its trackers hear `completed` now, and its resume data is saved.
    pub fn on_completed(&mut self, hash: InfoHash) {
        let Some(e) = self.torrents.get(&hash) else {
            return;
        };
        let (Some(id), shard) = (e.id, e.shard) else {
            return;
        };
        let got = self.call(shard, move |d| {
            let s = d.session();
            let st = s.stats(id).map(|st| (st.uploaded, st.downloaded));
            (st, s.have(id).cloned(), s.bytes_left(id))
        });
        let Ok((stats, have, left)) = got else { return };
        if let Some(e) = self.torrents.get_mut(&hash) {
            if e.settings.completed.is_none() {
                e.settings.completed = Some(now_unix());
                if let Err(err) = self.save_settings(&hash) {
                    tracing::warn!("{hash}: cannot save its completion time: {err}");
                }
            }
        }
        let (uploaded, downloaded) = stats.unwrap_or((0, 0));
        let progress = Progress {
            uploaded,
            downloaded,
            left,
        };
        self.progress.insert(hash, progress);
        if let Some(t) = self.trackers.as_mut() {
            t.completed(hash, progress);
        }
        let dir = self.resume_dir();
        if let (Some(have), Some(dir)) = (have, dir) {
            let e = self.torrents.get_mut(&hash).expect("checked above");
            if let Some(storage) = &e.storage {
                let count = have.count();
                match open::save_resume(storage, have, &dir) {
                    Ok(()) => e.saved = Some(count),
                    Err(err) => tracing::warn!("{err}"),
                }
            }
        }
    }

    /// The session-wide rate limits (bytes per second), shared out between the loops: an
    /// even split first, then following demand ([`State::rebalance_limits`]).
    pub fn set_session_limits(&mut self, up: Option<u64>, down: Option<u64>) {
        let n = self.loops.len().max(1) as u64;
        let split = |l: Option<u64>| l.map(|l| (l / n).max(1));
        self.limits = SharedLimits {
            up,
            down,
            shares: vec![(split(up).unwrap_or(0), split(down).unwrap_or(0)); self.loops.len()],
            totals: Vec::new(),
            at: None,
        };
        let (u, d) = (split(up), split(down));
        for l in &self.loops {
            l.post(move |drv| {
                let now = drv.now();
                drv.session().set_session_rate_limits(u, d, now);
            });
        }
    }

    /// Moves the session-wide limits' unused shares to the loops that need them (see
    /// `share.rs`). Called about once a second.
    pub fn rebalance_limits(&mut self) {
        if (self.limits.up.is_none() && self.limits.down.is_none()) || self.loops.len() < 2 {
            return;
        }
        let mut totals = Vec::with_capacity(self.loops.len());
        for shard in 0..self.loops.len() as u32 {
            let t = self.call(shard, |d| {
                let s = d.session();
                s.torrent_ids()
                    .into_iter()
                    .fold((0u64, 0u64), |(u, dn), id| {
                        s.stats(id)
                            .map_or((u, dn), |st| (u + st.uploaded, dn + st.downloaded))
                    })
            });
            let Ok(t) = t else { return };
            totals.push(t);
        }
        let now = Instant::now();
        let (Some(at), true) = (self.limits.at, self.limits.totals.len() == totals.len()) else {
            self.limits.totals = totals;
            self.limits.at = Some(now);
            return;
        };
        let secs = now.duration_since(at).as_secs_f64().max(0.1);
        let rate = |new: u64, old: u64| (new.saturating_sub(old) as f64 / secs) as u64;
        let used = |pick: fn(&(u64, u64)) -> u64| -> Vec<u64> {
            totals
                .iter()
                .zip(&self.limits.totals)
                .map(|(n, o)| rate(pick(n), pick(o)))
                .collect()
        };
        let (used_up, used_down) = (used(|t| t.0), used(|t| t.1));
        let old_up: Vec<u64> = self.limits.shares.iter().map(|s| s.0).collect();
        let old_down: Vec<u64> = self.limits.shares.iter().map(|s| s.1).collect();
        let up = self
            .limits
            .up
            .map(|l| super::share::rebalance(l, &used_up, &old_up));
        let down = self
            .limits
            .down
            .map(|l| super::share::rebalance(l, &used_down, &old_down));
        for (i, l) in self.loops.iter().enumerate() {
            let u = up.as_ref().map(|v| v[i].max(1));
            let d = down.as_ref().map(|v| v[i].max(1));
            self.limits.shares[i] = (u.unwrap_or(0), d.unwrap_or(0));
            l.post(move |drv| {
                let now = drv.now();
                drv.session().set_session_rate_limits(u, d, now);
            });
        }
        self.limits.totals = totals;
        self.limits.at = Some(now);
    }

    /// Every torrent with where it came from (no loop is asked).
    pub fn sources(&self) -> Vec<(InfoHash, String)> {
        self.torrents
            .iter()
            .map(|(h, e)| (*h, e.settings.source.clone()))
            .collect()
    }
}

/// The core's file priorities for the client's.
fn core_priorities(p: &[FilePriority]) -> Vec<Priority> {
    p.iter()
        .map(|p| match p {
            FilePriority::Skip => Priority::Skip,
            FilePriority::Normal => Priority::Normal,
            FilePriority::High => Priority::High,
            FilePriority::Maximal => Priority::Top,
        })
        .collect()
}

/// What a torrent's loop needs of its download order: file priorities, sequential download
/// and first/last-piece priority, from its settings.
struct Order {
    files: Option<Vec<Priority>>,
    sequential: bool,
    first_last: bool,
}

impl Order {
    fn of(s: &Settings) -> Order {
        Order {
            files: s.priorities().map(|p| core_priorities(&p)),
            sequential: s.sequential,
            first_last: s.first_last_piece_priority,
        }
    }

    /// Applies it to torrent `id` of the loop's session.
    fn apply(self, d: &mut Driver, id: TorrentId, now: crate::core::Time) {
        if self.sequential {
            d.session().set_sequential(id, true);
        }
        if self.first_last {
            d.session().set_first_last_piece_priority(id, true, now);
        }
        if let Some(p) = self.files {
            d.session().set_file_priorities(id, &p, now);
        }
    }
}

/// A magnet link's `x.pe` peers that resolve (host names through the system resolver).
pub fn magnet_peers(magnet: &Magnet) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
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

/// The bytes of a .torrent holding `info` and `tiers` of trackers.
fn torrent_file(info: &Info, tiers: &[Vec<String>]) -> Vec<u8> {
    let mut bytes = b"d".to_vec();
    if tiers.iter().any(|t| !t.is_empty()) {
        bytes.extend_from_slice(b"13:announce-listl");
        for tier in tiers {
            bytes.push(b'l');
            for t in tier {
                bytes.extend_from_slice(format!("{}:", t.len()).as_bytes());
                bytes.extend_from_slice(t.as_bytes());
            }
            bytes.push(b'e');
        }
        bytes.push(b'e');
    }
    bytes.extend_from_slice(b"4:info");
    bytes.extend_from_slice(info.raw());
    // A v2 torrent's piece layers (fetched from peers for a magnet link) go with it.
    if let Some(layers) = info.piece_layers_bencoded() {
        bytes.extend_from_slice(b"12:piece layers");
        bytes.extend_from_slice(&layers);
    }
    bytes.push(b'e');
    bytes
}

fn collect_live(d: &mut Driver) -> Vec<Live> {
    let now = d.now();
    let s = d.session();
    s.torrent_ids()
        .into_iter()
        .map(|id| Live {
            id,
            have: s.have(id).map_or(0, Bitfield::count),
            left: if s.is_magnet(id) { 1 } else { s.bytes_left(id) },
            rates: s.rates(id, now),
            downloaded: s.stats(id).map_or(0, |st| st.downloaded),
            uploaded: s.stats(id).map_or(0, |st| st.uploaded),
            peers: s.peer_count(id),
            error: s.error(id).map(str::to_owned),
        })
        .collect()
}

fn status(hash: &InfoHash, e: &Entry, live: Option<&Live>, s: &State, pos: usize) -> TorrentStatus {
    let data_dir = &s.data_dir;
    let (size, pieces) = e
        .info
        .as_ref()
        .map_or((0, 0), |i| (i.total_len(), i.lengths().piece_count()));
    let have = live.map_or(e.saved.unwrap_or(0), |l| l.have);
    let state = match (e.id, live) {
        _ if e.moving.is_some() => TorrentState::Moving,
        _ if e.checking.is_some() => TorrentState::Checking,
        _ if e.magnet.is_some() => TorrentState::Metadata,
        (None, _) if e.problem.is_some() => TorrentState::Error,
        (None, _) if e.queued && !e.settings.paused => TorrentState::Queued,
        (None, _) => TorrentState::Paused,
        (Some(_), Some(l)) if l.error.is_some() => TorrentState::Error,
        (Some(_), Some(l)) if l.left == 0 => TorrentState::Seeding,
        (Some(_), None) if have == pieces => TorrentState::Seeding,
        _ => TorrentState::Downloading,
    };
    let piece_len = e
        .info
        .as_ref()
        .map_or(0, |i| u64::from(i.lengths().piece_len()));
    let done = (u64::from(have) * piece_len).min(size);
    let (run_up, run_down) = live.map_or(e.run_totals, |l| (l.uploaded, l.downloaded));
    let uploaded_total = e.settings.uploaded_total + run_up;
    let downloaded_total = e.settings.downloaded_total + run_down;
    let seeding_ms = e.settings.seeding_ms
        + e.seeding_since
            .map_or(0, |t| t.elapsed().as_millis() as u64);
    TorrentStatus {
        info_hash: hash.to_hex(),
        name: e.name(hash),
        size,
        pieces,
        pieces_have: have,
        progress: f64::from(have) / f64::from(pieces.max(1)),
        bytes_left: live.map_or(size.saturating_sub(u64::from(have) * piece_len), |l| l.left),
        state,
        download_rate: live.map_or(0, |l| l.rates.0),
        upload_rate: live.map_or(0, |l| l.rates.1),
        downloaded: live.map_or(0, |l| l.downloaded),
        uploaded: live.map_or(0, |l| l.uploaded),
        peers: live.map_or(0, |l| l.peers),
        upload_limit: e.settings.upload_limit,
        download_limit: e.settings.download_limit,
        source: e.settings.source.clone(),
        save_dir: e
            .settings
            .save_dir
            .clone()
            .unwrap_or_else(|| data_dir.to_path_buf()),
        error: e
            .problem
            .clone()
            .or_else(|| live.and_then(|l| l.error.clone())),
        category: e.settings.category.clone(),
        tags: e.settings.tags.iter().cloned().collect(),
        uploaded_total,
        downloaded_total,
        ratio: policy::ratio(uploaded_total, downloaded_total, done),
        seeding_time: seeding_ms / 1000,
        inactive_time: if e.id.is_some() {
            e.last_activity.elapsed().as_secs()
        } else {
            0
        },
        share_limits: e.settings.share_limits,
        effective_share_limits: e.settings.share_limits.resolve(&s.share_limits),
        queue_position: pos,
        force_start: e.settings.force_start,
        sequential: e.settings.sequential,
        first_last_piece_priority: e.settings.first_last_piece_priority,
        moving: e.moving.as_ref().map(|m| m.fraction()),
        checking: e.checking.as_ref().map(|done| {
            let done = done.load(std::sync::atomic::Ordering::Relaxed) as f64;
            (done / size.max(1) as f64).min(1.0)
        }),
        added_on: e.settings.added,
        completed_on: e.settings.completed,
    }
}

/// Deletes a torrent's files (and, for a multi-file torrent, the folders it made when they are
/// left empty), never anything outside `data_dir`: paths come from a validated torrent, and no
/// symlinked folder is followed (see [`crate::storage::delete_files`]).
fn delete_files(data_dir: &Path, info: &Info) -> Result<(), ClientError> {
    crate::storage::delete_files(data_dir, info)
        .map_err(|(path, e)| ClientError::io("delete", path)(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_magnets_torrent_file_reads_back_with_its_trackers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, b"hello world").unwrap();
        let opts = crate::metainfo::create::CreateOptions {
            path,
            ..Default::default()
        };
        let made = crate::metainfo::create::create(&opts, &Default::default()).unwrap();
        let info = made.torrent.info;
        let tiers = vec![
            vec!["udp://a:1".to_string()],
            vec!["http://b/announce".into()],
        ];
        let bytes = torrent_file(&info, &tiers);
        let back = Torrent::from_bytes(&bytes).unwrap();
        assert_eq!(back.info.info_hash(), info.info_hash());
        assert_eq!(back.trackers, tiers);
    }
}
