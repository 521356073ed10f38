// The optimiser side: gradient buffers, AdamW moments, step counter, and the train step.
#pragma once
#include <vector>

#include "model.hpp"

namespace lima {

struct Trainer {
    Model *model;
    lima_train_config cfg;
    std::vector<float> grads, m1, m2;  // the model's flat layout (CPU; on CUDA they live on the device)
    std::vector<float> dxf;            // (N, d) gradient at the final norm's output
    int64_t step = 0;                  // optimiser steps taken
    uint32_t micro = 0;                // micro-batches since the last step (part of the dropout key)

    Trainer(Model *m, const lima_train_config &c);
    ~Trainer();
    lima_fb_result forward_backward(const Batch &b, int64_t step_targets);
    lima_step_result apply(float lr);
    void zero_grad();
    void read_grad(const ParamInfo &p, float *out) const;
    void save_state(const std::string &path) const;
    void load_state(const std::string &path);
};

void validate(const lima_train_config &c);

}  // namespace lima
