#!/usr/bin/env bash
# Seed model: cnn (plan and specialised) against ONNX Runtime, in the same command, several
# rounds, because these shared 2-core machines are noisy. Prints each round's figures and the
# median of the per-round ratios.
#   scripts/bench_vs_ort.sh [ROUNDS]        (default 3; needs ../shared/bench/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release --bin cnnc -q
cnnc=./target/release/cnnc
ort=../shared/bench/run.sh
out=$(mktemp)
for r in $(seq "$rounds"); do
  for t in 2 1; do
    o=$("$ort" ort --threads "$t" 2>/dev/null)
    ort_b1=$(echo "$o" | awk '/batch=1 /{print $7 * 1e6}')
    ort_b64=$(echo "$o" | awk '/batch=64 /{print $9}')
    c64=$("$cnnc" bench examples/models/seed.yaml --batch 64 --threads "$t" --json)
    c1=$("$cnnc" bench examples/models/seed.yaml --batch 1 --threads "$t" --json)
    # best of plan/specialised: highest images/s at batch 64, lowest p50 latency at batch 1
    b64=$(echo "$c64" | sed -n 's/.*"images_per_s":\([0-9.]*\).*/\1/p' | sort -g | tail -1)
    b1=$(echo "$c1" | sed -n 's/.*"latency_us_p50":\([0-9.]*\).*/\1/p' | sort -g | head -1)
    echo "$r $t $ort_b64 $b64 $ort_b1 $b1" | tee -a "$out" | awk '{printf "round %d, %d thread(s): batch 64 ORT %.0f img/s, cnn %.0f img/s (%.2fx); batch 1 ORT %.0f us, cnn %.0f us (%.2fx latency)\n", $1, $2, $3, $4, $4/$3, $5, $6, $6/$5}'
  done
done
for t in 2 1; do
  awk -v t="$t" '$2 == t {print $4/$3, $6/$5}' "$out" | sort -g -k1,1 | awk -v t="$t" '{a[NR]=$1} END {printf "median over rounds, %d thread(s): batch-64 throughput %.2fx ORT", t, a[int((NR+1)/2)]}'
  awk -v t="$t" '$2 == t {print $6/$5}' "$out" | sort -g | awk '{a[NR]=$1} END {printf ", batch-1 latency %.2fx ORT\n", a[int((NR+1)/2)]}'
done
rm -f "$out"
