// Shared by the GPU tests: whether a CUDA device is here, and the small model they train and decode.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "lima/lima.h"
#include "cuda_common.cuh"
#include "small_config.hpp"

namespace limatest {

using lima::cuda::bf16;

inline bool have_gpu() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Device buffers and transfers of the kernel tests: inputs random (never zeros), outputs poisoned
// (NaN) first so unwritten elements show; errors are relative L2 norms.
#define NEED_GPU() \
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

inline double rel_err(const std::vector<float> &a, const std::vector<float> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i])) return INFINITY;
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(b[i]) * b[i];
    }
    return std::sqrt(num / std::max(den, 1e-30));
}

// bf16 round trip of a host vector (what the GPU sees).
inline std::vector<float> round_bf16(const std::vector<float> &v) {
    std::vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(__float2bfloat16(v[i]));
    return r;
}

template <typename T>
struct Dev {
    T *p = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) {
        EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
        EXPECT_EQ(cudaMemset(p, 0xFF, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);  // poison: NaN for floats/bf16
    }
    ~Dev() { cudaFree(p); }
};

inline Dev<float> *up(const std::vector<float> &v) {
    auto *d = new Dev<float>(v.size());
    cudaMemcpy(d->p, v.data(), v.size() * 4, cudaMemcpyHostToDevice);
    return d;
}
template <typename T>
inline Dev<T> *up(const std::vector<T> &v) {
    auto *d = new Dev<T>(v.size());
    cudaMemcpy(d->p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}
inline std::unique_ptr<Dev<bf16>> up16(const std::vector<float> &v) {
    auto d = std::make_unique<Dev<bf16>>(v.size());
    std::vector<bf16> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = __float2bfloat16(v[i]);
    cudaMemcpy(d->p, h.data(), v.size() * 2, cudaMemcpyHostToDevice);
    return d;
}
inline std::vector<float> down(const float *p, size_t n) {
    std::vector<float> v(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost);
    return v;
}
inline std::vector<float> down16(const bf16 *p, size_t n) {
    std::vector<bf16> h(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = __bfloat162float(h[i]);
    return v;
}

}  // namespace limatest
