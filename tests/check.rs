//! `ringtorrent check` on a 64 MiB download: complete, then one corrupted byte (exactly that
//! piece and its file are named), then a missing file; the exit status says which.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use common::{ringtorrent, run_bounded, write_payload};
use ringtorrent::metainfo::create::{create, CreateOptions};
use serde_json::Value;

const PIECE: u64 = 256 * 1024;

fn check_json(torrent: &Path, dir: &Path) -> (Option<i32>, Value) {
    let out = run_bounded(
        ringtorrent()
            .arg("check")
            .arg(torrent)
            .arg(dir)
            .arg("--json")
            .args(["--threads", "2"]),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

fn file<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

#[test]
fn check_names_exactly_the_corrupted_piece_and_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dl = tmp.path().join("dl");
    let top = dl.join("album");
    // 64 MiB in three files whose boundaries fall inside pieces.
    write_payload(&top.join("one.bin"), 20 * 1024 * 1024 + 1000, 1);
    write_payload(&top.join("sub/two.bin"), 24 * 1024 * 1024 - 1000, 2);
    write_payload(&top.join("three.bin"), 20 * 1024 * 1024, 3);
    let made = create(
        &CreateOptions {
            path: top.clone(),
            piece_len: Some(PIECE),
            ..Default::default()
        },
        &AtomicU64::new(0),
    )
    .unwrap();
    let torrent = tmp.path().join("album.torrent");
    std::fs::write(&torrent, &made.bytes).unwrap();
    let pieces = made.torrent.info.lengths().piece_count();
    assert_eq!(pieces, 256);

    let (code, report) = check_json(&torrent, &dl);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["complete"], true);
    assert_eq!(report["pieces_complete"], 256);

    // One byte in the middle of two.bin. Files are in mktorrent's order (one, sub/two,
    // three), so two.bin starts at 20 MiB + 1000 in the payload.
    let at_in_file: u64 = 5 * 1024 * 1024 + 12_345;
    let payload_offset = 20 * 1024 * 1024 + 1000 + at_in_file;
    let two = top.join("sub/two.bin");
    let mut bytes = std::fs::read(&two).unwrap();
    bytes[at_in_file as usize] ^= 0x01;
    std::fs::write(&two, bytes).unwrap();

    let (code, report) = check_json(&torrent, &dl);
    assert_eq!(code, Some(3), "incomplete must exit 3: {report}");
    assert_eq!(report["complete"], false);
    let bad = payload_offset / PIECE;
    assert_eq!(report["failed_pieces"], serde_json::json!([bad]));
    assert_eq!(report["missing_pieces"], serde_json::json!([]));
    assert_eq!(file(&report, "one.bin")["status"], "complete");
    assert_eq!(file(&report, "three.bin")["status"], "complete");
    let two = file(&report, "two.bin");
    assert_eq!(two["status"], "incomplete");
    assert_eq!(
        two["pieces_complete"].as_u64().unwrap() + 1,
        two["pieces_total"].as_u64().unwrap()
    );

    // The text form names the piece and the file too.
    let out = run_bounded(
        ringtorrent().arg("check").arg(&torrent).arg(&dl),
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text.contains(&format!("failed pieces (hash mismatch): {bad}\n")),
        "{text}"
    );
    assert!(
        text.contains("incomplete") && text.contains("sub/two.bin"),
        "{text}"
    );

    // A missing file: its pieces are missing, the file is named missing, nothing created.
    std::fs::remove_file(top.join("three.bin")).unwrap();
    let (code, report) = check_json(&torrent, &dl);
    assert_eq!(code, Some(3));
    assert_eq!(file(&report, "three.bin")["status"], "missing");
    let missing = report["missing_pieces"].as_array().unwrap();
    assert_eq!(missing.len(), 80, "three.bin is 80 whole pieces");
    assert_eq!(missing[0], 176);
    assert!(!top.join("three.bin").exists());
}

#[test]
fn check_errors_are_clear_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_bounded(
        ringtorrent()
            .arg("check")
            .arg(tmp.path().join("nope.torrent"))
            .arg(tmp.path()),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("nope.torrent"),
        "{err}"
    );
}
