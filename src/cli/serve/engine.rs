//! The seedbox engine behind `serve`: one event loop per core (each a [`LoopThread`] owning
//! the torrents whose info hash maps to it), and the registry of torrents the control thread
//! keeps. Everything here runs on the control thread; a loop is reached only by posting it a
//! closure and waiting for the answer ([`Engine::call`]).
//!
//! State on disk, under the state folder:
//!
//! ```text
//!   torrents/<hash>.torrent   the torrent file, as added
//!   torrents/<hash>.json      its settings: paused, limits, where it came from
//!   resume/<hash>.resume      verified pieces and file stamps (storage::ResumeData)
//! ```
//!
//! A restart adds every torrent found there, trusting resume data when every file is as it
//! was, so what was verified before is not hashed again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::trackers::Trackers;
use ringtorrent::core::api::TorrentId;
use ringtorrent::core::config::Config;
use ringtorrent::core::session::PeerSummary;
use ringtorrent::core::{Bitfield, InfoHash, Session, Time};
use ringtorrent::driver::shard::{self, LoopThread};
use ringtorrent::driver::{Backend, Driver, LoopStats};
use ringtorrent::metainfo::{Info, Torrent};
use ringtorrent::storage::{
    check, DiskPool, DiskPoolConfig, FileState, OpenMode, ResumeData, ResumeError, Storage,
};
use ringtorrent::tracker::Progress;

/// How long a loop may take to answer the control thread before the request fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A torrent's settings, kept beside its torrent file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Not in the session (its data and resume state are kept).
    pub paused: bool,
    /// Upload limit for this torrent, bytes per second.
    pub upload_limit: Option<u64>,
    /// Download limit for this torrent, bytes per second.
    pub download_limit: Option<u64>,
    /// `api`, or the watch folder file it came from.
    pub source: String,
    /// When it was added (Unix seconds).
    pub added: u64,
}

/// What the registry knows of one torrent.
struct Entry {
    info: Arc<Info>,
    /// The torrent's tracker tiers.
    trackers: Vec<Vec<String>>,
    storage: Arc<Storage>,
    shard: u32,
    /// The session's id while active; `None` while paused.
    id: Option<TorrentId>,
    settings: Settings,
    /// Pieces verified when resume data was last saved.
    saved: u32,
    /// Why the torrent is held out of the session (its data went missing), until resumed.
    problem: Option<String>,
}

/// One torrent, as `GET /torrents` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub info_hash: String,
    pub name: String,
    pub size: u64,
    pub pieces: u32,
    pub pieces_have: u32,
    pub progress: f64,
    pub state: &'static str,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub peers: usize,
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    pub source: String,
    pub error: Option<String>,
}

/// One peer, as `GET /torrents/<hash>/peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub addr: String,
    pub client: Option<String>,
    pub outgoing: bool,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub progress: f64,
    pub snubbed: bool,
}

/// What one loop reports of one of its torrents.
struct Live {
    id: TorrentId,
    have: u32,
    rates: (u64, u64),
    downloaded: u64,
    uploaded: u64,
    peers: usize,
    error: Option<String>,
}

/// Everything `/metrics` shows, summed over the loops.
#[derive(Debug, Default)]
pub struct Metrics {
    pub uploaded: u64,
    pub downloaded: u64,
    pub wasted: u64,
    pub pieces_verified: u64,
    pub pieces_failed: u64,
    pub banned: u64,
    pub peers_connected: u64,
    pub peers_interested: u64,
    pub peers_unchoked: u64,
    pub peers_seeds: u64,
    pub connections_open: u64,
    pub closes: BTreeMap<String, u64>,
    pub handoffs_sent: u64,
    pub handoffs_adopted: u64,
    pub accepted: u64,
    pub loops: Vec<LoopStats>,
    pub latency_us: Option<Histogram<u64>>,
    pub hash_wait_us: Option<Histogram<u64>>,
    pub announce_us: Option<Histogram<u64>>,
    pub torrents_active: u64,
    pub torrents_paused: u64,
}

/// A torrent added by magnet link whose metadata has not arrived yet.
struct PendingMagnet {
    name: Option<String>,
    trackers: Vec<String>,
    shard: u32,
    id: TorrentId,
}

/// The engine: loops, disk pool and the torrent registry.
pub struct Engine {
    loops: Vec<LoopThread>,
    pool: Arc<DiskPool>,
    torrents: BTreeMap<InfoHash, Entry>,
    data_dir: PathBuf,
    state_dir: PathBuf,
    listen: SocketAddr,
    backend: Backend,
    trackers: Trackers,
    /// Last known progress of each active torrent, for the trackers.
    progress: BTreeMap<InfoHash, Progress>,
    /// Torrents added by magnet link, fetching their metadata.
    magnets: BTreeMap<InfoHash, PendingMagnet>,
    /// Session-wide rate limits, shared between the loops by [`Engine::rebalance_limits`].
    limits: SharedLimits,
}

