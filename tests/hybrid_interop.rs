//! Hybrid torrents (BEP 52: v1 and v2 in one info dictionary, made by `create --hybrid`)
//! between ringtorrent and libtorrent 2.0.8 on loopback, both directions, both I/O backends.
//! ringtorrent runs a hybrid on the v1 wire under its v1 info hash, with the padding files
//! that put every file on a piece boundary never written: libtorrent, which knows the torrent
//! under both hashes, swaps v1 pieces with it. Every file is compared byte for byte, and no
//! padding file may appear in a download.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::interop::{self, Prepared};
use common::{info_json, ringtorrent, run_bounded, run_ok, support, write_payload, write_tree};

/// A folder (files smaller than a piece, an empty file, nested folders, so several padding
/// files) or a single file, as a hybrid torrent.
fn prepare(work: &Path, label: &str, folder: bool, seed: u64) -> Prepared {
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
            .args(["--hybrid", "-l", "64K", "-o"])
            .arg(&torrent),
    );
    let info = info_json(&torrent);
    assert_eq!(info["meta_version"], "hybrid", "{info}");
    let padding = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["padding"] == true)
        .count();
    assert_eq!(padding > 0, folder, "{info}");
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

fn cases(work: &Path, tag: &str, seed: u64) -> Vec<(Prepared, &'static str)> {
    let mut all = Vec::new();
    for (i, io) in interop::BACKENDS.into_iter().enumerate() {
        for (j, folder) in [true, false].into_iter().enumerate() {
            let label = format!("{tag}-{}-{io}", if folder { "tree" } else { "single" });
            all.push((prepare(work, &label, folder, seed + (i * 2 + j) as u64), io));
        }
    }
    all
}

#[test]
fn libtorrent_leeches_a_hybrid_from_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let all = cases(work, "to", 500);
    let jobs = all
        .iter()
        .map(|(p, io)| {
            (
                format!("ringtorrent -> libtorrent {} --io {io}", p.label),
                {
                    move || {
                        let (seed, addr) = interop::rt_seed(p, io, &[], work);
                        let out = work.join(format!("{}-out", p.label));
                        let result = run_bounded(
                            Command::new("/usr/bin/python3")
                                .arg(support("lt_leech.py"))
                                .arg(&p.torrent)
                                .arg(&out)
                                .args(["--peer", &addr, "--timeout", "60"]),
                            Duration::from_secs(90),
                        );
                        if !result.status.success() {
                            return Err(format!(
                                "lt_leech.py failed: {}\n{}",
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

#[test]
fn ringtorrent_leeches_a_hybrid_from_libtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let all = cases(work, "from", 600);
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
                        // `check` agrees, by SHA1 (v1 pieces) over the padded payload.
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
