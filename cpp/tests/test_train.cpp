// Training semantics through the C ABI: AdamW against its closed form, accumulation over
// micro-batches == one batch, packing == separate rows, padding costs nothing, clipping, weight
// decay only on matrices, dropout reproducibility, exact resume from saved model + optimiser state.
#include "helpers.hpp"

#include <map>

using namespace limatest;

namespace {

std::vector<std::vector<float>> all_grads(lima_trainer *t, lima_model *m) {
    std::vector<std::vector<float>> out;
    for (const auto &n : tensor_names(m)) out.push_back(read_grad(t, m, n));
    return out;
}

void expect_same_grads(lima_trainer *a, lima_trainer *b, lima_model *m, double tol) {
    const auto names = tensor_names(m);
    const auto ga = all_grads(a, m), gb = all_grads(b, m);
    for (size_t i = 0; i < names.size(); ++i) EXPECT_LT(rel_max_err(ga[i], gb[i]), tol) << names[i];
}

TEST(AdamW, TwoStepsMatchTheClosedForm) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 3);
    lima_train_config tc = train_config();
    tc.weight_decay = 0.1f;
    TrainerPtr t = make_trainer(m.get(), tc);
    const auto tok = tokens_for(8, c.vocab_size, 1);
    BatchPtr b = make_batch(1, 8, tok, std::vector<uint8_t>(8, 1), {});
    const std::string W = "model.layers.1.mlp.up_proj.weight", G = "model.layers.0.input_layernorm.weight";
    std::map<std::string, std::vector<double>> p, m1, m2;
    for (const auto &n : {W, G}) {
        auto w = read_tensor(m.get(), n);
        p[n].assign(w.begin(), w.end());
        m1[n].assign(w.size(), 0.0);
        m2[n].assign(w.size(), 0.0);
    }
    const float lrs[2] = {1e-3f, 5e-4f};
    for (int step = 1; step <= 2; ++step) {
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(t.get(), b.get(), 7, nullptr));
        std::map<std::string, std::vector<float>> g{{W, read_grad(t.get(), m.get(), W)}, {G, read_grad(t.get(), m.get(), G)}};
        lima_step_result r{};
        LIMA_OK_OR_FAIL(lima_trainer_step(t.get(), lrs[step - 1], &r));
        EXPECT_EQ(r.step, step);
        const double lr = lrs[step - 1], b1 = 0.9, b2 = 0.95, eps = 1e-8;
        for (const auto &n : {W, G}) {
            const double wd = n == W ? 0.1 : 0.0;  // norm gains are not decayed
            for (size_t i = 0; i < p[n].size(); ++i) {
                m1[n][i] = b1 * m1[n][i] + (1 - b1) * g[n][i];
                m2[n][i] = b2 * m2[n][i] + (1 - b2) * double(g[n][i]) * g[n][i];
                const double mh = m1[n][i] / (1 - std::pow(b1, step)), vh = m2[n][i] / (1 - std::pow(b2, step));
                p[n][i] = p[n][i] * (1 - lr * wd) - lr * mh / (std::sqrt(vh) + eps);
            }
            const auto got = read_tensor(m.get(), n);
            for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], p[n][i], 2e-6 * std::max(1.0, std::fabs(p[n][i]))) << n << "[" << i << "] step " << step;
        }
    }
}

TEST(AdamW, WeightDecayShrinksMatricesButNotNormGains) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 3);
    lima_train_config tc = train_config();
    tc.weight_decay = 0.5f;
    TrainerPtr t = make_trainer(m.get(), tc);
    const std::string W = "model.layers.0.self_attn.q_proj.weight", G = "model.norm.weight";
    const auto w0 = read_tensor(m.get(), W), g0 = read_tensor(m.get(), G);
    LIMA_OK_OR_FAIL(lima_trainer_step(t.get(), 0.1f, nullptr));  // zero gradient: only decay acts
    const auto w1 = read_tensor(m.get(), W), g1 = read_tensor(m.get(), G);
    for (size_t i = 0; i < w0.size(); ++i) ASSERT_FLOAT_EQ(w1[i], w0[i] * (1 - 0.1f * 0.5f));
    EXPECT_EQ(g0, g1);
}

