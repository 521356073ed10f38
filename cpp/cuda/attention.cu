// Flash-style causal attention over packed rows for the CUDA backend (FlashAttention-2's
// algorithm: Dao, 2023), written for bf16 tensor cores with mma.sync m16n8k16. Written here
// rather than taken from a library because the packed-row layout (segments inside rows, the fused
// QKV buffer) and the CPU reference's exact masking rules must hold; cuDNN's fused attention would
// need a ragged-offset graph per batch layout.
//
// Work items are 64-row tiles of one segment. The forward keeps (max, sum) per query row online
// and writes out + log-sum-exp; the backward recomputes probabilities tile by tile in two kernels:
// one per query tile accumulating dQ, one per key tile accumulating dK and dV over every query
// head of its KV group (no atomics: deterministic). Nothing of size T x T is ever stored.
#include <atomic>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kernels.cuh"

namespace lima::cuda {

namespace {

constexpr int kTile = 64;     // rows per work item (queries in fwd/dq, keys in dkdv)
constexpr int kThreads = 128; // 4 warps, 16 rows each
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t ld32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
    return uint32_t(*reinterpret_cast<const uint16_t *>(&lo)) | (uint32_t(*reinterpret_cast<const uint16_t *>(&hi)) << 16);
}

// Shared-memory tiles are row-major with HD + 8 elements per row (16 bytes of padding: no bank
// conflicts for the fragment loads below).
template <int HD>
struct Smem {
    static constexpr int S = HD + 8;
};

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return uint32_t(__cvta_generic_to_shared(p)); }

// Copies `rows` rows of HD bf16 (global row stride ld) into a tile; rows >= valid are zero. ASYNC
// (variant 2): with cp.async, 16 bytes at a time straight to shared memory (a source size of 0
// zero-fills), to be committed and waited for by the caller; otherwise through registers.
template <int HD, bool ASYNC = false>
__device__ void load_tile(bf16 *sm, const bf16 *g, long ld, int rows, int valid) {
    constexpr int S = Smem<HD>::S, CH = HD / 8;
    for (int i = threadIdx.x; i < rows * CH; i += blockDim.x) {
        const int r = i / CH, c = (i % CH) * 8;
        if constexpr (ASYNC) {
            const bf16 *src = r < valid ? g + long(r) * ld + c : g;
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(sm + r * S + c)),
                         "l"(src), "r"(r < valid ? 16 : 0));
        } else {
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (r < valid) v = *reinterpret_cast<const uint4 *>(g + long(r) * ld + c);
            *reinterpret_cast<uint4 *>(sm + r * S + c) = v;
        }
    }
}

__device__ __forceinline__ void async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Step i of a loop over streamed tiles: ASYNC, step i + 1's tiles are requested (load(i + 1,
// other buffer)) and step i's awaited; otherwise step i's are copied (load(i, 0)) between barriers.
// Returns the buffer to read; an ASYNC step ends with __syncthreads (its buffer is refilled next).
template <bool ASYNC, typename Load>
__device__ __forceinline__ int stream_step(int i, bool has_next, Load &&load) {
    const int buf = ASYNC ? i % 2 : 0;
    if constexpr (ASYNC) {
        if (has_next) {
            load(i + 1, buf ^ 1);
            async_commit();
            async_wait<1>();
        } else {
            async_wait<0>();
        }
        __syncthreads();
    } else {
        __syncthreads();
        load(i, 0);
        __syncthreads();
    }
    return buf;
}

// The fragment loaders come in two forms, chosen by the kernel variant (attention_variant): 32-bit
// shared loads per lane (variant 0, the form checked on an H100), or one ldmatrix per fragment
// (variants 1 and 2), with the lane addresses given below. Tile rows are 16-byte aligned (HD + 8
// elements of 2 bytes, HD a multiple of 32), as ldmatrix needs.

