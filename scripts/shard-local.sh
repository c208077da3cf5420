#!/usr/bin/env bash
# A local rehearsal of deploy/kubernetes's Indexed Jobs: runs a load tool in N shards on this
# machine, each process started as the Job starts its pod I (JOB_COMPLETION_INDEX=I in the
# environment and `$(JOB_COMPLETION_INDEX)` in the arguments replaced by I, as the kubelet
# does), with the same shard suffix the Jobs' container arguments end with:
#
#   --shard $(JOB_COMPLETION_INDEX)/N --output REPORTS/TOOL-shard-$(JOB_COMPLETION_INDEX).json
#
# then waits for them and merges their reports with `report merge` into REPORTS/TOOL.json
# (and prints the whole run's table).
#
# Usage: scripts/shard-local.sh N TOOL [ARGS...]
#   TOOL and ARGS as in the Job's container arguments before the shard suffix, e.g.
#   scripts/shard-local.sh 4 tracker-load udp://127.0.0.1:6969 --duration 10 --rate 4000
#   scripts/shard-local.sh 2 swarm-load run --target 127.0.0.1:6881 --torrent t.torrent \
#       --mode download --peers 8 --source-ips 127.0.0.2-127.0.0.9
# Environment: RINGTORRENT, the binary (default: ringtorrent on PATH); REPORTS, the folder
# for the shards' reports and logs and the merged report (default: ./shard-reports).
set -euo pipefail

if (($# < 2)) || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
n=$1
shift
tool=$1
case "$tool" in
swarm-load | tracker-load) ;;
*)
    echo "shard-local.sh: TOOL is swarm-load or tracker-load, not \`$tool\`" >&2
    exit 2
    ;;
esac
bin=${RINGTORRENT:-ringtorrent}
reports=${REPORTS:-shard-reports}
mkdir -p "$reports"

# The shards this script started, ended by PID if it is interrupted or one fails.
pids=()
stop_shards() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap 'stop_shards; exit 130' INT TERM

for ((i = 0; i < n; i++)); do
    args=()
    for a in "$@" --shard "\$(JOB_COMPLETION_INDEX)/$n" \
        --output "$reports/$tool-shard-\$(JOB_COMPLETION_INDEX).json"; do
        args+=("${a//\$(JOB_COMPLETION_INDEX)/$i}")
    done
    rm -f "$reports/$tool-shard-$i.json"
    JOB_COMPLETION_INDEX=$i "$bin" "${args[@]}" >"$reports/$tool-shard-$i.log" 2>&1 &
    pids+=("$!")
done

failed=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "shard $i/$n failed: $reports/$tool-shard-$i.log" >&2
        tail -n 20 "$reports/$tool-shard-$i.log" >&2 || true
        failed=1
    fi
done
if ((failed)); then
    stop_shards
    exit 1
fi

shards=()
for ((i = 0; i < n; i++)); do
    shards+=("$reports/$tool-shard-$i.json")
done
"$bin" report merge "${shards[@]}" --output "$reports/$tool.json"
echo "merged report: $reports/$tool.json" >&2
