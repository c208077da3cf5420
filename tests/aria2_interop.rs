//! Transfers between ringtorrent and aria2 1.36 (Debian's `aria2`, installed by
//! scripts/test.sh), both directions, every case of `common::interop::CASES`, both I/O
//! backends: sixteen transfers, run at once. Every payload is compared byte for byte, every
//! process is ended by PID, and everything stays on 127.0.0.1. aria2 must be given its port:
//! it counts as started once it is seen listening there itself, else it starts again on
//! another.
//!
//! aria2 runs without DHT, PEX or local peer discovery, its sockets bound to 127.0.0.1. It has
//! no option to dial a given peer, so ringtorrent dials it in both directions: a seed with
//! `--peer` (aria2 listens as soon as it starts), a leecher with `--peer` once the aria2 seed
//! listens (it listens only after checking its data).

mod common;

use std::path::Path;
use std::time::Duration;

use common::interop::{
    aria2, compare_trees, download_ok, prepare, rt_download, rt_seed, run_all, Case, BACKENDS,
    CASES,
};
use common::start_listening;

/// How long aria2 may take to listen once started (the seed checks its data first).
const LIMIT: Duration = Duration::from_secs(30);

/// Every case on both backends, each as its own job with its own payload.
fn jobs<'a>(
    work: &'a Path,
    direction: &str,
    job: impl Fn(&'a Path, &Case, &'static str, u64) -> Result<(), String> + Copy + Send + 'a,
) -> Vec<(String, impl FnOnce() -> Result<(), String> + Send + 'a)> {
    let mut jobs = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        for (j, io) in BACKENDS.into_iter().enumerate() {
            let seed = 100 + (i * 2 + j) as u64;
            jobs.push((format!("{direction} {} --io {io}", case.name), move || {
                job(work, case, io, seed)
            }));
        }
    }
    jobs
}

#[test]
fn aria2_leeches_every_case_from_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    run_all(jobs(
        dir.path(),
        "ringtorrent -> aria2",
        |work, case, io, seed| {
            let p = prepare(work, case, &format!("to-aria2-{io}"), seed);
            let out = work.join(format!("{}-out", p.label));
            let log = work.join(format!("{}-aria2.log", p.label));
            let (mut leech, port) = start_listening("aria2c leecher", &log, LIMIT, |port| {
                let mut cmd = aria2(port, &out);
                cmd.arg("--seed-time=0").arg(&p.torrent);
                cmd
            })?;
            let (seed, _) = rt_seed(&p, io, &[format!("127.0.0.1:{port}")], work);
            match leech.wait_exit(Duration::from_secs(90)) {
                None => Err(format!(
                    "aria2 did not finish in 90 s\n{}\n{}",
                    leech.log(),
                    seed.log()
                )),
                Some(status) if !status.success() => Err(format!(
                    "aria2 failed ({status})\n{}\n{}",
                    leech.log(),
                    seed.log()
                )),
                Some(_) => compare_trees(&p.data, &out),
            }
        },
    ));
}

#[test]
fn ringtorrent_leeches_every_case_from_aria2_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    run_all(jobs(
        dir.path(),
        "aria2 -> ringtorrent",
        |work, case, io, seed| {
            let p = prepare(work, case, &format!("from-aria2-{io}"), seed);
            // -V: check the data first (it listens only after that), then seed until stopped.
            let log = work.join(format!("{}-aria2.log", p.label));
            let (seeder, port) = start_listening("aria2c seed", &log, LIMIT, |port| {
                let mut cmd = aria2(port, &p.data);
                cmd.args(["-V", "--seed-ratio=0.0"]).arg(&p.torrent);
                cmd
            })?;
            let out = work.join(format!("{}-out", p.label));
            let result = rt_download(&p, &out, io, &[format!("127.0.0.1:{port}")], &[], work);
            download_ok(&p.label, &result).map_err(|e| format!("{e}\n{}", seeder.log()))?;
            compare_trees(&p.data, &out)
        },
    ));
}
