//! Torrent metainfo (BEP 3 v1, with BEP 12 tiers, BEP 27 private, BEP 47 padding files; BEP 52
//! v2 and hybrid torrents, see [`v2`] and [`merkle`]) and magnet links (BEP 9 URIs).
//!
//! [`Torrent::from_bytes`] validates everything a peer or a storage layer will later rely on, so
//! a [`Torrent`] cannot describe an unsafe or inconsistent download: every path is relative and
//! made of plain components (no `..`, `.`, separators, NUL or control characters), no two
//! files share a path, file offsets add up to the total length, and the piece hashes match the
//! piece count. Paths that other clients accept are made safe rather than refused, as
//! libtorrent makes them safe (`metainfo/sanitize.rs`); the names as given are kept for display. The
//! info hash is the SHA1 of the `info` value's exact bytes in the file; a v2 torrent's is their
//! SHA-256. A hybrid torrent's v1 file list and v2 file tree must agree, and `piece layers`
//! must hash to their files' roots.
//!
//! Parsing is pure; only [`create`] reads files from disk.

pub mod create;
mod files;
pub mod magnet;
pub mod merkle;
mod sanitize;
pub mod v2;

use sha1::{Digest, Sha1};

use crate::bencode::{self, DecodeError, Limits, Node};
use crate::core::lengths::LengthsError;
use crate::core::{BlockRef, InfoHash, InfoHashV2, Lengths, PieceIndex};
use crate::limits;

pub use files::{FileAttr, FileEntry, FileSpan, FileSpans, PathError};
pub use magnet::Magnet;
pub use v2::{MetaVersion, V2File, V2Info};

