//! The qBittorrent WebAPI v2 of `serve`, driven by the real `qbittorrent-api` client from PyPI
//! (installed by scripts/test.sh into `target/qbt-venv`) through the flows a seedbox tool
//! uses: log in (a wrong password refused), versions and preferences, add a .torrent and a
//! magnet link with save paths, add a libtorrent seed as a peer, poll `torrents/info` until the
//! download completes and compare the bytes, files, trackers, properties, limits, stop and
//! start, `sync/maindata` full and delta, 404 for what is not served, delete with files, log
//! out; categories with a save path and tags (and their `maindata` deltas), a seed-mode add
//! (`skip_checking`) serving a libtorrent leecher at once, share limits stopping it at its
//! ratio, queueing with one active download and `topPrio`, force start, recheck. Every process is ended by PID; all traffic stays on 127.0.0.1.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::Serve;
use common::{run_bounded, run_ok, support, write_payload, Proc, START_LIMIT};
use serde_json::Value;

/// The virtual environment's Python, with qbittorrent-api.
fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGTORRENT_QBT_PYTHON") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let python = target.join("qbt-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs qbittorrent-api there",
        python.display()
    );
    python
}

#[test]
fn qbittorrent_api_client_drives_serve() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seed_data = dir.path().join("seed");
    let payload = seed_data.join("payload.bin");
    write_payload(&payload, 3_000_000, 19);
    let torrent = dir.path().join("payload.torrent");
    run_ok(
        Command::new("mktorrent")
            .args(["-l", "16", "-a", "http://127.0.0.1:6969/announce"])
            .args(["-c", "for the qbt flow", "-o"])
            .arg(&torrent)
            .arg(&payload),
    );
    let seed = Proc::watch(
        "lt_seed.py",
        Command::new("/usr/bin/python3")
            .arg(support("lt_seed.py"))
            .arg(&torrent)
            .arg(&seed_data)
            .args(["--max-seconds", "90"])
            .stdin(Stdio::piped()),
        &dir.path().join("lt-seed.log"),
    );
    let line = seed.first_line(START_LIMIT);
    let info: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("lt_seed.py printed {line:?}: {e}\n{}", seed.log()));
    let seed_addr = format!("127.0.0.1:{}", info["port"].as_u64().unwrap());

    // A second torrent whose data sits in a category's folder: added with skip_checking
    // (seed mode), it serves a libtorrent leecher at once.
    let movies = dir.path().join("movies");
    let payload2 = movies.join("film.bin");
    write_payload(&payload2, 1_000_000, 23);
    let torrent2 = dir.path().join("film.torrent");
    run_ok(
        Command::new("mktorrent")
            .args(["-l", "16", "-o"])
            .arg(&torrent2)
            .arg(&payload2),
    );

    let serve = Serve::start(
        dir.path(),
        &["--api-username", "admin", "--api-password", "s3cret-pass"],
    );
    let save = dir.path().join("downloads");
    let magnet_save = dir.path().join("magnets");
    let out = run_bounded(
        Command::new(venv_python())
            .arg(support("qbt_flow.py"))
            .arg(format!("http://{}", serve.api))
            .args(["admin", "s3cret-pass"])
            .arg(&torrent)
            .arg(&payload)
            .arg(&seed_addr)
            .arg(&save)
            .arg(&magnet_save)
            .arg(&torrent2)
            .arg(&movies)
            .arg(&serve.peers)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(90),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("OK"),
        "qbt_flow.py failed: {}\nstdout: {stdout}\nstderr: {}\nserve log:\n{}\nseed log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        serve.log(),
        seed.log()
    );
    eprintln!(
        "qbt_flow.py: {} (whole test {:.1} s)",
        stdout.lines().nth(1).unwrap_or(""),
        started.elapsed().as_secs_f64()
    );
}

