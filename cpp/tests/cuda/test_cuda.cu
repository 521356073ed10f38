// The CUDA backend against the CPU reference: every kernel family on fresh random inputs (never
// zeros; outputs poisoned first so unwritten elements show), then whole-model loss, gradients,
// training steps and eval log-probs through the C ABI. Each test skips itself without a GPU.
// Errors are relative L2 norms ||gpu - cpu|| / ||cpu||; bf16 operands land between 1e-3 and 1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../helpers.hpp"
#include "gpu_test.hpp"
#include "cpu/adamw.hpp"
#include "cpu/attention.hpp"
#include "cpu/dropout.hpp"
#include "cpu/rmsnorm.hpp"
#include "cpu/rope.hpp"
#include "cpu/swiglu.hpp"
#include "kernels.cuh"

using namespace lima;
using namespace limatest;
using cuda::bf16;

TEST(CudaKernels, RmsNormForwardBackward) {
    NEED_GPU();
    const long N = 300;
    const int d = 4096 + 64;
    auto x = randn(size_t(N) * d, 1), w = randn(size_t(d), 2, 0.5f), dy = round_bf16(randn(size_t(N) * d, 3));
    std::vector<float> out(x.size()), rstd(static_cast<size_t>(N)), dx(x.size(), 0.5f), dw(size_t(d), 0.25f);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, 1e-6f);
    auto dx_ref = dx, dw_ref = dw;
    cpu::rmsnorm_backward(dx_ref.data(), dw_ref.data(), dy.data(), x.data(), w.data(), rstd.data(), N, d);
    std::unique_ptr<Dev<float>> gx(up(x)), gw(up(w)), gdx(up(dx)), gdw(up(dw));
    Dev<bf16> gout(x.size());
    Dev<float> grstd(static_cast<size_t>(N));
    auto gdy = up16(dy);
    cuda::rmsnorm_forward(gout.p, grstd.p, gx->p, gw->p, N, d, 1e-6f, 0);
    EXPECT_LT(rel_err(down16(gout.p, out.size()), out), 8e-3);
    EXPECT_LT(rel_err(down(grstd.p, size_t(N)), rstd), 1e-5);
    cuda::rmsnorm_backward(gdx->p, gdw->p, gdy->p, gx->p, gw->p, grstd.p, N, d, true, 0);
    EXPECT_LT(rel_err(down(gdx->p, dx.size()), dx_ref), 1e-4);
    EXPECT_LT(rel_err(down(gdw->p, dw.size()), dw_ref), 1e-4);
}

TEST(CudaKernels, RopeForwardBackward) {
    NEED_GPU();
    const long N = 257;
    const int hd = 128, heads = 6, ld = heads * hd + 256;
    auto x = round_bf16(randn(size_t(N) * ld, 4));
    std::vector<int32_t> pos(static_cast<size_t>(N));
    for (long n = 0; n < N; ++n) pos[size_t(n)] = int32_t((n * 7) % 200);
    cpu::RopeTable t;
    lima_model_config rc;
    lima_model_config_init(&rc);
    t.build(hd, 256, rc);
    // CPU reference on the first heads*hd columns of each row
    std::vector<float> ref(size_t(N) * heads * hd);
    for (long n = 0; n < N; ++n) std::copy(x.begin() + n * ld, x.begin() + n * ld + heads * hd, ref.begin() + n * heads * hd);
    cpu::rope_forward(ref.data(), pos.data(), N, heads, hd, t);
    auto gx = up16(x);
    std::unique_ptr<Dev<float>> gc(up(t.cos)), gs(up(t.sin));
    Dev<int32_t> gp(pos.size());
    cudaMemcpy(gp.p, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice);
    cuda::rope_forward(gx->p, ld, gp.p, N, heads, hd, gc->p, gs->p, 0);
    auto got = down16(gx->p, x.size());
    std::vector<float> got_heads(ref.size()), tail_got, tail_ref;
    for (long n = 0; n < N; ++n) {
        std::copy(got.begin() + n * ld, got.begin() + n * ld + heads * hd, got_heads.begin() + n * heads * hd);
        tail_got.insert(tail_got.end(), got.begin() + n * ld + heads * hd, got.begin() + (n + 1) * ld);
        tail_ref.insert(tail_ref.end(), x.begin() + n * ld + heads * hd, x.begin() + (n + 1) * ld);
    }
    EXPECT_LT(rel_err(got_heads, ref), 8e-3);
    EXPECT_EQ(tail_got, tail_ref);  // columns past the rotated heads untouched
    cuda::rope_backward(gx->p, ld, gp.p, N, heads, hd, gc->p, gs->p, 0);  // the inverse rotation
    EXPECT_LT(rel_err(down16(gx->p, x.size()), x), 1.5e-2);
}

TEST(CudaKernels, DropoutDrawsTheCpuMasks) {
    NEED_GPU();
    const long n = 100003;
    const float p = 0.3f;
    const DropoutKey key{0x1234567890ULL, 17, 3};
    auto res = randn(size_t(n), 5), y = round_bf16(randn(size_t(n), 6));
    std::vector<float> ref = res, yc = y;
    cpu::dropout_residual_forward(ref.data(), yc.data(), n, p, &key, 5, 1);
    std::unique_ptr<Dev<float>> gres(up(res));
    Dev<float> gout(static_cast<size_t>(n));
    auto gy = up16(y);
    cuda::dropout_residual_forward(gout.p, gres->p, gy->p, n, p, &key, 5, 1, 0);
    auto got = down(gout.p, size_t(n));
    long same_mask = 0, dropped = 0;
    for (long i = 0; i < n; ++i) {
        const bool cpu_drop = yc[size_t(i)] == 0.0f, gpu_drop = got[size_t(i)] == res[size_t(i)];
        same_mask += cpu_drop == gpu_drop;
        dropped += cpu_drop;
    }
    EXPECT_EQ(same_mask, n);  // the very same elements are dropped
    EXPECT_NEAR(double(dropped) / n, p, 0.01);
    EXPECT_LT(rel_err(got, ref), 1e-6);
    // backward: the same mask on the gradient
    auto dres = randn(size_t(n), 7);
    std::vector<float> dref(static_cast<size_t>(n));
    cpu::dropout_residual_backward(dref.data(), dres.data(), n, p, &key, 5, 1);
    std::unique_ptr<Dev<float>> gd(up(dres));
    Dev<bf16> gdy(static_cast<size_t>(n));
    cuda::dropout_residual_backward(gdy.p, gd->p, n, p, &key, 5, 1, 0);
    EXPECT_LT(rel_err(down16(gdy.p, size_t(n)), dref), 5e-3);
}

