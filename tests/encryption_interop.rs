//! Protocol encryption (MSE/PE, issue 18) against real clients in their strict settings:
//! libtorrent 2.0 (python3-libtorrent), Transmission 3.00 (`encryption: 2`) and aria2 1.36
//! (`--bt-require-crypto`), both directions, with ringtorrent in each of its policies
//! (`--encryption plaintext|prefer|require`), on both I/O backends. Every pair that can talk
//! must move a 2 MiB payload byte for byte; every pair that cannot must give up within
//! `REFUSED_S` seconds with no byte of the payload moved, and where ringtorrent is the side
//! that refuses, its `connections closed:` line (the `connections_closed_total` reasons)
//! must name why. Every process is ended by PID, and everything stays on 127.0.0.1.
//!
//! The policies, libtorrent's: `prefer` dials encrypted offering RC4 and plaintext, accepts
//! everything, selects plaintext when the peer offers both and RC4 when it insists, and
//! redials the other way once when a handshake is refused; `require` is RC4 only, both ways;
//! `plaintext` never starts encryption but still answers it.
//!
//! libtorrent's settings (`lt_seed.py` / `lt_leech.py` options): `disabled` is
//! `out_enc_policy = in_enc_policy = pe_disabled` (plaintext only, encrypted handshakes
//! refused); `enabled` is libtorrent's default (`pe_enabled` both ways, `pe_both`, which
//! dials encrypted first and retries in plaintext); `forced/L` is `pe_forced` both ways with
//! `allowed_enc_level = L` (`pe_rc4`, `pe_plaintext`: an encrypted handshake that selects a
//! plaintext stream, `pe_both`). libtorrent's `prefer_rc4` stays off, so offered both it
//! selects plaintext.
//!
//! libtorrent leeches, dialling ringtorrent's seed (ringtorrent answers):
//!
//! | libtorrent        | rt plaintext | rt prefer    | rt require                    |
//! |-------------------|--------------|--------------|-------------------------------|
//! | disabled          | plaintext    | plaintext    | refused: `encryption_required`|
//! | enabled (default) | MSE, plain   | MSE, plain   | MSE, RC4                      |
//! | forced/rc4        | MSE, RC4     | MSE, RC4     | MSE, RC4                      |
//! | forced/plaintext  | MSE, plain   | MSE, plain   | refused: `mse_plaintext_only` |
//! | forced/both       | MSE, plain   | MSE, plain   | MSE, RC4                      |
//!
//! ringtorrent leeches, dialling libtorrent's seed (libtorrent answers):
//!
//! | libtorrent        | rt plaintext          | rt prefer                 | rt require                  |
//! |-------------------|-----------------------|---------------------------|-----------------------------|
//! | disabled          | plaintext             | MSE refused, redial plain | refused by libtorrent       |
//! | enabled (default) | plaintext             | MSE, plain                | MSE, RC4                    |
//! | forced/rc4        | refused by libtorrent | MSE, RC4                  | MSE, RC4                    |
//! | forced/plaintext  | refused by libtorrent | MSE, plain                | refused: no common method   |
//! | forced/both       | refused by libtorrent | MSE, plain                | MSE, RC4                    |
//!
//! Transmission never dials peers on 127.x and aria2 cannot be told to dial a peer, so
//! ringtorrent dials them in both directions. Transmission with `encryption: 2` refuses
//! plaintext handshakes and selects RC4: `prefer` and `require` talk (RC4). aria2 with
//! `--bt-require-crypto=true` refuses plaintext handshakes and selects plaintext when offered
//! (`--bt-min-crypto-level=plain`, its default) or RC4 only (`=arc4`): `prefer` talks
//! (plaintext or RC4), `require` talks (RC4), `plaintext` is refused by aria2.
//!
//! The cases alternate between io_uring and epoll so that each policy meets both backends
//! in each direction without doubling the run.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::interop::{
    aria2, compare_trees, compare_trees_but_empty_files, compare_within, download_ok, lt_seed_with,
    prepare, rt_download, rt_seed_with, run_all, Case, Layout, Prepared, BACKENDS,
};
use common::transmission::Transmission;
use common::{run_bounded, start_listening, support};

/// One odd-sized file of about 2 MiB in 64 KiB pieces (the last one short).
const CASE: Case = Case {
    name: "enc",
    layout: Layout::Single(2_097_169),
    piece_len: "64K",
    private: false,
};

