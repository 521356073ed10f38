#include "trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "adapter.hpp"
#include "common.hpp"
#include "cpu/adamw.hpp"
#include "cpu/classifier.hpp"
#include "cuda_plugin.hpp"
#include "offload.hpp"
#include "safetensors.hpp"

namespace lima {

namespace {

template <typename F>
void timed(double &seconds, F &&f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The concatenation of v's elements in the given global ranges.
std::vector<float> extract(const std::vector<float> &v, const std::vector<std::pair<int64_t, int64_t>> &ranges) {
    std::vector<float> out;
    for (auto [b, e] : ranges) out.insert(out.end(), v.begin() + b, v.begin() + e);
    return out;
}

int64_t length(const std::vector<std::pair<int64_t, int64_t>> &ranges) {
    int64_t n = 0;
    for (auto [b, e] : ranges) n += e - b;
    return n;
}

}  // namespace

float *CudaZero3::gather(int unit) {
    const auto [b, e] = model->units[size_t(unit)];
    if (held.size() < model->units.size()) held.resize(model->units.size());
    held[size_t(unit)].resize(e - b);
    cuda_run(cuda_api().z3_gather, model->cuda, int32_t(unit), held[size_t(unit)].data());
    return held[size_t(unit)].data();
}

float *CudaZero3::grad(int) { fail(LIMA_ERR_INTERNAL, "ZeRO-3 on CUDA: the gradient pieces live on the device"); }

void CudaZero3::release(int unit) {
    if (size_t(unit) < held.size()) std::vector<float>().swap(held[size_t(unit)]);
}

float *Zero3::gather(int unit) {
    std::vector<float> &h = held[size_t(unit)];
    if (!h.empty()) return h.data();
    const int64_t n = block[size_t(unit)];
    send.assign(size_t(n), 0.0f);  // the padding past the unit's end is zero
    std::copy(params.begin() + local[size_t(unit)], params.begin() + local[size_t(unit)] + valid[size_t(unit)], send.begin());
    h.resize(size_t(n) * size_t(comm->world));
    timed(comm_seconds, [&] { comm->allgather(send.data(), n, h.data()); });
    return h.data();
}

float *Zero3::grad(int unit) {
    std::vector<float> &g = held_grad[size_t(unit)];
    if (g.empty()) g.assign(size_t(block[size_t(unit)]) * size_t(comm->world), 0.0f);
    return g.data();
}

void Zero3::release(int unit) {
    std::vector<float> &g = held_grad[size_t(unit)];
    if (!g.empty()) {  // this rank's block of the sum over ranks joins its shard of the gradient
        const int64_t n = block[size_t(unit)];
        timed(comm_seconds, [&] { comm->reduce_scatter_sum(g.data(), n); });
        const float *mine = g.data() + n * comm->rank;
        float *dst = grads->data() + local[size_t(unit)];
        for (int64_t i = 0; i < valid[size_t(unit)]; ++i) dst[i] += mine[i];
        std::vector<float>().swap(g);
    }
    std::vector<float>().swap(held[size_t(unit)]);
}

float *Offload::gather(int unit) {
    host.wait_ready(unit);
    return host.master + host.units()[size_t(unit)].first;
}

float *Offload::grad(int unit) {
    std::vector<float> &g = staged[size_t(unit)];
    if (!g.empty()) return g.data();
    // the gradient so far (zero after a step or zero_grad): accumulate onto it exactly as the plain path does
    const auto [b, e] = host.units()[size_t(unit)];
    host.drain();
    g.assign(host.grads + b, host.grads + e);
    return g.data();
}

void Offload::release(int unit) {
    std::vector<float> &g = staged[size_t(unit)];
    if (g.empty()) return;
    host.submit([this, unit, buf = std::move(g)] {
        std::copy(buf.begin(), buf.end(), host.grads + host.units()[size_t(unit)].first);
    });
    g = std::vector<float>();
}

void Trainer::settle() const {
    if (!off) return;
    off->host.drain();
    off->host.master = model->params.data();
    off->host.grads = grads.data();
    off->host.m1 = m1.data();
    off->host.m2 = m2.data();
}

void validate(const lima_train_config &c) {
    auto in01 = [](float x) { return std::isfinite(x) && x >= 0.0f && x < 1.0f; };
    LIMA_REQUIRE(in01(c.beta1), LIMA_ERR_INVALID_ARGUMENT, "train config: beta1 must be in [0, 1), got ", c.beta1);
    LIMA_REQUIRE(in01(c.beta2), LIMA_ERR_INVALID_ARGUMENT, "train config: beta2 must be in [0, 1), got ", c.beta2);
    LIMA_REQUIRE(std::isfinite(c.eps) && c.eps > 0, LIMA_ERR_INVALID_ARGUMENT, "train config: eps must be > 0, got ", c.eps);
    LIMA_REQUIRE(std::isfinite(c.weight_decay) && c.weight_decay >= 0, LIMA_ERR_INVALID_ARGUMENT,
                 "train config: weight_decay must be >= 0, got ", c.weight_decay);
    LIMA_REQUIRE(std::isfinite(c.grad_clip), LIMA_ERR_INVALID_ARGUMENT, "train config: grad_clip must be finite, got ", c.grad_clip);
    LIMA_REQUIRE(in01(c.resid_dropout), LIMA_ERR_INVALID_ARGUMENT, "train config: resid_dropout must be in [0, 1), got ",
                 c.resid_dropout);
    LIMA_REQUIRE(c.offload == 0 || c.offload == 1, LIMA_ERR_INVALID_ARGUMENT, "train config: offload must be 0 or 1, got ",
                 c.offload);
}

Trainer::Trainer(Model *m, const lima_train_config &c) : model(m), cfg(c) {
    validate(c);
    LIMA_REQUIRE(!m->nf4() || m->adapter, LIMA_ERR_STATE, "lima_trainer_create: the model's projections are stored in NF4: it"
                 " trains adapters only (QLoRA); add an adapter first");
    LIMA_REQUIRE(!c.offload || (!m->adapter && !m->nf4()), LIMA_ERR_UNSUPPORTED, "lima_trainer_create: offload moves full"
                 " fine-tuning's optimiser to the host; an adapter's (LoRA/QLoRA) state is small and stays with it");
    LIMA_REQUIRE(!c.offload || !m->hollow, LIMA_ERR_STATE, "lima_trainer_create: offload needs the model's weights (this model"
                 " is hollow)");
    LIMA_REQUIRE(!c.offload || m->trainers == 0, LIMA_ERR_STATE, "lima_trainer_create: an offloaded trainer owns the model's"
                 " weights; the model has ", m->trainers, " trainer(s)");
    LIMA_REQUIRE(!m->cuda || m->hollow || (!m->source && m->params.size() == m->layout.total), LIMA_ERR_STATE,
                 "lima_trainer_create: the model's weights are sharded by a ZeRO-3 trainer", m->source ? "" : " that is gone",
                 m->source ? "; gather them first (lima_trainer_gather_params)" : "; load the model again");
    if (m->cuda && m->hollow) {
        // a hollow CUDA model (a ZeRO-3 rank): its state is made sharded by set_comm, never whole
    } else if (m->cuda) {
        // gradients and moments live on the device (offload: in the plugin's pinned host memory);
        // host copies only for save/load/read_grad
        cuda_sync_host(*m);
        cuda_run(cuda_api().train_init, m->cuda, c.recompute_activations, c.offload, static_cast<const float *>(m->params.data()));
        cuda_run(cuda_api().zero_grad, m->cuda);
    } else if (c.offload) {
        ensure_state();
        std::vector<OffloadTensor> tensors;
        for (const ParamInfo &p : m->layout.params) tensors.push_back({int64_t(p.offset), p.numel(), p.decay});
        m->units = make_units(m->cfg, m->layout);
        std::vector<std::pair<int64_t, int64_t>> units;
        for (auto [b, e] : m->units) units.push_back({int64_t(b), int64_t(e)});
        off = std::make_unique<Offload>(m->params.data(), grads.data(), m1.data(), m2.data(), std::move(tensors), std::move(units));
        m->settle = [this] { settle(); };
    }
    ++model->trainers;
}

void Trainer::ensure_state() const {
    if (model->cuda || allocated) return;
    grads.assign(space().total, 0.0f);
    m1.assign(space().total, 0.0f);
    m2.assign(space().total, 0.0f);
    allocated = true;
}

const Layout &Trainer::space() const { return model->adapter ? model->adapter->layout : model->layout; }

std::vector<float> &Trainer::space_params() const { return model->adapter ? model->adapter->params : model->params; }

Trainer::~Trainer() {
    if (z3 && model->source == z3.get()) model->source = nullptr;  // the weights leave with their shards
    if (off) {
        try {
            settle();
        } catch (const Error &) {  // a failed update: the weights are as far as it got
        }
        model->settle = nullptr;
        if (model->source == off.get()) model->source = nullptr;
    }
    if (comm && model->cuda) {  // the device's sharded state goes with this trainer (the weights stay, but at ZeRO-3)
        try {
            if (!cz3) cuda_sync_host(*model);
            cuda_run(cuda_api().set_comm, model->cuda, static_cast<void *>(nullptr), int32_t(0));
        } catch (const Error &) {  // a device that failed: nothing more to free
        }
        if (cz3 && model->source == cz3.get()) model->source = nullptr;  // the weights leave with their pieces
    }
    --model->trainers;
    if (comm) --comm->trainers;
}

void Trainer::set_comm(Comm *c, int stage) {
    LIMA_REQUIRE(c, LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_set_comm: comm is NULL");
    LIMA_REQUIRE(!comm, LIMA_ERR_STATE, "lima_trainer_set_comm: the trainer already has a communicator");
    LIMA_REQUIRE(micro == 0, LIMA_ERR_STATE, "lima_trainer_set_comm: call it between optimiser steps, not mid-step");
    LIMA_REQUIRE(stage >= 0 && stage <= 3, LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_set_comm: zero_stage must be 0, 1, 2 or 3, got ",
                 stage);
    LIMA_REQUIRE(!cfg.offload, LIMA_ERR_UNSUPPORTED, "lima_trainer_set_comm: offload is for one device; data parallel ranks"
                 " shard the optimiser state with ZeRO instead");
    LIMA_REQUIRE(bool(model->cuda) == (c->backend == "nccl"), LIMA_ERR_UNSUPPORTED, "lima_trainer_set_comm: ",
                 model->cuda ? cat("a CUDA trainer's ranks communicate over NCCL (lima_comm_create_nccl), not ", c->backend)
                             : std::string("a CPU trainer's ranks communicate over gloo, not nccl"));
    LIMA_REQUIRE(stage < 3 || (!model->adapter && !model->nf4()), LIMA_ERR_UNSUPPORTED,
                 "lima_trainer_set_comm: ZeRO stage 3 shards the weights of full fine-tuning; an adapter's trainer (LoRA/QLoRA,"
                 " whose base is frozen) uses stage 0, 1 or 2");
    LIMA_REQUIRE(!model->cuda || !model->hollow || stage == 3, LIMA_ERR_STATE, "lima_trainer_set_comm: a hollow model on a CUDA"
                 " device trains at ZeRO stage 3 only (load it whole for stages 0-2)");
    LIMA_REQUIRE(stage < 3 || model->trainers == 1, LIMA_ERR_STATE, "lima_trainer_set_comm: ZeRO stage 3 moves the model's"
                 " weights into this trainer's shards; the model has ", model->trainers, " trainers");
    LIMA_REQUIRE(!model->hollow || c->rank != 0 || model->reader, LIMA_ERR_STATE, "lima_trainer_set_comm: rank 0's model must hold"
                 " the weights or be loaded from a checkpoint (lima_model_load_hollow); a created hollow model is for the other ranks");
    // Every rank must hold the same shape: rank 0's parameter count, checked by all before any weight moves.
    double counts[2] = {c->rank == 0 ? double(space().total) : 0.0, 0.0};
    c->allreduce_sum(counts, 1);
    counts[1] = counts[0] == double(space().total) ? 0.0 : 1.0;
    c->allreduce_sum(counts + 1, 1);
    LIMA_REQUIRE(counts[1] == 0.0, LIMA_ERR_SHAPE, "lima_trainer_set_comm: the ranks' models differ: rank 0's has ", int64_t(counts[0]),
                 " parameters", counts[0] == double(space().total) ? std::string() : cat(", this rank's (", c->rank, ") ", space().total),
                 " (", int64_t(counts[1]), " rank(s) differ)");
    shard = Shard(int64_t(space().total), c->rank, c->world);
    // rank 0 reads a hollow model's weights from its checkpoint, unit by unit; a failed read fails every rank
    std::vector<float> unit;
    auto rank0_unit = [&](size_t b, size_t e, float *out) {
        int status = LIMA_OK;
        std::string error;
        if (c->rank == 0) {
            try {
                if (model->hollow)
                    read_unit(*model, b, e, out);
                else if (out != model->params.data() + b)
                    std::copy(model->params.begin() + long(b), model->params.begin() + long(e), out);
            } catch (const Error &x) {
                status = x.code;
                error = x.what();
            }
        }
        double failed = status != LIMA_OK ? 1.0 : 0.0;
        c->allreduce_sum(&failed, 1);  // every rank, every unit: the same collectives whoever is hollow
        if (status != LIMA_OK) throw Error(status, error);
        LIMA_REQUIRE(failed == 0.0, LIMA_ERR_IO, "lima_trainer_set_comm: rank 0 could not read its checkpoint (its error is in its own log)");
        c->broadcast(out, int64_t(e - b), 0);
    };
    cuda_sync_host(*model);  // the device's weights, if training changed them, are what rank 0 sends
    if (stage < 3) {  // every rank starts from rank 0's weights and optimiser position, as one model would
        if (model->adapter) {  // the bases are the same files everywhere: the adapter is what is sent
            c->broadcast(space_params().data(), int64_t(space_params().size()), 0);
        } else {
            if (model->hollow) model->params.assign(model->layout.total, 0.0f);
            rank0_unit(0, model->layout.total, model->params.data());
            model->hollow = false;
            model->reader.reset();
        }
    }
    if (model->cuda && stage == 3) {  // the device keeps this rank's pieces of rank 0's weights, one unit at a time
        cuda_run(cuda_api().z3_begin, model->cuda, c->handle);
        const auto units = make_units(model->cfg, model->layout);
        for (size_t u = 0; u < units.size(); ++u) {
            unit.resize(units[u].second - units[u].first);
            rank0_unit(units[u].first, units[u].second, unit.data());
            cuda_run(cuda_api().z3_unit, model->cuda, int32_t(u), static_cast<const float *>(unit.data()));
        }
        comm = c;
        zero = 3;
        ++c->trainers;
        owned = pieces(c->rank, c->world, true);
        model->hollow = false;
        model->reader.reset();
        model->units = units;
        std::vector<float>().swap(model->params);  // from now on the weights are the ranks' pieces
        cz3 = std::make_unique<CudaZero3>();
        cz3->model = model;
        model->source = cz3.get();
        model->host_stale = false;
        return;
    }
    comm = c;
    zero = stage;
    ++c->trainers;
    if (model->cuda) {  // the device's copy becomes rank 0's; the plugin keeps the shards and runs the collectives
        cuda_push(*model);
        if (stage >= 1) owned = pieces(c->rank, c->world, false);
        cuda_run(cuda_api().set_comm, model->cuda, c->handle, int32_t(stage));
        return;
    }
    if (stage == 0) return;
    owned = pieces(c->rank, c->world, stage == 3);
    if (allocated) {  // the moments of this rank's pieces only
        m1 = extract(m1, owned);
        m2 = extract(m2, owned);
    } else {  // never the whole state: only the shards are allocated
        m1.assign(size_t(length(owned)), 0.0f);
        m2.assign(size_t(length(owned)), 0.0f);
        grads.assign(stage == 1 ? space().total : 0, 0.0f);
        allocated = true;
    }
    if (stage == 2) grads.resize(size_t(shard.padded), 0.0f);  // padded: the reduce-scatter cuts equal blocks
    if (stage < 3) return;
    auto z = std::make_unique<Zero3>();
    z->comm = c;
    z->units = make_units(model->cfg, model->layout);
    int64_t at = 0;
    for (size_t u = 0; u < z->units.size(); ++u) {
        const int64_t n = int64_t(z->units[u].second - z->units[u].first);
        z->block.push_back((n + c->world - 1) / c->world);
        z->local.push_back(at);
        z->valid.push_back(owned[u].second - owned[u].first);
        at += z->valid.back();
    }
    // this rank's pieces of rank 0's weights, one unit at a time (a hollow rank, rank 0 included, never holds more)
    z->params.assign(size_t(at), 0.0f);
    for (size_t u = 0; u < z->units.size(); ++u) {
        const size_t b = z->units[u].first, e = z->units[u].second;
        unit.resize(e - b);
        rank0_unit(b, e, unit.data());
        std::copy(unit.begin() + (owned[u].first - int64_t(b)), unit.begin() + (owned[u].second - int64_t(b)), z->params.begin() + z->local[u]);
    }
    model->hollow = false;
    model->reader.reset();
    grads.assign(size_t(at), 0.0f);
    z->grads = &grads;
    z->held.resize(z->units.size());
    z->held_grad.resize(z->units.size());
    model->units = z->units;
    std::vector<float>().swap(model->params);  // from now on the weights are the ranks' shards
    model->source = z.get();
    z3 = std::move(z);
}

std::vector<std::pair<int64_t, int64_t>> Trainer::pieces(int rank, int world, bool units) const {
    if (!units) {
        const Shard s(int64_t(space().total), rank, world);
        return {{s.begin, s.end}};
    }
    std::vector<std::pair<int64_t, int64_t>> out;
    for (auto [b, e] : make_units(model->cfg, space())) {
        const int64_t n = int64_t(e - b), block = (n + world - 1) / world;
        out.push_back({int64_t(b) + std::min(n, rank * block), int64_t(b) + std::min(n, (rank + 1) * block)});
    }
    return out;
}

void Trainer::gather_params(int root) {
    LIMA_REQUIRE(root >= -1 && (!comm || root < comm->world), LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_gather_params: root ", root,
                 " is not a rank (or -1 for every rank)");
    if (model->cuda && comm && zero >= 1 && zero < 3) cuda_sync_host(*model);  // every rank: the sharded fp32 master gathered
    ParamSource *src = unit_source();
    if (!src) return;  // below stage 3 every rank holds the whole weights
    const bool keep = root < 0 || root == comm->rank;
    if (keep) model->params.resize(model->layout.total);
    for (size_t u = 0; u < model->units.size(); ++u) {
        const float *w = src->gather(int(u));
        if (keep) std::copy(w, w + (model->units[u].second - model->units[u].first), model->params.begin() + long(model->units[u].first));
        src->release(int(u));
    }
    if (keep) model->source = nullptr;
}

void Trainer::save_model(const std::string &dir, int dtype, int64_t max_shard_bytes, int root) {
    settle();
    LIMA_REQUIRE(root >= 0 && (!comm || root < comm->world), LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_save_model: root ", root,
                 " is not a rank");
    ParamSource *src = unit_source();
    if (!src) {
        // a CUDA model's sharded fp32 master (ZeRO 1-2) comes to the host by a collective: every rank syncs
        if (model->cuda && comm && zero >= 1) cuda_sync_host(*model);
        if (!comm || comm->rank == root) lima::save_model(*model, dir, dtype, max_shard_bytes);
        return;
    }
    reshard();
    const auto &units = model->units;
    const int n = int(units.size());
    int held = -1;
    const float *held_w = nullptr;
    auto unit_of = [&](size_t offset) {
        int u = 0;
        while (u + 1 < n && units[size_t(u) + 1].first <= offset) ++u;
        return u;
    };
    // the tensors come in layout order, so the units are gathered in order, each once
    const std::function<const float *(const ParamInfo &)> source = [&](const ParamInfo &p) -> const float * {
        const int u = unit_of(p.offset);
        if (u != held) {
            if (held >= 0) src->release(held);
            held_w = src->gather(u);
            held = u;
        }
        return held_w + (p.offset - units[size_t(u)].first);
    };
    int status = LIMA_OK;
    std::string error;
    if (comm->rank == root) {
        try {
            lima::save_model(*model, dir, dtype, max_shard_bytes, &source);
        } catch (const Error &e) {  // the other ranks still wait for the remaining gathers: finish them below
            status = e.code;
            error = e.what();
        }
    }
    if (held >= 0) src->release(held);
    for (int u = held + 1; u < n; ++u) {  // the ranks that did not write (and a writer that failed half-way)
        src->gather(u);
        src->release(u);
    }
    double failed = status != LIMA_OK ? 1.0 : 0.0;
    comm->allreduce_sum(&failed, 1);
    if (status != LIMA_OK) throw Error(status, error);
    LIMA_REQUIRE(failed == 0.0, LIMA_ERR_IO, "lima_trainer_save_model: rank ", root, " could not write the checkpoint ", dir,
                 " (its error is in its own log)");
}

void Trainer::reshard() {
    ParamSource *src = unit_source();
    if (!src || model->source) return;
    std::vector<float>().swap(model->params);
    model->source = src;
}

void Trainer::skip_micro() {
    if (cz3) {  // the device runs the collectives of a forward and backward, no kernels
        reshard();
        cuda_run(cuda_api().z3_skip, model->cuda);
        ++micro;
        return;
    }
    if (!z3) return;
    Batch none;  // no rows: the forward and backward run only their gathers and reduce-scatters
    none.filled = true;
    forward_backward(none, 1);
}

void Trainer::set_micro(uint32_t m) {
    LIMA_REQUIRE(m < 65536, LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_set_micro: micro-batch index ", m, " must be < 65536");
    micro = m;
}

lima_fb_result Trainer::forward_backward(const Batch &b, int64_t step_targets) {
    LIMA_REQUIRE(b.filled, LIMA_ERR_STATE, "lima_trainer_forward_backward: the batch has no data (call lima_batch_set)");
    const long M = long(b.pred_rows.size());
    LIMA_REQUIRE(step_targets >= M && (step_targets > 0 || M == 0), LIMA_ERR_INVALID_ARGUMENT,
                 "lima_trainer_forward_backward: step_num_targets (", step_targets,
                 ") must count the targets of every micro-batch of the step; this one alone has ", M);
    LIMA_REQUIRE(micro < 65536, LIMA_ERR_STATE, "lima_trainer_forward_backward: more than 65535 micro-batches in one step");
    lima_fb_result r{0.0, M};
    reshard();
    // Offload: the passes read the weights and stage the gradients unit by unit through the source.
    struct SourceScope {
        Model *m;
        bool on;
        ~SourceScope() {
            if (on) m->source = nullptr;
        }
    } scope{model, off && M > 0};
    if (scope.on) model->source = off.get();
    if (M == 0 && cz3) {  // ZeRO-3 on CUDA: the collectives of the others' passes still run
        skip_micro();
        return r;
    }
    if (M == 0 && !z3) {  // nothing to learn from: no gradient, but the micro-batch still counts (ZeRO-3: the collectives run)
        ++micro;
        return r;
    }
    ensure_state();
    Model &m = *model;
    // Dropout is keyed when the residual or an adapter's input drops anything (PEFT's lora_dropout acts
    // whatever the residual dropout is).
    const bool dropping = cfg.resid_dropout > 0 || (m.adapter && m.adapter->cfg.dropout > 0);
    if (m.cuda) {
        CudaBatch cb(b, false);
        const lima_cuda_fb_args a{float(1.0 / double(step_targets)), cfg.resid_dropout, dropping ? 1 : 0,
                                  cfg.seed, uint32_t(step), micro};
        cuda_run(cuda_api().forward_backward, m.cuda, &cb.view, &a, &r.loss_sum);
        LIMA_REQUIRE(std::isfinite(r.loss_sum), LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_forward_backward: the loss is not finite (",
                     r.loss_sum, "): the weights or inputs hold NaN/inf");
        ++micro;
        return r;
    }
    const DropoutKey key{cfg.seed, uint32_t(step), micro};
    const DropoutKey *kp = dropping ? &key : nullptr;
    forward(m, b, kp, cfg.resid_dropout);
    const int d = m.cfg.hidden_size;
    dxf.assign(size_t(b.N()) * d, 0.0f);
    const float inv = float(1.0 / double(step_targets));
    if (m.adapter) {  // LoRA: the base is frozen; the LM head learns only the trainable token rows
        const AdapterGrads ag = m.adapter->bind_grads(grads.data());
        r.loss_sum = cpu::classifier_train(dxf.data(), ag.head_rows, m.acts.xf.data(), m.weights().lm_head, b.pred_rows.data(),
                                           b.labels.data(), M, d, m.cfg.vocab_size, inv, ag.tokens, ag.n_tokens);
        LIMA_REQUIRE(std::isfinite(r.loss_sum), LIMA_ERR_INVALID_ARGUMENT,
                     "lima_trainer_forward_backward: the loss is not finite (", r.loss_sum, "): the weights or inputs hold NaN/inf");
        backward(m, b, kp, cfg.resid_dropout, dxf.data(), nullptr, &ag);
        ++micro;
        return r;
    }
    // The LM head and its gradient: the model's, or its source's unit (ZeRO-3, offload), held through backward.
    ParamSource *src = m.source;
    const int head = m.head_unit();
    const float *head_w = src ? m.bind_unit(src->gather(head), head).lm_head : m.weights().lm_head;
    float *head_g = src ? m.bind_unit(src->grad(head), head).lm_head : bind(m.cfg, m.layout, grads.data()).lm_head;
    r.loss_sum = cpu::classifier_train(dxf.data(), head_g, m.acts.xf.data(), head_w, b.pred_rows.data(), b.labels.data(), M, d,
                                       m.cfg.vocab_size, inv);
    LIMA_REQUIRE(std::isfinite(r.loss_sum), LIMA_ERR_INVALID_ARGUMENT,
                 "lima_trainer_forward_backward: the loss is not finite (", r.loss_sum, "): the weights or inputs hold NaN/inf");
    backward(m, b, kp, cfg.resid_dropout, dxf.data(), src ? nullptr : grads.data());
    ++micro;
    return r;
}

lima_step_result Trainer::apply(float lr) {
    LIMA_REQUIRE(std::isfinite(lr) && lr >= 0, LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_step: learning rate must be finite and >= 0, got ", lr);
    if (model->cuda) {
        reshard();  // ZeRO-3: weights gathered to the host (gather_params) are stale once updated
        const lima_cuda_adam_args a{lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, cfg.grad_clip, int64_t(step + 1)};
        lima_step_result r{0.0, 0, step, 0.0};
        cuda_run(cuda_api().step, model->cuda, &a, &r.grad_norm, &r.clipped);
        LIMA_REQUIRE(std::isfinite(r.grad_norm), LIMA_ERR_STATE, "lima_trainer_step: the gradient norm is ", r.grad_norm,
                     "; no update was made (zero the gradients to go on)");
        model->host_stale = true;
        micro = 0;
        r.step = ++step;
        return r;
    }
    reshard();
    ensure_state();
    if (off) {  // the host norm, then the units' updates on the host worker (the next forward waits per unit)
        settle();
        lima_step_result r{0.0, 0, step, 0.0};
        r.grad_norm = off->host.norm();
        const float scale = clip_scale(r.grad_norm, cfg.grad_clip, &r.clipped);
        LIMA_REQUIRE(std::isfinite(r.grad_norm), LIMA_ERR_STATE, "lima_trainer_step: the gradient norm is ", r.grad_norm,
                     "; no update was made (zero the gradients to go on)");
        off->host.step({lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, cfg.grad_clip, step + 1}, scale, nullptr);
        micro = 0;
        r.step = ++step;
        return r;
    }
    // Data parallel: every rank's gradient summed (each normalised by the whole step's targets).
    double comm_s = 0.0;
    if (z3) {  // ZeRO-3 reduce-scattered each unit's gradient as backward released it
        comm_s += z3->comm_seconds;
        z3->comm_seconds = 0.0;
    }
    // ZeRO-2: only this rank's block of the sum is needed (the rest of grads is then scratch).
    if (comm && comm->world > 1 && zero < 3) {
        if (zero >= 2)
            timed(comm_s, [&] { comm->reduce_scatter_sum(grads.data(), shard.shard); });
        else
            timed(comm_s, [&] { comm->allreduce_sum(grads.data(), int64_t(grads.size())); });
    }
    // ZeRO >= 1: this rank updates its shard of the weights with its shard of the moments (stage 3:
    // the gradient too holds that shard only).
    const int64_t lo = z3 ? 0 : zero >= 1 ? shard.begin : 0, hi = z3 ? int64_t(grads.size()) : zero >= 1 ? shard.end : int64_t(space().total);
    double ss = sum_squares(grads.data() + lo, hi - lo);
    if (zero >= 1 && comm->world > 1) timed(comm_s, [&] { comm->allreduce_sum(&ss, 1); });  // the norm of the global gradient
    lima_step_result r{std::sqrt(ss), 0, step, 0.0};
    LIMA_REQUIRE(std::isfinite(r.grad_norm), LIMA_ERR_STATE, "lima_trainer_step: the gradient norm is ", r.grad_norm,
                 "; no update was made (zero the gradients to go on)");
    const float scale = clip_scale(r.grad_norm, cfg.grad_clip, &r.clipped);
    const cpu::AdamWParams a{lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, scale, long(step + 1)};
    // AdamW over the global range [pb, pe), tensor by tensor (weight decay is per tensor); w, g and the
    // moments point at pb's element.
    auto update = [&](int64_t pb, int64_t pe, float *w, float *g, float *v1, float *v2) {
        for (const ParamInfo &p : space().params) {
            const int64_t b = std::max<int64_t>(pb, int64_t(p.offset)), e = std::min<int64_t>(pe, int64_t(p.offset) + p.numel());
            if (b >= e) continue;
            const int64_t i = b - pb;
            cpu::adamw_update(w + i, v1 + i, v2 + i, g + i, long(e - b), p.decay, a);
        }
    };
    if (z3) {  // each owned piece: weights, gradient and moments all hold the pieces, concatenated
        int64_t at = 0;
        for (auto [pb, pe] : owned) {
            update(pb, pe, z3->params.data() + at, grads.data() + at, m1.data() + at, m2.data() + at);
            at += pe - pb;
        }
    } else {  // the weights and gradient are whole; the moments hold [lo, hi)
        update(lo, hi, space_params().data() + lo, grads.data() + lo, m1.data(), m2.data());
    }
    if (zero >= 1 && zero < 3 && comm->world > 1) {  // every rank gets every shard's new weights
        std::vector<float> mine(size_t(shard.shard), 0.0f), all(size_t(shard.padded));
        std::copy(space_params().begin() + lo, space_params().begin() + hi, mine.begin());
        timed(comm_s, [&] { comm->allgather(mine.data(), shard.shard, all.data()); });
        std::copy(all.begin(), all.begin() + int64_t(space_params().size()), space_params().begin());
    }
    if (model->adapter) sync_token_rows(*model);  // the model's EOT rows follow the trained ones
    zero_grad();
    r.step = ++step;
    r.comm_seconds = comm_s;
    return r;
}

// A new optimiser step starts: no gradient, micro-batch index 0 (part of the dropout key).
void Trainer::zero_grad() {
    settle();
    if (model->cuda) {
        cuda_run(cuda_api().zero_grad, model->cuda);
    }
    std::fill(grads.begin(), grads.end(), 0.0f);
    micro = 0;
}

void Trainer::read_grad(const ParamInfo &p, float *out) const {
    LIMA_REQUIRE(!unit_source(), LIMA_ERR_STATE, "lima_trainer_read_grad: a ZeRO-3 trainer holds its shard of the gradient only");
    ensure_state();
    settle();
    if (!model->cuda) {
        std::copy(grads.begin() + long(p.offset), grads.begin() + long(p.offset) + p.numel(), out);
        return;
    }
    std::vector<float> g(space().total);
    cuda_run(cuda_api().state, model->cuda, nullptr, nullptr, g.data(), 0);
    std::copy(g.begin() + long(p.offset), g.begin() + long(p.offset) + p.numel(), out);
}

void Trainer::save_state(const std::string &path) const {
    ensure_state();
    settle();
    if (zero >= 1) {  // this rank's shard of the moments; gradients only mid-step, whole
        LIMA_REQUIRE(micro == 0, LIMA_ERR_STATE, "lima_trainer_save_state: a sharded trainer saves between optimiser steps only");
        const int64_t n = length(owned);
        std::vector<float> dm1, dm2;  // a CUDA trainer's shard, copied out
        if (model->cuda) {
            dm1.resize(size_t(n));
            dm2.resize(size_t(n));
            cuda_run(cuda_api().state, model->cuda, dm1.data(), dm2.data(), static_cast<float *>(nullptr), 0);
        }
        std::vector<StWriteItem> items{{"exp_avg", {n}, model->cuda ? dm1.data() : m1.data()},
                                       {"exp_avg_sq", {n}, model->cuda ? dm2.data() : m2.data()}};
        std::map<std::string, std::string> meta{{"format", "lima-adamw-shard-1"}, {"step", std::to_string(step)},
                                                {"num_params", std::to_string(space().total)},
                                                {"rank", std::to_string(comm->rank)}, {"world", std::to_string(comm->world)}};
        if (unit_source()) {  // one piece per unit (padded per unit), concatenated
            meta["pieces"] = "units";
        } else {
            meta["shard_begin"] = std::to_string(shard.begin);
            meta["shard_end"] = std::to_string(shard.end);
        }
        st_write(path, items, "F32", meta);
        return;
    }
    std::vector<float> dm1, dm2, dg;  // device state, copied out
    const float *M1 = m1.data(), *M2 = m2.data(), *G = grads.data();
    if (model->cuda) {
        dm1.resize(space().total);
        dm2.resize(space().total);
        if (micro != 0) dg.resize(space().total);
        cuda_run(cuda_api().state, model->cuda, dm1.data(), dm2.data(), micro != 0 ? dg.data() : nullptr, 0);
        M1 = dm1.data();
        M2 = dm2.data();
        G = dg.data();
    }
    std::vector<StWriteItem> items;
    for (const ParamInfo &p : space().params) {
        items.push_back({"exp_avg." + p.name, p.shape(), M1 + p.offset});
        items.push_back({"exp_avg_sq." + p.name, p.shape(), M2 + p.offset});
    }
    std::map<std::string, std::string> meta{{"format", "lima-adamw-1"},
                                            {"step", std::to_string(step)},
                                            {"micro", std::to_string(micro)},
                                            {"num_params", std::to_string(space().total)}};
    if (micro != 0) {
        // Mid-step gradients are part of the state, so a resume between micro-batches is exact.
        for (const ParamInfo &p : space().params) items.push_back({"grad." + p.name, p.shape(), G + p.offset});
    }
    st_write(path, items, "F32", meta);
}

void Trainer::cuda_load(std::vector<float> &a, std::vector<float> &b, std::vector<float> *g) const {
    std::vector<float> none;
    if (!g) {
        none.assign(space().total, 0.0f);
        g = &none;
    }
    cuda_run(cuda_api().state, model->cuda, a.data(), b.data(), g->data(), 1);
}

void Trainer::load_state_shards(const std::vector<std::string> &paths) {
    LIMA_REQUIRE(!paths.empty(), LIMA_ERR_INVALID_ARGUMENT, "lima_trainer_load_state_shards: no files");
    ensure_state();
    settle();
    const int64_t total = int64_t(space().total);
    std::vector<float> a(static_cast<size_t>(total)), b(static_cast<size_t>(total));
    std::vector<int> seen;
    int64_t world = -1, nstep = -1;
    for (const std::string &path : paths) {
        StFile f = st_open(path);
        LIMA_REQUIRE(f.metadata["format"] == "lima-adamw-shard-1", LIMA_ERR_FORMAT, path, ": not a shard of a liblima optimiser state",
                     " (format \"", f.metadata["format"], "\")");
        auto number = [&](const char *key) -> int64_t {
            const std::string &s = f.metadata[key];
            char *end = nullptr;
            const long long v = std::strtoll(s.c_str(), &end, 10);
            LIMA_REQUIRE(!s.empty() && *end == '\0' && v >= 0, LIMA_ERR_FORMAT, path, ": metadata \"", key, "\" is not a non-negative integer");
            return v;
        };
        LIMA_REQUIRE(number("num_params") == total, LIMA_ERR_SHAPE, path, ": optimiser state is for a model of ", number("num_params"),
                     " parameters, this model has ", total);
        const int64_t w = number("world"), r = number("rank"), s = number("step");
        LIMA_REQUIRE(world < 0 || (w == world && s == nstep), LIMA_ERR_FORMAT, path, ": a shard of another job (world ", w, ", step ", s,
                     ") than ", paths[0], " (world ", world, ", step ", nstep, ")");
        world = w;
        nstep = s;
        LIMA_REQUIRE(r < w && std::find(seen.begin(), seen.end(), int(r)) == seen.end(), LIMA_ERR_FORMAT, path, ": rank ", r,
                     " of ", w, " given twice or out of range");
        seen.push_back(int(r));
        const bool units = f.metadata["pieces"] == "units";
        LIMA_REQUIRE(units || f.metadata["pieces"].empty(), LIMA_ERR_FORMAT, path, ": unknown shard layout \"", f.metadata["pieces"], "\"");
        const auto pcs = pieces(int(r), int(w), units);
        if (!units) {
            LIMA_REQUIRE(number("shard_begin") == pcs[0].first && number("shard_end") == pcs[0].second, LIMA_ERR_FORMAT, path,
                         ": shard bounds do not match rank ", r, " of ", w);
        }
        const int64_t n = length(pcs);
        std::vector<float> piece(static_cast<size_t>(n));
        for (auto [name, dst] : {std::pair<const char *, float *>{"exp_avg", a.data()}, {"exp_avg_sq", b.data()}}) {
            auto e = f.tensors.find(name);
            LIMA_REQUIRE(e != f.tensors.end() && e->second.numel() == n, LIMA_ERR_FORMAT, path, ": tensor ", name,
                         " is missing or has the wrong size");
            st_read_f32(f, e->second, piece.data(), n);
            int64_t at = 0;
            for (auto [pb, pe] : pcs) {
                std::copy(piece.begin() + at, piece.begin() + at + (pe - pb), dst + pb);
                at += pe - pb;
            }
        }
    }
    LIMA_REQUIRE(int64_t(seen.size()) == world, LIMA_ERR_FORMAT, "lima_trainer_load_state_shards: ", seen.size(), " shard(s) of a state",
                 " saved by ", world, " ranks; every rank's shard is needed");
    if (zero >= 1) {  // what this trainer holds of them
        a = extract(a, owned);
        b = extract(b, owned);
    }
    if (model->cuda) {
        cuda_load(a, b, nullptr);
    } else {
        m1.swap(a);
        m2.swap(b);
    }
    std::fill(grads.begin(), grads.end(), 0.0f);
    step = nstep;
    micro = 0;
    settle();  // offload: the new vectors
}

void Trainer::load_state(const std::string &path) {
    ensure_state();
    settle();
    StFile f = st_open(path);
    const std::string format = f.metadata["format"];
    LIMA_REQUIRE(format == "lima-adamw-1" || format == "lima-adamw-shard-1", LIMA_ERR_FORMAT, path,
                 ": not a liblima optimiser state (format \"", format, "\")");
    auto number = [&](const char *key) -> int64_t {
        const std::string &s = f.metadata[key];
        char *end = nullptr;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        LIMA_REQUIRE(!s.empty() && *end == '\0' && v >= 0, LIMA_ERR_FORMAT, path, ": metadata \"", key,
                     "\" is not a non-negative integer: \"", s, "\"");
        return v;
    };
    const int64_t np = number("num_params");
    LIMA_REQUIRE(np == int64_t(space().total), LIMA_ERR_SHAPE, path, ": optimiser state is for a model of ", np,
                 " parameters, this model has ", space().total);
    if (format == "lima-adamw-shard-1") {  // one rank's shard: the same shard of the same world only
        const bool units = f.metadata["pieces"] == "units";
        LIMA_REQUIRE(zero >= 1 && number("world") == comm->world && number("rank") == comm->rank && units == bool(unit_source()) &&
                         (units || (number("shard_begin") == shard.begin && number("shard_end") == shard.end)),
                     LIMA_ERR_STATE, path, ": the shard of rank ", f.metadata["rank"], " of ", f.metadata["world"],
                     units ? " ranks at ZeRO stage 3" : " ranks at ZeRO stage 1 or 2", "; this trainer is ",
                     zero >= 1 ? cat("rank ", comm->rank, " of ", comm->world, " at stage ", zero) : std::string("not sharded"),
                     " (lima_trainer_load_state_shards loads every rank's shards into any trainer)");
        const int64_t n = length(owned);
        std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
        for (auto [name, dst] : {std::pair<const char *, float *>{"exp_avg", a.data()}, {"exp_avg_sq", b.data()}}) {
            auto e = f.tensors.find(name);
            LIMA_REQUIRE(e != f.tensors.end() && e->second.numel() == n, LIMA_ERR_FORMAT, path, ": tensor ", name,
                         " is missing or has the wrong size");
            st_read_f32(f, e->second, dst, n);
        }
        if (model->cuda) {
            cuda_load(a, b, nullptr);
        } else {
            m1.swap(a);
            m2.swap(b);
        }
        std::fill(grads.begin(), grads.end(), 0.0f);
        step = number("step");
        micro = 0;
        return;
    }
    const int64_t nstep = number("step"), nmicro = number("micro");
    const size_t total = space().total;
    std::vector<float> a(total), b(total), g(total, 0.0f);
    auto read = [&](const std::string &name, const ParamInfo &p, float *dst) {
        auto e = f.tensors.find(name);
        LIMA_REQUIRE(e != f.tensors.end(), LIMA_ERR_FORMAT, path, ": tensor ", name, " is missing");
        LIMA_REQUIRE(e->second.shape == p.shape(), LIMA_ERR_SHAPE, path, ": tensor ", name, " has the wrong shape");
        st_read_f32(f, e->second, dst, p.numel());
    };
    for (const ParamInfo &p : space().params) {
        read("exp_avg." + p.name, p, a.data() + p.offset);
        read("exp_avg_sq." + p.name, p, b.data() + p.offset);
        if (nmicro != 0) read("grad." + p.name, p, g.data() + p.offset);
    }
    if (zero >= 1) {  // a whole state (one rank's) loaded into a shard: its slice
        LIMA_REQUIRE(nmicro == 0, LIMA_ERR_STATE, path, ": a mid-step state cannot be loaded into a sharded trainer");
        a = extract(a, owned);
        b = extract(b, owned);
    }
    if (model->cuda) {  // only now, so a failed load leaves the trainer as it was
        cuda_load(a, b, &g);
    } else if (zero >= 1) {
        m1.swap(a);
        m2.swap(b);
        if (zero < 3) grads.swap(g);
        std::fill(grads.begin(), grads.end(), 0.0f);
        if (zero == 2) grads.resize(size_t(shard.padded), 0.0f);
    } else {
        m1.swap(a);
        m2.swap(b);
        grads.swap(g);
    }
    step = nstep;
    micro = uint32_t(nmicro);
    settle();  // offload: the new vectors
}

}  // namespace lima
