#!/usr/bin/env bash
# Start-up time and resident memory of a seedbox holding many small torrents, ringtorrent
# `serve` against libtorrent 2.0 (python3-libtorrent, tests/support/lt_load.py) loading the
# same set, in one run. Torrents are made with `ringtorrent create` (16 KiB payloads, one
# piece each).
#
# For each count N it measures:
#   - ringtorrent, first start: N torrents dropped in the watch folder, until every one is in
#     its loop with its payload checked (`/metrics`: ringtorrent_torrents{state="active"} = N;
#     the API answers it after the watch folder's batch is in);
#   - ringtorrent, restart: the same state folder, until `serve` says READY=1 on the
#     sd_notify socket this script listens on (sent once every remembered torrent is back in
#     its loop, its resume data read and checked against the files: nothing hashed), and the
#     resident memory then;
#   - libtorrent, all N added in seed mode (trusting the data, as a restart does), and its
#     resident memory then; and with --check (hashing everything), the first-start analogue.
#     lt_load.py stops when every torrent has posted `torrent_checked_alert`: in its session
#     with its pieces known, the same point as ringtorrent's.
# Both sides are timed to their readiness point, ringtorrent from its exec, libtorrent from
# before its session is made (after Python and the module load). Before 2026-12-03 this
# script timed ringtorrent until a `curl` of `GET /torrents` (11 MB at 10,000 torrents) parsed
# by Python counted N, and libtorrent's seed mode until `get_torrents()` listed N (added, not
# yet through its resume check): the "listing" column and lt_load.py's `added_s` keep those
# old points in the same run, to show what the change of method did.
# Memory per torrent is (RSS with N - RSS with none) / N, each client against its own empty
# baseline, at the readiness point (before any listing is built). CPU s is the process's
# user + system time at that moment (/proc/PID/stat for ringtorrent, `time.process_time()`
# in lt_load.py), from its start: on a loaded machine the fairer figure, as wall time there
# is mostly the wait for a core.
#
# Usage: scripts/bench-serve-scale.sh [COUNTS="1000 10000"]
#   RT="bin1 bin2": ringtorrent binaries measured in turn in each round (a base build and a
#   new one, alternated in one run); ROUNDS=k repeats the whole (default 1).
#   LT_LOAD_OLD=path: also runs that (older) lt_load.py, for its old stop point.
#   RESTARTS=k: after each round's first starts (each binary on its own state folder), k
#   restarts of each binary alternated with k libtorrent seed-mode loads, one after another,
#   so each restart has a libtorrent figure taken seconds from it; a summary gives each
#   binary's median ratio to its neighbouring libtorrent load and the spread of both sides
#   (2026-12-03: one pair per round swung 0.23-0.96x, RESTARTS shows whose time moves).
# Every process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
counts=${1:-"1000 10000"}
rounds=${ROUNDS:-1}
# RT=path measures another ringtorrent binary (or several, in turn).
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rts=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
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

# A listener on a unix datagram socket, for serve's sd_notify: prints the wall-clock time
# (as `date +%s.%N`) at which READY=1 arrives, then exits. Sets $notify_sock, $ready_file.
notify_listen() {
    notify_sock=$work/notify.sock
    ready_file=$work/ready.time
    rm -f "$notify_sock" "$ready_file"
    /usr/bin/python3 - "$notify_sock" "$ready_file" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096)
    if b"READY=1" in msg.split(b"\n"):
        t = time.time()
        with open(sys.argv[2] + ".tmp", "w") as f:
            f.write("%.6f\n" % t)
        import os
        os.rename(sys.argv[2] + ".tmp", sys.argv[2])
        break
PY
    pids+=($!)
    for _ in $(seq 1 200); do
        [ -S "$notify_sock" ] && return 0
        sleep 0.01
    done
    echo "the notify listener did not start" >&2
    exit 1
}
wait_ready() {
    while [ ! -s "$ready_file" ]; do sleep 0.005; done
    cat "$ready_file"
}