TEST(CudaKernels, SwigluForwardBackward) {
    NEED_GPU();
    const long N = 129;
    const int F = 688;
    auto gu = round_bf16(randn(size_t(N) * 2 * F, 8, 2.0f)), dh = round_bf16(randn(size_t(N) * F, 9));
    std::vector<float> g(size_t(N) * F), u(size_t(N) * F), h(size_t(N) * F), dg(h.size()), du(h.size());
    for (long n = 0; n < N; ++n)
        for (int j = 0; j < F; ++j) {
            g[size_t(n * F + j)] = gu[size_t(n * 2 * F + j)];
            u[size_t(n * F + j)] = gu[size_t(n * 2 * F + F + j)];
        }
    cpu::swiglu_forward(h.data(), g.data(), u.data(), N * F);
    cpu::swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), u.data(), N * F);
    auto ggu = up16(gu), gdh = up16(dh);
    Dev<bf16> gh(h.size()), gdgu(gu.size());
    cuda::swiglu_forward(gh.p, ggu->p, N, F, 0);
    cuda::swiglu_backward(gdgu.p, gdh->p, ggu->p, N, F, 0);
    EXPECT_LT(rel_err(down16(gh.p, h.size()), h), 8e-3);
    auto got = down16(gdgu.p, gu.size());
    std::vector<float> got_g(h.size()), got_u(h.size());
    for (long n = 0; n < N; ++n)
        for (int j = 0; j < F; ++j) {
            got_g[size_t(n * F + j)] = got[size_t(n * 2 * F + j)];
            got_u[size_t(n * F + j)] = got[size_t(n * 2 * F + F + j)];
        }
    EXPECT_LT(rel_err(got_g, dg), 8e-3);
    EXPECT_LT(rel_err(got_u, du), 8e-3);
}

TEST(CudaKernels, CrossEntropyLossAndGradient) {
    NEED_GPU();
    const long C = 37;
    const int V = 32000;
    auto logits = randn(size_t(C) * V, 10, 3.0f);
    std::vector<int32_t> labels(static_cast<size_t>(C));
    for (long r = 0; r < C; ++r) labels[size_t(r)] = int32_t((r * 7919) % V);
    const float inv = 1.0f / 100.0f;
    double loss_ref = 0;
    std::vector<float> dref(logits.size()), lp_ref(static_cast<size_t>(C));
    for (long r = 0; r < C; ++r) {
        double mx = -1e30, s = 0;
        for (int j = 0; j < V; ++j) mx = std::max(mx, double(logits[size_t(r * V + j)]));
        for (int j = 0; j < V; ++j) s += std::exp(double(logits[size_t(r * V + j)]) - mx);
        const double lse = mx + std::log(s);
        loss_ref += lse - logits[size_t(r * V + labels[size_t(r)])];
        lp_ref[size_t(r)] = float(logits[size_t(r * V + labels[size_t(r)])] - lse);
        for (int j = 0; j < V; ++j)
            dref[size_t(r * V + j)] = float((std::exp(logits[size_t(r * V + j)] - lse) - (j == labels[size_t(r)])) * inv);
    }
    std::unique_ptr<Dev<float>> gl(up(logits));
    Dev<int32_t> glab(labels.size());
    cudaMemcpy(glab.p, labels.data(), labels.size() * 4, cudaMemcpyHostToDevice);
    Dev<bf16> gd(logits.size());
    Dev<double> gsum(1);
    Dev<float> glp(static_cast<size_t>(C));
    cudaMemset(gsum.p, 0, sizeof(double));
    cuda::cross_entropy(gd.p, gsum.p, gl->p, glab.p, C, V, inv, 0);
    cuda::label_logprobs(glp.p, gl->p, glab.p, C, V, 0);
    double loss = 0;
    cudaDeviceSynchronize();
    cudaMemcpy(&loss, gsum.p, sizeof(double), cudaMemcpyDeviceToHost);
    EXPECT_NEAR(loss, loss_ref, 1e-4 * std::abs(loss_ref));
    EXPECT_LT(rel_err(down16(gd.p, logits.size()), dref), 8e-3);
    EXPECT_LT(rel_err(down(glp.p, size_t(C)), lp_ref), 1e-5);
}

TEST(CudaKernels, AdamWMatchesTheCpuStep) {
    NEED_GPU();
    const long n = 70001;
    auto p = randn(size_t(n), 11), m = randn(size_t(n), 12, 0.01f), g = randn(size_t(n), 13, 0.1f);
    auto v = randn(size_t(n), 14, 0.01f);
    for (auto &x : v) x = x * x;
    const cpu::AdamWParams a{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, 7};
    auto p_ref = p, m_ref = m, v_ref = v;
    cpu::adamw_update(p_ref.data(), m_ref.data(), v_ref.data(), g.data(), 40000, true, a);
    cpu::adamw_update(p_ref.data() + 40000, m_ref.data() + 40000, v_ref.data() + 40000, g.data() + 40000, n - 40000, false, a);
    std::unique_ptr<Dev<float>> gp(up(p)), gm(up(m)), gv(up(v)), gg(up(g)), gscale(up({0.5f}));
    Dev<bf16> gp16(static_cast<size_t>(n));
    std::vector<cuda::AdamChunk> chunks{{0, 16384, 1}, {16384, 16384, 1}, {32768, 40000 - 32768, 1}, {40000, int32_t(n - 40000), 0}};
    Dev<cuda::AdamChunk> gc(chunks.size());
    cudaMemcpy(gc.p, chunks.data(), chunks.size() * sizeof(cuda::AdamChunk), cudaMemcpyHostToDevice);
    const double bc1 = 1.0 - std::pow(0.9, 7.0), bc2 = 1.0 - std::pow(0.95, 7.0);
    const cuda::AdamArgs ga{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, float(a.lr / bc1), float(std::sqrt(bc2)), gscale->p};
    cuda::adamw_update(gp->p, gp16.p, gm->p, gv->p, gg->p, gc.p, int(chunks.size()), ga, 0);
    EXPECT_LT(rel_err(down(gp->p, size_t(n)), p_ref), 1e-6);
    EXPECT_LT(rel_err(down(gm->p, size_t(n)), m_ref), 1e-6);
    EXPECT_LT(rel_err(down(gv->p, size_t(n)), v_ref), 1e-6);
    EXPECT_LT(rel_err(down16(gp16.p, size_t(n)), p_ref), 8e-3);
}

// How many elements of a and b differ in their bits.
size_t differing_bits(const std::vector<float> &a, const std::vector<float> &b) {
    if (a.size() != b.size()) return std::max(a.size(), b.size());
    size_t n = 0;
    for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return n;
}

