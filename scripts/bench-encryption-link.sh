#!/usr/bin/env bash
# RC4 against plaintext between two ringtorrents over an emulated link instead of loopback:
# two network namespaces joined by a veth pair, each end rate-limited with `tbf` (this kernel
# has no netem; see measuring.md). On loopback both sides are CPU-bound and RC4, a byte at a
# time, is the bottleneck; on a link the link is. For each setting the seed runs in one
# namespace and the leecher in the other, `--encryption plaintext` on both, then `require`.
#
# Usage (as root): scripts/bench-encryption-link.sh [RATE=1gbit] [SIZE_MIB=512] [RUNS=3]
# Prints a markdown table: wall time, MB/s, CPU seconds of both processes, MB per CPU-second.
# Ends only the processes it started, and deletes its namespaces.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
rate=${1:-1gbit}
size_mib=${2:-512}
runs=${3:-3}
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
rt=$(realpath "$rt")
tag=rtenc$$
a=${tag}a b=${tag}b
work=$(mktemp -d /dev/shm/rt-bench-enc.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$a"
ip netns add "$b"
ip link add "${tag}x" netns "$a" type veth peer name "${tag}y" netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev "${tag}x"
ip -n "$b" addr add 10.77.0.2/24 dev "${tag}y"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "${tag}x" up
ip -n "$b" link set "${tag}y" up
ip netns exec "$a" tc qdisc add dev "${tag}x" root tbf rate "$rate" burst 256kb latency 50ms
ip netns exec "$b" tc qdisc add dev "${tag}y" root tbf rate "$rate" burst 256kb latency 50ms

mkdir -p "$work/seed"
head -c $((size_mib << 20)) /dev/urandom > "$work/seed/payload.bin"
"$rt" create "$work/seed/payload.bin" -o "$work/p.torrent" --piece-length 1M >/dev/null 2>&1 ||
    mktorrent -l 20 -a http://10.77.0.1:1/announce -o "$work/p.torrent" "$work/seed/payload.bin" >/dev/null
bytes=$((size_mib << 20))
hz=$(getconf CLK_TCK)
cpu_of() { awk -v hz="$hz" '{sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz}' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| link | encryption | runs (s) | median s | MB/s | CPU s (both) | MB per CPU-s |"
echo "|---|---|---|---|---|---|---|"
for policy in plaintext require; do
    times=(); cpus=()
    for _ in $(seq "$runs"); do
        : > "$work/seed.out"
        ip netns exec "$a" "$rt" seed "$work/p.torrent" "$work/seed" --port 0 --bind 10.77.0.1 \
            --duration 600 --state-dir "$work/seed-state" --encryption "$policy" > "$work/seed.out" 2>/dev/null &
        seed_pid=$!
        pids+=("$seed_pid")
        addr=""
        for _ in $(seq 600); do
            addr=$(grep -o '10.77.0.1:[0-9]*' "$work/seed.out" || true)
            [ -n "$addr" ] && break
            sleep 0.05
        done
        [ -n "$addr" ] || { echo "seed did not start" >&2; exit 1; }
        c0=$(cpu_of "$seed_pid")
        rm -rf "$work/out" "$work/leech-state"
        line=$(/usr/bin/python3 -c '
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "", "|", "%.3f" % (u.ru_utime + u.ru_stime))
sys.exit(r.returncode)' ip netns exec "$b" "$rt" download "$work/p.torrent" -o "$work/out" --peer "$addr" \
            --bind 10.77.0.2 --timeout 600 --state-dir "$work/leech-state" --encryption "$policy")
        c1=$(cpu_of "$seed_pid")
        kill "$seed_pid"; wait "$seed_pid" 2>/dev/null || true
        cmp -s "$work/seed/payload.bin" "$work/out/payload.bin" || { echo "payload differs" >&2; exit 1; }
        s=$(echo "$line" | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')
        leech_cpu=${line##*| }
        times+=("$s")
        cpus+=("$(awk -v l="$leech_cpu" -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", l + b - a}')")
    done
    med=$(printf '%s\n' "${times[@]}" | median)
    cpu=$(printf '%s\n' "${cpus[@]}" | median)
    name=$([ "$policy" = require ] && echo "RC4 (require)" || echo "plaintext")
    printf '| %s | %s | %s | %.2f | %.0f | %s | %.0f |\n' "$rate" "$name" "${times[*]}" "$med" \
        "$(awk -v b="$bytes" -v t="$med" 'BEGIN {print b/t/1e6}')" "$cpu" \
        "$(awk -v b="$bytes" -v c="$cpu" 'BEGIN {print b/c/1e6}')"
done
