// The CUDA backend: one model on one device, with bf16 weights and activations, fp32 master
// weights, gradients and AdamW moments; the same pass structure as the CPU reference (model.cpp)
// with q/k/v and gate/up fused into one product each. Exposed to liblima as plain C functions
// (src/cuda_plugin.hpp).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <vector>

#include "../src/cpu/rope.hpp"
#include "context.cuh"
#include "nccl.cuh"

namespace lima::cuda {

namespace {

// Bytes of the activations for n tokens and of the workspace (classifier chunk, batch tables).
struct Sizes {
    int64_t activations, workspace;
};

long chunk_rows(const Ctx &c) {
    // fp32 logits + bf16 dlogits per chunk: at most ~768 MiB
    const long per_row = long(c.cfg.vocab_size) * 6;
    return std::max<long>(64, std::min<long>(8192, (768L << 20) / per_row));
}

// Margin for what the plan cannot list: cuBLASLt's workspace (allocated with the model) and the
// allocator's rounding.
constexpr int64_t kPlanMargin = 32 << 20;

// The one table of training buffers for micro-batches of n tokens: v(buffer, elements, what,
// workspace) for each. reserve() allocates from it and plan_sizes() sums it, so they cannot drift.
template <typename Visit>
void activation_table(Ctx &c, long n, Visit &&v) {
    const int64_t d = c.d(), F = c.F(), L = c.cfg.num_layers, qd = c.cfg.q_dim(), ld = c.ldqkv(), H = c.cfg.num_heads;
    const size_t saved = size_t(c.recompute ? 1 : L);
    if (c.acts.size() != saved) {
        c.acts.clear();
        c.acts.resize(saved);
        c.cap = 0;
    }
    for (LayerActs &a : c.acts) {
        v(a.xn1, n * d, "activations", false);
        v(a.qkv, n * ld, "activations", false);
        v(a.att, n * qd, "activations", false);
        v(a.xn2, n * d, "activations", false);
        v(a.gu, n * 2 * F, "activations", false);
        v(a.h, n * F, "activations", false);
        v(a.rstd1, n, "activations", false);
        v(a.lse, n * H, "activations", false);
        v(a.xmid, n * d, "activations", false);
        v(a.rstd2, n, "activations", false);
    }
    v(c.resid, (L + 1) * n * d, "residual stream", false);
    v(c.rstdf, n, "activations", false);
    v(c.dres, n * d, "gradient buffers", false);
    v(c.Dsum, n * H, "gradient buffers", false);
    v(c.xf, n * d, "activations", false);
    v(c.y, n * d, "activations", false);
    v(c.dy, n * d, "gradient buffers", false);
    v(c.dh, n * F, "gradient buffers", false);
    v(c.dgu, n * 2 * F, "gradient buffers", false);
    v(c.dxn, n * d, "gradient buffers", false);
    v(c.datt, n * qd, "gradient buffers", false);
    v(c.dqkv, n * ld, "gradient buffers", false);
    v(c.dxf, n * d, "gradient buffers", false);
    const int64_t ch = chunk_rows(c), V = c.cfg.vocab_size;
    v(c.cx, ch * d, "classifier", true);
    v(c.cdx, ch * d, "classifier", true);
    v(c.cdl, ch * V, "classifier", true);
    v(c.clogits, ch * V, "classifier", true);
    v(c.clp, ch, "classifier", true);
    v(c.tokens, n, "batch", true);
    v(c.pos, n, "batch", true);
    v(c.rows, n, "batch", true);
    v(c.labels, n, "batch", true);
    v(c.tiles, n / 64 + 64, "batch", true);  // grown by upload() when a batch has more segments
}

Sizes plan_sizes(Ctx &c, long n) {
    Sizes s{0, kPlanMargin};
    activation_table(c, n, [&](auto &buf, int64_t count, const char *, bool workspace) {
        (workspace ? s.workspace : s.activations) += count * int64_t(sizeof(*buf.p));
    });
    return s;
}

}  // namespace

const float *Ctx::f32(int64_t offset) const {
    if (p32_whole) return p32.p + offset;
    auto it = std::lower_bound(f32_at.begin(), f32_at.end(), offset, [](const std::array<int64_t, 3> &a, int64_t o) { return a[0] < o; });
    if (it == f32_at.end() || (*it)[0] != offset) fail(LIMA_ERR_INTERNAL, "CUDA backend: no fp32 copy of the tensor at ", offset);
    return p32.p + (*it)[2];
}

float *Ctx::grad(int64_t offset) const {
    if (!off && !z3) return grads.p + offset;
    // offload and ZeRO-3: the staging buffer of the unit backward is working on
    const int u = unit_of(*this, offset);
    float *b = z3 ? z3->g_of[size_t(u)] : off->stage_of[size_t(u)];
    if (!b) fail(LIMA_ERR_INTERNAL, "CUDA backend: unit ", u, " has no gradient staging buffer");
    return b + (offset - units[size_t(u)].first);
}

Offload::~Offload() {
    host.reset();
    if (copy) cudaStreamSynchronize(copy);
    if (master) cudaHostUnregister(master);
    for (cudaEvent_t e : ready) cudaEventDestroy(e);
    for (cudaEvent_t e : {stage_free[0], stage_free[1], up_done[0], up_done[1], grads_home, done})
        if (e) cudaEventDestroy(e);
    if (copy) cudaStreamDestroy(copy);
}

LayerW layer_weights(Ctx &c, int l) {
    const lima_cuda_layer &o = c.layers[size_t(l)];
    if (c.z3) {  // the layer's unit as gathered
        const bf16 *w = z3_weights(c, 1 + l) - c.units[size_t(1 + l)].first;
        return {w + o.qkv, w + o.wo, w + o.gu, w + o.wd};
    }
    LIMA_REQUIRE(c.p16.p || !c.nf4.empty(), LIMA_ERR_STATE, "CUDA backend: the model has no weights on the device (its ZeRO-3"
                 " trainer is gone)");
    if (c.nf4.empty()) return {c.p16.p + o.qkv, c.p16.p + o.wo, c.p16.p + o.gu, c.p16.p + o.wd};
    const int64_t d = c.d(), F = c.F(), qd = c.cfg.q_dim(), kvd = c.cfg.kv_dim(), ld = c.ldqkv();
    bf16 *qkv = c.nf4_w.p, *wo = qkv + ld * d, *gu = wo + d * qd, *wd = gu + 2 * F * d;
    if (c.nf4_layer != l) {  // q, k, v stacked by rows are [q|k|v]; gate, up are [gate|up]
        bf16 *dst[7] = {qkv, qkv + qd * d, qkv + (qd + kvd) * d, wo, gu, gu + F * d, wd};
        for (int j = 0; j < 7; ++j) {
            const DevNf4 &t = c.nf4[size_t(l * 7 + j)];
            nf4_dequantize(dst[j], t.packed.p, t.absmax.p, t.qabsmax.p, t.absmax2.p, t.offset, c.nf4_code.p, long(t.n), c.st);
        }
        c.nf4_layer = l;
    }
    return {qkv, wo, gu, wd};
}

void settle(Ctx &c) {
    if (!c.off) return;
    c.off->host->drain();
    LIMA_CUDA_CHECK(cudaStreamSynchronize(c.off->copy));
}

void wait_unit(Ctx &c, int u) {
    if (c.z3) {  // forward: the layers gathered in turn, each prefetching the next (the last, the LM head)
        const int L = c.cfg.num_layers;
        if (u == 0 && L >= 1 && !c.z3->w_of[1]) z3_prefetch(c, 1);  // gathered while the embedding is looked up
        if (u >= 1 && u <= L) z3_need(c, u, u < L ? u + 1 : c.head_unit());
        return;
    }
    if (!c.off) return;
    c.off->host->wait_ready(u);
    LIMA_CUDA_CHECK(cudaStreamWaitEvent(c.st, c.off->ready[size_t(u)], 0));
}

namespace {

// Offload: unit u's master weights (pinned host) to the device: bf16 through a pinned staging
// buffer, and its fp32 tensors (embedding, norm gains); ready[u] is recorded after. Runs on the host
// worker after the unit's update (or on the caller's thread when the weights are set).
void publish(Ctx &c, int u) {
    Offload &o = *c.off;
    LIMA_CUDA_CHECK(cudaSetDevice(c.device));
    const auto [b, e] = c.units[size_t(u)];
    const int k = o.next_up++ % 2;
    LIMA_CUDA_CHECK(cudaEventSynchronize(o.up_done[k]));  // the buffer's last upload has left it
    to_bf16(o.up[k].data(), o.master + b, e - b);
    LIMA_CUDA_CHECK(cudaMemcpyAsync(c.p16.p + b, o.up[k].data(), size_t(e - b) * 2, cudaMemcpyHostToDevice, o.copy));
    LIMA_CUDA_CHECK(cudaEventRecord(o.up_done[k], o.copy));
    for (const auto &t : c.f32_at)
        if (t[0] >= b && t[0] < e)
            LIMA_CUDA_CHECK(cudaMemcpyAsync(c.p32.p + t[2], o.master + t[0], size_t(t[1]) * 4, cudaMemcpyHostToDevice, o.copy));
    LIMA_CUDA_CHECK(cudaEventRecord(o.ready[size_t(u)], o.copy));
}

// Offload: a staging buffer for unit u's gradient, holding the host's gradient so far (zero at the
// step's first micro-batch). Idempotent while the unit is held.
void acquire(Ctx &c, int u) {
    if (c.z3) {  // backward runs the units in reverse: the layer below is prefetched (the head: the last layer)
        const int L = c.cfg.num_layers;
        z3_acquire(c, u, u == c.head_unit() ? (L >= 1 ? L : -1) : u >= 2 && u <= L ? u - 1 : -1);
        return;
    }
    if (!c.off) return;
    Offload &o = *c.off;
    if (o.stage_of[size_t(u)]) return;
    if (!o.home_waited) {  // the last micro-batch's gradients have reached the host
        LIMA_CUDA_CHECK(cudaStreamWaitEvent(c.st, o.grads_home, 0));
        o.home_waited = true;
    }
    const auto [b, e] = c.units[size_t(u)];
    float *buf = nullptr;
    int slot = -1;
    if (u == 0) {
        buf = o.stage_emb.p;
    } else if (u == c.cfg.num_layers + 1) {
        buf = o.stage_head.p;
    } else {
        slot = o.next_slot++ % 2;
        LIMA_CUDA_CHECK(cudaStreamWaitEvent(c.st, o.stage_free[slot], 0));
        buf = o.stage[slot].p;
    }
    if (o.host_zero)
        LIMA_CUDA_CHECK(cudaMemsetAsync(buf, 0, size_t(e - b) * 4, c.st));
    else
        LIMA_CUDA_CHECK(cudaMemcpyAsync(buf, o.grads.data() + b, size_t(e - b) * 4, cudaMemcpyHostToDevice, c.st));
    o.stage_of[size_t(u)] = buf;
    o.slot_of[size_t(u)] = slot;
}

// Offload: unit u's gradient is complete for this micro-batch: back to the host on the copy stream.
void release(Ctx &c, int u) {
    if (c.z3) {
        z3_release(c, u);
        return;
    }
    if (!c.off) return;
    Offload &o = *c.off;
    float *buf = o.stage_of[size_t(u)];
    if (!buf) return;
    const auto [b, e] = c.units[size_t(u)];
    LIMA_CUDA_CHECK(cudaEventRecord(o.done, c.st));
    LIMA_CUDA_CHECK(cudaStreamWaitEvent(o.copy, o.done, 0));
    LIMA_CUDA_CHECK(cudaMemcpyAsync(o.grads.data() + b, buf, size_t(e - b) * 4, cudaMemcpyDeviceToHost, o.copy));
    if (o.slot_of[size_t(u)] >= 0) LIMA_CUDA_CHECK(cudaEventRecord(o.stage_free[o.slot_of[size_t(u)]], o.copy));
    o.stage_of[size_t(u)] = nullptr;
}

// The host's fp32 weights to the device: the bf16 copy (through a bounded fp32 scratch) and p32
// (whole, or its packed tensors).
void upload_weights(Ctx &c, const float *host) {
    if (c.p32_whole) {
        LIMA_CUDA_CHECK(cudaMemcpy(c.p32.p, host, size_t(c.total) * 4, cudaMemcpyHostToDevice));
        cast_f32_bf16(c.p16.p, c.p32.p, long(c.total), c.st);
    } else {
        const int64_t chunk = std::min<int64_t>(c.total, int64_t(1) << 26);
        DevBuf<float> tmp;
        tmp.alloc(size_t(chunk), "weight upload scratch");
        for (int64_t at = 0; at < c.total; at += chunk) {
            const int64_t n = std::min(chunk, c.total - at);
            LIMA_CUDA_CHECK(cudaMemcpyAsync(tmp.p, host + at, size_t(n) * 4, cudaMemcpyHostToDevice, c.st));
            cast_f32_bf16(c.p16.p + at, tmp.p, long(n), c.st);
            LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));  // tmp is reused
        }
        for (const auto &t : c.f32_at)
            LIMA_CUDA_CHECK(cudaMemcpyAsync(c.p32.p + t[2], host + t[0], size_t(t[1]) * 4, cudaMemcpyHostToDevice, c.st));
        if (c.shard32.p && c.sh_end > c.sh_begin)  // ZeRO: this rank's shard of the fp32 master
            LIMA_CUDA_CHECK(cudaMemcpyAsync(c.shard32.p, host + c.sh_begin, size_t(c.sh_end - c.sh_begin) * 4, cudaMemcpyHostToDevice,
                                            c.st));
    }
    LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
}

}  // namespace

