// Shared by the CUDA backend's sources: error checks that turn CUDA/cuBLAS failures into lima
// errors (status + message naming the call), bf16 helpers, and the device buffer type.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "../src/common.hpp"

namespace lima::cuda {

using bf16 = __nv_bfloat16;

#define LIMA_CUDA_CHECK(call)                                                                                    \
    do {                                                                                                         \
        const cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess)                                                                                   \
            ::lima::fail(e_ == cudaErrorMemoryAllocation ? LIMA_ERR_OUT_OF_MEMORY : LIMA_ERR_INTERNAL, "CUDA: ", \
                         #call, " failed: ", cudaGetErrorString(e_), " (", __FILE__, ":", __LINE__, ")");        \
    } while (0)

// After a kernel launch: launch-configuration errors surface here, named by the kernel; faults
// surface at the next sync.
#define LIMA_CUDA_LAUNCHED(what)                                                                                 \
    do {                                                                                                         \
        const cudaError_t e_ = cudaPeekAtLastError();                                                            \
        if (e_ != cudaSuccess)                                                                                   \
            ::lima::fail(e_ == cudaErrorMemoryAllocation ? LIMA_ERR_OUT_OF_MEMORY : LIMA_ERR_INTERNAL, "CUDA: kernel ", \
                         (what), " failed to launch: ", cudaGetErrorString(e_), " (", __FILE__, ":", __LINE__, ")");    \
    } while (0)

#define LIMA_CUBLAS_CHECK(call)                                                                            \
    do {                                                                                                   \
        const cublasStatus_t s_ = (call);                                                                  \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                   \
            ::lima::fail(LIMA_ERR_INTERNAL, "cuBLASLt: ", #call, " failed with status ", int(s_), " (", \
                         __FILE__, ":", __LINE__, ")");                                                    \
    } while (0)

inline int ceil_div(long a, long b) { return int((a + b - 1) / b); }

// Bytes currently held by this process's backend allocations, and the high-water mark.
struct MemCounter {
    int64_t now = 0, peak = 0;
};
MemCounter &mem_counter();

// A device allocation owned by one object; zero-sized buffers hold nullptr.
template <typename T>
struct DevBuf {
    T *p = nullptr;
    size_t n = 0;
    DevBuf() = default;
    DevBuf(const DevBuf &) = delete;
    DevBuf &operator=(const DevBuf &) = delete;
    DevBuf(DevBuf &&o) noexcept : p(std::exchange(o.p, nullptr)), n(std::exchange(o.n, 0)) {}
    DevBuf &operator=(DevBuf &&o) noexcept {
        if (this != &o) {
            release();
            p = std::exchange(o.p, nullptr);
            n = std::exchange(o.n, 0);
        }
        return *this;
    }
    ~DevBuf() { release(); }
    void alloc(size_t count, const char *what) {
        release();
        if (count == 0) return;
        const cudaError_t e = cudaMalloc(reinterpret_cast<void **>(&p), count * sizeof(T));
        if (e != cudaSuccess) {
            p = nullptr;
            (void)cudaGetLastError();
            size_t fr = 0, tot = 0;
            cudaMemGetInfo(&fr, &tot);
            fail(LIMA_ERR_OUT_OF_MEMORY, "CUDA: cannot allocate ", count * sizeof(T) / 1048576.0, " MiB for ", what, " (",
                 fr / 1048576.0, " MiB free of ", tot / 1048576.0, ")");
        }
        n = count;
        mem_counter().now += int64_t(n * sizeof(T));
        if (mem_counter().now > mem_counter().peak) mem_counter().peak = mem_counter().now;
    }
    void ensure(size_t count, const char *what) {
        if (count > n) alloc(count, what);
    }
    void release() {
        if (p) {
            cudaFree(p);
            mem_counter().now -= int64_t(n * sizeof(T));
        }
        p = nullptr;
        n = 0;
    }
};

}  // namespace lima::cuda
