//! Opening a torrent's storage and learning which pieces it already holds, and saving resume
//! data: the one place both happen, for every way a torrent is added.
//!
//! The pieces on disk come from, in order of preference: the caller's word that the data is
//! complete; nothing, when every file was just created; resume data, when every file is as it
//! was when the data was saved; else a check that hashes every piece on the pool. A check's
//! result is not written at once: the next periodic save (or shutdown) writes it, so adding ten
//! thousand torrents does not cost ten thousand synced writes.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::events::DataSource;
use super::handle::FilePriority;
use super::ClientError;
use crate::core::picker::{piece_priorities, Priority};
use crate::core::Bitfield;
use crate::metainfo::Info;
use crate::storage::{
    check, Allocation, CheckReport, DiskPool, FileState, OpenMode, ResumeData, ResumeError,
    Storage, StorageOptions,
};

/// A torrent's storage, opened, with the pieces it holds.
pub(crate) struct Opened {
    pub storage: Arc<Storage>,
    pub have: Bitfield,
    pub source: DataSource,
}

impl Opened {
    /// Whether resume data should be written (the data was hashed, and nothing records it).
    pub fn unsaved(&self) -> bool {
        matches!(self.source, DataSource::Checked { .. })
    }
}

/// The files not to create (by index in [`Info::files`]): those no wanted piece touches under
/// the file priorities `prios` (`None`: every file wanted). A skipped file that shares a piece
/// with a wanted one is created, since that piece is downloaded.
pub(crate) fn unneeded_files(info: &Info, prios: Option<&[FilePriority]>) -> Vec<bool> {
    let Some(prios) = prios else {
        return Vec::new();
    };
    let core: Vec<Priority> = prios
        .iter()
        .map(|p| {
            if p.wanted() {
                Priority::Normal
            } else {
                Priority::Skip
            }
        })
        .collect();
    let pieces = piece_priorities(info, &core);
    let piece_len = u64::from(info.lengths().piece_len()).max(1);
    info.files()
        .iter()
        .map(|f| {
            if f.length == 0 {
                return false;
            }
            let (first, last) = (f.offset / piece_len, (f.offset + f.length - 1) / piece_len);
            (first..=last).all(|p| pieces.get(p as usize) == Some(&Priority::Skip))
        })
        .collect()
}

/// Opens `info`'s files under `dir` (`mode` says whether missing ones are created; those
/// marked in `skip` are not: [`unneeded_files`]) without learning what they hold.
pub(crate) fn open_storage(
    info: &Arc<Info>,
    dir: &Path,
    (mode, allocation): (OpenMode, Allocation),
    skip: &[bool],
) -> Result<Storage, ClientError> {
    let options = StorageOptions {
        allocation,
        ..StorageOptions::new(mode)
    };
    Storage::open_selected(info.clone(), dir, options, skip).map_err(|source| {
        ClientError::Storage {
            name: info.name().to_string(),
            source,
        }
    })
}

/// Opens `info`'s files under `dir` (`mode` says whether missing ones are created, `skip`
/// which are not) and finds which pieces they hold (see the module doc). `resume_dir` is
/// where resume data lives; `loaded`, its data for this torrent if the caller read it
/// already ([`ResumeData::load`]'s result), so it is not read twice.
pub(crate) fn open(
    info: &Arc<Info>,
    dir: &Path,
    (mode, allocation, skip): (OpenMode, Allocation, &[bool]),
    pool: &DiskPool,
    trust_data: bool,
    (resume_dir, loaded): (Option<&Path>, Option<Result<ResumeData, ResumeError>>),
) -> Result<Opened, ClientError> {
    let storage = Arc::new(open_storage(info, dir, (mode, allocation), skip)?);
    let (have, source) = restore_with(&storage, pool, trust_data, true, resume_dir, loaded);
    Ok(Opened {
        storage,
        have,
        source,
    })
}

/// Restores a torrent from resume data `data` without opening its files, when the data holds
/// for them as they are (each stat'ed by path): they are opened on their first read or write,
/// and compared with that stat again then ([`Storage::open_lazy`]). `Err` gives `data` back
/// when it cannot be done that way (a file missing, changed, or to create or allocate): the
/// caller opens the files ([`open`]), which then finds why.
pub(crate) fn open_resumed(
    info: &Arc<Info>,
    dir: &Path,
    (mode, allocation, skip): (OpenMode, Allocation, &[bool]),
    data: ResumeData,
) -> Result<Opened, ResumeData> {
    let options = StorageOptions {
        allocation,
        ..StorageOptions::new(mode)
    };
    let lazy = Storage::open_lazy(info.clone(), dir, options, skip).filter(|storage| {
        storage
            .opened_file_stamps()
            .is_ok_and(|now| data.validate_against(storage, &now).is_ok())
    });
    match lazy {
        Some(storage) => Ok(Opened {
            storage: Arc::new(storage),
            have: data.verified,
            source: DataSource::Resumed,
        }),
        None => Err(data),
    }
}

