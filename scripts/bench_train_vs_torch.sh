#!/usr/bin/env bash
# Seed model training step (batch 64): cnn against PyTorch eager (channels_last), in the same
# command, several rounds (these shared 2-core machines are noisy). Measured per ISA class --
# avx512 (only if the CPU has avx512f) and avx2 -- and per thread count (2, then 1). cnn is forced
# with `cnnc bench --train --isa <class>`; PyTorch is forced to AVX2 on the avx2 class
# (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2) and left at its own best ISA on the avx512
# class. PyTorch's script times plain SGD (lr 0.01), so cnn is timed with --optimizer sgd for the
# comparison (target >= 1.0x PyTorch), and with Adam against its own SGD step (target: Adam within
# 5% of SGD, i.e. Adam/SGD >= 0.95). Prints each round and, per class and thread count, the
# median of the per-round ratios. If PyTorch's run fails it prints n/a.
#   scripts/bench_train_vs_torch.sh [ROUNDS]     (default 3; needs ../shared/bench/run.sh)
# Environment: CNN_BENCH_SECONDS  seconds cnnc times each step (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${CNN_BENCH_SECONDS:-3}
cargo build --release --bin cnnc -q
cnnc=./target/release/cnnc
model=examples/models/seed.yaml
torch=../shared/bench/run.sh
classes=avx2
if grep -q avx512f /proc/cpuinfo; then classes="avx512 avx2"; fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Output of the PyTorch run, or nothing if it fails (reported as n/a).
peer() { "$torch" torch --threads "$1" 2>/dev/null || true; }
# img/s of the train-step line (the field just before "img/s"); "n/a" if there is none.
train_ips() {
  awk '!done && / train-step / { for (i = 2; i <= NF; i++) if ($i == "img/s") { v = $(i - 1); done = 1; break } }
       END { print (v == "" ? "n/a" : v) }'
}
step() {
  "$cnnc" bench "$model" --train --optimizer "$3" --threads "$1" --isa "$2" --seconds "$secs" --json |
    sed -n 's/.*"images_per_s":\([0-9.eE+-]*\).*/\1/p'
}
for r in $(seq "$rounds"); do
  for t in 2 1; do
    for c in $classes; do
      if [ "$c" = avx2 ]; then
        pt=$(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 peer "$t" | train_ips)
      else
        pt=$(peer "$t" | train_ips)
      fi
      sgd=$(step "$t" "$c" sgd)
      adam=$(step "$t" "$c" adam)
      echo "$r $c $t $pt $sgd $adam" | awk '
        { rs = ($4 != "n/a" && $4 > 0) ? sprintf("%.3f", $5 / $4) : "n/a"
          print $1, $2, $3, rs, sprintf("%.3f", $6 / $5), $4, $5, $6 }' >> "$out"
      tail -1 "$out" | awk '
        function f(x) { return x == "n/a" ? x : sprintf("%.0f", x) }
        function x(v) { return v == "n/a" ? v : sprintf("%.2fx", v) }
        { pn = ($2 == "avx2") ? "PyTorch (SGD, forced AVX2)" : "PyTorch (SGD)"
          printf "round %d, %s, %d thread(s): %s %s img/s, cnn SGD %s img/s (%s PyTorch), cnn Adam %s img/s (Adam/SGD %s)\n",
            $1, $2, $3, pn, f($6), f($7), x($4), f($8), x($5) }'
    done
  done
done

# Median of the numbers on stdin (n/a skipped), formatted as 0.00x, or n/a if none.
median() { { grep -v '^n/a$' || true; } | sort -g | awk '{a[NR] = $1} END {if (NR) printf "%.2fx", (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2); else printf "n/a"}'; }
verdict() { awk -v m="$1" -v tg="$2" 'BEGIN { if (m == "n/a") print "n/a"; else print ((substr(m, 1, length(m) - 1) + 0 >= tg) ? "met" : "MISSED") }'; }
for c in $classes; do
  for t in 2 1; do
    ms=$(awk -v c="$c" -v t="$t" '$2 == c && $3 == t {print $4}' "$out" | median)
    ma=$(awk -v c="$c" -v t="$t" '$2 == c && $3 == t {print $5}' "$out" | median)
    note=""; [ "$c" = avx2 ] && note=" (PyTorch forced to AVX2)"
    echo "median over $rounds round(s), $c, $t thread(s): cnn training step (SGD) $ms PyTorch SGD (target >= 1.0x: $(verdict "$ms" 1.0)), cnn Adam/SGD $ma (target >= 0.95x: $(verdict "$ma" 0.95))$note"
  done
done
