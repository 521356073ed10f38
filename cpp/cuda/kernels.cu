// The CUDA backend's elementwise, normalisation, loss and optimiser kernels. Each mirrors a CPU
// kernel of cpp/src/cpu/ (same formula, same Philox masks); the GPU tests compare them.
#include "kernels.cuh"

namespace lima::cuda {

MemCounter &mem_counter() {
    static MemCounter c;
    return c;
}

namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// Block-wide sum for blocks of up to 1024 threads; every thread gets the result.
template <typename T>
__device__ T block_sum(T v, T *shared32) {
    const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp, nw = (blockDim.x + kWarp - 1) / kWarp;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) shared32[w] = v;
    __syncthreads();
    T r = lane < nw ? shared32[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
    return r;
}

__global__ void encoder_forward_k(float *resid, const float *emb, const int32_t *tokens, long N, int d) {
    const long n = blockIdx.x;
    const float *src = emb + long(tokens[n]) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) resid[n * d + i] = src[i];
}

__global__ void encoder_backward_k(float *demb, const float *dres, const int32_t *tokens, long N, int d) {
    const long n = blockIdx.x;
    float *dst = demb + long(tokens[n]) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) atomicAdd(dst + i, dres[n * d + i]);
}

// One warp per row.
__global__ void rmsnorm_forward_k(bf16 *out, float *rstd, const float *x, const float *w, long N, int d, float eps) {
    const long n = long(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (n >= N) return;
    const float *xr = x + n * d;
    float ss = 0.0f;
    for (int i = lane; i < d; i += kWarp) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    const float r = rsqrtf(ss / float(d) + eps);
    if (lane == 0) rstd[n] = r;
    bf16 *o = out + n * d;
    for (int i = lane; i < d; i += kWarp) o[i] = __float2bfloat16(w[i] * (xr[i] * r));
}

// Warps take rows; dw is summed per block in shared memory (d floats), then added to global.
__global__ void rmsnorm_backward_k(float *dres, float *dw, const bf16 *dout, const float *x, const float *w,
                                   const float *rstd, long N, int d, bool accumulate) {
    extern __shared__ float sdw[];
    for (int i = threadIdx.x; i < d; i += blockDim.x) sdw[i] = 0.0f;
    __syncthreads();
    const int lane = threadIdx.x % kWarp, wpb = blockDim.x / kWarp;
    for (long n = long(blockIdx.x) * wpb + threadIdx.x / kWarp; n < N; n += long(gridDim.x) * wpb) {
        const float *xr = x + n * d;
        const bf16 *g = dout + n * d;
        const float r = rstd[n];
        float dot = 0.0f;
        for (int i = lane; i < d; i += kWarp) dot += __bfloat162float(g[i]) * w[i] * xr[i];
        dot = warp_sum(dot);
        const float k = dot * r * r * r / float(d);
        float *o = dres + n * d;
        for (int i = lane; i < d; i += kWarp) {
            const float gi = __bfloat162float(g[i]);
            const float dx = gi * w[i] * r - xr[i] * k;
            o[i] = accumulate ? o[i] + dx : dx;
            atomicAdd(&sdw[i], gi * xr[i] * r);
        }
    }
    __syncthreads();
    if (dw)
        for (int i = threadIdx.x; i < d; i += blockDim.x) atomicAdd(dw + i, sdw[i]);
}

// One thread per (row, head, i < hd/2) pair.
__global__ void rope_k(bf16 *x, int ld, const int32_t *pos, long N, int heads, int hd, const float *cs, const float *sn,
                       float sign) {
    const int h2 = hd / 2;
    const long id = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= N * heads * h2) return;
    const int i = int(id % h2);
    const long nh = id / h2;
    const int h = int(nh % heads);
    const long n = nh / heads;
    const int p = pos[n];
    const float c = cs[long(p) * h2 + i], s = sign * sn[long(p) * h2 + i];
    bf16 *v = x + n * ld + long(h) * hd;
    const float a = __bfloat162float(v[i]), b = __bfloat162float(v[i + h2]);
    v[i] = __float2bfloat16(a * c - b * s);
    v[i + h2] = __float2bfloat16(b * c + a * s);
}

