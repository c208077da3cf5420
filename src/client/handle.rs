//! [`TorrentHandle`]: one torrent of a [`super::Client`], and what it reports.
//!
//! A handle is cheap to clone and may be used from any thread. Each call locks the client's
//! registry and, where it needs the torrent's live state, asks the torrent's event loop and
//! waits (bounded) for the answer. A handle whose torrent was removed answers
//! [`ClientError::UnknownTorrent`]; one whose client shut down, [`ClientError::ShutDown`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::trackers::TrackerStatus;

use super::policy::{QueueMove, ShareLimits};
use super::{ClientError, Shared};
use crate::core::InfoHash;
use crate::metainfo::Info;

/// Where a torrent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TorrentState {
    /// Added by magnet link, fetching the metadata from peers.
    Metadata,
    /// Downloading (or waiting for peers that have what it lacks).
    Downloading,
    /// Every wanted piece is verified; serving peers.
    Seeding,
    /// Out of the session, data and state kept.
    Paused,
    /// Stopped on an error (see [`TorrentStatus::error`]).
    Error,
    /// Not paused, but waiting for its turn in the queue (see `QueueConfig`); downloading
    /// or seeding by [`TorrentStatus::bytes_left`].
    Queued,
    /// Its data is being moved to another folder ([`TorrentHandle::move_storage`]); how far
    /// along is [`TorrentStatus::moving`].
    Moving,
    /// Its data is being checked from scratch ([`TorrentHandle::recheck`]); how far along is
    /// [`TorrentStatus::checking`].
    Checking,
}

impl TorrentState {
    /// The lowercase name, as the JSON API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            TorrentState::Metadata => "metadata",
            TorrentState::Downloading => "downloading",
            TorrentState::Seeding => "seeding",
            TorrentState::Paused => "paused",
            TorrentState::Error => "error",
            TorrentState::Queued => "queued",
            TorrentState::Moving => "moving",
            TorrentState::Checking => "checking",
        }
    }
}

/// What a .torrent file says about itself beside its info dictionary and trackers (shown
/// by qBittorrent's `torrents/properties`): all `None` for a torrent added from a magnet
/// link, whose peers send the info dictionary alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TorrentMeta {
    /// The free-text `comment`.
    pub comment: Option<String>,
    /// The program that made it (`created by`).
    pub created_by: Option<String>,
    /// When it was made (`creation date`), in seconds since the Unix epoch.
    pub creation_date: Option<i64>,
}

/// One torrent's status.
#[derive(Debug, Clone, Serialize)]
pub struct TorrentStatus {
    /// Its info hash, 40 hex digits.
    pub info_hash: String,
    /// Its name (a magnet link's `dn`, or the hash, before the metadata).
    pub name: String,
    /// Payload bytes (0 before the metadata).
    pub size: u64,
    /// Pieces (0 before the metadata).
    pub pieces: u32,
    /// Pieces verified.
    pub pieces_have: u32,
    /// Pieces verified over pieces, 0 to 1.
    pub progress: f64,
    /// Wanted bytes not verified yet (selected files only).
    pub bytes_left: u64,
    /// Where it stands.
    pub state: TorrentState,
    /// Bytes per second received, over the last seconds.
    pub download_rate: u64,
    /// Bytes per second sent, over the last seconds.
    pub upload_rate: u64,
    /// Payload bytes received that we needed, since it was (re)started.
    pub downloaded: u64,
    /// Payload bytes sent, since it was (re)started.
    pub uploaded: u64,
    /// Connected peers.
    pub peers: usize,
    /// Its own upload limit, bytes per second.
    pub upload_limit: Option<u64>,
    /// Its own download limit, bytes per second.
    pub download_limit: Option<u64>,
    /// Where it came from (`api`, `watch:<file>`, `magnet`, a caller's label).
    pub source: String,
    /// Its data folder.
    pub save_dir: PathBuf,
    /// Why it stopped or is held, if it did.
    pub error: Option<String>,
    /// Its category, if any.
    pub category: Option<String>,
    /// Its tags, sorted.
    pub tags: Vec<String>,
    /// Payload bytes sent, over all runs.
    pub uploaded_total: u64,
    /// Payload bytes received, over all runs.
    pub downloaded_total: u64,
    /// qBittorrent's ratio (see `policy::ratio`), at most 9999.
    pub ratio: f64,
    /// Seconds it has seeded, over all runs.
    pub seeding_time: u64,
    /// Seconds since it last sent or received payload in this run (0 when not running).
    pub inactive_time: u64,
    /// Its own share limits (-2 fields: the client's).
    pub share_limits: ShareLimits,
    /// The limits that apply: its own with the client's in place of -2.
    pub effective_share_limits: ShareLimits,
    /// Its place in the queue, from 1 (every torrent has one, seeding or not; queueing may
    /// be off).
    pub queue_position: usize,
    /// It runs whatever the queue says.
    pub force_start: bool,
    /// Pieces are fetched in index order.
    pub sequential: bool,
    /// Each wanted file's first and last piece are fetched first.
    pub first_last_piece_priority: bool,
    /// While its data is being moved: the share of the bytes moved, 0 to 1.
    pub moving: Option<f64>,
    /// While its data is being checked from scratch: the share of the bytes hashed, 0 to 1.
    pub checking: Option<f64>,
    /// When it was added (Unix seconds), kept over restarts in the state folder.
    pub added_on: u64,
    /// When it first completed (Unix seconds), kept likewise; `None` before that.
    pub completed_on: Option<u64>,
}

