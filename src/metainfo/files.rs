//! The file layout of a torrent: validated relative paths, byte offsets, and the mapping from
//! a byte range of the payload to spans of files.

use std::path::PathBuf;

use super::{sanitize, Field, MetainfoError};
use crate::limits;

/// Why a path cannot be made safe (see `metainfo/sanitize.rs` for what is made safe instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A path with no components (and not a padding file, which needs none), or a
    /// single-file torrent's name with nothing left once sanitised.
    #[error("path is empty")]
    Empty,
    /// More nested folders than the limit, as given or once separators are split.
    #[error("path is {0} levels deep, over the limit of {max}", max = limits::MAX_PATH_DEPTH)]
    TooDeep(usize),
}

/// BEP 47 file attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileAttr {
    /// `p`: a padding file, never written to disk; its bytes are zeros.
    pub padding: bool,
    /// `x`: the file should be executable.
    pub executable: bool,
    /// `h`: the file should be hidden.
    pub hidden: bool,
    /// `l`: the file is a symbolic link to [`FileEntry::symlink_target`].
    pub symlink: bool,
}

/// One file of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components relative to the download folder, the torrent's name first for a
    /// multi-file torrent: the name the file gets, sanitised (see `metainfo/sanitize.rs`), so
    /// every component is a plain name (no `/`, `\\`, NUL, control character, `.` or `..`, at
    /// most 255 bytes) and no two files that are not padding share a path or sit under one.
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the file's first byte in the torrent's payload.
    pub offset: u64,
    /// BEP 47 attributes.
    pub attr: FileAttr,
    /// For a symlink (`attr.symlink`) whose target is a file or folder of this torrent: that
    /// path relative to the download folder (like [`FileEntry::path`]), so it cannot lead
    /// outside. `None` for a target the torrent does not hold, which libtorrent makes point to
    /// the link itself; ringtorrent creates nothing on disk for any symlink entry.
    pub symlink_target: Option<Vec<String>>,
    /// The path as the torrent gives it (components decoded lossily, the name first for a
    /// multi-file torrent) when sanitising or duplicate renaming changed it; `None` when the
    /// file gets the name given.
    pub given_path: Option<Vec<String>>,
}

impl FileEntry {
    /// The path relative to the download folder.
    pub fn relative_path(&self) -> PathBuf {
        self.path.iter().collect()
    }

    /// The path with `/` separators, for display.
    pub fn display_path(&self) -> String {
        self.path.join("/")
    }

    /// The path as given, when it differs from [`FileEntry::path`], for display: joined with
    /// `/`, or as a list of quoted components when one of them holds a separator (so that
    /// `["a/b"]` and `["a", "b"]` do not look alike).
    pub fn display_given_path(&self) -> Option<String> {
        let given = self.given_path.as_ref()?;
        if given.iter().any(|c| c.contains(['/', '\\'])) {
            Some(format!("{given:?}"))
        } else {
            Some(given.join("/"))
        }
    }
}

/// A part of one file covered by a byte range of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    /// Index into [`super::Info::files`].
    pub file: usize,
    /// Offset inside that file.
    pub file_offset: u64,
    /// Bytes in this span, never zero.
    pub len: u64,
    /// Whether the file is a padding file (nothing to read or write; the bytes are zeros).
    pub padding: bool,
}

/// Iterator over the [`FileSpan`]s of a byte range, in payload order.
#[derive(Debug, Clone)]
pub struct FileSpans<'a> {
    files: &'a [FileEntry],
    next_file: usize,
    offset: u64,
    remaining: u64,
}

impl<'a> FileSpans<'a> {
    pub(super) fn new(files: &'a [FileEntry], offset: u64, len: u64) -> Self {
        // Files are in payload order, so their end offsets never decrease: binary search for
        // the first file that ends after `offset`. Zero-length files end where they start and
        // are skipped by the same comparison.
        let next_file = files.partition_point(|f| f.offset + f.length <= offset);
        FileSpans {
            files,
            next_file,
            offset,
            remaining: len,
        }
    }
}

impl Iterator for FileSpans<'_> {
    type Item = FileSpan;

    fn next(&mut self) -> Option<FileSpan> {
        while self.remaining > 0 {
            let file = self.files.get(self.next_file)?;
            let index = self.next_file;
            self.next_file += 1;
            let end = file.offset + file.length;
            if end <= self.offset {
                continue;
            }
            let file_offset = self.offset - file.offset;
            let len = (end - self.offset).min(self.remaining);
            self.offset += len;
            self.remaining -= len;
            return Some(FileSpan {
                file: index,
                file_offset,
                len,
                padding: file.attr.padding,
            });
        }
        None
    }
}

/// A torrent's `name` (or `name.utf-8`), sanitised: the top folder of a multi-file torrent,
/// the file of a single-file one.
#[derive(Debug, Clone)]
pub(super) struct TopName {
    /// The one component the name turns into; empty when nothing was left of it.
    pub(super) path: Vec<String>,
    /// The name as given, decoded lossily.
    pub(super) given: String,
}

impl TopName {
    pub(super) fn new(raw: &[u8]) -> TopName {
        TopName {
            path: sanitize::name(raw).into_iter().collect(),
            given: sanitize::given(raw),
        }
    }
}

