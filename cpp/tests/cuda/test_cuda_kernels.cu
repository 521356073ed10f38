// Every CUDA kernel family that the whole-model tests used to cover only end to end, against its
// named CPU kernel: encoder, row gather/scatter, residual add, grad norm and clipping, KV-cache
// store, decode attention and the samplers; and the training memory plan against what the backend
// allocates. Each test skips itself without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "context.cuh"
#include "cpu/attention.hpp"
#include "cpu/dropout.hpp"
#include "cpu/encoder.hpp"
#include "cpu/matmul.hpp"
#include "cpu/nf4.hpp"
#include "cpu/sampling.hpp"
#include "gpu_test.hpp"
#include "kernels.cuh"
#include "offload.hpp"
#include "sampling.cuh"

using namespace lima;
using namespace limatest;

namespace {

template <typename T>
Dev<T> upload(const std::vector<T> &v) {
    Dev<T> d(v.size());
    cudaMemcpy(d.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}

template <typename T>
std::vector<T> download(const T *p, size_t n) {
    std::vector<T> v(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
}

}  // namespace

TEST(CudaKernels, EncoderForwardAndBackwardWithRepeatedTokens) {
    NEED_GPU();
    const int V = 97, d = 300;
    const long N = 500;
    const auto emb = randn(size_t(V) * d, 21), dx = randn(size_t(N) * d, 22);
    std::vector<int32_t> tok(static_cast<size_t>(N));
    for (long n = 0; n < N; ++n) tok[size_t(n)] = int32_t((n * 7) % V);  // every token repeats
    std::vector<float> x_ref(size_t(N) * d), demb_ref(emb.size(), 0.0f);
    cpu::encoder_forward(x_ref.data(), emb.data(), tok.data(), N, d);
    cpu::encoder_backward(demb_ref.data(), dx.data(), tok.data(), N, d);
    std::unique_ptr<Dev<float>> gemb(up(emb)), gdx(up(dx)), gdemb(up(std::vector<float>(emb.size(), 0.0f)));
    Dev<float> gx(x_ref.size());
    Dev<int32_t> gtok = upload(tok);
    cuda::encoder_forward(gx.p, gemb->p, gtok.p, N, d, 0);
    cuda::encoder_backward(gdemb->p, gdx->p, gtok.p, N, d, 0);
    EXPECT_EQ(download(gx.p, x_ref.size()), x_ref);  // a copy: exact
    EXPECT_LT(rel_err(down(gdemb->p, emb.size()), demb_ref), 1e-6);
}

TEST(CudaKernels, GatherAndScatterRowsRoundTrip) {
    NEED_GPU();
    const int d = 136;
    const long N = 257, C = 40;
    const auto src = round_bf16(randn(size_t(N) * d, 23));
    std::vector<int64_t> idx(static_cast<size_t>(C));
    for (long i = 0; i < C; ++i) idx[size_t(i)] = (i * 37 + 5) % N;  // distinct rows, shuffled
    auto gsrc = up16(src);
    Dev<int64_t> gidx = upload(idx);
    Dev<bf16> rows(size_t(C) * d), back(size_t(N) * d);
    cudaMemset(back.p, 0, back.n * sizeof(bf16));
    cuda::gather_rows(rows.p, gsrc->p, gidx.p, C, d, 0);
    cuda::scatter_rows(back.p, rows.p, gidx.p, C, d, 0);
    const auto got = down16(rows.p, size_t(C) * d), scattered = down16(back.p, size_t(N) * d);
    for (long i = 0; i < C; ++i)
        for (int e = 0; e < d; ++e) {
            ASSERT_EQ(got[size_t(i) * d + e], src[size_t(idx[size_t(i)]) * d + e]);
            ASSERT_EQ(scattered[size_t(idx[size_t(i)]) * d + e], src[size_t(idx[size_t(i)]) * d + e]);
        }
}

TEST(CudaKernels, ResidualAddEqualsTheCpuAdd) {
    NEED_GPU();
    const long n = 100003;
    const auto res = randn(size_t(n), 24), y = round_bf16(randn(size_t(n), 25));
    auto want = res;
    cpu::residual_add(want.data(), y.data(), n);
    std::unique_ptr<Dev<float>> gres(up(res));
    auto gy = up16(y);
    cuda::residual_add(gres->p, gres->p, gy->p, n, 0);  // in place, as decoding uses it
    EXPECT_LT(rel_err(down(gres->p, size_t(n)), want), 1e-7);
}

TEST(CudaKernels, GradNormAndClippingScaleFollowTorch) {
    NEED_GPU();
    const long n = 3000017;
    const auto g = randn(size_t(n), 26, 0.01f);
    double ss = 0.0;
    for (float x : g) ss += double(x) * x;
    std::unique_ptr<Dev<float>> gg(up(g));
    Dev<double> sum(1);
    Dev<float> scale(1);
    for (const float clip : {0.0f, float(std::sqrt(ss) * 2), float(std::sqrt(ss) / 3)}) {
        cudaMemset(sum.p, 0, sizeof(double));
        cuda::sum_squares(sum.p, gg->p, n, 0);
        cuda::clip_scale(scale.p, sum.p, clip, 0);
        const double got = download(sum.p, 1)[0];
        EXPECT_NEAR(got, ss, 1e-9 * ss);
        const float want = clip > 0 && std::sqrt(ss) > clip ? float(clip / (std::sqrt(ss) + 1e-6)) : 1.0f;
        EXPECT_NEAR(download(scale.p, 1)[0], want, 1e-6f * want) << "clip " << clip;
    }
}

// Two cache rows, GQA: tokens stored through kv_cache_store (prefill layout: row per token) are
// where cpu::kv_cache_store puts them, and one decode step per row equals cpu::decode_attention.
void decode_case(int hd, int Hq, int Hkv) {
    const int max_len = 300, rows = 2, qd = Hq * hd, kvd = Hkv * hd, ld = qd + 2 * kvd;
    const int lens[rows] = {290, 257};  // cross a 256-position span
    long N = 0;
    for (int L : lens) N += L;
    const auto qkv = round_bf16(randn(size_t(N) * ld, 27 + uint32_t(hd)));
    std::vector<int32_t> row(static_cast<size_t>(N)), pos(static_cast<size_t>(N));
    std::vector<float> k(size_t(N) * kvd), v(size_t(N) * kvd);
    long at = 0;
    for (int r = 0; r < rows; ++r)
        for (int t = 0; t < lens[r]; ++t, ++at) {
            row[size_t(at)] = r;
            pos[size_t(at)] = t;
            std::copy(qkv.begin() + at * ld + qd, qkv.begin() + at * ld + qd + kvd, k.begin() + at * kvd);
            std::copy(qkv.begin() + at * ld + qd + kvd, qkv.begin() + (at + 1) * ld, v.begin() + at * kvd);
        }
    std::vector<float> kc(size_t(rows) * max_len * kvd, 0.0f), vc(kc.size(), 0.0f);
    cpu::kv_cache_store(kc.data(), vc.data(), k.data(), v.data(), row.data(), pos.data(), N, kvd, max_len);
    auto gqkv = up16(qkv);
    Dev<int32_t> grow = upload(row), gpos = upload(pos);
    Dev<bf16> gkc(kc.size()), gvc(vc.size());
    cudaMemset(gkc.p, 0, gkc.n * sizeof(bf16));
    cudaMemset(gvc.p, 0, gvc.n * sizeof(bf16));
    cuda::kv_cache_store(gkc.p, gvc.p, gqkv->p, ld, qd, kvd, grow.p, gpos.p, nullptr, N, max_len, 0);
    EXPECT_EQ(down16(gkc.p, kc.size()), kc);  // bf16 inputs stored unchanged
    EXPECT_EQ(down16(gvc.p, vc.size()), vc);
    // The last token of each row as its decode step: queries from its qkv row.
    std::vector<float> q(size_t(rows) * qd);
    std::vector<int32_t> last_pos(rows), rows_id(rows);
    std::vector<float> step_qkv(size_t(rows) * ld);
    at = 0;
    for (int r = 0; r < rows; ++r) {
        at += lens[r];
        last_pos[size_t(r)] = lens[r] - 1;
        rows_id[size_t(r)] = r;
        std::copy(qkv.begin() + (at - 1) * ld, qkv.begin() + at * ld, step_qkv.begin() + long(r) * ld);
        std::copy(qkv.begin() + (at - 1) * ld, qkv.begin() + (at - 1) * ld + qd, q.begin() + long(r) * qd);
    }
    std::vector<float> want(size_t(rows) * qd);
    cpu::decode_attention(want.data(), q.data(), kc.data(), vc.data(), rows_id.data(), last_pos.data(), rows, Hq, Hkv, hd,
                          max_len);
    auto gstep = up16(step_qkv);
    Dev<int32_t> glast = upload(last_pos);
    const std::vector<uint8_t> act{1, 1};
    Dev<uint8_t> gact = upload(act);
    const int spans = cuda::decode_spans(max_len);
    Dev<float> part_o(size_t(rows) * Hq * spans * hd), part_ml(size_t(rows) * Hq * spans * 2);
    Dev<bf16> out(want.size());
    cuda::decode_attention(out.p, part_o.p, part_ml.p, gstep->p, ld, gkc.p, gvc.p, glast.p, gact.p, rows, Hq, Hkv, hd, max_len,
                           0);
    EXPECT_LT(rel_err(down16(out.p, want.size()), want), 8e-3) << "hd " << hd;
}

TEST(CudaKernels, KvCacheStoreAndDecodeAttentionHeadDim128Gqa) { NEED_GPU(); decode_case(128, 8, 2); }
TEST(CudaKernels, KvCacheStoreAndDecodeAttentionHeadDim64) { NEED_GPU(); decode_case(64, 4, 4); }
TEST(CudaKernels, KvCacheStoreAndDecodeAttentionHeadDim32Mqa) { NEED_GPU(); decode_case(32, 6, 1); }

// The samplers on fixed logits against cpu::sample_token with the same flags, seeds and counters.
TEST(CudaKernels, GreedyAndNucleusSamplersPickTheCpuTokens) {
    NEED_GPU();
    const int rows = 5, V = 1031;
    auto logits = randn(size_t(rows) * V, 28, 3.0f);
    logits[size_t(2) * V + 17] = logits[size_t(2) * V + 400] = 50.0f;  // a tie: the lower id wins
    std::vector<uint8_t> flags(size_t(rows) * V, 0);
    for (int r = 0; r < rows; ++r)
        for (int i = 0; i < 40; ++i) flags[size_t(r) * V + size_t((i * 13 + r) % V)] = uint8_t(i % 2 ? 1 : 2);
    const std::vector<uint8_t> active{1, 1, 1, 0, 1};
    const std::vector<int32_t> len{3, 9, 1, 4, 600};
    const std::vector<uint64_t> seeds{11, 12, 13, 14, 15};
    std::unique_ptr<Dev<float>> glog(up(logits));
    Dev<uint8_t> gact = upload(active);
    Dev<uint64_t> gseeds = upload(seeds);
    for (int scope = 0; scope < 2; ++scope)
        for (const float temperature : {0.0f, 0.7f, 1.3f}) {
            lima_sampling s;
            lima_sampling_init(&s);
            s.temperature = temperature;
            s.penalty_scope = scope;
            s.top_k = scope ? 50 : 0;
            const cuda::StepParams sp{temperature > 0 ? temperature : 1.0f, s.top_p, s.repetition_penalty, s.top_k,
                                      uint8_t(scope ? 3 : 2)};
            Dev<cuda::StepParams> gsp = upload(std::vector<cuda::StepParams>{sp});
            Dev<uint8_t> gflags = upload(flags);
            Dev<int32_t> next(rows), tok(rows), pos(rows), glen = upload(len);
            const cuda::DecodeRows dr{next.p, tok.p, pos.p, glen.p, gflags.p, gact.p};
            Dev<float> keys(size_t(rows) * V), skeys(size_t(rows) * V);
            Dev<int32_t> ids(size_t(rows) * V), sids(size_t(rows) * V);
            std::vector<int32_t> offsets(rows + 1);
            for (int r = 0; r <= rows; ++r) offsets[size_t(r)] = r * V;
            Dev<int32_t> goff = upload(offsets);
            cuda::SortSpace space{keys.p, skeys.p, ids.p, sids.p, goff.p, nullptr, 0};
            space.tmp_bytes = cuda::nucleus_sort_bytes(space, rows, V, 0);
            Dev<uint8_t> tmp(std::max<size_t>(space.tmp_bytes, 1));
            space.tmp = tmp.p;
            if (temperature > 0)
                cuda::sample_nucleus(dr, glog->p, gseeds.p, gsp.p, space, rows, V, 0);
            else
                cuda::sample_greedy(dr, glog->p, gsp.p, rows, V, 0);
            const auto got = download(next.p, rows), new_len = download(glen.p, rows);
            const auto new_flags = download(gflags.p, flags.size());
            for (int r = 0; r < rows; ++r) {
                if (!active[size_t(r)]) {
                    EXPECT_EQ(got[size_t(r)], -1);
                    EXPECT_EQ(new_len[size_t(r)], len[size_t(r)]);
                    continue;
                }
                std::vector<uint8_t> pen(static_cast<size_t>(V));
                for (int v = 0; v < V; ++v) pen[size_t(v)] = (flags[size_t(r) * V + v] & sp.penalty_bits) != 0;
                const int32_t want = cpu::sample_token(logits.data() + size_t(r) * V, V, s, pen.data(), seeds[size_t(r)],
                                                       uint64_t(len[size_t(r)]), nullptr);
                EXPECT_EQ(got[size_t(r)], want) << "row " << r << " temperature " << temperature << " scope " << scope;
                EXPECT_EQ(new_len[size_t(r)], len[size_t(r)] + 1);
                EXPECT_TRUE(new_flags[size_t(r) * V + size_t(got[size_t(r)])] & 2) << "the pick is marked generated";
            }
            if (temperature == 0) EXPECT_EQ(got[2], 17);
        }
}

TEST(CudaKernels, MarkPromptTokensAndCopyActiveRows) {
    NEED_GPU();
    const int rows = 3, V = 50;
    const std::vector<int32_t> tokens{4, 9, 4, 49, 0}, row{0, 0, 1, 2, 2};
    Dev<uint8_t> flags(size_t(rows) * V);
    cudaMemset(flags.p, 0, flags.n);
    Dev<int32_t> gt = upload(tokens), gr = upload(row);
    cuda::mark_prompt_tokens(flags.p, gt.p, gr.p, long(tokens.size()), V, 0);
    const auto f = download(flags.p, flags.n);
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < V; ++v) {
            bool want = false;
            for (size_t i = 0; i < tokens.size(); ++i) want = want || (row[i] == r && tokens[i] == v);
            EXPECT_EQ(f[size_t(r) * V + v], want ? 1 : 0) << r << "," << v;
        }
    const auto src = randn(size_t(rows) * V, 29), dst0 = randn(size_t(rows) * V, 30);
    std::unique_ptr<Dev<float>> gsrc(up(src)), gdst(up(dst0));
    Dev<uint8_t> act = upload(std::vector<uint8_t>{1, 0, 1});
    cuda::copy_active_rows(gdst->p, gsrc->p, act.p, rows, V, 0);
    const auto got = down(gdst->p, src.size());
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < V; ++v)
            EXPECT_EQ(got[size_t(r) * V + v], r == 1 ? dst0[size_t(r) * V + v] : src[size_t(r) * V + v]);
}

