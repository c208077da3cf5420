//! The tracker client's protocol half stays sans-IO like the core: only `src/tracker/io.rs`
//! may touch sockets, threads, name resolution or the clock. Addresses (`SocketAddr`) are
//! plain values and allowed. The check resolves imports (`common/purity.rs`).

mod common;

use std::path::Path;

use common::purity::{check_dir, check_source, Rules, ADDRESS_TYPES, PRINTING};

const TRACKER: Rules = Rules {
    forbidden: &[
        "std::fs",
        "std::net",
        "std::io",
        "std::thread",
        "std::env",
        "std::process",
        "std::time::Instant",
        "std::time::SystemTime",
        "Instant",
        "SystemTime",
        "libc",
        "mio",
        "rustls",
        "rand",
    ],
    allowed: ADDRESS_TYPES,
    macros: PRINTING,
};

#[test]
fn tracker_protocol_code_does_no_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tracker");
    let (hits, files) = check_dir(&dir, &TRACKER, &["io.rs"]);
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

#[test]
fn resolving_a_host_name_is_io() {
    let code = "use std::net::ToSocketAddrs; fn f() { let _ = \"a:1\".to_socket_addrs(); }";
    assert!(!check_source(code, &TRACKER).is_empty());
}