/// Why a torrent was refused. Every variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// The file is larger than any real torrent.
    #[error("torrent is {len} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// The input's length.
        len: usize,
        /// The limit, [`limits::MAX_TORRENT_FILE_LEN`].
        max: usize,
    },
    /// The bytes are not valid bencode.
    #[error("not a torrent file: {0}")]
    Bencode(DecodeError),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(String),
    /// A field has the wrong bencode type.
    #[error("field `{field}` is a {found}, expected {expected}")]
    WrongType {
        /// The field's path, e.g. `info.files[2].length`.
        field: String,
        /// The type the field must have.
        expected: &'static str,
        /// The type it has.
        found: &'static str,
    },
    /// A length field is negative.
    #[error("field `{field}` is {value}, a length cannot be negative")]
    NegativeLength {
        /// The field's path.
        field: String,
        /// The value found.
        value: i64,
    },
    /// The piece length or total length is out of range.
    #[error("field `info.piece length`: {0}")]
    Lengths(LengthsError),
    /// `pieces` is not a whole number of SHA1 hashes.
    #[error("field `info.pieces` is {0} bytes, not a multiple of 20")]
    PiecesNotMultipleOf20(usize),
    /// `pieces` holds a different number of hashes than the lengths call for.
    #[error("field `info.pieces` holds {found} hashes but the lengths make {expected} pieces")]
    PieceCountMismatch {
        /// Pieces implied by total length and piece length.
        expected: u64,
        /// Hashes in `pieces`.
        found: usize,
    },
    /// `info` has both `length` and `files`, so the layout is ambiguous.
    #[error("`info` has both `length` and `files`")]
    LengthAndFiles,
    /// `info` has neither `length` nor `files`.
    #[error("`info` has neither `length` (single file) nor `files` (multi-file)")]
    NoLayout,
    /// `info.files` is an empty list.
    #[error("field `info.files` is empty")]
    NoFiles,
    /// More files than the limit.
    #[error("field `info.files` has {0} entries, over the limit of {max}", max = limits::MAX_FILES)]
    TooManyFiles(usize),
    /// The file lengths add up past the total length limit.
    #[error("the files add up to more than {} bytes", limits::MAX_TORRENT_LEN)]
    TotalTooLarge,
    /// A path or path component is not safe to create under the download folder.
    #[error("field `{field}`: {reason}")]
    BadPath {
        /// The field's path, e.g. `info.files[3].path[1]`.
        field: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// Files with one path could not all be given distinct names within the bound on
    /// attempts (see `sanitize::resolve_duplicates`); never seen short of a hostile torrent.
    #[error("too many files have the path `{0}`")]
    DuplicatePath(String),
    /// More trackers than the limit.
    #[error("{0} trackers is over the limit of {max}", max = limits::MAX_TRACKERS)]
    TooManyTrackers(usize),
    /// `info.meta version` is neither 1 nor 2.
    #[error("field `info.meta version` is {0}; only versions 1 and 2 are known")]
    UnknownMetaVersion(i64),
    /// The v2 `file tree` is malformed.
    #[error("field `{field}` {reason}")]
    BadFileTree {
        /// The field's path, e.g. `info.file tree["a"]["b"][""].pieces root`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `piece layers` entry is malformed or does not match its file's root.
    #[error("field `{field}` {reason}")]
    BadPieceLayer {
        /// The field's path: `piece layers[<root in hex>]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A hybrid torrent's v1 file list and v2 file tree disagree.
    #[error("hybrid torrent: field `{field}` {what}")]
    HybridMismatch {
        /// The v1 field at fault.
        field: String,
        /// How it differs from the tree.
        what: String,
    },
}

// Not `#[from]`: that would also make the inner error the `source`, and the text it already
// puts in `Display` would print twice in a `{:#}` chain.
impl From<DecodeError> for MetainfoError {
    fn from(e: DecodeError) -> Self {
        MetainfoError::Bencode(e)
    }
}

impl From<LengthsError> for MetainfoError {
    fn from(e: LengthsError) -> Self {
        MetainfoError::Lengths(e)
    }
}

/// The validated `info` dictionary: everything peers agree on through the info hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    name: String,
    given_name: Option<String>,
    files: Vec<FileEntry>,
    single_file: bool,
    lengths: Lengths,
    piece_hashes: Vec<[u8; 20]>,
    private: bool,
    source: Option<String>,
    info_hash: InfoHash,
    version: MetaVersion,
    v2: Option<V2Info>,
    raw: Vec<u8>,
}

/// A validated `.torrent` file: the [`Info`] plus what only the file carries (trackers, web
/// seeds, comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torrent {
    /// The validated info dictionary.
    pub info: Info,
    /// Tracker tiers (BEP 12): `announce-list` when it has any tracker, else `announce` alone.
    /// Empty for a trackerless torrent. Duplicates and empty URLs are dropped.
    pub trackers: Vec<Vec<String>>,
    /// Web seeds (BEP 19 `url-list`), kept for when web seeding is supported.
    pub url_list: Vec<String>,
    /// DHT nodes (BEP 5 `nodes`: `[["host", port], ...]`), for a trackerless torrent: host
    /// (a name or an IP literal) and port. Malformed entries are skipped; at most
    /// `MAX_TORRENT_DHT_NODES`.
    pub nodes: Vec<(String, u16)>,
    /// The free-text comment.
    pub comment: Option<String>,
    /// The program that made the torrent.
    pub created_by: Option<String>,
    /// When the torrent was made, in seconds since the Unix epoch.
    pub creation_date: Option<i64>,
}