// A fragment (16 x 16) of a row-major tile: rows r0.., columns k0..
template <int HD, bool LDM>
__device__ __forceinline__ void frag_a(uint32_t (&a)[4], const bf16 *sm, int r0, int k0) {
    constexpr int S = Smem<HD>::S;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    if constexpr (LDM) {
        // lanes 0-15 address rows r0..r0+15 at column k0, lanes 16-31 the same rows at k0 + 8: the four
        // 8 x 8 matrices return in the mma's A order (rows 0-7 / 8-15 by columns 0-7 / 8-15)
        const bf16 *p = sm + (r0 + lane % 16) * S + k0 + (lane / 16) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                     : "r"(smem_addr(p)));
    } else {
        a[0] = ld32(sm + (r0 + g) * S + k0 + 2 * t);
        a[1] = ld32(sm + (r0 + g + 8) * S + k0 + 2 * t);
        a[2] = ld32(sm + (r0 + g) * S + k0 + 8 + 2 * t);
        a[3] = ld32(sm + (r0 + g + 8) * S + k0 + 8 + 2 * t);
    }
}

// B fragment (16 x 8) with B[k][n] = M[n0 + n][k0 + k] (M's rows are the n index).
template <int HD, bool LDM>
__device__ __forceinline__ void frag_b_rows(uint32_t &b0, uint32_t &b1, const bf16 *sm, int n0, int k0) {
    constexpr int S = Smem<HD>::S;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    if constexpr (LDM) {
        // lanes 0-7: rows n0..n0+7 at column k0 (b0), lanes 8-15: the same rows at k0 + 8 (b1); lanes
        // 16-31 are not read by .x2 and repeat those addresses
        const bf16 *p = sm + (n0 + lane % 8) * S + k0 + ((lane / 8) % 2) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(smem_addr(p)));
    } else {
        b0 = ld32(sm + (n0 + g) * S + k0 + 2 * t);
        b1 = ld32(sm + (n0 + g) * S + k0 + 8 + 2 * t);
    }
}

// B fragment (16 x 8) with B[k][n] = M[k0 + k][n0 + n] (M's rows are the k index).
template <int HD, bool LDM>
__device__ __forceinline__ void frag_b_cols(uint32_t &b0, uint32_t &b1, const bf16 *sm, int k0, int n0) {
    constexpr int S = Smem<HD>::S;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    if constexpr (LDM) {
        // transposed: lanes 0-15 address rows k0..k0+15 at column n0; lane (g, t) receives
        // M[k0 + 2t + {0, 1}][n0 + g] (b0) and the same 8 rows further down (b1)
        const bf16 *p = sm + (k0 + lane % 16) * S + n0;
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(b0), "=r"(b1) : "r"(smem_addr(p)));
    } else {
        const bf16 *p = sm + (k0 + 2 * t) * S + n0 + g;
        b0 = pack_raw(p[0], p[S]);
        b1 = pack_raw(p[8 * S], p[9 * S]);
    }
}