// Attention on packed rows: segments of odd lengths (crossing 64-row tiles, with tiles wholly below
// the diagonal), padding, GQA; variant 0 against the CPU, then (variants) every other variant
// against variant 0's bits.
void attention_case(int hd, int Hq, int Hkv, uint32_t seed, bool variants = false) {
    const int B = 2, T = 300;
    const long N = long(B) * T;
    std::vector<cpu::Segment> segs{{0, 1}, {1, 130}, {131, 64}, {195, 100}, {300, 300}};  // row 0 ends with 5 padding tokens
    int max_len = 0;
    for (auto &s : segs) max_len = std::max(max_len, s.len);
    const int ld = (Hq + 2 * Hkv) * hd, qd = Hq * hd, kvd = Hkv * hd;
    auto qkv = round_bf16(randn(size_t(N) * ld, seed));
    std::vector<float> q(size_t(N) * qd), k(size_t(N) * kvd), v(size_t(N) * kvd);
    for (long n = 0; n < N; ++n) {
        std::copy(qkv.begin() + n * ld, qkv.begin() + n * ld + qd, q.begin() + n * qd);
        std::copy(qkv.begin() + n * ld + qd, qkv.begin() + n * ld + qd + kvd, k.begin() + n * kvd);
        std::copy(qkv.begin() + n * ld + qd + kvd, qkv.begin() + (n + 1) * ld, v.begin() + n * kvd);
    }
    std::vector<float> out(size_t(N) * qd), lse(size_t(N) * Hq);
    cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), segs, N, Hq, Hkv, hd, max_len);
    auto dout = round_bf16(randn(out.size(), seed + 1));
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                            segs, N, Hq, Hkv, hd, max_len);
    std::vector<cuda::AttnTile> tiles;
    for (auto &s : segs)
        for (int r0 = 0; r0 < s.len; r0 += 64) tiles.push_back({int64_t(s.start), r0, s.len});
    Dev<cuda::AttnTile> gt(tiles.size());
    cudaMemcpy(gt.p, tiles.data(), tiles.size() * sizeof(cuda::AttnTile), cudaMemcpyHostToDevice);
    auto gqkv = up16(qkv), gdout = up16(dout);
    const cuda::AttnShape s{N, Hq, Hkv, hd, ld};
    struct Result {
        std::vector<float> out, lse, dqkv;
    };
    // forward, then backward from the forward's output rounded to bf16, as the backend runs them
    auto run = [&] {
        Dev<bf16> gout(out.size()), gdqkv(qkv.size());
        Dev<float> glse(lse.size()), gD(lse.size());
        cudaMemset(gout.p, 0, out.size() * 2);  // as the backend does: padding rows stay 0
        cudaMemset(glse.p, 0, lse.size() * 4);
        cuda::attention_forward(gout.p, glse.p, gqkv->p, gt.p, int(tiles.size()), s, 0);
        Result r{down16(gout.p, out.size()), down(glse.p, lse.size()), {}};
        auto out16 = up16(r.out);
        cuda::attention_backward(gdqkv.p, gD.p, gdout->p, out16->p, glse.p, gqkv->p, gt.p, int(tiles.size()), s, 0);
        r.dqkv = down16(gdqkv.p, qkv.size());
        return r;
    };
    const int variant = cuda::attention_variant();
    cuda::set_attention_variant(0);
    const Result r0 = run();
    // padding rows 295..299 of row 0 have no lse; compare the rest
    std::vector<float> l_ref, l_got;
    for (long n = 0; n < N; ++n)
        if (n < 295 || n >= 300)
            for (int h = 0; h < Hq; ++h) {
                l_ref.push_back(lse[size_t(n * Hq + h)]);
                l_got.push_back(r0.lse[size_t(n * Hq + h)]);
            }
    EXPECT_LT(rel_err(r0.out, out), 1e-2) << "hd " << hd;
    EXPECT_LT(rel_err(l_got, l_ref), 2e-3) << "hd " << hd;
    std::vector<float> gq(q.size()), gk(k.size()), gv(v.size());
    for (long n = 0; n < N; ++n) {
        std::copy(r0.dqkv.begin() + n * ld, r0.dqkv.begin() + n * ld + qd, gq.begin() + n * qd);
        std::copy(r0.dqkv.begin() + n * ld + qd, r0.dqkv.begin() + n * ld + qd + kvd, gk.begin() + n * kvd);
        std::copy(r0.dqkv.begin() + n * ld + qd + kvd, r0.dqkv.begin() + (n + 1) * ld, gv.begin() + n * kvd);
    }
    EXPECT_LT(rel_err(gq, dq), 2e-2) << "hd " << hd;
    EXPECT_LT(rel_err(gk, dk), 2e-2) << "hd " << hd;
    EXPECT_LT(rel_err(gv, dv), 2e-2) << "hd " << hd;
    // the faster variants load the same values and sum in the same order: the same bits
    for (int v = 1; variants && v < cuda::kAttentionVariants; ++v) {
        cuda::set_attention_variant(v);
        const Result r = run();
        EXPECT_EQ(differing_bits(r.out, r0.out), 0u) << "out, hd " << hd << ", variant " << v;
        EXPECT_EQ(differing_bits(r.lse, r0.lse), 0u) << "lse, hd " << hd << ", variant " << v;
        EXPECT_EQ(differing_bits(r.dqkv, r0.dqkv), 0u) << "dqkv, hd " << hd << ", variant " << v;
    }
    cuda::set_attention_variant(variant);
}

TEST(CudaKernels, AttentionHeadDim128Gqa) { NEED_GPU(); attention_case(128, 4, 2, 20); }
TEST(CudaKernels, AttentionHeadDim64) { NEED_GPU(); attention_case(64, 3, 3, 30); }
TEST(CudaKernels, AttentionHeadDim32Mqa) { NEED_GPU(); attention_case(32, 4, 1, 40); }
// The faster candidates (kernels.cuh: attention_variant), kept to their own tests so that a fault in
// one cannot take the device from the checked kernels (ci/bench-gpu.sh runs them in a separate process).
TEST(CudaKernels, AttentionVariantsGiveVariantZerosBitsHeadDim128Gqa) { NEED_GPU(); attention_case(128, 4, 2, 21, true); }
TEST(CudaKernels, AttentionVariantsGiveVariantZerosBitsHeadDim64) { NEED_GPU(); attention_case(64, 3, 3, 31, true); }
TEST(CudaKernels, AttentionVariantsGiveVariantZerosBitsHeadDim32Mqa) { NEED_GPU(); attention_case(32, 4, 1, 41, true); }

// ------------------------------------------------------------------ whole model through the C ABI

