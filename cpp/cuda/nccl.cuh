// NCCL in the CUDA backend plugin: data parallelism across CUDA devices. The plugin opens libnccl
// with dlopen on first use, so it still loads (and trains on one device) where NCCL is not
// installed; asking for a communicator there says what is missing. A communicator runs its
// collectives on its own stream, ordered after the compute stream's work with an event, and waits
// for them with a deadline: a peer that stops answering makes the wait abort the communicator and
// fail, never hang.
#pragma once
#include <nccl.h>

#include <string>

#include "cuda_common.cuh"

namespace lima::cuda {

struct NcclComm {
    ncclComm_t comm = nullptr;
    int rank = 0, world = 1, device = 0, timeout_ms = 0;
    cudaStream_t st = nullptr;
    cudaEvent_t after_compute = nullptr;
    DevBuf<char> scratch;  // host-buffer collectives stage through it
    bool aborted = false;
    ~NcclComm();
    // The comm stream waits for everything enqueued on `compute` so far.
    void follow(cudaStream_t compute);
    // Waits for the comm stream: done, an NCCL error, or the deadline (then the communicator is
    // aborted and the call fails naming what timed out).
    void wait(const char *what);
    // Device buffers, on the comm stream after `compute`'s work; each waits (wait) before returning.
    void allreduce(void *buf, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what);
    // buf (world * n): block `rank` becomes the sum over ranks of that block
    void reduce_scatter(float *buf, int64_t n, cudaStream_t compute, const char *what);
    // buf (world * n): every rank's block `rank` given to all (in place)
    void allgather(void *buf, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what);
};

// Throws the failure of an NCCL call, with NCCL's own message.
void nccl_check(ncclResult_t r, const char *what);

}  // namespace lima::cuda
