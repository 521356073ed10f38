/*
 * lima.h — the only bridge into liblima, the native LLaMA trainer behind limactl.
 *
 * A plain C ABI: opaque handles, plain structs, integer status codes and a thread-local
 * last-error message. No C++ exception, STL type or CUDA type crosses it. Every function that
 * can fail returns a lima_status; on failure lima_last_error() describes what and where (file,
 * tensor, key) in the calling thread until the next failing call.
 *
 * Conventions
 *  - Shapes are row-major and written as (rows, cols). A micro-batch is (B, T): B rows of T tokens.
 *  - Tensor names and layouts are Hugging Face LlamaForCausalLM's ("model.layers.0.mlp.up_proj.weight",
 *    Linear weights stored (out_features, in_features)).
 *  - Handles are not thread-safe: one thread at a time per model/trainer.
 *
 * A model on a CUDA device ("cuda[:N]") keeps its weights there and a host fp32 copy that is
 * brought up to date (a device-to-host copy) before any call that reads it. On the device:
 * training (forward/backward, step, plan), lima_model_token_logprobs, and generation
 * (lima_generator_*). On the host copy, synced first: lima_model_logits (the CPU reference
 * forward), lima_model_read_tensor, lima_model_save, lima_trainer_read_grad and
 * lima_trainer_save_state (gradients and moments copied down). lima_model_write_tensor,
 * lima_model_resize_vocab and lima_trainer_load_state change the host copy and push it back.
 */
#ifndef LIMA_LIMA_H
#define LIMA_LIMA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LIMA_API __declspec(dllexport)
#else
#define LIMA_API __attribute__((visibility("default")))
#endif

/* Bumped on every incompatible change of this header. */
#define LIMA_ABI_VERSION 9

typedef enum lima_status {
    LIMA_OK = 0,
    LIMA_ERR_INVALID_ARGUMENT = 1, /* a bad value passed by the caller (null, out of range, NaN) */
    LIMA_ERR_IO = 2,               /* a file could not be opened, read or written */
    LIMA_ERR_FORMAT = 3,           /* a file is malformed or truncated (JSON, safetensors) */
    LIMA_ERR_SHAPE = 4,            /* a tensor or buffer has the wrong shape/size, or a config mismatch */
    LIMA_ERR_OUT_OF_MEMORY = 5,    /* an allocation failed */
    LIMA_ERR_UNSUPPORTED = 6,      /* a valid request this build cannot serve (device, dtype, config feature) */
    LIMA_ERR_STATE = 7,            /* the call is not allowed in the handle's current state */
    LIMA_ERR_INTERNAL = 8          /* a bug: please report it with the message */
} lima_status;

typedef enum lima_dtype {
    LIMA_DTYPE_F32 = 0,
    LIMA_DTYPE_BF16 = 1,
    LIMA_DTYPE_F16 = 2
} lima_dtype;

/* ---------------------------------------------------------------- library */

LIMA_API int lima_abi_version(void);
/* Version of the library and the backends available in this process, e.g. "liblima 0.1.0 (abi 3;
 * backends: cpu, cuda (/path/liblima_cuda13.so); BLAS: ...)" or "... cpu, cuda unavailable: REASON
 * ...". Runs the CUDA plugin's default search if no plugin was selected yet (so select first, see
 * lima_cuda_plugin_select). Valid until the next call on this thread. */
LIMA_API const char *lima_version_string(void);
/* Message of the last failing call on this thread ("" if none). Valid until the next call. */
LIMA_API const char *lima_last_error(void);
/* Name of a status code ("LIMA_ERR_FORMAT"). Static storage. */
LIMA_API const char *lima_status_name(int status);
/* Threads used by the CPU backend (OpenMP and BLAS). n <= 0 restores the default. */
LIMA_API int lima_set_num_threads(int n);
LIMA_API int lima_get_num_threads(void);

/* ---------------------------------------------------------------- devices */

