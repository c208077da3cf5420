//! Resume data: which pieces were verified, and the size and modification time of every file
//! when that was recorded, so a restart can skip the full check when nothing changed.
//!
//! The file is bencode, `<state_dir>/<info hash hex>.resume`:
//!
//! ```text
//! d 5:files l l i<size> i<mtime ns> e ... e   one entry per torrent file, in order;
//!                                              `le` for padding or missing files
//!   9:info-hash 20:<bytes>
//!   11:piece-count i<n> e
//!   6:pieces <bitfield, wire order, spare bits zero>
//!   7:version i1e
//! e
//! ```
//!
//! It is written atomically (a temporary file in the same folder, written, `fsync`ed, renamed
//! over the old one, then the folder `fsync`ed), so after a crash or `kill -9` it is either
//! the old or the new version, never a mix. [`ResumeData::capture`] syncs the torrent's files
//! before it takes their stamps, so a piece recorded as verified was on disk at that moment.
//!
//! On load any doubt (unknown version, another torrent, a different piece or file count, a
//! file whose size or modification time changed, a file that is corrupt) is a
//! [`ResumeError`] whose message says why, and the caller checks every piece instead. A
//! piece is trusted only when its bit is set in a file that passed every test.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::bencode::{self, Limits, OwnedValue};
use crate::core::{Bitfield, InfoHash};
use crate::limits;

use super::{FileState, Storage, StorageError};

/// The resume format this build writes and reads.
pub const RESUME_VERSION: i64 = 1;

/// A file's size and modification time (nanoseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// Why resume data was not used. Each case means: check every piece.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// There is no resume file for this torrent.
    #[error("no resume data at {0}")]
    NotFound(PathBuf),
    /// The resume file could not be read or written.
    #[error("cannot {action} resume data {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// The file is not valid resume data (truncated, garbled, wrong types, too large).
    #[error("resume data is corrupt: {0}")]
    Corrupt(String),
    /// A format version this build does not know.
    #[error("resume data has format version {0}; this build reads version {RESUME_VERSION}")]
    UnknownVersion(i64),
    /// The file belongs to another torrent.
    #[error("resume data is for torrent {found}, not {expected}")]
    WrongTorrent {
        /// The torrent being resumed.
        expected: InfoHash,
        /// The torrent the file names.
        found: InfoHash,
    },
    /// The piece or file count differs from the torrent's.
    #[error("resume data records {found} {what}, the torrent has {expected}")]
    Layout {
        /// `pieces` or `files`.
        what: &'static str,
        /// The torrent's count.
        expected: u64,
        /// The recorded count.
        found: u64,
    },
    /// A file changed since the data was recorded.
    #[error("{path} changed since the resume data was saved: {change}")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// What changed, with the recorded and current values.
        change: String,
    },
    /// The files' current stamps could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where the resume data of `info_hash` lives in `state_dir`.
pub fn resume_path(state_dir: &Path, info_hash: InfoHash) -> PathBuf {
    state_dir.join(format!("{}.resume", info_hash.to_hex()))
}

/// The resume data of one torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeData {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The pieces verified when the data was taken.
    pub verified: Bitfield,
    /// Per torrent file: its stamp, or `None` for padding and missing files.
    pub files: Vec<Option<FileStamp>>,
}

impl ResumeData {
    /// Takes resume data for `storage` with `verified` pieces: first makes every write
    /// durable ([`Storage::sync`]), then records each file's stamp.
    pub fn capture(storage: &Storage, verified: Bitfield) -> Result<Self, StorageError> {
        assert_eq!(
            verified.len(),
            storage.info().lengths().piece_count(),
            "piece set of another torrent"
        );
        storage.sync()?;
        Ok(ResumeData {
            info_hash: storage.info().info_hash(),
            verified,
            files: storage.file_stamps()?,
        })
    }