// The residual-dropout mask of 4 consecutive elements g*4..g*4+3: one Philox call with the CPU
// backend's counter layout (philox.hpp). apply(j, v) is v kept and scaled, 0, or v when off.
struct Mask4 {
    Philox4 r;
    float p, scale;
    bool on;
    __device__ Mask4(long g, float p_, const DropoutKey &key, uint32_t word, bool on_) : r{{0, 0, 0, 0}}, p(p_), on(on_) {
        if (on) r = philox4x32_10(uint32_t(uint64_t(g)), uint32_t(uint64_t(g) >> 32), key.step, word, uint32_t(key.seed),
                                  uint32_t(key.seed >> 32));
        scale = on ? 1.0f / (1.0f - p) : 1.0f;
    }
    __device__ float apply(int j, float v) const { return on ? (u24(r.v[j]) >= p ? v * scale : 0.0f) : v; }
};

// One thread per 4 elements.
__global__ void dropout_residual_forward_k(float *out, const float *res, const bf16 *y, long n, float p, DropoutKey key,
                                           uint32_t word, bool on) {
    const long g = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (g * 4 >= n) return;
    const Mask4 mask(g, p, key, word, on);
    for (int j = 0; j < 4 && g * 4 + j < n; ++j) {
        const long e = g * 4 + j;
        out[e] = res[e] + mask.apply(j, __bfloat162float(y[e]));
    }
}

// out (n) = dropout(in): LoRA's dropped adapter input, with the CPU backend's masks
__global__ void dropout_copy_k(bf16 *out, const bf16 *in, long n, float p, DropoutKey key, uint32_t word) {
    const long g = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (g * 4 >= n) return;
    const Mask4 mask(g, p, key, word, true);
    for (int j = 0; j < 4 && g * 4 + j < n; ++j) out[g * 4 + j] = __float2bfloat16(mask.apply(j, __bfloat162float(in[g * 4 + j])));
}

// out[:, col0 : col0 + n] (row stride ld) += scale * t (N, n); grid-stride
__global__ void add_cols_k(bf16 *out, int ld, int col0, const bf16 *t, long N, int n, float scale) {
    const long total = N * n;
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += long(gridDim.x) * blockDim.x) {
        bf16 &o = out[(i / n) * ld + col0 + i % n];
        o = __float2bfloat16(__bfloat162float(o) + scale * __bfloat162float(t[i]));
    }
}

// t (N, n) = scale * src[:, col0 : col0 + n] (row stride ld); grid-stride
__global__ void gather_cols_k(bf16 *t, const bf16 *src, int ld, int col0, long N, int n, float scale) {
    const long total = N * n;
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += long(gridDim.x) * blockDim.x)
        t[i] = __float2bfloat16(scale * __bfloat162float(src[(i / n) * ld + col0 + i % n]));
}

// The NF4 code book (cpu/nf4.hpp's kNf4Levels), for the kernels that decode NF4; each block
// copies it to shared memory, where lanes reading different levels do not serialise.
__constant__ float kNf4Levels[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                     -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                     0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
                                     0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// out (n) bf16 = NF4 level * block absmax (the CPU's nf4_dequantize, rounded once to bf16); the
// double-quantised absmax is code[q] * absmax2 + offset, in that order without contraction (as on the CPU).
__global__ void nf4_dequantize_k(bf16 *out, const uint8_t *packed, const float *absmax, const uint8_t *qabsmax, const float *absmax2,
                                 float offset, const float *code, long n) {
    __shared__ float levels[16];
    if (threadIdx.x < 16) levels[threadIdx.x] = kNf4Levels[threadIdx.x];
    __syncthreads();
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += long(gridDim.x) * blockDim.x) {
        const uint8_t byte = packed[i / 2];
        const uint8_t q = i % 2 == 0 ? byte >> 4 : byte & 0x0F;
        const long b = i / 64;
        const float am = absmax ? absmax[b] : __fadd_rn(__fmul_rn(code[qabsmax[b]], absmax2[b / 256]), offset);
        out[i] = __float2bfloat16(__fmul_rn(levels[q], am));
    }
}

