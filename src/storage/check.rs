//! A full check: hash every piece in parallel and say which pieces and files are complete.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::{Access, FileState, Storage, StorageError};
use crate::core::Bitfield;

/// The state of one piece after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceVerdict {
    /// The data matches the piece's hash.
    Complete,
    /// The data is there but does not match (never downloaded, or damaged).
    Failed,
    /// Part of the piece lies in a file that is missing or too short.
    Missing,
    /// Reading it failed (an I/O error); see [`CheckReport::errors`].
    Unreadable,
}

/// The state of one file after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileVerdict {
    /// Every piece that touches the file is complete.
    Complete,
    /// Some piece that touches it is not.
    Incomplete,
    /// The file does not exist.
    Missing,
    /// The file exists with another size (what both sizes cover was still checked).
    WrongSize {
        /// Its length on disk.
        actual: u64,
    },
}

/// One file's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// Index into [`crate::metainfo::Info::files`].
    pub index: usize,
    /// The path relative to the download folder.
    pub path: PathBuf,
    /// The length the torrent gives it.
    pub length: u64,
    /// Its state.
    pub verdict: FileVerdict,
    /// Complete pieces among those that touch the file.
    pub pieces_complete: u32,
    /// Pieces that touch the file (0 for an empty file).
    pub pieces_total: u32,
}

/// The result of [`check`].
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// One verdict per piece, in order.
    pub pieces: Vec<PieceVerdict>,
    /// One entry per stored file (padding files left out), in torrent order.
    pub files: Vec<FileCheck>,
    /// The read errors behind [`PieceVerdict::Unreadable`] pieces: piece and message.
    pub errors: Vec<(u32, String)>,
}

impl CheckReport {
    /// Whether every piece is complete.
    pub fn is_complete(&self) -> bool {
        self.pieces.iter().all(|&v| v == PieceVerdict::Complete)
    }

    /// The pieces with `verdict`, as indices.
    pub fn pieces_with(&self, verdict: PieceVerdict) -> Vec<u32> {
        (0u32..)
            .zip(&self.pieces)
            .filter(|(_, &v)| v == verdict)
            .map(|(i, _)| i)
            .collect()
    }

    /// The complete pieces as a set, e.g. to save as resume data.
    pub fn verified(&self, lengths: &crate::core::Lengths) -> Bitfield {
        let mut set = Bitfield::new(lengths.piece_count());
        for piece in lengths.pieces() {
            if self.pieces[piece.as_usize()] == PieceVerdict::Complete {
                set.set(piece.get());
            }
        }
        set
    }
}

/// Hashes every piece of `storage` on `pool`, adding each piece's length to `progress` as
/// it is done. Hints sequential access for the duration (and asks for the next piece ahead
/// of each one hashed), then restores random access.
pub fn check(storage: &Storage, pool: &rayon::ThreadPool, progress: &AtomicU64) -> CheckReport {
    let info = storage.info();
    let lengths = *info.lengths();
    // What is hashed now is what the verdicts describe, whatever a file's stamp was.
    storage.accept_changes();
    storage.set_access(Access::Sequential);
    let results: Vec<(PieceVerdict, Option<String>)> = pool.install(|| {
        (0..lengths.piece_count())
            .into_par_iter()
            .map(|i| {
                let piece = lengths.piece(i).expect("index below the piece count");
                if let Some(next) = lengths.piece(i + 1) {
                    storage.prefetch_piece(next);
                }
                let verdict = verdict(if info.version().has_v1() {
                    storage.verify_piece(piece, info.piece_hash(piece))
                } else {
                    storage.verify_piece_v2(piece)
                });
                storage.release_piece(piece);
                progress.fetch_add(u64::from(lengths.len_of(piece)), Ordering::Relaxed);
                verdict
            })
            .collect()
    });
    storage.set_access(Access::Random);

    let mut errors = Vec::new();
    let pieces: Vec<PieceVerdict> = results
        .into_iter()
        .enumerate()
        .map(|(i, (v, err))| {
            if let Some(err) = err {
                errors.push((i as u32, err));
            }
            v
        })
        .collect();

    let piece_len = u64::from(lengths.piece_len());
    let files = info
        .files()
        .iter()
        .zip(storage.file_states())
        .enumerate()
        .filter(|(_, (_, state))| *state != FileState::NotStored)
        .map(|(index, (entry, state))| {
            let (first, count) = if entry.length == 0 {
                (0, 0)
            } else {
                let first = entry.offset / piece_len;
                let last = (entry.offset + entry.length - 1) / piece_len;
                (first as usize, (last - first + 1) as usize)
            };
            let complete = pieces[first..first + count]
                .iter()
                .filter(|&&v| v == PieceVerdict::Complete)
                .count();
            let verdict = match state {
                FileState::Missing => FileVerdict::Missing,
                FileState::WrongSize { actual } => FileVerdict::WrongSize { actual },
                _ if complete == count => FileVerdict::Complete,
                _ => FileVerdict::Incomplete,
            };
            FileCheck {
                index,
                path: entry.relative_path(),
                length: entry.length,
                verdict,
                pieces_complete: complete as u32,
                pieces_total: count as u32,
            }
        })
        .collect();
    CheckReport {
        pieces,
        files,
        errors,
    }
}

fn verdict(result: Result<bool, StorageError>) -> (PieceVerdict, Option<String>) {
    match result {
        Ok(true) => (PieceVerdict::Complete, None),
        Ok(false) => (PieceVerdict::Failed, None),
        Err(StorageError::Missing { .. } | StorageError::ShortFile { .. }) => {
            (PieceVerdict::Missing, None)
        }
        Err(e) => (PieceVerdict::Unreadable, Some(e.to_string())),
    }
}