TEST(Accumulation, FourMicroBatchesEqualOneBatch) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 5);
    const int T = 9;
    std::vector<int32_t> all;
    std::vector<uint8_t> mask;
    for (int r = 0; r < 4; ++r) {
        auto t = tokens_for(T, c.vocab_size, r);
        all.insert(all.end(), t.begin(), t.end());
        for (int i = 0; i < T; ++i) mask.push_back(i >= 2 + r);  // different target counts per row
    }
    BatchPtr big = make_batch(4, T, all, mask, {});
    int64_t total = 0;
    lima_batch_num_targets(big.get(), &total);
    TrainerPtr one = make_trainer(m.get(), train_config());
    lima_fb_result r1{};
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(one.get(), big.get(), total, &r1));
    TrainerPtr four = make_trainer(m.get(), train_config());
    double loss4 = 0.0;
    int64_t n4 = 0;
    for (int r = 0; r < 4; ++r) {
        std::vector<int32_t> t(all.begin() + r * T, all.begin() + (r + 1) * T);
        std::vector<uint8_t> mk(mask.begin() + r * T, mask.begin() + (r + 1) * T);
        BatchPtr mb = make_batch(1, T, t, mk, {});
        lima_fb_result fr{};
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(four.get(), mb.get(), total, &fr));
        loss4 += fr.loss_sum;
        n4 += fr.num_targets;
    }
    EXPECT_EQ(n4, total);
    EXPECT_NEAR(loss4, r1.loss_sum, 1e-5 * r1.loss_sum);
    expect_same_grads(one.get(), four.get(), m.get(), 1e-5);
}

TEST(Packing, PackedRowEqualsSeparateRowsAndPaddingCostsNothing) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 8);
    const auto a = tokens_for(6, c.vocab_size, 1), b = tokens_for(5, c.vocab_size, 2);
    // Packed: [a | b] in one row of 11.
    std::vector<int32_t> packed(a);
    packed.insert(packed.end(), b.begin(), b.end());
    std::vector<int32_t> seg{1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2};
    std::vector<uint8_t> mask(11, 1);
    BatchPtr pb = make_batch(1, 11, packed, mask, seg);
    // Separate: two rows of 6, the second padded with one token (any id; it is never seen).
    std::vector<int32_t> rows(a);
    rows.insert(rows.end(), b.begin(), b.end());
    rows.push_back(0);
    std::vector<int32_t> rseg{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    std::vector<uint8_t> rmask(12, 1);
    rmask[11] = 0;
    BatchPtr rb = make_batch(2, 6, rows, rmask, rseg);
    int64_t np = 0, nr = 0;
    lima_batch_num_targets(pb.get(), &np);
    lima_batch_num_targets(rb.get(), &nr);
    ASSERT_EQ(np, 5 + 4);
    ASSERT_EQ(nr, np);

    std::vector<float> lp(11), lr(12);
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(m.get(), pb.get(), lp.data(), 11));
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(m.get(), rb.get(), lr.data(), 12));
    EXPECT_EQ(lp[0], 0.0f);
    EXPECT_EQ(lp[6], 0.0f);  // first token of the second example: nothing predicts it
    for (int i = 0; i < 11; ++i) EXPECT_NEAR(lp[size_t(i)], lr[size_t(i)], 2e-6) << i;
    EXPECT_EQ(lr[11], 0.0f);

    TrainerPtr tp = make_trainer(m.get(), train_config()), tr = make_trainer(m.get(), train_config());
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tp.get(), pb.get(), np, nullptr));
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tr.get(), rb.get(), nr, nullptr));
    expect_same_grads(tp.get(), tr.get(), m.get(), 1e-5);

    // Changing the padding token changes nothing.
    rows[11] = 17;
    BatchPtr rb2 = make_batch(2, 6, rows, rmask, rseg);
    TrainerPtr tr2 = make_trainer(m.get(), train_config());
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tr2.get(), rb2.get(), nr, nullptr));
    expect_same_grads(tr.get(), tr2.get(), m.get(), 0.0 + 1e-12);
}

