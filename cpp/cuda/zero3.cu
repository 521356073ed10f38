// ZeRO-3 on CUDA ranks (context.cuh's DevZero3): the pieces, the per-unit all-gathers with the next
// unit prefetched on the communicator's stream, the per-unit gradient reduce-scatters, and the
// plugin functions liblima's trainer calls to set it up (z3_begin, then z3_unit for each unit of
// rank 0's weights) and to gather a unit back to the host (z3_gather, collective).
#include <algorithm>

#include "context.cuh"
#include "nccl.cuh"

#define LIMA_EXPORT extern "C" __attribute__((visibility("default")))

namespace lima::cuda {

DevZero3::~DevZero3() {
    for (cudaEvent_t e : gathered)
        if (e) cudaEventDestroy(e);
    for (cudaEvent_t e : gfree)
        if (e) cudaEventDestroy(e);
}

int unit_of(const Ctx &c, int64_t offset) {
    for (size_t u = 0; u < c.units.size(); ++u)
        if (offset >= c.units[u].first && offset < c.units[u].second) return int(u);
    fail(LIMA_ERR_INTERNAL, "CUDA backend: offset ", offset, " is in no unit");
}

namespace {

bool is_layer(const Ctx &c, int u) { return u >= 1 && u <= c.cfg.num_layers; }

// The buffer unit u is gathered into: layers alternate by parity (neighbours never share one).
bf16 *weight_buffer(Ctx &c, int u) {
    DevZero3 &z = *c.z3;
    if (is_layer(c, u)) return z.wl[(u - 1) % 2].p;
    return u == 0 ? z.wemb.p : z.whead.p;
}

// Unit u's gradient staging slot (its gfree event): layers alternate by parity, then the embedding
// and the head; and the slot's buffer.
int grad_slot(const Ctx &c, int u) { return is_layer(c, u) ? (u - 1) % 2 : u == 0 ? 2 : 3; }

float *grad_buffer(Ctx &c, int slot) {
    DevZero3 &z = *c.z3;
    return slot < 2 ? z.gl[slot].p : slot == 2 ? z.gemb.p : z.ghead.p;
}

// The length of rank q's piece of a unit of n elements cut in blocks of `block`.
int64_t piece_length(int64_t n, int64_t q, int64_t block) { return std::clamp<int64_t>(n - q * block, 0, block); }

// Enqueues unit u's all-gather on the comm stream after the compute stream's work so far (so the
// buffer's last unit is done with), not waited for: gathered[u] marks it.
void gather(Ctx &c, int u) {
    DevZero3 &z = *c.z3;
    bf16 *buf = weight_buffer(c, u);
    LIMA_REQUIRE(buf, LIMA_ERR_INTERNAL, "ZeRO-3: unit ", u, " has no gather buffer");
    for (bf16 *&w : z.w_of)
        if (w == buf) w = nullptr;  // the buffer's last unit leaves it
    c.dp->allgather_async(z.p16.p + z.local[size_t(u)], buf, z.block[size_t(u)], ncclBfloat16, c.st,
                          "ZeRO-3 all-gather of a unit's weights");
    LIMA_CUDA_CHECK(cudaEventRecord(z.gathered[size_t(u)], c.dp->st));
    z.w_of[size_t(u)] = buf;
}

}  // namespace

bool z3_needs_weights(const Ctx &c, int u) { return is_layer(c, u) || u == c.head_unit(); }

void z3_prefetch(Ctx &c, int u) {
    if (!c.z3->w_of[size_t(u)]) gather(c, u);
}

void z3_need(Ctx &c, int u, int next) {
    z3_prefetch(c, u);
    LIMA_CUDA_CHECK(cudaStreamWaitEvent(c.st, c.z3->gathered[size_t(u)], 0));
    if (next >= 0) z3_prefetch(c, next);  // runs while unit u computes
}

const bf16 *z3_weights(const Ctx &c, int u) {
    const bf16 *w = c.z3->w_of[size_t(u)];
    LIMA_REQUIRE(w, LIMA_ERR_INTERNAL, "ZeRO-3: unit ", u, " is used without being gathered");
    return w;
}

void z3_acquire(Ctx &c, int u, int next) {
    DevZero3 &z = *c.z3;
    if (z.g_of[size_t(u)]) return;
    if (z3_needs_weights(c, u)) z3_need(c, u, next);
    const int slot = grad_slot(c, u);
    float *buf = grad_buffer(c, slot);
    LIMA_CUDA_CHECK(cudaStreamWaitEvent(c.st, z.gfree[slot], 0));  // its last reduce-scatter has read it
    LIMA_CUDA_CHECK(cudaMemsetAsync(buf, 0, size_t(z.block[size_t(u)] * z.world) * 4, c.st));
    z.g_of[size_t(u)] = buf;
}

void z3_release(Ctx &c, int u) {
    DevZero3 &z = *c.z3;
    float *buf = z.g_of[size_t(u)];
    if (!buf) return;
    c.dp->reduce_scatter_async(buf, z.block[size_t(u)], c.st, "ZeRO-3 reduce-scatter of a unit's gradient");
    add_into(z.g.p + z.local[size_t(u)], buf + int64_t(z.rank) * z.block[size_t(u)], long(z.valid[size_t(u)]), c.dp->st);
    LIMA_CUDA_CHECK(cudaEventRecord(z.gfree[grad_slot(c, u)], c.dp->st));
    z.g_of[size_t(u)] = nullptr;
}

}  // namespace lima::cuda

