// LoRA adapters against PEFT over transformers (fp32, CPU): cpp/tests/golden/make_lora.py wrote a
// PEFT adapter per golden model (random A, B and trainable token rows) and, for one batch, the
// logits, the loss and the gradient of every adapter tensor; for the untied model also 6 AdamW
// steps. Then what PEFT cannot tell us: finite differences with adapter and residual dropout on,
// save/load round trips, merge, the frozen base, the EOT rows learning, and bad input.
#include <fstream>

#include "helpers.hpp"

using namespace limatest;

namespace {

ModelPtr load(const std::string &dir) {
    lima_model *raw = nullptr;
    EXPECT_EQ(lima_model_load(dir.c_str(), "cpu", &raw), LIMA_OK) << lima_last_error();
    return ModelPtr(raw);
}

std::vector<std::string> adapter_names(const lima::StFile &g) {  // from the "grad." entries
    std::vector<std::string> out;
    for (const auto &[name, e] : g.tensors)
        if (name.rfind("grad.", 0) == 0) out.push_back(name.substr(5));
    return out;
}

std::vector<float> read(lima_model *m, const std::string &name, int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    EXPECT_EQ(lima_model_read_tensor(m, name.c_str(), v.data(), n), LIMA_OK) << lima_last_error();
    return v;
}

std::vector<float> logits(lima_model *m, lima_batch *b, int B, int T) {
    lima_model_config c;
    lima_model_get_config(m, &c);
    std::vector<float> out(size_t(B) * T * size_t(c.vocab_size));
    EXPECT_EQ(lima_model_logits(m, b, out.data(), int64_t(out.size())), LIMA_OK) << lima_last_error();
    return out;
}

class LoraGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(LoraGolden, LogitsLossAndEveryAdapterGradientMatchPeft) {
    const std::string dir = data_dir() + "/golden/" + GetParam();
    ModelPtr m = load(dir);
    ASSERT_EQ(lima_model_load_adapter(m.get(), (dir + "_lora").c_str()), LIMA_OK) << lima_last_error();
    int32_t r = 0;
    uint32_t targets = 0;
    int64_t n = 0;
    ASSERT_EQ(lima_model_adapter_info(m.get(), &r, nullptr, nullptr, &targets, &n), LIMA_OK);
    EXPECT_EQ(r, 4);
    EXPECT_EQ(targets, LIMA_LORA_ALL);
    const lima::StFile g = lima::st_open(dir + ".lora.safetensors");
    const auto &shape = g.tensors.at("input_ids").shape;
    const int B = int(shape[0]), T = int(shape[1]);
    BatchPtr b = golden_batch(g, "");
    const auto attn = golden(g, "attention_mask"), ref = golden(g, "logits");
    const auto ours_all = logits(m.get(), b.get(), B, T);
    const size_t V = ref.size() / (size_t(B) * T);
    std::vector<float> ours, theirs;
    for (size_t i = 0; i < size_t(B) * T; ++i)
        if (attn[i] > 0)
            for (size_t v = 0; v < V; ++v) {
                ours.push_back(ours_all[i * V + v]);
                theirs.push_back(ref[i * V + v]);
            }
    EXPECT_LT(rel_max_err(ours, theirs), 2e-5) << "logits";

