// sampling: the next token from one row of logits, with LIMA's rules (repetition penalty,
// temperature, top-k, nucleus top-p) and a draw keyed by a Philox counter, so a row's samples do not
// depend on what else is in the batch.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../philox.hpp"
#include "lima/lima.h"

namespace lima::cpu {

// penalized: flags (V) or nullptr. probs_out (V) or nullptr. Returns the token.
inline int32_t sample_token(const float *logits, int V, const lima_sampling &s, const uint8_t *penalized, uint64_t seed,
                            uint64_t counter, float *probs_out) {
    std::vector<float> l(logits, logits + V);
    if (penalized && s.repetition_penalty != 1.0f) {
        const float r = s.repetition_penalty;
        for (int v = 0; v < V; ++v)
            if (penalized[v]) l[size_t(v)] = l[size_t(v)] > 0 ? l[size_t(v)] / r : l[size_t(v)] * r;
    }
    if (!(s.temperature > 0)) {
        const int32_t best = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
        if (probs_out) {
            std::fill(probs_out, probs_out + V, 0.0f);
            probs_out[best] = 1.0f;
        }
        return best;
    }
    double mx = -INFINITY;
    for (float x : l) mx = std::max(mx, double(x) / s.temperature);
    std::vector<double> p(static_cast<size_t>(V));
    double z = 0;
    for (int v = 0; v < V; ++v) z += (p[size_t(v)] = std::exp(double(l[size_t(v)]) / s.temperature - mx));
    std::vector<int32_t> order(static_cast<size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    // Most likely first; ties by lower id, so the kept set is well defined.
    auto more = [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)] || (p[size_t(a)] == p[size_t(b)] && a < b); };
    std::sort(order.begin(), order.end(), more);
    size_t keep = size_t(V);
    if (s.top_k > 0) keep = std::min(keep, size_t(s.top_k));
    if (s.top_p < 1.0f) {
        double cum = 0;
        size_t n = 0;
        while (n < keep) {
            cum += p[size_t(order[n])] / z;
            ++n;
            if (cum >= double(s.top_p)) break;
        }
        keep = n;
    }
    double kz = 0;
    for (size_t i = 0; i < keep; ++i) kz += p[size_t(order[i])];
    const double u = sample_uniform(seed, counter);
    double cum = 0;
    int32_t pick = order[keep - 1];
    for (size_t i = 0; i < keep; ++i) {
        cum += p[size_t(order[i])] / kz;
        if (u < cum) {
            pick = order[i];
            break;
        }
    }
    if (probs_out) {
        std::fill(probs_out, probs_out + V, 0.0f);
        for (size_t i = 0; i < keep; ++i) probs_out[order[i]] = float(p[size_t(order[i])] / kz);
    }
    return pick;
}

}  // namespace lima::cpu
