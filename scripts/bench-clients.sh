#!/usr/bin/env bash
# Side-by-side transfer benchmark on loopback: the same payload (in /dev/shm) and the same
# torrent, measured in one run, for libtorrent 2.0 (python3-libtorrent, TCP only),
# ringtorrent, Transmission 3.00 (transmission-daemon) and aria2 1.36:
#   - each client leeching from a libtorrent seed,
#   - each client seeding to a libtorrent leecher,
#   - ringtorrent to ringtorrent.
# Prints a markdown table of MB/s (median of RUNS) with ratios against libtorrent->libtorrent.
#
# Usage: scripts/bench-clients.sh [--link SPEC [--bulk]] [SIZE_MIB=1024] [RUNS=3]
# --link SPEC (e.g. 50ms,1%,100mbit: one-way delay each way, loss, rate; see
# tools/link-emu) runs every pairing across an emulated link instead of loopback: the seeder in
# one network namespace (10.77.0.1), the leecher in the other (10.77.0.2), tools/link-emu
# between them; libtorrent and ringtorrent rows only (lt, rt, ort). Its counters (packets
# lost, dropped at the full queue) are printed after the table. --bulk also runs a bulk TCP
# flow across the link in the seeder's direction during every transfer (started 5 s before
# it) and reports that flow's rate over the transfer: how the torrent shares the link.
# LT_LEECH_ARGS (e.g. --plaintext) are passed to the libtorrent leecher in every row.
# ENCRYPTION="plain rc4" runs every row once per setting, each in its strictest form: `plain`
# turns protocol encryption off on both sides (libtorrent pe_disabled both ways, ringtorrent
# --encryption plaintext, Transmission encryption 0, aria2 without crypto); `rc4` forces RC4
# for the whole connection (libtorrent pe_forced both ways with pe_rc4, ringtorrent
# --encryption require, Transmission encryption 2, aria2 --bt-require-crypto with arc4).
# Unset: every client's default (the table of earlier runs). Each row also reports the CPU
# time of both processes (libtorrent and ringtorrent rows) and MB per CPU-second.
# ONLY="lt:lt lt:rt ..." runs only the listed seeder:leecher rows (lt, rt, tr, aria2).
# TRANSPORT=utp runs the libtorrent and ringtorrent rows over uTP only (lt_seed.py and
# lt_leech.py --utp-only: TCP off both ways; ringtorrent --transport utp); the default, tcp,
# over TCP only (ringtorrent --transport tcp). Transmission and aria2 rows stay on TCP.
# Needs: mktorrent, python3-libtorrent, transmission-daemon, transmission-cli, aria2
# (scripts/test.sh installs them all).
# rqbit is not measured yet; to add it, install it outside the repository with
#   cargo install rqbit --locked --root DIR
# (measuring.md has the loopback settings it needs).
#
# What is timed: libtorrent and ringtorrent leechers report their own time from adding the
# torrent (after any check) to completion. Transmission and aria2 leechers are timed by this
# script from the moment the libtorrent seed is ready and dialling them until Transmission
# reports 100% (polled every 0.1 s) or aria2 exits; Transmission decides interest only on its
# ten-second pulse, and that wait is part of its time. Every process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
link=""
bulk=""
while [ $# -gt 0 ]; do
    case "$1" in
    --link) link=${2:?--link needs a spec such as 50ms,1%,100mbit}; shift 2 ;;
    --link=*) link=${1#--link=}; shift ;;
    --bulk) bulk=1; shift ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ -z "$bulk" ] || [ -n "$link" ] || { echo "--bulk needs --link" >&2; exit 2; }
size_mib=${1:-1024}
runs=${2:-3}
if [ -n "$link" ]; then
    only=${ONLY:-"lt:lt rt:lt lt:rt rt:rt"}
    for pair in $only; do
        case "$pair" in
        lt:lt | lt:rt | rt:lt | rt:rt | ort:lt | ort:rt) ;;
        *) echo "$pair: only libtorrent and ringtorrent rows run across --link" >&2; exit 2 ;;
        esac
    done
