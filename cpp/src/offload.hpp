// Full fine-tuning with the optimiser offloaded to the host (ZeRO-Offload's split on one device):
// the fp32 master weights, the fp32 gradient and the AdamW moments live in host memory; the device
// keeps the weights its products use (bf16 on CUDA) and one layer's gradient at a time.
//
// This is the host side, shared by the CPU trainer (which runs the same split to test it without a
// GPU) and the CUDA plugin. Backward hands each unit's gradient over as soon as the unit is done (a
// unit: the embedding, a layer, the final norm with the LM head, as ZeRO-3 cuts them); the step
// computes the global norm, then updates the units in the order the next forward needs them, on a
// worker thread, publishing each unit (the CUDA plugin uploads its bf16 copy) as soon as it is
// updated, so the next micro-batch's forward starts while later units are still being updated.
//
// The arithmetic is the plain path's: the same fp32 AdamW (cpu/adamw.hpp) on the same tensors, the
// gradient accumulated by the same products (a unit's gradient so far is loaded before its backward
// and stored after, never summed in a different order). The CPU test checks the weights bitwise.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace lima {

struct OffloadTensor {
    int64_t offset, numel;
    bool decay;  // weight decay applies (matrices, not norm gains)
};

struct OffloadStep {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
    int64_t t;  // step number, from 1
};

// The sum of squares of g[0, n), in fixed blocks summed in order: the same bits whatever the thread
// count (the gradient norm of every CPU path and of the offloaded step).
double sum_squares(const float *g, int64_t n);

// bf16 bits of in[0, n), rounded to nearest even as the device's __float2bfloat16 (NaN -> 0x7fff):
// the offloaded step's weights reach the device exactly as the plain step's on-device cast.
void to_bf16(uint16_t *out, const float *in, int64_t n);

// The factor the gradient is scaled by before the update: grad_clip / (norm + 1e-6) when clipping is
// on and the norm exceeds it (*clipped = 1), as torch.nn.utils.clip_grad_norm_; else 1.
float clip_scale(double norm, float grad_clip, int32_t *clipped);

class HostOffload {
public:
    // The host state in the flat layout (not owned: the CPU trainer's vectors, the CUDA plugin's
    // pinned buffers), the tensors (each inside one unit) and the units, in forward order.
    HostOffload(float *master, float *grads, float *m1, float *m2, std::vector<OffloadTensor> tensors,
                std::vector<std::pair<int64_t, int64_t>> units);
    ~HostOffload();
    HostOffload(const HostOffload &) = delete;
    HostOffload &operator=(const HostOffload &) = delete;

    // Runs task on the worker thread, after every task submitted before it.
    void submit(std::function<void()> task);
    // Waits until every submitted task has run; rethrows the first failure of one (once).
    void drain();

    // The global L2 norm of the gradient, as the plain path computes it. Call after drain().
    double norm() const;
    // One AdamW step on the worker, unit by unit in forward order: update the unit's master weights
    // and moments, zero its gradient, then publish(u) (on the worker) and mark it ready. Units are
    // not ready from this call until their update is published.
    void step(const OffloadStep &s, float scale, std::function<void(int)> publish);
    // Blocks until unit u of the last step is published (at once when no step is pending); rethrows
    // a failed update.
    void wait_ready(int u);

    const std::vector<std::pair<int64_t, int64_t>> &units() const { return units_; }
    int64_t largest_unit() const;
    float *master, *grads, *m1, *m2;

private:
    void run();
    std::vector<OffloadTensor> tensors_;
    std::vector<std::pair<int64_t, int64_t>> units_;
    std::mutex mu_;
    std::condition_variable cv_, idle_cv_, ready_cv_;
    std::deque<std::function<void()>> queue_;
    bool busy_ = false, stop_ = false;
    std::exception_ptr failure_;
    std::vector<uint64_t> published_;  // per unit: the step its weights are from
    uint64_t wanted_ = 0;              // the step every unit must reach
    std::thread worker_;
};

}  // namespace lima