    /// The bencoded file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let key = |k: &str| k.as_bytes().to_vec();
        let files = self
            .files
            .iter()
            .map(|f| {
                OwnedValue::List(match f {
                    None => Vec::new(),
                    Some(s) => vec![
                        // Sizes are bounded by MAX_TORRENT_LEN (2^50) when they are ours;
                        // saturate rather than wrap for anything else.
                        OwnedValue::Int(i64::try_from(s.size).unwrap_or(i64::MAX)),
                        OwnedValue::Int(s.mtime_ns),
                    ],
                })
            })
            .collect();
        let mut d = BTreeMap::new();
        d.insert(key("version"), OwnedValue::Int(RESUME_VERSION));
        d.insert(
            key("info-hash"),
            OwnedValue::Bytes(self.info_hash.as_bytes().to_vec()),
        );
        d.insert(
            key("piece-count"),
            OwnedValue::Int(i64::from(self.verified.len())),
        );
        d.insert(key("pieces"), OwnedValue::Bytes(self.verified.to_wire()));
        d.insert(key("files"), OwnedValue::List(files));
        OwnedValue::Dict(d).to_bytes()
    }

    /// Parses a resume file's bytes, checking its shape but not against any torrent.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ResumeError> {
        let limits = Limits {
            max_depth: 4,
            max_values: limits::MAX_BENCODE_VALUES,
            max_len: limits::MAX_RESUME_FILE_LEN,
        };
        let corrupt = |what: &str| ResumeError::Corrupt(what.to_owned());
        let root = bencode::decode_with(bytes, &limits)
            .map_err(|e| ResumeError::Corrupt(e.to_string()))?;
        let int = |key: &str| {
            root.get(key.as_bytes())
                .and_then(|n| n.as_int())
                .ok_or_else(|| corrupt(&format!("`{key}` is missing or not an integer")))
        };
        let version = int("version")?;
        if version != RESUME_VERSION {
            return Err(ResumeError::UnknownVersion(version));
        }
        let info_hash = root
            .get(b"info-hash")
            .and_then(|n| n.as_bytes())
            .and_then(InfoHash::from_slice)
            .ok_or_else(|| corrupt("`info-hash` is not 20 bytes"))?;
        let count = u32::try_from(int("piece-count")?)
            .ok()
            .filter(|&c| u64::from(c) <= limits::MAX_PIECES)
            .ok_or_else(|| corrupt("`piece-count` is out of range"))?;
        let verified = root
            .get(b"pieces")
            .and_then(|n| n.as_bytes())
            .and_then(|b| Bitfield::from_wire(b, count).ok())
            .ok_or_else(|| corrupt("`pieces` does not match `piece-count`"))?;
        let list = root
            .get(b"files")
            .and_then(|n| n.as_list())
            .ok_or_else(|| corrupt("`files` is missing or not a list"))?;
        let files = list
            .iter()
            .map(|entry| match entry.as_list() {
                Some([]) => Ok(None),
                Some([size, mtime]) => {
                    match (
                        size.as_int().and_then(|s| u64::try_from(s).ok()),
                        mtime.as_int(),
                    ) {
                        (Some(size), Some(mtime_ns)) => Ok(Some(FileStamp { size, mtime_ns })),
                        _ => Err(corrupt("a file entry holds a bad size or time")),
                    }
                }
                _ => Err(corrupt("a file entry is not a list of size and time")),
            })
            .collect::<Result<_, _>>()?;
        Ok(ResumeData {
            info_hash,
            verified,
            files,
        })
    }

    /// Writes the data to [`resume_path`] atomically and durably. Each save writes its own
    /// temporary file (named by process and a counter), so concurrent writers of the same
    /// torrent (two processes downloading it into different folders, say) never rename each
    /// other's half-written file; the last rename wins.
    pub fn save(&self, state_dir: &Path) -> Result<PathBuf, ResumeError> {
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = resume_path(state_dir, self.info_hash);
        let tmp = state_dir.join(format!(
            "{}.resume.tmp.{}.{}",
            self.info_hash.to_hex(),
            std::process::id(),
            SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let io = |path: &Path, action| {
            let path = path.to_path_buf();
            move |source| ResumeError::Io {
                path,
                action,
                source,
            }
        };
        std::fs::create_dir_all(state_dir).map_err(io(state_dir, "create the folder of"))?;
        let bytes = self.to_bytes();
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp, "create"))?;
            file.write_all(&bytes).map_err(io(&tmp, "write"))?;
            file.sync_all().map_err(io(&tmp, "sync"))?;
            std::fs::rename(&tmp, &path).map_err(io(&path, "replace"))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable only once the folder's entry is on disk.
        File::open(state_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(state_dir, "sync the folder of"))?;
        Ok(path)
    }

    /// Reads the resume data of `info_hash` from `state_dir`, checking its shape and that it
    /// names this torrent.
    pub fn load(state_dir: &Path, info_hash: InfoHash) -> Result<Self, ResumeError> {
        let path = resume_path(state_dir, info_hash);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ResumeError::NotFound(path))
            }
            Err(source) => {
                return Err(ResumeError::Io {
                    path,
                    action: "open",
                    source,
                })
            }
        };
        let mut bytes = Vec::new();
        file.take(limits::MAX_RESUME_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ResumeError::Io {
                path: path.clone(),
                action: "read",
                source,
            })?;
        if bytes.len() > limits::MAX_RESUME_FILE_LEN {
            return Err(ResumeError::Corrupt(format!(
                "the file is over {} bytes",
                limits::MAX_RESUME_FILE_LEN
            )));
        }
        let data = Self::from_bytes(&bytes)?;
        if data.info_hash != info_hash {
            return Err(ResumeError::WrongTorrent {
                expected: info_hash,
                found: data.info_hash,
            });
        }
        Ok(data)
    }

    /// Checks the data against `storage`'s torrent and its files as they are now.
    pub fn validate(&self, storage: &Storage) -> Result<(), ResumeError> {
        self.validate_against(storage, &storage.file_stamps()?)
    }

    /// [`ResumeData::validate`] against the files' stamps as the caller read them (`now`,
    /// one per file of the torrent, as [`Storage::file_stamps`] gives them).
    pub fn validate_against(
        &self,
        storage: &Storage,
        now: &[Option<FileStamp>],
    ) -> Result<(), ResumeError> {
        let info = storage.info();
        if self.info_hash != info.info_hash() {
            return Err(ResumeError::WrongTorrent {
                expected: info.info_hash(),
                found: self.info_hash,
            });
        }
        let pieces = info.lengths().piece_count();
        if self.verified.len() != pieces {
            return Err(ResumeError::Layout {
                what: "pieces",
                expected: u64::from(pieces),
                found: u64::from(self.verified.len()),
            });
        }
        if self.files.len() != info.files().len() {
            return Err(ResumeError::Layout {
                what: "files",
                expected: info.files().len() as u64,
                found: self.files.len() as u64,
            });
        }
        if now.len() != self.files.len() {
            return Err(ResumeError::Layout {
                what: "files",
                expected: self.files.len() as u64,
                found: now.len() as u64,
            });
        }
        for (i, ((recorded, now), state)) in self
            .files
            .iter()
            .zip(now)
            .zip(storage.file_states())
            .enumerate()
        {
            if state == FileState::NotStored {
                continue;
            }
            let change = match (recorded, now) {
                (Some(r), Some(n)) if r.size != n.size => {
                    format!("its size was {} bytes, now {}", r.size, n.size)
                }
                (Some(r), Some(n)) if r.mtime_ns != n.mtime_ns => format!(
                    "it was modified (time was {} ns, now {} ns)",
                    r.mtime_ns, n.mtime_ns
                ),
                (Some(_), None) => "it is missing now".to_owned(),
                (None, Some(_)) => "it was missing and exists now".to_owned(),
                _ => continue,
            };
            return Err(ResumeError::FileChanged {
                path: storage.path_of(i),
                change,
            });
        }
        Ok(())
    }

    /// Loads and validates `storage`'s resume data: the pieces that may be trusted without
    /// a check, or why every piece must be checked.
    pub fn restore(state_dir: &Path, storage: &Storage) -> Result<Bitfield, ResumeError> {
        let data = Self::load(state_dir, storage.info().info_hash())?;
        data.validate(storage)?;
        Ok(data.verified)
    }

    /// [`ResumeData::restore`] with the data already read ([`ResumeData::load`]'s result),
    /// for a storage just opened: its files' stamps come from the descriptors it holds
    /// ([`Storage::opened_file_stamps`]).
    pub fn restore_opened(
        loaded: Result<ResumeData, ResumeError>,
        storage: &Storage,
    ) -> Result<Bitfield, ResumeError> {
        let data = loaded?;
        data.validate_against(storage, &storage.opened_file_stamps()?)?;
        Ok(data.verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        [&bytes[..at], to, &bytes[at + from.len()..]].concat()
    }

    fn sample() -> ResumeData {
        let mut verified = Bitfield::new(11);
        verified.set(0);
        verified.set(10);
        ResumeData {
            info_hash: InfoHash::from_bytes([7; 20]),
            verified,
            files: vec![
                Some(FileStamp {
                    size: 100,
                    mtime_ns: 1_795_492_452_123_456_789,
                }),
                None,
                Some(FileStamp {
                    size: 0,
                    mtime_ns: -5,
                }),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let data = sample();
        assert_eq!(ResumeData::from_bytes(&data.to_bytes()).unwrap(), data);
        assert_eq!(data.verified.count(), 2);
        assert!(data.verified.get(10));
        assert!(!data.verified.get(9));
    }

    #[test]
    fn piece_set_refuses_bad_bitfields() {
        assert!(Bitfield::from_wire(&[0xff, 0xe0][..], 11).is_ok());
        assert!(
            Bitfield::from_wire(&[0xff, 0xf0][..], 11).is_err(),
            "spare bit set"
        );
        assert!(Bitfield::from_wire(&[0xff][..], 11).is_err(), "too short");
        assert!(Bitfield::from_wire(&[0xff][..], 8).is_ok());
    }

    #[test]
    fn refuses_damage_with_a_reason() {
        let bytes = sample().to_bytes();
        // Every truncation is refused, never misread.
        for cut in 0..bytes.len() {
            assert!(
                ResumeData::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let future = replace(&bytes, b"7:versioni1e", b"7:versioni9e");
        assert!(matches!(
            ResumeData::from_bytes(&future),
            Err(ResumeError::UnknownVersion(9))
        ));
        let miscounted = replace(&bytes, b"11:piece-counti11e", b"11:piece-counti17e");
        assert!(matches!(
            ResumeData::from_bytes(&miscounted),
            Err(ResumeError::Corrupt(_))
        ));
    }
}
