#!/usr/bin/env bash
# Before/after speed of two cnnc binaries on the seed model, alternating them so that machine
# noise hits both alike: the median p50 latency of each configuration and the ratio old/new
# (> 1: the new binary is faster).
#
#   scripts/ab_bench.sh OLD_CNNC NEW_CNNC [ROUNDS] [ISA...]
#
# e.g. build the old one with `git worktree add /tmp/old REV && CARGO_TARGET_DIR=/tmp/old-target
# cargo build --release --bin cnnc` in /tmp/old. ISAs default to the ones this CPU runs
# (avx512 avx2 where available). Run it on a quiet machine; nothing here is a test.
set -euo pipefail
old=${1:?old cnnc binary}
new=${2:?new cnnc binary}
rounds=${3:-7}
shift $(( $# < 3 ? $# : 3 ))
isas=("$@")
if [ ${#isas[@]} -eq 0 ]; then
    isas=(avx2)
    grep -qw avx512f /proc/cpuinfo && isas=(avx512 avx2)
fi
cd "$(dirname "$0")/.."
spec=examples/models/seed.yaml
configs=("--batch 64 --threads 1" "--batch 1 --threads 1" "--batch 64 --threads 1 --train")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((r = 1; r <= rounds; r++)); do
    for isa in "${isas[@]}"; do
        for c in "${configs[@]}"; do
            for which in old new; do
                bin=$old
                [ "$which" = new ] && bin=$new
                # shellcheck disable=SC2086
                "$bin" bench "$spec" $c --isa "$isa" --seconds 0.4 --json 2>/dev/null |
                    sed "s|^{|{\"which\":\"$which\",\"config\":\"$c\",|" >>"$out"
            done
        done
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    key = (r["isa"], r["config"], r["path"])
    groups.setdefault(key, {}).setdefault(r["which"], []).append(r["latency_us_p50"])
print(f"{'isa':7} {'config':34} {'path':12} {'old p50 µs':>11} {'new p50 µs':>11} {'old/new':>8}")
for (isa, config, path), v in sorted(groups.items()):
    if "old" in v and "new" in v:
        o, n = statistics.median(v["old"]), statistics.median(v["new"])
        print(f"{isa:7} {config:34} {path:12} {o:11.1f} {n:11.1f} {o / n:8.3f}")
PY
