// The CUDA backend's model context, shared by training (backend.cu) and decoding (generate.cu):
// weights on one device (fp32 master + bf16 copy), the stream, the cuBLASLt products, the rotary
// table, and training's activations and optimiser state.
#pragma once
#include <memory>
#include <vector>

#include "../src/config.hpp"
#include "../src/cuda_plugin.hpp"
#include "gemm.cuh"
#include "kernels.cuh"

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

struct Ctx {
    ModelConfig cfg;
    int device = 0;
    bool recompute = false;
    int64_t total = 0, emb = 0, norm = 0, lm_head = 0;
    std::vector<lima_cuda_layer> layers;
    std::vector<AdamChunk> chunks;
    cudaStream_t st = nullptr;
    std::unique_ptr<Gemm> gemm;

    DevBuf<float> p32, grads, m1, m2;
    DevBuf<bf16> p16;
    bool train = false;

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
