#!/usr/bin/env bash
# The engine jar's native build, run by Maven (java/pom.xml): liblima in DIR/cpp and, unless
# LIMA_CUDA_SKIP=true, the CUDA backend plugin once per CUDA toolkit found, in DIR/cuda-plugins.
# ci/test.sh builds these itself (once, with the tests) and tells Maven to take them from there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: ci/native-build.sh BUILD_DIR}
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLIMA_BUILD_TESTS=OFF -DLIMA_BUILD_BENCH=OFF -DLIMA_CUDA=OFF
cmake --build "$dir" -j"$(nproc)"
if [ "${LIMA_CUDA_SKIP:-false}" != true ]; then
  bash "$root/ci/build-cuda.sh" "$dir/cuda-plugins"
else
  mkdir -p "$dir/cuda-plugins"
  rm -f "$dir"/cuda-plugins/liblima_cuda*.so
fi
