#!/usr/bin/env bash
# CPU per byte, side by side in one run: the table of issue 20. Every figure is measured in
# the same run as its reference, rounds alternating the order of the clients, and CPU time is
# read from /proc/PID/stat (utime + stime of the whole process, every thread) or, for a
# process that exits, from getrusage of its children.
#
# Rows (SECTIONS selects them; all by default):
#   swarm  seeding PEERS `swarm-load` leechers (--source-ips 127.0.0.2-127.0.0.254, SWARM_MIB
#          payload, 1 MiB pieces, SECS seconds): MB per seeder CPU-second, for ringtorrent on
#          io_uring and on epoll and for libtorrent 2.0 (python3-libtorrent).
#   seed   seeding SIZE_MIB to one libtorrent leecher: the seeder's CPU-seconds from the moment
#          it seeds to the leecher's last byte.
#   leech  leeching SIZE_MIB from a libtorrent seed: the leecher's CPU-seconds, whole process.
#   check  `ringtorrent check` of SIZE_MIB, wall clock from process start to exit, against
#          the time `openssl speed -multi CORES sha1` needs for the same bytes.
#   pair   ringtorrent -> ringtorrent against libtorrent -> libtorrent, SIZE_MIB, wall clock
#          from starting the seeder (which checks its payload first) to the leecher's exit
#          with every piece verified.
#
# Usage: scripts/bench-cpu.sh [ROUNDS=3]
# Environment: RT=path (the ringtorrent binary; default: this tree's release build, built
# first), BASE=path (a second ringtorrent, e.g. an older build, measured in the same rounds
# as "base"), PEERS=500, SECS=8, SWARM_MIB=256, SIZE_MIB=1024, SECTIONS="swarm seed leech
# check pair". VARIANTS="rt-epoll base-epoll lt ..." runs only those (a variant is rt-* or
# base-*, then uring or epoll, then any suffix: `rt-epoll-sparse`); EXTRA_<variant, with `_`
# for `-`>="flags" adds ringtorrent flags to that variant's seed and download commands
# (EXTRA_rt_epoll_sparse="--allocation sparse"), and BIN_<variant>=path runs another binary.
# `check` takes no extra flags. RESULTS=file adds an earlier run's raw
# lines (sections run apart), KEEP=file saves this run's. Clients run with their default
# settings (encryption included). A leecher starts once its seed has checked its payload and
# seeds (NO_WAIT_CHECK=1: as soon as the seed listens). Payloads live in /dev/shm. Every
# process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
rounds=${1:-3}
peers=${PEERS:-500}
secs=${SECS:-8}
swarm_mib=${SWARM_MIB:-256}
size_mib=${SIZE_MIB:-1024}
sections=${SECTIONS:-"swarm seed leech check pair"}
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
base=${BASE:-}
lt_seed=$PWD/tests/support/lt_seed.py
lt_leech=$PWD/tests/support/lt_leech.py
command -v mktorrent >/dev/null || { echo "mktorrent is missing: run scripts/test.sh once" >&2; exit 1; }
/usr/bin/python3 -c 'import libtorrent' 2>/dev/null || { echo "python3-libtorrent is missing: run scripts/test.sh once" >&2; exit 1; }
hz=$(getconf CLK_TCK)
cores=$(nproc)
work=$(mktemp -d /dev/shm/rt-bench-cpu.XXXXXX)
pids=()
cleanup() {
    { exec 5>&-; } 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The binary of a ringtorrent variant: $BIN_<variant with _ for -> if set, else rt-* is
# $rt and base-* is $BASE.
bin_of() {
    local v="BIN_${1//-/_}"
    if [ -n "${!v:-}" ]; then echo "${!v}"; return; fi
    case "$1" in base-*) echo "$base" ;; *) echo "$rt" ;; esac
}
# The I/O backend of a ringtorrent variant.
io_of() { case "$1" in *-epoll | *-epoll-*) echo epoll ;; *) echo uring ;; esac; }
# The extra flags of a ringtorrent variant: $EXTRA_<variant with _ for ->.
extra_of() { local v="EXTRA_${1//-/_}"; echo "${!v:-}"; }
# The variants every section runs: ringtorrent on both backends, libtorrent, and the base.
variants="rt-uring rt-epoll lt"
[ -n "$base" ] && variants="$variants base-uring base-epoll"
variants=${VARIANTS:-$variants}
# The order of round $1: reversed every other round.
order() {
    if [ $(($1 % 2)) -eq 1 ]; then echo "$variants"; else echo "$variants" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}
