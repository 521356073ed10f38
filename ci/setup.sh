#!/usr/bin/env bash
# Installs what the build needs on Debian 12: CMake, a C++ compiler, the OpenMP build of OpenBLAS,
# nlohmann/json, GoogleTest and Gloo for liblima; clang for its libFuzzer target; a JDK 17+ and Maven for the Java modules; fonts for charts;
# Chromium and chromedriver for the annotation app's browser tests; redis-server, the key-value server rank 0 hosts for a tcp:// rendezvous.
# Idempotent; skips apt when everything is there.
set -euo pipefail
pkgs=(cmake g++ libopenblas-openmp-dev nlohmann-json3-dev libgtest-dev libgloo-dev clang fontconfig fonts-dejavu-core chromium chromium-driver redis-server)
command -v javac >/dev/null 2>&1 || pkgs+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "ci/setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# The CUDA plugin's cuBLASLt where a CUDA 13 compiler has none beside it (build machines with only
# nvcc): the pip wheel nvidia-cublas, which ci/cuda-flags.sh then points CMake at.
nvcc_bin=$(command -v nvcc 2>/dev/null || true)
if [ -n "$nvcc_bin" ] && [ ! -f "$(dirname "$(readlink -f "$nvcc_bin")")/../include/cublasLt.h" ] &&
   ! python3 -c 'import nvidia, os, sys; sys.exit(0 if any(os.path.exists(p + "/cu13/include/cublasLt.h") for p in nvidia.__path__) else 1)' 2>/dev/null; then
  echo "ci/setup.sh: installing the nvidia-cublas wheel (cuBLASLt for the CUDA plugin)"
  python3 -m pip install -q nvidia-cublas || echo "ci/setup.sh: pip install nvidia-cublas failed: the CUDA plugin will not be built" >&2
fi

# NCCL's header for the CUDA plugin (it opens libnccl with dlopen at run time) where the system has none.
if [ -n "$nvcc_bin" ] && [ ! -f /usr/include/nccl.h ] &&
   ! python3 -c 'import nvidia, os, sys; sys.exit(0 if any(os.path.exists(p + "/nccl/include/nccl.h") for p in nvidia.__path__) else 1)' 2>/dev/null; then
  echo "ci/setup.sh: installing the nvidia-nccl-cu13 wheel (nccl.h for the CUDA plugin)"
  python3 -m pip install -q nvidia-nccl-cu13 || echo "ci/setup.sh: pip install nvidia-nccl-cu13 failed: the CUDA plugin will not be built" >&2
fi

# torch, transformers and PEFT (CPU, from the machine's package index) for the Java test that loads a
# limactl LoRA adapter in PEFT itself; that test skips, saying so, where they cannot be installed.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import torch, transformers, peft' >/dev/null 2>&1; then
  echo "ci/setup.sh: installing peft (with torch and transformers) for the PEFT cross-check"
  timeout 900 python3 -m pip install -q peft || echo "ci/setup.sh: pip install peft failed: the PEFT cross-check will be skipped" >&2
fi

# TensorBoard, gguf, datasets and openai (their readers, writers and client check the run's tensorboard/ files, limactl's
# GGUF export, data import of Hugging Face datasets folders and serve in tests, which skip, saying so, without them).
for mod in tensorboard gguf datasets openai; do
  if command -v python3 >/dev/null 2>&1 && ! python3 -c "import $mod" >/dev/null 2>&1; then
    echo "ci/setup.sh: installing $mod for its cross-check"
    timeout 600 python3 -m pip install -q "$mod" || echo "ci/setup.sh: pip install $mod failed: its cross-check will be skipped" >&2
  fi
done

# llama.cpp itself, as node-llama-cpp's prebuilt CPU build (npm), to run limactl's GGUF exports in tests (skipped,
# saying so, without it). 3.21.1: newer releases' builds for other platforms are not all served here.
nlc="${XDG_CACHE_HOME:-$HOME/.cache}/limactl/node-llama-cpp"
if command -v npm >/dev/null 2>&1 && [ ! -d "$nlc/node_modules/node-llama-cpp" ]; then
  echo "ci/setup.sh: installing node-llama-cpp (llama.cpp) into $nlc for the GGUF runs"
  mkdir -p "$nlc"
  if ! (cd "$nlc" && { [ -f package.json ] || npm init -y >/dev/null; } && timeout 600 npm i -E --no-audit --no-fund node-llama-cpp@3.21.1 >/dev/null); then
    echo "ci/setup.sh: npm install node-llama-cpp failed: the llama.cpp runs of GGUF files will be skipped" >&2
  fi
fi
