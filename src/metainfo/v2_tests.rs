//! v2 and hybrid metainfo against torrents libtorrent 2.0.8 made (`testdata/lt-*.torrent`,
//! from `tests/support/lt_create.py top OUT --piece-length 32768 --mode v2|hybrid` over the
//! files [`data`] writes), and crafted refusals.

use std::collections::BTreeMap;

use super::merkle::{self, Hash};
use super::*;
use crate::bencode::OwnedValue as V;

const LT_V2: &[u8] = include_bytes!("testdata/lt-v2.torrent");
const LT_HYBRID: &[u8] = include_bytes!("testdata/lt-hybrid.torrent");

/// The files of the fixtures: `top/a`, `top/empty`, `top/sub/b`, `top/z`.
fn data() -> Vec<(&'static str, Vec<u8>)> {
    let pat = |n: usize, mul: usize, add: usize| -> Vec<u8> {
        (0..n).map(|i| ((i * mul + add) % 251) as u8).collect()
    };
    vec![
        ("a", pat(100_000, 7, 3)),
        ("empty", Vec::new()),
        ("sub/b", pat(40_000, 13, 1)),
        ("z", pat(16_384, 5, 2)),
    ]
}

fn hex32(text: &str) -> Hash {
    crate::core::hex::decode::<32>(text).unwrap()
}

fn leaves(data: &[u8]) -> Vec<Hash> {
    data.chunks(merkle::BLOCK_LEN as usize)
        .map(merkle::leaf)
        .collect()
}

#[test]
fn libtorrent_v2_hashes_roots_and_layers() {
    let t = Torrent::from_bytes(LT_V2).unwrap();
    let info = &t.info;
    assert_eq!(info.version(), MetaVersion::V2);
    let v2hash = "d459af1924b31d6f97d76cffbca2c4209f93205afba771107f4c8d73543241f4";
    assert_eq!(info.info_hash_v2().unwrap().to_hex(), v2hash);
    assert_eq!(info.info_hash().to_hex(), v2hash[..40]);
    assert!(info.piece_hashes().is_empty());
    // libtorrent's roots, and ours from the same bytes.
    let v2 = info.v2().unwrap();
    assert_eq!(
        v2.files[0].pieces_root,
        Some(hex32(
            "43ae2698d3c75be7703641a82c823d1b513b5e7315bfcc2e5ac089dc16476c63"
        ))
    );
    assert_eq!(
        v2.files[3].pieces_root,
        Some(hex32(
            "0ce22220bc0da1ef4e156cc971564620ff1f15483b2b30a1d9e9be65778665e0"
        ))
    );
    for (f, (name, bytes)) in v2.files.iter().zip(data()) {
        assert_eq!(info.files()[f.file].display_path(), format!("top/{name}"));
        assert_eq!(f.length, bytes.len() as u64);
        if bytes.is_empty() {
            assert_eq!(f.pieces_root, None);
            continue;
        }
        let l = leaves(&bytes);
        assert_eq!(f.pieces_root, Some(merkle::file_root(&l)), "{name}");
        if f.needs_layer() {
            assert_eq!(
                f.layer.as_deref(),
                Some(&merkle::piece_layer(&l, 2)[..]),
                "{name}"
            );
        }
        for (i, piece) in bytes.chunks(32768).enumerate() {
            let whole = !f.needs_layer();
            assert_eq!(
                f.piece_hash(i as u32),
                Some(merkle::piece_hash(piece, 2, whole)),
                "{name} piece {i}"
            );
        }
    }
    // libtorrent's layout: each file on a piece boundary, padding after it, the last too.
    let layout: Vec<(String, u64, bool)> = info
        .files()
        .iter()
        .map(|f| (f.display_path(), f.length, f.attr.padding))
        .collect();
    let expect = [
        ("top/a", 100_000, false),
        ("top/.pad/31072", 31072, true),
        ("top/empty", 0, false),
        ("top/sub/b", 40_000, false),
        ("top/.pad/25536", 25536, true),
        ("top/z", 16384, false),
        ("top/.pad/16384", 16384, true),
    ];
    let expect: Vec<(String, u64, bool)> = expect
        .iter()
        .map(|(p, l, pad)| (p.to_string(), *l, *pad))
        .collect();
    assert_eq!(layout, expect);
    assert_eq!(info.lengths().piece_count(), 7);
    // Payload piece 5 is the second piece of `sub/b`, 6 is `z`'s.
    let (f, i) = v2.file_of_piece(5).unwrap();
    assert_eq!((f.file, i), (3, 1));
    assert_eq!(v2.file_of_piece(6).unwrap().0.file, 5);
    assert!(v2.file_of_piece(7).is_none());
}

