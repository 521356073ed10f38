// The LLaMA model of the CPU reference backend: parameter table with HF names in one flat fp32
// buffer (so gradients and AdamW moments share its layout), micro-batches, and the train/eval
// forward and backward passes, written as a sequence of the kernel families in cpu/.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "cpu/attention.hpp"
#include "cpu/rope.hpp"
#include "cpu/nf4.hpp"
#include "philox.hpp"
#include "safetensors.hpp"

namespace lima {

struct ParamInfo {
    std::string name;
    int64_t rows = 0, cols = 0;  // cols == 0: a vector of `rows`
    size_t offset = 0;           // into the flat buffer
    bool decay = false;          // weight decay applies (matrices, not norm gains)
    int64_t numel() const { return cols ? rows * cols : rows; }
    std::vector<int64_t> shape() const { return cols ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows}; }
};

struct Layout {
    std::vector<ParamInfo> params;
    std::map<std::string, size_t> index;
    size_t total = 0;
    const ParamInfo &at(const std::string &name, const std::string &what) const;
    // Appends a tensor (cols == 0: a vector) at the end of the flat buffer.
    void add(const std::string &name, int64_t rows, int64_t cols, bool decay);
};

// without_linear: the layout of a model whose projections are stored in NF4 (Model::qweights).
Layout make_layout(const ModelConfig &c, bool without_linear = false);

// LoRA targets, in PEFT's module names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
enum LoraTarget { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_TARGETS };

// One layer's LoRA matrices (or their gradients): a[j] (r, in), b[j] (out, r); null where target j
// has no adapter.
struct LayerLora {
    float *a[LORA_TARGETS] = {};
    float *b[LORA_TARGETS] = {};
    int r = 0;
    float scale = 0.0f, dropout = 0.0f;
};

struct LayerWeights {
    float *ln1, *wq, *wk, *wv, *wo, *ln2, *wg, *wu, *wd;
    const LayerLora *lora = nullptr;  // the adapter of this layer (null: none)
    float *bias[LORA_TARGETS] = {};   // projection biases (attention_bias, mlp_bias), by LoRA target index; null: none
};
struct Weights {
    float *emb, *norm, *lm_head;  // lm_head == emb when tied
    std::vector<LayerWeights> layers;
};
// Points every tensor at base + its offset; with a range [lo, hi), base holds that range of the
// flat buffer and tensors outside it bind to null (one ZeRO-3 unit).
Weights bind(const ModelConfig &c, const Layout &l, float *base, size_t lo = 0, size_t hi = SIZE_MAX);

// ZeRO-3's units of the flat buffer, in order: the embedding, each layer, the final norm with the
// LM head. Each is a contiguous [begin, end) of the layout.
std::vector<std::pair<size_t, size_t>> make_units(const ModelConfig &c, const Layout &l);

// Where a sharded model's weights come from (ZeRO-3, trainer.cpp): forward and backward ask for a
// unit whole just before they use it (gather), for a zeroed buffer of its gradient (grad), and give
// both back after (release: the gradient is then summed into the ranks' shards). Every rank runs
// the same passes, so these collective calls come in the same order everywhere. Calls for a unit
// already held return the same buffer until its release.
struct ParamSource {
    virtual ~ParamSource() = default;
    virtual float *gather(int unit) = 0;
    virtual float *grad(int unit) = 0;
    virtual void release(int unit) = 0;
};

struct Batch {
    int B = 0, T = 0;
    std::vector<int32_t> tokens, seg, pos;  // (B*T)
    std::vector<cpu::Segment> segs;         // every non-padding example
    std::vector<long> pred_rows;            // positions t-1 whose next token t is a target
    std::vector<int32_t> labels;            // the target token ids
    std::vector<long> all_rows;             // every position with a successor in its segment
    std::vector<int32_t> all_labels;
    int max_seg_len = 0;
    bool filled = false;
    long N() const { return long(B) * T; }
};
void batch_fill(Batch &b, const int32_t *tokens, const uint8_t *mask, const int32_t *seg);

