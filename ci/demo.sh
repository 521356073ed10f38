#!/usr/bin/env bash
# The main job: build everything, then run `limactl demo` (a small LLaMA trained with the LIMA
# recipe on the shipped sample of real examples, on the CPU). Extra arguments go to `limactl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
mvn -B -q install -DskipTests
exec cli/bin/limactl demo "$@"
