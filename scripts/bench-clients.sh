#!/usr/bin/env bash
# Side-by-side transfer benchmark on loopback: the same payload and torrent, measured in one
# run, seeder x leecher for libtorrent 2.0 (python3-libtorrent, TCP only) and ringtorrent.
# Prints a markdown table of MB/s (median of RUNS) with ratios against libtorrent->libtorrent.
# Usage: scripts/bench-clients.sh [SIZE_MIB=1024] [RUNS=3]
# LT_LEECH_ARGS (e.g. --plaintext) are passed to the libtorrent leecher in every row.
# Needs: mktorrent, python3-libtorrent (scripts/test.sh installs both). Payload in /dev/shm.
# Every process it starts is ended by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-3}
cargo build --release --quiet
rt=$PWD/target/release/ringtorrent
lt_seed=$PWD/tests/support/lt_seed.py
lt_leech=$PWD/tests/support/lt_leech.py
work=$(mktemp -d /dev/shm/rt-bench-clients.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/seed"
head -c $((size_mib << 20)) /dev/urandom > "$work/seed/payload.bin"
mktorrent -l 20 -a http://127.0.0.1:1/announce -o "$work/p.torrent" "$work/seed/payload.bin" >/dev/null
bytes=$((size_mib << 20))

# Starts a seeder in the background and sets SEED_PID and SEED_ADDR. $1: lt or rt.
# (Not called in a subshell, so the PID stays known to this script.)
start_seed() {
    local out="$work/seed.out"
    : > "$out"
    if [ "$1" = lt ]; then
        # lt_seed.py runs until its stdin closes or 120 s pass; its stdin is a fifo we hold.
        rm -f "$work/seed.in"; mkfifo "$work/seed.in"
        /usr/bin/python3 "$lt_seed" "$work/p.torrent" "$work/seed" < "$work/seed.in" > "$out" 2>/dev/null &
        SEED_PID=$!
        exec 9> "$work/seed.in"
    else
        "$rt" seed "$work/p.torrent" "$work/seed" --port 0 --bind 127.0.0.1 --duration 600 > "$out" 2>/dev/null &
        SEED_PID=$!
    fi
    pids+=("$SEED_PID")
    SEED_ADDR=""
    for _ in $(seq 400); do
        if [ "$1" = lt ] && grep -q '"port"' "$out"; then
            SEED_ADDR="127.0.0.1:$(grep -o '"port": [0-9]*' "$out" | grep -o '[0-9]*$')"
        elif [ "$1" = rt ] && grep -q '127.0.0.1:' "$out"; then
            SEED_ADDR=$(grep -o '127.0.0.1:[0-9]*' "$out")
        fi
        [ -n "$SEED_ADDR" ] && return
        sleep 0.05
    done
    echo "seeder did not start" >&2
    exit 1
}

stop_seed() {
    exec 9>&- 2>/dev/null || true
    kill "$SEED_PID" 2>/dev/null || true
    wait "$SEED_PID" 2>/dev/null || true
}

# Leeches from $2 with client $1; prints seconds.
leech() {
    rm -rf "$work/out"; mkdir -p "$work/out"
    if [ "$1" = lt ]; then
        # shellcheck disable=SC2086  # LT_LEECH_ARGS is a list of flags
        /usr/bin/python3 "$lt_leech" "$work/p.torrent" "$work/out" --peer "$2" --timeout 300 ${LT_LEECH_ARGS:-} \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'
    else
        "$rt" download "$work/p.torrent" -o "$work/out" --peer "$2" --bind 127.0.0.1 --timeout 300 2>/dev/null \
            | sed -n 's/.* in \([0-9.]*\) s .*/\1/p'
    fi
    cmp -s "$work/seed/payload.bin" "$work/out/payload.bin" || { echo "payload differs" >&2; exit 1; }
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| seeder -> leecher | runs (s) | median s | MB/s | vs libtorrent->libtorrent |"
echo "|---|---|---|---|---|"
ref=""
for pair in lt:lt lt:rt rt:lt rt:rt; do
    s=${pair%%:*}; l=${pair##*:}
    times=()
    for _ in $(seq "$runs"); do
        start_seed "$s"
        times+=("$(leech "$l" "$SEED_ADDR")")
        stop_seed
    done
    med=$(printf '%s\n' "${times[@]}" | median)
    mbs=$(awk -v b="$bytes" -v t="$med" 'BEGIN {printf "%.0f", b/t/1e6}')
    [ -z "$ref" ] && ref=$mbs
    name() { [ "$1" = lt ] && echo libtorrent || echo ringtorrent; }
    printf '| %s -> %s | %s | %.2f | %s | %.2fx |\n' "$(name "$s")" "$(name "$l")" "${times[*]}" "$med" "$mbs" \
        "$(awk -v a="$mbs" -v r="$ref" 'BEGIN {print a/r}')"
done
