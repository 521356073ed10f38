// lora: the low-rank adapter of a frozen Linear layer (Hu et al., "LoRA", 2021), as PEFT computes it:
//   y = x @ W^T + scale * (dropout(x) @ A^T) @ B^T,   A (r, in), B (out, r), scale = alpha / r
// The product xa = dropout(x) @ A^T (N, r) is saved for backward; the dropout mask is never stored
// (backward redraws it from the same Philox key, as the residual dropout does).
#pragma once
#include <cblas.h>

#include <cstdint>
#include <vector>

#include "../philox.hpp"
#include "dropout.hpp"

namespace lima::cpu {

// The adapter's input: x itself, or a dropped copy in `scratch` when training with p > 0.
inline const float *lora_input(std::vector<float> &scratch, const float *x, long n, float p, const DropoutKey *key,
                               int layer, int target) {
    if (!key || p <= 0.0f) return x;
    scratch.assign(x, x + n);
    dropout_mask_apply(scratch.data(), n, p, lora_dropout_key(*key, target), layer, 0);
    return scratch.data();
}

// y (N, out) += scale * xa @ B^T where xa (N, r) = dropout(x) (N, in) @ A^T is written for backward.
inline void lora_forward(float *y, float *xa, const float *x, const float *A, const float *B, int N, int in, int out, int r,
                         float scale, float p, const DropoutKey *key, int layer, int target) {
    std::vector<float> scratch;
    const float *xin = lora_input(scratch, x, long(N) * in, p, key, layer, target);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, in, 1.0f, xin, in, A, in, 0.0f, xa, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, r, scale, xa, r, B, r, 1.0f, y, out);
}

// dx (N, in) += the adapter's part of d/dx;  dA (r, in) += ...;  dB (out, r) += ...  given dy (N, out).
inline void lora_backward(float *dx, float *dA, float *dB, const float *dy, const float *x, const float *xa, const float *A,
                          const float *B, int N, int in, int out, int r, float scale, float p, const DropoutKey *key, int layer,
                          int target) {
    std::vector<float> dxa(size_t(N) * size_t(r)), scratch;
    // dxa = scale * dy @ B;  dB += scale * dy^T @ xa
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, out, scale, dy, out, B, r, 0.0f, dxa.data(), r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, N, scale, dy, out, xa, r, 1.0f, dB, r);
    // dA += dxa^T @ dropout(x)
    const float *xin = lora_input(scratch, x, long(N) * in, p, key, layer, target);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, N, 1.0f, dxa.data(), r, xin, in, 1.0f, dA, in);
    if (!key || p <= 0.0f) {  // dx += dxa @ A
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, r, 1.0f, dxa.data(), r, A, in, 1.0f, dx, in);
        return;
    }
    scratch.assign(size_t(N) * size_t(in), 0.0f);  // through the same mask: dx += mask * scale_p * (dxa @ A)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, r, 1.0f, dxa.data(), r, A, in, 0.0f, scratch.data(), in);
    dropout_mask_apply(scratch.data(), long(N) * in, p, lora_dropout_key(*key, target), layer, 0);
    residual_add(dx, scratch.data(), long(N) * in);
}

// dw (rows.size(), d) += the embedding gradient of the rows at token ids `rows`: dx (N, d) summed
// over the positions holding each of those tokens.
inline void encoder_rows_backward(float *dw, const int32_t *rows, int n_rows, const float *dx, const int32_t *tokens, long N,
                                  int d) {
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n_rows; ++j) {
        float *o = dw + long(j) * d;
        for (long n = 0; n < N; ++n) {
            if (tokens[n] != rows[j]) continue;
            const float *s = dx + n * d;
            for (int c = 0; c < d; ++c) o[c] += s[c];
        }
    }
}

}  // namespace lima::cpu
