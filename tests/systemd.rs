//! `serve` under systemd: `Type=notify` readiness (sd_notify(3) datagrams on the socket
//! `$NOTIFY_SOCKET` names, a path or an abstract `@name`), SIGHUP reloading the config file
//! (what can change live is applied, a bad file changes nothing), and the unit files in
//! `deploy/systemd/` passing `systemd-analyze verify`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::serve::{torrent, Serve};
use common::{run_ok, START_LIMIT};

/// The next notification, within `limit`.
fn next(sock: &UnixDatagram, limit: Duration) -> String {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {limit:?}: {e}"));
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn signal(serve: &Serve, sig: &str) {
    run_ok(Command::new("kill").args([sig, &serve.child.id().to_string()]));
}

#[test]
fn ready_is_sent_once_the_api_answers_with_the_remembered_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let (t, hash) = torrent(dir.path(), "ready.bin", 300_001, 3);
    // A first run remembers a torrent in the state folder.
    let serve = Serve::start(dir.path(), &[]);
    let (status, _) = serve.json("POST", "/torrents", &std::fs::read(&t).unwrap());
    assert_eq!(status, 201);
    assert!(serve.stop().success());

    // An abstract socket, as systemd's own is: `@` then the name.
    let name = format!("ringtorrent-test-notify-{}", std::process::id());
    let addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    };
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let env = format!("@{name}");
    let serve = Serve::start_with_env(dir.path(), &[("NOTIFY_SOCKET", env.as_ref())], &[]);
    let ready = next(&sock, START_LIMIT);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains("STATUS=serving 1 torrents, API on http://"),
        "{ready:?}"
    );
    // At READY=1 the API answers at once and the remembered torrent is back.
    let (status, v) = serve.json("GET", "/torrents", b"");
    assert_eq!(status, 200);
    assert_eq!(v[0]["info_hash"], hash.as_str(), "{v}");

    assert!(serve.stop().success());
    let stopping = next(&sock, Duration::from_secs(1));
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

/// Writes the config `serve` reads on SIGHUP.
fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_applies_a_changed_config_and_keeps_the_running_one_when_it_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    write_config(&config, "[share_limits]\nratio = 1.5\n");
    let notify = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let serve = Serve::start_with_env(dir.path(), &[("NOTIFY_SOCKET", notify.as_os_str())], &[]);
    assert!(next(&sock, START_LIMIT).contains("READY=1"));
    let ratio = |s: &Serve| s.json("GET", "/share_limits", b"").1["ratio"].clone();
    assert_eq!(ratio(&serve), 1.5);

    // A changed rate limit, share limit, queue and a new API key are live after SIGHUP; a
    // changed encryption policy and upload slot count are logged as needing a restart.
    let out = run_ok(common::ringtorrent().args(["config", "api-key"]));
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap()
        .to_owned();
    let entry = out.lines().find(|l| l.starts_with("api_keys")).unwrap();
    write_config(
        &config,
        &format!(
            "encryption = \"require\"\n{entry}\n[limits]\nupload_rate = \"1M\"\n\
             upload_slots = 9\n[share_limits]\nratio = 2.5\n[queue]\nmax_active_downloads = 7\n"
        ),
    );
    signal(&serve, "-HUP");
    let reloading = next(&sock, Duration::from_secs(20));
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert!(next(&sock, Duration::from_secs(20)).contains("READY=1"));
    let bearer = format!("Authorization: Bearer {key}");
    let (status, _, body) = serve.request("GET", "/share_limits", &[&bearer], b"");
    assert_eq!(status, 200, "{body}\n{}", serve.log());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ratio"], 2.5, "{}", serve.log());
    let (_, _, body) = serve.request("GET", "/queue", &[&bearer], b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["max_active_downloads"], 7, "{v}");
    // The session's upload limit as the qBittorrent WebAPI reports it.
    let (status, _, body) = serve.request("GET", "/api/v2/transfer/uploadLimit", &[&bearer], b"");
    assert_eq!((status, body.as_str()), (200, "1048576"), "{}", serve.log());
    // The key is now required: without it, 401.
    assert_eq!(serve.http("GET", "/share_limits", b"").0, 401);
    let log = serve.log();
    assert!(
        log.contains(
            "reloaded: applied api_keys, limits.upload_rate/download_rate, share_limits, queue"
        ),
        "{log}"
    );
    assert!(
        log.contains(
            "reloaded: encryption, limits.upload_slots changed but take effect only at a restart"
        ),
        "{log}"
    );

    // A file that does not check (and one that does not parse) changes nothing, and serve
    // goes on.
    for bad in [
        "[share_limits]\nratio = 9.0\n[limits]\nupload_rate = \"fast\"\n",
        "[share_limits\nratio = 9.0\n",
    ] {
        write_config(&config, bad);
        signal(&serve, "-HUP");
        assert!(next(&sock, Duration::from_secs(20)).starts_with("RELOADING=1"));
        assert!(next(&sock, Duration::from_secs(20)).contains("READY=1"));
        let refused = serve.log().matches("reload refused").count();
        assert!(refused >= 1, "{}", serve.log());
        let (status, _, body) = serve.request("GET", "/share_limits", &[&bearer], b"");
        assert_eq!(status, 200, "the old key still works: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ratio"], 2.5, "the running config kept: {}", serve.log());
    }
    assert_eq!(serve.log().matches("reload refused").count(), 2);
    assert!(serve.stop().success());
}

/// What `systemd-analyze verify` says of `units` (paths; a template is verified as an
/// instance of it), with its exit status.
fn verify(units: &[std::path::PathBuf]) -> (bool, String) {
    let out = common::run_bounded(
        Command::new("systemd-analyze")
            .arg("verify")
            .args(units)
            .env("SYSTEMD_LOG_LEVEL", "notice"),
        Duration::from_secs(60),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The units in deploy/systemd pass `systemd-analyze verify` with no complaint at all (the
/// binary they name is this build's, through copies pointing at it); a broken copy does not.
#[test]
fn the_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let bin = env!("CARGO_BIN_EXE_ringtorrent");
    for name in ["ringtorrent.service", "ringtorrent@.service"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/ringtorrent serve"),
            "{name}"
        );
        assert!(text.contains("Type=notify\n"), "{name}");
        std::fs::write(
            dir.path().join(name),
            text.replace("/usr/local/bin/ringtorrent", bin),
        )
        .unwrap();
    }
    let checked = [
        dir.path().join("ringtorrent.service"),
        dir.path().join("ringtorrent@box1.service"),
    ];
    let (ok, said) = verify(&checked);
    assert!(ok, "{said}");
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The system call filter lets io_uring through: @system-service holds @aio, which holds
    // io_uring's three calls (as this host's systemd defines the sets).
    for name in ["ringtorrent.service", "ringtorrent@.service"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        let filters: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("SystemCallFilter="))
            .collect();
        assert_eq!(filters, ["@system-service"], "{name}");
    }
    let set = |name: &str| {
        let out = common::run_bounded(
            Command::new("systemd-analyze").args(["syscall-filter", name]),
            Duration::from_secs(30),
        );
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(set("@system-service").contains(&"@aio".to_owned()));
    let aio = set("@aio");
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(aio.contains(&call.to_owned()), "{call}: {aio:?}");
    }

    // The same check finds a mistake.
    let broken = dir.path().join("ringtorrent.service");
    let text = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(
        &broken,
        text.replace("ProtectSystem=strict", "ProtectSystem=stritc"),
    )
    .unwrap();
    let (_, said) = verify(&checked[..1]);
    assert!(
        said.contains("ProtectSystem") || said.contains("protect system"),
        "{said}"
    );
}
