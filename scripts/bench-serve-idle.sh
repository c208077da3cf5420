#!/usr/bin/env bash
# What an idle seedbox costs: `serve` seeding N small torrents from a watch folder, nobody
# connected, for two binaries in alternating rounds of one run. Per round and binary: a fresh
# state folder, the N torrents added from the watch folder and checked, then SETTLE seconds
# of quiet (default 65: past the first resume save, which writes every fresh torrent once),
# then WINDOW seconds measured: CPU seconds (user + system, every thread, from
# /proc/PID/stat) and files written in the state folder (settings and resume data
# rewritten, counted by modification time). WINDOW should cover a resume save (every 60 s).
#
# Usage: scripts/bench-serve-idle.sh OLD_BINARY [NEW_BINARY=target/release/ringtorrent]
#            [N=10000] [WINDOW=70] [ROUNDS=2]
# Loopback only; every process it starts is ended by PID.
set -euo pipefail
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
old=$1
new=${2:-$PWD/target/release/ringtorrent}
n=${3:-10000}
window=${4:-70}
rounds=${5:-2}
settle=${SETTLE:-65}
work=$(mktemp -d /dev/shm/rt-bench-idle.XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)

mkdir -p "$work/data" "$work/watch"
/usr/bin/python3 - "$work/data" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"t{i:06}.bin"), "wb") as f:
        f.write(i.to_bytes(8, "little") * 2048)
PY
echo "making $n torrents" >&2
ls "$work/data" | xargs -P 2 -I{} "$new" create "$work/data/{}" -l 16K -o "$work/watch/{}.torrent" >/dev/null

measure() { # name binary
    local state=$work/state-$1 out=$work/out-$1 api c0 c1 mark written
    rm -rf "$state"
    : > "$work/empty.toml"
    "$2" serve --config "$work/empty.toml" --listen 127.0.0.1:0 --api 127.0.0.1:0 \
        --data-dir "$work/data" --state-dir "$state" --watch-dir "$work/watch" --log warn \
        > "$out" 2> "$work/log-$1" &
    pid=$!
    api=""
    for _ in $(seq 600); do
        api=$(awk '/^api:/ {print $2}' "$out" 2>/dev/null || true)
        [ -n "$api" ] && break
        sleep 0.05
    done
    [ -n "$api" ] || { echo "serve did not start: $(cat "$work/log-$1")" >&2; exit 1; }
    while [ "$(curl -s "$api/api/v2/torrents/count")" != "$n" ]; do sleep 0.5; done
    while curl -s "$api/api/v2/torrents/info?filter=checking&limit=1" | grep -q hash; do sleep 0.5; done
    sleep "$settle"
    mark=$work/mark
    touch "$mark"
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep "$window"
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    written=$(find "$state" -type f -newer "$mark" | wc -l)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    /usr/bin/python3 -c "print('| $1 | %.2f | %.2f | $written |' % ($((c1 - c0)) / $hz, $((c1 - c0)) / $hz * 60 / $window))"
}

echo "## Idle serve, $n torrents, ${window} s windows ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg) at the start)"
echo
echo "| binary | CPU s | CPU s per minute | state files written |"
echo "|---|---|---|---|"
for r in $(seq "$rounds"); do
    measure "old-$r" "$old"
    measure "new-$r" "$new"
done
