#!/usr/bin/env bash
# On a GPU host (see ../shared/docs/GPU.md; no Java needed): builds liblima with the CUDA backend
# plugin and runs the native tests, whose CUDA device test then takes its GPU branch, and the device
# listing. Logs go to ${OUT:-/tmp/lima-gpu}. Prints a short table last.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/lima-gpu}; mkdir -p "$out"
cmake -S . -B /tmp/lima-gpu-build -DCMAKE_BUILD_TYPE=Release -DLIMA_CUDA=ON > "$out/cmake.log" 2>&1
cmake --build /tmp/lima-gpu-build -j"$(nproc)" >> "$out/cmake.log" 2>&1
ctest --test-dir /tmp/lima-gpu-build --output-on-failure -j4 > "$out/ctest.log" 2>&1 && ok=pass || ok=FAIL
python3 - /tmp/lima-gpu-build/cpp/liblima.so > "$out/devices.log" 2>&1 <<'PY' || true
import ctypes as C, sys
lib = C.CDLL(sys.argv[1]); lib.lima_last_error.restype = C.c_char_p
class D(C.Structure):
    _fields_ = [("name", C.c_char * 256), ("total", C.c_int64), ("free", C.c_int64), ("ccmaj", C.c_int32), ("ccmin", C.c_int32),
                ("rt", C.c_int32), ("drv", C.c_int32)]
ds = (D * 8)(); n = C.c_int32()
st = lib.lima_cuda_devices(ds, 8, C.byref(n))
print(f"status {st}: {lib.lima_last_error().decode()}" if st else "\n".join(
    f"{d.name.decode()} cc {d.ccmaj}.{d.ccmin} {d.total / 2**30:.1f} GiB runtime {d.rt} driver {d.drv}" for d in ds[:n.value]))
PY
printf '%-12s %s\n' ctest "$ok ($(grep -Eo '[0-9]+% tests passed.*' "$out/ctest.log" | head -1))" devices "$(head -1 "$out/devices.log")"
