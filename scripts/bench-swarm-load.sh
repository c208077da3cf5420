#!/usr/bin/env bash
# Seeding to many synthetic leechers: `ringtorrent swarm-load run --mode download` against a
# ringtorrent seed and against a libtorrent seed (python3-libtorrent, TCP only), alternating
# in one run, same payload (in /dev/shm), same torrent, same generator settings.
# Prints a markdown table: aggregate MB/s, per-connection fairness, p50/p99 request-to-block
# latency, handshakes, the generator's CPU share, and ratios against libtorrent.
#
# Usage: scripts/bench-swarm-load.sh [PEERS=1000] [SECONDS=15] [ROUNDS=2] [SIZE_MIB=256]
# Both seeds run with their default choker and settings, except connection limits raised to
# hold every peer (ringtorrent --max-peers, libtorrent connections_limit); a third row runs
# ringtorrent with --seed-choke unlimited, the mode for an uplink larger than its slots. The generator and
# the seed share this machine's cores: the CPU column says when the generator was saturated.
# Every process it starts is ended by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${1:-1000}
secs=${2:-15}
rounds=${3:-2}
size_mib=${4:-256}
cargo build --release --quiet
rt=${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent
lt_seed=$PWD/tests/support/lt_seed.py
work=$(mktemp -d /dev/shm/rt-bench-swarm.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$rt" swarm-load gen --size "$size_mib" --piece-length 1M -o "$work" >/dev/null
torrent=$work/swarm-load.torrent
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

# One measurement: $1 = rt|rtu|lt; writes $work/$1-$2.json.
measure() {
    local who=$1 round=$2 port pid
    port=$(free_port)
    if [ "$who" != lt ]; then
        choke=round-robin
        [ "$who" = rtu ] && choke=unlimited
        "$rt" seed "$torrent" "$work/data" --port "$port" --bind 127.0.0.1 \
            --max-peers $((peers + 100)) --duration $((secs + 60)) --seed-choke "$choke" \
            --state-dir "$work/rt-state" >"$work/rt-seed.log" 2>&1 &
    else
        # lt_seed.py runs while its stdin is open: a FIFO this script holds open (fd 5).
        rm -f "$work/lt.in"
        mkfifo "$work/lt.in"
        /usr/bin/python3 "$lt_seed" "$torrent" "$work/data" --port "$port" \
            --max-connections $((peers + 100)) --max-seconds $((secs + 60)) \
            <"$work/lt.in" >"$work/lt-seed.log" 2>&1 &
        exec 5>"$work/lt.in"
    fi
    pid=$!
    pids+=("$pid")
    wait_port "$port"
    "$rt" swarm-load run --target "127.0.0.1:$port" --torrent "$torrent" --mode download \
        --peers "$peers" --duration "$secs" --source-ips 127.0.0.2-127.0.0.254 \
        --json -o "$work/$who-$round.json" >/dev/null 2>"$work/gen.log"
    [ "$who" = lt ] && exec 5>&-
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then order="rt lt rtu"; else order="rtu lt rt"; fi
    for who in $order; do
        echo "round $round: $who" >&2
        measure "$who" "$round"
    done
done

/usr/bin/python3 - "$work" "$rounds" "$peers" "$secs" "$size_mib" <<'PY'
import json, sys
work, rounds, peers, secs, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def quantile(h, q):
    counts = h["counts"]
    total = sum(n for _, n in counts)
    if total == 0:
        return float("nan")
    seen = 0
    for v, n in counts:
        seen += n
        if seen >= q * total:
            return v / 1000.0
    return counts[-1][0] / 1000.0

rows = {}
for who in ("rt", "rtu", "lt"):
    for r in range(1, rounds + 1):
        d = json.load(open(f"{work}/{who}-{r}.json"))
        c = d["counters"]
        secs_ = d["duration_secs"]
        n, s, sq = c.get("fair.n", 0), c.get("fair.sum", 0), c.get("fair.sum_sq", 0)
        lat = d["histograms"]["latency_us.request_to_block"]
        rows.setdefault(who, []).append({
            "mb_s": c.get("bytes.down", 0) / secs_ / 1e6,
            "jain": (s * s / (n * sq)) if n and sq else float("nan"),
            "p50": quantile(lat, 0.5),
            "p99": quantile(lat, 0.99),
            "handshakes": c.get("conn.handshakes", 0),
            "bad": c.get("blocks.bad", 0),
            "cpu": (c.get("cpu.user_us", 0) + c.get("cpu.sys_us", 0)) / 1e6 / secs_,
        })
name = {"rt": "ringtorrent", "rtu": "ringtorrent --seed-choke unlimited", "lt": "libtorrent"}
print(f"{peers} synthetic leechers, {secs} s per run, {size} MiB payload, 1 MiB pieces; {rounds} rounds alternating\n")
print("| seed | round | MB/s | Jain | p50 ms | p99 ms | handshakes | failed blocks | generator CPU |")
print("|---|---|---|---|---|---|---|---|---|")
for who in ("rt", "rtu", "lt"):
    for i, r in enumerate(rows[who], 1):
        print(f"| {name[who]} | {i} | {r['mb_s']:.0f} | {r['jain']:.3f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['handshakes']} | {r['bad']} | {r['cpu']*100:.0f}% |")
print()
for i in range(rounds):
    b = rows["lt"][i]
    for who in ("rt", "rtu"):
        a = rows[who][i]
        print(f"round {i+1}: {name[who]} / libtorrent: MB/s {a['mb_s']/b['mb_s']:.2f}x, "
              f"p99 latency {a['p99']/b['p99']:.3f}x (lower is better), Jain {a['jain']:.3f} vs {b['jain']:.3f}")
PY
