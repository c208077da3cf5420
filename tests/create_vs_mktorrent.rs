//! `ringtorrent create` must produce exactly mktorrent's `pieces` (and, with the same fields,
//! the same info hash) for the same input and piece length. mktorrent is installed by
//! scripts/test.sh.

mod common;

use std::path::Path;

use common::{ringtorrent, run_bounded, run_ok, write_payload, write_tree};
use ringtorrent::metainfo::Torrent;

/// The bound on one `create` that is expected to fail (it fails at once).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

fn mktorrent(input: &Path, out: &Path, exponent: u32, private: bool) -> Torrent {
    let mut cmd = std::process::Command::new("mktorrent");
    cmd.arg("-l")
        .arg(exponent.to_string())
        .arg("-a")
        .arg("http://127.0.0.1:6969/announce");
    if private {
        cmd.arg("-p");
    }
    cmd.arg("-o").arg(out).arg(input);
    run_ok(&mut cmd);
    Torrent::from_bytes(&std::fs::read(out).unwrap()).unwrap()
}

fn ours(input: &Path, out: &Path, piece_len: u64, private: bool) -> Torrent {
    let mut cmd = ringtorrent();
    cmd.arg("create")
        .arg(input)
        .arg("-a")
        .arg("http://127.0.0.1:6969/announce");
    cmd.arg("--piece-length")
        .arg(piece_len.to_string())
        .arg("-o")
        .arg(out);
    if private {
        cmd.arg("--private");
    }
    let stdout = run_ok(&mut cmd);
    assert!(stdout.contains("info hash:"), "{stdout}");
    Torrent::from_bytes(&std::fs::read(out).unwrap()).unwrap()
}

fn compare(input: &Path, work: &Path, exponent: u32, private: bool) {
    let theirs = mktorrent(
        input,
        &work.join(format!("mk-{exponent}.torrent")),
        exponent,
        private,
    );
    let mine = ours(
        input,
        &work.join(format!("rt-{exponent}.torrent")),
        1 << exponent,
        private,
    );
    let paths = |t: &Torrent| {
        t.info
            .files()
            .iter()
            .map(|f| (f.display_path(), f.length))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths(&mine),
        paths(&theirs),
        "file order differs at 2^{exponent}"
    );
    assert_eq!(
        mine.info.piece_hashes(),
        theirs.info.piece_hashes(),
        "pieces differ at 2^{exponent}"
    );
    assert_eq!(mine.info.is_private(), theirs.info.is_private());
    assert_eq!(
        mine.info_hash(),
        theirs.info_hash(),
        "info hash differs at 2^{exponent}"
    );
}

#[test]
fn single_odd_sized_file_matches_mktorrent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odd size.bin");
    write_payload(&file, 1_234_567, 42);
    for exponent in [15, 18, 22] {
        compare(&file, dir.path(), exponent, false);
    }
}

#[test]
fn folder_matches_mktorrent_including_order_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write_tree(&tree);
    for exponent in [15, 18] {
        compare(&tree, dir.path(), exponent, false);
    }
    compare(&tree, dir.path(), 16, true);
}

#[test]
fn create_refuses_bad_input_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run_bounded(
        ringtorrent()
            .arg("create")
            .arg(&empty)
            .current_dir(dir.path()),
        LIMIT,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no files"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = run_bounded(
        ringtorrent().arg("create").arg(dir.path().join("nope")),
        LIMIT,
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No such file"));

    let file = dir.path().join("f");
    write_payload(&file, 10, 1);
    let bad_len = run_bounded(
        ringtorrent()
            .arg("create")
            .arg(&file)
            .args(["--piece-length", "3000"]),
        LIMIT,
    );
    assert!(!bad_len.status.success());
    assert!(String::from_utf8_lossy(&bad_len.stderr).contains("power of two"));

    // The output is never overwritten silently.
    let target = dir.path().join("t.torrent");
    std::fs::write(&target, b"keep").unwrap();
    let clash = run_bounded(
        ringtorrent()
            .arg("create")
            .arg(&file)
            .arg("-o")
            .arg(&target),
        LIMIT,
    );
    assert!(!clash.status.success());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

#[test]
fn trackers_tiers_and_no_date_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    write_payload(&file, 100_000, 9);
    let make = |out: &str| {
        let out = dir.path().join(out);
        run_ok(
            ringtorrent()
                .arg("create")
                .arg(&file)
                .args([
                    "-a",
                    "http://a/announce,http://b/announce",
                    "-a",
                    "udp://c:1/announce",
                    "--no-date",
                ])
                .arg("-o")
                .arg(&out),
        );
        std::fs::read(out).unwrap()
    };
    let first = make("1.torrent");
    assert_eq!(
        first,
        make("2.torrent"),
        "--no-date output must be byte-for-byte reproducible"
    );
    let t = Torrent::from_bytes(&first).unwrap();
    assert_eq!(
        t.trackers,
        vec![
            vec!["http://a/announce".to_string(), "http://b/announce".into()],
            vec!["udp://c:1/announce".into()]
        ]
    );
    assert_eq!(t.creation_date, None);
}
