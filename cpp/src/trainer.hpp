// The optimiser side: gradient buffers, AdamW moments, step counter, and the train step.
#pragma once
#include <memory>
#include <vector>

#include "comm.hpp"
#include "model.hpp"
#include "offload.hpp"

namespace lima {

// ZeRO-3's parameter source: this rank's shard of each unit (the embedding, each layer, the final
// norm with the LM head; each padded to a multiple of the world size), gathered whole when forward
// or backward asks and dropped after; a unit's gradient is reduce-scattered into the rank's shard of
// the gradient when the unit is released.
struct Zero3 final : ParamSource {
    Comm *comm = nullptr;
    std::vector<std::pair<size_t, size_t>> units;  // [begin, end) of each unit in the flat layout
    std::vector<int64_t> block;                    // per unit: elements per rank (padded size / world)
    std::vector<int64_t> local;                    // per unit: offset of this rank's piece in `params`/grads
    std::vector<int64_t> valid;                    // per unit: elements of that piece inside the unit
    std::vector<float> params;                     // this rank's pieces of the weights (fp32 master)
    std::vector<float> *grads = nullptr;           // the trainer's gradient, the same pieces
    std::vector<std::vector<float>> held, held_grad;
    std::vector<float> send;
    double comm_seconds = 0.0;

    float *gather(int unit) override;
    float *grad(int unit) override;
    void release(int unit) override;
};

// ZeRO-3 on CUDA ranks: the device holds this rank's pieces (the CUDA plugin's zero3.cu); this
// source marks the model's weights as sharded and gathers a unit back to the host (collective: every
// rank gathers every unit in the same order) for gather_params and save_model.
struct CudaZero3 final : ParamSource {
    Model *model = nullptr;
    std::vector<std::vector<float>> held;
    float *gather(int unit) override;
    float *grad(int unit) override;
    void release(int unit) override;
};

// Full fine-tuning with the optimiser offloaded to the host (offload.hpp), run on the CPU: the same
// split as on a GPU, so that it is tested without one (it saves no memory here). The model's params
// are the master weights; forward reads each unit once the last step has updated it (the update
// runs on the host worker while earlier units are already in use); backward accumulates each unit's
// gradient in a staging buffer, loaded from the host gradient, that goes back to the host when the
// unit is released.
struct Offload final : ParamSource {
    HostOffload host;
    std::vector<std::vector<float>> staged;
    Offload(float *master, float *grads, float *m1, float *m2, std::vector<OffloadTensor> t,
            std::vector<std::pair<int64_t, int64_t>> u)
        : host(master, grads, m1, m2, std::move(t), std::move(u)), staged(host.units().size()) {}
    float *gather(int unit) override;
    float *grad(int unit) override;
    void release(int unit) override;
};

struct Trainer {
    Model *model;
    lima_train_config cfg;
    // The model's flat layout (CPU; on CUDA they live on the device), allocated at first use, so that
    // a trainer made data parallel allocates only its shards (ensure_state).
    mutable std::vector<float> grads, m1, m2;
    mutable bool allocated = false;
    std::vector<float> dxf;            // (N, d) gradient at the final norm's output
    int64_t step = 0;                  // optimiser steps taken
    uint32_t micro = 0;                // micro-batches since the last step (part of the dropout key)
    // Data parallelism: gradients summed over the ranks of comm; with zero >= 1 each rank keeps the
    // AdamW moments of its shard only (m1/m2 then hold shard.shard elements) and updates that shard.
    Comm *comm = nullptr;
    int zero = 0;
    Shard shard;
    // The global ranges of the flat layout this rank owns with zero >= 1 (one range at stages 1-2,
    // one per unit at stage 3): m1/m2 hold their concatenation, and so do grads at stage 3.
    std::vector<std::pair<int64_t, int64_t>> owned;
    std::unique_ptr<Zero3> z3;  // stage 3: the model's parameters live here, not in model->params
    std::unique_ptr<CudaZero3> cz3;  // stage 3 on a CUDA model: the parameters live in the device's pieces
    // The stage-3 source of the weights (CPU or CUDA), or null.
    ParamSource *unit_source() const { return z3 ? static_cast<ParamSource *>(z3.get()) : cz3.get(); }
    std::unique_ptr<Offload> off;  // cfg.offload on the CPU

    // Offload: waits for the host worker (the last step's updates, the gradients handed back) and
    // points it at the current state vectors. Every method but forward_backward calls it first.
    void settle() const;

    Trainer(Model *m, const lima_train_config &c);
    ~Trainer();
    lima_fb_result forward_backward(const Batch &b, int64_t step_targets);
    lima_step_result apply(float lr);
    void zero_grad();
    void ensure_state() const;
    // What this trainer trains: the model's parameters, or its adapter's (the base frozen). The
    // gradients, the moments and the saved state have this layout.
    const Layout &space() const;
    std::vector<float> &space_params() const;
    void set_comm(Comm *c, int zero_stage);
    // The micro-batch index the next forward_backward uses in the dropout key (ranks process the
    // micro-batches of a step round-robin and key each by its index in the whole step).
    void set_micro(uint32_t m);
    void read_grad(const ParamInfo &p, float *out) const;
    void save_state(const std::string &path) const;
    void load_state(const std::string &path);
    // The shards of an optimiser state saved by every rank of an earlier job (any world size):
    // assembled, then loaded as this trainer holds them (whole, or its own shard).
    void load_state_shards(const std::vector<std::string> &paths);
    // A CUDA trainer's moments a, b (this trainer's layout: its shard or pieces when sharded) and
    // gradient (NULL: zero) onto the device.
    void cuda_load(std::vector<float> &a, std::vector<float> &b, std::vector<float> *g) const;
    // The ranges rank r of `world` owns: one per unit (stage 3) or one flat shard (stages 1-2).
    std::vector<std::pair<int64_t, int64_t>> pieces(int rank, int world, bool units) const;
    // ZeRO-3: every rank gathers every unit; root (or every rank, root < 0) then holds the whole
    // weights in model->params until the next forward_backward or step shards them again.
    void gather_params(int root);
    // The model as a Hugging Face checkpoint, written by rank root: at stage 3 every rank takes part
    // and the weights are gathered one unit at a time as the files are written (root never holds more
    // than one unit); below, root writes its own whole weights.
    void save_model(const std::string &dir, int dtype, int64_t max_shard_bytes, int root);
    void reshard();
    // A round of micro-batches in which this rank has none: at stage 3 it still takes part in the
    // collectives of the others' forward and backward (an empty batch); nothing otherwise.
    void skip_micro();
};

void validate(const lima_train_config &c);

}  // namespace lima