/* A CUDA device as the CUDA backend plugin sees it. */
typedef struct lima_device_info {
    char name[256];
    int64_t total_memory;        /* bytes */
    int64_t free_memory;         /* bytes */
    int32_t compute_major, compute_minor;
    int32_t runtime_version;     /* e.g. 13000 for CUDA 13.0 */
    int32_t driver_version;
} lima_device_info;

/* Lists CUDA devices through the CUDA backend plugin (liblima_cuda<major>.so, loaded at run time:
 * $LIMA_CUDA_PLUGIN, then next to liblima, then the loader's search path). Fails with
 * LIMA_ERR_UNSUPPORTED and a message saying which of plugin, driver or device is missing. */
LIMA_API int lima_cuda_devices(lima_device_info *out, int32_t cap, int32_t *count);
/* The plugin file that was (or would be) loaded, "" if none was found. Static storage. */
LIMA_API const char *lima_cuda_plugin_path(void);
/* The CUDA version the installed NVIDIA driver supports (e.g. 13000 for 13.0), read from
 * libcuda.so.1 without loading the plugin. LIMA_ERR_UNSUPPORTED when no driver can be loaded. */
LIMA_API int lima_cuda_driver_version(int32_t *version);
/* Chooses the CUDA plugin before its first use: tries the n files in order and keeps the first that
 * loads (its CUDA runtime and cuBLASLt found); *chosen = its index. Fails with
 * LIMA_ERR_UNSUPPORTED listing each file's loader error when none loads (the default search above
 * still applies later), and with LIMA_ERR_STATE when another plugin file is already in use. */
LIMA_API int lima_cuda_plugin_select(const char *const *paths, int32_t n, int32_t *chosen);
/* Library versions the CUDA plugin sees, e.g. "cuda runtime 13.0, driver 13.0, cublasLt 130100,
 * nccl 2.28.3" (NCCL: "not found" when libnccl.so.2 cannot be loaded). */
LIMA_API int lima_cuda_versions(char *out, int32_t cap);

/* Device memory of a model (and its trainer) on a CUDA device, in bytes. */
typedef struct lima_memory_plan {
    int64_t weights;      /* bf16 weights + fp32 master weights (plain trainer) or fp32 embedding and norm gains */
    int64_t optimizer;    /* fp32 gradients + AdamW moments on the device (0 without a trainer; offload: the
                             gradient staging of the units backward holds) */
    int64_t activations;  /* saved activations and gradient buffers for the planned micro-batch */
    int64_t workspace;    /* classifier chunk, cuBLASLt workspace, batch tables */
    int64_t total;        /* the sum: what training will hold */
    int64_t device_free;  /* free on the device before the plan */
    int64_t device_total;
    int64_t peak;         /* highest the backend has held so far */
    int64_t host;         /* pinned host memory an offloaded trainer adds to the model's own fp32 host copy (which
                             becomes its master weights): gradient, AdamW moments, upload staging; 0 otherwise */
} lima_memory_plan;

/* ---------------------------------------------------------------- model */

/* The Hugging Face LlamaConfig fields liblima uses. */
typedef struct lima_model_config {
    int32_t vocab_size;
    int32_t hidden_size;         /* d */
    int32_t intermediate_size;   /* ffn width of the SwiGLU MLP */
    int32_t num_layers;          /* num_hidden_layers */
    int32_t num_heads;           /* num_attention_heads */
    int32_t num_kv_heads;        /* num_key_value_heads (GQA); divides num_heads */
    int32_t head_dim;            /* 0 = hidden_size / num_heads; must be even (rotary) */
    int32_t max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    int32_t tie_word_embeddings; /* 1: lm_head shares model.embed_tokens.weight */
    int32_t bos_token_id;
    int32_t eos_token_id;
    int32_t pad_token_id;        /* -1 = none */
    float initializer_range;     /* std of the normal init of matrices (random init only) */
    /* Rotary scaling (config.json "rope_scaling" / "rope_parameters"), as transformers computes the
     * frequencies: LIMA_ROPE_DEFAULT none; LIMA_ROPE_LINEAR divides them by rope_factor;
     * LIMA_ROPE_LLAMA3 (Llama 3.1+) divides the low ones by rope_factor and blends the middle band
     * between rope_low_freq_factor and rope_high_freq_factor of the original context. */
    int32_t rope_type;
    float rope_factor;
    float rope_low_freq_factor;
    float rope_high_freq_factor;
    int32_t rope_original_max_position_embeddings;
    int32_t attention_bias;      /* 1: q, k, v and o projections have biases (config.json attention_bias) */
    int32_t mlp_bias;            /* 1: gate, up and down projections have biases (config.json mlp_bias) */
} lima_model_config;

