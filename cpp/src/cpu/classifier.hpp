// classifier: the LM head and cross-entropy. The training form is fused (as llm.c's
// fused_classifier): only positions that predict a target are computed, in chunks, and each
// chunk's logits buffer is turned into dlogits in place, so full (N, V) probabilities never exist.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lima::cpu {

inline long classifier_chunk(long M, int V) { return std::max<long>(16, std::min<long>(M, (1L << 23) / V)); }

// Per row of logits (n, V): log-sum-exp. Rows in parallel.
inline void logsumexp_rows(float *lse, const float *logits, long n, int V) {
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; ++r) {
        const float *row = logits + r * V;
        float mx = row[0];
        for (int j = 1; j < V; ++j) mx = std::max(mx, row[j]);
        float sum = 0.0f;
        for (int j = 0; j < V; ++j) sum += std::exp(row[j] - mx);
        lse[r] = mx + std::log(sum);
    }
}

// dw (rows.size(), d) += the rows of the LM-head gradient L^T (n, V) @ X (n, d) at token ids `rows`.
inline void lm_head_rows_backward(float *dw, const int32_t *rows, int n_rows, const float *L, const float *X, long n, int d,
                                  int V) {
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n_rows; ++j) {
        float *o = dw + long(j) * d;
        for (long i = 0; i < n; ++i) {
            const float s = L[i * V + rows[j]];
            const float *x = X + i * d;
            for (int c = 0; c < d; ++c) o[c] += s * x[c];
        }
    }
}

// rows (M): flat positions of xf (N, d) that predict labels (M). Returns sum of -log p(label).
// dxf rows at those positions are overwritten with their gradient; dw (V, d) += LM-head gradient.
// Gradients are scaled by inv_norm (1 / targets in the optimiser step). With dw_rows (a frozen LM head
// but for some trainable rows, as LoRA's trainable tokens), dw is (n_dw_rows, d): those rows only.
inline double classifier_train(float *dxf, float *dw, const float *xf, const float *w, const long *rows,
                               const int32_t *labels, long M, int d, int V, float inv_norm,
                               const int32_t *dw_rows = nullptr, int n_dw_rows = 0) {
    const long C = classifier_chunk(M, V);
    std::vector<float> X(size_t(C) * d), L(size_t(C) * V), dX(size_t(C) * d), lse(static_cast<size_t>(C));
    double loss = 0.0;
    for (long c0 = 0; c0 < M; c0 += C) {
        const long n = std::min(C, M - c0);
        for (long r = 0; r < n; ++r) std::memcpy(&X[size_t(r * d)], xf + rows[c0 + r] * d, sizeof(float) * size_t(d));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), V, d, 1.0f, X.data(), d, w, d, 0.0f, L.data(), V);
        logsumexp_rows(lse.data(), L.data(), n, V);
#pragma omp parallel for schedule(static) reduction(+ : loss)
        for (long r = 0; r < n; ++r) {
            float *row = &L[size_t(r * V)];
            const int y = labels[c0 + r];
            loss += double(lse[size_t(r)] - row[y]);
            for (int j = 0; j < V; ++j) row[j] = std::exp(row[j] - lse[size_t(r)]) * inv_norm;
            row[y] -= inv_norm;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), d, V, 1.0f, L.data(), V, w, d, 0.0f, dX.data(), d);
        if (dw_rows)
            lm_head_rows_backward(dw, dw_rows, n_dw_rows, L.data(), X.data(), n, d, V);
        else if (dw)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, d, int(n), 1.0f, L.data(), V, X.data(), d, 1.0f, dw, d);
        for (long r = 0; r < n; ++r) std::memcpy(dxf + rows[c0 + r] * d, &dX[size_t(r * d)], sizeof(float) * size_t(d));
    }
    return loss;
}

// logits (N, V) = xf (N, d) @ w (V, d)^T
inline void classifier_logits(float *logits, const float *xf, const float *w, long N, int d, int V) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), V, d, 1.0f, xf, d, w, d, 0.0f, logits, V);
}

// out[rows[i] + 1] = log p(labels[i]) for the positions rows (M), chunked like the training form.
inline void classifier_logprobs(float *out, const float *xf, const float *w, const long *rows, const int32_t *labels,
                                long M, int d, int V) {
    const long C = classifier_chunk(M, V);
    std::vector<float> X(size_t(C) * d), L(size_t(C) * V), lse(static_cast<size_t>(C));
    for (long c0 = 0; c0 < M; c0 += C) {
        const long n = std::min(C, M - c0);
        for (long r = 0; r < n; ++r) std::memcpy(&X[size_t(r * d)], xf + rows[c0 + r] * d, sizeof(float) * size_t(d));
        classifier_logits(L.data(), X.data(), w, n, d, V);
        logsumexp_rows(lse.data(), L.data(), n, V);
        for (long r = 0; r < n; ++r) out[rows[c0 + r] + 1] = L[size_t(r * V + labels[c0 + r])] - lse[size_t(r)];
    }
}

}  // namespace lima::cpu
