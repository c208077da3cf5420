#!/usr/bin/env bash
# Size sweep: does the cost of a transfer grow faster than its size? For each payload size it
# runs `ringtorrent demo --size N --quiet` (mode demo) and a separate `seed` process serving a
# `download` process over loopback (mode split), alternating the builds given (a before/after
# pair) and the sizes inside every round, so each variant sees the same load. It prints, per
# run and then as medians per build and size: transfer MB/s (bytes / seconds the transfer
# took, as the command prints it), user and system CPU-seconds, and CPU-seconds per GiB.
# Results: perf/2026-12-02-linear-cost.md.
#
#   scripts/bench-size-sweep.sh                          # this tree's build, 1G 2G 4G, 3 rounds
#   scripts/bench-size-sweep.sh --bin /tmp/rt-main --bin target/release/ringtorrent \
#       --sizes "1G 4G" --rounds 3 --modes "demo split"
#
# CPU-seconds: demo, the whole process (payload generation and the final byte compare
# included); split, the download process (rusage) plus the seed's CPU from the moment it
# listens (its start-up check excluded) until the download exits (/proc/PID/stat).
# Payloads live in $DIR (default /dev/shm): at most twice the largest size at once, removed
# after each run. The script ends only the processes it started.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."

bins=()
sizes="1G 2G 4G"
rounds=3
modes="demo split"
dir=/dev/shm
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bins+=("$2"); shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "bench-size-sweep.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ ${#bins[@]} -eq 0 ]; then
    cargo build --release --quiet
    bins=("${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent")
fi