    TrainerPtr t = make_trainer(m.get(), train_config());
    int64_t tg = 0;
    lima_batch_num_targets(b.get(), &tg);
    lima_fb_result fb{};
    ASSERT_EQ(lima_trainer_forward_backward(t.get(), b.get(), tg, &fb), LIMA_OK) << lima_last_error();
    const double hf = golden(g, "loss")[0];
    EXPECT_NEAR(fb.loss_sum / double(fb.num_targets), hf, 2e-5 * hf);
    int64_t total = 0;
    for (const std::string &name : adapter_names(g)) {
        const auto want = golden(g, "grad." + name);
        std::vector<float> got(want.size());
        ASSERT_EQ(lima_trainer_read_grad(t.get(), name.c_str(), got.data(), int64_t(got.size())), LIMA_OK) << lima_last_error();
        EXPECT_LT(rel_max_err(got, want), 2e-5) << name;
        total += int64_t(want.size());
    }
    EXPECT_EQ(total, n) << "every trainable adapter element has a PEFT gradient";
    // the base is frozen: it has no gradient buffer any more
    EXPECT_LIMA_ERR(lima_trainer_read_grad(t.get(), "model.norm.weight", ours.data(), 1), LIMA_ERR_INVALID_ARGUMENT,
                    "no parameter named model.norm.weight");
}

INSTANTIATE_TEST_SUITE_P(HfPeft, LoraGolden, ::testing::Values("gqa_odd", "tied"));

// Six AdamW steps over the adapter (LIMA's betas, weight decay 0.1, linear decay, clipping that
// some steps exceed) against torch.optim.AdamW on PEFT's trainable parameters.
TEST(LoraGoldenTrajectory, SixAdamWStepsMatchPeftAndTorchAdamW) {
    const std::string dir = data_dir() + "/golden/gqa_odd";
    ModelPtr m = load(dir);
    ASSERT_EQ(lima_model_load_adapter(m.get(), (dir + "_lora").c_str()), LIMA_OK) << lima_last_error();
    const lima::StFile g = lima::st_open(dir + ".lora.safetensors");
    lima_train_config tc = train_config();
    tc.beta1 = 0.9f;
    tc.beta2 = 0.95f;
    tc.eps = 1e-8f;
    tc.weight_decay = 0.1f;
    tc.grad_clip = golden(g, "traj.grad_clip")[0];
    TrainerPtr t = make_trainer(m.get(), tc);
    const auto loss = golden(g, "traj.loss"), norm = golden(g, "traj.grad_norm"), lr = golden(g, "traj.lr");
    int clipped = 0;
    for (size_t s = 0; s < loss.size(); ++s) {
        BatchPtr b = golden_batch(g, "step" + std::to_string(s) + ".");
        int64_t tg = 0;
        lima_batch_num_targets(b.get(), &tg);
        lima_fb_result fb{};
        ASSERT_EQ(lima_trainer_forward_backward(t.get(), b.get(), tg, &fb), LIMA_OK) << lima_last_error();
        lima_step_result st{};
        ASSERT_EQ(lima_trainer_step(t.get(), lr[s], &st), LIMA_OK) << lima_last_error();
        EXPECT_NEAR(fb.loss_sum / double(fb.num_targets), loss[s], 1e-5 * loss[s]) << "loss of step " << s;
        EXPECT_NEAR(st.grad_norm, norm[s], 1e-5 * norm[s]) << "grad norm of step " << s;
        clipped += st.clipped;
    }
    EXPECT_GT(clipped, 0);
    EXPECT_LT(clipped, int(loss.size()));
    for (const auto &[name, e] : g.tensors) {
        if (name.rfind("final.", 0) != 0) continue;
        const auto want = golden(g, name);
        EXPECT_LT(rel_max_err(read(m.get(), name.substr(6), int64_t(want.size())), want), 1e-5) << name;
    }
}

// A small model, a packed batch and an adapter with every target and two trainable tokens.
struct Fixture {
    ModelPtr m;
    BatchPtr b;
    int64_t targets = 0;
    int B = 2, T = 11;
    explicit Fixture(float lora_dropout = 0.0f, uint64_t seed = 3) {
        lima_model_config c = tiny_config();
        m = make_model(c, 11);
        std::vector<int32_t> tok(size_t(B * T)), seg(size_t(B * T));
        std::vector<uint8_t> mask(size_t(B * T), 0);
        for (int i = 0; i < B * T; ++i) tok[size_t(i)] = (i * 7 + 3) % c.vocab_size;
        tok[4] = c.vocab_size - 1;  // the "EOT" id: an input and a target
        tok[9] = c.vocab_size - 1;
        for (int t = 0; t < T; ++t) {
            seg[size_t(t)] = t < 5 ? 1 : 2;
            seg[size_t(T + t)] = t < 8 ? 1 : 0;
            mask[size_t(t)] = (t >= 2 && t < 5) || t >= 7;
            mask[size_t(T + t)] = t >= 3 && t < 8;
        }
        b = make_batch(B, T, tok, mask, seg);
        lima_batch_num_targets(b.get(), &targets);
        const int32_t tokens[2] = {c.vocab_size - 1, 5};
        EXPECT_EQ(lima_model_add_adapter(m.get(), 3, 6.0f, lora_dropout, LIMA_LORA_ALL, tokens, 2, 0, seed), LIMA_OK) << lima_last_error();
    }
    // Gives every B a value (a fresh adapter's B is 0, so A would get no gradient).
    void randomise_b() {
        lima_model_config c;
        lima_model_get_config(m.get(), &c);
        for (int l = 0; l < c.num_layers; ++l)
            for (const char *t : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                                  "mlp.up_proj", "mlp.down_proj"}) {
                const std::string name = "base_model.model.model.layers." + std::to_string(l) + "." + t + ".lora_B.weight";
                const int64_t n = numel(name);
                std::vector<float> w(static_cast<size_t>(n));
                for (int64_t i = 0; i < n; ++i) w[size_t(i)] = 0.3f * std::sin(float(i * 13 + l * 7 + int(name.size())));
                EXPECT_EQ(lima_model_write_tensor(m.get(), name.c_str(), w.data(), n), LIMA_OK) << lima_last_error();
            }
    }
    int64_t numel(const std::string &name) const {  // probes the buffer size the error message names
        float one = 0.0f;
        if (lima_model_read_tensor(m.get(), name.c_str(), &one, 1) == LIMA_OK) return 1;
        const std::string msg = lima_last_error();
        const auto at = msg.find(" has ");
        return at == std::string::npos ? -1 : std::stoll(msg.substr(at + 5));
    }
};

