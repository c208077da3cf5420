//! BEP 52 torrents with more than libtorrent and ringtorrent, on loopback.
//!
//! A hybrid and a v1-only client: aria2 1.36 computes a hybrid's v1 info hash over its own
//! re-encoding of the info dictionary, which drops the v2 file tree's `""` keys, so it never
//! joins a hybrid's swarm, whoever made the torrent (libtorrent's hybrids too); Transmission
//! 3.00 refuses to parse a hybrid at all. What a v1-only client can do is fetch the metadata by
//! the v1 hash and check it by SHA-1, and that is tested.
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
    self, compare_trees, download_ok, lt_seed_with, rt_download, rt_seed, run_all, Prepared,
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

/// aria2 1.36 cannot download a hybrid: it computes the v1 info hash over its own re-encoding
/// of the info dictionary, which loses the `""` keys of the v2 file tree, so it joins no swarm
/// (and Transmission 3.00 refuses to parse a hybrid). What a v1-only client can do is fetch
/// the metadata by the v1 hash (BEP 9) and check it by SHA-1: ringtorrent, seeding a hybrid on
/// each backend, serves aria2 exactly the info dictionary whose SHA-1 is the v1 hash.
#[test]
fn v1_only_aria2_fetches_a_hybrids_metadata_from_ringtorrent_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let p = hybrid_tree(work, "hymeta", 901);
    let v1 = info_json(&p.torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let magnet = format!("magnet:?xt=urn:btih:{v1}");
    let jobs: Vec<(String, Job<'_>)> = interop::BACKENDS
        .into_iter()
        .map(|io| {
            let (p, magnet, v1) = (&p, magnet.clone(), v1.clone());
            let job: Job<'_> = Box::new(move || {
                let out = work.join(format!("aria2-meta-{io}"));
                let name = format!("aria2-meta-{io}");
                let (mut aria2, addr) = start_listening(
                    &name,
                    &work.join(format!("{name}.log")),
                    LISTEN_LIMIT,
                    |port| {
                        let mut cmd = interop::aria2(port, &out);
                        cmd.args(["--bt-metadata-only=true", "--bt-save-metadata=false"])
                            .arg(&magnet);
                        cmd
                    },
                )
                .map(|(proc, port)| (proc, format!("127.0.0.1:{port}")))?;
                let mut q = p.clone();
                q.label = format!("{}-{io}", p.label);
                let (seed, _) = rt_seed(&q, io, &[addr], work);
                let logs = |aria2: &common::Proc| format!("{}\n{}", aria2.log(), seed.log());
                match aria2.wait_exit(Duration::from_secs(60)) {
                    None => return Err(format!("aria2 did not finish\n{}", logs(&aria2))),
                    Some(s) if !s.success() => {
                        return Err(format!("aria2 failed ({s})\n{}", logs(&aria2)))
                    }
                    Some(_) => {}
                }
                if !aria2
                    .log()
                    .contains(&format!("Download complete: [MEMORY][METADATA]{v1}"))
                {
                    return Err(format!("no metadata for {v1}\n{}", logs(&aria2)));
                }
                Ok(())
            });
            (format!("ringtorrent -> aria2 metadata --io {io}"), job)
        })
        .collect();
    run_all(jobs);
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
fn a_corrupt_v2_seed_is_banned_and_the_honest_one_is_not_on_both_backends() {
    for (i, io) in interop::BACKENDS.into_iter().enumerate() {
        corrupt_seed_banned(io, 951 + i as u64);
    }
}

fn corrupt_seed_banned(io: &str, payload: u64) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let label = &format!("v2ban-{io}");
    let honest_data = work.join("honest");
    let corrupt_data = work.join("corrupt");
    let file = format!("{label}.bin");
    write_payload(&honest_data.join(&file), 2_000_003, payload);
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
    let (honest_seed, honest_port) = lt_seed_with(
        &honest,
        &[],
        &["--listen-ip", "127.0.0.2", "--upload-rate", "1000000"],
        work,
    );
    let (corrupt_seed, corrupt_port) =
        lt_seed_with(&corrupt, &[], &["--listen-ip", "127.0.0.3"], work);
    // The honest seed is held to 1 MB/s, so that the corrupt one (unlimited) surely serves
    // blocks before the download is done. Checked and seeding: from now on it serves what is on disk without hashing it.
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
        io,
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
