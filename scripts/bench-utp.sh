#!/usr/bin/env bash
# uTP on loopback, one run, same machine state, three measurements:
#   1. ringtorrent's uTP layer (src/utp): two endpoints on loopback UDP, one thread each,
#      moving SIZE_MIB (examples/utp_pair.rs), with its CPU per GiB (both sides, user + sys);
#   2. the same bytes over a loopback TCP connection in the same process (the kernel's TCP,
#      the cost our TCP transport starts from), CPU per GiB likewise;
#   3. libtorrent 2.0's uTP between two libtorrents (lt_seed.py -> lt_leech.py, both
#      --utp-only, plaintext), SIZE_MIB of the same size, rate from adding to completion.
# Prints a markdown table and the ratios the issue asks for.
#
# What this is not yet: the engine's uTP. The loops do not carry uTP so far, so row 1 is the
# protocol layer without disk, hashing or the peer wire; compare it with row 3 as a ceiling,
# not as the engine-to-engine figure.
#
# Usage: scripts/bench-utp.sh [SIZE_MIB=256]
# Needs: python3-libtorrent, mktorrent (scripts/test.sh installs them). Every process it starts
# is ended by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-256}

cargo build --release --quiet --example utp_pair
pair=target/release/examples/utp_pair

work=$(mktemp -d /dev/shm/rt-bench-utp.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    exec 9>&- 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== ringtorrent uTP layer and loopback TCP ($size_mib MiB)" >&2
ours=$("$pair" "$size_mib")
echo "$ours" >&2

echo "== libtorrent uTP -> libtorrent uTP ($size_mib MiB)" >&2
mkdir -p "$work/seed" "$work/out"
head -c $((size_mib << 20)) /dev/urandom > "$work/seed/payload.bin"
mktorrent -l 20 -a http://127.0.0.1:1/announce -o "$work/p.torrent" "$work/seed/payload.bin" >/dev/null
mkfifo "$work/seed.in"
/usr/bin/python3 tests/support/lt_seed.py "$work/p.torrent" "$work/seed" --utp-only \
    --out-enc-policy disabled --in-enc-policy disabled --max-seconds 900 \
    < "$work/seed.in" > "$work/seed.out" 2>"$work/seed.err" &
pids+=($!)
exec 9> "$work/seed.in"
for _ in $(seq 600); do [ -s "$work/seed.out" ] && break; sleep 0.1; done
port=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["port"])' "$work/seed.out")
lt=$(/usr/bin/python3 tests/support/lt_leech.py "$work/p.torrent" "$work/out" --utp-only \
    --out-enc-policy disabled --in-enc-policy disabled --peer "127.0.0.1:$port" --timeout 600 2>/dev/null)
echo "$lt" >&2
cmp -s "$work/seed/payload.bin" "$work/out/payload.bin" || { echo "libtorrent's copy differs" >&2; exit 1; }

/usr/bin/python3 - "$ours" "$lt" <<'EOF'
import json, sys
o = json.loads(sys.argv[1])
l = json.loads(sys.argv[2])
print("| transfer | MB/s | CPU s/GiB |")
print("|---|---|---|")
print(f"| ringtorrent uTP layer, endpoint to endpoint | {o['utp_mb_s']:.1f} | {o['utp_cpu_s_per_gib']:.2f} |")
print(f"| loopback TCP, same bytes, same process | {o['tcp_mb_s']:.1f} | {o['tcp_cpu_s_per_gib']:.2f} |")
print(f"| libtorrent uTP -> libtorrent uTP | {l['mb_s']:.1f} | |")
print()
print(f"ours / libtorrent (uTP rate): {o['utp_mb_s'] / l['mb_s']:.2f}x (goal >= 5x)")
print(f"uTP CPU / TCP CPU per GiB: {o['utp_cpu_s_per_gib'] / max(o['tcp_cpu_s_per_gib'], 1e-9):.2f}x (goal <= 2x)")
EOF
