#!/usr/bin/env bash
# Piece verification throughput of the disk pool against `openssl speed sha1`, side by side.
# Results: perf/2026-11-24-hashing.md.
#
# Each round runs `openssl speed -bytes 262144 sha1` on one core and with -multi on every
# core, then benches/hashing.rs, then openssl again; the table takes medians over rounds and
# gives every figure as a ratio to openssl measured around it. Target: the pool at >= 90% of
# openssl-per-core x cores.
#
# `openssl speed` divides by CPU time, not wall time (unless -elapsed), so on a shared
# machine its figure is per-core capacity; the `cpu_*` benchmarks are timed the same way and
# give the pool's per-core efficiency. The wall-clock pool figures show the scaling, and are
# compared with `openssl speed -elapsed -multi N` from the same round.
#
#   scripts/bench-hashing.sh                   # 3 rounds
#   ROUNDS=5 scripts/bench-hashing.sh
#   scripts/bench-hashing.sh --compare-crates  # also: sha1 0.11 against other SHA1 crates
#
# --compare-crates builds a scratch crate outside the repository (in $TMPDIR) that depends on
# the candidates; none of them becomes a dependency of ringtorrent.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-3}
cores=$(nproc)
target=${CARGO_TARGET_DIR:-target}
secs=3

openssl_kbs() { # extra openssl flags; prints kB/s (openssl's 1000-byte units)
    openssl speed "$@" -bytes 262144 -seconds "$secs" sha1 2>/dev/null |
        awk '/^sha1 /{sub(/k$/,"",$2); print $2}'
}

echo "building benches/hashing.rs"
cargo bench --bench hashing --no-run >/dev/null 2>&1

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds" >&2
    echo "openssl1 $(openssl_kbs)" >>"$results"
    echo "opensslN $(openssl_kbs -elapsed -multi "$cores")" >>"$results"
    cargo bench --bench hashing -- --warm-up-time 1 --measurement-time 4 >/dev/null 2>&1
    for est in "$target"/criterion/*/*/new/estimates.json; do
        group=$(basename "$(dirname "$(dirname "$(dirname "$est")")")")
        id=$(basename "$(dirname "$(dirname "$est")")")
        [[ $group == sha1_* || $group == pool_verify* || $group == cpu_pool_verify* ]] || continue
        ns=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$est")
        echo "$group/$id $ns" >>"$results"
    done
    echo "openssl1 $(openssl_kbs)" >>"$results"
    echo "opensslN $(openssl_kbs -elapsed -multi "$cores")" >>"$results"
done

/usr/bin/python3 - "$results" "$cores" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    rows.setdefault(k, []).append(float(v))
cores = int(sys.argv[2])
total = 64 << 20
one = statistics.median(rows["openssl1"]) * 1000 / 1e6   # MB per CPU second
multi = statistics.median(rows["opensslN"]) * 1000 / 1e6  # MB per wall second, all cores
print(f"\n{cores} cores. openssl speed sha1, 256 KiB (CPU time): {one:.0f} MB/s per core; "
      f"openssl speed -elapsed -multi {cores} (wall): {multi:.0f} MB/s. "
      f"Medians of {len(rows['openssl1'])} runs each.\n")
print(f"| benchmark | timed by | MB/s | vs openssl 1 core | vs openssl x {cores} | vs openssl -multi {cores} |")
print("|---|---|---:|---:|---:|---:|")
order = ["sha1_one_core", "sha1_64mib_one_core", "pool_verify", "cpu_pool_verify",
         "pool_verify_fresh_map", "cpu_pool_verify_fresh_map"]
def key(k):
    g, i = k.rsplit("/", 1)
    return (order.index(g), int(i) if i.isdigit() else 0, i)