#define LIMA_ROPE_DEFAULT 0
#define LIMA_ROPE_LINEAR 1
#define LIMA_ROPE_LLAMA3 2

/* Fills a small valid config (the defaults of LlamaConfig where they apply). */
LIMA_API void lima_model_config_init(lima_model_config *cfg);

typedef struct lima_model lima_model;

/* A model with random weights: matrices ~ N(0, initializer_range) from `seed`, norm gains 1.
 * device: "cpu" (or NULL) or "cuda[:N]". */
LIMA_API int lima_model_create(const lima_model_config *cfg, const char *device, uint64_t seed,
                               lima_model **out);
/* A hollow model: the shape of cfg (or of dir's config.json, every tensor header checked) and no
 * weights. Its trainer (lima_trainer_set_comm) fills it from rank 0: at ZeRO-3 each rank receives only
 * its pieces, one unit at a time, so no rank ever holds the whole model; at a lower stage the whole
 * weights. Rank 0's model may be hollow when loaded from a directory: it then reads the checkpoint unit
 * by unit (rows added by lima_model_resize_vocab are the mean of the others, as for a loaded model).
 * Until then every use that needs weights fails with LIMA_ERR_STATE; lima_model_resize_vocab changes
 * the shape only. Created on the CPU; lima_model_to_device puts one on a CUDA device (still without
 * weights there: a ZeRO-3 trainer over NCCL fills its pieces; other stages need a whole model). */
LIMA_API int lima_model_create_hollow(const lima_model_config *cfg, lima_model **out);
LIMA_API int lima_model_load_hollow(const char *dir, lima_model **out);
LIMA_API int lima_model_to_device(lima_model *m, const char *device);
/* Loads a Hugging Face checkpoint directory: config.json + model.safetensors, or sharded via
 * model.safetensors.index.json. F32, BF16 and F16 tensors are accepted. */
LIMA_API int lima_model_load(const char *dir, const char *device, lima_model **out);
/* Writes config.json + model.safetensors (sharded with an index when the weights exceed
 * max_shard_bytes; 0 = never shard) into dir (created if missing). Files are written under a
 * temporary name and renamed, so an interrupted save never corrupts an earlier checkpoint. */
LIMA_API int lima_model_save(const lima_model *m, const char *dir, int dtype, int64_t max_shard_bytes);
LIMA_API void lima_model_free(lima_model *m);

LIMA_API int lima_model_get_config(const lima_model *m, lima_model_config *out);
LIMA_API int lima_model_num_params(const lima_model *m, int64_t *out);
/* Grows the vocabulary to new_vocab_size (e.g. to add the EOT token). New rows of the embedding
 * and of the LM head are the mean of the old rows. Not allowed while a trainer is attached. */
LIMA_API int lima_model_resize_vocab(lima_model *m, int32_t new_vocab_size);

/* Parameter table in Hugging Face order. name_buf receives the NUL-terminated HF name. */
LIMA_API int lima_model_num_tensors(const lima_model *m, int32_t *out);
LIMA_API int lima_model_tensor_info(const lima_model *m, int32_t index, char *name_buf, int32_t name_cap,
                                    int64_t shape[2], int32_t *ndim);
/* Copies a parameter out as fp32 (n must equal its element count) / in from fp32. */
LIMA_API int lima_model_read_tensor(const lima_model *m, const char *name, float *out, int64_t n);
LIMA_API int lima_model_write_tensor(lima_model *m, const char *name, const float *in, int64_t n);

