// The contract between liblima and its communicator plugins: plain C functions over float/double
// buffers, loaded with dlopen so that liblima itself never links a collective library (a machine
// without Gloo or NCCL still loads liblima and trains on one process). liblima_gloo.so (comm/gloo.cpp)
// is the CPU backend, over Gloo's TCP transport. Every function returns a lima_status and writes a
// message into err on failure.
#pragma once
#include <cstdint>
#include <string>

#include "lima/lima.h"

extern "C" {
typedef int (*lima_comm_create_fn)(int32_t rank, int32_t world, const char *rendezvous, int32_t timeout_ms, void **out,
                                   char *err, int32_t errcap);
typedef void (*lima_comm_free_fn)(void *comm);
typedef int (*lima_comm_allreduce_fn)(void *comm, void *data, int64_t n, int32_t is_double, char *err, int32_t errcap);
typedef int (*lima_comm_reduce_scatter_fn)(void *comm, float *data, int64_t n, char *err, int32_t errcap);
typedef int (*lima_comm_allgather_fn)(void *comm, const float *in, int64_t n, float *out, char *err, int32_t errcap);
typedef int (*lima_comm_broadcast_fn)(void *comm, float *data, int64_t n, int32_t root, char *err, int32_t errcap);
typedef int (*lima_comm_barrier_fn)(void *comm, char *err, int32_t errcap);
typedef void (*lima_comm_abort_fn)(void *comm);
}

namespace lima {

struct CommApi {
    lima_comm_create_fn create;
    lima_comm_free_fn free;
    lima_comm_allreduce_fn allreduce;
    lima_comm_reduce_scatter_fn reduce_scatter;
    lima_comm_allgather_fn allgather;
    lima_comm_broadcast_fn broadcast;
    lima_comm_barrier_fn barrier;
    lima_comm_abort_fn abort;
};

// The plugin of a backend ("gloo"), loaded once: the file lima_comm_plugin_select chose,
// $LIMA_GLOO_PLUGIN, next to liblima, then the
// loader's path. Throws LIMA_ERR_UNSUPPORTED saying what is missing.
const CommApi &comm_api(const std::string &backend);

}  // namespace lima