/// How long a pair that cannot talk is given (ringtorrent's `--duration` or `--timeout`,
/// libtorrent's `--timeout`) before it must have given up.
const REFUSED_S: u64 = 12;

/// How long a pair that can talk is given to move the payload (seconds; it takes one or
/// two), so that a broken case fails in bounded time too.
const TALK_S: &str = "40";

/// How long a refused case may take in all, starting the processes included.
const REFUSED_LIMIT: Duration = Duration::from_secs(REFUSED_S + 20);

/// ringtorrent's `--encryption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Plaintext,
    Prefer,
    Require,
}

const POLICIES: [Policy; 3] = [Policy::Plaintext, Policy::Prefer, Policy::Require];

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Plaintext => "plaintext",
            Policy::Prefer => "prefer",
            Policy::Require => "require",
        }
    }
}

/// What a pair must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Move the whole payload.
    Talk,
    /// Never get past the handshake, and give up; with a reason, ringtorrent is the side that
    /// refuses and counts it under that name.
    Refused(Option<&'static str>),
}

use Expect::{Refused, Talk};

/// libtorrent's encryption settings for one row of the matrices.
struct Lt {
    name: &'static str,
    args: &'static [&'static str],
}

const LT: [Lt; 5] = [
    Lt {
        name: "disabled",
        args: &[
            "--out-enc-policy",
            "disabled",
            "--in-enc-policy",
            "disabled",
        ],
    },
    Lt {
        name: "enabled",
        args: &[],
    },
    Lt {
        name: "forced-rc4",
        args: &[
            "--out-enc-policy",
            "forced",
            "--in-enc-policy",
            "forced",
            "--enc-level",
            "rc4",
        ],
    },
    Lt {
        name: "forced-plaintext",
        args: &[
            "--out-enc-policy",
            "forced",
            "--in-enc-policy",
            "forced",
            "--enc-level",
            "plaintext",
        ],
    },
    Lt {
        name: "forced-both",
        args: &[
            "--out-enc-policy",
            "forced",
            "--in-enc-policy",
            "forced",
            "--enc-level",
            "both",
        ],
    },
];

/// The first table: libtorrent (row, as `LT`) dials ringtorrent (column, as `POLICIES`).
const LT_DIALS: [[Expect; 3]; 5] = [
    [Talk, Talk, Refused(Some("encryption_required"))],
    [Talk, Talk, Talk],
    [Talk, Talk, Talk],
    [Talk, Talk, Refused(Some("mse_plaintext_only"))],
    [Talk, Talk, Talk],
];

/// The second table: ringtorrent (column) dials libtorrent (row).
const RT_DIALS: [[Expect; 3]; 5] = [
    [Talk, Talk, Refused(None)],
    [Talk, Talk, Talk],
    [Refused(None), Talk, Talk],
    [Refused(None), Talk, Refused(None)],
    [Refused(None), Talk, Talk],
];

/// The backend of the `i`th case: alternating, so that each policy meets both.
fn backend(i: usize) -> &'static str {
    BACKENDS[i % 2]
}

/// No block of the payload in `data` (one file, as [`CASE`]) arrived in `copy`: the copy is
/// absent, or none of its 16 KiB blocks equals the payload's block there (the payload is
/// pseudo-random, so a preallocated or sparse file matches none). Other files a client keeps
/// beside it (aria2's `.aria2` control file) are not looked at.
fn no_payload(data: &Path, copy: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(data).unwrap().flatten() {
        let want = std::fs::read(e.path()).unwrap();
        let path = copy.join(e.file_name());
        let Ok(got) = std::fs::read(&path) else {
            continue;
        };
        let moved = want
            .chunks(16 * 1024)
            .zip(got.chunks(16 * 1024))
            .filter(|(w, g)| w == g)
            .count();
        if moved > 0 {
            return Err(format!(
                "{} holds {moved} blocks of the payload: the pair talked",
                path.display()
            ));
        }
    }
    Ok(())
}

/// ringtorrent's `connections closed: ...` line in `text`, or "" if it printed none.
fn closes_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("connections closed:"))
        .unwrap_or("")
}