// One layer's buffers for N tokens: per-layer slices of Activations in training, scratch reused by
// every layer in decoding.
struct LayerBuffers {
    float *xn1, *rstd1;      // (N, d), (N) attention-norm output and its 1/rms
    float *q, *k, *v;        // (N, q_dim), (N, kv_dim) x2, after rope
    float *att, *lse;        // (N, q_dim) attention output, (N, Hq) its log-sum-exp (packed attention only)
    float *xn2, *rstd2;      // (N, d), (N) MLP-norm output and its 1/rms
    float *g, *u, *h;        // (N, ffn) gate, up, silu(gate) * up
    float *tmp;              // (N, max(d, ffn)) scratch: a projection before it joins the residual
    float *xa = nullptr;     // (LORA_TARGETS, N, r) each adapter's dropout(x) @ A^T (with an adapter)
};

// How a layer's attention runs. Packed: causal attention within each segment of segs (training
// rows, or prefill of whole prompts). With a cache (k_cache non-null), the layer's keys and values
// are also stored at (row[t], pos[t]); without segs, attention reads the cache (one decode step).
struct LayerAttention {
    const std::vector<cpu::Segment> *segs = nullptr;
    int max_seg_len = 0;
    float *k_cache = nullptr, *v_cache = nullptr;  // (rows, max_len, kv_dim) of this layer
    const int32_t *row = nullptr;
    int max_len = 0;
};

// The LLaMA layer of the CPU backend, written once for training, eval, prefill and decode:
//   x_mid = x + dropout(o_proj(attention(rope(q), rope(k), v)))   of rmsnorm(x)
//   x_out = x_mid + dropout(down(silu(gate) * up))                of rmsnorm(x_mid)
// x_mid and x_out may alias x (in-place decoding). key == nullptr: no dropout (p is ignored).
void layer_forward(const ModelConfig &c, const LayerWeights &w, const cpu::RopeTable &rope, const LayerBuffers &a,
                   const float *x, float *x_mid, float *x_out, const int32_t *pos, long N, const LayerAttention &att,
                   const DropoutKey *key, float p, int layer);

// Saved activations of one forward, reused between calls of the same or smaller size. Sized and
// allocated from one table (activation_table), which the memory plan sums.
struct Activations {
    long N = 0;
    std::vector<float> resid;                     // (L+1, N, d) residual stream entering each layer, then final
    std::vector<float> xn1, xn2, x_mid;           // (L, N, d)
    std::vector<float> rstd1, rstd2, rstdf;       // (L, N), (L, N), (N)
    std::vector<float> q, att, lse;               // (L, N, q_dim), (L, N, q_dim), (L, N, Hq)
    std::vector<float> k, v;                      // (L, N, kv_dim)
    std::vector<float> g, u, h;                   // (L, N, ffn)
    std::vector<float> xf;                        // (N, d) final normed
    std::vector<float> tmp;                       // (N, max(d, ffn)) scratch
    std::vector<float> xa;                        // (L, LORA_TARGETS, N, r) with an adapter of rank r
    int lora_r = 0;
    void ensure(const ModelConfig &c, long N, int lora_r = 0);
    // Layer l's slices for a forward of n tokens (n <= N).
    LayerBuffers layer(const ModelConfig &c, int l, long n);
};

// One row of the activation table: a buffer and its floats per token.
struct ActivationEntry {
    const char *name;
    std::vector<float> Activations::*buf;
    int64_t per_token;
};
std::vector<ActivationEntry> activation_table(const ModelConfig &c, int lora_r = 0);

// A checkpoint's tensors, their headers checked against a layout (names, shapes, no stray tensor);
// each read converts to fp32 and rejects non-finite values.
struct CheckpointReader {
    std::string dir;
    std::map<std::string, StFile> opened;
    std::map<std::string, std::string> file_of;  // tensor name -> file
    CheckpointReader(const std::string &dir, const Layout &layout, const ModelConfig &c);
    void read(const ParamInfo &p, float *out) const;
};

struct Adapter;  // adapter.hpp

struct Model {
    ModelConfig cfg;
    Layout layout;
    std::vector<float> params;
    std::string base_config_json;  // config.json the model was loaded from (other keys kept on save)
    int trainers = 0;
    cpu::RopeTable rope;
    Activations acts;

    // CUDA backend: the device context (weights on device `device`) or null on the CPU; the host
    // params are a copy, stale after device steps until cuda_sync_host.
    int device = -1;
    void *cuda = nullptr;
    bool host_stale = false;

    // A LoRA adapter over the frozen weights (null: none). See adapter.hpp.
    std::unique_ptr<Adapter> adapter;

