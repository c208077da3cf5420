//! BitTorrent v2 metainfo (BEP 52): the `file tree`, `pieces root`s and `piece layers`, the
//! v2 layout of a torrent's payload, and the consistency rules of hybrid torrents.
//!
//! The engine sees every torrent as one payload cut into pieces. A v2 torrent's pieces never
//! span files, so its payload puts every file at a piece boundary, with a padding file
//! (BEP 47, never written) after each file that does not end on one, the last included (a
//! single file's too, named `<name>/.pad/<n>` as libtorrent names it): the layout libtorrent
//! gives a v2 torrent, so that both count the same bytes in every piece, and the one a hybrid
//! torrent's v1 `files` list must spell out (there the last padding file may be left out,
//! and a single-file hybrid has none). A hybrid whose v1 list differs
//! from its tree in a file's path, length, offset or padding is refused, as libtorrent refuses
//! it.
//!
//! Single file: a tree holding one file at its top whose name is the torrent's `name` is a
//! single-file torrent (path `[name]`); any other tree is a folder called `name`.

use super::files::TopName;
use super::merkle::{self, Hash};
use super::{files, sanitize, Field, FileAttr, FileEntry, MetainfoError};
use crate::bencode::Node;
use crate::core::InfoHashV2;
use crate::limits;

/// Which BitTorrent versions a torrent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetaVersion {
    /// BEP 3 only: `pieces` (SHA1) over the `files` list.
    #[default]
    V1,
    /// BEP 52 only: a `file tree` with per-file merkle roots.
    V2,
    /// Both in one info dictionary: v1 `pieces` and a v2 `file tree` that agree.
    Hybrid,
}

impl MetaVersion {
    /// Whether the torrent has v1 piece hashes.
    pub fn has_v1(self) -> bool {
        matches!(self, MetaVersion::V1 | MetaVersion::Hybrid)
    }

    /// Whether the torrent has a v2 file tree.
    pub fn has_v2(self) -> bool {
        matches!(self, MetaVersion::V2 | MetaVersion::Hybrid)
    }

    /// `v1`, `v2` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetaVersion::V1 => "v1",
            MetaVersion::V2 => "v2",
            MetaVersion::Hybrid => "hybrid",
        }
    }
}

/// One file of the v2 file tree, placed in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2File {
    /// Index into [`super::Info::files`].
    pub file: usize,
    /// The file's length in bytes.
    pub length: u64,
    /// The merkle root of the file's 16 KiB leaves; `None` for an empty file.
    pub pieces_root: Option<Hash>,
    /// The payload piece that holds the file's first byte (files start on piece boundaries).
    pub first_piece: u32,
    /// How many pieces the file covers (0 for an empty file).
    pub piece_count: u32,
    /// The file's piece layer from `piece layers`, checked against its root. `None` for a file
    /// of at most one piece (whose root is its piece hash) and while the layer is missing
    /// (a magnet link's metadata, or a torrent file without it).
    pub layer: Option<Vec<Hash>>,
}

impl V2File {
    /// Whether the file needs a piece layer to verify its pieces (more than one piece).
    pub fn needs_layer(&self) -> bool {
        self.piece_count > 1
    }

    /// The SHA-256 merkle hash that the file's piece `piece` (counted from the file's first
    /// piece) must have, if it is known.
    pub fn piece_hash(&self, piece: u32) -> Option<Hash> {
        let root = self.pieces_root?;
        if self.needs_layer() {
            self.layer.as_ref()?.get(piece as usize).copied()
        } else {
            merkle::expected_piece_hash(&root, None, piece as usize)
        }
    }
}

/// The v2 half of a torrent's info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Info {
    /// The SHA-256 of the info dictionary.
    pub info_hash: InfoHashV2,
    /// The tree's files in tree order (keys sorted, depth first), empty files included.
    pub files: Vec<V2File>,
}

impl V2Info {
    /// Whether every file that needs a piece layer has one.
    pub fn has_piece_layers(&self) -> bool {
        self.files
            .iter()
            .all(|f| !f.needs_layer() || f.layer.is_some())
    }

    /// The file whose pieces include payload piece `piece`, and the piece's index inside it.
    pub fn file_of_piece(&self, piece: u32) -> Option<(&V2File, u32)> {
        let i = self
            .files
            .partition_point(|f| f.first_piece + f.piece_count <= piece);
        let f = self.files.get(i)?;
        (f.first_piece <= piece && piece < f.first_piece + f.piece_count)
            .then(|| (f, piece - f.first_piece))
    }

