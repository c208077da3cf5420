//! Feeds arbitrary bytes to the bencode decoder, the torrent validator and the magnet parser.
//! Nothing may panic, and whatever validates must keep the invariants the rest of the engine
//! relies on (plain relative paths, consistent lengths, exact-bytes info hash). Paths that
//! other clients accept are sanitised rather than refused, so the checks below are on the
//! result: plain components, no two files (padding aside) at one path or one under another,
//! symlink targets inside the torrent, v2 files on piece boundaries.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use ringtorrent::bencode;
use ringtorrent::metainfo::{Info, Magnet, Torrent};

fuzz_target!(|data: &[u8]| {
    if let Ok(node) = bencode::decode(data) {
        // Spans are exact: the root covers the whole input.
        assert_eq!(node.span, 0..data.len());
        let again = node.to_owned_value().to_bytes();
        assert!(bencode::decode(&again).is_ok());
    }
    if let Ok(torrent) = Torrent::from_bytes(data) {
        check(&torrent.info);
        let bare = Info::from_bytes(torrent.info.raw()).expect("the info bytes validate alone");
        assert_eq!(bare.info_hash(), torrent.info_hash());
    }
    if let Ok(info) = Info::from_bytes(data) {
        check(&info);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(magnet) = Magnet::parse(text) {
            let again = Magnet::parse(&magnet.to_uri()).expect("a formatted magnet parses");
            assert_eq!(again.info_hash, magnet.info_hash);
        }
    }
});

fn check(info: &Info) {
    let mut end = 0;
    let mut paths = HashSet::new();
    for file in info.files() {
        assert_eq!(file.offset, end);
        end += file.length;
        for c in &file.path {
            assert!(!c.is_empty() && c != "." && c != "..", "{c:?}");
            assert!(c.len() <= 255, "{c:?}");
            assert!(
                !c.chars()
                    .any(|ch| ch == '/' || ch == '\\' || ch.is_control()),
                "{c:?}"
            );
        }
        if file.attr.symlink {
            assert_eq!(file.length, 0);
        }
        if !file.attr.padding {
            assert!(paths.insert(file.path.clone()), "{:?} twice", file.path);
        }
    }
    for file in info.files().iter().filter(|f| !f.attr.padding) {
        for depth in 1..file.path.len() {
            assert!(
                !paths.contains(&file.path[..depth]),
                "{:?} under a file",
                file.path
            );
        }
        if let Some(target) = &file.symlink_target {
            let known = info.files().iter().any(|f| {
                !f.attr.padding
                    && f.path.len() >= target.len()
                    && f.path[..target.len()] == target[..]
            });
            assert!(known, "{target:?} is not in the torrent");
        }
    }
    assert_eq!(end, info.total_len());
    let lengths = info.lengths();
    // v2: every tree file is a real file of the layout, starting on a piece boundary, its
    // pieces inside the payload; a kept piece layer has one hash per piece.
    assert_eq!(info.version().has_v1(), !info.piece_hashes().is_empty());
    if let Some(v2) = info.v2() {
        for f in &v2.files {
            let entry = &info.files()[f.file];
            assert!(!entry.attr.padding && entry.length == f.length);
            assert_eq!(entry.offset % u64::from(lengths.piece_len()), 0);
            assert!(f.first_piece + f.piece_count <= lengths.piece_count());
            if let Some(layer) = &f.layer {
                assert_eq!(layer.len(), f.piece_count as usize);
            }
        }
        for piece in lengths.pieces() {
            let _ = info.piece_hash_v2(piece);
        }
    }
    for piece in lengths.pieces() {
        let covered: u64 = info.piece_spans(piece).map(|s| s.len).sum();
        assert_eq!(covered, u64::from(lengths.len_of(piece)));
    }
}
