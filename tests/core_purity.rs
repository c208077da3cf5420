//! The protocol core must stay sans-IO: no sockets, files, clock or global randomness, so the
//! io_uring driver, the epoll driver and the seeded simulator all run the same code. Bencode is
//! held to the same rule because the core decodes with it.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "std::fs",
    "std::net",
    "std::io::Read",
    "std::io::Write",
    "thread_rng",
    "rand::random",
    "std::thread",
    "std::env",
];

fn scan(dir: &Path, hits: &mut Vec<String>, files: &mut usize) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, hits, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            *files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                for word in FORBIDDEN {
                    if line.contains(word) {
                        hits.push(format!("{}:{}: {word}", path.display(), n + 1));
                    }
                }
            }
        }
    }
}

#[test]
fn core_and_bencode_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    let mut files = 0;
    for dir in ["core", "bencode"] {
        scan(&root.join(dir), &mut hits, &mut files);
    }
    assert!(
        files >= 5,
        "expected the core's sources, found {files} files"
    );
    assert!(
        hits.is_empty(),
        "I/O, clock or randomness in the sans-IO core:\n{}",
        hits.join("\n")
    );
}
