//! `ringtorrent::Client`: the engine as a library. Every command (`download`, `seed`,
//! `demo`, `serve`, `info` of a magnet link) runs torrents through it, and so can any program.
//!
//! ```no_run
//! use ringtorrent::client::{AddTorrent, Client, ClientConfig, ClientEvent};
//!
//! let client = Client::start(ClientConfig {
//!     data_dir: "downloads".into(),
//!     ..ClientConfig::default()
//! })?;
//! let events = client.subscribe();
//! let torrent = client.add(AddTorrent::file("debian.iso.torrent"))?;
//! for event in events {
//!     match event {
//!         ClientEvent::PieceVerified { .. } => println!("{:?}", torrent.status()?.progress),
//!         ClientEvent::Completed { .. } => break,
//!         _ => {}
//!     }
//! }
//! client.shutdown();
//! # Ok::<(), ringtorrent::client::ClientError>(())
//! ```
//!
//! # The shape
//!
//! ```text
//!   Client / TorrentHandle (any thread)  -- lock -->  State: the registry (state.rs)
//!                                                       |  post a closure, wait for the answer
//!   housekeeping thread (worker.rs) ------ lock ------> |
//!       trackers, resume saves, rate shares             v
//!                                          event loops (one per core, driver::shard)
//!                                          each a core::Session over io_uring or epoll
//!   events: loops and the worker publish -> every subscriber's bounded queue (events.rs)
//! ```
//!
//! A torrent starts in `State::add_many` (storage opened and checked in
//! `open.rs`, then put into the loop that owns its info hash), runs on that loop while the
//! housekeeping thread announces it and saves its resume data, and stops in `deactivate`
//! (pause, remove, shutdown): resume data saved, `stopped` announced. The module doc of
//! `state.rs` walks through it.
//!
//! Handles are synchronous: no async runtime runs in the engine. A call that needs a torrent's
//! live state posts a closure to its loop and waits at most ten seconds for the answer.

mod config;
mod descriptors;
pub mod dht;
mod error;
mod events;
mod handle;
mod lsd;
mod metrics;
mod open;
mod organize;
pub mod policy;
mod probe;
mod relocate;
mod share;
mod state;
mod store;
mod trackers;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

pub use config::{Allocation, ClientConfig, IoChoice, Limits, Transport};
pub use descriptors::DescriptorBudget;
pub use dht::DhtSettings;
pub use error::ClientError;
pub use events::{ClientEvent, DataSource, Events, EVENT_QUEUE_CAPACITY};
pub use handle::{
    FilePriority, FileStatus, PeerInfo, TorrentHandle, TorrentMeta, TorrentState, TorrentStatus,
};
pub use metrics::Metrics;
pub use open::check_data;
pub use policy::{Category, QueueConfig, QueueMove, ShareAction, ShareLimits};
pub use probe::{probe_peer, PeerProbe, Pieces, ProbeError};
pub use state::magnet_peers;
pub use store::{MoveIntent, Settings};
pub use trackers::{TrackerState, TrackerStatus};

use crate::core::api::Event;
use crate::core::{InfoHash, PeerId, Session, Time};
use crate::driver::shard::{self, LoopThread};
use crate::driver::Backend;
use crate::storage::{DiskPool, DiskPoolConfig};
use events::Publisher;
use state::{IdMap, State};
use worker::Work;

/// Where a torrent to add comes from.
#[derive(Debug, Clone)]
pub enum TorrentSource {
    /// A .torrent file on disk.
    File(PathBuf),
    /// A .torrent file's bytes.
    Bytes(Vec<u8>),
    /// A magnet link (`magnet:?xt=urn:btih:...`).
    Magnet(String),
}