#[test]
fn libtorrent_hybrid_has_both_hashes() {
    let t = Torrent::from_bytes(LT_HYBRID).unwrap();
    let info = &t.info;
    assert_eq!(info.version(), MetaVersion::Hybrid);
    assert_eq!(
        info.info_hash().to_hex(),
        "a40221c596a0efe0fad6c2172773f2d6ae8651e6"
    );
    assert_eq!(
        info.info_hash_v2().unwrap().to_hex(),
        "3d3788864bcd1b04482edbaaf7644415fb61aede154cbfad2ddda6ff1dc046b7"
    );
    assert_eq!(info.piece_hashes().len(), 7);
    let v2 = info.v2().unwrap();
    assert!(v2.has_piece_layers());
    // v2 files point at the v1 list's entries.
    let paths: Vec<String> = v2
        .files
        .iter()
        .map(|f| info.files()[f.file].display_path())
        .collect();
    assert_eq!(paths, ["top/a", "top/empty", "top/sub/b", "top/z"]);
}

/// Decodes a torrent into an owned value to edit.
fn owned(bytes: &[u8]) -> BTreeMap<Vec<u8>, V> {
    match crate::bencode::decode(bytes).unwrap().to_owned_value() {
        V::Dict(d) => d,
        _ => unreachable!(),
    }
}

fn info_mut(root: &mut BTreeMap<Vec<u8>, V>) -> &mut BTreeMap<Vec<u8>, V> {
    match root.get_mut(&b"info"[..]) {
        Some(V::Dict(d)) => d,
        _ => unreachable!(),
    }
}

fn edit(bytes: &[u8], f: impl FnOnce(&mut BTreeMap<Vec<u8>, V>)) -> Result<Torrent, MetainfoError> {
    let mut root = owned(bytes);
    f(&mut root);
    Torrent::from_bytes(&V::Dict(root).to_bytes())
}

fn v1_files(info: &mut BTreeMap<Vec<u8>, V>) -> &mut Vec<V> {
    match info.get_mut(&b"files"[..]) {
        Some(V::List(l)) => l,
        _ => unreachable!(),
    }
}

fn set(v: &mut V, key: &str, value: V) {
    if let V::Dict(d) = v {
        d.insert(key.as_bytes().to_vec(), value);
    }
}

fn tree_file<'a>(info: &'a mut BTreeMap<Vec<u8>, V>, path: &[&str]) -> &'a mut V {
    let mut node = info.get_mut(&b"file tree"[..]).unwrap();
    for c in path.iter().copied().chain([""]) {
        node = match node {
            V::Dict(d) => d.get_mut(c.as_bytes()).unwrap(),
            _ => unreachable!(),
        };
    }
    node
}

fn layers_mut(root: &mut BTreeMap<Vec<u8>, V>) -> &mut BTreeMap<Vec<u8>, V> {
    match root.get_mut(&b"piece layers"[..]) {
        Some(V::Dict(d)) => d,
        _ => unreachable!(),
    }
}

#[test]
fn inconsistent_hybrids_are_refused() {
    // A v1 path that differs from the tree.
    let e = edit(LT_HYBRID, |r| {
        let files = v1_files(info_mut(r));
        set(&mut files[0], "path", V::List(vec![V::str("other")]));
    })
    .unwrap_err();
    assert!(
        matches!(&e, MetainfoError::HybridMismatch { field, .. } if field == "info.files[0]"),
        "{e}"
    );
    // A v1 length that differs (and a piece count kept consistent by dropping a padding file).
    let e = edit(LT_HYBRID, |r| {
        let files = v1_files(info_mut(r));
        set(&mut files[3], "length", V::Int(40_001));
        set(&mut files[4], "length", V::Int(25_535));
    })
    .unwrap_err();
    assert!(
        matches!(&e, MetainfoError::HybridMismatch { field, .. } if field == "info.files[3]"),
        "{e}"
    );
    // A missing padding file: the next file is not where the tree puts it.
    let e = edit(LT_HYBRID, |r| {
        let files = v1_files(info_mut(r));
        files.remove(1);
        files.push(V::Dict(BTreeMap::from([
            (b"attr".to_vec(), V::str("p")),
            (b"length".to_vec(), V::Int(31072)),
            (b"path".to_vec(), V::List(vec![V::str(".pad"), V::str("x")])),
        ])));
    })
    .unwrap_err();
    assert!(matches!(e, MetainfoError::HybridMismatch { .. }), "{e}");
    // A v1 list with a file the tree lacks.
    let e = edit(LT_HYBRID, |r| {
        let info = info_mut(r);
        let tree = match info.get_mut(&b"file tree"[..]) {
            Some(V::Dict(d)) => d,
            _ => unreachable!(),
        };
        tree.remove(&b"z"[..]);
    })
    .unwrap_err();
    assert!(matches!(e, MetainfoError::HybridMismatch { .. }), "{e}");
    // Without the trailing padding file, as other makers write hybrids, it still agrees.
    let t = edit(LT_HYBRID, |r| {
        let info = info_mut(r);
        v1_files(info).pop();
        let pieces = match info.get_mut(&b"pieces"[..]) {
            Some(V::Bytes(b)) => b,
            _ => unreachable!(),
        };
        pieces.truncate(pieces.len()); // same count: the last piece just gets shorter
    })
    .unwrap();
    assert_eq!(t.info.version(), MetaVersion::Hybrid);
}