/// The statuses qBittorrent answers with, over raw HTTP: 403 before a login, 401 for a foreign
/// `Host` or a cross-site `Origin`, `Fails.`/`Ok.` for logins, 404 for an unknown method, 405
/// for an action asked with GET, 400 for a missing parameter.
#[test]
fn statuses_are_qbittorrents() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        dir.path(),
        &["--api-username", "admin", "--api-password", "s3cret-pass"],
    );
    let form = ["Content-Type: application/x-www-form-urlencoded"];
    let (status, _, body) = serve.request("GET", "/api/v2/app/version", &[], b"");
    assert_eq!((status, body.as_str()), (403, "Forbidden"));
    let (status, _, body) = serve.request(
        "POST",
        "/api/v2/auth/login",
        &form,
        b"username=admin&password=nope",
    );
    assert_eq!((status, body.as_str()), (200, "Fails."));
    let (status, head, body) = serve.request(
        "POST",
        "/api/v2/auth/login",
        &form,
        b"username=admin&password=s3cret-pass",
    );
    assert_eq!((status, body.as_str()), (200, "Ok."));
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie: {head}"))
        .to_string();
    assert!(cookie.starts_with("SID="), "{cookie}");
    let sid = format!("Cookie: {cookie}");
    let (status, _, body) = serve.request("GET", "/api/v2/app/webapiVersion", &[&sid], b"");
    assert_eq!((status, body.as_str()), (200, "2.9.3"));

    // DNS rebinding and cross-site requests: qBittorrent's 401.
    let (status, _, _) = serve.request(
        "GET",
        "/api/v2/app/version",
        &[&sid, "Host: evil.example"],
        b"",
    );
    assert_eq!(status, 401);
    let (status, _, _) = serve.request(
        "POST",
        "/api/v2/torrents/pause",
        &[&sid, "Origin: http://evil.example", form[0]],
        b"hashes=all",
    );
    assert_eq!(status, 401);

    for (method, path, body, want) in [
        (
            "POST",
            "/api/v2/torrents/createCategory",
            "category=tv",
            200,
        ),
        ("POST", "/api/v2/torrents/setShareLimits", "hashes=all", 400),
        ("POST", "/api/v2/torrents/topPrio", "hashes=all", 409),
        (
            "POST",
            "/api/v2/torrents/setCategory",
            "hashes=all&category=nope",
            200,
        ),
        ("POST", "/api/v2/torrents/createCategory", "category=", 400),
        (
            "POST",
            "/api/v2/torrents/createCategory",
            "category=tv",
            409,
        ),
        (
            "POST",
            "/api/v2/torrents/createCategory",
            "category=a%2F%2Fb",
            409,
        ),
        (
            "POST",
            "/api/v2/torrents/editCategory",
            "category=nope",
            400,
        ),
        (
            "POST",
            "/api/v2/torrents/editCategory",
            "category=nope&savePath=",
            409,
        ),
        ("POST", "/api/v2/torrents/setForceStart", "hashes=all", 400),
        ("POST", "/api/v2/torrents/removeTags", "hashes=all", 200),
        ("GET", "/api/v2/torrents/createCategory", "", 405),
        (
            "POST",
            "/api/v2/torrents/toggleSequentialDownload",
            "hashes=all",
            200,
        ),
        ("POST", "/api/v2/torrents/toggleFirstLastPiecePrio", "", 400),
        (
            "POST",
            "/api/v2/torrents/setSuperSeeding",
            "hashes=all",
            404,
        ),
        ("GET", "/api/v2/nosuch/thing", "", 404),
        ("GET", "/api/v2/torrents/add", "", 405),
        ("GET", "/api/v2/torrents/properties", "", 400),
        (
            "GET",
            "/api/v2/torrents/files?hash=0123456789abcdef0123456789abcdef01234567",
            "",
            404,
        ),
        ("POST", "/api/v2/torrents/pause", "hashes=all", 200),
        (
            "POST",
            "/api/v2/transfer/setDownloadLimit",
            "limit=1000",
            200,
        ),
    ] {
        let (status, _, text) = serve.request(method, path, &[&sid, form[0]], body.as_bytes());
        assert_eq!(status, want, "{method} {path}: {text}");
    }
    let (_, _, limit) = serve.request("GET", "/api/v2/transfer/downloadLimit", &[&sid], b"");
    assert_eq!(limit, "1000");

    // The JSON API beside it is unchanged.
    let (status, _, _) = serve.request("GET", "/torrents", &[&sid], b"");
    assert_eq!(status, 200);

    let (status, _, _) = serve.request("POST", "/api/v2/auth/logout", &[&sid], b"");
    assert_eq!(status, 200);
    let (status, _, _) = serve.request("GET", "/api/v2/app/version", &[&sid], b"");
    assert_eq!(status, 403, "logged out");
}