else
    only=${ONLY:-"lt:lt lt:rt lt:tr lt:aria2 rt:lt tr:lt aria2:lt rt:rt"}
fi
encryptions=${ENCRYPTION:-default}
enc=default
# The settings for the current encryption, per client.
# (And the transport's: lt_enc and rt_enc go on every libtorrent and ringtorrent command.)
transport=${TRANSPORT:-tcp}
case "$transport" in tcp | utp) ;; *) echo "TRANSPORT=$transport: tcp or utp" >&2; exit 2 ;; esac
lt_enc() {
    case "$enc" in
    plain) echo --out-enc-policy disabled --in-enc-policy disabled ;;
    rc4) echo --out-enc-policy forced --in-enc-policy forced --enc-level rc4 ;;
    esac
    [ "$transport" = tcp ] || echo --utp-only
}
rt_enc() {
    case "$enc" in
    plain) echo --encryption plaintext ;;
    rc4) echo --encryption require ;;
    esac
    # An OLD_RT build from before --transport existed runs TCP only anyway.
    [ "${1:-rt}" = ort ] && [ "$transport" = tcp ] && return
    echo --transport "$transport"
}
aria2_enc() {
    case "$enc" in
    rc4) echo --bt-require-crypto=true --bt-min-crypto-level=arc4 ;;
    esac
}
tr_encryption() {
    case "$enc" in
    plain) echo 0 ;; rc4) echo 2 ;; *) echo 1 ;;
    esac
}
# CPU seconds (user + system) a running process has used so far.
cpu_of() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
    awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz}' "/proc/$1/stat"
}
# Runs a command and writes the CPU seconds it and its children used to $CPU_FILE.
cpu_run() {
    /usr/bin/python3 -c '
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.3f" % (u.ru_utime + u.ru_stime))
sys.exit(code)' "$CPU_FILE" "$@"
}
# RT=path measures another ringtorrent binary (an older build, for a before/after pair);
# OLD_RT=path adds the client name `ort` (that binary) beside `rt`, so ONLY="rt:lt ort:lt lt:lt"
# measures a before/after pair and libtorrent in one run. Runs alternate: round 1 of every
# row, then round 2, and so on. The seeder CPU column is the seeder's own CPU-seconds (utime +
# stime from /proc/PID/stat, all threads) from the leecher's start to its end.
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-${CARGO_TARGET_DIR:-$PWD/target}/release/ringtorrent}
old_rt=${OLD_RT:-}
lt_seed=$PWD/tests/support/lt_seed.py
lt_leech=$PWD/tests/support/lt_leech.py
for tool in mktorrent transmission-daemon transmission-remote aria2c; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/test.sh once" >&2; exit 1; }
done
work=$(mktemp -d /dev/shm/rt-bench-clients.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Where the seeder and the leecher run: loopback, or the two sides of the emulated link
# (`nsenter` into side A or B becomes the program, so PIDs and CPU times are the program's).
seed_ip=127.0.0.1
leech_ip=127.0.0.1
on_a=()
on_b=()
emu=""
if [ -n "$link" ]; then
    # In its own target folder, whatever CARGO_TARGET_DIR says (the path below is that one).
    env -u CARGO_TARGET_DIR cargo build --release --quiet --locked --manifest-path tools/link-emu/Cargo.toml
    emu=$PWD/tools/link-emu/target/release/link-emu
    "$emu" run --link "$link" --duration 86400 > "$work/link.out" 2> "$work/link.err" &
    link_pid=$!
    pids+=("$link_pid")
    for _ in $(seq 200); do grep -q '^ready ' "$work/link.out" && break; sleep 0.05; done
    grep -q '^ready ' "$work/link.out" || { echo "link-emu did not start: $(cat "$work/link.err")" >&2; exit 1; }
    side_a=$(grep -o ' a=[0-9]*' "$work/link.out" | cut -d= -f2)
    side_b=$(grep -o ' b=[0-9]*' "$work/link.out" | cut -d= -f2)
    on_a=(nsenter -t "$side_a" -U -n --preserve-credentials --)
    on_b=(nsenter -t "$side_b" -U -n --preserve-credentials --)
    seed_ip=10.77.0.1
    leech_ip=10.77.0.2
fi

# The bulk TCP flow of --bulk: a sink on the leecher's side reporting its byte count every
# 0.2 s, a source on the seeder's side. bulk_mark prints "BYTES SECONDS" of the latest report.
bulk_start() {
    : > "$work/bulk.out"
    "${on_b[@]}" "$emu" tcp-sink "$leech_ip:7001" --duration 86400 --progress-ms 200 > "$work/bulk.out" 2>&1 &
    BULK_SINK=$!
    pids+=("$BULK_SINK")
    for _ in $(seq 200); do grep -q '^listening' "$work/bulk.out" && break; sleep 0.05; done
    "${on_a[@]}" "$emu" tcp-source "$leech_ip:7001" --seconds 86400 > /dev/null 2>&1 &
    BULK_SOURCE=$!
    pids+=("$BULK_SOURCE")
    sleep 5
}
bulk_mark() { grep '^progress ' "$work/bulk.out" | tail -1 | cut -d' ' -f2-; }
bulk_stop() {
    kill "$BULK_SOURCE" "$BULK_SINK" 2>/dev/null || true
    wait "$BULK_SOURCE" "$BULK_SINK" 2>/dev/null || true
}

mkdir -p "$work/seed"
head -c $((size_mib << 20)) /dev/urandom > "$work/seed/payload.bin"
mktorrent -l 20 -a http://127.0.0.1:1/announce -o "$work/p.torrent" "$work/seed/payload.bin" >/dev/null
bytes=$((size_mib << 20))

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }

# Transmission: one daemon for the whole run, its own config folder, loopback only, no
# DHT/LPD/uTP/PEX/port mapping, no queues or limits. Started on first use.
tr_rpc=""
tr_port=""
tr_start() {
    [ -n "$tr_rpc" ] && return
    local rpc_port
    rpc_port=$(free_port); tr_port=$(free_port)
    mkdir -p "$work/tr-config"
    cat > "$work/tr-config/settings.json" <<EOF
{"dht-enabled": false, "lpd-enabled": false, "utp-enabled": false, "pex-enabled": false,
 "port-forwarding-enabled": false, "peer-port": $tr_port, "peer-port-random-on-start": false,
 "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
 "rpc-port": $rpc_port, "rpc-bind-address": "127.0.0.1", "rpc-authentication-required": false,
 "rpc-whitelist-enabled": true, "rpc-whitelist": "127.0.0.1", "rpc-host-whitelist-enabled": false,
 "download-dir": "$work/tr-default", "incomplete-dir-enabled": false, "watch-dir-enabled": false,
 "rename-partial-files": false, "download-queue-enabled": false, "seed-queue-enabled": false,
 "ratio-limit-enabled": false, "idle-seeding-limit-enabled": false,
 "speed-limit-down-enabled": false, "speed-limit-up-enabled": false, "alt-speed-enabled": false,
 "blocklist-enabled": false, "start-added-torrents": true, "encryption": $(tr_encryption), "message-level": 1}
EOF
    transmission-daemon -f -g "$work/tr-config" > "$work/tr.log" 2>&1 &
    pids+=("$!")
    tr_rpc="127.0.0.1:$rpc_port"
    for _ in $(seq 200); do
        transmission-remote "$tr_rpc" -l >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "transmission-daemon did not start" >&2
    exit 1
}
# The "Done" column of the one torrent Transmission holds ("" when none).
tr_done() { transmission-remote "$tr_rpc" -l | awk 'NR == 2 && $1 != "Sum:" {print $2}'; }
tr_remove() {
    transmission-remote "$tr_rpc" -t all -r >/dev/null
    for _ in $(seq 100); do [ -z "$(tr_done)" ] && return; sleep 0.1; done
}

aria2_args=(--no-conf=true --enable-dht=false --enable-dht6=false --enable-peer-exchange=false
    --bt-enable-lpd=false --interface=127.0.0.1 --summary-interval=0 --console-log-level=warn
    --allow-overwrite=true --auto-file-renaming=false --file-allocation=none
    --bt-stop-timeout=120 --stop=900)

