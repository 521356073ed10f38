// KV-cache decoding and LIMA's sampling: cached greedy decoding equals the argmax of a full forward
// at every step, batched rows equal rows decoded alone, and the sampling rule is exact on
// hand-computed logits.
#include "helpers.hpp"

using namespace limatest;

namespace {

TEST(Generate, GreedyWithTheKvCacheEqualsTheArgmaxOfAFullForwardAtEveryStep) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 4);
    GenPtr g = make_gen(m.get(), 1, 40);
    std::vector<int32_t> seq{1, 5, 9, 3, 7};
    const int len = int(seq.size());
    LIMA_OK_OR_FAIL(lima_generator_start(g.get(), 1, seq.data(), &len, nullptr));
    const lima_sampling s = greedy();
    for (int step = 0; step < 12; ++step) {
        std::vector<float> cached(size_t(c.vocab_size));
        LIMA_OK_OR_FAIL(lima_generator_logits(g.get(), cached.data(), c.vocab_size));
        const auto full = full_logits(m.get(), seq, c.vocab_size);
        EXPECT_LT(rel_max_err(cached, full), 1e-5) << "step " << step;
        int32_t tok = -2;
        LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, nullptr, &tok));
        EXPECT_EQ(tok, int32_t(std::max_element(full.begin(), full.end()) - full.begin())) << "step " << step;
        seq.push_back(tok);
    }
    int32_t n = 0;
    lima_generator_length(g.get(), 0, &n);
    EXPECT_EQ(n, int(seq.size()));
}

TEST(Generate, BatchedRowsOfDifferentLengthsEqualRowsDecodedAlone) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 6);
    const std::vector<std::vector<int32_t>> prompts{{1, 4, 4, 8}, {1, 2}, {1, 9, 8, 7, 6, 5, 11}};
    lima_sampling s;
    lima_sampling_init(&s);  // LIMA's sampling, not greedy: the per-row seeds must carry it
    std::vector<int32_t> flat, lens;
    for (auto &p : prompts) {
        flat.insert(flat.end(), p.begin(), p.end());
        lens.push_back(int32_t(p.size()));
    }
    const std::vector<uint64_t> seeds{11, 22, 33};
    GenPtr gb = make_gen(m.get(), 3, 32);
    LIMA_OK_OR_FAIL(lima_generator_start(gb.get(), 3, flat.data(), lens.data(), seeds.data()));
    std::vector<std::vector<int32_t>> batched(3);
    std::vector<uint8_t> active{1, 1, 1};
    for (int step = 0; step < 10; ++step) {
        if (step == 6) active[1] = 0;  // a row that stopped (EOT) takes no more compute and no draws
        int32_t out[3];
        LIMA_OK_OR_FAIL(lima_generator_step(gb.get(), &s, active.data(), out));
        for (int r = 0; r < 3; ++r) {
            if (active[size_t(r)]) batched[size_t(r)].push_back(out[r]);
            else EXPECT_EQ(out[r], -1);
        }
    }
    for (int r = 0; r < 3; ++r) {
        GenPtr g1 = make_gen(m.get(), 1, 32);
        LIMA_OK_OR_FAIL(lima_generator_start(g1.get(), 1, prompts[size_t(r)].data(), &lens[size_t(r)], &seeds[size_t(r)]));
        std::vector<int32_t> alone;
        for (size_t i = 0; i < batched[size_t(r)].size(); ++i) {
            int32_t t;
            LIMA_OK_OR_FAIL(lima_generator_step(g1.get(), &s, nullptr, &t));
            alone.push_back(t);
        }
        EXPECT_EQ(alone, batched[size_t(r)]) << "row " << r;
    }
}

std::vector<float> probs_of(const std::vector<float> &logits, lima_sampling s, const std::vector<int32_t> &pen, int32_t *tok) {
    std::vector<float> p(logits.size());
    EXPECT_EQ(lima_sample_logits(logits.data(), int32_t(logits.size()), &s, pen.data(), int32_t(pen.size()), 1, 0, p.data(), tok),
              LIMA_OK)
        << lima_last_error();
    return p;
}

