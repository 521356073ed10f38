// attention: causal grouped-query attention over packed rows, flash-style: the forward keeps only
// the log-sum-exp per (token, head), never a (T, T) probability matrix, and the backward
// recomputes probabilities tile by tile. Each example (segment) of a packed row is its own block:
// attention never crosses a segment, and causal tiles skip keys after the last query of the tile.
// Scores and products are OpenBLAS sgemm calls on (64 x keys) tiles; parallel over
// (segment, head) in the forward and (segment, kv head) in the backward so that the dk/dv sums
// of a KV group stay on one thread.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lima::cpu {

struct Segment {
    long start;  // flat token index (b * T + t) of the segment's first token
    int len;
};

constexpr int kAttnTile = 64;

// out (N, Hq, hd), lse (N, Hq) from q (N, Hq, hd), k, v (N, Hkv, hd). Padding tokens (in no
// segment) get out = 0.
inline void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                              const std::vector<Segment> &segs, long N, int Hq, int Hkv, int hd, int max_len) {
    std::memset(out, 0, sizeof(float) * size_t(N) * size_t(Hq) * size_t(hd));
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    const long items = long(segs.size()) * Hq;
#pragma omp parallel
    {
        std::vector<float> S(size_t(kAttnTile) * size_t(max_len));
#pragma omp for schedule(dynamic)
        for (long it = 0; it < items; ++it) {
            const Segment &sg = segs[size_t(it / Hq)];
            const int h = int(it % Hq), kh = h / group, L = sg.len;
            const float *Q = q + sg.start * ldq + h * hd;
            const float *K = k + sg.start * ldk + kh * hd;
            const float *V = v + sg.start * ldk + kh * hd;
            float *O = out + sg.start * ldq + h * hd;
            for (int i0 = 0; i0 < L; i0 += kAttnTile) {
                const int nq = std::min(kAttnTile, L - i0), nk = i0 + nq;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, Q + long(i0) * ldq, ldq, K,
                            ldk, 0.0f, S.data(), nk);
                for (int r = 0; r < nq; ++r) {
                    float *row = S.data() + long(r) * nk;
                    const int valid = i0 + r + 1;
                    float mx = row[0];
                    for (int j = 1; j < valid; ++j) mx = std::max(mx, row[j]);
                    float sum = 0.0f;
                    for (int j = 0; j < valid; ++j) sum += (row[j] = std::exp(row[j] - mx));
                    const float inv = 1.0f / sum;
                    for (int j = 0; j < valid; ++j) row[j] *= inv;
                    for (int j = valid; j < nk; ++j) row[j] = 0.0f;
                    lse[(sg.start + i0 + r) * Hq + h] = mx + std::log(sum);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, S.data(), nk, V, ldk, 0.0f,
                            O + long(i0) * ldq, ldq);
            }
        }
    }
}

