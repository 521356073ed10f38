// dropout: LIMA's residual dropout, res += dropout_p(y), masks from the Philox counter stream so
// the CUDA backend and a resumed run draw the same ones (see philox.hpp for the counter layout).
// The mask is never stored: backward regenerates it.
#pragma once
#include <cstdint>

#include "../philox.hpp"

namespace lima::cpu {

// Applies mask * scale to y (N*d elements) in place, with the keep test of element e drawn from
// (key, layer, site). p == 0 leaves y untouched.
inline void dropout_mask_apply(float *y, long n, float p, const DropoutKey &key, int layer, int site) {
    if (p <= 0.0f) return;
    const float scale = 1.0f / (1.0f - p);
    const uint32_t word = dropout_word(key, layer, site);
    const uint32_t k0 = uint32_t(key.seed), k1 = uint32_t(key.seed >> 32);
#pragma omp parallel for schedule(static)
    for (long g = 0; g < (n + 3) / 4; ++g) {
        const Philox4 r = philox4x32_10(uint32_t(uint64_t(g)), uint32_t(uint64_t(g) >> 32), key.step, word, k0, k1);
        for (int j = 0; j < 4; ++j) {
            const long e = g * 4 + j;
            if (e >= n) break;
            y[e] = u24(r.v[j]) >= p ? y[e] * scale : 0.0f;
        }
    }
}

// res (n) += y (n): the residual connection without dropout (eval, prefill, decode).
inline void residual_add(float *res, const float *y, long n) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) res[i] += y[i];
}

// res (n) += y (n), after dropout of y in place (so y holds the dropped values afterwards).
inline void dropout_residual_forward(float *res, float *y, long n, float p, const DropoutKey *key, int layer, int site) {
    if (key) dropout_mask_apply(y, n, p, *key, layer, site);
    residual_add(res, y, n);
}

// dy (n) = mask * scale * dres  (dres passes through to the residual unchanged)
inline void dropout_residual_backward(float *dy, const float *dres, long n, float p, const DropoutKey *key, int layer,
                                      int site) {
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) dy[i] = dres[i];
    if (key) dropout_mask_apply(dy, n, p, *key, layer, site);
}

}  // namespace lima::cpu
