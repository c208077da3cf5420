#!/usr/bin/env bash
# Leecher CPU of a v2-only download, two ringtorrent binaries side by side in one run (rounds
# alternating which goes first), from one ringtorrent seed on loopback: what hashing on
# arrival costs a v2-only torrent, whose pieces are judged by SHA-256, not SHA1.
#
# Usage: BASE=path RT=path scripts/bench-v2-arrival.sh [ROUNDS=3]
# Environment: SIZE_MIB=256 (payload, 1 MiB pieces, in /dev/shm). CPU is user + system of the
# whole leecher process (/usr/bin/time). Every process it starts is ended by PID.
set -euo pipefail
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
rounds=${1:-3}
size_mib=${SIZE_MIB:-256}
rt=${RT:?RT=path to the ringtorrent binary measured}
base=${BASE:?BASE=path to the ringtorrent binary compared}
work=$(mktemp -d /dev/shm/rt-bench-v2.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/data"
/usr/bin/python3 -c "
import random, sys
r = random.Random(7)
with open(sys.argv[1], 'wb') as f:
    for _ in range($size_mib):
        f.write(r.randbytes(1 << 20))
" "$work/data/payload.bin"
"$rt" create "$work/data/payload.bin" --v2 -l 1M -o "$work/t.torrent" >/dev/null
"$rt" seed "$work/t.torrent" "$work/data" --port 0 --bind 127.0.0.1 --duration 3600 \
    --state-dir "$work/seed-state" >"$work/seed.log" 2>&1 &
pids+=($!)
addr=
for _ in $(seq 1200); do
    addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$work/seed.log" | head -1 || true)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "the seed did not start:" >&2; cat "$work/seed.log" >&2; exit 1; }
declare -A cpu
for r in $(seq "$rounds"); do
    order="base rt"
    [ $((r % 2)) -eq 0 ] && order="rt base"
    for v in $order; do
        bin=$rt
        [ "$v" = base ] && bin=$base
        rm -rf "$work/out" "$work/st"
        /usr/bin/time -f "%U %S %e" -o "$work/time" "$bin" download "$work/t.torrent" \
            -o "$work/out" --bind 127.0.0.1 --peer "$addr" --state-dir "$work/st" \
            --timeout 600 >/dev/null 2>"$work/leech.log" \
            || { echo "$v: download failed" >&2; cat "$work/leech.log" >&2; exit 1; }
        cmp -s "$work/out/payload.bin" "$work/data/payload.bin" \
            || { echo "$v: download differs" >&2; exit 1; }
        read -r u s e <"$work/time"
        c=$(echo "$u + $s" | bc)
        cpu[$v]="${cpu[$v]:-} $c"
        echo "round $r $v: cpu ${c}s (user $u, sys $s), wall ${e}s"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mb=$(median <<<"${cpu[base]}")
mr=$(median <<<"${cpu[rt]}")
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "leecher CPU-seconds for ${size_mib} MiB v2-only, median: base $mb, rt $mr, rt/base $(echo "scale=3; $mr / $mb" | bc)"