wait_port() {
    for _ in $(seq 1200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

# Starts a seeder in the background and sets SEED_PID and SEED_ADDR. $1: lt, rt, tr or aria2;
# $2 (lt only): an address the seed dials. (Not called in a subshell, so the PID stays known.)
start_seed() {
    local out="$work/seed.out"
    : > "$out"
    SEED_ADDR=""
    case "$1" in
    lt)
        # lt_seed.py runs until its stdin closes or 900 s pass; its stdin is a fifo we hold.
        rm -f "$work/seed.in"; mkfifo "$work/seed.in"
        local dial=()
        [ -n "${2:-}" ] && dial=(--peer "$2")
        # shellcheck disable=SC2046  # lt_enc is a list of flags
        "${on_a[@]}" /usr/bin/python3 "$lt_seed" "$work/p.torrent" "$work/seed" --max-seconds 900 --listen-ip "$seed_ip" "${dial[@]}" $(lt_enc) < "$work/seed.in" > "$out" 2>/dev/null &
        SEED_PID=$!
        exec 9> "$work/seed.in"
        ;;
    rt | ort)
        local bin=$rt
        [ "$1" = ort ] && bin=$old_rt
        rm -rf "$work/rt-state"
        # shellcheck disable=SC2046  # rt_enc is a list of flags
        "${on_a[@]}" "$bin" seed "$work/p.torrent" "$work/seed" --port 0 --bind "$seed_ip" --duration 900 \
            --state-dir "$work/rt-state" $(rt_enc "$1") > "$out" 2>/dev/null &
        SEED_PID=$!
        ;;
    tr)
        tr_start
        transmission-remote "$tr_rpc" -a "$work/p.torrent" -w "$work/seed" >/dev/null
        for _ in $(seq 1200); do [ "$(tr_done)" = "100%" ] && break; sleep 0.1; done
        [ "$(tr_done)" = "100%" ] || { echo "Transmission did not verify the seed" >&2; exit 1; }
        SEED_PID=""
        SEED_ADDR="127.0.0.1:$tr_port"
        return
        ;;
    aria2)
        local port
        port=$(free_port)
        # shellcheck disable=SC2046  # aria2_enc is a list of flags
        aria2c "${aria2_args[@]}" --listen-port="$port" --dir="$work/seed" -V --seed-ratio=0.0 \
            $(aria2_enc) "$work/p.torrent" > "$work/aria2-seed.log" 2>&1 &
        SEED_PID=$!
        pids+=("$SEED_PID")
        wait_port "$port" # aria2 listens once its check is done
        SEED_ADDR="127.0.0.1:$port"
        return
        ;;
    esac
    pids+=("$SEED_PID")
    for _ in $(seq 1200); do
        if [ "$1" = lt ] && grep -q '"port"' "$out"; then
            SEED_ADDR="$seed_ip:$(grep -o '"port": [0-9]*' "$out" | grep -o '[0-9]*$')"
        elif [ "$1" != lt ] && grep -q "$seed_ip:" "$out"; then
            SEED_ADDR=$(grep -o "$seed_ip:[0-9]*" "$out" | head -1)
        fi
        [ -n "$SEED_ADDR" ] && return
        sleep 0.05
    done
    echo "seeder did not start" >&2
    exit 1
}

stop_seed() {
    exec 9>&- 2>/dev/null || true
    if [ -n "$SEED_PID" ]; then
        kill "$SEED_PID" 2>/dev/null || true
        wait "$SEED_PID" 2>/dev/null || true
    fi
    if [ -n "$tr_rpc" ]; then tr_remove; fi
}

