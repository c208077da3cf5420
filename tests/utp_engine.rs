//! uTP through the engine (`--transport`): a uTP connection is a byte stream to the session
//! like TCP. libtorrent 2.0.8 with TCP switched off both ways (`enable_incoming_tcp` and
//! `enable_outgoing_tcp` false: `lt_seed.py`/`lt_leech.py --utp-only`) leeching from and
//! seeding to ringtorrent on both I/O backends; ringtorrent to ringtorrent with two loops
//! each, on a torrent that loop 1 owns, so every byte crosses the mail between loop 0 (which
//! runs the uTP endpoint) and loop 1 (which runs the torrent); and the default policy
//! (`both`) falling back to TCP for a peer without uTP. With `--transport utp` a ringtorrent
//! refuses TCP connections and dials only over uTP, so a finished transfer went over uTP.
//! Every payload is compared byte for byte; everything stays on 127.0.0.1 and is bounded.

mod common;

use std::path::Path;
use std::time::Duration;

use common::interop::{
    compare_trees, download_ok, libtorrent_leeches_all_with, lt_seed_with, prepare, rt_download,
    rt_seed_with, run_all, Prepared, BACKENDS, CASES,
};

/// libtorrent (uTP only) leeches from a ringtorrent seed that speaks only uTP.
#[test]
fn libtorrent_utp_only_leeches_from_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut all = Vec::new();
    for (i, case) in [CASES[0], CASES[2]].iter().enumerate() {
        for (j, io) in BACKENDS.into_iter().enumerate() {
            all.push((
                prepare(work, case, &format!("lt-{io}"), 300 + (i * 2 + j) as u64),
                io,
            ));
        }
    }
    libtorrent_leeches_all_with(&all, work, &["--transport", "utp"], &["--utp-only"]);
}

/// ringtorrent (uTP only) leeches from libtorrent (uTP only): ringtorrent dials over uTP.
#[test]
fn ringtorrent_utp_only_leeches_from_libtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut all = Vec::new();
    for (i, case) in [CASES[0], CASES[3]].iter().enumerate() {
        for (j, io) in BACKENDS.into_iter().enumerate() {
            all.push((
                prepare(work, case, &format!("rt-{io}"), 310 + (i * 2 + j) as u64),
                io,
            ));
        }
    }
    let jobs = all
        .iter()
        .map(|(p, io)| {
            (
                format!("libtorrent -> ringtorrent over uTP {} --io {io}", p.label),
                move || {
                    let (seed, port) = lt_seed_with(p, &[], &["--utp-only"], work);
                    let out = work.join(format!("{}-out", p.label));
                    let peer = format!("127.0.0.1:{port}");
                    let result = rt_download(p, &out, io, &[peer], &["--transport", "utp"], work);
                    download_ok(&p.label, &result).map_err(|e| format!("{e}\n{}", seed.log()))?;
                    compare_trees(&p.data, &out)
                },
            )
        })
        .collect();
    run_all(jobs);
}

/// The loop of `loops` that owns `p`'s torrent (as `driver::shard::shard_of`: the info hash's
/// first 8 bytes, little-endian, modulo the count).
fn shard(p: &Prepared, loops: u64) -> u64 {
    let hex = common::info_json(&p.torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut head = [0u8; 8];
    for (i, b) in head.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap();
    }
    u64::from_le_bytes(head) % loops
}

/// A case whose torrent loop 1 of 2 owns.
fn prepare_on_loop_1(work: &Path, tag: &str) -> Prepared {
    (0..64)
        .map(|seed| prepare(work, &CASES[1], &format!("{tag}{seed}"), 400 + seed))
        .find(|p| shard(p, 2) == 1)
        .expect("one of 64 info hashes falls on loop 1")
}

/// ringtorrent to ringtorrent over uTP only, two loops each: the seed accepts on loop 0 and
/// hands the connection to loop 1, the leecher's loop 1 dials through loop 0's endpoint.
#[test]
fn ringtorrent_to_ringtorrent_over_utp_with_two_loops_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let all: Vec<(Prepared, &str)> = BACKENDS
        .into_iter()
        .map(|io| (prepare_on_loop_1(work, &format!("two-{io}-")), io))
        .collect();
    let jobs = all
        .iter()
        .map(|(p, io)| {
            (
                format!(
                    "ringtorrent -> ringtorrent over uTP, two loops, {} --io {io}",
                    p.label
                ),
                move || {
                    let extra = ["--transport", "utp", "--threads", "2"];
                    let (seed, addr) = rt_seed_with(p, io, &[], &extra, work);
                    let out = work.join(format!("{}-out", p.label));
                    let result = rt_download(p, &out, io, &[addr], &extra, work);
                    download_ok(&p.label, &result).map_err(|e| format!("{e}\n{}", seed.log()))?;
                    compare_trees(&p.data, &out)
                },
            )
        })
        .collect();
    run_all(jobs);
}

/// The default policy dials uTP first; a libtorrent without uTP (TCP only, `lt_seed.py`'s
/// default) is reached over TCP after the uTP dial fails.
#[test]
fn both_falls_back_to_tcp_for_a_peer_without_utp() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let p = prepare(work, &CASES[0], "fallback", 330);
    let (seed, port) = lt_seed_with(&p, &[], &[], work);
    let out = work.join("fallback-out");
    let peer = format!("127.0.0.1:{port}");
    let result = rt_download(&p, &out, "uring", &[peer], &["--transport", "both"], work);
    download_ok(&p.label, &result)
        .map_err(|e| format!("{e}\n{}", seed.log()))
        .unwrap();
    compare_trees(&p.data, &out).unwrap();
}

/// ringtorrent (uTP only) leeches from Transmission 3.00 with uTP on, on both backends. (It
/// cannot be told to refuse TCP, but ringtorrent neither dials nor accepts TCP here.)
#[test]
fn ringtorrent_utp_only_leeches_from_transmission_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let tr = common::transmission::Transmission::start_with(work, 1, true);
    let all: Vec<(Prepared, &str)> = BACKENDS
        .into_iter()
        .enumerate()
        .map(|(j, io)| {
            (
                prepare(work, &CASES[0], &format!("tr-{io}"), 340 + j as u64),
                io,
            )
        })
        .collect();
    for (p, _) in &all {
        tr.add(&p.torrent, &p.data);
    }
    let names: Vec<String> = all
        .iter()
        .map(|(p, _)| {
            common::info_json(&p.torrent)["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    tr.wait_complete(&names, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Transmission did not verify its data: {e}"));
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    // One after the other: Transmission drops a second connection from one IP while one is on.
    for (p, io) in &all {
        let out = work.join(format!("{}-out", p.label));
        let result = rt_download(
            p,
            &out,
            io,
            std::slice::from_ref(&peer),
            &["--transport", "utp"],
            work,
        );
        download_ok(
            &format!("transmission -> ringtorrent over uTP --io {io}"),
            &result,
        )
        .map_err(|e| format!("{e}\n{}", tr.proc.log()))
        .unwrap();
        compare_trees(&p.data, &out).unwrap();
    }
}
