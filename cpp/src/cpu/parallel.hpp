// OpenMP helpers for the CPU backend. BLAS is OpenBLAS's OpenMP build, so a BLAS call made inside a
// parallel region runs on the calling thread and one pool serves both.
#pragma once
#include <omp.h>

#include <vector>

namespace lima::cpu {

// Sums per-thread partial vectors of length n into out (out += sum of partials): the pattern for
// weight gradients reduced over tokens (norm gains) without atomics.
template <typename F>
void reduce_rows(float *out, int n, long rows, F &&row_fn) {
    const int nt = omp_get_max_threads();
    std::vector<float> part(size_t(nt) * size_t(n), 0.0f);
#pragma omp parallel
    {
        float *mine = part.data() + size_t(omp_get_thread_num()) * size_t(n);
#pragma omp for schedule(static)
        for (long r = 0; r < rows; ++r) row_fn(r, mine);
    }
    for (int t = 0; t < nt; ++t)
        for (int i = 0; i < n; ++i) out[i] += part[size_t(t) * size_t(n) + size_t(i)];
}

}  // namespace lima::cpu
