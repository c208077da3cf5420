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
# The web UI's browser test (tests/webui.rs) runs Debian's headless Chromium through its
# WebDriver (chromium-driver), driven by selenium from a virtual environment below.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# tests/systemd.rs runs `systemd-analyze verify` on deploy/systemd's units.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# tests/container.rs builds the image (scripts/build-image.sh) with buildah and runs it.
command -v buildah >/dev/null 2>&1 || need+=(buildah)
# The virtual environments below need venv and pip.
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The Python tools the tests drive, each in a virtual environment of its own under the target
# folder: `venv NAME CHECK SPEC` makes target/NAME afresh with pip's SPEC unless its Python
# runs CHECK successfully.
venv() {
    local dir="${CARGO_TARGET_DIR:-target}/$1"
    if ! "$dir/bin/python" -c "$2" >/dev/null 2>&1; then
        echo "installing $3 into $dir"
        rm -rf "$dir"
        /usr/bin/python3 -m venv "$dir"
        "$dir/bin/pip" install --quiet --disable-pip-version-check "$3"
    fi
}
pinned() { echo "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')"; }
# The real qBittorrent WebAPI client that tests/qbt_webapi.rs drives serve with.
venv qbt-venv 'import qbittorrentapi' 'qbittorrent-api>=2024.1'
# tests/kubernetes.rs validates deploy/kubernetes offline and strictly (pinned: its schemas
# decide what passes).
venv k8s-venv "$(pinned kubernetes-validate 1.37.0)" 'kubernetes-validate==1.37.0'
# tests/webui.rs drives Chromium with selenium.
venv webui-venv "$(pinned selenium 4.51.0)" 'selenium==4.51.0'

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