// The A fragment of a 16 x 16 block of a product held in accumulator layout: tiles j and j + 1
// of 8 columns each (FlashAttention-2's register reuse: no trip through shared memory).
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// Variants (attention_variant): 0 as checked on an H100; 1 ldmatrix fragments and no mask arithmetic
// on the tiles that lie wholly below the diagonal; 2 as 1 with the next K/V tile copied by cp.async
// while this one is multiplied (two K/V buffers).
template <int HD, int V>
__global__ void __launch_bounds__(kThreads) attn_fwd_k(bf16 *out, float *lse, const bf16 *qkv, const AttnTile *tiles,
                                                        AttnShape s, float scale_log2) {
    constexpr bool LDM = V >= 1, ASYNC = V >= 2;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    constexpr int S = Smem<HD>::S, DT = HD / 8, KC = HD / 16;
    bf16 *Qs = reinterpret_cast<bf16 *>(smem_raw);  // then K, V (ASYNC: K0, V0, K1, V1)
    const AttnTile tile = tiles[blockIdx.x];
    const int h = blockIdx.y, kh = h / (s.Hq / s.Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const long base = tile.start;
    const int row0 = tile.row0, len = tile.len;
    const bf16 *qg = qkv + (base + row0) * s.ld + long(h) * HD;
    const bf16 *kg = qkv + base * s.ld + long(s.Hq) * HD + long(kh) * HD;
    const bf16 *vg = qkv + base * s.ld + long(s.Hq + s.Hkv) * HD + long(kh) * HD;
    auto kv_load = [&](int i, int buf) {  // key tile i into buffer buf
        bf16 *Kb = Qs + (1 + 2 * buf) * kTile * S;
        const int kt0 = i * kTile, kv = min(kTile, len - kt0);
        load_tile<HD, ASYNC>(Kb, kg + long(kt0) * s.ld, s.ld, kTile, kv);
        load_tile<HD, ASYNC>(Kb + kTile * S, vg + long(kt0) * s.ld, s.ld, kTile, kv);
    };
    load_tile<HD, ASYNC>(Qs, qg, s.ld, kTile, min(kTile, len - row0));
    if constexpr (ASYNC) {
        kv_load(0, 0);
        async_commit();
    }
    const int r0 = warp * 16, qi0 = row0 + r0 + g, qi1 = qi0 + 8;
    float o[DT][4];
#pragma unroll
    for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    uint32_t qf[KC][4];
    const int last = min(row0 + kTile - 1, len - 1);
    for (int i = 0, kt0 = 0; kt0 <= last; ++i, kt0 += kTile) {
        const int buf = stream_step<ASYNC>(i, kt0 + kTile <= last, kv_load);
        const bf16 *Ks = Qs + (1 + 2 * buf) * kTile * S, *Vs = Ks + kTile * S;
        if (kt0 == 0) {
#pragma unroll
            for (int kc = 0; kc < KC; ++kc) frag_a<HD, LDM>(qf[kc], Qs, r0, kc * 16);
        }
        float sc[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < KC; ++kc) {
                uint32_t b0, b1;
                frag_b_rows<HD, LDM>(b0, b1, Ks, nt * 8, kc * 16);
                mma16816(sc[nt], qf[kc], b0, b1);
            }
        }
        // every key of the tile at or before every query of the warp, and inside the segment
        const bool interior = LDM && kt0 + kTile - 1 <= row0 + r0 && kt0 + kTile <= len;
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = kt0 + nt * 8 + 2 * t + (e & 1), q = e < 2 ? qi0 : qi1;
                const bool ok = interior || (key <= q && key < len);
                sc[nt][e] = ok ? sc[nt][e] * scale_log2 : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(sc[nt][0], sc[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(sc[nt][2], sc[nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float al0 = exp2f(m0 - mu0), al1 = exp2f(m1 - mu1);
        m0 = mn0;
        m1 = mn1;
        float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            sc[nt][0] = exp2f(sc[nt][0] - mu0);
            sc[nt][1] = exp2f(sc[nt][1] - mu0);
            sc[nt][2] = exp2f(sc[nt][2] - mu1);
            sc[nt][3] = exp2f(sc[nt][3] - mu1);
            rs0 += sc[nt][0] + sc[nt][1];
            rs1 += sc[nt][2] + sc[nt][3];
        }
        l0 = l0 * al0 + rs0;
        l1 = l1 * al1 + rs1;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
            o[dt][0] *= al0;
            o[dt][1] *= al0;
            o[dt][2] *= al1;
            o[dt][3] *= al1;
        }
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            uint32_t pa[4];
            acc_to_a(pa, sc[2 * kc], sc[2 * kc + 1]);
#pragma unroll
            for (int dt = 0; dt < DT; ++dt) {
                uint32_t b0, b1;
                frag_b_cols<HD, LDM>(b0, b1, Vs, kc * 16, dt * 8);
                mma16816(o[dt], pa, b0, b1);
            }
        }
        if constexpr (ASYNC) __syncthreads();  // this buffer is refilled by the next iteration
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
    const long ldo = long(s.Hq) * HD;
    if (qi0 < len) {
        bf16 *dst = out + (base + qi0) * ldo + long(h) * HD;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
            *reinterpret_cast<uint32_t *>(dst + dt * 8 + 2 * t) = pack_bf16(o[dt][0] * inv0, o[dt][1] * inv0);
        if (t == 0) lse[(base + qi0) * s.Hq + h] = (m0 + log2f(l0)) / kLog2e;
    }
    if (qi1 < len) {
        bf16 *dst = out + (base + qi1) * ldo + long(h) * HD;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
            *reinterpret_cast<uint32_t *>(dst + dt * 8 + 2 * t) = pack_bf16(o[dt][2] * inv1, o[dt][3] * inv1);
        if (t == 0) lse[(base + qi1) * s.Hq + h] = (m1 + log2f(l1)) / kLog2e;
    }
}

// D[n, h] = sum over the head's dims of dout * out (FlashAttention-2's rowsum(dO o O)). Warp per (n, h).
__global__ void attn_dsum_k(float *D, const bf16 *dout, const bf16 *out, long N, int Hq, int hd) {
    const long id = long(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (id >= N * Hq) return;
    const bf16 *a = dout + id * hd, *b = out + id * hd;
    float acc = 0.0f;
    for (int i = lane; i < hd; i += 32) acc += __bfloat162float(a[i]) * __bfloat162float(b[i]);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) D[id] = acc;
}

// dQ for one 64-query tile of one head: recompute P, dP = dO V^T, dS = P (dP - D), dQ = dS K.
// Variants as the forward's (ASYNC: two K/V buffers).
template <int HD, int V>
__global__ void __launch_bounds__(kThreads) attn_dq_k(bf16 *dqkv, const float *D, const bf16 *dout, const float *lse,
                                                       const bf16 *qkv, const AttnTile *tiles, AttnShape s, float scale,
                                                       float scale_log2) {
    constexpr bool LDM = V >= 1, ASYNC = V >= 2;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    constexpr int S = Smem<HD>::S, DT = HD / 8, KC = HD / 16;
    bf16 *Qs = reinterpret_cast<bf16 *>(smem_raw), *dOs = Qs + kTile * S;  // then K, V (ASYNC: K0, V0, K1, V1)
    const AttnTile tile = tiles[blockIdx.x];
    const int h = blockIdx.y, kh = h / (s.Hq / s.Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const long base = tile.start, ldo = long(s.Hq) * HD;
    const int row0 = tile.row0, len = tile.len;
    const bf16 *kg = qkv + base * s.ld + long(s.Hq) * HD + long(kh) * HD;
    const bf16 *vg = qkv + base * s.ld + long(s.Hq + s.Hkv) * HD + long(kh) * HD;
    auto kv_load = [&](int i, int buf) {  // key tile i into buffer buf
        bf16 *Kb = Qs + (2 + 2 * buf) * kTile * S;
        const int kt0 = i * kTile, kv = min(kTile, len - kt0);
        load_tile<HD, ASYNC>(Kb, kg + long(kt0) * s.ld, s.ld, kTile, kv);
        load_tile<HD, ASYNC>(Kb + kTile * S, vg + long(kt0) * s.ld, s.ld, kTile, kv);
    };
    const int valid = min(kTile, len - row0);
    load_tile<HD, ASYNC>(Qs, qkv + (base + row0) * s.ld + long(h) * HD, s.ld, kTile, valid);
    load_tile<HD, ASYNC>(dOs, dout + (base + row0) * ldo + long(h) * HD, ldo, kTile, valid);
    if constexpr (ASYNC) {
        kv_load(0, 0);
        async_commit();
    }
    const int r0 = warp * 16, qi0 = row0 + r0 + g, qi1 = qi0 + 8;
    const float ls0 = qi0 < len ? lse[(base + qi0) * s.Hq + h] * kLog2e : 0.0f;
    const float ls1 = qi1 < len ? lse[(base + qi1) * s.Hq + h] * kLog2e : 0.0f;
    const float D0 = qi0 < len ? D[(base + qi0) * s.Hq + h] : 0.0f, D1 = qi1 < len ? D[(base + qi1) * s.Hq + h] : 0.0f;
    float dq[DT][4];
#pragma unroll
    for (int i = 0; i < DT; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
    const int last = min(row0 + kTile - 1, len - 1);
    for (int i = 0, kt0 = 0; kt0 <= last; ++i, kt0 += kTile) {
        const int buf = stream_step<ASYNC>(i, kt0 + kTile <= last, kv_load);
        const bf16 *Ks = Qs + (2 + 2 * buf) * kTile * S, *Vs = Ks + kTile * S;
        float p[8][4], dp[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.0f;
            dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.0f;
        }
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
            uint32_t qa[4], da[4];
            frag_a<HD, LDM>(qa, Qs, r0, kc * 16);
            frag_a<HD, LDM>(da, dOs, r0, kc * 16);
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                uint32_t b0, b1;
                frag_b_rows<HD, LDM>(b0, b1, Ks, nt * 8, kc * 16);
                mma16816(p[nt], qa, b0, b1);
                frag_b_rows<HD, LDM>(b0, b1, Vs, nt * 8, kc * 16);
                mma16816(dp[nt], da, b0, b1);
            }
        }
        // every key of the tile at or before every query of the warp, all of them inside the segment
        const bool interior = LDM && kt0 + kTile - 1 <= row0 + r0 && kt0 + kTile <= len && row0 + r0 + 16 <= len;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = kt0 + nt * 8 + 2 * t + (e & 1), q = e < 2 ? qi0 : qi1;
                const bool ok = interior || (key <= q && key < len && q < len);
                const float pr = ok ? exp2f(p[nt][e] * scale_log2 - (e < 2 ? ls0 : ls1)) : 0.0f;
                p[nt][e] = pr * (dp[nt][e] - (e < 2 ? D0 : D1));  // dS
            }
        }
#pragma unroll
        for (int kc = 0; kc < 4; ++kc) {
            uint32_t sa[4];
            acc_to_a(sa, p[2 * kc], p[2 * kc + 1]);
#pragma unroll
            for (int dt = 0; dt < DT; ++dt) {
                uint32_t b0, b1;
                frag_b_cols<HD, LDM>(b0, b1, Ks, kc * 16, dt * 8);
                mma16816(dq[dt], sa, b0, b1);
            }
        }
        if constexpr (ASYNC) __syncthreads();  // this buffer is refilled by the next iteration
    }
    if (qi0 < len) {
        bf16 *dst = dqkv + (base + qi0) * s.ld + long(h) * HD;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
            *reinterpret_cast<uint32_t *>(dst + dt * 8 + 2 * t) = pack_bf16(dq[dt][0] * scale, dq[dt][1] * scale);
    }
    if (qi1 < len) {
        bf16 *dst = dqkv + (base + qi1) * s.ld + long(h) * HD;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
            *reinterpret_cast<uint32_t *>(dst + dt * 8 + 2 * t) = pack_bf16(dq[dt][2] * scale, dq[dt][3] * scale);
    }
}

