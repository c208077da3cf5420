#!/usr/bin/env bash
# Zero-copy sends through io_uring against today's SENDMSG, on loopback TCP
# (benches/send_zc.rs): 16 KiB blocks, 64-block batches and 1 MiB buffers, each as SENDMSG,
# SEND, SENDMSG_ZC, SEND_ZC and SEND_ZC from a registered buffer, alternating in every round.
# Prints one line per run and a markdown table of medians with same-round ratios against
# SENDMSG of the same shape. Results: perf/2026-11-24-send-zc.md.
#
#   scripts/bench-send-zc.sh                         # 1 GiB per variant, 5 rounds
#   scripts/bench-send-zc.sh --mib 512 --rounds 7 --only block
#
# Options are passed through: --mib N (per variant per round), --rounds R, --pool-mib P
# (payload memory cycled through; default 64), --only SUBSTRING (of a variant's name).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "kernel $(uname -r); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench send_zc -- "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
