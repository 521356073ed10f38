#!/usr/bin/env bash
# The project's test command: native tests (ctest), a bounded libFuzzer run over the native parsers, then the Java modules' tests (Maven, which packs
# the same native build and compiles the JNI glue), then the embedding example against the installed jars. Needs ../shared beside the checkout for the real data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# One native build: liblima, its tests and, wherever nvcc is, the CUDA backend plugin (CI has no GPU
# to run it: its GPU tests skip themselves there; ci/bench-gpu.sh runs them on a GPU host). Maven then
# packs these same libraries instead of building them again.
# shellcheck disable=SC2046
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(bash ci/cuda-flags.sh)
cmake --build build -j"$(nproc)"
mkdir -p build/cuda-plugins
rm -f build/cuda-plugins/liblima_cuda*.so
cp build/cpp/liblima_cuda*.so build/cuda-plugins/ 2>/dev/null || echo "ci/test.sh: no CUDA plugin built (no CUDA toolkit)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
# The native parsers under libFuzzer, bounded (ci/fuzz.sh: 200,000 inputs from a fixed seed, at most 120 s).
bash ci/fuzz.sh
mvn -B install -Dlima.native.prebuilt=true -Dnative.build.dir="$PWD/build"
# The embedding example, a standalone project that uses the installed engine by its coordinates.
mvn -B -f java/examples/embed/pom.xml package exec:exec
