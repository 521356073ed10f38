// Decoding on the CUDA device (cuda/generate.cu) against the CPU reference, through the C ABI:
// prefill and every cached decode step against a full forward, greedy picks against the arg max of
// the device's own logits, device sampling against the CPU sampling rule on the same logits,
// batched rows against rows alone, graph replay against eager steps, inactive rows, and the
// refusal of a cache that cannot fit. Each test skips itself without a GPU.
#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <vector>

#include "../helpers.hpp"
#include "gpu_test.hpp"

using namespace limatest;

namespace {

lima_model_config gen_config() {
    lima_model_config c = small_config();
    c.vocab_size = 1999;
    c.max_position_embeddings = 1024;
    return c;
}

// A model on the GPU whose LM head is scaled up, so its logits spread over several units and the
// greedy choices are not decided by bf16 rounding.
ModelPtr gpu_model(uint64_t seed) {
    const lima_model_config c = gen_config();
    lima_model *m = nullptr;
    EXPECT_EQ(lima_model_create(&c, "cuda:0", seed, &m), LIMA_OK) << lima_last_error();
    if (!m) return ModelPtr();
    const char *head = "lm_head.weight";
    std::vector<float> w(size_t(c.vocab_size) * c.hidden_size);
    EXPECT_EQ(lima_model_read_tensor(m, head, w.data(), int64_t(w.size())), LIMA_OK) << lima_last_error();
    for (float &x : w) x *= 40.0f;
    EXPECT_EQ(lima_model_write_tensor(m, head, w.data(), int64_t(w.size())), LIMA_OK) << lima_last_error();
    return ModelPtr(m);
}

std::vector<int32_t> random_tokens(int n, int V, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto &x : t) x = int32_t(rng() % uint32_t(V));
    return t;
}

std::vector<float> gen_logits(lima_generator *g, int rows, int V) {
    std::vector<float> l(size_t(rows) * size_t(V));
    EXPECT_EQ(lima_generator_logits(g, l.data(), int64_t(l.size())), LIMA_OK) << lima_last_error();
    return l;
}

lima_sampling lima_defaults() {
    lima_sampling s;
    lima_sampling_init(&s);
    return s;
}

class CudaGenerate : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
        setenv("LIMA_CUDA_PLUGIN", LIMA_CUDA_PLUGIN_FILE, 1);
        unsetenv("LIMA_CUDA_GRAPHS");
    }
};

TEST_F(CudaGenerate, PrefillAndEveryCachedStepMatchTheFullForward) {
    const int V = gen_config().vocab_size;
    ModelPtr m = gpu_model(3);
    ASSERT_TRUE(m);
    GenPtr g = make_gen(m.get(), 1, 300);
    // 240 prompt tokens then 24 steps: several prefill tiles, and decoding crosses a 256-position span
    std::vector<int32_t> seq = random_tokens(240, V, 5);
    const int len = int(seq.size());
    LIMA_OK_OR_FAIL(lima_generator_start(g.get(), 1, seq.data(), &len, nullptr));
    const lima_sampling s = greedy();
    int decided = 0;
    for (int step = 0; step < 24; ++step) {
        const auto cached = gen_logits(g.get(), 1, V);
        const auto full = full_logits(m.get(), seq, V);  // the CPU reference on the model's weights
        EXPECT_LT(rel_max_err(cached, full), 3e-2) << "step " << step;
        int32_t tok = -2;
        LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, nullptr, &tok));
        EXPECT_EQ(tok, int32_t(std::max_element(cached.begin(), cached.end()) - cached.begin())) << "step " << step;
        std::vector<float> sorted = full;
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
        if (sorted[0] - sorted[1] > 0.25f) {  // a clear winner must win on the device too
            EXPECT_EQ(tok, int32_t(std::max_element(full.begin(), full.end()) - full.begin())) << "step " << step;
            ++decided;
        }
        seq.push_back(tok);
    }
    EXPECT_GT(decided, 12);
    int32_t n = 0;
    LIMA_OK_OR_FAIL(lima_generator_length(g.get(), 0, &n));
    EXPECT_EQ(n, int(seq.size()));
}

