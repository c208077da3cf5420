//! The control API of `ringtorrent serve` attacked as issue 17 found it open, on 127.0.0.1:
//! a cross-origin "simple" POST, DNS rebinding (a foreign `Host`), CORS preflights, requests
//! without credentials when some are configured, a non-loopback bind without credentials,
//! descriptor exhaustion (`prlimit --nofile`), and a thousand idle connections. Each `serve`
//! is ended by PID; every wait has a deadline.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::serve::Serve;
use common::{ringtorrent, run_bounded, run_ok};

/// A torrent of a payload in `dir/data`: its bytes and info hash.
fn torrent(dir: &Path, name: &str) -> (Vec<u8>, String) {
    let (path, hash) = common::serve::torrent(dir, name, 200_003, 17);
    (std::fs::read(path).unwrap(), hash)
}

fn listed(serve: &Serve, auth: &[&str]) -> usize {
    let (code, _, body) = serve.request("GET", "/torrents", auth, b"");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array().unwrap().len()
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["error"].as_str().unwrap_or("").to_owned()
}

/// Raises this process's soft descriptor limit to its hard one (the tests hold hundreds of
/// sockets); returns the soft limit now.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one rlimit passed, which lives
    // across both calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[test]
fn a_cross_origin_simple_post_is_refused_and_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, hash) = torrent(dir.path(), "x.bin");
    let serve = Serve::start(dir.path(), &[]);
    let own = format!("Origin: http://{}", serve.api);
    // What a page of evil.example sends without a preflight.
    for headers in [
        &["Origin: http://evil.example", "Content-Type: text/plain"][..],
        &[
            "Referer: http://evil.example/page.html",
            "Content-Type: text/plain",
        ],
        &["Origin: null"],
        &["Origin: http://127.0.0.1:1"],
    ] {
        let (code, _, body) = serve.request("POST", "/torrents", headers, &bytes);
        assert_eq!(code, 403, "{headers:?}: {body}");
        assert!(error_of(&body).contains("cross-origin"), "{body}");
    }
    assert_eq!(listed(&serve, &[]), 0, "nothing was added");
    let len = dir.path().join("data/x.bin").metadata().unwrap().len();
    assert_eq!(len, 200_003, "the data is untouched");
    // The API's own origin (its page) and a script (no Origin) may.
    let host = format!("Host: {}", serve.api);
    let (code, _, body) = serve.request("POST", "/torrents", &[&own, &host], &bytes);
    assert_eq!(code, 201, "{body}");
    // A cross-origin DELETE with delete_data is refused and deletes nothing; GET is not
    // state-changing and is answered.
    let del = format!("/torrents/{hash}?delete_data=true");
    let (code, _, _) = serve.request("DELETE", &del, &["Origin: http://evil.example"], b"");
    assert_eq!(code, 403);
    assert!(dir.path().join("data/x.bin").exists());
    let (code, _, _) = serve.request("GET", "/torrents", &["Origin: http://evil.example"], b"");
    assert_eq!(code, 200);
    assert_eq!(listed(&serve, &[]), 1);
    assert!(serve.stop().success());
}

#[test]
fn a_foreign_host_is_refused_against_dns_rebinding() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, hash) = torrent(dir.path(), "r.bin");
    let serve = Serve::start(dir.path(), &["--api-host", "seedbox.test"]);
    assert_eq!(serve.request("POST", "/torrents", &[], &bytes).0, 201);
    let rebind = "Host: rebind.evil.example";
    let del = format!("/torrents/{hash}?delete_data=true");
    for (method, path) in [
        ("GET", "/torrents"),
        ("GET", "/metrics"),
        ("DELETE", del.as_str()),
    ] {
        let (code, _, body) = serve.request(method, path, &[rebind], b"");
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert!(error_of(&body).contains("api_hosts"), "{body}");
    }
    assert!(dir.path().join("data/r.bin").exists(), "the data survived");
    assert_eq!(listed(&serve, &[]), 1);
    // Loopback names, addresses and the configured name are served.
    let api_port = serve.api.rsplit(':').next().unwrap().to_owned();
    for host in [
        format!("Host: localhost:{api_port}"),
        format!("Host: 127.0.0.1:{api_port}"),
        "Host: [::1]".to_string(),
        "Host: SeedBox.test:443".to_string(),
    ] {
        let (code, _, body) = serve.request("GET", "/torrents", &[&host], b"");
        assert_eq!(code, 200, "{host}: {body}");
    }
    assert!(serve.stop().success());
}

