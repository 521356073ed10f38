#!/usr/bin/env bash
# On a GPU host (one command): builds liblima with the CUDA backend, runs the GPU tests (kernels and
# whole model against the CPU reference), then the training benchmark of liblima-cuda and, in the
# same run, Hugging Face transformers + PyTorch (eager and torch.compile) on the issue's shapes:
#   (a) LLaMA-125M shape: d 768, 12 layers, 12 heads, ffn 2048, vocab 32000, 16 x 2048 tokens
#   (b) LLaMA-7B shape, 8 layers: d 4096, 32 heads, ffn 11008, vocab 32000, 4 x 2048 tokens
#   (c) shape (a) with LIMA-like lengths (100..2048): liblima packed vs one example per row
# Logs and JSON lines go to ${OUT:-build-gpu/out}; a table is printed last.
# usage: bash ci/bench-gpu.sh [tests|bench|all]   (default all)
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${OUT:-build-gpu/out}
mkdir -p "$out"
export DJL_OFFLINE=true PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
# A GPU host without OpenBLAS/nlohmann-json/GTest packages can be handed them in .gpudeps/usr
# (copies of this project's build-machine packages).
extra=()
if [ -d .gpudeps/usr ]; then
  deps=$PWD/.gpudeps/usr
  extra=(-DCMAKE_PREFIX_PATH="$deps" -DLIMA_OPENBLAS_DIR="$deps/lib/x86_64-linux-gnu/openblas-openmp")
  export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if ! [ -x build-gpu/cpp/lima_cuda_tests ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIMA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DLIMA_BUILD_TESTS=ON -DLIMA_BUILD_BENCH=ON "${extra[@]}" > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
  cmake --build build-gpu -j 16 > "$out/build.log" 2>&1 || { grep -E "error" -A3 "$out/build.log" | head -60; exit 1; }
fi
status=0
if [ "$what" != bench ]; then
  ./build-gpu/cpp/lima_cuda_tests 2>&1 | tee "$out/gpu-tests.log" | grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|rel|error|Expected|Which|actual|tensor|step|hd" | head -80
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
if [ "$what" != tests ]; then
  B=./build-gpu/cpp/lima_bench_train
  P="python3 cpp/bench/peer_train_torch_cuda.py"
  A="--hidden 768 --layers 12 --heads 12 --ffn 2048 --vocab 32000 --batch 16 --seq 2048"
  S="--hidden 4096 --layers 8 --heads 32 --ffn 11008 --vocab 32000 --batch 4 --seq 2048"
  run() { echo "$*" >&2; timeout 300 "$@" 2>>"$out/bench.err" | tail -1 | sed "s/^{/{\"case\": \"$case\", /" | tee -a "$out/bench.jsonl"; }
  : > "$out/bench.jsonl"
  case=a; run $B $A --cuda 1 --steps 10 --warmup 3
  case=b; run $B $S --cuda 1 --steps 6 --warmup 2
  case=b-recompute; run $B $S --cuda 1 --steps 6 --warmup 2 --recompute 1
  case=c-packed; run $B $A --cuda 1 --steps 10 --warmup 3 --mix 1
  case=c-padded; run $B $A --cuda 1 --steps 10 --warmup 3 --mix 2
  case=a; run $P $A --steps 10 --warmup 3
  case=a; run $P $A --steps 10 --warmup 3 --compile 1
  case=b; run $P $S --steps 6 --warmup 2
  case=b; run $P $S --steps 6 --warmup 3 --compile 1
  case=c-padded; run $P $A --steps 10 --warmup 3 --compile 1 --mix 2
  python3 - "$out/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
print(f"{'case':<12} {'impl':<16} {'tokens/s':>10} {'MFU':>6} {'peak GiB':>9} {'loss':>7}")
for r in rows:
    print(f"{r['case']:<12} {r['impl']:<16} {r['tokens_per_s']:>10.0f} {r['mfu']*100:>5.1f}% {r.get('peak_gib', 0):>9.1f} {r['final_loss']:>7.3f}")
PY
fi
exit $status
