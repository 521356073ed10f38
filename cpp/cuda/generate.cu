// Decoding on the device, the CUDA side of lima_generator (src/generate.cpp is the CPU reference):
// a bf16 KV cache, prefill of whole prompts with the training attention kernel, one-token decode
// steps with a split-cache ("flash-decoding") attention, and LIMA's sampling rule run where the
// logits are: repetition penalty, temperature, top-k, nucleus top-p and the Philox draw of the CPU
// sampler (philox.hpp sample_uniform), so only the chosen token ids come back to the host.
//
// A decode step has the same shape every time (one token per row), so after one eager step it is
// captured once as a CUDA graph and replayed: the host loop is then a 2-byte-per-row upload, one
// graph launch and a 4-byte-per-row download. LIMA_CUDA_GRAPHS=0 turns the graphs off.
#include <cub/cub.cuh>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "context.cuh"

namespace lima::cuda {

namespace {

constexpr int kSpan = 256;     // cache positions per block of the decode attention
constexpr int kSampleThreads = 1024;

// ---- KV cache ----------------------------------------------------------------------------------

// Copies the k and v columns of qkv (N, ld) into the cache of one layer, kc/vc (rows, max_len,
// kvd), at (row, pos[t]); row[t] (null: row t), rows whose active flag is 0 are skipped.
__global__ void kv_store_k(bf16 *kc, bf16 *vc, const bf16 *qkv, int ld, int qd, int kvd, const int32_t *row,
                           const int32_t *pos, const uint8_t *active, long N, int max_len) {
    const int per = kvd / 8;  // 16-byte vectors per row
    const long id = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= N * per) return;
    const long t = id / per;
    const int e = int(id % per) * 8;
    const int r = row ? row[t] : int(t);
    if (active && !active[r]) return;
    const size_t dst = (size_t(r) * size_t(max_len) + size_t(pos[t])) * size_t(kvd) + size_t(e);
    const bf16 *src = qkv + size_t(t) * size_t(ld) + size_t(qd) + size_t(e);
    *reinterpret_cast<uint4 *>(kc + dst) = *reinterpret_cast<const uint4 *>(src);
    *reinterpret_cast<uint4 *>(vc + dst) = *reinterpret_cast<const uint4 *>(src + kvd);
}

// ---- decode attention ------------------------------------------------------------------------

template <int E>
__device__ inline void load_row(float (&x)[E], const bf16 *p) {
    if constexpr (E == 4) {
        const uint2 raw = *reinterpret_cast<const uint2 *>(p);
        const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162 *>(&raw.x);
        const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162 *>(&raw.y);
        x[0] = __low2float(a);
        x[1] = __high2float(a);
        x[2] = __low2float(b);
        x[3] = __high2float(b);
    } else {
        for (int e = 0; e < E; ++e) x[e] = __bfloat162float(p[e]);
    }
}

// One (cache span, q head, row) per block of 4 warps: the query of row t (one token at position
// pos[t]) against cache positions [span * kSpan, min(pos, ...)], every 4th position per warp, hd/32
// dims per lane; online softmax. Writes the span's unnormalised output and its (max, sum).
template <int HD>
__global__ void __launch_bounds__(128) decode_attention_k(float *part_o, float *part_ml, const bf16 *qkv, int ld,
                                                          const bf16 *kc, const bf16 *vc, const int32_t *pos,
                                                          const uint8_t *active, int Hq, int group, int kvd, int max_len,
                                                          float scale, int spans) {
    constexpr int E = HD / 32;
    const int span = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t slot = (size_t(t) * size_t(Hq) + size_t(h)) * size_t(spans) + size_t(span);
    float *po = part_o + slot * HD;
    float *pml = part_ml + slot * 2;
    const int p = pos[t], j0 = span * kSpan;
    if ((active && !active[t]) || j0 > p) {
        if (threadIdx.x == 0) {
            pml[0] = -INFINITY;
            pml[1] = 0.0f;
        }
        return;
    }
    float q[E], kv[E], acc[E];
    load_row<E>(q, qkv + size_t(t) * size_t(ld) + size_t(h) * HD + lane * E);
    for (int e = 0; e < E; ++e) {
        q[e] *= scale;
        acc[e] = 0.0f;
    }
    const size_t base = size_t(t) * size_t(max_len) * size_t(kvd) + size_t(h / group) * HD + size_t(lane) * E;
    float m = -INFINITY, l = 0.0f;
    const int j1 = min(p, j0 + kSpan - 1);
    for (int j = j0 + warp; j <= j1; j += 4) {
        load_row<E>(kv, kc + base + size_t(j) * size_t(kvd));
        float s = 0.0f;
        for (int e = 0; e < E; ++e) s += q[e] * kv[e];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        const float mn = fmaxf(m, s), corr = __expf(m - mn), w = __expf(s - mn);
        load_row<E>(kv, vc + base + size_t(j) * size_t(kvd));
        l = l * corr + w;
        for (int e = 0; e < E; ++e) acc[e] = acc[e] * corr + w * kv[e];
        m = mn;
    }
    __shared__ float sm[4], sl[4], so[4][HD];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
    for (int e = 0; e < E; ++e) so[warp][lane * E + e] = acc[e];
    __syncthreads();
    if (warp != 0) return;
    float M = sm[0];
    for (int w = 1; w < 4; ++w) M = fmaxf(M, sm[w]);
    float L = 0.0f, cw[4];
    for (int w = 0; w < 4; ++w) {
        cw[w] = sm[w] == -INFINITY ? 0.0f : __expf(sm[w] - M);
        L += sl[w] * cw[w];
    }
    for (int e = 0; e < E; ++e) {
        float o = 0.0f;
        for (int w = 0; w < 4; ++w) o += so[w][lane * E + e] * cw[w];
        po[lane * E + e] = o;
    }
    if (lane == 0) {
        pml[0] = M;
        pml[1] = L;
    }
}

// out (rows, Hq*hd) bf16: the spans of each (row, head) merged; inactive rows get zeros.
__global__ void decode_combine_k(bf16 *out, const float *part_o, const float *part_ml, int Hq, int hd, int spans) {
    const int h = blockIdx.x, t = blockIdx.y, d = threadIdx.x;
    const size_t slot = (size_t(t) * size_t(Hq) + size_t(h)) * size_t(spans);
    float M = -INFINITY;
    for (int s = 0; s < spans; ++s) M = fmaxf(M, part_ml[(slot + s) * 2]);
    float L = 0.0f, o = 0.0f;
    if (M != -INFINITY)
        for (int s = 0; s < spans; ++s) {
            const float m = part_ml[(slot + s) * 2];
            if (m == -INFINITY) continue;
            const float c = __expf(m - M);
            L += part_ml[(slot + s) * 2 + 1] * c;
            o += part_o[(slot + s) * hd + d] * c;
        }
    out[size_t(t) * size_t(Hq) * hd + size_t(h) * hd + d] = __float2bfloat16(L > 0.0f ? o / L : 0.0f);
}

// ---- sampling --------------------------------------------------------------------------------

// What a step needs from the host, uploaded with the active flags (so one captured graph serves
// every sampling setting).
struct StepParams {
    float temperature, top_p, penalty;
    int32_t top_k;
    uint8_t penalty_bits;  // flags that make a token penalized: 2 = generated (LIMA), 3 = prompt too (HF)
};

// The repetition penalty of the CPU sampler: divide positive logits, multiply negative ones.
__device__ inline float penalized(float x, uint8_t flags, const StepParams &sp) {
    return (flags & sp.penalty_bits) && sp.penalty != 1.0f ? (x > 0.0f ? x / sp.penalty : x * sp.penalty) : x;
}

// keys (rows, V) = penalized logits / temperature, ids (rows, V) = 0..V-1: the input of the sort.
__global__ void sample_keys_k(float *keys, int32_t *ids, const float *logits, const uint8_t *flags, const StepParams *sp,
                              long n, int V) {
    const long i = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    keys[i] = penalized(logits[i], flags[i], *sp) / sp->temperature;
    ids[i] = int32_t(i % V);
}

// The sampled (or greedy) token of row r becomes its next input: token, position, length, flags.
__device__ inline void advance(int r, int32_t pick, int32_t *next, int32_t *tok, int32_t *pos, int32_t *len, uint8_t *flags,
                               int V) {
    next[r] = pick;
    tok[r] = pick;
    pos[r] = len[r];
    len[r] += 1;
    flags[size_t(r) * V + pick] |= 2;
}

__device__ inline void retire(int r, int32_t *next, int32_t *tok, int32_t *pos) {
    next[r] = -1;  // inactive: no token, no cache write, its logits kept
    tok[r] = 0;
    pos[r] = 0;
}

struct ArgMax {
    float v;
    int32_t i;
};
struct ArgMaxOp {
    __device__ ArgMax operator()(const ArgMax &a, const ArgMax &b) const {
        return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;  // ties: the lower id, as std::max_element
    }
};

// Greedy: the arg max of the penalized logits, one block per row.
__global__ void __launch_bounds__(kSampleThreads) greedy_k(int32_t *next, int32_t *tok, int32_t *pos, int32_t *len,
                                                           uint8_t *flags, const float *logits, const uint8_t *active,
                                                           const StepParams *sp, int V) {
    using Reduce = cub::BlockReduce<ArgMax, kSampleThreads>;
    __shared__ typename Reduce::TempStorage tmp;
    const int r = blockIdx.x;
    if (!active[r]) {
        if (threadIdx.x == 0) retire(r, next, tok, pos);
        return;
    }
    const float *x = logits + size_t(r) * V;
    const uint8_t *f = flags + size_t(r) * V;
    ArgMax best{-INFINITY, INT_MAX};
    for (int v = threadIdx.x; v < V; v += kSampleThreads) best = ArgMaxOp()(best, ArgMax{penalized(x[v], f[v], *sp), v});
    const ArgMax b = Reduce(tmp).Reduce(best, ArgMaxOp());
    if (threadIdx.x == 0) advance(r, b.i < V ? b.i : 0, next, tok, pos, len, flags, V);
}

// The first index i < limit whose inclusive prefix sum of w(i) (plus `run` before the tile)
// reaches the test, over tiles of the block; INT_MAX if none.
template <typename W, typename Test>
__device__ int first_reaching(int limit, W w, Test test) {
    using Scan = cub::BlockScan<float, kSampleThreads>;
    using Min = cub::BlockReduce<int, kSampleThreads>;
    __shared__ typename Scan::TempStorage scan_tmp;
    __shared__ typename Min::TempStorage min_tmp;
    __shared__ int found;
    float run = 0.0f;
    for (int base = 0; base < limit; base += kSampleThreads) {
        const int i = base + int(threadIdx.x);
        const float x = i < limit ? w(i) : 0.0f;
        float incl, total;
        Scan(scan_tmp).InclusiveSum(x, incl, total);
        const int cand = (i < limit && test(run + incl)) ? i : INT_MAX;
        const int first = Min(min_tmp).Reduce(cand, [](int a, int b) { return a < b ? a : b; });
        if (threadIdx.x == 0) found = first;
        __syncthreads();
        const int f = found;
        __syncthreads();
        if (f != INT_MAX) return f;
        run += total;
    }
    return INT_MAX;
}

// Nucleus sampling over one row's keys sorted in decreasing order (ids alongside, ties by lower
// id as the radix sort is stable): keep the shortest prefix with mass >= top_p (at most top_k),
// renormalise, and pick with the row's Philox draw, as cpu::sample_token does.
__global__ void __launch_bounds__(kSampleThreads) nucleus_k(int32_t *next, int32_t *tok, int32_t *pos, int32_t *len,
                                                            uint8_t *flags, const float *skeys, const int32_t *sids,
                                                            const uint8_t *active, const uint64_t *seeds,
                                                            const StepParams *sp, int V) {
    using Sum = cub::BlockReduce<float, kSampleThreads>;
    __shared__ typename Sum::TempStorage sum_tmp;
    __shared__ float shared_z, shared_kz;
    const int r = blockIdx.x;
    if (!active[r]) {
        if (threadIdx.x == 0) retire(r, next, tok, pos);
        return;
    }
    const float *k = skeys + size_t(r) * V;
    const int32_t *id = sids + size_t(r) * V;
    const float mx = k[0];
    float part = 0.0f;
    for (int v = threadIdx.x; v < V; v += kSampleThreads) part += __expf(k[v] - mx);
    const float zs = Sum(sum_tmp).Sum(part);
    if (threadIdx.x == 0) shared_z = zs;
    __syncthreads();
    const float z = shared_z;
    auto prob = [&](int i) { return __expf(k[i] - mx) / z; };
    int keep = sp->top_k > 0 ? min(sp->top_k, V) : V;
    if (sp->top_p < 1.0f) {
        const float top_p = sp->top_p;
        const int f = first_reaching(keep, prob, [&](float cum) { return cum >= top_p; });
        if (f != INT_MAX) keep = f + 1;
    }
    part = 0.0f;
    for (int i = threadIdx.x; i < keep; i += kSampleThreads) part += prob(i);
    __syncthreads();
    const float kzs = Sum(sum_tmp).Sum(part);
    if (threadIdx.x == 0) shared_kz = kzs;
    __syncthreads();
    const float kz = shared_kz;
    const double u = sample_uniform(seeds[r], uint64_t(len[r]));
    const int f = first_reaching(keep, prob, [&](float cum) { return double(cum / kz) > u; });
    if (threadIdx.x == 0) advance(r, id[f != INT_MAX ? f : keep - 1], next, tok, pos, len, flags, V);
}

// flags[row[t], tokens[t]] = 1 (prompt tokens) for t < n.
__global__ void mark_prompt_k(uint8_t *flags, const int32_t *tokens, const int32_t *row, long n, int V) {
    const long t = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t < n) flags[size_t(row[t]) * V + size_t(tokens[t])] = 1;
}

