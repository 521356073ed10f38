// Full fine-tuning with the optimiser offloaded to the host (offload.hpp), run on the CPU: the split
// (per-unit gradient staging, the host norm, the unit-by-unit update on the worker thread overlapped
// with the next forward) gives the plain path's weights bit for bit, and its state is the plain
// path's state.
#include "helpers.hpp"

#include <atomic>
#include <chrono>
#include <cstring>
#include <iterator>
#include <thread>

#include "common.hpp"
#include "offload.hpp"

using namespace limatest;

namespace {

std::vector<std::vector<float>> all_weights(lima_model *m) {
    std::vector<std::vector<float>> out;
    for (const auto &n : tensor_names(m)) out.push_back(read_tensor(m, n));
    return out;
}

struct Trace {
    std::vector<double> losses, norms;
    std::vector<int> clipped;
    std::vector<std::vector<float>> eval;  // token log-probabilities after each step
};

// `steps` optimiser steps of 3 micro-batches each (the second one without targets), an eval forward
// after every step (it must see the updated weights).
void train(lima_model *m, lima_trainer *t, const lima_model_config &c, int from, int to, Trace &tr) {
    for (int s = from; s < to; ++s) {
        for (int micro = 0; micro < 3; ++micro) {
            const auto tok = tokens_for(2 * 10, c.vocab_size, s * 3 + micro);
            std::vector<uint8_t> mask(20, micro == 1 ? 0 : 1);
            BatchPtr b = make_batch(2, 10, tok, mask, {});
            lima_fb_result r{};
            ASSERT_EQ(lima_trainer_forward_backward(t, b.get(), 36, &r), LIMA_OK) << lima_last_error();
            tr.losses.push_back(r.loss_sum);
        }
        lima_step_result r{};
        ASSERT_EQ(lima_trainer_step(t, 4e-3f, &r), LIMA_OK) << lima_last_error();
        tr.norms.push_back(r.grad_norm);
        tr.clipped.push_back(r.clipped);
        const auto tok = tokens_for(12, c.vocab_size, 100 + s);
        BatchPtr e = make_batch(1, 12, tok, std::vector<uint8_t>(12, 1), {});
        std::vector<float> lp(12);
        ASSERT_EQ(lima_model_token_logprobs(m, e.get(), lp.data(), 12), LIMA_OK) << lima_last_error();
        tr.eval.push_back(lp);
    }
}

void expect_same(const Trace &a, const Trace &b) {
    EXPECT_EQ(a.losses, b.losses);
    EXPECT_EQ(a.norms, b.norms);
    EXPECT_EQ(a.clipped, b.clipped);
    EXPECT_EQ(a.eval, b.eval);
}

class OffloadVsPlain : public ::testing::TestWithParam<bool> {};

TEST_P(OffloadVsPlain, SameWeightsBitForBitAfterSeveralSteps) {
    lima_model_config c = tiny_config();
    c.tie_word_embeddings = GetParam() ? 1 : 0;
    lima_train_config tc = train_config(0.2f, 9);
    tc.weight_decay = 0.1f;
    tc.grad_clip = 0.5f;  // small enough to clip some steps: the scale comes from the host norm
    ModelPtr mp = make_model(c, 41), mo = make_model(c, 41);
    TrainerPtr tp = make_trainer(mp.get(), tc);
    lima_train_config to = tc;
    to.offload = 1;
    TrainerPtr t = make_trainer(mo.get(), to);
    Trace plain, off;
    train(mp.get(), tp.get(), c, 0, 5, plain);
    train(mo.get(), t.get(), c, 0, 5, off);
    expect_same(plain, off);
    int clipped = 0;
    for (int x : plain.clipped) clipped += x;
    EXPECT_GT(clipped, 0);
    EXPECT_LT(plain.losses.back(), plain.losses.front());  // it learns
    const auto wp = all_weights(mp.get()), wo = all_weights(mo.get());
    const auto names = tensor_names(mp.get());
    for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(wp[i], wo[i]) << names[i];
    // the gradient after a micro-batch: the staged units handed back whole
    const auto tok = tokens_for(20, c.vocab_size, 77);
    BatchPtr b = make_batch(2, 10, tok, std::vector<uint8_t>(20, 1), {});
    ASSERT_EQ(lima_trainer_forward_backward(tp.get(), b.get(), 18, nullptr), LIMA_OK);
    ASSERT_EQ(lima_trainer_forward_backward(t.get(), b.get(), 18, nullptr), LIMA_OK);
    for (const auto &n : names) EXPECT_EQ(read_grad(tp.get(), mp.get(), n), read_grad(t.get(), mo.get(), n)) << n;
}

INSTANTIATE_TEST_SUITE_P(TiedAndUntied, OffloadVsPlain, ::testing::Values(false, true));

TEST(Offload, StateMovesBetweenOffloadedAndPlainTrainersMidStep) {
    const lima_model_config c = tiny_config();
    lima_train_config tc = train_config(0.1f, 4);
    ModelPtr ma = make_model(c, 42);
    TrainerPtr ta = make_trainer(ma.get(), tc);
    Trace straight;
    train(ma.get(), ta.get(), c, 0, 4, straight);

    // offloaded for two steps and one micro-batch, saved; a plain trainer takes over, then an offloaded one
    const std::string dir = temp_dir("offload-resume");
    lima_train_config to = tc;
    to.offload = 1;
    ModelPtr mb = make_model(c, 42);
    Trace mixed;
    {
        TrainerPtr tb = make_trainer(mb.get(), to);
        train(mb.get(), tb.get(), c, 0, 2, mixed);
        const auto tok = tokens_for(20, c.vocab_size, 2 * 3);
        BatchPtr b = make_batch(2, 10, tok, std::vector<uint8_t>(20, 1), {});
        lima_fb_result r{};
        ASSERT_EQ(lima_trainer_forward_backward(tb.get(), b.get(), 36, &r), LIMA_OK) << lima_last_error();
        EXPECT_EQ(r.loss_sum, straight.losses[6]);
        LIMA_OK_OR_FAIL(lima_trainer_save_state(tb.get(), (dir + "/opt.safetensors").c_str()));
        LIMA_OK_OR_FAIL(lima_model_save(mb.get(), (dir + "/ckpt").c_str(), LIMA_DTYPE_F32, 0));
    }
    lima_model *raw = nullptr;
    LIMA_OK_OR_FAIL(lima_model_load((dir + "/ckpt").c_str(), "cpu", &raw));
    ModelPtr mc(raw);
    {
        TrainerPtr plain = make_trainer(mc.get(), tc);
        LIMA_OK_OR_FAIL(lima_trainer_load_state(plain.get(), (dir + "/opt.safetensors").c_str()));
        for (int micro = 1; micro < 3; ++micro) {
            const auto tok = tokens_for(20, c.vocab_size, 2 * 3 + micro);
            BatchPtr b = make_batch(2, 10, tok, std::vector<uint8_t>(20, micro == 1 ? 0 : 1), {});
            ASSERT_EQ(lima_trainer_forward_backward(plain.get(), b.get(), 36, nullptr), LIMA_OK) << lima_last_error();
        }
        ASSERT_EQ(lima_trainer_step(plain.get(), 4e-3f, nullptr), LIMA_OK);
        LIMA_OK_OR_FAIL(lima_trainer_save_state(plain.get(), (dir + "/opt2.safetensors").c_str()));
    }
    TrainerPtr again = make_trainer(mc.get(), to);
    LIMA_OK_OR_FAIL(lima_trainer_load_state(again.get(), (dir + "/opt2.safetensors").c_str()));
    Trace rest;
    train(mc.get(), again.get(), c, 3, 4, rest);
    const auto wa = all_weights(ma.get()), wc = all_weights(mc.get());
    for (size_t i = 0; i < wa.size(); ++i) EXPECT_EQ(wa[i], wc[i]) << tensor_names(ma.get())[i];
    EXPECT_EQ(rest.norms.back(), straight.norms.back());
}

TEST(Offload, RefusesAdaptersSecondTrainersAndBadValues) {
    const lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 43);
    lima_train_config to = train_config();
    to.offload = 2;
    lima_trainer *t = nullptr;
    EXPECT_EQ(lima_trainer_create(m.get(), &to, &t), LIMA_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(lima_last_error()).find("offload must be 0 or 1"), std::string::npos) << lima_last_error();
    to.offload = 1;
    {
        TrainerPtr plain = make_trainer(m.get(), train_config());
        EXPECT_EQ(lima_trainer_create(m.get(), &to, &t), LIMA_ERR_STATE);
        EXPECT_NE(std::string(lima_last_error()).find("trainer(s)"), std::string::npos) << lima_last_error();
    }
    LIMA_OK_OR_FAIL(lima_model_add_adapter(m.get(), 4, 8.0f, 0.0f, LIMA_LORA_ALL, nullptr, 0, 0, 1));
    EXPECT_EQ(lima_trainer_create(m.get(), &to, &t), LIMA_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(lima_last_error()).find("adapter"), std::string::npos) << lima_last_error();
}

