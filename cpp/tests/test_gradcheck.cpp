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

    for (auto &[name, grad] : analytic)
        finite_difference_check(m.get(), name, grad, [&] { return k.loss(); }, "dropout " + std::to_string(dropout));
}

TEST(GradCheck, EveryParameterDropoutOff) { gradcheck(0.0f); }
TEST(GradCheck, EveryParameterDropoutOn) { gradcheck(0.3f); }

}  // namespace