/// Checks that `text`'s `connections closed:` line names `reason` (when there is one).
fn closed_for(text: &str, reason: Option<&str>) -> Result<(), String> {
    match reason {
        Some(reason) if !closes_line(text).contains(reason) => Err(format!(
            "ringtorrent did not count a refusal as {reason:?}: {:?}",
            closes_line(text)
        )),
        _ => Ok(()),
    }
}

/// Checks that a refused case ended within [`REFUSED_LIMIT`].
fn fast(started: Instant) -> Result<(), String> {
    if started.elapsed() > REFUSED_LIMIT {
        Err(format!(
            "gave up only after {:.1} s",
            started.elapsed().as_secs_f64()
        ))
    } else {
        Ok(())
    }
}

/// The log file of a process, as it is now.
fn log_text(proc: &common::Proc) -> String {
    std::fs::read_to_string(&proc.log).unwrap_or_default()
}

/// libtorrent with settings `lt` leeches `p` from a ringtorrent seed with `policy` on `io`.
fn libtorrent_leeches(
    work: &Path,
    p: &Prepared,
    io: &str,
    policy: Policy,
    lt: &Lt,
    expect: Expect,
) -> Result<(), String> {
    let refused_s = REFUSED_S.to_string();
    let mut extra = vec!["--encryption", policy.name()];
    if expect != Talk {
        extra.extend(["--duration", &refused_s]);
    }
    let started = Instant::now();
    let (mut seed, addr) = rt_seed_with(p, io, &[], &extra, work);
    let out = work.join(format!("{}-out", p.label));
    let timeout = if expect == Talk {
        TALK_S.to_string()
    } else {
        refused_s.clone()
    };
    let result = run_bounded(
        Command::new("/usr/bin/python3")
            .arg(support("lt_leech.py"))
            .arg(&p.torrent)
            .arg(&out)
            .args(["--peer", &addr, "--timeout", &timeout])
            .args(lt.args),
        Duration::from_secs(90),
    );
    let lt_err = String::from_utf8_lossy(&result.stderr).into_owned();
    match expect {
        Talk => {
            if !result.status.success() {
                return Err(format!("lt_leech.py failed: {lt_err}\n{}", seed.log()));
            }
            compare_trees(&p.data, &out)
        }
        Refused(reason) => {
            if result.status.success() {
                return Err(format!(
                    "libtorrent downloaded; the pair should not talk\n{}",
                    seed.log()
                ));
            }
            // The seed stops after its --duration and says what it uploaded and closed.
            if seed.wait_exit(REFUSED_LIMIT).is_none() {
                return Err(format!("the seed did not stop\n{}", seed.log()));
            }
            let text = log_text(&seed);
            if !text.contains("stopped: uploaded 0 B;") {
                return Err(format!("the seed uploaded something\n{text}"));
            }
            no_payload(&p.data, &out)?;
            closed_for(&text, reason).map_err(|e| format!("{e}\n{text}\n{lt_err}"))?;
            fast(started)
        }
    }
}

/// ringtorrent with `policy` on `io` leeches `p` from a libtorrent seed with settings `lt`.
fn ringtorrent_leeches(
    work: &Path,
    p: &Prepared,
    io: &str,
    policy: Policy,
    lt: &Lt,
    expect: Expect,
) -> Result<(), String> {
    let started = Instant::now();
    let (seed, port) = lt_seed_with(p, &[], lt.args, work);
    let out = work.join(format!("{}-out", p.label));
    let refused_s = REFUSED_S.to_string();
    let timeout = if expect == Talk { TALK_S } else { &refused_s };
    let extra = ["--encryption", policy.name(), "--timeout", timeout];
    let peer = format!("127.0.0.1:{port}");
    let result = rt_download(p, &out, io, &[peer], &extra, work);
    let err = String::from_utf8_lossy(&result.stderr).into_owned();
    match expect {
        Talk => {
            download_ok(&p.label, &result).map_err(|e| format!("{e}\n{}", seed.log()))?;
            compare_trees(&p.data, &out)
        }
        Refused(reason) => {
            if result.status.success() {
                return Err(format!(
                    "ringtorrent downloaded; the pair should not talk\n{}",
                    seed.log()
                ));
            }
            if !err.contains("gave up") {
                return Err(format!("the download failed otherwise: {err}"));
            }
            // It dialled, and the connection ended at the handshake.
            if closes_line(&err).is_empty() {
                return Err(format!("no connection was closed: {err}\n{}", seed.log()));
            }
            no_payload(&p.data, &out)?;
            closed_for(&err, reason)?;
            fast(started)
        }
    }
}