// dq (N, Hq, hd), dk, dv (N, Hkv, hd) (all overwritten) from dout and the forward's tensors.
inline void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const float *out, const float *lse, const std::vector<Segment> &segs,
                               long N, int Hq, int Hkv, int hd, int max_len) {
    std::memset(dq, 0, sizeof(float) * size_t(N) * size_t(Hq) * size_t(hd));
    std::memset(dk, 0, sizeof(float) * size_t(N) * size_t(Hkv) * size_t(hd));
    std::memset(dv, 0, sizeof(float) * size_t(N) * size_t(Hkv) * size_t(hd));
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    const long items = long(segs.size()) * Hkv;
#pragma omp parallel
    {
        std::vector<float> P(size_t(kAttnTile) * size_t(max_len)), dS(P.size());
#pragma omp for schedule(dynamic)
        for (long it = 0; it < items; ++it) {
            const Segment &sg = segs[size_t(it / Hkv)];
            const int kh = int(it % Hkv), L = sg.len;
            const float *K = k + sg.start * ldk + kh * hd, *V = v + sg.start * ldk + kh * hd;
            float *dK = dk + sg.start * ldk + kh * hd, *dV = dv + sg.start * ldk + kh * hd;
            for (int h = kh * group; h < (kh + 1) * group; ++h) {
                const long qo = sg.start * ldq + h * hd;
                for (int i0 = 0; i0 < L; i0 += kAttnTile) {
                    const int nq = std::min(kAttnTile, L - i0), nk = i0 + nq;
                    const float *Qt = q + qo + long(i0) * ldq, *dOt = dout + qo + long(i0) * ldq;
                    const float *Ot = out + qo + long(i0) * ldq;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, Qt, ldq, K, ldk, 0.0f,
                                P.data(), nk);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, 1.0f, dOt, ldq, V, ldk, 0.0f,
                                dS.data(), nk);
                    for (int r = 0; r < nq; ++r) {
                        float *p = P.data() + long(r) * nk, *ds = dS.data() + long(r) * nk;
                        const float l = lse[(sg.start + i0 + r) * Hq + h];
                        const float *o = Ot + long(r) * ldq, *dov = dOt + long(r) * ldq;
                        float D = 0.0f;  // rowsum(P * dP) == dot(dO, O)
                        for (int c = 0; c < hd; ++c) D += dov[c] * o[c];
                        const int valid = i0 + r + 1;
                        for (int j = 0; j < valid; ++j) {
                            p[j] = std::exp(p[j] - l);
                            ds[j] = p[j] * (ds[j] - D);
                        }
                        for (int j = valid; j < nk; ++j) p[j] = ds[j] = 0.0f;
                    }
                    float *dQt = dq + qo + long(i0) * ldq;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, scale, dS.data(), nk, K, ldk,
                                0.0f, dQt, ldq);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, scale, dS.data(), nk, Qt, ldq,
                                1.0f, dK, ldk);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nq, 1.0f, P.data(), nk, dOt, ldq,
                                1.0f, dV, ldk);
                }
            }
        }
    }
}

// Decoding against a KV cache: out (N, Hq, hd) for N query tokens, token t in cache row row[t] at
// position pos[t], attending to positions [0, pos[t]] of that row of kc, vc (rows, max_len, Hkv, hd)
// (its own key and value already stored). One (token, head) per work item; exact softmax.
inline void decode_attention(float *out, const float *q, const float *kc, const float *vc, const int32_t *row,
                             const int32_t *pos, long N, int Hq, int Hkv, int hd, int max_len) {
    const int group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel
    {
        std::vector<float> scores(static_cast<size_t>(max_len));
        float *sc = scores.data();
#pragma omp for schedule(dynamic)
        for (long it = 0; it < N * Hq; ++it) {
            const long t = it / Hq;
            const int h = int(it % Hq), kh = h / group, p = pos[t];
            const float *qv = q + size_t(t) * ldq + size_t(h) * hd;
            const float *K = kc + size_t(row[t]) * size_t(max_len) * size_t(ldk) + size_t(kh) * hd;
            const float *V = vc + size_t(row[t]) * size_t(max_len) * size_t(ldk) + size_t(kh) * hd;
            float mx = -INFINITY;
            for (int j = 0; j <= p; ++j) {
                const float *kj = K + size_t(j) * ldk;
                float dot = 0.0f;
                for (int e = 0; e < hd; ++e) dot += qv[e] * kj[e];
                sc[j] = dot * scale;
                mx = std::max(mx, sc[j]);
            }
            float z = 0.0f;
            for (int j = 0; j <= p; ++j) z += (sc[j] = std::exp(sc[j] - mx));
            float *o = out + size_t(t) * ldq + size_t(h) * hd;
            std::fill(o, o + hd, 0.0f);
            for (int j = 0; j <= p; ++j) {
                const float pj = sc[j] / z;
                const float *vj = V + size_t(j) * ldk;
                for (int e = 0; e < hd; ++e) o[e] += pj * vj[e];
            }
        }
    }
}

// Stores the keys and values of N tokens (rows of k, v (N, kvd)) into the cache of one layer,
// kc, vc (rows, max_len, kvd), at (row[t], pos[t]).
inline void kv_cache_store(float *kc, float *vc, const float *k, const float *v, const int32_t *row, const int32_t *pos,
                           long N, int kvd, int max_len) {
    for (long t = 0; t < N; ++t) {
        const size_t off = (size_t(row[t]) * size_t(max_len) + size_t(pos[t])) * size_t(kvd);
        std::memcpy(kc + off, k + size_t(t) * kvd, sizeof(float) * size_t(kvd));
        std::memcpy(vc + off, v + size_t(t) * kvd, sizeof(float) * size_t(kvd));
    }
}

}  // namespace lima::cpu
