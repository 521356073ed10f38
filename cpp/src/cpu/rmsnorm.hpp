// rmsnorm: y = w * x / sqrt(mean(x^2) + eps), as HF LlamaRMSNorm in fp32.
#pragma once
#include <cmath>

#include "parallel.hpp"

namespace lima::cpu {

// out (N, d), rstd (N) saved for backward
inline void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, long N, int d, float eps) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; ++n) {
        const float *xr = x + n * d;
        float ss = 0.0f;
        for (int i = 0; i < d; ++i) ss += xr[i] * xr[i];
        const float r = 1.0f / std::sqrt(ss / float(d) + eps);
        rstd[n] = r;
        float *o = out + n * d;
        for (int i = 0; i < d; ++i) o[i] = w[i] * (xr[i] * r);
    }
}

// dx (N, d) += d/dx;  dw (d) += d/dw (dw == nullptr: a frozen gain)
inline void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, long N, int d) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; ++n) {
        const float *xr = x + n * d, *g = dout + n * d;
        const float r = rstd[n];
        float dot = 0.0f;  // sum_i g_i w_i x_i
        for (int i = 0; i < d; ++i) dot += g[i] * w[i] * xr[i];
        const float k = dot * r * r * r / float(d);
        float *o = dx + n * d;
        for (int i = 0; i < d; ++i) o[i] += g[i] * w[i] * r - xr[i] * k;
    }
    if (!dw) return;
    reduce_rows(dw, d, N, [&](long n, float *acc) {
        const float *xr = x + n * d, *g = dout + n * d;
        const float r = rstd[n];
        for (int i = 0; i < d; ++i) acc[i] += g[i] * xr[i] * r;
    });
}

}  // namespace lima::cpu