# CPU seconds (user + system) a running process has used so far.
cpu_of() {
    awk -v hz="$hz" '{sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz}' "/proc/$1/stat"
}
# Runs a command; writes the CPU seconds it and its children used to $work/cpu and the wall
# seconds from its start to its exit to $work/wall.
cpu_run() {
    /usr/bin/python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
code = subprocess.run(sys.argv[3:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.3f" % (u.ru_utime + u.ru_stime))
open(sys.argv[2], "w").write("%.3f" % wall)
sys.exit(code)' "$work/cpu" "$work/wall" "$@"
}
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 1200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
record() { echo "$1 $2 $3" >> "$work/results"; } # section variant value
: > "$work/results"
# RESULTS=file adds the lines of an earlier run's results (e.g. sections run separately).
[ -n "${RESULTS:-}" ] && cat "$RESULTS" >> "$work/results"
# KEEP=file keeps this run's results lines.
keep() { [ -n "${KEEP:-}" ] && cp "$work/results" "$KEEP"; return 0; }

# Starts a seed of variant $1 for torrent $2 over data folder $3 on port $4, with extra
# arguments for ringtorrent in RT_SEED_ARGS; sets SEED_PID. Returns once it listens.
start_seed() {
    local who=$1 torrent=$2 data=$3 port=$4
    if [ "$who" = lt ]; then
        rm -f "$work/lt.in"
        mkfifo "$work/lt.in"
        /usr/bin/python3 "$lt_seed" "$torrent" "$data" --port "$port" \
            --max-connections $((peers + 100)) --max-seconds 900 \
            <"$work/lt.in" >"$work/lt-seed.log" 2>&1 &
        SEED_PID=$!
        exec 5>"$work/lt.in"
    else
        rm -rf "$work/rt-state"
        # shellcheck disable=SC2086  # RT_SEED_ARGS is a list of flags
        "$(bin_of "$who")" seed "$torrent" "$data" --port "$port" --bind 127.0.0.1 \
            --io "$(io_of "$who")" --max-peers $((peers + 100)) --duration 900 \
            --state-dir "$work/rt-state" ${RT_SEED_ARGS:-} $(extra_of "$who") >"$work/rt-seed.log" 2>&1 &
        SEED_PID=$!
    fi
    pids+=("$SEED_PID")
    wait_port "$port"
    [ -n "${NO_WAIT_CHECK:-}" ] && return 0
    # Both clients listen before their check is over and refuse the torrent's connections
    # meanwhile (a refused leecher redials only after its back-off, 5 s for ours), so every
    # leecher starts once its seed seeds: lt_seed.py prints its JSON line then, and
    # `ringtorrent seed` its "seeding ... on" line.
    local log=$work/lt-seed.log ready='"port"'
    [ "$who" = lt ] || { log=$work/rt-seed.log; ready='^seeding .* on '; }
    for _ in $(seq 1 1200); do
        grep -q "$ready" "$log" && return 0
        sleep 0.05
    done
    echo "$who did not finish checking" >&2
    exit 1
}
stop_seed() {
    { exec 5>&-; } 2>/dev/null || true
    kill "$SEED_PID" 2>/dev/null || true
    wait "$SEED_PID" 2>/dev/null || true
}
# Waits until the seed's CPU use settles (its check is over): two 0.2 s samples apart by
# less than 0.02 CPU-seconds.
settle() {
    local a b
    a=$(cpu_of "$1")
    for _ in $(seq 1 100); do
        sleep 0.2
        b=$(cpu_of "$1")
        awk -v a="$a" -v b="$b" 'BEGIN {exit !(b - a < 0.02)}' && return
        a=$b
    done
}

swarm() {
    "$rt" swarm-load gen --size "$swarm_mib" --piece-length 1M -o "$work/swarm" >/dev/null
    local torrent=$work/swarm/swarm-load.torrent
    for round in $(seq 1 "$rounds"); do
        for who in $(order "$round"); do
            echo "swarm round $round: $who" >&2
            local port c0 c1
            port=$(free_port)
            start_seed "$who" "$torrent" "$work/swarm/data" "$port"
            settle "$SEED_PID"
            c0=$(cpu_of "$SEED_PID")
            "$rt" swarm-load run --target "127.0.0.1:$port" --torrent "$torrent" --mode download \
                --peers "$peers" --duration "$secs" --source-ips 127.0.0.2-127.0.0.254 \
                --json -o "$work/swarm-$who.json" >/dev/null 2>"$work/gen.log"
            c1=$(cpu_of "$SEED_PID")
            stop_seed
            /usr/bin/python3 - "$work/swarm-$who.json" "$c0" "$c1" >>"$work/results" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["counters"]
cpu = float(sys.argv[3]) - float(sys.argv[2])
mb = c.get("bytes.down", 0) / 1e6
who = sys.argv[1].rsplit("swarm-", 1)[1][:-5]
print(f"swarm {who} {mb / cpu:.1f}")
print(f"swarm-hs {who} {c.get('conn.handshakes', 0)}")
print(f"swarm-mbs {who} {mb / d['duration_secs']:.1f}")
print(f"swarm-cpu {who} {cpu / d['duration_secs']:.2f}")
PY
        done
    done
    rm -rf "$work/swarm"
}

make_payload() {
    [ -f "$work/one/seed/payload.bin" ] && return
    mkdir -p "$work/one/seed"
    head -c $((size_mib << 20)) /dev/urandom >"$work/one/seed/payload.bin"
    mktorrent -l 20 -a http://127.0.0.1:1/announce -o "$work/one/p.torrent" "$work/one/seed/payload.bin" >/dev/null
}
verify_out() {
    cmp -s "$work/one/seed/payload.bin" "$work/one/out/payload.bin" || { echo "payload differs ($1)" >&2; exit 1; }
    rm -rf "$work/one/out"
}

# Seeding to one libtorrent leecher: the seeder's CPU while the leecher downloads.
seed() {
    make_payload
    for round in $(seq 1 "$rounds"); do
        for who in $(order "$round"); do
            echo "seed round $round: $who" >&2
            local port c0 c1
            port=$(free_port)
            start_seed "$who" "$work/one/p.torrent" "$work/one/seed" "$port"
            settle "$SEED_PID"
            c0=$(cpu_of "$SEED_PID")
            rm -rf "$work/one/out"; mkdir -p "$work/one/out"
            /usr/bin/python3 "$lt_leech" "$work/one/p.torrent" "$work/one/out" --peer "127.0.0.1:$port" --timeout 600 >/dev/null
            c1=$(cpu_of "$SEED_PID")
            stop_seed
            verify_out "$who -> libtorrent"
            record seed "$who" "$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f", b - a}')"
        done
    done
}

# Leeching from a libtorrent seed: the leecher's CPU, whole process.
leech() {
    make_payload
    for round in $(seq 1 "$rounds"); do
        for who in $(order "$round"); do
            echo "leech round $round: $who" >&2
            local port
            port=$(free_port)
            start_seed lt "$work/one/p.torrent" "$work/one/seed" "$port"
            rm -rf "$work/one/out" "$work/leech-state"; mkdir -p "$work/one/out"
            if [ "$who" = lt ]; then
                cpu_run /usr/bin/python3 "$lt_leech" "$work/one/p.torrent" "$work/one/out" --peer "127.0.0.1:$port" --timeout 600
            else
                # shellcheck disable=SC2046  # the extra flags are a list
                cpu_run "$(bin_of "$who")" download "$work/one/p.torrent" -o "$work/one/out" --peer "127.0.0.1:$port" \
                    --bind 127.0.0.1 --io "$(io_of "$who")" --timeout 600 --state-dir "$work/leech-state" $(extra_of "$who")
            fi
            stop_seed
            verify_out "libtorrent -> $who"
            record leech "$who" "$(cat "$work/cpu")"
        done
    done
}

# `check` against openssl on every core, for the same bytes.
check() {
    make_payload
    local bytes=$((size_mib << 20))
    for round in $(seq 1 "$rounds"); do
        # openssl's aggregate SHA-1 rate over 1 MiB buffers on every core, in bytes/s.
        local rate
        rate=$(openssl speed -seconds 2 -bytes 1048576 -multi "$cores" sha1 2>/dev/null |
            awk '/^sha1 /{v=$NF; sub(/k$/, "", v); print v * 1000}')
        record check-openssl all "$(awk -v b="$bytes" -v r="$rate" 'BEGIN {printf "%.3f", b / r}')"
        for who in $variants; do
            [ "$who" = lt ] && continue
            case "$who" in *-epoll*) continue ;; esac
            echo "check round $round: $who" >&2
            cpu_run "$(bin_of "$who")" check "$work/one/p.torrent" "$work/one/seed" --json
            record check "$who" "$(cat "$work/wall")"
        done
    done
}

