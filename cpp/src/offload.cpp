#include "offload.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.hpp"
#include "cpu/adamw.hpp"

namespace lima {

double sum_squares(const float *g, int64_t n) {
    // Fixed blocks summed in order: the same bits for any thread count and any caller.
    constexpr int64_t kBlock = 1 << 16;
    const int64_t nb = (n + kBlock - 1) / kBlock;
    std::vector<double> part(size_t(std::max<int64_t>(nb, 1)), 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; ++b) {
        double s = 0.0;
        const int64_t e = std::min(n, (b + 1) * kBlock);
        for (int64_t i = b * kBlock; i < e; ++i) s += double(g[i]) * double(g[i]);
        part[size_t(b)] = s;
    }
    double ss = 0.0;
    for (double s : part) ss += s;
    return ss;
}

void to_bf16(uint16_t *out, const float *in, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, in + i, 4);
        const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
        out[i] = nan ? uint16_t(0x7fff) : uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

HostOffload::HostOffload(float *master_, float *grads_, float *m1_, float *m2_, std::vector<OffloadTensor> tensors,
                         std::vector<std::pair<int64_t, int64_t>> units)
    : master(master_), grads(grads_), m1(m1_), m2(m2_), tensors_(std::move(tensors)), units_(std::move(units)),
      published_(units_.size(), 0) {
    for (const OffloadTensor &t : tensors_) {
        bool inside = false;
        for (auto [b, e] : units_) inside |= t.offset >= b && t.offset + t.numel <= e;
        LIMA_REQUIRE(inside, LIMA_ERR_INTERNAL, "offload: a tensor at ", t.offset, " crosses a unit boundary");
    }
    worker_ = std::thread([this] { run(); });
}

HostOffload::~HostOffload() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
}

void HostOffload::run() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop, with nothing left to run
        std::function<void()> task = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
        lk.unlock();
        std::exception_ptr err;
        try {
            task();
        } catch (...) {
            err = std::current_exception();
        }
        lk.lock();
        busy_ = false;
        if (err && !failure_) failure_ = err;
        if (err) wanted_ = 0;  // a failed step: waiters get the failure, not a hang
        idle_cv_.notify_all();
        ready_cv_.notify_all();
    }
}

void HostOffload::submit(std::function<void()> task) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        queue_.push_back(std::move(task));
    }
    cv_.notify_one();
}

void HostOffload::drain() {
    std::unique_lock<std::mutex> lk(mu_);
    idle_cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
    if (failure_) {
        std::exception_ptr e = failure_;
        failure_ = nullptr;
        std::rethrow_exception(e);
    }
}

float clip_scale(double norm, float grad_clip, int32_t *clipped) {
    *clipped = grad_clip > 0 && norm > grad_clip ? 1 : 0;
    return *clipped ? float(double(grad_clip) / (norm + 1e-6)) : 1.0f;
}

double HostOffload::norm() const {
    const int64_t total = units_.empty() ? 0 : units_.back().second;
    return std::sqrt(sum_squares(grads, total));
}

void HostOffload::step(const OffloadStep &s, float scale, std::function<void(int)> publish) {
    uint64_t target = 0;
    {
        std::lock_guard<std::mutex> lk(mu_);
        wanted_ = *std::max_element(published_.begin(), published_.end()) + 1;
        target = wanted_;
    }
    const cpu::AdamWParams a{s.lr, s.beta1, s.beta2, s.eps, s.weight_decay, scale, long(s.t)};
    for (size_t u = 0; u < units_.size(); ++u) {
        submit([this, u, a, target, publish] {
            const auto [b, e] = units_[u];
            for (const OffloadTensor &t : tensors_) {
                if (t.offset < b || t.offset >= e) continue;
                cpu::adamw_update(master + t.offset, m1 + t.offset, m2 + t.offset, grads + t.offset, long(t.numel), t.decay, a);
            }
            std::fill(grads + b, grads + e, 0.0f);
            if (publish) publish(int(u));
            std::lock_guard<std::mutex> lk(mu_);
            published_[u] = target;
        });
    }
}

void HostOffload::wait_ready(int u) {
    std::unique_lock<std::mutex> lk(mu_);
    ready_cv_.wait(lk, [&] { return published_[size_t(u)] >= wanted_ || failure_; });
    if (failure_) {
        std::exception_ptr e = failure_;
        failure_ = nullptr;
        std::rethrow_exception(e);
    }
}

int64_t HostOffload::largest_unit() const {
    int64_t n = 0;
    for (auto [b, e] : units_) n = std::max(n, e - b);
    return n;
}

}  // namespace lima
