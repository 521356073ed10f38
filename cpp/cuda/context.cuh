// The CUDA backend's model context, shared by training (backend.cu) and decoding (generate.cu):
// weights on one device (fp32 master + bf16 copy), the stream, the cuBLASLt products, the rotary
// table, and training's activations and optimiser state.
#pragma once
#include <array>
#include <memory>
#include <vector>

#include "../src/config.hpp"
#include "../src/cuda_plugin.hpp"
#include "../src/offload.hpp"
#include "gemm.cuh"
#include "kernels.cuh"
#include "nccl.cuh"

namespace lima::cuda {

// One layer's buffers for N tokens: a LayerActs set in training, the generator's scratch in decoding.
struct LayerBufs {
    bf16 *xn1, *qkv, *att, *xn2, *gu, *h;  // (N, d|ld|qd|d|2F|F)
    float *rstd1, *lse, *rstd2;            // (N), (N, Hq), (N)
};

// Per-layer saved activations (one set per layer, or one shared set with recomputation).
struct LayerActs {
    DevBuf<bf16> xn1, qkv, att, xn2, gu, h;
    DevBuf<float> rstd1, lse, xmid, rstd2;
    LayerBufs bufs() { return {xn1.p, qkv.p, att.p, xn2.p, gu.p, h.p, rstd1.p, lse.p, rstd2.p}; }
};

// How a layer's attention runs, as on the CPU (model.hpp LayerAttention): packed causal attention
// over tiles (training rows, prefill of whole prompts); with a cache, the layer's keys and values
// are stored at (row[t], pos[t]) (row null: token t is row t; rows with active 0 skipped); without
// tiles, one decode step reads the cache (part_o/part_ml its scratch).
struct LayerAttention {
    const AttnTile *tiles = nullptr;
    int num_tiles = 0;
    bf16 *k_cache = nullptr, *v_cache = nullptr;  // this layer's (rows, max_len, kvd)
    const int32_t *row = nullptr;
    const uint8_t *active = nullptr;
    int max_len = 0;
    float *part_o = nullptr, *part_ml = nullptr;
};

// Host-pinned storage: a vector whose pages are registered with CUDA (cudaHostRegister), so copies
// from and to it are asynchronous DMA.
template <typename T>
struct PinnedVec {
    std::vector<T> v;
    bool registered = false;
    void assign(size_t n, T x) {
        unpin();
        v.assign(n, x);
        if (!v.empty()) {
            LIMA_CUDA_CHECK(cudaHostRegister(v.data(), v.size() * sizeof(T), cudaHostRegisterDefault));
            registered = true;
        }
    }
    void unpin() {
        if (registered) cudaHostUnregister(v.data());
        registered = false;
    }
    T *data() { return v.data(); }
    ~PinnedVec() { unpin(); }
};

// Full fine-tuning with the optimiser offloaded to the host (src/offload.hpp): the fp32 master
// weights (liblima's own host copy of the model, registered: no second copy), gradient and AdamW
// moments in pinned host memory and the step on the host; the device
// keeps the bf16 weights and the fp32 gradient of the units backward is working on.
//  - backward: each unit's gradient is accumulated in a device staging buffer, loaded first with
//    the host's gradient so far (or zeroed at the step's first micro-batch), and copied back to the
//    host on the copy stream as soon as the unit is done (layers alternate between two buffers;
//    the embedding and the head have their own, as they are held across the pass);
//  - step: the host norm, then each unit updated on the host worker in forward order, converted to
//    bf16 and uploaded on the copy stream; `ready[u]` marks it on the device, and the next forward
//    waits for each unit just before it uses it.
struct Offload {
    float *master = nullptr;  // liblima's host fp32 copy of the model itself, registered (pinned) while this lives
    PinnedVec<float> grads, m1, m2;
    PinnedVec<uint16_t> up[2];  // bf16 upload staging
    DevBuf<float> stage[2], stage_emb, stage_head;
    cudaStream_t copy = nullptr;
    cudaEvent_t stage_free[2] = {}, up_done[2] = {}, grads_home = nullptr, done = nullptr;
    std::vector<cudaEvent_t> ready;
    std::vector<float *> stage_of;  // per unit: its staging buffer while backward holds it
    std::vector<int> slot_of;
    int next_slot = 0, next_up = 0;
    bool host_zero = true, home_waited = false;
    std::unique_ptr<HostOffload> host;  // last: its worker stops before the buffers go
    ~Offload();
};

// A LoRA adapter over the frozen model (the CPU's adapter.hpp, PEFT's layout): lora_A (r, in) and
// lora_B (out, r) of each targeted projection and the trainable token rows, fp32 master with a bf16
// copy for the products; its gradient and AdamW moments when trained. Forward adds
// scale * (dropout(x) A^T) B^T to each targeted projection's output; backward recomputes
// dropout(x) A^T rather than keeping it. The model's rows at the trainable tokens follow the
// adapter's (as on the CPU), so the classifier and the generator need no special case.
struct DevAdapter {
    int r = 0;
    float scale = 0.0f, p = 0.0f;
    int64_t total = 0, emb_rows = -1, head_rows = -1;
    std::vector<int64_t> ab;  // ((layer * 7 + target) * 2 + {0: A, 1: B}): offsets, -1 untargeted
    int n_tokens = 0;
    DevBuf<int32_t> tokens;
    DevBuf<float> a32, grads, m1, m2;
    DevBuf<bf16> a16;
    std::vector<AdamChunk> chunks;
    DevBuf<AdamChunk> dchunks;
    bool train = false;
    // scratch for up to `cap` tokens: the dropped input (N, max_in), a product (N, max_out), xa and dxa (N, r)
    DevBuf<bf16> x, t, xa, dxa;
    long cap = 0;
    int64_t off(int layer, int target, int which) const { return ab[size_t((layer * 7 + target) * 2 + which)]; }
};

// A projection stored in NF4 on the device (QLoRA's frozen base; lima_cuda_nf4).
struct DevNf4 {
    int64_t n = 0;
    DevBuf<uint8_t> packed, qabsmax;
    DevBuf<float> absmax, absmax2;  // absmax empty when double-quantised
    float offset = 0.0f;
};

// A layer's projections as the products read them (bf16): the model's, or one NF4 layer dequantised.
struct LayerW {
    const bf16 *qkv, *wo, *gu, *wd;
};

// ZeRO-3 on CUDA ranks (lima_cuda_plugin_z3_begin): the layout's units (the embedding, each layer,
// the final norm with the LM head), each padded to a multiple of the world size (block elements a
// rank); this rank keeps its piece of every unit (the fp32 master, its bf16 copy, the gradient and
// both moments, concatenated in unit order: piece u at local[u], valid[u] elements) and no whole
// bf16 weights. Layer units are all-gathered in bf16 into two alternating buffers just before they
// run, the next one prefetched on the communicator's stream while this one computes; the LM head's
// unit (the embedding's when tied) into its own. Backward accumulates each unit's gradient in a
// staging buffer (two alternating for layers, one each for the embedding and the head) that is
// reduce-scattered and added into the piece's gradient when the unit is done. The tensors the
// kernels read in fp32 (embedding, norm gains, biases) stay whole on every rank (the packed p32),
// refreshed after each step from their owners' pieces.
struct DevZero3 {
    int world = 1, rank = 0;
    std::vector<int64_t> block, local, valid;  // per unit
    int64_t length = 0;                        // sum of valid: the pieces' elements
    DevBuf<float> p32, g, m1, m2;              // the pieces (with a block of slack: sends read whole blocks)
    DevBuf<bf16> p16;
    std::vector<AdamChunk> chunks;             // AdamW work items over the piece layout
    DevBuf<AdamChunk> dchunks;
    DevBuf<bf16> wl[2], wemb, whead;           // gathered units: layers alternate by parity; the embedding; the head
    DevBuf<float> gl[2], gemb, ghead;          // gradient staging, as the gathered weights
    std::vector<bf16 *> w_of;                  // per unit: its gathered weights while they are current, else null
    std::vector<float *> g_of;                 // per unit: its staging buffer while backward holds it, else null
    std::vector<cudaEvent_t> gathered;         // per unit: its all-gather done (comm stream)
    cudaEvent_t gfree[4] = {};                 // a staging buffer free again (layers 0/1, the embedding, the head)
    std::vector<std::vector<int64_t>> local_of;  // per rank, per unit: where that rank's piece starts in its arrays
    int loaded = 0;                            // units filled by z3_unit (all: training may start)
    ~DevZero3();
};

struct Ctx {
    ModelConfig cfg;
    int device = 0;
    bool recompute = false;
    int64_t total = 0, emb = 0, norm = 0, lm_head = 0;
    std::vector<lima_cuda_layer> layers;
    std::vector<AdamChunk> chunks;
    std::vector<OffloadTensor> tensors;  // (offset, numel, decay) of every tensor
    cudaStream_t st = nullptr;
    std::unique_ptr<Gemm> gemm;