/* ---------------------------------------------------------------- batch */

/* A micro-batch of B rows x T tokens. A row may pack several examples back to back: segment ids
 * name the example each token belongs to (0 = padding). Attention never crosses a change of
 * segment id and rotary positions restart at 0 at each one. loss_mask[t] = 1 marks token t as a
 * target (a response token): the loss counts -log p(token t | tokens before it in its segment).
 * A mask on the first token of a segment has nothing to predict it and is not counted; a mask on
 * padding is an error. Padding costs no attention and no loss. */
typedef struct lima_batch lima_batch;

LIMA_API int lima_batch_create(int32_t rows, int32_t seq_len, lima_batch **out);
/* tokens (B*T), loss_mask (B*T, 0/1; NULL = no targets), segment_ids (B*T; NULL = each row one
 * example without padding). Copies the data. */
LIMA_API int lima_batch_set(lima_batch *b, const int32_t *tokens, const uint8_t *loss_mask,
                            const int32_t *segment_ids);
/* Number of tokens that carry loss in this micro-batch. */
LIMA_API int lima_batch_num_targets(const lima_batch *b, int64_t *out);
LIMA_API void lima_batch_free(lima_batch *b);

/* ---------------------------------------------------------------- evaluation */

/* Logits (B, T, V) in fp32 of an eval-mode forward (no dropout). out_n must be B*T*V. */
LIMA_API int lima_model_logits(lima_model *m, const lima_batch *b, float *out, int64_t out_n);
/* Per-token log-probabilities (B, T) of an eval-mode forward: out[t] = log p(token t | earlier
 * tokens of its segment); 0 for the first token of a segment and for padding. */
LIMA_API int lima_model_token_logprobs(lima_model *m, const lima_batch *b, float *out, int64_t out_n);

/* ---------------------------------------------------------------- training */

typedef struct lima_train_config {
    float beta1;              /* AdamW, LIMA: 0.9 */
    float beta2;              /* LIMA: 0.95 */
    float eps;                /* 1e-8 */
    float weight_decay;       /* LIMA: 0.1; decoupled, applied to matrices only (not norm gains) */
    float grad_clip;          /* max global L2 norm; <= 0 disables clipping */
    float resid_dropout;      /* p at the top layer; rises linearly from 0 at layer 0. LIMA: 0.3 (0.2 small) */
    uint64_t seed;            /* dropout mask stream */
    int32_t recompute_activations; /* CUDA: keep only each layer's input and recompute the rest in backward */
    int32_t offload;          /* 1: full fine-tuning with the fp32 master weights, gradient and AdamW moments in
                                 host memory and the AdamW step on the host (ZeRO-Offload's split on one device;
                                 the same arithmetic); on the CPU the same split runs, for testing. 0: off */
} lima_train_config;

LIMA_API void lima_train_config_init(lima_train_config *cfg);

typedef struct lima_trainer lima_trainer;

typedef struct lima_fb_result {
    double loss_sum;          /* sum over this micro-batch's targets of -log p */
    int64_t num_targets;      /* targets in this micro-batch */
} lima_fb_result;

typedef struct lima_step_result {
    double grad_norm;         /* global L2 norm of the accumulated gradient, before clipping */
    int32_t clipped;          /* 1 if the gradient was scaled down to grad_clip */
    int64_t step;             /* optimiser steps taken, after this one */
    double comm_seconds;      /* time this step spent in collectives (data parallel; 0 for one process) */
} lima_step_result;

/* Attaches an AdamW optimiser (fp32 moments) and gradient buffers to a model. The model must
 * outlive the trainer. */
LIMA_API int lima_trainer_create(lima_model *m, const lima_train_config *cfg, lima_trainer **out);
LIMA_API void lima_trainer_free(lima_trainer *t);
/* Forward + backward of one micro-batch in train mode (residual dropout on). Gradients ACCUMULATE
 * into the trainer's buffers, scaled by 1/step_num_targets: pass the number of targets of the
 * WHOLE optimiser step (all its micro-batches) so that accumulation over micro-batches equals one
 * big batch. */
