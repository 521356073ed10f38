// The C ABI of lima.h over the C++ internals: every entry point runs inside guarded(), which turns
// exceptions into status codes and the thread-local last-error message, so none escapes.
#include <cblas.h>
#include <omp.h>

#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "adapter.hpp"
#include "common.hpp"
#include "lima/lima.h"
#include "cpu/classifier.hpp"
#include "cpu/sampling.hpp"
#include "cuda_plugin.hpp"
#include "generate.hpp"
#include "model.hpp"
#include "trainer.hpp"

extern "C" {
void openblas_set_num_threads(int);
char *openblas_get_config(void);
}

struct lima_model {
    std::unique_ptr<lima::Model> m;
};
struct lima_trainer {
    std::unique_ptr<lima::Trainer> t;
};
struct lima_batch {
    lima::Batch b;
};
struct lima_comm {
    std::unique_ptr<lima::Comm> c;
};
struct lima_generator {
    std::unique_ptr<lima::Generator> g;
};

namespace {

thread_local std::string g_last_error;

template <typename F>
int guarded(F &&f) noexcept {
    try {
        f();
        return LIMA_OK;
    } catch (const lima::Error &e) {
        g_last_error = e.what();
        return e.code;
    } catch (const std::bad_alloc &) {
        g_last_error = "out of memory (host allocation failed)";
        return LIMA_ERR_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        g_last_error = std::string("internal error: ") + e.what();
        return LIMA_ERR_INTERNAL;
    } catch (...) {
        g_last_error = "internal error: unknown exception";
        return LIMA_ERR_INTERNAL;
    }
}

template <typename T>
void need(const T *p, const char *fn, const char *what) {
    LIMA_REQUIRE(p != nullptr, LIMA_ERR_INVALID_ARGUMENT, fn, ": ", what, " is NULL");
}

int g_default_threads = 0;

// A tensor by name: the model's, or its adapter's (PEFT names); with the buffer holding it.
std::pair<const lima::ParamInfo &, std::vector<float> *> find_tensor(lima::Model &m, const char *name, const char *fn) {
    m.require_whole(fn);
    if (m.adapter && m.adapter->layout.index.count(name)) return {m.adapter->layout.at(name, fn), &m.adapter->params};
    return {m.layout.at(name, fn), &m.params};
}

}  // namespace

