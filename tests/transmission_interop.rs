//! Transfers between ringtorrent and Transmission 3.00 (Debian's `transmission-daemon`,
//! driven with `transmission-remote` from `transmission-cli`, both installed by
//! scripts/test.sh), both directions, every case of `common::interop::CASES`, both I/O
//! backends. Each test runs one daemon holding all eight of its torrents at once, so
//! Transmission's ten-second pulses (it decides interest and unchokes on them) are waited
//! out once per test rather than once per transfer. Every payload is compared byte for byte,
//! the daemon and every other process are ended by PID, and everything stays on 127.0.0.1.
//! The daemon must be given its ports: it counts as started once it is seen listening on
//! them itself, else it starts again on others.
//!
//! Transmission 3.00 never creates zero-length files, so its downloads are compared without
//! them (every other file byte for byte); ringtorrent's downloads are compared whole.
//!
//! Transmission never dials peers on 127.x (it counts them as bogus addresses), so
//! ringtorrent dials it in both directions: a seed with `--peer` once the torrent is added,
//! a leecher with `--peer` once Transmission has checked its data.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::interop::{
    compare_trees, compare_trees_but_empty_files, compare_within, download_ok, prepare,
    rt_download, rt_seed, run_all, Prepared, Proc, BACKENDS, CASES,
};
use common::transmission::Transmission;

/// The name Transmission shows for a prepared torrent.
fn name_of(p: &Prepared) -> String {
    common::info_json(&p.torrent)["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn hash_of(p: &Prepared) -> String {
    common::info_json(&p.torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every case on both backends, each with its own payload; `tag` tells the directions apart.
fn prepare_all(work: &Path, tag: &str) -> Vec<(Prepared, &'static str)> {
    let mut all = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        for (j, io) in BACKENDS.into_iter().enumerate() {
            let seed = 200 + (i * 2 + j) as u64 + if tag == "to" { 50 } else { 0 };
            all.push((prepare(work, case, &format!("{tag}-tr-{io}"), seed), io));
        }
    }
    all
}

#[test]
fn transmission_leeches_every_case_from_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let tr = Transmission::start(work, 1);
    let all = prepare_all(work, "to");
    let outs: Vec<PathBuf> = all
        .iter()
        .map(|(p, _)| work.join(format!("{}-out", p.label)))
        .collect();
    for ((p, _), out) in all.iter().zip(&outs) {
        std::fs::create_dir_all(out).unwrap();
        tr.add(&p.torrent, out);
    }
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    // Transmission drops an incoming handshake while another one from the same IP is in
    // progress, so the seeds start one after another, each once the previous one is in.
    let mut seeds = Vec::new();
    for (p, io) in &all {
        seeds.push(rt_seed(p, io, std::slice::from_ref(&peer), work).0);
        tr.wait_connected(
            &hash_of(p),
            &AtomicBool::new(false),
            Duration::from_secs(40),
        )
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.label, seeds.last().unwrap().log()));
    }
    let names: Vec<String> = all.iter().map(|(p, _)| name_of(p)).collect();
    if let Err(e) = tr.wait_complete(&names, Duration::from_secs(100)) {
        let logs: Vec<String> = seeds.iter().map(Proc::log).collect();
        panic!("{e}\n{}\n{}", tr.proc.log(), logs.join("\n"));
    }
    let jobs = all
        .iter()
        .zip(&outs)
        .map(|((p, io), out)| {
            (
                format!("ringtorrent -> transmission {} --io {io}", p.label),
                {
                    move || {
                        compare_within(
                            &p.data,
                            out,
                            compare_trees_but_empty_files,
                            Duration::from_secs(20),
                        )
                    }
                },
            )
        })
        .collect();
    run_all(jobs);
}

#[test]
fn ringtorrent_leeches_every_case_from_transmission_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let tr = Transmission::start(work, 1);
    let all = prepare_all(work, "from");
    for (p, _) in &all {
        tr.add(&p.torrent, &p.data);
    }
    let names: Vec<String> = all.iter().map(|(p, _)| name_of(p)).collect();
    tr.wait_complete(&names, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Transmission did not verify its data: {e}"));
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    // The downloads start one after another, each once Transmission has the previous one
    // connected (it drops a second incoming handshake from the same IP while one is on).
    let done: Vec<AtomicBool> = all.iter().map(|_| AtomicBool::new(false)).collect();
    let jobs = all
        .iter()
        .enumerate()
        .map(|(i, (p, io))| {
            let peer = peer.clone();
            let (tr, all, done) = (&tr, &all, &done);
            (
                format!("transmission -> ringtorrent {} --io {io}", p.label),
                {
                    move || {
                        if i > 0 {
                            let previous = &hash_of(&all[i - 1].0);
                            tr.wait_connected(previous, &done[i - 1], Duration::from_secs(40))?;
                        }
                        let out = work.join(format!("{}-out", p.label));
                        let result = rt_download(p, &out, io, &[peer], &[], work);
                        done[i].store(true, Ordering::SeqCst);
                        download_ok(&p.label, &result)
                            .map_err(|e| format!("{e}\n{}", tr.proc.log()))?;
                        compare_trees(&p.data, &out)
                    }
                },
            )
        })
        .collect();
    run_all(jobs);
}
