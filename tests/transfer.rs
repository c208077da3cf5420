//! Real transfers over 127.0.0.1 through the epoll driver, storage and hashing pool: the
//! `demo` command, ringtorrent to ringtorrent between two processes, and ringtorrent leeching
//! from a libtorrent seed. Every started process is ended by PID, has its own state folder and
//! is waited for with a deadline; every payload is compared byte for byte.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    loopback_addr, ringtorrent, run_bounded, run_ok, same_tree, support, write_payload, write_tree,
    Proc, START_LIMIT,
};

/// The bound on a wait for what a transfer says (a progress line, the end).
const LIMIT: Duration = Duration::from_secs(120);

/// Makes a torrent of `path` with `ringtorrent create` and the given piece length.
fn make_torrent(path: &Path, piece_len: &str, out: &Path) {
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(path)
            .args(["-l", piece_len, "-o"])
            .arg(out),
    );
}

/// Starts `ringtorrent seed` named `name` on 127.0.0.1 (any free port) with `extra` flags,
/// its state in `<name>-state` and its log in `<name>.log` beside the torrent; returns it
/// (ended by PID on drop) with the address it listens on.
fn start_seed(torrent: &Path, data: &Path, name: &str, extra: &[&str]) -> (Proc, String) {
    let dir = torrent.parent().unwrap();
    let seed = Proc::watch(
        name,
        ringtorrent()
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "120"])
            .arg("--state-dir")
            .arg(dir.join(format!("{name}-state")))
            .args(extra),
        &dir.join(format!("{name}.log")),
    );
    let addr = loopback_addr(&seed.first_line(START_LIMIT));
    (seed, addr)
}

/// Runs `ringtorrent download` into `out` with `extra` flags (its state in `<out>.state`
/// unless they name a `--state-dir`); fails the test if it fails, and returns what it said on
/// stderr.
fn download(torrent: &Path, out: &Path, extra: &[&str]) -> String {
    let mut cmd = ringtorrent();
    cmd.arg("download")
        .arg(torrent)
        .arg("-o")
        .arg(out)
        .args(["--bind", "127.0.0.1", "--timeout", "90"])
        .args(extra);
    if !extra.contains(&"--state-dir") {
        cmd.arg("--state-dir").arg(out.with_extension("state"));
    }
    let result = run_bounded(&mut cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(result.status.success(), "{stderr}");
    stderr
}

#[test]
fn demo_runs_end_to_end_on_both_backends() {
    for io in ["uring", "epoll"] {
        let out = run_bounded(
            ringtorrent().args([
                "demo",
                "--size",
                "8M",
                "--piece-length",
                "256K",
                "--quiet",
                "--io",
                io,
            ]),
            Duration::from_secs(120),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("verified byte for byte"), "{stdout}");
    }
}

#[test]
fn ringtorrent_seeds_ringtorrent_multi_file_uring_to_epoll() {
    seed_and_download("uring", "epoll");
}

#[test]
fn ringtorrent_seeds_ringtorrent_multi_file_epoll_to_uring() {
    seed_and_download("epoll", "uring");
}

/// A multi-file torrent (odd sizes, empty file, nested folders, pieces crossing files) seeded
/// by one process on backend `seed_io` and downloaded by another on `leech_io`.
fn seed_and_download(seed_io: &str, leech_io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tree = data.join("tree");
    write_tree(&tree);
    write_payload(&tree.join("big.bin"), 3_000_001, 21);
    let torrent = dir.path().join("tree.torrent");
    make_torrent(&tree, "32K", &torrent);
    let (_seed, addr) = start_seed(&torrent, &data, "seed", &["--io", seed_io]);
    let out_dir = dir.path().join("out");
    download(&torrent, &out_dir, &["--peer", &addr, "--io", leech_io]);
    same_tree(&data, &out_dir);
}

#[test]
fn seed_upload_limit_paces_a_real_transfer() {
    // 8 MiB from a seed limited to 4 MiB/s takes about 2 s (a little less: the bucket starts
    // with a tenth of a second's worth). Unlimited, this takes well under a second on
    // loopback. Only the lower bound is tight; a shared, loaded machine can be slower.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("paced.bin"), 8 << 20, 55);
    let torrent = dir.path().join("paced.torrent");
    make_torrent(&data.join("paced.bin"), "256K", &torrent);
    let (_seed, addr) = start_seed(&torrent, &data, "seed", &["--upload-limit", "4M"]);
    let out_dir = dir.path().join("out");
    let started = std::time::Instant::now();
    download(&torrent, &out_dir, &["--peer", &addr]);
    let took = started.elapsed();
    same_tree(&data, &out_dir);
    println!(
        "8 MiB at --upload-limit 4M took {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(1500),
        "{took:?}: the limit did not hold"
    );
    assert!(took <= Duration::from_secs(60), "{took:?}");
}

#[test]
fn ringtorrent_leeches_from_a_libtorrent_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("odd.bin"), 5_000_017, 33);
    let torrent = dir.path().join("odd.torrent");
    run_ok(
        Command::new("mktorrent")
            .args(["-l", "18", "-a", "http://127.0.0.1:6969/announce", "-o"])
            .arg(&torrent)
            .arg(data.join("odd.bin")),
    );
    let seed = Proc::watch(
        "lt_seed.py",
        Command::new("/usr/bin/python3")
            .arg(support("lt_seed.py"))
            .arg(&torrent)
            .arg(&data)
            .stdin(std::process::Stdio::piped()),
        &dir.path().join("lt-seed.log"),
    );
    let line = seed.first_line(START_LIMIT);
    let info: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("lt_seed.py said {line:?}: {e}\n{}", seed.log()));
    let addr = format!("127.0.0.1:{}", info["port"]);
    let out_dir = dir.path().join("out");
    download(&torrent, &out_dir, &["--peer", &addr]);
    same_tree(&data, &out_dir);
}