std::vector<std::string> fixture_names(const Fixture &f) {
    lima_model_config c;
    lima_model_get_config(f.m.get(), &c);
    std::vector<std::string> out{"base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta"};
    if (!c.tie_word_embeddings) out.push_back("base_model.model.lm_head.token_adapter.trainable_tokens_delta");
    for (int l = 0; l < c.num_layers; ++l)
        for (const char *t : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                              "mlp.up_proj", "mlp.down_proj"})
            for (const char *ab : {"lora_A", "lora_B"})
                out.push_back("base_model.model.model.layers." + std::to_string(l) + "." + t + "." + ab + ".weight");
    return out;
}

void adapter_gradcheck(float lora_dropout, float resid_dropout) {
    Fixture f(lora_dropout);
    f.randomise_b();
    TrainerPtr t = make_trainer(f.m.get(), train_config(resid_dropout, 99));
    auto loss = [&] {
        lima_trainer_zero_grad(t.get());
        lima_fb_result r{};
        EXPECT_EQ(lima_trainer_forward_backward(t.get(), f.b.get(), f.targets, &r), LIMA_OK) << lima_last_error();
        return r.loss_sum / double(f.targets);
    };
    loss();
    std::vector<std::pair<std::string, std::vector<float>>> analytic;
    for (const std::string &name : fixture_names(f)) {
        std::vector<float> g(size_t(f.numel(name)));
        ASSERT_EQ(lima_trainer_read_grad(t.get(), name.c_str(), g.data(), int64_t(g.size())), LIMA_OK) << lima_last_error();
        analytic.push_back({name, g});
    }
    for (auto &[name, grad] : analytic)
        finite_difference_check(f.m.get(), name, grad, loss,
                                "lora dropout " + std::to_string(lora_dropout) + ", resid dropout " + std::to_string(resid_dropout));
}

TEST(LoraGradCheck, EveryAdapterTensorDropoutOff) { adapter_gradcheck(0.0f, 0.0f); }
TEST(LoraGradCheck, EveryAdapterTensorAdapterAndResidualDropoutOn) { adapter_gradcheck(0.3f, 0.2f); }

TEST(Lora, AFreshAdapterChangesNothingAndRemovingItRestoresTheBase) {
    lima_model_config c = tiny_config();
    ModelPtr base = make_model(c, 11);
    Fixture f;
    const auto want = logits(base.get(), f.b.get(), f.B, f.T);
    EXPECT_EQ(logits(f.m.get(), f.b.get(), f.B, f.T), want) << "B = 0 and token rows = the model's: the same logits";
    f.randomise_b();
    EXPECT_NE(logits(f.m.get(), f.b.get(), f.B, f.T), want);
    ASSERT_EQ(lima_model_remove_adapter(f.m.get()), LIMA_OK) << lima_last_error();
    EXPECT_EQ(logits(f.m.get(), f.b.get(), f.B, f.T), want);
    int32_t r = -1;
    ASSERT_EQ(lima_model_adapter_info(f.m.get(), &r, nullptr, nullptr, nullptr, nullptr), LIMA_OK);
    EXPECT_EQ(r, 0);
}

