use std::collections::BTreeMap;

use super::*;
use crate::bencode::OwnedValue as V;

fn s(text: &str) -> V {
    V::str(text)
}

fn dict(entries: Vec<(&str, V)>) -> V {
    V::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn file(len: i64, path: &[&str]) -> V {
    dict(vec![
        ("length", V::Int(len)),
        ("path", V::List(path.iter().map(|c| s(c)).collect())),
    ])
}

/// A valid multi-file info dictionary with the right number of piece hashes.
fn multi_info(files: Vec<V>, piece_len: i64, total: i64) -> Vec<(&'static str, V)> {
    let count = (total + piece_len - 1) / piece_len;
    vec![
        ("name", s("top")),
        ("piece length", V::Int(piece_len)),
        ("pieces", V::Bytes(vec![7u8; 20 * count as usize])),
        ("files", V::List(files)),
    ]
}

fn torrent(info: Vec<(&str, V)>) -> Vec<u8> {
    dict(vec![
        ("announce", s("http://127.0.0.1:6969/announce")),
        ("info", dict(info)),
    ])
    .to_bytes()
}

fn parse(info: Vec<(&str, V)>) -> Result<Torrent, MetainfoError> {
    Torrent::from_bytes(&torrent(info))
}

fn with(mut info: Vec<(&'static str, V)>, key: &'static str, value: V) -> Vec<(&'static str, V)> {
    info.retain(|(k, _)| *k != key);
    info.push((key, value));
    info
}

fn single(len: i64) -> Vec<(&'static str, V)> {
    vec![
        ("name", s("file.bin")),
        ("piece length", V::Int(16384)),
        (
            "pieces",
            V::Bytes(vec![1u8; 20 * ((len as usize).div_ceil(16384))]),
        ),
        ("length", V::Int(len)),
    ]
}

#[test]
fn single_file_torrent() {
    let t = parse(single(40_000)).unwrap();
    let info = &t.info;
    assert!(info.is_single_file());
    assert_eq!(info.name(), "file.bin");
    assert_eq!(
        (
            info.total_len(),
            info.lengths().piece_count(),
            info.lengths().last_piece_len()
        ),
        (40_000, 3, 40_000 - 32_768)
    );
    assert_eq!(info.files()[0].path, vec!["file.bin"]);
    assert_eq!(
        t.trackers,
        vec![vec!["http://127.0.0.1:6969/announce".to_string()]]
    );
    assert!(!info.is_private());
}

#[test]
fn multi_file_offsets_and_spans() {
    let files = vec![
        file(10_000, &["a.txt"]),
        file(0, &["empty"]),
        file(30_000, &["sub", "b.bin"]),
        file(5, &["c"]),
    ];
    let t = parse(multi_info(files, 16384, 40_005)).unwrap();
    let info = &t.info;
    let offsets: Vec<u64> = info.files().iter().map(|f| f.offset).collect();
    assert_eq!(offsets, vec![0, 10_000, 10_000, 40_000]);
    assert_eq!(
        info.files()[2].relative_path(),
        std::path::PathBuf::from("top/sub/b.bin")
    );
    // Piece 0 covers all of a.txt and the start of b.bin; the empty file yields no span.
    let p0: Vec<FileSpan> = info.piece_spans(info.lengths().piece(0).unwrap()).collect();
    assert_eq!(
        p0,
        vec![
            FileSpan {
                file: 0,
                file_offset: 0,
                len: 10_000,
                padding: false
            },
            FileSpan {
                file: 2,
                file_offset: 0,
                len: 6384,
                padding: false
            },
        ]
    );
    // The last piece crosses from b.bin into c.
    let last = info.lengths().piece(2).unwrap();
    let spans: Vec<FileSpan> = info.piece_spans(last).collect();
    assert_eq!(
        spans.iter().map(|s| s.len).sum::<u64>(),
        u64::from(info.lengths().len_of(last))
    );
    assert_eq!(
        spans.last().unwrap(),
        &FileSpan {
            file: 3,
            file_offset: 0,
            len: 5,
            padding: false
        }
    );
    // A block inside one file.
    let block = info.lengths().block_at(1, 16000, 100).unwrap();
    assert_eq!(
        info.block_spans(block).collect::<Vec<_>>(),
        vec![FileSpan {
            file: 2,
            file_offset: 22_384,
            len: 100,
            padding: false
        }]
    );
    // Spans past the end are cut off rather than invented.
    assert_eq!(info.spans(40_000, 1_000).map(|s| s.len).sum::<u64>(), 5);
}

#[test]
fn padding_files_are_understood() {
    let pad = dict(vec![
        ("attr", s("p")),
        ("length", V::Int(6384)),
        ("path", V::List(vec![s(".pad"), s("6384")])),
    ]);
    let files = vec![
        file(10_000, &["a"]),
        pad.clone(),
        file(16384, &["b"]),
        pad,
        file(1, &["c"]),
    ];
    let t = parse(multi_info(files, 16384, 10_000 + 6384 + 16384 + 6384 + 1)).unwrap();
    let spans: Vec<FileSpan> = t
        .info
        .piece_spans(t.info.lengths().piece(0).unwrap())
        .collect();
    assert!(spans[1].padding && !spans[0].padding);
    // Two padding files with the same path are not a duplicate: they are never created.
    assert!(t.info.files()[3].attr.padding);
}

#[test]
fn info_hash_uses_exact_bytes_even_unsorted() {
    // Keys out of order and an unknown key: re-encoding would sort them and change the hash.
    let info =
        b"d4:name1:x12:piece lengthi16384e6:lengthi3e6:pieces20:AAAAAAAAAAAAAAAAAAAA3:zzz1:qe";
    let mut file = b"d8:announce9:http://x/4:info".to_vec();
    file.extend_from_slice(info);
    file.push(b'e');
    let t = Torrent::from_bytes(&file).unwrap();
    let expected: [u8; 20] = Sha1::digest(info).into();
    assert_eq!(t.info_hash().as_bytes(), &expected);
    assert_eq!(t.info.raw(), info);
    let resorted = crate::bencode::decode(info)
        .unwrap()
        .to_owned_value()
        .to_bytes();
    assert_ne!(Sha1::digest(&resorted).as_slice(), expected.as_slice());
}

#[test]
fn trackers_tiers_and_private() {
    let root = dict(vec![
        ("announce", s("http://a/announce")),
        (
            "announce-list",
            V::List(vec![
                V::List(vec![s("http://b/"), s(""), s("http://b/")]),
                V::List(vec![]),
                V::List(vec![s("udp://c:80")]),
                s("junk"),
            ]),
        ),
        ("url-list", s("http://seed/")),
        ("info", dict(with(single(1), "private", V::Int(1)))),
    ]);
    let t = Torrent::from_bytes(&root.to_bytes()).unwrap();
    assert_eq!(
        t.trackers,
        vec![
            vec!["http://b/".to_string()],
            vec!["udp://c:80".to_string()]
        ]
    );
    assert_eq!(t.url_list, vec!["http://seed/".to_string()]);
    assert!(t.info.is_private());
    let none = Torrent::from_bytes(&dict(vec![("info", dict(single(1)))]).to_bytes()).unwrap();
    assert!(none.trackers.is_empty());
}

#[test]
fn hostile_lengths() {
    assert_eq!(
        parse(with(single(1), "length", V::Int(-5))),
        Err(MetainfoError::NegativeLength {
            field: "info.length".into(),
            value: -5
        })
    );
    assert_eq!(
        parse(with(single(1), "piece length", V::Int(3 << 14))),
        Err(MetainfoError::Lengths(LengthsError::PieceLength(3 << 14)))
    );
    assert_eq!(
        parse(with(single(1), "piece length", V::Int(128 << 20))),
        Err(MetainfoError::Lengths(LengthsError::PieceLength(128 << 20)))
    );
    assert_eq!(
        parse(with(single(1), "piece length", V::Int(-16384))),
        Err(MetainfoError::NegativeLength {
            field: "info.piece length".into(),
            value: -16384
        })
    );
    assert_eq!(
        parse(with(single(1), "length", V::Int(i64::MAX))),
        Err(MetainfoError::TotalTooLarge)
    );
    assert_eq!(
        parse(with(single(0), "pieces", V::Bytes(vec![]))),
        Err(MetainfoError::Lengths(LengthsError::TotalLength(0)))
    );
    assert_eq!(
        parse(with(single(1), "pieces", V::Bytes(vec![0; 21]))),
        Err(MetainfoError::PiecesNotMultipleOf20(21))
    );
    assert_eq!(
        parse(with(single(1), "pieces", V::Bytes(vec![0; 40]))),
        Err(MetainfoError::PieceCountMismatch {
            expected: 1,
            found: 2
        })
    );
    let overflow = vec![file(i64::MAX, &["a"]), file(i64::MAX, &["b"])];
    assert_eq!(
        parse(multi_info(overflow, 16384, 1)),
        Err(MetainfoError::TotalTooLarge)
    );
}

#[test]
fn hostile_structure() {
    assert!(matches!(
        Torrent::from_bytes(b"i1e"),
        Err(MetainfoError::WrongType {
            expected: "dictionary",
            ..
        })
    ));
    assert!(
        matches!(Torrent::from_bytes(b"d4:infoi1ee"), Err(MetainfoError::WrongType { ref field, .. }) if field == "info")
    );
    assert!(matches!(
        Torrent::from_bytes(b"d4:info"),
        Err(MetainfoError::Bencode(_))
    ));
    assert_eq!(
        Torrent::from_bytes(b"de"),
        Err(MetainfoError::Missing("info".into()))
    );
    let mut no_name = single(1);
    no_name.retain(|(k, _)| *k != "name");
    assert_eq!(
        parse(no_name),
        Err(MetainfoError::Missing("info.name".into()))
    );
    assert_eq!(
        parse(with(
            multi_info(vec![file(1, &["a"])], 16384, 1),
            "length",
            V::Int(1)
        )),
        Err(MetainfoError::LengthAndFiles)
    );
    let mut neither = single(1);
    neither.retain(|(k, _)| *k != "length");
    assert_eq!(parse(neither), Err(MetainfoError::NoLayout));
    assert_eq!(
        parse(multi_info(vec![], 16384, 1)),
        Err(MetainfoError::NoFiles)
    );
    assert!(
        matches!(parse(multi_info(vec![s("x")], 16384, 1)), Err(MetainfoError::WrongType { ref field, .. }) if field == "info.files[0]")
    );
    assert!(
        matches!(parse(with(single(1), "name", V::Int(3))), Err(MetainfoError::WrongType { ref field, .. }) if field == "info.name")
    );
    let big = vec![0u8; crate::limits::MAX_TORRENT_FILE_LEN + 1];
    assert!(matches!(
        Torrent::from_bytes(&big),
        Err(MetainfoError::TooLarge { .. })
    ));
}

fn paths(t: &Torrent) -> Vec<String> {
    t.info.files().iter().map(FileEntry::display_path).collect()
}

fn bytes_file(len: i64, path: &[&[u8]]) -> V {
    dict(vec![
        ("length", V::Int(len)),
        (
            "path",
            V::List(path.iter().map(|c| V::Bytes(c.to_vec())).collect()),
        ),
    ])
}

/// Every rule of `sanitize`, through a whole torrent: the path each file gets, and the path
/// as given kept beside it.
#[test]
fn hostile_paths_are_made_safe() {
    let long = format!("{}.mkv", "x".repeat(300));
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (vec![b".."], "top/_"),
        (vec![b"a", b"..", b"b"], "top/a/b"),
        (vec![b".", b"c"], "top/c"),
        (vec![b"/etc/passwd"], "top/etc/passwd"),
        (vec![b"a/../../b2"], "top/a/b2"),
        (vec![b"..\\..\\win"], "top/win"),
        (vec![b"d", b"", b"e"], "top/d/_/e"),
        (vec![b"n\0ul"], "top/n_ul"),
        (vec![b"caf\xe9"], "top/caf_"),
        (vec!["rtl\u{202e}txt.exe".as_bytes()], "top/rtltxt.exe"),
    ];
    let files: Vec<V> = cases.iter().map(|(p, _)| bytes_file(1, p)).collect();
    let mut all = files;
    all.push(bytes_file(1, &[long.as_bytes()]));
    let n = all.len() as i64;
    let t = parse(multi_info(all, 16384, n)).unwrap();
    let got = paths(&t);
    for ((given, want), got) in cases.iter().zip(&got) {
        assert_eq!(got, want, "{given:?}");
    }
    assert_eq!(got.last().unwrap(), &format!("top/{}.mkv", "x".repeat(240)));
    let first = &t.info.files()[0];
    assert_eq!(first.display_given_path().as_deref(), Some("top/.."));
    for f in t.info.files() {
        for c in &f.path {
            assert!(!matches!(c.as_str(), "" | "." | ".."), "{c:?}");
            assert!(!c.contains(['/', '\\', '\0']) && c.len() <= 255, "{c:?}");
        }
    }
    // A path that was already plain keeps no second copy.
    let plain = parse(multi_info(vec![file(1, &["ok"])], 16384, 1)).unwrap();
    assert_eq!(plain.info.files()[0].given_path, None);
}

#[test]
fn names_are_sanitised_too() {
    // The name stays one level: its separators are dropped, as libtorrent drops them.
    let t = parse(with(single(1), "name", s("a/b.txt"))).unwrap();
    assert_eq!(t.info.files()[0].path, vec!["ab.txt"]);
    assert_eq!(t.info.given_name(), Some("a/b.txt"));
    assert_eq!(t.info.name(), "ab.txt");
    // Nothing left of a single file's name: refused, as libtorrent refuses it.
    for name in ["..", ".", "/"] {
        let err = parse(with(single(1), "name", s(name))).unwrap_err();
        assert_eq!(
            err,
            MetainfoError::BadPath {
                field: "info.name".into(),
                reason: PathError::Empty
            },
            "{name:?}"
        );
    }
    // Nothing left of a folder's name: the info hash names it, as in libtorrent.
    let mut info = multi_info(vec![file(1, &["f"])], 16384, 1);
    info = with(info, "name", s(".."));
    let t = parse(info).unwrap();
    let hex = t.info_hash().to_hex();
    assert_eq!(t.info.name(), hex);
    assert_eq!(paths(&t), vec![format!("{hex}/f")]);
    assert_eq!(t.info.given_name(), Some(".."));
    // An empty name becomes `_`.
    let t = parse(with(single(1), "name", s(""))).unwrap();
    assert_eq!(t.info.name(), "_");
}

#[test]
fn what_cannot_be_made_safe_is_still_refused() {
    // A file with no path (not a padding file).
    let err = parse(multi_info(vec![file(1, &[])], 16384, 1)).unwrap_err();
    assert!(
        matches!(err, MetainfoError::BadPath { ref field, reason: PathError::Empty } if field == "info.files[0].path"),
        "{err}"
    );
    let nopath = dict(vec![("length", V::Int(1))]);
    assert_eq!(
        parse(multi_info(vec![nopath], 16384, 1)),
        Err(MetainfoError::Missing("info.files[0].path".into()))
    );
    // Too deep as given, and too deep once a component's separators are split.
    let deep: Vec<&str> = vec!["d"; crate::limits::MAX_PATH_DEPTH + 1];
    assert!(matches!(
        parse(multi_info(vec![file(1, &deep)], 16384, 1)),
        Err(MetainfoError::BadPath {
            reason: PathError::TooDeep(_),
            ..
        })
    ));
    let split = "d/".repeat(crate::limits::MAX_PATH_DEPTH + 1);
    assert!(matches!(
        parse(multi_info(vec![file(1, &[&split])], 16384, 1)),
        Err(MetainfoError::BadPath {
            reason: PathError::TooDeep(_),
            ..
        })
    ));
    // A component of the wrong type.
    let wrong = dict(vec![
        ("length", V::Int(1)),
        ("path", V::List(vec![V::Int(3)])),
    ]);
    assert!(matches!(
        parse(multi_info(vec![wrong], 16384, 1)),
        Err(MetainfoError::WrongType { ref field, .. }) if field == "info.files[0].path[0]"
    ));
}

#[test]
fn duplicate_and_conflicting_paths_are_renamed() {
    let files = vec![
        file(1, &["a", "b"]),
        file(1, &["a", "b"]),
        file(1, &["x.txt"]),
        file(1, &["x.txt"]),
        file(1, &["a"]),
        file(1, &["a/b"]),
    ];
    let t = parse(multi_info(files, 16384, 6)).unwrap();
    assert_eq!(
        paths(&t),
        vec![
            "top/a/b",
            "top/a/b.1",
            "top/x.txt",
            "top/x.1.txt",
            "top/a.1",
            "top/a/b.2"
        ]
    );
    let renamed = &t.info.files()[3];
    assert_eq!(renamed.display_given_path().as_deref(), Some("top/x.txt"));
    assert_eq!(
        t.info.files()[5].display_given_path().as_deref(),
        Some(r#"["top", "a/b"]"#)
    );
}

#[test]
fn padding_without_a_path_and_attributes() {
    let pad = dict(vec![("attr", s("p")), ("length", V::Int(16383))]);
    let exe = dict(vec![
        ("attr", s("xh")),
        ("length", V::Int(1)),
        ("path", V::List(vec![s("run.sh")])),
    ]);
    let t = parse(multi_info(vec![exe, pad, file(5, &["b"])], 16384, 16389)).unwrap();
    let f = t.info.files();
    assert_eq!(f[1].display_path(), "top/.pad/16383");
    assert!(f[1].attr.padding && f[1].given_path.is_none());
    assert!(f[0].attr.executable && f[0].attr.hidden && !f[0].attr.padding);
    assert_eq!(f[2].offset, 16384);
    // Padding files named alike are never renamed: they are never created.
    let pads = vec![
        file(1, &["a"]),
        dict(vec![
            ("attr", s("p")),
            ("length", V::Int(3)),
            ("path", V::List(vec![s(".pad"), s("3")])),
        ]),
        file(1, &["b"]),
        dict(vec![
            ("attr", s("p")),
            ("length", V::Int(3)),
            ("path", V::List(vec![s(".pad"), s("3")])),
        ]),
    ];
    let t = parse(multi_info(pads, 16384, 8)).unwrap();
    assert_eq!(paths(&t)[3], "top/.pad/3");
}

fn link(path: &[&str], target: Option<&[&str]>, length: i64) -> V {
    let mut entries = vec![
        ("attr", s("l")),
        ("length", V::Int(length)),
        ("path", V::List(path.iter().map(|c| s(c)).collect())),
    ];
    if let Some(target) = target {
        entries.push((
            "symlink path",
            V::List(target.iter().map(|c| s(c)).collect()),
        ));
    }
    dict(entries)
}

#[test]
fn symlinks_point_inside_the_torrent_or_nowhere() {
    let files = vec![
        file(1, &["sub", "real.txt"]),
        // Relative to the top folder (BEP 47).
        link(&["l1"], Some(&["sub", "real.txt"]), 0),
        // A folder of the torrent.
        link(&["l2"], Some(&["sub"]), 0),
        // Climbing out: `..` is dropped, which leaves a target in the torrent.
        link(&["l3"], Some(&["..", "..", "sub", "real.txt"]), 0),
        // Outside the torrent: no target.
        link(&["l4"], Some(&["..", "etc", "passwd"]), 0),
        link(&["l5"], Some(&["/etc/passwd"]), 0),
        // Relative to the link's own folder (libtorrent's reading).
        link(&["sub", "l6"], Some(&["real.txt"]), 0),
        // To itself, and to nothing.
        link(&["l7"], Some(&["l7"]), 0),
        link(&["l8"], Some(&[]), 0),
        // A symlink's length is not payload, whatever it says.
        link(&["l9"], Some(&["sub"]), 999),
        // No target at all: a plain empty file.
        link(&["l10"], None, 0),
    ];
    let t = parse(multi_info(files, 16384, 1)).unwrap();
    let f = t.info.files();
    let target = |i: usize| f[i].symlink_target.as_ref().map(|p| p.join("/"));
    assert_eq!(target(1).as_deref(), Some("top/sub/real.txt"));
    assert_eq!(target(2).as_deref(), Some("top/sub"));
    assert_eq!(target(3).as_deref(), Some("top/sub/real.txt"));
    assert_eq!(target(4), None);
    assert_eq!(target(5), None);
    assert_eq!(target(6).as_deref(), Some("top/sub/real.txt"));
    assert_eq!(target(7), None);
    assert_eq!(target(8), None);
    assert_eq!((target(9).as_deref(), f[9].length), (Some("top/sub"), 0));
    assert!(f[1].attr.symlink && !f[10].attr.symlink);
    assert_eq!(t.info.total_len(), 1);
}

#[test]
fn refusals_libtorrent_shares_stay() {
    // Piece hashes missing, a bad piece length, a negative size.
    let short = with(single(40_000), "pieces", V::Bytes(vec![1u8; 40]));
    assert!(matches!(
        parse(short),
        Err(MetainfoError::PieceCountMismatch { .. })
    ));
    assert!(matches!(
        parse(with(single(1), "piece length", V::Int(0))),
        Err(MetainfoError::Lengths(_))
    ));
    assert!(matches!(
        parse(multi_info(vec![file(-1, &["a"])], 16384, 1)),
        Err(MetainfoError::NegativeLength { .. })
    ));
}

#[test]
fn utf8_variants_and_lossy_names() {
    let info = with(single(1), "name.utf-8", s("naïve.txt"));
    assert_eq!(parse(info).unwrap().info.name(), "naïve.txt");
    let info = with(single(1), "name", V::Bytes(b"caf\xe9".to_vec()));
    let t = parse(info).unwrap();
    assert_eq!(t.info.name(), "caf_");
    assert_eq!(t.info.given_name(), Some("caf\u{fffd}"));
}

#[test]
fn info_from_bare_bytes_matches() {
    let bytes = torrent(single(100));
    let t = Torrent::from_bytes(&bytes).unwrap();
    let bare = Info::from_bytes(t.info.raw()).unwrap();
    assert_eq!(bare, t.info);
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn mutated_torrents(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let files = vec![file(10_000, &["a.txt"]), file(0, &["e"]), file(30_000, &["sub", "b"])];
            let mut bytes = torrent(multi_info(files, 16384, 40_000));
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = Torrent::from_bytes(&bytes);
            bytes.truncate(cut.index(bytes.len()));
            let _ = Torrent::from_bytes(&bytes);
        }

        #[test]
        fn parsed_paths_are_always_plain(names in proptest::collection::vec("[./\\\\a\\x00]{0,4}", 1..4)) {
            let path: Vec<&str> = names.iter().map(String::as_str).collect();
            if let Ok(t) = parse(multi_info(vec![file(1, &path)], 16384, 1)) {
                for component in &t.info.files()[0].path {
                    prop_assert!(!component.is_empty() && component != "." && component != "..");
                    prop_assert!(!component.contains('/') && !component.contains('\0'));
                }
            } else {
                prop_assert!(false, "{path:?} refused");
            }
        }
    }
}

/// The value cap counts dictionary keys too: a torrent of `n` files, each with its `length`
/// and `path`, plus [`limits::MAX_TRACKERS`] trackers in tiers of their own, fits a cap of
/// exactly what `limits` budgets for `n` files. The same relation for
/// [`limits::MAX_FILES`] is asserted at compile time.
#[test]
fn the_value_cap_budgets_every_value_of_a_file() {
    use crate::bencode::{decode_with, DecodeErrorKind, Limits};
    let n = 1000;
    let files = (0..n).map(|i| file(1, &[&format!("f{i}")])).collect();
    let tiers = (0..limits::MAX_TRACKERS)
        .map(|i| V::List(vec![s(&format!("http://t{i}.example/announce"))]))
        .collect();
    let bytes = dict(vec![
        ("announce", s("http://t0.example/announce")),
        ("announce-list", V::List(tiers)),
        ("comment", s("many files")),
        ("created by", s("test")),
        ("creation date", V::Int(1)),
        ("info", dict(multi_info(files, 16384, n as i64))),
    ])
    .to_bytes();
    let budget = n * limits::BENCODE_VALUES_PER_FILE + limits::BENCODE_VALUES_OUTSIDE_FILES;
    let fits = Limits {
        max_values: budget,
        ..Limits::default()
    };
    decode_with(&bytes, &fits).expect("the budget holds the torrent");
    // Counting only the values of a file, not its keys, falls short.
    let short = Limits {
        max_values: n * (limits::BENCODE_VALUES_PER_FILE - 2)
            + limits::BENCODE_VALUES_OUTSIDE_FILES,
        ..Limits::default()
    };
    let err = decode_with(&bytes, &short).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::TooManyValues(_)));
    let torrent = Torrent::from_bytes(&bytes).unwrap();
    assert_eq!(torrent.info.files().len(), n);
}

