// LoRA adapters over a frozen model, in PEFT's format (adapter_config.json + adapter_model.safetensors
// with PEFT's tensor names), so PeftModel.from_pretrained loads what liblima trains and back.
//
// Trainable tensors live in one flat fp32 buffer of their own (the optimiser state shares its
// layout): per targeted projection lora_A (r, in) and lora_B (out, r), and, for LIMA's new EOT
// token, PEFT's trainable-token rows ("trainable_token_indices"): the embedding rows (and, when the
// LM head is not tied, the LM-head rows) of the chosen token ids. The model's own rows at those
// ids are kept equal to the trainable rows (the base is otherwise untouched), so every forward,
// the classifier and the generator see them without a special case; remove_adapter restores them.
#pragma once
#include <string>
#include <vector>

#include "model.hpp"

namespace lima {

extern const char *const kLoraTargetNames[LORA_TARGETS];  // "q_proj", ..., "down_proj"

struct AdapterConfig {
    int r = 8;
    float alpha = 16.0f;
    float dropout = 0.05f;
    uint32_t targets = 0;  // bit j: LoraTarget j
    bool rslora = false;   // scale alpha / sqrt(r) instead of alpha / r
    std::vector<int32_t> tokens;
    float scale() const;
};

struct Adapter {
    AdapterConfig cfg;
    int num_layers = 0;
    Layout layout;  // PEFT's names, without the adapter name ("...q_proj.lora_A.weight")
    std::vector<float> params;
    std::vector<LayerLora> layers;  // pointers into params
    std::string emb_rows, head_rows;  // names of the trainable-token tensors ("" = none; head "" when tied)
    std::vector<float> orig_emb, orig_head;  // the base's rows at cfg.tokens, restored on removal

    // Pointers into `buf` (a buffer of this layout: the parameters or a gradient).
    std::vector<LayerLora> bind(float *buf) const;
    AdapterGrads bind_grads(float *buf) const;
};

// Adds a fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) from `seed` (PEFT's kaiming-uniform(a=sqrt(5))),
// B = 0 (so the model's output is unchanged), token rows = the model's rows.
void add_adapter(Model &m, const AdapterConfig &c, uint64_t seed);
// Loads a PEFT LoRA adapter directory. Options liblima does not implement are errors naming the key.
void load_adapter(Model &m, const std::string &dir);
// Writes adapter_config.json and adapter_model.safetensors into dir (atomically, created if missing).
void save_adapter(const Model &m, const std::string &dir, const std::string &base_model);
// Folds the adapter into the weights (W += scale * B @ A; the token rows stay) and drops it.
void merge_adapter(Model &m);
// Drops the adapter and restores the base's token rows.
void remove_adapter(Model &m);
// Copies the trainable token rows into the model's embedding (and LM head): after every update.
void sync_token_rows(Model &m);

}  // namespace lima
