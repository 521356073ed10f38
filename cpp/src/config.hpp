// The model config (lima_model_config plus derived sizes) and its Hugging Face config.json form.
#pragma once
#include <string>

#include "lima/lima.h"

namespace lima {

struct ModelConfig : lima_model_config {
    ModelConfig() : lima_model_config{} {}
    explicit ModelConfig(const lima_model_config &c) : lima_model_config(c) {}
    int hd() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
    int q_dim() const { return num_heads * hd(); }
    int kv_dim() const { return num_kv_heads * hd(); }
};

// Throws LIMA_ERR_INVALID_ARGUMENT naming the first bad field; `where` prefixes the message.
void validate(const ModelConfig &c, const std::string &where);

// Parses a HF LlamaConfig JSON text. Unsupported features (rope_scaling, biases, another
// architecture) are errors naming the key. `path` is used in messages.
ModelConfig parse_hf_config(const std::string &json_text, const std::string &path);

// HF config.json text for c. `base_json` (may be empty) is an earlier config.json whose other
// keys are kept, so a fine-tuned checkpoint keeps what the original carried.
std::string write_hf_config(const ModelConfig &c, const std::string &base_json, const char *torch_dtype);

}  // namespace lima