/// `{:#}` prints an error and each of its sources: a wrapped bencode error must be one or the
/// other, or its text appears twice.
#[test]
fn a_bencode_error_prints_its_text_once() {
    use crate::bencode::decode;
    let once = |err: anyhow::Error, inner: &str| {
        let text = format!("{err:#}");
        assert_eq!(text.matches(inner).count(), 1, "{text}");
    };
    let err = Torrent::from_bytes(b"d4:info").unwrap_err();
    let inner = "invalid bencode at byte 7";
    assert!(err.to_string().contains(inner), "{err}");
    once(anyhow::Error::new(err.clone()), inner);
    once(
        anyhow::Error::new(err.clone()).context("reading t.torrent"),
        inner,
    );
    once(anyhow::Error::new(create::CreateError::from(err)), inner);
    let bad = decode(b"d4:info").unwrap_err();
    once(
        anyhow::Error::new(crate::core::wire::UtError::from(bad.clone())),
        inner,
    );
    once(
        anyhow::Error::new(crate::core::wire::ExtendedHandshakeError::from(bad.clone())),
        inner,
    );
    once(
        anyhow::Error::new(crate::tracker::TrackerError::from(bad)),
        inner,
    );
}

#[test]
fn dht_nodes_are_read_malformed_ones_skipped_and_bounded() {
    let pair = |h: &str, p: i64| V::List(vec![s(h), V::Int(p)]);
    let mut nodes = vec![
        pair("127.0.0.1", 6881),
        pair("router.example", 25401),
        pair("bad-port", 70000),
        pair("", 1),
        pair("zero", 0),
        V::List(vec![s("short")]),
        s("junk"),
    ];
    let root = dict(vec![
        ("info", dict(single(1))),
        ("nodes", V::List(nodes.clone())),
    ]);
    let t = Torrent::from_bytes(&root.to_bytes()).unwrap();
    assert_eq!(
        t.nodes,
        vec![
            ("127.0.0.1".to_string(), 6881),
            ("router.example".to_string(), 25401)
        ]
    );
    nodes.extend((0..100).map(|i| pair("10.0.0.1", 1000 + i)));
    let root = dict(vec![("info", dict(single(1))), ("nodes", V::List(nodes))]);
    let t = Torrent::from_bytes(&root.to_bytes()).unwrap();
    assert_eq!(t.nodes.len(), crate::limits::MAX_TORRENT_DHT_NODES);
    // Not a list at all: none.
    let root = dict(vec![("info", dict(single(1))), ("nodes", s("x"))]);
    assert!(Torrent::from_bytes(&root.to_bytes())
        .unwrap()
        .nodes
        .is_empty());
}

/// `create` only writes names that readers keep as they are: a `\` or a control character in
/// a file name on disk would be changed by every reader, so the file could not be found.
#[test]
fn create_refuses_names_readers_would_change() {
    use std::sync::atomic::AtomicU64;
    for bad in ["back\\slash.txt", "tab\there.txt"] {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(top.join("ok.txt"), b"x").unwrap();
        std::fs::write(top.join(bad), b"y").unwrap();
        let opts = create::CreateOptions {
            path: top,
            ..Default::default()
        };
        let err = create::create(&opts, &AtomicU64::new(0)).unwrap_err();
        assert!(
            matches!(err, create::CreateError::BadName { .. }),
            "{bad:?}: {err}"
        );
    }
}
