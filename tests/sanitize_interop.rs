//! Torrents with odd paths (separators inside components, `.`/`..`, empty components, names
//! over 255 bytes, invalid UTF-8, control and direction characters, duplicates, padding files
//! without a path, symlinks, zero-size files), written by hand in bencode, read by ringtorrent
//! and by libtorrent 2.0 (python3-libtorrent): both must accept the same torrents and refuse
//! the same ones, and give the files the same paths except where ringtorrent deliberately
//! differs (each such case names why, and both sides' paths are checked). The table of both
//! clients' paths is printed side by side (`cargo test --test sanitize_interop -- --nocapture`).
//! Then libtorrent seeds such a torrent on 127.0.0.1 and ringtorrent downloads it with each
//! I/O backend: every file lands at its sanitised path inside the output folder, and nothing
//! else is written anywhere. Every process started here is ended by PID.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{interop, ringtorrent, run_bounded, support};
use ringtorrent::bencode::OwnedValue as V;
use serde_json::Value;
use sha1::{Digest, Sha1};

const PIECE: usize = 16384;

/// One entry of `info.files`.
#[derive(Clone)]
struct Entry {
    path: Option<Vec<Vec<u8>>>,
    length: i64,
    attr: Option<&'static str>,
    target: Option<Vec<Vec<u8>>>,
}

fn comps(path: &[&[u8]]) -> Vec<Vec<u8>> {
    path.iter().map(|c| c.to_vec()).collect()
}

fn file(path: &[&[u8]], length: i64) -> Entry {
    Entry {
        path: Some(comps(path)),
        length,
        attr: None,
        target: None,
    }
}

fn pad(length: i64) -> Entry {
    Entry {
        path: None,
        length,
        attr: Some("p"),
        target: None,
    }
}

fn link(path: &[&[u8]], target: &[&[u8]], length: i64) -> Entry {
    Entry {
        path: Some(comps(path)),
        length,
        attr: Some("l"),
        target: Some(comps(target)),
    }
}

impl Entry {
    /// Bytes this entry takes in the payload: none for a symlink.
    fn payload_len(&self) -> usize {
        if self.attr == Some("l") {
            0
        } else {
            self.length.max(0) as usize
        }
    }

    fn value(&self) -> V {
        let mut d = std::collections::BTreeMap::new();
        d.insert(b"length".to_vec(), V::Int(self.length));
        if let Some(path) = &self.path {
            let list = path.iter().map(|c| V::Bytes(c.clone())).collect();
            d.insert(b"path".to_vec(), V::List(list));
        }
        if let Some(attr) = self.attr {
            d.insert(b"attr".to_vec(), V::str(attr));
        }
        if let Some(target) = &self.target {
            let list = target.iter().map(|c| V::Bytes(c.clone())).collect();
            d.insert(b"symlink path".to_vec(), V::List(list));
        }
        V::Dict(d)
    }
}

/// The payload: each file's bytes a pattern of its own, padding zeros, symlinks nothing.
fn payload(files: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let n = f.payload_len();
        if f.attr == Some("p") {
            out.extend(std::iter::repeat_n(0u8, n));
        } else {
            out.extend((0..n).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 + 1)));
        }
    }
    out
}

