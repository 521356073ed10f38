#!/usr/bin/env bash
# Installs what the build needs on Debian 12: CMake, a C++ compiler, the OpenMP build of OpenBLAS,
# nlohmann/json and GoogleTest for liblima; a JDK 17+ and Maven for the Java modules; fonts for charts.
# Idempotent; skips apt when everything is there.
set -euo pipefail
pkgs=(cmake g++ libopenblas-openmp-dev nlohmann-json3-dev libgtest-dev fontconfig fonts-dejavu-core)
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