/// A torrent to add, and how. Build one with [`AddTorrent::file`], [`AddTorrent::bytes`],
/// [`AddTorrent::magnet`] or [`AddTorrent::parse`], then set what differs from the defaults.
#[derive(Debug, Clone)]
pub struct AddTorrent {
    /// Where it comes from.
    pub source: TorrentSource,
    /// Its data folder (default: the client's `data_dir`).
    pub save_dir: Option<PathBuf>,
    /// Add it paused: registered, files opened and checked, but not in the session.
    pub paused: bool,
    /// Peers to connect to, besides trackers' and peer exchange's.
    pub peers: Vec<SocketAddr>,
    /// Which files to download, by index in the info dictionary (`None`: all, or a magnet
    /// link's BEP 53 `so=` selection).
    pub files: Option<Vec<bool>>,
    /// Its own upload limit, bytes per second.
    pub upload_limit: Option<u64>,
    /// Its own download limit, bytes per second.
    pub download_limit: Option<u64>,
    /// Serve what is on disk; never create or write a file (`seed`).
    pub seed_only: bool,
    /// Trust that the data is complete and skip the check (the caller just made it).
    pub trust_data: bool,
    /// Seed mode (libtorrent's `seed_mode`; what cross-seeding and qBittorrent's
    /// `skip_checking` need): skip the check, serve at once, and verify each piece the first
    /// time a peer asks for it. A piece that fails stops the serving of every piece not yet
    /// verified and starts a full check of the torrent.
    pub seed_mode: bool,
    /// For a magnet link: fetch the metadata and stop there ([`ClientEvent::MetadataReceived`]
    /// carries it), opening no storage.
    pub metadata_only: bool,
    /// Where it came from, shown in its status (default `api`, or `magnet`).
    pub label: Option<String>,
    /// Its category (created if the client has none of that name). Without `save_dir`, its
    /// data goes to the category's save path.
    pub category: Option<String>,
    /// Its tags (each created if the client has none of that name).
    pub tags: Vec<String>,
    /// Its own share limits (default: the client's for each).
    pub share_limits: ShareLimits,
    /// Runs whatever the queue says.
    pub force_start: bool,
    /// Each file's priority, by index in the info dictionary (overrides `files`; `None`:
    /// `files` decides).
    pub file_priorities: Option<Vec<FilePriority>>,
    /// Fetch pieces in index order (qBittorrent's `sequentialDownload`).
    pub sequential: bool,
    /// Fetch each wanted file's first and last piece first (`firstLastPiecePrio`).
    pub first_last_piece_priority: bool,
    /// Settings kept from an earlier run (the state folder), overriding the fields above.
    pub(crate) restored: Option<Restored>,
}

impl AddTorrent {
    fn new(source: TorrentSource) -> AddTorrent {
        AddTorrent {
            source,
            save_dir: None,
            paused: false,
            peers: Vec::new(),
            files: None,
            upload_limit: None,
            download_limit: None,
            seed_only: false,
            trust_data: false,
            seed_mode: false,
            metadata_only: false,
            label: None,
            category: None,
            tags: Vec::new(),
            share_limits: ShareLimits::USE_GLOBAL,
            force_start: false,
            file_priorities: None,
            sequential: false,
            first_last_piece_priority: false,
            restored: None,
        }
    }

    /// A .torrent file on disk.
    pub fn file(path: impl Into<PathBuf>) -> AddTorrent {
        AddTorrent::new(TorrentSource::File(path.into()))
    }

    /// A .torrent file's bytes.
    pub fn bytes(bytes: Vec<u8>) -> AddTorrent {
        AddTorrent::new(TorrentSource::Bytes(bytes))
    }

    /// A magnet link.
    pub fn magnet(uri: impl Into<String>) -> AddTorrent {
        AddTorrent::new(TorrentSource::Magnet(uri.into()))
    }

    /// A magnet link if `arg` starts with `magnet:`, else a path to a .torrent file: what a
    /// command line argument means.
    pub fn parse(arg: &str) -> AddTorrent {
        if arg.starts_with("magnet:") {
            AddTorrent::magnet(arg)
        } else {
            AddTorrent::file(arg)
        }
    }

    /// Sets the data folder.
    pub fn save_dir(mut self, dir: impl Into<PathBuf>) -> AddTorrent {
        self.save_dir = Some(dir.into());
        self
    }