// dK, dV for one 64-key tile of one KV head, summed over the query heads of its group and every
// query tile at or after the keys. Warp w owns keys w*16..w*16+15 and works on transposed
// products: S^T = K Q^T, dV += P^T dO, dP^T = V dO^T, dK += dS^T Q. Variants as the forward's
// (ASYNC: two buffers of Q, dO, lse and D, the next query tile's copied during this one's products).
template <int HD, int QT, int V>
__global__ void __launch_bounds__(kThreads) attn_dkdv_k(bf16 *dqkv, const float *D, const bf16 *dout, const float *lse,
                                                         const bf16 *qkv, const AttnTile *tiles, AttnShape s, float scale,
                                                         float scale_log2) {
    constexpr bool LDM = V >= 1, ASYNC = V >= 2;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    constexpr int S = Smem<HD>::S, DT = HD / 8, KC = HD / 16, NT = QT / 8, BUFS = ASYNC ? 2 : 1;
    // K, V, then per buffer: Q, dO (QT rows each); after every buffer, per buffer: lse, D (QT each)
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_raw), *Vs = Ks + kTile * S;
    float *f32s = reinterpret_cast<float *>(Vs + kTile * S + BUFS * 2 * QT * S);
    const AttnTile tile = tiles[blockIdx.x];
    const int kh = blockIdx.y, group = s.Hq / s.Hkv;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const long base = tile.start, ldo = long(s.Hq) * HD;
    const int row0 = tile.row0, len = tile.len;
    // the (query head, query tile) pairs in turn: j -> head kh * group + j / nq, tile row0 + (j % nq) QT
    const int nq = (len - row0 + QT - 1) / QT, pairs = group * nq;
    auto q_load = [&](int j, int buf) {
        const int h = kh * group + j / nq, qt0 = row0 + (j % nq) * QT, valid = min(QT, len - qt0);
        bf16 *Qb = Vs + kTile * S + buf * 2 * QT * S;
        float *lb = f32s + buf * 2 * QT;
        load_tile<HD, ASYNC>(Qb, qkv + (base + qt0) * s.ld + long(h) * HD, s.ld, QT, valid);
        load_tile<HD, ASYNC>(Qb + QT * S, dout + (base + qt0) * ldo + long(h) * HD, ldo, QT, valid);
        for (int i = threadIdx.x; i < QT; i += blockDim.x) {
            lb[i] = i < valid ? lse[(base + qt0 + i) * s.Hq + h] * kLog2e : 0.0f;
            lb[QT + i] = i < valid ? D[(base + qt0 + i) * s.Hq + h] : 0.0f;
        }
    };
    load_tile<HD, ASYNC>(Ks, qkv + (base + row0) * s.ld + long(s.Hq) * HD + long(kh) * HD, s.ld, kTile, min(kTile, len - row0));
    load_tile<HD, ASYNC>(Vs, qkv + (base + row0) * s.ld + long(s.Hq + s.Hkv) * HD + long(kh) * HD, s.ld, kTile,
                         min(kTile, len - row0));
    if constexpr (ASYNC) {
        q_load(0, 0);
        async_commit();
    }
    const int r0 = warp * 16, kj0 = row0 + r0 + g, kj1 = kj0 + 8;
    float dk[DT][4], dv[DT][4];
