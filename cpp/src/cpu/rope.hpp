// rope: rotary position embedding, HF "rotate_half" convention: for i < hd/2, with
// f_i = theta^(-2i/hd) and angle a = pos * f_i,
//   out[i]        = x[i] cos a - x[i + hd/2] sin a
//   out[i + hd/2] = x[i + hd/2] cos a + x[i] sin a
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace lima::cpu {

// cos/sin tables (max_pos, hd/2), computed like HF: inv_freq and angles in fp32.
struct RopeTable {
    int half = 0, max_pos = 0;
    std::vector<float> cos, sin;
    void build(int hd, int positions, float theta) {
        half = hd / 2;
        max_pos = positions;
        cos.resize(size_t(positions) * half);
        sin.resize(size_t(positions) * half);
        for (int i = 0; i < half; ++i) {
            const float inv = 1.0f / std::pow(theta, float(2 * i) / float(hd));
            for (int p = 0; p < positions; ++p) {
                const float a = float(p) * inv;
                cos[size_t(p) * half + i] = std::cos(a);
                sin[size_t(p) * half + i] = std::sin(a);
            }
        }
    }
};

// x (N, heads, hd) rotated in place; sign = +1 forward, -1 backward (the transpose rotation).
inline void rope_apply(float *x, const int32_t *pos, long N, int heads, int hd, const RopeTable &t, float sign) {
    const int h2 = hd / 2;
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; ++n) {
        const float *c = t.cos.data() + size_t(pos[n]) * h2, *s = t.sin.data() + size_t(pos[n]) * h2;
        for (int h = 0; h < heads; ++h) {
            float *v = x + (n * heads + h) * hd;
            for (int i = 0; i < h2; ++i) {
                const float a = v[i], b = v[i + h2], sn = sign * s[i];
                v[i] = a * c[i] - b * sn;
                v[i + h2] = b * c[i] + a * sn;
            }
        }
    }
}

inline void rope_forward(float *x, const int32_t *pos, long N, int heads, int hd, const RopeTable &t) {
    rope_apply(x, pos, N, heads, hd, t, 1.0f);
}
inline void rope_backward(float *dx, const int32_t *pos, long N, int heads, int hd, const RopeTable &t) {
    rope_apply(dx, pos, N, heads, hd, t, -1.0f);
}

}  // namespace lima::cpu