    /// Adds peers to connect to.
    pub fn peers(mut self, peers: impl IntoIterator<Item = SocketAddr>) -> AddTorrent {
        self.peers.extend(peers);
        self
    }

    /// Adds it paused (or not).
    pub fn paused(mut self, paused: bool) -> AddTorrent {
        self.paused = paused;
        self
    }

    /// Seed mode: no check, served at once, each piece verified the first time a peer asks
    /// for it (see [`AddTorrent::seed_mode`]).
    pub fn seed_mode(mut self) -> AddTorrent {
        self.seed_mode = true;
        self
    }

    /// Serves only: opens the files read-only and writes nothing.
    pub fn seed_only(mut self) -> AddTorrent {
        self.seed_only = true;
        self
    }

    /// For a magnet link: stops at the metadata, opening no storage.
    pub fn metadata_only(mut self) -> AddTorrent {
        self.metadata_only = true;
        self
    }

    /// Labels where it came from.
    pub fn label(mut self, label: impl Into<String>) -> AddTorrent {
        self.label = Some(label.into());
        self
    }

    /// Puts it in a category (its data goes to the category's save path unless
    /// [`AddTorrent::save_dir`] says otherwise).
    pub fn category(mut self, category: impl Into<String>) -> AddTorrent {
        self.category = Some(category.into());
        self
    }

    /// Tags it.
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> AddTorrent {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Sets its own share limits.
    pub fn share_limits(mut self, limits: ShareLimits) -> AddTorrent {
        self.share_limits = limits;
        self
    }

    /// Force-starts it: it runs whatever the queue says.
    pub fn force_start(mut self, on: bool) -> AddTorrent {
        self.force_start = on;
        self
    }
}

/// Settings of a torrent the state folder kept.
#[derive(Debug, Clone)]
pub(crate) enum Restored {
    /// Read already.
    Settings(Box<Settings>),
    /// Beside this file, to be read when the torrent is added.
    Beside(PathBuf),
}

/// What the client's threads share.
pub(crate) struct Shared {
    state: Mutex<State>,
    events: Publisher,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on another thread while holding the lock leaves a registry that was
        // consistent at each await point; keep serving rather than cascade the panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the registry unless the client shut down.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&mut State) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        let mut s = self.lock();
        if s.closed {
            return Err(ClientError::ShutDown);
        }
        f(&mut s)
    }
}

/// A running BitTorrent client: event loops, the disk pool, trackers, the registry of
/// torrents. See the module doc. Dropping it shuts it down as [`Client::shutdown`] does.
pub struct Client {
    shared: Arc<Shared>,
    worker: Option<(mpsc::Sender<Work>, JoinHandle<()>)>,
    listen: Option<SocketAddr>,
    backend: Backend,
    backend_note: Option<String>,
    peer_id: PeerId,
    descriptors: DescriptorBudget,
    dht_addr: Option<SocketAddr>,
}