TEST(Lora, TrainingMovesOnlyTheAdapterAndTheTokenRowsAndResumesExactly) {
    Fixture f(0.1f);
    lima_model_config c;
    lima_model_get_config(f.m.get(), &c);
    const std::vector<std::string> base = tensor_names(f.m.get());
    std::vector<std::vector<float>> before;
    for (const auto &name : base) before.push_back(read_tensor(f.m.get(), name));
    lima_train_config tc = train_config(0.2f, 7);
    tc.grad_clip = 1.0f;
    tc.weight_decay = 0.1f;
    auto run = [&](lima_trainer *t, int from, int to) {
        for (int s = from; s < to; ++s) {
            lima_fb_result fb{};
            ASSERT_EQ(lima_trainer_forward_backward(t, f.b.get(), f.targets, &fb), LIMA_OK) << lima_last_error();
            lima_step_result st{};
            ASSERT_EQ(lima_trainer_step(t, 1e-2f, &st), LIMA_OK) << lima_last_error();
        }
    };
    const std::string dir = temp_dir("lora_resume");
    {
        TrainerPtr t = make_trainer(f.m.get(), tc);
        run(t.get(), 0, 3);
        ASSERT_EQ(lima_trainer_save_state(t.get(), (dir + "/state.safetensors").c_str()), LIMA_OK) << lima_last_error();
        ASSERT_EQ(lima_model_save_adapter(f.m.get(), (dir + "/adapter").c_str(), "tiny"), LIMA_OK) << lima_last_error();
        run(t.get(), 3, 6);
    }
    // Every base tensor is bit-identical except the token rows (ids V-1 and 5) of the embedding and LM head.
    const int d = c.hidden_size;
    for (size_t i = 0; i < base.size(); ++i) {
        const auto now = read_tensor(f.m.get(), base[i]);
        const bool rows = base[i] == "model.embed_tokens.weight" || base[i] == "lm_head.weight";
        for (size_t e = 0; e < now.size(); ++e) {
            const int64_t row = int64_t(e) / d;
            if (rows && (row == c.vocab_size - 1 || row == 5)) continue;
            ASSERT_EQ(now[e], before[i][e]) << base[i] << "[" << e << "] changed: the base must stay frozen";
        }
        if (rows) {
            double moved = 0;
            for (int e = 0; e < d; ++e) moved += std::fabs(now[size_t((c.vocab_size - 1) * d + e)] - before[i][size_t((c.vocab_size - 1) * d + e)]);
            EXPECT_GT(moved, 1e-3) << base[i] << ": the EOT row must learn";
        }
    }
    // A fresh model + the saved adapter + the saved optimiser state continues bit-exactly.
    ModelPtr m2 = make_model(tiny_config(), 11);
    ASSERT_EQ(lima_model_load_adapter(m2.get(), (dir + "/adapter").c_str()), LIMA_OK) << lima_last_error();
    TrainerPtr t2 = make_trainer(m2.get(), tc);
    ASSERT_EQ(lima_trainer_load_state(t2.get(), (dir + "/state.safetensors").c_str()), LIMA_OK) << lima_last_error();
    Fixture g(0.1f);  // the same batch
    for (int s = 3; s < 6; ++s) {
        lima_fb_result fb{};
        ASSERT_EQ(lima_trainer_forward_backward(t2.get(), g.b.get(), g.targets, &fb), LIMA_OK) << lima_last_error();
        lima_step_result st{};
        ASSERT_EQ(lima_trainer_step(t2.get(), 1e-2f, &st), LIMA_OK) << lima_last_error();
    }
    for (const auto &name : fixture_names(f)) {
        const int64_t n = f.numel(name);
        EXPECT_EQ(read(m2.get(), name, n), read(f.m.get(), name, n)) << name;
    }
    EXPECT_EQ(logits(m2.get(), g.b.get(), g.B, g.T), logits(f.m.get(), f.b.get(), f.B, f.T));
}

