// liblima against Hugging Face transformers' LlamaForCausalLM (fp32, CPU, eager attention): the
// golden files are written by cpp/tests/golden/make_golden.py. Two models: GQA with an odd hidden
// size and an explicit head_dim, and tied embeddings with another rope_theta. One batch with a
// right-padded row and a loss mask.
#include "helpers.hpp"

using namespace limatest;

namespace {

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, LogitsLossAndEveryGradientMatchTransformers) {
    const std::string dir = data_dir() + "/golden/" + GetParam();
    lima_model *raw = nullptr;
    LIMA_OK_OR_FAIL(lima_model_load(dir.c_str(), "cpu", &raw));
    ModelPtr m(raw);
    lima_model_config cfg;
    LIMA_OK_OR_FAIL(lima_model_get_config(m.get(), &cfg));
    const lima::StFile g = lima::st_open(dir + ".golden.safetensors");
    const auto &shape = g.tensors.at("input_ids").shape;
    const int B = int(shape[0]), T = int(shape[1]), V = cfg.vocab_size;
    const auto attn = golden(g, "attention_mask");
    BatchPtr b = golden_batch(g, "");

    // Logits on the non-padding positions.
    std::vector<float> logits(size_t(B) * T * V);
    LIMA_OK_OR_FAIL(lima_model_logits(m.get(), b.get(), logits.data(), int64_t(logits.size())));
    const auto ref = golden(g, "logits");
    std::vector<float> ours, theirs;
    for (size_t n = 0; n < size_t(B) * T; ++n)
        if (attn[n] > 0)
            for (int v = 0; v < V; ++v) {
                ours.push_back(logits[n * V + size_t(v)]);
                theirs.push_back(ref[n * V + size_t(v)]);
            }
    EXPECT_LT(rel_max_err(ours, theirs), 2e-5) << "logits";

    // Loss (HF: mean over target tokens) and every parameter gradient.
    TrainerPtr t = make_trainer(m.get(), train_config());
    int64_t targets = 0;
    LIMA_OK_OR_FAIL(lima_batch_num_targets(b.get(), &targets));
    lima_fb_result r{};
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(t.get(), b.get(), targets, &r));
    const double hf_loss = golden(g, "loss")[0];
    EXPECT_NEAR(r.loss_sum / double(r.num_targets), hf_loss, 2e-5 * hf_loss);
    for (const std::string &name : tensor_names(m.get())) {
        ASSERT_TRUE(g.tensors.count("grad." + name)) << name << " has no golden gradient";
        EXPECT_LT(rel_max_err(read_grad(t.get(), m.get(), name), golden(g, "grad." + name)), 2e-5) << name;
    }
}

INSTANTIATE_TEST_SUITE_P(HfLlama, Golden, ::testing::Values("gqa_odd", "tied", "rope_llama3", "rope_linear", "bias"));

}  // namespace

namespace {

class GoldenGenerate : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenGenerate, GreedyDecodingEqualsTransformersGenerate) {
    const std::string dir = data_dir() + "/golden/" + GetParam();
    lima_model *raw = nullptr;
    LIMA_OK_OR_FAIL(lima_model_load(dir.c_str(), "cpu", &raw));
    ModelPtr m(raw);
    const lima::StFile g = lima::st_open(dir + ".golden.safetensors");
    const auto prompt = golden(g, "generate.prompt"), want = golden(g, "generate.output");
    std::vector<int32_t> p(prompt.begin(), prompt.end());
    const int32_t len = int32_t(p.size());
    lima_generator *gen = nullptr;
    LIMA_OK_OR_FAIL(lima_generator_create(m.get(), 1, 64, &gen));
    lima_sampling s;
    lima_sampling_init(&s);
    s.temperature = 0.0f;
    s.repetition_penalty = 1.0f;
    LIMA_OK_OR_FAIL(lima_generator_start(gen, 1, p.data(), &len, nullptr));
    std::vector<int32_t> got(p);
    while (got.size() < want.size()) {
        int32_t t;
        LIMA_OK_OR_FAIL(lima_generator_step(gen, &s, nullptr, &t));
        got.push_back(t);
    }
    lima_generator_free(gen);
    EXPECT_EQ(got, std::vector<int32_t>(want.begin(), want.end()));
}

INSTANTIATE_TEST_SUITE_P(HfLlama, GoldenGenerate, ::testing::Values("gqa_odd", "tied", "rope_llama3", "rope_linear", "bias"));

}  // namespace

namespace {

// Ten optimiser steps of LIMA's recipe (AdamW 0.9/0.95, weight decay 0.1 on matrices, linear decay,
// clipping at a norm some steps exceed, dropout off) against transformers + torch.optim.AdamW:
// cpp/tests/golden/make_trajectory.py wrote the batches, losses, gradient norms and final weights.
TEST(GoldenTrajectory, TenAdamWStepsMatchTransformersAndTorchAdamW) {
    const std::string dir = data_dir() + "/golden/gqa_odd";
    lima_model *raw = nullptr;
    LIMA_OK_OR_FAIL(lima_model_load(dir.c_str(), "cpu", &raw));
    ModelPtr m(raw);
    const lima::StFile g = lima::st_open(dir + ".trajectory.safetensors");
    lima_train_config tc;
    lima_train_config_init(&tc);
    tc.beta1 = 0.9f;
    tc.beta2 = 0.95f;
    tc.eps = 1e-8f;
    tc.weight_decay = 0.1f;
    tc.resid_dropout = 0.0f;
    tc.grad_clip = golden(g, "grad_clip")[0];
    TrainerPtr t = make_trainer(m.get(), tc);
    const auto loss = golden(g, "loss"), norm = golden(g, "grad_norm"), lr = golden(g, "lr");
    int clipped = 0;
    for (size_t s = 0; s < loss.size(); ++s) {
        BatchPtr b = golden_batch(g, "step" + std::to_string(s) + ".");
        int64_t targets = 0;
        LIMA_OK_OR_FAIL(lima_batch_num_targets(b.get(), &targets));
        lima_fb_result fb{};
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(t.get(), b.get(), targets, &fb));
        lima_step_result st{};
        LIMA_OK_OR_FAIL(lima_trainer_step(t.get(), lr[s], &st));
        EXPECT_NEAR(fb.loss_sum / double(fb.num_targets), loss[s], 1e-5 * loss[s]) << "loss of step " << s;
        EXPECT_NEAR(st.grad_norm, norm[s], 1e-5 * norm[s]) << "grad norm of step " << s;
        EXPECT_EQ(st.clipped, norm[s] > tc.grad_clip) << "clipping of step " << s;
        clipped += st.clipped;
    }
    EXPECT_GT(clipped, 0);
    EXPECT_LT(clipped, int(loss.size()));
    for (const std::string &name : tensor_names(m.get())) {
        std::vector<float> w(g.tensors.at("final." + name).numel());
        LIMA_OK_OR_FAIL(lima_model_read_tensor(m.get(), name.c_str(), w.data(), int64_t(w.size())));
        EXPECT_LT(rel_max_err(w, golden(g, "final." + name)), 1e-5) << name;
    }
}

}  // namespace
