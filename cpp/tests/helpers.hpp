// Shared test helpers: RAII handles over the C ABI, status checks that print the native message,
// tiny configs and batches.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "lima/lima.h"
#include "safetensors.hpp"

#define LIMA_OK_OR_FAIL(expr)                                                                \
    do {                                                                                   \
        const int st__ = (expr);                                                           \
        ASSERT_EQ(st__, LIMA_OK) << #expr << " -> " << lima_status_name(st__) << ": " << lima_last_error(); \
    } while (0)

// Expects a failure with the given status and a message containing `needle`.
#define EXPECT_LIMA_ERR(expr, status, needle)                                               \
    do {                                                                                   \
        const int st__ = (expr);                                                           \
        EXPECT_EQ(st__, status) << #expr << " -> " << lima_status_name(st__) << ": " << lima_last_error(); \
        EXPECT_NE(std::string(lima_last_error()).find(needle), std::string::npos)          \
            << "message \"" << lima_last_error() << "\" lacks \"" << (needle) << "\"";      \
    } while (0)

namespace limatest {

struct ModelDel { void operator()(lima_model *m) const { lima_model_free(m); } };
struct TrainerDel { void operator()(lima_trainer *t) const { lima_trainer_free(t); } };
struct BatchDel { void operator()(lima_batch *b) const { lima_batch_free(b); } };
using ModelPtr = std::unique_ptr<lima_model, ModelDel>;
using TrainerPtr = std::unique_ptr<lima_trainer, TrainerDel>;
using BatchPtr = std::unique_ptr<lima_batch, BatchDel>;

inline std::string data_dir() { return LIMA_TEST_DATA; }

// A fresh empty directory under the build's temp area.
inline std::string temp_dir(const std::string &name) {
    namespace fs = std::filesystem;
    const fs::path p = fs::temp_directory_path() / ("lima-test-" + std::to_string(::getpid())) / name;
    fs::remove_all(p);
    fs::create_directories(p);
    return p.string();
}

// Tiny GQA model: 2 layers, d 16, 4 heads of 4, 2 KV heads, ffn 24, vocab 23.
inline lima_model_config tiny_config() {
    lima_model_config c;
    lima_model_config_init(&c);
    c.vocab_size = 23;
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.max_position_embeddings = 64;
    c.initializer_range = 0.3f;
    return c;
}

inline ModelPtr make_model(const lima_model_config &c, uint64_t seed) {
    lima_model *m = nullptr;
    const int st = lima_model_create(&c, "cpu", seed, &m);
    EXPECT_EQ(st, LIMA_OK) << lima_last_error();
    return ModelPtr(m);
}

// n tokens below vocab in a fixed pattern that `salt` varies (distinct micro-batches, reproducible).
inline std::vector<int32_t> tokens_for(int n, int vocab, int salt) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) t[size_t(i)] = (i * 5 + salt * 3 + 1) % vocab;
    return t;
}

inline BatchPtr make_batch(int B, int T, const std::vector<int32_t> &tok, const std::vector<uint8_t> &mask,
                           const std::vector<int32_t> &seg) {
    lima_batch *b = nullptr;
    EXPECT_EQ(lima_batch_create(B, T, &b), LIMA_OK) << lima_last_error();
    EXPECT_EQ(lima_batch_set(b, tok.data(), mask.empty() ? nullptr : mask.data(), seg.empty() ? nullptr : seg.data()),
              LIMA_OK)
        << lima_last_error();
    return BatchPtr(b);
}

inline std::vector<std::string> tensor_names(lima_model *m) {
    int32_t n = 0;
    lima_model_num_tensors(m, &n);
    std::vector<std::string> out;
    for (int32_t i = 0; i < n; ++i) {
        char buf[256];
        lima_model_tensor_info(m, i, buf, sizeof buf, nullptr, nullptr);
        out.push_back(buf);
    }
    return out;
}

inline int64_t tensor_numel(lima_model *m, const std::string &name) {
    int32_t n = 0;
    lima_model_num_tensors(m, &n);
    for (int32_t i = 0; i < n; ++i) {
        char buf[256];
        int64_t shape[2];
        int32_t nd;
        lima_model_tensor_info(m, i, buf, sizeof buf, shape, &nd);
        if (name == buf) return nd == 2 ? shape[0] * shape[1] : shape[0];
    }
    return -1;
}

inline std::vector<float> read_tensor(lima_model *m, const std::string &name) {
    std::vector<float> v(size_t(tensor_numel(m, name)));
    EXPECT_EQ(lima_model_read_tensor(m, name.c_str(), v.data(), int64_t(v.size())), LIMA_OK) << lima_last_error();
    return v;
}

