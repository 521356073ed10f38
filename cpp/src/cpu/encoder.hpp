// encoder: token embedding lookup and its scatter-add backward.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace lima::cpu {

// x (N, d) = emb (V, d)[tokens (N)]
inline void encoder_forward(float *x, const float *emb, const int32_t *tokens, long N, int d) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; ++n) std::memcpy(x + n * d, emb + long(tokens[n]) * d, sizeof(float) * size_t(d));
}

// demb (V, d) += scatter of dx (N, d) by tokens. Threads own column slices so repeated tokens
// never race.
inline void encoder_backward(float *demb, const float *dx, const int32_t *tokens, long N, int d) {
    const int slice = 64;
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < d; c0 += slice) {
        const int c1 = std::min(d, c0 + slice);
        for (long n = 0; n < N; ++n) {
            float *dst = demb + long(tokens[n]) * d;
            const float *src = dx + n * d;
            for (int c = c0; c < c1; ++c) dst[c] += src[c];
        }
    }
}

}  // namespace lima::cpu
