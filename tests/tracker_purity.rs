//! The tracker client's protocol half stays sans-IO like the core: only `src/tracker/io.rs`
//! may touch sockets, threads, name resolution or the clock. Addresses (`SocketAddr`) are
//! plain values and allowed.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "std::fs",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "ToSocketAddrs",
    "std::io::Read",
    "std::io::Write",
    "thread_rng",
    "rand::random",
    "std::thread",
    "std::env",
];

#[test]
fn tracker_protocol_code_does_no_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tracker");
    let mut stack = vec![dir];
    let mut hits = Vec::new();
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "io.rs")
            {
                files += 1;
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
    assert!(
        files >= 5,
        "expected the tracker's sources, found {files} files"
    );
    assert!(
        hits.is_empty(),
        "I/O outside src/tracker/io.rs:\n{}",
        hits.join("\n")
    );
}
