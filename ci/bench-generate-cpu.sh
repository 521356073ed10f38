#!/usr/bin/env bash
# CPU decoding benchmark: liblima's KV-cache decoder vs Hugging Face transformers generate() on the
# same machine in the same run; greedy, prompt 512, 256 new tokens, batch 1 and 8, the demo model's
# shape (d 128, 4 layers, 4 heads / 2 KV heads, ffn 344, vocab 1025), 2 threads.
# Needs the build (ci/test.sh) and `pip install torch transformers`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x build/cpp/lima_bench_generate ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build build -j"$(nproc)" >/dev/null; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); 2 threads; prompt 512, 256 new tokens, greedy"
printf '%-32s %6s %10s %14s\n' implementation batch prefill_s decode_tok/s
for b in 1 8; do
  for line in "$(build/cpp/lima_bench_generate --batch $b "$@")" "$(python3 cpp/bench/peer_generate_torch.py --batch $b "$@")"; do
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{r['impl']:32} {r['batch']:6} {r['prefill_s']:10.3f} {r['decode_tokens_per_s']:14,.1f}\")" "$line"
  done
done