namespace {

// Two rows of 200: row 0 packs examples of 90 and 70 then padding, row 1 one example of 200.
void packed_batch(std::vector<int32_t> &tok, std::vector<uint8_t> &mask, std::vector<int32_t> &seg, int V, uint32_t seed) {
    const int T = 200;
    std::mt19937 rng(seed);
    tok.assign(2 * T, 0);
    mask.assign(2 * T, 0);
    seg.assign(2 * T, 0);
    for (int t = 0; t < 2 * T; ++t) {
        tok[size_t(t)] = int32_t(rng() % uint32_t(V));
        const int r = t / T, p = t % T;
        seg[size_t(t)] = r == 1 ? 3 : p < 90 ? 1 : p < 160 ? 2 : 0;
        mask[size_t(t)] = seg[size_t(t)] != 0 && (p % 90) > 20 ? 1 : 0;
    }
}

struct Pair {
    ModelPtr cpu, gpu;
};

Pair make_pair_models(const lima_model_config &c = small_config()) {
    lima_model *a = nullptr, *b = nullptr;
    EXPECT_EQ(lima_model_create(&c, "cpu", 42, &a), LIMA_OK) << lima_last_error();
    EXPECT_EQ(lima_model_create(&c, "cuda:0", 42, &b), LIMA_OK) << lima_last_error();
    return {ModelPtr(a), ModelPtr(b)};
}

std::vector<float> read_grad(lima_trainer *t, lima_model *m, int32_t i) {
    char name[256];
    int64_t shape[2];
    int32_t nd = 0;
    EXPECT_EQ(lima_model_tensor_info(m, i, name, sizeof name, shape, &nd), LIMA_OK);
    const int64_t n = nd == 2 ? shape[0] * shape[1] : shape[0];
    std::vector<float> g(static_cast<size_t>(n));
    EXPECT_EQ(lima_trainer_read_grad(t, name, g.data(), n), LIMA_OK) << lima_last_error();
    return g;
}

// A CUDA model and trainer state saved (the model as a checkpoint, the optimiser state) and loaded
// into a fresh CUDA model with a new trainer of config tc.
struct Reloaded {
    ModelPtr model;
    TrainerPtr trainer;
};

Reloaded reload_on_device(lima_model *m, lima_trainer *t, const lima_train_config &tc, const std::string &dir) {
    EXPECT_EQ(lima_model_save(m, (dir + "/ckpt").c_str(), LIMA_DTYPE_F32, 0), LIMA_OK) << lima_last_error();
    EXPECT_EQ(lima_trainer_save_state(t, (dir + "/state.safetensors").c_str()), LIMA_OK) << lima_last_error();
    lima_model *mc = nullptr;
    EXPECT_EQ(lima_model_load((dir + "/ckpt").c_str(), "cuda", &mc), LIMA_OK) << lima_last_error();
    Reloaded r{ModelPtr(mc), nullptr};
    lima_trainer *tcc = nullptr;
    EXPECT_EQ(lima_trainer_create(mc, &tc, &tcc), LIMA_OK) << lima_last_error();
    r.trainer.reset(tcc);
    EXPECT_EQ(lima_trainer_load_state(tcc, (dir + "/state.safetensors").c_str()), LIMA_OK) << lima_last_error();
    return r;
}

}  // namespace

class CudaModel : public ::testing::Test {
protected:
    void SetUp() override {
        if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
        setenv("LIMA_CUDA_PLUGIN", LIMA_CUDA_PLUGIN_FILE, 1);
    }
};

// A trainer on each model of the pair, residual dropout 0.3 with the given seed.
struct TrainerPair {
    TrainerPtr cpu, gpu;
};

TrainerPair make_trainers(const Pair &p, uint64_t seed) {
    lima_train_config tc;
    lima_train_config_init(&tc);
    tc.resid_dropout = 0.3f;
    tc.seed = seed;
    lima_trainer *ta = nullptr, *tb = nullptr;
    EXPECT_EQ(lima_trainer_create(p.cpu.get(), &tc, &ta), LIMA_OK) << lima_last_error();
    EXPECT_EQ(lima_trainer_create(p.gpu.get(), &tc, &tb), LIMA_OK) << lima_last_error();
    return {TrainerPtr(ta), TrainerPtr(tb)};
}

// One micro-batch with dropout over packed rows on both backends: the loss and every gradient.
void expect_loss_and_gradients_match(const lima_model_config &c) {
    Pair p = make_pair_models(c);
    ASSERT_TRUE(p.cpu && p.gpu);
    TrainerPair t = make_trainers(p, 7);
    ASSERT_TRUE(t.cpu && t.gpu);
    lima_trainer *ta = t.cpu.get(), *tb = t.gpu.get();
    std::vector<int32_t> tok, seg;
    std::vector<uint8_t> mask;
    packed_batch(tok, mask, seg, c.vocab_size, 1);
    BatchPtr batch = make_batch(2, 200, tok, mask, seg);
    ASSERT_TRUE(batch);
    lima_batch *bb = batch.get();
    int64_t targets = 0;
    LIMA_OK_OR_FAIL(lima_batch_num_targets(bb, &targets));
    lima_fb_result ra{}, rb{};
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(ta, bb, targets, &ra));
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb, bb, targets, &rb));
    EXPECT_EQ(ra.num_targets, rb.num_targets);
    EXPECT_NEAR(rb.loss_sum / rb.num_targets, ra.loss_sum / ra.num_targets, 2e-2 * ra.loss_sum / ra.num_targets);
    int32_t nt = 0;
    LIMA_OK_OR_FAIL(lima_model_num_tensors(p.cpu.get(), &nt));
    for (int32_t i = 0; i < nt; ++i) {
        const auto ga = read_grad(ta, p.cpu.get(), i), gb = read_grad(tb, p.gpu.get(), i);
        EXPECT_LT(rel_err(gb, ga), 6e-2) << "tensor " << i;
    }
}

TEST_F(CudaModel, LossAndEveryGradientMatchTheCpuWithDropoutAndPacking) { expect_loss_and_gradients_match(small_config()); }

// Projection biases (attention_bias, mlp_bias: the fused q|k|v and gate|up biases, o and down): the
// loss, every gradient (each bias's too) and eval log-probabilities against the CPU.
TEST_F(CudaModel, ProjectionBiasesMatchTheCpu) {
    lima_model_config c = small_config();
    c.attention_bias = 1;
    c.mlp_bias = 1;
    // lima_model_create fills the undecayed tensors (norm gains, biases) with 1: non-zero biases
    expect_loss_and_gradients_match(c);
    Pair p = make_pair_models(c);
    std::vector<int32_t> tok, seg;
    std::vector<uint8_t> mask;
    packed_batch(tok, mask, seg, c.vocab_size, 5);
    BatchPtr batch = make_batch(2, 200, tok, mask, seg);
    std::vector<float> a(400), b(400);
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.cpu.get(), batch.get(), a.data(), 400));
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.gpu.get(), batch.get(), b.data(), 400));
    EXPECT_LT(rel_err(b, a), 1e-2);
}