using namespace lima;
using namespace lima::cuda;

// Makes a trainer ZeRO-3 over an NCCL communicator: the piece layout of every rank, this rank's
// pieces (zero until z3_unit fills them), the gather and staging buffers, the AdamW work items over
// the pieces and the owners of the packed fp32 tensors' pieces. Whatever whole state the device held
// (bf16 weights, an fp32 master, gradient, moments) is freed. Full fine-tuning only.
LIMA_EXPORT int lima_cuda_plugin_z3_begin(void *ctx, void *comm, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        NcclComm *dp = static_cast<NcclComm *>(comm);
        LIMA_REQUIRE(dp && dp->device == c.device, LIMA_ERR_INVALID_ARGUMENT, "CUDA backend: the NCCL communicator is on device ",
                     dp ? dp->device : -1, ", the model on device ", c.device);
        LIMA_REQUIRE(!c.dp, LIMA_ERR_STATE, "CUDA backend: the trainer already has a communicator");
        LIMA_REQUIRE(!c.ad && c.nf4.empty() && !c.off, LIMA_ERR_UNSUPPORTED, "CUDA backend: ZeRO stage 3 shards full fine-tuning"
                     " (no adapter, no NF4 base, no offload)");
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        auto z = std::make_unique<DevZero3>();
        const int W = dp->world, U = int(c.units.size()), L = c.cfg.num_layers;
        z->world = W;
        z->rank = dp->rank;
        z->local_of.assign(size_t(W), std::vector<int64_t>(size_t(U), 0));
        std::vector<int64_t> length(size_t(W), 0);
        int64_t max_block = 0, layer_block = 0;
        for (int u = 0; u < U; ++u) {
            const int64_t n = c.units[size_t(u)].second - c.units[size_t(u)].first, block = (n + W - 1) / W;
            z->block.push_back(block);
            max_block = std::max(max_block, block);
            if (u >= 1 && u <= L) layer_block = std::max(layer_block, block);
            for (int q = 0; q < W; ++q) {
                z->local_of[size_t(q)][size_t(u)] = length[size_t(q)];
                length[size_t(q)] += piece_length(n, q, block);
            }
            z->valid.push_back(piece_length(n, z->rank, block));
        }
        z->local = z->local_of[size_t(z->rank)];
        z->length = length[size_t(z->rank)];
        // the pieces, with a block of slack: an all-gather sends whole blocks, a short last piece included
        const size_t cap = size_t(z->length + max_block);
        for (DevBuf<float> *b : {&z->p32, &z->g, &z->m1, &z->m2}) {
            b->alloc(cap, "ZeRO-3 pieces");
            LIMA_CUDA_CHECK(cudaMemset(b->p, 0, cap * 4));
        }
        z->p16.alloc(cap, "ZeRO-3 pieces");
        LIMA_CUDA_CHECK(cudaMemset(z->p16.p, 0, cap * 2));
        // AdamW over the pieces: each tensor's part in each of this rank's pieces
        for (const OffloadTensor &t : c.tensors)
            for (int u = 0; u < U; ++u) {
                const int64_t pb = c.units[size_t(u)].first + z->rank * z->block[size_t(u)], pe = pb + z->valid[size_t(u)];
                const int64_t b = std::max(t.offset, pb), e = std::min(t.offset + t.numel, pe);
                for (int64_t s = b; s < e; s += 16384)
                    z->chunks.push_back({z->local[size_t(u)] + (s - pb), int32_t(std::min<int64_t>(16384, e - s)), int32_t(t.decay)});
            }
        z->dchunks.alloc(z->chunks.size(), "ZeRO-3 optimiser table");
        if (!z->chunks.empty())
            LIMA_CUDA_CHECK(cudaMemcpy(z->dchunks.p, z->chunks.data(), z->chunks.size() * sizeof(AdamChunk), cudaMemcpyHostToDevice));
        // gathered units and gradient staging
        const size_t lb = size_t(layer_block * W), eb = size_t(z->block[0] * W), hb = size_t(z->block[size_t(L) + 1] * W);
        for (int k = 0; k < 2; ++k) {
            z->wl[k].alloc(lb, "ZeRO-3 gathered layer");
            z->gl[k].alloc(lb, "ZeRO-3 layer gradient staging");
        }
        z->wemb.alloc(eb, "ZeRO-3 gathered embedding");  // the LM head when tied
        z->gemb.alloc(eb, "ZeRO-3 embedding gradient staging");
        if (!c.cfg.tie_word_embeddings) z->whead.alloc(hb, "ZeRO-3 gathered LM head");
        z->ghead.alloc(hb, "ZeRO-3 head gradient staging");
        z->w_of.assign(size_t(U), nullptr);
        z->g_of.assign(size_t(U), nullptr);
        z->gathered.assign(size_t(U), nullptr);
        for (cudaEvent_t &e : z->gathered) LIMA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        for (cudaEvent_t &e : z->gfree) LIMA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
        // the tensors the kernels read in fp32 stay whole (packed); each piece of them comes from its owner
        pack_f32(c);
        c.f32_pieces.clear();
        for (const auto &t : c.f32_at) {
            const int u = unit_of(c, t[0]);
            const int64_t ub = c.units[size_t(u)].first, block = z->block[size_t(u)];
            for (int64_t q = 0; q < W; ++q) {
                const int64_t pb = ub + q * block, pe = pb + piece_length(c.units[size_t(u)].second - ub, q, block);
                const int64_t b = std::max(t[0], pb), e = std::min(t[0] + t[1], pe);
                if (b < e) c.f32_pieces.push_back({int(q), z->local_of[size_t(q)][size_t(u)] + (b - pb), t[2] + (b - t[0]), e - b});
            }
        }
        // no whole state at stage 3
        for (DevBuf<float> *b : {&c.grads, &c.m1, &c.m2}) b->release();
        c.p16.release();
        c.dchunks.release();
        c.z3 = std::move(z);
        c.dp = dp;
        c.zero = 3;
        c.train = true;
    });
}