LIMA_API int lima_trainer_forward_backward(lima_trainer *t, const lima_batch *b, int64_t step_num_targets,
                                           lima_fb_result *out);
/* Global grad norm, optional clipping, one AdamW update with learning rate lr, then zeroes the
 * gradients and advances the step counter. */
LIMA_API int lima_trainer_step(lima_trainer *t, float lr, lima_step_result *out);
LIMA_API int lima_trainer_zero_grad(lima_trainer *t);
LIMA_API int lima_trainer_get_step(const lima_trainer *t, int64_t *out);
/* Copies the accumulated gradient of a parameter (fp32, n = its element count). */
LIMA_API int lima_trainer_read_grad(const lima_trainer *t, const char *name, float *out, int64_t n);
/* Optimiser state (both moments of every parameter, step count, config) as one safetensors file,
 * written under a temporary name and renamed. Load checks names, shapes and the model. */
LIMA_API int lima_trainer_save_state(const lima_trainer *t, const char *path);
LIMA_API int lima_trainer_load_state(lima_trainer *t, const char *path);
/* Plans device memory for micro-batches of rows x seq_len tokens and reserves it, so training never
 * runs out of memory half-way. On a CUDA device a plan that does not fit fails with
 * LIMA_ERR_OUT_OF_MEMORY and a message with the figures; on the CPU it fills what it can (host
 * memory, device fields 0). out may be NULL. */
LIMA_API int lima_trainer_plan_memory(lima_trainer *t, int32_t rows, int32_t seq_len, lima_memory_plan *out);

/* ---------------------------------------------------------------- adapters (LoRA) */
/* A LoRA adapter over a frozen model (CPU backend), PEFT-compatible: on each targeted projection
 * y = x W^T + scale * (dropout(x) A^T) B^T with A (r, in), B (out, r), scale = alpha / r (alpha /
 * sqrt(r) with rslora). With an adapter, a trainer trains only the adapter: every lora_A/lora_B and
 * the embedding (and untied LM-head) rows of the trainable token ids (PEFT's
 * trainable_token_indices; LIMA's new EOT token must be one, or the model never learns to stop).
 * The adapter's tensors carry PEFT's names ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
 * "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta", ...) and are read and
 * written with lima_model_read_tensor / lima_model_write_tensor / lima_trainer_read_grad. No adapter
 * call is allowed while a trainer is attached. On a CUDA device LoRA runs as on the CPU (its products
 * in bf16), and so does NF4 (QLoRA, lima_model_quantize_nf4: the device keeps the NF4 projections and
 * dequantises one layer at a time to bf16 for the products). */
#define LIMA_LORA_Q 1u
#define LIMA_LORA_K 2u
#define LIMA_LORA_V 4u
#define LIMA_LORA_O 8u
#define LIMA_LORA_GATE 16u
#define LIMA_LORA_UP 32u
#define LIMA_LORA_DOWN 64u
#define LIMA_LORA_ALL 127u
/* A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) from seed (PEFT's default init), B = 0 (the
 * model's output is unchanged); tokens (n_tokens ids, may be NULL when 0): trainable rows. */
LIMA_API int lima_model_add_adapter(lima_model *m, int32_t r, float alpha, float dropout, uint32_t targets,
                                    const int32_t *tokens, int32_t n_tokens, int32_t rslora, uint64_t seed);
/* Loads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors). PEFT options
 * liblima does not implement (DoRA, biases, per-module ranks, modules_to_save, ...) fail with
 * LIMA_ERR_UNSUPPORTED naming the key. */
LIMA_API int lima_model_load_adapter(lima_model *m, const char *dir);
/* Writes the adapter in PEFT's format into dir (created if missing; files renamed into place).
 * base_model (may be NULL) becomes adapter_config.json's base_model_name_or_path. */