impl Client {
    /// Starts the loops (listening on `config.listen` if set), the disk pool and the
    /// housekeeping thread; with `remember_torrents`, adds every torrent kept in the state
    /// folder again.
    pub fn start(mut config: ClientConfig) -> Result<Client, ClientError> {
        let resolved =
            crate::driver::resolve(config.io).map_err(|e| ClientError::Backend(e.reason))?;
        let (backend, backend_note) = (
            resolved.backend,
            resolved.fallback.map(|e| format!("{e}; using epoll")),
        );
        std::fs::create_dir_all(&config.data_dir)
            .map_err(ClientError::io("create", &config.data_dir))?;
        let loops = config.loop_count();
        let store = match &config.state_dir {
            Some(dir) => Some(store::Store::open(dir.clone(), config.remember_torrents)?),
            None => None,
        };
        // Before anything opens a descriptor of its own: the soft RLIMIT_NOFILE raised, and
        // the connections held below what the limit leaves them (see `descriptors.rs`).
        let disk_config = DiskPoolConfig::default();
        let descriptors = DescriptorBudget::apply(
            config.limits.max_connections,
            loops,
            disk_config.hash_threads + disk_config.io_threads,
        );
        if let Some(note) = descriptors.note() {
            tracing::warn!("{note}");
        }
        config.limits.max_connections = descriptors.max_connections;
        let pool = Arc::new(
            DiskPool::new(disk_config)
                .map_err(|e| ClientError::Start(format!("cannot start the disk pool: {e}")))?,
        );
        let peer_id = config.peer_id.unwrap_or_else(random_peer_id);
        let core = config.session_config(loops);
        // Checked once here, so a kernel without a CSPRNG is a start error, not a failed key.
        crate::entropy::OsKeys::new().map_err(|e| {
            ClientError::Start(format!(
                "no cryptographic random generator (getrandom): {e}"
            ))
        })?;
        let epoch = Instant::now();
        let mut drivers = shard::build(backend, loops, config.listen, pool.clone(), epoch, |_| {
            let keys = crate::entropy::OsKeys::new().expect("checked above");
            Session::new(
                core.clone(),
                peer_id,
                random_u64(),
                Box::new(keys),
                Time::ZERO,
            )
        })
        .map_err(|e| {
            ClientError::Start(match config.listen {
                Some(addr) => format!("cannot listen for peers on {addr}: {e}"),
                None => e.to_string(),
            })
        })?;
        let listen = drivers.first().and_then(|d| d.local_addr());
        let (work_tx, work_rx) = mpsc::channel();
        let dht_lookups = start_dht(
            &config,
            listen,
            store.as_ref(),
            &mut drivers,
            epoch,
            work_tx.clone(),
        )?;
        let dht_addr = drivers.first().and_then(|d| d.udp_addr());
        let events = Publisher::default();
        let mut maps = Vec::with_capacity(drivers.len());
        let mut threads = Vec::with_capacity(drivers.len());
        for (i, d) in drivers.into_iter().enumerate() {
            let map = IdMap::default();
            let on_event = forward_events(map.clone(), events.clone(), work_tx.clone());
            threads.push(
                LoopThread::spawn(d, format!("rt-loop-{i}"), on_event)
                    .map_err(|e| ClientError::Start(format!("cannot start a loop thread: {e}")))?,
            );
            maps.push(map);
        }
        let trackers = config.trackers.then(|| {
            trackers::Trackers::new(
                peer_id,
                listen.map_or(0, |a| a.port()),
                crate::net_addr::announce_ipv6(listen),
                events.clone(),
            )
        });
        let lsd = if config.lsd {
            let scope = lsd::Scope::for_listener(
                listen,
                config.lsd_interface,
                crate::net_addr::ipv6_interface,
            );
            lsd::LsdIo::new(listen.map(|a| a.port()), scope)
        } else {
            None
        };
        let mut state = State {
            loops: threads,
            maps,
            pool,
            torrents: Default::default(),
            data_dir: config.data_dir.clone(),
            allocation: config.allocation,
            store,
            trackers,
            lsd,
            progress: Default::default(),
            limits: Default::default(),
            events: events.clone(),
            closed: false,
            categories: Default::default(),
            tags: Default::default(),
            share_limits: ShareLimits::NONE,
            queue_config: QueueConfig::default(),
            queue: Vec::new(),
            queue_loading: false,
            departed: Metrics::default(),
            dht: dht_lookups,
        };
        state.load_policy(config.share_limits, config.queue);
        state.set_session_limits(config.limits.upload_rate, config.limits.download_rate);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            events,
        });
        let worker = {
            let shared = shared.clone();
            let resume_every = config
                .resume_interval
                .max(std::time::Duration::from_millis(100));
            std::thread::Builder::new()
                .name("rt-client".into())
                .spawn(move || worker::run(shared, work_rx, resume_every))
                .map_err(|e| ClientError::Start(format!("cannot start a thread: {e}")))?
        };
        let client = Client {
            shared,
            worker: Some((work_tx, worker)),
            listen,
            backend,
            backend_note,
            peer_id,
            descriptors,
            dht_addr,
        };
        client.load_state()?;
        Ok(client)
    }

    /// Adds the torrents kept in the state folder (with `remember_torrents`).
    fn load_state(&self) -> Result<usize, ClientError> {
        let kept = {
            let s = self.shared.lock();
            s.store.as_ref().map(store::Store::load).transpose()?
        };
        let Some(kept) = kept else {
            self.shared.with(|s| {
                s.loaded();
                Ok(())
            })?;
            return Ok(0);
        };
        let (magnets, torrents) = kept;
        let adds = magnets
            .into_iter()
            .map(|(uri, settings)| AddTorrent {
                restored: Some(Restored::Settings(Box::new(settings))),
                ..AddTorrent::magnet(uri)
            })
            .chain(torrents.into_iter().map(|path| AddTorrent {
                restored: Some(Restored::Beside(path.clone())),
                ..AddTorrent::file(path)
            }))
            .collect();
        let results = self.shared.with(|s| {
            let results = s.add_many(adds);
            s.loaded();
            Ok(results)
        })?;
        let mut loaded = 0;
        for r in results {
            match r {
                Ok(_) => loaded += 1,
                Err(e) => tracing::warn!("a torrent of the state folder was not loaded: {e}"),
            }
        }
        Ok(loaded)
    }

    /// The address peers connect to (its real port when the config said 0).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// The DHT node's UDP address, when it runs.
    pub fn dht_addr(&self) -> Option<SocketAddr> {
        self.dht_addr
    }

    /// The DHT node's counters (nodes, lookups, announces), when it runs.
    pub fn dht_stats(&self) -> Option<crate::dht::DhtStats> {
        self.shared.with(|s| Ok(s.dht_stats())).ok().flatten()
    }

    /// The I/O backend the loops run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why io_uring was not used, when [`IoChoice::Auto`] fell back to epoll.
    pub fn backend_note(&self) -> Option<&str> {
        self.backend_note.as_deref()
    }

    /// How the process's descriptors were shared when the client started: the raised
    /// `RLIMIT_NOFILE`, what it leaves for connections, and `max_connections` as applied.
    pub fn descriptors(&self) -> &DescriptorBudget {
        &self.descriptors
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Event loops running.
    pub fn loop_count(&self) -> usize {
        self.shared.lock().loops.len()
    }

    /// Events from now on, each subscriber with its own bounded queue. Subscribe before
    /// [`Client::add`] to see the torrent's [`ClientEvent::Added`].
    pub fn subscribe(&self) -> Events {
        self.shared.events.subscribe()
    }

    /// Adds a torrent: its files opened (created, unless seed-only) under its data folder,
    /// the pieces already there found (resume data, else a check), and the torrent started
    /// unless paused. A magnet link starts fetching its metadata.
    pub fn add(&self, torrent: AddTorrent) -> Result<TorrentHandle, ClientError> {
        let hash = self.shared.with(|s| {
            s.add_many(vec![torrent])
                .pop()
                .expect("one result per torrent")
        })?;
        Ok(self.handle(hash))
    }

    /// [`Client::add`] for many torrents at once: each is opened and checked, then all go
    /// into their loops in one batch (one round trip per loop).
    pub fn add_many(&self, torrents: Vec<AddTorrent>) -> Vec<Result<TorrentHandle, ClientError>> {
        match self.shared.with(|s| Ok(s.add_many(torrents))) {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map(|h| self.handle(h)))
                .collect(),
            Err(_) => vec![],
        }
    }

    fn handle(&self, hash: InfoHash) -> TorrentHandle {
        TorrentHandle {
            hash,
            shared: self.shared.clone(),
        }
    }

    /// The torrent with this info hash, if added.
    pub fn get(&self, hash: InfoHash) -> Option<TorrentHandle> {
        self.shared
            .lock()
            .torrents
            .contains_key(&hash)
            .then(|| self.handle(hash))
    }

    /// Every torrent.
    pub fn torrents(&self) -> Vec<TorrentHandle> {
        let hashes: Vec<InfoHash> = self.shared.lock().torrents.keys().copied().collect();
        hashes.into_iter().map(|h| self.handle(h)).collect()
    }

    /// Every torrent's status, in info hash order (one round trip per loop).
    pub fn list(&self) -> Vec<TorrentStatus> {
        self.shared.with(|s| Ok(s.list())).unwrap_or_default()
    }

    /// Every torrent with the label of where it came from (asks no loop).
    pub fn sources(&self) -> Vec<(InfoHash, String)> {
        self.shared.with(|s| Ok(s.sources())).unwrap_or_default()
    }

    /// Counters and histograms summed over the loops.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.shared.with(|s| Ok(s.metrics())).unwrap_or_default();
        let d = &self.descriptors;
        m.descriptor_limit = d.limit;
        m.connection_budget = d.connections as u64;
        m.max_connections = d.max_connections as u64;
        m.descriptors_open = descriptors::open_descriptors().unwrap_or(0);
        (m.cpu_user_seconds, m.cpu_system_seconds) = metrics::process_cpu_seconds();
        m
    }

    /// Sets the session-wide rate limits, bytes per second (`None`: unlimited).
    pub fn set_limits(
        &self,
        upload: Option<u64>,
        download: Option<u64>,
    ) -> Result<(), ClientError> {
        self.shared.with(|s| {
            s.set_session_limits(upload, download);
            Ok(())
        })
    }

    /// The categories, by name.
    pub fn categories(&self) -> Vec<Category> {
        self.shared
            .with(|s| Ok(s.categories.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// Creates a category (an error if it exists or the name is not valid: see
    /// [`policy::check_category_name`]). `save_path` `None`: the client's data folder.
    pub fn create_category(
        &self,
        name: &str,
        save_path: Option<PathBuf>,
    ) -> Result<(), ClientError> {
        self.shared.with(|s| s.create_category(name, save_path))
    }

    /// Changes a category's save path (for torrents added to it from now on; data already
    /// placed does not move). An error if there is no such category.
    pub fn edit_category(&self, name: &str, save_path: Option<PathBuf>) -> Result<(), ClientError> {
        self.shared.with(|s| s.edit_category(name, save_path))
    }

    /// Removes categories (unknown names are ignored); their torrents are left without one.
    pub fn remove_categories(&self, names: &[String]) -> Result<(), ClientError> {
        self.shared.with(|s| s.remove_categories(names))
    }

    /// The tags, sorted.
    pub fn tags(&self) -> Vec<String> {
        self.shared
            .with(|s| Ok(s.tags.iter().cloned().collect()))
            .unwrap_or_default()
    }

    /// Creates tags (existing ones are kept; each is trimmed, and an empty one or one with
    /// a comma is refused).
    pub fn create_tags(&self, tags: &[String]) -> Result<(), ClientError> {
        self.shared.with(|s| s.create_tags(tags))
    }

    /// Deletes tags, and takes them off every torrent.
    pub fn delete_tags(&self, tags: &[String]) -> Result<(), ClientError> {
        self.shared.with(|s| s.delete_tags(tags))
    }

    /// The client's share limits.
    pub fn share_limits(&self) -> ShareLimits {
        self.shared
            .with(|s| Ok(s.share_limits))
            .unwrap_or(ShareLimits::NONE)
    }

    /// Sets the client's share limits (no field may be -2), kept in the state folder.
    pub fn set_share_limits(&self, limits: ShareLimits) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_global_share_limits(limits))
    }

    /// Queueing as set.
    pub fn queue_config(&self) -> QueueConfig {
        self.shared.with(|s| Ok(s.queue_config)).unwrap_or_default()
    }

    /// Sets queueing, kept in the state folder; applied at once.
    pub fn set_queue_config(&self, queue: QueueConfig) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_queue_config(queue))
    }

    /// Saves resume data of every torrent that verified pieces since the last save.
    pub fn save_resume(&self) -> Result<(), ClientError> {
        self.shared.with(|s| {
            s.save_resume(false);
            Ok(())
        })
    }

    /// Stops gracefully: notes what every torrent verified, stops the loops (peers closed),
    /// writes every torrent's resume data once its last queued writes landed, lets a
    /// `completed` still on its way reach the trackers and announces `stopped` (bounded: at
    /// most about 8 s), and ends every event subscription.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some((tx, worker)) = self.worker.take() else {
            return;
        };
        let _ = tx.send(Work::Stop);
        let _ = worker.join();
        // What each torrent verified, then the loops stopped (no block arrives after), then
        // the resume data written once the last queued writes landed, then trackers told.
        let (haves, loops) = {
            let mut s = self.shared.lock();
            s.save_dht();
            (s.collect_haves(), std::mem::take(&mut s.loops))
        };
        for l in loops {
            if let Err(e) = l.stop() {
                tracing::warn!("an event loop ended badly: {e}");
            }
        }
        {
            let mut s = self.shared.lock();
            s.save_haves(haves, true, true);
            s.save_counters(true);
            if let Some(t) = s.trackers.as_mut() {
                t.stop_all();
            }
            s.closed = true;
        }
        self.shared.events.close();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens the UDP socket when the DHT or uTP needs it, gives it to loop 0 with the uTP
