#!/usr/bin/env bash
# uTP, one run, same machine state:
#   1. ringtorrent's uTP layer (src/utp): two endpoints on loopback UDP, one thread each,
#      moving SIZE_MIB (examples/utp_pair.rs), with its CPU per GiB (both sides, user + sys),
#      and the same bytes over a loopback TCP connection in the same process; libtorrent's
#      uTP between two libtorrents (lt_seed.py -> lt_leech.py --utp-only, plaintext);
#   2. the engine on loopback (scripts/bench-clients.sh, plaintext, one round each):
#      ringtorrent -> ringtorrent over uTP (`--transport utp`) against libtorrent ->
#      libtorrent over uTP (`--utp-only`, TCP off both ways), and ringtorrent -> ringtorrent
#      over TCP (`--transport tcp`): the rate ratio (goal >= 5x) and uTP's CPU per GiB
#      against our TCP's (both processes, /proc/PID/stat and getrusage; goal <= 2x);
#   3. unless LINK=0, the same uTP rows across an emulated link (LINK_SPEC, default
#      50ms,1%,100mbit) with LINK_MIB, alone and beside a bulk TCP flow (--bulk: how much of
#      the link the other flow keeps, LEDBAT's yielding).
# Prints the tables and the ratios the issue asks for.
#
# Usage: scripts/bench-utp.sh [SIZE_MIB=256] [LINK_MIB=8] (uTP runs at about 0.3 MB/s on the lossy
# link, slower beside the bulk flow: keep LINK_MIB small)
# Needs: python3-libtorrent, mktorrent, transmission-daemon, aria2 (bench-clients.sh checks
# for them; scripts/test.sh installs them). Every process it starts is ended by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-256}
link_mib=${2:-8}
link_spec=${LINK_SPEC:-50ms,1%,100mbit}

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

echo "== the engine on loopback ($size_mib MiB, plaintext)" >&2
engine_utp=$(TRANSPORT=utp ONLY="lt:lt rt:rt" ENCRYPTION=plain scripts/bench-clients.sh "$size_mib" 1)
echo "$engine_utp"
engine_tcp=$(TRANSPORT=tcp ONLY="rt:rt" ENCRYPTION=plain scripts/bench-clients.sh "$size_mib" 1)
echo "$engine_tcp"
echo
# Column 6 of a row: MB/s; column 8: CPU-seconds of both processes.
cell() { awk -F'|' -v who="$2" -v col="$3" 'index($3, who) {gsub(/ /, "", $col); print $col; exit}' <<<"$1"; }
rt_utp_mbs=$(cell "$engine_utp" "ringtorrent -> ringtorrent" 6)
lt_utp_mbs=$(cell "$engine_utp" "libtorrent -> libtorrent" 6)
rt_utp_cpu=$(cell "$engine_utp" "ringtorrent -> ringtorrent" 8)
rt_tcp_cpu=$(cell "$engine_tcp" "ringtorrent -> ringtorrent" 8)
rt_tcp_mbs=$(cell "$engine_tcp" "ringtorrent -> ringtorrent" 6)

if [ "${LINK:-1}" != 0 ]; then
    echo "== uTP across $link_spec ($link_mib MiB)" >&2
    TRANSPORT=utp ONLY="lt:lt rt:rt" ENCRYPTION=plain scripts/bench-clients.sh --link "$link_spec" "$link_mib" 1
    echo
    TRANSPORT=utp ONLY="lt:lt rt:rt" ENCRYPTION=plain scripts/bench-clients.sh --link "$link_spec" --bulk "$link_mib" 1
    echo
fi

/usr/bin/python3 - "$ours" "$lt" "$size_mib" "$rt_utp_mbs" "$lt_utp_mbs" "$rt_utp_cpu" "$rt_tcp_cpu" "$rt_tcp_mbs" <<'EOF'
import json, sys
o = json.loads(sys.argv[1])
l = json.loads(sys.argv[2])
gib = int(sys.argv[3]) / 1024
rt_mbs, lt_mbs, rt_cpu, tcp_cpu, tcp_mbs = (float(x) for x in sys.argv[4:9])
print("| transfer | MB/s | CPU s/GiB |")
print("|---|---|---|")
print(f"| uTP layer, endpoint to endpoint (examples/utp_pair) | {o['utp_mb_s']:.1f} | {o['utp_cpu_s_per_gib']:.2f} |")
print(f"| loopback TCP, same bytes, same process | {o['tcp_mb_s']:.1f} | {o['tcp_cpu_s_per_gib']:.2f} |")
print(f"| libtorrent uTP -> libtorrent uTP (first run) | {l['mb_s']:.1f} | |")
print(f"| engine: ringtorrent -> ringtorrent over uTP | {rt_mbs:.1f} | {rt_cpu / gib:.2f} (both processes) |")
print(f"| engine: ringtorrent -> ringtorrent over TCP | {tcp_mbs:.1f} | {tcp_cpu / gib:.2f} (both processes) |")
print(f"| engine: libtorrent -> libtorrent over uTP | {lt_mbs:.1f} | |")
print()
print(f"engine: ringtorrent uTP / libtorrent uTP (rate): {rt_mbs / lt_mbs:.2f}x (goal >= 5x)")
print(f"engine: uTP CPU / TCP CPU per GiB: {rt_cpu / max(tcp_cpu, 1e-9):.2f}x (goal <= 2x)")
print(f"uTP layer / libtorrent uTP (rate): {o['utp_mb_s'] / l['mb_s']:.2f}x")
EOF
