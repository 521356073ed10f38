#!/usr/bin/env bash
# The project's test command: native tests (ctest) then the Java modules' tests (Maven, which also
# builds liblima and the JNI glue). Needs ../shared beside the checkout for the real data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# The CUDA backend plugin is compiled wherever nvcc is (as on CI, which has no GPU to run it: its
# GPU tests skip themselves there; ci/bench-gpu.sh runs them on a GPU host).
# shellcheck disable=SC2046
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(bash ci/cuda-flags.sh)
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j2
mvn -B verify
