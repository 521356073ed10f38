// Incremental decoding with a KV cache: on the CPU backend here, or, for a model on a CUDA device,
// on that device through the plugin (cuda/generate.cu), with the same checks and bookkeeping.
#pragma once
#include <vector>

#include "model.hpp"

namespace lima {

struct Generator {
    Model *model;
    int max_rows, max_len, rows = 0;
    std::vector<float> k, v;                // (L, max_rows, max_len, kv_dim) post-rope keys, values
    std::vector<int32_t> len;               // tokens per row
    std::vector<std::vector<int32_t>> toks; // each row's tokens (prompt + generated)
    std::vector<int32_t> prompt_len;
    std::vector<uint64_t> seeds;
    std::vector<float> logits;              // (rows, V) next-token logits (CPU backend)
    void *cuda = nullptr;                   // the plugin's generator when the model is on a CUDA device

    Generator(Model *m, int max_rows, int max_len);
    ~Generator();
    Generator(const Generator &) = delete;
    Generator &operator=(const Generator &) = delete;
    // out (rows, V): the next-token logits, from wherever decoding runs.
    void read_logits(float *out, size_t n) const;
    void start(int rows, const int32_t *tokens, const int32_t *lengths, const uint64_t *seeds);
    void step(const lima_sampling &s, const uint8_t *active, int32_t *out);
};

}  // namespace lima
