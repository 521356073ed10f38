// LIMA's sampling rule on the device (see sampling.cuh).
#include <cub/cub.cuh>

#include <climits>

#include "sampling.cuh"

namespace lima::cuda {

namespace {

// The repetition penalty of the CPU sampler: divide positive logits, multiply negative ones.
__device__ inline float penalized(float x, uint8_t flags, const StepParams &sp) {
    return (flags & sp.penalty_bits) && sp.penalty != 1.0f ? (x > 0.0f ? x / sp.penalty : x * sp.penalty) : x;
}

// keys (rows, V) = penalized logits / temperature, ids (rows, V) = 0..V-1: the input of the sort.
__global__ void sample_keys_k(float *keys, int32_t *ids, const float *logits, const uint8_t *flags, const StepParams *sp,
                              long n, int V) {
    const long i = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    keys[i] = penalized(logits[i], flags[i], *sp) / sp->temperature;
    ids[i] = int32_t(i % V);
}

// The sampled (or greedy) token of row r becomes its next input: token, position, length, flags.
__device__ inline void advance(int r, int32_t pick, int32_t *next, int32_t *tok, int32_t *pos, int32_t *len, uint8_t *flags,
                               int V) {
    next[r] = pick;
    tok[r] = pick;
    pos[r] = len[r];
    len[r] += 1;
    flags[size_t(r) * V + pick] |= 2;
}

__device__ inline void retire(int r, int32_t *next, int32_t *tok, int32_t *pos) {
    next[r] = -1;  // inactive: no token, no cache write, its logits kept
    tok[r] = 0;
    pos[r] = 0;
}

struct ArgMax {
    float v;
    int32_t i;
};
struct ArgMaxOp {
    __device__ ArgMax operator()(const ArgMax &a, const ArgMax &b) const {
        return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;  // ties: the lower id, as std::max_element
    }
};

// Greedy: the arg max of the penalized logits, one block per row.
__global__ void __launch_bounds__(kSampleThreads) greedy_k(int32_t *next, int32_t *tok, int32_t *pos, int32_t *len,
                                                           uint8_t *flags, const float *logits, const uint8_t *active,
                                                           const StepParams *sp, int V) {
    using Reduce = cub::BlockReduce<ArgMax, kSampleThreads>;
    __shared__ typename Reduce::TempStorage tmp;
    const int r = blockIdx.x;
    if (!active[r]) {
        if (threadIdx.x == 0) retire(r, next, tok, pos);
        return;
    }
    const float *x = logits + size_t(r) * V;
    const uint8_t *f = flags + size_t(r) * V;
    ArgMax best{-INFINITY, INT_MAX};
    for (int v = threadIdx.x; v < V; v += kSampleThreads) best = ArgMaxOp()(best, ArgMax{penalized(x[v], f[v], *sp), v});
    const ArgMax b = Reduce(tmp).Reduce(best, ArgMaxOp());
    if (threadIdx.x == 0) advance(r, b.i < V ? b.i : 0, next, tok, pos, len, flags, V);
}

// The first index i < limit whose inclusive prefix sum of w(i) (plus `run` before the tile)
// reaches the test, over tiles of the block; INT_MAX if none.
template <typename W, typename Test>
__device__ int first_reaching(int limit, W w, Test test) {
    using Scan = cub::BlockScan<float, kSampleThreads>;
    using Min = cub::BlockReduce<int, kSampleThreads>;
    __shared__ typename Scan::TempStorage scan_tmp;
    __shared__ typename Min::TempStorage min_tmp;
    __shared__ int found;
    float run = 0.0f;
    for (int base = 0; base < limit; base += kSampleThreads) {
        const int i = base + int(threadIdx.x);
        const float x = i < limit ? w(i) : 0.0f;
        float incl, total;
        Scan(scan_tmp).InclusiveSum(x, incl, total);
        const int cand = (i < limit && test(run + incl)) ? i : INT_MAX;
        const int first = Min(min_tmp).Reduce(cand, [](int a, int b) { return a < b ? a : b; });
        if (threadIdx.x == 0) found = first;
        __syncthreads();
        const int f = found;
        __syncthreads();
        if (f != INT_MAX) return f;
        run += total;
    }
    return INT_MAX;
}

// Nucleus sampling over one row's keys sorted in decreasing order (ids alongside, ties by lower
// id as the radix sort is stable): keep the shortest prefix with mass >= top_p (at most top_k),
// renormalise, and pick with the row's Philox draw, as cpu::sample_token does.
__global__ void __launch_bounds__(kSampleThreads) nucleus_k(int32_t *next, int32_t *tok, int32_t *pos, int32_t *len,
                                                            uint8_t *flags, const float *skeys, const int32_t *sids,
                                                            const uint8_t *active, const uint64_t *seeds,
                                                            const StepParams *sp, int V) {
    using Sum = cub::BlockReduce<float, kSampleThreads>;
    __shared__ typename Sum::TempStorage sum_tmp;
    __shared__ float shared_z, shared_kz;
    const int r = blockIdx.x;
    if (!active[r]) {
        if (threadIdx.x == 0) retire(r, next, tok, pos);
        return;
    }
    const float *k = skeys + size_t(r) * V;
    const int32_t *id = sids + size_t(r) * V;
    const float mx = k[0];
    float part = 0.0f;
    for (int v = threadIdx.x; v < V; v += kSampleThreads) part += __expf(k[v] - mx);
    const float zs = Sum(sum_tmp).Sum(part);
    if (threadIdx.x == 0) shared_z = zs;
    __syncthreads();
    const float z = shared_z;
    auto prob = [&](int i) { return __expf(k[i] - mx) / z; };
    int keep = sp->top_k > 0 ? min(sp->top_k, V) : V;
    if (sp->top_p < 1.0f) {
        const float top_p = sp->top_p;
        const int f = first_reaching(keep, prob, [&](float cum) { return cum >= top_p; });
        if (f != INT_MAX) keep = f + 1;
    }
    part = 0.0f;
    for (int i = threadIdx.x; i < keep; i += kSampleThreads) part += prob(i);
    __syncthreads();
    const float kzs = Sum(sum_tmp).Sum(part);
    if (threadIdx.x == 0) shared_kz = kzs;
    __syncthreads();
    const float kz = shared_kz;
    const double u = sample_uniform(seeds[r], uint64_t(len[r]));
    const int f = first_reaching(keep, prob, [&](float cum) { return double(cum / kz) > u; });
    if (threadIdx.x == 0) advance(r, id[f != INT_MAX ? f : keep - 1], next, tok, pos, len, flags, V);
}

__global__ void mark_prompt_k(uint8_t *flags, const int32_t *tokens, const int32_t *row, long n, int V) {
    const long t = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t < n) flags[size_t(row[t]) * V + size_t(tokens[t])] = 1;
}

__global__ void copy_active_rows_k(float *dst, const float *src, const uint8_t *active, long n, int V) {
    const long i = long(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n && active[i / V]) dst[i] = src[i];
}

}  // namespace