// dst rows r = src rows r where active[r] (the logits of inactive rows stay as they were).
__global__ void copy_active_rows_k(float *dst, const float *src, const uint8_t *active, long n, int V) {
    const long i = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n && active[i / V]) dst[i] = src[i];
}

// ---- the generator -----------------------------------------------------------------------------

struct Gen {
    Ctx *c = nullptr;
    int max_rows = 0, max_len = 0, rows = 0, cap = 0, spans = 0;
    bool graphs = true;
    DevBuf<bf16> kc, vc;                       // (L, max_rows, max_len, kvd) post-rope keys, values
    DevBuf<float> x, rstd, lse;                // (cap, d), (cap), (cap, Hq)
    DevBuf<bf16> xn, qkv, att, y, gu, h, last; // (cap, d|ld|qd|d|2F|F), last (max_rows, d)
    DevBuf<float> logits, fresh;               // (max_rows, V): current next-token logits, a step's new ones
    DevBuf<float> part_o, part_ml;             // decode attention spans (max_rows, Hq, spans, hd|2)
    DevBuf<int32_t> tok, pos, row, len, next;  // tok/pos/row (cap); len/next (max_rows)
    DevBuf<int64_t> last_idx;                  // (max_rows)
    DevBuf<AttnTile> tiles;
    DevBuf<uint8_t> flags, active;             // (max_rows, V) 1 prompt, 2 generated; (max_rows)
    DevBuf<uint64_t> seeds;
    DevBuf<StepParams> params;
    DevBuf<float> keys, skeys;                 // (max_rows, V) sort input / output
    DevBuf<int32_t> ids, sids, offsets;
    DevBuf<uint8_t> sort_tmp;
    size_t sort_tmp_bytes = 0;
    // host staging of a step, page-locked so that the copies can live in a graph
    StepParams *host_params = nullptr;
    uint8_t *host_active = nullptr;
    int32_t *host_next = nullptr;
    std::map<std::pair<int, bool>, cudaGraphExec_t> graphs_by_shape;  // (rows, greedy)
    std::set<std::pair<int, bool>> warmed;                            // shapes that ran one eager step
    const float *graph_rope = nullptr;  // the rotary table the graphs point at (training may regrow it)

