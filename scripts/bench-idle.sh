#!/usr/bin/env bash
# Memory and CPU of idle connections: a ringtorrent seeder on one core takes N peer
# connections that complete the handshake and then sit idle; reports resident memory per
# connection (RSS growth / N) and the seeder's CPU use while they idle, for each backend.
# Usage: scripts/bench-idle.sh [N=10000] [IDLE_S=10]
# RT=path measures another ringtorrent binary (an older build, for a before/after pair)
# instead of this tree's release build.
# Loopback only; every process it starts is ended by PID.
set -euo pipefail
# Measure only the transfers set up here: no public DHT routers, no announces on the LAN.
export RINGTORRENT_DHT_BOOTSTRAP= RINGTORRENT_LSD=off
cd "$(dirname "$0")/.."
n=${1:-10000}
idle=${2:-10}
ulimit -n $((n + 4096))
if [ -z "${RT:-}" ]; then
    cargo build --release --quiet
fi
rt=${RT:-$PWD/target/release/ringtorrent}
work=$(mktemp -d /dev/shm/rt-bench-idle.XXXXXX)
seed_pid=""
cleanup() { [ -n "$seed_pid" ] && kill "$seed_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
head -c $((16 << 20)) /dev/urandom > "$work/payload.bin"
"$rt" create "$work/payload.bin" -l 256K -d -o "$work/p.torrent" >/dev/null

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "| backend | connections | RSS before (MiB) | RSS with peers (MiB) | bytes per connection | idle CPU % of one core |"
echo "|---|---|---|---|---|---|"
for io in uring epoll; do
    "$rt" seed "$work/p.torrent" "$work" --port 0 --bind 127.0.0.1 --max-peers $((n + 100)) \
        --max-peers-per-ip $((n + 100)) \
        --io "$io" --threads 1 --duration 600 > "$work/seed.out" 2>/dev/null &
    seed_pid=$!
    for _ in $(seq 200); do grep -q '127.0.0.1:' "$work/seed.out" && break; sleep 0.05; done
    addr=$(grep -o '127.0.0.1:[0-9]*' "$work/seed.out")
    sleep 1
    before=$(rss_kib "$seed_pid")
    # The peers: handshake (Fast + extension bits), read the seeder's greeting, then idle.
    python3 - "$addr" "$n" "$idle" "$seed_pid" "$work/p.torrent" <<'PY' > "$work/idle.out"
import hashlib, os, selectors, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, idle, pid = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
data = open(sys.argv[5], "rb").read()
start = data.index(b"4:info") + 6
info_hash = hashlib.sha1(data[start:-1]).digest()
reserved = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])
sel = selectors.DefaultSelector()
socks = []
for i in range(n):
    s = socket.socket()
    s.connect((host, int(port)))
    s.sendall(b"\x13BitTorrent protocol" + reserved + info_hash + b"-PY0001-" + i.to_bytes(12, "big"))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    socks.append(s)
got = {}
deadline = time.time() + 60
while len(got) < n and time.time() < deadline:
    for key, _ in sel.select(timeout=1):
        try:
            chunk = key.fileobj.recv(65536)
        except BlockingIOError:
            continue
        got[key.fileobj] = got.get(key.fileobj, 0) + len(chunk)
answered = sum(1 for v in got.values() if v >= 68)
def ticks():
    return sum(int(x) for x in open(f"/proc/{pid}/stat").read().split()[13:15])
t0 = ticks()
time.sleep(idle)
t1 = ticks()
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")][0].split()[1]
hz = os.sysconf("SC_CLK_TCK")
print(answered, rss, (t1 - t0) / hz / idle * 100)
for s in socks:
    s.close()
PY
    read -r answered after cpu < "$work/idle.out"
    kill "$seed_pid"; wait "$seed_pid" 2>/dev/null || true; seed_pid=""
    awk -v io="$io" -v n="$answered" -v b="$before" -v a="$after" -v c="$cpu" 'BEGIN {
        printf "| %s | %d | %.1f | %.1f | %.0f | %.2f |\n", io, n, b/1024, a/1024, (a-b)*1024/n, c }'
done