/// endpoint when the transport allows uTP (see `driver::utp_link`), and tells every loop the
/// transport policy; then opens the DHT node when `config` asks for one. The socket is bound here (its port goes
/// into every session's handshakes) and given to loop 0 (and only there); the node itself,
/// whose bootstrap names may take seconds to resolve, is made on a thread of its own, put
/// into loop 0's session (nodes to try that come before it wait in the session), and then
/// the housekeeping thread starts its lookups ([`Work::DhtReady`]). A failure to bind is a start error when the port was asked for,
/// else a warning and no DHT.
fn start_dht(
    config: &ClientConfig,
    listen: Option<SocketAddr>,
    store: Option<&store::Store>,
    drivers: &mut [crate::driver::Driver],
    epoch: Instant,
    work: mpsc::Sender<Work>,
) -> Result<Option<dht::Lookups>, ClientError> {
    let wants_utp = config.transport.utp();
    if !(config.dht.enabled || wants_utp) || drivers.is_empty() {
        for d in drivers.iter_mut() {
            d.set_transport(config.transport, false);
        }
        return Ok(None);
    }
    let bind = listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let bound = dht::bind(&config.dht, bind).and_then(|socket| {
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        drivers[0]
            .set_udp(socket)
            .map_err(|e| format!("cannot watch the UDP socket: {e}"))?;
        Ok(local)
    });
    let local = match bound {
        Ok(local) => local,
        // The port was asked for, or uTP is the only transport: nothing works without it.
        Err(e) if config.dht.port.is_some() || !config.transport.tcp() => {
            return Err(ClientError::Start(e))
        }
        Err(e) => {
            tracing::warn!("DHT and uTP off: {e}");
            for d in drivers.iter_mut() {
                d.set_transport(config.transport, false);
            }
            return Ok(None);
        }
    };
    if wants_utp {
        let max = config.limits.max_connections;
        drivers[0].run_utp(
            crate::driver::utp_link::endpoint_config(config.transport, max),
            random_u64(),
        );
    }
    for d in drivers.iter_mut() {
        d.set_transport(config.transport, wants_utp);
    }
    if !config.dht.enabled {
        return Ok(None);
    }
    for d in drivers.iter_mut() {
        d.session().set_dht_port(Some(local.port()));
    }
    let saved = store.and_then(|s| s.load_bytes(dht::STATE_FILE));
    let settings = config.dht.clone();
    let mailbox = drivers[0].mailbox();
    let mut lookups = dht::Lookups::new(listen.map(|a| a.port()), settings.announce_interval);
    let to_loop = mailbox.clone();
    lookups.names = dht::resolver(move |addr| {
        to_loop.send(shard::Mail::Run(Box::new(move |d| {
            let now = d.now();
            d.session().dht_add_node(addr, now);
        })))
    })
    .map_err(|e| tracing::warn!("DHT node names in torrents will not be resolved: {e}"))
    .ok();
    std::thread::Builder::new()
        .name("rt-dht-start".into())
        .spawn(move || {
            let now = Time::from_micros(epoch.elapsed().as_micros() as u64);
            let node = dht::node(&settings, local, saved, random_u64(), now);
            mailbox.send(shard::Mail::Run(Box::new(move |d| {
                d.session().set_dht(node)
            })));
            // Posted after the node: the lookups that follow reach a loop that has it.
            let _ = work.send(Work::DhtReady);
        })
        .map_err(|e| ClientError::Start(format!("cannot start a thread: {e}")))?;
    Ok(Some(lookups))
}