impl Torrent {
    /// Parses and validates a `.torrent` file's bytes.
    pub fn from_bytes(input: &[u8]) -> Result<Torrent, MetainfoError> {
        let root = decode_limited(input)?;
        let root_dict = Field::root(&root)?;
        let info_node = root_dict.required("info")?;
        let mut info = Info::from_node(info_node.node, info_node.node.raw(input))?;
        let piece_len = u64::from(info.lengths.piece_len());
        if let Some(v2) = info.v2.as_mut() {
            v2::attach_piece_layers(v2, root.get(b"piece layers"), piece_len)?;
        }

        let trackers = parse_trackers(&root)?;
        let url_list = match root.get(b"url-list") {
            Some(node) => match (node.as_str(), node.as_list()) {
                (Some(url), _) => vec![url.to_owned()],
                (_, Some(list)) => list
                    .iter()
                    .filter_map(Node::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let url_list = url_list.into_iter().filter(|u| !u.is_empty()).collect();
        let nodes = root
            .get(b"nodes")
            .and_then(Node::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(|pair| match pair.as_list()? {
                [host, port] => {
                    let host = host.as_str().filter(|h| !h.is_empty() && h.len() <= 255)?;
                    let port = u16::try_from(port.as_int()?).ok().filter(|p| *p != 0)?;
                    Some((host.to_owned(), port))
                }
                _ => None,
            })
            .take(crate::limits::MAX_TORRENT_DHT_NODES)
            .collect();
        let text = |key: &[u8]| {
            root.get(key)
                .and_then(Node::as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        Ok(Torrent {
            info,
            trackers,
            url_list,
            nodes,
            comment: text(b"comment"),
            created_by: text(b"created by"),
            creation_date: root.get(b"creation date").and_then(Node::as_int),
        })
    }

    /// The torrent's 20-byte info hash (see [`Info::info_hash`]).
    pub fn info_hash(&self) -> InfoHash {
        self.info.info_hash
    }

    /// Every tracker URL, tier by tier.
    pub fn tracker_urls(&self) -> impl Iterator<Item = &str> {
        self.trackers.iter().flatten().map(String::as_str)
    }
}

impl Info {
    /// Parses and validates a bare `info` dictionary, as received from peers (BEP 9).
    pub fn from_bytes(raw: &[u8]) -> Result<Info, MetainfoError> {
        let node = decode_limited(raw)?;
        Info::from_node(&node, raw)
    }

    fn from_node(node: &Node<'_>, raw: &[u8]) -> Result<Info, MetainfoError> {
        let info = Field::new(node, "info".to_owned()).dict()?;
        let piece_len = info.required("piece length")?.length()?;
        let version = match info.optional("meta version") {
            None => MetaVersion::V1,
            Some(f) => match f.node.as_int().ok_or_else(|| f.wrong("integer"))? {
                1 => MetaVersion::V1,
                2 if info.optional("pieces").is_some() => MetaVersion::Hybrid,
                2 => MetaVersion::V2,
                other => return Err(MetainfoError::UnknownMetaVersion(other)),
            },
        };
        let info_hash_v2 = version
            .has_v2()
            .then(|| InfoHashV2::from_bytes(sha2::Sha256::digest(raw).into()));
        let info_hash = match (version, info_hash_v2) {
            (MetaVersion::V2, Some(v2)) => v2.truncated(),
            _ => InfoHash::from_bytes(Sha1::digest(raw).into()),
        };
        let mut name = info.name()?;
        if name.path.is_empty() && (info.optional("files").is_some() || !version.has_v1()) {
            // Nothing left of the folder name (`.`, `..`): libtorrent uses the info hash.
            name.path = vec![info_hash.to_hex()];
        }
        let (files, single_file, piece_hashes, v2) = if version.has_v1() {
            let pieces = info.required("pieces")?.bytes()?;
            if pieces.len() % 20 != 0 {
                return Err(MetainfoError::PiecesNotMultipleOf20(pieces.len()));
            }
            let (files, single_file) = files::parse_layout(&info, &name)?;
            let total_len = files.last().map_or(0, |f| f.offset + f.length);
            let lengths = Lengths::new(total_len, piece_len)?;
            let found = pieces.len() / 20;
            if found as u64 != u64::from(lengths.piece_count()) {
                return Err(MetainfoError::PieceCountMismatch {
                    expected: u64::from(lengths.piece_count()),
                    found,
                });
            }
            let piece_hashes: Vec<[u8; 20]> = pieces
                .chunks_exact(20)
                .map(|c| {
                    let mut h = [0u8; 20];
                    h.copy_from_slice(c);
                    h
                })
                .collect();
            let v2 = match info_hash_v2 {
                Some(hash) => Some(
                    v2::parse(&info, &name, piece_len, Some((&files, single_file)), hash)?.info,
                ),
                None => None,
            };
            (files, single_file, piece_hashes, v2)
        } else {
            // The piece length is checked before the tree is laid out on it.
            Lengths::new(1, piece_len)?;
            let hash = info_hash_v2.expect("v2 has a v2 hash");
            let parsed = v2::parse(&info, &name, piece_len, None, hash)?;
            (parsed.entries, parsed.single, Vec::new(), Some(parsed.info))
        };
        let total_len = files.last().map_or(0, |f| f.offset + f.length);
        let lengths = Lengths::new(total_len, piece_len)?;
        let private = info.optional("private").and_then(|f| f.node.as_int()) == Some(1);
        let source = info
            .optional("source")
            .and_then(|f| f.node.as_str())
            .map(str::to_owned);
        let changed = name.path != [name.given.as_str()];
        Ok(Info {
            name: name.path.join("/"),
            given_name: changed.then_some(name.given),
            files,
            single_file,
            lengths,
            piece_hashes,
            private,
            source,
            info_hash,
            version,
            v2,
            raw: raw.to_vec(),
        })
    }

    /// The torrent's name: the file name of a single-file torrent, the top folder otherwise,
    /// sanitised, so one plain component.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as the torrent gives it, when sanitising changed it.
    pub fn given_name(&self) -> Option<&str> {
        self.given_name.as_deref()
    }

    /// The files in payload order, padding files included (see [`FileEntry::attr`]).
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Whether this is a single-file torrent (`info.length`) rather than a folder.
    pub fn is_single_file(&self) -> bool {
        self.single_file
    }

    /// Piece and block arithmetic for this torrent.
    pub fn lengths(&self) -> &Lengths {
        &self.lengths
    }

    /// The payload's total length, padding included.
    pub fn total_len(&self) -> u64 {
        self.lengths.total_len()
    }

    /// The expected SHA1 of `piece`.
    ///
    /// # Panics
    ///
    /// For a v2-only torrent, which has no SHA1 piece hashes ([`MetaVersion::has_v1`]);
    /// its pieces are checked with [`Info::piece_hash_v2`].
    pub fn piece_hash(&self, piece: PieceIndex) -> &[u8; 20] {
        &self.piece_hashes[piece.as_usize()]
    }

    /// The expected SHA-256 merkle hash of `piece` (BEP 52: the piece's node in its file's
    /// tree), if the torrent is v2 or hybrid and the hash is known (a piece layer can be
    /// missing). `None` also for a piece that holds only padding.
    pub fn piece_hash_v2(&self, piece: PieceIndex) -> Option<merkle::Hash> {
        self.v2.as_ref()?.piece_hash(piece.get())
    }

    /// Which versions of the protocol the torrent speaks.
    pub fn version(&self) -> MetaVersion {
        self.version
    }

    /// The v2 half (file tree, roots, piece layers) of a v2 or hybrid torrent.
    pub fn v2(&self) -> Option<&V2Info> {
        self.v2.as_ref()
    }

    /// The v2 info hash (SHA-256 of the info dictionary) of a v2 or hybrid torrent.
    pub fn info_hash_v2(&self) -> Option<InfoHashV2> {
        self.v2.as_ref().map(|v| v.info_hash)
    }

    /// A hybrid torrent's second name on the wire: its v2 info hash truncated to 20 bytes,
    /// under which v2 peers dial it (it runs under [`Info::info_hash`], the v1 hash). `None`
    /// for a v1 or v2-only torrent, which have one name.
    pub fn v2_alias(&self) -> Option<InfoHash> {
        match self.version {
            MetaVersion::Hybrid => self.info_hash_v2().map(|h| h.truncated()),
            _ => None,
        }
    }

    /// Sets the piece layer of every file whose `pieces root` is `root` and that needs one,
    /// once `layer` is checked against that root (a magnet link's metadata carries no piece
    /// layers: they come from peers, BEP 52 `hash request`). Returns whether it fitted.
    pub fn set_piece_layer(&mut self, root: &merkle::Hash, layer: &[merkle::Hash]) -> bool {
        let blocks_per_piece = (u64::from(self.lengths.piece_len()) / merkle::BLOCK_LEN) as usize;
        let Some(v2) = self.v2.as_mut() else {
            return false;
        };
        let mut fitted = false;
        for f in v2.files.iter_mut() {
            if f.pieces_root.as_ref() != Some(root)
                || !f.needs_layer()
                || layer.len() != f.piece_count as usize
            {
                continue;
            }
            if !fitted && merkle::root_from_piece_layer(layer, blocks_per_piece) != *root {
                return false;
            }
            fitted = true;
            f.layer = Some(layer.to_vec());
        }
        fitted
    }

    /// The bencoded `piece layers` dictionary of a v2 torrent whose layers are all known
    /// (keys are roots, sorted; values the layers' hashes end to end), to write beside `info`
    /// in a .torrent; `None` when no file needs one or one is missing.
    pub fn piece_layers_bencoded(&self) -> Option<Vec<u8>> {
        let v2 = self.v2.as_ref()?;
        if !v2.has_piece_layers() {
            return None;
        }
        let layers: std::collections::BTreeMap<merkle::Hash, &Vec<merkle::Hash>> = v2
            .files
            .iter()
            .filter(|f| f.needs_layer())
            .filter_map(|f| Some((f.pieces_root?, f.layer.as_ref()?)))
            .collect();
        if layers.is_empty() {
            return None;
        }
        let mut out = b"d".to_vec();
        for (root, layer) in layers {
            out.extend_from_slice(b"32:");
            out.extend_from_slice(&root);
            out.extend_from_slice(format!("{}:", layer.len() * 32).as_bytes());
            for h in layer {
                out.extend_from_slice(h);
            }
        }
        out.push(b'e');
        Some(out)
    }

    /// SHA1 piece hashes in order (empty for a v2-only torrent).
    pub fn piece_hashes(&self) -> &[[u8; 20]] {
        &self.piece_hashes
    }

    /// Whether the torrent is private (BEP 27): peers only from its trackers.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The `source` tag private trackers put in the info dictionary to make hashes unique.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The 20-byte info hash peers, trackers and the DHT know the torrent by: the SHA1 of
    /// the info dictionary's exact bytes for a v1 or hybrid torrent, the v2 hash truncated to
    /// 20 bytes for a v2-only one (BEP 52).
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The info dictionary's exact bytes, as served to peers that ask for metadata (BEP 9).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The file spans covering `len` bytes of payload from `offset`. Zero-length files are
    /// skipped; spans past the payload's end are cut off.
    pub fn spans(&self, offset: u64, len: u64) -> FileSpans<'_> {
        FileSpans::new(&self.files, offset, len)
    }

    /// The file spans covering `piece`.
    pub fn piece_spans(&self, piece: PieceIndex) -> FileSpans<'_> {
        self.spans(
            self.lengths.offset_of(piece),
            u64::from(self.lengths.len_of(piece)),
        )
    }

    /// The file spans covering `block`.
    pub fn block_spans(&self, block: BlockRef) -> FileSpans<'_> {
        let start = self.lengths.offset_of(block.piece) + u64::from(block.offset);
        self.spans(start, u64::from(block.len))
    }
}

fn decode_limited(input: &[u8]) -> Result<Node<'_>, MetainfoError> {
    if input.len() > limits::MAX_TORRENT_FILE_LEN {
        return Err(MetainfoError::TooLarge {
            len: input.len(),
            max: limits::MAX_TORRENT_FILE_LEN,
        });
    }
    Ok(bencode::decode_with(input, &Limits::default())?)
}

fn parse_trackers(root: &Node<'_>) -> Result<Vec<Vec<String>>, MetainfoError> {
    let mut seen = std::collections::HashSet::new();
    let mut count = 0usize;
    let mut tiers: Vec<Vec<String>> = Vec::new();
    // Invalid entries are skipped rather than fatal: trackers are hints outside the info
    // hash, and real torrents carry empty strings and odd types in them.
    let mut add_tier = |tiers: &mut Vec<Vec<String>>,
                        urls: &mut dyn Iterator<Item = &str>|
     -> Result<(), MetainfoError> {
        let tier: Vec<String> = urls
            .map(str::trim)
            .filter(|u| !u.is_empty() && seen.insert(u.to_string()))
            .map(str::to_owned)
            .collect();
        count += tier.len();
        if count > limits::MAX_TRACKERS {
            return Err(MetainfoError::TooManyTrackers(count));
        }
        if !tier.is_empty() {
            tiers.push(tier);
        }
        Ok(())
    };
    if let Some(list) = root.get(b"announce-list").and_then(Node::as_list) {
        for tier in list {
            if let Some(urls) = tier.as_list() {
                add_tier(&mut tiers, &mut urls.iter().filter_map(Node::as_str))?;
            }
        }
    }
    if tiers.is_empty() {
        if let Some(url) = root.get(b"announce").and_then(Node::as_str) {
            add_tier(&mut tiers, &mut std::iter::once(url))?;
        }
    }
    Ok(tiers)
}

/// A bencode node with its dotted field path, for errors that name the field.
pub(crate) struct Field<'n, 'a> {
    pub(crate) node: &'n Node<'a>,
    pub(crate) path: String,
}

impl<'n, 'a> Field<'n, 'a> {
    pub(crate) fn new(node: &'n Node<'a>, path: String) -> Self {
        Field { node, path }
    }

    fn root(node: &'n Node<'a>) -> Result<Self, MetainfoError> {
        if node.as_dict().is_none() {
            return Err(MetainfoError::WrongType {
                field: "(top level)".into(),
                expected: "dictionary",
                found: node.type_name(),
            });
        }
        Ok(Field {
            node,
            path: String::new(),
        })
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn wrong(&self, expected: &'static str) -> MetainfoError {
        MetainfoError::WrongType {
            field: self.path.clone(),
            expected,
            found: self.node.type_name(),
        }
    }

    pub(crate) fn dict(self) -> Result<Self, MetainfoError> {
        match self.node.as_dict() {
            Some(_) => Ok(self),
            None => Err(self.wrong("dictionary")),
        }
    }

    pub(crate) fn optional(&self, key: &str) -> Option<Field<'n, 'a>> {
        let dict = self.node.as_dict()?;
        let (_, node) = dict.iter().find(|(k, _)| *k == key.as_bytes())?;
        Some(Field {
            node,
            path: self.child_path(key),
        })
    }

    pub(crate) fn required(&self, key: &str) -> Result<Field<'n, 'a>, MetainfoError> {
        self.optional(key)
            .ok_or_else(|| MetainfoError::Missing(self.child_path(key)))
    }

    pub(crate) fn bytes(&self) -> Result<&'a [u8], MetainfoError> {
        self.node.as_bytes().ok_or_else(|| self.wrong("string"))
    }

    pub(crate) fn list(&self) -> Result<&'n [Node<'a>], MetainfoError> {
        self.node.as_list().ok_or_else(|| self.wrong("list"))
    }

    /// A non-negative integer.
    pub(crate) fn length(&self) -> Result<u64, MetainfoError> {
        let value = self.node.as_int().ok_or_else(|| self.wrong("integer"))?;
        u64::try_from(value).map_err(|_| MetainfoError::NegativeLength {
            field: self.path.clone(),
            value,
        })
    }

    /// The torrent name, preferring the `name.utf-8` variant some clients add, sanitised.
    fn name(&self) -> Result<files::TopName, MetainfoError> {
        let field = match self.optional("name.utf-8") {
            Some(f) if f.node.as_str().is_some() => f,
            _ => self.required("name")?,
        };
        Ok(files::TopName::new(field.bytes()?))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod v2_tests;
