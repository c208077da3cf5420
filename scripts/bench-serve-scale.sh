#!/usr/bin/env bash
# Start-up time and resident memory of a seedbox holding many small torrents, ringtorrent
# `serve` against libtorrent 2.0 (python3-libtorrent, tests/support/lt_load.py) loading the
# same set, in one run. Torrents are made with `ringtorrent create` (16 KiB payloads, one
# piece each).
#
# For each count N it measures:
#   - ringtorrent, first start: N torrents dropped in the watch folder, until the API lists N
#     (every payload checked, resume data written);
#   - ringtorrent, restart: the same state folder, until the API lists N (resume data
#     trusted, nothing hashed), and the resident memory then;
#   - libtorrent, all N added in seed mode (trusting the data, as a restart does), and its
#     resident memory then; and with --check (hashing everything), the first-start analogue.
# Memory per torrent is (RSS with N - RSS with none) / N, each client against its own empty
# baseline. CPU s is the process's user + system time at that moment (/proc/PID/stat for
# ringtorrent, `time.process_time()` in lt_load.py), from its start: on a loaded machine the
# fairer figure, as wall time there is mostly the wait for a core.
#
# Usage: scripts/bench-serve-scale.sh [COUNTS="1000 10000"]
# Every process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
counts=${1:-"1000 10000"}
# RT=path measures another ringtorrent binary (an older build, for a before/after pair).
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
lt_load=$PWD/tests/support/lt_load.py
work=$(mktemp -d /dev/shm/rt-bench-scale.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
now() { date +%s.%N; }
elapsed() { /usr/bin/python3 -c "print('%.2f' % ($2 - $1))"; }

# Starts serve on $1 (state) with extra args; sets $serve_pid and $api.
serve_start() {
    local state=$1 data=$2
    shift 2
    "$rt" serve --listen 127.0.0.1:0 --api 127.0.0.1:0 --data-dir "$data" --state-dir "$state" \
        --log warn "$@" >"$work/serve.out" 2>"$work/serve.err" &
    serve_pid=$!
    pids+=("$serve_pid")
    api=""
    for _ in $(seq 1 600); do
        api=$(awk '/^api:/ {print $2}' "$work/serve.out" 2>/dev/null || true)
        [ -n "$api" ] && return 0
        sleep 0.05
    done
    echo "serve did not start: $(cat "$work/serve.err")" >&2
    exit 1
}
count_torrents() {
    curl -s "$api/torrents" | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0
}
wait_count() {
    local n=$1
    while [ "$(count_torrents)" -lt "$n" ]; do sleep 0.05; done
}
serve_stop() {
    kill -TERM "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
}

# Baselines: no torrents.
mkdir -p "$work/empty/torrents" "$work/empty/data"
serve_start "$work/empty/state" "$work/empty/data"
wait_count 0
sleep 0.5
rt_base=$(rss_of "$serve_pid")
serve_stop
lt_base=$(/usr/bin/python3 "$lt_load" "$work/empty/torrents" "$work/empty/data" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["rss_kib"])')

echo "| torrents | client | phase | seconds | CPU s | RSS MiB | KiB per torrent |"
echo "|---|---|---|---|---|---|---|"
for n in $counts; do
    dir=$work/n$n
    mkdir -p "$dir/data" "$dir/torrents"
    /usr/bin/python3 - "$dir/data" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"t{i:06}.bin"), "wb") as f:
        f.write(i.to_bytes(8, "little") * 2048)
PY
    echo "making $n torrents" >&2
    ls "$dir/data" | xargs -P 2 -I{} "$rt" create "$dir/data/{}" -l 16K -o "$dir/torrents/{}.torrent" >/dev/null
    # ringtorrent, first start through the watch folder.
    t0=$(now)
    serve_start "$dir/state" "$dir/data" --watch-dir "$dir/torrents"
    wait_count "$n"
    t1=$(now)
    rss=$(rss_of "$serve_pid")
    cpu=$(cpu_of "$serve_pid")
    serve_stop
    echo "| $n | ringtorrent | first start (checking) | $(elapsed "$t0" "$t1") | $cpu | $((rss / 1024)) | $(( (rss - rt_base) / n )) |"
    # ringtorrent, restart from the state folder.
    t0=$(now)
    serve_start "$dir/state" "$dir/data"
    wait_count "$n"
    t1=$(now)
    rss=$(rss_of "$serve_pid")
    cpu=$(cpu_of "$serve_pid")
    serve_stop
    echo "| $n | ringtorrent | restart (resume data) | $(elapsed "$t0" "$t1") | $cpu | $((rss / 1024)) | $(( (rss - rt_base) / n )) |"
    for mode in seed check; do
        flag=""
        [ "$mode" = check ] && flag=--check
        out=$(/usr/bin/python3 "$lt_load" "$dir/torrents" "$dir/data" $flag)
        secs=$(echo "$out" | /usr/bin/python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["seconds"])')
        rss=$(echo "$out" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["rss_kib"])')
        cpu=$(echo "$out" | /usr/bin/python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["cpu_s"])')
        phase="seed mode (trusting the data)"
        [ "$mode" = check ] && phase="checking"
        echo "| $n | libtorrent | $phase | $secs | $cpu | $((rss / 1024)) | $(( (rss - lt_base) / n )) |"
    done
    rm -rf "$dir"
done
echo
echo "baselines with no torrent: ringtorrent $((rt_base / 1024)) MiB, libtorrent (python) $((lt_base / 1024)) MiB"