#pragma unroll
    for (int i = 0; i < DT; ++i) {
        dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.0f;
        dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;
    }
    for (int j = 0; j < pairs; ++j) {
        const int buf = stream_step<ASYNC>(j, j + 1 < pairs, q_load), qt0 = row0 + (j % nq) * QT;
        const bf16 *Qs = Vs + kTile * S + buf * 2 * QT * S, *dOs = Qs + QT * S;
        const float *ls = f32s + buf * 2 * QT, *Ds = ls + QT;
        float p[NT][4], dp[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.0f;
            dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.0f;
        }
#pragma unroll
        for (int kc = 0; kc < KC; ++kc) {
            uint32_t ka[4], va[4];
            frag_a<HD, LDM>(ka, Ks, r0, kc * 16);
            frag_a<HD, LDM>(va, Vs, r0, kc * 16);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                uint32_t b0, b1;
                frag_b_rows<HD, LDM>(b0, b1, Qs, nt * 8, kc * 16);
                mma16816(p[nt], ka, b0, b1);
                frag_b_rows<HD, LDM>(b0, b1, dOs, nt * 8, kc * 16);
                mma16816(dp[nt], va, b0, b1);
            }
        }
        // every key of the warp at or before every query of the tile, all of them inside the segment
        const bool interior = LDM && row0 + r0 + 15 <= qt0 && qt0 + QT <= len;
        // p <- P^T, dp <- dS^T
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int qi = nt * 8 + 2 * t + (e & 1), q = qt0 + qi, key = e < 2 ? kj0 : kj1;
                const bool ok = interior || (key <= q && q < len && key < len);
                const float pr = ok ? exp2f(p[nt][e] * scale_log2 - ls[qi]) : 0.0f;
                p[nt][e] = pr;
                dp[nt][e] = pr * (dp[nt][e] - Ds[qi]);
            }
        }