// Unit u of rank 0's weights (host fp32, the unit's elements): this rank keeps its piece (fp32 and
// bf16) and the unit's packed fp32 tensors.
LIMA_EXPORT int lima_cuda_plugin_z3_unit(void *ctx, int32_t u, const float *unit, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_REQUIRE(c.z3 && u >= 0 && u < int(c.units.size()), LIMA_ERR_STATE, "CUDA backend: z3_unit ", u, " without ZeRO-3");
        DevZero3 &z = *c.z3;
        const int64_t ub = c.units[size_t(u)].first, ue = c.units[size_t(u)].second, v = z.valid[size_t(u)];
        if (v > 0) {
            float *dst = z.p32.p + z.local[size_t(u)];
            LIMA_CUDA_CHECK(cudaMemcpy(dst, unit + z.rank * z.block[size_t(u)], size_t(v) * 4, cudaMemcpyHostToDevice));
            cast_f32_bf16(z.p16.p + z.local[size_t(u)], dst, long(v), c.st);
        }
        for (const auto &t : c.f32_at)
            if (t[0] >= ub && t[0] < ue)
                LIMA_CUDA_CHECK(cudaMemcpyAsync(c.p32.p + t[2], unit + (t[0] - ub), size_t(t[1]) * 4, cudaMemcpyHostToDevice, c.st));
        LIMA_CUDA_CHECK(cudaStreamSynchronize(c.st));
        z.w_of.assign(z.w_of.size(), nullptr);
    });
}

// Collective (every rank calls it): unit u's fp32 weights gathered from the ranks' pieces into host
// (the unit's elements).
LIMA_EXPORT int lima_cuda_plugin_z3_gather(void *ctx, int32_t u, float *host, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Ctx &c = *static_cast<Ctx *>(ctx);
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        LIMA_REQUIRE(c.z3 && u >= 0 && u < int(c.units.size()), LIMA_ERR_STATE, "CUDA backend: z3_gather ", u, " without ZeRO-3");
        DevZero3 &z = *c.z3;
        const int64_t block = z.block[size_t(u)], n = c.units[size_t(u)].second - c.units[size_t(u)].first;
        DevBuf<float> tmp;
        tmp.alloc(size_t(block * z.world), "ZeRO-3 unit gather");
        c.dp->allgather_async(z.p32.p + z.local[size_t(u)], tmp.p, block, ncclFloat32, c.st, "ZeRO-3 all-gather of a unit's fp32 weights");
        c.dp->wait("ZeRO-3 all-gather of a unit's fp32 weights");
        LIMA_CUDA_CHECK(cudaMemcpy(host, tmp.p, size_t(n) * 4, cudaMemcpyDeviceToHost));
    });
}