void sample_greedy(const DecodeRows &r, const float *logits, const StepParams *sp, int rows, int V, cudaStream_t st) {
    if (rows == 0) return;
    greedy_k<<<rows, kSampleThreads, 0, st>>>(r.next, r.tok, r.pos, r.len, r.flags, logits, r.active, sp, V);
    LIMA_CUDA_LAUNCHED("sample_greedy");
}

size_t nucleus_sort_bytes(const SortSpace &s, int rows, int V, cudaStream_t st) {
    size_t bytes = 0;
    LIMA_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, bytes, s.keys, s.skeys, s.ids, s.sids,
                                                                       long(rows) * V, rows, s.offsets, s.offsets + 1, 0,
                                                                       32, st));
    return bytes;
}

void sample_nucleus(const DecodeRows &r, const float *logits, const uint64_t *seeds, const StepParams *sp, const SortSpace &s,
                    int rows, int V, cudaStream_t st) {
    if (rows == 0) return;
    const long n = long(rows) * V;
    sample_keys_k<<<ceil_div(n, 256), 256, 0, st>>>(s.keys, s.ids, logits, r.flags, sp, n, V);
    LIMA_CUDA_LAUNCHED("sample_nucleus keys");
    size_t bytes = s.tmp_bytes;
    LIMA_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(s.tmp, bytes, s.keys, s.skeys, s.ids, s.sids, n, rows,
                                                                       s.offsets, s.offsets + 1, 0, 32, st));
    nucleus_k<<<rows, kSampleThreads, 0, st>>>(r.next, r.tok, r.pos, r.len, r.flags, s.skeys, s.sids, r.active, seeds, sp, V);
    LIMA_CUDA_LAUNCHED("sample_nucleus");
}

void mark_prompt_tokens(uint8_t *flags, const int32_t *tokens, const int32_t *row, long n, int V, cudaStream_t st) {
    if (n == 0) return;
    mark_prompt_k<<<ceil_div(n, 256), 256, 0, st>>>(flags, tokens, row, n, V);
    LIMA_CUDA_LAUNCHED("mark_prompt_tokens");
}

void copy_active_rows(float *dst, const float *src, const uint8_t *active, int rows, int V, cudaStream_t st) {
    const long n = long(rows) * V;
    if (n == 0) return;
    copy_active_rows_k<<<ceil_div(n, 256), 256, 0, st>>>(dst, src, active, n, V);
    LIMA_CUDA_LAUNCHED("copy_active_rows");
}

}  // namespace lima::cuda
