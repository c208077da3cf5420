//! The error paths of `serve`'s control API on a real `serve`: an unknown info hash on every
//! route, malformed hashes, bad limits (which leave the limits as they were), wrong methods,
//! a truncated body and one over the size bound, and many requests at once (answered, and
//! adding one torrent from eight clients at once adds it once).

mod common;
mod gaps;

use gaps::{raw, Serve};
use serde_json::json;

/// A seeding torrent in serve's data folder, added through the API: (serve, its hash).
fn serve_with_a_torrent(dir: &std::path::Path) -> (Serve, String, Vec<u8>) {
    let (bytes, hash) = gaps::make(&dir.join("data"), "api.bin", 300_000, 64 * 1024);
    let serve = Serve::start(dir, &[]);
    let (code, v) = serve.json("POST", "/torrents", &bytes);
    assert_eq!(code, 201, "{v}");
    (serve, hash.to_hex(), bytes)
}

fn is_error(v: &serde_json::Value) -> bool {
    v["error"].as_str().is_some_and(|e| !e.is_empty())
}

#[test]
fn an_unknown_torrent_is_404_on_every_route_and_a_bad_hash_400() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, known, _) = serve_with_a_torrent(dir.path());
    let unknown = "cd".repeat(20);
    let limits = br#"{"upload": 1000}"#;
    let routes: [(&str, &str, &[u8]); 7] = [
        ("GET", "", b""),
        ("DELETE", "", b""),
        ("POST", "/pause", b""),
        ("POST", "/resume", b""),
        ("PUT", "/limits", limits),
        ("POST", "/limits", limits),
        ("GET", "/peers", b""),
    ];
    for (method, rest, body) in routes {
        let path = format!("/torrents/{unknown}{rest}");
        let (code, v) = serve.json(method, &path, body);
        assert_eq!(code, 404, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(&unknown)),
            "{method} {path}: the error names the hash: {v}"
        );
        // A hash that is not 40 hex digits is a malformed request, whatever the route.
        for bad in ["xyz", &known[..39], &format!("{known}0"), &"g".repeat(40)] {
            let path = format!("/torrents/{bad}{rest}");
            let (code, v) = serve.json(method, &path, body);
            assert_eq!(code, 400, "{method} {path}: {v}");
            assert!(is_error(&v), "{v}");
        }
    }
    // The known torrent was touched by none of it.
    let v = serve.status(&ringtorrent::core::InfoHash::from_hex(&known).unwrap());
    assert_eq!(
        (v["state"].as_str(), v["upload_limit"].as_u64()),
        (Some("seeding"), None)
    );
    let (code, v) = serve.json("GET", "/torrents", b"");
    assert_eq!((code, v.as_array().map(Vec::len)), (200, Some(1)));
}

#[test]
fn bad_limits_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, hash, _) = serve_with_a_torrent(dir.path());
    let path = format!("/torrents/{hash}/limits");
    let (code, v) = serve.json("PUT", &path, br#"{"upload": 5000, "download": 7000}"#);
    assert_eq!(
        (code, &v),
        (200, &json!({"upload": 5000, "download": 7000}))
    );
    let bad: [&[u8]; 13] = [
        br#"{"upload": 0}"#,
        br#"{"upload": -1}"#,
        br#"{"upload": 1.5}"#,
        br#"{"download": "fast"}"#,
        br#"{"download": true}"#,
        br#"{"upload": 1e30}"#,
        br#"{"upload": 18446744073709551616}"#,
        br#"{"upload": 1000, "download": 0}"#,
        br#"{"upload": [1]}"#,
        // Not an object, or a key that means nothing: refused rather than read as "no
        // limits", which would lift both.
        b"[]",
        b"42",
        br#"{"uplaod": 1000}"#,
        b"",
    ];
    for body in bad {
        let (code, v) = serve.json("PUT", &path, body);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(code, 400, "{shown}: {v}");
        assert!(is_error(&v), "{shown}: {v}");
    }
    let v = serve.status(&ringtorrent::core::InfoHash::from_hex(&hash).unwrap());
    assert_eq!(
        (v["upload_limit"].as_u64(), v["download_limit"].as_u64()),
        (Some(5000), Some(7000)),
        "refused limits left the limits as they were: {v}"
    );
    // null lifts one limit, and only it.
    let (code, _) = serve.json("PUT", &path, br#"{"upload": null, "download": 7000}"#);
    assert_eq!(code, 200);
    let v = serve.status(&ringtorrent::core::InfoHash::from_hex(&hash).unwrap());
    assert_eq!(
        (v["upload_limit"].as_u64(), v["download_limit"].as_u64()),
        (None, Some(7000))
    );
}

#[test]
fn wrong_methods_truncated_and_oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, hash, bytes) = serve_with_a_torrent(dir.path());
    for (method, path) in [
        ("PATCH", "/torrents".to_string()),
        ("DELETE", "/torrents".to_string()),
        ("PUT", "/torrents".to_string()),
        ("POST", "/metrics".to_string()),
        ("DELETE", "/metrics".to_string()),
        ("POST", format!("/torrents/{hash}")),
        ("PUT", format!("/torrents/{hash}")),
        ("GET", format!("/torrents/{hash}/pause")),
        ("DELETE", format!("/torrents/{hash}/resume")),
        ("GET", format!("/torrents/{hash}/limits")),
        ("POST", format!("/torrents/{hash}/peers")),
        ("GET", format!("/torrents/{hash}/nothing")),
    ] {
        let (code, v) = serve.json(method, &path, b"");
        assert_eq!(code, 404, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("no route")),
            "{method} {path}: {v}"
        );
    }
    // The torrent is still there and seeding: no wrong method acted on it.
    let h = ringtorrent::core::InfoHash::from_hex(&hash).unwrap();
    assert_eq!(serve.status(&h)["state"], "seeding");

    // A body shorter than its Content-Length (the client gave up half-way): a malformed
    // request, answered 400, nothing added.
    let (other, other_hash) = gaps::make(&dir.path().join("data"), "other.bin", 1_000_000, 16384);
    let half = &other[..other.len() / 2];
    let head = format!(
        "POST /torrents HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        other.len()
    );
    let (code, text) = raw(serve.api, head.as_bytes(), half, true);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("ended after"), "{text}");
    let (code, _) = serve.json("GET", &format!("/torrents/{}", other_hash.to_hex()), b"");
    assert_eq!(code, 404, "a truncated torrent was not added");
    // Cut where what arrived is still valid JSON: refused all the same, and the limits stay
    // as they were.
    let json_head = format!(
        "PUT /torrents/{hash}/limits HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 40\r\n\r\n"
    );
    let (code, text) = raw(serve.api, json_head.as_bytes(), br#"{"upload": 99}"#, true);
    assert_eq!(code, 400, "{text}");
    assert_eq!(serve.status(&h)["upload_limit"], serde_json::Value::Null);
    let long = format!(r#"{{"upload": 99}}{}"#, " ".repeat(1100));
    let json_head = json_head.replace(
        "Content-Length: 40",
        &format!("Content-Length: {}", long.len() + 10),
    );
    let (code, text) = raw(serve.api, json_head.as_bytes(), long.as_bytes(), true);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("ended after"), "{text}");
    assert_eq!(serve.status(&h)["upload_limit"], serde_json::Value::Null);

    // A body announced past the bound is refused before it is read.
    let head = "POST /torrents HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 100000000\r\n\r\n";
    let (code, text) = raw(serve.api, head.as_bytes(), b"d8:announce", true);
    assert_eq!(code, 413, "{text}");

    // The API still answers, and the whole torrent goes in.
    let (code, v) = serve.json("POST", "/torrents", &other);
    assert_eq!(code, 201, "{v}");
    let (code, _) = serve.json("POST", "/torrents", &bytes);
    assert_eq!(code, 409);
}