# ringtorrent -> ringtorrent against libtorrent -> libtorrent, wall from the seeder's start.
pair() {
    make_payload
    for round in $(seq 1 "$rounds"); do
        for who in $(order "$round"); do
            echo "pair round $round: $who" >&2
            local port t0 t1
            port=$(free_port)
            rm -rf "$work/one/out" "$work/leech-state"; mkdir -p "$work/one/out"
            t0=$(now)
            start_seed "$who" "$work/one/p.torrent" "$work/one/seed" "$port"
            if [ "$who" = lt ]; then
                /usr/bin/python3 "$lt_leech" "$work/one/p.torrent" "$work/one/out" --peer "127.0.0.1:$port" --timeout 600 >/dev/null
            else
                # shellcheck disable=SC2046  # the extra flags are a list
                "$(bin_of "$who")" download "$work/one/p.torrent" -o "$work/one/out" --peer "127.0.0.1:$port" \
                    --bind 127.0.0.1 --io "$(io_of "$who")" --timeout 600 --state-dir "$work/leech-state" \
                    $(extra_of "$who") >/dev/null 2>&1
            fi
            t1=$(now)
            stop_seed
            verify_out "pair $who"
            record pair "$who" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
        done
    done
}

echo "load before: $(cat /proc/loadavg)" >&2
for s in $sections; do "$s"; keep; done
echo "load after: $(cat /proc/loadavg)" >&2

