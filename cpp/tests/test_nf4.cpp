// NF4 (QLoRA's 4-bit NormalFloat, bitsandbytes' layout) on the CPU: the levels, the rounding, the
// packing, awkward sizes and double quantisation of the absmax values, against brute-force references.
#include <random>

#include "cpu/nf4.hpp"
#include "helpers.hpp"

namespace {

using lima::cpu::kNf4;

// The level nearest v by exhaustive search; a tie goes to the lower level.
uint8_t nearest(float v) {
    uint8_t best = 0;
    for (uint8_t k = 1; k < 16; ++k)
        if (std::fabs(v - kNf4[k]) < std::fabs(v - kNf4[best])) best = k;
    return best;
}

std::vector<float> normal(int64_t n, uint32_t seed, float std = 0.02f) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, std);
    std::vector<float> x(static_cast<size_t>(n));
    for (float &v : x) v = d(g);
    return x;
}

TEST(Nf4, LevelsRoundToTheNearestAndTiesGoLower) {
    for (uint8_t k = 0; k < 16; ++k) EXPECT_EQ(lima::cpu::nf4_index(kNf4[k]), k);
    for (int k = 0; k < 15; ++k) {
        const float mid = float((double(kNf4[k]) + double(kNf4[k + 1])) / 2.0);
        EXPECT_EQ(lima::cpu::nf4_index(mid), k) << "a tie at " << mid;
        EXPECT_EQ(lima::cpu::nf4_index(std::nextafter(mid, 2.0f)), k + 1);
    }
    EXPECT_EQ(kNf4[7], 0.0f);  // zero is exact
    for (float v = -1.0f; v <= 1.0f; v += 0.001f) ASSERT_EQ(lima::cpu::nf4_index(v), nearest(v)) << v;
}

TEST(Nf4, QuantiseDequantiseIsTheCodeBookTimesTheBlockAbsmaxOnAwkwardSizes) {
    for (int64_t n : {1, 2, 63, 64, 65, 127, 1000, 64 * 256 + 3}) {
        std::vector<float> x = normal(n, uint32_t(n));
        if (n > 70) x[70] = 0.0f;
        const lima::cpu::Nf4Tensor t = lima::cpu::nf4_quantize(x.data(), n, false);
        ASSERT_EQ(int64_t(t.packed.size()), (n + 1) / 2);
        ASSERT_EQ(int64_t(t.absmax.size()), (n + 63) / 64);
        std::vector<float> y(static_cast<size_t>(n));
        lima::cpu::nf4_dequantize(t, y.data(), 0, n);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t b = i / 64;
            float am = 0.0f;
            for (int64_t j = b * 64; j < std::min(n, b * 64 + 64); ++j) am = std::max(am, std::fabs(x[size_t(j)]));
            ASSERT_EQ(t.absmax[size_t(b)], am);
            const uint8_t q = nearest(x[size_t(i)] * (1.0f / am));
            ASSERT_EQ(y[size_t(i)], kNf4[q] * am) << "n " << n << ", element " << i;  // bit-exact
            const uint8_t byte = t.packed[size_t(i / 2)];
            ASSERT_EQ(i % 2 == 0 ? byte >> 4 : byte & 0x0F, q) << "the first of a pair is the high nibble";
        }
        // a slice dequantises the same values
        if (n > 10) {
            std::vector<float> part(5);
            lima::cpu::nf4_dequantize(t, part.data(), n - 7, 5);
            for (int i = 0; i < 5; ++i) EXPECT_EQ(part[size_t(i)], y[size_t(n - 7 + i)]);
        }
    }
    float zeros[3] = {0.0f, 0.0f, 0.0f}, back[3];
    const lima::cpu::Nf4Tensor z = lima::cpu::nf4_quantize(zeros, 3, true);
    lima::cpu::nf4_dequantize(z, back, 0, 3);
    for (float v : back) EXPECT_EQ(v, 0.0f) << "an all-zero block stays zero";
}

TEST(Nf4, DoubleQuantisedAbsmaxRoundTripsClosely) {
    const auto &code = lima::cpu::dynamic_code();
    ASSERT_EQ(code.size(), 256u);
    EXPECT_TRUE(std::is_sorted(code.begin(), code.end()));
    EXPECT_EQ(std::adjacent_find(code.begin(), code.end()), code.end()) << "256 distinct values";
    EXPECT_EQ(code.back(), 1.0f);
    EXPECT_TRUE(std::find(code.begin(), code.end(), 0.0f) != code.end());
    for (float v : code) EXPECT_EQ(code[lima::cpu::dynamic_index(v)], v);

    const int64_t n = 64 * 600 + 17;  // 601 blocks: three groups of 256, the last short
    std::vector<float> x = normal(n, 3);
    for (int64_t i = 0; i < n; i += 997) x[size_t(i)] *= 8.0f;  // outliers: absmax values that differ
    const lima::cpu::Nf4Tensor a = lima::cpu::nf4_quantize(x.data(), n, false), d = lima::cpu::nf4_quantize(x.data(), n, true);
    ASSERT_EQ(d.qabsmax.size(), a.absmax.size());
    ASSERT_EQ(d.absmax2.size(), 3u);
    double worst = 0.0, range = 0.0;
    for (float v : a.absmax) range = std::max(range, double(std::fabs(v - d.offset)));
    for (int64_t b = 0; b < a.blocks(); ++b) worst = std::max(worst, std::fabs(double(d.block_absmax(b)) - a.absmax[size_t(b)]));
    EXPECT_LT(worst, 0.01 * range) << "8-bit dynamic code: within 1% of the absmax spread";
    EXPECT_EQ(d.packed, a.packed) << "the 4-bit indices do not depend on how absmax is stored";
    // bytes per weight: 0.5 + 1/64 + 4/(64 * 256) (and a 4-byte offset) instead of 0.5 + 4/64
    EXPECT_EQ(d.bytes(), (n + 1) / 2 + a.blocks() + 4 * 3 + 4);
    EXPECT_EQ(a.bytes(), (n + 1) / 2 + 4 * a.blocks());
}

}  // namespace
