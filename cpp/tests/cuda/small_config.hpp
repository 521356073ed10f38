// The small model the GPU tests and the two-process check (dp_check.cpp) train: only lima.h, so a
// program on liblima's public API alone can share it.
#pragma once
#include "lima/lima.h"

namespace limatest {

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
