#!/usr/bin/env bash
# ringtorrent tracker-load against aquatic_udp_load_test: the same tracker, the same cores,
# alternating runs in one script. Both generators run closed-loop-ish at full speed with one
# worker and four sockets; the figure compared is the UDP response rate each achieves.
#
# Trackers: opentracker (Debian, whitelist-only; our hashes are whitelisted, aquatic's random
# ones are not, so opentracker answers aquatic's announces with 8-byte replies and its rate
# there is not a like-for-like figure) and aquatic_udp (open, so both generators get full
# replies). Install the aquatic tools outside the repository first:
#   cargo install --locked --root /tmp/aquatic aquatic_udp_load_test
#   cargo install --root /tmp/aquatic aquatic_udp
#
# (Whether tracker-load's checks hold against each tracker is scripts/bench-tracker-conventions.sh.)
#
# Usage: scripts/bench-tracker-load.sh [SECONDS_PER_RUN=10] [ROUNDS=2] [AQUATIC_BIN=/tmp/aquatic/bin]
# Environment: TRACKERS (default "opentracker aquatic_udp"), WORKERS (default 1: both
# generators' worker threads; aquatic_udp_load_test's default is 1), BASELINE (another
# ringtorrent binary, e.g. an older build, run too in every round for a same-run before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-2}
aq=${3:-/tmp/aquatic/bin}
trackers=${TRACKERS:-opentracker aquatic_udp}
workers=${WORKERS:-1}
torrents=10000
peers=100000
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet
rt="$CARGO_TARGET_DIR/release/ringtorrent"
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port_ot=$((20000 + RANDOM % 10000))
port_aq=$((port_ot + 1))
for r in $(seq 1 "$rounds"); do
    for s in $((100 + r)) $((200 + r)); do
        "$rt" tracker-load udp://127.0.0.1:1 --print-hashes --torrents $torrents --seed $s
    done
done >"$work/whitelist"
chmod 644 "$work/whitelist"
opentracker -i 127.0.0.1 -p $port_ot -P $port_ot -d "$work" -u nobody -w whitelist \
    >/dev/null 2>&1 &
pids+=($!)
"$aq/aquatic_udp" -p >"$work/aq.toml"
sed -i "s/^address = .*/address = \"127.0.0.1:$port_aq\"/" "$work/aq.toml"
"$aq/aquatic_udp" -c "$work/aq.toml" >/dev/null 2>&1 &
pids+=($!)
sleep 3 # opentracker loads its whitelist on a thread after it listens

aquatic() { # tracker port -> responses/s
    "$aq/aquatic_udp_load_test" -p >"$work/lt.toml"
    sed -i -e "s/^server_address = .*/server_address = \"127.0.0.1:$1\"/" \
        -e "s/^duration = .*/duration = $secs/" \
        -e "s/^number_of_torrents = .*/number_of_torrents = $torrents/" \
        -e "s/^number_of_peers = .*/number_of_peers = $peers/" \
        -e "s/^workers = .*/workers = $workers/" \
        -e "s/^extra_statistics = .*/extra_statistics = false/" "$work/lt.toml"
    /usr/bin/time -o "$work/lt.time" -f "%U %S %e" \
        "$aq/aquatic_udp_load_test" -c "$work/lt.toml" >"$work/lt.out" 2>&1 || true
    # Its CPU over its whole life (start-up included) against its wall time, in %.
    read -r u s e <"$work/lt.time"
    echo "$(grep -m1 'Average responses per second' "$work/lt.out" | awk '{print $NF}')" \
        "$(python3 -c "print(round(($u + $s) / $e * 100))")"
}
ours() { # binary, tracker port, seed -> "responses/s p99_ms checks_wrong cpu%"
    local bin=$1
    shift
    "$bin" tracker-load "udp://127.0.0.1:$1" --hammer --in-flight 256 --duration "$secs" \
        --torrents $torrents --peers $peers --seed "$2" --connect-weight 50 \
        --announce-weight 50 --scrape-weight 1 --numwant 30 --workers "$workers" --sockets 4 \
        --timeout-ms 1000 -o "$work/ours.json" >"$work/ours.txt"
    python3 - "$work/ours.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); c = r["counters"]; d = r["duration_secs"]
ok = sum(c.get(f"{a}.{o}", 0) for a in ("connect", "announce", "scrape")
         for o in ("ok", "error", "malformed"))
wrong = sum(v for k, v in c.items() if k.startswith("check.") and not k.endswith("_ok"))
cpu = (c.get("cpu.user_us", 0) + c.get("cpu.sys_us", 0)) / c["wall_us"] * 100
def p99(name):
    h = r["histograms"].get(name)
    if not h: return float("nan")
    n = sum(x[1] for x in h["counts"]); acc = 0
    for v, k in h["counts"]:
        acc += k
        if acc >= 0.99 * n: return v / 1000
print(f"{ok/d:.0f} {p99('latency_us.announce'):.3f} {wrong} {cpu:.0f} {c.get('announce.timeout',0)+c.get('connect.timeout',0)}")
EOF
}

printf "%-12s %-5s %-28s %14s %10s %12s %8s %9s\n" tracker round generator "responses/s" "p99 ms" "checks wrong" "gen CPU%" timeouts
for r in $(seq 1 "$rounds"); do
    for tr in $trackers; do
        port=$port_ot; [ $tr = aquatic_udp ] && port=$port_aq
        read -r rate p99 wrong cpu lost < <(ours "$rt" $port $((100 + r)))
        printf "%-12s %-5s %-28s %14s %10s %12s %8s %9s\n" $tr "$r" "ringtorrent tracker-load" "$rate" "$p99" "$wrong" "$cpu" "$lost"
        if [ -n "${BASELINE:-}" ]; then
            read -r rate p99 wrong cpu lost < <(ours "$BASELINE" $port $((200 + r)))
            printf "%-12s %-5s %-28s %14s %10s %12s %8s %9s\n" $tr "$r" "baseline tracker-load" "$rate" "$p99" "$wrong" "$cpu" "$lost"
        fi
        read -r a acpu < <(aquatic $port)
        printf "%-12s %-5s %-28s %14s %10s %12s %8s %9s\n" $tr "$r" aquatic_udp_load_test "$a" - - "$acpu" -
    done
done