TEST_F(CudaModel, TrainingStepsFollowTheCpuLossesAndResumeExactly) {
    Pair p = make_pair_models();
    ASSERT_TRUE(p.cpu && p.gpu);
    lima_train_config tc;
    lima_train_config_init(&tc);
    tc.resid_dropout = 0.2f;
    lima_trainer *ta = nullptr, *tb = nullptr;
    LIMA_OK_OR_FAIL(lima_trainer_create(p.cpu.get(), &tc, &ta));
    LIMA_OK_OR_FAIL(lima_trainer_create(p.gpu.get(), &tc, &tb));
    TrainerPtr A(ta), Bt(tb);
    lima_batch *bb = nullptr;
    LIMA_OK_OR_FAIL(lima_batch_create(2, 200, &bb));
    BatchPtr batch(bb);
    const std::string dir = temp_dir("cuda-resume");
    for (int step = 0; step < 6; ++step) {
        std::vector<int32_t> tok, seg;
        std::vector<uint8_t> mask;
        packed_batch(tok, mask, seg, small_config().vocab_size, 100 + uint32_t(step % 2));  // two batches, alternating
        LIMA_OK_OR_FAIL(lima_batch_set(bb, tok.data(), mask.data(), seg.data()));
        int64_t targets = 0;
        LIMA_OK_OR_FAIL(lima_batch_num_targets(bb, &targets));
        lima_fb_result ra{}, rb{};
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(ta, bb, targets, &ra));
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb, bb, targets, &rb));
        const double la = ra.loss_sum / ra.num_targets, lb = rb.loss_sum / rb.num_targets;
        EXPECT_NEAR(lb, la, 3e-2 * la) << "step " << step;
        lima_step_result sa{}, sb{};
        LIMA_OK_OR_FAIL(lima_trainer_step(ta, 1e-3f, &sa));
        LIMA_OK_OR_FAIL(lima_trainer_step(tb, 1e-3f, &sb));
        EXPECT_NEAR(sb.grad_norm, sa.grad_norm, 6e-2 * sa.grad_norm) << "step " << step;
        EXPECT_EQ(sb.step, sa.step);
    }
    // weights after 6 steps, read back from the device
    std::vector<float> wa(256 * 256), wb(256 * 256);
    LIMA_OK_OR_FAIL(lima_model_read_tensor(p.cpu.get(), "model.layers.1.self_attn.o_proj.weight", wa.data(), int64_t(wa.size())));
    LIMA_OK_OR_FAIL(lima_model_read_tensor(p.gpu.get(), "model.layers.1.self_attn.o_proj.weight", wb.data(), int64_t(wb.size())));
    EXPECT_LT(rel_err(wb, wa), 2e-2);
    // save model + optimiser state, load into a fresh CUDA model: the next step is identical
    Reloaded C = reload_on_device(p.gpu.get(), tb, tc, dir);
    ASSERT_TRUE(C.trainer);
    lima_trainer *tcc = C.trainer.get();
    lima_fb_result r1{}, r2{};
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb, bb, 10000, &r1));
    LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tcc, bb, 10000, &r2));
    EXPECT_EQ(r1.loss_sum, r2.loss_sum);  // same weights, same dropout key: bitwise
}

TEST_F(CudaModel, EvalLogprobsMatchTheCpu) {
    Pair p = make_pair_models();
    ASSERT_TRUE(p.cpu && p.gpu);
    std::vector<int32_t> tok, seg;
    std::vector<uint8_t> mask;
    packed_batch(tok, mask, seg, small_config().vocab_size, 3);
    BatchPtr batch = make_batch(2, 200, tok, mask, seg);
    ASSERT_TRUE(batch);
    lima_batch *bb = batch.get();
    std::vector<float> a(400), b(400, 123.0f);
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.cpu.get(), bb, a.data(), 400));
    LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.gpu.get(), bb, b.data(), 400));
    EXPECT_LT(rel_err(b, a), 1e-2);
    EXPECT_EQ(b[0], 0.0f);    // first token of a segment
    EXPECT_EQ(b[170], 0.0f);  // padding
}

TEST_F(CudaModel, MemoryPlanReportsAndRefusesWhatCannotFit) {
    const lima_model_config c = small_config();
    lima_model *m = nullptr;
    LIMA_OK_OR_FAIL(lima_model_create(&c, "cuda", 1, &m));
    ModelPtr M(m);
    lima_train_config tc;
    lima_train_config_init(&tc);
    lima_trainer *t = nullptr;
    LIMA_OK_OR_FAIL(lima_trainer_create(m, &tc, &t));
    TrainerPtr Tp(t);
    lima_memory_plan plan{};
    LIMA_OK_OR_FAIL(lima_trainer_plan_memory(t, 4, 512, &plan));
    EXPECT_GT(plan.activations, 0);
    EXPECT_EQ(plan.total, plan.weights + plan.optimizer + plan.activations + plan.workspace);
    EXPECT_GT(plan.device_total, plan.total);
    EXPECT_GE(plan.peak, plan.weights);
    EXPECT_LIMA_ERR(lima_trainer_plan_memory(t, 1 << 20, 2048, &plan), LIMA_ERR_OUT_OF_MEMORY, "GiB are free");
    // still usable after the refusal
    LIMA_OK_OR_FAIL(lima_trainer_plan_memory(t, 2, 256, &plan));
}

TEST_F(CudaModel, UnsupportedHeadDimIsRefusedClearly) {
    lima_model_config c = small_config();
    c.head_dim = 48;
    lima_model *m = nullptr;
    EXPECT_LIMA_ERR(lima_model_create(&c, "cuda", 1, &m), LIMA_ERR_UNSUPPORTED, "head_dim 32, 64 or 128");
}

TEST_F(CudaModel, RecomputationGivesTheSameGradients) {
    const lima_model_config c = small_config();
    lima_model *m = nullptr;
    LIMA_OK_OR_FAIL(lima_model_create(&c, "cuda", 5, &m));
    ModelPtr M(m);
    std::vector<int32_t> tok, seg;
    std::vector<uint8_t> mask;
    packed_batch(tok, mask, seg, c.vocab_size, 9);
    BatchPtr batch = make_batch(2, 200, tok, mask, seg);
    ASSERT_TRUE(batch);
    lima_batch *bb = batch.get();
    std::vector<std::vector<float>> grads[2];
    double loss[2];
    for (int rc = 0; rc < 2; ++rc) {
        lima_train_config tc;
        lima_train_config_init(&tc);
        tc.resid_dropout = 0.3f;
        tc.recompute_activations = rc;
        lima_trainer *t = nullptr;
        LIMA_OK_OR_FAIL(lima_trainer_create(m, &tc, &t));
        TrainerPtr Tp(t);
        lima_fb_result r{};
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(t, bb, 1000, &r));
        loss[rc] = r.loss_sum;
        for (int32_t i = 0; i < 5; ++i) grads[rc].push_back(read_grad(t, m, i));
    }
    EXPECT_EQ(loss[0], loss[1]);
    for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_LT(rel_err(grads[1][i], grads[0][i]), 1e-5) << i;
}

namespace {

std::vector<float> tensor(lima_model *m, const std::string &name, int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    EXPECT_EQ(lima_model_read_tensor(m, name.c_str(), v.data(), n), LIMA_OK) << name << ": " << lima_last_error();
    return v;
}

std::vector<std::vector<float>> every_tensor(lima_model *m) {
    int32_t nt = 0;
    EXPECT_EQ(lima_model_num_tensors(m, &nt), LIMA_OK);
    std::vector<std::vector<float>> out;
    for (int32_t i = 0; i < nt; ++i) {
        char name[256];
        int64_t shape[2];
        int32_t nd = 0;
        EXPECT_EQ(lima_model_tensor_info(m, i, name, sizeof name, shape, &nd), LIMA_OK);
        out.push_back(tensor(m, name, nd == 2 ? shape[0] * shape[1] : shape[0]));
    }
    return out;
}

}  // namespace