/// One libtorrent case: work folder, payload, backend, ringtorrent's policy, libtorrent's
/// settings, what must happen.
type LtJob = fn(&Path, &Prepared, &str, Policy, &Lt, Expect) -> Result<(), String>;

/// Every cell of a matrix as a job, each with its own payload.
fn matrix<'a>(
    work: &'a Path,
    direction: &'static str,
    table: &'static [[Expect; 3]; 5],
    seed: u64,
    job: LtJob,
) -> Vec<(String, impl FnOnce() -> Result<(), String> + Send + 'a)> {
    let mut jobs = Vec::new();
    for (row, lt) in LT.iter().enumerate() {
        for (col, policy) in POLICIES.into_iter().enumerate() {
            let expect = table[row][col];
            let io = backend(row + col);
            let label = format!(
                "{direction}: libtorrent {} vs ringtorrent {} --io {io} ({})",
                lt.name,
                policy.name(),
                match expect {
                    Talk => "must talk",
                    Refused(_) => "must be refused",
                }
            );
            let tag = format!("{direction}-{}-{}-{io}", lt.name, policy.name());
            let n = seed + (row * 3 + col) as u64;
            jobs.push((label, move || {
                let p = prepare(work, &CASE, &tag, n);
                job(work, &p, io, policy, lt, expect)
            }));
        }
    }
    jobs
}

/// The first table: libtorrent, each of its settings, leeches from ringtorrent in each
/// policy.
#[test]
fn libtorrent_leeches_from_ringtorrent_in_every_policy() {
    let dir = tempfile::tempdir().unwrap();
    run_all(matrix(
        dir.path(),
        "lt-dials",
        &LT_DIALS,
        1000,
        libtorrent_leeches,
    ));
}

/// The second table: ringtorrent in each policy leeches from libtorrent, each of its
/// settings.
#[test]
fn ringtorrent_in_every_policy_leeches_from_libtorrent() {
    let dir = tempfile::tempdir().unwrap();
    run_all(matrix(
        dir.path(),
        "rt-dials",
        &RT_DIALS,
        2000,
        ringtorrent_leeches,
    ));
}

/// The Transmission cases: ringtorrent's two policies that can talk to a Transmission that
/// requires encryption, each on both backends.
const TR_CASES: [(Policy, &str); 4] = [
    (Policy::Require, "uring"),
    (Policy::Prefer, "epoll"),
    (Policy::Require, "epoll"),
    (Policy::Prefer, "uring"),
];

/// How long a Transmission case waits for the one before it to connect: Transmission drops
/// an incoming handshake while another one from the same address is in progress, so they
/// start one after another. Generous: beside a loaded test run a connection took 16 s, and a
/// case that starts early is dropped and waits out a 30 s back-off.
const ORDER_WAIT: Duration = Duration::from_secs(30);

fn info_field(p: &Prepared, field: &str) -> String {
    common::info_json(&p.torrent)[field]
        .as_str()
        .unwrap()
        .to_owned()
}

fn prepare_tr(work: &Path, tag: &str, seed: u64) -> Vec<(Prepared, Policy, &'static str)> {
    TR_CASES
        .iter()
        .enumerate()
        .map(|(i, &(policy, io))| {
            let tag = format!("{tag}-tr-{}-{io}", policy.name());
            (prepare(work, &CASE, &tag, seed + i as u64), policy, io)
        })
        .collect()
}

