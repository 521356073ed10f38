// Shared by the GPU tests: whether a CUDA device is here, and the small model they train and decode.
#pragma once
#include <cuda_runtime.h>

#include "lima/lima.h"

namespace limatest {

inline bool have_gpu() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// GQA (8 query heads over 2 KV heads), head_dim 32, an odd vocabulary.
inline lima_model_config small_config() {
    lima_model_config c;
    lima_model_config_init(&c);
    c.vocab_size = 997;
    c.hidden_size = 256;
    c.intermediate_size = 688;
    c.num_layers = 3;
    c.num_heads = 8;
    c.num_kv_heads = 2;
    c.head_dim = 32;
    c.max_position_embeddings = 512;
    c.initializer_range = 0.05f;
    return c;
}

}  // namespace limatest