TEST(Sampling, TopPKeepsExactlyTheSmallestSetWithMassAtLeastP) {
    // softmax of log(0.5, 0.3, 0.15, 0.05) = (0.5, 0.3, 0.15, 0.05)
    const std::vector<float> l{std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
    lima_sampling s = greedy();
    s.temperature = 1.0f;
    int32_t tok;
    s.top_p = 0.79f;  // 0.5 + 0.3 >= 0.79 (0.8f itself is 0.80000001 in fp32: just above the two-token mass)
    auto p = probs_of(l, s, {}, &tok);
    EXPECT_NEAR(p[1], 0.5 / 0.8, 1e-6);
    EXPECT_NEAR(p[3], 0.3 / 0.8, 1e-6);
    EXPECT_EQ(p[0], 0.0f);
    EXPECT_EQ(p[2], 0.0f);
    EXPECT_TRUE(tok == 1 || tok == 3);
    s.top_p = 0.81f;  // 0.8 is not enough: the third token joins
    p = probs_of(l, s, {}, &tok);
    EXPECT_NEAR(p[0], 0.15 / 0.95, 1e-6);
    EXPECT_EQ(p[2], 0.0f);
    s.top_p = 0.4f;  // the most likely token alone already has 0.5
    p = probs_of(l, s, {}, &tok);
    EXPECT_EQ(p[1], 1.0f);
    EXPECT_EQ(tok, 1);
    s.top_p = 1.0f;
    s.top_k = 2;
    p = probs_of(l, s, {}, &tok);
    EXPECT_NEAR(p[1], 0.5 / 0.8, 1e-6);
    EXPECT_NEAR(p[3], 0.3 / 0.8, 1e-6);
}

TEST(Sampling, TemperatureAndRepetitionPenaltyAreExact) {
    const std::vector<float> l{2.0f, -1.0f, 0.5f};
    lima_sampling s = greedy();
    s.temperature = 0.5f;
    s.top_p = 1.0f;
    int32_t tok;
    auto p = probs_of(l, s, {}, &tok);
    const double z = std::exp(4.0) + std::exp(-2.0) + std::exp(1.0);
    EXPECT_NEAR(p[0], std::exp(4.0) / z, 1e-6);
    EXPECT_NEAR(p[1], std::exp(-2.0) / z, 1e-6);
    EXPECT_NEAR(p[2], std::exp(1.0) / z, 1e-6);
    // Penalty 2 on tokens 0 and 1: 2 -> 1 (positive: divided), -1 -> -2 (negative: multiplied), 0.5 untouched.
    s.temperature = 1.0f;
    s.repetition_penalty = 2.0f;
    p = probs_of(l, s, {0, 1}, &tok);
    const double z2 = std::exp(1.0) + std::exp(-2.0) + std::exp(0.5);
    EXPECT_NEAR(p[0], std::exp(1.0) / z2, 1e-6);
    EXPECT_NEAR(p[1], std::exp(-2.0) / z2, 1e-6);
    EXPECT_NEAR(p[2], std::exp(0.5) / z2, 1e-6);
    s.temperature = 0.0f;
    s.repetition_penalty = 5.0f;  // 2 / 5 = 0.4 < 0.5: greedy moves to token 2
    probs_of(l, s, {0}, &tok);
    EXPECT_EQ(tok, 2);
}

TEST(Sampling, DrawsFollowTheDistributionAndRepeatForTheSameKey) {
    const std::vector<float> l{0.0f, 1.0f, 2.0f};
    lima_sampling s = greedy();
    s.temperature = 1.0f;
    s.top_p = 1.0f;
    std::vector<int> count(3, 0);
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
        int32_t t;
        lima_sample_logits(l.data(), 3, &s, nullptr, 0, 99, uint64_t(i), nullptr, &t);
        count[size_t(t)]++;
    }
    const double z = 1 + std::exp(1.0) + std::exp(2.0);
    for (int v = 0; v < 3; ++v) {
        const double p = std::exp(double(v)) / z;
        EXPECT_NEAR(count[size_t(v)] / double(n), p, 5 * std::sqrt(p * (1 - p) / n)) << v;
    }
    int32_t a, b;
    lima_sample_logits(l.data(), 3, &s, nullptr, 0, 7, 3, nullptr, &a);
    lima_sample_logits(l.data(), 3, &s, nullptr, 0, 7, 3, nullptr, &b);
    EXPECT_EQ(a, b);
}

