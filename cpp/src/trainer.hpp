// The optimiser side: gradient buffers, AdamW moments, step counter, and the train step.
#pragma once
#include <vector>

#include "comm.hpp"
#include "model.hpp"

namespace lima {

struct Trainer {
    Model *model;
    lima_train_config cfg;
    std::vector<float> grads, m1, m2;  // the model's flat layout (CPU; on CUDA they live on the device)
    std::vector<float> dxf;            // (N, d) gradient at the final norm's output
    int64_t step = 0;                  // optimiser steps taken
    uint32_t micro = 0;                // micro-batches since the last step (part of the dropout key)
    // Data parallelism: gradients summed over the ranks of comm; with zero >= 1 each rank keeps the
    // AdamW moments of its shard only (m1/m2 then hold shard.shard elements) and updates that shard.
    Comm *comm = nullptr;
    int zero = 0;
    Shard shard;

    Trainer(Model *m, const lima_train_config &c);
    ~Trainer();
    lima_fb_result forward_backward(const Batch &b, int64_t step_targets);
    lima_step_result apply(float lr);
    void zero_grad();
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
};

void validate(const lima_train_config &c);

}  // namespace lima