    /// The SHA-256 merkle hash payload piece `piece` must have, if known.
    pub fn piece_hash(&self, piece: u32) -> Option<Hash> {
        let (file, index) = self.file_of_piece(piece)?;
        file.piece_hash(index)
    }
}

/// A file as the tree states it.
struct TreeFile {
    /// Sanitised, as a v1 path is ([`sanitize::component`] on each name).
    path: Vec<String>,
    /// The names as given, decoded lossily.
    given: Vec<String>,
    length: u64,
    root: Option<Hash>,
}

fn tree_error(field: &str, reason: impl Into<String>) -> MetainfoError {
    MetainfoError::BadFileTree {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Reads `info.file tree` into files in tree order.
fn parse_tree(tree: &Field<'_, '_>) -> Result<Vec<TreeFile>, MetainfoError> {
    let tree = Field::new(tree.node, tree.path.clone()).dict()?;
    let mut out = Vec::new();
    let mut total = 0u64;
    walk(
        &tree,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut out,
        &mut total,
    )?;
    if out.is_empty() {
        return Err(tree_error(&tree.path, "holds no files"));
    }
    Ok(out)
}

fn walk(
    dir: &Field<'_, '_>,
    prefix: &mut Vec<String>,
    given: &mut Vec<String>,
    out: &mut Vec<TreeFile>,
    total: &mut u64,
) -> Result<(), MetainfoError> {
    let entries = dir.node.as_dict().ok_or_else(|| dir.wrong("dictionary"))?;
    if given.len() >= limits::MAX_PATH_DEPTH {
        return Err(MetainfoError::BadPath {
            field: dir.path.clone(),
            reason: files::PathError::TooDeep(given.len() + 1),
        });
    }
    for (key, node) in entries {
        let name = sanitize::given(key);
        let path = format!("{}[{name:?}]", dir.path);
        let child = Field::new(node, path).dict()?;
        if key.is_empty() {
            // `""` marks a file; it cannot sit beside names, nor at the top.
            return Err(tree_error(
                &child.path,
                if prefix.is_empty() {
                    "a file with no name at the top of the tree"
                } else {
                    "a file entry beside other names"
                },
            ));
        }
        // Made safe as a v1 path component is (split, `.`/`..` dropped, truncated...).
        let parts = sanitize::component(key);
        let added = parts.len();
        if prefix.len() + added > limits::MAX_PATH_DEPTH {
            return Err(MetainfoError::BadPath {
                field: child.path.clone(),
                reason: files::PathError::TooDeep(prefix.len() + added),
            });
        }
        prefix.extend(parts);
        given.push(name);
        let leaf = child
            .node
            .as_dict()
            .and_then(|d| d.iter().find(|(k, _)| k.is_empty()));
        match leaf {
            Some((_, file_node)) => {
                let children = child.node.as_dict().map_or(0, <[_]>::len);
                if children != 1 {
                    return Err(tree_error(&child.path, "a file entry beside other names"));
                }
                let file = Field::new(file_node, format!("{}[\"\"]", child.path)).dict()?;
                // Nothing left of the path (a file named `..`): `_`, as for a v1 path.
                let path = if prefix.is_empty() {
                    vec!["_".to_owned()]
                } else {
                    prefix.clone()
                };
                out.push(parse_file(&file, path, given.clone())?);
                if out.len() > limits::MAX_FILES {
                    return Err(MetainfoError::TooManyFiles(out.len()));
                }
                *total = total
                    .checked_add(out.last().map_or(0, |f| f.length))
                    .filter(|&t| t <= limits::MAX_TORRENT_LEN)
                    .ok_or(MetainfoError::TotalTooLarge)?;
            }
            None => walk(&child, prefix, given, out, total)?,
        }
        prefix.truncate(prefix.len() - added);
        given.pop();
    }
    Ok(())
}

fn parse_file(
    file: &Field<'_, '_>,
    path: Vec<String>,
    given: Vec<String>,
) -> Result<TreeFile, MetainfoError> {
    let length = file.required("length")?.length()?;
    if length > limits::MAX_TORRENT_LEN {
        return Err(MetainfoError::TotalTooLarge);
    }
    let root = match file.optional("pieces root") {
        Some(f) => {
            let bytes = f.bytes()?;
            let root: Hash = bytes
                .try_into()
                .map_err(|_| tree_error(&f.path, format!("is {} bytes, not 32", bytes.len())))?;
            Some(root)
        }
        None => None,
    };
    let root = match (length, root) {
        // An empty file has no tree; a root given anyway means nothing (libtorrent ignores it).
        (0, _) => None,
        (_, Some(root)) => Some(root),
        (_, None) => {
            return Err(MetainfoError::Missing(format!("{}.pieces root", file.path)));
        }
    };
    Ok(TreeFile {
        path,
        given,
        length,
        root,
    })
}

/// The v2 layout of `tree`'s files: entries with payload offsets, a padding file after each
/// file that does not end on a piece boundary, and the v2 files placed in it.
/// `single` is the single-file flag the payload has (from v1 in a hybrid), `None` to decide
/// from the tree.
fn layout(
    tree: Vec<TreeFile>,
    name: &TopName,
    piece_len: u64,
    single: Option<bool>,
    tree_field: &str,
) -> Result<(Vec<FileEntry>, Vec<V2File>, bool), MetainfoError> {
    let tree_single =
        matches!(tree.as_slice(), [only] if only.path.len() == 1 && only.path == name.path);
    let single = single.unwrap_or(tree_single);
    if single && tree.len() != 1 {
        return Err(tree_error(
            tree_field,
            "holds several files but `info.length` makes a single-file torrent",
        ));
    }
    let count = tree.len();
    let mut entries = Vec::with_capacity(count * 2);
    let mut v2 = Vec::with_capacity(count);
    let mut offset = 0u64;
    for f in tree {
        let (path, given) = if single {
            (name.path.clone(), vec![name.given.clone()])
        } else {
            let mut p = Vec::with_capacity(f.path.len() + 1);
            p.extend(name.path.iter().cloned());
            p.extend(f.path);
            let mut g = Vec::with_capacity(f.given.len() + 1);
            g.push(name.given.clone());
            g.extend(f.given);
            (p, g)
        };
        let first_piece = offset / piece_len;
        let piece_count = f.length.div_ceil(piece_len);
        v2.push(V2File {
            file: entries.len(),
            length: f.length,
            pieces_root: f.root,
            first_piece: u32::try_from(first_piece).map_err(|_| MetainfoError::TotalTooLarge)?,
            piece_count: u32::try_from(piece_count).map_err(|_| MetainfoError::TotalTooLarge)?,
            layer: None,
        });
        entries.push(FileEntry {
            given_path: (given != path).then_some(given),
            path,
            length: f.length,
            offset,
            attr: FileAttr::default(),
            symlink_target: None,
        });
        offset = offset
            .checked_add(f.length)
            .ok_or(MetainfoError::TotalTooLarge)?;
        let pad = (piece_len - offset % piece_len) % piece_len;
        if pad > 0 {
            let mut path = name.path.clone();
            path.extend([".pad".to_owned(), pad.to_string()]);
            entries.push(FileEntry {
                path,
                given_path: None,
                length: pad,
                offset,
                attr: FileAttr {
                    padding: true,
                    ..FileAttr::default()
                },
                symlink_target: None,
            });
            offset += pad;
        }
        if offset > limits::MAX_TORRENT_LEN {
            return Err(MetainfoError::TotalTooLarge);
        }
    }
    Ok((entries, v2, single))
}

/// What a v2 or hybrid info dictionary adds to v1.
pub(super) struct ParsedV2 {
    pub(super) info: V2Info,
    /// The payload layout from the tree (for a v2-only torrent; a hybrid keeps its v1 list).
    pub(super) entries: Vec<FileEntry>,
    pub(super) single: bool,
}

/// Parses `info.file tree` of a `meta version` 2 info dictionary. `v1` is the hybrid's v1
/// layout (files, single-file flag), which must agree with the tree.
pub(super) fn parse(
    info: &Field<'_, '_>,
    name: &TopName,
    piece_len: u64,
    v1: Option<(&[FileEntry], bool)>,
    info_hash: InfoHashV2,
) -> Result<ParsedV2, MetainfoError> {
    let tree_field = info.required("file tree")?;
    let tree = parse_tree(&tree_field)?;
    let (mut entries, mut files, single) =
        layout(tree, name, piece_len, v1.map(|(_, s)| s), &tree_field.path)?;
    // Duplicates (after sanitising) are renamed as in a v1 list; the file indices stay.
    sanitize::resolve_duplicates(&mut entries)?;
    if let Some((v1_files, _)) = v1 {
        check_hybrid(v1_files, &entries)?;
        // In a hybrid, the payload is the v1 list: point the v2 files at its entries.
        let real: Vec<usize> = v1_files
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.attr.padding)
            .map(|(i, _)| i)
            .collect();
        for (f, index) in files.iter_mut().zip(real) {
            f.file = index;
        }
    }
    Ok(ParsedV2 {
        info: V2Info { info_hash, files },
        entries,
        single,
    })
}

/// Refuses a hybrid whose v1 file list and v2 tree describe different payloads. Padding at
/// the very end is allowed to differ (libtorrent pads the last file too).
fn check_hybrid(v1: &[FileEntry], v2: &[FileEntry]) -> Result<(), MetainfoError> {
    let trim = |files: &[FileEntry]| {
        let end = files
            .iter()
            .rposition(|f| !f.attr.padding)
            .map_or(0, |i| i + 1);
        files[..end].len()
    };
    let (n1, n2) = (trim(v1), trim(v2));
    for (i, (a, b)) in v1[..n1].iter().zip(&v2[..n2]).enumerate() {
        let field = format!("info.files[{i}]");
        let mismatch = |what: String| MetainfoError::HybridMismatch {
            field: field.clone(),
            what,
        };
        if a.attr.padding != b.attr.padding {
            return Err(mismatch(if a.attr.padding {
                "is a padding file where the file tree has a file or none is needed".into()
            } else {
                format!(
                    "is `{}` where the file tree needs padding",
                    a.display_path()
                )
            }));
        }
        if !a.attr.padding && a.path != b.path {
            return Err(mismatch(format!(
                "is `{}` but the file tree has `{}` there",
                a.display_path(),
                b.display_path()
            )));
        }
        if a.length != b.length {
            return Err(mismatch(format!(
                "is {} bytes but the file tree makes it {}",
                a.length, b.length
            )));
        }
        if a.offset != b.offset {
            return Err(mismatch(format!(
                "starts at byte {} but the file tree puts it at {}",
                a.offset, b.offset
            )));
        }
    }
    if n1 != n2 {
        return Err(MetainfoError::HybridMismatch {
            field: "info.files".into(),
            what: format!("has {n1} entries (padding included) but the file tree makes {n2}"),
        });
    }
    Ok(())
}

/// Checks the torrent's `piece layers` against the files' roots and keeps the layer of every
/// file that needs one. A missing layer is allowed (it can come from peers); a present one
/// that does not hash to its file's root, or has the wrong length, refuses the torrent.
pub(super) fn attach_piece_layers(
    v2: &mut V2Info,
    layers: Option<&Node<'_>>,
    piece_len: u64,
) -> Result<(), MetainfoError> {
    let Some(layers) = layers else {
        return Ok(());
    };
    let field = Field::new(layers, "piece layers".into()).dict()?;
    // Looked up by root: a linear search per file would make a torrent of many files and many
    // layers quadratic.
    let entries: std::collections::HashMap<&[u8], &Node<'_>> = field
        .node
        .as_dict()
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (*k, v))
        .collect();
    let blocks_per_piece = (piece_len / merkle::BLOCK_LEN) as usize;
    // Files may share a root (identical contents): each distinct layer is hashed once, so a
    // torrent naming one big layer for many files costs no more than its size.
    let mut checked: std::collections::HashMap<(Hash, u32), Vec<Hash>> =
        std::collections::HashMap::new();
    for f in v2.files.iter_mut().filter(|f| f.needs_layer()) {
        let Some(root) = f.pieces_root else { continue };
        if let Some(layer) = checked.get(&(root, f.piece_count)) {
            f.layer = Some(layer.clone());
            continue;
        }
        let Some((key, node)) = entries.get_key_value(root.as_slice()) else {
            continue;
        };
        let path = format!("piece layers[{}]", crate::core::hex::encode(key));
        let bytes = Field::new(node, path.clone()).bytes()?;
        let expected = f.piece_count as usize * 32;
        if bytes.len() != expected {
            return Err(MetainfoError::BadPieceLayer {
                field: path,
                reason: format!(
                    "is {} bytes, the file's {} pieces need {expected}",
                    bytes.len(),
                    f.piece_count
                ),
            });
        }
        let layer: Vec<Hash> = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        if merkle::root_from_piece_layer(&layer, blocks_per_piece) != root {
            return Err(MetainfoError::BadPieceLayer {
                field: path,
                reason: "does not hash to the file's pieces root".into(),
            });
        }
        checked.insert((root, f.piece_count), layer.clone());
        f.layer = Some(layer);
    }
    Ok(())
}