TEST(Lora, SavedAdapterLoadsBackAndMergingGivesTheSameModel) {
    Fixture f;
    f.randomise_b();
    const auto want = logits(f.m.get(), f.b.get(), f.B, f.T);
    const std::string dir = temp_dir("lora_merge");
    ASSERT_EQ(lima_model_save_adapter(f.m.get(), dir.c_str(), "tiny"), LIMA_OK) << lima_last_error();
    std::ifstream cfg(dir + "/adapter_config.json");
    const std::string text((std::istreambuf_iterator<char>(cfg)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("\"peft_type\": \"LORA\""), std::string::npos) << text;
    EXPECT_NE(text.find("\"lm_head\""), std::string::npos) << "untied: the LM-head rows are named" << text;

    ModelPtr m2 = make_model(tiny_config(), 11);
    ASSERT_EQ(lima_model_load_adapter(m2.get(), dir.c_str()), LIMA_OK) << lima_last_error();
    EXPECT_EQ(logits(m2.get(), f.b.get(), f.B, f.T), want);
    ASSERT_EQ(lima_model_merge_adapter(m2.get()), LIMA_OK) << lima_last_error();
    EXPECT_LT(rel_max_err(logits(m2.get(), f.b.get(), f.B, f.T), want), 1e-5) << "merged == base + adapter";
    EXPECT_LIMA_ERR(lima_model_merge_adapter(m2.get()), LIMA_ERR_STATE, "has no adapter");
}

TEST(Lora, BadConfigsAndFilesAreClearErrors) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 1);
    const int32_t bad_tok[1] = {c.vocab_size};
    EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 0, 8, 0, LIMA_LORA_ALL, nullptr, 0, 0, 1), LIMA_ERR_INVALID_ARGUMENT, "r must be");
    EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 4, 8, 1.0f, LIMA_LORA_ALL, nullptr, 0, 0, 1), LIMA_ERR_INVALID_ARGUMENT, "dropout");
    EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 17, 8, 0, LIMA_LORA_ALL, nullptr, 0, 0, 1), LIMA_ERR_INVALID_ARGUMENT,
                    "exceeds the smallest projection dimension of this model (8)");
    EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 4, 8, 0, 0, nullptr, 0, 0, 1), LIMA_ERR_INVALID_ARGUMENT, "targets");
    EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 4, 8, 0, 1u << 9, nullptr, 0, 0, 1), LIMA_ERR_INVALID_ARGUMENT, "targets");
    EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 4, 8, 0, LIMA_LORA_Q, bad_tok, 1, 0, 1), LIMA_ERR_INVALID_ARGUMENT,
                    "outside the vocabulary");
    {
        TrainerPtr t = make_trainer(m.get(), train_config());
        EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 4, 8, 0, LIMA_LORA_Q, nullptr, 0, 0, 1), LIMA_ERR_STATE, "trainer");
    }
    ASSERT_EQ(lima_model_add_adapter(m.get(), 4, 8, 0, LIMA_LORA_Q, nullptr, 0, 0, 1), LIMA_OK) << lima_last_error();
    EXPECT_LIMA_ERR(lima_model_add_adapter(m.get(), 4, 8, 0, LIMA_LORA_Q, nullptr, 0, 0, 1), LIMA_ERR_STATE, "already has an adapter");
    const std::string dir = temp_dir("lora_bad");
    ASSERT_EQ(lima_model_save_adapter(m.get(), dir.c_str(), nullptr), LIMA_OK) << lima_last_error();
    ASSERT_EQ(lima_model_remove_adapter(m.get()), LIMA_OK);

    auto write = [&](const std::string &text) {
        std::ofstream(dir + "/adapter_config.json") << text;
    };
    const std::string ok = R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})";
    write(ok);
    ASSERT_EQ(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_OK) << lima_last_error();
    ASSERT_EQ(lima_model_remove_adapter(m.get()), LIMA_OK);
    write(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "use_dora": true})");
    EXPECT_LIMA_ERR(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_ERR_UNSUPPORTED, "use_dora");
    write(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "lm_head"]})");
    EXPECT_LIMA_ERR(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_ERR_UNSUPPORTED, "\"lm_head\"");
    write(R"({"peft_type": "LORA", "r": 8, "lora_alpha": 8, "target_modules": ["q_proj"]})");
    EXPECT_LIMA_ERR(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_ERR_SHAPE, "has shape");
    write(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj"]})");
    EXPECT_LIMA_ERR(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_ERR_FORMAT, "k_proj.lora_A.weight is missing");
    write(R"({"peft_type": "PREFIX_TUNING", "r": 4})");
    EXPECT_LIMA_ERR(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_ERR_UNSUPPORTED, "peft_type");
    write(R"({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]})");
    EXPECT_EQ(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_OK) << "lora_alpha defaults to PEFT's 8: " << lima_last_error();
    ASSERT_EQ(lima_model_remove_adapter(m.get()), LIMA_OK);
    write("{\"peft_type\": \"LORA\", \"r\": ");
    EXPECT_LIMA_ERR(lima_model_load_adapter(m.get(), dir.c_str()), LIMA_ERR_FORMAT, "malformed JSON");
    EXPECT_LIMA_ERR(lima_model_load_adapter(m.get(), (dir + "/none").c_str()), LIMA_ERR_IO, "does not exist");
    int32_t r = -1;
    ASSERT_EQ(lima_model_adapter_info(m.get(), &r, nullptr, nullptr, nullptr, nullptr), LIMA_OK);
    EXPECT_EQ(r, 0) << "a failed load leaves no adapter behind";
}

}  // namespace
