#!/usr/bin/env bash
# Prints the CMake flags for the CUDA backend plugin on this machine: -DLIMA_CUDA=OFF without nvcc;
# with nvcc ($NVCC, else the one on PATH), -DLIMA_CUDA=ON plus, when its toolkit lacks cuBLASLt
# (build machines with only the compiler), LIMA_CUBLAS_ROOT from the pip wheel nvidia-cublas
# (CUDA 13), and NCCL's header from the wheel nvidia-nccl-cu13 where the system has none; ci/setup.sh
# installs both. Prints only: it installs nothing.
set -uo pipefail
nvcc_bin=${NVCC:-$(command -v nvcc 2>/dev/null || true)}
if [ -z "$nvcc_bin" ] || [ ! -x "$nvcc_bin" ]; then echo "-DLIMA_CUDA=OFF"; exit 0; fi
toolkit=$(dirname "$(readlink -f "$nvcc_bin")")/..
# NCCL's header: the system's (libnccl-dev), else the pip wheel nvidia-nccl-cu13's
nccl=""
if [ ! -f /usr/include/nccl.h ] && [ ! -f "$toolkit/include/nccl.h" ]; then
  n=$(python3 -c 'import nvidia, os; [print(p + "/nccl") for p in nvidia.__path__ if os.path.exists(p + "/nccl/include/nccl.h")]' 2>/dev/null | head -1)
  if [ -z "$n" ]; then
    echo "ci/cuda-flags.sh: nvcc found but no nccl.h (run ci/setup.sh, which installs the nvidia-nccl-cu13 wheel): the CUDA plugin is NOT built" >&2
    echo "-DLIMA_CUDA=OFF"
    exit 0
  fi
  nccl=" -DLIMA_NCCL_ROOT=$n"
fi
if [ -f "$toolkit/include/cublasLt.h" ]; then echo "-DLIMA_CUDA=ON$nccl"; exit 0; fi
major=$("$nvcc_bin" --version | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p')
if [ "$major" != 13 ]; then
  echo "ci/cuda-flags.sh: CUDA $major toolkit at $toolkit has no cuBLASLt: the CUDA plugin is NOT built for it" >&2
  echo "-DLIMA_CUDA=OFF"
  exit 0
fi
root() { python3 -c 'import nvidia, os; [print(p + "/cu13") for p in nvidia.__path__ if os.path.exists(p + "/cu13/include/cublasLt.h")]' 2>/dev/null | head -1; }
r=$(root)
if [ -z "$r" ]; then
  echo "ci/cuda-flags.sh: nvcc found but no cuBLASLt (run ci/setup.sh, which installs the nvidia-cublas wheel): the CUDA plugin is NOT built" >&2
  echo "-DLIMA_CUDA=OFF"
  exit 0
fi
echo "-DLIMA_CUDA=ON -DLIMA_CUBLAS_ROOT=$r$nccl"
