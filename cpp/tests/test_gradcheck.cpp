// Finite-difference checks of every parameter tensor (the input embedding included) on a tiny GQA
// model with a packed row, padding and a loss mask: dropout off, then on (the masks are a pure
// function of the key, so every perturbed forward sees the same ones).
#include "helpers.hpp"

using namespace limatest;

namespace {

struct Case {
    lima_model *m;
    lima_trainer *t;
    lima_batch *b;
    int64_t targets;
    double loss() {  // mean train-mode loss at the current weights; same dropout key every call
        lima_trainer_zero_grad(t);
        lima_fb_result r{};
        EXPECT_EQ(lima_trainer_forward_backward(t, b, targets, &r), LIMA_OK) << lima_last_error();
        return r.loss_sum / double(targets);
    }
};

void gradcheck(float dropout) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 11);
    // Row 0: two packed examples (5 + 6 tokens); row 1: one example of 8 and 3 padding.
    const int B = 2, T = 11;
    std::vector<int32_t> tok(B * T), seg(B * T);
    std::vector<uint8_t> mask(B * T, 0);
    for (int i = 0; i < B * T; ++i) tok[size_t(i)] = (i * 7 + 3) % c.vocab_size;
    for (int t = 0; t < T; ++t) {
        seg[size_t(t)] = t < 5 ? 1 : 2;
        seg[size_t(T + t)] = t < 8 ? 1 : 0;
        mask[size_t(t)] = (t >= 2 && t < 5) || t >= 7;
        mask[size_t(T + t)] = t >= 3 && t < 8;
    }
    BatchPtr b = make_batch(B, T, tok, mask, seg);
    TrainerPtr t = make_trainer(m.get(), train_config(dropout, 99));
    int64_t targets = 0;
    lima_batch_num_targets(b.get(), &targets);
    ASSERT_EQ(targets, 3 + 4 + 5);
    Case k{m.get(), t.get(), b.get(), targets};
    k.loss();
    std::vector<std::pair<std::string, std::vector<float>>> analytic;
    for (const auto &name : tensor_names(m.get())) analytic.push_back({name, read_grad(t.get(), m.get(), name)});

    const double h = 1e-2;
    for (auto &[name, grad] : analytic) {
        std::vector<float> w = read_tensor(m.get(), name);
        // Check the 6 largest-gradient elements and 4 spread ones: small gradients drown in fp32 noise.
        std::vector<size_t> idx(grad.size());
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
        std::partial_sort(idx.begin(), idx.begin() + std::min<size_t>(6, idx.size()), idx.end(),
                          [&](size_t a, size_t b2) { return std::fabs(grad[a]) > std::fabs(grad[b2]); });
        std::vector<size_t> pick(idx.begin(), idx.begin() + std::min<size_t>(6, idx.size()));
        for (size_t j = 1; j <= 4; ++j) pick.push_back((grad.size() * j) / 5);
        double gmax = 0.0;
        for (float g : grad) gmax = std::max(gmax, double(std::fabs(g)));
        ASSERT_GT(gmax, 0.0) << name << " has an all-zero gradient";
        for (size_t i : pick) {
            const float w0 = w[i];
            w[i] = float(w0 + h);
            lima_model_write_tensor(m.get(), name.c_str(), w.data(), int64_t(w.size()));
            const double lp = k.loss();
            w[i] = float(w0 - h);
            lima_model_write_tensor(m.get(), name.c_str(), w.data(), int64_t(w.size()));
            const double lm = k.loss();
            w[i] = w0;
            lima_model_write_tensor(m.get(), name.c_str(), w.data(), int64_t(w.size()));
            const double num = (lp - lm) / (2 * h);
            EXPECT_NEAR(grad[i], num, 2e-3 * gmax + 1e-2 * std::fabs(num)) << name << "[" << i << "] dropout " << dropout;
        }
    }
}

TEST(GradCheck, EveryParameterDropoutOff) { gradcheck(0.0f); }
TEST(GradCheck, EveryParameterDropoutOn) { gradcheck(0.3f); }

}  // namespace