int64_t training_buffers_held(Ctx &c) {
    int64_t held = 0;
    activation_table(c, c.cap, [&](auto &buf, int64_t, const char *, bool) { held += int64_t(buf.n * sizeof(*buf.p)); });
    return held;
}

int64_t training_buffers_planned(Ctx &c, long n) {
    const Sizes s = plan_sizes(c, n);
    return s.activations + s.workspace - kPlanMargin;
}

void reserve(Ctx &c, long n) {
    if (n <= c.cap) return;
    // drop the old buffers first so the new plan is measured against what is really free
    activation_table(c, c.cap, [](auto &buf, int64_t, const char *, bool) { buf.release(); });
    c.cap = 0;
    const Sizes sz = plan_sizes(c, n);
    size_t fr = 0, tot = 0;
    LIMA_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    if (sz.activations + sz.workspace > int64_t(fr))
        fail(LIMA_ERR_OUT_OF_MEMORY, "CUDA memory plan for micro-batches of ", n, " tokens: activations ",
             sz.activations / 1073741824.0, " GiB + workspace ", sz.workspace / 1073741824.0, " GiB, but only ",
             fr / 1073741824.0, " GiB of ", tot / 1073741824.0, " GiB are free after the weights",
             c.train ? " and optimiser state" : "", c.recompute ? "" : "; enable activation recomputation or",
             " use fewer tokens per micro-batch");
    activation_table(c, n, [](auto &buf, int64_t count, const char *what, bool) { buf.alloc(size_t(count), what); });
    c.chunk = chunk_rows(c);
    c.cap = n;
}

void ensure_rope(Ctx &c, int positions) {
    if (c.rope_positions >= positions) return;
    cpu::RopeTable t;
    t.build(c.cfg.hd(), std::max(positions, std::min(c.cfg.max_position_embeddings, 2048)), c.cfg);
    c.rope_cos.alloc(t.cos.size(), "rotary table");
    c.rope_sin.alloc(t.sin.size(), "rotary table");
    LIMA_CUDA_CHECK(cudaMemcpy(c.rope_cos.p, t.cos.data(), t.cos.size() * 4, cudaMemcpyHostToDevice));
    LIMA_CUDA_CHECK(cudaMemcpy(c.rope_sin.p, t.sin.data(), t.sin.size() * 4, cudaMemcpyHostToDevice));
    c.rope_positions = t.max_pos;
}

namespace {

// Uploads a batch; returns the number of attention tiles.
int upload(Ctx &c, const lima_cuda_batch &b) {
    const long N = long(b.B) * b.T;
    reserve(c, N);
    LIMA_REQUIRE(b.max_seg_len <= c.cfg.max_position_embeddings, LIMA_ERR_INVALID_ARGUMENT, "batch: an example of ",
                 b.max_seg_len, " tokens exceeds max_position_embeddings (", c.cfg.max_position_embeddings, ")");
    for (long i = 0; i < N; ++i)
        LIMA_REQUIRE(b.tokens[i] >= 0 && b.tokens[i] < c.cfg.vocab_size, LIMA_ERR_INVALID_ARGUMENT, "batch: token id ",
                     b.tokens[i], " at row ", i / b.T, ", position ", i % b.T, " is outside the vocabulary [0, ",
                     c.cfg.vocab_size, ")");
    ensure_rope(c, b.max_seg_len);
    std::vector<AttnTile> tiles;
    for (int s = 0; s < b.num_segs; ++s)
        for (int r0 = 0; r0 < b.seg_len[s]; r0 += 64) tiles.push_back({b.seg_start[s], r0, b.seg_len[s]});
    c.tiles.ensure(tiles.size(), "batch");
    LIMA_CUDA_CHECK(cudaMemcpyAsync(c.tokens.p, b.tokens, size_t(N) * 4, cudaMemcpyHostToDevice, c.st));
    LIMA_CUDA_CHECK(cudaMemcpyAsync(c.pos.p, b.pos, size_t(N) * 4, cudaMemcpyHostToDevice, c.st));
    if (b.M) {
        LIMA_CUDA_CHECK(cudaMemcpyAsync(c.rows.p, b.rows, size_t(b.M) * 8, cudaMemcpyHostToDevice, c.st));
        LIMA_CUDA_CHECK(cudaMemcpyAsync(c.labels.p, b.labels, size_t(b.M) * 4, cudaMemcpyHostToDevice, c.st));
    }
    if (!tiles.empty())
        LIMA_CUDA_CHECK(cudaMemcpyAsync(c.tiles.p, tiles.data(), tiles.size() * sizeof(AttnTile), cudaMemcpyHostToDevice, c.st));
    LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));  // the host vectors go out of scope
    return int(tiles.size());
}

}  // namespace

