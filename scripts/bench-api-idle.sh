#!/usr/bin/env bash
# Threads, resident memory and descriptors of `serve` holding N idle control-API
# connections, for two binaries side by side in one run (e.g. one built before the API moved
# to hyper, and this tree's): both serve at once, the connections are opened to both, then
# each is measured.
# Usage: scripts/bench-api-idle.sh OLD_BINARY [NEW_BINARY=target/release/ringtorrent] [N=1000]
# Loopback only; every process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
old=$1
new=${2:-$PWD/target/release/ringtorrent}
n=${3:-1000}
ulimit -n $((2 * n + 1024))
work=$(mktemp -d /dev/shm/rt-bench-api.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start() { # name binary
    mkdir -p "$work/$1"
    : > "$work/$1/serve.toml"
    "$2" serve --config "$work/$1/serve.toml" --listen 127.0.0.1:0 --api 127.0.0.1:0 \
        --threads 2 --data-dir "$work/$1/data" --state-dir "$work/$1/state" \
        > "$work/$1/out" 2> "$work/$1/log" &
    pids+=($!)
    echo $! > "$work/$1/pid"
    for _ in $(seq 200); do grep -q '^api: ' "$work/$1/out" && break; sleep 0.05; done
}
start old "$old"
start new "$new"
python3 - "$work" "$n" <<'PY'
import os, socket, sys, time
work, n = sys.argv[1], int(sys.argv[2])
procs = {}
for name in ("old", "new"):
    pid = int(open(f"{work}/{name}/pid").read())
    api = [l for l in open(f"{work}/{name}/out") if l.startswith("api: ")][0].split("//")[1].strip()
    host, port = api.rsplit(":", 1)
    procs[name] = (pid, (host, int(port)))

def measure(pid):
    status = open(f"/proc/{pid}/status").read()
    rss = int([l for l in status.splitlines() if l.startswith("VmRSS:")][0].split()[1])
    return len(os.listdir(f"/proc/{pid}/task")), rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))

def get(addr):
    t = time.monotonic()
    s = socket.create_connection(addr, timeout=10)
    s.sendall(b"GET /torrents HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except OSError:
        pass
    s.close()
    return reply[:12].decode(errors="replace"), (time.monotonic() - t) * 1000

before = {k: measure(p) for k, (p, _) in procs.items()}
held = {k: [] for k in procs}
for k, (_, addr) in procs.items():
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        held[k].append(s)
# Measured once both have settled: thread and descriptor counts unchanged for 2 s (at most 60 s).
during, settled, deadline = None, 0, time.monotonic() + 60
while settled < 4 and time.monotonic() < deadline:
    time.sleep(0.5)
    now = {k: measure(p) for k, (p, _) in procs.items()}
    same = during is not None and all(now[k][0] == during[k][0] and now[k][2] == during[k][2] for k in procs)
    settled = settled + 1 if same else 0
    during = now
answer = {k: get(addr) for k, (_, addr) in procs.items()}
print(f"| binary | threads idle | threads with {n} connections | RSS idle (MiB) | RSS with {n} (MiB) | descriptors with {n} | GET /torrents meanwhile |")
print("|---|---|---|---|---|---|---|")
for k in procs:
    (t0, r0, _), (t1, r1, f1) = before[k], during[k]
    status, ms = answer[k]
    print(f"| {k} | {t0} | {t1} | {r0:.1f} | {r1:.1f} | {f1} | {status.strip()} in {ms:.0f} ms |")
PY
