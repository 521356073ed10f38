#!/usr/bin/env bash
# CPU training benchmark: liblima vs Hugging Face transformers + PyTorch (CPU), same config, same
# machine, same run. Needs the build (ci/test.sh) and `pip install torch transformers`.
# Default config: LLaMA d 256, 4 layers, 4 heads, ffn 688, vocab 4096 (5.26M params), 8 x 256 tokens,
# AdamW, 2 threads. Extra arguments go to both sides (e.g. --threads 1 --steps 20).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/cpp/lima_bench_train ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build -j"$(nproc)" >/dev/null; }
ours=$(build/cpp/lima_bench_train "$@")
peer=$(python3 cpp/bench/peer_train_torch.py "$@")
python3 - "$ours" "$peer" <<'PY'
import json, platform, sys, subprocess
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"machine: {cpu}; threads {o['threads']}; {o['params']:,} params; batch {o['batch']} x {o['seq']} tokens; {o['steps']} timed steps")
print(f"{'implementation':34} {'tokens/s':>10} {'s/step':>8}")
for r in (o, p):
    print(f"{r['impl']:34} {r['tokens_per_s']:>10,.0f} {r['step_s']:>8.3f}")
print(f"ratio liblima / peer: {o['tokens_per_s'] / p['tokens_per_s']:.2f}x   (torch {p['torch']})")
PY
