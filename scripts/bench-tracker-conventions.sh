#!/usr/bin/env bash
# tracker-load's checks against real trackers with different conventions, at low and at full
# load, in one run: opentracker (UDP and HTTP on one port, Debian's build, whitelist-only) and
# aquatic_udp and aquatic_http v0.9 (open, plain HTTP). Prints, per tracker, protocol and load,
# the replies checked, the replies judged wrong (by check), time-outs, and the conventions
# each run detected. A correct tracker should show 0 wrong everywhere.
#
# The aquatic trackers are built with `cargo install` into the target folder (ignored, outside
# the sources) when missing. That build is too slow for the test suite (aquatic_udp alone took
# 44 minutes on the shared 2-core build machine; see perf/2026-12-03-tracker-conventions.md),
# so they are checked here and not in scripts/test.sh; the tests use a fake tracker with
# aquatic's conventions instead. Their published Cargo.lock pins metrics 0.22.3, which rustc
# 1.95 refuses (E0521), so they are installed without --locked.
#
# Usage: scripts/bench-tracker-conventions.sh [SECONDS_PER_RUN=5] [OUT.jsonl]
# Environment: TRACKERS (default "opentracker aquatic_udp aquatic_http").
# Each run gets its own --seed, so no tracker knows a run's torrents when it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
out=${2:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
tools="$CARGO_TARGET_DIR/trackers"
trackers=${TRACKERS:-opentracker aquatic_udp aquatic_http}
has() { [[ " $trackers " == *" $1 "* ]]; }
for t in aquatic_udp aquatic_http; do
    has $t || continue
    if [ ! -x "$tools/bin/$t" ]; then
        echo "installing $t into $tools (cargo install, takes minutes)" >&2
        nice -n 19 cargo install --quiet --root "$tools" "$t"
    fi
done
cargo build --release --quiet
rt="$CARGO_TARGET_DIR/release/ringtorrent"
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

torrents_low=1000
torrents_full=10000
port_ot=$((20000 + RANDOM % 10000))
port_au=$((port_ot + 1))
port_ah=$((port_ot + 2))
# Seeds 1..10 are the runs below; opentracker whitelists all of their torrents.
for s in $(seq 1 10); do
    "$rt" tracker-load udp://127.0.0.1:1 --print-hashes --torrents $torrents_full --seed $((700 + s))
done >"$work/whitelist"
chmod 644 "$work/whitelist"
opentracker -i 127.0.0.1 -p $port_ot -P $port_ot -d "$work" -u nobody -w whitelist \
    >/dev/null 2>&1 &
pids+=($!)
if has aquatic_udp; then
    "$tools/bin/aquatic_udp" -p >"$work/au.toml"
    sed -i "s/^address = .*/address = \"127.0.0.1:$port_au\"/" "$work/au.toml"
    "$tools/bin/aquatic_udp" -c "$work/au.toml" >"$work/au.log" 2>&1 &
    pids+=($!)
fi
if has aquatic_http; then
    "$tools/bin/aquatic_http" -p >"$work/ah.toml"
    sed -i "s/^address = .*/address = \"127.0.0.1:$port_ah\"/" "$work/ah.toml"
    "$tools/bin/aquatic_http" -c "$work/ah.toml" >"$work/ah.log" 2>&1 &
    pids+=($!)
fi
sleep 3 # opentracker loads its whitelist on a thread after it listens

seed=700
run() { # name protocol load url [extra args] -> one JSON report per line in $work/runs
    local name=$1 proto=$2 load=$3 url=$4
    shift 4
    seed=$((seed + 1))
    has "$name" || return 0
    local args=(--seed $seed --duration "$secs" --hammer --timeout-ms 2000 --json "$@")
    if [ "$load" = low ]; then
        # Well under any tracker's capacity: 300 requests/s, every lifecycle step, numwant 0
        # to 200, scrapes of up to 50 torrents.
        args+=(--rate 300 --torrents $torrents_low --peers 10000 --numwant 0,5,30,50,200
            --scrape-size 1-50 --stop-chance 0.05 --complete-chance 0.1 --silent-completion 0.5)
    elif [ "$proto" = udp ]; then
        # The issue's full-load command: closed loop, 256 in flight.
        args+=(--in-flight 256 --torrents $torrents_full --peers 100000 --connect-weight 50
            --announce-weight 50 --scrape-weight 1 --numwant 30 --sockets 4)
    else
        args+=(--in-flight 64 --sockets 64 --torrents $torrents_full --peers 100000
            --numwant 30 --scrape-weight 1)
    fi
    "$rt" tracker-load "$url" "${args[@]}" >"$work/r.json"
    python3 - "$work/r.json" "$name" "$proto" "$load" "$*" >>"$work/runs" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
name = sys.argv[2] + (f" ({sys.argv[5]})" if sys.argv[5] else "")
r["bench"] = {"tracker": name, "protocol": sys.argv[3], "load": sys.argv[4]}
print(json.dumps(r))
EOF
}

for load in low full; do
    run opentracker udp $load "udp://127.0.0.1:$port_ot"
    run aquatic_udp udp $load "udp://127.0.0.1:$port_au"
    run opentracker http $load "http://127.0.0.1:$port_ot/announce"
    run aquatic_http http $load "http://127.0.0.1:$port_ah/announce"
done
# What the checks said before conventions: aquatic judged by opentracker's (the old model's).
run aquatic_udp udp full "udp://127.0.0.1:$port_au" --conventions opentracker
run aquatic_http http full "http://127.0.0.1:$port_ah/announce" --conventions opentracker

python3 - "$work/runs" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["counts-self", "returns-self", "counts-downloads", "zero-numwant-default"]
print("| tracker | protocol | load | replies/s | announce replies | counts wrong | other announce checks wrong | scrape replies | scrape wrong | time-outs | detected (counts-self, returns-self, counts-downloads, zero-numwant-default) |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    c = r["counters"]; b = r["bench"]; d = r["duration_secs"]
    g = lambda k: c.get(k, 0)
    replies = sum(g(f"{a}.{o}") for a in ("connect", "announce", "scrape")
                  for o in ("ok", "error", "failure", "malformed", "http_status"))
    other = sum(g(k) for k in ("check.over_numwant", "check.duplicate_peer",
                               "check.stopped_peer_returned", "check.unknown_peer",
                               "check.self_returned", "check.inconsistent_convention"))
    det = []
    for k in keys:
        vals = [v for v in ("yes", "no", "undetected") if g(f"convention.{k}.{v}")]
        conf = g(f"convention.{k}.conflicts")
        det.append("/".join(vals) + (f" ({conf} conflicts)" if conf else ""))
    tos = sum(g(f"{a}.timeout") for a in ("connect", "announce", "scrape"))
    print(f"| {b['tracker']} | {b['protocol']} | {b['load']} | {replies/d:,.0f} | {g('announce.ok'):,} | "
          f"{g('check.counts_wrong'):,} | {other:,} | {g('scrape.ok'):,} | {g('check.scrape_counts_wrong'):,} | "
          f"{tos:,} | {', '.join(det)} |")
for r in rows:
    ex = r["params"].get("wrong_examples") or []
    if ex:
        b = r["bench"]
        print(f"\nfirst wrong reply, {b['tracker']} {b['protocol']} {b['load']}: {ex[0]}")
EOF
if [ -n "$out" ]; then cp "$work/runs" "$out"; fi