    // fp32 weights: with a plain trainer p32 is the whole fp32 master; otherwise it holds only the
    // tensors the kernels read in fp32 (the embedding and the norm gains), packed (f32_at).
    DevBuf<float> p32, grads, m1, m2;
    DevBuf<bf16> p16;
    bool train = false, p32_whole = false;
    std::vector<std::array<int64_t, 3>> f32_at;  // packed: (layout offset, numel, offset in p32), by offset
    // The units of the layout (the embedding, each layer, the final norm with the LM head), as ZeRO-3
    // and offload cut it.
    std::vector<std::pair<int64_t, int64_t>> units;
    std::unique_ptr<Offload> off;
    std::unique_ptr<DevAdapter> ad;
    // Data parallelism (lima_cuda_plugin_set_comm): gradients summed over the ranks of dp; with zero
    // >= 1 the AdamW moments (m1, m2) hold this rank's shard [sh_begin, sh_end) of the trained flat
    // buffer only, which is padded to a multiple of the world size (sh_len elements a rank) so that
    // the reduce-scatter of the gradient (stage 2) and the all-gather of the updated weights run in
    // place; sh_chunks are the AdamW work items of the shard.
    // Full fine-tuning at zero >= 1 also keeps only the shard of the fp32 master (shard32, indexed
    // from sh_begin); p32 then holds the packed tensors the kernels read in fp32 (as with no trainer),
    // refreshed after each step from their owners' shards (f32_pieces).
    NcclComm *dp = nullptr;
    int zero = 0;
    int64_t sh_begin = 0, sh_end = 0, sh_len = 0;
    std::vector<AdamChunk> sh_chunks;
    DevBuf<AdamChunk> sh_dchunks;
    DevBuf<float> shard32;
    std::vector<NcclComm::Piece> f32_pieces;  // (owner, offset in its shard or pieces, offset in packed p32, numel)
    std::unique_ptr<DevZero3> z3;
    // QLoRA: every layer's projections in NF4 ((layer * 7 + target)); empty when they are in p16.
    // nf4_w holds one layer's, dequantised: [q|k|v] (ld, d), o (d, qd), [gate|up] (2F, d), down (d, F).
    std::vector<DevNf4> nf4;
    DevBuf<float> nf4_code;
    DevBuf<bf16> nf4_w;
    int nf4_layer = -1;
    const float *f32(int64_t offset) const;
    // Where backward accumulates the gradient of the tensor at `offset`: the whole device gradient,
    // or (offload) the staging buffer of its unit.
    float *grad(int64_t offset) const;
    int head_unit() const { return cfg.tie_word_embeddings ? 0 : cfg.num_layers + 1; }