namespace {

// The adapter's scratch for micro-batches (or prefill/decode steps) of N tokens.
void lora_reserve(Ctx &c, long N) {
    DevAdapter &a = *c.ad;
    if (N <= a.cap) return;
    const int max_in = std::max({c.d(), c.cfg.q_dim(), c.F()}), max_out = std::max({c.cfg.q_dim(), c.d(), c.F()});
    a.x.alloc(size_t(N) * size_t(max_in), "LoRA scratch");
    a.t.alloc(size_t(N) * size_t(max_out), "LoRA scratch");
    a.xa.alloc(size_t(N) * size_t(a.r), "LoRA scratch");
    a.dxa.alloc(size_t(N) * size_t(a.r), "LoRA scratch");
    a.cap = N;
}

// What the adapter of target j sees: x, or (training) dropout(x) in the scratch, with the CPU's masks.
const bf16 *lora_input(Ctx &c, const bf16 *x, long n, const DropoutKey *key, int layer, int j) {
    DevAdapter &a = *c.ad;
    if (!key || a.p <= 0.0f) return x;
    dropout_copy(a.x.p, x, n, a.p, lora_dropout_key(*key, j), layer, 0, c.st);
    return a.x.p;
}

// out[:, col0 : col0 + n_out] (row stride ld) += scale * (dropout(x) A^T) B^T for target j of layer l.
void lora_forward(Ctx &c, int l, int j, const bf16 *x, int in, bf16 *out, int ld, int col0, int n_out, long N,
                  const DropoutKey *key) {
    if (!c.ad || c.ad->off(l, j, 0) < 0) return;
    DevAdapter &a = *c.ad;
    lora_reserve(c, N);
    const bf16 *xin = lora_input(c, x, N * in, key, l, j);
    c.gemm->run(a.xa.p, false, xin, false, a.a16.p + a.off(l, j, 0), true, int(N), a.r, in, 0.0f, c.st);
    c.gemm->run(a.t.p, false, a.xa.p, false, a.a16.p + a.off(l, j, 1), true, int(N), n_out, a.r, 0.0f, c.st);
    add_cols(out, ld, col0, a.t.p, N, n_out, a.scale, c.st);
}

// The adapter's backward for target j of layer l, given the gradient dout[:, col0 : col0 + n_out] of
// its projection's output: dB += scale dout^T xa; dxa = scale dout B; dA += dxa^T dropout(x);
// dx += dropout'(dxa A). xa = dropout(x) A^T is recomputed (the same mask), not kept.
void lora_backward(Ctx &c, int l, int j, const bf16 *x, int in, const bf16 *dout, int ld, int col0, int n_out, bf16 *dx, long N,
                   const DropoutKey *key) {
    if (!c.ad || c.ad->off(l, j, 0) < 0) return;
    DevAdapter &a = *c.ad;
    lora_reserve(c, N);
    const bf16 *A = a.a16.p + a.off(l, j, 0), *B = a.a16.p + a.off(l, j, 1);
    float *gA = a.grads.p + a.off(l, j, 0), *gB = a.grads.p + a.off(l, j, 1);
    const bf16 *xin = lora_input(c, x, N * in, key, l, j);
    c.gemm->run(a.xa.p, false, xin, false, A, true, int(N), a.r, in, 0.0f, c.st);               // xa (N, r)
    gather_cols(a.t.p, dout, ld, col0, N, n_out, a.scale, c.st);                                  // scale dout (N, out)
    c.gemm->run(gB, true, a.t.p, true, a.xa.p, false, n_out, a.r, int(N), 1.0f, c.st);           // dB (out, r)
    c.gemm->run(a.dxa.p, false, a.t.p, false, B, false, int(N), a.r, n_out, 0.0f, c.st);         // dxa (N, r)
    c.gemm->run(gA, true, a.dxa.p, true, xin, false, a.r, in, int(N), 1.0f, c.st);               // dA (r, in)
    c.gemm->run(a.x.p, false, a.dxa.p, false, A, false, int(N), in, a.r, 0.0f, c.st);            // dxa A (N, in)
    if (key && a.p > 0.0f) dropout_copy(a.x.p, a.x.p, N * in, a.p, lora_dropout_key(*key, j), l, 0, c.st);
    add_cols(dx, in, 0, a.x.p, N, in, 1.0f, c.st);
}

}  // namespace

void layer_forward(Ctx &c, int l, const LayerBufs &a, const float *x, float *x_mid, float *x_out, bf16 *y, const int32_t *pos,
                   long N, const LayerAttention &att, const DropoutKey *key, float p_max) {
    const lima_cuda_layer &o = c.layers[size_t(l)];
    const int d = c.d(), F = c.F(), qd = c.cfg.q_dim(), ld = c.ldqkv(), hd = c.cfg.hd();
    const int Hq = c.cfg.num_heads, Hkv = c.cfg.num_kv_heads, kvd = c.cfg.kv_dim();
    // QLoRA with few rows (decoding): the fused NF4 kernel reads the projections as stored, no layer
    // is dequantised; otherwise the products run on cuBLASLt over bf16 (dequantised once per layer
    // for many rows, where tensor cores repay the copy, as bitsandbytes does in training).
    const bool fused = !c.nf4.empty() && N <= kNf4FusedRows && d % 8 == 0 && qd % 8 == 0 && F % 8 == 0;
    const LayerW w = fused ? LayerW{} : layer_weights(c, l);
    // out (N, ldo) = xin (N, in) W^T: one cuBLASLt product over the bf16 weights W, or (fused) the NF4
    // projections j of the group side by side, each of n_out columns
    auto product = [&](bf16 *out, int ldo, const bf16 *xin, int in, const bf16 *W, std::initializer_list<std::pair<int, int>> parts) {
        if (!fused) {
            c.gemm->run(out, false, xin, false, W, true, int(N), ldo, in, 0.0f, c.st);
            return;
        }
        int col0 = 0;
        for (const auto &[j, n_out] : parts) {
            const DevNf4 &t = c.nf4[size_t(l * 7 + j)];
            nf4_matmul(out, ldo, col0, xin, in, N, in, n_out, t.packed.p, t.absmax.p, t.qabsmax.p, t.absmax2.p, t.offset,
                       c.nf4_code.p, c.st);
            col0 += n_out;
        }
    };
    const float p = resid_dropout_rate(p_max, l, c.cfg.num_layers);
    auto residual = [&](float *out, const float *res, int site) {
        if (key)
            dropout_residual_forward(out, res, y, N * d, p, key, l, site, c.st);
        else
            residual_add(out, res, y, N * d, c.st);
    };
    // attention block
    rmsnorm_forward(a.xn1, a.rstd1, x, c.f32(o.ln1), N, d, c.cfg.rms_norm_eps, c.st);
    product(a.qkv, ld, a.xn1, d, w.qkv, {{0, qd}, {1, kvd}, {2, kvd}});
    if (o.bqkv >= 0) bias_forward(a.qkv, c.f32(o.bqkv), N, ld, c.st);
    lora_forward(c, l, 0, a.xn1, d, a.qkv, ld, 0, qd, N, key);
    lora_forward(c, l, 1, a.xn1, d, a.qkv, ld, qd, kvd, N, key);
    lora_forward(c, l, 2, a.xn1, d, a.qkv, ld, qd + kvd, kvd, N, key);
    rope_forward(a.qkv, ld, pos, N, Hq + Hkv, hd, c.rope_cos.p, c.rope_sin.p, c.st);
    if (att.k_cache)
        kv_cache_store(att.k_cache, att.v_cache, a.qkv, ld, qd, Hkv * hd, att.row, pos, att.active, N, att.max_len, c.st);
    if (att.tiles) {
        LIMA_CUDA_CHECK(cudaMemsetAsync(a.att, 0, size_t(N) * qd * sizeof(bf16), c.st));
        attention_forward(a.att, a.lse, a.qkv, att.tiles, att.num_tiles, {N, Hq, Hkv, hd, ld}, c.st);
    } else {
        decode_attention(a.att, att.part_o, att.part_ml, a.qkv, ld, att.k_cache, att.v_cache, pos, att.active, int(N), Hq, Hkv,
                         hd, att.max_len, c.st);
    }
    product(y, d, a.att, qd, w.wo, {{3, d}});
    if (o.bo >= 0) bias_forward(y, c.f32(o.bo), N, d, c.st);
    lora_forward(c, l, 3, a.att, qd, y, d, 0, d, N, key);
    residual(x_mid, x, 0);
    // MLP block
    rmsnorm_forward(a.xn2, a.rstd2, x_mid, c.f32(o.ln2), N, d, c.cfg.rms_norm_eps, c.st);
    product(a.gu, 2 * F, a.xn2, d, w.gu, {{4, F}, {5, F}});
    if (o.bgu >= 0) bias_forward(a.gu, c.f32(o.bgu), N, 2 * F, c.st);
    lora_forward(c, l, 4, a.xn2, d, a.gu, 2 * F, 0, F, N, key);
    lora_forward(c, l, 5, a.xn2, d, a.gu, 2 * F, F, F, N, key);
    swiglu_forward(a.h, a.gu, N, F, c.st);
    if (!x_out) return;
    product(y, d, a.h, F, w.wd, {{6, d}});
    if (o.bd >= 0) bias_forward(y, c.f32(o.bd), N, d, c.st);
    lora_forward(c, l, 6, a.h, F, y, d, 0, d, N, key);
    residual(x_out, x_mid, 1);
}

