//! The web UI in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/test.sh) driven by selenium from
//! `target/webui-venv` (also made by scripts/test.sh) through `tests/support/webui_browser.py`,
//! against a `serve` started here on loopback with a few torrents.
//!
//! - the page lists the torrents; a `.torrent` file and a magnet link added through its add
//!   dialog (the file with a category) appear; a torrent stopped with its Stop button shows
//!   `Stopped`; its files and pieces show in the detail, and its file skipped there is
//!   skipped; one deleted with its data leaves the list; all without reloading the page (a
//!   mark set on the page survives); no error in the browser's console; the engine agrees
//!   (the torrents there, the stopped one paused, the file skipped, the data deleted);
//! - with credentials configured the page is a login form, a wrong password is refused, the
//!   right one shows the torrents, and logging out brings the form back.
//!
//! Screenshots are taken at each step and measured (pixel variance, number of colours) so
//! that a blank or unstyled page fails, alongside the DOM's rows at that moment. The browser
//! runs in a process group of its own, killed by its id if the run outlives its limit.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::{torrent, Serve};
use common::support;
use serde_json::{json, Value};

/// The longest one browser run may take.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// The virtual environment's Python, with selenium.
fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGTORRENT_WEBUI_PYTHON") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let python = target.join("webui-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs selenium there",
        python.display()
    );
    python
}

/// Runs the browser script on `url` with `scenario`; returns what it found. The script and
/// everything it starts (chromedriver, chromium) share a new process group, which is killed
/// by its id should the run outlive [`RUN_LIMIT`].
fn browse(url: &str, out: &Path, scenario: Value) -> Value {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: scripts/test.sh installs chromium and chromium-driver"
        );
    }
    // RINGTORRENT_WEBUI_SHOTS=DIR keeps the screenshots (and the browser's log) there.
    let kept = std::env::var_os("RINGTORRENT_WEBUI_SHOTS")
        .map(|d| PathBuf::from(d).join(out.file_name().unwrap_or_default()));
    let out = kept.as_deref().unwrap_or(out);
    std::fs::create_dir_all(out.join("home")).unwrap();
    let log = std::fs::File::create(out.join("browser.log")).unwrap();
    let mut child = Command::new(venv_python())
        .arg(support("webui_browser.py"))
        .arg(url)
        .arg(out)
        .arg(scenario.to_string())
        .env("SE_AVOID_STATS", "true")
        .env("SE_OFFLINE", "true")
        .env("HOME", out.join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("cannot start webui_browser.py");
    let group = child.id() as i32;
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > RUN_LIMIT {
            // SAFETY: kill(2) with the negated id of the process group this test created
            // (process_group(0) made the child its leader); it signals only that group.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "the browser run took over {RUN_LIMIT:?}: {}",
                std::fs::read_to_string(out.join("browser.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Whatever the script left behind (it quits the browser itself) goes with the group.
    // SAFETY: as above; the group may be empty by now (ESRCH, ignored).
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let text = reader.join().unwrap();
    let found: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "webui_browser.py printed {text:?} ({e}): {}",
            std::fs::read_to_string(out.join("browser.log")).unwrap_or_default()
        )
    });
    assert!(
        found["ok"] == true,
        "the browser run failed: {found:#}\n{}",
        std::fs::read_to_string(out.join("browser.log")).unwrap_or_default()
    );
    found
}