/// `torrents/properties` reports the .torrent file's `comment`, `created by` and `creation
/// date` (kept in the state folder with the file, so a restart still knows them), and `""`,
/// `""`, -1 for a magnet link, as qBittorrent does. In process: no Python needed.
#[test]
fn properties_report_the_torrent_files_comment_creator_and_date() {
    use ringtorrent::api::qbt::{torrents, Params, WebApi, WebSettings};
    use ringtorrent::client::{AddTorrent, Client, ClientConfig, TorrentMeta};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_payload(&data.join("dated.bin"), 200_000, 31);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: data.join("dated.bin"),
        piece_len: Some(64 * 1024),
        comment: Some("a comment, ünicode".into()),
        creation_date: Some(1_700_000_000),
        ..Default::default()
    };
    let bytes = ringtorrent::metainfo::create::create(&opts, &Default::default())
        .unwrap()
        .bytes;
    let magnet_hash = "ab".repeat(20);
    let config = || ClientConfig {
        state_dir: Some(tmp.path().join("state")),
        remember_torrents: true,
        ..common::client_config(&data, 1)
    };
    let auth = ringtorrent::api::auth::Auth::new(ringtorrent::api::auth::AuthConfig {
        session_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .unwrap();
    let api = WebApi::new(std::sync::Arc::new(auth), WebSettings::default());
    let properties = |client: &Client, hash: &str| -> Value {
        let r = torrents::handle(
            &api,
            client,
            "properties",
            &Params::from_pairs(&[("hash", hash)]),
            false,
        )
        .expect("served");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    };
    let expected = TorrentMeta {
        comment: Some("a comment, ünicode".into()),
        created_by: Some(concat!("ringtorrent ", env!("CARGO_PKG_VERSION")).into()),
        creation_date: Some(1_700_000_000),
    };

    let client = Client::start(config()).unwrap();
    let t = client.add(AddTorrent::bytes(bytes)).unwrap();
    let hash = t.info_hash().to_hex();
    let m = client
        .add(AddTorrent::magnet(format!("magnet:?xt=urn:btih:{magnet_hash}")).paused(true))
        .unwrap();
    assert_eq!(t.meta().unwrap(), expected);
    assert_eq!(m.meta().unwrap(), TorrentMeta::default());
    let p = properties(&client, &hash);
    assert_eq!(p["comment"], "a comment, ünicode", "{p}");
    assert_eq!(p["created_by"], expected.created_by.as_deref().unwrap());
    assert_eq!(p["creation_date"], 1_700_000_000);
    let p = properties(&client, &magnet_hash);
    assert_eq!(
        (&p["comment"], &p["created_by"], &p["creation_date"]),
        (&Value::from(""), &Value::from(""), &Value::from(-1)),
        "{p}"
    );
    client.shutdown();

    // Brought back from the state folder.
    let client = Client::start(config()).unwrap();
    let t = client.get(t.info_hash()).expect("remembered");
    assert_eq!(t.meta().unwrap(), expected);
    assert_eq!(properties(&client, &hash)["creation_date"], 1_700_000_000);
    client.shutdown();
}