#[test]
fn restart_trusts_resume_data_until_a_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("r.bin"), 2_000_003, 44);
    let torrent = dir.path().join("r.torrent");
    make_torrent(&data.join("r.bin"), "64K", &torrent);
    let (_seed, addr) = start_seed(&torrent, &data, "seed", &[]);
    let out_dir = dir.path().join("out");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    download(&torrent, &out_dir, &["--state-dir", state, "--peer", &addr]);
    same_tree(&data, &out_dir);
    assert!(
        std::fs::read_dir(state).unwrap().count() > 0,
        "resume data was saved"
    );

    // Restarted with nothing changed: the resume data is trusted, nothing is hashed.
    let again = download(&torrent, &out_dir, &["--state-dir", state]);
    assert!(again.contains("resumed: 31 of 31 pieces"), "{again}");
    assert!(!again.contains("checked existing data"), "{again}");

    // A file that changed since (here: its mtime) is not trusted: a check decides.
    let f = std::fs::File::options()
        .append(true)
        .open(out_dir.join("r.bin"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let changed = download(&torrent, &out_dir, &["--state-dir", state]);
    assert!(changed.contains("resume data not used"), "{changed}");
    assert!(
        changed.contains("checked existing data: 31 of 31"),
        "{changed}"
    );
}

#[test]
fn a_leecher_with_twenty_seeders_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("many.bin"), 24_000_017, 55);
    let torrent = dir.path().join("many.torrent");
    make_torrent(&data.join("many.bin"), "256K", &torrent);
    let seeds: Vec<(Proc, String)> = (0..20)
        .map(|i| {
            start_seed(
                &torrent,
                &data,
                &format!("seed{i}"),
                &["--io", if i % 2 == 0 { "uring" } else { "epoll" }],
            )
        })
        .collect();
    // Every seed is at 127.0.0.1: allow the leecher all twenty at once.
    let mut extra = vec!["--max-peers-per-ip", "20"];
    for (_, addr) in &seeds {
        extra.extend(["--peer", addr.as_str()]);
    }
    let out_dir = dir.path().join("out");
    download(&torrent, &out_dir, &extra);
    same_tree(&data, &out_dir);
}

/// A libtorrent leecher that speaks only the encrypted (MSE/PE) handshake, and never retries
/// in plaintext, downloads from a ringtorrent seed: ringtorrent answers MSE and selects
/// plaintext, so the download works and is byte-identical.
#[test]
fn libtorrent_leeches_with_forced_encryption_from_a_ringtorrent_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("enc.bin"), 3_000_017, 44);
    let torrent = dir.path().join("enc.torrent");
    make_torrent(&data.join("enc.bin"), "64K", &torrent);
    // Four loops: the connection usually lands on one that does not own the torrent and is
    // handed over after the MSE key exchange names it.
    let (_seed, addr) = start_seed(&torrent, &data, "seed", &["--threads", "4"]);
    let out_dir = dir.path().join("out");
    let out = run_bounded(
        Command::new("/usr/bin/python3")
            .arg(support("lt_leech.py"))
            .arg(&torrent)
            .arg(&out_dir)
            .args(["--peer", &addr, "--timeout", "60", "--encryption", "forced"]),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    same_tree(&data, &out_dir);
}

