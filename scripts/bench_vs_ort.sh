#!/usr/bin/env bash
# Seed model inference: cnn (best of plan and specialised) against ONNX Runtime, OpenVINO and
# PyTorch TorchScript-frozen (channels_last), in the same command, several rounds, because these
# shared 2-core machines are noisy. Measured per ISA class -- avx512 (only if the CPU has
# avx512f) and avx2 -- and per thread count (2, then 1):
#   - batch 64: throughput ratio cnn / best of (ORT, OpenVINO, TorchScript), naming the best peer
#     (target >= 1.0x);
#   - batch 1:  latency ratio cnn p50 / ORT's s/batch (target <= 0.8x).
# On an AVX-512 machine the avx2 class is forced, and only forced peers count: ORT and OpenVINO
# are printed but left out of its ratios, and its batch-1 reference is forced-AVX2 TorchScript.
# cnn is forced with `cnnc bench --isa <class>`. PyTorch is forced to AVX2 on the avx2 class
# (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2). ONNX Runtime and OpenVINO cannot be forced:
# they pick their kernels from the CPU, so on an AVX-512 machine their figures in the avx2 class
# are their AVX-512 figures (the script says so next to them). They run once per round and thread
# count and are reused for both classes; PyTorch runs once per class.
# Prints each round's figures, then per class and thread count the median of the per-round ratios.
# A peer whose run fails prints n/a and is left out of the best-of.
#   scripts/bench_vs_ort.sh [ROUNDS]        (default 3; needs ../shared/bench/run.sh)
# Environment: CNN_BENCH_SECONDS  seconds cnnc times each path (default 3)
#              PORTABLE=1         also time cnn --isa portable at batch 64 against --isa avx2
#                                 (the avx2 figure of the same round; target >= 0.5x)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${CNN_BENCH_SECONDS:-3}
portable=${PORTABLE:-0}
cargo build --release --bin cnnc -q
cnnc=./target/release/cnnc
model=examples/models/seed.yaml
peers=../shared/bench/run.sh
classes=avx2
if grep -q avx512f /proc/cpuinfo; then classes="avx512 avx2"; fi
out=$(mktemp)
pout=$(mktemp)
trap 'rm -f "$out" "$pout"' EXIT

# Output of one peer run, or nothing if it fails (the peer is then reported as n/a).
peer() { "$peers" "$@" 2>/dev/null || true; }
# The field just before token $2 on the first line matching regex $1; "n/a" if there is none.
field() {
  awk -v pat="$1" -v tok="$2" '
    !done && $0 ~ pat { for (i = 2; i <= NF; i++) if ($i == tok) { v = $(i - 1); done = 1; break } }
    END { print (v == "" ? "n/a" : v) }'
}
# s/batch in seconds -> microseconds, keeping n/a.
us() { awk -v s="$1" 'BEGIN { if (s == "n/a") print "n/a"; else printf "%.1f\n", s * 1e6 }'; }
# A JSON number field from cnnc bench --json lines.
json() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p"; }
cnn() { "$cnnc" bench "$model" --threads "$1" --isa "$2" --batch "$3" --seconds "$secs" --json; }

