//! BEP 52 torrents in swarms of more than two, on loopback.
//!
//! A hybrid swarm with a v1-only client: libtorrent seeds a hybrid torrent made by
//! `ringtorrent create --hybrid`; aria2 (which knows nothing of v2, joins by the v1 info hash
//! and must honour the padding files that put each file on a piece boundary) and ringtorrent
//! both download it at once, dialled by and dialling each other. Then libtorrent stops and a
//! fresh aria2 downloads the torrent from ringtorrent's copy alone: ringtorrent serves a v1-only
//! client the hybrid's v1 pieces.
//!
//! A corrupt block in a v2 transfer bans exactly its sender: two libtorrent seeds of a v2-only
//! torrent on 127.0.0.2 and 127.0.0.3, the second serving data with one byte flipped in every
//! piece (flipped on disk after it checked its data, so it serves it unchecked). ringtorrent
//! finishes byte for byte from the honest one and says it banned the corrupt one, and only it.
//!
//! Every process is ended by PID (dropping its handle).

mod common;

use std::path::Path;
use std::time::Duration;

use common::interop::{
    self, compare_trees, download_ok, finished, lt_seed, lt_seed_with, rt_download, rt_leech,
    rt_seed, run_all, Prepared,
};
use common::{info_json, ringtorrent, run_ok, start_listening, write_payload, write_tree};

/// How long aria2 may take to listen once started.
const LISTEN_LIMIT: Duration = Duration::from_secs(20);

/// One participant's run to completion and check.
type Job<'a> = Box<dyn FnOnce() -> Result<(), String> + Send + 'a>;

/// A folder of files (several smaller than a piece, an empty one, nested folders: several
/// padding files) as a hybrid torrent with 64 KiB pieces.
fn hybrid_tree(work: &Path, label: &str, seed: u64) -> Prepared {
    let data = work.join(format!("{label}-data"));
    let root = data.join(label);
    write_tree(&root);
    write_payload(&root.join("big/part.bin"), 3_000_017, seed);
    let torrent = work.join(format!("{label}.torrent"));
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(&root)
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
    assert!(padding > 0, "a hybrid folder has padding files: {info}");
    Prepared {
        label: label.to_owned(),
        torrent,
        data,
    }
}

