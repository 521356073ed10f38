// LIMA's sampling rule on the device, the CUDA side of cpu::sample_token (cpu/sampling.hpp):
// repetition penalty, temperature, top-k, nucleus top-p and the Philox draw of the CPU sampler
// (philox.hpp sample_uniform). Each sampler picks a token per active row and advances that row's
// decoding state, so only token ids leave the device.
#pragma once
#include "kernels.cuh"

namespace lima::cuda {

constexpr int kSampleThreads = 1024;

// What a step needs from the host, uploaded with the active flags (so one captured graph serves
// every sampling setting).
struct StepParams {
    float temperature, top_p, penalty;
    int32_t top_k;
    uint8_t penalty_bits;  // flags that make a token penalized: 2 = generated (LIMA), 3 = prompt too (HF)
};

// The decoding state of up to `rows` rows that a sampler advances: next (rows) the picked token
// (-1 inactive), tok/pos (rows) the next step's input, len (rows) tokens so far, flags (rows, V)
// 1 = prompt token, 2 = generated token.
struct DecodeRows {
    int32_t *next, *tok, *pos, *len;
    uint8_t *flags;
    const uint8_t *active;
};

// Greedy: the arg max of the penalized logits (rows, V), lowest id on ties.
void sample_greedy(const DecodeRows &r, const float *logits, const StepParams *sp, int rows, int V, cudaStream_t st);

// Buffers of the nucleus sampler's sort: keys/skeys, ids/sids (rows, V); offsets (rows + 1) = r * V.
struct SortSpace {
    float *keys, *skeys;
    int32_t *ids, *sids;
    const int32_t *offsets;
    void *tmp;
    size_t tmp_bytes;
};
// Temporary bytes the sort of `rows` rows needs.
size_t nucleus_sort_bytes(const SortSpace &s, int rows, int V, cudaStream_t st);
// Penalty, temperature, a stable descending sort, then top-k / top-p and the row's Philox draw
// keyed by (seeds[r], len[r]).
void sample_nucleus(const DecodeRows &r, const float *logits, const uint64_t *seeds, const StepParams *sp, const SortSpace &s,
                    int rows, int V, cudaStream_t st);

// flags[row[t], tokens[t]] = 1 (prompt tokens) for t < n.
void mark_prompt_tokens(uint8_t *flags, const int32_t *tokens, const int32_t *row, long n, int V, cudaStream_t st);
// dst rows r = src rows r where active[r] ((rows, V) each; other rows keep their values).
void copy_active_rows(float *dst, const float *src, const uint8_t *active, int rows, int V, cudaStream_t st);

}  // namespace lima::cuda