#pragma unroll
        for (int kc = 0; kc < QT / 16; ++kc) {
            uint32_t pa[4], sa[4];
            acc_to_a(pa, p[2 * kc], p[2 * kc + 1]);
            acc_to_a(sa, dp[2 * kc], dp[2 * kc + 1]);
#pragma unroll
            for (int dt = 0; dt < DT; ++dt) {
                uint32_t b0, b1;
                frag_b_cols<HD, LDM>(b0, b1, dOs, kc * 16, dt * 8);
                mma16816(dv[dt], pa, b0, b1);
                frag_b_cols<HD, LDM>(b0, b1, Qs, kc * 16, dt * 8);
                mma16816(dk[dt], sa, b0, b1);
            }
        }
        if constexpr (ASYNC) __syncthreads();  // this buffer is refilled by the next iteration
    }
    const long kcol = long(s.Hq) * HD + long(kh) * HD, vcol = long(s.Hq + s.Hkv) * HD + long(kh) * HD;
    if (kj0 < len) {
        bf16 *dk_dst = dqkv + (base + kj0) * s.ld + kcol, *dv_dst = dqkv + (base + kj0) * s.ld + vcol;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
            *reinterpret_cast<uint32_t *>(dk_dst + dt * 8 + 2 * t) = pack_bf16(dk[dt][0] * scale, dk[dt][1] * scale);
            *reinterpret_cast<uint32_t *>(dv_dst + dt * 8 + 2 * t) = pack_bf16(dv[dt][0], dv[dt][1]);
        }
    }
    if (kj1 < len) {
        bf16 *dk_dst = dqkv + (base + kj1) * s.ld + kcol, *dv_dst = dqkv + (base + kj1) * s.ld + vcol;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
            *reinterpret_cast<uint32_t *>(dk_dst + dt * 8 + 2 * t) = pack_bf16(dk[dt][2] * scale, dk[dt][3] * scale);
            *reinterpret_cast<uint32_t *>(dv_dst + dt * 8 + 2 * t) = pack_bf16(dv[dt][2], dv[dt][3]);
        }
    }
}

