//! The protocol core must stay sans-IO: no sockets, files, clock, threads, environment or
//! global randomness, so the io_uring driver, the epoll driver and the seeded simulator all
//! run the same code. Bencode is held to the same rule because the core decodes with it, and
//! so are the DHT (src/dht) and uTP (src/utp), which are core too.
//!
//! The check parses each file and resolves every path through its `use` items
//! (`common/purity.rs`), so `use std::{fs, time::Instant as Clock}` is caught and a comment
//! that mentions `std::net` is not.

mod common;

use std::path::Path;

use common::purity::{check_dir, check_source, Rules, ADDRESS_TYPES, PRINTING};

/// What the core may not name. Address types are plain values and allowed.
const CORE: Rules = Rules {
    forbidden: &[
        "std::fs",
        "std::net",
        "std::io",
        "std::thread",
        "std::env",
        "std::process",
        "std::os",
        "std::time::Instant",
        "std::time::SystemTime",
        "std::collections::hash_map::RandomState",
        "Instant",
        "SystemTime",
        "libc",
        "mio",
        "io_uring",
        "memmap2",
        "rayon",
        "rand",
        "getrandom",
        "tracing",
    ],
    allowed: ADDRESS_TYPES,
    macros: PRINTING,
};

#[test]
fn core_bencode_dht_and_utp_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    let mut files = 0;
    for dir in ["core", "bencode", "dht", "utp"] {
        let (h, n) = check_dir(&root.join(dir), &CORE, &[]);
        hits.extend(h);
        files += n;
    }
    assert!(
        files >= 20,
        "expected the core's sources, found {files} files"
    );
    assert!(
        hits.is_empty(),
        "I/O, clock or randomness in the sans-IO core:\n{}",
        hits.join("\n")
    );
}

/// Local service discovery's codec and scheduler (`src/lsd.rs`, its tests in `src/lsd/`)
/// are sans-IO too: the sockets are the client's (`src/client/lsd.rs`).
#[test]
fn lsd_does_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let source = std::fs::read_to_string(root.join("lsd.rs")).unwrap();
    let mut hits = check_source(&source, &CORE);
    let (h, _) = check_dir(&root.join("lsd"), &CORE, &[]);
    hits.extend(h);
    assert!(source.contains("pub struct Lsd"), "src/lsd.rs moved?");
    assert!(
        hits.is_empty(),
        "I/O, clock or randomness in src/lsd:\n{}",
        hits.join("\n")
    );
}

#[test]
fn the_check_sees_through_imports_and_not_comments() {
    let caught = [
        "use std::{fs, net::TcpStream};",
        "use std::time::Instant as Clock; fn f() { let _ = Clock::now(); }",
        "use std::time; fn f() { let _ = time::SystemTime::now(); }",
        "use std::io::{self, Read};",
        "fn f() { let _ = ::std::env::var(\"X\"); }",
        "fn f() { std::thread::spawn(|| {}); }",
        "use std::collections::hash_map::RandomState;",
        "fn f() { println!(\"x\"); }",
        "use std::net::{SocketAddr, UdpSocket};",
    ];
    for code in caught {
        assert!(!check_source(code, &CORE).is_empty(), "missed: {code}");
    }
    let fine = [
        "// std::fs and Instant::now are only words here",
        "const DOC: &str = \"std::net::TcpStream\";",
        "use std::net::SocketAddr; use ::core::net::IpAddr; fn f(_: SocketAddr, _: IpAddr) {}",
        "use std::collections::{BTreeMap, HashMap};",
        "use crate::core::time::Time; fn f(t: Time) -> Time { t }",
    ];
    for code in fine {
        assert_eq!(check_source(code, &CORE), Vec::<String>::new(), "{code}");
    }
}

/// The metainfo parser is what the core calls on fetched metadata (`Info::from_bytes`), and
/// BEP 52's file tree and merkle functions and path sanitising are pure: only
/// `metainfo/create.rs` reads files. (Sanitising's hash sets are only looked up, never
/// iterated, so their per-process seeds change no result.)
#[test]
fn metainfo_parsing_and_merkle_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metainfo");
    let mut hits = Vec::new();
    for file in ["mod.rs", "files.rs", "sanitize.rs", "v2.rs", "merkle.rs"] {
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(source.len() > 1000, "src/metainfo/{file} moved?");
        hits.extend(
            check_source(&source, &CORE)
                .into_iter()
                .map(|h| format!("{file}: {h}")),
        );
    }
    assert!(
        hits.is_empty(),
        "I/O, clock or randomness in metainfo parsing:\n{}",
        hits.join("\n")
    );
}
