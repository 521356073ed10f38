// swiglu: the LLaMA MLP's gate, h = silu(g) * u with silu(g) = g * sigmoid(g).
#pragma once
#include <cmath>

namespace lima::cpu {

// h (n) = silu(g) * u
inline void swiglu_forward(float *h, const float *g, const float *u, long n) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) {
        const float s = 1.0f / (1.0f + std::exp(-g[i]));
        h[i] = g[i] * s * u[i];
    }
}

// dg, du (n) from dh
inline void swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, long n) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) {
        const float s = 1.0f / (1.0f + std::exp(-g[i]));
        const float silu = g[i] * s;
        du[i] = dh[i] * silu;
        dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

}  // namespace lima::cpu
