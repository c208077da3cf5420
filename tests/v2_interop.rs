//! BEP 52 torrents between ringtorrent and libtorrent 2.0.8 on loopback, both directions,
//! both I/O backends, a folder and a single file each.
//!
//! Hybrid (v1 and v2 in one info dictionary, `create --hybrid`): ringtorrent runs it on the
//! v1 wire under its v1 info hash, with the padding files that put every file on a piece
//! boundary never written; libtorrent, which knows the torrent under both hashes, swaps v1
//! pieces with it.
//!
//! v2 only (`create --v2`): the swarm is named by the v2 hash truncated to 20 bytes, and
//! every piece is verified by its SHA-256 merkle hash against the piece layers.
//!
//! Every file is compared byte for byte, no padding file may appear in a download, `check`
//! agrees with the download, and a seed started on it resumes from the download's resume
//! data without a check.

mod common;

use std::path::Path;
use std::time::Duration;

use common::interop::{self, Prepared};
use common::{info_json, ringtorrent, run_bounded, run_ok, write_payload, write_tree};

/// A folder (files smaller than a piece, an empty file, nested folders, so several padding
/// files) or a single file, as a hybrid torrent.
fn prepare(work: &Path, label: &str, folder: bool, seed: u64, mode: &str) -> Prepared {
    let data = work.join(format!("{label}-data"));
    let input = if folder {
        let root = data.join(label);
        write_tree(&root);
        write_payload(&root.join("big/part.bin"), 600_001, seed);
        root
    } else {
        let file = data.join(format!("{label}.bin"));
        write_payload(&file, 1_000_003, seed);
        file
    };
    let torrent = work.join(format!("{label}.torrent"));
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(&input)
            .arg(format!("--{mode}"))
            .args(["-l", "64K", "-o"])
            .arg(&torrent),
    );
    let info = info_json(&torrent);
    assert_eq!(info["meta_version"], mode, "{info}");
    let padding = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["padding"] == true)
        .count();
    // A hybrid's single file has no padding (v1 `length`); a v2 single file is padded to its
    // last piece's end, as libtorrent pads it.
    assert_eq!(padding > 0, folder || mode == "v2", "{info}");
    Prepared {
        label: label.to_owned(),
        torrent,
        data,
    }
}

