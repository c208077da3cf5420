#!/usr/bin/env bash
# `ringtorrent check` of a payload in /dev/shm against `openssl speed sha1` on every core, in
# the same run, alternating rounds. The issue-20 goal: check's throughput, wall clock from
# process start to exit, >= 0.9 of `openssl speed -elapsed -multi CORES sha1`.
#
#   scripts/bench-check.sh [SIZE_MIB=1024] [ROUNDS=3] [BINARY...]
#
# BINARY defaults to this tree's release build; give several (e.g. main's and this one's) for
# a before/after pair in one run. Also measured per binary: the start-up cost, `check` of a
# one-piece torrent (process start, torrent parse, open, threads, exit), and the CPU seconds
# (user, system) of the big check. openssl runs on 16 KiB buffers for 3 s (its figure with
# -elapsed is wall-clock throughput over all its processes).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
    cargo build --release --quiet
    bins=("${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent")
fi
cores=$(nproc)
work=$(mktemp -d /dev/shm/rt-bench-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data" "$work/tiny"
head -c $((size_mib << 20)) /dev/urandom > "$work/data/payload.bin"
head -c 16384 /dev/urandom > "$work/tiny/payload.bin"
mktorrent -l 20 -a http://127.0.0.1:1/announce -o "$work/p.torrent" "$work/data/payload.bin" >/dev/null
mktorrent -l 16 -a http://127.0.0.1:1/announce -o "$work/t.torrent" "$work/tiny/payload.bin" >/dev/null
bytes=$((size_mib << 20))

openssl_mbs() { # wall-clock MB/s of sha1 over every core
    openssl speed -elapsed -multi "$cores" -bytes 16384 -seconds 3 sha1 2>/dev/null |
        awk '/^sha1 /{sub(/k$/,"",$2); printf "%.0f", $2 / 1000}'
}
# Runs $@ and prints "wall user sys" in seconds.
timed() {
    /usr/bin/python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
w = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
if code != 0: sys.exit("exit status %d" % code)
print("%.4f %.3f %.3f" % (w, u.ru_utime, u.ru_stime))' "$@"
}

echo "load before: $(cat /proc/loadavg)"
results=$work/results
for r in $(seq "$rounds"); do
    echo "openssl $(openssl_mbs)" >> "$results"
    for i in "${!bins[@]}"; do
        echo "check$i $(timed "${bins[$i]}" check "$work/p.torrent" "$work/data")" >> "$results"
        echo "start$i $(timed "${bins[$i]}" check "$work/t.torrent" "$work/tiny")" >> "$results"
    done
    echo "openssl $(openssl_mbs)" >> "$results"
done
echo "load after: $(cat /proc/loadavg)"
/usr/bin/python3 - "$results" "$bytes" "$cores" "${bins[@]}" <<'PY'
import statistics, sys
path, size, cores, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
rows = {}
for line in open(path):
    k, *v = line.split()
    rows.setdefault(k, []).append([float(x) for x in v])
ossl = statistics.median(v[0] for v in rows["openssl"])
print(f"openssl speed -elapsed -multi {cores} sha1 (16 KiB): median {ossl:.0f} MB/s over {len(rows['openssl'])} runs")
print()
print("| binary | check wall s (runs) | median MB/s | vs openssl x cores | user s | sys s | CPUs busy | start-up s |")
print("|---|---|---|---|---|---|---|---|")
for i, b in enumerate(bins):
    runs = rows[f"check{i}"]
    wall = statistics.median(r[0] for r in runs)
    user = statistics.median(r[1] for r in runs)
    sys_ = statistics.median(r[2] for r in runs)
    start = statistics.median(r[0] for r in rows[f"start{i}"])
    mbs = size / wall / 1e6
    print(f"| {b} | {' '.join('%.3f' % r[0] for r in runs)} | {mbs:.0f} | {mbs / ossl:.2f} | {user:.2f} | {sys_:.2f} | {(user + sys_) / wall:.2f} | {start:.4f} |")
PY