    ~Gen() {
        drop_graphs();
        cudaFreeHost(host_params);
        cudaFreeHost(host_active);
        cudaFreeHost(host_next);
    }
    void drop_graphs() {
        for (auto &kv : graphs_by_shape) cudaGraphExecDestroy(kv.second);
        graphs_by_shape.clear();
    }
    size_t layer_stride() const { return size_t(max_rows) * size_t(max_len) * size_t(c->cfg.kv_dim()); }
};

void kv_store(Gen &g, int l, long N, const int32_t *row, const uint8_t *active) {
    const Ctx &c = *g.c;
    const int kvd = c.cfg.kv_dim();
    const long n = N * (kvd / 8);
    if (n == 0) return;
    kv_store_k<<<ceil_div(n, 256), 256, 0, c.st>>>(g.kc.p + size_t(l) * g.layer_stride(), g.vc.p + size_t(l) * g.layer_stride(),
                                                   g.qkv.p, c.ldqkv(), c.cfg.q_dim(), kvd, row, g.pos.p, active, N, g.max_len);
    LIMA_CUDA_LAUNCHED("kv_store");
}

void decode_attention(Gen &g, int l, int rows) {
    const Ctx &c = *g.c;
    const int hd = c.cfg.hd(), Hq = c.cfg.num_heads, group = Hq / c.cfg.num_kv_heads, kvd = c.cfg.kv_dim();
    const dim3 grid(unsigned(g.spans), unsigned(Hq), unsigned(rows));
    const bf16 *kc = g.kc.p + size_t(l) * g.layer_stride(), *vc = g.vc.p + size_t(l) * g.layer_stride();
    const float scale = 1.0f / std::sqrt(float(hd));
#define LIMA_DECODE_ATTN(HD)                                                                                           \
    decode_attention_k<HD><<<grid, 128, 0, c.st>>>(g.part_o.p, g.part_ml.p, g.qkv.p, c.ldqkv(), kc, vc, g.pos.p, g.active.p, \
                                                  Hq, group, kvd, g.max_len, scale, g.spans)
    if (hd == 128)
        LIMA_DECODE_ATTN(128);
    else if (hd == 64)
        LIMA_DECODE_ATTN(64);
    else
        LIMA_DECODE_ATTN(32);
#undef LIMA_DECODE_ATTN
    LIMA_CUDA_LAUNCHED("decode_attention");
    decode_combine_k<<<dim3(unsigned(Hq), unsigned(rows)), unsigned(hd), 0, c.st>>>(g.att.p, g.part_o.p, g.part_ml.p, Hq, hd,
                                                                                    g.spans);
    LIMA_CUDA_LAUNCHED("decode_combine");
}