TEST(Eval, TokenLogprobsAreTheLogSoftmaxOfTheLogits) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 9);
    const auto tok = tokens_for(2 * 7, c.vocab_size, 4);
    BatchPtr b = make_batch(2, 7, tok, {}, {});
    std::vector<float> logits(2 * 7 * size_t(c.vocab_size)), lp(14);
    LIMA_OK_OR_FAIL(lima_model_logits(m.get(), b.get(), logits.data(), int64_t(logits.size())));
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(m.get(), b.get(), lp.data(), 14));
    for (int r = 0; r < 2; ++r)
        for (int t = 1; t < 7; ++t) {
            const float *row = logits.data() + (size_t(r) * 7 + size_t(t) - 1) * size_t(c.vocab_size);
            double mx = row[0], s = 0.0;
            for (int v = 1; v < c.vocab_size; ++v) mx = std::max(mx, double(row[v]));
            for (int v = 0; v < c.vocab_size; ++v) s += std::exp(double(row[v]) - mx);
            EXPECT_NEAR(lp[size_t(r * 7 + t)], row[tok[size_t(r * 7 + t)]] - mx - std::log(s), 1e-5);
        }
}

TEST(Clipping, ReportsTheNormBeforeClippingAndScalesTheUpdate) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 12);
    lima_train_config tc = train_config();
    tc.grad_clip = 1e-3f;
    TrainerPtr t = make_trainer(m.get(), tc);
    const auto tok = tokens_for(8, c.vocab_size, 3);
    BatchPtr b = make_batch(1, 8, tok, std::vector<uint8_t>(8, 1), {});
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(t.get(), b.get(), 7, nullptr));
    double ss = 0.0;
    for (const auto &g : all_grads(t.get(), m.get()))
        for (float x : g) ss += double(x) * x;
    lima_step_result r{};
    LIMA_OK_OR_FAIL(lima_trainer_step(t.get(), 1e-3f, &r));
    EXPECT_NEAR(r.grad_norm, std::sqrt(ss), 1e-6 * std::sqrt(ss));
    EXPECT_EQ(r.clipped, 1);
    for (const auto &g : all_grads(t.get(), m.get()))
        for (float x : g) ASSERT_EQ(x, 0.0f);  // zeroed after the step
}

TEST(Dropout, SameSeedSameGradientsOtherSeedOthersEvalUnaffected) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 21);
    const auto tok = tokens_for(2 * 10, c.vocab_size, 6);
    BatchPtr b = make_batch(2, 10, tok, std::vector<uint8_t>(20, 1), {});
    auto grads_with = [&](float p, uint64_t seed) {
        TrainerPtr t = make_trainer(m.get(), train_config(p, seed));
        EXPECT_EQ(lima_trainer_forward_backward(t.get(), b.get(), 18, nullptr), LIMA_OK);
        return all_grads(t.get(), m.get());
    };
    const auto g1 = grads_with(0.3f, 5), g2 = grads_with(0.3f, 5), g3 = grads_with(0.3f, 6), g0 = grads_with(0.0f, 5);
    EXPECT_EQ(g1, g2);
    EXPECT_NE(g1, g3);
    EXPECT_NE(g1, g0);
    // Eval ignores dropout: logprobs are the same whatever trainer exists.
    std::vector<float> a(20), bb(20);
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(m.get(), b.get(), a.data(), 20));
    TrainerPtr t = make_trainer(m.get(), train_config(0.3f, 5));
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(m.get(), b.get(), bb.data(), 20));
    EXPECT_EQ(a, bb);
}

