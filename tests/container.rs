//! The container image: scripts/build-image.sh builds deploy/Containerfile FROM scratch with
//! buildah (scripts/test.sh installs it) into a storage of the test's own (vfs driver, chroot
//! isolation: no daemon, nothing pulled), and the binary runs inside it, as the non-root
//! user, with only the files the image holds.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::run_bounded;

/// `buildah ARGS` with the test's storage; its output, which must be a success.
fn buildah(conf: &Path, args: &[&str]) -> String {
    let out = run_bounded(
        Command::new("buildah")
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", conf),
        Duration::from_secs(120),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "buildah {args:?}: {said}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_builds_from_scratch_and_runs_the_binary_as_non_root() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.path().join("graph").display(),
            dir.path().join("run").display()
        ),
    )
    .unwrap();
    let tag = format!("localhost/ringtorrent-test:{}", std::process::id());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_bounded(
        Command::new("bash")
            .arg(root.join("scripts/build-image.sh"))
            .arg(&tag)
            .env("RINGTORRENT_BIN", env!("CARGO_BIN_EXE_ringtorrent"))
            .env("CARGO_TARGET_DIR", dir.path().join("target"))
            .env("CONTAINERS_STORAGE_CONF", &conf),
        Duration::from_secs(300),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("FROM scratch"), "{said}");
    // Exactly the libraries the binary is linked with, no more.
    assert!(
        said.contains("libraries: ") && said.contains("libc.so.6"),
        "{said}"
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&buildah(&conf, &["inspect", "--type", "image", &tag])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!([
            "/usr/local/bin/ringtorrent",
            "serve",
            "--config",
            "/etc/ringtorrent/serve.toml"
        ])
    );
    for volume in ["/var/lib/ringtorrent/data", "/var/lib/ringtorrent/state"] {
        assert!(config["Volumes"].get(volume).is_some(), "{config}");
    }
    // One layer: nothing under it.
    assert_eq!(
        inspect["OCIv1"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{inspect}"
    );

    let ctr = buildah(&conf, &["from", &tag]).trim().to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--isolation", "chroot", &ctr, "--"];
        all.extend_from_slice(args);
        run_bounded(
            Command::new("buildah")
                .args(&all)
                .env("CONTAINERS_STORAGE_CONF", &conf),
            Duration::from_secs(60),
        )
    };
    let out = run(&["/usr/local/bin/ringtorrent", "--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ringtorrent {}", env!("CARGO_PKG_VERSION"))
    );
    // The image's own config is read and checked: its API is on every address, so serve
    // refuses to start without credentials, and says so.
    let out = run(&[
        "/usr/local/bin/ringtorrent",
        "serve",
        "--config",
        "/etc/ringtorrent/serve.toml",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no credentials are set"), "{err}");
    buildah(&conf, &["rm", &ctr]);
    buildah(&conf, &["rmi", "--force", &tag]);
}

/// The image's config with the API on every address starts once flags give credentials
/// (`podman run IMAGE --api-username U --api-password P`): the file is checked with the flags
/// applied. Run on the host here, on loopback peers, the API on every address but a free
/// port; it then refuses requests without credentials.
#[test]
fn the_image_config_starts_with_credentials_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/container/serve.toml");
    let mut child = common::Guard(
        common::ringtorrent()
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--api-username", "admin", "--api-password", "secret"])
            .args(["--api", "0.0.0.0:0", "--listen", "127.0.0.1:0", "--no-dht"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let said = common::first_lines(child.0.stdout.take().unwrap(), 2, common::START_LIMIT).unwrap();
    let port = said[1]
        .trim()
        .strip_prefix("api: http://0.0.0.0:")
        .unwrap_or_else(|| panic!("{said:?}"));
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /torrents HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
}
