// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based RNG, so any element's random number is a pure function of (key, counter). That is
// what lets the CPU and CUDA backends draw the same residual-dropout masks without sharing state,
// and lets a resumed run redraw exactly the masks an uninterrupted run would have drawn.
// Written out here (20 lines) because the CPU side has no library that exposes raw Philox with
// the same counter layout as cuRAND's device API.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LIMA_HD __host__ __device__
#else
#define LIMA_HD
#endif

namespace lima {

struct Philox4 {
    uint32_t v[4];
};

LIMA_HD inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int r = 0; r < 10; ++r) {
        const uint64_t p0 = uint64_t(M0) * c0, p1 = uint64_t(M1) * c2;
        const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0, n1 = uint32_t(p1);
        const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1, n3 = uint32_t(p0);
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += W0; k1 += W1;
    }
    return {{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 bits, exactly representable in fp32 on every backend.
LIMA_HD inline float u24(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

// Sampling stream: the uniform draw, 53 bits in [0, 1), for the token at position `counter` of a
// generated row keyed by `seed`, so a row samples the same tokens whatever else is in the batch.
LIMA_HD inline double sample_uniform(uint64_t seed, uint64_t counter) {
    const Philox4 r = philox4x32_10(uint32_t(counter), uint32_t(counter >> 32), 0x5A3Fu, 0x7E57u, uint32_t(seed),
                                    uint32_t(seed >> 32));
    return (double(r.v[0] >> 5) * 67108864.0 + double(r.v[1] >> 6)) / 9007199254740992.0;
}

// Residual-dropout stream. One Philox call covers 4 consecutive elements:
//   key     = seed (low, high 32 bits)
//   counter = (element / 4 low, element / 4 high, optimiser step, micro << 16 | layer << 1 | site)
// site 0 = attention output, 1 = MLP output. An element is kept iff u24 >= p.
struct DropoutKey {
    uint64_t seed;
    uint32_t step;
    uint32_t micro;
};

// LIMA's residual-dropout rate of layer `layer` of `num_layers`: 0 at the bottom layer rising
// linearly to p_max at the top. The one definition both backends use.
LIMA_HD inline float resid_dropout_rate(float p_max, int layer, int num_layers) {
    return num_layers <= 1 ? 0.0f : p_max * float(layer) / float(num_layers - 1);
}

LIMA_HD inline uint32_t dropout_word(const DropoutKey &k, int layer, int site) {
    return (k.micro << 16) | (uint32_t(layer) << 1) | uint32_t(site);
}

// Normal(0, std) for random init, element i of parameter tensor `tensor` (Box-Muller on a pair).
inline float init_normal(uint64_t seed, uint32_t tensor, uint64_t i, float stddev) {
    const uint64_t pair = i >> 1;
    Philox4 r = philox4x32_10(uint32_t(pair), uint32_t(pair >> 32), tensor, 0xFFFFFFFFu, uint32_t(seed),
                              uint32_t(seed >> 32));
    const double u1 = (double(r.v[0] >> 8) + 1.0) / 16777217.0;  // (0, 1]
    const double u2 = double(r.v[1] >> 8) / 16777216.0;
    const double rad = std::sqrt(-2.0 * std::log(u1));
    const double z = (i & 1) ? rad * std::sin(2.0 * M_PI * u2) : rad * std::cos(2.0 * M_PI * u2);
    return float(z * stddev);
}

// The key of LoRA's adapter dropout of target `target` (0..6: q, k, v, o, gate, up, down): its own
// stream, apart from the residual-dropout stream and from the other targets' (CPU and CUDA).
LIMA_HD inline DropoutKey lora_dropout_key(const DropoutKey &k, int target) {
    uint64_t z = k.seed + 0x9E3779B97F4A7C15ULL * uint64_t(target + 1);  // splitmix64 of the seed and target
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return DropoutKey{z ^ (z >> 31), k.step, k.micro};
}

}  // namespace lima