/usr/bin/python3 - "$work/results" "$rounds" "$peers" "$secs" "$swarm_mib" "$size_mib" "$cores" <<'PY'
import statistics, sys
path, rounds, peers, secs, swarm_mib, size_mib, cores = sys.argv[1:]
size = int(size_mib) * 2**20
rows = {}
for line in open(path):
    section, who, value = line.split()
    rows.setdefault(section, {}).setdefault(who, []).append(float(value))
med = lambda xs: statistics.median(xs)
rng = lambda xs: f"{min(xs):.2f}-{max(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"
name = {"rt-uring": "ringtorrent io_uring", "rt-epoll": "ringtorrent epoll", "lt": "libtorrent 2.0",
        "base-uring": "base io_uring", "base-epoll": "base epoll"}
order = ["lt", "rt-uring", "rt-epoll", "base-uring", "base-epoll"]
for r in rows.values():
    for w in r:
        if w not in order and w != "all":
            order.append(w)
            name.setdefault(w, w)
print(f"{rounds} rounds, order alternating; {cores} cores\n")

def table(section, title, unit, better, ref="lt", extra=None):
    if section not in rows:
        return
    r = rows[section]
    print(f"### {title}\n")
    head = f"| client | {unit} median | range | vs {name.get(ref, ref)} ({better} is better) |"
    if extra:
        head += "".join(f" {h} |" for h, _ in extra)
    print(head)
    print("|---" * (4 + len(extra or [])) + "|")
    for who in order:
        if who not in r:
            continue
        line = f"| {name[who]} | {med(r[who]):.2f} | {rng(r[who])} | {med(r[who]) / med(r[ref]):.2f}x |"
        for _, key in extra or []:
            v = rows.get(key, {}).get(who)
            line += f" {med(v):.2f} |" if v else " - |"
        print(line)
    print()

table("swarm", f"Seeding {peers} swarm-load leechers, {swarm_mib} MiB, {secs} s: MB per seeder CPU-second",
      "MB/CPU-s", "higher",
      extra=[("MB/s", "swarm-mbs"), ("seeder cores busy", "swarm-cpu"), ("handshakes", "swarm-hs")])
if "swarm" in rows and "rt-epoll" in rows["swarm"]:
    s = rows["swarm"]
    print(f"io_uring / epoll, MB per seeder CPU-second: {med(s['rt-uring']) / med(s['rt-epoll']):.2f}x\n")
table("seed", f"Seeding {size_mib} MiB to one libtorrent leecher: seeder CPU-seconds", "CPU-s", "lower")
table("leech", f"Leeching {size_mib} MiB from a libtorrent seed: leecher CPU-seconds", "CPU-s", "lower")
if "check" in rows:
    o = rows["check-openssl"]["all"]
    print(f"### `check` of {size_mib} MiB, wall from process start, against openssl sha1 on {cores} cores\n")
    print("| ringtorrent | wall s median | range | openssl x cores, s | fraction of openssl x cores |")
    print("|---|---|---|---|---|")
    for who in [w for w in order if w in rows["check"]]:
        if True:
            print(f"| {name[who].split()[0]} | {med(rows['check'][who]):.3f} | {rng(rows['check'][who])} | {med(o):.3f} | {med(o) / med(rows['check'][who]):.2f} |")
    print()
table("pair", f"{size_mib} MiB, same client both sides, wall from the seeder's start to the leecher's exit",
      "s", "lower")
if "pair" in rows:
    p = rows["pair"]
    for who in ("rt-uring", "rt-epoll", "base-uring"):
        if who in p:
            print(f"{name[who]} pair speed / libtorrent pair speed: {med(p['lt']) / med(p[who]):.2f}x")
PY
