//! A mixed swarm on 127.0.0.1: one libtorrent seed, two ringtorrent leechers (one on each
//! I/O backend) and one aria2 leecher, all finishing with byte-identical data. Nobody has
//! the whole payload but the seed, so the leechers trade pieces with each other as they get
//! them: aria2 announces its pieces with whole `bitfield`s and `have all`, which ringtorrent
//! must take as `have`s. Every process is ended by PID.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::interop::{
    compare_trees, download_ok, free_port, lt_seed, prepare, rt_download, run_all, wait_listening,
    Case, Layout, Proc,
};

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

    // aria2 listens at once; the seed and both ringtorrent leechers dial it.
    let aria2_port = free_port();
    let aria2_out = work.join("aria2-out");
    let mut aria2 = Proc::spawn(
        "aria2c leecher",
        Command::new("aria2c")
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
            .arg(format!("--listen-port={aria2_port}"))
            .arg(format!("--dir={}", aria2_out.display()))
            .arg(&p.torrent),
        &work.join("aria2.log"),
    );
    assert!(
        wait_listening(aria2_port, Duration::from_secs(20)),
        "{}",
        aria2.log()
    );
    let aria2_addr = format!("127.0.0.1:{aria2_port}");
    let (seed, seed_port) = lt_seed(&p, std::slice::from_ref(&aria2_addr), work);
    let seed_addr = format!("127.0.0.1:{seed_port}");

    // The first ringtorrent leecher listens on a known port so that the second dials it.
    let first_port = free_port();
    let first_addr = format!("127.0.0.1:{first_port}");
    let started = Instant::now();
    let jobs: Vec<(String, Job<'_>)> = vec![
        (
            "ringtorrent leecher 1 (uring)".into(),
            Box::new(|| {
                let out = work.join("rt1-out");
                let port = first_port.to_string();
                let peers = [seed_addr.clone(), aria2_addr.clone()];
                let result = rt_download(&p, &out, "uring", &peers, &["--port", &port], work);
                download_ok("leecher 1", &result)?;
                compare_trees(&p.data, &out)
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