// The fused NF4 dequantise-and-multiply for products of few rows (decoding; bitsandbytes'
// gemm_4bit_inference does the same): y[m, col0 + o] = sum_k x[m, k] * W[o, k] for m < N <= kNf4FusedRows,
// W (out, in) read as NF4 straight from memory and never written out in bf16. One warp an output
// row: each lane decodes 8 weights at a time (one 32-bit word of packed nibbles, all in one absmax
// block as in % 8 == 0), rounds each to bf16 exactly as nf4_dequantize does, and accumulates in fp32;
// the warp's partial sums are reduced with shuffles and rounded once to bf16.
template <int MAXM>
__global__ void nf4_matmul_k(bf16 *y, int ldy, int col0, const bf16 *x, int ldx, int N, int in, int out, const uint8_t *packed,
                             const float *absmax, const uint8_t *qabsmax, const float *absmax2, float offset, const float *code) {
    __shared__ float levels[16];
    if (threadIdx.x < 16) levels[threadIdx.x] = kNf4Levels[threadIdx.x];
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int o = blockIdx.x * (blockDim.x / 32) + warp;
    if (o >= out) return;
    float acc[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) acc[m] = 0.0f;
    const long row = long(o) * in;
    for (int k = lane * 8; k < in; k += 32 * 8) {
        const long i = row + k;  // a multiple of 8: its 8 weights share one block of 64
        const long b = i / 64;
        const float am = absmax ? absmax[b] : __fadd_rn(__fmul_rn(code[qabsmax[b]], absmax2[b / 256]), offset);
        const uint32_t word = *reinterpret_cast<const uint32_t *>(packed + i / 2);
        float w[8];
#pragma unroll
        for (int j = 0; j < 4; ++j) {  // byte j holds weights 2j (high nibble) and 2j + 1
            const uint32_t byte = (word >> (8 * j)) & 0xFFu;
            w[2 * j] = __bfloat162float(__float2bfloat16(__fmul_rn(levels[byte >> 4], am)));
            w[2 * j + 1] = __bfloat162float(__float2bfloat16(__fmul_rn(levels[byte & 0x0F], am)));
        }
#pragma unroll
        for (int m = 0; m < MAXM; ++m) {
            if (m >= N) break;
            const bf16 *xr = x + long(m) * ldx + k;
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[m] = fmaf(__bfloat162float(xr[j]), w[j], acc[m]);
        }
    }
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
        if (m >= N) break;
        float v = acc[m];
        for (int s = 16; s > 0; s /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, s);
        if (lane == 0) y[long(m) * ldy + col0 + o] = __float2bfloat16(v);
    }
}

// Trainable token rows' embedding gradient: g (k, d) += dres (n, d) summed over the rows whose token
// is ids[j]. One block a row (rows of other tokens return at once).
__global__ void token_rows_grad_emb_k(float *g, const float *dres, const int32_t *tokens, long N, int d, const int32_t *ids, int k) {
    const long n = blockIdx.x;
    int j = 0;
    while (j < k && ids[j] != tokens[n]) ++j;
    if (j == k) return;
    for (int i = threadIdx.x; i < d; i += blockDim.x) atomicAdd(g + long(j) * d + i, dres[n * d + i]);
}

// Trainable token rows' LM-head gradient: g (k, d) += cdl[:, ids]^T cx over a classifier chunk of n
// rows (cdl (n, V), cx (n, d)). One block a token row.
__global__ void token_rows_grad_head_k(float *g, const bf16 *cdl, const bf16 *cx, long n, int V, int d, const int32_t *ids) {
    const int j = blockIdx.x;
    const int id = ids[j];
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float s = 0.0f;
        for (long r = 0; r < n; ++r) s += __bfloat162float(cdl[r * V + id]) * __bfloat162float(cx[r * d + i]);
        g[long(j) * d + i] += s;
    }
}