// Offload (the optimiser on the host, the gradient staged unit by unit) against the plain device path
// on a model that fits both ways: the same losses, norms and weights after several steps of two
// micro-batches with dropout and clipping, eval right after a step (while the host is still
// publishing units), and state that moves between the two.
TEST_F(CudaModel, OffloadTrainsAsThePlainDevicePathDoes) {
    for (const int tied : {0, 1}) {
        lima_model_config c = small_config();
        c.tie_word_embeddings = tied;
        lima_model *a = nullptr, *b = nullptr;
        LIMA_OK_OR_FAIL(lima_model_create(&c, "cuda", 11, &a));
        LIMA_OK_OR_FAIL(lima_model_create(&c, "cuda", 11, &b));
        ModelPtr A(a), B(b);
        lima_train_config tc;
        lima_train_config_init(&tc);
        tc.resid_dropout = 0.2f;
        tc.grad_clip = 0.5f;
        lima_train_config to = tc;
        to.offload = 1;
        lima_trainer *ta = nullptr, *tb = nullptr;
        LIMA_OK_OR_FAIL(lima_trainer_create(a, &tc, &ta));
        LIMA_OK_OR_FAIL(lima_trainer_create(b, &to, &tb));
        TrainerPtr TA(ta), TB(tb);
        lima_memory_plan pa{}, pb{};
        LIMA_OK_OR_FAIL(lima_trainer_plan_memory(ta, 2, 200, &pa));
        LIMA_OK_OR_FAIL(lima_trainer_plan_memory(tb, 2, 200, &pb));
        EXPECT_EQ(pa.host, 0);
        EXPECT_GT(pb.host, 0);
        EXPECT_LT(pb.weights + pb.optimizer, (pa.weights + pa.optimizer) / 2) << "offload keeps less on the device";
        lima_batch *bb = nullptr;
        LIMA_OK_OR_FAIL(lima_batch_create(2, 200, &bb));
        BatchPtr batch(bb);
        for (int step = 0; step < 5; ++step) {
            for (int micro = 0; micro < 2; ++micro) {
                std::vector<int32_t> tok, seg;
                std::vector<uint8_t> mask;
                packed_batch(tok, mask, seg, c.vocab_size, 200 + uint32_t(step * 2 + micro));
                LIMA_OK_OR_FAIL(lima_batch_set(bb, tok.data(), mask.data(), seg.data()));
                lima_fb_result ra{}, rb{};
                LIMA_OK_OR_FAIL(lima_trainer_forward_backward(ta, bb, 500, &ra));
                LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb, bb, 500, &rb));
                EXPECT_NEAR(rb.loss_sum, ra.loss_sum, 1e-4 * ra.loss_sum) << "tied " << tied << " step " << step;
            }
            lima_step_result sa{}, sb{};
            LIMA_OK_OR_FAIL(lima_trainer_step(ta, 2e-3f, &sa));
            LIMA_OK_OR_FAIL(lima_trainer_step(tb, 2e-3f, &sb));
            EXPECT_NEAR(sb.grad_norm, sa.grad_norm, 1e-4 * sa.grad_norm);
            EXPECT_EQ(sb.clipped, sa.clipped);
            std::vector<float> la(400), lb(400);  // at once: the offloaded forward waits for each unit
            LIMA_OK_OR_FAIL(lima_model_token_logprobs(a, bb, la.data(), 400));
            LIMA_OK_OR_FAIL(lima_model_token_logprobs(b, bb, lb.data(), 400));
            EXPECT_LT(rel_err(lb, la), 1e-4) << "step " << step;
        }
        const auto wa = every_tensor(a), wb = every_tensor(b);
        for (size_t i = 0; i < wa.size(); ++i) EXPECT_LT(rel_err(wb[i], wa[i]), 1e-4) << "tensor " << i;
        // the offloaded state continues in a plain trainer on a fresh model (same format)
        Reloaded C = reload_on_device(b, tb, tc, temp_dir("cuda-offload"));
        ASSERT_TRUE(C.trainer);
        lima_trainer *tcc = C.trainer.get();
        lima_fb_result r1{}, r2{};
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb, bb, 500, &r1));
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tcc, bb, 500, &r2));
        EXPECT_EQ(r1.loss_sum, r2.loss_sum);  // the same bf16 weights, the same dropout key
        lima_step_result s1{}, s2{};
        LIMA_OK_OR_FAIL(lima_trainer_step(tb, 2e-3f, &s1));
        LIMA_OK_OR_FAIL(lima_trainer_step(tcc, 2e-3f, &s2));
        EXPECT_NEAR(s1.grad_norm, s2.grad_norm, 1e-4 * s2.grad_norm);
        // a model trained one way is refused the other way
        lima_trainer *t3 = nullptr;
        EXPECT_LIMA_ERR(lima_trainer_create(b, &tc, &t3), LIMA_ERR_STATE, "offload");
    }
}

