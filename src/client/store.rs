//! The state folder: what a client keeps on disk between runs.
//!
//! ```text
//!   resume/<hash>.resume      verified pieces and file stamps (storage::ResumeData)
//!   torrents/<hash>.torrent   the torrent file, as added          } only with
//!   torrents/<hash>.magnet    a magnet link still fetching        } remember_torrents
//!   torrents/<hash>.json      its settings (Settings)             }
//!   categories.json           the categories (policy::Category)
//!   tags.json                 the tags
//!   preferences.json          share limits and queueing set at run time (Preferences)
//!   queue.json                the queue: info hashes, first to last
//! ```
//!
//! Writes go through a temporary file and a rename, so a crash leaves the old file or the new
//! one, never half of one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::handle::FilePriority;
use super::policy::ShareLimits;

use super::ClientError;
use crate::core::InfoHash;

/// A torrent's settings, kept beside its torrent file. Every field has a default, so files
/// written by older versions still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Not in the session (its data and resume state are kept).
    pub paused: bool,
    /// Upload limit for this torrent, bytes per second.
    pub upload_limit: Option<u64>,
    /// Download limit for this torrent, bytes per second.
    pub download_limit: Option<u64>,
    /// Where it came from: `api`, `watch:<file>`, a caller's label.
    pub source: String,
    /// When it was added (Unix seconds); 0 for a torrent not added yet.
    pub added: u64,
    /// When it first completed (Unix seconds; every wanted byte verified), kept after: a
    /// recheck or a file selected later does not change it. `None` before that.
    pub completed: Option<u64>,
    /// Its data folder, when not the client's.
    pub save_dir: Option<PathBuf>,
    /// Which files are downloaded, by index (`None`: all).
    pub files: Option<Vec<bool>>,
    /// Serve what is on disk, never create or write a file.
    pub seed_only: bool,
    /// Seed mode: the data was taken on trust when added, and each piece is verified the
    /// first time a peer asks for it (until a check ends it).
    pub seed_mode: bool,
    /// Its category, if any.
    pub category: Option<String>,
    /// Its tags.
    pub tags: BTreeSet<String>,
    /// Its own share limits (each field -2 by default: the client's).
    pub share_limits: ShareLimits,
    /// Payload bytes uploaded in earlier runs (this run's are the session's).
    pub uploaded_total: u64,
    /// Payload bytes downloaded in earlier runs.
    pub downloaded_total: u64,
    /// Milliseconds it has seeded, over all runs.
    pub seeding_ms: u64,
    /// Runs whatever the queue says (queueing ignores it).
    pub force_start: bool,
    /// Each file's priority, by index (`None`: `files` decides). Kept beside `files`, which
    /// always says which of them are wanted, so older versions still read the selection.
    pub file_priorities: Option<Vec<FilePriority>>,
    /// Pieces fetched in index order.
    pub sequential: bool,
    /// Each wanted file's first and last piece fetched first.
    pub first_last_piece_priority: bool,
    /// A move of its data under way (`TorrentHandle::move_storage`), kept before the first
    /// file moves: a client that starts and finds it finishes the move, or rolls it back.
    pub moving: Option<MoveIntent>,
}

impl Settings {
    /// Each file's priority, when anything but "all normal" was chosen: `file_priorities`,
    /// else the `files` selection (settings written before priorities existed).
    pub fn priorities(&self) -> Option<Vec<FilePriority>> {
        match (&self.file_priorities, &self.files) {
            (Some(p), files) if files.as_ref().is_none_or(|f| f.len() == p.len()) => {
                Some(p.clone())
            }
            (_, Some(f)) => Some(
                f.iter()
                    .map(|&w| {
                        if w {
                            FilePriority::Normal
                        } else {
                            FilePriority::Skip
                        }
                    })
                    .collect(),
            ),
            (p, None) => p.clone(),
        }
    }

