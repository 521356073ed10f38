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

// Per-layer saved activations (one set per layer, or one shared set with recomputation).
struct LayerActs {
    DevBuf<bf16> xn1, qkv, att, xn2, gu, h;
    DevBuf<float> rstd1, lse, xmid, rstd2;
};

struct Ctx {
    ModelConfig cfg;
    int device = 0;
    bool recompute = false;
    int64_t total = 0, emb = 0, norm = 0, lm_head = 0;
    std::vector<lima_cuda_layer> layers;
    std::vector<AdamChunk> chunks;
    cudaStream_t st = nullptr;
    Gemm *gemm = nullptr;

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
        delete gemm;
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

}  // namespace lima::cuda