LIMA_API int lima_model_save_adapter(const lima_model *m, const char *dir, const char *base_model);
/* QLoRA: stores the 7 projections of every layer in 4-bit NormalFloat (NF4: blocks of 64, absmax
 * scaled, bitsandbytes' levels and packing; double_quant: the absmax values in 8 bits, blocks of
 * 256), frozen; each layer's projections are dequantised when it runs (CPU backend). Embeddings,
 * norms and the LM head stay fp32. Call before adding an adapter; the model then trains adapters only,
 * lima_model_save refuses it, and lima_model_read_tensor returns a projection dequantised. */
LIMA_API int lima_model_quantize_nf4(lima_model *m, int32_t double_quant);
/* Host bytes the model's weights take (fp32 tensors + NF4 storage). */
LIMA_API int lima_model_weight_bytes(const lima_model *m, int64_t *out);
/* Folds the adapter into the weights (W += scale * B A, as PEFT's merge_and_unload) and drops it. */
LIMA_API int lima_model_merge_adapter(lima_model *m);
/* Drops the adapter, restoring the base's token rows. */
LIMA_API int lima_model_remove_adapter(lima_model *m);
/* The adapter's rank (0 and nothing else written when there is none), targets and trainable elements. */
LIMA_API int lima_model_adapter_info(const lima_model *m, int32_t *r, float *alpha, float *dropout, uint32_t *targets,
                                     int64_t *num_params);
/* ---------------------------------------------------------------- distributed training */

/* This process's place in a group of `world` ranks, and the collectives of data-parallel training,
 * run by a communicator plugin loaded at run time (liblima_gloo.so for "gloo", the CPU backend:
 * $LIMA_GLOO_PLUGIN, next to liblima, then the loader's path), so liblima loads where no collective
 * library is installed; a missing plugin is LIMA_ERR_UNSUPPORTED naming what to install.
 * rendezvous: "file:DIR", a directory every rank can reach (fresh for each job). Every rank must
 * arrive within timeout_ms, which also bounds every collective; otherwise the call fails
 * (LIMA_ERR_IO) naming the ranks that did not arrive; a peer that dies makes the next collective fail
 * with LIMA_ERR_IO (SIGPIPE is set to be ignored if it had its default action, so that a write to a
 * dead peer is an error, not the end of this process). The communicator must outlive its trainers. */
typedef struct lima_comm lima_comm;

LIMA_API int lima_comm_create(const char *backend, int32_t rank, int32_t world, const char *rendezvous,
                              int32_t timeout_ms, lima_comm **out);
LIMA_API void lima_comm_free(lima_comm *c);
/* Chooses the plugin file of a backend before its first use (tried before the default search). */
LIMA_API int lima_comm_plugin_select(const char *backend, const char *path);
LIMA_API int lima_comm_info(const lima_comm *c, int32_t *rank, int32_t *world);
/* data (n) = the sum over ranks of data (n), in place. */
LIMA_API int lima_comm_allreduce_sum(lima_comm *c, float *data, int64_t n);
/* data (world * n): block `rank` ([rank * n, (rank + 1) * n)) becomes the sum over ranks of that
 * block; the other blocks are left as scratch. */
LIMA_API int lima_comm_reduce_scatter_sum(lima_comm *c, float *data, int64_t n);
/* out (world * n) = every rank's in (n), in rank order. */
LIMA_API int lima_comm_allgather(lima_comm *c, const float *in, int64_t n, float *out);
/* data (n) = root's data (n). */
LIMA_API int lima_comm_broadcast(lima_comm *c, float *data, int64_t n, int32_t root);
LIMA_API int lima_comm_barrier(lima_comm *c);
/* Closes this rank's connections, so that peers blocked in a collective with it fail at once. */
LIMA_API int lima_comm_abort(lima_comm *c);