namespace {

LayerAttention packed(const Ctx &c, int ntiles) {
    LayerAttention att;
    att.tiles = c.tiles.p;
    att.num_tiles = ntiles;
    return att;
}

void forward(Ctx &c, long N, int ntiles, const DropoutKey *key, float p_max) {
    const int d = c.d(), L = c.cfg.num_layers;
    wait_unit(c, 0);
    encoder_forward(c.resid.p, c.f32(c.emb), c.tokens.p, N, d, c.st);
    for (int l = 0; l < L; ++l) {
        LayerActs &a = c.acts[c.recompute ? 0 : size_t(l)];
        wait_unit(c, 1 + l);
        layer_forward(c, l, a.bufs(), c.resid.p + size_t(l) * N * d, a.xmid.p, c.resid.p + size_t(l + 1) * N * d, c.y.p,
                      c.pos.p, N, packed(c, ntiles), key, p_max);
    }
    wait_unit(c, L + 1);
    rmsnorm_forward(c.xf.p, c.rstdf.p, c.resid.p + size_t(L) * N * d, c.f32(c.norm), N, d, c.cfg.rms_norm_eps, c.st);
}

void backward(Ctx &c, long N, int ntiles, const DropoutKey *key, float p_max) {
    const int d = c.d(), F = c.F(), L = c.cfg.num_layers, qd = c.cfg.q_dim(), ld = c.ldqkv(), hd = c.cfg.hd(), kvd = c.cfg.kv_dim();
    // With an adapter the base is frozen: no weight, gain or bias gradient; the adapter's instead.
    const bool frozen = c.ad != nullptr;
    auto dW = [&](int64_t offset, const bf16 *dy, bool transA, const bf16 *xin, int M, int Nn) {  // dW (M, Nn) += dy^T x
        if (!frozen) c.gemm->run(c.grad(offset), true, dy, transA, xin, false, M, Nn, int(N), 1.0f, c.st);
    };
    auto gain = [&](int64_t offset) { return frozen ? nullptr : c.grad(offset); };
    auto bias = [&](int64_t offset, const bf16 *dy, int n) {
        if (offset >= 0 && !frozen) bias_backward(c.grad(offset), dy, N, n, c.st);
    };
    acquire(c, L + 1);
    rmsnorm_backward(c.dres.p, gain(c.norm), c.dxf.p, c.resid.p + size_t(L) * N * d, c.f32(c.norm), c.rstdf.p, N, d, false, c.st);
    release(c, L + 1);  // the final norm (and the untied LM head, whose gradient the classifier made)
    for (int l = L - 1; l >= 0; --l) {
        const lima_cuda_layer &o = c.layers[size_t(l)];
        acquire(c, 1 + l);
        LayerActs &a = c.acts[c.recompute ? 0 : size_t(l)];
        const float *x = c.resid.p + size_t(l) * N * d;
        if (c.recompute) layer_forward(c, l, a.bufs(), x, a.xmid.p, nullptr, c.y.p, c.pos.p, N, packed(c, ntiles), key, p_max);
        const LayerW w = layer_weights(c, l);
        const float p = resid_dropout_rate(p_max, l, L);
        // MLP block
        dropout_residual_backward(c.dy.p, c.dres.p, N * d, p, key, l, 1, c.st);
        c.gemm->run(c.dh.p, false, c.dy.p, false, w.wd, false, int(N), F, d, 0.0f, c.st);
        dW(o.wd, c.dy.p, true, a.h.p, d, F);
        bias(o.bd, c.dy.p, d);
        lora_backward(c, l, 6, a.h.p, F, c.dy.p, d, 0, d, c.dh.p, N, key);
        swiglu_backward(c.dgu.p, c.dh.p, a.gu.p, N, F, c.st);
        c.gemm->run(c.dxn.p, false, c.dgu.p, false, w.gu, false, int(N), d, 2 * F, 0.0f, c.st);
        dW(o.gu, c.dgu.p, true, a.xn2.p, 2 * F, d);
        bias(o.bgu, c.dgu.p, 2 * F);
        lora_backward(c, l, 4, a.xn2.p, d, c.dgu.p, 2 * F, 0, F, c.dxn.p, N, key);
        lora_backward(c, l, 5, a.xn2.p, d, c.dgu.p, 2 * F, F, F, c.dxn.p, N, key);
        rmsnorm_backward(c.dres.p, gain(o.ln2), c.dxn.p, a.xmid.p, c.f32(o.ln2), a.rstd2.p, N, d, true, c.st);
        // attention block
        dropout_residual_backward(c.dy.p, c.dres.p, N * d, p, key, l, 0, c.st);
        c.gemm->run(c.datt.p, false, c.dy.p, false, w.wo, false, int(N), qd, d, 0.0f, c.st);
        dW(o.wo, c.dy.p, true, a.att.p, d, qd);
        bias(o.bo, c.dy.p, d);
        lora_backward(c, l, 3, a.att.p, qd, c.dy.p, d, 0, d, c.datt.p, N, key);
        attention_backward(c.dqkv.p, c.Dsum.p, c.datt.p, a.att.p, a.lse.p, a.qkv.p, c.tiles.p, ntiles,
                           {N, c.cfg.num_heads, c.cfg.num_kv_heads, hd, ld}, c.st);
        rope_backward(c.dqkv.p, ld, c.pos.p, N, c.cfg.num_heads + c.cfg.num_kv_heads, hd, c.rope_cos.p, c.rope_sin.p, c.st);
        c.gemm->run(c.dxn.p, false, c.dqkv.p, false, w.qkv, false, int(N), d, ld, 0.0f, c.st);
        dW(o.qkv, c.dqkv.p, true, a.xn1.p, ld, d);
        bias(o.bqkv, c.dqkv.p, ld);
        lora_backward(c, l, 0, a.xn1.p, d, c.dqkv.p, ld, 0, qd, c.dxn.p, N, key);
        lora_backward(c, l, 1, a.xn1.p, d, c.dqkv.p, ld, qd, kvd, c.dxn.p, N, key);
        lora_backward(c, l, 2, a.xn1.p, d, c.dqkv.p, ld, qd + kvd, kvd, c.dxn.p, N, key);
        rmsnorm_backward(c.dres.p, gain(o.ln1), c.dxn.p, x, c.f32(o.ln1), a.rstd1.p, N, d, true, c.st);
        release(c, 1 + l);
    }
    acquire(c, 0);
    if (!frozen)
        encoder_backward(c.grad(c.emb), c.dres.p, c.tokens.p, N, d, c.st);
    else if (c.ad->emb_rows >= 0)  // the trainable token rows only
        token_rows_grad_emb(c.ad->grads.p + c.ad->emb_rows, c.dres.p, c.tokens.p, N, d, c.ad->tokens.p, c.ad->n_tokens, c.st);
    release(c, 0);
    if (c.off) {
        LIMA_CUDA_CHECK(cudaEventRecord(c.off->grads_home, c.off->copy));
        c.off->host_zero = false;
    }
}

// The classifier (the CPU's cpu::classifier_train), chunk by chunk over the M rows that predict a
// target, never (N, V) at once: logits, cross-entropy into c.dsum, dxf (scattered back to the
// rows) and the LM-head gradient.
// The LM head's bf16 weights: the model's, or (ZeRO-3) its unit as gathered.
const bf16 *head_weights(const Ctx &c) {
    if (c.z3) return z3_weights(c, c.head_unit()) + (c.lm_head - c.units[size_t(c.head_unit())].first);
    LIMA_REQUIRE(c.p16.p, LIMA_ERR_STATE, "CUDA backend: the model has no weights on the device (its ZeRO-3 trainer is gone)");
    return c.p16.p + c.lm_head;
}

void classifier_train(Ctx &c, long M, float inv_norm) {
    const int d = c.d(), V = c.cfg.vocab_size;
    const bf16 *head = head_weights(c);
    for (long r0 = 0; r0 < M; r0 += c.chunk) {
        const long n = std::min(c.chunk, M - r0);
        gather_rows(c.cx.p, c.xf.p, c.rows.p + r0, n, d, c.st);
        c.gemm->run(c.clogits.p, true, c.cx.p, false, head, true, int(n), V, d, 0.0f, c.st);
        cross_entropy(c.cdl.p, c.dsum.p, c.clogits.p, c.labels.p + r0, n, V, inv_norm, c.st);
        c.gemm->run(c.cdx.p, false, c.cdl.p, false, head, false, int(n), d, V, 0.0f, c.st);
        scatter_rows(c.dxf.p, c.cdx.p, c.rows.p + r0, n, d, c.st);
        if (!c.ad) {
            c.gemm->run(c.grad(c.lm_head), true, c.cdl.p, true, c.cx.p, false, V, d, int(n), 1.0f, c.st);
        } else if (c.ad->emb_rows >= 0) {  // the frozen head: the trainable token rows only (the embedding's when tied)
            const int64_t rows = c.ad->head_rows >= 0 ? c.ad->head_rows : c.ad->emb_rows;
            token_rows_grad_head(c.ad->grads.p + rows, c.cdl.p, c.cx.p, n, V, d, c.ad->tokens.p, c.ad->n_tokens, c.st);
        }
    }
}

// Log-probabilities of the batch's labels (the CPU's cpu::classifier_logprobs): out[row + 1] for
// each target row, chunk by chunk.
void classifier_logprobs(Ctx &c, const lima_cuda_batch &b, float *out) {
    const int d = c.d(), V = c.cfg.vocab_size;
    if (c.z3) {  // the head gathered, and every gather done within the deadline before the blocking copies below
        z3_need(c, c.head_unit(), -1);
        c.dp->wait_stream(c.st, "ZeRO-3 evaluation forward");
    }
    const bf16 *head = head_weights(c);
    std::vector<float> lp(size_t(c.chunk));
    for (long r0 = 0; r0 < b.M; r0 += c.chunk) {
        const long n = std::min(c.chunk, long(b.M) - r0);
        gather_rows(c.cx.p, c.xf.p, c.rows.p + r0, n, d, c.st);
        c.gemm->run(c.clogits.p, true, c.cx.p, false, head, true, int(n), V, d, 0.0f, c.st);
        label_logprobs(c.clp.p, c.clogits.p, c.labels.p + r0, n, V, c.st);
        LIMA_CUDA_CHECK(cudaMemcpyAsync(lp.data(), c.clp.p, size_t(n) * 4, cudaMemcpyDeviceToHost, c.st));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        for (long i = 0; i < n; ++i) out[b.rows[r0 + i] + 1] = lp[size_t(i)];
    }
}

// The multi-tensor AdamW kernel's work items: every tensor cut into chunks of at most 16384 elements.
std::vector<AdamChunk> adam_chunks(int n, const int64_t *offset, const int64_t *numel, const uint8_t *decay) {
    std::vector<AdamChunk> out;
    for (int t = 0; t < n; ++t)
        for (int64_t s = 0; s < numel[t]; s += 16384)
            out.push_back({offset[t] + s, int32_t(std::min<int64_t>(16384, numel[t] - s)), int32_t(decay[t])});
    return out;
}

// Whether what is trained now (the adapter when there is one, else the model) has its optimiser state.
bool trains(const Ctx &c) { return c.ad ? c.ad->train : c.train; }

// The model's rows at the adapter's trainable tokens = the adapter's rows: the fp32 and bf16
// embedding, and the bf16 LM head when it is not tied (as the CPU's sync_token_rows).
void sync_token_rows(Ctx &c) {
    DevAdapter &a = *c.ad;
    if (a.emb_rows < 0) return;
    const int d = c.d();
    set_token_rows(const_cast<float *>(c.f32(c.emb)), c.p16.p + c.emb, a.a32.p + a.emb_rows, d, a.tokens.p, a.n_tokens, c.st);
    if (a.head_rows >= 0) set_token_rows(nullptr, c.p16.p + c.lm_head, a.a32.p + a.head_rows, d, a.tokens.p, a.n_tokens, c.st);
}

}  // namespace

