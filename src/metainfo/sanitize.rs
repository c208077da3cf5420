//! Turning the path components a torrent gives into safe file names, the way libtorrent does
//! (its `sanitize_append_path_element`, `verify_encoding` and duplicate renaming), so that a
//! torrent other clients open opens here too, with the same paths where that is safe.
//!
//! The rules, for one component as given (bytes):
//! - `/` and `\` are separators: the component is split there and each part is a level of
//!   its own (libtorrent drops the separator characters and joins the parts instead).
//! - Empty parts a split leaves, `.` and `..` are dropped. A component that is empty as given
//!   becomes `_`, and a path left with no component at all becomes `_`, as in libtorrent.
//! - Invalid UTF-8 becomes `_`, one per bad sequence, decoded as libtorrent decodes; control
//!   characters (C0, DEL, C1, NUL included) become `_`; invisible and direction-changing
//!   characters (bidi overrides, zero-width marks, the BOM) are removed, as libtorrent removes
//!   them, so that a name cannot pretend to end in another extension.
//! - A part still longer than [`MAX_PATH_COMPONENT_LEN`] bytes is cut as libtorrent cuts it:
//!   at the first character boundary at or past 240 bytes, then the extension (a dot in the
//!   last 10 bytes) is appended. Parts of 241..=255 bytes are kept whole, unlike libtorrent:
//!   they fit Linux's `NAME_MAX`, and ringtorrent always accepted them.
//!
//! The torrent's name is one component whatever it holds: separators are dropped from it, as
//! libtorrent drops them.
//!
//! Then, over the whole file list, [`resolve_duplicates`] gives a file whose path an earlier
//! file or any folder already has a new name `base.N.ext`, as libtorrent does (but comparing
//! names exactly, since Linux file names are case-sensitive; libtorrent ignores case).
//!
//! Everything here is pure.

use std::collections::HashMap;

use super::files::FileEntry;
use super::MetainfoError;
use crate::limits::MAX_PATH_COMPONENT_LEN;

/// Where libtorrent starts looking for the extension to keep when it cuts a long name.
const CUT_AT: usize = 240;

/// The safe components one given component turns into: zero, one, or (split at separators)
/// several. Zero when it was `.`, `..` or nothing but separators and invisible characters.
pub(crate) fn component(raw: &[u8]) -> Vec<String> {
    if raw.is_empty() {
        return vec!["_".to_owned()];
    }
    raw.split(|&b| b == b'/' || b == b'\\')
        .filter_map(|part| {
            let mut name = clean(part, false);
            if name.len() > MAX_PATH_COMPONENT_LEN {
                name = clean(part, true);
                // libtorrent's cut counts only the characters it keeps: a long run of `_`
                // for bad bytes can still be too long, and is cut here.
                let end = fit(&name, MAX_PATH_COMPONENT_LEN).len();
                name.truncate(end);
            }
            (!matches!(name.as_str(), "" | "." | "..")).then_some(name)
        })
        .collect()
}

/// The safe form of a torrent's `name`: one component, its separators dropped as libtorrent
/// drops them (not split: the name is repeated in every file's path, so it stays one bounded
/// level); `None` when nothing is left (`.`, `..`).
pub(crate) fn name(raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        return Some("_".to_owned());
    }
    let joined: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|&b| b != b'/' && b != b'\\')
        .collect();
    if joined.is_empty() {
        return None;
    }
    component(&joined).pop()
}

/// The safe components of a whole path given as components; `_` if nothing is left.
pub(crate) fn path<'a>(raw: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut out: Vec<String> = raw.into_iter().flat_map(component).collect();
    if out.is_empty() {
        out.push("_".to_owned());
    }
    out
}