TEST(CudaKernels, TrainingMemoryPlanEqualsWhatIsAllocated) {
    NEED_GPU();
    cuda::Ctx c;
    c.cfg = ModelConfig(small_config());
    for (const bool recompute : {false, true})
        for (const long n : {1L, 200L, 4096L}) {
            c.recompute = recompute;
            cuda::reserve(c, n);
            EXPECT_EQ(cuda::training_buffers_held(c), cuda::training_buffers_planned(c, n))
                << "tokens " << n << " recompute " << recompute;
        }
}

// The offloaded step converts its fp32 master weights to bf16 on the host (offload.cpp to_bf16):
// the same bits as the device's cast, on random values, ties, subnormals, infinities and NaN.
TEST(CudaKernels, HostBf16ConversionEqualsTheDeviceCast) {
    NEED_GPU();
    std::vector<float> x = randn(100000, 31, 3.0f);
    const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0x00000001u, 0x807fffffu, 0x7f800000u, 0xff800000u,
                                0x7f7fffffu, 0x7fc00001u, 0xffffffffu, 0x00000000u, 0x80000000u};
    for (uint32_t u : special) {
        float f;
        std::memcpy(&f, &u, 4);
        x.push_back(f);
    }
    std::vector<uint16_t> host(x.size()), dev(x.size());
    lima::to_bf16(host.data(), x.data(), int64_t(x.size()));
    std::unique_ptr<Dev<float>> gx(up(x));
    Dev<cuda::bf16> out(x.size());
    cuda::cast_f32_bf16(out.p, gx->p, long(x.size()), 0);
    ASSERT_EQ(cudaMemcpy(dev.data(), out.p, x.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(host[i], dev[i]) << "element " << i << " = " << x[i];
}

// Projection biases: bias_forward adds in fp32 and rounds once; bias_backward sums each column.
TEST(CudaKernels, BiasForwardAndBackwardEqualTheCpu) {
    NEED_GPU();
    const long N = 777;
    const int n = 1000;
    const auto y = round_bf16(randn(size_t(N) * n, 41)), b = randn(size_t(n), 42), dy = round_bf16(randn(size_t(N) * n, 43));
    std::vector<float> ref = y, db_ref(size_t(n), 0.5f);
    cpu::bias_forward(ref.data(), b.data(), N, n);
    cpu::bias_backward(db_ref.data(), dy.data(), N, n);
    auto gy = up16(y), gdy = up16(dy);
    std::unique_ptr<Dev<float>> gb(up(b)), gdb(up(std::vector<float>(size_t(n), 0.5f)));
    cuda::bias_forward(gy->p, gb->p, N, n, 0);
    EXPECT_LT(rel_err(down16(gy->p, y.size()), ref), 4e-3);  // one bf16 rounding of the fp32 sum
    cuda::bias_backward(gdb->p, gdy->p, N, n, 0);
    EXPECT_LT(rel_err(down(gdb->p, size_t(n)), db_ref), 1e-5);
}

// QLoRA's frozen projections: the device's NF4 dequantisation is the CPU's, rounded once to bf16,
// on awkward sizes (a partial block, a partial group of 256 blocks), with and without double
// quantisation of the absmax values.
TEST(CudaKernels, Nf4DequantiseEqualsTheCpuRoundedToBf16) {
    NEED_GPU();
    for (const bool dq : {false, true})
        for (const int64_t n : {int64_t(63), int64_t(64 * 257 + 5)}) {
            const auto x = randn(size_t(n), 51, 0.7f);
            const cpu::Nf4Tensor t = cpu::nf4_quantize(x.data(), n, dq);
            std::vector<float> ref(static_cast<size_t>(n));
            cpu::nf4_dequantize(t, ref.data(), 0, n);
            std::unique_ptr<Dev<uint8_t>> packed(up(t.packed)), qabs(up(t.qabsmax));
            std::unique_ptr<Dev<float>> absmax(up(t.absmax)), absmax2(up(t.absmax2)), code(up(cpu::dynamic_code()));
            Dev<cuda::bf16> out(static_cast<size_t>(n));
            cuda::nf4_dequantize(out.p, packed->p, dq ? nullptr : absmax->p, qabs->p, absmax2->p, t.offset, code->p, long(n), 0);
            EXPECT_EQ(down16(out.p, size_t(n)), round_bf16(ref)) << "n " << n << " double quant " << dq;
        }
}

// The fused NF4 dequantise-and-multiply (decoding's QLoRA products) against the product of the
// CPU's dequantised weights rounded to bf16, summed in double: rows 1 to kNf4FusedRows, plain and
// double-quantised absmax, a row length that is not a multiple of the block (blocks straddle rows),
// written at a column offset of a wider output whose other columns stay untouched.
TEST(CudaKernels, Nf4FusedProductEqualsTheDequantisedProduct) {
    NEED_GPU();
    const int in = 200, out = 37, ldy = 50, col0 = 9;
    const auto w = randn(size_t(in) * out, 61, 0.4f);
    for (const bool dq : {false, true}) {
        const cpu::Nf4Tensor t = cpu::nf4_quantize(w.data(), int64_t(w.size()), dq);
        std::vector<float> deq(w.size());
        cpu::nf4_dequantize(t, deq.data(), 0, int64_t(w.size()));
        deq = round_bf16(deq);
        std::unique_ptr<Dev<uint8_t>> packed(up(t.packed)), qabs(up(t.qabsmax));
        std::unique_ptr<Dev<float>> absmax(up(t.absmax)), absmax2(up(t.absmax2)), code(up(cpu::dynamic_code()));
        for (const int N : {1, 3, cuda::kNf4FusedRows}) {
            const auto x = round_bf16(randn(size_t(N) * in, 62 + uint32_t(N)));
            auto dx = up16(x);
            auto dy = up16(std::vector<float>(size_t(N) * ldy, 7.0f));
            cuda::nf4_matmul(dy->p, ldy, col0, dx->p, in, N, in, out, packed->p, dq ? nullptr : absmax->p, qabs->p, absmax2->p,
                             t.offset, code->p, 0);
            const auto got = down16(dy->p, size_t(N) * ldy);
            std::vector<float> mine, want;
            for (int m = 0; m < N; ++m)
                for (int c = 0; c < ldy; ++c) {
                    if (c < col0 || c >= col0 + out) {
                        EXPECT_EQ(got[size_t(m) * ldy + c], 7.0f) << "column " << c << " outside the product was written";
                        continue;
                    }
                    double s = 0.0;
                    for (int k = 0; k < in; ++k) s += double(x[size_t(m) * in + k]) * deq[size_t(c - col0) * in + k];
                    mine.push_back(got[size_t(m) * ldy + c]);
                    want.push_back(float(s));
                }
            EXPECT_LT(rel_err(mine, want), 4e-3) << "rows " << N << " double quant " << dq;  // one bf16 rounding
        }
    }
}

// The tuning switches (LIMA_CUDA_ATTENTION, LIMA_CUDA_GEMM) are read as documented and a bad value is
// refused by name. Needs no GPU: it runs in CI.
TEST(CudaTuning, SwitchesAreReadFromTheEnvironmentAndBadValuesRefused) {
    // f() with the variable set to value (nullptr: unset), the old value restored after
    auto with = [](const char *name, const char *value, auto &&f) {
        const char *old = std::getenv(name);
        const std::string keep = old ? old : "";
        if (value)
            setenv(name, value, 1);
        else
            unsetenv(name);
        f();
        if (old)
            setenv(name, keep.c_str(), 1);
        else
            unsetenv(name);
    };
    // read(), with the variable at a bad value, is refused with a message quoting it
    auto refused = [&](const char *name, const char *bad, auto &&read) {
        with(name, bad, [&] {
            try {
                read();
                ADD_FAILURE() << name << "=" << bad << " was accepted";
            } catch (const lima::Error &e) {
                EXPECT_NE(std::string(e.what()).find(std::string(name) + " is '" + bad + "'"), std::string::npos) << e.what();
            }
        });
    };
    with("LIMA_CUDA_ATTENTION", nullptr, [] { EXPECT_EQ(cuda::attention_variant_from_env(), 0); });
    with("LIMA_CUDA_ATTENTION", "2", [] { EXPECT_EQ(cuda::attention_variant_from_env(), 2); });
    for (const char *bad : {"3", "-1", "1x", "fast"}) refused("LIMA_CUDA_ATTENTION", bad, [] { cuda::attention_variant_from_env(); });
    EXPECT_THROW(cuda::set_attention_variant(cuda::kAttentionVariants), lima::Error);
    with("LIMA_CUDA_GEMM", nullptr, [] { EXPECT_EQ(cuda::Gemm::choice_from_env(), cuda::Gemm::Choice::heuristic); });
    with("LIMA_CUDA_GEMM", "heuristic", [] { EXPECT_EQ(cuda::Gemm::choice_from_env(), cuda::Gemm::Choice::heuristic); });
    with("LIMA_CUDA_GEMM", "measured", [] { EXPECT_EQ(cuda::Gemm::choice_from_env(), cuda::Gemm::Choice::measured); });
    refused("LIMA_CUDA_GEMM", "Measured", [] { cuda::Gemm::choice_from_env(); });
    with("LIMA_CUDA_MATVEC", nullptr, [] { EXPECT_FALSE(cuda::Gemm::matvec_from_env()); });
    with("LIMA_CUDA_MATVEC", "1", [] { EXPECT_TRUE(cuda::Gemm::matvec_from_env()); });
    refused("LIMA_CUDA_MATVEC", "yes", [] { cuda::Gemm::matvec_from_env(); });
}

// cuBLASLt's algorithm timed among the heuristic's candidates multiplies as the heuristic's choice
// does, overwriting (bf16 out) and accumulating (fp32 out, beta 1) exactly once: the timing runs go
// to C only when the real product overwrites them, else to a scratch.
TEST(CudaKernels, MeasuredGemmChoiceMultipliesAsTheHeuristicChoiceDoes) {
    NEED_GPU();
    const int M = 300, N = 520, K = 264;  // x (M, K), W (N, K): y = x W^T, as a projection
    const auto x = round_bf16(randn(size_t(M) * K, 81)), w = round_bf16(randn(size_t(N) * K, 82));
    const auto acc0 = randn(size_t(M) * N, 83);
    std::vector<float> want(size_t(M) * N);
    cpu::matmul_forward(want.data(), x.data(), w.data(), M, K, N);
    std::vector<float> want_acc(want.size());
    for (size_t i = 0; i < want.size(); ++i) want_acc[i] = acc0[i] + want[i];
    auto gx = up16(x), gw = up16(w);
    for (auto choice : {cuda::Gemm::Choice::heuristic, cuda::Gemm::Choice::measured}) {
        const char *name = choice == cuda::Gemm::Choice::measured ? "measured" : "heuristic";
        cuda::Gemm gemm;
        gemm.set_choice(choice);
        Dev<bf16> y(want.size());
        gemm.run(y.p, false, gx->p, false, gw->p, true, M, N, K, 0.0f, 0);
        EXPECT_LT(rel_err(down16(y.p, want.size()), want), 8e-3) << name;
        std::unique_ptr<Dev<float>> acc(up(acc0));
        gemm.run(acc->p, true, gx->p, false, gw->p, true, M, N, K, 1.0f, 0);
        EXPECT_LT(rel_err(down(acc->p, want.size()), want_acc), 1e-5) << name;
        gemm.run(acc->p, true, gx->p, false, gw->p, true, M, N, K, 1.0f, 0);  // the cached choice, no timing
        std::vector<float> twice(want.size());
        for (size_t i = 0; i < want.size(); ++i) twice[i] = want_acc[i] + want[i];
        EXPECT_LT(rel_err(down(acc->p, want.size()), twice), 1e-5) << name;
        if (choice == cuda::Gemm::Choice::measured)
            EXPECT_GE(gemm.last_candidates(), 1) << "cuBLASLt offered no algorithm to time";
        else
            EXPECT_EQ(gemm.last_candidates(), 0);
    }
}

// The matrix-vector kernel (LIMA_CUDA_MATVEC) multiplies decoding's few rows as cuBLASLt does, into
// bf16 and fp32 (logits), for 1, 3 and 8 rows and an output count no block size divides; more rows,
// an accumulating product or a weight not on a 16-byte boundary stay on cuBLASLt, and are right too.
TEST(CudaKernels, MatvecProductsEqualTheCpuProduct) {
    NEED_GPU();
    const int N = 1003, K = 264;
    const auto w = round_bf16(randn(size_t(N + 8) * K, 91));
    auto gw = up16(w);
    cuda::Gemm gemm;
    gemm.set_matvec(true);
    for (int M : {1, 3, 8, 9}) {
        const auto x = round_bf16(randn(size_t(M) * K, 92 + uint32_t(M)));
        std::vector<float> want(size_t(M) * N);
        cpu::matmul_forward(want.data(), x.data(), w.data(), M, K, N);
        auto gx = up16(x);
        EXPECT_EQ(gemm.takes_matvec(gx->p, false, gw->p, true, M, K, 0.0f), M <= cuda::Gemm::kMatvecRows) << M << " rows";
        Dev<bf16> y16(want.size());
        gemm.run(y16.p, false, gx->p, false, gw->p, true, M, N, K, 0.0f, 0);
        EXPECT_LT(rel_err(down16(y16.p, want.size()), want), 8e-3) << M << " rows, bf16";
        Dev<float> y32(want.size());
        gemm.run(y32.p, true, gx->p, false, gw->p, true, M, N, K, 0.0f, 0);
        EXPECT_LT(rel_err(down(y32.p, want.size()), want), 1e-5) << M << " rows, fp32";
    }
    const auto x = round_bf16(randn(size_t(K), 99));
    auto gx = up16(x);
    EXPECT_FALSE(gemm.takes_matvec(gx->p, false, gw->p + 4, true, 1, K, 0.0f)) << "a weight 8 bytes off a 16-byte boundary";
    EXPECT_FALSE(gemm.takes_matvec(gx->p, false, gw->p, true, 1, K, 1.0f)) << "an accumulating product";
    EXPECT_FALSE(gemm.takes_matvec(gx->p, false, gw->p, true, 1, K - 4, 0.0f)) << "K not a multiple of 8";
}
