//! Moving a torrent's data to another folder (`TorrentHandle::move_storage`, qBittorrent's
//! `setLocation`), off the registry lock.
//!
//! ```text
//!   begin_move (lock held)   checks, takes it out of its loop (deactivate: resume data
//!                            saved), marks it moving, keeps the intent (from, to) in its
//!                            settings before any file moves
//!   spawn -> rt-move thread  storage::move_files, progress in MoveProgress (no lock held:
//!                            the API and the other torrents carry on); on a failure the
//!                            files go back the other way
//!   finish_move (lock held)  storage reopened where the data is, intent cleared, started
//!                            again unless paused or queued meanwhile (resume data: no check)
//! ```
//!
//! A client that stops (or crashes) between the two ends finds the intent when it loads the
//! torrent and runs [`recover`]: the move finished (every step is idempotent), else rolled
//! back; if both fail the intent stays for the next start and the torrent is held with its
//! data missing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::events::ClientEvent;
use super::state::State;
use super::store::{MoveIntent, Settings};
use super::{ClientError, Shared};
use crate::core::InfoHash;
use crate::metainfo::Info;
use crate::storage::{self, Storage};

/// How far a move is.
#[derive(Debug)]
pub(crate) struct MoveProgress {
    pub done: AtomicU64,
    pub total: u64,
}

impl MoveProgress {
    /// Bytes moved over bytes to move, 0 to 1.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        (self.done.load(Ordering::Relaxed) as f64 / self.total as f64).min(1.0)
    }
}

/// A move begun by [`State::begin_move`], for the mover thread.
pub(crate) struct MoveJob {
    hash: InfoHash,
    info: Arc<Info>,
    from: PathBuf,
    to: PathBuf,
    progress: Arc<MoveProgress>,
}

impl State {
    /// Everything of a move that needs the registry before files move (see the module doc);
    /// `None` when the data is in that folder already.
    pub(crate) fn begin_move(
        &mut self,
        hash: InfoHash,
        to: &Path,
    ) -> Result<Option<MoveJob>, ClientError> {
        if to.as_os_str().is_empty() {
            return Err(ClientError::InvalidArgument(
                "the new location is empty".into(),
            ));
        }
        let e = self.entry(hash)?;
        if e.moving.is_some() {
            return Err(ClientError::InvalidArgument(format!(
                "{hash} is being moved already"
            )));
        }
        let info = e.info.clone().ok_or(ClientError::NoMetadata(hash))?;
        let from = e
            .settings
            .save_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone());
        let to = if to.is_absolute() {
            to.to_path_buf()
        } else {
            self.data_dir.join(to)
        };
        if to
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(ClientError::InvalidArgument(format!(
                "{}: give the new location without `..`",
                to.display()
            )));
        }
        // The folders as they really are (a symlinked folder is the user's choice), so that
        // "inside" is decided on real paths, before anything is created.
        let from = std::fs::canonicalize(&from).unwrap_or(from);
        let to = real_path(&to);
        if to == from {
            return Ok(None);
        }
        if to.starts_with(&from) {
            return Err(ClientError::InvalidArgument(format!(
                "{} is inside the torrent's folder {}",
                to.display(),
                from.display()
            )));
        }
        std::fs::create_dir_all(&to).map_err(ClientError::io("create", &to))?;
        let probe = to.join(format!(".ringtorrent-probe-{}", hash.to_hex()));
        std::fs::File::create(&probe).map_err(ClientError::io("write", &to))?;
        let _ = std::fs::remove_file(&probe);
        let to = std::fs::canonicalize(&to).map_err(ClientError::io("read", &to))?;
        self.deactivate(hash)?;
        let progress = Arc::new(MoveProgress {
            done: AtomicU64::new(0),
            total: storage::move_size(&info),
        });
        let e = self.entry_mut(hash)?;
        e.moving = Some(progress.clone());
        e.settings.moving = Some(MoveIntent {
            from: from.clone(),
            to: to.clone(),
        });
        if let Err(err) = self.save_settings(&hash) {
            // Nothing moved: carry on where it was.
            let e = self.entry_mut(hash)?;
            e.moving = None;
            e.settings.moving = None;
            self.resume_after_move(hash);
            return Err(err);
        }
        tracing::info!(
            "{} ({hash}): moving its data from {} to {}",
            info.name(),
            from.display(),
            to.display()
        );
        Ok(Some(MoveJob {
            hash,
            info,
            from,
            to,
            progress,
        }))
    }

    /// The end of a move: the data is in `dir` (the new folder, or the old one after a
    /// failure, `error` saying why); `keep_intent` when it is split between the two.
    fn finish_move(
        &mut self,
        hash: InfoHash,
        dir: PathBuf,
        error: Option<String>,
        keep_intent: bool,
    ) {
        let data_dir = self.data_dir.clone();
        let allocation = self.allocation;
        let Ok(e) = self.entry_mut(hash) else { return };
        e.moving = None;
        if !keep_intent {
            e.settings.moving = None;
        }
        let info = e.info.clone().expect("a moved torrent has metadata");
        let moved = error.is_none();
        if moved {
            e.settings.save_dir = (dir != data_dir).then(|| dir.clone());
        }
        let mode = if e.settings.seed_only {
            storage::OpenMode::ReadOnly
        } else {
            storage::OpenMode::Create
        };
        let problem = if keep_intent {
            Some(format!(
                "its data is missing: a move to {} failed half-way ({}); it is finished or \
                 rolled back when the client starts again",
                dir.display(),
                error.clone().unwrap_or_default()
            ))
        } else {
            // Files left out (deselected, no wanted piece) stay uncreated there too.
            let skip = super::open::unneeded_files(&info, e.settings.priorities().as_deref());
            let options = storage::StorageOptions {
                allocation,
                ..storage::StorageOptions::new(mode)
            };
            match Storage::open_selected(info.clone(), &dir, options, &skip) {
                Ok(s) => {
                    e.storage = Some(Arc::new(s));
                    None
                }
                Err(err) => Some(format!("cannot open its data in {}: {err}", dir.display())),
            }
        };
        if let Some(p) = &problem {
            e.problem = Some(p.clone());
        }
        if let Err(err) = self.save_settings(&hash) {
            tracing::warn!("{hash}: {err}");
        }
        if let Some(message) = error.or(problem) {
            tracing::warn!("{} ({hash}): {message}", info.name());
            self.events.publish(ClientEvent::Error {
                info_hash: hash,
                message,
            });
        } else {
            tracing::info!("{} ({hash}): moved to {}", info.name(), dir.display());
        }
        if self.entry(hash).is_ok_and(|e| e.problem.is_none()) {
            self.resume_after_move(hash);
        }
    }

    /// Puts it back in its loop after a move unless it was paused or queued meanwhile.
    fn resume_after_move(&mut self, hash: InfoHash) {
        let Ok(e) = self.entry(hash) else { return };
        if e.settings.paused || e.queued {
            return;
        }
        if let Err(err) = self.start(hash) {
            tracing::warn!("{hash}: cannot start after its move: {err}");
        }
    }

    /// Refuses what must wait for a move to end (remove, recheck).
    pub(crate) fn refuse_while_moving(&self, hash: InfoHash) -> Result<(), ClientError> {
        if self.entry(hash)?.moving.is_some() {
            return Err(ClientError::InvalidArgument(format!(
                "{hash} is being moved; try again when the move has ended"
            )));
        }
        Ok(())
    }
}

