#!/usr/bin/env bash
# Multi-core scaling of seeding: `serve` with 1, 2, 4, 8 event loops, each loop owning one
# torrent, against `swarm-load` generators pinned to the other cores, one generator per
# torrent. A torrent lives on one loop (its info hash picks it), so the torrents are chosen
# until each loop owns exactly one. Prints MB/s and the seeder's CPU per loop count, and the
# scaling against the one-loop figure times the loop count (goal: >= 0.8x linear to 8 loops).
#
# Needs 2 x the largest loop count of cores (the seed on cores 0..L-1, generators on L..2L-1);
# loop counts that do not fit are skipped. Meant for the 16-core machine the device tool lends
# in some sessions; on 2 cores only L=1 runs.
#
# Usage: scripts/bench-loops.sh [LOOPS="1 2 4 8"] [SECONDS=10] [PEERS_PER_LOOP=200]
# RT=path measures a given binary (default: this tree's release build, built first).
# SIZE_MIB (default 128) is each torrent's payload, in /dev/shm. Every process it starts is
# ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
loops_list=${1:-"1 2 4 8"}
secs=${2:-10}
per_loop=${3:-200}
size_mib=${SIZE_MIB:-128}
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
cores=$(nproc)
work=$(mktemp -d /dev/shm/rt-bench-loops.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
hz=$(getconf CLK_TCK)
cpu_of() { awk -v hz="$hz" '{sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz}' "/proc/$1/stat"; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}
# The loop of L that owns the torrent with info hash $1 (hex): src/driver/shard.rs's shard_of,
# the first 8 bytes little-endian modulo L.
shard_of() { python3 -c 'import sys; print(int.from_bytes(bytes.fromhex(sys.argv[1])[:8], "little") % int(sys.argv[2]))' "$1" "$2"; }

echo "| loops | torrents | MB/s | seeder CPU (cores busy) | MB per seeder CPU-s | vs loops x one loop |"
echo "|---|---|---|---|---|---|"
one=""
for loops in $loops_list; do
    if [ $((2 * loops)) -gt "$cores" ]; then
        echo "skipping $loops loops: $cores cores" >&2
        continue
    fi
    # Torrents until every loop owns one: payloads of size_mib + k MiB differ, so do their
    # info hashes.
    rm -rf "$work/run"; mkdir -p "$work/run/data" "$work/run/watch" "$work/run/state"
    declare -A owner=()
    k=0
    while [ "${#owner[@]}" -lt "$loops" ] && [ "$k" -lt 200 ]; do
        "$rt" swarm-load gen --size $((size_mib + k)) --piece-length 1M -o "$work/gen" >/dev/null
        hash=$("$rt" info "$work/gen/swarm-load.torrent" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["info_hash"])')
        s=$(shard_of "$hash" "$loops")
        if [ -z "${owner[$s]:-}" ]; then
            owner[$s]=$k
            cp "$work/gen/swarm-load.torrent" "$work/run/t$s.torrent"
            mv "$work/gen/data/"* "$work/run/data/"
        fi
        rm -rf "$work/gen"
        k=$((k + 1))
    done
    unset owner
    port=$(free_port)
    api=$(free_port)
    cp "$work/run/"t*.torrent "$work/run/watch/"
    taskset -c "0-$((loops - 1))" "$rt" serve --listen "127.0.0.1:$port" --api "127.0.0.1:$api" \
        --threads "$loops" --data-dir "$work/run/data" --state-dir "$work/run/state" \
        --watch-dir "$work/run/watch" --max-peers $((per_loop + 100)) \
        --max-connections $((loops * per_loop + 200)) --seed-choke unlimited >"$work/serve.log" 2>&1 &
    serve=$!
    pids+=("$serve")
    wait_port "$port"
    # Every torrent seeding (checked) before the clock starts.
    for _ in $(seq 1 600); do
        n=$(curl -s "http://127.0.0.1:$api/torrents" 2>/dev/null | python3 -c 'import json,sys; print(sum(t["state"] == "seeding" for t in json.load(sys.stdin)))' 2>/dev/null || echo 0)
        [ "$n" -ge "$loops" ] && break
        sleep 0.1
    done
    c0=$(cpu_of "$serve")
    gens=()
    for s in $(seq 0 $((loops - 1))); do
        taskset -c "$((loops + s))" "$rt" swarm-load run --target "127.0.0.1:$port" \
            --torrent "$work/run/t$s.torrent" --mode download --peers "$per_loop" --duration "$secs" \
            --source-ips "127.0.$((s + 1)).2-127.0.$((s + 1)).254" --shard "$s/$loops" \
            --json -o "$work/run/gen$s.json" >/dev/null 2>"$work/gen$s.log" &
        gens+=("$!")
    done
    for g in "${gens[@]}"; do wait "$g" || { echo "generator failed: $(tail -3 "$work"/gen*.log)" >&2; exit 1; }; done
    c1=$(cpu_of "$serve")
    kill "$serve"; wait "$serve" 2>/dev/null || true
    row=$(python3 - "$work/run" "$loops" "$c0" "$c1" <<'PY'
import json, sys
run, loops, c0, c1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
mb = secs = 0.0
for s in range(loops):
    d = json.load(open(f"{run}/gen{s}.json"))
    mb += d["counters"].get("bytes.down", 0) / 1e6
    secs = max(secs, d["duration_secs"])
cpu = c1 - c0
print(f"{mb / secs:.0f} {cpu / secs:.2f} {mb / cpu:.0f}")
PY
)
    read -r mbs busy per_cpu <<<"$row"
    [ -z "$one" ] && [ "$loops" = 1 ] && one=$mbs
    scale="n/a"
    [ -n "$one" ] && scale=$(awk -v a="$mbs" -v o="$one" -v l="$loops" 'BEGIN {printf "%.2fx", a / (o * l)}')
    echo "| $loops | $loops | $mbs | $busy | $per_cpu | $scale |"
done