/// Transmission with `encryption: 2` leeches from ringtorrent seeds (which dial it) in
/// `require` and `prefer`: RC4 both ways.
#[test]
fn transmission_requiring_encryption_leeches_from_ringtorrent() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let tr = Transmission::start(work, 2);
    let all = prepare_tr(work, "to", 3000);
    for (p, _, _) in &all {
        let out = work.join(format!("{}-out", p.label));
        std::fs::create_dir_all(&out).unwrap();
        tr.add(&p.torrent, &out);
    }
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    // Transmission drops an incoming handshake while another one from the same IP is in
    // progress: each seed starts once the previous one is in (or has given up).
    let connected: Vec<AtomicBool> = all.iter().map(|_| AtomicBool::new(false)).collect();
    let jobs = all
        .iter()
        .enumerate()
        .map(|(i, (p, policy, io))| {
            let (tr, all, connected, peer) = (&tr, &all, &connected, peer.clone());
            (
                format!(
                    "ringtorrent {} --io {io} -> transmission (encryption 2)",
                    policy.name()
                ),
                move || {
                    if i > 0 {
                        // Only an order: a previous case that never connects fails on its own.
                        let previous = info_field(&all[i - 1].0, "info_hash");
                        let _ = tr.wait_connected(&previous, &connected[i - 1], ORDER_WAIT);
                    }
                    let extra = ["--encryption", policy.name()];
                    let (seed, _) = rt_seed_with(p, io, &[peer], &extra, work);
                    let hash = info_field(p, "info_hash");
                    let in_ =
                        tr.wait_connected(&hash, &AtomicBool::new(false), Duration::from_secs(60));
                    connected[i].store(true, Ordering::SeqCst);
                    in_.map_err(|e| format!("{e}\n{}", seed.log()))?;
                    tr.wait_complete(&[info_field(p, "name")], Duration::from_secs(60))
                        .map_err(|e| format!("{e}\n{}\n{}", seed.log(), tr.proc.log()))?;
                    let out = work.join(format!("{}-out", p.label));
                    compare_within(
                        &p.data,
                        &out,
                        compare_trees_but_empty_files,
                        Duration::from_secs(20),
                    )
                },
            )
        })
        .collect();
    run_all(jobs);
}

/// ringtorrent in `require` and `prefer` leeches from Transmission with `encryption: 2`
/// (dialling it): RC4 both ways.
#[test]
fn ringtorrent_leeches_from_transmission_requiring_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let tr = Transmission::start(work, 2);
    let all = prepare_tr(work, "from", 3100);
    for (p, _, _) in &all {
        tr.add(&p.torrent, &p.data);
    }
    let names: Vec<String> = all.iter().map(|(p, _, _)| info_field(p, "name")).collect();
    tr.wait_complete(&names, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Transmission did not verify its data: {e}"));
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    let done: Vec<AtomicBool> = all.iter().map(|_| AtomicBool::new(false)).collect();
    let jobs = all
        .iter()
        .enumerate()
        .map(|(i, (p, policy, io))| {
            let (tr, all, done, peer) = (&tr, &all, &done, peer.clone());
            (
                format!(
                    "transmission (encryption 2) -> ringtorrent {} --io {io}",
                    policy.name()
                ),
                move || {
                    if i > 0 {
                        // Only an order: a previous case that never connects fails on its own.
                        let previous = info_field(&all[i - 1].0, "info_hash");
                        let _ = tr.wait_connected(&previous, &done[i - 1], ORDER_WAIT);
                    }
                    let out = work.join(format!("{}-out", p.label));
                    let extra = ["--encryption", policy.name(), "--timeout", TALK_S];
                    let result = rt_download(p, &out, io, &[peer], &extra, work);
                    done[i].store(true, Ordering::SeqCst);
                    download_ok(&p.label, &result)
                        .map_err(|e| format!("{e}\n{}", tr.proc.log()))?;
                    compare_trees(&p.data, &out)
                },
            )
        })
        .collect();
    run_all(jobs);
}

/// aria2's settings: it always requires encryption here; `plain` lets it select a plaintext
/// stream after the encrypted handshake, `arc4` only RC4.
const ARIA2_LEVELS: [(&str, &[&str]); 2] = [
    ("plain", &["--bt-require-crypto=true"]),
    (
        "arc4",
        &["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"],
    ),
];

/// How long aria2 may take to listen once started (the seed checks its data first).
const ARIA2_START: Duration = Duration::from_secs(30);

/// What ringtorrent with `policy` and an aria2 that requires encryption do.
fn aria2_expect(policy: Policy) -> Expect {
    match policy {
        // aria2 refuses the plaintext handshake; ringtorrent has nothing of its own to count.
        Policy::Plaintext => Refused(None),
        Policy::Prefer | Policy::Require => Talk,
    }
}

/// One aria2 case: as [`LtJob`], with aria2's crypto options.
type Aria2Job = fn(&Path, &Prepared, &str, Policy, &[&str], Expect) -> Result<(), String>;