    // QLoRA: the projections of every layer stored in NF4 (layer * LORA_TARGETS + target), frozen;
    // the layout then holds the other tensors only, and each layer's projections are dequantised
    // into `deq` when the layer runs (materialize).
    std::vector<cpu::Nf4Tensor> qweights;
    std::vector<float> deq;
    bool nf4() const { return !qweights.empty(); }
    // ZeRO-3: the weights live in the ranks' shards, `params` is empty, and `source` gathers each
    // unit (of `units`) when it is used; null: the model holds its weights.
    ParamSource *source = nullptr;
    std::vector<std::pair<size_t, size_t>> units;
    // An offloaded trainer (trainer.hpp Offload): waits until its host worker has finished updating
    // `params`; called before anything outside the trainer reads them (cuda_sync_host, forward).
    std::function<void()> settle;
    // Throws LIMA_ERR_STATE naming fn when the weights are sharded (not held whole here).
    void require_whole(const char *fn) const;
    // ZeRO-3: the tensors of unit u bound to buf, which holds that unit (the others null); the unit
    // holding the LM head (the embedding's when tied).
    Weights bind_unit(float *buf, int u) const;
    int head_unit() const { return cfg.tie_word_embeddings ? 0 : cfg.num_layers + 1; }
    int64_t num_params() const;     // every weight, stored in fp32 or NF4
    int64_t weight_bytes() const;   // host bytes the weights take

    // with_weights false: a hollow model (a ZeRO-3 rank other than 0): its shape only, no weights
    // until a ZeRO-3 trainer fills its shards from rank 0 (or another stage's, its whole weights).
    explicit Model(const ModelConfig &c, bool with_weights = true);
    bool hollow = false;
    // A hollow model loaded from a checkpoint: where its weights are read from, unit by unit, by the
    // trainer that shards them (rank 0 of ZeRO-3); file_vocab: the checkpoint's rows (rows the
    // vocabulary grew by since are their mean).
    std::shared_ptr<CheckpointReader> reader;
    int32_t file_vocab = 0;
    ~Model();
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;
    Weights weights();  // the weights, with the adapter's matrices when there is one
    int lora_r() const;
};

void random_init(Model &m, uint64_t seed);
void resize_vocab(Model &m, int32_t new_vocab);
Model *load_model(const std::string &dir);
// The model of dir's config.json without its weights (hollow), its tensors' headers checked.
Model *load_model_config(const std::string &dir);
// [begin, end) of a hollow model's flat weights read from its checkpoint into out.
void read_unit(const Model &m, size_t begin, size_t end, float *out);
// QLoRA's storage: the 7 projections of every layer to NF4 (double-quantised absmax when dq).
void quantize_nf4(Model &m, bool dq);
// Points w's projections at layer l's weights dequantised into m.deq (a model without NF4: nothing to do).
void materialize(Model &m, int l, LayerWeights &w);
// (layer, target) of a projection tensor's name, or {-1, -1}.
std::pair<int, int> projection_of(const std::string &name);
// source: where each tensor's fp32 data comes from, asked in layout order just before it is written
// (ZeRO-3: gathered unit by unit); null: the model's own weights.
void save_model(const Model &m, const std::string &dir, int dtype, int64_t max_shard_bytes,
                const std::function<const float *(const ParamInfo &)> *source = nullptr);

// Forward through the final norm (acts.xf). key == nullptr: eval mode, no dropout.
void forward(Model &m, const Batch &b, const DropoutKey *key, float p_max);

// Gradients of an adapter's trainable tensors (pointers into a buffer of the adapter's layout).
struct AdapterGrads {
    std::vector<LayerLora> layers;
    float *emb_rows = nullptr, *head_rows = nullptr;  // (tokens, d); head_rows == emb_rows when tied
    const int32_t *tokens = nullptr;
    int n_tokens = 0;
};
// Backward from dxf (N, d) into grads (flat, the layout of params), or, with an adapter (ag non-null,
// grads null: the base is frozen), into the adapter's gradients, or, for a sharded model (both null),
// into its source's unit gradients. Needs the matching forward.
void backward(Model &m, const Batch &b, const DropoutKey *key, float p_max, float *dxf, float *grads,
              const AdapterGrads *ag = nullptr);

// Bytes of the CPU backend's saved activations for n tokens: the sum of activation_table.
int64_t activation_bytes(const ModelConfig &c, int64_t n, int lora_r = 0);

}  // namespace lima