// The model's rows at ids (dst32 and/or dst16, (rows, d)) = src (k, d): the trained token rows.
__global__ void set_token_rows_k(float *dst32, bf16 *dst16, const float *src, int d, const int32_t *ids) {
    const int j = blockIdx.x;
    const long row = long(ids[j]) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = src[long(j) * d + i];
        if (dst32) dst32[row + i] = v;
        if (dst16) dst16[row + i] = __float2bfloat16(v);
    }
}

__global__ void dropout_residual_backward_k(bf16 *dy, const float *dres, long n, float p, DropoutKey key, uint32_t word, bool on) {
    const long g = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (g * 4 >= n) return;
    const Mask4 mask(g, p, key, word, on);
    for (int j = 0; j < 4 && g * 4 + j < n; ++j) dy[g * 4 + j] = __float2bfloat16(mask.apply(j, dres[g * 4 + j]));
}

__global__ void swiglu_forward_k(bf16 *h, const bf16 *gu, long N, int F) {
    const long id = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= N * F) return;
    const long n = id / F;
    const int j = int(id % F);
    const float g = __bfloat162float(gu[n * 2 * F + j]), u = __bfloat162float(gu[n * 2 * F + F + j]);
    const float s = 1.0f / (1.0f + __expf(-g));
    h[id] = __float2bfloat16(g * s * u);
}

__global__ void swiglu_backward_k(bf16 *dgu, const bf16 *dh, const bf16 *gu, long N, int F) {
    const long id = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= N * F) return;
    const long n = id / F;
    const int j = int(id % F);
    const float g = __bfloat162float(gu[n * 2 * F + j]), u = __bfloat162float(gu[n * 2 * F + F + j]);
    const float d = __bfloat162float(dh[id]);
    const float s = 1.0f / (1.0f + __expf(-g));
    dgu[n * 2 * F + j] = __float2bfloat16(d * u * s * (1.0f + g * (1.0f - s)));
    dgu[n * 2 * F + F + j] = __float2bfloat16(d * g * s);
}

// One block per row: online max/sum in one pass, then the gradient in a second.
template <bool kGrad>
__global__ void cross_entropy_k(bf16 *dlogits, double *loss_sum, float *lp, const float *logits, const int32_t *labels,
                                int V, float inv_norm) {
    __shared__ float sm[32], ss[32];
    const long r = blockIdx.x;
    const float *row = logits + r * V;
    float m = -INFINITY, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float x = row[j];
        if (x > m) {
            s = s * __expf(m - x) + 1.0f;
            m = x;
        } else {
            s += __expf(x - m);
        }
    }
    // combine (m, s) across the warp, then across warps
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        const float mm = fmaxf(m, m2);
        s = (m == -INFINITY ? 0.0f : s * __expf(m - mm)) + (m2 == -INFINITY ? 0.0f : s2 * __expf(m2 - mm));
        m = mm;
    }
    const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp, nw = blockDim.x / kWarp;
    if (lane == 0) {
        sm[w] = m;
        ss[w] = s;
    }
    __syncthreads();
    float M = -INFINITY;
    for (int i = 0; i < nw; ++i) M = fmaxf(M, sm[i]);
    float S = 0.0f;
    for (int i = 0; i < nw; ++i) S += sm[i] == -INFINITY ? 0.0f : ss[i] * __expf(sm[i] - M);
    const float lse = M + __logf(S);
    const int y = labels[r];
    if (threadIdx.x == 0) {
        if (kGrad) atomicAdd(loss_sum, double(lse - row[y]));
        else lp[r] = row[y] - lse;
    }
    if (!kGrad) return;
    bf16 *drow = dlogits + r * V;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        const float pj = __expf(row[j] - lse);
        drow[j] = __float2bfloat16((pj - (j == y ? 1.0f : 0.0f)) * inv_norm);
    }
}

__global__ void gather_rows_k(bf16 *dst, const bf16 *src, const int64_t *idx, int d) {
    const long r = blockIdx.x;
    const bf16 *s = src + idx[r] * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[r * d + i] = s[i];
}

