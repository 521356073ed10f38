// matmul: the Linear layers, y = x @ W^T with W stored (out, in) as in Hugging Face. OpenBLAS sgemm.
#pragma once
#include <cblas.h>

namespace lima::cpu {

// y (N, out) = x (N, in) @ w (out, in)^T
inline void matmul_forward(float *y, const float *x, const float *w, int N, int in, int out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
}

// dx (N, in) = (or +=, if accumulate_dx) dy (N, out) @ w (out, in);  dw (out, in) += dy^T @ x
// (dw == nullptr: a frozen weight, no gradient)
inline void matmul_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int in,
                            int out, bool accumulate_dx) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1.0f, dy, out, w, in,
                accumulate_dx ? 1.0f : 0.0f, dx, in);
    if (dw) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.0f, dy, out, x, in, 1.0f, dw, in);
}

// y (N, out) += b (out): a Linear layer's bias (attention_bias, mlp_bias)
inline void bias_forward(float *y, const float *b, long N, int out) {
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; ++n)
        for (int o = 0; o < out; ++o) y[n * out + o] += b[o];
}

// db (out) += sum over rows of dy (N, out)
inline void bias_backward(float *db, const float *dy, long N, int out) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < out; ++o) {
        double s = 0.0;
        for (long n = 0; n < N; ++n) s += dy[n * out + o];
        db[o] += float(s);
    }
}

}  // namespace lima::cpu