/* NCCL, for CUDA ranks (the CUDA plugin opens libnccl.so.2, or $LIMA_NCCL_LIBRARY, at run time):
 * rank 0 makes a unique id (128 bytes into out) and sends it to every rank (through the host
 * communicator every rank has joined); each rank then makes its communicator on CUDA device
 * `device` ("cuda" or "cuda:N"). Its collectives are the functions above (over host buffers, staged
 * through the device) plus those the CUDA trainer runs on device buffers; each waits at most
 * timeout_ms, then aborts the communicator and fails (LIMA_ERR_IO). Without the CUDA plugin, a
 * driver or NCCL: LIMA_ERR_UNSUPPORTED naming what is missing. */
LIMA_API int lima_comm_nccl_unique_id(uint8_t *out, int32_t cap);
LIMA_API int lima_comm_create_nccl(int32_t rank, int32_t world, const uint8_t *unique_id, int32_t id_len, const char *device,
                                   int32_t timeout_ms, lima_comm **out);

/* Makes a CPU trainer data parallel over c: every rank starts from rank 0's weights; each step's
 * gradient is summed over the ranks before the update (each rank passes the targets of the WHOLE
 * step, all ranks' micro-batches, to lima_trainer_forward_backward). zero_stage 0: replicated
 * optimiser; 1 and 2: each rank keeps the AdamW moments of its shard of the weights only (the flat
 * parameter buffer padded to a multiple of the world size), updates that shard and all-gathers the
 * weights; the gradient norm and clipping are over the global gradient. Stage 2 reduce-scatters the
 * gradient instead of summing all of it (each rank receives the sum of its own shard only).
 * Stage 3 also shards the weights: the model's flat buffer is cut into units (the embedding, each
 * layer, the final norm with the LM head), each padded to a multiple of the world size; a rank keeps
 * its piece of every unit (fp32 weights, gradient and moments) and the model holds no weights of its
 * own: forward and backward all-gather each unit just before it runs and drop it after, and backward
 * reduce-scatters each unit's gradient as it finishes. So every rank must run the same number of
 * lima_trainer_forward_backward calls per step (lima_trainer_skip_micro_batch where it has no
 * micro-batch), and lima_model_logits/lima_model_token_logprobs on the model are collective too. The
 * model's other functions (read_tensor, save, generate...) fail with LIMA_ERR_STATE until
 * lima_trainer_gather_params. Stage 3 needs full fine-tuning (no adapter) and the model's only
 * trainer; freeing the trainer leaves the model without weights. A CUDA trainer takes an NCCL
 * communicator (lima_comm_create_nccl), its collectives on the device on the
 * communicator's own stream, at every stage: at 3 the device holds this rank's pieces and gathers
 * each unit in bf16 just before it runs, the next one prefetched while it computes, and
 * reduce-scatters each unit's gradient as backward finishes it. A sharded trainer saves and loads its own shard of the optimiser
 * state (lima_trainer_save_state), or the slice of a whole state saved by one rank. */
LIMA_API int lima_trainer_set_comm(lima_trainer *t, lima_comm *c, int32_t zero_stage);
/* Loads the optimiser state that every rank of an earlier job saved (lima_trainer_save_state of a
 * sharded trainer, one file per rank, any number of ranks): the shards are assembled and this
 * trainer keeps what it holds (the whole state, or its own shard), so a job can resume with another
 * number of ranks. Checks that the files are every shard of one state of this model. */
LIMA_API int lima_trainer_load_state_shards(lima_trainer *t, const char *const *paths, int32_t n);
/* The index, within the whole optimiser step, of the next micro-batch this rank runs (part of the
 * dropout key): ranks that share a step's micro-batches round-robin draw the masks one rank would. */
LIMA_API int lima_trainer_set_micro_batch(lima_trainer *t, int32_t index);
/* ZeRO-3: this rank has no micro-batch in this round of the step's micro-batches but takes part in
 * the collectives of the others' forward and backward. Does nothing below stage 3. */
LIMA_API int lima_trainer_skip_micro_batch(lima_trainer *t);
/* ZeRO-3: every rank calls it together; rank `root` (every rank when root is -1) then holds the whole
 * weights in the model (to save, read or evaluate it alone) until the next forward_backward or step
 * shards them again. Does nothing below stage 3 (every rank holds them already). */
