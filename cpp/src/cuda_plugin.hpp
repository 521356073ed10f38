// The contract between liblima and its CUDA backend plugin (cpp/cuda/), which liblima loads with
// dlopen only when a CUDA device is asked for, so liblima and its JNI glue load on any machine.
// The plugin exports C functions with these signatures; nothing C++ crosses. Every function
// returns a lima_status and, on failure, writes a message into err (errcap bytes).
#pragma once
#include <string>
#include <vector>

#include "lima/lima.h"

extern "C" {

// Where each tensor of one layer starts in the flat parameter buffer. q, k, v and gate, up must be
// adjacent (they are in liblima's layout) so that each group is one matrix product.
// The version of this contract (the structs and functions below): liblima refuses a plugin of another.
#define LIMA_CUDA_PLUGIN_CONTRACT 5
typedef int (*lima_cuda_contract_fn)(void);

// One projection stored in NF4 (cpu/nf4.hpp's Nf4Tensor): n weights, packed two a byte (high nibble
// first); the absmax of each block of 64 either in fp32 (absmax) or double-quantised (qabsmax codes
// into the 256-value dynamic code, absmax2 per 256 blocks, offset).
typedef struct lima_cuda_nf4 {
    int64_t n;
    const uint8_t *packed;
    const float *absmax;     // NULL when double-quantised
    const uint8_t *qabsmax;
    const float *absmax2;
    float offset;
} lima_cuda_nf4;

typedef struct lima_cuda_layer {
    int64_t ln1, qkv, wo, ln2, gu, wd;  // qkv, wo, gu, wd: -1 when the projections are stored in NF4
    int64_t bqkv, bo, bgu, bd;  // biases (q|k|v and gate|up adjacent), -1: none (attention_bias, mlp_bias off)
} lima_cuda_layer;

typedef struct lima_cuda_model_desc {
    lima_model_config cfg;
    int32_t device;
    int64_t total;      // parameters
    int64_t emb, norm, lm_head;
    const lima_cuda_layer *layers;
    int32_t num_tensors;
    const int64_t *t_offset, *t_numel;
    const uint8_t *t_decay;
    const int64_t *units;  // (num_layers + 2) x [begin, end): the embedding, each layer, the final norm with the LM head
    const lima_cuda_nf4 *nf4;  // (num_layers * 7) projections q k v o gate up down in NF4 (QLoRA), or NULL
    const float *nf4_code;     // the 256-value dynamic code of double-quantised absmax values
} lima_cuda_model_desc;

// A LoRA adapter (liblima's adapter.hpp, PEFT's layout) over the model: its flat fp32 buffer holds
// lora_A (r, in) and lora_B (out, r) of each targeted projection and the trainable token rows.
typedef struct lima_cuda_adapter_desc {
    int32_t r;
    float scale, dropout;
    int64_t total;          // elements of the adapter's buffer
    const int64_t *ab;      // (num_layers * 7 * 2): offsets of A and B per layer and target (q k v o gate up down), -1 untargeted
    int32_t n_tokens;
    const int32_t *tokens;  // the trainable token ids
    int64_t emb_rows, head_rows;  // offsets of their embedding rows and (untied) LM-head rows, (n_tokens, d); -1 none
    int32_t num_tensors;
    const int64_t *t_offset, *t_numel;
    const uint8_t *t_decay;
} lima_cuda_adapter_desc;

typedef struct lima_cuda_batch {
    int32_t B, T;
    const int32_t *tokens, *pos;  // (B*T)
    int32_t num_segs;
    const int64_t *seg_start;     // flat index of each segment's first token
    const int32_t *seg_len;
    int32_t max_seg_len;
    int64_t M;                    // rows that predict a label
    const int64_t *rows;
    const int32_t *labels;
} lima_cuda_batch;

typedef struct lima_cuda_fb_args {
    float inv_norm;  // 1 / targets of the optimiser step
    float p_max;     // residual dropout at the top layer
    int32_t dropout; // 0: eval-mode forward
    uint64_t seed;
    uint32_t step, micro;
} lima_cuda_fb_args;

typedef struct lima_cuda_adam_args {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
    int64_t t;  // step number, from 1
} lima_cuda_adam_args;

typedef int (*lima_cuda_devices_fn)(lima_device_info *out, int32_t cap, int32_t *count, char *err, int32_t errcap);
typedef int (*lima_cuda_versions_fn)(char *out, int32_t cap);
typedef int (*lima_cuda_create_fn)(const lima_cuda_model_desc *d, const float *params, void **ctx, char *err, int32_t errcap);
typedef void (*lima_cuda_free_fn)(void *ctx);
// to_device != 0: host -> device (fp32 master and its bf16 copy); else device -> host.
typedef int (*lima_cuda_params_fn)(void *ctx, float *host, int32_t to_device, char *err, int32_t errcap);
// offload != 0: fp32 master weights, gradient and moments in pinned host memory, the step on the host.
// params: the host's fp32 master weights (the device keeps only bf16 until a trainer needs fp32).
typedef int (*lima_cuda_train_init_fn)(void *ctx, int32_t recompute, int32_t offload, const float *params, char *err,
                                       int32_t errcap);
// Moments and gradients (each may be NULL), in the flat layout.
typedef int (*lima_cuda_state_fn)(void *ctx, float *m1, float *m2, float *grads, int32_t to_device, char *err, int32_t errcap);
typedef int (*lima_cuda_zero_grad_fn)(void *ctx, char *err, int32_t errcap);
typedef int (*lima_cuda_forward_backward_fn)(void *ctx, const lima_cuda_batch *b, const lima_cuda_fb_args *a, double *loss,
                                              char *err, int32_t errcap);
typedef int (*lima_cuda_step_fn)(void *ctx, const lima_cuda_adam_args *a, double *grad_norm, int32_t *clipped, char *err,
                                 int32_t errcap);
// out (B*T): out[rows[i] + 1] = log p(labels[i]); other entries untouched.
typedef int (*lima_cuda_logprobs_fn)(void *ctx, const lima_cuda_batch *b, float *out, char *err, int32_t errcap);
// Plans (and reserves) device memory for micro-batches of `tokens` tokens; refuses with
// LIMA_ERR_OUT_OF_MEMORY and the figures when the plan exceeds the device's free memory.
typedef int (*lima_cuda_plan_fn)(void *ctx, int64_t tokens, lima_memory_plan *out, char *err, int32_t errcap);
// Attaches an adapter (its fp32 parameters from the host), or removes it (a NULL). With an adapter,
// training trains it (the base frozen), state and steps are its, and every forward applies it.
typedef int (*lima_cuda_adapter_fn)(void *ctx, const lima_cuda_adapter_desc *a, const float *params, char *err, int32_t errcap);
// The adapter's fp32 parameters: to_device != 0 host -> device, else device -> host.
typedef int (*lima_cuda_adapter_params_fn)(void *ctx, float *host, int32_t to_device, char *err, int32_t errcap);

// Data parallelism across CUDA devices over NCCL (cuda/nccl.cu): comm is a communicator made by
// lima_cuda_comm_create; stage 0, 1 or 2 (ZeRO). comm NULL: the trainer is gone, its state freed.
typedef int (*lima_cuda_set_comm_fn)(void *ctx, void *comm, int32_t stage, char *err, int32_t errcap);
// The NCCL side: a unique id (rank 0 makes it, every rank passes it to create), and a communicator
// of `world` ranks on CUDA device `device`. Its collectives over host buffers have the signatures of
// comm_plugin.hpp's (the Gloo plugin's), so liblima's Comm runs either.
typedef int (*lima_cuda_nccl_unique_id_fn)(uint8_t *out, int32_t cap, char *err, int32_t errcap);
typedef int (*lima_cuda_comm_create_fn)(int32_t rank, int32_t world, const uint8_t *unique_id, int32_t id_len, int32_t device,
                                        int32_t timeout_ms, void **out, char *err, int32_t errcap);

// ZeRO-3 over an NCCL communicator (cuda/zero3.cu), full fine-tuning: z3_begin sets up this rank's
// pieces (a trainer's whole state, if any, is freed), z3_unit hands it each unit of rank 0's weights
// (host fp32, the unit's elements) in order; z3_gather (collective: every rank, the same unit) brings
// a unit's fp32 weights back to the host; z3_skip runs the collectives of a micro-batch this rank
// does not have. A model created with params NULL (hollow) holds no bf16 weights until then.
typedef int (*lima_cuda_z3_begin_fn)(void *ctx, void *comm, char *err, int32_t errcap);
typedef int (*lima_cuda_z3_unit_fn)(void *ctx, int32_t unit, const float *weights, char *err, int32_t errcap);
typedef int (*lima_cuda_z3_gather_fn)(void *ctx, int32_t unit, float *out, char *err, int32_t errcap);
typedef int (*lima_cuda_z3_skip_fn)(void *ctx, char *err, int32_t errcap);

// Decoding on the device (the CUDA side of lima_generator): a bf16 KV cache of max_rows rows of
// max_len tokens, next-token logits and sampling state kept on the device. Arguments are checked by
// liblima (generate.cpp) before these calls.
typedef int (*lima_cuda_gen_create_fn)(void *ctx, int32_t max_rows, int32_t max_len, void **gen, char *err, int32_t errcap);
typedef void (*lima_cuda_gen_free_fn)(void *gen);
// Prefills `rows` prompts (tokens concatenated; lengths (rows)); seeds (rows) key each row's draws.
typedef int (*lima_cuda_gen_start_fn)(void *gen, int32_t rows, const int32_t *tokens, const int32_t *lengths,
                                      const uint64_t *seeds, char *err, int32_t errcap);
// Samples each active row's next token from its logits on the device (active NULL: all rows), appends
// it and runs it through the model; out (rows): the token, -1 for inactive rows.
typedef int (*lima_cuda_gen_step_fn)(void *gen, const lima_sampling *s, const uint8_t *active, int32_t *out, char *err,
                                     int32_t errcap);
// out (rows, V): the current next-token logits.
typedef int (*lima_cuda_gen_logits_fn)(void *gen, float *out, char *err, int32_t errcap);
}