/// `path` with its longest existing prefix resolved (symlinks followed), the rest appended.
fn real_path(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Runs a begun move on a thread of its own, then finishes it under the lock.
pub(crate) fn spawn(shared: Arc<Shared>, job: MoveJob) {
    let run = move || {
        let (dir, error, keep) = run_move(&job);
        let _ = shared.with(|s| {
            s.finish_move(job.hash, dir, error, keep);
            Ok(())
        });
    };
    if let Err(e) = std::thread::Builder::new()
        .name("rt-move".into())
        .spawn(run)
    {
        // No thread: the intent is kept, so the next start finishes the move.
        tracing::warn!("cannot start a thread to move data: {e}");
    }
}

/// Moves the files; returns where the data is, why the move failed, and whether it is split.
fn run_move(job: &MoveJob) -> (PathBuf, Option<String>, bool) {
    let mut report = |n: u64| job.progress.done.store(n, Ordering::Relaxed);
    let Err((path, e)) = storage::move_files(&job.info, &job.from, &job.to, &mut report) else {
        return (job.to.clone(), None, false);
    };
    let why = format!(
        "cannot move its data to {} ({}: {e})",
        job.to.display(),
        path.display()
    );
    match storage::move_files(&job.info, &job.to, &job.from, &mut |_| {}) {
        Ok(()) => (
            job.from.clone(),
            Some(format!("{why}; it stays in {}", job.from.display())),
            false,
        ),
        Err((p2, e2)) => (
            job.to.clone(),
            Some(format!(
                "{why}; moving it back failed too ({}: {e2})",
                p2.display()
            )),
            true,
        ),
    }
}

/// Finishes (or rolls back) a move a client found kept in `settings` when it loaded the
/// torrent: afterwards `settings` names the folder that holds the data. If neither way
/// works, the intent stays for the next start.
pub(crate) fn recover(info: &Info, intent: MoveIntent, settings: &mut Settings) {
    let name = info.name();
    match storage::move_files(info, &intent.from, &intent.to, &mut |_| {}) {
        Ok(()) => {
            tracing::info!(
                "{name}: finished an interrupted move to {}",
                intent.to.display()
            );
            settings.save_dir = Some(intent.to);
        }
        Err((path, e)) => {
            tracing::warn!(
                "{name}: cannot finish an interrupted move to {} ({}: {e}); moving it back",
                intent.to.display(),
                path.display()
            );
            match storage::move_files(info, &intent.to, &intent.from, &mut |_| {}) {
                Ok(()) => {
                    settings.save_dir = Some(intent.from);
                }
                Err((path, e)) => {
                    tracing::warn!(
                        "{name}: cannot move it back either ({}: {e}); tried again at the \
                         next start",
                        path.display()
                    );
                    settings.moving = Some(intent);
                }
            }
        }
    }
}