__global__ void scatter_rows_k(bf16 *dst, const bf16 *src, const int64_t *idx, int d) {
    const long r = blockIdx.x;
    bf16 *o = dst + idx[r] * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = src[r * d + i];
}

__global__ void cast_f32_bf16_k(bf16 *dst, const float *src, long n) {
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += long(gridDim.x) * blockDim.x)
        dst[i] = __float2bfloat16(src[i]);
}
__global__ void cast_bf16_f32_k(float *dst, const bf16 *src, long n) {
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += long(gridDim.x) * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

__global__ void sum_squares_k(double *out, const float *x, long n) {
    __shared__ double sh[32];
    double acc = 0.0;
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += long(gridDim.x) * blockDim.x)
        acc += double(x[i]) * double(x[i]);
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) atomicAdd(out, acc);
}

__global__ void clip_scale_k(float *scale, const double *sumsq, float clip) {
    const double norm = sqrt(*sumsq);
    *scale = (clip > 0.0f && norm > double(clip)) ? float(double(clip) / (norm + 1e-6)) : 1.0f;
}

__global__ void adamw_update_k(float *p32, bf16 *p16, float *m, float *v, const float *g, const AdamChunk *chunks, AdamArgs a) {
    const AdamChunk c = chunks[blockIdx.x];
    const float gs = *a.grad_scale;
    const float shrink = c.decay ? 1.0f - a.lr * a.weight_decay : 1.0f;
    for (int j = threadIdx.x; j < c.len; j += blockDim.x) {
        const long i = c.start + j, s = i - a.state_base;
        const float gi = g[i] * gs;
        const float mi = a.beta1 * m[s] + (1.0f - a.beta1) * gi;
        const float vi = a.beta2 * v[s] + (1.0f - a.beta2) * gi * gi;
        m[s] = mi;
        v[s] = vi;
        const float denom = sqrtf(vi) / a.bc2_sqrt + a.eps;
        const float pi = p32[i - a.p32_base] * shrink - a.step_size * mi / denom;
        p32[i - a.p32_base] = pi;
        p16[i] = __float2bfloat16(pi);
    }
}

// dst (n) += src (n); grid-stride
__global__ void add_into_k(float *dst, const float *src, long n) {
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += long(gridDim.x) * blockDim.x) dst[i] += src[i];
}

// out (n) = res + y; grid-stride
__global__ void residual_add_k(float *out, const float *res, const bf16 *y, long n) {
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += long(gridDim.x) * blockDim.x)
        out[i] = res[i] + __bfloat162float(y[i]);
}

// y (N, n) bf16 += b (n) fp32, added in fp32 then rounded; grid-stride
__global__ void bias_forward_k(bf16 *y, const float *b, long N, int n) {
    const long total = N * n;
    for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += long(gridDim.x) * blockDim.x)
        y[i] = __float2bfloat16(__bfloat162float(y[i]) + b[i % n]);
}

// db (n) += sum over the N rows of dy (N, n): one thread a column, rows in order (deterministic)
__global__ void bias_backward_k(float *db, const bf16 *dy, long N, int n) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    float s = 0.0f;
    for (long r = 0; r < N; ++r) s += __bfloat162float(dy[r * n + j]);
    db[j] += s;
}

int grid_for(long n, int threads, int cap = 65535 * 8) { return int(std::min<long>(cap, (n + threads - 1) / threads)); }

}  // namespace

void encoder_forward(float *resid, const float *emb, const int32_t *tokens, long N, int d, cudaStream_t st) {
    if (N == 0) return;
    encoder_forward_k<<<unsigned(N), 256, 0, st>>>(resid, emb, tokens, N, d);
    LIMA_CUDA_LAUNCHED("encoder_forward");
}

void encoder_backward(float *demb, const float *dres, const int32_t *tokens, long N, int d, cudaStream_t st) {
    if (N == 0) return;
    encoder_backward_k<<<unsigned(N), 256, 0, st>>>(demb, dres, tokens, N, d);
    LIMA_CUDA_LAUNCHED("encoder_backward");
}

