#!/usr/bin/env bash
# Runs both fuzz targets, one after the other, for SECONDS each (default 900), then minimises
# their corpora in place:
#   - frontends (cnn-dsl/fuzz): YAML and DSL front-ends, lowering, checking, diagnostics,
#     planning and code generation;
#   - readers (cnn-runtime/fuzz): safetensors weights (matched and listed), .npy, PNG/JPEG and
#     IDX images/labels, raw or gzip.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Each target
# runs as one nice'd job under libFuzzer's memory limits, so a huge allocation is a crash too.
# libFuzzer's final lines (`Done N runs in S second(s)`, and the stats) are printed per target;
# crashes land in <crate>/fuzz/artifacts/<target>/. The committed corpora are replayed on stable
# by `cargo test` (cnn-dsl/tests/fuzz_corpus.rs, cnn-runtime/tests/fuzz_corpus.rs).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   e.g. scripts/fuzz.sh 60 readers
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-900}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(frontends readers)

for t in "${targets[@]}"; do
  case "$t" in
    frontends) dir="$root/cnn-dsl" ;;
    readers) dir="$root/cnn-runtime" ;;
    *) echo "unknown target: $t (frontends or readers)" >&2; exit 2 ;;
  esac
  echo "== $t: ${secs}s"
  (cd "$dir" && nice -n 10 cargo +nightly fuzz run "$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1)
  (cd "$dir" && nice -n 10 cargo +nightly fuzz cmin "$t")
  du -sh "$dir/fuzz/corpus/$t"
done
