//! Authoring torrents from files on disk (`ringtorrent create`).
//!
//! v1 (the default): the file order and piece hashes match mktorrent's for the same input and
//! piece length:
//! regular files (symlinks followed) sorted by their full relative path compared byte by byte,
//! as mktorrent's `strcmp` does, so `a-b` comes before `a/b`. Pieces are hashed in parallel on
//! the rayon pool; each worker reads its piece's spans with positioned reads, so workers never
//! share a file offset.
//!
//! v2 and hybrid ([`CreateOptions::version`], BEP 52): the info dictionary libtorrent 2.0's
//! `create_torrent` writes for the same files and piece length, so the info hashes agree.
//! Files go in file-tree order (path components compared byte by byte); each piece of each
//! file is read once and hashed as a SHA-256 merkle subtree of 16 KiB leaves (and, for a
//! hybrid, as SHA1 over the piece padded with zeros to the piece length: the v1 `files` list
//! has a BEP 47 padding file `.pad/<n>` after every file that does not end on a piece
//! boundary, the last included, except in a single-file torrent). Files longer than a piece
//! get a `piece layers` entry; a file's root comes from its layer.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use super::merkle::{self, Hash};
use super::{FileSpans, MetaVersion, MetainfoError, Torrent};
use crate::bencode::OwnedValue;
use crate::core::Lengths;
use crate::limits;