// Trains `steps` optimiser steps of 2 micro-batches each, returning the loss of every micro-batch.
std::vector<double> train_steps(lima_model *m, lima_trainer *t, int from, int to, const lima_model_config &c) {
    std::vector<double> losses;
    for (int s = from; s < to; ++s)
        for (int micro = 0; micro < 2; ++micro) {
            const auto tok = tokens_for(2 * 12, c.vocab_size, s * 2 + micro);
            BatchPtr b = make_batch(2, 12, tok, std::vector<uint8_t>(24, 1), {});
            lima_fb_result r{};
            EXPECT_EQ(lima_trainer_forward_backward(t, b.get(), 44, &r), LIMA_OK) << lima_last_error();
            losses.push_back(r.loss_sum);
            if (micro == 1) EXPECT_EQ(lima_trainer_step(t, 3e-3f, nullptr), LIMA_OK) << lima_last_error();
        }
    (void)m;
    return losses;
}

TEST(Resume, SavedModelAndOptimiserStateContinueExactly) {
    const lima_model_config c = tiny_config();
    const lima_train_config tc = train_config(0.3f, 77);
    ModelPtr ma = make_model(c, 30);
    TrainerPtr ta = make_trainer(ma.get(), tc);
    const auto straight = train_steps(ma.get(), ta.get(), 0, 6, c);
    EXPECT_LT(straight.back(), straight.front());  // it learns

    const std::string dir = temp_dir("resume");
    ModelPtr mb = make_model(c, 30);
    TrainerPtr tb = make_trainer(mb.get(), tc);
    auto resumed = train_steps(mb.get(), tb.get(), 0, 3, c);
    LIMA_OK_OR_FAIL(lima_model_save(mb.get(), (dir + "/ckpt").c_str(), LIMA_DTYPE_F32, 0));
    LIMA_OK_OR_FAIL(lima_trainer_save_state(tb.get(), (dir + "/optimizer.safetensors").c_str()));
    tb.reset();
    mb.reset();
    lima_model *raw = nullptr;
    LIMA_OK_OR_FAIL(lima_model_load((dir + "/ckpt").c_str(), "cpu", &raw));
    ModelPtr mc(raw);
    TrainerPtr tcn = make_trainer(mc.get(), tc);
    LIMA_OK_OR_FAIL(lima_trainer_load_state(tcn.get(), (dir + "/optimizer.safetensors").c_str()));
    int64_t step = 0;
    lima_trainer_get_step(tcn.get(), &step);
    EXPECT_EQ(step, 3);
    const auto rest = train_steps(mc.get(), tcn.get(), 3, 6, c);
    resumed.insert(resumed.end(), rest.begin(), rest.end());
    ASSERT_EQ(resumed.size(), straight.size());
    for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(resumed[i], straight[i]) << "micro-batch " << i;
}

TEST(Resume, MidStepStateKeepsTheAccumulatedGradient) {
    const lima_model_config c = tiny_config();
    const lima_train_config tc = train_config(0.2f, 3);
    ModelPtr ma = make_model(c, 31);
    TrainerPtr ta = make_trainer(ma.get(), tc);
    const auto tok0 = tokens_for(24, c.vocab_size, 0), tok1 = tokens_for(24, c.vocab_size, 1);
    BatchPtr b0 = make_batch(2, 12, tok0, std::vector<uint8_t>(24, 1), {});
    BatchPtr b1 = make_batch(2, 12, tok1, std::vector<uint8_t>(24, 1), {});
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(ta.get(), b0.get(), 44, nullptr));
    const std::string path = temp_dir("midstep") + "/opt.safetensors";
    LIMA_OK_OR_FAIL(lima_trainer_save_state(ta.get(), path.c_str()));
    TrainerPtr tb = make_trainer(ma.get(), tc);
    LIMA_OK_OR_FAIL(lima_trainer_load_state(tb.get(), path.c_str()));
    lima_fb_result ra{}, rb{};
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(ta.get(), b1.get(), 44, &ra));
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb.get(), b1.get(), 44, &rb));
    EXPECT_EQ(ra.loss_sum, rb.loss_sum);  // same dropout key: micro-batch index restored
    expect_same_grads(ta.get(), tb.get(), ma.get(), 0.0 + 1e-12);
}

}  // namespace