TEST_F(CudaGenerate, DeviceSamplingFollowsTheCpuRuleOnTheSameLogits) {
    const int V = gen_config().vocab_size, R = 4;
    ModelPtr m = gpu_model(4);
    ASSERT_TRUE(m);
    lima_sampling lima = lima_defaults();
    lima_sampling hf = lima_defaults();
    hf.temperature = 1.3f;
    hf.top_p = 1.0f;
    hf.top_k = 50;
    hf.penalty_scope = 1;
    for (const lima_sampling &s : {lima, hf}) {
        GenPtr g = make_gen(m.get(), R, 64);
        const std::vector<int32_t> lens{5, 17, 9, 30};
        std::vector<int32_t> prompts = random_tokens(61, V, 8);
        const std::vector<uint64_t> seeds{11, 12, 13, 14};
        LIMA_OK_OR_FAIL(lima_generator_start(g.get(), R, prompts.data(), lens.data(), seeds.data()));
        std::vector<std::vector<int32_t>> prompt(R), made(R);
        for (int r = 0, at = 0; r < R; at += lens[size_t(r)], ++r)
            prompt[size_t(r)].assign(prompts.begin() + at, prompts.begin() + at + lens[size_t(r)]);
        for (int step = 0; step < 12; ++step) {
            const auto logits = gen_logits(g.get(), R, V);
            std::vector<int32_t> out(R, -2);
            LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, nullptr, out.data()));
            for (int r = 0; r < R; ++r) {
                std::vector<int32_t> pen = made[size_t(r)];
                if (s.penalty_scope == 1) pen.insert(pen.end(), prompt[size_t(r)].begin(), prompt[size_t(r)].end());
                const uint64_t counter = uint64_t(lens[size_t(r)]) + uint64_t(step);
                int32_t want = -1;
                LIMA_OK_OR_FAIL(lima_sample_logits(logits.data() + size_t(r) * V, V, &s, pen.data(), int32_t(pen.size()),
                                                   seeds[size_t(r)], counter, nullptr, &want));
                EXPECT_EQ(out[size_t(r)], want) << "row " << r << " step " << step << " top_k " << s.top_k;
                made[size_t(r)].push_back(out[size_t(r)]);
            }
        }
    }
}

TEST_F(CudaGenerate, BatchedRowsOfDifferentLengthsEqualRowsDecodedAlone) {
    const int V = gen_config().vocab_size;
    ModelPtr m = gpu_model(5);
    ASSERT_TRUE(m);
    const std::vector<int32_t> lens{7, 40, 129};
    const std::vector<int32_t> prompts = random_tokens(176, V, 9);
    const std::vector<uint64_t> seeds{21, 22, 23};
    const lima_sampling s = lima_defaults();
    GenPtr g = make_gen(m.get(), 3, 200);
    LIMA_OK_OR_FAIL(lima_generator_start(g.get(), 3, prompts.data(), lens.data(), seeds.data()));
    std::vector<std::vector<int32_t>> batched(3);
    for (int step = 0; step < 16; ++step) {
        std::vector<int32_t> out(3);
        LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, nullptr, out.data()));
        for (int r = 0; r < 3; ++r) batched[size_t(r)].push_back(out[size_t(r)]);
    }
    for (int r = 0, at = 0; r < 3; at += lens[size_t(r)], ++r) {
        GenPtr one = make_gen(m.get(), 1, 200);
        LIMA_OK_OR_FAIL(lima_generator_start(one.get(), 1, prompts.data() + at, &lens[size_t(r)], &seeds[size_t(r)]));
        std::vector<int32_t> alone;
        for (int step = 0; step < 16; ++step) {
            int32_t t = -2;
            LIMA_OK_OR_FAIL(lima_generator_step(one.get(), &s, nullptr, &t));
            alone.push_back(t);
        }
        EXPECT_EQ(alone, batched[size_t(r)]) << "row " << r;
    }
}

TEST_F(CudaGenerate, GraphReplayGivesTheTokensOfEagerSteps) {
    const int V = gen_config().vocab_size;
    ModelPtr m = gpu_model(6);
    ASSERT_TRUE(m);
    const std::vector<int32_t> lens{12, 33};
    const std::vector<int32_t> prompts = random_tokens(45, V, 10);
    const lima_sampling s = lima_defaults();
    std::vector<int32_t> runs[2];
    for (int eager = 0; eager < 2; ++eager) {
        if (eager) setenv("LIMA_CUDA_GRAPHS", "0", 1);
        GenPtr g = make_gen(m.get(), 2, 80);
        LIMA_OK_OR_FAIL(lima_generator_start(g.get(), 2, prompts.data(), lens.data(), nullptr));
        for (int step = 0; step < 20; ++step) {
            std::vector<int32_t> out(2);
            LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, nullptr, out.data()));
            runs[eager].insert(runs[eager].end(), out.begin(), out.end());
        }
    }
    EXPECT_EQ(runs[0], runs[1]);
}