// Forward of N new tokens (g.tok, g.pos) through the model, extending the cache. Prefill: whole
// prompts (row per token, attention tiles); else one token per row for `rows` rows. Leaves the
// final normed states in g.xn.
void run_layers(Gen &g, long N, int rows, bool prefill, int ntiles) {
    Ctx &c = *g.c;
    const int d = c.d(), F = c.F(), qd = c.cfg.q_dim(), ld = c.ldqkv(), hd = c.cfg.hd();
    const float eps = c.cfg.rms_norm_eps;
    encoder_forward(g.x.p, c.p32.p + c.emb, g.tok.p, N, d, c.st);
    for (int l = 0; l < c.cfg.num_layers; ++l) {
        const lima_cuda_layer &o = c.layers[size_t(l)];
        rmsnorm_forward(g.xn.p, g.rstd.p, g.x.p, c.p32.p + o.ln1, N, d, eps, c.st);
        c.gemm->run(g.qkv.p, false, g.xn.p, false, c.p16.p + o.qkv, true, int(N), ld, d, 0.0f, c.st);
        rope(g.qkv.p, ld, g.pos.p, N, c.cfg.num_heads + c.cfg.num_kv_heads, hd, c.rope_cos.p, c.rope_sin.p, 1.0f, c.st);
        if (prefill) {
            kv_store(g, l, N, g.row.p, nullptr);
            LIMA_CUDA_CHECK(cudaMemsetAsync(g.att.p, 0, size_t(N) * qd * sizeof(bf16), c.st));
            attention_forward(g.att.p, g.lse.p, g.qkv.p, g.tiles.p, ntiles, {N, c.cfg.num_heads, c.cfg.num_kv_heads, hd, ld}, c.st);
        } else {
            kv_store(g, l, N, nullptr, g.active.p);
            decode_attention(g, l, rows);
        }
        c.gemm->run(g.y.p, false, g.att.p, false, c.p16.p + o.wo, true, int(N), d, qd, 0.0f, c.st);
        dropout_residual_forward(g.x.p, g.x.p, g.y.p, N * d, 0.0f, nullptr, l, 0, c.st);  // x += y
        rmsnorm_forward(g.xn.p, g.rstd.p, g.x.p, c.p32.p + o.ln2, N, d, eps, c.st);
        c.gemm->run(g.gu.p, false, g.xn.p, false, c.p16.p + o.gu, true, int(N), 2 * F, d, 0.0f, c.st);
        swiglu_forward(g.h.p, g.gu.p, N, F, c.st);
        c.gemm->run(g.y.p, false, g.h.p, false, c.p16.p + o.wd, true, int(N), d, F, 0.0f, c.st);
        dropout_residual_forward(g.x.p, g.x.p, g.y.p, N * d, 0.0f, nullptr, l, 1, c.st);
    }
    rmsnorm_forward(g.xn.p, g.rstd.p, g.x.p, c.p32.p + c.norm, N, d, eps, c.st);
}

