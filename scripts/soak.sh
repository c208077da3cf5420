#!/usr/bin/env bash
# A soak: `ringtorrent serve` under `swarm-load` for MINUTES, with everything that wears a
# long-running seedbox down at once, sampling its resident memory and descriptors every 10 s.
#
# Usage: scripts/soak.sh [MINUTES=30] [PEERS=300] [SIZE_MIB=64]
#   RT=path/to/ringtorrent  use that binary instead of building target/release/ringtorrent
#   SOAK_OUT=DIR            keep the samples (soak.csv), logs and reports there
#
# The load (all on loopback, peers spread over 127.0.0.2-127.0.0.254):
# - `swarm-load --mode dual`: half the peers seed to serve, half leech from it; a fifth of
#   the seeding peers corrupt every block they serve (serve must reject those blocks and ban
#   those peers, and only those); every connection is dropped and redialled after 200 blocks
#   (churn); where `swarm-load` has `--slow-readers`, a tenth of the leechers request and
#   never read their socket;
# - the API, all the time: every 10 s `GET /torrents` and `GET /metrics`; every 30 s a pause
#   and a resume; every CYCLE seconds (default 180) the torrent is removed with its data and
#   added again, so serve downloads it afresh from the synthetic seeds, corrupt ones
#   included, and seeds it again.
#
# At the end the torrent must be complete and its data byte-exact, serve must stop cleanly on
# SIGTERM, the leechers must have seen no bad block, and memory and descriptors must be flat:
# the mean of the last third of the samples within 10% of the mean of the first third, for
# resident memory as a whole, its anonymous part (the heap, which is what a leak grows) and
# the descriptors other than sockets (sockets come and go with the churn; their count is
# reported, not judged). The script exits
# non-zero when any of these fails. Every process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
minutes=${1:-30}
peers=${2:-300}
size_mib=${3:-64}
cycle=${CYCLE:-180}
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
    RT=${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent
fi
work=$(mktemp -d /dev/shm/rt-soak.XXXXXX)
out=${SOAK_OUT:-$work}
mkdir -p "$out"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ "$out" = "$work" ] && echo "samples and logs were in $work (removed)" >&2
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$RT" swarm-load gen --size "$size_mib" --piece-length 256K -o "$work/gen" >/dev/null
torrent=$work/gen/swarm-load.torrent

# serve, with its own (empty) config, state and data folders; it says its ports on stdout.
: >"$work/serve.toml"
"$RT" serve --config "$work/serve.toml" --listen 127.0.0.1:0 --api 127.0.0.1:0 --threads 2 \
    --data-dir "$work/data" --state-dir "$work/state" --max-peers $((peers + 100)) \
    --seed-choke unlimited --log info >"$work/serve.out" 2>"$out/serve.log" &
serve=$!
pids+=("$serve")
for _ in $(seq 1 300); do
    grep -q '^api: ' "$work/serve.out" 2>/dev/null && break
    kill -0 "$serve" 2>/dev/null || { echo "serve died at start" >&2; cat "$out/serve.log" >&2; exit 1; }
    sleep 0.1
done
peer_addr=$(sed -n 's/^peers: //p' "$work/serve.out")
api=$(sed -n 's/^api: //p' "$work/serve.out")
[ -n "$api" ] && [ -n "$peer_addr" ] || { echo "serve did not say its ports" >&2; exit 1; }
call() { curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "$@"; }
hash=$(curl -sS --max-time 30 -X POST --data-binary @"$torrent" "$api/torrents" |
    sed -n 's/.*"info_hash": *"\([0-9a-f]*\)".*/\1/p')
[ -n "$hash" ] || { echo "the API did not add the torrent" >&2; exit 1; }

slow=()
if "$RT" swarm-load run --help | grep -q -- '--slow-readers'; then
    slow=(--slow-readers 0.1)
fi
"$RT" swarm-load run --target "$peer_addr" --torrent "$torrent" --mode dual \
    --peers "$peers" --duration $((minutes * 60)) --timeout $((minutes * 60 + 300)) \
    --churn-blocks 200 --corrupt-rate 0.2 "${slow[@]}" \
    --source-ips 127.0.0.2-127.0.0.254 --json -o "$out/load.json" \
    >/dev/null 2>"$out/load.log" &
load=$!
pids+=("$load")