/// A seed with four event loops: each leecher's connection is accepted by whichever loop the
/// kernel picks (`SO_REUSEPORT`) and handed to the loop that owns the torrent. Eight leechers
/// at once all finish byte for byte, and the seed reports connections that came through
/// another loop (all eight landing on the owner has odds of 1 in 65536).
#[test]
fn a_seed_with_four_event_loops_hands_connections_over_uring() {
    four_loops("uring");
}

#[test]
fn a_seed_with_four_event_loops_hands_connections_over_epoll() {
    four_loops("epoll");
}

fn four_loops(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("loops.bin"), 5_000_011, 66);
    let torrent = dir.path().join("loops.torrent");
    make_torrent(&data.join("loops.bin"), "64K", &torrent);
    let (mut seed, addr) = start_seed(&torrent, &data, "seed", &["--threads", "4", "--io", io]);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (torrent, addr, out) = (&torrent, &addr, dir.path().join(format!("out{i}")));
            let data = &data;
            scope.spawn(move || {
                download(
                    torrent,
                    &out,
                    &["--peer", addr, "--io", io, "--threads", "1"],
                );
                same_tree(data, &out);
            });
        }
    });
    // SIGTERM stops the seed cleanly; its last line counts the connections handed over.
    run_ok(Command::new("kill").args(["-TERM", &seed.id().to_string()]));
    let status = seed.wait_exit(LIMIT);
    let stderr = seed.log();
    assert!(status.is_some_and(|s| s.success()), "{status:?} {stderr}");
    let handed: u64 = stderr
        .lines()
        .find_map(|l| {
            l.split("; ")
                .nth(1)?
                .strip_suffix(" connections came through another event loop")
        })
        .unwrap_or_else(|| panic!("no summary in: {stderr}"))
        .parse()
        .unwrap();
    assert!(handed >= 1, "{stderr}");
}

/// A seed killed with SIGKILL mid-transfer and restarted on the same data and state folder:
/// the leecher, left with no peer part-way, takes the restarted seed's connection and
/// finishes byte for byte. The test follows what the processes say, not the clock: the kill comes
/// once the leecher reports progress part-way, the restart once it reports having no peer.
/// The restarted seed binds a port of its own and dials the leecher, which listens on the
/// address it reported (restarting on the first seed's port could lose that port).
#[test]
fn a_seed_killed_mid_transfer_and_restarted_uring() {
    seed_killed_and_restarted("uring");
}

#[test]
fn a_seed_killed_mid_transfer_and_restarted_epoll() {
    seed_killed_and_restarted("epoll");
}

/// The percentage of a plain progress line ("  37.5%  4.2 MiB of 11.4 MiB  ...  1 peers").
fn progress(line: &str) -> Option<f64> {
    line.trim_start().split_once('%')?.0.trim().parse().ok()
}

