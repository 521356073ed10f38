// The CUDA backend plugin of liblima (loaded with dlopen, see src/cuda_plugin.hpp). This first part
// lists devices for `limactl doctor`; training and generation kernels come with the CUDA backend.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include "lima/lima.h"

extern "C" __attribute__((visibility("default"))) int lima_cuda_plugin_devices(lima_device_info *out, int32_t cap,
                                                                                 int32_t *count, char *err, int32_t errcap) {
    int driver = 0, runtime = 0, n = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    if (driver == 0) {
        std::snprintf(err, size_t(errcap), "no NVIDIA driver found (CUDA runtime %d.%d is installed)", runtime / 1000,
                      (runtime % 1000) / 10);
        return LIMA_ERR_UNSUPPORTED;
    }
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        std::snprintf(err, size_t(errcap), "cannot list CUDA devices: %s (driver %d.%d, runtime %d.%d)", cudaGetErrorString(e),
                      driver / 1000, (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10);
        return LIMA_ERR_UNSUPPORTED;
    }
    *count = n;
    for (int i = 0; i < n && i < cap; ++i) {
        cudaDeviceProp p{};
        cudaGetDeviceProperties(&p, i);
        lima_device_info &d = out[i];
        std::memset(&d, 0, sizeof d);
        std::snprintf(d.name, sizeof d.name, "%s", p.name);
        d.total_memory = int64_t(p.totalGlobalMem);
        size_t free_b = 0, total_b = 0;
        if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) d.free_memory = int64_t(free_b);
        d.compute_major = p.major;
        d.compute_minor = p.minor;
        d.runtime_version = runtime;
        d.driver_version = driver;
    }
    return LIMA_OK;
}
