#!/usr/bin/env bash
# The web UI's weight and what it costs the server.
#
# 1. Size: every asset `serve` embeds (src/api/webui/), raw and gzip -9, as the browser
#    fetches them on a first visit (each later visit revalidates by ETag: 304s, no bodies).
# 2. Cost: `serve` (release build) with N small torrents (16 KiB payloads, one piece each,
#    made with `ringtorrent create` as scripts/bench-serve-scale.sh makes them), then, in the
#    same run, serve's CPU seconds over WINDOW seconds with no page open, and over the next
#    WINDOW seconds with the page open in headless Chromium (Debian's, as tests/webui.rs
#    uses) polling `sync/maindata`; the browser's own CPU seconds over that window too (its
#    whole process group). CPU is user + system time from /proc/PID/stat.
#
# Usage: scripts/bench-webui.sh [N=10000] [WINDOW=60]
# Every process it starts is ended by PID (the browser by its own process group).
set -euo pipefail
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
n=${1:-10000}
window=${2:-60}

echo "## Size"
echo
echo "| asset | bytes | gzip -9 bytes |"
echo "|---|---|---|"
total=0
total_gz=0
for f in src/api/webui/*; do
    b=$(wc -c <"$f")
    g=$(gzip -9 -c "$f" | wc -c)
    total=$((total + b))
    total_gz=$((total_gz + g))
    echo "| $(basename "$f") | $b | $g |"
done
echo "| **all** | **$total** | **$total_gz** |"
echo

if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
chromium=${CHROMIUM:-/usr/bin/chromium}
work=$(mktemp -d /dev/shm/rt-bench-webui.XXXXXX)
pids=()
browser_group=""
cleanup() {
    [ -n "$browser_group" ] && kill -KILL -- "-$browser_group" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of every process in a session (setsid made the browser's) (exited ones are lost: the browser's
# processes live as long as the page).
group_ticks() {
    local sum=0 t
    for p in $(ps -o pid= --sid "$1" 2>/dev/null); do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        sum=$((sum + t))
    done
    echo "$sum"
}
rss_mib() { awk '/VmRSS/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }
secs() { /usr/bin/python3 -c "print('%.2f' % ($1 / $hz))"; }

mkdir -p "$work/data" "$work/torrents"
/usr/bin/python3 - "$work/data" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"t{i:06}.bin"), "wb") as f:
        f.write(i.to_bytes(8, "little") * 2048)
PY
echo "making $n torrents" >&2
ls "$work/data" | xargs -P 2 -I{} "$rt" create "$work/data/{}" -l 16K -o "$work/torrents/{}.torrent" >/dev/null

"$rt" serve --listen 127.0.0.1:0 --api 127.0.0.1:0 --data-dir "$work/data" --state-dir "$work/state" \
    --watch-dir "$work/torrents" --log warn >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
pids+=("$serve_pid")
api=""
for _ in $(seq 1 600); do
    api=$(awk '/^api:/ {print $2}' "$work/serve.out" 2>/dev/null || true)
    [ -n "$api" ] && break
    sleep 0.05
done
[ -n "$api" ] || { echo "serve did not start: $(cat "$work/serve.err")" >&2; exit 1; }
echo "waiting for $n torrents" >&2
while [ "$(curl -s "$api/api/v2/torrents/count")" != "$n" ]; do sleep 0.5; done
# Every one checked and seeding (no checking left), so that the windows compare alike.
while curl -s "$api/api/v2/torrents/info?filter=checking&limit=1" | grep -q hash; do sleep 0.5; done
sleep 5

echo "serve idle, page closed, ${window}s" >&2
rss_closed=$(rss_mib "$serve_pid")
c0=$(cpu_ticks "$serve_pid")
sleep "$window"
c1=$(cpu_ticks "$serve_pid")
closed=$((c1 - c0))

echo "page open, ${window}s" >&2
profile=$work/chromium
setsid "$chromium" --headless=new --no-sandbox --disable-gpu --window-size=1280,860 \
    --user-data-dir="$profile" --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --disable-default-apps --disable-extensions \
    --no-pings --remote-debugging-port=0 "$api/" >"$work/chromium.log" 2>&1 &
browser_group=$!
pids+=("$browser_group")
# The `rid` counter counts maindata answers (read after the windows).
rid_now() { curl -s "$api/api/v2/sync/maindata?rid=0" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["rid"])'; }
# The first full update of N torrents is the page's start, measured on its own.
s0=$(cpu_ticks "$serve_pid")
b0=$(group_ticks "$browser_group")
start=$(date +%s.%N)
sleep 15
s1=$(cpu_ticks "$serve_pid")
b1=$(group_ticks "$browser_group")
sleep "$window"
s2=$(cpu_ticks "$serve_pid")
b2=$(group_ticks "$browser_group")
# The page's polls since it opened: nothing asked for maindata before it, and this read
# is one more.
r1=$(rid_now)
polls=$((r1 - 1))
rss_open=$(rss_mib "$serve_pid")
kill -KILL -- "-$browser_group" 2>/dev/null || true
wait "$browser_group" 2>/dev/null || true
browser_group=""

echo "## Cost with $n torrents (serve release build, $(nproc) cores)"
echo
echo "| phase | serve CPU s | serve CPU s per minute | browser CPU s | serve RSS MiB at the end |"
echo "|---|---|---|---|---|"
per_min() { /usr/bin/python3 -c "print('%.2f' % ($1 / $hz * 60 / $2))"; }
echo "| page closed, ${window} s | $(secs "$closed") | $(per_min "$closed" "$window") | - | $rss_closed |"
echo "| page opening (first 15 s: full update) | $(secs $((s1 - s0))) | - | $(secs $((b1 - b0))) | - |"
echo "| page open, next ${window} s ($polls maindata polls since it opened) | $(secs $((s2 - s1))) | $(per_min $((s2 - s1)) "$window") | $(secs $((b2 - b1))) | $rss_open |"
echo
venv=${CARGO_TARGET_DIR:-$PWD/target}/webui-venv
if [ -x "$venv/bin/python" ]; then
    # The page's own responsiveness, driven by selenium as tests/webui.rs does (after the
    # CPU windows: the driver costs CPU too).
    echo "the page with $n torrents, in the browser" >&2
    mkdir -p "$work/shots/home"
    HOME=$work/shots/home SE_AVOID_STATS=true SE_OFFLINE=true setsid "$venv/bin/python" \
        tests/support/webui_browser.py "$api/" "$work/shots" \
        "{\"kind\": \"scale\", \"count\": $n, \"watch\": 30, \"limit\": 400}" \
        >"$work/scale.json" 2>"$work/scale.err" &
    browser_group=$!
    wait "$browser_group" || true
    browser_group=""
    echo
    echo "In the page (headless Chromium $(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("browser"))' "$work/scale.json" 2>/dev/null)):"
    echo
    /usr/bin/python3 - "$work/scale.json" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
if not f.get("ok"):
    print("the browser run failed:", f.get("error"))
    sys.exit(0)
lt = lambda k: f"{len(f[k])} (longest {max(f[k], default=0)} ms)"
print(f"- all torrents listed {f['first_list_s']} s after the page was asked for")
print(f"- rows in the DOM: {f['rows_in_dom']} (a pool; the last row, index {f['last_row_shown']}, shown after a scroll to the bottom in {f['scroll_to_bottom_ms']} ms)")
print(f"- long tasks (main thread busy > 50 ms) while loading: {lt('long_tasks_loading_ms')}")
print(f"- long tasks over {f['polls_watched']} live updates in 30 s: {lt('long_tasks_updating_ms')}")
print(f"- a sort by name: {f['sort_by_name_ms']} ms")
PY
fi
echo
curl -s "$api/api/v2/sync/maindata?rid=0" >"$work/full.json"
rid=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rid"])' "$work/full.json")
sleep 2
delta=$(curl -s "$api/api/v2/sync/maindata?rid=$rid" | wc -c)
echo "sync/maindata for $n torrents: a full update $(wc -c <"$work/full.json") bytes, a delta 2 s later $delta bytes"