fn no_padding_written(out: &Path) -> Result<(), String> {
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == ".pad") {
                return Err(format!("padding written: {}", p.display()));
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

fn cases(work: &Path, tag: &str, seed: u64, mode: &str) -> Vec<(Prepared, &'static str)> {
    let mut all = Vec::new();
    for (i, io) in interop::BACKENDS.into_iter().enumerate() {
        for (j, folder) in [true, false].into_iter().enumerate() {
            let shape = if folder { "tree" } else { "single" };
            let label = format!("{tag}-{mode}-{shape}-{io}");
            let seed = seed + (i * 2 + j) as u64;
            all.push((prepare(work, &label, folder, seed, mode), io));
        }
    }
    all
}

#[test]
fn libtorrent_leeches_a_hybrid_from_ringtorrent_on_both_backends() {
    libtorrent_leeches(500, "hybrid");
}

#[test]
fn libtorrent_leeches_a_v2_torrent_from_ringtorrent_on_both_backends() {
    libtorrent_leeches(550, "v2");
}

#[test]
fn ringtorrent_leeches_a_hybrid_from_libtorrent_on_both_backends() {
    ringtorrent_leeches(600, "hybrid");
}

#[test]
fn ringtorrent_leeches_a_v2_torrent_from_libtorrent_on_both_backends() {
    ringtorrent_leeches(650, "v2");
}

fn libtorrent_leeches(seed: u64, mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let all = cases(work, "to", seed, mode);
    interop::libtorrent_leeches_all(&all, work);
}

fn ringtorrent_leeches(seed: u64, mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let all = cases(work, "from", seed, mode);
    let jobs = all
        .iter()
        .map(|(p, io)| {
            (
                format!("libtorrent -> ringtorrent {} --io {io}", p.label),
                {
                    move || {
                        let (_seed, port) = interop::lt_seed(p, &[], work);
                        let out = work.join(format!("{}-out", p.label));
                        let peer = format!("127.0.0.1:{port}");
                        let result = interop::rt_download(p, &out, io, &[peer], &[], work);
                        interop::download_ok(&p.label, &result)?;
                        interop::compare_trees(&p.data, &out)?;
                        no_padding_written(&out)?;
                        // `check` agrees: by SHA1 over the padded payload for a hybrid, by SHA-256
                        // merkle hashes per piece for v2.
                        let check = run_bounded(
                            ringtorrent().arg("check").arg(&p.torrent).arg(&out),
                            Duration::from_secs(60),
                        );
                        if !check.status.success() {
                            return Err(format!(
                                "check failed: {}",
                                String::from_utf8_lossy(&check.stdout)
                            ));
                        }
                        // The download's resume data lets a seed start without a check.
                        let state = work.join(format!("rt-leech-state-{}-{io}", p.label));
                        let seed = run_bounded(
                            ringtorrent()
                                .arg("seed")
                                .arg(&p.torrent)
                                .arg(&out)
                                .args(["--port", "0", "--bind", "127.0.0.1", "--io", io])
                                .args(["--duration", "1", "--state-dir"])
                                .arg(&state),
                            Duration::from_secs(60),
                        );
                        let text = String::from_utf8_lossy(&seed.stdout).into_owned()
                            + &String::from_utf8_lossy(&seed.stderr);
                        if !text.contains("resumed:") || text.contains("checked existing data") {
                            return Err(format!("the seed did not resume:\n{text}"));
                        }
                        Ok(())
                    }
                },
            )
        })
        .collect();
    interop::run_all(jobs);
}

/// A `btmh`-only magnet link for `p` (its full SHA-256 v2 hash as a multihash, `1220...`).
fn btmh_magnet(p: &Prepared) -> String {
    let info = info_json(&p.torrent);
    let v2 = info["info_hash_v2"].as_str().unwrap().to_owned();
    assert_eq!(v2.len(), 64, "{info}");
    format!("magnet:?xt=urn:btmh:1220{v2}&dn={}", p.label)
}

/// libtorrent joins from a `btmh`-only magnet link (BEP 52 and 9): it fetches the info
/// dictionary from the ringtorrent seed by ut_metadata, then every file's piece layer by
/// `hash request`s, which ringtorrent answers from its piece layers with proofs up to each
/// file's root; then the data, byte-exact. v2-only torrents run under the truncated v2 hash;
/// a hybrid runs under its v1 hash and is reached by the truncated v2 hash too.
#[test]
fn libtorrent_fetches_metadata_and_piece_layers_by_v2_magnet_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut all = cases(work, "btmh", 700, "v2");
    all.extend(cases(work, "btmh", 710, "hybrid"));
    let jobs = all
        .iter()
        .map(|(p, io)| {
            (
                format!("ringtorrent -> libtorrent by btmh {} --io {io}", p.label),
                {
                    move || {
                        let magnet = btmh_magnet(p);
                        let (seed, addr) = interop::rt_seed(p, io, &[], work);
                        let out = work.join(format!("{}-out", p.label));
                        let result = run_bounded(
                            std::process::Command::new("/usr/bin/python3")
                                .arg(common::support("lt_leech.py"))
                                .arg(&magnet)
                                .arg(&out)
                                .args(["--magnet", "--peer", &addr, "--timeout", "60"]),
                            Duration::from_secs(90),
                        );
                        if !result.status.success() {
                            return Err(format!(
                                "lt_leech.py --magnet failed: {}\n{}",
                                String::from_utf8_lossy(&result.stderr),
                                seed.log()
                            ));
                        }
                        interop::compare_trees(&p.data, &out)
                    }
                },
            )
        })
        .collect();
    interop::run_all(jobs);
}

/// ringtorrent downloads from a `btmh`-only magnet link (BEP 52 and 9) with a libtorrent
/// seed: the info dictionary by ut_metadata, checked by SHA-256 against the truncated v2
/// hash, then for a v2-only torrent every file's piece layer by `hash request`s, each answer
/// checked by its proof against the file's root, before the download starts; then the data,
/// byte-exact, and `check` agrees. A hybrid's link with only `btmh` works too (it runs on
/// its v1 pieces once the dictionary is in).
#[test]
fn ringtorrent_downloads_a_btmh_magnet_from_libtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut all = cases(work, "rtmh", 750, "v2");
    all.extend(cases(work, "rtmh", 760, "hybrid"));
    let jobs = all
        .iter()
        .map(|(p, io)| {
            (
                format!("libtorrent -> ringtorrent by btmh {} --io {io}", p.label),
                {
                    move || {
                        let magnet = btmh_magnet(p);
                        let (_seed, port) = interop::lt_seed(p, &[], work);
                        let out = work.join(format!("{}-out", p.label));
                        let result = run_bounded(
                            ringtorrent()
                                .arg("download")
                                .arg(&magnet)
                                .arg("-o")
                                .arg(&out)
                                .args(["--bind", "127.0.0.1", "--io", io, "--timeout", "90"])
                                .arg("--state-dir")
                                .arg(work.join(format!("rt-state-{}", p.label)))
                                .args(["--peer", &format!("127.0.0.1:{port}")]),
                            Duration::from_secs(110),
                        );
                        interop::download_ok(&p.label, &result)?;
                        interop::compare_trees(&p.data, &out)?;
                        no_padding_written(&out)?;
                        let check = run_bounded(
                            ringtorrent().arg("check").arg(&p.torrent).arg(&out),
                            Duration::from_secs(60),
                        );
                        if !check.status.success() {
                            return Err(format!(
                                "check failed: {}",
                                String::from_utf8_lossy(&check.stdout)
                            ));
                        }
                        Ok(())
                    }
                },
            )
        })
        .collect();
    interop::run_all(jobs);
}
