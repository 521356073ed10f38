#!/usr/bin/env bash
# Builds the CUDA backend plugin once for every CUDA toolkit found here (nvcc on PATH, then
# /usr/local/cuda-*/bin/nvcc; one per CUDA major, the first found), each named by its major:
# OUT/liblima_cuda<major>.so (OUT defaults to build/cuda-plugins). The Maven build runs this and
# puts the results in the engine jar, whose Java side picks the build matching the installed driver
# and runtime (dev.limactl.engine.CudaPlugins). Without a toolkit it builds nothing and says so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/cuda-plugins}
work=$(dirname "$out")
mkdir -p "$out"
rm -f "$out"/liblima_cuda*.so
declare -A seen_major
found=0
for n in $(command -v nvcc 2>/dev/null || true) /usr/local/cuda-*/bin/nvcc; do
  [ -x "$n" ] || continue
  nvcc_bin=$(readlink -f "$n")
  major=$("$nvcc_bin" --version | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p')
  [ -n "$major" ] || continue
  [ -z "${seen_major[$major]:-}" ] || continue
  seen_major[$major]=1
  # shellcheck disable=SC2046
  flags=$(NVCC="$nvcc_bin" bash "$root/ci/cuda-flags.sh")
  case "$flags" in *LIMA_CUDA=OFF*) echo "ci/build-cuda.sh: CUDA $major ($nvcc_bin): no cuBLASLt or nccl.h, skipped" >&2; continue;; esac
  dir="$work/plugin-cuda$major"
  echo "ci/build-cuda.sh: building liblima_cuda$major.so with $nvcc_bin"
  # shellcheck disable=SC2086
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLIMA_BUILD_TESTS=OFF -DLIMA_BUILD_BENCH=OFF \
        -DCMAKE_CUDA_COMPILER="$nvcc_bin" $flags > "$dir.configure.log" 2>&1 || { cat "$dir.configure.log" >&2; exit 1; }
  cmake --build "$dir" --target lima_cuda -j"$(nproc)"
  cp "$dir/cpp/liblima_cuda$major.so" "$out/"
  found=$((found + 1))
done
if [ "$found" -eq 0 ]; then
  echo "ci/build-cuda.sh: no CUDA toolkit found: the build carries no CUDA plugin (CPU only)"
else
  echo "ci/build-cuda.sh: $(cd "$out" && ls liblima_cuda*.so | tr '\n' ' ')in $out"
fi