template <typename K>
void raise_smem(K kernel, size_t bytes) {
    if (bytes > 48 * 1024) LIMA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int HD, int V>
void fwd(bf16 *out, float *lse, const bf16 *qkv, const AttnTile *tiles, int n, const AttnShape &s, cudaStream_t st) {
    const size_t smem = (V >= 2 ? 5 : 3) * size_t(kTile) * Smem<HD>::S * sizeof(bf16);
    static bool once = (raise_smem(attn_fwd_k<HD, V>, smem), true);
    (void)once;
    const float scale = 1.0f / sqrtf(float(HD));
    attn_fwd_k<HD, V><<<dim3(unsigned(n), unsigned(s.Hq)), kThreads, smem, st>>>(out, lse, qkv, tiles, s, scale * kLog2e);
    LIMA_CUDA_LAUNCHED("attention_forward");
}

template <int HD, int V>
void bwd(bf16 *dqkv, float *D, const bf16 *dout, const float *lse, const bf16 *qkv, const AttnTile *tiles, int n,
         const AttnShape &s, cudaStream_t st) {
    constexpr int QT = HD > 64 ? 32 : 64, BUFS = V >= 2 ? 2 : 1;
    const size_t smem_dq = (2 + 2 * BUFS) * size_t(kTile) * Smem<HD>::S * sizeof(bf16);
    const size_t smem_kv = (2 * size_t(kTile) + BUFS * 2 * size_t(QT)) * Smem<HD>::S * sizeof(bf16) + BUFS * 2 * QT * sizeof(float);
    static bool once = (raise_smem(attn_dq_k<HD, V>, smem_dq), raise_smem(attn_dkdv_k<HD, QT, V>, smem_kv), true);
    (void)once;
    const float scale = 1.0f / sqrtf(float(HD));
    attn_dq_k<HD, V><<<dim3(unsigned(n), unsigned(s.Hq)), kThreads, smem_dq, st>>>(dqkv, D, dout, lse, qkv, tiles, s, scale,
                                                                                   scale * kLog2e);
    LIMA_CUDA_LAUNCHED("attention_backward dq");
    attn_dkdv_k<HD, QT, V><<<dim3(unsigned(n), unsigned(s.Hkv)), kThreads, smem_kv, st>>>(dqkv, D, dout, lse, qkv, tiles, s,
                                                                                         scale, scale * kLog2e);
    LIMA_CUDA_LAUNCHED("attention_backward dkdv");
}

template <int N>
using Int = std::integral_constant<int, N>;

// Calls f(Int<HD>, Int<V>) for the head dimension and the variant in use.
template <typename F>
void dispatch(int hd, F &&f) {
    const int v = attention_variant();
    auto with = [&](auto hd_c) {
        switch (v) {
            case 0: f(hd_c, Int<0>{}); break;
            case 1: f(hd_c, Int<1>{}); break;
            default: f(hd_c, Int<2>{}); break;
        }
    };
    switch (hd) {
        case 32: with(Int<32>{}); break;
        case 64: with(Int<64>{}); break;
        case 128: with(Int<128>{}); break;
        default: fail(LIMA_ERR_UNSUPPORTED, "CUDA attention: head_dim ", hd, " is not supported (32, 64 or 128)");
    }
}

std::atomic<int> g_variant{-1};

}  // namespace