#[test]
fn bad_trees_and_layers_name_their_field() {
    let msg = |r: Result<Torrent, MetainfoError>| r.unwrap_err().to_string();
    let e = msg(edit(LT_V2, |r| {
        info_mut(r).insert(b"meta version".to_vec(), V::Int(3));
    }));
    assert!(e.contains("info.meta version"), "{e}");
    let e = msg(edit(LT_V2, |r| {
        set(
            tree_file(info_mut(r), &["sub", "b"]),
            "pieces root",
            V::Bytes(vec![1; 31]),
        );
    }));
    assert!(
        e.contains(r#"info.file tree["sub"]["b"][""].pieces root"#) && e.contains("31 bytes"),
        "{e}"
    );
    let e = msg(edit(LT_V2, |r| {
        if let V::Dict(d) = tree_file(info_mut(r), &["a"]) {
            d.remove(&b"pieces root"[..]);
        }
    }));
    assert!(
        e.contains(r#"missing field `info.file tree["a"][""].pieces root`"#),
        "{e}"
    );
    let e = msg(edit(LT_V2, |r| {
        let info = info_mut(r);
        info.insert(b"file tree".to_vec(), V::Dict(BTreeMap::new()));
    }));
    assert!(
        e.contains("info.file tree") && e.contains("no files"),
        "{e}"
    );
    // A file entry beside a name.
    let e = msg(edit(LT_V2, |r| {
        let info = info_mut(r);
        if let Some(V::Dict(tree)) = info.get_mut(&b"file tree"[..]) {
            if let Some(V::Dict(sub)) = tree.get_mut(&b"sub"[..]) {
                sub.insert(
                    Vec::new(),
                    V::Dict(BTreeMap::from([(b"length".to_vec(), V::Int(0))])),
                );
            }
        }
    }));
    assert!(
        e.contains(r#"info.file tree["sub"]` a file entry beside"#),
        "{e}"
    );
    // A path component that is not a plain name is made safe as in a v1 list (`..` leaves
    // nothing: `_`), the name as given kept for display.
    let t = edit(LT_V2, |r| {
        let info = info_mut(r);
        if let Some(V::Dict(tree)) = info.get_mut(&b"file tree"[..]) {
            let a = tree.remove(&b"a"[..]).unwrap();
            tree.insert(b"..".to_vec(), a);
        }
    })
    .unwrap();
    let f = &t.info.files()[0];
    assert_eq!(f.path, ["top", "_"]);
    assert_eq!(
        f.given_path.as_deref(),
        Some(&["top".to_owned(), "..".to_owned()][..])
    );
    // A piece layer that does not hash to its root, and one of the wrong length.
    let root_a = "43ae2698d3c75be7703641a82c823d1b513b5e7315bfcc2e5ac089dc16476c63";
    let e = msg(edit(LT_V2, |r| {
        if let Some(V::Bytes(b)) = layers_mut(r).get_mut(&hex32(root_a)[..]) {
            b[0] ^= 1;
        }
    }));
    assert!(
        e.contains(&format!("piece layers[{root_a}]")) && e.contains("does not hash"),
        "{e}"
    );
    let e = msg(edit(LT_V2, |r| {
        if let Some(V::Bytes(b)) = layers_mut(r).get_mut(&hex32(root_a)[..]) {
            b.truncate(96);
        }
    }));
    assert!(
        e.contains("96 bytes") && e.contains("4 pieces need 128"),
        "{e}"
    );
    // A v2 piece length must be a power of two of at least 16 KiB, as in v1.
    let e = msg(edit(LT_V2, |r| {
        info_mut(r).insert(b"piece length".to_vec(), V::Int(3 * 16384));
    }));
    assert!(e.contains("info.piece length"), "{e}");
}

#[test]
fn missing_piece_layers_are_allowed_and_reported() {
    let t = edit(LT_V2, |r| {
        r.remove(&b"piece layers"[..]);
    })
    .unwrap();
    let v2 = t.info.v2().unwrap();
    assert!(!v2.has_piece_layers());
    // Files of one piece still have their hash: the root.
    assert!(v2.piece_hash(6).is_some());
    assert!(v2.piece_hash(0).is_none());
    // The bare info dictionary (as from peers, BEP 9) parses, without layers.
    let info = Info::from_bytes(t.info.raw()).unwrap();
    assert_eq!(info.info_hash_v2(), t.info.info_hash_v2());
}

#[test]
fn deep_trees_are_refused() {
    let mut node = V::Dict(BTreeMap::from([(
        Vec::new(),
        V::Dict(BTreeMap::from([(b"length".to_vec(), V::Int(0))])),
    )]));
    for _ in 0..crate::limits::MAX_PATH_DEPTH + 1 {
        node = V::Dict(BTreeMap::from([(b"d".to_vec(), node)]));
    }
    let e = edit(LT_V2, |r| {
        info_mut(r).insert(b"file tree".to_vec(), node);
    })
    .unwrap_err();
    // Either bound refuses it, each naming what it is.
    assert!(
        matches!(
            e,
            MetainfoError::BadPath {
                reason: PathError::TooDeep(_),
                ..
            } | MetainfoError::Bencode(_)
        ),
        "{e}"
    );
}

#[test]
fn v2_single_file() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let l = leaves(&data);
    let root = merkle::file_root(&l);
    let info = V::Dict(BTreeMap::from([
        (b"name".to_vec(), V::str("one.bin")),
        (b"piece length".to_vec(), V::Int(32768)),
        (b"meta version".to_vec(), V::Int(2)),
        (
            b"file tree".to_vec(),
            V::Dict(BTreeMap::from([(
                b"one.bin".to_vec(),
                V::Dict(BTreeMap::from([(
                    Vec::new(),
                    V::Dict(BTreeMap::from([
                        (b"length".to_vec(), V::Int(70_000)),
                        (b"pieces root".to_vec(), V::Bytes(root.to_vec())),
                    ])),
                )])),
            )])),
        ),
    ]));
    let layer = merkle::piece_layer(&l, 2).concat();
    let root_dict = V::Dict(BTreeMap::from([
        (b"info".to_vec(), info),
        (
            b"piece layers".to_vec(),
            V::Dict(BTreeMap::from([(root.to_vec(), V::Bytes(layer))])),
        ),
    ]));
    let t = Torrent::from_bytes(&root_dict.to_bytes()).unwrap();
    assert!(t.info.is_single_file());
    assert_eq!(t.info.files()[0].path, ["one.bin"]);
    // Padded to the piece boundary as libtorrent pads it, so the last piece is as long.
    assert_eq!(t.info.files().len(), 2);
    assert!(t.info.files()[1].attr.padding);
    assert_eq!(t.info.total_len(), 3 * 32768);
    assert_eq!(t.info.lengths().piece_count(), 3);
    assert_eq!(
        t.info.piece_hash_v2(t.info.lengths().piece(2).unwrap()),
        Some(merkle::piece_hash(&data[65536..], 2, false))
    );
}

/// Files with the same contents share a root and one `piece layers` entry: both get the layer
/// (checked once).
#[test]
fn identical_files_share_one_layer() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    let l = leaves(&data);
    let root = merkle::file_root(&l);
    let file = || {
        V::Dict(BTreeMap::from([(
            Vec::new(),
            V::Dict(BTreeMap::from([
                (b"length".to_vec(), V::Int(70_000)),
                (b"pieces root".to_vec(), V::Bytes(root.to_vec())),
            ])),
        )]))
    };
    let info = V::Dict(BTreeMap::from([
        (b"name".to_vec(), V::str("twins")),
        (b"piece length".to_vec(), V::Int(32768)),
        (b"meta version".to_vec(), V::Int(2)),
        (
            b"file tree".to_vec(),
            V::Dict(BTreeMap::from([
                (b"x".to_vec(), file()),
                (b"y".to_vec(), file()),
            ])),
        ),
    ]));
    let torrent = V::Dict(BTreeMap::from([
        (b"info".to_vec(), info),
        (
            b"piece layers".to_vec(),
            V::Dict(BTreeMap::from([(
                root.to_vec(),
                V::Bytes(merkle::piece_layer(&l, 2).concat()),
            )])),
        ),
    ]));
    let t = Torrent::from_bytes(&torrent.to_bytes()).unwrap();
    let v2 = t.info.v2().unwrap();
    assert!(v2.has_piece_layers());
    assert_eq!(v2.files[0].layer, v2.files[1].layer);
    // x: pieces 0-2 (then padding), y: pieces 3-5.
    assert_eq!((v2.files[1].first_piece, v2.files[1].piece_count), (3, 3));
    assert_eq!(
        v2.piece_hash(5),
        Some(merkle::piece_hash(&data[65536..], 2, false))
    );
}
