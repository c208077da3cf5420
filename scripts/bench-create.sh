#!/usr/bin/env bash
# Times `ringtorrent create` against mktorrent on the same payload, side by side, alternating
# runs so both see the same machine load. Prints a markdown table with the median of each and
# their ratio. Usage: scripts/bench-create.sh [SIZE_MIB=1024] [RUNS=3] [PIECE_EXP=20]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-3}
exp=${3:-20}
command -v mktorrent >/dev/null || { echo "mktorrent is needed: apt-get install mktorrent" >&2; exit 1; }
cargo build --release --quiet
bin=target/release/ringtorrent
work=$(mktemp -d /dev/shm/rt-bench-create.XXXXXX)
trap 'rm -rf "$work"' EXIT
head -c $((size_mib << 20)) /dev/urandom > "$work/payload.bin"
threads=$(nproc)

time_ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mk=() rt=()
for _ in $(seq "$runs"); do
    rm -f "$work"/*.torrent
    mk+=("$(time_ms mktorrent -t "$threads" -l "$exp" -a http://127.0.0.1:1/a -o "$work/mk.torrent" "$work/payload.bin")")
    rt+=("$(time_ms "$bin" create "$work/payload.bin" -l $((1 << exp)) -a http://127.0.0.1:1/a -o "$work/rt.torrent")")
done
cmp <("$bin" info --json "$work/mk.torrent" | grep -o '"info_hash":"[0-9a-f]*"') \
    <("$bin" info --json "$work/rt.torrent" | grep -o '"info_hash":"[0-9a-f]*"') \
    || { echo "info hashes differ" >&2; exit 1; }
mk_med=$(printf '%s\n' "${mk[@]}" | median)
rt_med=$(printf '%s\n' "${rt[@]}" | median)
echo "| tool | runs (ms) | median (ms) | MB/s | speed vs mktorrent |"
echo "|---|---|---|---|---|"
awk -v n="mktorrent -t $threads" -v r="${mk[*]}" -v m="$mk_med" -v s="$size_mib" \
    'BEGIN {printf "| %s | %s | %d | %.0f | 1.00 |\n", n, r, m, s*1.048576*1000/m}'
awk -v n="ringtorrent create" -v r="${rt[*]}" -v m="$rt_med" -v s="$size_mib" -v b="$mk_med" \
    'BEGIN {printf "| %s | %s | %d | %.0f | %.2fx |\n", n, r, m, s*1.048576*1000/m, b/m}'