/// The session-wide limits and how they are shared out now.
#[derive(Default)]
struct SharedLimits {
    up: Option<u64>,
    down: Option<u64>,
    /// Each loop's share now, (up, down).
    shares: Vec<(u64, u64)>,
    /// Each loop's byte totals when last looked at, (up, down), and when.
    totals: Vec<(u64, u64)>,
    at: Option<Instant>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Engine {
    /// Starts `threads` loops listening on `listen`, with `config` for every session.
    pub fn start(
        backend: Backend,
        threads: usize,
        listen: SocketAddr,
        config: Config,
        data_dir: PathBuf,
        state_dir: PathBuf,
    ) -> Result<Engine> {
        for dir in [
            &data_dir,
            &state_dir.join("torrents"),
            &state_dir.join("resume"),
        ] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let pool = Arc::new(
            DiskPool::new(DiskPoolConfig::default())
                .map_err(|e| anyhow!("cannot start the disk pool: {e}"))?,
        );
        let peer_id = super::super::random_peer_id();
        let drivers = shard::build(
            backend,
            threads,
            Some(listen),
            pool.clone(),
            Instant::now(),
            |_| {
                Session::new(
                    config.clone(),
                    peer_id,
                    super::super::random_u64(),
                    Time::ZERO,
                )
            },
        )
        .with_context(|| format!("cannot listen for peers on {listen}"))?;
        let listen = drivers[0].local_addr().unwrap_or(listen);
        let trackers = Trackers::new(peer_id, listen.port());
        let mut loops = Vec::with_capacity(drivers.len());
        for (i, d) in drivers.into_iter().enumerate() {
            loops.push(
                LoopThread::spawn(d, format!("rt-loop-{i}"), |_| {})
                    .context("cannot start an event loop thread")?,
            );
        }
        Ok(Engine {
            loops,
            pool,
            torrents: BTreeMap::new(),
            data_dir,
            state_dir,
            listen,
            backend,
            trackers,
            progress: BTreeMap::new(),
            magnets: BTreeMap::new(),
            limits: SharedLimits::default(),
        })
    }

    /// The session-wide rate limits (bytes per second), shared out between the loops: an
    /// even split first (as the loops were started with), then following demand.
    pub fn set_session_limits(&mut self, up: Option<u64>, down: Option<u64>) {
        let n = self.loops.len() as u64;
        self.limits = SharedLimits {
            up,
            down,
            shares: vec![(up.map_or(0, |l| l / n), down.map_or(0, |l| l / n)); self.loops.len()],
            totals: Vec::new(),
            at: None,
        };
    }

    /// Moves the session-wide limits' unused shares to the loops that need them (see
    /// `share.rs`). Called about once a second.
    pub fn rebalance_limits(&mut self) {
        if self.limits.up.is_none() && self.limits.down.is_none() {
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
        let used_up: Vec<u64> = totals
            .iter()
            .zip(&self.limits.totals)
            .map(|(n, o)| rate(n.0, o.0))
            .collect();
        let used_down: Vec<u64> = totals
            .iter()
            .zip(&self.limits.totals)
            .map(|(n, o)| rate(n.1, o.1))
            .collect();
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

    /// The address peers connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The I/O backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Event loops running.
    pub fn loop_count(&self) -> usize {
        self.loops.len()
    }

    /// Runs `f` on loop `shard` and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        shard: u32,
        f: impl FnOnce(&mut Driver) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.loops[shard as usize].post(move |d| {
            let _ = tx.send(f(d));
        });
        rx.recv_timeout(CALL_TIMEOUT)
            .map_err(|_| anyhow!("event loop {shard} did not answer"))
    }

    /// Tells every loop but `owner` who owns `hash` (`None`: nobody any more).
    fn route(&self, hash: InfoHash, owner: u32, owned: bool) {
        for (i, l) in self.loops.iter().enumerate() {
            if i as u32 != owner {
                let shard = owned.then_some(owner);
                l.post(move |d| d.session().set_route(hash, shard));
            }
        }
    }

    fn torrent_path(&self, hash: &InfoHash) -> PathBuf {
        self.state_dir
            .join("torrents")
            .join(format!("{}.torrent", hash.to_hex()))
    }

    fn settings_path(&self, hash: &InfoHash) -> PathBuf {
        self.state_dir
            .join("torrents")
            .join(format!("{}.json", hash.to_hex()))
    }

    fn resume_dir(&self) -> PathBuf {
        self.state_dir.join("resume")
    }

    fn save_settings(&self, hash: &InfoHash, settings: &Settings) -> Result<()> {
        let path = self.settings_path(hash);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(settings)?)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Every torrent with where it came from.
    pub fn sources(&self) -> Vec<(InfoHash, String)> {
        self.torrents
            .iter()
            .map(|(h, e)| (*h, e.settings.source.clone()))
            .collect()
    }

    /// The torrent whose settings name `source`.
    pub fn by_source(&self, source: &str) -> Option<InfoHash> {
        self.torrents
            .iter()
            .find(|(_, e)| e.settings.source == source)
            .map(|(h, _)| *h)
    }

    /// Adds a torrent from its file's bytes: stored in the state folder, its data opened (or
    /// created) under the data folder, resume data trusted if every file is as recorded,
    /// otherwise the data checked, then served (unless `settings.paused`).
    pub fn add(&mut self, bytes: &[u8], settings: Settings) -> Result<InfoHash> {
        let (hash, have) = self.register(bytes, settings)?;
        if !self.torrents[&hash].settings.paused {
            if let Err(e) = self.activate_many(vec![(hash, have)]) {
                self.torrents.remove(&hash);
                return Err(e);
            }
        }
        Ok(hash)
    }

    /// [`Engine::add`] for many torrents at once (a watch folder's new files): each is
    /// checked or resumed, then all go into their loops in one batch.
    pub fn add_many(&mut self, torrents: Vec<(Vec<u8>, Settings)>) -> Vec<Result<InfoHash>> {
        let mut results = Vec::with_capacity(torrents.len());
        let mut ready = Vec::new();
        for (bytes, settings) in torrents {
            match self.register(&bytes, settings) {
                Ok((hash, have)) => {
                    if !self.torrents[&hash].settings.paused {
                        ready.push((hash, have));
                    }
                    results.push(Ok(hash));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if let Err(e) = self.activate_many(ready) {
            tracing::warn!("{e:#}");
        }
        results
    }

    /// Everything of [`Engine::add`] but putting the torrent in its loop's session: returns
    /// the pieces it has, for [`Engine::activate_many`] (unless it is paused).
    fn register(&mut self, bytes: &[u8], mut settings: Settings) -> Result<(InfoHash, Bitfield)> {
        let torrent = Torrent::from_bytes(bytes)
            .map_err(|e| BadInput(format!("not a valid torrent: {e}")))?;
        let tiers = torrent.trackers.clone();
        let info = Arc::new(torrent.info);
        let hash = info.info_hash();
        if self.torrents.contains_key(&hash) || self.magnets.contains_key(&hash) {
            bail!(AlreadyAdded(hash));
        }
        // A torrent that had data here (it is in the state folder and has resume data) whose
        // files are gone is held with the reason, not given fresh empty files to download
        // again: the disk or mount may just be missing, and a seedbox must not silently
        // refill it.
        let problem = (settings.added != 0 && !settings.paused)
            .then(|| self.missing_data(&info))
            .flatten();
        let mode = if problem.is_some() {
            OpenMode::ReadOnly
        } else {
            OpenMode::Create
        };
        let storage = Arc::new(
            Storage::open(info.clone(), &self.data_dir, mode).with_context(|| {
                format!(
                    "cannot open {}'s files under {}",
                    info.name(),
                    self.data_dir.display()
                )
            })?,
        );
        let path = self.torrent_path(&hash);
        if !path.exists() {
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if settings.added == 0 {
            // New: its settings are written; one loaded from the state folder has them.
            settings.added = now_unix();
            self.save_settings(&hash, &settings)?;
        }
        if let Some(p) = &problem {
            tracing::warn!("{} ({hash}): {p}; held until resumed", info.name());
            settings.paused = true;
        }
        let (have, checked) = if problem.is_some() {
            (Bitfield::new(info.lengths().piece_count()), false)
        } else {
            self.restore(&storage)?
        };
        let shard = shard::shard_of(&hash, self.loops.len());
        let entry = Entry {
            info: info.clone(),
            trackers: tiers,
            storage,
            shard,
            id: None,
            // A check's result is not saved yet: the next periodic save writes it.
            saved: if checked { u32::MAX } else { have.count() },
            settings,
            problem,
        };
        self.torrents.insert(hash, entry);
        tracing::info!(
            "added {} ({hash}), {} of {} pieces verified",
            info.name(),
            have.count(),
            info.lengths().piece_count()
        );
        Ok((hash, have))
    }

    /// Adds a torrent by magnet link: its loop fetches the metadata from the link's peers
    /// (`x.pe`), its trackers (`tr`) and peer exchange; [`Engine::poll_magnets`] then opens its
    /// storage and starts it as if its .torrent had been added. Kept in the state folder as
    /// `<hash>.magnet` until then.
    pub fn add_magnet(&mut self, uri: &str) -> Result<InfoHash> {
        let magnet = ringtorrent::metainfo::magnet::Magnet::parse(uri)
            .map_err(|e| BadInput(format!("not a valid magnet link: {e}")))?;
        let hash = magnet.info_hash;
        if self.torrents.contains_key(&hash) || self.magnets.contains_key(&hash) {
            bail!(AlreadyAdded(hash));
        }
        let peers = super::super::transfer::magnet_peers(&magnet);
        let shard = shard::shard_of(&hash, self.loops.len());
        let id = self
            .call(shard, move |d| {
                let now = d.now();
                let id = d.session().add_magnet(hash, now)?;
                d.session().add_peers(id, &peers, now);
                Some(id)
            })?
            .ok_or_else(|| anyhow!("the session refused the magnet link"))?;
        self.route(hash, shard, true);
        let path = self.magnet_path(&hash);
        std::fs::write(&path, uri).with_context(|| format!("cannot write {}", path.display()))?;
        let tiers = [magnet.trackers.clone()];
        self.trackers.add(
            hash,
            if magnet.trackers.is_empty() {
                &[]
            } else {
                &tiers
            },
            // Unknown size: announce as a leecher with something left.
            Progress {
                uploaded: 0,
                downloaded: 0,
                left: 1,
            },
        );
        tracing::info!("added magnet {hash}; fetching its metadata");
        self.magnets.insert(
            hash,
            PendingMagnet {
                name: magnet.display_name.clone(),
                trackers: magnet.trackers,
                shard,
                id,
            },
        );
        Ok(hash)
    }

    fn magnet_path(&self, hash: &InfoHash) -> PathBuf {
        self.state_dir
            .join("torrents")
            .join(format!("{}.magnet", hash.to_hex()))
    }

    /// Starts the magnet torrents whose metadata has arrived: a .torrent is written to the
    /// state folder, storage opened (resume data or a check, as for any torrent) and the
    /// torrent started in place, keeping its peers.
    pub fn poll_magnets(&mut self) {
        let ready: Vec<(InfoHash, Arc<Info>)> = self
            .magnets
            .iter()
            .filter_map(|(hash, m)| {
                let id = m.id;
                let info = self
                    .call(m.shard, move |d| d.session().metadata(id))
                    .ok()
                    .flatten()?;
                Some((*hash, info))
            })
            .collect();
        for (hash, info) in ready {
            if let Err(e) = self.start_magnet(hash, info) {
                tracing::warn!("magnet {hash}: cannot start: {e:#}");
            }
        }
    }

    fn start_magnet(&mut self, hash: InfoHash, info: Arc<Info>) -> Result<()> {
        let m = self.magnets.remove(&hash).expect("pending");
        // The .torrent a user would have added: the verified info dictionary and the link's
        // trackers (keys in bencode's order: announce-list before info).
        let mut bytes = b"d".to_vec();
        if !m.trackers.is_empty() {
            bytes.extend_from_slice(b"13:announce-listll");
            for t in &m.trackers {
                bytes.extend_from_slice(format!("{}:", t.len()).as_bytes());
                bytes.extend_from_slice(t.as_bytes());
            }
            bytes.extend_from_slice(b"ee");
        }
        bytes.extend_from_slice(b"4:info");
        bytes.extend_from_slice(info.raw());
        bytes.push(b'e');
        let path = self.torrent_path(&hash);
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let _ = std::fs::remove_file(self.magnet_path(&hash));
        let settings = Settings {
            source: "api".into(),
            added: now_unix(),
            ..Settings::default()
        };
        self.save_settings(&hash, &settings)?;
        let storage = Arc::new(
            Storage::open(info.clone(), &self.data_dir, OpenMode::Create).with_context(|| {
                format!(
                    "cannot open {}'s files under {}",
                    info.name(),
                    self.data_dir.display()
                )
            })?,
        );
        let (have, checked) = self.restore(&storage)?;
        let id = m.id;
        let count = have.count();
        let attach = storage.clone();
        let started = self.call(m.shard, move |d| {
            let now = d.now();
            let ok = d.session().start_torrent(id, &have, now);
            if ok {
                d.attach_storage(id, attach);
            }
            ok
        })?;
        if !started {
            bail!("the session could not start it");
        }
        tracing::info!("magnet {hash}: metadata received, {} started", info.name());
        self.torrents.insert(
            hash,
            Entry {
                trackers: if m.trackers.is_empty() {
                    Vec::new()
                } else {
                    vec![m.trackers.clone()]
                },
                info,
                storage,
                shard: m.shard,
                id: Some(id),
                settings,
                saved: if checked { u32::MAX } else { count },
                problem: None,
            },
        );
        Ok(())
    }

    /// The pieces storage holds verified: from resume data when it is still true, else by
    /// hashing the data (unless every file was just created, so holds nothing). The flag says
    /// whether the data was hashed (so resume data is due).
    fn restore(&self, storage: &Storage) -> Result<(Bitfield, bool)> {
        let pieces = storage.info().lengths().piece_count();
        let all_new = storage.file_states().all(|s| {
            matches!(
                s,
                FileState::Present { created: true, .. } | FileState::NotStored
            )
        });
        if all_new {
            return Ok((Bitfield::new(pieces), false));
        }
        match ResumeData::restore(&self.resume_dir(), storage) {
            Ok(have) => return Ok((have, false)),
            Err(ResumeError::NotFound(_)) => {}
            Err(e) => tracing::warn!(
                "{}: resume data not used ({e}); checking the data",
                storage.info().name()
            ),
        }
        tracing::info!("{}: checking the data", storage.info().name());
        let report = check(storage, self.pool.hash_pool(), &AtomicU64::new(0));
        // Its resume data is written by the next periodic save (the entry is marked unsaved),
        // not here: adding ten thousand torrents must not cost ten thousand synced writes.
        Ok((report.verified(storage.info().lengths()), true))
    }

    /// Puts registered torrents into their loops' sessions: one round trip per loop, and one
    /// message per loop for the routes, however many torrents (a restart of a seedbox with
    /// ten thousand torrents must not cost ten thousand of each).
    fn activate_many(&mut self, torrents: Vec<(InfoHash, Bitfield)>) -> Result<()> {
        type Job = (
            InfoHash,
            Arc<Info>,
            Arc<Storage>,
            Bitfield,
            Option<u64>,
            Option<u64>,
        );
        let mut by_shard: BTreeMap<u32, Vec<Job>> = BTreeMap::new();
        for (hash, have) in torrents {
            let Some(e) = self.torrents.get(&hash) else {
                continue;
            };
            by_shard.entry(e.shard).or_default().push((
                hash,
                e.info.clone(),
                e.storage.clone(),
                have,
                e.settings.upload_limit,
                e.settings.download_limit,
            ));
        }
        let mut failed = None;
        let mut routes: Vec<(InfoHash, u32)> = Vec::new();
        for (shard, jobs) in by_shard {
            let started = self.call(shard, move |d| {
                let now = d.now();
                jobs.into_iter()
                    .map(|(hash, info, storage, have, up, down)| {
                        let id = d.session().add_torrent(info, &have, now);
                        if let Some(id) = id {
                            d.session().set_rate_limits(id, up, down, now);
                            d.attach_storage(id, storage);
                        }
                        (hash, id)
                    })
                    .collect::<Vec<_>>()
            })?;
            for (hash, id) in started {
                let Some(id) = id else {
                    failed = Some(hash);
                    continue;
                };
                routes.push((hash, shard));
                let e = self.torrents.get_mut(&hash).expect("registered");
                e.id = Some(id);
                let piece_len = u64::from(e.info.lengths().piece_len());
                let saved = if e.saved == u32::MAX { 0 } else { e.saved };
                let left = e
                    .info
                    .total_len()
                    .saturating_sub(u64::from(saved) * piece_len);
                let progress = Progress {
                    uploaded: 0,
                    downloaded: 0,
                    left,
                };
                self.progress.insert(hash, progress);
                self.trackers.add(hash, &e.trackers, progress);
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
        match failed {
            Some(hash) => Err(anyhow!("the session refused torrent {hash}")),
            None => Ok(()),
        }
    }

    /// Takes a torrent out of its loop's session (closing its peers) and saves its resume
    /// data; it stays registered.
    fn deactivate(&mut self, hash: InfoHash) -> Result<()> {
        let Some(entry) = self.torrents.get(&hash) else {
            return Ok(());
        };
        let Some(id) = entry.id else {
            return Ok(());
        };
        let shard = entry.shard;
        self.trackers.remove(hash);
        self.progress.remove(&hash);
        self.route(hash, shard, false);
        let have = self.call(shard, move |d| {
            let now = d.now();
            let have = d.session().have(id).cloned();
            d.session().remove_torrent(id, now);
            have
        })?;
        let entry = self.torrents.get_mut(&hash).expect("checked above");
        entry.id = None;
        if let Some(have) = have {
            entry.saved = have.count();
            let storage = entry.storage.clone();
            let dir = self.resume_dir();
            ResumeData::capture(&storage, have)
                .map_err(|e| anyhow!("{e}"))
                .and_then(|d| d.save(&dir).map_err(|e| anyhow!("{e}")))
                .context("cannot save resume data")?;
        }
        Ok(())
    }

    /// Pauses a torrent: out of the session, data and state kept.
    pub fn pause(&mut self, hash: InfoHash) -> Result<()> {
        self.deactivate(hash)?;
        let entry = self.torrents.get_mut(&hash).ok_or(UnknownTorrent(hash))?;
        entry.settings.paused = true;
        let settings = entry.settings.clone();
        self.save_settings(&hash, &settings)
    }

    /// Resumes a paused torrent. One held for missing data gets its files back (created
    /// empty where still missing) and downloads what it lacks: the user asked.
    pub fn resume(&mut self, hash: InfoHash) -> Result<()> {
        let data_dir = self.data_dir.clone();
        let entry = self.torrents.get_mut(&hash).ok_or(UnknownTorrent(hash))?;
        if entry.id.is_some() {
            return Ok(());
        }
        if entry.problem.take().is_some() {
            entry.storage = Arc::new(
                Storage::open(entry.info.clone(), &data_dir, OpenMode::Create)
                    .with_context(|| format!("cannot open {}'s files", entry.info.name()))?,
            );
        }
        entry.settings.paused = false;
        let settings = entry.settings.clone();
        let storage = entry.storage.clone();
        self.save_settings(&hash, &settings)?;
        let (have, checked) = self.restore(&storage)?;
        if checked {
            if let Some(e) = self.torrents.get_mut(&hash) {
                e.saved = u32::MAX;
            }
        }
        self.activate_many(vec![(hash, have)])
    }

    /// Sets a torrent's own rate limits (bytes per second; `None`: none).
    pub fn set_limits(&mut self, hash: InfoHash, up: Option<u64>, down: Option<u64>) -> Result<()> {
        let entry = self.torrents.get_mut(&hash).ok_or(UnknownTorrent(hash))?;
        entry.settings.upload_limit = up;
        entry.settings.download_limit = down;
        let (settings, id, shard) = (entry.settings.clone(), entry.id, entry.shard);
        self.save_settings(&hash, &settings)?;
        if let Some(id) = id {
            self.call(shard, move |d| {
                let now = d.now();
                d.session().set_rate_limits(id, up, down, now);
            })?;
        }
        Ok(())
    }

    /// Removes a torrent from the session and the state folder; with `delete_data`, its files
    /// too.
    pub fn remove(&mut self, hash: InfoHash, delete_data: bool) -> Result<()> {
        if let Some(m) = self.magnets.remove(&hash) {
            self.trackers.remove(hash);
            self.route(hash, m.shard, false);
            let id = m.id;
            self.call(m.shard, move |d| {
                let now = d.now();
                d.session().remove_torrent(id, now);
            })?;
            let _ = std::fs::remove_file(self.magnet_path(&hash));
            return Ok(());
        }
        if !self.torrents.contains_key(&hash) {
            bail!(UnknownTorrent(hash));
        }
        self.deactivate(hash)?;
        let entry = self.torrents.remove(&hash).expect("checked above");
        for path in [
            self.torrent_path(&hash),
            self.settings_path(&hash),
            ringtorrent::storage::resume_path(&self.resume_dir(), hash),
        ] {
            let _ = std::fs::remove_file(path);
        }
        if delete_data {
            drop(entry.storage);
            delete_files(&self.data_dir, &entry.info)?;
        }
        tracing::info!(
            "removed {} ({hash}){}",
            entry.info.name(),
            if delete_data { " and its data" } else { "" }
        );
        Ok(())
    }

    /// Why `info`'s data cannot be served from the data folder when its resume data says it
    /// was there: the first of its files that is gone.
    fn missing_data(&self, info: &Info) -> Option<String> {
        let resume = ringtorrent::storage::resume_path(&self.resume_dir(), info.info_hash());
        if !resume.exists() {
            return None;
        }
        info.files()
            .iter()
            .filter(|f| !f.attr.padding && f.length > 0)
            .map(|f| self.data_dir.join(f.path.join("/")))
            .find(|p| !p.exists())
            .map(|p| {
                format!(
                    "its data is missing ({} is gone): restore it and resume the torrent, or \
                     remove it",
                    p.display()
                )
            })
    }

    /// Loads every torrent of the state folder (after a restart).
    pub fn load_state(&mut self) -> Result<usize> {
        let dir = self.state_dir.join("torrents");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "torrent"))
            .collect();
        paths.sort();
        let mut loaded = 0;
        let mut magnets: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "magnet"))
            .collect();
        magnets.sort();
        for path in magnets {
            let result = std::fs::read_to_string(&path)
                .map_err(anyhow::Error::from)
                .and_then(|uri| self.add_magnet(uri.trim()));
            match result {
                Ok(_) => loaded += 1,
                Err(e) => tracing::warn!("{}: not loaded: {e:#}", path.display()),
            }
        }
        let mut ready = Vec::new();
        for path in paths {
            let settings: Settings = std::fs::read(path.with_extension("json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let result = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| self.register(&bytes, settings));
            match result {
                Ok((hash, have)) => {
                    loaded += 1;
                    if !self.torrents[&hash].settings.paused {
                        ready.push((hash, have));
                    }
                }
                Err(e) => tracing::warn!("{}: not loaded: {e:#}", path.display()),
            }
        }
        self.activate_many(ready)?;
        Ok(loaded)
    }

    /// Every torrent's status.
    pub fn list(&self) -> Vec<Status> {
        let mut by_shard: BTreeMap<(u32, TorrentId), Live> = BTreeMap::new();
        for shard in 0..self.loops.len() as u32 {
            let got = self.call(shard, collect_live).unwrap_or_default();
            for l in got {
                by_shard.insert((shard, l.id), l);
            }
        }
        let mut all: Vec<Status> = self
            .torrents
            .iter()
            .map(|(hash, e)| {
                let live = e.id.and_then(|id| by_shard.get(&(e.shard, id)));
                status(hash, e, live)
            })
            .collect();
        all.extend(self.magnets.iter().map(|(hash, m)| {
            let live = by_shard.get(&(m.shard, m.id));
            magnet_status(hash, m, live)
        }));
        all
    }

    /// One torrent's status.
    pub fn get(&self, hash: InfoHash) -> Result<Status> {
        if let Some(m) = self.magnets.get(&hash) {
            let id = m.id;
            let live = self
                .call(m.shard, collect_live)?
                .into_iter()
                .find(|l| l.id == id);
            return Ok(magnet_status(&hash, m, live.as_ref()));
        }
        let e = self.torrents.get(&hash).ok_or(UnknownTorrent(hash))?;
        let live = match e.id {
            Some(id) => self
                .call(e.shard, collect_live)?
                .into_iter()
                .find(|l| l.id == id),
            None => None,
        };
        Ok(status(&hash, e, live.as_ref()))
    }

    /// A torrent's connected peers.
    pub fn peers(&self, hash: InfoHash) -> Result<Vec<PeerStatus>> {
        let e = self.torrents.get(&hash).ok_or(UnknownTorrent(hash))?;
        let Some(id) = e.id else {
            return Ok(Vec::new());
        };
        let pieces = e.info.lengths().piece_count().max(1);
        let peers: Vec<PeerSummary> = self.call(e.shard, move |d| {
            let now = d.now();
            d.session().peers(id, now)
        })?;
        Ok(peers
            .into_iter()
            .map(|p| PeerStatus {
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
            })
            .collect())
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        for shard in 0..self.loops.len() as u32 {
            let got = self.call(shard, |d| {
                let now = d.now();
                let stats = d.loop_stats();
                let s = d.session();
                let mut part = Metrics::default();
                part.loops.push(stats);
                for (reason, n) in s.handshake_closes() {
                    *part.closes.entry(reason.to_string()).or_default() += n;
                }
                let h = s.connection_stats();
                part.handoffs_sent = h.sent;
                part.handoffs_adopted = h.adopted;
                part.accepted = h.accepted;
                part.connections_open = s.connection_count() as u64;
                for id in s.torrent_ids() {
                    if let Some(st) = s.stats(id) {
                        part.uploaded += st.uploaded;
                        part.downloaded += st.downloaded;
                        part.wasted += st.wasted;
                        part.pieces_verified += st.pieces_verified;
                        part.pieces_failed += st.hash_failures;
                        part.banned += st.banned;
                        for (reason, n) in &st.closes {
                            *part.closes.entry(reason.to_string()).or_default() += n;
                        }
                        merge(&mut part.latency_us, st.request_latency_us.as_deref());
                        merge(&mut part.hash_wait_us, st.hash_wait_us.as_deref());
                    }
                    let pieces = s.have(id).map_or(0, Bitfield::len);
                    for p in s.peers(id, now) {
                        part.peers_connected += 1;
                        part.peers_interested += u64::from(p.peer_interested);
                        part.peers_unchoked += u64::from(!p.am_choking);
                        part.peers_seeds += u64::from(p.pieces > 0 && p.pieces == pieces);
                    }
                }
                part
            });
            let Ok(part) = got else { continue };
            m.uploaded += part.uploaded;
            m.downloaded += part.downloaded;
            m.wasted += part.wasted;
            m.pieces_verified += part.pieces_verified;
            m.pieces_failed += part.pieces_failed;
            m.banned += part.banned;
            m.peers_connected += part.peers_connected;
            m.peers_interested += part.peers_interested;
            m.peers_unchoked += part.peers_unchoked;
            m.peers_seeds += part.peers_seeds;
            m.connections_open += part.connections_open;
            m.handoffs_sent += part.handoffs_sent;
            m.handoffs_adopted += part.handoffs_adopted;
            m.accepted += part.accepted;
            for (k, v) in part.closes {
                *m.closes.entry(k).or_default() += v;
            }
            m.loops.extend(part.loops);
            merge(&mut m.latency_us, part.latency_us.as_ref());
            merge(&mut m.hash_wait_us, part.hash_wait_us.as_ref());
        }
        merge(&mut m.announce_us, Some(self.trackers.latency_us()));
        m.torrents_active = self.torrents.values().filter(|e| e.id.is_some()).count() as u64;
        m.torrents_paused = self.torrents.len() as u64 - m.torrents_active;
        m
    }

    /// Saves resume data of the active torrents that verified pieces since the last save.
    pub fn save_resume(&mut self, all: bool) {
        let mut haves = Vec::new();
        for shard in 0..self.loops.len() as u32 {
            let got = self.call(shard, |d| {
                let s = d.session();
                s.torrent_ids()
                    .into_iter()
                    .filter_map(|id| Some((id, s.have(id)?.clone())))
                    .collect::<Vec<_>>()
            });
            for (id, have) in got.unwrap_or_default() {
                haves.push((shard, id, have));
            }
        }
        let dir = self.resume_dir();
        for e in self.torrents.values_mut() {
            let Some(id) = e.id else { continue };
            let Some((_, _, have)) = haves.iter().find(|(s, i, _)| *s == e.shard && *i == id)
            else {
                continue;
            };
            if !all && have.count() == e.saved {
                continue;
            }
            let count = have.count();
            match ResumeData::capture(&e.storage, have.clone())
                .map_err(|e| e.to_string())
                .and_then(|d| d.save(&dir).map_err(|e| e.to_string()))
            {
                Ok(_) => e.saved = count,
                Err(err) => tracing::warn!("{}: cannot save resume data: {err}", e.info.name()),
            }
        }
    }

    /// Announces and hands the peers trackers returned to the torrents' loops. `refresh`
    /// first asks the loops for every torrent's progress.
    pub fn pump_trackers(&mut self, refresh: bool) {
        if refresh {
            for s in self.list() {
                let Some(hash) = InfoHash::from_hex(&s.info_hash) else {
                    continue;
                };
                if let Some(p) = self.progress.get_mut(&hash) {
                    let piece_len = self.torrents[&hash].info.lengths().piece_len();
                    *p = Progress {
                        uploaded: s.uploaded,
                        downloaded: s.downloaded,
                        left: if s.pieces_have == s.pieces {
                            0
                        } else {
                            s.size
                                .saturating_sub(u64::from(s.pieces_have) * u64::from(piece_len))
                        },
                    };
                }
            }
        }
        for (hash, peers) in self.trackers.pump(&self.progress) {
            let Some(e) = self.torrents.get(&hash) else {
                continue;
            };
            let Some(id) = e.id else { continue };
            // Trackers list us among the peers; dialling ourselves is pointless.
            let own = self.listen.port();
            let peers: Vec<SocketAddr> = peers
                .into_iter()
                .filter(|p| !(p.port() == own && (p.ip().is_loopback() || p.ip().is_unspecified())))
                .collect();
            self.loops[e.shard as usize].post(move |d| {
                let now = d.now();
                d.session().add_peers(id, &peers, now);
            });
        }
    }

    /// Saves every torrent's resume data, tells the trackers `stopped`, and stops the loops.
    pub fn shutdown(mut self) {
        self.save_resume(true);
        self.trackers.stop_all();
        for l in std::mem::take(&mut self.loops) {
            if let Err(e) = l.stop() {
                tracing::warn!("an event loop ended badly: {e}");
            }
        }
    }
}

fn magnet_status(hash: &InfoHash, m: &PendingMagnet, live: Option<&Live>) -> Status {
    Status {
        info_hash: hash.to_hex(),
        name: m.name.clone().unwrap_or_else(|| hash.to_hex()),
        size: 0,
        pieces: 0,
        pieces_have: 0,
        progress: 0.0,
        state: "metadata",
        download_rate: 0,
        upload_rate: 0,
        downloaded: 0,
        uploaded: 0,
        peers: live.map_or(0, |l| l.peers),
        upload_limit: None,
        download_limit: None,
        source: "magnet".into(),
        error: None,
    }
}

/// Adds `theirs` into `into` (taking a copy when `into` has none yet).
fn merge(into: &mut Option<Histogram<u64>>, theirs: Option<&Histogram<u64>>) {
    let Some(theirs) = theirs else { return };
    match into {
        Some(h) => {
            let _ = h.add(theirs);
        }
        None => *into = Some(theirs.clone()),
    }
}

fn collect_live(d: &mut Driver) -> Vec<Live> {
    let now = d.now();
    let s = d.session();
    s.torrent_ids()
        .into_iter()
        .map(|id| Live {
            id,
            have: s.have(id).map_or(0, Bitfield::count),
            rates: s.rates(id, now),
            downloaded: s.stats(id).map_or(0, |st| st.downloaded),
            uploaded: s.stats(id).map_or(0, |st| st.uploaded),
            peers: s.peer_count(id),
            error: s.error(id).map(str::to_owned),
        })
        .collect()
}

fn status(hash: &InfoHash, e: &Entry, live: Option<&Live>) -> Status {
    let pieces = e.info.lengths().piece_count();
    let have = live.map_or(e.saved, |l| l.have);
    let state = match (e.id, live) {
        (None, _) if e.problem.is_some() => "error",
        (None, _) => "paused",
        (Some(_), Some(l)) if l.error.is_some() => "error",
        (Some(_), _) if have == pieces => "seeding",
        _ => "downloading",
    };
    Status {
        info_hash: hash.to_hex(),
        name: e.info.name().to_string(),
        size: e.info.total_len(),
        pieces,
        pieces_have: have,
        progress: f64::from(have) / f64::from(pieces.max(1)),
        state,
        download_rate: live.map_or(0, |l| l.rates.0),
        upload_rate: live.map_or(0, |l| l.rates.1),
        downloaded: live.map_or(0, |l| l.downloaded),
        uploaded: live.map_or(0, |l| l.uploaded),
        peers: live.map_or(0, |l| l.peers),
        upload_limit: e.settings.upload_limit,
        download_limit: e.settings.download_limit,
        source: e.settings.source.clone(),
        error: e
            .problem
            .clone()
            .or_else(|| live.and_then(|l| l.error.clone())),
    }
}

/// Deletes a torrent's files (and, for a multi-file torrent, the folders it made when they are
/// left empty), never anything outside `data_dir`: paths come from a validated torrent.
fn delete_files(data_dir: &Path, info: &Info) -> Result<()> {
    for f in info.files() {
        if f.attr.padding {
            continue;
        }
        let path = data_dir.join(f.path.join("/"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!("cannot delete {}: {e}", path.display())),
        }
    }
    if !info.is_single_file() {
        let root = data_dir.join(info.name());
        let mut dirs: Vec<PathBuf> = info
            .files()
            .iter()
            .flat_map(|f| {
                let mut p = data_dir.to_path_buf();
                let mut parents = Vec::new();
                for c in &f.path[..f.path.len().saturating_sub(1)] {
                    p.push(c);
                    parents.push(p.clone());
                }
                parents
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(root);
    }
    Ok(())
}

/// What the user sent is not a torrent or magnet link (the API answers 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The torrent is already in the session.
#[derive(Debug, thiserror::Error)]
#[error("torrent {0} is already added")]
pub struct AlreadyAdded(pub InfoHash);

/// No torrent has this info hash.
#[derive(Debug, thiserror::Error)]
#[error("no torrent {0}")]
pub struct UnknownTorrent(pub InfoHash);
