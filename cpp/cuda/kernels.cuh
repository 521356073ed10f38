// The CUDA backend's kernel families (kernels.cu, attention.cu) behind host-side launchers, so that
// the backend and the GPU tests call the same entry points. Activations are bf16, the residual
// stream and every reduction fp32; each launcher enqueues on `st` and checks the launch.
#pragma once
#include "cuda_common.cuh"
#include "../src/philox.hpp"

namespace lima::cuda {

// resid (N, d) fp32 = emb (V, d) fp32 rows of tokens
void encoder_forward(float *resid, const float *emb, const int32_t *tokens, long N, int d, cudaStream_t st);
// demb (V, d) += dres rows (atomic: a token may repeat)
void encoder_backward(float *demb, const float *dres, const int32_t *tokens, long N, int d, cudaStream_t st);

// out (N, d) bf16 = w * x * rstd, rstd (N) saved
void rmsnorm_forward(bf16 *out, float *rstd, const float *x, const float *w, long N, int d, float eps, cudaStream_t st);
// dres (N, d) (+)= dx from dout (bf16); dw (d) += sum over rows (dw null: a frozen gain). accumulate =
// false overwrites dres.
void rmsnorm_backward(float *dres, float *dw, const bf16 *dout, const float *x, const float *w, const float *rstd, long N,
                      int d, bool accumulate, cudaStream_t st);

// Rotates `heads` consecutive heads of hd starting at column 0 of each row of x (N, ld) bf16 in
// place; cos/sin tables (positions, hd/2) fp32. The backward applies the transpose rotation to dx.
void rope_forward(bf16 *x, int ld, const int32_t *pos, long N, int heads, int hd, const float *cos, const float *sin,
                  cudaStream_t st);
void rope_backward(bf16 *dx, int ld, const int32_t *pos, long N, int heads, int hd, const float *cos, const float *sin,
                   cudaStream_t st);

// dst (n) += src (n), fp32 (ZeRO-3: a unit's reduce-scattered gradient into the rank's piece)
void add_into(float *dst, const float *src, long n, cudaStream_t st);
// out (n) = res + y: the residual connection without dropout (eval, prefill, decode). out may be res.
void residual_add(float *out, const float *res, const bf16 *y, long n, cudaStream_t st);
// LoRA (the CPU's cpu/lora.hpp, around cuBLASLt products): out (n) = dropout(in) with the CPU's
// masks of (key, layer, site); out[:, col0 : col0 + n] (row stride ld) += scale * t (N, n); t (N, n) =
// scale * src[:, col0 : col0 + n]; the trainable token rows' gradients (embedding: the rows of dres
// whose token is ids[j]; LM head: cdl[:, ids]^T cx over a classifier chunk) and their copy into the
// model's rows (dst32 and/or dst16 may be null).
// QLoRA's frozen projections: out (n) bf16 = NF4 level * block absmax (absmax NULL: double-quantised,
// code[qabsmax] * absmax2[block / 256] + offset), the CPU's nf4_dequantize rounded once to bf16.
void nf4_dequantize(bf16 *out, const uint8_t *packed, const float *absmax, const uint8_t *qabsmax, const float *absmax2, float offset,
                    const float *code, long n, cudaStream_t st);
// y[m, col0 + o] (row stride ldy) = sum_k x[m, k] (row stride ldx) * W[o, k] with W (out, in) in NF4
// as nf4_dequantize reads it: the fused dequantise-and-multiply for N <= kNf4FusedRows rows (decoding),
// in % 8 == 0. Each weight is rounded to bf16 as nf4_dequantize rounds it, so the result equals the
// dequantised product up to the order of the fp32 sum.
constexpr int kNf4FusedRows = 8;
void nf4_matmul(bf16 *y, int ldy, int col0, const bf16 *x, int ldx, long N, int in, int out, const uint8_t *packed,
                const float *absmax, const uint8_t *qabsmax, const float *absmax2, float offset, const float *code, cudaStream_t st);
void dropout_copy(bf16 *out, const bf16 *in, long n, float p, const DropoutKey &key, int layer, int site, cudaStream_t st);
void add_cols(bf16 *out, int ld, int col0, const bf16 *t, long N, int n, float scale, cudaStream_t st);
void gather_cols(bf16 *t, const bf16 *src, int ld, int col0, long N, int n, float scale, cudaStream_t st);
void token_rows_grad_emb(float *g, const float *dres, const int32_t *tokens, long N, int d, const int32_t *ids, int k, cudaStream_t st);
void token_rows_grad_head(float *g, const bf16 *cdl, const bf16 *cx, long n, int V, int d, const int32_t *ids, int k, cudaStream_t st);
void set_token_rows(float *dst32, bf16 *dst16, const float *src, int d, const int32_t *ids, int k, cudaStream_t st);
// A Linear layer's bias (attention_bias, mlp_bias; the CPU's bias_forward/backward): y (N, n) bf16 += b
// (n), added in fp32; db (n) += the column sums of dy (N, n).
void bias_forward(bf16 *y, const float *b, long N, int n, cudaStream_t st);
void bias_backward(float *db, const bf16 *dy, long N, int n, cudaStream_t st);
// out (n) = res + dropout(y) with the Philox masks of the CPU backend (key == nullptr: no dropout).
void dropout_residual_forward(float *out, const float *res, const bf16 *y, long n, float p, const DropoutKey *key, int layer,
                              int site, cudaStream_t st);
// dy (n) bf16 = mask * scale * dres
void dropout_residual_backward(bf16 *dy, const float *dres, long n, float p, const DropoutKey *key, int layer, int site,
                               cudaStream_t st);

// h (N, F) = silu(g) * u, with gu (N, 2F) = [g | u] per row (the fused gate/up product)
void swiglu_forward(bf16 *h, const bf16 *gu, long N, int F, cudaStream_t st);
void swiglu_backward(bf16 *dgu, const bf16 *dh, const bf16 *gu, long N, int F, cudaStream_t st);

// Cross-entropy over C rows of fp32 logits (C, V): *loss_sum += lse - logit[label]; dlogits (C, V)
// bf16 = (softmax - onehot) * inv_norm.
void cross_entropy(bf16 *dlogits, double *loss_sum, const float *logits, const int32_t *labels, long C, int V, float inv_norm,
                   cudaStream_t st);
// lp[r] = logit[label] - lse, no gradient
void label_logprobs(float *lp, const float *logits, const int32_t *labels, long C, int V, cudaStream_t st);

// dst (C, d) = src rows idx[i]  /  dst rows idx[i] = src (C, d)
void gather_rows(bf16 *dst, const bf16 *src, const int64_t *idx, long C, int d, cudaStream_t st);
void scatter_rows(bf16 *dst, const bf16 *src, const int64_t *idx, long C, int d, cudaStream_t st);

void cast_f32_bf16(bf16 *dst, const float *src, long n, cudaStream_t st);
void cast_bf16_f32(float *dst, const bf16 *src, long n, cudaStream_t st);

// *out += sum of x^2 (double accumulation)
void sum_squares(double *out, const float *x, long n, cudaStream_t st);

// One AdamW pass over every tensor (torch.optim.AdamW arithmetic), updating the fp32 master, its
// bf16 copy and both moments. chunks: device table of {start, len, decay} covering the params.
struct AdamChunk {
    int64_t start;
    int32_t len;
    int32_t decay;
};
struct AdamArgs {
    float lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt;
    const float *grad_scale;  // device scalar (clipping factor)
    // element i's moments are m[i - state_base], v[i - state_base] and its fp32 weight p32[i - p32_base]
    // (a ZeRO shard's moments, and with full fine-tuning its fp32 master, start at the shard)
    int64_t state_base = 0, p32_base = 0;
};
void adamw_update(float *p32, bf16 *p16, float *m, float *v, const float *g, const AdamChunk *chunks, int num_chunks,
                  const AdamArgs &a, cudaStream_t st);
// scale = (clip > 0 && norm > clip) ? clip / (norm + 1e-6) : 1, from the device sum of squares
void clip_scale(float *scale, const double *sumsq, float clip, cudaStream_t st);

// ---- attention (attention.cu): causal GQA over packed rows, flash-style (no T x T buffer).
// qkv (N, ld) bf16: q heads at column 0, then kv heads of k, then of v (the fused QKV product).
// Work items are (segment, 64-row tile) pairs: tiles[i] = {segment start (flat), tile row offset,
// segment length}.
struct AttnTile {
    int64_t start;
    int32_t row0, len;
};
struct AttnShape {
    long N;
    int Hq, Hkv, hd, ld;
};
// out (N, Hq*hd) bf16 (padding rows left as they are), lse (N, Hq) fp32 natural log-sum-exp of
// the scaled scores.
void attention_forward(bf16 *out, float *lse, const bf16 *qkv, const AttnTile *tiles, int num_tiles, const AttnShape &s,
                       cudaStream_t st);
// dqkv (N, ld) bf16 from dout (N, Hq*hd); scratch Dsum (N, Hq) fp32. Padding rows of dqkv set 0.
void attention_backward(bf16 *dqkv, float *Dsum, const bf16 *dout, const bf16 *out, const float *lse, const bf16 *qkv,
                        const AttnTile *tiles, int num_tiles, const AttnShape &s, cudaStream_t st);
bool attention_supports(int hd);
// The attention kernels' variant, for timing candidates against each other on a GPU: 0 (the default,
// checked on an H100: 32-bit shared loads), 1 (ldmatrix fragments, no mask arithmetic on tiles wholly
// below the diagonal), 2 (1 with cp.async double buffering of the streamed tiles). Every variant
// computes the same sums in the same order. Read once from LIMA_CUDA_ATTENTION (unset: 0; anything but
// 0, 1 or 2 is refused, naming it); set_attention_variant overrides it (tests, benchmarks).
constexpr int kAttentionVariants = 3;
int attention_variant_from_env();
int attention_variant();
void set_attention_variant(int v);

// ---- KV cache and decode attention (kv_cache.cu), the decoding side of cpu/attention.hpp.
// Caches are (rows, max_len, kvd) bf16 per layer; keys after rope.
// Copies the k and v columns of qkv (N, ld; k at column qd, v at qd + kvd) into kc/vc at
// (row[t], pos[t]); row == nullptr: token t is row t. Rows whose active flag is 0 are skipped
// (active may be null).
void kv_cache_store(bf16 *kc, bf16 *vc, const bf16 *qkv, int ld, int qd, int kvd, const int32_t *row, const int32_t *pos,
                    const uint8_t *active, long N, int max_len, cudaStream_t st);
// Cache positions per block of the split-cache decode attention, and the spans a cache of max_len has.
constexpr int kDecodeSpan = 256;
inline int decode_spans(int max_len) { return (max_len + kDecodeSpan - 1) / kDecodeSpan; }
// out (rows, Hq*hd) bf16: row t's query (qkv row t, one token at pos[t]) against positions
// [0, pos[t]] of cache row t, in spans merged at the end; inactive rows get zeros. part_o
// (rows, Hq, spans, hd) and part_ml (rows, Hq, spans, 2) are scratch.
void decode_attention(bf16 *out, float *part_o, float *part_ml, const bf16 *qkv, int ld, const bf16 *kc, const bf16 *vc,
                      const int32_t *pos, const uint8_t *active, int rows, int Hq, int Hkv, int hd, int max_len,
                      cudaStream_t st);

}  // namespace lima::cuda