inline std::vector<float> read_grad(lima_trainer *t, lima_model *m, const std::string &name) {
    std::vector<float> v(size_t(tensor_numel(m, name)));
    EXPECT_EQ(lima_trainer_read_grad(t, name.c_str(), v.data(), int64_t(v.size())), LIMA_OK) << lima_last_error();
    return v;
}

// max |a - b| / max(max |b|, floor)
inline double rel_max_err(const std::vector<float> &a, const std::vector<float> &b, double floor = 1e-12) {
    double num = 0.0, den = floor;
    for (size_t i = 0; i < a.size(); ++i) {
        num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
        den = std::max(den, std::fabs(double(b[i])));
    }
    return num / den;
}

inline lima_train_config train_config(float dropout = 0.0f, uint64_t seed = 1) {
    lima_train_config c;
    lima_train_config_init(&c);
    c.resid_dropout = dropout;
    c.seed = seed;
    c.grad_clip = 0.0f;
    return c;
}

inline TrainerPtr make_trainer(lima_model *m, const lima_train_config &c) {
    lima_trainer *t = nullptr;
    EXPECT_EQ(lima_trainer_create(m, &c, &t), LIMA_OK) << lima_last_error();
    return TrainerPtr(t);
}

struct GenDel { void operator()(lima_generator *g) const { lima_generator_free(g); } };
using GenPtr = std::unique_ptr<lima_generator, GenDel>;

inline GenPtr make_gen(lima_model *m, int rows, int len) {
    lima_generator *g = nullptr;
    EXPECT_EQ(lima_generator_create(m, rows, len, &g), LIMA_OK) << lima_last_error();
    return GenPtr(g);
}

inline lima_sampling greedy() {
    lima_sampling s;
    lima_sampling_init(&s);
    s.temperature = 0.0f;
    s.repetition_penalty = 1.0f;
    return s;
}

// Full-forward next-token logits after `tokens`.
inline std::vector<float> full_logits(lima_model *m, const std::vector<int32_t> &tokens, int V) {
    BatchPtr b = make_batch(1, int(tokens.size()), tokens, {}, {});
    std::vector<float> all(tokens.size() * size_t(V));
    EXPECT_EQ(lima_model_logits(m, b.get(), all.data(), int64_t(all.size())), LIMA_OK) << lima_last_error();
    return std::vector<float>(all.end() - V, all.end());
}

// Central differences (step 1e-2) of `loss` against the analytic gradient `grad` of tensor `name` (the
// model's or its adapter's) at its 6 largest-gradient elements and 4 spread ones: small gradients
// drown in fp32 noise.
inline void finite_difference_check(lima_model *m, const std::string &name, const std::vector<float> &grad,
                                    const std::function<double()> &loss, const std::string &tag) {
    const double h = 1e-2;
    std::vector<float> w(grad.size());
    ASSERT_EQ(lima_model_read_tensor(m, name.c_str(), w.data(), int64_t(w.size())), LIMA_OK) << lima_last_error();
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
        lima_model_write_tensor(m, name.c_str(), w.data(), int64_t(w.size()));
        const double lp = loss();
        w[i] = float(w0 - h);
        lima_model_write_tensor(m, name.c_str(), w.data(), int64_t(w.size()));
        const double lm = loss();
        w[i] = w0;
        lima_model_write_tensor(m, name.c_str(), w.data(), int64_t(w.size()));
        const double num = (lp - lm) / (2 * h);
        EXPECT_NEAR(grad[i], num, 2e-3 * gmax + 1e-2 * std::fabs(num)) << name << "[" << i << "] " << tag;
    }
}

// A tensor of a reference file written by the scripts in cpp/tests/golden.
inline std::vector<float> golden(const lima::StFile &f, const std::string &name) {
    const auto &e = f.tensors.at(name);
    std::vector<float> v(static_cast<size_t>(e.numel()));
    lima::st_read_f32(f, e, v.data(), e.numel());
    return v;
}

// The reference batch under prefix ("" or "stepN."): input_ids, attention_mask (right padding, one
// example per row) and loss_mask, as a lima batch.
inline BatchPtr golden_batch(const lima::StFile &g, const std::string &prefix) {
    const auto &shape = g.tensors.at(prefix + "input_ids").shape;
    const auto ids = golden(g, prefix + "input_ids"), attn = golden(g, prefix + "attention_mask"), lm = golden(g, prefix + "loss_mask");
    std::vector<int32_t> tok(ids.size()), seg(ids.size());
    std::vector<uint8_t> mask(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
        tok[i] = int32_t(ids[i]);
        seg[i] = attn[i] > 0 ? 1 : 0;
        mask[i] = attn[i] > 0 && lm[i] > 0;
    }
    return make_batch(int(shape[0]), int(shape[1]), tok, mask, seg);
}

}  // namespace limatest
