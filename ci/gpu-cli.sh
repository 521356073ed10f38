#!/usr/bin/env bash
# limactl end to end on a GPU host that has no Java: the demo trained for one epoch with
# training.device=cuda, then `limactl generate --device cuda` from its checkpoint, with the engine
# jar's bundled CUDA plugin chosen by CudaPlugins against the host's driver.
#   here:  bash ci/gpu-cli.sh pack   builds liblima and the CUDA plugin (ci/cuda-flags.sh) and the
#          CLI with them, then fills the git-ignored .device/ (a jlink'd Java 17 from
#          ../shared/tools/gpu-bundle.sh, and the jars that `demo` and `generate` load, found by
#          running both here under -Xlog:class+load) and .gpudeps/ (ci/gpu-deps.sh). Carry both.
#   there: bash ci/gpu-cli.sh run    the two commands; logs, metrics and answers under ${OUT:-build-gpu/out}
# pack needs ../shared beside the checkout; run needs .device and .gpudeps.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
case "$what" in
pack)
  build=${NATIVE_BUILD_DIR:-$PWD/build}
  # shellcheck disable=SC2046
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release $(bash ci/cuda-flags.sh) > /dev/null
  cmake --build "$build" -j"$(nproc)" --target lima lima_cuda
  mkdir -p "$build/cuda-plugins"
  rm -f "$build/cuda-plugins"/liblima_cuda*.so
  cp "$build"/cpp/liblima_cuda*.so "$build/cuda-plugins/"
  mvn -B -q install -DskipTests -Dlima.native.prebuilt=true -Dnative.build.dir="$build"
  unzip -l java/target/limactl-engine-*.jar | grep "liblima_cuda13.so" > /dev/null || { echo "ci/gpu-cli.sh: the engine jar has no CUDA plugin" >&2; exit 1; }
  # the jars the two commands load (the CUDA path adds no jar: CudaPlugins is in the engine's)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  export LIMACTL_JAVA_OPTS="-Xlog:class+load=info:file=$tmp/classes.txt"
  cli/bin/limactl -q demo --run "$tmp/run" --set training.epochs=1 > "$tmp/demo.log"
  export LIMACTL_JAVA_OPTS="-Xlog:class+load=info:file=$tmp/classes2.txt"
  cli/bin/limactl -q generate -m "$tmp/run/checkpoints/epoch-01" --prompts "$tmp/run/embedded/demo/dev.jsonl" \
      --out "$tmp/answers.jsonl" --max-new-tokens 4 > /dev/null
  unset LIMACTL_JAVA_OPTS
  mkdir -p "$tmp/lib"
  cat "$tmp/classes.txt" "$tmp/classes2.txt" | grep -o "source: [^ ]*\.jar" | sed 's/^source: //; s/^jar://; s/^file://' | sort -u \
      | while read -r j; do cp "$j" "$tmp/lib/"; done
  ../shared/tools/gpu-bundle.sh "$tmp/lib" > /dev/null
  bash ci/gpu-deps.sh > /dev/null
  echo "ci/gpu-cli.sh: .device ($(du -sh .device | cut -f1): Java runtime and $(ls .device/app/lib | wc -l) jars) and" \
       ".gpudeps ($(du -sh .gpudeps/usr.tar.xz | cut -f1)); working tree with both: $(du -sm --exclude=.git --exclude=build \
       --exclude=build-gpu --exclude=limactl-demo --exclude=target . | cut -f1) MiB (of 64)"
  ;;
run)
  [ -x .device/jre/bin/java ] && [ -d .device/app/lib ] || { echo "ci/gpu-cli.sh: no .device: run 'bash ci/gpu-cli.sh pack' here first" >&2; exit 1; }
  out=${OUT:-build-gpu/out}
  mkdir -p "$out"
  if [ -f .gpudeps/usr.tar.xz ] && ! [ -d .gpudeps/usr ]; then tar -C .gpudeps -xJf .gpudeps/usr.tar.xz; fi
  # OpenBLAS for liblima; the CUDA runtime and cuBLASLt for the plugin: the toolkit's or the wheels'
  libs=$PWD/.gpudeps/usr/lib/x86_64-linux-gnu/openblas-openmp:/usr/local/cuda/lib64
  for d in $(python3 -c 'import nvidia, os; [print(p + "/cu13/lib") for p in nvidia.__path__ if os.path.isdir(p + "/cu13/lib")]' 2>/dev/null); do
    libs=$libs:$d
  done
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" DJL_OFFLINE=true RUST_FLAVOR=cpu
  cache=$(mktemp -d)
  java=(.device/jre/bin/java --add-opens=java.base/java.nio=ALL-UNNAMED -Dorg.bytedeco.javacpp.cachedir="$cache/javacpp"
        -cp '.device/app/lib/*' dev.limactl.cli.Main)
  run=build-gpu/cli-run
  rm -rf "$run"
  status=0
  echo "== limactl demo --set training.device=cuda --set training.epochs=1"
  "${java[@]}" demo --run "$run" --set training.device=cuda --set training.epochs=1 2>&1 | tee "$out/cli-train.log" | tail -12
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  cp "$run/metrics.jsonl" "$out/cli-metrics.jsonl" 2>/dev/null || true
  if [ -d "$run/checkpoints/epoch-01" ]; then
    echo "== limactl generate --device cuda"
    "${java[@]}" generate --device cuda -m "$run/checkpoints/epoch-01" --prompts "$run/embedded/demo/dev.jsonl" \
        --out "$out/cli-answers.jsonl" --max-new-tokens 64 2>&1 | tee "$out/cli-generate.log" | tail -5
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  else
    status=1
  fi
  exit $status
  ;;
*)
  echo "usage: bash ci/gpu-cli.sh pack|run" >&2
  exit 2
  ;;
esac