# Starts serve ($1 binary) on $2 (state), $3 (data) with extra args; sets $serve_pid and $api.
serve_start() {
    local bin=$1 state=$2 data=$3
    shift 3
    NOTIFY_SOCKET=$notify_sock "$bin" serve --listen 127.0.0.1:0 --api 127.0.0.1:0 \
        --data-dir "$data" --state-dir "$state" --log warn "$@" \
        >"$work/serve.out" 2>"$work/serve.err" &
    serve_pid=$!
    pids+=("$serve_pid")
}
wait_api() {
    api=""
    for _ in $(seq 1 6000); do
        api=$(awk '/^api:/ {print $2}' "$work/serve.out" 2>/dev/null || true)
        [ -n "$api" ] && return 0
        sleep 0.01
    done
    echo "serve did not start: $(cat "$work/serve.err")" >&2
    exit 1
}
# Torrents in their loops, from /metrics (a few KiB, whatever the count).
active_torrents() {
    curl -s "$api/metrics" | awk '/^ringtorrent_torrents\{state="active"\}/ {print $2; f=1} END {if (!f) print 0}'
}
wait_active() {
    local n=$1
    while [ "$(active_torrents)" -lt "$n" ]; do sleep 0.01; done
}
# The old stop point: the whole listing, parsed.
count_listed() {
    curl -s "$api/torrents" | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0
}
wait_listed() {
    local n=$1
    while [ "$(count_listed)" -lt "$n" ]; do sleep 0.05; done
}
serve_stop() {
    kill -TERM "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
}

# Baselines with no torrent: RSS at READY=1 (an empty state folder), one per binary.
declare -A rt_base
mkdir -p "$work/empty/torrents" "$work/empty/data"
for rt in $rts; do
    rm -rf "$work/empty/state"
    notify_listen
    serve_start "$rt" "$work/empty/state" "$work/empty/data"
    wait_ready >/dev/null
    sleep 0.5
    rt_base[$rt]=$(rss_of "$serve_pid")
    serve_stop
done
lt_base=$(/usr/bin/python3 "$lt_load" "$work/empty/torrents" "$work/empty/data" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["rss_kib"])')

echo "| torrents | round | client | phase | seconds | CPU s | RSS MiB | KiB per torrent | old stop point: seconds, KiB per torrent |"
echo "|---|---|---|---|---|---|---|---|---|"
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
    first=${rts%% *}
    ls "$dir/data" | xargs -P 2 -I{} "$first" create "$dir/data/{}" -l 16K -o "$dir/torrents/{}.torrent" >/dev/null
    for round in $(seq 1 "$rounds"); do
        idx=0
        for rt in $rts; do
            idx=$((idx + 1))
            name=$(basename "$rt")
            base=${rt_base[$rt]}
            state=$dir/state-$idx
            rm -rf "$state"
            # ringtorrent, first start through the watch folder.
            notify_listen
            t0=$(now)
            serve_start "$rt" "$state" "$dir/data" --watch-dir "$dir/torrents"
            wait_api
            wait_active "$n"
            t1=$(now)
            rss=$(rss_of "$serve_pid")
            cpu=$(cpu_of "$serve_pid")
            wait_listed "$n"
            t2=$(now)
            rss2=$(rss_of "$serve_pid")
            serve_stop
            echo "| $n | $round | ringtorrent $name | first start (checking) | $(elapsed "$t0" "$t1") | $cpu | $((rss / 1024)) | $(( (rss - base) / n )) | listing: $(elapsed "$t0" "$t2") s, $(( (rss2 - base) / n )) KiB |"
            # ringtorrent, restart from the state folder.
            notify_listen
            t0=$(now)
            serve_start "$rt" "$state" "$dir/data"
            t1=$(wait_ready)
            rss=$(rss_of "$serve_pid")
            cpu=$(cpu_of "$serve_pid")
            wait_api
            wait_listed "$n"
            t2=$(now)
            rss2=$(rss_of "$serve_pid")
            serve_stop
            echo "| $n | $round | ringtorrent $name | restart (resume data) | $(elapsed "$t0" "$t1") | $cpu | $((rss / 1024)) | $(( (rss - base) / n )) | listing: $(elapsed "$t0" "$t2") s, $(( (rss2 - base) / n )) KiB |"
        done
        for mode in seed check; do
            flag=""
            [ "$mode" = check ] && flag=--check
            out=$(/usr/bin/python3 "$lt_load" "$dir/torrents" "$dir/data" $flag)
            field() { echo "$out" | /usr/bin/python3 -c "import json,sys; v = json.load(sys.stdin)[\"$1\"]; print(v if isinstance(v, int) else '%.2f' % v)"; }
            rss=$(field rss_kib)
            phase="seed mode (trusting the data)"
            [ "$mode" = check ] && phase="checking"
            old=""
            [ "$mode" = seed ] && old="all added: $(field added_s) s"
            if [ -n "${LT_LOAD_OLD:-}" ]; then
                oldout=$(/usr/bin/python3 "$LT_LOAD_OLD" "$dir/torrents" "$dir/data" $flag)
                old="$old; old lt_load.py: $(echo "$oldout" | /usr/bin/python3 -c 'import json,sys; d = json.load(sys.stdin); print("%.2f s, CPU %.2f s" % (d["seconds"], d["cpu_s"]))')"
            fi
            echo "| $n | $round | libtorrent | $phase | $(field seconds) | $(field cpu_s) | $((rss / 1024)) | $(( (rss - lt_base) / n )) | $old |"
        done
        # Restarts alternated with libtorrent's seed mode, each on the state its first start
        # left. One line per load: ringtorrent's to READY=1, libtorrent's to its last
        # torrent_checked_alert.
        for k in $(seq 1 "${RESTARTS:-0}"); do
            idx=0
            for rt in $rts; do
                idx=$((idx + 1))
                notify_listen
                t0=$(now)
                serve_start "$rt" "$dir/state-$idx" "$dir/data"
                t1=$(wait_ready)
                cpu=$(cpu_of "$serve_pid")
                serve_stop
                echo "restart $n $round $k $(basename "$rt") $(elapsed "$t0" "$t1") $cpu" >>"$work/restarts"
            done
            out=$(/usr/bin/python3 "$lt_load" "$dir/torrents" "$dir/data")
            echo "restart $n $round $k libtorrent $(echo "$out" | /usr/bin/python3 -c 'import json,sys; d = json.load(sys.stdin); print("%.2f %.2f" % (d["seconds"], d["cpu_s"]))')" >>"$work/restarts"
        done
    done
    rm -rf "$dir"