/// One connected peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Its address.
    pub addr: String,
    /// Its client, from an Azureus-style peer id.
    pub client: Option<String>,
    /// We dialled it.
    pub outgoing: bool,
    /// We refuse its requests.
    pub am_choking: bool,
    /// We want what it has.
    pub am_interested: bool,
    /// It refuses our requests.
    pub peer_choking: bool,
    /// It wants what we have.
    pub peer_interested: bool,
    /// Bytes per second from it.
    pub download_rate: u64,
    /// Bytes per second to it.
    pub upload_rate: u64,
    /// Share of the pieces it has, 0 to 1.
    pub progress: f64,
    /// It stopped answering our requests.
    pub snubbed: bool,
    /// How the connection is protected: `none` (a plain handshake), `mse_plaintext` (the
    /// encrypted handshake, then plaintext) or `rc4`.
    pub encryption: &'static str,
}

/// How much a file is wanted: qBittorrent's file priorities (0, 1, 6, 7).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FilePriority {
    /// Not downloaded (0); its file is not created while no wanted piece touches it.
    Skip,
    /// Downloaded (1).
    #[default]
    Normal,
    /// Downloaded before `Normal` files (6).
    High,
    /// Downloaded before `High` files (7).
    Maximal,
}

impl FilePriority {
    /// qBittorrent's number for it.
    pub fn qbt(self) -> u8 {
        match self {
            FilePriority::Skip => 0,
            FilePriority::Normal => 1,
            FilePriority::High => 6,
            FilePriority::Maximal => 7,
        }
    }

    /// From qBittorrent's number: 0, 1, 6 or 7 (others are not priorities qBittorrent
    /// accepts).
    pub fn from_qbt(n: i64) -> Option<FilePriority> {
        Some(match n {
            0 => FilePriority::Skip,
            1 => FilePriority::Normal,
            6 => FilePriority::High,
            7 => FilePriority::Maximal,
            _ => return None,
        })
    }

    /// Whether the file is downloaded.
    pub fn wanted(self) -> bool {
        self != FilePriority::Skip
    }
}

/// One file of a torrent.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// Its path below the data folder, `/`-separated.
    pub path: String,
    /// Its length in bytes.
    pub length: u64,
    /// Bytes of it in verified pieces.
    pub done: u64,
    /// Whether it is downloaded (deselected files are not).
    pub wanted: bool,
    /// Its priority (`skip` when not wanted).
    pub priority: FilePriority,
}

/// One torrent of a client. See the module doc.
#[derive(Clone)]
pub struct TorrentHandle {
    pub(crate) hash: InfoHash,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for TorrentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorrentHandle")
            .field("info_hash", &self.hash)
            .finish()
    }
}

impl TorrentHandle {
    /// Its info hash.
    pub fn info_hash(&self) -> InfoHash {
        self.hash
    }

    /// Its metadata, once known (always, for a torrent added from a .torrent file).
    pub fn info(&self) -> Result<Option<Arc<Info>>, ClientError> {
        self.shared.with(|s| s.info(self.hash))
    }

    /// What its .torrent file says about itself: comment, creator, creation date.
    pub fn meta(&self) -> Result<TorrentMeta, ClientError> {
        self.shared.with(|s| Ok(s.entry(self.hash)?.meta.clone()))
    }

    /// Its status now.
    pub fn status(&self) -> Result<TorrentStatus, ClientError> {
        self.shared.with(|s| s.status(self.hash))
    }

