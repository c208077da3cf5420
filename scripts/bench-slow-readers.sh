#!/usr/bin/env bash
# Upload memory under slow readers, and upload throughput on the normal path, for two builds
# of ringtorrent in one run (perf/2026-12-02-slow-readers.md).
#
# Usage: RT=path/to/after BEFORE=path/to/before scripts/bench-slow-readers.sh \
#            [COUNTS="200 600 1000"] [PIPELINE=256] [ROUNDS=2] [LEECHERS=50] [SECONDS=10]
# RT defaults to this tree's release build (built first); without BEFORE only RT is measured.
#
# Memory: a seed (`--threads 1 --seed-choke unlimited`, so every peer is unchoked on one loop)
# of a 64 MiB payload in /dev/shm, and N synthetic leechers (`swarm-load --slow-readers 1`,
# over 127.0.0.2-254) that each request PIPELINE blocks and never read. Once all N have
# stalled, the seed's RssAnon and VmRSS (from /proc/PID/status) are sampled every 0.5 s until
# RssAnon has not grown for 5 s (at most 60 s: the seed may take a while to read and queue
# everything it will), and the largest kept. RssAnon is what the process holds; VmRSS adds the payload's
# file-backed mapped pages (page cache).
# Throughput: LEECHERS normal synthetic leechers downloading for SECONDS, builds alternating
# ROUNDS times; MB/s, and bytes per CPU-second of the seed (utime + stime from /proc/PID/stat).
# The generator is always RT's swarm-load (BEFORE may not have --slow-readers).
# Every process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
counts=${1:-200 600 1000}
pipeline=${2:-256}
rounds=${3:-2}
leechers=${4:-50}
secs=${5:-10}
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
    RT=${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent
fi
builds=(after)
[ -n "${BEFORE:-}" ] && builds=(before after)
bin() { if [ "$1" = before ]; then echo "$BEFORE"; else echo "$RT"; fi; }
work=$(mktemp -d /dev/shm/rt-bench-slow.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$RT" swarm-load gen --size 64 --piece-length 256K -o "$work" >/dev/null
torrent=$work/swarm-load.torrent

# Starts a seed of build $1 allowing $2 peers; sets $seed_pid and $seed_addr. Each start
# logs to a file of its own, so an earlier seed's address is never read for this one.
starts=0
start_seed() {
    starts=$((starts + 1))
    local log=$work/seed-$starts.log
    "$(bin "$1")" seed "$torrent" "$work/data" --port 0 --bind 127.0.0.1 --threads 1 \
        --seed-choke unlimited --max-peers $(($2 + 100)) --duration 600 \
        --state-dir "$work/state-$1" >"$log" 2>&1 &
    seed_pid=$!
    pids+=("$seed_pid")
    for _ in $(seq 1 600); do
        seed_addr=$(grep -so '127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)
        [ -n "$seed_addr" ] && return 0
        sleep 0.1
    done
    echo "the $1 seed did not start:" >&2
    cat "$log" >&2
    return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

echo "| slow readers | build | RssAnon MiB | VmRSS MiB | RssAnon per reader KiB |"
echo "|---|---|---|---|---|"
declare -A anon
for n in $counts; do
    for b in "${builds[@]}"; do
        start_seed "$b" "$n"
        idle=$(field "$seed_pid" RssAnon)
        "$RT" swarm-load run --target "$seed_addr" --torrent "$torrent" --mode download \
            --peers "$n" --slow-readers 1 --pipeline "$pipeline" \
            --source-ips 127.0.0.2-127.0.0.254 --duration 600 --timeout 700 \
            >/dev/null 2>"$work/gen.log" &
        gen=$!
        pids+=("$gen")
        ok=
        for _ in $(seq 1 1200); do
            if awk -v n="$n" '{ for (i = 2; i <= NF; i++) if ($i == "stalled" && $(i-1) >= n) f = 1 }
                              END { exit !f }' "$work/gen.log"; then
                ok=1
                break
            fi
            sleep 0.1
        done
        [ -n "$ok" ] || { echo "not all $n readers stalled:" >&2; tail -3 "$work/gen.log" >&2; exit 1; }
        most_anon=0 most_rss=0 flat=0
        for _ in $(seq 1 120); do
            a=$(field "$seed_pid" RssAnon)
            r=$(field "$seed_pid" VmRSS)
            if [ "$a" -gt $((most_anon + most_anon / 100)) ]; then flat=0; else flat=$((flat + 1)); fi
            [ "$a" -gt "$most_anon" ] && most_anon=$a
            [ "$r" -gt "$most_rss" ] && most_rss=$r
            [ "$flat" -ge 10 ] && break
            sleep 0.5
        done
        stop "$gen"
        stop "$seed_pid"
        anon[$n-$b]=$most_anon
        printf '| %d | %s | %.0f | %.0f | %.0f |\n' "$n" "$b" "$(echo "$most_anon / 1024" | bc -l)" \
            "$(echo "$most_rss / 1024" | bc -l)" "$(echo "($most_anon - $idle) / $n" | bc -l)"
    done
done
if [ -n "${BEFORE:-}" ]; then
    echo
    for n in $counts; do
        printf 'N=%d: RssAnon before/after %.1fx\n' "$n" "$(echo "${anon[$n-before]} / ${anon[$n-after]}" | bc -l)"
    done
fi

echo
echo "Normal path: $leechers synthetic leechers for $secs s, builds alternating, $rounds rounds"
echo
echo "| round | build | MB/s | seed CPU s | MB per seed CPU-second |"
echo "|---|---|---|---|---|"
tick=$(getconf CLK_TCK)
for round in $(seq 1 "$rounds"); do
    order=("${builds[@]}")
    [ $((round % 2)) -eq 0 ] && order=($(printf '%s\n' "${builds[@]}" | tac))
    for b in "${order[@]}"; do
        start_seed "$b" "$leechers"
        cpu0=$(awk -v t="$tick" '{ print ($14 + $15) / t }' "/proc/$seed_pid/stat")
        "$RT" swarm-load run --target "$seed_addr" --torrent "$torrent" --mode download \
            --peers "$leechers" --source-ips 127.0.0.2-127.0.0.254 --duration "$secs" \
            --json -o "$work/tp.json" >/dev/null 2>"$work/gen.log"
        cpu=$(awk -v t="$tick" -v c0="$cpu0" '{ print ($14 + $15) / t - c0 }' "/proc/$seed_pid/stat")
        stop "$seed_pid"
        /usr/bin/python3 - "$work/tp.json" "$round" "$b" "$cpu" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
down, secs, cpu = d["counters"].get("bytes.down", 0), d["duration_secs"], float(sys.argv[4])
print(f"| {sys.argv[2]} | {sys.argv[3]} | {down / secs / 1e6:.0f} | {cpu:.2f} | {down / 1e6 / cpu:.0f} |")
PY
    done
done