fn too_deep(field: &Field<'_, '_>, depth: usize) -> Result<(), MetainfoError> {
    if depth > limits::MAX_PATH_DEPTH {
        return Err(MetainfoError::BadPath {
            field: field.path.clone(),
            reason: PathError::TooDeep(depth),
        });
    }
    Ok(())
}

/// A path list's components as given. An empty list is allowed here; the caller decides.
fn raw_path<'a>(field: &Field<'_, 'a>) -> Result<Vec<&'a [u8]>, MetainfoError> {
    let list = field.list()?;
    too_deep(field, list.len())?;
    list.iter()
        .enumerate()
        .map(|(i, node)| Field::new(node, format!("{}[{i}]", field.path)).bytes())
        .collect()
}

fn parse_attr(field: Option<Field<'_, '_>>) -> FileAttr {
    // Unknown attribute letters are ignored, as BEP 47 asks.
    let letters = field.and_then(|f| f.node.as_bytes()).unwrap_or_default();
    FileAttr {
        padding: letters.contains(&b'p'),
        executable: letters.contains(&b'x'),
        hidden: letters.contains(&b'h'),
        symlink: letters.contains(&b'l'),
    }
}

/// Reads `info.length` or `info.files` into file entries with offsets, every path sanitised
/// and duplicates renamed. Returns the entries and whether the torrent is single-file.
pub(super) fn parse_layout(
    info: &Field<'_, '_>,
    name: &TopName,
) -> Result<(Vec<FileEntry>, bool), MetainfoError> {
    match (info.optional("length"), info.optional("files")) {
        (Some(_), Some(_)) => Err(MetainfoError::LengthAndFiles),
        (None, None) => Err(MetainfoError::NoLayout),
        (Some(length), None) => {
            let length = length.length()?;
            if length > limits::MAX_TORRENT_LEN {
                return Err(MetainfoError::TotalTooLarge);
            }
            if name.path.is_empty() {
                // libtorrent refuses this too (`torrent_missing_name`): there is no file name.
                return Err(MetainfoError::BadPath {
                    field: "info.name".into(),
                    reason: PathError::Empty,
                });
            }
            // A single file that is a symlink has nothing to point to: a plain file.
            let attr = FileAttr {
                symlink: false,
                ..parse_attr(info.optional("attr"))
            };
            let given = vec![name.given.clone()];
            Ok((
                vec![FileEntry {
                    given_path: (given != name.path).then_some(given),
                    path: name.path.clone(),
                    length,
                    offset: 0,
                    attr,
                    symlink_target: None,
                }],
                true,
            ))
        }
        (None, Some(files)) => Ok((parse_files(&files, name)?, false)),
    }
}

fn parse_files(files: &Field<'_, '_>, name: &TopName) -> Result<Vec<FileEntry>, MetainfoError> {
    let list = files.list()?;
    if list.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    if list.len() > limits::MAX_FILES {
        return Err(MetainfoError::TooManyFiles(list.len()));
    }
    let mut entries = Vec::with_capacity(list.len());
    let mut links = Vec::new();
    let mut offset = 0u64;
    for (i, node) in list.iter().enumerate() {
        let file = Field::new(node, format!("{}[{i}]", files.path)).dict()?;
        let mut attr = parse_attr(file.optional("attr"));
        // A symlink takes no payload bytes whatever its `length` says, as in libtorrent.
        let length = if attr.symlink {
            0
        } else {
            file.required("length")?.length()?
        };
        let path_field = match file.optional("path.utf-8") {
            Some(f) if f.node.as_list().is_some() => Some(f),
            _ => file.optional("path"),
        };
        let raw = match &path_field {
            Some(f) => raw_path(f)?,
            None if attr.padding => Vec::new(),
            None => return Err(MetainfoError::Missing(format!("{}.path", file.path))),
        };
        let (path, given_path) = if raw.is_empty() {
            if let Some(field) = path_field.filter(|_| !attr.padding) {
                return Err(MetainfoError::BadPath {
                    field: field.path,
                    reason: PathError::Empty,
                });
            }
            // A padding file needs no path: libtorrent calls it `.pad/<length>`.
            let mut path = name.path.clone();
            path.extend([".pad".to_owned(), length.to_string()]);
            (path, None)
        } else {
            let mut path = name.path.clone();
            path.extend(sanitize::path(raw.iter().copied()));
            if let Some(f) = &path_field {
                too_deep(f, path.len())?;
            }
            let given: Vec<String> = std::iter::once(name.given.clone())
                .chain(raw.iter().map(|c| sanitize::given(c)))
                .collect();
            let changed = given != path;
            (path, changed.then_some(given))
        };
        if attr.symlink {
            match file.optional("symlink path") {
                Some(target) => {
                    let raw = raw_path(&target)?;
                    let target: Vec<String> =
                        raw.into_iter().flat_map(sanitize::component).collect();
                    links.push((entries.len(), target));
                }
                // BEP 47 requires the target; without one libtorrent makes it a plain file.
                None => attr.symlink = false,
            }
        }
        entries.push(FileEntry {
            path,
            length,
            offset,
            attr,
            symlink_target: None,
            given_path,
        });
        offset = offset
            .checked_add(length)
            .filter(|&total| total <= limits::MAX_TORRENT_LEN)
            .ok_or(MetainfoError::TotalTooLarge)?;
    }
    let names = sanitize::resolve_duplicates(&mut entries)?;
    sanitize::resolve_links(&mut entries, &names, &name.path, links);
    Ok(entries)
}