echo "t_s,rss_kib,rss_anon_kib,fds,fds_not_sockets,threads,api_ms,cycles,state,progress" >"$out/soak.csv"
start=$(date +%s)
cycles=0 api_errors=0 last_cycle=$start last_pause=$start
status_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
while kill -0 "$load" 2>/dev/null; do
    now=$(date +%s)
    t0=$(date +%s%N)
    code=$(call "$api/torrents")
    [ "$code" = 200 ] || { api_errors=$((api_errors + 1)); echo "GET /torrents: $code" >&2; }
    api_ms=$((($(date +%s%N) - t0) / 1000000))
    status=$(curl -sS --max-time 30 "$api/torrents/$hash" || true)
    state=$(echo "$status" | sed -n 's/.*"state": *"\([a-z_]*\)".*/\1/p')
    progress=$(echo "$status" | sed -n 's/.*"progress": *\([0-9.]*\).*/\1/p')
    code=$(call "$api/metrics")
    [ "$code" = 200 ] || { api_errors=$((api_errors + 1)); echo "GET /metrics: $code" >&2; }
    if [ $((now - last_pause)) -ge 30 ]; then
        last_pause=$now
        for verb in pause resume; do
            code=$(call -X POST "$api/torrents/$hash/$verb")
            [ "$code" = 200 ] || { api_errors=$((api_errors + 1)); echo "$verb: $code" >&2; }
        done
    fi
    # No new cycle in the last one: the final download needs the synthetic seeds.
    if [ $((now - last_cycle)) -ge "$cycle" ] && [ $((now - start + cycle)) -lt $((minutes * 60)) ]; then
        last_cycle=$now
        cycles=$((cycles + 1))
        code=$(call -X DELETE "$api/torrents/$hash?delete_data=true")
        [ "$code" = 200 ] || { api_errors=$((api_errors + 1)); echo "delete: $code" >&2; }
        code=$(call -X POST --data-binary @"$torrent" "$api/torrents")
        [ "$code" = 201 ] || { api_errors=$((api_errors + 1)); echo "re-add: $code" >&2; }
    fi
    kill -0 "$serve" 2>/dev/null || { echo "serve died" >&2; tail -20 "$out/serve.log" >&2; exit 1; }
    echo "$((now - start)),$(status_of "$serve" VmRSS),$(status_of "$serve" RssAnon),$(ls "/proc/$serve/fd" | wc -l),$(find "/proc/$serve/fd" -mindepth 1 -printf '%l\n' 2>/dev/null | grep -vc '^socket:'),$(status_of "$serve" Threads),$api_ms,$cycles,$state,$progress" >>"$out/soak.csv"
    sleep 10
done
wait "$load" || { echo "swarm-load failed" >&2; tail -20 "$out/load.log" >&2; exit 1; }

# The last download (started at least one cycle before the end) must have finished.
done_at=$(( $(date +%s) + 30 ))
while :; do
    status=$(curl -sS --max-time 30 "$api/torrents/$hash" || true)
    progress=$(echo "$status" | sed -n 's/.*"progress": *\([0-9.]*\).*/\1/p')
    [ "$progress" = "1.0" ] || [ "$progress" = "1" ] && break
    [ "$(date +%s)" -lt "$done_at" ] || { echo "the torrent did not complete: $status" >&2; exit 1; }
    sleep 1
done
kill -TERM "$serve"
stopped=0
for _ in $(seq 1 600); do
    kill -0 "$serve" 2>/dev/null || { stopped=1; break; }
    sleep 0.1
done
[ "$stopped" = 1 ] || { echo "serve did not stop within 60 s of SIGTERM" >&2; exit 1; }
wait "$serve" && serve_rc=0 || serve_rc=$?
name=$(ls "$work/gen/data")
cmp -s "$work/gen/data/$name" "$work/data/$name" && exact=yes || exact=no

/usr/bin/python3 - "$out/soak.csv" "$out/load.json" "$api_errors" "$serve_rc" "$exact" "$cycles" <<'EOF'
import csv, json, sys
path, load, api_errors, serve_rc, exact, cycles = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
counters = json.load(open(load))["counters"]
n = len(rows) // 3
ok = True
def third(key, part):
    vals = [int(r[key]) for r in part]
    return sum(vals) / len(vals)
print(f"| measure | first third | last third | change |")
print(f"|---|---|---|---|")
# Sockets come and go with the churn (tens a second), so descriptors are judged on the rest:
# files, mappings' descriptors, event loops' rings and eventfds, which a leak would grow.
for key in ["rss_kib", "rss_anon_kib", "fds_not_sockets", "fds", "threads"]:
    a, b = third(key, rows[:n]), third(key, rows[-n:])
    change = (b - a) / a if a else 0.0
    flat = abs(change) <= 0.10 or key in ("threads", "fds") and b <= a or key == "fds"
    ok &= flat
    print(f"| {key} | {a:.0f} | {b:.0f} | {change:+.1%}{'' if flat else ' NOT FLAT'} |")
print()
print(f"samples: {len(rows)}; remove/re-add cycles: {cycles}; API errors: {api_errors}; "
      f"serve exit status on SIGTERM: {serve_rc}; data byte-exact: {exact}")
print("swarm-load: " + ", ".join(f"{k} {counters.get(k, 0)}" for k in [
    "blocks.ok", "blocks.bad", "blocks.served", "blocks.corrupt_sent", "corrupt_peers.dropped",
    "churn.reconnects", "conn.refused", "peers.gave_up"]))
ok &= api_errors == "0" and serve_rc == "0" and exact == "yes" and counters.get("blocks.bad", 0) == 0
print("soak:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