fn dict(entries: Vec<(&str, V)>) -> V {
    V::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

/// A multi-file torrent named `name` with correct piece hashes.
fn torrent(name: &[u8], files: &[Entry]) -> Vec<u8> {
    let data = payload(files);
    let pieces: Vec<u8> = data
        .chunks(PIECE)
        .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
        .collect();
    let info = dict(vec![
        ("name", V::Bytes(name.to_vec())),
        ("piece length", V::Int(PIECE as i64)),
        ("pieces", V::Bytes(pieces)),
        ("files", V::List(files.iter().map(Entry::value).collect())),
    ]);
    dict(vec![("info", info)]).to_bytes()
}

/// What the two clients must make of a torrent.
enum Expect {
    /// Both accept it and give every file the same path (padding aside: never created).
    Same,
    /// Both accept it; the paths differ on purpose: ringtorrent's and libtorrent's, and why.
    Differ(Vec<String>, Vec<String>, &'static str),
    /// Both refuse it.
    Refused,
    /// ringtorrent refuses what libtorrent accepts, and why.
    OnlyWeRefuse(&'static str),
}

struct Case {
    label: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn case(label: &'static str, name: &[u8], files: Vec<Entry>, expect: Expect) -> Case {
    Case {
        label,
        bytes: torrent(name, &files),
        expect,
    }
}

/// A torrent edited after it was made, for the refusals.
fn edited(label: &'static str, expect: Expect, edit: impl FnOnce(&mut V)) -> Case {
    let mut t = ringtorrent::bencode::decode(&torrent(b"top", &[file(&[b"a"], 40_000)]))
        .unwrap()
        .to_owned_value();
    if let V::Dict(d) = &mut t {
        edit(d.get_mut(&b"info"[..]).unwrap());
    }
    Case {
        label,
        bytes: t.to_bytes(),
        expect,
    }
}

fn set(info: &mut V, key: &str, value: V) {
    if let V::Dict(d) = info {
        d.insert(key.as_bytes().to_vec(), value);
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn long(stem: &str, n: usize, ext: &str) -> Vec<u8> {
    format!("{}{ext}", stem.repeat(n)).into_bytes()
}

fn cases() -> Vec<Case> {
    let x300 = long("x", 300, ".mkv");
    let cjk = long("日", 100, ".txt");
    let y250 = long("y", 250, ".bin");
    let body = |extra: Vec<Entry>| {
        let mut v = vec![file(&[b"real.txt"], 100)];
        v.extend(extra);
        v
    };
    vec![
        case(
            "plain",
            b"top",
            body(vec![file(&[b"d", b"f.txt"], 5)]),
            Expect::Same,
        ),
        case(
            "dotdot",
            b"top",
            body(vec![file(&[b"..", b"..", b"up.txt"], 5)]),
            Expect::Same,
        ),
        case(
            "dot",
            b"top",
            body(vec![file(&[b".", b"here.txt"], 5)]),
            Expect::Same,
        ),
        case(
            "only-dots",
            b"top",
            body(vec![file(&[b"..", b"."], 5)]),
            Expect::Same,
        ),
        case(
            "empty-component",
            b"top",
            body(vec![file(&[b"d", b"", b"e.txt"], 5)]),
            Expect::Same,
        ),
        case(
            "long-ascii",
            b"top",
            body(vec![file(&[&x300], 5)]),
            Expect::Same,
        ),
        case(
            "long-cjk",
            b"top",
            body(vec![file(&[&cjk], 5)]),
            Expect::Same,
        ),
        case(
            "bad-utf8",
            b"top",
            body(vec![file(&[b"caf\xe9.txt", b"\xff\xfe"], 5)]),
            Expect::Same,
        ),
        case(
            "control",
            b"top",
            body(vec![file(&[b"a\x01b\x1f.txt"], 5)]),
            Expect::Same,
        ),
        case(
            "bidi",
            b"top",
            body(vec![file(&["evil\u{202e}txt.exe".as_bytes()], 5)]),
            Expect::Same,
        ),
        case(
            "duplicates",
            b"top",
            body(vec![file(&[b"real.txt"], 5), file(&[b"real.txt"], 6)]),
            Expect::Same,
        ),
        case(
            "file-and-folder",
            b"top",
            body(vec![file(&[b"d"], 5), file(&[b"d", b"in.txt"], 6)]),
            Expect::Same,
        ),
        case(
            "zero-size",
            b"top",
            body(vec![file(&[b"empty"], 0), file(&[b"e2"], 0)]),
            Expect::Same,
        ),
        case(
            "padding-no-path",
            b"top",
            vec![
                file(&[b"a"], 100),
                pad(PIECE as i64 - 100),
                file(&[b"b"], 7),
            ],
            Expect::Same,
        ),
        case(
            "symlinks",
            b"top",
            body(vec![
                link(&[b"to-real"], &[b"real.txt"], 0),
                link(&[b"escape"], &[b"..", b"..", b"etc", b"passwd"], 0),
                link(&[b"sized"], &[b"real.txt"], 999),
            ]),
            Expect::Same,
        ),
        case("dot-name", b"..", body(vec![]), Expect::Same),
        case(
            "slash",
            b"top",
            body(vec![file(&[b"a/b.txt"], 5)]),
            Expect::Differ(
                strings(&["top/real.txt", "top/a/b.txt"]),
                strings(&["top/real.txt", "top/ab.txt"]),
                "a separator inside a component is a folder level; libtorrent drops it",
            ),
        ),
        case(
            "backslash",
            b"top",
            body(vec![file(&[b"win\\dir\\c.txt"], 5)]),
            Expect::Differ(
                strings(&["top/real.txt", "top/win/dir/c.txt"]),
                strings(&["top/real.txt", "top/windirc.txt"]),
                "`\\` is split like `/`; libtorrent drops it",
            ),
        ),
        case("slash-name", b"a/b", body(vec![]), Expect::Same),
        case(
            "name-241-255",
            b"top",
            body(vec![file(&[&y250], 5)]),
            Expect::Differ(
                vec![
                    "top/real.txt".into(),
                    format!("top/{}.bin", "y".repeat(250)),
                ],
                vec![
                    "top/real.txt".into(),
                    format!("top/{}.bin", "y".repeat(240)),
                ],
                "names that fit NAME_MAX are kept whole; libtorrent cuts past 240 bytes",
            ),
        ),
        case(
            "case-only",
            b"top",
            body(vec![file(&[b"REAL.txt"], 5), file(&[b"Real.TXT"], 5)]),
            Expect::Differ(
                strings(&["top/real.txt", "top/REAL.txt", "top/Real.TXT"]),
                strings(&["top/real.txt", "top/REAL.1.txt", "top/Real.2.TXT"]),
                "names differing in case are distinct on Linux; libtorrent renames them",
            ),
        ),
        edited("short-pieces", Expect::Refused, |info| {
            set(info, "pieces", V::Bytes(vec![0; 40]))
        }),
        edited("pieces-not-20", Expect::Refused, |info| {
            set(info, "pieces", V::Bytes(vec![0; 61]))
        }),
        edited("piece-length-0", Expect::Refused, |info| {
            set(info, "piece length", V::Int(0))
        }),
        edited("negative-length", Expect::Refused, |info| {
            let files = V::List(vec![dict(vec![
                ("length", V::Int(-5)),
                ("path", V::List(vec![V::str("a")])),
            ])]);
            set(info, "files", files)
        }),
        edited("no-path", Expect::Refused, |info| {
            set(
                info,
                "files",
                V::List(vec![dict(vec![("length", V::Int(40_000))])]),
            )
        }),
        edited("empty-path", Expect::Refused, |info| {
            let files = V::List(vec![dict(vec![
                ("length", V::Int(40_000)),
                ("path", V::List(vec![])),
            ])]);
            set(info, "files", files)
        }),
        edited("single-name-dotdot", Expect::Refused, |info| {
            if let V::Dict(d) = info {
                d.remove(&b"files"[..]);
            }
            set(info, "length", V::Int(40_000));
            set(info, "name", V::str(".."));
        }),
        edited(
            "piece-length-48k",
            Expect::OnlyWeRefuse("piece lengths must be a power of two of 16 KiB or more"),
            |info| {
                // 40,000 bytes in 48 KiB pieces: one piece, one hash.
                set(info, "piece length", V::Int(3 * PIECE as i64));
                set(info, "pieces", V::Bytes(vec![0; 20]));
            },
        ),
    ]
}

/// ringtorrent's reading: `info --json`, or `None` when it refuses the torrent.
fn ours(torrent: &Path) -> Option<Value> {
    let out = run_bounded(
        ringtorrent().arg("info").arg("--json").arg(torrent),
        Duration::from_secs(60),
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// libtorrent's readings of `torrents`, in order (see tests/support/lt_paths.py).
fn theirs(torrents: &[PathBuf]) -> Vec<Value> {
    let out = run_bounded(
        Command::new("/usr/bin/python3")
            .arg(support("lt_paths.py"))
            .args(torrents),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "lt_paths.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), torrents.len());
    lines
}

/// The non-padding files' paths (with a symlink's target as `path -> target`).
fn real_paths(files: &Value, target_key: &str) -> Vec<String> {
    files
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !(f["padding"] == true || f["pad"] == true))
        .map(|f| {
            let path = f["path"].as_str().unwrap().to_owned();
            match f.get(target_key) {
                Some(Value::String(t)) if *t != path => format!("{path} -> {t}"),
                _ => path,
            }
        })
        .collect()
}

fn plain(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.split(" -> ").next().unwrap().to_owned())
        .collect()
}

#[test]
fn both_clients_read_odd_torrents_alike() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let files: Vec<PathBuf> = cases
        .iter()
        .map(|c| {
            let path = dir.path().join(format!("{}.torrent", c.label));
            std::fs::write(&path, &c.bytes).unwrap();
            path
        })
        .collect();
    let lt = theirs(&files);
    let mut failures = Vec::new();
    println!(
        "{:<20} {:<44} {:<44} note",
        "case", "ringtorrent", "libtorrent"
    );
    for ((c, path), lt) in cases.iter().zip(&files).zip(&lt) {
        let rt = ours(path);
        let rt_paths = rt
            .as_ref()
            .map(|v| real_paths(&v["files"], "symlink_target"));
        let lt_paths = (lt["ok"] == true).then(|| real_paths(&lt["files"], "target"));
        let show = |p: &Option<Vec<String>>| match p {
            Some(p) => p.join(" | "),
            None => "(refused)".to_owned(),
        };
        let note = match &c.expect {
            Expect::Differ(_, _, why) | Expect::OnlyWeRefuse(why) => format!("differs: {why}"),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<44} {:<44} {note}",
            c.label,
            show(&rt_paths),
            show(&lt_paths)
        );
        let ok = match (&c.expect, &rt_paths, &lt_paths) {
            // Symlink targets: libtorrent points an invalid link at itself, ringtorrent at
            // nothing; both print the bare path then.
            (Expect::Same, Some(a), Some(b)) => {
                a == b
                    && rt.as_ref().unwrap()["total_length"] == lt["total_size"]
                    && rt.as_ref().unwrap()["name"] == lt["name"]
            }
            (Expect::Differ(want_rt, want_lt, _), Some(a), Some(b)) => {
                plain(a) == *want_rt && plain(b) == *want_lt
            }
            (Expect::Refused, None, None) => true,
            (Expect::OnlyWeRefuse(_), None, Some(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}: ringtorrent {} / libtorrent {} ({})",
                c.label,
                show(&rt_paths),
                show(&lt_paths),
                lt["error"]
            ));
        }
        // Whatever the case, nothing ringtorrent accepts may leave its folder.
        if let Some(paths) = &rt_paths {
            for p in plain(paths) {
                assert!(
                    p.split('/')
                        .all(|c| !matches!(c, "" | "." | "..") && c.len() <= 255),
                    "{}: {p:?}",
                    c.label
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The files every case above exercises, in one torrent a libtorrent seed serves.
fn mixed() -> Vec<Entry> {
    vec![
        file(&[b"real.txt"], 20_000),
        file(&[b"a/b.txt"], 3000),
        file(&[b"..", b"..", b"up.txt"], 1000),
        file(&[&long("x", 300, ".mkv")], 5000),
        file(&[b"caf\xe9.txt"], 77),
        file(&[b"real.txt"], 4000),
        file(&[b"d"], 10),
        file(&[b"d", b"in.txt"], 11),
        file(&[b"empty"], 0),
        pad(PIECE as i64 * 3 - (20_000 + 3000 + 1000 + 5000 + 77 + 4000 + 10 + 11)),
        file(&[b"sub", b"aligned.bin"], 40_000),
        link(&[b"to-real"], &[b"real.txt"], 0),
        link(&[b"escape"], &[b"..", b"..", b"etc", b"passwd"], 0),
        file(&[b"ctl\x01.txt"], 9),
    ]
}

/// Every regular file and symlink under `root`, relative, `/`-separated.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn download_from_libtorrent_lands_at_the_sanitised_paths() {
    let dir = tempfile::tempdir().unwrap();
    let files = mixed();
    let torrent_path = dir.path().join("mixed.torrent");
    std::fs::write(&torrent_path, torrent(b"top", &files)).unwrap();

    // Lay the payload out where libtorrent expects it, from its own reading.
    let lt = theirs(std::slice::from_ref(&torrent_path)).remove(0);
    assert_eq!(lt["ok"], true, "{lt}");
    let data = payload(&files);
    let seed_dir = dir.path().join("seed");
    let lt_files = lt["files"].as_array().unwrap();
    assert_eq!(lt_files.len(), files.len());
    let mut at = 0usize;
    let mut contents = Vec::new();
    for (entry, f) in files.iter().zip(lt_files) {
        let n = entry.payload_len();
        let bytes = data[at..at + n].to_vec();
        at += n;
        contents.push(bytes.clone());
        if f["pad"] == true || f["symlink"] == true {
            continue;
        }
        let path = seed_dir.join(f["path"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }

    let rt = ours(&torrent_path).expect("ringtorrent reads it");
    let rt_files = rt["files"].as_array().unwrap();
    let mut expected = BTreeSet::new();
    for (entry, f) in files.iter().zip(rt_files) {
        if f["padding"] == true || entry.attr == Some("l") {
            continue;
        }
        expected.insert(f["path"].as_str().unwrap().to_owned());
    }
    // Renamed and sanitised files show the name as given.
    assert_eq!(
        rt_files[1]["given_path"],
        serde_json::json!(["top", "a/b.txt"])
    );
    assert_eq!(rt_files[5]["path"], "top/real.1.txt");
    assert_eq!(
        rt_files[5]["given_path"],
        serde_json::json!(["top", "real.txt"])
    );
    let text = common::run_ok(ringtorrent().arg("info").arg(&torrent_path));
    for line in [
        r#"top/a/b.txt  (given as ["top", "a/b.txt"])"#,
        "top/real.1.txt  (given as top/real.txt)",
        "top/up.txt  (given as top/../../up.txt)",
        "top/to-real -> top/real.txt",
        "top/escape -> (not in the torrent)",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert_eq!(rt_files[11]["symlink_target"], "top/real.txt");
    assert_eq!(rt_files[12]["symlink_target"], Value::Null);

    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let prepared = interop::Prepared {
        label: "mixed".into(),
        torrent: torrent_path.clone(),
        data: seed_dir.clone(),
    };
    let (seed, port) = interop::lt_seed(&prepared, &[], &work);
    for io in interop::BACKENDS {
        // `inner` is the output folder: its parent must hold nothing else afterwards.
        let outer = dir.path().join(format!("dl-{io}"));
        let out = outer.join("inner");
        let result = interop::rt_download(
            &prepared,
            &out,
            io,
            &[format!("127.0.0.1:{port}")],
            &[],
            &work,
        );
        if let Err(e) = interop::download_ok(io, &result) {
            panic!("{e}\nseed log:\n{}", seed.log());
        }
        assert_eq!(
            std::fs::read_dir(&outer).unwrap().count(),
            1,
            "{io}: something was written beside the output folder"
        );
        // BEP 47 links whose target is in the torrent are made beside the files, relative
        // as libtorrent makes them; the one leading out is not.
        let mut on_disk = expected.clone();
        on_disk.insert("top/to-real".to_owned());
        assert_eq!(walk(&out), on_disk, "{io}: the files on disk");
        assert_eq!(
            std::fs::read_link(out.join("top/to-real")).unwrap(),
            Path::new("real.txt")
        );
        for (i, f) in rt_files.iter().enumerate() {
            if expected.contains(f["path"].as_str().unwrap()) {
                let got = std::fs::read(out.join(f["path"].as_str().unwrap())).unwrap();
                assert!(got == contents[i], "{io}: {} differs", f["path"]);
            }
        }
    }
    // libtorrent, leeching the same torrent from the same seed, makes the same link.
    let lt_out = dir.path().join("lt-leech");
    let leech = common::run_bounded(
        std::process::Command::new("/usr/bin/python3")
            .arg(common::support("lt_leech.py"))
            .arg(&torrent_path)
            .arg(&lt_out)
            .args(["--peer", &format!("127.0.0.1:{port}"), "--timeout", "60"]),
        std::time::Duration::from_secs(90),
    );
    assert!(
        leech.status.success(),
        "lt_leech.py: {}",
        String::from_utf8_lossy(&leech.stderr)
    );
    assert_eq!(
        std::fs::read_link(lt_out.join("top/to-real")).unwrap(),
        Path::new("real.txt"),
        "libtorrent's link"
    );
    drop(seed);
}
