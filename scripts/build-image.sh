#!/usr/bin/env bash
# Builds ringtorrent's container image from deploy/Containerfile, FROM scratch (nothing is
# pulled): stages the release binary, exactly the shared libraries `ldd` lists for it, a
# passwd/group with the non-root user ringtorrent (10001), nsswitch.conf and the container's
# serve.toml under target/image/, then runs `buildah bud` (or `podman build`) with chroot
# isolation, which needs no daemon and works rootless.
#
# Usage: scripts/build-image.sh [TAG]        (default: localhost/ringtorrent:latest)
# Environment: RINGTORRENT_BIN, a binary to put in the image instead of building
# target/release/ringtorrent (the tests use their debug build).
# Then, e.g.: podman run --rm localhost/ringtorrent:latest --help
#             buildah from localhost/ringtorrent:latest && buildah run CONTAINER -- \
#                 /usr/local/bin/ringtorrent --version
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-localhost/ringtorrent:latest}
if command -v buildah >/dev/null 2>&1; then
    build=(buildah bud)
elif command -v podman >/dev/null 2>&1; then
    build=(podman build)
else
    echo "build-image.sh: neither buildah nor podman is installed (apt-get install buildah)" >&2
    exit 1
fi

target=${CARGO_TARGET_DIR:-target}
bin=${RINGTORRENT_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked
    bin=$target/release/ringtorrent
fi

ctx=$target/image
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ringtorrent" \
    "$ctx/state/data" "$ctx/state/state"
install -m 755 "$bin" "$ctx/rootfs/usr/local/bin/ringtorrent"

# The dynamic loader and the libraries, at the paths the binary asks for (copied as files:
# symbolic links resolved). A static binary lists none.
libs=$( (ldd "$bin" 2>/dev/null || true) | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
for lib in $libs; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
echo "libraries: ${libs//$'\n'/ }"

cat >"$ctx/rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/nonexistent
ringtorrent:x:10001:10001:ringtorrent:/var/lib/ringtorrent/state:/nonexistent
PASSWD
cat >"$ctx/rootfs/etc/group" <<'GROUP'
root:x:0:
ringtorrent:x:10001:
GROUP
# glibc (2.34 and later) has its files and dns NSS modules built in; without this file it
# would ask DNS before /etc/hosts.
cat >"$ctx/rootfs/etc/nsswitch.conf" <<'NSS'
passwd: files
group: files
hosts: files dns
NSS
install -m 644 deploy/container/serve.toml "$ctx/rootfs/etc/ringtorrent/serve.toml"

"${build[@]}" --isolation chroot --file deploy/Containerfile --tag "$tag" "$ctx"
