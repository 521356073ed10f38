#!/usr/bin/env bash
# Packs, from this build machine's Debian packages, what a GPU host's image lacks to build and run
# the native GPU checks (ci/bench-gpu.sh): OpenBLAS's OpenMP build with its Fortran runtime, and the
# GoogleTest and nlohmann-json development files, as .gpudeps/usr.tar.xz (about 5 MB; git-ignored).
# Carry .gpudeps to the GPU host; ci/bench-gpu.sh unpacks it into .gpudeps/usr and points CMake and
# the loader at it. Needs the packages ci/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=x86_64-linux-gnu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
u=$tmp/usr
blas=$u/lib/$arch/openblas-openmp
mkdir -p "$blas" "$u/lib/$arch/include" "$u/lib/$arch/cmake" "$u/include" "$u/share/cmake"
# OpenBLAS (CMake looks for cblas.h in LIMA_OPENBLAS_DIR/../include) and the libraries it needs
# beyond glibc and the compiler's OpenMP runtime
cp -a /usr/lib/$arch/openblas-openmp/libopenblas*.so* "$blas/"
cp -a /usr/include/$arch/openblas-openmp/*.h "$u/lib/$arch/include/"
cp -a /usr/lib/$arch/libgfortran.so.5* /usr/lib/$arch/libquadmath.so.0* "$blas/"
# GoogleTest (static) and nlohmann-json (headers), with their CMake package files
cp -a /usr/lib/$arch/libgtest.a /usr/lib/$arch/libgtest_main.a "$u/lib/$arch/"
cp -a /usr/lib/$arch/cmake/GTest "$u/lib/$arch/cmake/"
cp -a /usr/include/gtest /usr/include/nlohmann "$u/include/"
cp -a /usr/share/cmake/nlohmann_json "$u/share/cmake/"
mkdir -p .gpudeps
rm -rf .gpudeps/usr
tar -C "$tmp" -cJf .gpudeps/usr.tar.xz usr
echo "ci/gpu-deps.sh: .gpudeps/usr.tar.xz ($(du -h .gpudeps/usr.tar.xz | cut -f1)); carry .gpudeps to the GPU host"