TEST_F(CudaGenerate, InactiveRowsKeepTheirLengthAndLogits) {
    const int V = gen_config().vocab_size;
    ModelPtr m = gpu_model(7);
    ASSERT_TRUE(m);
    const std::vector<int32_t> lens{6, 9};
    const std::vector<int32_t> prompts = random_tokens(15, V, 11);
    GenPtr g = make_gen(m.get(), 2, 40);
    LIMA_OK_OR_FAIL(lima_generator_start(g.get(), 2, prompts.data(), lens.data(), nullptr));
    const lima_sampling s = lima_defaults();
    const uint8_t active[2] = {1, 0};
    for (int step = 0; step < 3; ++step) {  // the second and third steps replay a graph
        const auto before = gen_logits(g.get(), 2, V);
        std::vector<int32_t> out(2, -2);
        LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, active, out.data()));
        EXPECT_GE(out[0], 0);
        EXPECT_EQ(out[1], -1);
        const auto after = gen_logits(g.get(), 2, V);
        EXPECT_TRUE(std::equal(before.begin() + V, before.end(), after.begin() + V)) << "step " << step;
        EXPECT_FALSE(std::equal(before.begin(), before.begin() + V, after.begin())) << "step " << step;
    }
    int32_t n0 = 0, n1 = 0;
    LIMA_OK_OR_FAIL(lima_generator_length(g.get(), 0, &n0));
    LIMA_OK_OR_FAIL(lima_generator_length(g.get(), 1, &n1));
    EXPECT_EQ(n0, 9);
    EXPECT_EQ(n1, 9);
}

TEST_F(CudaGenerate, ACacheThatCannotFitIsRefusedWithTheFigures) {
    ModelPtr m = gpu_model(8);
    ASSERT_TRUE(m);
    lima_generator *g = nullptr;
    EXPECT_LIMA_ERR(lima_generator_create(m.get(), 1 << 20, 1024, &g), LIMA_ERR_OUT_OF_MEMORY, "KV cache");
    EXPECT_EQ(g, nullptr);
    GenPtr ok = make_gen(m.get(), 2, 64);  // the device is still usable
    EXPECT_TRUE(ok);
}

TEST_F(CudaGenerate, AGraphsSwitchOtherThanZeroOrOneIsRefusedByName) {
    ModelPtr m = gpu_model(9);
    ASSERT_TRUE(m);
    setenv("LIMA_CUDA_GRAPHS", "off", 1);
    lima_generator *g = nullptr;
    EXPECT_LIMA_ERR(lima_generator_create(m.get(), 1, 64, &g), LIMA_ERR_INVALID_ARGUMENT, "LIMA_CUDA_GRAPHS is 'off'");
    EXPECT_EQ(g, nullptr);
    unsetenv("LIMA_CUDA_GRAPHS");
}

}  // namespace

// QLoRA's base decoding on the device: prompts of up to kNf4FusedRows tokens and every decoding step
// run the fused NF4 product (no layer dequantised), a longer prompt the dequantised cuBLASLt path;
// both follow the CPU's forward over the same NF4 weights, step after step, for one row and three.
TEST_F(CudaGenerate, QloraDecodingReadsNf4AsTheCpuDequantisesIt) {
    const int V = gen_config().vocab_size;
    ModelPtr m = gpu_model(17);
    ASSERT_TRUE(m);
    LIMA_OK_OR_FAIL(lima_model_quantize_nf4(m.get(), 1));
    const lima_sampling s = greedy();
    for (const int prompt : {5, 40}) {
        SCOPED_TRACE("prompt " + std::to_string(prompt));
        for (const int R : {1, 3}) {
            GenPtr g = make_gen(m.get(), R, 64);
            std::vector<std::vector<int32_t>> seqs;
            std::vector<int32_t> flat, lens;
            for (int r = 0; r < R; ++r) {
                seqs.push_back(random_tokens(prompt + r, V, 40 + uint32_t(r)));
                flat.insert(flat.end(), seqs.back().begin(), seqs.back().end());
                lens.push_back(int32_t(seqs.back().size()));
            }
            LIMA_OK_OR_FAIL(lima_generator_start(g.get(), R, flat.data(), lens.data(), nullptr));
            for (int step = 0; step < 6; ++step) {
                const auto cached = gen_logits(g.get(), R, V);
                for (int r = 0; r < R; ++r) {
                    const std::vector<float> row(cached.begin() + size_t(r) * V, cached.begin() + size_t(r + 1) * V);
                    EXPECT_LT(rel_max_err(row, full_logits(m.get(), seqs[size_t(r)], V)), 3e-2) << "row " << r << " step " << step;
                }
                std::vector<int32_t> out(static_cast<size_t>(R), -2);
                LIMA_OK_OR_FAIL(lima_generator_step(g.get(), &s, nullptr, out.data()));
                for (int r = 0; r < R; ++r) seqs[size_t(r)].push_back(out[size_t(r)]);
            }
        }
    }
}