TEST(Generate, PenaltyScopeLimaCountsGeneratedTokensHfAlsoThePrompt) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 4);
    std::vector<int32_t> prompt{1, 5, 9, 3, 7};
    const int len = int(prompt.size());
    const auto full = full_logits(m.get(), prompt, c.vocab_size);
    const int32_t best = int32_t(std::max_element(full.begin(), full.end()) - full.begin());
    prompt.push_back(best);  // the model's favourite next token is now in the prompt
    const int len2 = len + 1;
    std::vector<float> again(size_t(c.vocab_size));
    auto first_token = [&](int scope) {
        GenPtr g = make_gen(m.get(), 1, 16);
        EXPECT_EQ(lima_generator_start(g.get(), 1, prompt.data(), &len2, nullptr), LIMA_OK);
        lima_generator_logits(g.get(), again.data(), c.vocab_size);
        lima_sampling s = greedy();
        s.repetition_penalty = 1000.0f;
        s.penalty_scope = scope;
        int32_t t;
        EXPECT_EQ(lima_generator_step(g.get(), &s, nullptr, &t), LIMA_OK) << lima_last_error();
        return t;
    };
    const int32_t lima_tok = first_token(0), hf_tok = first_token(1);
    const int32_t argmax = int32_t(std::max_element(again.begin(), again.end()) - again.begin());
    EXPECT_EQ(lima_tok, argmax);  // nothing generated yet: no penalty in LIMA's scope
    bool in_prompt = std::find(prompt.begin(), prompt.end(), argmax) != prompt.end();
    if (in_prompt && again[size_t(argmax)] > 0) EXPECT_NE(hf_tok, argmax);
}

TEST(Generate, BadRequestsAreClearErrors) {
    lima_model_config c = tiny_config();
    ModelPtr m = make_model(c, 1);
    lima_generator *raw = nullptr;
    EXPECT_LIMA_ERR(lima_generator_create(m.get(), 1, 1000, &raw), LIMA_ERR_INVALID_ARGUMENT, "exceeds max_position_embeddings");
    GenPtr g = make_gen(m.get(), 2, 4);
    lima_sampling s = greedy();
    int32_t out[2];
    EXPECT_LIMA_ERR(lima_generator_step(g.get(), &s, nullptr, out), LIMA_ERR_STATE, "call lima_generator_start first");
    const std::vector<int32_t> toks{1, 2, 3, 4, 99};
    const int32_t too_long = 4;
    EXPECT_LIMA_ERR(lima_generator_start(g.get(), 1, toks.data(), &too_long, nullptr), LIMA_ERR_INVALID_ARGUMENT, "max_len - 1");
    const int32_t lens[2] = {1, 1};
    EXPECT_LIMA_ERR(lima_generator_start(g.get(), 2, toks.data() + 3, lens, nullptr), LIMA_ERR_INVALID_ARGUMENT,
                    "token id 99 of row 1 is outside the vocabulary");
    const int32_t three = 3;
    LIMA_OK_OR_FAIL(lima_generator_start(g.get(), 1, toks.data(), &three, nullptr));
    LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, nullptr, out));
    EXPECT_LIMA_ERR(lima_generator_step(g.get(), &s, nullptr, out), LIMA_ERR_STATE, "row 0 is full");
    s.top_p = 0.0f;
    EXPECT_LIMA_ERR(lima_generator_step(g.get(), &s, nullptr, out), LIMA_ERR_INVALID_ARGUMENT, "top_p in (0, 1]");
}

}  // namespace
