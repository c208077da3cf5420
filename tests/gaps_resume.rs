//! A leecher killed with SIGKILL mid-download and started again on its partial resume data:
//! `download` (saving resume data every second, `--resume-interval 1`) and `serve` (whose
//! pause saved it). Before the restart, every piece the resume data does not list as
//! verified is overwritten with garbage and the file's stamp put back as the resume data
//! recorded it, so the resume data is used as it stands. Then:
//!
//! - the download finishes byte-exact (the garbage was not trusted: it was fetched again);
//! - the seed uploads exactly the pieces the resume data did not list (verified pieces are
//!   not fetched again, unverified ones all are).
//!
//! The killed leecher talks uTP, and the seed's upload is the limit (512 KiB/s), so the seed
//! still has requested blocks to send when the leecher dies: it learns the leecher is gone
//! from the ICMP port unreachable its next packet draws (read from the UDP socket's error
//! queue), within [`NOTICED`], not after the retransmission timeouts' 15 s. The first
//! test's seed runs on the default backend (io_uring), the second's on epoll, so both read
//! the error queue.

mod common;
mod gaps;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use gaps::{Kid, Serve};
use ringtorrent::client::{AddTorrent, Client, ClientConfig, IoChoice};
use ringtorrent::core::InfoHash;
use ringtorrent::storage::ResumeData;

const LIMIT: Duration = Duration::from_secs(60);
/// How soon the seed drops a killed uTP leecher: at once on the ICMP error, where without it
/// the retransmission timer gives up only after 0.5 + 1 + 2 + 4 + 8 s.
const NOTICED: Duration = Duration::from_secs(5);
const PIECE: u64 = 64 * 1024;
const PIECES: u64 = 64;
const SIZE: u64 = PIECE * PIECES;

/// The resume data in `resume_dir` once it lists at least `min` verified pieces.
fn resume_with(resume_dir: &Path, hash: InfoHash, min: usize) -> ResumeData {
    gaps::eventually(LIMIT, "resume data with verified pieces", || {
        ResumeData::load(resume_dir, hash)
            .ok()
            .filter(|r| r.verified.ones().count() >= min)
    })
}

/// Overwrites every piece of `file` that `resume` does not list as verified, then puts the
/// file's modification time back to the one `resume` recorded.
fn garble_unverified(file: &Path, resume: &ResumeData) -> u64 {
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let mut garbled = 0;
    for piece in 0..PIECES as u32 {
        if !resume.verified.get(piece) {
            f.seek(SeekFrom::Start(u64::from(piece) * PIECE)).unwrap();
            f.write_all(&vec![0xEE; PIECE as usize]).unwrap();
            garbled += 1;
        }
    }
    f.sync_all().unwrap();
    drop(f);
    let stamp = resume.files[0].expect("a stamp for the one file");
    assert_eq!(stamp.size, SIZE);
    let mtime = UNIX_EPOCH + Duration::from_nanos(stamp.mtime_ns as u64);
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_modified(mtime).unwrap();
    assert_eq!(f.metadata().unwrap().modified().unwrap(), mtime);
    garbled
}

/// What the seed uploaded once its leecher, killed at `killed`, is gone, which must be
/// within [`NOTICED`].
fn uploaded_when_killed_gone(seed: &Client, killed: Instant) -> u64 {
    let uploaded = uploaded_when_idle(seed);
    let took = killed.elapsed();
    assert!(
        took < NOTICED,
        "the seed noticed the killed uTP leecher after {took:?}"
    );
    uploaded
}

/// What the seed uploaded once no leecher is connected to it.
fn uploaded_when_idle(seed: &Client) -> u64 {
    let t = seed.torrents().pop().unwrap();
    gaps::eventually(LIMIT, "the seed's leecher is gone", || {
        t.peers().unwrap().is_empty().then_some(())
    });
    t.status().unwrap().uploaded
}

fn download(dir: &Path, seed: &Client) -> Command {
    let mut cmd = common::ringtorrent();
    cmd.arg("download")
        .arg(dir.join("f.torrent"))
        .arg("-o")
        .arg(dir.join("leech"))
        .arg("--peer")
        .arg(seed.listen_addr().unwrap().to_string())
        .args(["--bind", "127.0.0.1", "--port", "0", "--threads", "2"])
        .args(["--resume-interval", "1"])
        // uTP only: the seed learns a killed leecher is gone from an ICMP error.
        .args(["--transport", "utp"])
        .arg("--state-dir")
        .arg(dir.join("state"));
    gaps::homeless(&mut cmd, dir);
    cmd
}

