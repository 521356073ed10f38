#!/usr/bin/env bash
# Installs the system packages the native build needs (Debian 12): CMake, a C++ compiler, the
# OpenMP build of OpenBLAS, nlohmann/json and GoogleTest. Idempotent; skips apt when all are there.
set -euo pipefail
pkgs=(cmake g++ libopenblas-openmp-dev nlohmann-json3-dev libgtest-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "ci/setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