// The host side alone: units are published in forward order, each waiter blocks until its unit is
// updated, later units still update while the first are in use, and a failed update reaches both
// the waiter and drain().
TEST(HostOffload, PublishesUnitsInOrderAndWaitersSeeEachAsItLands) {
    const int units = 4, per = 1000;
    std::vector<float> w(units * per, 1.0f), g(units * per, 0.5f), m1(units * per, 0.0f), m2(units * per, 0.0f);
    std::vector<lima::OffloadTensor> tensors;
    std::vector<std::pair<int64_t, int64_t>> bounds;
    for (int u = 0; u < units; ++u) {
        tensors.push_back({int64_t(u) * per, per, u % 2 == 0});
        bounds.push_back({int64_t(u) * per, int64_t(u + 1) * per});
    }
    lima::HostOffload h(w.data(), g.data(), m1.data(), m2.data(), tensors, bounds);
    int32_t clipped = -1;
    EXPECT_DOUBLE_EQ(h.norm(), std::sqrt(units * per * 0.25));
    const float scale = lima::clip_scale(h.norm(), 0.0f, &clipped);
    EXPECT_EQ(scale, 1.0f);
    std::vector<int> order;
    std::atomic<bool> gate{false};
    h.step({1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.0f, 1}, 1.0f, [&](int u) {
        if (u == 2)
            while (!gate) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        order.push_back(u);
    });
    h.wait_ready(0);
    h.wait_ready(1);
    EXPECT_LT(w[0], 1.0f);                    // both updated (unit 0 decayed, unit 1 not) ...
    EXPECT_LT(w[0], w[per]);
    EXPECT_EQ(g[0], 0.0f);                    // ... and their gradient zeroed
    EXPECT_EQ(g[3 * per], 0.5f);              // unit 3 waits behind unit 2's publish
    gate = true;
    h.wait_ready(3);
    EXPECT_EQ((std::vector<int>{0, 1, 2, 3}), order);
    EXPECT_LT(w[3 * per], 1.0f);
    h.step({1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.0f, 2}, 1.0f, [&](int u) {
        if (u == 1) throw lima::Error(LIMA_ERR_IO, "upload of unit 1 failed");
    });
    EXPECT_THROW(h.wait_ready(3), lima::Error);
    h.drain();  // the failure was reported once
}

// The host's bf16 conversion (what the offloaded step uploads): round to nearest, ties to even, NaN
// kept a NaN (the device's __float2bfloat16 rule; the GPU test compares the two bitwise).
TEST(HostOffload, Bf16ConversionRoundsToNearestEven) {
    const uint32_t in[] = {0x3f800000u, 0x3f808000u, 0x3f818000u, 0x3f808001u, 0xbf808000u, 0x7f800000u, 0x7f7fffffu, 0x7fc00001u,
                           0x00000001u, 0x80000000u};
    const uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xbf80, 0x7f80, 0x7f80, 0x7fff, 0x0000, 0x8000};
    std::vector<float> f(std::size(in));
    std::memcpy(f.data(), in, sizeof in);
    std::vector<uint16_t> out(f.size());
    lima::to_bf16(out.data(), f.data(), int64_t(f.size()));
    for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(out[i], want[i]) << std::hex << in[i];
}

}  // namespace
