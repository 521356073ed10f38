#!/usr/bin/env bash
# The main job until the Java CLI lands: build liblima and train a 5.26M-parameter LLaMA for 10
# steps on the CPU, printing throughput and loss.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
build/cpp/lima_bench_train "$@"