// The tensors the kernels read in fp32 (the embedding, the norm gains, the biases), packed in that
// order into p32 when it does not hold the whole master: fills c.f32_at, returns the packed length.
int64_t f32_table(Ctx &c) {
    const ModelConfig &cfg = c.cfg;
    c.f32_at.clear();
    int64_t packed = 0;
    auto pack = [&](int64_t offset, int64_t numel) {
        c.f32_at.push_back({offset, numel, packed});
        packed += numel;
    };
    pack(c.emb, int64_t(cfg.vocab_size) * cfg.hidden_size);
    for (const lima_cuda_layer &l : c.layers) {
        pack(l.ln1, cfg.hidden_size);
        pack(l.ln2, cfg.hidden_size);
        if (l.bqkv >= 0) pack(l.bqkv, cfg.q_dim() + 2 * cfg.kv_dim());
        if (l.bo >= 0) pack(l.bo, cfg.hidden_size);
        if (l.bgu >= 0) pack(l.bgu, 2 * cfg.intermediate_size);
        if (l.bd >= 0) pack(l.bd, cfg.hidden_size);
    }
    pack(c.norm, cfg.hidden_size);
    std::sort(c.f32_at.begin(), c.f32_at.end());
    return packed;
}

void pack_f32(Ctx &c) {
    const int64_t packed = f32_table(c);
    if (!c.p32_whole && int64_t(c.p32.n) == packed) return;
    DevBuf<float> pk;
    pk.alloc(size_t(packed), "fp32 embedding and norm gains");
    if (c.p32_whole)
        for (const auto &t : c.f32_at)
            LIMA_CUDA_CHECK(cudaMemcpy(pk.p + t[2], c.p32.p + t[0], size_t(t[1]) * 4, cudaMemcpyDeviceToDevice));
    c.p32 = std::move(pk);
    c.p32_whole = false;
}

namespace {

Ctx *create(const lima_cuda_model_desc &d, const float *params) {
    ModelConfig cfg(d.cfg);
    LIMA_REQUIRE(attention_supports(cfg.hd()), LIMA_ERR_UNSUPPORTED, "the CUDA backend supports head_dim 32, 64 or 128; this model has ",
                 cfg.hd(), " (use device \"cpu\")");
    int n = 0;
    LIMA_CUDA_CHECK(cudaGetDeviceCount(&n));
    LIMA_REQUIRE(d.device >= 0 && d.device < n, LIMA_ERR_INVALID_ARGUMENT, "CUDA device ", d.device, " does not exist (",
                 n, " found)");
    LIMA_CUDA_CHECK(cudaSetDevice(d.device));
    auto c = std::make_unique<Ctx>();
    c->cfg = cfg;
    c->device = d.device;
    c->total = d.total;
    c->emb = d.emb;
    c->norm = d.norm;
    c->lm_head = d.lm_head;
    c->layers.assign(d.layers, d.layers + cfg.num_layers);
    for (int t = 0; t < d.num_tensors; ++t) c->tensors.push_back({d.t_offset[t], d.t_numel[t], d.t_decay[t] != 0});
    c->chunks = adam_chunks(d.num_tensors, d.t_offset, d.t_numel, d.t_decay);
    for (int u = 0; u < cfg.num_layers + 2; ++u) c->units.push_back({d.units[2 * u], d.units[2 * u + 1]});
    // Until a plain trainer needs the whole fp32 master, p32 holds only what the kernels read in fp32.
    const int64_t packed = f32_table(*c);
    int64_t nf4_bytes = 0;
    if (d.nf4) {  // QLoRA: the projections in NF4, one layer dequantised at a time
        const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, qd = cfg.q_dim(), ld = qd + 2 * cfg.kv_dim();
        nf4_bytes = (ld * D + D * qd + 2 * F * D + D * F) * 2 + 256 * 4;
        for (int i = 0; i < cfg.num_layers * 7; ++i) {
            const lima_cuda_nf4 &t = d.nf4[i];
            const int64_t blocks = (t.n + 63) / 64;
            nf4_bytes += (t.n + 1) / 2 + (t.absmax ? blocks * 4 : blocks + ((blocks + 255) / 256) * 4);
        }
    }
    size_t fr = 0, tot = 0;
    LIMA_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    // params NULL: a hollow model (a ZeRO-3 rank): no whole bf16 weights, its pieces come with its trainer
    const int64_t need = (params ? d.total * 2 : 0) + packed * 4 + nf4_bytes;
    LIMA_REQUIRE(need < int64_t(fr), LIMA_ERR_OUT_OF_MEMORY, "CUDA memory plan: the weights need ", need / 1073741824.0,
                 " GiB (bf16, with fp32 embedding and norm gains) but device ", d.device, " has ", fr / 1073741824.0,
                 " GiB free of ", tot / 1073741824.0);
    LIMA_CUDA_CHECK(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking));
    c->gemm = std::make_unique<Gemm>();
    c->p32.alloc(size_t(packed), "fp32 embedding and norm gains");
    if (params) c->p16.alloc(size_t(d.total), "bf16 weights");
    if (d.nf4) {
        c->nf4.resize(size_t(cfg.num_layers) * 7);
        for (size_t i = 0; i < c->nf4.size(); ++i) {
            const lima_cuda_nf4 &s = d.nf4[i];
            DevNf4 &t = c->nf4[i];
            const int64_t blocks = (s.n + 63) / 64, groups = (blocks + 255) / 256;
            t.n = s.n;
            t.offset = s.offset;
            auto up = [](auto &buf, const auto *src, int64_t count) {
                buf.alloc(size_t(count), "NF4 weights");
                LIMA_CUDA_CHECK(cudaMemcpy(buf.p, src, size_t(count) * sizeof(*src), cudaMemcpyHostToDevice));
            };
            up(t.packed, s.packed, (s.n + 1) / 2);
            if (s.absmax) {
                up(t.absmax, s.absmax, blocks);
            } else {
                up(t.qabsmax, s.qabsmax, blocks);
                up(t.absmax2, s.absmax2, groups);
            }
        }
        c->nf4_code.alloc(256, "NF4 absmax code");
        LIMA_CUDA_CHECK(cudaMemcpy(c->nf4_code.p, d.nf4_code, 256 * 4, cudaMemcpyHostToDevice));
        const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, qd = cfg.q_dim(), ld = qd + 2 * cfg.kv_dim();
        c->nf4_w.alloc(size_t(ld * D + D * qd + 2 * F * D + D * F), "NF4 layer dequantised");
    }
    c->dsum.alloc(1, "scalars");
    c->dscale.alloc(1, "scalars");
    if (params) upload_weights(*c, params);
    return c.release();
}

}  // namespace
}  // namespace lima::cuda

using lima::DropoutKey;
using lima::cuda::Ctx;
using namespace lima::cuda;

#define LIMA_EXPORT extern "C" __attribute__((visibility("default")))

LIMA_EXPORT int lima_cuda_plugin_create(const lima_cuda_model_desc *d, const float *params, void **out, char *err,
                                        int32_t errcap) {
    return guard(err, errcap, [&] { *out = create(*d, params); });
}

LIMA_EXPORT void lima_cuda_plugin_free(void *ctx) {
    Ctx *c = static_cast<Ctx *>(ctx);
    if (c) cudaSetDevice(c->device);
    delete c;
}

LIMA_EXPORT int lima_cuda_plugin_params(void *ctx, float *host, int32_t to_device, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        if (c.off) {  // the master weights are on the host
            settle(c);
            float *master = c.off->master;
            if (to_device) {
                if (host != master) std::copy(host, host + c.total, master);
                for (int u = 0; u < int(c.units.size()); ++u) publish(c, u);
                settle(c);
            } else if (host != master) {  // liblima's copy is the master itself: nothing to copy
                std::copy(master, master + c.total, host);
            }
        } else if (c.z3) {
            lima::fail(LIMA_ERR_STATE, "CUDA backend: the weights are sharded by ZeRO-3 (gathered unit by unit with z3_gather)");
        } else if (to_device) {
            upload_weights(c, host);
        } else if (c.shard32.p || (c.dp && c.zero >= 1 && !c.ad)) {
            // ZeRO: the master is sharded; every rank makes this call and each shard is broadcast from its owner
            DevBuf<float> tmp;
            tmp.alloc(size_t(c.sh_len), "ZeRO weight gather scratch");
            for (int r = 0; r < c.dp->world; ++r) {
                const int64_t b = std::min<int64_t>(c.total, r * c.sh_len), e = std::min<int64_t>(c.total, b + c.sh_len);
                c.dp->broadcast(c.shard32.p, tmp.p, c.sh_len, r, c.st, "gathering the fp32 weights");
                if (e > b) LIMA_CUDA_CHECK(cudaMemcpy(host + b, tmp.p, size_t(e - b) * 4, cudaMemcpyDeviceToHost));
            }
        } else {
            LIMA_REQUIRE(c.p32_whole, LIMA_ERR_STATE, "CUDA backend: the device holds no fp32 master weights (no trainer)");
            LIMA_CUDA_CHECK(cudaMemcpy(host, c.p32.p, size_t(c.total) * 4, cudaMemcpyDeviceToHost));
        }
    });
}