int attention_variant_from_env() {
    const char *env = std::getenv("LIMA_CUDA_ATTENTION");
    if (!env || !*env) return 0;
    const std::string e = env;
    LIMA_REQUIRE(e == "0" || e == "1" || e == "2", LIMA_ERR_INVALID_ARGUMENT, "LIMA_CUDA_ATTENTION is '", e,
                 "': it must be 0, 1 or 2 (the attention kernels' variant)");
    return e[0] - '0';
}

int attention_variant() {
    int v = g_variant.load();
    if (v < 0) {
        v = attention_variant_from_env();
        g_variant.store(v);
    }
    return v;
}

void set_attention_variant(int v) {
    LIMA_REQUIRE(v >= 0 && v < kAttentionVariants, LIMA_ERR_INVALID_ARGUMENT, "attention variant ", v, " is not 0, 1 or 2");
    g_variant.store(v);
}

bool attention_supports(int hd) { return hd == 32 || hd == 64 || hd == 128; }

void attention_forward(bf16 *out, float *lse, const bf16 *qkv, const AttnTile *tiles, int num_tiles, const AttnShape &s,
                       cudaStream_t st) {
    if (num_tiles == 0) return;
    dispatch(s.hd, [&](auto hd, auto v) { fwd<decltype(hd)::value, decltype(v)::value>(out, lse, qkv, tiles, num_tiles, s, st); });
}

void attention_backward(bf16 *dqkv, float *Dsum, const bf16 *dout, const bf16 *out, const float *lse, const bf16 *qkv,
                        const AttnTile *tiles, int num_tiles, const AttnShape &s, cudaStream_t st) {
    LIMA_CUDA_CHECK(cudaMemsetAsync(dqkv, 0, size_t(s.N) * size_t(s.ld) * sizeof(bf16), st));
    if (num_tiles == 0) return;
    attn_dsum_k<<<ceil_div(s.N * s.Hq, 8), 256, 0, st>>>(Dsum, dout, out, s.N, s.Hq, s.hd);
    LIMA_CUDA_LAUNCHED("attention_backward dsum");
    dispatch(s.hd, [&](auto hd, auto v) {
        bwd<decltype(hd)::value, decltype(v)::value>(dqkv, Dsum, dout, lse, qkv, tiles, num_tiles, s, st);
    });
}

}  // namespace lima::cuda