/// aria2c downloading `torrent` into `out`, listening on a port it was seen to listen on,
/// exiting once complete (no seeding).
fn aria2_leecher(work: &Path, name: &str, torrent: &Path, out: &Path) -> (common::Proc, String) {
    let (proc, port) = start_listening(
        name,
        &work.join(format!("{name}.log")),
        LISTEN_LIMIT,
        |port| {
            let mut cmd = interop::aria2(port, out);
            cmd.arg("--seed-time=0").arg(torrent);
            cmd
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (proc, format!("127.0.0.1:{port}"))
}

fn aria2_finished(what: &str, aria2: &mut common::Proc) -> Result<(), String> {
    match aria2.wait_exit(Duration::from_secs(120)) {
        None => Err(format!("{what} did not finish\n{}", aria2.log())),
        Some(s) if !s.success() => Err(format!("{what} failed ({s})\n{}", aria2.log())),
        Some(_) => Ok(()),
    }
}

#[test]
fn hybrid_swarm_with_aria2_libtorrent_and_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let p = hybrid_tree(work, "hyswarm", 901);

    // Phase 1: libtorrent seeds; aria2 and ringtorrent (uring) download at once and know each
    // other.
    let aria2_out = work.join("aria2-out");
    let (mut aria2, aria2_addr) = aria2_leecher(work, "aria2-leecher", &p.torrent, &aria2_out);
    let (lt, lt_port) = lt_seed(&p, std::slice::from_ref(&aria2_addr), work);
    let lt_addr = format!("127.0.0.1:{lt_port}");
    let rt_out = work.join("rt-out");
    let (mut rt, _rt_addr) = rt_leech(&p, &rt_out, "uring", &[lt_addr, aria2_addr], work);
    let jobs: Vec<(String, Job<'_>)> = vec![
        (
            "ringtorrent leecher (uring)".into(),
            Box::new(|| {
                finished("ringtorrent", &mut rt)?;
                compare_trees(&p.data, &rt_out)?;
                if rt_out.join(&p.label).join(".pad").exists() {
                    return Err("ringtorrent wrote padding files".into());
                }
                Ok(())
            }),
        ),
        (
            "aria2 leecher".into(),
            Box::new(|| {
                aria2_finished("aria2", &mut aria2)?;
                compare_trees(&p.data, &aria2_out)
            }),
        ),
    ];
    run_all(jobs);
    drop(lt);

    // Phase 2: libtorrent is gone; a fresh aria2 gets every byte from ringtorrent (epoll),
    // seeding what it downloaded.
    let aria2_out2 = work.join("aria2-out-2");
    let (mut aria2b, aria2b_addr) = aria2_leecher(work, "aria2-leecher-2", &p.torrent, &aria2_out2);
    let from_rt = Prepared {
        label: format!("{}-reseed", p.label),
        torrent: p.torrent.clone(),
        data: rt_out.clone(),
    };
    let (rt_seed_proc, _addr) = rt_seed(&from_rt, "epoll", &[aria2b_addr], work);
    aria2_finished("aria2 from ringtorrent", &mut aria2b)
        .and_then(|()| compare_trees(&p.data, &aria2_out2))
        .unwrap_or_else(|e| panic!("{e}\nringtorrent seed:\n{}", rt_seed_proc.log()));
    drop(rt_seed_proc);
}

/// Flips one byte in every `piece`-sized stretch of `file`, in place (the seed that maps the
/// file sees the change; its length never changes).
fn corrupt_every_piece(file: &Path, piece: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut at = piece / 3;
    while at < len {
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x5a;
        f.write_all_at(&b, at).unwrap();
        at += piece;
    }
    f.sync_all().unwrap();
}

#[test]
fn a_corrupt_v2_seed_is_banned_and_the_honest_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let label = "v2ban";
    let honest_data = work.join("honest");
    let corrupt_data = work.join("corrupt");
    let file = format!("{label}.bin");
    write_payload(&honest_data.join(&file), 2_000_003, 951);
    std::fs::create_dir_all(&corrupt_data).unwrap();
    std::fs::copy(honest_data.join(&file), corrupt_data.join(&file)).unwrap();
    let torrent = work.join(format!("{label}.torrent"));
    run_ok(
        ringtorrent()
            .arg("create")
            .arg(honest_data.join(&file))
            .args(["--v2", "-l", "64K", "-o"])
            .arg(&torrent),
    );
    assert_eq!(info_json(&torrent)["meta_version"], "v2");
    let honest = Prepared {
        label: format!("{label}-honest"),
        torrent: torrent.clone(),
        data: honest_data.clone(),
    };
    let corrupt = Prepared {
        label: format!("{label}-corrupt"),
        torrent: torrent.clone(),
        data: corrupt_data.clone(),
    };
    let (honest_seed, honest_port) =
        lt_seed_with(&honest, &[], &["--listen-ip", "127.0.0.2"], work);
    let (corrupt_seed, corrupt_port) =
        lt_seed_with(&corrupt, &[], &["--listen-ip", "127.0.0.3"], work);
    // Checked and seeding: from now on it serves what is on disk without hashing it.
    corrupt_every_piece(&corrupt_data.join(&file), 64 * 1024);
    let honest_addr = format!("127.0.0.2:{honest_port}");
    let corrupt_addr = format!("127.0.0.3:{corrupt_port}");

    let leech = Prepared {
        label: label.to_owned(),
        torrent,
        data: honest_data.clone(),
    };
    let out = work.join("out");
    let result = rt_download(
        &leech,
        &out,
        "uring",
        &[honest_addr.clone(), corrupt_addr.clone()],
        &[],
        work,
    );
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    let logs = || {
        format!(
            "ringtorrent:\n{stderr}\nhonest seed:\n{}\ncorrupt seed:\n{}",
            honest_seed.log(),
            corrupt_seed.log()
        )
    };
    download_ok(label, &result).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    compare_trees(&honest_data, &out).unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert!(
        stderr.contains(&format!("banned {corrupt_addr}:")),
        "the corrupt seed {corrupt_addr} was not banned\n{}",
        logs()
    );
    assert!(
        !stderr.contains("banned 127.0.0.2"),
        "the honest seed {honest_addr} was banned\n{}",
        logs()
    );
    assert_eq!(
        stderr.matches("banned 127.").count(),
        1,
        "one ban, of one peer\n{}",
        logs()
    );
    drop(honest_seed);
    drop(corrupt_seed);
}