for r in $(seq "$rounds"); do
  for t in 2 1; do
    o=$(peer ort --threads "$t")
    ort64=$(echo "$o" | field 'batch=64 ' img/s)
    ort1=$(us "$(echo "$o" | field 'batch=1 ' s/batch)")
    o=$(peer openvino --threads "$t")
    ov64=$(echo "$o" | field 'batch=64 ' img/s)
    for c in $classes; do
      if [ "$c" = avx2 ]; then
        o=$(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 peer torch --threads "$t")
      else
        o=$(peer torch --threads "$t")
      fi
      ts64=$(echo "$o" | field 'torchscript-frozen .*batch=64 ' img/s)
      ts1=$(us "$(echo "$o" | field 'torchscript-frozen .*batch=1 ' s/batch)")
      # On an AVX-512 machine the avx2 class is forced: ORT and OpenVINO (which cannot be
      # forced) are printed but left out of the ratios, and batch 1 is compared with the forced
      # PyTorch instead of ORT. On an AVX2-only machine every peer runs AVX2 and counts.
      if [ "$c" = avx2 ] && [ "$classes" != avx2 ]; then
        b_ort=n/a; b_ov=n/a; ref1=$ts1; refname="TorchScript-AVX2"
      else
        b_ort=$ort64; b_ov=$ov64; ref1=$ort1; refname=ORT
      fi
      # best of plan/specialised: highest images/s at batch 64, lowest p50 latency at batch 1
      c64=$(cnn "$t" "$c" 64 | json images_per_s | sort -g | tail -1)
      c1=$(cnn "$t" "$c" 1 | json latency_us_p50 | sort -g | head -1)
      echo "$r $c $t $b_ort $b_ov $ts64 $c64 $ref1 $c1 $ort64 $ov64 $refname" | awk '
        { r = $1; c = $2; t = $3; n = split("ORT OpenVINO TorchScript", name, " ")
          best = 0; bn = "none"
          for (i = 1; i <= n; i++) { v[i] = $(3 + i); if (v[i] != "n/a" && v[i] + 0 > best) { best = v[i] + 0; bn = name[i] } }
          r64 = (best > 0) ? sprintf("%.3f", $7 / best) : "n/a"
          r1 = ($8 != "n/a" && $8 > 0) ? sprintf("%.3f", $9 / $8) : "n/a"
          print r, c, t, r64, bn, r1, $10, $11, $6, $7, $8, $9, $12 }' >> "$out"
      tail -1 "$out" | awk -v forced="$([ "$c" = avx2 ] && [ "$classes" != avx2 ] && echo 1 || echo 0)" '
        function f(x) { return x == "n/a" ? x : sprintf("%.0f", x) }
        function x(v) { return v == "n/a" ? v : sprintf("%.2fx", v) }
        { note = forced ? " (not forced: their AVX-512 figures, left out of the ratio)" : ""
          tsn = ($2 == "avx2") ? "TorchScript (forced AVX2)" : "TorchScript"
          printf "round %d, %s, %d thread(s): batch 64 img/s ORT %s, OpenVINO %s%s, %s %s; cnn %s (%s best counted peer, which was %s); batch 1 %s %s us, cnn %s us (%s latency)\n",
            $1, $2, $3, f($7), f($8), note, tsn, f($9), f($10), x($4), $5, $13, f($11), f($12), x($6) }'
      if [ "$portable" = 1 ] && [ "$c" = avx2 ]; then
        p64=$(cnn "$t" portable 64 | json images_per_s | sort -g | tail -1)
        echo "$r $t $p64 $c64" | tee -a "$pout" | awk '{printf "round %d, portable, %d thread(s): batch 64 cnn --isa portable %.0f img/s, --isa avx2 %.0f img/s (%.2fx)\n", $1, $2, $3, $4, $3/$4}'
      fi
    done
  done
done

# Median of the numbers on stdin (n/a skipped), formatted as 0.00x, or n/a if none.
median() { { grep -v '^n/a$' || true; } | sort -g | awk '{a[NR] = $1} END {if (NR) printf "%.2fx", (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2); else printf "n/a"}'; }
verdict() { awk -v m="$1" -v op="$2" -v tg="$3" 'BEGIN { if (m == "n/a") print "n/a"; else { v = substr(m, 1, length(m) - 1) + 0; print ((op == ">=" ? v >= tg : v <= tg) ? "met" : "MISSED") } }'; }
for c in $classes; do
  for t in 2 1; do
    m64=$(awk -v c="$c" -v t="$t" '$2 == c && $3 == t {print $4}' "$out" | median)
    m1=$(awk -v c="$c" -v t="$t" '$2 == c && $3 == t {print $6}' "$out" | median)
    bests=$(awk -v c="$c" -v t="$t" '$2 == c && $3 == t {printf "%s%s", sep, $5; sep = " "}' "$out")
    ref=ORT; note=""
    if [ "$c" = avx2 ] && [ "$classes" != avx2 ]; then
      ref="forced-AVX2 TorchScript"
      note=" (AVX-512 machine: ORT and OpenVINO cannot be forced to AVX2 and are left out; PyTorch forced to AVX2)"
    fi
    echo "median over $rounds round(s), $c, $t thread(s): batch-64 throughput $m64 best peer (target >= 1.0x: $(verdict "$m64" '>=' 1.0); best peer per round: $bests), batch-1 latency $m1 $ref (target <= 0.8x: $(verdict "$m1" '<=' 0.8))$note"
  done
done
if [ "$portable" = 1 ]; then
  for t in 2 1; do
    mp=$(awk -v t="$t" '$2 == t && $3 != "" && $4 > 0 {print $3/$4}' "$pout" | median)
    echo "median over $rounds round(s), portable, $t thread(s): batch-64 throughput --isa portable $mp --isa avx2 (target >= 0.5x: $(verdict "$mp" '>=' 0.5))"
  done
fi
