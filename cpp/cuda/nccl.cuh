// NCCL in the CUDA backend plugin: data parallelism across CUDA devices. The plugin opens libnccl
// with dlopen on first use, so it still loads (and trains on one device) where NCCL is not
// installed; asking for a communicator there says what is missing. A communicator runs its
// collectives on its own stream, ordered after the compute stream's work with an event, and waits
// for them with a deadline: a peer that stops answering makes the wait abort the communicator and
// fail, never hang.
#pragma once
#include <nccl.h>

#include <string>
#include <vector>

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
    // Aborts the communicator (the local teardown: peers still in a collective with it fail); every
    // later call fails saying so.
    void abort_now();
    // Fails, saying so, once the communicator was aborted.
    void check_alive() const;
    // The staging buffer of host-buffer collectives, grown to at least `bytes`.
    char *staging(size_t bytes);
    // The comm stream waits for everything enqueued on `compute` so far.
    void follow(cudaStream_t compute);
    // Waits for the comm stream: done, an NCCL error, or the deadline (then the communicator is
    // aborted and the call fails naming what timed out).
    void wait(const char *what) { wait_stream(st, what); }
    // The same for another stream (the compute stream, which may wait on this one's events).
    void wait_stream(cudaStream_t s, const char *what);
    // Enqueued on the comm stream after `compute`'s work so far, not waited for (ZeRO-3's prefetch):
    // recv (world * n) = every rank's send (n), in rank order.
    void allgather_async(const void *send, void *recv, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what);
    // buf (world * n) reduce-scattered in place (block `rank` the sum), enqueued after `compute`, not waited for.
    void reduce_scatter_async(float *buf, int64_t n, cudaStream_t compute, const char *what);
    // Device buffers, on the comm stream after `compute`'s work; each waits (wait) before returning.
    void allreduce(void *buf, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what);
    // buf (world * n): block `rank` becomes the sum over ranks of that block
    void reduce_scatter(float *buf, int64_t n, cudaStream_t compute, const char *what);
    // buf (world * n): every rank's block `rank` given to all (in place)
    void allgather(void *buf, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what);
    // recv (n fp32) = root's send (send is read on root only)
    void broadcast(const float *send, float *recv, int64_t n, int root, cudaStream_t compute, const char *what);
    // Pieces of a buffer each held by one rank, sent to every rank in one NCCL group: dst[d, d + n) =
    // the root's src[s, s + n) (src read on the root only).
    struct Piece {
        int root;
        int64_t src, dst, n;
    };
    void broadcast_pieces(const float *src, float *dst, const std::vector<Piece> &pieces, cudaStream_t compute, const char *what);
};

// The NCCL library's version code (major * 10000 + minor * 100 + patch), 0 when it cannot be opened.
int nccl_version();

// Throws the failure of an NCCL call, with NCCL's own message.
void nccl_check(ncclResult_t r, const char *what);

}  // namespace lima::cuda
