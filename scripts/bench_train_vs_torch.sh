#!/usr/bin/env bash
# Seed model training step (batch 64): cnn against PyTorch eager, in the same command, several
# rounds (these shared 2-core machines are noisy). PyTorch's script times plain SGD (lr 0.01), so
# cnn is timed with --optimizer sgd too, and with Adam for reference. Prints each round and the
# median of the per-round ratios.
#   scripts/bench_train_vs_torch.sh [ROUNDS]     (default 3; needs ../shared/bench/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release --bin cnnc -q
cnnc=./target/release/cnnc
torch=../shared/bench/run.sh
out=$(mktemp)
ips() { sed -n 's/.*"images_per_s":\([0-9.]*\).*/\1/p'; }
for r in $(seq "$rounds"); do
  for t in 2 1; do
    pt=$("$torch" torch --threads "$t" 2>/dev/null | awk '/train-step/ {print $9}')
    sgd=$("$cnnc" bench examples/models/seed.yaml --train --optimizer sgd --threads "$t" --json | ips)
    adam=$("$cnnc" bench examples/models/seed.yaml --train --optimizer adam --threads "$t" --json | ips)
    echo "$r $t $pt $sgd $adam" | tee -a "$out" | awk '{printf "round %d, %d thread(s): PyTorch (SGD) %.0f img/s, cnn SGD %.0f img/s (%.2fx), cnn Adam %.0f img/s\n", $1, $2, $3, $4, $4/$3, $5}'
  done
done
for t in 2 1; do
  awk -v t="$t" '$2 == t {print $4/$3}' "$out" | sort -g | awk -v t="$t" '{a[NR]=$1} END {printf "median over rounds, %d thread(s): cnn training step %.2fx PyTorch (both SGD)\n", t, a[int((NR+1)/2)]}'
done
rm -f "$out"