for k in sorted((k for k in rows if "/" in k), key=key):
    g, i = k.rsplit("/", 1)
    nbytes = int(i) if g == "sha1_one_core" else total
    mbs = nbytes / statistics.median(rows[k]) * 1e3
    label = f"{g} {int(i) >> 10} KiB" if i.isdigit() else f"{g} {i}"
    if g.startswith("cpu_"):
        # Per CPU second: the pool's per-core efficiency; x cores is what all cores give.
        print(f"| {label} | CPU time | {mbs:.0f} per core | {mbs / one:.2f} | {mbs / one:.2f} | - |")
    elif g.startswith("pool"):
        print(f"| {label} | wall | {mbs:.0f} | {mbs / one:.2f} | {mbs / (one * cores):.2f} | {mbs / multi:.2f} |")
    else:
        print(f"| {label} | wall | {mbs:.0f} | {mbs / one:.2f} | - | - |")
PY

if [[ ${1:-} == --compare-crates ]]; then
    scratch=${TMPDIR:-/tmp}/ringtorrent-sha1-compare
    mkdir -p "$scratch/src"
    cat >"$scratch/Cargo.toml" <<'TOML'
[package]
name = "sha1-compare"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
sha1_011 = { package = "sha1", version = "0.11" }
sha1_010 = { package = "sha1", version = "0.10", features = ["asm"] }
sha1_smol = "1"
ring = "0.17"
aws-lc-rs = "1"
openssl = "0.10"

[profile.release]
codegen-units = 1
TOML
    cat >"$scratch/src/main.rs" <<'RS'
use std::time::Instant;
type F = fn(&[u8]) -> [u8; 20];
fn main() {
    let buf: Vec<u8> = (0..262_144usize).map(|i| (i * 31 % 251) as u8).collect();
    // 256 MiB hashed in 1 MiB pieces: more than the caches hold, as pieces are in practice.
    let big: Vec<u8> = (0..256usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    let cands: Vec<(&str, F)> = vec![
        ("sha1 0.11 (ringtorrent's)", |b| { use sha1_011::Digest; sha1_011::Sha1::digest(b).into() }),
        ("sha1 0.10 + asm", |b| { use sha1_010::Digest; sha1_010::Sha1::digest(b).into() }),
        ("sha1_smol 1", |b| sha1_smol::Sha1::from(b).digest().bytes()),
        ("ring 0.17", |b| ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b).as_ref().try_into().unwrap()),
        ("aws-lc-rs 1", |b| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b).as_ref().try_into().unwrap()),
        ("openssl 0.10 (libcrypto)", |b| openssl::sha::sha1(b)),
    ];
    let mut hot = vec![Vec::new(); cands.len()];
    let mut cold = vec![Vec::new(); cands.len()];
    for _ in 0..5 {
        for (i, (_, f)) in cands.iter().enumerate() {
            let want = f(&buf);
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed().as_secs_f64() < 1.0 {
                assert_eq!(f(std::hint::black_box(&buf)), want);
                n += 1;
            }
            hot[i].push(n as f64 * buf.len() as f64 / start.elapsed().as_secs_f64() / 1e6);
            let start = Instant::now();
            for piece in big.chunks(1 << 20) {
                std::hint::black_box(f(piece));
            }
            cold[i].push(big.len() as f64 / start.elapsed().as_secs_f64() / 1e6);
        }
    }
    let med = |v: &[f64]| { let mut v = v.to_vec(); v.sort_by(|a, b| a.partial_cmp(b).unwrap()); v[v.len() / 2] };
    let (hot0, cold0) = (med(&hot[0]), med(&cold[0]));
    println!("| crate (one core, interleaved, median of 5) | 256 KiB in cache, MB/s | vs sha1 0.11 | 256 MiB in 1 MiB pieces, MB/s | vs sha1 0.11 |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in cands.iter().enumerate() {
        let (h, c) = (med(&hot[i]), med(&cold[i]));
        println!("| {name} | {h:.0} | {:.2} | {c:.0} | {:.2} |", h / hot0, c / cold0);
    }
}
RS
    echo "building the comparison crate in $scratch"
    (cd "$scratch" && CARGO_TARGET_DIR="$scratch/target" cargo build --release -q)
    echo "openssl speed sha1, one core: $(openssl_kbs) kB/s"
    "$scratch/target/release/sha1-compare"
    echo "openssl speed sha1, one core: $(openssl_kbs) kB/s"
fi