/// What to put in a new torrent.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// A file (single-file torrent) or a folder (multi-file torrent).
    pub path: PathBuf,
    /// Tracker tiers; the first URL of the first tier also becomes `announce`.
    pub trackers: Vec<Vec<String>>,
    /// Piece length in bytes (a power of two); `None` picks one from the total size.
    pub piece_len: Option<u64>,
    /// Set the private flag (BEP 27).
    pub private: bool,
    /// Free-text comment.
    pub comment: Option<String>,
    /// `source` tag in the info dictionary (changes the info hash; used by private trackers).
    pub source: Option<String>,
    /// Web seed URLs (BEP 19).
    pub web_seeds: Vec<String>,
    /// Creation time in seconds since the Unix epoch; `None` leaves the field out.
    pub creation_date: Option<i64>,
    /// v1 (mktorrent's layout), v2 only, or hybrid (both, libtorrent's layout).
    pub version: MetaVersion,
}

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Reading the input failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error from the system.
        source: std::io::Error,
    },
    /// The input is neither a regular file nor a folder.
    #[error("{0}: not a regular file or a folder")]
    NotFileOrFolder(PathBuf),
    /// A folder with no files in it.
    #[error("{0}: the folder holds no files")]
    Empty(PathBuf),
    /// A name that a torrent cannot carry (not UTF-8, or not a plain name).
    #[error("{path}: {reason}")]
    BadName {
        /// The offending path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The piece length or total size is out of range.
    #[error(transparent)]
    Lengths(#[from] crate::core::lengths::LengthsError),
    /// A file changed size while it was being hashed.
    #[error("{0}: the file changed while it was being read")]
    Changed(PathBuf),
    /// The torrent made does not validate (a bug, or input beyond the limits).
    #[error("the torrent made does not validate: {0}")]
    Invalid(MetainfoError),
}

// Not `#[from]`: that would also make the inner error the `source`, and the text it already
// puts in `Display` would print twice in a `{:#}` chain.
impl From<MetainfoError> for CreateError {
    fn from(e: MetainfoError) -> Self {
        CreateError::Invalid(e)
    }
}

/// A torrent just made: its bytes, ready to write, and the parsed form.
#[derive(Debug)]
pub struct Created {
    /// The bencoded `.torrent` file.
    pub bytes: Vec<u8>,
    /// The same torrent parsed back and validated.
    pub torrent: Torrent,
}

/// A file found on disk: where it is, and its path inside the torrent.
#[derive(Debug, Clone)]
struct Source {
    disk: PathBuf,
    path: Vec<String>,
    len: u64,
    /// The owner may execute it: v2 and hybrid torrents say so (BEP 47 `attr` `x`), as
    /// libtorrent's do; v1 leaves it out, as mktorrent does.
    executable: bool,
}

/// Picks a piece length for `total` bytes when the user gives none: about 1000 to 2000
/// pieces, between 16 KiB and 16 MiB. Fewer pieces make a smaller torrent and bitfield; more
/// make a new peer useful sooner; this range is where libtorrent and Transmission land too.
pub fn auto_piece_len(total: u64) -> u64 {
    (total / 1500)
        .next_power_of_two()
        .clamp(limits::MIN_PIECE_LEN, 16 * 1024 * 1024)
}

/// Makes a torrent. `progress` counts the bytes hashed so far, for a progress bar.
pub fn create(opts: &CreateOptions, progress: &AtomicU64) -> Result<Created, CreateError> {
    let (name, mut sources, single) = scan(&opts.path)?;
    if opts.version.has_v2() {
        // File-tree order: by path components, each compared byte by byte.
        sources.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let total: u64 = sources.iter().map(|s| s.len).sum();
    let piece_len = opts.piece_len.unwrap_or_else(|| auto_piece_len(total));
    let lengths = Lengths::new(total, piece_len)?;

    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::str(&name));
    info.insert(b"piece length".to_vec(), int(piece_len));
    let mut piece_layers = BTreeMap::new();
    if opts.version == MetaVersion::V1 {
        let pieces = hash_pieces(&sources, &lengths, progress)?;
        info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
        if single {
            info.insert(b"length".to_vec(), int(total));
        } else {
            info.insert(b"files".to_vec(), v1_files(&sources, None));
        }
    } else {
        let hybrid = opts.version == MetaVersion::Hybrid;
        let hashed = hash_v2(&sources, piece_len, hybrid && !single, progress)?;
        info.insert(b"meta version".to_vec(), OwnedValue::Int(2));
        info.insert(b"file tree".to_vec(), file_tree(&sources, &hashed, single));
        for h in &hashed {
            if let (Some(root), true) = (h.root, h.layer.len() > 1) {
                piece_layers.insert(root.to_vec(), OwnedValue::Bytes(h.layer.concat()));
            }
        }
        if hybrid {
            let pieces: Vec<u8> = hashed.iter().flat_map(|h| h.sha1.concat()).collect();
            info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
            if single {
                info.insert(b"length".to_vec(), int(total));
                if sources.first().is_some_and(|s| s.executable) {
                    info.insert(b"attr".to_vec(), OwnedValue::str("x"));
                }
            } else {
                info.insert(b"files".to_vec(), v1_files(&sources, Some(piece_len)));
            }
        }
    }
    if opts.private {
        info.insert(b"private".to_vec(), OwnedValue::Int(1));
    }
    if let Some(source) = &opts.source {
        info.insert(b"source".to_vec(), OwnedValue::str(source));
    }

    let mut root = BTreeMap::new();
    let tiers: Vec<Vec<String>> = opts
        .trackers
        .iter()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
    if let Some(first) = tiers.first().and_then(|t| t.first()) {
        root.insert(b"announce".to_vec(), OwnedValue::str(first));
    }
    if tiers.len() > 1 || tiers.first().is_some_and(|t| t.len() > 1) {
        let list = tiers
            .iter()
            .map(|tier| OwnedValue::List(tier.iter().map(|u| OwnedValue::str(u)).collect()))
            .collect();
        root.insert(b"announce-list".to_vec(), OwnedValue::List(list));
    }
    if let Some(comment) = &opts.comment {
        root.insert(b"comment".to_vec(), OwnedValue::str(comment));
    }
    root.insert(
        b"created by".to_vec(),
        OwnedValue::str(concat!("ringtorrent ", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(date) = opts.creation_date {
        root.insert(b"creation date".to_vec(), OwnedValue::Int(date));
    }
    match opts.web_seeds.as_slice() {
        [] => {}
        [one] => {
            root.insert(b"url-list".to_vec(), OwnedValue::str(one));
        }
        many => {
            root.insert(
                b"url-list".to_vec(),
                OwnedValue::List(many.iter().map(|u| OwnedValue::str(u)).collect()),
            );
        }
    }
    root.insert(b"info".to_vec(), OwnedValue::Dict(info));
    if !piece_layers.is_empty() {
        root.insert(b"piece layers".to_vec(), OwnedValue::Dict(piece_layers));
    }
    let bytes = OwnedValue::Dict(root).to_bytes();
    let torrent = Torrent::from_bytes(&bytes)?;
    Ok(Created { bytes, torrent })
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

fn int(v: u64) -> OwnedValue {
    OwnedValue::Int(i64::try_from(v).expect("lengths are bounded by MAX_TORRENT_LEN"))
}

/// The v1 `files` list; with `pad_to` a piece length, a padding file after each file that
/// does not end on a piece boundary (libtorrent's hybrid layout).
fn v1_files(sources: &[Source], pad_to: Option<u64>) -> OwnedValue {
    let mut list = Vec::with_capacity(sources.len() * 2);
    for s in sources {
        let mut file = BTreeMap::new();
        file.insert(b"length".to_vec(), int(s.len));
        let path = s.path[1..].iter().map(|c| OwnedValue::str(c)).collect();
        file.insert(b"path".to_vec(), OwnedValue::List(path));
        if pad_to.is_some() && s.executable {
            file.insert(b"attr".to_vec(), OwnedValue::str("x"));
        }
        list.push(OwnedValue::Dict(file));
        let pad = pad_to.map_or(0, |pl| (pl - s.len % pl) % pl);
        if pad > 0 {
            let mut file = BTreeMap::new();
            file.insert(b"attr".to_vec(), OwnedValue::str("p"));
            file.insert(b"length".to_vec(), int(pad));
            let path = vec![OwnedValue::str(".pad"), OwnedValue::str(&pad.to_string())];
            file.insert(b"path".to_vec(), OwnedValue::List(path));
            list.push(OwnedValue::Dict(file));
        }
    }
    OwnedValue::List(list)
}

/// The v2 `file tree`: nested dictionaries by path component, each file a `""` entry with
/// its `length` and (unless empty) `pieces root`.
fn file_tree(sources: &[Source], hashed: &[FileHashes], single: bool) -> OwnedValue {
    let mut tree = BTreeMap::new();
    for (s, h) in sources.iter().zip(hashed) {
        let mut leaf = BTreeMap::new();
        leaf.insert(b"length".to_vec(), int(s.len));
        if s.executable {
            leaf.insert(b"attr".to_vec(), OwnedValue::str("x"));
        }
        if let Some(root) = h.root {
            leaf.insert(b"pieces root".to_vec(), OwnedValue::Bytes(root.to_vec()));
        }
        // A single-file torrent's tree holds the file under its name; a folder's, the path
        // below the top folder.
        let path = if single { &s.path[..] } else { &s.path[1..] };
        let mut node = &mut tree;
        for c in path {
            let child = node
                .entry(c.as_bytes().to_vec())
                .or_insert_with(|| OwnedValue::Dict(BTreeMap::new()));
            node = match child {
                OwnedValue::Dict(d) => d,
                _ => unreachable!("tree nodes are dictionaries"),
            };
        }
        node.insert(Vec::new(), OwnedValue::Dict(leaf));
    }
    OwnedValue::Dict(tree)
}

/// What hashing one file for v2 gives.
struct FileHashes {
    /// The merkle root; `None` for an empty file.
    root: Option<Hash>,
    /// The SHA-256 hash of each piece of the file (its piece layer when longer than a piece).
    layer: Vec<Hash>,
    /// For a hybrid, the SHA1 of each piece padded with zeros to the piece length.
    sha1: Vec<[u8; 20]>,
}

/// Reads each piece of each file once, in parallel, and hashes it for v2, and with SHA1 for
/// a hybrid's v1 pieces: over the zeros of the padding file that follows too when `pad_sha1`
/// (a folder), over the bytes alone otherwise (a single file has no padding). A v2-only
/// torrent's SHA1s are dropped.
fn hash_v2(
    sources: &[Source],
    piece_len: u64,
    pad_sha1: bool,
    progress: &AtomicU64,
) -> Result<Vec<FileHashes>, CreateError> {
    let blocks_per_piece = (piece_len / merkle::BLOCK_LEN) as usize;
    let units: Vec<(usize, u64)> = sources
        .iter()
        .enumerate()
        .flat_map(|(i, s)| (0..s.len.div_ceil(piece_len)).map(move |k| (i, k)))
        .collect();
    let hashes: Vec<(Hash, [u8; 20])> = units
        .into_par_iter()
        .map_init(
            || vec![0u8; piece_len as usize],
            |buf, (i, k)| {
                let source = &sources[i];
                let at = k * piece_len;
                let len = (source.len - at).min(piece_len) as usize;
                let file = File::open(&source.disk).map_err(io_err(&source.disk))?;
                file.read_exact_at(&mut buf[..len], at)
                    .map_err(|e| read_err(&source.disk, e))?;
                let whole = source.len <= piece_len;
                let v2 = merkle::piece_hash(&buf[..len], blocks_per_piece, whole);
                let mut sha1 = Sha1::new();
                sha1.update(&buf[..len]);
                if pad_sha1 {
                    buf[len..].fill(0);
                    sha1.update(&buf[len..]);
                }
                progress.fetch_add(len as u64, Ordering::Relaxed);
                Ok((v2, sha1.finalize().into()))
            },
        )
        .collect::<Result<_, CreateError>>()?;
    let mut next = hashes.into_iter();
    Ok(sources
        .iter()
        .map(|s| {
            let pieces = s.len.div_ceil(piece_len) as usize;
            let (layer, sha1): (Vec<Hash>, Vec<[u8; 20]>) = next.by_ref().take(pieces).unzip();
            let root = match layer.as_slice() {
                [] => None,
                [one] => Some(*one),
                many => Some(merkle::root_from_piece_layer(many, blocks_per_piece)),
            };
            FileHashes { root, layer, sha1 }
        })
        .collect())
}

fn read_err(path: &Path, e: std::io::Error) -> CreateError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        CreateError::Changed(path.to_owned())
    } else {
        CreateError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn component(disk: &Path, name: &std::ffi::OsStr) -> Result<String, CreateError> {
    let bad = |reason: String| CreateError::BadName {
        path: disk.to_owned(),
        reason,
    };
    let name = name
        .to_str()
        .ok_or_else(|| bad("the name is not valid UTF-8".into()))?;
    // A name readers would change (a `\\`, a control character, over 255 bytes) would not be
    // found under the name the torrent gives it.
    let safe = super::sanitize::component(name.as_bytes());
    if safe != [name] {
        return Err(bad(format!(
            "clients would save it as {:?}",
            safe.join("/")
        )));
    }
    Ok(name.to_owned())
}

/// Finds the files to put in the torrent, in mktorrent's order.
fn scan(path: &Path) -> Result<(String, Vec<Source>, bool), CreateError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let canonical = path.canonicalize().map_err(io_err(path))?;
    let base = canonical
        .file_name()
        .ok_or_else(|| CreateError::NotFileOrFolder(path.to_owned()))?;
    let name = component(path, base)?;
    if meta.is_file() {
        let source = Source {
            disk: path.to_owned(),
            path: vec![name.clone()],
            len: meta.len(),
            executable: is_executable(&meta),
        };
        return Ok((name, vec![source], true));
    }
    if !meta.is_dir() {
        return Err(CreateError::NotFileOrFolder(path.to_owned()));
    }
    let mut found = Vec::new();
    walk(path, &mut vec![name.clone()], &mut found, 0)?;
    if found.is_empty() {
        return Err(CreateError::Empty(path.to_owned()));
    }
    // mktorrent orders by strcmp of the '/'-joined path below the top folder.
    found.sort_by(|a, b| {
        a.path[1..]
            .join("/")
            .as_bytes()
            .cmp(b.path[1..].join("/").as_bytes())
    });
    if found.len() > limits::MAX_FILES {
        return Err(CreateError::Invalid(MetainfoError::TooManyFiles(
            found.len(),
        )));
    }
    Ok((name, found, false))
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    found: &mut Vec<Source>,
    depth: usize,
) -> Result<(), CreateError> {
    if depth >= limits::MAX_PATH_DEPTH {
        return Err(CreateError::BadName {
            path: dir.to_owned(),
            reason: "folders nested too deep".into(),
        });
    }
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let disk = entry.path();
        let kind = entry.file_type().map_err(io_err(&disk))?;
        // Follow symlinks to files, as mktorrent does; never follow links to folders, which
        // could loop.
        let meta = if kind.is_symlink() {
            match std::fs::metadata(&disk) {
                Ok(m) if m.is_file() => m,
                _ => continue,
            }
        } else {
            entry.metadata().map_err(io_err(&disk))?
        };
        if meta.is_dir() {
            prefix.push(component(&disk, &entry.file_name())?);
            walk(&disk, prefix, found, depth + 1)?;
            prefix.pop();
        } else if meta.is_file() {
            let mut path = prefix.clone();
            path.push(component(&disk, &entry.file_name())?);
            found.push(Source {
                disk,
                path,
                len: meta.len(),
                executable: is_executable(&meta),
            });
        }
    }
    Ok(())
}

/// Hashes every piece in parallel and returns the concatenated SHA1s.
fn hash_pieces(
    sources: &[Source],
    lengths: &Lengths,
    progress: &AtomicU64,
) -> Result<Vec<u8>, CreateError> {
    // Offsets of each file in the payload, in the shape the span iterator works on.
    let mut offset = 0;
    let entries: Vec<super::FileEntry> = sources
        .iter()
        .map(|s| {
            let e = super::FileEntry {
                path: s.path.clone(),
                length: s.len,
                offset,
                attr: Default::default(),
                symlink_target: None,
                given_path: None,
            };
            offset += s.len;
            e
        })
        .collect();
    let hashes: Vec<[u8; 20]> = lengths
        .pieces()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map_init(
            || vec![0u8; lengths.piece_len() as usize],
            |buf, piece| {
                let len = lengths.len_of(piece) as usize;
                let buf = &mut buf[..len];
                let mut at = 0;
                let spans = FileSpans::new(&entries, lengths.offset_of(piece), len as u64);
                for span in spans {
                    let source = &sources[span.file];
                    let n = span.len as usize;
                    let file = File::open(&source.disk).map_err(io_err(&source.disk))?;
                    file.read_exact_at(&mut buf[at..at + n], span.file_offset)
                        .map_err(|e| {
                            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                                CreateError::Changed(source.disk.clone())
                            } else {
                                CreateError::Io {
                                    path: source.disk.clone(),
                                    source: e,
                                }
                            }
                        })?;
                    at += n;
                }
                progress.fetch_add(len as u64, Ordering::Relaxed);
                Ok(Sha1::digest(&buf[..]).into())
            },
        )
        .collect::<Result<_, CreateError>>()?;
    Ok(hashes.concat())
}