# Leeches with client $2 from a seed of client $1; sets LEECH_S to the seconds it took.
# Transmission and aria2 never dial a loopback seed here, so the seed dials them. (Not called
# in a subshell, so the processes it starts stay known to this script.)
leech() {
    local seeder=$1 leecher=$2 t0 t1
    LEECH_S=""
    LEECH_CPU=""
    SEED_CPU=""
    BULK_MBIT=""
    rm -rf "$work/out"; mkdir -p "$work/out"
    case "$leecher" in
    lt|rt)
        [ -z "$bulk" ] || bulk_start
        start_seed "$seeder"
        local bulk0=""
        [ -z "$bulk" ] || bulk0=$(bulk_mark)
        local seed_cpu0
        seed_cpu0=$(cpu_of "$SEED_PID")
        CPU_FILE="$work/leech.cpu"
        if [ "$leecher" = lt ]; then
            # shellcheck disable=SC2086,SC2046  # LT_LEECH_ARGS and lt_enc are lists of flags
            LEECH_S=$(cpu_run "${on_b[@]}" /usr/bin/python3 "$lt_leech" "$work/p.torrent" "$work/out" --peer "$SEED_ADDR" --listen-ip "$leech_ip" --timeout 600 ${LT_LEECH_ARGS:-} $(lt_enc) \
                | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
        else
            # shellcheck disable=SC2046  # rt_enc is a list of flags
            LEECH_S=$(cpu_run "${on_b[@]}" "$rt" download "$work/p.torrent" -o "$work/out" --peer "$SEED_ADDR" --bind "$leech_ip" --timeout 900 \
                --state-dir "$work/rt-leech-state" $(rt_enc) 2>/dev/null | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')
            rm -rf "$work/rt-leech-state"
        fi
        if [ -n "$bulk" ]; then
            local bulk1
            bulk1=$(bulk_mark)
            BULK_MBIT=$(awk -v a="$bulk0" -v b="$bulk1" 'BEGIN {split(a, x, " "); split(b, y, " ");
                printf "%.1f", (y[2] > x[2]) ? (y[1] - x[1]) * 8 / (y[2] - x[2]) / 1e6 : 0}')
            bulk_stop
        fi
        if [ "$seeder" = lt ] || [ "$seeder" = rt ] || [ "$seeder" = ort ]; then
            local seed_cpu1
            seed_cpu1=$(cpu_of "$SEED_PID")
            LEECH_CPU=$(awk -v a="$(cat "$CPU_FILE")" -v s0="$seed_cpu0" -v s1="$seed_cpu1" 'BEGIN {printf "%.2f", a + s1 - s0}')
            SEED_CPU=$(awk -v s0="$seed_cpu0" -v s1="$seed_cpu1" 'BEGIN {printf "%.2f", s1 - s0}')
        fi
        ;;
    tr)
        tr_start
        transmission-remote "$tr_rpc" -a "$work/p.torrent" -w "$work/out" >/dev/null
        start_seed "$seeder" "127.0.0.1:$tr_port"
        t0=$(now)
        for _ in $(seq 6000); do [ "$(tr_done)" = "100%" ] && break; sleep 0.1; done
        t1=$(now)
        [ "$(tr_done)" = "100%" ] || { echo "Transmission did not finish" >&2; exit 1; }
        LEECH_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
        ;;
    aria2)
        local port pid
        port=$(free_port)
        # shellcheck disable=SC2046  # aria2_enc is a list of flags
        aria2c "${aria2_args[@]}" --listen-port="$port" --dir="$work/out" --seed-time=0 \
            $(aria2_enc) "$work/p.torrent" > "$work/aria2-leech.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        wait_port "$port"
        start_seed "$seeder" "127.0.0.1:$port"
        t0=$(now)
        wait "$pid" || { echo "aria2 failed: $(tail -5 "$work/aria2-leech.log")" >&2; exit 1; }
        t1=$(now)
        LEECH_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
        ;;
    esac
    stop_seed
    # Transmission may still be flushing its cache when it says 100%.
    for _ in $(seq 100); do cmp -s "$work/seed/payload.bin" "$work/out/payload.bin" && break; sleep 0.1; done
    cmp -s "$work/seed/payload.bin" "$work/out/payload.bin" || { echo "payload differs ($seeder -> $leecher)" >&2; exit 1; }
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
name() {
    case "$1" in
    lt) echo libtorrent ;; rt) echo ringtorrent ;; ort) echo "ringtorrent (OLD_RT)" ;; tr) echo Transmission ;; aria2) echo aria2 ;;
    esac
}

