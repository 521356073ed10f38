#include "comm.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "common.hpp"
#include "cuda_plugin.hpp"
#include "plugins.hpp"

namespace lima {

namespace {
std::mutex g_mu;
std::string g_selected;  // the plugin file lima_comm_plugin_select chose, tried first
bool g_loaded = false;

void require_known(const std::string &backend) {
    LIMA_REQUIRE(backend == "gloo", LIMA_ERR_UNSUPPORTED, "communicator backend \"", backend, "\" is not known (CPU ranks use \"gloo\")");
}
}  // namespace

void comm_plugin_select(const std::string &backend, const std::string &path) {
    std::lock_guard<std::mutex> lock(g_mu);
    require_known(backend);
    LIMA_REQUIRE(!g_loaded || g_selected == path, LIMA_ERR_STATE, "lima_comm_plugin_select: the gloo plugin is already loaded");
    g_selected = path;
}

const CommApi &comm_api(const std::string &backend) {
    static CommApi api{};
    std::lock_guard<std::mutex> lock(g_mu);
    require_known(backend);
    if (g_loaded) return api;
    std::vector<std::string> tries;
    if (!g_selected.empty()) tries.push_back(g_selected);
    if (const char *env = std::getenv("LIMA_GLOO_PLUGIN")) tries.push_back(env);
    tries.push_back(liblima_dir() + "/liblima_gloo.so");
    tries.push_back("liblima_gloo.so");
    void *h = nullptr;
    std::string why;
    if (dlopen_first(tries, &h, why) < 0)
        fail(LIMA_ERR_UNSUPPORTED, "distributed training on CPUs needs the Gloo communicator plugin liblima_gloo.so, built when"
             " Gloo is installed (Debian: libgloo-dev) and loadable with libgloo.so.0; tried:", why);
    auto sym = [&](const char *name) {
        void *f = dlsym(h, name);
        if (!f) fail(LIMA_ERR_UNSUPPORTED, "liblima_gloo.so is not a communicator plugin of this liblima (no ", name, ")");
        return f;
    };
    api.create = reinterpret_cast<lima_comm_create_fn>(sym("lima_comm_plugin_create"));
    api.free = reinterpret_cast<lima_comm_free_fn>(sym("lima_comm_plugin_free"));
    api.allreduce = reinterpret_cast<lima_comm_allreduce_fn>(sym("lima_comm_plugin_allreduce"));
    api.reduce_scatter = reinterpret_cast<lima_comm_reduce_scatter_fn>(sym("lima_comm_plugin_reduce_scatter"));
    api.allgather = reinterpret_cast<lima_comm_allgather_fn>(sym("lima_comm_plugin_allgather"));
    api.broadcast = reinterpret_cast<lima_comm_broadcast_fn>(sym("lima_comm_plugin_broadcast"));
    api.barrier = reinterpret_cast<lima_comm_barrier_fn>(sym("lima_comm_plugin_barrier"));
    api.abort = reinterpret_cast<lima_comm_abort_fn>(sym("lima_comm_plugin_abort"));
    g_loaded = true;
    return api;
}

namespace {

template <typename F, typename... A>
void run(const Comm &c, const char *what, F f, A... args) {
    char err[1024] = {0};
    const int st = f(args..., err, int32_t(sizeof err));
    if (st == LIMA_OK) return;
    // Gloo names the operation, not the peer: say what a timeout means for the job (NCCL's message says it)
    const bool timed_out = c.backend == "gloo" && (std::strstr(err, "Timed out") != nullptr || std::strstr(err, "timed out") != nullptr);
    fail(st, "communicator (", c.backend, ", rank ", c.rank, " of ", c.world, "): ", what, ": ", err,
         timed_out ? " (another rank stopped answering within distributed.timeout_s: hung, suspended or gone; its launcher or"
                     " cluster agent names it)"
                   : "");
}

}  // namespace

Comm::Comm(const std::string &b, int r, int w, const std::string &rendezvous, int timeout_ms) : rank(r), world(w), backend(b) {
    LIMA_REQUIRE(w >= 1 && r >= 0 && r < w, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_create: rank ", r, " must be in [0, world) with world ",
                 w, " >= 1");
    LIMA_REQUIRE(timeout_ms > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_create: timeout_ms must be > 0, got ", timeout_ms);
    api = &comm_api(b);
    char err[1024] = {0};
    const int st = api->create(r, w, rendezvous.c_str(), timeout_ms, &handle, err, int32_t(sizeof err));
    if (st != LIMA_OK) fail(st, "communicator (", b, ", rank ", r, " of ", w, "): ", err);
}

Comm::Comm(int r, int w, const uint8_t *unique_id, int id_len, int dev, int timeout_ms) : rank(r), world(w), backend("nccl"), device(dev) {
    LIMA_REQUIRE(w >= 1 && r >= 0 && r < w, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_create_nccl: rank ", r, " must be in [0, world) with"
                 " world ", w, " >= 1");
    LIMA_REQUIRE(timeout_ms > 0, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_create_nccl: timeout_ms must be > 0, got ", timeout_ms);
    LIMA_REQUIRE(unique_id && id_len == kNcclIdBytes, LIMA_ERR_INVALID_ARGUMENT, "lima_comm_create_nccl: the NCCL unique id has ",
                 kNcclIdBytes, " bytes, got ", unique_id ? id_len : 0);
    try {
        api = &cuda_comm_api();
    } catch (const Error &e) {
        fail(e.code, "distributed training on CUDA devices needs liblima's CUDA plugin: ", e.what());
    }
    char err[2048] = {0};
    const int st = cuda_api().comm_create(r, w, unique_id, id_len, dev, timeout_ms, &handle, err, int32_t(sizeof err));
    if (st != LIMA_OK) fail(st, "communicator (nccl, rank ", r, " of ", w, ", cuda:", dev, "): ", err);
}

std::vector<uint8_t> nccl_unique_id() {
    std::vector<uint8_t> id(kNcclIdBytes);
    cuda_run(cuda_api().nccl_unique_id, id.data(), int32_t(id.size()));
    return id;
}

Comm::~Comm() {
    if (handle) api->free(handle);
}

void Comm::allreduce_sum(float *data, int64_t n) { run(*this, "all-reduce", api->allreduce, handle, static_cast<void *>(data), n, 0); }

void Comm::allreduce_sum(double *data, int64_t n) { run(*this, "all-reduce", api->allreduce, handle, static_cast<void *>(data), n, 1); }

void Comm::reduce_scatter_sum(float *data, int64_t n) { run(*this, "reduce-scatter", api->reduce_scatter, handle, data, n); }

void Comm::allgather(const float *in, int64_t n, float *out) { run(*this, "all-gather", api->allgather, handle, in, n, out); }

void Comm::broadcast(float *data, int64_t n, int root) { run(*this, "broadcast", api->broadcast, handle, data, n, int32_t(root)); }

void Comm::barrier() { run(*this, "barrier", api->barrier, handle); }

Shard::Shard(int64_t t, int rank, int world) : total(t) {
    padded = (t + world - 1) / world * world;
    shard = padded / world;
    begin = std::min<int64_t>(t, int64_t(rank) * shard);
    end = std::min<int64_t>(t, begin + shard);
}

}  // namespace lima
