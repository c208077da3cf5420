#!/usr/bin/env bash
# Installs what the tests need (when missing), then runs every check: formatting, clippy with
# warnings as errors, the fuzz targets' build, and all tests. This is the README's test command
# and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: mktorrent and libtorrent are the references that `create`,
# `info` and `handshake` are checked against.
need=()
command -v mktorrent >/dev/null 2>&1 || need+=(mktorrent)
/usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1 || need+=(python3-libtorrent)
# opentracker is the real tracker the tracker tests announce to; openssl makes their
# HTTPS certificates.
command -v opentracker >/dev/null 2>&1 || need+=(opentracker)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Real clients the interop tests transfer with: Transmission 3.00 (the daemon, driven with
# transmission-remote from transmission-cli) and aria2 1.36.
command -v transmission-daemon >/dev/null 2>&1 || need+=(transmission-daemon)
command -v transmission-remote >/dev/null 2>&1 || need+=(transmission-cli)
command -v aria2c >/dev/null 2>&1 || need+=(aria2)
# qBittorrent's own WebAPI, the reference tests/qbt_nox_compare.rs holds serve's to (Debian's
# qBittorrent 4.5, headless).
command -v qbittorrent-nox >/dev/null 2>&1 || need+=(qbittorrent-nox)
# nsenter runs programs on either side of tools/link-emu's emulated link.
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# --- webui: the web UI's browser test (tests/webui.rs) runs Debian's headless Chromium
# through its WebDriver (chromium-driver), driven by selenium from the venv made below.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# --- end webui
# The virtual environments below need venv and pip.
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The real qBittorrent WebAPI client (qbittorrent-api from PyPI) that tests/qbt_webapi.rs
# drives serve with, in a virtual environment of its own under the target folder.
qbt_venv="${CARGO_TARGET_DIR:-target}/qbt-venv"
if ! "$qbt_venv/bin/python" -c 'import qbittorrentapi' >/dev/null 2>&1; then
    echo "installing qbittorrent-api into $qbt_venv"
    rm -rf "$qbt_venv"
    /usr/bin/python3 -m venv "$qbt_venv"
    "$qbt_venv/bin/pip" install --quiet --disable-pip-version-check 'qbittorrent-api>=2024.1'
fi

# --- deploy (issue 24): systemd units, Kubernetes manifests, the container image ---
deploy_need=()
# tests/systemd.rs runs `systemd-analyze verify` on deploy/systemd's units.
command -v systemd-analyze >/dev/null 2>&1 || deploy_need+=(systemd)
# tests/container.rs builds the image (scripts/build-image.sh) with buildah and runs it.
command -v buildah >/dev/null 2>&1 || deploy_need+=(buildah)
if ((${#deploy_need[@]})); then
    echo "installing: ${deploy_need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${deploy_need[@]}"
fi
# tests/kubernetes.rs validates deploy/kubernetes offline and strictly with kubernetes-validate
# (PyPI, pinned: its schemas decide what passes), in a virtual environment under the target
# folder.
k8s_venv="${CARGO_TARGET_DIR:-target}/k8s-venv"
if ! "$k8s_venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx '1.37.0'; then
    echo "installing kubernetes-validate into $k8s_venv"
    rm -rf "$k8s_venv"
    /usr/bin/python3 -m venv "$k8s_venv"
    "$k8s_venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
# --- end deploy ---
# --- webui: selenium (PyPI) for tests/webui.rs, in a virtual environment of its own beside
# the one above.
webui_venv="${CARGO_TARGET_DIR:-target}/webui-venv"
if ! "$webui_venv/bin/python" -c 'import selenium, sys; sys.exit(selenium.__version__ != "4.51.0")' >/dev/null 2>&1; then
    echo "installing selenium into $webui_venv"
    rm -rf "$webui_venv"
    /usr/bin/python3 -m venv "$webui_venv"
    "$webui_venv/bin/pip" install --quiet --disable-pip-version-check 'selenium==4.51.0'
fi
# --- end webui

echo "== cargo fmt --check"
cargo fmt --all -- --check
# The fuzz crate is its own workspace, so cargo fmt does not reach it.
rustfmt --check --edition 2021 fuzz/fuzz_targets/*.rs
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo doc"
# The library's documentation is part of its interface: every public item documented, no
# broken links.
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib --quiet
echo "== examples build"
cargo build --locked --examples --quiet
echo "== fuzz targets build"
# The fuzz crate's lock follows the main crate's dependencies; it is refreshed, not enforced.
# cargo-fuzz builds them with `--cfg fuzzing` (the MSE target needs it), so check them so too.
RUSTFLAGS="--cfg fuzzing" cargo check --manifest-path fuzz/Cargo.toml --quiet
echo "== link-emu"
# The emulated link the real-link tests and benchmarks run across: its own crate (libc only),
# built in release so it keeps up with 100 Mbit/s, tested on its own (measured delay, loss,
# reordering, rate), before the main tests that use it. In its own target folder whatever
# CARGO_TARGET_DIR says: tests/common/link.rs runs the binary from there.
cargo fmt --manifest-path tools/link-emu/Cargo.toml -- --check
env -u CARGO_TARGET_DIR cargo clippy --locked --manifest-path tools/link-emu/Cargo.toml --release --all-targets -- -D warnings
env -u CARGO_TARGET_DIR cargo test --locked --manifest-path tools/link-emu/Cargo.toml --release
echo "== cargo test"
cargo test --locked
echo "== benches' self-checks"
# Each bench once, without measuring: criterion's test mode runs every benchmark one time;
# send_zc sends 4 MiB per variant and checks the bytes, storage_cold runs every variant over
# an 8 MiB file, sim_figures runs its scenarios. A bench that cannot run fails here.
cargo test --locked --benches