echo "Transport of the libtorrent and ringtorrent rows: $transport"
[ -z "$link" ] || echo "Across an emulated link: $link (seeder 10.77.0.1, leecher 10.77.0.2)${bulk:+, with a bulk TCP flow sharing it}"
bulk_head="" bulk_rule=""
[ -z "$bulk" ] || { bulk_head=" bulk flow Mbit/s (runs) |"; bulk_rule="---|"; }
echo "| encryption | seeder -> leecher | runs (s) | median s | MB/s | vs libtorrent->libtorrent | CPU s (both) | MB per CPU-s | seeder CPU s (runs) | seeder CPU median |$bulk_head"
echo "|---|---|---|---|---|---|---|---|---|---|$bulk_rule"
declare -A times_of cpus_of seed_of bulk_of
for enc in $encryptions; do
    # Transmission reads its encryption setting at start: one daemon per setting.
    if [ -n "$tr_rpc" ]; then
        transmission-remote "$tr_rpc" --exit >/dev/null 2>&1 || true
        sleep 1
        tr_rpc=""
    fi
    ref=""
    for _ in $(seq "$runs"); do
        for pair in $only; do
            s=${pair%%:*}; l=${pair##*:}
            leech "$s" "$l"
            [ -n "$LEECH_S" ] || { echo "no time measured for $s -> $l" >&2; exit 1; }
            times_of[$pair]+="$LEECH_S "
            [ -n "$LEECH_CPU" ] && cpus_of[$pair]+="$LEECH_CPU "
            [ -n "$SEED_CPU" ] && seed_of[$pair]+="$SEED_CPU "
            [ -n "$BULK_MBIT" ] && bulk_of[$pair]+="$BULK_MBIT "
        done
    done
    for pair in $only; do
        s=${pair%%:*}; l=${pair##*:}
        read -r -a times <<<"${times_of[$pair]}"
        read -r -a cpus <<<"${cpus_of[$pair]:-}"
        read -r -a seeds <<<"${seed_of[$pair]:-}"
        bulk_runs=${bulk_of[$pair]:-}
        times_of[$pair]=""; cpus_of[$pair]=""; seed_of[$pair]=""; bulk_of[$pair]=""
        med=$(printf '%s\n' "${times[@]}" | median)
        # Two decimals across a link, where rates are a few MB/s.
        mbs=$(awk -v b="$bytes" -v t="$med" -v f="${link:+%.2f}" 'BEGIN {printf (f == "" ? "%.0f" : f), b/t/1e6}')
        [ -z "$ref" ] && [ "$pair" = lt:lt ] && ref=$mbs
        ratio="n/a"
        [ -n "$ref" ] && ratio=$(awk -v a="$mbs" -v r="$ref" 'BEGIN {printf "%.2fx", a/r}')
        cpu="n/a"
        per_cpu="n/a"
        if [ "${#cpus[@]}" -gt 0 ]; then
            cpu=$(printf '%s\n' "${cpus[@]}" | median)
            per_cpu=$(awk -v b="$bytes" -v c="$cpu" 'BEGIN {printf "%.0f", b/c/1e6}')
        fi
        seed_cpu="n/a"
        [ "${#seeds[@]}" -gt 0 ] && seed_cpu=$(printf '%s\n' "${seeds[@]}" | median)
        bulk_cell=""
        [ -z "$bulk" ] || bulk_cell=" ${bulk_runs% } |"
        printf '| %s | %s -> %s | %s | %.2f | %s | %s | %s | %s | %s | %s |%s\n' "$enc" "$(name "$s")" "$(name "$l")" "${times[*]}" "$med" "$mbs" "$ratio" "$cpu" "$per_cpu" "${seeds[*]:-n/a}" "$seed_cpu" "$bulk_cell"
    done
done
if [ -n "$link" ]; then
    kill -TERM "$link_pid" 2>/dev/null || true
    wait "$link_pid" 2>/dev/null || true
    echo "link counters: $(grep -E '^(a->b|b->a):' "$work/link.err" | paste -sd';')"
fi
echo "load average at the end: $(cat /proc/loadavg)"
