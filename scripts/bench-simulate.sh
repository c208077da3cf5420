#!/usr/bin/env bash
# Measures how fast the simulator runs a large swarm: 200 leechers and one seed on a 64 MiB
# torrent (12.8 GiB moved in total), three runs, and the ratio of virtual to real time; then
# the protocol's tuning figures (benches/sim_figures.rs). TRANSPORT is simulate's --transport
# (tcp, utp, both, or a comma-separated mix); uTP runs cost more (perf/2026-12-03-sim-utp.md).
# Usage: scripts/bench-simulate.sh [PEERS=200] [SIZE=64M] [RUNS=3] [TRANSPORT=tcp]
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${1:-200}
size=${2:-64M}
runs=${3:-3}
transport=${4:-tcp}
cargo build --release --quiet
bin=target/release/ringtorrent
echo "| run | real s | virtual s | virtual/real | completed | wasted % | max RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for i in $(seq "$runs"); do
    out=$(mktemp)
    /usr/bin/time -f '%e %M' -o "$out.time" "$bin" simulate --peers "$peers" --size "$size" \
        --piece-length 256K --seed "$i" --transport "$transport" --json > "$out" 2>/dev/null
    read -r real rss < "$out.time"
    python3 - "$out" "$real" "$rss" "$i" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
real, rss, run = float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
v = r["virtual_s"]
print(f"| {run} | {real:.2f} | {v:.2f} | {v/real:.2f} | {r['completed']}/{r['leechers']} | "
      f"{100*r['bytes_wasted']/max(r['bytes_downloaded'],1):.3f} | {rss/1024:.0f} |")
PY
    rm -f "$out" "$out.time"
done

# The protocol figures the tests no longer assert (fairness, waste, endgame time, how close
# limited transfers run to their limit), each beside its target: benches/sim_figures.rs.
echo
cargo bench --quiet --bench sim_figures