/// Every aria2 level against every policy, as jobs.
fn aria2_jobs<'a>(
    work: &'a Path,
    direction: &'static str,
    seed: u64,
    job: Aria2Job,
) -> Vec<(String, impl FnOnce() -> Result<(), String> + Send + 'a)> {
    let mut jobs = Vec::new();
    for (row, &(level, args)) in ARIA2_LEVELS.iter().enumerate() {
        for (col, policy) in POLICIES.into_iter().enumerate() {
            let io = backend(row + col);
            let expect = aria2_expect(policy);
            let label = format!(
                "{direction}: aria2 require-crypto {level} vs ringtorrent {} --io {io} ({})",
                policy.name(),
                if expect == Talk {
                    "must talk"
                } else {
                    "must be refused"
                }
            );
            let tag = format!("{direction}-aria2-{level}-{}-{io}", policy.name());
            let n = seed + (row * 3 + col) as u64;
            jobs.push((label, move || {
                let p = prepare(work, &CASE, &tag, n);
                job(work, &p, io, policy, args, expect)
            }));
        }
    }
    jobs
}

/// aria2 leeches from a ringtorrent seed that dials it.
fn aria2_leeches(
    work: &Path,
    p: &Prepared,
    io: &str,
    policy: Policy,
    crypto: &[&str],
    expect: Expect,
) -> Result<(), String> {
    let started = Instant::now();
    let out = work.join(format!("{}-out", p.label));
    let log = work.join(format!("{}-aria2.log", p.label));
    let (mut leech, port) = start_listening("aria2c leecher", &log, ARIA2_START, |port| {
        let mut cmd = aria2(port, &out);
        cmd.args(crypto).arg("--seed-time=0").arg(&p.torrent);
        cmd
    })?;
    let refused_s = REFUSED_S.to_string();
    let mut extra = vec!["--encryption", policy.name()];
    if expect != Talk {
        extra.extend(["--duration", &refused_s]);
    }
    let (mut seed, _) = rt_seed_with(p, io, &[format!("127.0.0.1:{port}")], &extra, work);
    match expect {
        Talk => match leech.wait_exit(Duration::from_secs(90)) {
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
        },
        Refused(reason) => {
            if seed.wait_exit(REFUSED_LIMIT).is_none() {
                return Err(format!("the seed did not stop\n{}", seed.log()));
            }
            let text = log_text(&seed);
            if !text.contains("stopped: uploaded 0 B;") {
                return Err(format!("the seed uploaded something\n{text}"));
            }
            no_payload(&p.data, &out)?;
            closed_for(&text, reason)?;
            fast(started)
        }
    }
}

/// ringtorrent leeches from an aria2 seed, dialling it.
fn ringtorrent_leeches_aria2(
    work: &Path,
    p: &Prepared,
    io: &str,
    policy: Policy,
    crypto: &[&str],
    expect: Expect,
) -> Result<(), String> {
    // -V: check the data first (it listens only after that), then seed until stopped.
    let log = work.join(format!("{}-aria2.log", p.label));
    let (seeder, port) = start_listening("aria2c seed", &log, ARIA2_START, |port| {
        let mut cmd = aria2(port, &p.data);
        cmd.args(crypto)
            .args(["-V", "--seed-ratio=0.0"])
            .arg(&p.torrent);
        cmd
    })?;
    let started = Instant::now();
    let out = work.join(format!("{}-out", p.label));
    let refused_s = REFUSED_S.to_string();
    let timeout = if expect == Talk { TALK_S } else { &refused_s };
    let extra = ["--encryption", policy.name(), "--timeout", timeout];
    let result = rt_download(p, &out, io, &[format!("127.0.0.1:{port}")], &extra, work);
    match expect {
        Talk => {
            download_ok(&p.label, &result).map_err(|e| format!("{e}\n{}", seeder.log()))?;
            compare_trees(&p.data, &out)
        }
        Refused(reason) => {
            let err = String::from_utf8_lossy(&result.stderr).into_owned();
            if result.status.success() {
                return Err(format!(
                    "ringtorrent downloaded; the pair should not talk\n{}",
                    seeder.log()
                ));
            }
            if !err.contains("gave up") || closes_line(&err).is_empty() {
                return Err(format!(
                    "expected a refusal at the handshake: {err}\n{}",
                    seeder.log()
                ));
            }
            no_payload(&p.data, &out)?;
            closed_for(&err, reason)?;
            fast(started)
        }
    }
}