#[test]
fn options_and_cors_stay_closed_unless_origins_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let preflight = [
        "Origin: https://ui.example",
        "Access-Control-Request-Method: POST",
    ];
    let serve = Serve::start(dir.path(), &[]);
    let (code, head, _) = serve.request("OPTIONS", "/torrents", &preflight, b"");
    assert_eq!(code, 403, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("access-control"),
        "{head}"
    );
    let (_, head, _) = serve.request("GET", "/torrents", &preflight[..1], b"");
    assert!(
        !head.to_ascii_lowercase().contains("access-control"),
        "{head}"
    );
    assert!(serve.stop().success());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("serve.toml"),
        "api_cors_origins = [\"https://ui.example\"]\n",
    )
    .unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let (code, head, _) = serve.request("OPTIONS", "/torrents", &preflight, b"");
    assert_eq!(code, 204, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("access-control-allow-origin: https://ui.example"),
        "{head}"
    );
    assert!(lower.contains("access-control-allow-methods"), "{head}");
    // That origin may change things, and its answers carry the header; others may not.
    let limits = format!("/torrents/{}/pause", "ab".repeat(20));
    let (code, head, _) = serve.request("POST", &limits, &preflight[..1], b"");
    assert_eq!(code, 404, "past the origin check: an unknown torrent");
    assert!(head
        .to_ascii_lowercase()
        .contains("access-control-allow-origin"));
    let (code, _, _) = serve.request("POST", &limits, &["Origin: https://evil.example"], b"");
    assert_eq!(code, 403);
    let evil = ["Origin: https://evil.example"];
    assert_eq!(serve.request("OPTIONS", "/torrents", &evil, b"").0, 403);
    assert!(serve.stop().success());
}

#[test]
fn login_and_api_keys_are_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let password = "correct horse battery staple";
    // The config lines come from the commands a user runs.
    let mut hash_cmd = ringtorrent();
    hash_cmd
        .args(["config", "hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = hash_cmd.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{password}\n").as_bytes(),
    )
    .unwrap();
    let mut hash_line = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut hash_line)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        hash_line.starts_with("api_password_hash = \"$argon2id$"),
        "{hash_line}"
    );
    assert!(!hash_line.contains(password));
    let key_out = run_ok(ringtorrent().args(["config", "api-key"]));
    let key = key_out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap()
        .to_owned();
    let keys_line = key_out.lines().find(|l| l.starts_with("api_keys")).unwrap();
    assert!(!keys_line.contains(&key));
    std::fs::write(
        dir.path().join("serve.toml"),
        format!("api_username = \"admin\"\n{hash_line}{keys_line}\n"),
    )
    .unwrap();
    let serve = Serve::start(dir.path(), &[]);

    // Nothing without credentials, /metrics included.
    for (method, path) in [
        ("GET", "/torrents"),
        ("GET", "/metrics"),
        ("POST", "/torrents"),
    ] {
        let (code, head, body) = serve.request(method, path, &[], b"d4:infoe");
        assert_eq!(code, 401, "{method} {path}: {body}");
        assert!(
            head.to_ascii_lowercase().contains("www-authenticate"),
            "{head}"
        );
    }
    // Wrong password or user: 401, no cookie.
    let form = "Content-Type: application/x-www-form-urlencoded";
    for body in [
        "username=admin&password=wrong",
        "username=root&password=correct+horse+battery+staple",
    ] {
        let (code, head, _) = serve.request("POST", "/auth/login", &[form], body.as_bytes());
        assert_eq!(code, 401, "{body}");
        assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    }
    // The right one sets the session cookie, which lets requests in.
    let (code, head, body) = serve.request(
        "POST",
        "/auth/login",
        &[form],
        b"username=admin&password=correct+horse+battery+staple",
    );
    assert_eq!(code, 200, "{body}");
    let set_cookie = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l["set-cookie:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let sid = set_cookie.split(';').next().unwrap();
    assert!(sid.starts_with("SID=") && sid.len() >= 4 + 32, "{sid}");
    let cookie = format!("Cookie: {sid}");
    assert_eq!(listed(&serve, &[&cookie]), 0);
    let (code, _, text) = serve.request("GET", "/metrics", &[&cookie], b"");
    assert_eq!(code, 200);
    assert!(text.contains("ringtorrent_"), "{text}");
    // The API key works; a wrong one does not.
    let bearer = format!("Authorization: Bearer {key}");
    assert_eq!(listed(&serve, &[&bearer]), 0);
    let wrong = format!("Authorization: Bearer {key}0");
    assert_eq!(serve.request("GET", "/torrents", &[&wrong], b"").0, 401);
    // JSON logins too; logout ends the session.
    let json = "Content-Type: application/json";
    let body = format!(r#"{{"username": "admin", "password": "{password}"}}"#);
    assert_eq!(
        serve
            .request("POST", "/auth/login", &[json], body.as_bytes())
            .0,
        200
    );
    let (code, head, _) = serve.request("POST", "/auth/logout", &[&cookie], b"");
    assert_eq!(code, 200);
    assert!(head.contains("Max-Age=0"), "{head}");
    assert_eq!(serve.request("GET", "/torrents", &[&cookie], b"").0, 401);
    // A login is still a state-changing request: refused cross-origin.
    let (code, _, _) = serve.request(
        "POST",
        "/auth/login",
        &[form, "Origin: http://evil.example"],
        b"username=admin&password=correct+horse+battery+staple",
    );
    assert_eq!(code, 403);
    assert!(serve.stop().success());
}

#[test]
fn a_password_given_by_flag_is_hashed_and_written_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let password = "flag-pass-81723";
    let serve = Serve::start(
        dir.path(),
        &["--api-username", "me", "--api-password", password],
    );
    assert_eq!(serve.request("GET", "/torrents", &[], b"").0, 401);
    let form = "Content-Type: application/x-www-form-urlencoded";
    let body = format!("username=me&password={password}");
    let (code, head, _) = serve.request("POST", "/auth/login", &[form], body.as_bytes());
    assert_eq!(code, 200, "{head}");
    assert!(serve.stop().success());
    // Not in the log, the state folder or the config.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&p) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(password),
                "{} holds the password",
                p.display()
            );
        }
    }
}