/// A screenshot the script measured: a real page, not a blank or unstyled one.
fn assert_not_blank(shot: &Value, what: &str) {
    let variance = shot["variance"].as_f64().unwrap_or(0.0);
    let colours = shot["colours"].as_u64().unwrap_or(0);
    // A blank page is one colour with no variance; text alone on white is a few dozen
    // shades of grey. Measured on a good run: variance 120 (login) to 1700 (a dialog),
    // 230 to 1400 colours.
    assert!(
        variance > 40.0 && colours > 60,
        "the {what} screenshot looks blank: {shot}"
    );
    let png = std::fs::read(shot["path"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{what}: not a PNG");
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Starts serve with three seeding torrents added through its API; returns it with the
/// torrents' names and hashes.
fn serve_with_torrents(dir: &Path, extra: &[&str]) -> (Serve, Vec<(String, String)>) {
    let mut made = Vec::new();
    for (i, name) in ["alpha-ubuntu.iso", "beta-debian.iso", "gamma-fedora.iso"]
        .iter()
        .enumerate()
    {
        let (path, hash) = torrent(dir, name, 300_000 + i * 70_000, 40 + i as u64);
        made.push((name.to_string(), hash, path));
    }
    let serve = Serve::start(dir, extra);
    (serve, made.into_iter().map(|(n, h, _)| (n, h)).collect())
}

fn add_through_api(serve: &Serve, dir: &Path, torrents: &[(String, String)], auth: &[&str]) {
    for (name, _) in torrents {
        let bytes = std::fs::read(dir.join(format!("{name}.torrent"))).unwrap();
        let (status, _, body) = serve.request("POST", "/torrents", auth, &bytes);
        assert_eq!(status, 201, "{body}");
    }
}

/// The `name=value` of the cookie a login's answer head sets.
fn session_cookie(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

#[test]
fn the_browser_lists_adds_and_stops_torrents_live() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, torrents) = serve_with_torrents(dir.path(), &[]);
    add_through_api(&serve, dir.path(), &torrents, &[]);
    let (status, body) = serve.http("POST", "/categories", br#"{"name": "linux"}"#);
    assert!(status == 200 || status == 201, "{status} {body}");
    // The torrent the browser uploads, its payload in place so that it seeds.
    let (file, file_hash) = torrent(dir.path(), "delta-arch.iso", 250_000, 77);
    let magnet_hash = "0123456789abcdef0123456789abcdef01234567";
    let magnet = format!("magnet:?xt=urn:btih:{magnet_hash}&dn=epsilon-magnet");
    let stop_hash = torrents[1].1.clone();

    let found = browse(
        &format!("http://{}/", serve.api),
        &dir.path().join("list"),
        json!({
            "kind": "list",
            "names": torrents.iter().map(|t| &t.0).collect::<Vec<_>>(),
            "magnet": magnet,
            "file": file,
            "file_hash": file_hash,
            "category": "linux",
            "added_names": ["delta-arch.iso", "epsilon-magnet"],
            "stop_hash": stop_hash,
            "delete_hash": torrents[2].1,
        }),
    );

    // What the DOM showed at each screenshot, and the screenshots themselves.
    for (shot, rows) in [("list", "list_rows"), ("stopped", "after_add_rows")] {
        assert_not_blank(&found[shot], shot);
        let shown = names(&found[rows]);
        for (name, _) in &torrents {
            assert!(shown.contains(name), "{rows}: {shown:?} lacks {name}");
        }
    }
    assert_not_blank(&found["add_dialog"], "add dialog");
    // Styled, with the selected row's background (every other pixel of a row is about 7,000).
    assert!(
        found["stopped"]["accent_pixels"].as_u64().unwrap_or(0) > 3000,
        "no selected row in the screenshot: {}",
        found["stopped"]
    );
    let after = names(&found["after_add_rows"]);
    assert!(
        after.contains(&"delta-arch.iso".to_string())
            && after.contains(&"epsilon-magnet".to_string()),
        "{after:?}"
    );
    assert_eq!(found["added_category"], "linux", "{found:#}");
    assert_eq!(found["stopped_row"][1], "Stopped", "{found:#}");
    assert!(
        found["stopped_row"][2]
            .as_str()
            .is_some_and(|s| s.starts_with("paused")),
        "{found:#}"
    );
    assert_eq!(found["not_reloaded"], true, "the page was reloaded");
    assert_eq!(
        found["logout_shown"], false,
        "the API is open, yet the page offers to log out"
    );
    assert_eq!(found["files"], json!(["beta-debian.iso"]), "{found:#}");
    assert_eq!(found["file_priority"], "0", "{found:#}");
    assert_eq!(found["delete_question"], "Delete “gamma-fedora.iso”?");
    let after = names(&found["after_delete_rows"]);
    assert!(
        !after.contains(&"gamma-fedora.iso".to_string()) && after.len() == 4,
        "{after:?}"
    );
    assert!(
        found["pieces_caption"]
            .as_str()
            .is_some_and(|c| c.contains("pieces")),
        "{found:#}"
    );
    assert_eq!(
        found["console_errors"],
        json!([]),
        "the browser's console has errors"
    );

    // The engine agrees with what the page showed.
    let (_, list) = serve.json("GET", "/torrents", b"");
    let list = list.as_array().unwrap();
    let by_hash = |h: &str| {
        list.iter()
            .find(|t| t["info_hash"] == h)
            .unwrap_or_else(|| panic!("{h} not in {list:?}"))
    };
    assert_eq!(list.len(), 4, "{list:?}");
    assert!(list
        .iter()
        .all(|t| t["info_hash"] != torrents[2].1.as_str()));
    assert!(
        !dir.path().join("data/gamma-fedora.iso").exists(),
        "deleted with its data, but the data is still there"
    );
    assert!(dir.path().join("data/beta-debian.iso").exists());
    assert_eq!(by_hash(&stop_hash)["state"], "paused");
    let (_, files) = serve.json("GET", &format!("/torrents/{stop_hash}/files"), b"");
    assert_eq!(files[0]["priority"], "skip", "{files}");
    assert_eq!(by_hash(&file_hash)["category"], "linux");
    by_hash(magnet_hash);
    assert!(serve.stop().success());
}

#[test]
fn with_credentials_the_page_is_a_login_form() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, torrents) = serve_with_torrents(
        dir.path(),
        &["--api-username", "admin", "--api-password", "ui-pass-123"],
    );
    // The API itself wants the login (its key-less requests are refused); the page does not.
    let (status, _, _) = serve.request("GET", "/torrents", &[], b"");
    assert_eq!(status, 401);
    let (status, head, _) = serve.request("GET", "/", &[], b"");
    assert_eq!(status, 200, "{head}");
    // Log in through the JSON API to add the torrents (with the cookie it sets).
    let (status, head, _) = serve.request(
        "POST",
        "/auth/login",
        &["Content-Type: application/x-www-form-urlencoded"],
        b"username=admin&password=ui-pass-123",
    );
    assert_eq!(status, 200, "{head}");
    let cookie = session_cookie(&head);
    add_through_api(
        &serve,
        dir.path(),
        &torrents,
        &[&format!("Cookie: {cookie}")],
    );

    let found = browse(
        &format!("http://{}/", serve.api),
        &dir.path().join("login"),
        json!({
            "kind": "login",
            "username": "admin",
            "password": "ui-pass-123",
            "names": torrents.iter().map(|t| &t.0).collect::<Vec<_>>(),
        }),
    );
    assert_not_blank(&found["login"], "login");
    assert_not_blank(&found["logged_in"], "logged-in");
    assert!(
        found["refused"]
            .as_str()
            .is_some_and(|r| r.contains("Wrong")),
        "{found:#}"
    );
    let shown = names(&found["after_login_rows"]);
    for (name, _) in &torrents {
        assert!(shown.contains(name), "{shown:?} lacks {name}");
    }
    assert_eq!(found["logged_out"], true);
    assert_eq!(
        found["key_form_shown"], false,
        "no API key is configured, yet the page asks for one"
    );
    assert!(serve.stop().success());
}

#[test]
fn with_only_api_keys_the_page_logs_in_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_ok(common::ringtorrent().args(["config", "api-key"]));
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("a key in the output")
        .to_owned();
    let keys_line = out.lines().find(|l| l.starts_with("api_keys")).unwrap();
    std::fs::write(dir.path().join("keys.toml"), format!("{keys_line}\n")).unwrap();
    let config = dir.path().join("keys.toml");
    let (serve, torrents) =
        serve_with_torrents(dir.path(), &["--config", config.to_str().unwrap()]);
    let bearer = format!("Authorization: Bearer {key}");
    add_through_api(&serve, dir.path(), &torrents, &[&bearer]);
    // The status a login page reads: keys only, and this request not in.
    let (status, _, body) = serve.request("GET", "/api/v2/auth/status", &[], b"");
    assert_eq!(status, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        st,
        json!({"required": true, "password": false, "api_key": true, "signed_in": null})
    );
    // A qBittorrent client's password login fails (there is none); the key buys a session.
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let (_, _, body) = serve.request(
        "POST",
        "/api/v2/auth/login",
        &form,
        b"username=admin&password=x",
    );
    assert_eq!(body.trim(), "Fails.");
    let (_, head, body) = serve.request(
        "POST",
        "/api/v2/auth/login",
        &form,
        format!("api_key={key}").as_bytes(),
    );
    assert_eq!(body.trim(), "Ok.", "{head}");
    let cookie = session_cookie(&head);
    let with_cookie = format!("Cookie: {cookie}");
    let (status, _, body) = serve.request("GET", "/api/v2/auth/status", &[&with_cookie], b"");
    assert_eq!(status, 200);
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["signed_in"], "session", "{st}");

    let found = browse(
        &format!("http://{}/", serve.api),
        &dir.path().join("key-login"),
        json!({
            "kind": "key_login",
            "key": key,
            "names": torrents.iter().map(|t| &t.0).collect::<Vec<_>>(),
        }),
    );
    assert_not_blank(&found["key_login"], "key login");
    assert_eq!(found["password_form_shown"], false, "{found:#}");
    assert_eq!(found["key_form_shown"], true, "{found:#}");
    assert!(
        found["refused"]
            .as_str()
            .is_some_and(|r| r.contains("Unknown API key")),
        "{found:#}"
    );
    let shown = names(&found["after_login_rows"]);
    for (name, _) in &torrents {
        assert!(shown.contains(name), "{shown:?} lacks {name}");
    }
    assert_eq!(found["logged_out"], true);
    assert!(serve.stop().success());
}

#[test]
fn the_page_is_served_with_its_headers_and_the_host_guard() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let (status, head, body) = serve.request("GET", "/", &[], b"");
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    for h in [
        "content-type: text/html; charset=utf-8",
        "content-security-policy: default-src 'none'; script-src 'self';",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "cache-control: no-cache",
        "etag: \"",
    ] {
        assert!(head.contains(h), "no `{h}` in {head}");
    }
    assert!(body.contains("<script type=\"module\" src=\"/ui/app.js\">"));
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .to_owned();
    let (status, _, body) = serve.request("GET", "/", &[&format!("If-None-Match: {etag}")], b"");
    assert_eq!((status, body.as_str()), (304, ""));
    let (status, head, _) = serve.request("GET", "/ui/app.js", &[], b"");
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/javascript"));
    // The Host guard against DNS rebinding applies to the page too.
    let (status, _, _) = serve.request("GET", "/", &["Host: evil.example"], b"");
    assert_eq!(status, 403);
    let (status, _, _) = serve.request("GET", "/ui/missing.js", &[], b"");
    assert_eq!(status, 404);
    let (status, _, _) = serve.request("POST", "/", &[], b"x");
    assert_eq!(status, 405);
    assert!(serve.stop().success());
}
