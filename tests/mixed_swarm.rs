//! A mixed swarm on 127.0.0.1: one libtorrent seed, two ringtorrent leechers (one on each
//! I/O backend) and one aria2 leecher, all finishing with byte-identical data. Nobody has
//! the whole payload but the seed, so the leechers trade pieces with each other as they get
//! them: aria2 announces its pieces with whole `bitfield`s and `have all`, which ringtorrent
//! must take as `have`s. Every process is ended by PID; every port is one its process
//! reported, or (aria2's) one it was seen to listen on.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::interop::{
    compare_trees, download_ok, finished, lt_seed, prepare, rt_download, rt_leech, run_all, Case,
    Layout,
};
use common::{sandboxed, start_listening};

/// How long aria2 may take to listen once started.
const LISTEN_LIMIT: Duration = Duration::from_secs(20);

/// One participant's run to completion and check.
type Job<'a> = Box<dyn FnOnce() -> Result<(), String> + Send + 'a>;

#[test]
fn libtorrent_seed_two_ringtorrent_leechers_and_an_aria2_leecher_all_finish() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let case = Case {
        name: "swarm",
        layout: Layout::Tree(12_000_017),
        piece_len: "64K",
        private: false,
    };
    let p = prepare(work, &case, "mixed", 77);

    // aria2 listens at once; the seed and both ringtorrent leechers dial it. It must be given
    // its port: it is started until it is the one listening on the port it was given.
    let aria2_out = work.join("aria2-out");
    let (mut aria2, aria2_port) = start_listening(
        "aria2c leecher",
        &work.join("aria2.log"),
        LISTEN_LIMIT,
        |port| {
            let mut cmd = Command::new("aria2c");
            sandboxed(&mut cmd)
                .args([
                    "--no-conf=true",
                    "--enable-dht=false",
                    "--enable-dht6=false",
                    "--enable-peer-exchange=false",
                    "--bt-enable-lpd=false",
                    "--interface=127.0.0.1",
                    "--summary-interval=0",
                    "--file-allocation=none",
                    "--seed-time=0",
                    "--bt-stop-timeout=60",
                    "--stop=150",
                ])
                .arg(format!("--listen-port={port}"))
                .arg(format!("--dir={}", aria2_out.display()))
                .arg(&p.torrent);
            cmd
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let aria2_addr = format!("127.0.0.1:{aria2_port}");
    let (seed, seed_port) = lt_seed(&p, std::slice::from_ref(&aria2_addr), work);
    let seed_addr = format!("127.0.0.1:{seed_port}");

    // The first ringtorrent leecher says where it listens, and the second dials it there.
    let started = Instant::now();
    let peers = [seed_addr.clone(), aria2_addr.clone()];
    let (mut first, first_addr) = rt_leech(&p, &work.join("rt1-out"), "uring", &peers, work);
    let jobs: Vec<(String, Job<'_>)> = vec![
        (
            "ringtorrent leecher 1 (uring)".into(),
            Box::new(|| {
                finished("leecher 1", &mut first)?;
                compare_trees(&p.data, &work.join("rt1-out"))
            }),
        ),
        (
            "ringtorrent leecher 2 (epoll)".into(),
            Box::new(|| {
                // It also knows the first leecher, which may already be done and gone (it
                // exits when complete, often within a second): that dial just fails.
                let out = work.join("rt2-out");
                let peers = [seed_addr.clone(), aria2_addr.clone(), first_addr.clone()];
                let mut p2 = p.clone();
                p2.label = format!("{}-2", p.label);
                let result = rt_download(&p2, &out, "epoll", &peers, &[], work);
                download_ok("leecher 2", &result)?;
                compare_trees(&p.data, &out)
            }),
        ),
        (
            "aria2 leecher".into(),
            Box::new(|| {
                match aria2.wait_exit(Duration::from_secs(120)) {
                    None => return Err(format!("aria2 did not finish\n{}", aria2.log())),
                    Some(s) if !s.success() => {
                        return Err(format!("aria2 failed ({s})\n{}", aria2.log()))
                    }
                    Some(_) => {}
                }
                compare_trees(&p.data, &aria2_out)
            }),
        ),
    ];
    run_all(jobs);
    eprintln!("swarm finished in {:.1} s", started.elapsed().as_secs_f64());
    drop(seed);
}