namespace {

// Every tensor of an adapter over the small config: each projection's lora_A and lora_B (PEFT's
// names), then the trainable token rows.
std::vector<std::string> adapter_tensors(const lima_model_config &c, bool token_rows) {
    static const char *const target[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    std::vector<std::string> out;
    for (int l = 0; l < c.num_layers; ++l)
        for (const char *t : target)
            for (const char *ab : {".lora_A.weight", ".lora_B.weight"})
                out.push_back("base_model.model.model.layers." + std::to_string(l) + "." + t + ab);
    if (token_rows) {
        out.push_back("base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta");
        if (!c.tie_word_embeddings) out.push_back("base_model.model.lm_head.token_adapter.trainable_tokens_delta");
    }
    return out;
}

// Elements of an adapter tensor of rank r over config c (one trainable token row: d).
int64_t adapter_numel(const lima_model_config &c, const std::string &n, int r) {
    const int64_t d = c.hidden_size, F = c.intermediate_size, hd = c.head_dim ? c.head_dim : d / c.num_heads;
    const int64_t qd = c.num_heads * hd, kvd = c.num_kv_heads * hd;
    auto has = [&](const char *s) { return n.find(s) != std::string::npos; };
    if (has("trainable_tokens")) return d;
    if (has("lora_A")) return r * (has("o_proj") ? qd : has("down_proj") ? F : d);
    return r * (has("q_proj") ? qd : has("k_proj") || has("v_proj") ? kvd : has("gate_proj") || has("up_proj") ? F : d);
}

}  // namespace

// LoRA on the device against the CPU's (itself checked against PEFT): the same adapter (B made
// non-zero) on both, the loss and the gradient of every adapter tensor with residual and adapter
// dropout over packed rows, training steps that follow the CPU's losses with the trainable EOT rows
// moving, eval log-probabilities, the adapter saved from the device loading on the CPU, and removal
// giving the base back. And QLoRA: the same over the base's projections in NF4 (double-quantised),
// dequantised layer by layer on the device.
TEST_F(CudaModel, LoraAndQloraTrainAsTheCpuDoes) {
    for (const int q4 : {0, 1})
    for (const int tied : {0, 1}) {
        SCOPED_TRACE(std::string(q4 ? "qlora" : "lora") + (tied ? " tied" : " untied"));
        lima_model_config c = small_config();
        c.tie_word_embeddings = tied;
        Pair p = make_pair_models(c);
        ASSERT_TRUE(p.cpu && p.gpu);
        if (q4)
            for (lima_model *m : {p.cpu.get(), p.gpu.get()}) LIMA_OK_OR_FAIL(lima_model_quantize_nf4(m, 1));
        std::vector<int32_t> tok, seg;
        std::vector<uint8_t> mask;
        packed_batch(tok, mask, seg, c.vocab_size, 21);
        BatchPtr batch = make_batch(2, 200, tok, mask, seg);
        lima_batch *bb = batch.get();
        std::vector<float> base(400);
        LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.gpu.get(), bb, base.data(), 400));
        const int32_t eot[1] = {int32_t(c.vocab_size - 1)};
        for (lima_model *m : {p.cpu.get(), p.gpu.get()})
            LIMA_OK_OR_FAIL(lima_model_add_adapter(m, 8, 16.0f, 0.1f, LIMA_LORA_ALL, eot, 1, 0, 5));
        const auto names = adapter_tensors(c, true);
        std::mt19937 rng(3);
        std::normal_distribution<float> nd(0.0f, 0.02f);
        for (const auto &n : names) {  // B = 0 makes a fresh adapter invisible: give every B values
            if (n.find("lora_B") == std::string::npos) continue;
            std::vector<float> w = tensor(p.cpu.get(), n, adapter_numel(c, n, 8));
            for (float &x : w) x = nd(rng);
            for (lima_model *m : {p.cpu.get(), p.gpu.get()})
                LIMA_OK_OR_FAIL(lima_model_write_tensor(m, n.c_str(), w.data(), int64_t(w.size())));
        }
        std::vector<float> la(400), lb(400);
        LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.cpu.get(), bb, la.data(), 400));
        LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.gpu.get(), bb, lb.data(), 400));
        EXPECT_LT(rel_err(lb, la), 1e-2) << "tied " << tied;
        EXPECT_GT(rel_err(lb, base), 1e-3) << "the adapter changes the model";
        TrainerPair t = make_trainers(p, 9);
        ASSERT_TRUE(t.cpu && t.gpu);
        lima_trainer *ta = t.cpu.get(), *tb = t.gpu.get();
        int64_t targets = 0;
        LIMA_OK_OR_FAIL(lima_batch_num_targets(bb, &targets));
        lima_fb_result ra{}, rb{};
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(ta, bb, targets, &ra));
        LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb, bb, targets, &rb));
        EXPECT_NEAR(rb.loss_sum, ra.loss_sum, 2e-2 * ra.loss_sum);
        for (const auto &n : names) {
            const int64_t numel = adapter_numel(c, n, 8);
            std::vector<float> ga(static_cast<size_t>(numel)), gb(static_cast<size_t>(numel));
            LIMA_OK_OR_FAIL(lima_trainer_read_grad(ta, n.c_str(), ga.data(), numel));
            LIMA_OK_OR_FAIL(lima_trainer_read_grad(tb, n.c_str(), gb.data(), numel));
            EXPECT_LT(rel_err(gb, ga), 6e-2) << n << " tied " << tied;
        }
        for (int step = 0; step < 4; ++step) {
            lima_step_result sa{}, sb{};
            LIMA_OK_OR_FAIL(lima_trainer_step(ta, 2e-3f, &sa));
            LIMA_OK_OR_FAIL(lima_trainer_step(tb, 2e-3f, &sb));
            EXPECT_NEAR(sb.grad_norm, sa.grad_norm, 6e-2 * sa.grad_norm);
            LIMA_OK_OR_FAIL(lima_trainer_forward_backward(ta, bb, targets, &ra));
            LIMA_OK_OR_FAIL(lima_trainer_forward_backward(tb, bb, targets, &rb));
            EXPECT_NEAR(rb.loss_sum, ra.loss_sum, 3e-2 * ra.loss_sum) << "step " << step;
        }
        t.cpu.reset();
        t.gpu.reset();
        // the EOT row moved on both, and the device's adapter, saved, is the CPU's within bf16 training noise
        const std::string dir = temp_dir("cuda-lora") + (q4 ? "/qlora" : "/lora") + (tied ? "-tied" : "-untied");
        LIMA_OK_OR_FAIL(lima_model_save_adapter(p.gpu.get(), dir.c_str(), "base"));
        const auto rows_a = tensor(p.cpu.get(), names.back(), 256), rows_b = tensor(p.gpu.get(), names.back(), 256);
        EXPECT_LT(rel_err(rows_b, rows_a), 2e-2);
        lima_model *cpu2 = nullptr;
        LIMA_OK_OR_FAIL(lima_model_create(&c, "cpu", 42, &cpu2));
        ModelPtr C2(cpu2);
        if (q4) LIMA_OK_OR_FAIL(lima_model_quantize_nf4(cpu2, 1));
        LIMA_OK_OR_FAIL(lima_model_load_adapter(cpu2, dir.c_str()));
        std::vector<float> lc(400), lg(400);
        LIMA_OK_OR_FAIL(lima_model_token_logprobs(cpu2, bb, lc.data(), 400));
        LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.gpu.get(), bb, lg.data(), 400));
        EXPECT_LT(rel_err(lg, lc), 1e-2);
        LIMA_OK_OR_FAIL(lima_model_remove_adapter(p.gpu.get()));
        std::vector<float> back(400);
        LIMA_OK_OR_FAIL(lima_model_token_logprobs(p.gpu.get(), bb, back.data(), 400));
        EXPECT_LT(rel_err(back, base), 1e-6) << "removing the adapter gives the base back";
    }
}