/// The pieces `storage` holds verified, and how that was learnt. `just_opened`: the storage
/// was opened by this call, so files it created hold nothing yet; a storage that has been in
/// use (a paused torrent resuming) may have filled the files it created since.
pub(crate) fn restore(
    storage: &Storage,
    pool: &DiskPool,
    trust_data: bool,
    just_opened: bool,
    resume_dir: Option<&Path>,
) -> (Bitfield, DataSource) {
    restore_with(storage, pool, trust_data, just_opened, resume_dir, None)
}

/// [`restore`], with the resume data already read when `loaded` holds it.
fn restore_with(
    storage: &Storage,
    pool: &DiskPool,
    trust_data: bool,
    just_opened: bool,
    resume_dir: Option<&Path>,
    loaded: Option<Result<ResumeData, ResumeError>>,
) -> (Bitfield, DataSource) {
    let info = storage.info();
    let pieces = info.lengths().piece_count();
    if trust_data {
        return (Bitfield::full(pieces), DataSource::Trusted);
    }
    // Files this open just created hold zeros: hashing them would only prove that. A
    // writable storage's missing files are skipped ones, not created: nothing there either.
    let writable = storage.is_writable();
    let all_new = just_opened
        && storage.file_states().all(|s| {
            matches!(
                s,
                FileState::Present { created: true, .. } | FileState::NotStored
            ) || (writable && s == FileState::Missing)
        });
    if all_new {
        return (Bitfield::new(pieces), DataSource::New);
    }
    // Resume data names the pieces verified before; it is trusted only if every file is as
    // it was when the data was saved.
    let mut resume_rejected = None;
    if let Some(dir) = resume_dir {
        // A storage just opened holds a descriptor on each file there: their stamps come
        // from those (one fstat each), not from the paths walked again.
        let restored = if just_opened {
            let loaded = loaded.unwrap_or_else(|| ResumeData::load(dir, info.info_hash()));
            ResumeData::restore_opened(loaded, storage)
        } else {
            ResumeData::restore(dir, storage)
        };
        match restored {
            Ok(have) => return (have, DataSource::Resumed),
            Err(ResumeError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(
                    "{}: resume data not used ({e}); checking the data",
                    info.name()
                );
                resume_rejected = Some(e.to_string());
            }
        }
    }
    tracing::info!("{}: checking the data", info.name());
    let started = Instant::now();
    let report: CheckReport = check(storage, pool.hash_pool(), &AtomicU64::new(0));
    (
        report.verified(info.lengths()),
        DataSource::Checked {
            secs: started.elapsed().as_secs_f64(),
            resume_rejected,
        },
    )
}

/// Writes `have` as `storage`'s resume data under `dir` (atomically; see `ResumeData::save`).
pub(crate) fn save_resume(
    storage: &Storage,
    have: Bitfield,
    dir: &Path,
) -> Result<(), ClientError> {
    let name = || storage.info().name().to_string();
    std::fs::create_dir_all(dir).map_err(ClientError::io("create", dir))?;
    let data = ResumeData::capture(storage, have).map_err(|source| ClientError::Storage {
        name: name(),
        source,
    })?;
    data.save(dir).map_err(|source| ClientError::Resume {
        name: name(),
        source,
    })?;
    Ok(())
}

/// Checks a torrent's data under `dir`, changing nothing: every file examined and every piece
/// hashed on `threads` threads (0: one per core), `progress` counting the bytes hashed so
/// far. What `ringtorrent check` reports.
pub fn check_data(
    info: Arc<Info>,
    dir: &Path,
    threads: usize,
    progress: &AtomicU64,
) -> Result<(Storage, CheckReport), ClientError> {
    let name = info.name().to_string();
    let storage = Storage::open(info, dir, OpenMode::ReadOnly)
        .map_err(|source| ClientError::Storage { name, source })?;
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rt-check-{i}"))
        .build()
        .map_err(|e| ClientError::Start(format!("cannot start the hashing threads: {e}")))?;
    let report = check(&storage, &pool, progress);
    Ok((storage, report))
}