/// The text as given, for showing next to the sanitised name: UTF-8, or converted lossily.
pub(crate) fn given(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Characters libtorrent removes: they are invisible or change the writing direction, so a
/// name could look like another.
fn invisible(c: char) -> bool {
    matches!(c as u32,
        0x061c | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x2069 | 0xfeff)
}

/// Characters no file name here should hold: C0 controls (NUL included), DEL, C1 controls.
fn control(c: char) -> bool {
    matches!(c as u32, 0..=0x1f | 0x7f | 0x80..=0x9f)
}

/// One part's characters made safe; with `cut`, shortened as libtorrent shortens.
fn clean(raw: &[u8], cut: bool) -> String {
    let mut out = String::with_capacity(raw.len().min(2 * MAX_PATH_COMPONENT_LEN));
    let mut found_extension = false;
    let mut i = 0;
    while i < raw.len() {
        let rest = raw.get(i..).unwrap_or_default();
        let (decoded, len) = decode(rest);
        let len = len.clamp(1, rest.len());
        match decoded {
            Some(c) if invisible(c) => {}
            Some(c) if !control(c) => {
                out.push(c);
                if cut && !found_extension && out.len() >= CUT_AT {
                    // Keep the extension: a dot in the last 10 bytes, after what was taken.
                    let low = raw.len().saturating_sub(10).max(i);
                    match (low + 1..raw.len()).rev().find(|&j| raw[j] == b'.') {
                        Some(dot) => {
                            found_extension = true;
                            i = dot;
                            continue;
                        }
                        None => break,
                    }
                }
            }
            _ => out.push('_'),
        }
        i += len;
    }
    out
}

/// Decodes one UTF-8 sequence the way libtorrent does: the character (or `None` when the
/// sequence is invalid: bad lead byte, bad continuation, overlong, surrogate, past U+10FFFF)
/// and the bytes it takes, which may run past the end for a truncated sequence.
fn decode(s: &[u8]) -> (Option<char>, usize) {
    let Some(&lead) = s.first() else {
        return (None, 1);
    };
    let len = match lead {
        0x00..=0x7f => return (Some(char::from(lead)), 1),
        _ if lead >> 5 == 0b110 => 2,
        _ if lead >> 4 == 0b1110 => 3,
        _ if lead >> 3 == 0b11110 => 4,
        _ if lead >> 2 == 0b11_1110 => return (None, 5),
        _ => return (None, 1),
    };
    if len > s.len() {
        return (None, s.len());
    }
    let mut c = u32::from(lead) & (0x7f >> len);
    for &b in s.get(1..len).unwrap_or_default() {
        if b & 0xc0 != 0x80 {
            return (None, len);
        }
        c = (c << 6) | u32::from(b & 0x3f);
    }
    let shortest = match len {
        2 => 0x80,
        3 => 0x800,
        _ => 0x1_0000,
    };
    if c < shortest {
        return (None, len);
    }
    // `from_u32` refuses surrogates and values past U+10FFFF.
    (char::from_u32(c), len)
}

/// Every folder and (once [`resolve_duplicates`] placed them) file of a torrent, each kept as
/// (its folder's id, its name): a path costs one entry per component, never a copy of each of
/// its prefixes, so a hostile torrent of deep paths stays linear in its size.
pub(crate) struct Names {
    map: HashMap<(u32, String), Node>,
    folders: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Folder(u32),
    File,
}

/// The download folder's id.
const ROOT: u32 = 0;

impl Names {
    /// The id of folder `name` in `parent`, made if new.
    fn folder(&mut self, parent: u32, name: &str) -> u32 {
        let key = (parent, name.to_owned());
        if let Some(Node::Folder(id)) = self.map.get(&key) {
            return *id;
        }
        self.folders += 1;
        self.map.insert(key, Node::Folder(self.folders));
        self.folders
    }

    /// What `path` names: a folder, a file, or nothing.
    fn find(&self, path: &[String]) -> Option<Node> {
        let (last, folders) = path.split_last()?;
        let mut at = ROOT;
        for name in folders {
            match self.map.get(&(at, name.clone()))? {
                Node::Folder(id) => at = *id,
                Node::File => return None,
            }
        }
        self.map.get(&(at, last.clone())).copied()
    }
}

/// Renames every file whose path an earlier file, or any folder of the torrent, already has:
/// `name.ext` becomes `name.1.ext` (then `.2`, ...), as libtorrent renames, and a renamed
/// file keeps its former path in [`FileEntry::given_path`]. Padding files are left out: they
/// are never created. Returns every name the torrent's files and folders now have.
///
/// Bounded: a counter per (folder, base, extension) carries on where it stopped, so a name
/// tried is either taken by this file or was already taken by another path, and the tries
/// are capped by the number of names besides.
pub(crate) fn resolve_duplicates(entries: &mut [FileEntry]) -> Result<Names, MetainfoError> {
    let mut names = Names {
        map: HashMap::with_capacity(entries.len()),
        folders: ROOT,
    };
    // Folders first, so that no file takes a folder's name.
    let parents: Vec<u32> = entries
        .iter()
        .map(|e| match e.path.split_last() {
            Some((_, folders)) if !e.attr.padding => folders
                .iter()
                .fold(ROOT, |parent, name| names.folder(parent, name)),
            _ => ROOT,
        })
        .collect();
    let mut next: HashMap<(u32, String, String), u64> = HashMap::new();
    let budget = 2 * entries.len() + names.map.len() + 1;
    let mut tries = 0usize;
    for (e, &parent) in entries.iter_mut().zip(&parents) {
        if e.attr.padding {
            continue;
        }
        let Some(last) = e.path.last() else {
            continue;
        };
        let key = (parent, last.clone());
        if let std::collections::hash_map::Entry::Vacant(v) = names.map.entry(key) {
            v.insert(Node::File);
            continue;
        }
        let (base, ext) = match last.rfind('.') {
            Some(dot) if dot > 0 => last.split_at(dot),
            _ => (last.as_str(), ""),
        };
        let counter = next
            .entry((parent, base.to_owned(), ext.to_owned()))
            .or_insert(1);
        let name = loop {
            tries += 1;
            if tries > budget {
                return Err(MetainfoError::DuplicatePath(e.display_path()));
            }
            let suffix = format!(".{counter}{ext}");
            *counter += 1;
            let name = format!(
                "{}{suffix}",
                fit(base, MAX_PATH_COMPONENT_LEN.saturating_sub(suffix.len()))
            );
            if let std::collections::hash_map::Entry::Vacant(v) =
                names.map.entry((parent, name.clone()))
            {
                v.insert(Node::File);
                break name;
            }
        };
        if e.given_path.is_none() {
            e.given_path = Some(e.path.clone());
        }
        if let Some(slot) = e.path.last_mut() {
            *slot = name;
        }
    }
    Ok(names)
}

/// Points each symlink entry (index, sanitised target) at the file or folder of the torrent
/// its target names, or at nothing when there is none. Tried in turn, as BEP 47 and
/// libtorrent read a target: under the torrent's top folder, as given from the download
/// folder, then relative to the link's own folder. A link to itself, to an empty target or to
/// anything outside the torrent's files and folders gets no target.
pub(crate) fn resolve_links(
    entries: &mut [FileEntry],
    names: &Names,
    top: &[String],
    links: Vec<(usize, Vec<String>)>,
) {
    for (index, target) in links {
        let Some(link) = entries.get(index) else {
            continue;
        };
        let folder = link.path.split_last().map_or(&[][..], |(_, f)| f);
        let joined =
            |base: &[String]| -> Vec<String> { base.iter().chain(&target).cloned().collect() };
        let found = if target.is_empty() {
            None
        } else {
            [joined(top), target.clone(), joined(folder)]
                .into_iter()
                .find(|t| *t != link.path && names.find(t).is_some())
        };
        if let Some(e) = entries.get_mut(index) {
            e.symlink_target = found;
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn fit(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(raw: &[u8]) -> Vec<String> {
        component(raw)
    }

    proptest::proptest! {
        /// Whatever the bytes, every component is a plain name that fits NAME_MAX.
        #[test]
        fn any_bytes_give_plain_names(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            for name in component(&raw) {
                proptest::prop_assert!(!matches!(name.as_str(), "" | "." | ".."));
                proptest::prop_assert!(name.len() <= MAX_PATH_COMPONENT_LEN, "{}", name.len());
                proptest::prop_assert!(!name.chars().any(|c| c == '/' || c == '\\' || c.is_control()));
            }
        }
    }

    #[test]
    fn plain_names_are_kept() {
        for name in [
            "a.txt",
            "naïve",
            "日本語.mkv",
            " spaced ",
            "x".repeat(255).as_str(),
        ] {
            assert_eq!(one(name.as_bytes()), vec![name.to_owned()]);
        }
    }

    #[test]
    fn separators_split_and_dots_drop() {
        assert_eq!(one(b"a/b"), vec!["a", "b"]);
        assert_eq!(one(b"a\\b"), vec!["a", "b"]);
        assert_eq!(one(b"/etc/passwd"), vec!["etc", "passwd"]);
        assert_eq!(one(b"a/../../b"), vec!["a", "b"]);
        assert_eq!(one(b"a//b/"), vec!["a", "b"]);
        assert!(one(b"..").is_empty() && one(b".").is_empty() && one(b"/").is_empty());
        assert_eq!(one(b""), vec!["_"]);
        assert_eq!(one(b"..."), vec!["..."]);
        assert_eq!(path([&b".."[..], b"."]), vec!["_"]);
        assert_eq!(name(b"a/b\\c"), Some("abc".to_owned()));
        assert_eq!(
            (name(b".."), name(b"/./"), name(b"")),
            (None, None, Some("_".to_owned()))
        );
    }

    #[test]
    fn bad_bytes_and_characters() {
        assert_eq!(one(b"caf\xe9"), vec!["caf_"]);
        assert_eq!(one(b"a\0b\x01\x7f"), vec!["a_b__"]);
        // A bad continuation spoils its whole sequence: one `_`.
        assert_eq!(one(b"x\xe6\x97y"), vec!["x_"]);
        assert_eq!(one(b"\xc0\xafz"), vec!["_z"], "overlong");
        assert_eq!(one(b"\xed\xa0\x80."), vec!["_."], "surrogate");
        assert_eq!(one("evil\u{202e}gpj.exe".as_bytes()), vec!["evilgpj.exe"]);
        assert!(one("\u{200e}".as_bytes()).is_empty());
        assert!(one(".\u{202e}.".as_bytes()).is_empty());
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let long = format!("{}.mkv", "x".repeat(300));
        assert_eq!(
            one(long.as_bytes()),
            vec![format!("{}.mkv", "x".repeat(240))]
        );
        assert_eq!(one(&[0xff; 300]), vec!["_".repeat(255)]);
        let no_ext = "y".repeat(300);
        assert_eq!(one(no_ext.as_bytes()), vec!["y".repeat(240)]);
        // Three-byte characters: the cut is at the first boundary past 240 bytes.
        let cjk = format!("{}.txt", "日".repeat(100));
        let got = one(cjk.as_bytes()).pop().unwrap();
        assert_eq!(got, format!("{}.txt", "日".repeat(80)));
        assert!(got.len() <= MAX_PATH_COMPONENT_LEN);
    }

    fn entry(path: &[&str], padding: bool) -> FileEntry {
        FileEntry {
            path: path.iter().map(|s| s.to_string()).collect(),
            length: 1,
            offset: 0,
            attr: super::super::FileAttr {
                padding,
                ..Default::default()
            },
            symlink_target: None,
            given_path: None,
        }
    }

    #[test]
    fn duplicates_get_numbered_names() {
        let mut files = vec![
            entry(&["t", "a.txt"], false),
            entry(&["t", "a.txt"], false),
            entry(&["t", "a.1.txt"], false),
            entry(&["t", "a.txt"], false),
            entry(&["t", "d"], false),
            entry(&["t", "d", "x"], false),
            entry(&["t", "p"], true),
            entry(&["t", "p"], true),
        ];
        resolve_duplicates(&mut files).unwrap();
        let renamed: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].given_path.is_some())
            .collect();
        let paths: Vec<String> = files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(
            paths,
            [
                "t/a.txt",
                "t/a.1.txt",
                "t/a.1.1.txt",
                "t/a.2.txt",
                "t/d.1",
                "t/d/x",
                "t/p",
                "t/p"
            ]
        );
        assert_eq!(renamed, vec![1, 2, 3, 4]);
    }

    #[test]
    fn deep_paths_cost_one_entry_per_component() {
        let deep: Vec<String> = (0..64).map(|i| format!("d{i}")).collect();
        let mut files: Vec<FileEntry> = (0..100)
            .map(|i| {
                let mut e = entry(&[], false);
                e.path = deep.clone();
                e.path.push(format!("f{i}"));
                e
            })
            .collect();
        let names = resolve_duplicates(&mut files).unwrap();
        assert_eq!(names.map.len(), 64 + 100);
        assert_eq!(names.find(&deep), Some(Node::Folder(64)));
        assert_eq!(names.find(&files[7].path), Some(Node::File));
        assert_eq!(names.find(&["d0".to_owned(), "nope".to_owned()]), None);
    }

    #[test]
    fn many_duplicates_stay_linear_and_fit() {
        let long = "z".repeat(255);
        let mut files: Vec<FileEntry> = (0..2000).map(|_| entry(&["t", &long], false)).collect();
        resolve_duplicates(&mut files).unwrap();
        let unique: std::collections::HashSet<_> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(unique.len(), 2000);
        assert!(files
            .iter()
            .all(|f| f.path[1].len() <= MAX_PATH_COMPONENT_LEN));
    }
}