done
if [ -s "$work/restarts" ]; then
    echo
    echo "Restarts alternated with libtorrent's seed mode (wall s / CPU s per load):"
    /usr/bin/python3 - "$work/restarts" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
series = {}
for _, n, rnd, k, who, wall, cpu in rows:
    series.setdefault((n, who), []).append((rnd, k, float(wall), float(cpu)))
lt = {(n, r, k): (w, c) for (n, who), v in series.items() if who == "libtorrent" for r, k, w, c in v}
print("| torrents | client | loads | wall s: median (min-max) | CPU s: median (min-max) | wall / lt's neighbour: median (min-max) | CPU / lt's: median (min-max) |")
print("|---|---|---|---|---|---|---|")
def spread(xs):
    return "%.2f (%.2f-%.2f)" % (statistics.median(xs), min(xs), max(xs))
for (n, who), v in sorted(series.items()):
    walls = [w for _, _, w, _ in v]
    cpus = [c for _, _, _, c in v]
    if who == "libtorrent":
        print("| %s | %s | %d | %s | %s | | |" % (n, who, len(v), spread(walls), spread(cpus)))
        continue
    rw = [w / lt[(n, r, k)][0] for r, k, w, _ in v]
    rc = [c / lt[(n, r, k)][1] for r, k, _, c in v]
    print("| %s | %s | %d | %s | %s | %s | %s |" % (n, who, len(v), spread(walls), spread(cpus), spread(rw), spread(rc)))
print()
print("Each load, in the order run (torrents, round, restart: client wall/CPU s ...):")
line = {}
for _, n, rnd, k, who, wall, cpu in rows:
    line.setdefault((n, rnd, k), []).append("%s %s/%s" % (who, wall, cpu))
for (n, rnd, k), loads in line.items():
    print("- %s %s %s: %s" % (n, rnd, k, ", ".join(loads)))
PY
fi
echo
for rt in $rts; do
    echo "baseline with no torrent: ringtorrent $(basename "$rt") $((${rt_base[$rt]} / 1024)) MiB"
done
echo "baseline with no torrent: libtorrent (python) $((lt_base / 1024)) MiB"