/// A loop's event callback: publishes what subscribers want to know, and tells the
/// housekeeping thread what it must act on. Never blocks the loop.
fn forward_events(
    map: IdMap,
    events: Publisher,
    work: mpsc::Sender<Work>,
) -> impl FnMut(&Event) + Send + 'static {
    move |e| {
        let hash = |id| {
            map.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .copied()
        };
        match e {
            Event::PieceVerified { torrent, piece } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::PieceVerified {
                        info_hash,
                        piece: piece.get(),
                    });
                }
            }
            Event::HashFailed { torrent, piece } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::HashFailed {
                        info_hash,
                        piece: piece.get(),
                    });
                }
            }
            Event::PeerBanned { torrent, addr } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::PeerBanned {
                        info_hash,
                        addr: *addr,
                    });
                }
            }
            Event::TorrentComplete { torrent } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::Completed { info_hash });
                    let _ = work.send(Work::Completed(info_hash));
                }
            }
            Event::MetadataReceived { torrent, info } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::MetadataReceived {
                        info_hash,
                        info: info.clone(),
                    });
                    let _ = work.send(Work::Metadata(info_hash, info.clone()));
                }
            }
            Event::SeedModeFailed { torrent, piece } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::HashFailed {
                        info_hash,
                        piece: piece.get(),
                    });
                    tracing::warn!(
                        "{info_hash}: piece {} failed its seed-mode check; checking the whole torrent",
                        piece.get()
                    );
                    let _ = work.send(Work::Recheck(info_hash));
                }
            }
            Event::TorrentError { torrent, error } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::Error {
                        info_hash,
                        message: error.clone(),
                    });
                    let _ = work.send(Work::DiskError(info_hash));
                }
            }
            Event::Dht(crate::dht::DhtEvent::Peers {
                info_hash, peers, ..
            }) => {
                let _ = work.send(Work::DhtPeers(*info_hash, peers.clone()));
            }
            Event::Dht(crate::dht::DhtEvent::LookupDone {
                info_hash,
                responded,
                ..
            }) => {
                let _ = work.send(Work::DhtLookupDone(*info_hash, *responded));
            }
            // Only from a loop without the node; loop 0 takes its own.
            Event::DhtNode { addr } => {
                let _ = work.send(Work::DhtNode(*addr));
            }
            Event::ExternalAddrVote { ip, voter } => {
                let _ = work.send(Work::ExternalAddrVote(*ip, *voter));
            }
            Event::PeerConnected { torrent, addr, .. } => {
                if let Some(info_hash) = hash(*torrent) {
                    events.publish(ClientEvent::PeerConnected {
                        info_hash,
                        addr: *addr,
                    });
                }
            }
            _ => {}
        }
    }
}

/// A random 64-bit value from the kernel's CSPRNG (`getrandom`), for RNG seeds, tracker keys
/// and peer ids; the core draws none of its own.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if crate::entropy::fill(&mut buf).is_ok() {
        return u64::from_le_bytes(buf);
    }
    // No getrandom (a very old kernel): std's hasher is randomly keyed per process and call,
    // enough for values that only have to differ between runs and peers.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// A fresh peer id: our client prefix and twelve random characters.
pub fn random_peer_id() -> PeerId {
    let mut tail = [0u8; 12];
    tail[..8].copy_from_slice(&random_u64().to_le_bytes());
    tail[8..].copy_from_slice(&random_u64().to_le_bytes()[..4]);
    PeerId::generate(tail)
}
