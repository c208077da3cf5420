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
#
# SEEDS picks the seeds and their order in round 1 (reversed in even rounds); default
# "rt lt rtu". Names: lt (libtorrent), rt (ringtorrent, its default backend), rtu (rt with
# --seed-choke unlimited), rt-epoll / rt-uring (rt with --io epoll|uring), and the same with
# an "old-" prefix (old-rt-epoll, ...) for the binary in OLD_RT (e.g. main's build), so a
# before/after pair runs in one session. RT overrides the ringtorrent binary under test.
# Each row also reports the seeder's CPU-seconds over the generator's run (utime + stime from
# /proc/PID/stat, all threads) and MB delivered per seeder CPU-second.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
peers=${1:-1000}
secs=${2:-15}
rounds=${3:-2}
size_mib=${4:-256}
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
old_rt=${OLD_RT:-}
read -r -a seeds <<<"${SEEDS:-rt lt rtu}"
for who in "${seeds[@]}"; do
    case $who in
    lt | rt | rtu | rt-epoll | rt-uring) ;;
    old-rt | old-rtu | old-rt-epoll | old-rt-uring)
        [ -n "$old_rt" ] || { echo "$who needs OLD_RT=path" >&2; exit 2; } ;;
    *) echo "unknown seed $who" >&2; exit 2 ;;
    esac
done
tck=$(getconf CLK_TCK)
# utime + stime of a process, all threads, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
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
        local bin=$rt base=${who#old-} io=()
        [ "$base" != "$who" ] && bin=$old_rt
        choke=round-robin
        [ "$base" = rtu ] && choke=unlimited
        case $base in rt-epoll) io=(--io epoll) ;; rt-uring) io=(--io uring) ;; esac
        rm -rf "$work/rt-state"
        "$bin" seed "$torrent" "$work/data" --port "$port" --bind 127.0.0.1 \
            --max-peers $((peers + 100)) --duration $((secs + 60)) --seed-choke "$choke" \
            "${io[@]}" --state-dir "$work/rt-state" >"$work/rt-seed.log" 2>&1 &
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
    local before after
    before=$(cpu_ticks "$pid")
    "$rt" swarm-load run --target "127.0.0.1:$port" --torrent "$torrent" --mode download \
        --peers "$peers" --duration "$secs" --source-ips 127.0.0.2-127.0.0.254 \
        --json -o "$work/$who-$round.json" >/dev/null 2>"$work/gen.log"
    after=$(cpu_ticks "$pid")
    echo "$(( after - before )) $tck" >"$work/$who-$round.cpu"
    [ "$who" = lt ] && exec 5>&-
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
    order=("${seeds[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#seeds[@]} - 1; i >= 0; i--)); do order+=("${seeds[i]}"); done
    fi
    for who in "${order[@]}"; do
        echo "round $round: $who" >&2
        measure "$who" "$round"
    done
done

echo "load average at the end: $(cat /proc/loadavg)"
/usr/bin/python3 - "$work" "$rounds" "$peers" "$secs" "$size_mib" "${seeds[@]}" <<'PY'
import json, sys
work, rounds, peers, secs, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
seeds = sys.argv[6:]

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
for who in seeds:
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
        ticks, tck = open(f"{work}/{who}-{r}.cpu").read().split()
        rows[who][-1]["seed_cpu"] = int(ticks) / int(tck)
        rows[who][-1]["mb_cpu"] = c.get("bytes.down", 0) / 1e6 / max(rows[who][-1]["seed_cpu"], 1e-9)
def name(who):
    base = who.removeprefix("old-")
    n = {"rt": "ringtorrent", "rtu": "ringtorrent --seed-choke unlimited", "lt": "libtorrent",
         "rt-epoll": "ringtorrent --io epoll", "rt-uring": "ringtorrent --io uring"}[base]
    return ("OLD " + n) if base != who else n
print(f"{peers} synthetic leechers, {secs} s per run, {size} MiB payload, 1 MiB pieces; {rounds} rounds alternating\n")
print("| seed | round | MB/s | seeder CPU-s | MB per seeder CPU-s | Jain | p50 ms | p99 ms | handshakes | failed blocks | generator CPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for who in seeds:
    for i, r in enumerate(rows[who], 1):
        print(f"| {name(who)} | {i} | {r['mb_s']:.0f} | {r['seed_cpu']:.2f} | {r['mb_cpu']:.0f} | {r['jain']:.3f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['handshakes']} | {r['bad']} | {r['cpu']*100:.0f}% |")
print()
for i in range(rounds):
    b = rows.get("lt", [None] * rounds)[i]
    for who in seeds:
        if who == "lt" or b is None:
            continue
        a = rows[who][i]
        print(f"round {i+1}: {name(who)} / libtorrent: MB per seeder CPU-s {a['mb_cpu']/b['mb_cpu']:.2f}x, MB/s {a['mb_s']/b['mb_s']:.2f}x, "
              f"p99 latency {a['p99']/b['p99']:.3f}x (lower is better), Jain {a['jain']:.3f} vs {b['jain']:.3f}")
pairs = [("rt-uring", "rt-epoll"), ("old-rt-uring", "old-rt-epoll"), ("rt-uring", "old-rt-uring"),
         ("rt-epoll", "old-rt-epoll"), ("rt", "old-rt")]
for a_, b_ in pairs:
    if a_ in rows and b_ in rows:
        for i in range(rounds):
            a, b = rows[a_][i], rows[b_][i]
            print(f"round {i+1}: {name(a_)} / {name(b_)}: MB per seeder CPU-s {a['mb_cpu']/b['mb_cpu']:.2f}x, MB/s {a['mb_s']/b['mb_s']:.2f}x")
PY