    // activations for up to cap tokens
    long cap = 0;
    DevBuf<float> resid, rstdf, dres, Dsum;
    std::vector<LayerActs> acts;
    DevBuf<bf16> xf, y, dy, dh, dgu, dxn, datt, dqkv, dxf;
    // classifier chunk
    long chunk = 0;
    DevBuf<bf16> cx, cdl, cdx;
    DevBuf<float> clogits, clp;
    // batch tables
    DevBuf<int32_t> tokens, pos, labels;
    DevBuf<int64_t> rows;
    DevBuf<AttnTile> tiles;
    DevBuf<AdamChunk> dchunks;
    DevBuf<double> dsum;
    DevBuf<float> dscale;
    DevBuf<float> rope_cos, rope_sin;
    int rope_positions = 0;

    int d() const { return cfg.hidden_size; }
    int F() const { return cfg.intermediate_size; }
    int ldqkv() const { return cfg.q_dim() + 2 * cfg.kv_dim(); }
    ~Ctx() {
        z3.reset();
        off.reset();
        ad.reset();
        gemm.reset();
        if (st) cudaStreamDestroy(st);
    }
};

inline void set_err(char *err, int32_t cap, const char *msg) {
    if (err && cap > 0) std::snprintf(err, size_t(cap), "%s", msg);
}

// Runs f, turning its failure into a status and a message in err, as the plugin contract asks.
template <typename F>
int guard(char *err, int32_t cap, F &&f) {
    try {
        f();
        return LIMA_OK;
    } catch (const Error &e) {
        set_err(err, cap, e.what());
        return e.code;
    } catch (const std::bad_alloc &) {
        set_err(err, cap, "out of host memory");
        return LIMA_ERR_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        set_err(err, cap, e.what());
        return LIMA_ERR_INTERNAL;
    }
}

// Layer l's projections for the products: p16's, or (NF4) dequantised into nf4_w unless it holds them.
LayerW layer_weights(Ctx &c, int l);

// ZeRO-3 (zero3.cu): unit u's gathered bf16 weights made current for the compute stream (all-gathered
// now unless still resident), and `next` (-1: none) prefetched; its gradient staging buffer acquired
// (zeroed) and released (reduce-scattered and added into this rank's piece); the gathered weights of a
// unit (an error when not current).
bool z3_needs_weights(const Ctx &c, int u);
void z3_need(Ctx &c, int u, int next);
void z3_prefetch(Ctx &c, int u);
void z3_acquire(Ctx &c, int u, int next);
void z3_release(Ctx &c, int u);
const bf16 *z3_weights(const Ctx &c, int u);
// The packed fp32 table (backend.cu): fills c.f32_at, returns the packed length; pack_f32 makes p32
// hold just those tensors (copied from the whole master when it holds it).
int64_t f32_table(Ctx &c);
void pack_f32(Ctx &c);
// The unit holding flat offset `offset`.
int unit_of(const Ctx &c, int64_t offset);

// Offload: every pending host update published and every gradient copy done (a no-op otherwise).
void settle(Ctx &c);
// Offload: the next forward may use unit u once its update of the last step is on the device.
void wait_unit(Ctx &c, int u);

// Makes the rotary table cover `positions` positions (at least).
void ensure_rope(Ctx &c, int positions);

// Training buffers for micro-batches of n tokens, from one table: reserve() allocates them (after
// checking the plan against free memory), planned() is what that table sums to, held() what is
// allocated now.
void reserve(Ctx &c, long n);
int64_t training_buffers_planned(Ctx &c, long n);
int64_t training_buffers_held(Ctx &c);

// The LLaMA layer of the CUDA backend, written once for training, eval, prefill and decode (the
// CPU's layer_forward with q/k/v and gate/up fused): x_mid = x + dropout(o_proj(attention)),
// x_out = x_mid + dropout(mlp). x_mid and x_out may alias x; x_out null stops after the MLP's
// SwiGLU (recomputation keeps what backward needs). y (N, d) is scratch. key null: no dropout.
void layer_forward(Ctx &c, int l, const LayerBufs &a, const float *x, float *x_mid, float *x_out, bf16 *y, const int32_t *pos,
                   long N, const LayerAttention &att, const DropoutKey *key, float p_max);

}  // namespace lima::cuda