LIMA_EXPORT int lima_cuda_plugin_train_init(void *ctx, int32_t recompute, int32_t offload, const float *params, char *err,
                                            int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        if (c.recompute != (recompute != 0)) {
            c.recompute = recompute != 0;
            c.acts.clear();
            c.cap = 0;  // the next batch plans again
        }
        if (c.ad) {  // an adapter's trainer: its gradient and moments (the base stays as it is)
            LIMA_REQUIRE(!offload, LIMA_ERR_UNSUPPORTED, "CUDA backend: offload is for full fine-tuning, not an adapter");
            DevAdapter &ad = *c.ad;
            if (!ad.train) {
                ad.grads.alloc(size_t(ad.total), "adapter gradients");
                ad.m1.alloc(size_t(ad.total), "adapter AdamW moments");
                ad.m2.alloc(size_t(ad.total), "adapter AdamW moments");
                for (DevBuf<float> *b : {&ad.grads, &ad.m1, &ad.m2}) LIMA_CUDA_CHECK(cudaMemset(b->p, 0, size_t(ad.total) * 4));
                ad.dchunks.alloc(ad.chunks.size(), "optimiser table");
                LIMA_CUDA_CHECK(cudaMemcpy(ad.dchunks.p, ad.chunks.data(), ad.chunks.size() * sizeof(AdamChunk), cudaMemcpyHostToDevice));
                ad.train = true;
            }
            return;
        }
        if (c.train) {
            LIMA_REQUIRE(bool(c.off) == (offload != 0), LIMA_ERR_STATE, "CUDA backend: this model was trained ",
                         c.off ? "with" : "without", " offload; load it again to train it ", offload ? "with" : "without");
            return;
        }
        size_t fr = 0, tot = 0;
        LIMA_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
        if (!offload) {  // the whole fp32 master (replacing the packed tensors), gradients and moments on the device
            const int64_t need = c.total * 16 - int64_t(c.p32.n) * 4;
            LIMA_REQUIRE(need < int64_t(fr), LIMA_ERR_OUT_OF_MEMORY, "CUDA memory plan: fp32 master weights, gradients and AdamW"
                         " moments need ", need / 1073741824.0, " GiB but device ", c.device, " has ", fr / 1073741824.0,
                         " GiB free after the bf16 weights (", tot / 1073741824.0, " GiB in all); train with offload"
                         " (the optimiser on the host) or an adapter");
            c.p32.release();
            c.f32_at.clear();
            c.p32.alloc(size_t(c.total), "fp32 master weights");
            c.p32_whole = true;
            LIMA_CUDA_CHECK(cudaMemcpy(c.p32.p, params, size_t(c.total) * 4, cudaMemcpyHostToDevice));
            c.grads.alloc(size_t(c.total), "gradients");
            c.m1.alloc(size_t(c.total), "AdamW moments");
            c.m2.alloc(size_t(c.total), "AdamW moments");
            LIMA_CUDA_CHECK(cudaMemset(c.grads.p, 0, size_t(c.total) * 4));
            LIMA_CUDA_CHECK(cudaMemset(c.m1.p, 0, size_t(c.total) * 4));
            LIMA_CUDA_CHECK(cudaMemset(c.m2.p, 0, size_t(c.total) * 4));
            c.dchunks.alloc(c.chunks.size(), "optimiser table");
            LIMA_CUDA_CHECK(cudaMemcpy(c.dchunks.p, c.chunks.data(), c.chunks.size() * sizeof(AdamChunk), cudaMemcpyHostToDevice));
            c.train = true;
            return;
        }
        // offload: the state in pinned host memory, the gradient of at most four units on the device
        const int L = c.cfg.num_layers;
        int64_t layer = 0, largest = 0;
        for (int u = 0; u < L + 2; ++u) {
            const int64_t n = c.units[size_t(u)].second - c.units[size_t(u)].first;
            largest = std::max(largest, n);
            if (u >= 1 && u <= L) layer = std::max(layer, n);
        }
        const int64_t emb = c.units[0].second - c.units[0].first, head = c.units[size_t(L) + 1].second - c.units[size_t(L) + 1].first;
        const int64_t need = (2 * layer + emb + head) * 4;
        LIMA_REQUIRE(need < int64_t(fr), LIMA_ERR_OUT_OF_MEMORY, "CUDA memory plan (offload): gradient staging needs ",
                     need / 1073741824.0, " GiB but device ", c.device, " has ", fr / 1073741824.0, " GiB free");
        auto o = std::make_unique<Offload>();
        // the master weights are liblima's host copy (it outlives this context: lima_model_free detaches first)
        LIMA_CUDA_CHECK(cudaHostRegister(const_cast<float *>(params), size_t(c.total) * 4, cudaHostRegisterDefault));
        o->master = const_cast<float *>(params);
        o->grads.assign(size_t(c.total), 0.0f);
        o->m1.assign(size_t(c.total), 0.0f);
        o->m2.assign(size_t(c.total), 0.0f);
        o->up[0].assign(size_t(largest), 0);
        o->up[1].assign(size_t(largest), 0);
        o->stage[0].alloc(size_t(layer), "offload gradient staging");
        o->stage[1].alloc(size_t(layer), "offload gradient staging");
        o->stage_emb.alloc(size_t(emb), "offload gradient staging");
        o->stage_head.alloc(size_t(head), "offload gradient staging");
        LIMA_CUDA_CHECK(cudaStreamCreateWithFlags(&o->copy, cudaStreamNonBlocking));
        for (cudaEvent_t *e : {&o->stage_free[0], &o->stage_free[1], &o->up_done[0], &o->up_done[1], &o->grads_home, &o->done})
            LIMA_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
        o->ready.assign(c.units.size(), nullptr);
        for (cudaEvent_t &e : o->ready) LIMA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        o->stage_of.assign(c.units.size(), nullptr);
        o->slot_of.assign(c.units.size(), -1);
        o->host = std::make_unique<lima::HostOffload>(o->master, o->grads.data(), o->m1.data(), o->m2.data(),
                                                      c.tensors, c.units);
        c.off = std::move(o);
        c.train = true;
    });
}

LIMA_EXPORT int lima_cuda_plugin_state(void *ctx, float *m1, float *m2, float *grads, int32_t to_device, char *err,
                                       int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_REQUIRE(trains(c), LIMA_ERR_STATE, "CUDA backend: no optimiser state (no trainer)");
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        const bool adapter = c.ad != nullptr;
        const size_t bytes = size_t(adapter ? c.ad->total : c.total) * 4;
        if (c.off) {
            settle(c);
            auto mv = [&](float *h, float *mine) {
                if (h) to_device ? (void)std::copy(h, h + c.total, mine) : (void)std::copy(mine, mine + c.total, h);
            };
            mv(m1, c.off->m1.data());
            mv(m2, c.off->m2.data());
            mv(grads, c.off->grads.data());
            if (to_device && grads) c.off->host_zero = false;
            return;
        }
        const cudaMemcpyKind k = to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
        // a ZeRO shard's moments are the shard's only (ZeRO-3: this rank's pieces, whose gradient is not exchanged)
        const size_t mbytes = c.z3 ? size_t(c.z3->length) * 4 : c.dp && c.zero >= 1 ? size_t(c.sh_end - c.sh_begin) * 4 : bytes;
        auto mv = [&](float *h, float *dv, size_t n) {
            if (!h || n == 0) return;
            LIMA_CUDA_CHECK(to_device ? cudaMemcpy(dv, h, n, k) : cudaMemcpy(h, dv, n, k));
        };
        if (c.z3) {
            mv(m1, c.z3->m1.p, mbytes);
            mv(m2, c.z3->m2.p, mbytes);
            LIMA_REQUIRE(!grads || to_device, LIMA_ERR_STATE, "CUDA backend: a ZeRO-3 trainer holds its pieces of the gradient only");
            if (grads) LIMA_CUDA_CHECK(cudaMemset(c.z3->g.p, 0, mbytes));
            return;
        }
        mv(m1, adapter ? c.ad->m1.p : c.m1.p, mbytes);
        mv(m2, adapter ? c.ad->m2.p : c.m2.p, mbytes);
        mv(grads, adapter ? c.ad->grads.p : c.grads.p, bytes);
    });
}

LIMA_EXPORT int lima_cuda_plugin_zero_grad(void *ctx, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        if (c.ad) {
            if (c.ad->train) LIMA_CUDA_CHECK(cudaMemsetAsync(c.ad->grads.p, 0, size_t(c.ad->total) * 4, c.st));
        } else if (c.off) {
            settle(c);
            std::fill(c.off->grads.data(), c.off->grads.data() + c.total, 0.0f);
            c.off->host_zero = true;
        } else if (c.z3) {
            LIMA_CUDA_CHECK(cudaMemsetAsync(c.z3->g.p, 0, size_t(c.z3->length) * 4, c.st));
        } else if (c.train) {
            LIMA_CUDA_CHECK(cudaMemsetAsync(c.grads.p, 0, size_t(c.total) * 4, c.st));
        }
    });
}

LIMA_EXPORT int lima_cuda_plugin_forward_backward(void *ctx, const lima_cuda_batch *b, const lima_cuda_fb_args *a,
                                                  double *loss, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_REQUIRE(trains(c), LIMA_ERR_STATE, "CUDA backend: forward_backward without a trainer");
        const long N = long(b->B) * b->T;
        const int nt = upload(c, *b);
        const DropoutKey key{a->seed, a->step, a->micro};
        const DropoutKey *kp = a->dropout && (a->p_max > 0 || (c.ad && c.ad->p > 0)) ? &key : nullptr;
        if (c.off) {  // a new pass: no unit held (an earlier pass that failed half-way held some)
            c.off->home_waited = false;
            std::fill(c.off->stage_of.begin(), c.off->stage_of.end(), nullptr);
        }
        if (c.z3) std::fill(c.z3->g_of.begin(), c.z3->g_of.end(), nullptr);
        forward(c, N, nt, kp, a->p_max);
        const int d = c.d();
        LIMA_CUDA_CHECK(cudaMemsetAsync(c.dxf.p, 0, size_t(N) * d * sizeof(bf16), c.st));
        LIMA_CUDA_CHECK(cudaMemsetAsync(c.dsum.p, 0, sizeof(double), c.st));
        acquire(c, c.head_unit());  // offload: the LM head's gradient is staged through backward
        classifier_train(c, b->M, a->inv_norm);
        backward(c, N, nt, kp, a->p_max);
        if (c.z3) c.dp->wait_stream(c.st, "ZeRO-3 forward and backward");  // it waits on gathers: never unbounded
        LIMA_CUDA_CHECK(cudaMemcpyAsync(loss, c.dsum.p, sizeof(double), cudaMemcpyDeviceToHost, c.st));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
    });
}

