#!/usr/bin/env bash
# Cold-page storage benchmark (benches/storage_cold.rs): how 16 KiB blocks get into and out of
# mapped files without the event loop taking page faults, with the page cache dropped before
# every cold run. Needs root (it writes /proc/sys/vm/drop_caches) and a folder on a real disk,
# not tmpfs. Results: perf/2026-11-24-storage-cold-pages.md.
#
#   scripts/bench-storage.sh                     # 2 GiB file in /tmp/ringtorrent-cold, 3 rounds
#   scripts/bench-storage.sh --dir /work/cold --rounds 5 --pieces 1024 --only 'read pool'
#
# Options are passed through: --dir, --file-mib, --piece-kib, --pieces, --threads, --depth,
# --rounds, --only SUBSTRING.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "bench-storage.sh: needs root to drop the page cache" >&2; exit 1; }
args=("$@")
[[ " ${args[*]} " == *" --dir "* ]] || args=(--dir /tmp/ringtorrent-cold "${args[@]}")
dir=$(printf '%s\n' "${args[@]}" | awk 'p{print;exit} /^--dir$/{p=1}')
mkdir -p "$dir"
fstype=$(stat -f -c %T "$dir")
if [ "$fstype" = tmpfs ]; then
    echo "bench-storage.sh: $dir is on tmpfs; cold pages need a real disk" >&2
    exit 1
fi
dev=$(basename "$(df --output=source "$dir" | tail -1)")
ra=$(cat "/sys/class/block/$dev/queue/read_ahead_kb" 2>/dev/null ||
    cat "/sys/class/block/$dev/../queue/read_ahead_kb" 2>/dev/null || echo "?")
echo "kernel $(uname -r); $dir on $fstype (/dev/$dev, readahead $ra KiB); $(nproc) cores"
cargo bench --bench storage_cold -- "${args[@]}"
