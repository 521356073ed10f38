// Kernel-level checks that need the internals: the Philox stream against the published known-answer
// vectors (so a CUDA implementation can be checked against the same standard), dropout statistics,
// 16-bit conversions.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cpu/dropout.hpp"
#include "dtype.hpp"
#include "lima/lima.h"
#include "philox.hpp"

namespace {

TEST(Philox, MatchesRandom123KnownAnswers) {
    // kat_vectors of Random123 1.09, philox4x32 10 rounds.
    auto a = lima::philox4x32_10(0, 0, 0, 0, 0, 0);
    EXPECT_EQ(a.v[0], 0x6627e8d5u);
    EXPECT_EQ(a.v[1], 0xe169c58du);
    EXPECT_EQ(a.v[2], 0xbc57ac4cu);
    EXPECT_EQ(a.v[3], 0x9b00dbd8u);
    auto b = lima::philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
    EXPECT_EQ(b.v[0], 0x408f276du);
    EXPECT_EQ(b.v[1], 0x41c83b0eu);
    EXPECT_EQ(b.v[2], 0xa20bc7c6u);
    EXPECT_EQ(b.v[3], 0x6d5451fdu);
    auto c = lima::philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
    EXPECT_EQ(c.v[0], 0xd16cfe09u);
    EXPECT_EQ(c.v[1], 0x94fdccebu);
    EXPECT_EQ(c.v[2], 0x5001e420u);
    EXPECT_EQ(c.v[3], 0x24126ea1u);
}

TEST(Dropout, DropsTheRequestedFractionAndScalesTheRest) {
    const long n = 200000;
    const float p = 0.3f;
    std::vector<float> y(size_t(n), 2.0f);
    const lima::DropoutKey key{42, 7, 0};
    lima::cpu::dropout_mask_apply(y.data(), n, p, key, 3, 1);
    long zeros = 0;
    for (float v : y) {
        if (v == 0.0f) ++zeros;
        else EXPECT_FLOAT_EQ(v, 2.0f / 0.7f);
    }
    const double frac = double(zeros) / double(n), sd = std::sqrt(p * (1 - p) / double(n));
    EXPECT_NEAR(frac, p, 5 * sd);
}

TEST(Dropout, MasksDependOnEveryKeyPartAndRepeatExactly) {
    const long n = 4096;
    auto mask = [&](lima::DropoutKey k, int layer, int site) {
        std::vector<float> y(size_t(n), 1.0f);
        lima::cpu::dropout_mask_apply(y.data(), n, 0.5f, k, layer, site);
        return y;
    };
    const lima::DropoutKey k{1, 2, 3};
    const auto base = mask(k, 4, 0);
    EXPECT_EQ(base, mask(k, 4, 0));
    EXPECT_NE(base, mask({2, 2, 3}, 4, 0));  // seed
    EXPECT_NE(base, mask({1, 3, 3}, 4, 0));  // step
    EXPECT_NE(base, mask({1, 2, 4}, 4, 0));  // micro-batch
    EXPECT_NE(base, mask(k, 5, 0));          // layer
    EXPECT_NE(base, mask(k, 4, 1));          // site
}

TEST(Dropout, RateRisesLinearlyFromZeroAtTheBottomToPmaxAtTheTop) {
    EXPECT_FLOAT_EQ(lima_resid_dropout_rate(0.3f, 0, 80), 0.0f);
    EXPECT_FLOAT_EQ(lima_resid_dropout_rate(0.3f, 79, 80), 0.3f);
    EXPECT_NEAR(lima_resid_dropout_rate(0.3f, 40, 81), 0.15f, 1e-7);
    EXPECT_NEAR(lima_resid_dropout_rate(0.2f, 1, 3), 0.1f, 1e-7);
    EXPECT_FLOAT_EQ(lima_resid_dropout_rate(0.3f, 0, 1), 0.0f);
}

TEST(Dtype, Bf16RoundsToNearestEven) {
    EXPECT_EQ(lima::f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(lima::f32_to_bf16(lima::bits_f32(0x3f808000u)), 0x3f80);  // tie -> even
    EXPECT_EQ(lima::f32_to_bf16(lima::bits_f32(0x3f818000u)), 0x3f82);  // tie -> even (up)
    EXPECT_EQ(lima::f32_to_bf16(lima::bits_f32(0x3f808001u)), 0x3f81);
    EXPECT_FLOAT_EQ(lima::bf16_to_f32(0xc0490fdbu >> 16), -3.140625f);
    EXPECT_TRUE(std::isnan(lima::bf16_to_f32(lima::f32_to_bf16(std::nanf("")))));
}

TEST(Dtype, F16RoundTripsNormalsSubnormalsAndSpecials) {
    for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f})
        EXPECT_EQ(lima::f16_to_f32(lima::f32_to_f16(f)), f) << f;
    EXPECT_EQ(lima::f32_to_f16(1.0f), 0x3c00);
    EXPECT_EQ(lima::f32_to_f16(1e9f), 0x7c00);  // overflow -> inf
    EXPECT_TRUE(std::isinf(lima::f16_to_f32(0xfc00)));
    EXPECT_TRUE(std::isnan(lima::f16_to_f32(lima::f32_to_f16(std::nanf("")))));
    for (uint32_t h = 0; h < 0x7c00; ++h) EXPECT_EQ(lima::f32_to_f16(lima::f16_to_f32(uint16_t(h))), h) << h;
}

}  // namespace