namespace lima {

struct CudaApi {
    lima_cuda_devices_fn devices;
    lima_cuda_versions_fn versions;
    lima_cuda_create_fn create;
    lima_cuda_free_fn free;
    lima_cuda_params_fn params;
    lima_cuda_train_init_fn train_init;
    lima_cuda_state_fn state;
    lima_cuda_zero_grad_fn zero_grad;
    lima_cuda_forward_backward_fn forward_backward;
    lima_cuda_step_fn step;
    lima_cuda_logprobs_fn logprobs;
    lima_cuda_gen_create_fn gen_create;
    lima_cuda_gen_free_fn gen_free;
    lima_cuda_gen_start_fn gen_start;
    lima_cuda_gen_step_fn gen_step;
    lima_cuda_gen_logits_fn gen_logits;
    lima_cuda_plan_fn plan;
    lima_cuda_adapter_fn adapter;
    lima_cuda_adapter_params_fn adapter_params;
    lima_cuda_set_comm_fn set_comm;
    lima_cuda_nccl_unique_id_fn nccl_unique_id;
    lima_cuda_comm_create_fn comm_create;
    lima_cuda_z3_begin_fn z3_begin;
    lima_cuda_z3_unit_fn z3_unit;
    lima_cuda_z3_gather_fn z3_gather;
    lima_cuda_z3_skip_fn z3_skip;
};

// The loaded plugin's functions, or throws LIMA_ERR_UNSUPPORTED naming what is missing.
const CudaApi &cuda_api();
struct CommApi;
// The NCCL communicator's collectives in the plugin (the "nccl" backend of comm.hpp); its create is unused.
const CommApi &cuda_comm_api();
const char *cuda_plugin_path();
// "cuda (FILE)" when the plugin loads, else "cuda unavailable: REASON" (runs the default search).
std::string cuda_backend_summary();
// Loads the first of paths that loads, unless a plugin is loaded already (then: its index, or an error).
int cuda_plugin_select(const char *const *paths, int n);
// cuDriverGetVersion of the installed driver, or throws LIMA_ERR_UNSUPPORTED.
int cuda_driver_version();
// Throws a plugin call's failure (status + its message).
void cuda_call(int status, const char *err);
// Calls a plugin function with an error buffer appended to its arguments; throws on failure.
template <typename F, typename... A>
void cuda_run(F fn, A... args) {
    char err[2048] = "";
    cuda_call(fn(args..., err, int32_t(sizeof err)), err);
}

struct Model;
struct Batch;
struct Trainer;
// Parses "cpu" (-1), "cuda" (0) or "cuda:N"; anything else is an error naming the device.
int parse_device(const char *device);
// Puts the model's weights on CUDA device `device` (the host copy stays as the fp32 reference).
void cuda_attach(Model &m, int device);
void cuda_detach(Model &m);
// Copies the device's master weights to the host copy if training changed them.
void cuda_sync_host(const Model &m);
// After the host copy changed (write_tensor): copies it (and the adapter's) to the device.
void cuda_push(Model &m);
// The model's adapter to the device after it was added or loaded, or (none) its removal there.
void cuda_adapter_attach(Model &m);
// A Batch in the plugin's form (the view points into the batch and these vectors).
struct CudaBatch {
    std::vector<int64_t> seg_start, rows;
    std::vector<int32_t> seg_len;
    lima_cuda_batch view{};
    CudaBatch(const Batch &b, bool all_rows);
};
// out (N): log-probabilities of an eval forward on the device (the layout of lima_model_token_logprobs).
void cuda_token_logprobs(Model &m, const Batch &b, float *out);
}  // namespace lima