void rmsnorm_forward(bf16 *out, float *rstd, const float *x, const float *w, long N, int d, float eps, cudaStream_t st) {
    if (N == 0) return;
    rmsnorm_forward_k<<<ceil_div(N, 8), 256, 0, st>>>(out, rstd, x, w, N, d, eps);
    LIMA_CUDA_LAUNCHED("rmsnorm_forward");
}

void rmsnorm_backward(float *dres, float *dw, const bf16 *dout, const float *x, const float *w, const float *rstd, long N,
                      int d, bool accumulate, cudaStream_t st) {
    if (N == 0) return;
    const size_t smem = size_t(d) * sizeof(float);
    static int configured = 0;
    if (smem > 48 * 1024 && configured < int(smem)) {
        LIMA_CUDA_CHECK(cudaFuncSetAttribute(rmsnorm_backward_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
        configured = int(smem);
    }
    const int blocks = int(std::min<long>(264, (N + 7) / 8));
    rmsnorm_backward_k<<<blocks, 256, smem, st>>>(dres, dw, dout, x, w, rstd, N, d, accumulate);
    LIMA_CUDA_LAUNCHED("rmsnorm_backward");
}

namespace {
void rope_apply(bf16 *x, int ld, const int32_t *pos, long N, int heads, int hd, const float *cos, const float *sin, float sign,
                cudaStream_t st) {
    const long total = N * heads * (hd / 2);
    if (total == 0) return;
    rope_k<<<ceil_div(total, 256), 256, 0, st>>>(x, ld, pos, N, heads, hd, cos, sin, sign);
    LIMA_CUDA_LAUNCHED(sign > 0 ? "rope_forward" : "rope_backward");
}
}  // namespace

void rope_forward(bf16 *x, int ld, const int32_t *pos, long N, int heads, int hd, const float *cos, const float *sin,
                  cudaStream_t st) {
    rope_apply(x, ld, pos, N, heads, hd, cos, sin, 1.0f, st);
}

void rope_backward(bf16 *dx, int ld, const int32_t *pos, long N, int heads, int hd, const float *cos, const float *sin,
                   cudaStream_t st) {
    rope_apply(dx, ld, pos, N, heads, hd, cos, sin, -1.0f, st);
}

void dropout_residual_forward(float *out, const float *res, const bf16 *y, long n, float p, const DropoutKey *key, int layer,
                              int site, cudaStream_t st) {
    if (n == 0) return;
    const bool on = key && p > 0.0f;
    const DropoutKey k = key ? *key : DropoutKey{0, 0, 0};
    dropout_residual_forward_k<<<ceil_div((n + 3) / 4, 256), 256, 0, st>>>(out, res, y, n, p, k, dropout_word(k, layer, site), on);
    LIMA_CUDA_LAUNCHED("dropout_residual_forward");
}

void dropout_copy(bf16 *out, const bf16 *in, long n, float p, const DropoutKey &key, int layer, int site, cudaStream_t st) {
    if (n == 0) return;
    dropout_copy_k<<<ceil_div((n + 3) / 4, 256), 256, 0, st>>>(out, in, n, p, key, dropout_word(key, layer, site));
    LIMA_CUDA_LAUNCHED("dropout_copy");
}

void add_cols(bf16 *out, int ld, int col0, const bf16 *t, long N, int n, float scale, cudaStream_t st) {
    if (N == 0 || n == 0) return;
    add_cols_k<<<grid_for(N * n, 256), 256, 0, st>>>(out, ld, col0, t, N, n, scale);
    LIMA_CUDA_LAUNCHED("add_cols");
}

void gather_cols(bf16 *t, const bf16 *src, int ld, int col0, long N, int n, float scale, cudaStream_t st) {
    if (N == 0 || n == 0) return;
    gather_cols_k<<<grid_for(N * n, 256), 256, 0, st>>>(t, src, ld, col0, N, n, scale);
    LIMA_CUDA_LAUNCHED("gather_cols");
}

void add_into(float *dst, const float *src, long n, cudaStream_t st) {
    if (n == 0) return;
    add_into_k<<<grid_for(n, 256), 256, 0, st>>>(dst, src, n);
    LIMA_CUDA_LAUNCHED("add_into");
}

void nf4_dequantize(bf16 *out, const uint8_t *packed, const float *absmax, const uint8_t *qabsmax, const float *absmax2, float offset,
                    const float *code, long n, cudaStream_t st) {
    if (n == 0) return;
    nf4_dequantize_k<<<grid_for(n, 256), 256, 0, st>>>(out, packed, absmax, qabsmax, absmax2, offset, code, n);
    LIMA_CUDA_LAUNCHED("nf4_dequantize");
}

void nf4_matmul(bf16 *y, int ldy, int col0, const bf16 *x, int ldx, long N, int in, int out, const uint8_t *packed,
                const float *absmax, const uint8_t *qabsmax, const float *absmax2, float offset, const float *code, cudaStream_t st) {
    LIMA_REQUIRE(N <= kNf4FusedRows && in % 8 == 0, LIMA_ERR_INTERNAL, "nf4_matmul: ", N, " rows (at most ", kNf4FusedRows,
                 ") of ", in, " columns (a multiple of 8)");
    if (N == 0 || out == 0) return;
    const int warps = 8;
    nf4_matmul_k<kNf4FusedRows><<<unsigned((out + warps - 1) / warps), 32 * warps, 0, st>>>(
        y, ldy, col0, x, ldx, int(N), in, out, packed, absmax, qabsmax, absmax2, offset, code);
    LIMA_CUDA_LAUNCHED("nf4_matmul");
}

void token_rows_grad_emb(float *g, const float *dres, const int32_t *tokens, long N, int d, const int32_t *ids, int k, cudaStream_t st) {
    if (N == 0 || k == 0) return;
    token_rows_grad_emb_k<<<unsigned(N), 256, 0, st>>>(g, dres, tokens, N, d, ids, k);
    LIMA_CUDA_LAUNCHED("token_rows_grad_emb");
}

void token_rows_grad_head(float *g, const bf16 *cdl, const bf16 *cx, long n, int V, int d, const int32_t *ids, int k, cudaStream_t st) {
    if (n == 0 || k == 0) return;
    token_rows_grad_head_k<<<unsigned(k), 256, 0, st>>>(g, cdl, cx, n, V, d, ids);
    LIMA_CUDA_LAUNCHED("token_rows_grad_head");
}

void set_token_rows(float *dst32, bf16 *dst16, const float *src, int d, const int32_t *ids, int k, cudaStream_t st) {
    if (k == 0) return;
    set_token_rows_k<<<unsigned(k), 256, 0, st>>>(dst32, dst16, src, d, ids);
    LIMA_CUDA_LAUNCHED("set_token_rows");
}

void bias_forward(bf16 *y, const float *b, long N, int n, cudaStream_t st) {
    if (N == 0 || n == 0) return;
    bias_forward_k<<<grid_for(N * n, 256), 256, 0, st>>>(y, b, N, n);
    LIMA_CUDA_LAUNCHED("bias_forward");
}

void bias_backward(float *db, const bf16 *dy, long N, int n, cudaStream_t st) {
    if (N == 0 || n == 0) return;
    bias_backward_k<<<unsigned((n + 127) / 128), 128, 0, st>>>(db, dy, N, n);
    LIMA_CUDA_LAUNCHED("bias_backward");
}

void residual_add(float *out, const float *res, const bf16 *y, long n, cudaStream_t st) {
    if (n == 0) return;
    residual_add_k<<<grid_for(n, 256), 256, 0, st>>>(out, res, y, n);
    LIMA_CUDA_LAUNCHED("residual_add");
}

void dropout_residual_backward(bf16 *dy, const float *dres, long n, float p, const DropoutKey *key, int layer, int site,
                               cudaStream_t st) {
    if (n == 0) return;
    const bool on = key && p > 0.0f;
    const DropoutKey k = key ? *key : DropoutKey{0, 0, 0};
    dropout_residual_backward_k<<<ceil_div((n + 3) / 4, 256), 256, 0, st>>>(dy, dres, n, p, k, dropout_word(k, layer, site), on);
    LIMA_CUDA_LAUNCHED("dropout_residual_backward");
}

void swiglu_forward(bf16 *h, const bf16 *gu, long N, int F, cudaStream_t st) {
    if (N * F == 0) return;
    swiglu_forward_k<<<ceil_div(N * F, 256), 256, 0, st>>>(h, gu, N, F);
    LIMA_CUDA_LAUNCHED("swiglu_forward");
}

void swiglu_backward(bf16 *dgu, const bf16 *dh, const bf16 *gu, long N, int F, cudaStream_t st) {
    if (N * F == 0) return;
    swiglu_backward_k<<<ceil_div(N * F, 256), 256, 0, st>>>(dgu, dh, gu, N, F);
    LIMA_CUDA_LAUNCHED("swiglu_backward");
}

void cross_entropy(bf16 *dlogits, double *loss_sum, const float *logits, const int32_t *labels, long C, int V, float inv_norm,
                   cudaStream_t st) {
    if (C == 0) return;
    cross_entropy_k<true><<<unsigned(C), 512, 0, st>>>(dlogits, loss_sum, nullptr, logits, labels, V, inv_norm);
    LIMA_CUDA_LAUNCHED("cross_entropy");
}

void label_logprobs(float *lp, const float *logits, const int32_t *labels, long C, int V, cudaStream_t st) {
    if (C == 0) return;
    cross_entropy_k<false><<<unsigned(C), 512, 0, st>>>(nullptr, nullptr, lp, logits, labels, V, 0.0f);
    LIMA_CUDA_LAUNCHED("label_logprobs");
}

void gather_rows(bf16 *dst, const bf16 *src, const int64_t *idx, long C, int d, cudaStream_t st) {
    if (C == 0) return;
    gather_rows_k<<<unsigned(C), 256, 0, st>>>(dst, src, idx, d);
    LIMA_CUDA_LAUNCHED("gather_rows");
}

void scatter_rows(bf16 *dst, const bf16 *src, const int64_t *idx, long C, int d, cudaStream_t st) {
    if (C == 0) return;
    scatter_rows_k<<<unsigned(C), 256, 0, st>>>(dst, src, idx, d);
    LIMA_CUDA_LAUNCHED("scatter_rows");
}

void cast_f32_bf16(bf16 *dst, const float *src, long n, cudaStream_t st) {
    if (n == 0) return;
    cast_f32_bf16_k<<<grid_for(n, 256), 256, 0, st>>>(dst, src, n);
    LIMA_CUDA_LAUNCHED("cast_f32_bf16");
}

void cast_bf16_f32(float *dst, const bf16 *src, long n, cudaStream_t st) {
    if (n == 0) return;
    cast_bf16_f32_k<<<grid_for(n, 256), 256, 0, st>>>(dst, src, n);
    LIMA_CUDA_LAUNCHED("cast_bf16_f32");
}

void sum_squares(double *out, const float *x, long n, cudaStream_t st) {
    if (n == 0) return;
    sum_squares_k<<<grid_for(n, 256, 1056), 256, 0, st>>>(out, x, n);
    LIMA_CUDA_LAUNCHED("sum_squares");
}

void clip_scale(float *scale, const double *sumsq, float clip, cudaStream_t st) {
    clip_scale_k<<<1, 1, 0, st>>>(scale, sumsq, clip);
    LIMA_CUDA_LAUNCHED("clip_scale");
}

void adamw_update(float *p32, bf16 *p16, float *m, float *v, const float *g, const AdamChunk *chunks, int num_chunks,
                  const AdamArgs &a, cudaStream_t st) {
    if (num_chunks == 0) return;
    adamw_update_k<<<unsigned(num_chunks), 256, 0, st>>>(p32, p16, m, v, g, chunks, a);
    LIMA_CUDA_LAUNCHED("adamw_update");
}

}  // namespace lima::cuda