fn seed_killed_and_restarted(io: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("restart.bin"), 12_000_007, 77);
    let torrent = dir.path().join("restart.torrent");
    make_torrent(&data.join("restart.bin"), "256K", &torrent);
    // Both seeds share one state folder (a seed killed with SIGKILL has saved no resume data
    // today, so the second checks the data). Paced, so that the transfer is still under way
    // when the first is killed (12 MB at 2 MiB/s takes about 6 s; the kill follows the first
    // progress line, a second in).
    let state = dir.path().join("seed-state");
    let seed = |n: u32, peers: &[&str]| {
        let mut cmd = ringtorrent();
        cmd.arg("seed")
            .arg(&torrent)
            .arg(&data)
            .args(["--port", "0", "--bind", "127.0.0.1", "--duration", "120"])
            .args(["--io", io, "--upload-limit", "2M", "--state-dir"])
            .arg(&state);
        for peer in peers {
            cmd.args(["--peer", peer]);
        }
        let seed = Proc::watch(
            &format!("seed {n}"),
            &mut cmd,
            &dir.path().join(format!("seed{n}.log")),
        );
        let addr = loopback_addr(&seed.first_line(START_LIMIT));
        (seed, addr)
    };
    let (first, addr) = seed(1, &[]);
    let out_dir = dir.path().join("out");
    let mut leecher = Proc::watch(
        "leecher",
        ringtorrent()
            .arg("download")
            .arg(&torrent)
            .arg("-o")
            .arg(&out_dir)
            .args([
                "--peer",
                &addr,
                "--io",
                io,
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args(["--timeout", "90", "--state-dir"])
            .arg(dir.path().join("leech-state")),
        &dir.path().join("leecher.log"),
    );
    let leecher_addr = loopback_addr(
        &leecher.wait_line(LIMIT, "where it listens", |_, l| l.contains("listening on")),
    );
    let part_way = |l: &str| progress(l).is_some_and(|p| p > 0.0 && p < 100.0);
    leecher.wait_line(LIMIT, "progress part-way", |_, l| part_way(l));
    drop(first); // SIGKILL, by PID
    leecher.wait_line(LIMIT, "that it has no peer part-way", |_, l| {
        part_way(l) && l.trim_end().ends_with(" 0 peers")
    });
    let (second, _) = seed(2, &[&leecher_addr]);
    let status = leecher.wait_exit(LIMIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}\n{}",
        leecher.log(),
        second.log()
    );
    same_tree(&data, &out_dir);
    // It served every piece: all 46 were there when it started, resumed or checked.
    assert!(second.log().contains(" 46 of 46 "), "{}", second.log());
}

/// A second seed started on the port of a running one (both with several loops, so both
/// would set `SO_REUSEPORT`) fails with a clear error instead of silently taking a share of
/// the first one's connections.
#[test]
fn a_port_in_use_by_another_seed_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("port.bin"), 100_003, 9);
    let torrent = dir.path().join("port.torrent");
    make_torrent(&data.join("port.bin"), "16K", &torrent);
    let (_first, addr) = start_seed(&torrent, &data, "seed", &["--threads", "2"]);
    let port = addr.rsplit(':').next().unwrap();
    let out = run_bounded(
        ringtorrent()
            .arg("seed")
            .arg(&torrent)
            .arg(&data)
            .args(["--port", port, "--bind", "127.0.0.1", "--threads", "2"])
            .args(["--duration", "5", "--state-dir"])
            .arg(dir.path().join("state2")),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
}

/// `seed --max-peers N` holds N peers whatever the number of loops: the connection limit is
/// split between the loops, but the one torrent, and so every peer, lives on one of them.
/// 90 peers handshake with a two-loop seed allowed 100; each must get the seed's handshake
/// back (a connection over a loop's limit is closed without one).
#[test]
fn a_seed_with_two_loops_holds_max_peers() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_payload(&data.join("peers.bin"), 1_000_003, 12);
    let torrent = dir.path().join("peers.torrent");
    make_torrent(&data.join("peers.bin"), "64K", &torrent);
    let info: serde_json::Value = serde_json::from_str(&run_ok(
        ringtorrent().arg("info").arg(&torrent).arg("--json"),
    ))
    .unwrap();
    let hash: [u8; 20] =
        ringtorrent::core::hex::decode(info["info_hash"].as_str().unwrap()).unwrap();
    let (_seed, addr) = start_seed(
        &torrent,
        &data,
        "seed",
        &[
            "--threads",
            "2",
            "--max-peers",
            "100",
            "--max-peers-per-ip",
            "200",
            "--encryption",
            "plaintext",
        ],
    );
    let mut peers = Vec::new();
    for i in 0u32..90 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut hello = b"\x13BitTorrent protocol".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        hello.extend_from_slice(&hash);
        hello.extend_from_slice(b"-TS0001-");
        hello.extend_from_slice(&[0; 8]);
        hello.extend_from_slice(&i.to_be_bytes());
        s.write_all(&hello).unwrap();
        peers.push(s);
    }
    for (i, s) in peers.iter_mut().enumerate() {
        let mut reply = [0u8; 68];
        s.read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("peer {i} got no handshake: {e}"));
        assert_eq!(&reply[28..48], &hash[..], "peer {i}");
    }
}