/// aria2 with `--bt-require-crypto` (plain and arc4) leeches from ringtorrent in each policy.
#[test]
fn aria2_requiring_encryption_leeches_from_ringtorrent() {
    let dir = tempfile::tempdir().unwrap();
    run_all(aria2_jobs(dir.path(), "to-aria2", 4000, aria2_leeches));
}

/// ringtorrent in each policy leeches from aria2 with `--bt-require-crypto` (plain and arc4).
#[test]
fn ringtorrent_leeches_from_aria2_requiring_encryption() {
    let dir = tempfile::tempdir().unwrap();
    run_all(aria2_jobs(
        dir.path(),
        "from-aria2",
        4100,
        ringtorrent_leeches_aria2,
    ));
}

/// Runs `lt_leech.py` with libtorrent settings `lt_args` against `peer`, into `out`, for at
/// most `timeout` seconds; its stderr on failure.
fn lt_leech(
    torrent: &Path,
    out: &Path,
    peer: &str,
    timeout: &str,
    lt_args: &[&str],
) -> Result<(), String> {
    let result = run_bounded(
        Command::new("/usr/bin/python3")
            .arg(support("lt_leech.py"))
            .arg(torrent)
            .arg(out)
            .args(["--peer", peer, "--timeout", timeout])
            .args(lt_args),
        Duration::from_secs(90),
    );
    if result.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&result.stderr).into_owned())
    }
}

/// Waits (10 s at most) for `serve`'s log to say `what`.
fn said(serve: &common::serve::Serve, what: &str) {
    let started = Instant::now();
    while !serve.log().contains(what) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve did not say {what:?}:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `serve`'s `encryption` key end to end: a seedbox whose config says `require` refuses
/// libtorrent's plaintext dials (and counts them in /metrics as `encryption_required`) and
/// serves a libtorrent that dials with RC4; restarted with `--encryption plaintext`, the flag
/// overrides the file and the plaintext libtorrent is served.
#[test]
fn serve_takes_its_encryption_policy_from_the_config_and_the_flag() {
    use common::serve::{torrent, Serve};
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("serve.toml"), "encryption = \"require\"\n").unwrap();
    let (path, hash) = torrent(work, "enc.bin", 1_048_583, 5000);
    let serve = Serve::start(work, &[]);
    let (status, body) = serve.http("POST", "/torrents", &std::fs::read(&path).unwrap());
    assert_eq!(status, 201, "{body}\n{}", serve.log());
    said(&serve, "encryption require");

    // A plaintext libtorrent is refused, fast, and the refusal is counted by name.
    let started = Instant::now();
    let plain = work.join("out-plain");
    let e = lt_leech(
        &path,
        &plain,
        &serve.peers,
        &REFUSED_S.to_string(),
        LT[0].args,
    );
    assert!(
        e.is_err(),
        "a plaintext peer downloaded from a `require` seedbox"
    );
    fast(started).unwrap();
    no_payload(&work.join("data"), &plain).unwrap();
    let (_, metrics) = serve.http("GET", "/metrics", b"");
    assert!(
        metrics.contains("reason=\"encryption_required\""),
        "no encryption_required refusal counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("closed"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // One that dials with RC4 only is served.
    let rc4 = work.join("out-rc4");
    lt_leech(&path, &rc4, &serve.peers, TALK_S, LT[2].args)
        .unwrap_or_else(|e| panic!("RC4 libtorrent: {e}\n{}", serve.log()));
    compare_trees(&work.join("data"), &rc4).unwrap();
    assert!(serve.stop().success());

    // The flag overrides the file; the torrent comes back from the state folder.
    let serve = Serve::start(work, &["--encryption", "plaintext"]);
    said(&serve, "encryption plaintext");
    let (status, _) = serve.http("GET", &format!("/torrents/{hash}"), b"");
    assert_eq!(status, 200, "{}", serve.log());
    lt_leech(&path, &plain, &serve.peers, TALK_S, LT[0].args)
        .unwrap_or_else(|e| panic!("plaintext libtorrent: {e}\n{}", serve.log()));
    compare_trees(&work.join("data"), &plain).unwrap();
}
