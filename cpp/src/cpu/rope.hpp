// rope: rotary position embedding, HF "rotate_half" convention: for i < hd/2, with
// f_i = theta^(-2i/hd) and angle a = pos * f_i,
//   out[i]        = x[i] cos a - x[i + hd/2] sin a
//   out[i + hd/2] = x[i + hd/2] cos a + x[i] sin a
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "lima/lima.h"

namespace lima::cpu {

// cos/sin tables (max_pos, hd/2), computed like HF: inv_freq and angles in fp32.
// The inverse frequency of rotary pair i of hd, with the config's scaling, as transformers computes it
// (modeling_rope_utils: default, linear, llama3), in float32.
inline float rope_inv_freq(const lima_model_config &c, int hd, int i) {
    float inv = 1.0f / std::pow(c.rope_theta, float(2 * i) / float(hd));
    if (c.rope_type == LIMA_ROPE_LINEAR) return inv / c.rope_factor;
    if (c.rope_type == LIMA_ROPE_LLAMA3) {
        const float old_len = float(c.rope_original_max_position_embeddings);
        const float low_wavelen = old_len / c.rope_low_freq_factor, high_wavelen = old_len / c.rope_high_freq_factor;
        const float wavelen = 2.0f * float(M_PI) / inv;
        const float scaled = wavelen > low_wavelen ? inv / c.rope_factor : inv;
        if (wavelen < high_wavelen || wavelen > low_wavelen) return scaled;
        const float smooth = (old_len / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
        return (1.0f - smooth) * scaled / c.rope_factor + smooth * scaled;
    }
    return inv;
}

struct RopeTable {
    int half = 0, max_pos = 0;
    std::vector<float> cos, sin;
    void build(int hd, int positions, const lima_model_config &c) {
        half = hd / 2;
        max_pos = positions;
        cos.resize(size_t(positions) * half);
        sin.resize(size_t(positions) * half);
        for (int i = 0; i < half; ++i) {
            const float inv = rope_inv_freq(c, hd, i);
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