work=$(mktemp -d "$dir/rt-sweep.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bytes_of() { numfmt --from=iec "$1"; }
cpu_of() {
    [ -r "/proc/$1/stat" ] || { echo 0; return; }
    awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.3f %.3f", $12 / hz, $13 / hz}' "/proc/$1/stat"
}
# Runs a command; prints "USER SYS" (its CPU-seconds, children included) to $work/cpu.
rusage_run() {
    /usr/bin/python3 -c '
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.3f %.3f" % (u.ru_utime, u.ru_stime))
sys.exit(code)' "$work/cpu" "$@"
}

results=$work/results.txt
: > "$results"
echo "kernel $(uname -r); $(nproc) cores; $(free -g | awk '/Mem:/{print $2}') GiB; payloads in $dir"
printf '%-5s %-6s %-5s %-28s %8s %7s %7s %9s %s\n' mode size round build "MB/s" user sys "cpu/GiB" loadavg

run_demo() { # bin size -> "MBS USER SYS"
    local out
    out=$(rusage_run "$1" demo --size "$2" --quiet --work-dir "$work" 2>/dev/null)
    local secs
    secs=$(sed -n 's/^ok: .* in \([0-9.]*\) s: .*/\1/p' <<<"$out")
    [ -n "$secs" ] || { echo "demo failed: $out" >&2; exit 1; }
    awk -v b="$(bytes_of "$2")" -v s="$secs" -v c="$(cat "$work/cpu")" \
        'BEGIN {split(c, u, " "); printf "%.0f %s %s", b / s / 1e6, u[1], u[2]}'
}

run_split() { # bin size (payload and torrent in $work/seed, $work/p.torrent) -> "MBS USER SYS"
    local bin=$1 size=$2 tag state out addr="" seed_pid c0 c1 secs
    tag=$(basename "$(dirname "$bin")")-$(echo -n "$bin" | md5sum | cut -c1-8)
    state=$work/state-$tag
    out=$work/seed.out
    "$bin" seed "$work/p.torrent" "$work/seed" --port 0 --bind 127.0.0.1 --duration 900 \
        --state-dir "$state" > "$out" 2>/dev/null &
    seed_pid=$!
    pids+=("$seed_pid")
    for _ in $(seq 6000); do
        addr=$(grep -o '127.0.0.1:[0-9]*' "$out" || true)
        [ -n "$addr" ] && break
        sleep 0.01
    done
    [ -n "$addr" ] || { echo "the seed did not start" >&2; exit 1; }
    c0=$(cpu_of "$seed_pid")
    rm -rf "$work/out"
    secs=$(rusage_run "$bin" download "$work/p.torrent" -o "$work/out" --peer "$addr" --bind 127.0.0.1 \
        --timeout 900 --state-dir "$work/leech-state" 2>/dev/null | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')
    c1=$(cpu_of "$seed_pid")
    kill "$seed_pid" 2>/dev/null || true
    wait "$seed_pid" 2>/dev/null || true
    cmp -s "$work/seed/payload.bin" "$work/out/payload.bin" || { echo "download differs" >&2; exit 1; }
    rm -rf "$work/out" "$work/leech-state"
    [ -n "$secs" ] || { echo "download failed" >&2; exit 1; }
    awk -v b="$(bytes_of "$size")" -v s="$secs" -v c="$(cat "$work/cpu")" -v c0="$c0" -v c1="$c1" \
        'BEGIN {split(c, u, " "); split(c0, a, " "); split(c1, z, " ");
                printf "%.0f %.3f %.3f", b / s / 1e6, u[1] + z[1] - a[1], u[2] + z[2] - a[2]}'
}

for round in $(seq "$rounds"); do
    for mode in $modes; do
        for size in $sizes; do
            if [ "$mode" = split ]; then
                mkdir -p "$work/seed"
                head -c "$(bytes_of "$size")" /dev/urandom > "$work/seed/payload.bin"
                "${bins[0]}" create "$work/seed/payload.bin" --piece-length 1M -o "$work/p.torrent" -f >/dev/null 2>&1
                rm -rf "$work"/state-*
            fi
            for bin in "${bins[@]}"; do
                load=$(cut -d' ' -f1-3 /proc/loadavg)
                r=$(run_"$mode" "$bin" "$size")
                read -r mbs user sys <<<"$r"
                per=$(awk -v u="$user" -v s="$sys" -v b="$(bytes_of "$size")" 'BEGIN {printf "%.2f", (u + s) / (b / 2^30)}')
                printf '%-5s %-6s %-5s %-28s %8s %7s %7s %9s %s\n' "$mode" "$size" "$round" "$(tail -c 29 <<<"$bin")" "$mbs" "$user" "$sys" "$per" "$load"
                echo "$mode $size $bin $mbs $user $sys $per" >> "$results"
            done
            rm -rf "$work/seed" "$work/p.torrent"
        done
    done
done

echo
echo "medians over $rounds rounds. cores: CPU-seconds over the transfer's seconds (demo: whole-process CPU, so an"
echo "upper bound); ratio: MB/s against the same build's smallest size; cpu-r: bytes per CPU-second, the same way"
/usr/bin/python3 - "$results" "$sizes" <<'EOF'
import statistics, subprocess, sys
rows = [l.split() for l in open(sys.argv[1])]
sizes = sys.argv[2].split()
keys = []
for r in rows:
    if (r[0], r[2]) not in keys:
        keys.append((r[0], r[2]))
print("%-5s %-34s %-5s %7s %6s %6s %8s %6s %7s %7s" % ("mode", "build", "size", "MB/s", "user", "sys", "cpu/GiB", "cores", "ratio", "cpu-r"))
for mode, b in keys:
    base = None
    for s in sizes:
        sel = [r for r in rows if r[0] == mode and r[2] == b and r[1] == s]
        if not sel:
            continue
        med = lambda i: statistics.median(float(r[i]) for r in sel)
        mbs, per = med(3), med(6)
        base = base or (mbs, per)
        gib = int(subprocess.run(["numfmt", "--from=iec", s], capture_output=True, text=True).stdout) / 2**30
        cores = per * gib / (gib * 2**30 / 1e6 / mbs)
        print("%-5s %-34s %-5s %7.0f %6.2f %6.2f %8.2f %6.2f %7.2f %7.2f" % (mode, b[-34:], s, mbs, med(4), med(5), per, cores, mbs / base[0], base[1] / per))
EOF
