//! The file layout of a torrent: validated relative paths, byte offsets, and the mapping from
//! a byte range of the payload to spans of files.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{Field, MetainfoError};
use crate::limits;

/// Why a path or path component cannot be created safely under the download folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A path with no components.
    #[error("path is empty")]
    Empty,
    /// An empty component (`a//b`).
    #[error("path component is empty")]
    EmptyComponent,
    /// `.` or `..`, which would refer to this folder or climb out of it.
    #[error("path component {0:?} refers to a folder, not a name")]
    DotComponent(String),
    /// A `/` inside a component: an absolute path or a hidden extra level.
    #[error("path component {0:?} contains a path separator")]
    Separator(String),
    /// A NUL byte, which no file name on Linux can hold.
    #[error("path component {0:?} contains a NUL byte")]
    Nul(String),
    /// A component longer than Linux's `NAME_MAX`.
    #[error("path component of {0} bytes is longer than {max} bytes", max = limits::MAX_PATH_COMPONENT_LEN)]
    ComponentTooLong(usize),
    /// More nested folders than the limit.
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
    /// multi-file torrent. Every component is checked safe (see [`PathError`]).
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the file's first byte in the torrent's payload.
    pub offset: u64,
    /// BEP 47 attributes.
    pub attr: FileAttr,
    /// For a symlink (`attr.symlink`), the target relative to the torrent's top folder,
    /// checked like any other path so that it cannot point outside the download.
    pub symlink_target: Option<Vec<String>>,
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

/// Reads text from a torrent: UTF-8 as is; anything else converted lossily, as libtorrent
/// does, because Linux file names are bytes and refusing old non-UTF-8 torrents helps no one.
/// A collision this creates is caught by the duplicate-path check.
pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks that a component is a plain name that stays inside its folder.
pub(super) fn check_component(name: &str) -> Result<(), PathError> {
    match name {
        "" => Err(PathError::EmptyComponent),
        "." | ".." => Err(PathError::DotComponent(name.to_owned())),
        _ if name.contains('/') => Err(PathError::Separator(name.to_owned())),
        _ if name.contains('\0') => Err(PathError::Nul(name.replace('\0', "\\0"))),
        _ if name.len() > limits::MAX_PATH_COMPONENT_LEN => {
            Err(PathError::ComponentTooLong(name.len()))
        }
        _ => Ok(()),
    }
}

fn parse_path(field: &Field<'_, '_>) -> Result<Vec<String>, MetainfoError> {
    let list = field.list()?;
    let bad = |field: String, reason| MetainfoError::BadPath { field, reason };
    if list.is_empty() {
        return Err(bad(field.path.clone(), PathError::Empty));
    }
    if list.len() > limits::MAX_PATH_DEPTH {
        return Err(bad(field.path.clone(), PathError::TooDeep(list.len())));
    }
    list.iter()
        .enumerate()
        .map(|(i, node)| {
            let item = Field::new(node, format!("{}[{i}]", field.path));
            let name = text(item.bytes()?);
            check_component(&name).map_err(|reason| bad(item.path.clone(), reason))?;
            Ok(name)
        })
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

/// Reads `info.length` or `info.files` into file entries with offsets. Returns the entries and
/// whether the torrent is single-file.
pub(super) fn parse_layout(
    info: &Field<'_, '_>,
    name: &str,
) -> Result<(Vec<FileEntry>, bool), MetainfoError> {
    match (info.optional("length"), info.optional("files")) {
        (Some(_), Some(_)) => Err(MetainfoError::LengthAndFiles),
        (None, None) => Err(MetainfoError::NoLayout),
        (Some(length), None) => {
            let length = length.length()?;
            if length > limits::MAX_TORRENT_LEN {
                return Err(MetainfoError::TotalTooLarge);
            }
            let attr = parse_attr(info.optional("attr"));
            Ok((
                vec![FileEntry {
                    path: vec![name.to_owned()],
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

fn parse_files(files: &Field<'_, '_>, name: &str) -> Result<Vec<FileEntry>, MetainfoError> {
    let list = files.list()?;
    if list.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    if list.len() > limits::MAX_FILES {
        return Err(MetainfoError::TooManyFiles(list.len()));
    }
    let mut entries = Vec::with_capacity(list.len());
    let mut offset = 0u64;
    for (i, node) in list.iter().enumerate() {
        let file = Field::new(node, format!("{}[{i}]", files.path)).dict()?;
        let length = file.required("length")?.length()?;
        let path_field = match file.optional("path.utf-8") {
            Some(f) if f.node.as_list().is_some() => f,
            _ => file.required("path")?,
        };
        let mut path = Vec::with_capacity(1 + path_field.list()?.len());
        path.push(name.to_owned());
        path.extend(parse_path(&path_field)?);
        let attr = parse_attr(file.optional("attr"));
        let symlink_target = match (attr.symlink, file.optional("symlink path")) {
            (true, Some(target)) => Some(parse_path(&target)?),
            _ => None,
        };
        entries.push(FileEntry {
            path,
            length,
            offset,
            attr,
            symlink_target,
        });
        offset = offset
            .checked_add(length)
            .filter(|&total| total <= limits::MAX_TORRENT_LEN)
            .ok_or(MetainfoError::TotalTooLarge)?;
    }
    check_unique(&entries)?;
    Ok(entries)
}

/// Refuses two files with one path, and a path that is both a file and a folder. Padding
/// files are exempt: they are never created, and libtorrent names many of them alike.
pub(super) fn check_unique(entries: &[FileEntry]) -> Result<(), MetainfoError> {
    let real = || entries.iter().filter(|f| !f.attr.padding);
    let mut files: HashSet<&[String]> = HashSet::with_capacity(entries.len());
    for f in real() {
        if !files.insert(&f.path) {
            return Err(MetainfoError::DuplicatePath(f.display_path()));
        }
    }
    for f in real() {
        for depth in 1..f.path.len() {
            let folder = &f.path[..depth];
            if files.contains(folder) {
                return Err(MetainfoError::FileFolderConflict(folder.join("/")));
            }
        }
    }
    Ok(())
}
