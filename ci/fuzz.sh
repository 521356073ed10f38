#!/usr/bin/env bash
# Fuzzes the native parsers that read users' bytes (safetensors header and tensor reads, config.json)
# with libFuzzer under AddressSanitizer and UBSan, for a bounded time: first replays every input kept
# in cpp/fuzz/corpus (seeds and the crashing inputs found so far, the regression tests), then fuzzes
# LIMA_FUZZ_RUNS inputs (default 200000, under a minute here) from seed LIMA_FUZZ_SEED (default 1, so
# a CI run is repeatable; 0 = a new seed each run, for exploring), stopping after LIMA_FUZZ_SECONDS
# (default 120) whatever the count. A finding fails the run and is left in build/fuzz/findings;
# copy it into cpp/fuzz/corpus/<parser>/ once fixed so every later run replays it.
# libFuzzer comes with clang (ci/setup.sh installs it); the main build stays on gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${LIMA_FUZZ_SECONDS:-120}
runs=${LIMA_FUZZ_RUNS:-200000}
seed=${LIMA_FUZZ_SEED:-1}
for v in seconds runs seed; do
  case "${!v}" in ''|*[!0-9]*) echo "ci/fuzz.sh: LIMA_FUZZ_${v^^} must be a whole number, got '${!v}'" >&2; exit 2;; esac
done
cxx=${LIMA_FUZZ_CXX:-$(command -v clang++ || true)}
if [ -z "$cxx" ]; then echo "ci/fuzz.sh: clang++ not found (ci/setup.sh installs clang)" >&2; exit 2; fi
out=build/fuzz
mkdir -p "$out/findings" "$out/work"
bin="$out/fuzz_parsers"
srcs=(cpp/fuzz/fuzz_parsers.cpp cpp/src/safetensors.cpp cpp/src/config.cpp)
if [ ! -x "$bin" ] || [ -n "$(find "${srcs[@]}" cpp/src/*.hpp cpp/include -newer "$bin" 2>/dev/null | head -1)" ]; then
  echo "ci/fuzz.sh: building $bin with $cxx"
  "$cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Icpp/src -Icpp/include "${srcs[@]}" -o "$bin"
fi
export TMPDIR="$PWD/$out"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mapfile -t kept < <(find cpp/fuzz/corpus -type f | sort)
echo "ci/fuzz.sh: replaying ${#kept[@]} kept inputs"
"$bin" -rss_limit_mb=2048 "${kept[@]}" > "$out/replay.log" 2>&1 || { cat "$out/replay.log"; echo "ci/fuzz.sh: a kept input fails" >&2; exit 1; }
if [ "$seconds" -gt 0 ] && [ "$runs" -gt 0 ]; then
  rm -rf "$out/work" && mkdir -p "$out/work" && cp cpp/fuzz/corpus/*/* "$out/work/"
  echo "ci/fuzz.sh: fuzzing $runs inputs from seed $seed (at most ${seconds}s)"
  if ! "$bin" -seed="$seed" -runs="$runs" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
       -artifact_prefix="$out/findings/" "$out/work" > "$out/fuzz.log" 2>&1; then
    tail -60 "$out/fuzz.log"
    echo "ci/fuzz.sh: libFuzzer found a failing input, kept in $out/findings/" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$out/fuzz.log" || true
fi
echo "ci/fuzz.sh: no findings"