LIMA_API int lima_trainer_gather_params(lima_trainer *t, int32_t root);
/* The trainer's model saved as lima_model_save would, by rank `root`. At ZeRO-3 every rank calls it
 * together and the weights are gathered one unit at a time while root writes them, so no rank holds
 * the whole model; if root fails to write, every rank returns an error (root's own, the others
 * LIMA_ERR_IO naming root). Below stage 3 (or without a communicator) root saves its own weights
 * and the other ranks do nothing. */
LIMA_API int lima_trainer_save_model(lima_trainer *t, const char *dir, int dtype, int64_t max_shard_bytes, int32_t root);

/* ---------------------------------------------------------------- generation */

/* How the next token is drawn from the logits (LIMA: temperature 0.7, top_p 0.9, penalty 1.2). Applied
 * in this order: repetition penalty, temperature, top-k, top-p, then a draw. */
typedef struct lima_sampling {
    float temperature;          /* <= 0: greedy (argmax, lowest id on ties) */
    float top_p;                /* keep the smallest set of most likely tokens whose mass >= top_p; 1 = off */
    int32_t top_k;              /* keep the k most likely tokens; 0 = off */
    float repetition_penalty;   /* logit l of a penalised token becomes l / r if l > 0, else l * r; 1 = off */
    int32_t penalty_scope;      /* 0: tokens generated so far (LIMA); 1: prompt and generated tokens (HF) */
} lima_sampling;

/* LIMA's values: temperature 0.7, top_p 0.9, top_k 0, repetition_penalty 1.2 on generated tokens. */
LIMA_API void lima_sampling_init(lima_sampling *s);

/* Incremental decoding with a KV cache for up to max_rows sequences of at most max_len tokens. */
typedef struct lima_generator lima_generator;

LIMA_API int lima_generator_create(lima_model *m, int32_t max_rows, int32_t max_len, lima_generator **out);
LIMA_API void lima_generator_free(lima_generator *g);
/* Starts `rows` sequences (prefill): tokens holds the prompts back to back, lengths[r] >= 1 each;
 * seeds[r] keys row r's random draws (NULL: row r uses seed r), so a row samples the same tokens
 * whatever else is in the batch. */
LIMA_API int lima_generator_start(lima_generator *g, int32_t rows, const int32_t *tokens, const int32_t *lengths,
                                  const uint64_t *seeds);
/* For every row with active[r] != 0 (NULL: all rows): draws the next token from the row's current
 * logits, appends it (extending the KV cache) and computes the logits that follow it. out_tokens[r]
 * receives the token (-1 for inactive rows). Only token ids leave the backend. */
LIMA_API int lima_generator_step(lima_generator *g, const lima_sampling *s, const uint8_t *active, int32_t *out_tokens);
/* The current next-token logits of every row, (rows, V). For tests and scoring. */
LIMA_API int lima_generator_logits(const lima_generator *g, float *out, int64_t n);
/* Tokens in row r so far (prompt + generated). */
LIMA_API int lima_generator_length(const lima_generator *g, int32_t row, int32_t *out);

/* The sampling rule on one row of logits (V), exposed for tests: penalized lists the token ids the
 * repetition penalty applies to; the draw is keyed by (seed, counter). probs_out (V, may be NULL)
 * receives the final distribution the token was drawn from. */
LIMA_API int lima_sample_logits(const float *logits, int32_t vocab, const lima_sampling *s, const int32_t *penalized,
                                int32_t num_penalized, uint64_t seed, uint64_t counter, float *probs_out,
                                int32_t *token_out);

/* The dropout rate of the residual dropout at layer l (exposed for tests and reports). */
LIMA_API float lima_resid_dropout_rate(float p_max, int32_t layer, int32_t num_layers);

#ifdef __cplusplus
}
#endif

#endif /* LIMA_LIMA_H */