LIMA_EXPORT int lima_cuda_plugin_step(void *ctx, const lima_cuda_adam_args *a, double *grad_norm, int32_t *clipped, char *err,
                                      int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_REQUIRE(trains(c), LIMA_ERR_STATE, "CUDA backend: step without a trainer");
        if (c.off) {  // the host norm, then the units' updates on the host worker; the next forward waits per unit
            LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
            settle(c);
            *grad_norm = c.off->host->norm();
            const float scale = lima::clip_scale(*grad_norm, a->grad_clip, clipped);
            if (!std::isfinite(*grad_norm)) return;  // the caller refuses the update
            Ctx *cp = &c;
            c.off->host->step({a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, a->grad_clip, a->t}, scale,
                              [cp](int u) { publish(*cp, u); });
            c.off->host_zero = true;
            return;
        }
        // the trained tensors: the model's, its adapter's, or (ZeRO-3) this rank's pieces
        DevAdapter *ad = c.ad.get();
        DevZero3 *z = c.z3.get();
        float *p32 = ad ? ad->a32.p : c.p32.p, *g = ad ? ad->grads.p : c.grads.p, *m1 = ad ? ad->m1.p : c.m1.p, *m2 = ad ? ad->m2.p : c.m2.p;
        bf16 *p16 = ad ? ad->a16.p : c.p16.p;
        const AdamChunk *chunks = ad ? ad->dchunks.p : c.dchunks.p;
        int nchunks = int(ad ? ad->chunks.size() : c.chunks.size());
        int64_t total = ad ? ad->total : c.total;
        if (z) {
            c.dp->wait("ZeRO-3 reduce-scatters of the gradient");  // every unit's gradient is in the pieces
            p32 = z->p32.p, g = z->g.p, m1 = z->m1.p, m2 = z->m2.p, p16 = z->p16.p;
            chunks = z->dchunks.p;
            nchunks = int(z->chunks.size());
            total = z->length;
        }
        // data parallel: the gradient summed over the ranks (stage 2: each rank's shard of the sum,
        // in place at its block), then the norm of the global gradient
        const bool sharded = c.dp && c.zero >= 1 && c.zero <= 2;
        LIMA_CUDA_CHECK(cudaMemsetAsync(c.dsum.p, 0, sizeof(double), c.st));
        if (z || (c.dp && c.zero == 2)) {  // each rank holds its part of the sum: the squares of the parts summed
            if (!z) c.dp->reduce_scatter(g, c.sh_len, c.st, "reduce-scatter of the gradient");  // ZeRO-3: done during backward
            const int64_t b = z ? 0 : c.sh_begin, e = z ? total : c.sh_end;
            sum_squares(c.dsum.p, g + b, long(e - b), c.st);
            c.dp->allreduce(c.dsum.p, 1, ncclFloat64, c.st, "all-reduce of the gradient norm");
        } else {
            if (c.dp) c.dp->allreduce(g, total, ncclFloat32, c.st, "all-reduce of the gradient");
            sum_squares(c.dsum.p, g, long(total), c.st);
        }
        double ss = 0.0;
        LIMA_CUDA_CHECK(cudaMemcpyAsync(&ss, c.dsum.p, sizeof(double), cudaMemcpyDeviceToHost, c.st));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        *grad_norm = std::sqrt(ss);
        *clipped = 0;
        if (!std::isfinite(*grad_norm)) return;  // the caller refuses the update
        clip_scale(c.dscale.p, c.dsum.p, a->grad_clip, c.st);
        *clipped = a->grad_clip > 0 && *grad_norm > a->grad_clip;
        const double bc1 = 1.0 - std::pow(double(a->beta1), double(a->t));
        const double bc2 = 1.0 - std::pow(double(a->beta2), double(a->t));
        AdamArgs aa{a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, float(double(a->lr) / bc1),
                    float(std::sqrt(bc2)), c.dscale.p};
        if (sharded) {  // this rank's shard, then every rank gets every shard's new weights
            aa.state_base = c.sh_begin;
            if (!ad) {  // the model's fp32 master is the shard itself
                p32 = c.shard32.p;
                aa.p32_base = c.sh_begin;
            }
            adamw_update(p32, p16, m1, m2, g, c.sh_dchunks.p, int(c.sh_chunks.size()), aa, c.st);
            if (ad) c.dp->allgather(p32, c.sh_len, ncclFloat32, c.st, "all-gather of the updated fp32 adapter");
            c.dp->allgather(p16, c.sh_len, ncclBfloat16, c.st, "all-gather of the updated bf16 weights");
        } else {
            adamw_update(p32, p16, m1, m2, g, chunks, nchunks, aa, c.st);
        }
        if (!c.f32_pieces.empty())  // a sharded master: the tensors the kernels read in fp32, from their pieces' owners
            c.dp->broadcast_pieces(p32, c.p32.p, c.f32_pieces, c.st, "broadcast of the updated fp32 embedding and gains");
        if (z) z->w_of.assign(z->w_of.size(), nullptr);  // the gathered units are stale
        LIMA_CUDA_CHECK(cudaMemsetAsync(g, 0, size_t(total) * 4, c.st));
        if (ad) sync_token_rows(c);  // the model's rows at the trainable tokens follow the adapter's
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
    });
}

namespace {

// Grows a device buffer to n elements, keeping its first `keep` and zeroing the rest.
template <typename T>
void grow(DevBuf<T> &b, size_t n, int64_t keep, const char *what) {
    if (b.n >= n) return;
    DevBuf<T> nb;
    nb.alloc(n, what);
    LIMA_CUDA_CHECK(cudaMemset(nb.p, 0, n * sizeof(T)));
    if (keep > 0) LIMA_CUDA_CHECK(cudaMemcpy(nb.p, b.p, size_t(keep) * sizeof(T), cudaMemcpyDeviceToDevice));
    b = std::move(nb);
}

}  // namespace

// Makes the trainer data parallel over an NCCL communicator (nccl.cu) at ZeRO stage 0, 1 or 2:
// stage 0 all-reduces the gradient before the step; 1 also keeps the AdamW moments of this rank's
// shard only, updates that shard and all-gathers the updated weights; 2 reduce-scatters the gradient
// instead of all-reducing it. The weights (and at stage 2 the gradient) are padded to a multiple of
// the world size, so each collective runs in place. comm NULL: the trainer is gone (its state is freed).
LIMA_EXPORT int lima_cuda_plugin_set_comm(void *ctx, void *comm, int32_t stage, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        if (!comm) {  // the trainer is gone: so are its sharded state and its communicator (the next trainer starts afresh)
            if (!c.dp) return;
            LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
            LIMA_CUDA_CHECK(cudaStreamSynchronize(c.dp->st));  // nothing of its still reads the buffers freed below
            c.dp = nullptr;
            c.zero = 0;
            c.sh_chunks.clear();
            c.sh_dchunks.release();
            c.shard32.release();  // p32 keeps the packed fp32 tensors, as a model without a trainer
            c.f32_pieces.clear();
            c.z3.reset();  // ZeRO-3's pieces go with it: the model keeps no weights on the device
            if (c.ad) {
                c.ad->train = false;
                for (DevBuf<float> *b : {&c.ad->grads, &c.ad->m1, &c.ad->m2}) b->release();
            } else {
                c.train = false;
                for (DevBuf<float> *b : {&c.grads, &c.m1, &c.m2}) b->release();
            }
            return;
        }
        LIMA_REQUIRE(trains(c), LIMA_ERR_STATE, "CUDA backend: set_comm without a trainer");
        LIMA_REQUIRE(!c.dp, LIMA_ERR_STATE, "CUDA backend: the trainer already has a communicator");
        LIMA_REQUIRE(!c.off, LIMA_ERR_UNSUPPORTED, "CUDA backend: offload is for one device; data parallel ranks shard the"
                     " optimiser state with ZeRO instead");
        LIMA_REQUIRE(stage >= 0 && stage <= 2, LIMA_ERR_UNSUPPORTED, "CUDA backend: set_comm takes ZeRO stage 0, 1 or 2, got ", stage,
                     " (stage 3 is set up with z3_begin)");
        NcclComm *dp = static_cast<NcclComm *>(comm);
        LIMA_REQUIRE(dp && dp->device == c.device, LIMA_ERR_INVALID_ARGUMENT, "CUDA backend: the NCCL communicator is on device ",
                     dp ? dp->device : -1, ", the model on device ", c.device);
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        DevAdapter *ad = c.ad.get();
        const int64_t total = ad ? ad->total : c.total;
        const int64_t W = dp->world;
        c.sh_len = (total + W - 1) / W;
        c.sh_begin = std::min<int64_t>(total, dp->rank * c.sh_len);
        c.sh_end = std::min<int64_t>(total, c.sh_begin + c.sh_len);
        if (stage >= 1) {
            const size_t padded = size_t(c.sh_len * W);
            if (ad) {  // an adapter is small: its fp32 copy stays whole on every rank
                grow(ad->a32, padded, total, "fp32 adapter (padded for ZeRO)");
            } else {  // the fp32 master: this rank's shard only; p32 keeps the packed tensors read in fp32
                DevBuf<float> shard;
                shard.alloc(size_t(c.sh_len), "fp32 master weights (ZeRO shard)");
                LIMA_CUDA_CHECK(cudaMemset(shard.p, 0, size_t(c.sh_len) * 4));
                if (c.sh_end > c.sh_begin)
                    LIMA_CUDA_CHECK(cudaMemcpy(shard.p, c.p32.p + c.sh_begin, size_t(c.sh_end - c.sh_begin) * 4, cudaMemcpyDeviceToDevice));
                pack_f32(c);
                c.shard32 = std::move(shard);
                c.f32_pieces.clear();
                for (const auto &t : c.f32_at)
                    for (int64_t r = 0; r < W; ++r) {
                        const int64_t b = std::max(t[0], r * c.sh_len), e = std::min(t[0] + t[1], (r + 1) * c.sh_len);
                        if (b < e) c.f32_pieces.push_back({int(r), b - r * c.sh_len, t[2] + (b - t[0]), e - b});
                    }
            }
            grow(ad ? ad->a16 : c.p16, padded, total, "bf16 weights (padded for ZeRO)");
            if (stage == 2) grow(ad ? ad->grads : c.grads, padded, total, "gradients (padded for ZeRO)");
            const int64_t n = c.sh_end - c.sh_begin;
            for (DevBuf<float> *m : {ad ? &ad->m1 : &c.m1, ad ? &ad->m2 : &c.m2}) {  // the moments of the shard only
                DevBuf<float> mine;
                mine.alloc(size_t(n), "AdamW moments (ZeRO shard)");
                if (n > 0) LIMA_CUDA_CHECK(cudaMemcpy(mine.p, m->p + c.sh_begin, size_t(n) * 4, cudaMemcpyDeviceToDevice));
                *m = std::move(mine);
            }
            c.sh_chunks.clear();
            for (const AdamChunk &ch : ad ? ad->chunks : c.chunks) {
                const int64_t b = std::max<int64_t>(ch.start, c.sh_begin), e = std::min<int64_t>(ch.start + ch.len, c.sh_end);
                if (b < e) c.sh_chunks.push_back({b, int32_t(e - b), ch.decay});
            }
            c.sh_dchunks.alloc(c.sh_chunks.size(), "optimiser table (ZeRO shard)");
            if (!c.sh_chunks.empty())
                LIMA_CUDA_CHECK(cudaMemcpy(c.sh_dchunks.p, c.sh_chunks.data(), c.sh_chunks.size() * sizeof(AdamChunk),
                                           cudaMemcpyHostToDevice));
        }
        c.dp = dp;
        c.zero = stage;
    });
}

