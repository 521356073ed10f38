// adamw: decoupled weight decay Adam (Loshchilov & Hutter), in the exact arithmetic order of
// torch.optim.AdamW so the two can be compared step for step:
//   p *= 1 - lr*wd (decayed tensors only);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
#pragma once
#include <cmath>

namespace lima::cpu {

struct AdamWParams {
    float lr, beta1, beta2, eps, weight_decay, grad_scale;  // grad_scale: clipping factor (1 = none)
    long t;                                                 // step number, from 1
};

inline void adamw_update(float *p, float *m, float *v, const float *g, long n, bool decay, const AdamWParams &a) {
    const double bc1 = 1.0 - std::pow(double(a.beta1), double(a.t));
    const double bc2 = 1.0 - std::pow(double(a.beta2), double(a.t));
    const float step_size = float(double(a.lr) / bc1);
    const float bc2_sqrt = float(std::sqrt(bc2));
    const float shrink = decay ? 1.0f - a.lr * a.weight_decay : 1.0f;
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) {
        const float gi = g[i] * a.grad_scale;
        m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * gi;
        v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * gi * gi;
        const float denom = std::sqrt(v[i]) / bc2_sqrt + a.eps;
        p[i] = p[i] * shrink - step_size * m[i] / denom;
    }
}

}  // namespace lima::cpu
