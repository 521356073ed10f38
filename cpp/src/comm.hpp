// A communicator: this process's place in a group of ranks and the collectives data-parallel
// training uses, run by a plugin (comm_plugin.hpp). One rank without a communicator is the plain
// single-process path.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "comm_plugin.hpp"

namespace lima {

// Chooses the plugin file of a backend before its first use (the Java side's bundled build).
void comm_plugin_select(const std::string &backend, const std::string &path);

struct Comm {
    const CommApi *api = nullptr;
    void *handle = nullptr;
    int rank = 0, world = 1;
    std::string backend;
    int trainers = 0;  // trainers using it (it must outlive them)

    Comm(const std::string &backend, int rank, int world, const std::string &rendezvous, int timeout_ms);
    // An NCCL communicator (backend "nccl", in the CUDA plugin) on CUDA device `device`, from the unique
    // id rank 0 made (nccl_unique_id) and every rank received; its collectives take host buffers too.
    Comm(int rank, int world, const uint8_t *unique_id, int id_len, int device, int timeout_ms);
    int device = -1;  // nccl: the CUDA device
    ~Comm();
    Comm(const Comm &) = delete;
    Comm &operator=(const Comm &) = delete;

    void allreduce_sum(float *data, int64_t n);
    void allreduce_sum(double *data, int64_t n);
    // data (world * n): block `rank` of it becomes the sum over ranks of that block (the rest is scratch)
    void reduce_scatter_sum(float *data, int64_t n);
    // out (world * n) = every rank's in (n), in rank order
    void allgather(const float *in, int64_t n, float *out);
    void broadcast(float *data, int64_t n, int root);
    void barrier();
};

// The size of an NCCL unique id (ncclUniqueId; liblima does not include nccl.h).
constexpr int kNcclIdBytes = 128;

// A new NCCL unique id (kNcclIdBytes) from the CUDA plugin's NCCL.
std::vector<uint8_t> nccl_unique_id();

// ZeRO sharding of a flat buffer of `total` elements over `world` ranks: padded to a multiple of
// the world size, rank r owns [r * shard, (r + 1) * shard) of the padded buffer.
struct Shard {
    int64_t total = 0, padded = 0, shard = 0, begin = 0, end = 0;  // end clipped to total
    Shard() = default;
    Shard(int64_t total, int rank, int world);
};

}  // namespace lima
