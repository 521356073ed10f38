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

namespace {

using namespace limatest;

const char *const kProj[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                              "mlp.up_proj", "mlp.down_proj"};

std::string proj(int l, int j, const char *what = "weight") {
    return "model.layers." + std::to_string(l) + "." + kProj[j] + "." + what;
}

// Every B of the adapter set to the same non-zero values in both models (a fresh B is 0).
void same_b(lima_model *a, lima_model *b, const lima_model_config &c, int r) {
    const int64_t kv = int64_t(c.num_kv_heads) * (c.hidden_size / c.num_heads);
    const int64_t outs[7] = {c.hidden_size, kv, kv, c.hidden_size, c.intermediate_size, c.intermediate_size, c.hidden_size};
    for (int l = 0; l < c.num_layers; ++l)
        for (int j = 0; j < 7; ++j) {
            const std::string name = "base_model.model." + proj(l, j, "lora_B.weight");
            const int64_t n = outs[j] * r;
            std::vector<float> w(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) w[size_t(i)] = 0.2f * std::cos(float(i * 7 + l * 3 + j));
            ASSERT_EQ(lima_model_write_tensor(a, name.c_str(), w.data(), n), LIMA_OK) << lima_last_error();
            ASSERT_EQ(lima_model_write_tensor(b, name.c_str(), w.data(), n), LIMA_OK) << lima_last_error();
        }
}

// QLoRA is LoRA over the dequantised weights: the same logits, losses, adapter gradients and updates,
// bit for bit, as an fp32 model holding exactly the NF4 values; close to the unquantised model.
TEST(Qlora, EqualsLoraOverTheDequantisedWeightsAndStaysCloseToTheOriginal) {
    lima_model_config c = tiny_config();
    c.hidden_size = 64;
    c.intermediate_size = 96;
    c.initializer_range = 0.05f;
    ModelPtr q = make_model(c, 5), ref = make_model(c, 5), orig = make_model(c, 5);
    int64_t before = 0, after = 0, n = 0;
    lima_model_weight_bytes(q.get(), &before);
    ASSERT_EQ(lima_model_quantize_nf4(q.get(), 1), LIMA_OK) << lima_last_error();
    lima_model_weight_bytes(q.get(), &after);
    lima_model_num_params(q.get(), &n);
    int64_t n_ref = 0;
    lima_model_num_params(ref.get(), &n_ref);
    EXPECT_EQ(n, n_ref) << "every weight is still counted";
    EXPECT_LT(after, before) << "NF4 projections take less than fp32 ones";
    for (int l = 0; l < c.num_layers; ++l)
        for (int j = 0; j < 7; ++j) {  // ref := the dequantised values
            std::vector<float> w = read_tensor(ref.get(), proj(l, j));
            ASSERT_EQ(lima_model_read_tensor(q.get(), proj(l, j).c_str(), w.data(), int64_t(w.size())), LIMA_OK) << lima_last_error();
            ASSERT_EQ(lima_model_write_tensor(ref.get(), proj(l, j).c_str(), w.data(), int64_t(w.size())), LIMA_OK);
            const std::vector<float> o = read_tensor(orig.get(), proj(l, j));
            double err = 0, mx = 0;
            for (size_t i = 0; i < w.size(); ++i) {
                err = std::max(err, double(std::fabs(w[i] - o[i])));
                mx = std::max(mx, double(std::fabs(o[i])));
            }
            ASSERT_LT(err, 0.2 * mx) << proj(l, j) << ": NF4's largest step is under 0.17 of a block's absmax";
            ASSERT_GT(err, 0.0) << "the values are quantised";
        }
    const int32_t eot[1] = {c.vocab_size - 1};
    for (lima_model *m : {q.get(), ref.get(), orig.get()})
        ASSERT_EQ(lima_model_add_adapter(m, 4, 8.0f, 0.1f, LIMA_LORA_ALL, eot, 1, 0, 9), LIMA_OK) << lima_last_error();
    same_b(q.get(), ref.get(), c, 4);
    same_b(orig.get(), ref.get(), c, 4);
    std::vector<int32_t> tok(22), seg(22, 1);
    std::vector<uint8_t> mask(22, 0);
    for (int i = 0; i < 22; ++i) {
        tok[size_t(i)] = (i * 5 + 1) % c.vocab_size;
        mask[size_t(i)] = i % 11 > 4;
    }
    BatchPtr b = make_batch(2, 11, tok, mask, seg);
    int64_t tg = 0;
    lima_batch_num_targets(b.get(), &tg);
    TrainerPtr tq = make_trainer(q.get(), train_config(0.2f, 3)), tr = make_trainer(ref.get(), train_config(0.2f, 3)),
               to = make_trainer(orig.get(), train_config(0.2f, 3));
    for (int s = 0; s < 3; ++s) {
        lima_fb_result fq{}, fr{}, fo{};
        ASSERT_EQ(lima_trainer_forward_backward(tq.get(), b.get(), tg, &fq), LIMA_OK) << lima_last_error();
        ASSERT_EQ(lima_trainer_forward_backward(tr.get(), b.get(), tg, &fr), LIMA_OK) << lima_last_error();
        ASSERT_EQ(lima_trainer_forward_backward(to.get(), b.get(), tg, &fo), LIMA_OK) << lima_last_error();
        EXPECT_EQ(fq.loss_sum, fr.loss_sum) << "step " << s;
        EXPECT_NEAR(fq.loss_sum, fo.loss_sum, 0.02 * fo.loss_sum) << "step " << s << ": NF4 is close to the original weights";
        const std::string a0 = "base_model.model." + proj(1, 6, "lora_A.weight");
        std::vector<float> gq(size_t(4 * c.intermediate_size)), gr(gq.size());
        ASSERT_EQ(lima_trainer_read_grad(tq.get(), a0.c_str(), gq.data(), int64_t(gq.size())), LIMA_OK) << lima_last_error();
        ASSERT_EQ(lima_trainer_read_grad(tr.get(), a0.c_str(), gr.data(), int64_t(gr.size())), LIMA_OK) << lima_last_error();
        EXPECT_EQ(gq, gr) << "step " << s;
        lima_step_result st{};
        for (lima_trainer *t : {tq.get(), tr.get(), to.get()}) ASSERT_EQ(lima_trainer_step(t, 1e-2f, &st), LIMA_OK) << lima_last_error();
    }
    std::vector<float> lq(size_t(22 * c.vocab_size)), lr(lq.size());
    ASSERT_EQ(lima_model_logits(q.get(), b.get(), lq.data(), int64_t(lq.size())), LIMA_OK);
    ASSERT_EQ(lima_model_logits(ref.get(), b.get(), lr.data(), int64_t(lr.size())), LIMA_OK);
    EXPECT_EQ(lq, lr);
    // decoding runs over the NF4 weights too, token for token as over the dequantised ones
    GenPtr gq = make_gen(q.get(), 1, 32), gr = make_gen(ref.get(), 1, 32);
    const int32_t prompt[3] = {1, 7, 9}, len[1] = {3};
    const uint64_t seed[1] = {1};
    ASSERT_EQ(lima_generator_start(gq.get(), 1, prompt, len, seed), LIMA_OK) << lima_last_error();
    ASSERT_EQ(lima_generator_start(gr.get(), 1, prompt, len, seed), LIMA_OK) << lima_last_error();
    const lima_sampling g = greedy();
    for (int s = 0; s < 8; ++s) {
        int32_t a = -1, bb = -2;
        ASSERT_EQ(lima_generator_step(gq.get(), &g, nullptr, &a), LIMA_OK) << lima_last_error();
        ASSERT_EQ(lima_generator_step(gr.get(), &g, nullptr, &bb), LIMA_OK) << lima_last_error();
        EXPECT_EQ(a, bb) << "step " << s;
    }
}

TEST(Qlora, WhatANf4ModelRefusesIsAClearError) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 1);
    ASSERT_EQ(lima_model_quantize_nf4(m.get(), 0), LIMA_OK) << lima_last_error();
    EXPECT_LIMA_ERR(lima_model_quantize_nf4(m.get(), 0), LIMA_ERR_STATE, "already quantised");
    lima_trainer *t = nullptr;
    lima_train_config tc = train_config();
    EXPECT_LIMA_ERR(lima_trainer_create(m.get(), &tc, &t), LIMA_ERR_STATE, "trains adapters only");
    const std::string dir = temp_dir("nf4_save");
    EXPECT_LIMA_ERR(lima_model_save(m.get(), dir.c_str(), LIMA_DTYPE_BF16, 0), LIMA_ERR_UNSUPPORTED, "NF4");
    ASSERT_EQ(lima_model_add_adapter(m.get(), 2, 4.0f, 0.0f, LIMA_LORA_Q, nullptr, 0, 0, 1), LIMA_OK) << lima_last_error();
    EXPECT_LIMA_ERR(lima_model_merge_adapter(m.get()), LIMA_ERR_UNSUPPORTED, "unquantised base");
    ASSERT_EQ(lima_model_save_adapter(m.get(), dir.c_str(), "base"), LIMA_OK) << lima_last_error();
    ModelPtr m2 = make_model(c, 1);
    ASSERT_EQ(lima_model_add_adapter(m2.get(), 2, 4.0f, 0.0f, LIMA_LORA_Q, nullptr, 0, 0, 1), LIMA_OK);
    EXPECT_LIMA_ERR(lima_model_quantize_nf4(m2.get(), 0), LIMA_ERR_STATE, "before adding an adapter");
}

}  // namespace
