// Decoding on the device, the CUDA side of lima_generator (src/generate.cpp is the CPU reference):
// a bf16 KV cache (kv_cache.cu), prefill of whole prompts and one-token decode steps through the
// backend's one layer body (layer_forward), and LIMA's sampling rule run where the logits are
// (sampling.cu), so only the chosen token ids come back to the host.
//
// A decode step has the same shape every time (one token per row), so after one eager step it is
// captured once as a CUDA graph and replayed: the host loop is then a 2-byte-per-row upload, one
// graph launch and a 4-byte-per-row download. LIMA_CUDA_GRAPHS=0 turns the graphs off.
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "context.cuh"
#include "sampling.cuh"

namespace lima::cuda {

namespace {

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
    SortSpace sort_space() { return {keys.p, skeys.p, ids.p, sids.p, offsets.p, sort_tmp.p, sort_tmp_bytes}; }
};

// The generator's device buffers from one table: v(buffer, elements, what) for each; gen_create
// plans (sums) and allocates from it. The sort's temporary bytes are known only after the table.
template <typename Visit>
void gen_table(Gen &g, Visit &&v) {
    const ModelConfig &cfg = g.c->cfg;
    const int64_t L = cfg.num_layers, d = cfg.hidden_size, F = cfg.intermediate_size, V = cfg.vocab_size,
                  kvd = cfg.kv_dim(), Hq = cfg.num_heads, ld = g.c->ldqkv(), qd = cfg.q_dim(), hd = cfg.hd(), cap = g.cap,
                  R = g.max_rows;
    v(g.kc, L * R * g.max_len * kvd, "KV cache");
    v(g.vc, L * R * g.max_len * kvd, "KV cache");
    v(g.x, cap * d, "decoding");
    v(g.rstd, cap, "decoding");
    v(g.lse, cap * Hq, "decoding");
    v(g.xn, cap * d, "decoding");
    v(g.qkv, cap * ld, "decoding");
    v(g.att, cap * qd, "decoding");
    v(g.y, cap * d, "decoding");
    v(g.gu, cap * 2 * F, "decoding");
    v(g.h, cap * F, "decoding");
    v(g.last, R * d, "decoding");
    v(g.logits, R * V, "logits");
    v(g.fresh, R * V, "logits");
    v(g.part_o, R * Hq * g.spans * hd, "decoding");
    v(g.part_ml, R * Hq * g.spans * 2, "decoding");
    v(g.tok, cap, "decoding");
    v(g.pos, cap, "decoding");
    v(g.row, cap, "decoding");
    v(g.len, R, "decoding");
    v(g.next, R, "decoding");
    v(g.last_idx, R, "decoding");
    v(g.tiles, cap / 64 + R + 1, "decoding");
    v(g.flags, R * V, "sampling");
    v(g.active, R, "sampling");
    v(g.seeds, R, "sampling");
    v(g.params, 1, "sampling");
    v(g.keys, R * V, "sampling");
    v(g.skeys, R * V, "sampling");
    v(g.ids, R * V, "sampling");
    v(g.sids, R * V, "sampling");
    v(g.offsets, R + 1, "sampling");
}

// Forward of N new tokens (g.tok, g.pos) through the model's layers, extending the cache. Prefill:
// whole prompts (g.row per token, attention tiles); else one token per row for N rows. Leaves the
// final normed states in g.xn.
void run_layers(Gen &g, long N, bool prefill, int ntiles) {
    Ctx &c = *g.c;
    const int d = c.d();
    const LayerBufs buf{g.xn.p, g.qkv.p, g.att.p, g.xn.p, g.gu.p, g.h.p, g.rstd.p, g.lse.p, g.rstd.p};
    LayerAttention att;
    att.tiles = prefill ? g.tiles.p : nullptr;
    att.num_tiles = ntiles;
    att.row = prefill ? g.row.p : nullptr;
    att.active = prefill ? nullptr : g.active.p;
    att.max_len = g.max_len;
    att.part_o = g.part_o.p;
    att.part_ml = g.part_ml.p;
    encoder_forward(g.x.p, c.f32(c.emb), g.tok.p, N, d, c.st);
    for (int l = 0; l < c.cfg.num_layers; ++l) {
        att.k_cache = g.kc.p + size_t(l) * g.layer_stride();
        att.v_cache = g.vc.p + size_t(l) * g.layer_stride();
        layer_forward(c, l, buf, g.x.p, g.x.p, g.x.p, g.y.p, g.pos.p, N, att, nullptr, 0.0f);
    }
    rmsnorm_forward(g.xn.p, g.rstd.p, g.x.p, c.f32(c.norm), N, d, c.cfg.rms_norm_eps, c.st);
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
    const DecodeRows rows{g.next.p, g.tok.p, g.pos.p, g.len.p, g.flags.p, g.active.p};
    if (greedy)
        sample_greedy(rows, g.logits.p, g.params.p, R, V, c.st);
    else
        sample_nucleus(rows, g.logits.p, g.seeds.p, g.params.p, g.sort_space(), R, V, c.st);
    run_layers(g, R, false, 0);
    lm_head(g, g.xn.p, R);
    copy_active_rows(g.logits.p, g.fresh.p, g.active.p, R, V, c.st);
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
    g->spans = decode_spans(max_len);
    const char *env = std::getenv("LIMA_CUDA_GRAPHS");
    LIMA_REQUIRE(!env || !*env || std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0, LIMA_ERR_INVALID_ARGUMENT,
                 "LIMA_CUDA_GRAPHS is '", env ? env : "", "': it must be 1 (replay decode steps as CUDA graphs) or 0");
    g->graphs = !(env && std::strcmp(env, "0") == 0);
    int64_t cache = 0, scratch = 0;
    gen_table(*g, [&](auto &buf, int64_t count, const char *what) {
        (std::strcmp(what, "KV cache") == 0 ? cache : scratch) += count * int64_t(sizeof(*buf.p));
    });
    size_t fr = 0, tot = 0;
    LIMA_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    LIMA_REQUIRE(cache + scratch < int64_t(fr), LIMA_ERR_OUT_OF_MEMORY, "CUDA generator of ", max_rows, " rows x ", max_len,
                 " tokens: the KV cache needs ", cache / 1073741824.0, " GiB and decoding buffers ", scratch / 1073741824.0,
                 " GiB, but only ", fr / 1073741824.0, " GiB of ", tot / 1073741824.0,
                 " GiB are free; use fewer rows or a shorter max_len");
    ensure_rope(c, max_len);
    gen_table(*g, [](auto &buf, int64_t count, const char *what) { buf.alloc(size_t(count), what); });
    const int64_t V = cfg.vocab_size, R = max_rows;
    std::vector<int32_t> offsets(size_t(R + 1));
    for (int64_t r = 0; r <= R; ++r) offsets[size_t(r)] = int32_t(r * V);
    LIMA_CUDA_CHECK(cudaMemcpy(g->offsets.p, offsets.data(), offsets.size() * 4, cudaMemcpyHostToDevice));
    g->sort_tmp_bytes = nucleus_sort_bytes(g->sort_space(), int(R), int(V), c.st);
    g->sort_tmp.alloc(std::max<size_t>(g->sort_tmp_bytes, 1), "sampling");
    LIMA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&g->host_params), sizeof(StepParams)));
    LIMA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&g->host_active), size_t(R)));
    LIMA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void **>(&g->host_next), size_t(R) * 4));
    return g.release();
}

void gen_start(Gen &g, int rows, const int32_t *tokens, const int32_t *lengths, const uint64_t *seeds) {
    Ctx &c = *g.c;
    settle(c);  // offload: the last step's weights are all on the device
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
        mark_prompt_tokens(g.flags.p, g.tok.p, g.row.p, n, V, c.st);
        run_layers(g, n, true, int(tiles.size()));
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
    settle(c);
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
        LIMA_REQUIRE(!c.z3 && (c.p16.p || !c.nf4.empty()), LIMA_ERR_STATE, "CUDA backend: decoding needs the model's whole weights on"
                     " the device; they are sharded by ZeRO-3 (or its trainer is gone): gather them (lima_trainer_gather_params) and"
                     " load the checkpoint");
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