    /// Its connected peers.
    pub fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        self.shared.with(|s| s.peers(self.hash))
    }

    /// Its files and how much of each is verified (none before the metadata).
    pub fn files(&self) -> Result<Vec<FileStatus>, ClientError> {
        self.shared.with(|s| s.files(self.hash))
    }

    /// Takes it out of the session (its peers closed, resume data saved); data kept.
    pub fn pause(&self) -> Result<(), ClientError> {
        self.shared.with(|s| s.pause(self.hash))
    }

    /// Puts a paused torrent back. One held because its data went missing gets its files
    /// back (created empty where still missing) and downloads what it lacks: the user asked.
    pub fn resume(&self) -> Result<(), ClientError> {
        self.shared.with(|s| s.resume(self.hash))
    }

    /// Checks its data again from scratch, ignoring resume data, and carries on from what
    /// the check finds (ends seed mode). Runs the check on this thread, on the disk pool's
    /// hashing threads, before returning; the client's lock is not held meanwhile, so other
    /// handles and the API answer, this torrent showing [`TorrentState::Checking`].
    pub fn recheck(&self) -> Result<(), ClientError> {
        let job = self.shared.with(|s| s.begin_recheck(self.hash))?;
        let have = job.run();
        self.shared.with(|s| s.finish_recheck(self.hash, have))
    }

    /// Starts a check of its data from scratch and returns at once: when this returns, the
    /// torrent is out of its loop and shows [`TorrentState::Checking`]; the hashing runs on
    /// a thread of its own, and the torrent starts again from what it finds (as
    /// [`TorrentHandle::recheck`]). What qBittorrent's `torrents/recheck` does.
    pub fn start_recheck(&self) -> Result<(), ClientError> {
        let job = self.shared.with(|s| s.begin_recheck(self.hash))?;
        let (shared, hash) = (self.shared.clone(), self.hash);
        std::thread::Builder::new()
            .name("rt-check".into())
            .spawn(move || {
                let have = job.run();
                if let Err(e) = shared.with(|s| s.finish_recheck(hash, have)) {
                    tracing::warn!("{hash}: cannot start after its check: {e}");
                }
            })
            .map_err(ClientError::io(
                "start a thread to check",
                std::path::Path::new(""),
            ))?;
        Ok(())
    }

    /// Removes it from the client (and the state folder); with `delete_data`, its files too.
    pub fn remove(&self, delete_data: bool) -> Result<(), ClientError> {
        self.shared.with(|s| s.remove(self.hash, delete_data))
    }

    /// Sets its own rate limits, bytes per second (`None`: none), besides the client's.
    pub fn set_limits(
        &self,
        upload: Option<u64>,
        download: Option<u64>,
    ) -> Result<(), ClientError> {
        self.shared
            .with(|s| s.set_limits(self.hash, upload, download))
    }

    /// Chooses which files are downloaded, by index (`true`: wanted). Pieces already
    /// verified stay; a deselected file's pieces that no wanted file shares are not fetched.
    pub fn set_files(&self, wanted: Vec<bool>) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_files(self.hash, wanted))
    }

    /// Sets each file's priority, by index (padding files included, as in
    /// [`Info::files`]). Kept in the torrent's settings. A skipped file's pieces that no wanted
    /// file shares are not fetched; pieces already verified stay.
    pub fn set_file_priorities(&self, priorities: Vec<FilePriority>) -> Result<(), ClientError> {
        self.shared
            .with(|s| s.set_file_priorities(self.hash, priorities))
    }

    /// Downloads pieces in index order (for streaming) instead of rarest first. Kept in the
    /// torrent's settings.
    pub fn set_sequential(&self, on: bool) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_order(self.hash, Some(on), None))
    }

    /// First/last-piece priority: the first and last piece of each wanted file are fetched
    /// before the rest. Kept in the torrent's settings.
    pub fn set_first_last_piece_priority(&self, on: bool) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_order(self.hash, None, Some(on)))
    }

    /// Peers to connect to, besides those trackers and peer exchange find.
    pub fn add_peers(&self, peers: &[SocketAddr]) -> Result<(), ClientError> {
        self.shared.with(|s| s.add_peers(self.hash, peers.to_vec()))
    }

    /// Puts it in a category (`None`: none). The category must exist; its data does not
    /// move.
    pub fn set_category(&self, category: Option<&str>) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_category(self.hash, category))
    }

    /// Adds tags to it (each created if the client has none of that name).
    pub fn add_tags(&self, tags: &[String]) -> Result<(), ClientError> {
        self.shared.with(|s| s.add_tags(self.hash, tags))
    }

    /// Takes tags off it (the client keeps them).
    pub fn remove_tags(&self, tags: &[String]) -> Result<(), ClientError> {
        self.shared.with(|s| s.remove_tags(self.hash, tags))
    }

    /// Sets its own share limits (-2: the client's; -1: none). Checked at once and then
    /// every second.
    pub fn set_share_limits(&self, limits: ShareLimits) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_share_limits(self.hash, limits))
    }

    /// Force-starts it (`true`: it runs whatever the queue says) or gives it back to the
    /// queue.
    pub fn set_force_start(&self, on: bool) -> Result<(), ClientError> {
        self.shared.with(|s| s.set_force_start(self.hash, on))
    }

    /// Moves it in the queue.
    pub fn queue_move(&self, to: QueueMove) -> Result<(), ClientError> {
        self.shared.with(|s| s.queue_move(self.hash, to))
    }

    /// Moves its data to the folder `new_dir` (created if missing; a relative path is taken
    /// below the client's data folder), as qBittorrent's `setLocation` does. Returns once
    /// the move has started: the torrent leaves its loop (as a pause does), reports
    /// [`TorrentState::Moving`] with [`TorrentStatus::moving`] while the files move on a
    /// thread of their own (renamed on one file system; copied, synced, then the source
    /// deleted across file systems), then continues from the new folder on its resume data,
    /// without a check. The move is kept in the state folder before any file moves, so a
    /// client stopped half-way finishes it (or rolls it back) when it starts again. A
    /// failed move puts the files back and continues from the old folder.
    ///
    /// Refused: an empty path, a folder inside the current one, a torrent already moving or
    /// without metadata; a folder that cannot be created or written is
    /// [`ClientError::Io`]. Moving to the folder it is in already does nothing.
    pub fn move_storage(&self, new_dir: impl AsRef<std::path::Path>) -> Result<(), ClientError> {
        let job = self
            .shared
            .with(|s| s.begin_move(self.hash, new_dir.as_ref()))?;
        if let Some(job) = job {
            super::relocate::spawn(self.shared.clone(), job);
        }
        Ok(())
    }

    /// Asks each of its trackers for peers now, as qBittorrent's `reannounce` does (each
    /// tracker's own `min interval` is not waited for; a torrent out of its loop, paused or
    /// queued, has nothing to announce and this does nothing).
    pub fn reannounce(&self) -> Result<(), ClientError> {
        self.shared.with(|s| s.reannounce(self.hash))
    }

    /// Each of its trackers, tier by tier, as its last announce left it (working, not
    /// working with the tracker's reason, the counts it gave); all not contacted when the
    /// client announces nothing.
    pub fn tracker_status(&self) -> Result<Vec<TrackerStatus>, ClientError> {
        self.shared.with(|s| {
            let e = s
                .torrents
                .get(&self.hash)
                .ok_or(ClientError::UnknownTorrent(self.hash))?;
            Ok(match &s.trackers {
                Some(t) => t.status(self.hash, &e.trackers),
                None => super::trackers::Trackers::unknown(&e.trackers),
            })
        })
    }

    /// Its tracker tiers, as added (announce-list order).
    pub fn trackers(&self) -> Result<Vec<Vec<String>>, ClientError> {
        self.shared.with(|s| {
            s.torrents
                .get(&self.hash)
                .map(|e| e.trackers.clone())
                .ok_or(ClientError::UnknownTorrent(self.hash))
        })
    }

    /// Whether it is paused (held out of the session by the user; a magnet link too).
    pub fn is_paused(&self) -> Result<bool, ClientError> {
        self.shared.with(|s| {
            s.torrents
                .get(&self.hash)
                .map(|e| e.settings.paused)
                .ok_or(ClientError::UnknownTorrent(self.hash))
        })
    }

    /// Which pieces are verified, in piece order (empty before the metadata; from the last
    /// resume save while it is out of the session).
    pub fn pieces(&self) -> Result<Vec<bool>, ClientError> {
        let (id, shard, count) = self.shared.with(|s| {
            let e = s
                .torrents
                .get(&self.hash)
                .ok_or(ClientError::UnknownTorrent(self.hash))?;
            let count = e.info.as_ref().map_or(0, |i| i.lengths().piece_count());
            Ok((e.id, e.shard, count))
        })?;
        let have = match id {
            Some(id) => self.shared.with(|s| {
                s.call(shard, move |d| {
                    d.session()
                        .have(id)
                        .map(|b| (0..count).map(|p| b.get(p)).collect::<Vec<bool>>())
                })
            })?,
            None => None,
        };
        Ok(have.unwrap_or_else(|| vec![false; count as usize]))
    }

    /// The request-to-block latency histogram (microseconds) of this run, if a block came.
    pub fn request_latency_us(&self) -> Result<Option<hdrhistogram::Histogram<u64>>, ClientError> {
        self.shared.with(|s| s.request_latency(self.hash))
    }
}