// fresh (rows, V) = states (rows, d) x lm_head^T
void lm_head(Gen &g, const bf16 *states, int rows) {
    Ctx &c = *g.c;
    c.gemm->run(g.fresh.p, true, states, false, c.p16.p + c.lm_head, true, rows, c.cfg.vocab_size, c.d(), 0.0f, c.st);
}

// One decode step, all on the stream: sample from g.logits, run the tokens, refresh the logits of
// the active rows, copy the tokens to the pinned host buffer.
void enqueue_step(Gen &g, bool greedy) {
    Ctx &c = *g.c;
    const int V = c.cfg.vocab_size, R = g.rows;
    LIMA_CUDA_CHECK(cudaMemcpyAsync(g.params.p, g.host_params, sizeof(StepParams), cudaMemcpyHostToDevice, c.st));
    LIMA_CUDA_CHECK(cudaMemcpyAsync(g.active.p, g.host_active, size_t(R), cudaMemcpyHostToDevice, c.st));
    if (greedy) {
        greedy_k<<<R, kSampleThreads, 0, c.st>>>(g.next.p, g.tok.p, g.pos.p, g.len.p, g.flags.p, g.logits.p, g.active.p,
                                                 g.params.p, V);
        LIMA_CUDA_LAUNCHED("greedy");
    } else {
        const long n = long(R) * V;
        sample_keys_k<<<ceil_div(n, 256), 256, 0, c.st>>>(g.keys.p, g.ids.p, g.logits.p, g.flags.p, g.params.p, n, V);
        LIMA_CUDA_LAUNCHED("sample_keys");
        size_t bytes = g.sort_tmp_bytes;
        LIMA_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(g.sort_tmp.p, bytes, g.keys.p, g.skeys.p, g.ids.p,
                                                                           g.sids.p, n, R, g.offsets.p, g.offsets.p + 1, 0,
                                                                           32, c.st));
        nucleus_k<<<R, kSampleThreads, 0, c.st>>>(g.next.p, g.tok.p, g.pos.p, g.len.p, g.flags.p, g.skeys.p, g.sids.p,
                                                  g.active.p, g.seeds.p, g.params.p, V);
        LIMA_CUDA_LAUNCHED("nucleus");
    }
    run_layers(g, R, R, false, 0);
    lm_head(g, g.xn.p, R);
    const long n = long(R) * V;
    copy_active_rows_k<<<ceil_div(n, 256), 256, 0, c.st>>>(g.logits.p, g.fresh.p, g.active.p, n, V);
    LIMA_CUDA_LAUNCHED("copy_active_rows");
    LIMA_CUDA_CHECK(cudaMemcpyAsync(g.host_next, g.next.p, size_t(R) * 4, cudaMemcpyDeviceToHost, c.st));
}