extern "C" {

int lima_abi_version(void) { return LIMA_ABI_VERSION; }

const char *lima_version_string(void) {
    thread_local std::string v;
    v = std::string("liblima 0.1.0 (abi ") + std::to_string(LIMA_ABI_VERSION) + "; backends: cpu, " +
        lima::cuda_backend_summary() + "; BLAS: " + openblas_get_config() + ")";
    return v.c_str();
}

const char *lima_last_error(void) { return g_last_error.c_str(); }

const char *lima_status_name(int s) {
    switch (s) {
        case LIMA_OK: return "LIMA_OK";
        case LIMA_ERR_INVALID_ARGUMENT: return "LIMA_ERR_INVALID_ARGUMENT";
        case LIMA_ERR_IO: return "LIMA_ERR_IO";
        case LIMA_ERR_FORMAT: return "LIMA_ERR_FORMAT";
        case LIMA_ERR_SHAPE: return "LIMA_ERR_SHAPE";
        case LIMA_ERR_OUT_OF_MEMORY: return "LIMA_ERR_OUT_OF_MEMORY";
        case LIMA_ERR_UNSUPPORTED: return "LIMA_ERR_UNSUPPORTED";
        case LIMA_ERR_STATE: return "LIMA_ERR_STATE";
        case LIMA_ERR_INTERNAL: return "LIMA_ERR_INTERNAL";
        default: return "LIMA_ERR_UNKNOWN";
    }
}

int lima_set_num_threads(int n) {
    return guarded([&] {
        if (g_default_threads == 0) g_default_threads = omp_get_max_threads();
        const int k = n > 0 ? n : g_default_threads;
        omp_set_num_threads(k);
        openblas_set_num_threads(k);
    });
}

int lima_get_num_threads(void) { return omp_get_max_threads(); }


int lima_model_create_hollow(const lima_model_config *cfg, lima_model **out) {
    return guarded([&] {
        need(cfg, "lima_model_create_hollow", "cfg");
        need(out, "lima_model_create_hollow", "out");
        lima::ModelConfig c(*cfg);
        lima::validate(c, "lima_model_create_hollow");
        auto h = std::make_unique<lima_model>();
        h->m = std::make_unique<lima::Model>(c, false);
        *out = h.release();
    });
}

int lima_model_load_hollow(const char *dir, lima_model **out) {
    return guarded([&] {
        need(dir, "lima_model_load_hollow", "dir");
        need(out, "lima_model_load_hollow", "out");
        auto h = std::make_unique<lima_model>();
        h->m.reset(lima::load_model_config(dir));
        *out = h.release();
    });
}

int lima_model_to_device(lima_model *m, const char *device) {
    return guarded([&] {
        need(m, "lima_model_to_device", "m");
        need(device, "lima_model_to_device", "device");
        const int dev = lima::parse_device(device);
        LIMA_REQUIRE(m->m->hollow, LIMA_ERR_STATE, "lima_model_to_device: the model holds weights; load it on the device"
                     " (lima_model_load/lima_model_create with the device) instead");
        LIMA_REQUIRE(!m->m->cuda, LIMA_ERR_STATE, "lima_model_to_device: the model is on a CUDA device already");
        LIMA_REQUIRE(dev >= 0, LIMA_ERR_INVALID_ARGUMENT, "lima_model_to_device: device \"", device, "\" is not a CUDA device (a hollow"
                     " model is on the CPU already)");
        lima::cuda_attach(*m->m, dev);
    });
}

int lima_model_create(const lima_model_config *cfg, const char *device, uint64_t seed, lima_model **out) {
    return guarded([&] {
        need(cfg, "lima_model_create", "cfg");
        need(out, "lima_model_create", "out");
        const int dev = lima::parse_device(device);
        lima::ModelConfig c(*cfg);
        lima::validate(c, "lima_model_create");
        auto h = std::make_unique<lima_model>();
        h->m = std::make_unique<lima::Model>(c);
        lima::random_init(*h->m, seed);
        if (dev >= 0) lima::cuda_attach(*h->m, dev);
        *out = h.release();
    });
}

int lima_model_load(const char *dir, const char *device, lima_model **out) {
    return guarded([&] {
        need(dir, "lima_model_load", "dir");
        need(out, "lima_model_load", "out");
        const int dev = lima::parse_device(device);
        if (dev >= 0) lima::cuda_api();  // a missing plugin fails before the checkpoint is read
        auto h = std::make_unique<lima_model>();
        h->m.reset(lima::load_model(dir));
        if (dev >= 0) lima::cuda_attach(*h->m, dev);
        *out = h.release();
    });
}

int lima_model_save(const lima_model *m, const char *dir, int dtype, int64_t max_shard_bytes) {
    return guarded([&] {
        need(m, "lima_model_save", "model");
        m->m->require_whole("lima_model_save");
        need(dir, "lima_model_save", "dir");
        lima::save_model(*m->m, dir, dtype, max_shard_bytes);
    });
}

void lima_model_free(lima_model *m) { delete m; }

int lima_model_get_config(const lima_model *m, lima_model_config *out) {
    return guarded([&] {
        need(m, "lima_model_get_config", "model");
        need(out, "lima_model_get_config", "out");
        *out = m->m->cfg;
        out->head_dim = m->m->cfg.hd();
    });
}

int lima_model_num_params(const lima_model *m, int64_t *out) {
    return guarded([&] {
        need(m, "lima_model_num_params", "model");
        need(out, "lima_model_num_params", "out");
        *out = m->m->num_params();
    });
}

int lima_model_resize_vocab(lima_model *m, int32_t n) {
    return guarded([&] {
        need(m, "lima_model_resize_vocab", "model");
        if (!m->m->hollow) m->m->require_whole("lima_model_resize_vocab");  // a hollow model changes its shape only
        lima::resize_vocab(*m->m, n);
    });
}

int lima_model_num_tensors(const lima_model *m, int32_t *out) {
    return guarded([&] {
        need(m, "lima_model_num_tensors", "model");
        need(out, "lima_model_num_tensors", "out");
        *out = int32_t(m->m->layout.params.size());
    });
}

int lima_model_tensor_info(const lima_model *m, int32_t i, char *name_buf, int32_t cap, int64_t shape[2], int32_t *ndim) {
    return guarded([&] {
        need(m, "lima_model_tensor_info", "model");
        const auto &ps = m->m->layout.params;
        LIMA_REQUIRE(i >= 0 && size_t(i) < ps.size(), LIMA_ERR_INVALID_ARGUMENT, "lima_model_tensor_info: index ", i,
                     " out of range [0, ", ps.size(), ")");
        const lima::ParamInfo &p = ps[size_t(i)];
        if (name_buf) {
            LIMA_REQUIRE(cap > int32_t(p.name.size()), LIMA_ERR_INVALID_ARGUMENT, "lima_model_tensor_info: name buffer of ",
                         cap, " bytes is too small for ", p.name);
            std::memcpy(name_buf, p.name.c_str(), p.name.size() + 1);
        }
        if (shape) {
            shape[0] = p.rows;
            shape[1] = p.cols;
        }
        if (ndim) *ndim = p.cols ? 2 : 1;
    });
}

int lima_model_read_tensor(const lima_model *m, const char *name, float *out, int64_t n) {
    return guarded([&] {
        need(m, "lima_model_read_tensor", "model");
        need(name, "lima_model_read_tensor", "name");
        need(out, "lima_model_read_tensor", "out");
        const auto [layer, target] = lima::projection_of(name);
        if (m->m->nf4() && layer >= 0 && layer < m->m->cfg.num_layers) {  // stored in NF4: dequantised
            const lima::cpu::Nf4Tensor &q = m->m->qweights[size_t(layer * lima::LORA_TARGETS + target)];
            LIMA_REQUIRE(n == q.n, LIMA_ERR_SHAPE, "lima_model_read_tensor: ", name, " has ", q.n, " elements, buffer has ", n);
            lima::cpu::nf4_dequantize(q, out, 0, n);
            return;
        }
        auto [p, buf] = find_tensor(*m->m, name, "lima_model_read_tensor");
        LIMA_REQUIRE(n == p.numel(), LIMA_ERR_SHAPE, "lima_model_read_tensor: ", name, " has ", p.numel(), " elements, buffer has ", n);
        lima::cuda_sync_host(*m->m);
        std::memcpy(out, buf->data() + p.offset, sizeof(float) * size_t(n));
    });
}

int lima_model_write_tensor(lima_model *m, const char *name, const float *in, int64_t n) {
    return guarded([&] {
        need(m, "lima_model_write_tensor", "model");
        need(name, "lima_model_write_tensor", "name");
        need(in, "lima_model_write_tensor", "in");
        auto [p, buf] = find_tensor(*m->m, name, "lima_model_write_tensor");
        LIMA_REQUIRE(n == p.numel(), LIMA_ERR_SHAPE, "lima_model_write_tensor: ", name, " has ", p.numel(), " elements, buffer has ", n);
        lima::cuda_sync_host(*m->m);
        std::memcpy(buf->data() + p.offset, in, sizeof(float) * size_t(n));
        lima::sync_token_rows(*m->m);
        lima::cuda_push(*m->m);
    });
}

int lima_model_add_adapter(lima_model *m, int32_t r, float alpha, float dropout, uint32_t targets, const int32_t *tokens,
                           int32_t n_tokens, int32_t rslora, uint64_t seed) {
    return guarded([&] {
        need(m, "lima_model_add_adapter", "model");
        m->m->require_whole("lima_model_add_adapter");
        LIMA_REQUIRE(n_tokens >= 0 && (n_tokens == 0 || tokens), LIMA_ERR_INVALID_ARGUMENT,
                     "lima_model_add_adapter: n_tokens (", n_tokens, ") must be >= 0, with tokens non-NULL when > 0");
        lima::AdapterConfig c;
        c.r = r;
        c.alpha = alpha;
        c.dropout = dropout;
        c.targets = targets;
        c.rslora = rslora != 0;
        if (n_tokens > 0) c.tokens.assign(tokens, tokens + n_tokens);
        lima::add_adapter(*m->m, c, seed);
    });
}

int lima_model_load_adapter(lima_model *m, const char *dir) {
    return guarded([&] {
        need(m, "lima_model_load_adapter", "model");
        m->m->require_whole("lima_model_load_adapter");
        need(dir, "lima_model_load_adapter", "dir");
        lima::load_adapter(*m->m, dir);
    });
}

int lima_model_save_adapter(const lima_model *m, const char *dir, const char *base_model) {
    return guarded([&] {
        need(m, "lima_model_save_adapter", "model");
        need(dir, "lima_model_save_adapter", "dir");
        lima::save_adapter(*m->m, dir, base_model ? base_model : "");
    });
}

int lima_model_quantize_nf4(lima_model *m, int32_t double_quant) {
    return guarded([&] {
        need(m, "lima_model_quantize_nf4", "model");
        m->m->require_whole("lima_model_quantize_nf4");
        lima::quantize_nf4(*m->m, double_quant != 0);
    });
}

int lima_model_weight_bytes(const lima_model *m, int64_t *out) {
    return guarded([&] {
        need(m, "lima_model_weight_bytes", "model");
        need(out, "lima_model_weight_bytes", "out");
        *out = m->m->weight_bytes();
    });
}

int lima_model_merge_adapter(lima_model *m) {
    return guarded([&] {
        need(m, "lima_model_merge_adapter", "model");
        m->m->require_whole("lima_model_merge_adapter");
        lima::merge_adapter(*m->m);
    });
}

int lima_model_remove_adapter(lima_model *m) {
    return guarded([&] {
        need(m, "lima_model_remove_adapter", "model");
        lima::remove_adapter(*m->m);
    });
}

int lima_model_adapter_info(const lima_model *m, int32_t *r, float *alpha, float *dropout, uint32_t *targets, int64_t *num_params) {
    return guarded([&] {
        need(m, "lima_model_adapter_info", "model");
        const lima::Adapter *a = m->m->adapter.get();
        if (r) *r = a ? a->cfg.r : 0;
        if (!a) return;
        if (alpha) *alpha = a->cfg.alpha;
        if (dropout) *dropout = a->cfg.dropout;
        if (targets) *targets = a->cfg.targets;
        if (num_params) *num_params = int64_t(a->layout.total);
    });
}

int lima_batch_create(int32_t rows, int32_t seq_len, lima_batch **out) {
    return guarded([&] {
        need(out, "lima_batch_create", "out");
        LIMA_REQUIRE(rows > 0 && seq_len > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_batch_create: rows (", rows,
                     ") and seq_len (", seq_len, ") must be > 0");
        LIMA_REQUIRE(int64_t(rows) * seq_len <= (int64_t(1) << 31) - 1, LIMA_ERR_INVALID_ARGUMENT, "lima_batch_create: ", rows,
                     " x ", seq_len, " tokens is too many for one micro-batch");
        auto b = std::make_unique<lima_batch>();
        b->b.B = rows;
        b->b.T = seq_len;
        *out = b.release();
    });
}

int lima_batch_set(lima_batch *b, const int32_t *tokens, const uint8_t *mask, const int32_t *seg) {
    return guarded([&] {
        need(b, "lima_batch_set", "batch");
        lima::Batch fresh;
        fresh.B = b->b.B;
        fresh.T = b->b.T;
        lima::batch_fill(fresh, tokens, mask, seg);  // validate fully before replacing the old contents
        b->b = std::move(fresh);
    });
}

int lima_batch_num_targets(const lima_batch *b, int64_t *out) {
    return guarded([&] {
        need(b, "lima_batch_num_targets", "batch");
        need(out, "lima_batch_num_targets", "out");
        *out = int64_t(b->b.pred_rows.size());
    });
}

void lima_batch_free(lima_batch *b) { delete b; }

namespace {
// The LM head; a sharded model's (ZeRO-3) is gathered for the call, which every rank makes together.
struct Head {
    lima::Model &m;
    int unit = -1;
    const float *w = nullptr;
    explicit Head(lima::Model &model) : m(model) {
        if (!m.source) {
            w = m.weights().lm_head;
            return;
        }
        unit = m.head_unit();
        w = m.bind_unit(m.source->gather(unit), unit).lm_head;
    }
    ~Head() {
        if (unit >= 0) m.source->release(unit);  // weights only: no collective, nothing to throw
    }
    Head(const Head &) = delete;
    Head &operator=(const Head &) = delete;
};

void eval_forward(lima_model *m, const lima_batch *b, const char *fn) {
    need(m, fn, "model");
    need(b, fn, "batch");
    LIMA_REQUIRE(b->b.filled, LIMA_ERR_STATE, fn, ": the batch has no data (call lima_batch_set)");
    lima::cuda_sync_host(*m->m);  // full logits of a CUDA model: the CPU reference on its current weights
    lima::forward(*m->m, b->b, nullptr, 0.0f);
}
}  // namespace

int lima_model_logits(lima_model *m, const lima_batch *b, float *out, int64_t n) {
    return guarded([&] {
        need(out, "lima_model_logits", "out");
        const int64_t want = b ? b->b.N() * int64_t(m ? m->m->cfg.vocab_size : 0) : 0;
        LIMA_REQUIRE(n == want, LIMA_ERR_SHAPE, "lima_model_logits: out has ", n, " floats, (B, T, V) needs ", want);
        eval_forward(m, b, "lima_model_logits");
        lima::Model &mm = *m->m;
        const Head head(mm);
        lima::cpu::classifier_logits(out, mm.acts.xf.data(), head.w, b->b.N(), mm.cfg.hidden_size,
                                     mm.cfg.vocab_size);
    });
}

int lima_model_token_logprobs(lima_model *m, const lima_batch *b, float *out, int64_t n) {
    return guarded([&] {
        need(out, "lima_model_token_logprobs", "out");
        LIMA_REQUIRE(b && n == b->b.N(), LIMA_ERR_SHAPE, "lima_model_token_logprobs: out has ", n, " floats, (B, T) needs ",
                     b ? b->b.N() : 0);
        need(m, "lima_model_token_logprobs", "model");
        LIMA_REQUIRE(b->b.filled, LIMA_ERR_STATE, "lima_model_token_logprobs: the batch has no data (call lima_batch_set)");
        std::memset(out, 0, sizeof(float) * size_t(n));
        if (m->m->cuda) {
            lima::cuda_token_logprobs(*m->m, b->b, out);
            return;
        }
        eval_forward(m, b, "lima_model_token_logprobs");
        lima::Model &mm = *m->m;
        const Head head(mm);
        lima::cpu::classifier_logprobs(out, mm.acts.xf.data(), head.w, b->b.all_rows.data(),
                                       b->b.all_labels.data(), long(b->b.all_rows.size()), mm.cfg.hidden_size,
                                       mm.cfg.vocab_size);
    });
}

void lima_train_config_init(lima_train_config *c) {
    if (!c) return;
    *c = lima_train_config{};
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->eps = 1e-8f;
    c->weight_decay = 0.1f;
    c->grad_clip = 1.0f;
    c->resid_dropout = 0.0f;
    c->seed = 0;
}

int lima_trainer_create(lima_model *m, const lima_train_config *cfg, lima_trainer **out) {
    return guarded([&] {
        need(m, "lima_trainer_create", "model");
        need(cfg, "lima_trainer_create", "cfg");
        need(out, "lima_trainer_create", "out");
        auto t = std::make_unique<lima_trainer>();
        t->t = std::make_unique<lima::Trainer>(m->m.get(), *cfg);
        *out = t.release();
    });
}

void lima_trainer_free(lima_trainer *t) { delete t; }

int lima_trainer_forward_backward(lima_trainer *t, const lima_batch *b, int64_t step_targets, lima_fb_result *out) {
    return guarded([&] {
        need(t, "lima_trainer_forward_backward", "trainer");
        need(b, "lima_trainer_forward_backward", "batch");
        const lima_fb_result r = t->t->forward_backward(b->b, step_targets);
        if (out) *out = r;
    });
}

int lima_trainer_step(lima_trainer *t, float lr, lima_step_result *out) {
    return guarded([&] {
        need(t, "lima_trainer_step", "trainer");
        const lima_step_result r = t->t->apply(lr);
        if (out) *out = r;
    });
}

int lima_comm_create(const char *backend, int32_t rank, int32_t world, const char *rendezvous, int32_t timeout_ms, lima_comm **out) {
    return guarded([&] {
        need(backend, "lima_comm_create", "backend");
        need(rendezvous, "lima_comm_create", "rendezvous");
        need(out, "lima_comm_create", "out");
        auto c = std::make_unique<lima_comm>();
        c->c = std::make_unique<lima::Comm>(backend, rank, world, rendezvous, timeout_ms);
        *out = c.release();
    });
}

int lima_comm_nccl_unique_id(uint8_t *out, int32_t cap) {
    return guarded([&] {
        need(out, "lima_comm_nccl_unique_id", "out");
        LIMA_REQUIRE(cap >= lima::kNcclIdBytes, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_nccl_unique_id: out needs ", lima::kNcclIdBytes,
                     " bytes, cap is ", cap);
        const std::vector<uint8_t> id = lima::nccl_unique_id();
        std::copy(id.begin(), id.end(), out);
    });
}

int lima_comm_create_nccl(int32_t rank, int32_t world, const uint8_t *unique_id, int32_t id_len, const char *device, int32_t timeout_ms,
                          lima_comm **out) {
    return guarded([&] {
        need(unique_id, "lima_comm_create_nccl", "unique_id");
        need(device, "lima_comm_create_nccl", "device");
        need(out, "lima_comm_create_nccl", "out");
        const int dev = lima::parse_device(device);
        LIMA_REQUIRE(dev >= 0, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_create_nccl: device \"", device, "\" is not a CUDA device"
                     " (NCCL is for CUDA ranks; CPU ranks use lima_comm_create with \"gloo\")");
        auto c = std::make_unique<lima_comm>();
        c->c = std::make_unique<lima::Comm>(rank, world, unique_id, id_len, dev, timeout_ms);
        *out = c.release();
    });
}

void lima_comm_free(lima_comm *c) { delete c; }

int lima_comm_plugin_select(const char *backend, const char *path) {
    return guarded([&] {
        need(backend, "lima_comm_plugin_select", "backend");
        need(path, "lima_comm_plugin_select", "path");
        lima::comm_plugin_select(backend, path);
    });
}

int lima_comm_info(const lima_comm *c, int32_t *rank, int32_t *world) {
    return guarded([&] {
        need(c, "lima_comm_info", "comm");
        if (rank) *rank = c->c->rank;
        if (world) *world = c->c->world;
    });
}

int lima_comm_allreduce_sum(lima_comm *c, float *data, int64_t n) {
    return guarded([&] {
        need(c, "lima_comm_allreduce_sum", "comm");
        LIMA_REQUIRE(n >= 0 && (data || n == 0), LIMA_ERR_INVALID_ARGUMENT, "lima_comm_allreduce_sum: data is NULL or n < 0");
        c->c->allreduce_sum(data, n);
    });
}

int lima_comm_reduce_scatter_sum(lima_comm *c, float *data, int64_t n) {
    return guarded([&] {
        need(c, "lima_comm_reduce_scatter_sum", "comm");
        LIMA_REQUIRE(n >= 0 && (data || n == 0), LIMA_ERR_INVALID_ARGUMENT, "lima_comm_reduce_scatter_sum: data is NULL or n < 0");
        c->c->reduce_scatter_sum(data, n);
    });
}

int lima_comm_allgather(lima_comm *c, const float *in, int64_t n, float *out) {
    return guarded([&] {
        need(c, "lima_comm_allgather", "comm");
        LIMA_REQUIRE(n >= 0 && in && out, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_allgather: in or out is NULL, or n < 0");
        c->c->allgather(in, n, out);
    });
}

int lima_comm_broadcast(lima_comm *c, float *data, int64_t n, int32_t root) {
    return guarded([&] {
        need(c, "lima_comm_broadcast", "comm");
        LIMA_REQUIRE(n >= 0 && (data || n == 0), LIMA_ERR_INVALID_ARGUMENT, "lima_comm_broadcast: data is NULL or n < 0");
        LIMA_REQUIRE(root >= 0 && root < c->c->world, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_broadcast: root ", root,
                     " is not a rank of ", c->c->world);
        c->c->broadcast(data, n, root);
    });
}

int lima_comm_barrier(lima_comm *c) {
    return guarded([&] {
        need(c, "lima_comm_barrier", "comm");
        c->c->barrier();
    });
}

int lima_comm_abort(lima_comm *c) {
    return guarded([&] {
        need(c, "lima_comm_abort", "comm");
        c->c->api->abort(c->c->handle);
    });
}

int lima_trainer_set_comm(lima_trainer *t, lima_comm *c, int32_t zero_stage) {
    return guarded([&] {
        need(t, "lima_trainer_set_comm", "trainer");
        need(c, "lima_trainer_set_comm", "comm");
        t->t->set_comm(c->c.get(), zero_stage);
    });
}

int lima_trainer_load_state_shards(lima_trainer *t, const char *const *paths, int32_t n) {
    return guarded([&] {
        need(t, "lima_trainer_load_state_shards", "trainer");
        LIMA_REQUIRE(paths && n > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_load_state_shards: paths is NULL or n < 1");
        std::vector<std::string> p;
        for (int32_t i = 0; i < n; ++i) {
            LIMA_REQUIRE(paths[i], LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_load_state_shards: paths[", i, "] is NULL");
            p.push_back(paths[i]);
        }
        t->t->load_state_shards(p);
    });
}

int lima_trainer_set_micro_batch(lima_trainer *t, int32_t index) {
    return guarded([&] {
        need(t, "lima_trainer_set_micro_batch", "trainer");
        LIMA_REQUIRE(index >= 0, LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_set_micro_batch: index must be >= 0, got ", index);
        t->t->set_micro(uint32_t(index));
    });
}

int lima_trainer_skip_micro_batch(lima_trainer *t) {
    return guarded([&] {
        need(t, "lima_trainer_skip_micro_batch", "trainer");
        t->t->skip_micro();
    });
}

int lima_trainer_save_model(lima_trainer *t, const char *dir, int dtype, int64_t max_shard_bytes, int32_t root) {
    return guarded([&] {
        need(t, "lima_trainer_save_model", "trainer");
        need(dir, "lima_trainer_save_model", "dir");
        t->t->save_model(dir, dtype, max_shard_bytes, root);
    });
}

int lima_trainer_gather_params(lima_trainer *t, int32_t root) {
    return guarded([&] {
        need(t, "lima_trainer_gather_params", "trainer");
        t->t->gather_params(root);
    });
}

int lima_trainer_zero_grad(lima_trainer *t) {
    return guarded([&] {
        need(t, "lima_trainer_zero_grad", "trainer");
        t->t->zero_grad();
    });
}

int lima_trainer_get_step(const lima_trainer *t, int64_t *out) {
    return guarded([&] {
        need(t, "lima_trainer_get_step", "trainer");
        need(out, "lima_trainer_get_step", "out");
        *out = t->t->step;
    });
}

int lima_trainer_read_grad(const lima_trainer *t, const char *name, float *out, int64_t n) {
    return guarded([&] {
        need(t, "lima_trainer_read_grad", "trainer");
        need(name, "lima_trainer_read_grad", "name");
        need(out, "lima_trainer_read_grad", "out");
        const lima::ParamInfo &p = t->t->space().at(name, "lima_trainer_read_grad");
        LIMA_REQUIRE(n == p.numel(), LIMA_ERR_SHAPE, "lima_trainer_read_grad: ", name, " has ", p.numel(), " elements, buffer has ", n);
        t->t->read_grad(p, out);
    });
}

int lima_trainer_save_state(const lima_trainer *t, const char *path) {
    return guarded([&] {
        need(t, "lima_trainer_save_state", "trainer");
        need(path, "lima_trainer_save_state", "path");
        t->t->save_state(path);
    });
}

int lima_trainer_load_state(lima_trainer *t, const char *path) {
    return guarded([&] {
        need(t, "lima_trainer_load_state", "trainer");
        need(path, "lima_trainer_load_state", "path");
        t->t->load_state(path);
    });
}

void lima_sampling_init(lima_sampling *s) {
    if (!s) return;
    s->temperature = 0.7f;
    s->top_p = 0.9f;
    s->top_k = 0;
    s->repetition_penalty = 1.2f;
    s->penalty_scope = 0;
}

int lima_generator_create(lima_model *m, int32_t max_rows, int32_t max_len, lima_generator **out) {
    return guarded([&] {
        need(m, "lima_generator_create", "model");
        m->m->require_whole("lima_generator_create");
        need(out, "lima_generator_create", "out");
        auto g = std::make_unique<lima_generator>();
        g->g = std::make_unique<lima::Generator>(m->m.get(), max_rows, max_len);
        *out = g.release();
    });
}

void lima_generator_free(lima_generator *g) { delete g; }

int lima_generator_start(lima_generator *g, int32_t rows, const int32_t *tokens, const int32_t *lengths, const uint64_t *seeds) {
    return guarded([&] {
        need(g, "lima_generator_start", "generator");
        g->g->start(rows, tokens, lengths, seeds);
    });
}

int lima_generator_step(lima_generator *g, const lima_sampling *s, const uint8_t *active, int32_t *out_tokens) {
    return guarded([&] {
        need(g, "lima_generator_step", "generator");
        need(s, "lima_generator_step", "sampling");
        need(out_tokens, "lima_generator_step", "out_tokens");
        g->g->step(*s, active, out_tokens);
    });
}

int lima_generator_logits(const lima_generator *g, float *out, int64_t n) {
    return guarded([&] {
        need(g, "lima_generator_logits", "generator");
        need(out, "lima_generator_logits", "out");
        LIMA_REQUIRE(n >= 0, LIMA_ERR_SHAPE, "lima_generator_logits: out has ", n, " floats");
        g->g->read_logits(out, size_t(n));
    });
}

int lima_generator_length(const lima_generator *g, int32_t row, int32_t *out) {
    return guarded([&] {
        need(g, "lima_generator_length", "generator");
        need(out, "lima_generator_length", "out");
        LIMA_REQUIRE(row >= 0 && row < g->g->rows, LIMA_ERR_INVALID_ARGUMENT, "lima_generator_length: row ", row, " out of range");
        *out = g->g->len[size_t(row)];
    });
}

int lima_sample_logits(const float *logits, int32_t vocab, const lima_sampling *s, const int32_t *penalized,
                       int32_t num_penalized, uint64_t seed, uint64_t counter, float *probs_out, int32_t *token_out) {
    return guarded([&] {
        need(logits, "lima_sample_logits", "logits");
        need(s, "lima_sample_logits", "sampling");
        need(token_out, "lima_sample_logits", "token_out");
        LIMA_REQUIRE(vocab > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_sample_logits: vocab must be > 0");
        std::vector<uint8_t> pen(size_t(vocab), 0);
        for (int32_t i = 0; i < num_penalized; ++i) {
            LIMA_REQUIRE(penalized && penalized[i] >= 0 && penalized[i] < vocab, LIMA_ERR_INVALID_ARGUMENT,
                         "lima_sample_logits: penalized token out of range");
            pen[size_t(penalized[i])] = 1;
        }
        *token_out = lima::cpu::sample_token(logits, vocab, *s, pen.data(), seed, counter, probs_out);
    });
}

int lima_cuda_devices(lima_device_info *out, int32_t cap, int32_t *count) {
    return guarded([&] {
        need(count, "lima_cuda_devices", "count");
        LIMA_REQUIRE(cap >= 0 && (cap == 0 || out), LIMA_ERR_INVALID_ARGUMENT, "lima_cuda_devices: out is NULL or cap < 0");
        lima::cuda_run(lima::cuda_api().devices, out, cap, count);
    });
}

const char *lima_cuda_plugin_path(void) { return lima::cuda_plugin_path(); }

int lima_cuda_driver_version(int32_t *version) {
    return guarded([&] {
        need(version, "lima_cuda_driver_version", "version");
        *version = lima::cuda_driver_version();
    });
}

int lima_cuda_plugin_select(const char *const *paths, int32_t n, int32_t *chosen) {
    return guarded([&] {
        LIMA_REQUIRE(paths && n > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_cuda_plugin_select: no plugin files given");
        for (int32_t i = 0; i < n; ++i)
            LIMA_REQUIRE(paths[i] && paths[i][0], LIMA_ERR_INVALID_ARGUMENT, "lima_cuda_plugin_select: path ", i, " is empty");
        const int i = lima::cuda_plugin_select(paths, n);
        if (chosen) *chosen = i;
    });
}

int lima_cuda_versions(char *out, int32_t cap) {
    return guarded([&] {
        LIMA_REQUIRE(out && cap > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_cuda_versions: out is NULL or cap <= 0");
        lima::cuda_call(lima::cuda_api().versions(out, cap), out);
    });
}

int lima_trainer_plan_memory(lima_trainer *t, int32_t rows, int32_t seq_len, lima_memory_plan *out) {
    return guarded([&] {
        need(t, "lima_trainer_plan_memory", "trainer");
        LIMA_REQUIRE(rows > 0 && seq_len > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_plan_memory: rows (", rows,
                     ") and seq_len (", seq_len, ") must be > 0");
        lima::Model &m = *t->t->model;
        lima_memory_plan p{};
        if (m.cuda) {
            lima::cuda_run(lima::cuda_api().plan, m.cuda, int64_t(rows) * seq_len, &p);
        } else {  // this rank's host bytes: what a data-parallel trainer holds of its shards
            const lima::Trainer &tr = *t->t;
            const int64_t trained = int64_t(tr.space().total);
            p.weights = m.weight_bytes() + (m.adapter ? trained * 4 : 0);
            const int64_t moments = tr.zero >= 1 ? 2 * int64_t(tr.m1.size()) : 2 * trained;
            const int64_t grads = tr.zero >= 2 ? int64_t(tr.grads.size()) : trained;
            p.optimizer = (moments + grads) * 4;
            if (tr.z3) {  // its pieces of the weights, plus the largest unit gathered with its gradient (twice when tied: the head is held through backward)
                int64_t largest = 0;
                for (size_t u = 0; u < tr.z3->units.size(); ++u) largest = std::max(largest, tr.z3->block[u] * tr.comm->world);
                p.weights = int64_t(tr.z3->params.size()) * 4;
                p.workspace = largest * 4 * 2 * (m.cfg.tie_word_embeddings ? 2 : 1);
            }
            p.activations = lima::activation_bytes(m.cfg, int64_t(rows) * seq_len, m.lora_r());
            p.total = p.weights + p.optimizer + p.activations + p.workspace;
        }
        if (out) *out = p;
    });
}

float lima_resid_dropout_rate(float p_max, int32_t layer, int32_t num_layers) {
    return lima::resid_dropout_rate(p_max, layer, num_layers);
}

}  // extern "C"
