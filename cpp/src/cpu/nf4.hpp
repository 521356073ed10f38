// nf4: QLoRA's 4-bit NormalFloat storage of frozen weights (Dettmers et al., "QLoRA", 2023), in
// bitsandbytes' layout: blocks of 64 weights, each scaled by its absolute maximum and rounded to the
// nearest of the 16 NF4 levels; two 4-bit indices per byte, the first in the high nibble. With
// double quantisation the per-block absmax values (fp32) are themselves stored as 8 bits: their mean
// subtracted, then blocks of 256 scaled by their absmax and rounded to bitsandbytes' signed dynamic
// 8-bit code. Written here because no C/C++ library provides NF4 on the CPU (bitsandbytes is a
// Python/CUDA package); the levels and the rounding thresholds are bitsandbytes' own.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace lima::cpu {

// The NF4 levels (bitsandbytes csrc/kernels.cu, QLoRA paper appendix E), as fp32.
inline constexpr float kNf4[16] = {-1.0f,
                                   -0.6961928009986877f,
                                   -0.5250730514526367f,
                                   -0.39491748809814453f,
                                   -0.28444138169288635f,
                                   -0.18477343022823334f,
                                   -0.09105003625154495f,
                                   0.0f,
                                   0.07958029955625534f,
                                   0.16093020141124725f,
                                   0.24611230194568634f,
                                   0.33791524171829224f,
                                   0.44070982933044434f,
                                   0.5626170039176941f,
                                   0.7229568362236023f,
                                   1.0f};

constexpr int kNf4Block = 64, kAbsmaxBlock = 256;

// The index of the NF4 level nearest x (x in [-1, 1]); a value exactly between two levels takes the
// lower one, as bitsandbytes' decision tree (x > midpoint).
inline uint8_t nf4_index(float x) {
    uint8_t i = 0;
    for (int k = 0; k < 15; ++k)
        if (x > float((double(kNf4[k]) + double(kNf4[k + 1])) / 2.0)) i = uint8_t(k + 1);
    return i;
}

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 256 sorted fp32
// values in [-1, 1], dense near 0; the code of quantize_blockwise, used for the absmax values.
inline const std::vector<float> &dynamic_code() {
    static const std::vector<float> code = [] {
        std::vector<float> data;
        for (int i = 0; i < 7; ++i) {
            const int n = (1 << i) + 1;  // fraction items: linspace(0.1, 1, n) as torch computes it in fp32
            std::vector<float> b(static_cast<size_t>(n));
            const float step = (1.0f - 0.1f) / float(n - 1);
            for (int k = 0; k < n; ++k) b[size_t(k)] = k < n / 2 ? 0.1f + step * float(k) : 1.0f - step * float(n - k - 1);
            const float scale = float(std::pow(10.0, double(-(7 - 1) + i)));
            for (int k = 0; k + 1 < n; ++k) {
                const float mean = (b[size_t(k)] + b[size_t(k + 1)]) / 2.0f;
                data.push_back(scale * mean);
                data.push_back(-scale * mean);
            }
        }
        data.push_back(0.0f);
        data.push_back(1.0f);
        std::sort(data.begin(), data.end());
        return data;
    }();
    return code;
}

// The index of the code value nearest x (ties: the lower).
inline uint8_t dynamic_index(float x) {
    const std::vector<float> &c = dynamic_code();
    const auto hi = std::lower_bound(c.begin(), c.end(), x);
    if (hi == c.begin()) return 0;
    if (hi == c.end()) return uint8_t(c.size() - 1);
    const auto lo = hi - 1;
    return uint8_t((x - *lo <= *hi - x ? lo : hi) - c.begin());
}

// A tensor of n weights in NF4.
struct Nf4Tensor {
    int64_t n = 0;
    std::vector<uint8_t> packed;   // (n + 1) / 2 bytes
    std::vector<float> absmax;     // per block of 64 (without double quantisation)
    bool double_quant = false;
    std::vector<uint8_t> qabsmax;  // per block of 64: index into dynamic_code()
    std::vector<float> absmax2;    // per group of 256 blocks
    float offset = 0.0f;           // the mean subtracted from the absmax values
    int64_t blocks() const { return (n + kNf4Block - 1) / kNf4Block; }
    int64_t bytes() const {
        return int64_t(packed.size()) + (double_quant ? int64_t(qabsmax.size()) + 4 * int64_t(absmax2.size()) + 4 : 4 * int64_t(absmax.size()));
    }
    // The absmax of block b as dequantisation uses it.
    float block_absmax(int64_t b) const {
        return double_quant ? dynamic_code()[qabsmax[size_t(b)]] * absmax2[size_t(b / kAbsmaxBlock)] + offset : absmax[size_t(b)];
    }
};

inline Nf4Tensor nf4_quantize(const float *x, int64_t n, bool double_quant) {
    Nf4Tensor t;
    t.n = n;
    t.packed.assign(size_t((n + 1) / 2), 0);
    std::vector<float> am(static_cast<size_t>(t.blocks()));
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < t.blocks(); ++b) {
        const int64_t lo = b * kNf4Block, hi = std::min(n, lo + kNf4Block);
        float m = 0.0f;
        for (int64_t i = lo; i < hi; ++i) m = std::max(m, std::fabs(x[i]));
        am[size_t(b)] = m;
        const float inv = m > 0.0f ? 1.0f / m : 0.0f;  // as bitsandbytes: x * (1 / absmax)
        for (int64_t i = lo; i < hi; ++i) {
            const uint8_t q = nf4_index(x[i] * inv);
            t.packed[size_t(i / 2)] |= uint8_t(i % 2 == 0 ? q << 4 : q);
        }
    }
    t.double_quant = double_quant;
    if (!double_quant) {
        t.absmax = std::move(am);
        return t;
    }
    double sum = 0.0;
    for (float v : am) sum += double(v);
    t.offset = am.empty() ? 0.0f : float(sum / double(am.size()));
    const int64_t groups = (t.blocks() + kAbsmaxBlock - 1) / kAbsmaxBlock;
    t.absmax2.assign(size_t(groups), 0.0f);
    t.qabsmax.assign(am.size(), 0);
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t lo = g * kAbsmaxBlock, hi = std::min(t.blocks(), lo + kAbsmaxBlock);
        float m = 0.0f;
        for (int64_t b = lo; b < hi; ++b) m = std::max(m, std::fabs(am[size_t(b)] - t.offset));
        t.absmax2[size_t(g)] = m;
        const float inv = m > 0.0f ? 1.0f / m : 0.0f;
        for (int64_t b = lo; b < hi; ++b) t.qabsmax[size_t(b)] = dynamic_index((am[size_t(b)] - t.offset) * inv);
    }
    return t;
}

// out[i] = level(i) * absmax(block of i), elements [from, from + count) of the tensor.
inline void nf4_dequantize(const Nf4Tensor &t, float *out, int64_t from, int64_t count) {
#pragma omp parallel for schedule(static)
    for (int64_t i = from; i < from + count; ++i) {
        const uint8_t byte = t.packed[size_t(i / 2)];
        const uint8_t q = i % 2 == 0 ? byte >> 4 : byte & 0x0F;
        out[i - from] = kNf4[q] * t.block_absmax(i / kNf4Block);
    }
}

}  // namespace lima::cpu