// The step as a replayed graph once its shape has run eagerly (so cuBLASLt's plans exist).
void run_step(Gen &g, bool greedy) {
    Ctx &c = *g.c;
    const auto key = std::make_pair(g.rows, greedy);
    if (!g.graphs || g.warmed.insert(key).second) {
        enqueue_step(g, greedy);
        return;
    }
    if (g.graph_rope != c.rope_cos.p) {
        g.drop_graphs();
        g.graph_rope = c.rope_cos.p;
    }
    auto it = g.graphs_by_shape.find(key);
    if (it == g.graphs_by_shape.end()) {
        cudaGraph_t graph = nullptr;
        LIMA_CUDA_CHECK(cudaStreamBeginCapture(c.st, cudaStreamCaptureModeThreadLocal));
        try {
            enqueue_step(g, greedy);
        } catch (...) {
            cudaStreamEndCapture(c.st, &graph);
            if (graph) cudaGraphDestroy(graph);
            throw;
        }
        LIMA_CUDA_CHECK(cudaStreamEndCapture(c.st, &graph));
        cudaGraphExec_t exec = nullptr;
        const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
        cudaGraphDestroy(graph);
        LIMA_CUDA_CHECK(e);
        it = g.graphs_by_shape.emplace(key, exec).first;
    }
    LIMA_CUDA_CHECK(cudaGraphLaunch(it->second, c.st));
}