#[test]
fn a_download_killed_mid_way_resumes_without_refetching_or_trusting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (torrent, hash) = gaps::make(&dir.join("seed"), "f.bin", SIZE as usize, PIECE);
    std::fs::write(dir.join("f.torrent"), &torrent).unwrap();
    let seed = gaps::seeder(&dir.join("seed"), &torrent);

    // 4 MiB at 512 KiB/s: about 8 s, resume data saved every second on the way.
    seed.set_limits(Some(512 << 10), None).unwrap();
    let log = std::fs::File::create(dir.join("first.log")).unwrap();
    let mut first = Kid::spawn("download", download(dir, &seed).stderr(log));
    let resume_dir = dir.join("state/resume");
    resume_with(&resume_dir, hash, 8);
    first.kill();
    let killed = Instant::now();
    let resume = ResumeData::load(&resume_dir, hash).unwrap();
    let verified = resume.verified.ones().count() as u64;
    assert!(
        (8..PIECES).contains(&verified),
        "killed mid-way: {verified} verified"
    );
    let before = uploaded_when_killed_gone(&seed, killed);
    let garbled = garble_unverified(&dir.join("leech/f.bin"), &resume);
    assert_eq!(garbled, PIECES - verified);

    seed.set_limits(None, None).unwrap();
    let log = std::fs::File::create(dir.join("second.log")).unwrap();
    let mut second = Kid::spawn("download", download(dir, &seed).stderr(log));
    let status = second.wait(LIMIT);
    let stderr = std::fs::read_to_string(dir.join("second.log")).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resumed: {verified} of {PIECES} pieces verified before"
        )),
        "the resume data was used: {stderr}"
    );
    common::same_tree(&dir.join("seed"), &dir.join("leech"));
    let fetched = uploaded_when_idle(&seed) - before;
    assert_eq!(
        fetched,
        (PIECES - verified) * PIECE,
        "fetched again exactly the {} pieces not verified",
        PIECES - verified
    );
    seed.shutdown();
}

#[test]
fn serve_killed_mid_download_resumes_without_refetching_or_trusting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (torrent, hash) = gaps::make(&dir.join("seed"), "f.bin", SIZE as usize, PIECE);
    let seed = Client::start(ClientConfig {
        io: IoChoice::Epoll,
        ..gaps::config(&dir.join("seed"))
    })
    .unwrap();
    seed.add(AddTorrent::bytes(torrent.clone()).seed_only())
        .unwrap();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe={}",
        hash.to_hex(),
        seed.listen_addr().unwrap()
    );
    let sdir = dir.join("serve");
    // uTP and the seed's limit, as above.
    seed.set_limits(Some(512 << 10), None).unwrap();
    let serve = Serve::start(&sdir, &["--transport", "utp"]);
    let body = serde_json::json!({ "magnet": magnet }).to_string();
    let (code, v) = serve.json("POST", "/torrents", body.as_bytes());
    assert_eq!(code, 201, "{v}");
    let have = |s: &Serve| s.status(&hash)["pieces_have"].as_u64().unwrap_or(0);
    gaps::eventually(LIMIT, "serve verifies 8 pieces", || {
        (have(&serve) >= 8).then_some(())
    });
    // Pausing saves the resume data; more pieces come after it, then the kill.
    let path = format!("/torrents/{}", hash.to_hex());
    assert_eq!(serve.json("POST", &format!("{path}/pause"), b"").0, 200);
    let saved = have(&serve);
    let resume_dir = sdir.join("state/resume");
    let resume = ResumeData::load(&resume_dir, hash).unwrap();
    assert_eq!(resume.verified.ones().count() as u64, saved);
    assert_eq!(serve.json("POST", &format!("{path}/resume"), b"").0, 200);
    gaps::eventually(LIMIT, "serve verifies more pieces", || {
        (have(&serve) >= saved + 4).then_some(())
    });
    let mut serve = serve;
    serve.kid.kill();
    let killed = Instant::now();
    let resume = ResumeData::load(&resume_dir, hash).unwrap();
    assert_eq!(
        resume.verified.ones().count() as u64,
        saved,
        "nothing saved after the pause"
    );
    assert!(saved < PIECES);
    let before = uploaded_when_killed_gone(&seed, killed);
    garble_unverified(&sdir.join("data/f.bin"), &resume);
    seed.set_limits(None, None).unwrap();

    // Started again on the same folders, without the limit: it remembers the torrent.
    let serve = Serve::start(&sdir, &[]);
    // A torrent kept in the state folder is kept as its .torrent: the seed it knew from the
    // magnet link is told where serve is now.
    seed.torrents()
        .pop()
        .unwrap()
        .add_peers(&[serve.peers])
        .unwrap();
    gaps::eventually(LIMIT, "serve completes the torrent", || {
        (serve.status(&hash)["state"] == "seeding").then_some(())
    });
    common::same_tree(&dir.join("seed"), &sdir.join("data"));
    // The two seeds part; what the seed uploaded is settled then.
    let fetched = uploaded_when_idle(&seed);
    assert_eq!(
        fetched - before,
        (PIECES - saved) * PIECE,
        "fetched again exactly the {} pieces not saved as verified",
        PIECES - saved
    );
    drop(serve);
    seed.shutdown();
}