// ZeRO-3: this rank has no micro-batch in this round but takes part in the others' collectives: the
// same gathers and reduce-scatters (of a zero gradient) a forward_backward makes, in the same order.
LIMA_EXPORT int lima_cuda_plugin_z3_skip(void *ctx, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        if (!c.z3) return;
        const int L = c.cfg.num_layers;
        std::fill(c.z3->g_of.begin(), c.z3->g_of.end(), nullptr);
        for (int u = 0; u <= L + 1; ++u) wait_unit(c, u);  // forward()
        acquire(c, c.head_unit());                         // forward_backward, before the classifier
        acquire(c, L + 1);                                 // backward()
        release(c, L + 1);
        for (int l = L - 1; l >= 0; --l) {
            acquire(c, 1 + l);
            release(c, 1 + l);
        }
        acquire(c, 0);
        release(c, 0);
        c.dp->wait_stream(c.st, "ZeRO-3 collectives of a skipped micro-batch");
    });
}

LIMA_EXPORT int lima_cuda_plugin_logprobs(void *ctx, const lima_cuda_batch *b, float *out, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        const long N = long(b->B) * b->T;
        const int nt = upload(c, *b);
        forward(c, N, nt, nullptr, 0.0f);
        classifier_logprobs(c, *b, out);
    });
}

LIMA_EXPORT int lima_cuda_plugin_plan(void *ctx, int64_t tokens, lima_memory_plan *out, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_REQUIRE(tokens > 0, LIMA_ERR_INVALID_ARGUMENT, "memory plan: tokens per micro-batch must be > 0");
        size_t fr = 0, tot = 0;
        LIMA_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
        const Sizes sz = plan_sizes(c, long(tokens));
        reserve(c, long(tokens));
        if (out) {
            // what is allocated: ZeRO's padded copies, and shards of the moments (and master) where sharded
            out->weights = int64_t(c.p16.n) * 2 + int64_t(c.p32.n + c.shard32.n) * 4;
            if (c.z3) {  // the pieces (fp32 + bf16) and the gathered units
                const DevZero3 &z = *c.z3;
                out->weights += int64_t(z.p32.n) * 4 + int64_t(z.p16.n + z.wl[0].n + z.wl[1].n + z.wemb.n + z.whead.n) * 2;
            }
            out->optimizer = c.ad ? (c.ad->train ? int64_t(c.ad->grads.n + c.ad->m1.n + c.ad->m2.n) * 4 : 0)
                             : c.off ? int64_t(c.off->stage[0].n * 2 + c.off->stage_emb.n + c.off->stage_head.n) * 4
                             : c.z3 ? int64_t(c.z3->g.n + c.z3->m1.n + c.z3->m2.n + c.z3->gl[0].n + c.z3->gl[1].n + c.z3->gemb.n + c.z3->ghead.n) * 4
                             : c.train ? int64_t(c.grads.n + c.m1.n + c.m2.n) * 4 : 0;
            if (c.ad) out->weights += c.ad->total * 6;
            for (const DevNf4 &t : c.nf4)
                out->weights += int64_t(t.packed.n + t.qabsmax.n) + int64_t(t.absmax.n + t.absmax2.n) * 4;
            out->weights += int64_t(c.nf4_w.n) * 2;
            out->host = c.off ? c.total * 12 + int64_t(c.off->up[0].v.size()) * 4 : 0;  // besides the model's own fp32 copy
            out->activations = sz.activations;
            out->workspace = sz.workspace;
            out->total = out->weights + out->optimizer + out->activations + out->workspace;
            out->device_free = int64_t(fr);
            out->device_total = int64_t(tot);
            out->peak = mem_counter().peak;
        }
    });
}

LIMA_EXPORT int lima_cuda_plugin_adapter(void *ctx, const lima_cuda_adapter_desc *a, const float *params, char *err,
                                         int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        if (!a) {  // removed: liblima puts the base's own token rows back (its host copy, pushed after)
            c.ad.reset();
            return;
        }
        LIMA_REQUIRE(!c.off, LIMA_ERR_UNSUPPORTED, "CUDA backend: a model trained with offload takes no adapter; load it again");
        LIMA_REQUIRE(a->r > 0 && a->total > 0 && a->n_tokens >= 0, LIMA_ERR_INVALID_ARGUMENT, "CUDA backend: bad adapter description");
        auto ad = std::make_unique<DevAdapter>();
        ad->r = a->r;
        ad->scale = a->scale;
        ad->p = a->dropout;
        ad->total = a->total;
        ad->emb_rows = a->emb_rows;
        ad->head_rows = a->head_rows;
        ad->ab.assign(a->ab, a->ab + size_t(c.cfg.num_layers) * 7 * 2);
        ad->n_tokens = a->n_tokens;
        if (a->n_tokens > 0) {
            ad->tokens.alloc(size_t(a->n_tokens), "adapter token ids");
            LIMA_CUDA_CHECK(cudaMemcpy(ad->tokens.p, a->tokens, size_t(a->n_tokens) * 4, cudaMemcpyHostToDevice));
        }
        ad->chunks = adam_chunks(a->num_tensors, a->t_offset, a->t_numel, a->t_decay);
        ad->a32.alloc(size_t(a->total), "adapter weights");
        ad->a16.alloc(size_t(a->total), "adapter weights (bf16)");
        LIMA_CUDA_CHECK(cudaMemcpy(ad->a32.p, params, size_t(a->total) * 4, cudaMemcpyHostToDevice));
        cast_f32_bf16(ad->a16.p, ad->a32.p, long(a->total), c.st);
        c.ad = std::move(ad);
        sync_token_rows(c);
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
    });
}

LIMA_EXPORT int lima_cuda_plugin_adapter_params(void *ctx, float *host, int32_t to_device, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_REQUIRE(c.ad, LIMA_ERR_STATE, "CUDA backend: the model has no adapter");
        DevAdapter &a = *c.ad;
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        if (to_device) {
            LIMA_CUDA_CHECK(cudaMemcpy(a.a32.p, host, size_t(a.total) * 4, cudaMemcpyHostToDevice));
            cast_f32_bf16(a.a16.p, a.a32.p, long(a.total), c.st);
            sync_token_rows(c);
            LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        } else {
            LIMA_CUDA_CHECK(cudaMemcpy(host, a.a32.p, size_t(a.total) * 4, cudaMemcpyDeviceToHost));
        }
    });
}

LIMA_EXPORT int lima_cuda_plugin_contract(void) { return LIMA_CUDA_PLUGIN_CONTRACT; }

LIMA_EXPORT int lima_cuda_plugin_versions(char *out, int32_t cap) {
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    // NCCL is opened, not linked (nccl.cu): single-GPU training does not need it.
    const int v = nccl_version();
    const std::string nccl = v > 0 ? lima::cat(v / 10000, ".", (v / 100) % 100, ".", v % 100) : std::string("not found");
    const std::string s = lima::cat("cuda runtime ", runtime / 1000, ".", (runtime % 1000) / 10, ", driver ", driver / 1000, ".",
                                    (driver % 1000) / 10, ", cublasLt ", Gemm::version(), ", nccl ", nccl);
    std::snprintf(out, size_t(cap), "%s", s.c_str());
    return LIMA_OK;
}