Gen *gen_create(Ctx &c, int max_rows, int max_len) {
    const ModelConfig &cfg = c.cfg;
    auto g = std::make_unique<Gen>();
    g->c = &c;
    g->max_rows = max_rows;
    g->max_len = max_len;
    g->cap = int(std::max<long>(max_len, std::min<long>(8192, long(max_rows) * max_len)));
    g->spans = ceil_div(max_len, kSpan);
    const char *env = std::getenv("LIMA_CUDA_GRAPHS");
    g->graphs = !(env && std::strcmp(env, "0") == 0);
    const int64_t L = cfg.num_layers, d = cfg.hidden_size, F = cfg.intermediate_size, V = cfg.vocab_size,
                  kvd = cfg.kv_dim(), Hq = cfg.num_heads, ld = c.ldqkv(), qd = cfg.q_dim(), hd = cfg.hd(), cap = g->cap,
                  R = max_rows;
    const int64_t cache = 2 * L * R * int64_t(max_len) * kvd * 2;
    const int64_t scratch = cap * (d * 4 + 4 + Hq * 4 + (d + ld + qd + d + 2 * F + F) * 2 + 4 * 3) + R * d * 2 +
                            R * V * (4 * 2 + 1 + 4 * 4) + R * Hq * g->spans * (hd + 2) * 4;
    size_t fr = 0, tot = 0;
    LIMA_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    LIMA_REQUIRE(cache + scratch < int64_t(fr), LIMA_ERR_OUT_OF_MEMORY, "CUDA generator of ", max_rows, " rows x ", max_len,
                 " tokens: the KV cache needs ", cache / 1073741824.0, " GiB and decoding buffers ", scratch / 1073741824.0,
                 " GiB, but only ", fr / 1073741824.0, " GiB of ", tot / 1073741824.0,
                 " GiB are free; use fewer rows or a shorter max_len");
    ensure_rope(c, max_len);
    g->kc.alloc(size_t(L * R * max_len * kvd), "KV cache");
    g->vc.alloc(size_t(L * R * max_len * kvd), "KV cache");
    g->x.alloc(size_t(cap * d), "decoding");
    g->rstd.alloc(size_t(cap), "decoding");
    g->lse.alloc(size_t(cap * Hq), "decoding");
    g->xn.alloc(size_t(cap * d), "decoding");
    g->qkv.alloc(size_t(cap * ld), "decoding");
    g->att.alloc(size_t(cap * qd), "decoding");
    g->y.alloc(size_t(cap * d), "decoding");
    g->gu.alloc(size_t(cap * 2 * F), "decoding");
    g->h.alloc(size_t(cap * F), "decoding");
    g->last.alloc(size_t(R * d), "decoding");
    g->logits.alloc(size_t(R * V), "logits");
    g->fresh.alloc(size_t(R * V), "logits");
    g->part_o.alloc(size_t(R * Hq * g->spans * hd), "decoding");
    g->part_ml.alloc(size_t(R * Hq * g->spans * 2), "decoding");
    g->tok.alloc(size_t(cap), "decoding");
    g->pos.alloc(size_t(cap), "decoding");
    g->row.alloc(size_t(cap), "decoding");
    g->len.alloc(size_t(R), "decoding");
    g->next.alloc(size_t(R), "decoding");
    g->last_idx.alloc(size_t(R), "decoding");
    g->tiles.alloc(size_t(cap / 64 + R + 1), "decoding");
    g->flags.alloc(size_t(R * V), "sampling");
    g->active.alloc(size_t(R), "sampling");
    g->seeds.alloc(size_t(R), "sampling");
    g->params.alloc(1, "sampling");
    g->keys.alloc(size_t(R * V), "sampling");
    g->skeys.alloc(size_t(R * V), "sampling");
    g->ids.alloc(size_t(R * V), "sampling");
    g->sids.alloc(size_t(R * V), "sampling");
    std::vector<int32_t> offsets(size_t(R + 1));
    for (int64_t r = 0; r <= R; ++r) offsets[size_t(r)] = int32_t(r * V);
    g->offsets.alloc(offsets.size(), "sampling");
    LIMA_CUDA_CHECK(cudaMemcpy(g->offsets.p, offsets.data(), offsets.size() * 4, cudaMemcpyHostToDevice));
    LIMA_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, g->sort_tmp_bytes, g->keys.p, g->skeys.p,
                                                                       g->ids.p, g->sids.p, R * V, int(R), g->offsets.p,
                                                                       g->offsets.p + 1, 0, 32, c.st));
    g->sort_tmp.alloc(std::max<size_t>(g->sort_tmp_bytes, 1), "sampling");
    LIMA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&g->host_params), sizeof(StepParams)));
    LIMA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&g->host_active), size_t(R)));
    LIMA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&g->host_next), size_t(R) * 4));
    return g.release();
}

