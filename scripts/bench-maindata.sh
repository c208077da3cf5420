#!/usr/bin/env bash
# serve CPU per `sync/maindata` delta poll: serve (release binary RT) with the .torrent files in
# TORRENTS (watch folder) over DATA, 20 s idle (idle CPU-s/min), then a full update and POLLS
# deltas 1 s apart, each with the previous rid; CPU from /proc/PID/stat, the idle rate subtracted.
# PERF_OUT: perf record -g of serve over the polls. Ends only the processes it started (by PID).
set -euo pipefail
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
rt=$1 tdir=$2 ddir=$3 polls=$4 perfout=${5:-}
n=$(ls "$tdir" | wc -l)
work=$(mktemp -d /dev/shm/mdc-run.XXXXXX)
ulimit -n 65536 2>/dev/null || true
"$rt" serve --listen 127.0.0.1:0 --api 127.0.0.1:0 --data-dir "$ddir" --state-dir "$work/state" \
    --watch-dir "$tdir" --log warn >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf $work' EXIT
api=""
for _ in $(seq 1 600); do api=$(awk '/^api:/ {print $2}' "$work/serve.out" 2>/dev/null || true); [ -n "$api" ] && break; sleep 0.05; done
while [ "$(curl -s "$api/api/v2/torrents/count")" != "$n" ]; do sleep 0.5; done
while curl -s "$api/api/v2/torrents/info?filter=checking&limit=1" | grep -q hash; do sleep 0.5; done
sleep 3
hz=$(getconf CLK_TCK)
t() { awk '{print $14 + $15}' /proc/$pid/stat; }
c0=$(t); s0=$(date +%s.%N); sleep 20; c1=$(t); s1=$(date +%s.%N)
idle=$(python3 -c "print(($c1-$c0)/$hz/($s1-$s0))")
curl -s "$api/api/v2/sync/maindata?rid=0" > $work/full.json
rid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rid"])' $work/full.json)
[ -n "$perfout" ] && { perf record -g -p $pid -o "$perfout" 2>/dev/null & perfpid=$!; sleep 1; }
c0=$(t); s0=$(date +%s.%N)
bytes=0
for i in $(seq 1 $polls); do
  sleep 1
  curl -s "$api/api/v2/sync/maindata?rid=$rid" > $work/d.json
  bytes=$((bytes + $(wc -c < $work/d.json)))
  rid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rid"])' $work/d.json)
done
c1=$(t); s1=$(date +%s.%N)
[ -n "$perfout" ] && { kill -INT $perfpid; wait $perfpid || true; }
python3 - <<PY
idle=$idle; hz=$hz
cpu=($c1-$c0)/hz; el=$s1-$s0
print(f"n=$n idle {idle*60:.2f} CPU-s/min; $polls delta polls in {el:.1f}s: serve {cpu:.2f} CPU-s, {cpu/$polls:.3f}/poll, minus idle {(cpu-idle*el)/$polls:.3f}/poll; delta bytes avg {$bytes/$polls:.0f}; full {$(wc -c < $work/full.json)} bytes")
PY
