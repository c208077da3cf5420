//! `ringtorrent create --v2` and `--hybrid` against libtorrent 2.0.8's `create_torrent` on the
//! same files and piece length (tests/support/lt_create.py): the same info hashes (so the same
//! info dictionary, byte for byte), the same piece layers, and libtorrent reads ours with the
//! hashes we print.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{info_json, ringtorrent, run_ok, support, write_payload, write_tree};
use ringtorrent::metainfo::merkle::Hash;
use ringtorrent::metainfo::{MetaVersion, Torrent};

fn lt_create(input: &Path, out: &Path, piece_len: u64, mode: &str) -> Torrent {
    run_ok(
        Command::new("/usr/bin/python3")
            .arg(support("lt_create.py"))
            .arg(input)
            .arg(out)
            .arg("--piece-length")
            .arg(piece_len.to_string())
            .arg("--mode")
            .arg(mode),
    );
    Torrent::from_bytes(&std::fs::read(out).unwrap()).unwrap()
}

fn ours(input: &Path, out: &Path, piece_len: u64, mode: &str) -> (Torrent, String) {
    let stdout = run_ok(
        ringtorrent()
            .arg("create")
            .arg(input)
            .arg(format!("--{mode}"))
            .arg("--piece-length")
            .arg(piece_len.to_string())
            .arg("--no-date")
            .arg("-o")
            .arg(out),
    );
    (
        Torrent::from_bytes(&std::fs::read(out).unwrap()).unwrap(),
        stdout,
    )
}

fn lt_info(torrent: &Path) -> serde_json::Value {
    let out = run_ok(
        Command::new("/usr/bin/python3")
            .arg(support("lt_info.py"))
            .arg(torrent),
    );
    serde_json::from_str(&out).unwrap()
}

fn compare(input: &Path, work: &Path, piece_len: u64, mode: &str) {
    let tag = format!("{mode}-{piece_len}");
    let theirs_path = work.join(format!("lt-{tag}.torrent"));
    let mine_path = work.join(format!("rt-{tag}.torrent"));
    let theirs = lt_create(input, &theirs_path, piece_len, mode);
    let (mine, stdout) = ours(input, &mine_path, piece_len, mode);
    let (ti, mi) = (&theirs.info, &mine.info);
    let expect = if mode == "v2" {
        MetaVersion::V2
    } else {
        MetaVersion::Hybrid
    };
    assert_eq!(mi.version(), expect, "{tag}");
    assert_eq!(ti.version(), expect, "{tag}");
    let v2 = mi.info_hash_v2().unwrap();
    assert_eq!(ti.info_hash_v2(), Some(v2), "{tag}: v2 info hash");
    assert_eq!(ti.info_hash(), mi.info_hash(), "{tag}: info hash");
    assert_eq!(ti.raw(), mi.raw(), "{tag}: info dictionary");
    assert!(stdout.contains(&format!("info hash v2: {v2}")), "{stdout}");
    // Piece layers: the same files need one, with the same hashes.
    let layers = |t: &Torrent| -> Vec<(Option<Hash>, Option<Vec<Hash>>)> {
        let v2 = t.info.v2().unwrap();
        assert!(v2.has_piece_layers());
        v2.files
            .iter()
            .map(|f| (f.pieces_root, f.layer.clone()))
            .collect()
    };
    let mine_layers = layers(&mine);
    assert_eq!(layers(&theirs), mine_layers, "{tag}: piece layers");
    assert!(
        mine_layers
            .iter()
            .any(|(_, l)| l.as_ref().is_some_and(|l| l.len() > 1)),
        "{tag}: some file has a piece layer"
    );
    // libtorrent reads ours with the hashes and layout we state.
    let lt = lt_info(&mine_path);
    assert_eq!(lt["info_hash_v2"], v2.to_hex(), "{tag}");
    let rt = info_json(&mine_path);
    assert_eq!(rt["info_hash_v2"], v2.to_hex(), "{tag}");
    assert_eq!(lt["info_hash"], rt["info_hash"], "{tag}");
    assert_eq!(lt["num_pieces"], rt["piece_count"], "{tag}");
    let lt_files: Vec<(String, u64)> = lt["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let rt_files: Vec<(String, u64)> = mi
        .files()
        .iter()
        .map(|f| (f.display_path(), f.length))
        .collect();
    assert_eq!(lt_files, rt_files, "{tag}: layout");
}

#[test]
fn folder_matches_libtorrent() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tree");
    write_tree(&input);
    // Exactly one piece, exactly one block, several pieces with a short tail, executable.
    write_payload(&input.join("one-piece"), 65536, 11);
    write_payload(&input.join("one-block"), 16384, 12);
    write_payload(&input.join("bin/tool"), 200_000, 13);
    std::fs::set_permissions(
        input.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for mode in ["v2", "hybrid"] {
        for piece_len in [16384, 65536] {
            compare(&input, dir.path(), piece_len, mode);
        }
    }
}

#[test]
fn single_file_matches_libtorrent() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("single.bin");
    write_payload(&input, 1_000_003, 21);
    for mode in ["v2", "hybrid"] {
        compare(&input, dir.path(), 32768, mode);
    }
}

#[test]
fn v1_stays_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("f.bin");
    write_payload(&input, 100_000, 31);
    let out = dir.path().join("f.torrent");
    run_ok(ringtorrent().arg("create").arg(&input).arg("-o").arg(&out));
    let t = Torrent::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(t.info.version(), MetaVersion::V1);
    assert_eq!(t.info.info_hash_v2(), None);
    let json = info_json(&out);
    assert!(json["info_hash_v2"].is_null());
    assert_eq!(json["info_hash"], t.info_hash().to_hex());
}

/// `check` verifies v2-only data by SHA-256 merkle hashes per piece: libtorrent's torrent of
/// the files checks complete, and one changed byte fails exactly its piece.
#[test]
fn check_verifies_v2_data() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tree");
    write_tree(&input);
    let torrent = dir.path().join("lt.torrent");
    let t = lt_create(&input, &torrent, 16384, "v2");
    let check = |what: &str| {
        let out = common::run_bounded(
            ringtorrent()
                .arg("check")
                .arg("--json")
                .arg(&torrent)
                .arg(dir.path()),
            std::time::Duration::from_secs(60),
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), json)
    };
    let (code, json) = check("intact");
    assert_eq!(code, Some(0), "{json}");
    // `a/c/deep/x.bin` is 300 000 bytes: 19 pieces of 16 KiB. Change a byte of its 3rd.
    let file = input.join("a/c/deep/x.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2 * 16384 + 5] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let (code, json) = check("corrupt");
    assert_eq!(code, Some(3), "{json}");
    let v2 = t.info.v2().unwrap();
    let x = v2
        .files
        .iter()
        .find(|f| t.info.files()[f.file].display_path() == "tree/a/c/deep/x.bin")
        .unwrap();
    assert_eq!(
        json["failed_pieces"],
        serde_json::json!([x.first_piece + 2]),
        "{json}"
    );
    assert_eq!(
        json["pieces_complete"],
        json["piece_count"].as_u64().unwrap() - 1
    );
}
