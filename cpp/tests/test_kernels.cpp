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

// ---- layer pieces that the training forward and decoding share

#include "cpu/attention.hpp"
#include "model.hpp"

namespace {

std::vector<float> random_vec(size_t n, uint32_t stream) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = lima::init_normal(99, stream, i, 1.0f);
    return v;
}

TEST(DecodeAttention, EqualsThePackedKernelOnEachPositionOfACachedRow) {
    // Two cached rows of different lengths, GQA 6 q heads over 2 kv heads, hd 8: decoding the token at
    // position p against the cache must equal causal packed attention over the row's first p+1 tokens.
    const int Hq = 6, Hkv = 2, hd = 8, max_len = 20, kvd = Hkv * hd;
    const int lens[2] = {13, 7};
    for (int r = 0; r < 2; ++r) {
        const int L = lens[r];
        const auto q = random_vec(size_t(L) * Hq * hd, 1 + r), k = random_vec(size_t(L) * kvd, 3 + r),
                   v = random_vec(size_t(L) * kvd, 5 + r);
        std::vector<float> want(q.size()), lse(size_t(L) * Hq);
        lima::cpu::attention_forward(want.data(), lse.data(), q.data(), k.data(), v.data(), {{0, L}}, L, Hq, Hkv, hd, L);
        std::vector<float> kc(size_t(2) * max_len * kvd, NAN), vc(kc.size(), NAN);  // other row: poisoned
        std::vector<int32_t> rows(static_cast<size_t>(L), r), pos(static_cast<size_t>(L));
        for (int t = 0; t < L; ++t) pos[size_t(t)] = t;
        std::fill(kc.begin() + long(r) * max_len * kvd, kc.begin() + long(r + 1) * max_len * kvd, 0.0f);
        std::fill(vc.begin() + long(r) * max_len * kvd, vc.begin() + long(r + 1) * max_len * kvd, 0.0f);
        lima::cpu::kv_cache_store(kc.data(), vc.data(), k.data(), v.data(), rows.data(), pos.data(), L, kvd, max_len);
        std::vector<float> got(q.size(), NAN);
        lima::cpu::decode_attention(got.data(), q.data(), kc.data(), vc.data(), rows.data(), pos.data(), L, Hq, Hkv, hd,
                                    max_len);
        for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 2e-5f) << "row " << r << " element " << i;
    }
}

TEST(ResidualAdd, AddsAndDropoutWithoutAKeyIsTheSameAdd) {
    auto res = random_vec(1000, 7), y = random_vec(1000, 8);
    auto a = res, b = res, y2 = y;
    lima::cpu::residual_add(a.data(), y.data(), 1000);
    lima::cpu::dropout_residual_forward(b.data(), y2.data(), 1000, 0.3f, nullptr, 2, 0);
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i], res[i] + y[i]);
        EXPECT_EQ(b[i], a[i]);
    }
}

TEST(MemoryPlan, PlannedActivationBytesEqualWhatTheForwardAllocates) {
    struct Shape {
        int L, d, F, Hq, Hkv, hd;
        long n;
    };
    for (const Shape s : {Shape{2, 16, 24, 4, 2, 4, 64}, Shape{3, 45, 48, 9, 3, 6, 11}, Shape{1, 32, 100, 4, 1, 8, 257},
                          Shape{4, 64, 40, 8, 8, 8, 1}}) {
        lima_model_config raw;
        lima_model_config_init(&raw);
        raw.num_layers = s.L;
        raw.hidden_size = s.d;
        raw.intermediate_size = s.F;
        raw.num_heads = s.Hq;
        raw.num_kv_heads = s.Hkv;
        raw.head_dim = s.hd;
        const lima::ModelConfig c(raw);
        lima::Activations a;
        a.ensure(c, s.n);
        int64_t held = 0;
        for (const auto &e : lima::activation_table(c)) held += int64_t((a.*e.buf).size() * sizeof(float));
        const std::vector<float> *all[] = {&a.resid, &a.xn1, &a.xn2, &a.x_mid, &a.rstd1, &a.rstd2, &a.rstdf, &a.q, &a.att,
                                           &a.lse, &a.k, &a.v, &a.g, &a.u, &a.h, &a.xf, &a.tmp};
        for (const auto *v : all) EXPECT_FALSE(v->empty()) << "a buffer of Activations is missing from the table";
        EXPECT_EQ(lima::activation_bytes(c, s.n), held) << "L " << s.L << " n " << s.n;
        // the layer slices of the last layer end inside their buffers
        const lima::LayerBuffers last = a.layer(c, s.L - 1, s.n);
        EXPECT_LE(last.h + s.n * s.F, a.h.data() + a.h.size());
        EXPECT_LE(last.lse + s.n * s.Hq, a.lse.data() + a.lse.size());
    }
}

}  // namespace