#[test]
fn a_non_loopback_api_without_credentials_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = run_bounded(
        ringtorrent()
            .arg("serve")
            .arg("--config")
            .arg(&empty)
            .args(["--listen", "127.0.0.1:0", "--api", "0.0.0.0:0"])
            .arg("--data-dir")
            .arg(dir.path().join("d"))
            .arg("--state-dir")
            .arg(dir.path().join("s")),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for says in ["0.0.0.0:0", "credentials", "hash-password", "127.0.0.1"] {
        assert!(err.contains(says), "{says}: {err}");
    }
    assert!(!dir.path().join("s").exists(), "nothing started");
}

/// The number of threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn a_thousand_idle_connections_make_no_threads() {
    assert!(raise_nofile() >= 1100, "this test needs 1,100 descriptors");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let pid = serve.child.id();
    assert_eq!(serve.request("GET", "/torrents", &[], b"").0, 200);
    let before = threads(pid);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&serve.api).unwrap())
        .collect();
    // Wait until the API holds as many as it may (128 by default): the log says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serve.log().contains("connections open, the most allowed") {
        assert!(Instant::now() < deadline, "{}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = threads(pid);
    assert!(
        during <= before + 1,
        "{before} threads before, {during} with 1,000 idle connections"
    );
    // They lock no one out: a new client makes an idle one close, and is answered.
    for _ in 0..3 {
        assert_eq!(serve.request("GET", "/torrents", &[], b"").0, 200);
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(
        fds < 400,
        "{fds} descriptors: the connections are not bounded"
    );
    drop(idle);
    assert!(serve.stop().success());
}

#[test]
fn the_api_outlives_descriptor_exhaustion() {
    assert!(raise_nofile() >= 1000, "this test needs 1,000 descriptors");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with_nofile(dir.path(), 128, &[]);
    assert_eq!(serve.request("GET", "/torrents", &[], b"").0, 200);
    // More connections than it has descriptors, to both ports, held.
    let mut held = Vec::new();
    for _ in 0..200 {
        held.extend(TcpStream::connect(&serve.peers).ok());
    }
    for _ in 0..200 {
        held.extend(TcpStream::connect(&serve.api).ok());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serve
        .log()
        .contains("control API: cannot accept connections")
    {
        assert!(
            Instant::now() < deadline,
            "the API never ran out of descriptors ({} held)\n{}",
            held.len(),
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The warning itself is the proof of exhaustion: EMFILE, not some other accept error.
    // (A count of /proc/PID/fd here would race the engine, which closes peers it accepted
    // past its connection bound, a batch at a time.)
    let log = serve.log();
    assert!(
        log.contains("cannot accept connections (Too many open files"),
        "the API's accepts failed, but not for descriptors\n{log}"
    );
    drop(held);
    // Once they are gone it answers, and accepts say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = TcpStream::connect(&serve.api) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = std::io::Write::write_all(
                &mut s,
                b"GET /torrents HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            );
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the API did not come back\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(serve.request("GET", "/metrics", &[], b"").0, 200);
    assert!(
        serve.log().contains("accepting connections again"),
        "{}",
        serve.log()
    );
    // Once per episode, not once per retry (retries run every 10 ms to 1 s).
    let log = serve.log();
    let warnings = log.matches("cannot accept connections").count();
    let recoveries = log.matches("accepting connections again").count();
    assert!(warnings <= recoveries + 1, "{warnings} warnings:\n{log}");
    assert!(serve.stop().success(), "alive, and stops cleanly");
}

#[test]
fn metrics_can_be_opened_for_prometheus_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let key = ringtorrent::api::auth::new_api_key().unwrap();
    std::fs::write(
        dir.path().join("serve.toml"),
        format!("api_keys = [\"{}\"]\napi_metrics_public = true\n", key.hash),
    )
    .unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let (code, _, text) = serve.request("GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    assert!(text.contains("ringtorrent_"), "{text}");
    assert_eq!(serve.request("GET", "/torrents", &[], b"").0, 401);
    assert_eq!(serve.request("POST", "/metrics", &[], b"").0, 401);
    let bearer = format!("Authorization: Bearer {}", key.key);
    assert_eq!(listed(&serve, &[&bearer]), 0);
    // Keys only: there is no login to try.
    let form = "Content-Type: application/x-www-form-urlencoded";
    let (code, _, _) = serve.request("POST", "/auth/login", &[form], b"username=a&password=b");
    assert_eq!(code, 404);
    assert!(serve.stop().success());
}