    /// Sets each file's priority, and `files` to match.
    pub fn set_priorities(&mut self, p: Vec<FilePriority>) {
        self.files = Some(p.iter().map(|p| p.wanted()).collect());
        self.file_priorities = Some(p);
    }
}

/// A move of a torrent's data from one folder to another, as kept in its [`Settings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveIntent {
    /// The folder its data is moving from.
    pub from: PathBuf,
    /// The folder its data is moving to.
    pub to: PathBuf,
}

/// What [`Store::load`] found: magnet links with their settings, and torrent files' paths.
pub(crate) type Kept = (Vec<(String, Settings)>, Vec<PathBuf>);

/// The state folder's paths.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
    /// Whether torrents themselves are kept (not only resume data).
    pub remember: bool,
}

impl Store {
    /// The folders it needs, created.
    pub fn open(dir: PathBuf, remember: bool) -> Result<Store, ClientError> {
        let store = Store { dir, remember };
        let mut dirs = vec![store.resume_dir()];
        if remember {
            dirs.push(store.torrents_dir());
        }
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(ClientError::io("create", &d))?;
        }
        Ok(store)
    }

    pub fn resume_dir(&self) -> PathBuf {
        self.dir.join("resume")
    }

    fn torrents_dir(&self) -> PathBuf {
        self.dir.join("torrents")
    }

    fn path(&self, hash: &InfoHash, ext: &str) -> PathBuf {
        self.torrents_dir().join(format!("{}.{ext}", hash.to_hex()))
    }

    /// Keeps a torrent's file (once: an existing one is the same bytes, named by their hash).
    pub fn save_torrent(&self, hash: &InfoHash, bytes: &[u8]) -> Result<(), ClientError> {
        if !self.remember {
            return Ok(());
        }
        let path = self.path(hash, "torrent");
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, bytes)
    }

    /// Keeps a magnet link until its metadata comes.
    pub fn save_magnet(&self, hash: &InfoHash, uri: &str) -> Result<(), ClientError> {
        if !self.remember {
            return Ok(());
        }
        write_atomic(&self.path(hash, "magnet"), uri.as_bytes())
    }

    pub fn forget_magnet(&self, hash: &InfoHash) {
        let _ = std::fs::remove_file(self.path(hash, "magnet"));
    }

    pub fn save_settings(&self, hash: &InfoHash, settings: &Settings) -> Result<(), ClientError> {
        if !self.remember {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(settings).expect("settings serialise");
        write_atomic(&self.path(hash, "json"), &bytes)
    }

    /// Keeps a client-wide file (`categories.json`, ...) in the state folder, whether or not
    /// torrents are remembered.
    pub fn save_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ClientError> {
        let bytes = serde_json::to_vec_pretty(value).expect("state serialises");
        write_atomic(&self.dir.join(name), &bytes)
    }

    /// Keeps a client-wide file of bytes (`dht.dat`) in the state folder, through a rename.
    pub fn save_bytes(&self, name: &str, bytes: &[u8]) -> Result<(), ClientError> {
        write_atomic(&self.dir.join(name), bytes)
    }

    /// A client-wide file kept by [`Store::save_bytes`], if there is one.
    pub fn load_bytes(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }

    /// A client-wide file kept by [`Store::save_json`]; `None` when there is none, or it cannot
    /// be read (reported).
    pub fn load_json<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).ok()?;
        serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!("{}: not loaded: {e}", path.display()))
            .ok()
    }

    /// Forgets everything kept of a torrent, resume data included.
    pub fn forget(&self, hash: &InfoHash) {
        for ext in ["torrent", "json", "magnet"] {
            let _ = std::fs::remove_file(self.path(hash, ext));
        }
        let _ = std::fs::remove_file(crate::storage::resume_path(&self.resume_dir(), *hash));
    }

    /// Everything kept: magnet links (uri, settings) and the paths of torrent files, each in
    /// file name order. A torrent's file and settings are read when it is added
    /// ([`Store::settings`]), one at a time, so a restart of ten thousand torrents never
    /// holds them all in memory at once. A magnet file that cannot be read is reported and
    /// skipped.
    pub fn load(&self) -> Result<Kept, ClientError> {
        if !self.remember {
            return Ok((Vec::new(), Vec::new()));
        }
        let dir = self.torrents_dir();
        // Only what is loaded is sorted, by file name (bytes compare cheaply; ten thousand
        // full path comparisons do not).
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&dir)
            .map_err(ClientError::io("read", &dir))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| {
                let n = n.as_encoded_bytes();
                n.ends_with(b".torrent") || n.ends_with(b".magnet")
            })
            .collect();
        names.sort_unstable();
        let (mut magnets, mut torrents) = (Vec::new(), Vec::new());
        for path in names.into_iter().map(|n| dir.join(n)) {
            if path.extension().is_some_and(|x| x == "magnet") {
                match std::fs::read_to_string(&path) {
                    Ok(uri) => magnets.push((uri.trim().to_string(), Store::settings(&path))),
                    Err(e) => tracing::warn!("{}: not loaded: {e}", path.display()),
                }
            } else {
                torrents.push(path);
            }
        }
        Ok((magnets, torrents))
    }

    /// The settings kept beside the torrent or magnet file at `path` (defaults if there are
    /// none, or they cannot be read).
    pub fn settings(path: &Path) -> Settings {
        std::fs::read(path.with_extension("json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(ClientError::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_of_older_versions_still_load() {
        let old = br#"{"paused": true, "upload_limit": 5, "download_limit": null,
                       "source": "api", "added": 7}"#;
        let s: Settings = serde_json::from_slice(old).unwrap();
        assert!(s.paused && s.upload_limit == Some(5) && s.added == 7);
        assert_eq!((&s.save_dir, &s.files, s.seed_only), (&None, &None, false));
        assert_eq!((&s.category, s.tags.len()), (&None, 0));
        assert_eq!(s.share_limits, ShareLimits::USE_GLOBAL);
        assert_eq!(s.priorities(), None);
        assert!(!s.sequential && !s.first_last_piece_priority);
        assert_eq!(s.completed, None);
        // A selection written before priorities existed reads as Normal and Skip.
        let s: Settings = serde_json::from_slice(br#"{"files": [true, false]}"#).unwrap();
        assert_eq!(
            s.priorities(),
            Some(vec![FilePriority::Normal, FilePriority::Skip])
        );
    }

    #[test]
    fn file_priorities_round_trip_with_the_selection_beside() {
        let mut s = Settings::default();
        s.set_priorities(vec![
            FilePriority::Maximal,
            FilePriority::Skip,
            FilePriority::High,
        ]);
        assert_eq!(s.files, Some(vec![true, false, true]));
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains(r#""file_priorities":["maximal","skip","high"]"#),
            "{json}"
        );
        let back: Settings = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.priorities(), s.file_priorities);
    }

    #[test]
    fn a_store_keeps_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_path_buf(), true).unwrap();
        let hash = InfoHash::from_bytes([3; 20]);
        store.save_torrent(&hash, b"d4:infoe").unwrap();
        let settings = Settings {
            source: "api".into(),
            ..Settings::default()
        };
        store.save_settings(&hash, &settings).unwrap();
        store
            .save_magnet(&InfoHash::from_bytes([4; 20]), "magnet:?x")
            .unwrap();
        let (magnets, torrents) = store.load().unwrap();
        assert_eq!(
            magnets,
            vec![("magnet:?x".to_string(), Settings::default())]
        );
        assert_eq!(torrents.len(), 1);
        assert_eq!(std::fs::read(&torrents[0]).unwrap(), b"d4:infoe");
        assert_eq!(Store::settings(&torrents[0]), settings);
        store.forget(&hash);
        assert!(store.load().unwrap().1.is_empty());
        // A store that does not remember torrents writes none.
        let quiet = Store::open(dir.path().join("q"), false).unwrap();
        quiet.save_torrent(&hash, b"x").unwrap();
        assert!(!dir.path().join("q/torrents").exists());
    }
}
