// The KV cache and the split-cache ("flash-decoding") attention of one decode step: the CUDA side
// of cpu::kv_cache_store and cpu::decode_attention (cpu/attention.hpp). The training attention
// kernel (attention.cu) serves prefill.
#include "kernels.cuh"

namespace lima::cuda {

namespace {

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
// pos[t]) against cache positions [span * kDecodeSpan, min(pos, ...)], every 4th position per warp, hd/32
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
    const int p = pos[t], j0 = span * kDecodeSpan;
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
    const int j1 = min(p, j0 + kDecodeSpan - 1);
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

}  // namespace

void kv_cache_store(bf16 *kc, bf16 *vc, const bf16 *qkv, int ld, int qd, int kvd, const int32_t *row, const int32_t *pos,
                    const uint8_t *active, long N, int max_len, cudaStream_t st) {
    const long n = N * (kvd / 8);
    if (n == 0) return;
    kv_store_k<<<ceil_div(n, 256), 256, 0, st>>>(kc, vc, qkv, ld, qd, kvd, row, pos, active, N, max_len);
    LIMA_CUDA_LAUNCHED("kv_cache_store");
}

void decode_attention(bf16 *out, float *part_o, float *part_ml, const bf16 *qkv, int ld, const bf16 *kc, const bf16 *vc,
                      const int32_t *pos, const uint8_t *active, int rows, int Hq, int Hkv, int hd, int max_len,
                      cudaStream_t st) {
    if (rows == 0) return;
    const int spans = decode_spans(max_len), group = Hq / Hkv, kvd = Hkv * hd;
    const dim3 grid{unsigned(spans), unsigned(Hq), unsigned(rows)};
    const float scale = 1.0f / std::sqrt(float(hd));
#define LIMA_DECODE_ATTN(HD)                                                                                           \
    decode_attention_k<HD><<<grid, 128, 0, st>>>(part_o, part_ml, qkv, ld, kc, vc, pos, active, Hq, group, kvd, max_len, \
                                                 scale, spans)
    if (hd == 128)
        LIMA_DECODE_ATTN(128);
    else if (hd == 64)
        LIMA_DECODE_ATTN(64);
    else
        LIMA_DECODE_ATTN(32);
#undef LIMA_DECODE_ATTN
    LIMA_CUDA_LAUNCHED("decode_attention");
    decode_combine_k<<<dim3(unsigned(Hq), unsigned(rows)), unsigned(hd), 0, st>>>(out, part_o, part_ml, Hq, hd, spans);
    LIMA_CUDA_LAUNCHED("decode_attention combine");
}

}  // namespace lima::cuda