// NCCL in-process with one rank (NCCL refuses two ranks of one process on one GPU; two processes
// are ci/bench-gpu.sh dp's): the communicator's host collectives, then a CUDA trainer made data
// parallel at every ZeRO stage trains as the same trainer without a communicator (one rank's
// all-reduce, reduce-scatter and all-gathers are copies, its shard or pieces are everything; within
// fp32 noise: the embedding gradient's atomics make even two plain runs differ in the last bits),
// at stage 3 through the per-unit gathers, prefetch and reduce-scatters, and from a hollow model
// filled unit by unit from a checkpoint; its checkpoint (gathered by the trainer) and sharded state
// load into a trainer without a communicator that goes on as it does.
TEST_F(CudaModel, NcclRankOfOneTrainsAsNoCommunicatorAtEveryStage) {
    std::vector<uint8_t> id(128);
    LIMA_OK_OR_FAIL(lima_comm_nccl_unique_id(id.data(), 128));
    lima_comm *raw = nullptr;
    LIMA_OK_OR_FAIL(lima_comm_create_nccl(0, 1, id.data(), 128, "cuda:0", 60000, &raw));
    std::unique_ptr<lima_comm, void (*)(lima_comm *)> comm(raw, lima_comm_free);
    std::vector<float> v{1.5f, -2.0f, 3.25f}, all(3, 0.0f);
    LIMA_OK_OR_FAIL(lima_comm_allreduce_sum(raw, v.data(), 3));
    EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f, 3.25f}));
    LIMA_OK_OR_FAIL(lima_comm_allgather(raw, v.data(), 3, all.data()));
    EXPECT_EQ(all, v);
    LIMA_OK_OR_FAIL(lima_comm_broadcast(raw, v.data(), 3, 0));
    LIMA_OK_OR_FAIL(lima_comm_barrier(raw));
    EXPECT_EQ(lima_comm_broadcast(raw, v.data(), 3, 1), LIMA_ERR_INVALID_ARGUMENT);

    const lima_model_config c = small_config();
    std::vector<int32_t> tok, seg;
    std::vector<uint8_t> mask;
    packed_batch(tok, mask, seg, c.vocab_size, 31);
    BatchPtr batch = make_batch(2, 200, tok, mask, seg);
    lima_batch *bb = batch.get();
    int64_t targets = 0;
    LIMA_OK_OR_FAIL(lima_batch_num_targets(bb, &targets));
    lima_train_config tc;
    lima_train_config_init(&tc);
    tc.resid_dropout = 0.2f;
    tc.seed = 5;
    auto train = [&](lima_trainer *t, int steps) {  // two micro-batches a step: accumulation across them
        std::vector<double> out;
        for (int s = 0; s < steps; ++s) {
            lima_fb_result r1{}, r2{};
            lima_step_result st{};
            EXPECT_EQ(lima_trainer_forward_backward(t, bb, 2 * targets, &r1), LIMA_OK) << lima_last_error();
            EXPECT_EQ(lima_trainer_forward_backward(t, bb, 2 * targets, &r2), LIMA_OK) << lima_last_error();
            EXPECT_EQ(lima_trainer_step(t, 1e-3f, &st), LIMA_OK) << lima_last_error();
            out.push_back(r1.loss_sum + r2.loss_sum);
            out.push_back(st.grad_norm);
        }
        return out;
    };
    auto near = [](const std::vector<double> &a, const std::vector<double> &b) {
        double worst = a.size() == b.size() ? 0.0 : 1.0;
        for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / std::fabs(b[i]));
        return worst;
    };
    const std::string w = "model.layers.1.mlp.down_proj.weight";
    const int64_t wn = int64_t(c.hidden_size) * c.intermediate_size;
    for (const int stage : {0, 1, 2, 3, 4}) {  // 4: stage 3 from a hollow model
        const int zs = std::min(stage, 3);
        SCOPED_TRACE("stage " + std::to_string(stage));
        const std::string dir = temp_dir("cuda-nccl-" + std::to_string(stage));
        lima_model *ma = nullptr, *mb = nullptr;
        LIMA_OK_OR_FAIL(lima_model_create(&c, "cuda:0", 42, &ma));
        ModelPtr A(ma);
        if (stage == 4) {  // the same weights through a checkpoint, read unit by unit by the trainer
            LIMA_OK_OR_FAIL(lima_model_save(ma, (dir + "/init").c_str(), LIMA_DTYPE_F32, 0));
            LIMA_OK_OR_FAIL(lima_model_load_hollow((dir + "/init").c_str(), &mb));
            EXPECT_EQ(lima_model_to_device(mb, "cpu"), LIMA_ERR_INVALID_ARGUMENT);
            LIMA_OK_OR_FAIL(lima_model_to_device(mb, "cuda:0"));
        } else {
            LIMA_OK_OR_FAIL(lima_model_create(&c, "cuda:0", 42, &mb));
        }
        ModelPtr B(mb);
        lima_trainer *ta = nullptr, *tb = nullptr;
        LIMA_OK_OR_FAIL(lima_trainer_create(ma, &tc, &ta));
        LIMA_OK_OR_FAIL(lima_trainer_create(mb, &tc, &tb));
        TrainerPtr TA(ta), TB(tb);
        LIMA_OK_OR_FAIL(lima_trainer_set_comm(tb, raw, zs));
        EXPECT_LT(near(train(tb, 3), train(ta, 3)), 1e-5);
        if (zs == 3) {  // the weights are the pieces': the model itself refuses until they are gathered
            std::vector<float> x(16);
            EXPECT_EQ(lima_model_read_tensor(mb, "model.norm.weight", x.data(), 16), LIMA_ERR_STATE);
            lima_generator *g = nullptr;
            EXPECT_NE(lima_generator_create(mb, 1, 16, &g), LIMA_OK);
        }
        LIMA_OK_OR_FAIL(lima_trainer_gather_params(tb, 0));
        std::vector<float> wa(static_cast<size_t>(wn)), wb(static_cast<size_t>(wn));
        LIMA_OK_OR_FAIL(lima_model_read_tensor(ma, w.c_str(), wa.data(), wn));
        LIMA_OK_OR_FAIL(lima_model_read_tensor(mb, w.c_str(), wb.data(), wn));
        EXPECT_LT(rel_err(wb, wa), 1e-5);
        // the checkpoint (written by the trainer: collective) and the state (a shard file at stages 1-3)
        const std::string path = dir + "/state.safetensors";
        LIMA_OK_OR_FAIL(lima_trainer_save_state(tb, path.c_str()));
        LIMA_OK_OR_FAIL(lima_trainer_save_model(tb, (dir + "/ckpt").c_str(), LIMA_DTYPE_F32, 0, 0));
        lima_model *mc = nullptr;
        LIMA_OK_OR_FAIL(lima_model_load((dir + "/ckpt").c_str(), "cuda:0", &mc));
        ModelPtr C(mc);
        std::vector<float> wc(static_cast<size_t>(wn));
        LIMA_OK_OR_FAIL(lima_model_read_tensor(mc, w.c_str(), wc.data(), wn));
        EXPECT_EQ(wc, wb);
        lima_trainer *tcc = nullptr;
        LIMA_OK_OR_FAIL(lima_trainer_create(mc, &tc, &tcc));
        TrainerPtr TC(tcc);
        const char *paths[1] = {path.c_str()};
        LIMA_OK_OR_FAIL(zs == 0 ? lima_trainer_load_state(tcc, path.c_str()) : lima_trainer_load_state_shards(tcc, paths, 1));
        EXPECT_LT(near(train(tcc, 2), train(tb, 2)), 1e-5);
    }
}

// Without a GPU: the CUDA plugin opens the real NCCL (the one beside the header it was built with,
// or $LIMA_NCCL_LIBRARY), resolves every symbol it uses and makes a unique id (NCCL needs no device
// for that); two ids differ. Skips where no NCCL library was found at build time.
TEST(CudaNccl, ThePluginOpensNcclAndMakesUniqueIdsWithoutAGpu) {
    const std::string lib = LIMA_NCCL_TEST_LIB;
    if (lib.empty() && !std::getenv("LIMA_NCCL_LIBRARY")) GTEST_SKIP() << "no NCCL library found at build time";
    if (!lib.empty()) setenv("LIMA_NCCL_LIBRARY", lib.c_str(), 0);
    setenv("LIMA_CUDA_PLUGIN", LIMA_CUDA_PLUGIN_FILE, 1);
    std::vector<uint8_t> a(128, 0), b(128, 0);
    LIMA_OK_OR_FAIL(lima_comm_nccl_unique_id(a.data(), 128));
    LIMA_OK_OR_FAIL(lima_comm_nccl_unique_id(b.data(), 128));
    EXPECT_NE(a, std::vector<uint8_t>(128, 0));
    EXPECT_NE(a, b);
}
