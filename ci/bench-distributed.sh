#!/usr/bin/env bash
# Data-parallel training on this machine's CPUs (Gloo), one run after the other in the same session:
# the demo model, 2 epochs, with 1, 2 and 4 local ranks at ZeRO stages 0, 2 and 3, all with the same
# total number of threads (the machine's cores, shared by the ranks). Prints tokens/s (steps after the
# first of each epoch) and the share of step time spent in collectives. Needs the build (ci/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
out=${1:-build/bench-distributed}
rm -rf "$out"
mkdir -p "$out"
printf "%-6s %-6s %-8s %12s %12s\n" ranks stage threads "tokens/s" "comm share"
for n in 1 2 4; do
  for stage in 0 2 3; do
    [ "$n" -eq 1 ] && [ "$stage" -ne 0 ] && continue
    threads=$(( cores / n )); [ "$threads" -ge 1 ] || threads=1
    run="$out/n$n-s$stage"
    cli/bin/limactl -q train --preset demo --init random --set training.epochs=2 --set training.threads=$threads \
      --set distributed.zero_stage=$stage --run "$run" $( [ "$n" -gt 1 ] && echo "--nproc-per-node $n" ) > "$run.log" 2>&1
    python3 - "$run/metrics.jsonl" "$n" "$stage" "$threads" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steady = [r for r in rows if r["step_in_epoch"] > 1]
tok = sum(r["tokens"] for r in steady)
secs = sum(r["tokens"] / r["tokens_per_s"] for r in steady)
comm = sum(r.get("comm_s", 0.0) for r in steady)
print("%-6s %-6s %-8s %12.0f %11.1f%%" % (sys.argv[2], sys.argv[3], sys.argv[4], tok / secs, 100 * comm / secs))
PY
  done
done