void gen_start(Gen &g, int rows, const int32_t *tokens, const int32_t *lengths, const uint64_t *seeds) {
    Ctx &c = *g.c;
    const int V = c.cfg.vocab_size, d = c.d();
    g.rows = rows;
    LIMA_CUDA_CHECK(cudaMemsetAsync(g.flags.p, 0, size_t(rows) * V, c.st));
    LIMA_CUDA_CHECK(cudaMemcpyAsync(g.seeds.p, seeds, size_t(rows) * 8, cudaMemcpyHostToDevice, c.st));
    LIMA_CUDA_CHECK(cudaMemcpyAsync(g.len.p, lengths, size_t(rows) * 4, cudaMemcpyHostToDevice, c.st));
    // Whole prompts in groups of at most cap tokens; each group's last-token states give its rows' logits.
    std::vector<int32_t> pos, row;
    std::vector<int64_t> last;
    std::vector<AttnTile> tiles;
    long at = 0;
    for (int r0 = 0; r0 < rows;) {
        pos.clear();
        row.clear();
        last.clear();
        tiles.clear();
        int r1 = r0;
        long n = 0;
        while (r1 < rows && n + lengths[r1] <= g.cap) {
            for (int i = 0; i < lengths[r1]; ++i) {
                pos.push_back(i);
                row.push_back(r1);
            }
            for (int t0 = 0; t0 < lengths[r1]; t0 += 64) tiles.push_back({n, t0, lengths[r1]});
            n += lengths[r1];
            last.push_back(n - 1);
            ++r1;
        }
        LIMA_CUDA_CHECK(cudaMemcpyAsync(g.tok.p, tokens + at, size_t(n) * 4, cudaMemcpyHostToDevice, c.st));
        LIMA_CUDA_CHECK(cudaMemcpyAsync(g.pos.p, pos.data(), size_t(n) * 4, cudaMemcpyHostToDevice, c.st));
        LIMA_CUDA_CHECK(cudaMemcpyAsync(g.row.p, row.data(), size_t(n) * 4, cudaMemcpyHostToDevice, c.st));
        LIMA_CUDA_CHECK(cudaMemcpyAsync(g.last_idx.p, last.data(), last.size() * 8, cudaMemcpyHostToDevice, c.st));
        g.tiles.ensure(tiles.size(), "decoding");
        LIMA_CUDA_CHECK(cudaMemcpyAsync(g.tiles.p, tiles.data(), tiles.size() * sizeof(AttnTile), cudaMemcpyHostToDevice, c.st));
        mark_prompt_k<<<ceil_div(n, 256), 256, 0, c.st>>>(g.flags.p, g.tok.p, g.row.p, n, V);
        LIMA_CUDA_LAUNCHED("mark_prompt");
        run_layers(g, n, r1 - r0, true, int(tiles.size()));
        gather_rows(g.last.p, g.xn.p, g.last_idx.p, r1 - r0, d, c.st);
        lm_head(g, g.last.p, r1 - r0);
        LIMA_CUDA_CHECK(cudaMemcpyAsync(g.logits.p + size_t(r0) * V, g.fresh.p, size_t(r1 - r0) * V * 4,
                                        cudaMemcpyDeviceToDevice, c.st));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));  // the host vectors are reused by the next group
        at += n;
        r0 = r1;
    }
}

void gen_step(Gen &g, const lima_sampling &s, const uint8_t *active, int32_t *out) {
    Ctx &c = *g.c;
    const bool greedy = !(s.temperature > 0);
    *g.host_params = StepParams{greedy ? 1.0f : s.temperature, s.top_p, s.repetition_penalty, s.top_k,
                                uint8_t(s.penalty_scope == 1 ? 3 : 2)};
    for (int r = 0; r < g.rows; ++r) g.host_active[r] = active ? uint8_t(active[r] != 0) : uint8_t(1);
    run_step(g, greedy);
    LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
    std::memcpy(out, g.host_next, size_t(g.rows) * 4);
}

}  // namespace
}  // namespace lima::cuda

using lima::cuda::Ctx;
using lima::cuda::Gen;

#define LIMA_EXPORT extern "C" __attribute__((visibility("default")))

LIMA_EXPORT int lima_cuda_plugin_gen_create(void *ctx, int32_t max_rows, int32_t max_len, void **out, char *err,
                                            int32_t errcap) {
    return lima::cuda::guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        *out = lima::cuda::gen_create(c, max_rows, max_len);
    });
}

LIMA_EXPORT void lima_cuda_plugin_gen_free(void *gen) {
    Gen *g = static_cast<Gen *>(gen);
    if (g) cudaSetDevice(g->c->device);
    delete g;
}

LIMA_EXPORT int lima_cuda_plugin_gen_start(void *gen, int32_t rows, const int32_t *tokens, const int32_t *lengths,
                                           const uint64_t *seeds, char *err, int32_t errcap) {
    return lima::cuda::guard(err, errcap, [&] {
        Gen &g = *static_cast<Gen *>(gen);
        LIMA_CUDA_CHECK(cudaSetDevice(g.c->device));
        lima::cuda::gen_start(g, rows, tokens, lengths, seeds);
    });
}

LIMA_EXPORT int lima_cuda_plugin_gen_step(void *gen, const lima_sampling *s, const uint8_t *active, int32_t *out, char *err,
                                          int32_t errcap) {
    return lima::cuda::guard(err, errcap, [&] {
        Gen &g = *static_cast<Gen *>(gen);
        LIMA_CUDA_CHECK(cudaSetDevice(g.c->device));
        lima::cuda::gen_step(g, *s, active, out);
    });
}

LIMA_EXPORT int lima_cuda_plugin_gen_logits(void *gen, float *out, char *err, int32_t errcap) {
    return lima::cuda::guard(err, errcap, [&] {
        Gen &g = *static_cast<Gen *>(gen);
        LIMA_CUDA_CHECK(cudaSetDevice(g.c->device));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(g.c->st));
        LIMA_CUDA_CHECK(cudaMemcpy(out, g.logits.p, size_t(g.rows) * g.c->cfg.vocab_size * 4, cudaMemcpyDeviceToHost));
    });
}