#[test]
fn concurrent_requests_are_all_answered_and_one_add_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, hash, _) = serve_with_a_torrent(dir.path());
    let (other, other_hash) = gaps::make(&dir.path().join("data"), "other.bin", 200_000, 65536);
    let api = serve.api;
    // A client that stalls half-way through a long body holds up no one else.
    let mut stalled = std::net::TcpStream::connect(api).unwrap();
    let head = format!(
        "PUT /torrents/{hash}/limits HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n{{\"upload\": 5"
    );
    std::io::Write::write_all(&mut stalled, head.as_bytes()).unwrap();
    // Eight clients add the same torrent at once: one 201, seven 409.
    let adds: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| gaps::http(api, "POST", "/torrents", &other).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = adds.clone();
    sorted.sort();
    assert_eq!(sorted, [201, 409, 409, 409, 409, 409, 409, 409], "{adds:?}");
    // Sixteen clients, each with a mix of reads and writes, all answered correctly.
    let limits = format!("/torrents/{hash}/limits");
    let one = format!("/torrents/{hash}");
    let peers = format!("/torrents/{hash}/peers");
    let results: Vec<Vec<(String, u16)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16u64)
            .map(|i| {
                let (limits, one, peers) = (&limits, &one, &peers);
                s.spawn(move || {
                    let mut got = Vec::new();
                    for j in 0..10u64 {
                        let body = format!(r#"{{"upload": {}}}"#, 1000 + i * 100 + j);
                        for (m, p, b) in [
                            ("GET", "/torrents", &b""[..]),
                            ("GET", one.as_str(), b""),
                            ("PUT", limits.as_str(), body.as_bytes()),
                            ("GET", peers.as_str(), b""),
                            ("GET", "/metrics", b""),
                        ] {
                            got.push((format!("{m} {p}"), gaps::http(api, m, p, b).0));
                        }
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let answers: Vec<&(String, u16)> = results.iter().flatten().collect();
    assert_eq!(answers.len(), 16 * 10 * 5);
    let failed: Vec<_> = answers.iter().filter(|(_, c)| *c != 200).collect();
    assert!(failed.is_empty(), "{failed:?}");
    // The last limit written is one of those sent, and the list holds both torrents.
    let v = serve.status(&ringtorrent::core::InfoHash::from_hex(&hash).unwrap());
    let up = v["upload_limit"].as_u64().unwrap();
    assert!((1000..1000 + 16 * 100).contains(&up), "{up}");
    let (_, list) = serve.json("GET", "/torrents", b"");
    let mut hashes: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["info_hash"].as_str().unwrap())
        .collect();
    hashes.sort();
    let mut want = vec![hash.clone(), other_hash.to_hex()];
    want.sort();
    assert_eq!(hashes, want);
    // The stalled client, once it gives up, is told its body was short.
    stalled.shutdown(std::net::Shutdown::Write).unwrap();
    stalled
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut stalled, &mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("ended after"), "{reply}");
}
