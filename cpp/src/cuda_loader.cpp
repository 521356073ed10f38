// Finds and loads the CUDA backend plugin (liblima_cuda<major>.so) with dlopen, so liblima itself
// never links CUDA: the Java side may choose the file (lima_cuda_plugin_select, from the builds its
// jar carries), else $LIMA_CUDA_PLUGIN, then next to liblima, then the loader's search path.
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "comm_plugin.hpp"
#include "common.hpp"
#include "cuda_plugin.hpp"
#include "plugins.hpp"

#ifndef LIMA_CUDA_PLUGIN_NAMES
// Newest CUDA major first.
#define LIMA_CUDA_PLUGIN_NAMES "liblima_cuda13.so", "liblima_cuda12.so"
#endif

namespace lima {

namespace {

std::mutex g_mu;
bool g_searched = false;
void *g_handle = nullptr;
std::string g_path, g_error;
CommApi g_comm_api{};

// Tries the files in order; returns the index of the one loaded, or -1 with each failure in `why`.
int try_load(const std::vector<std::string> &tries, std::string &why) {
    void *h = nullptr;
    const int i = dlopen_first(tries, &h, why);
    if (i >= 0) {
        g_handle = h;
        g_path = tries[size_t(i)];
    }
    return i;
}

// Under g_mu: the default search, once, unless a plugin was selected.
void search() {
    if (g_handle || g_searched) return;
    g_searched = true;
    std::vector<std::string> tries;
    if (const char *env = std::getenv("LIMA_CUDA_PLUGIN")) tries.push_back(env);
    for (const char *name : {LIMA_CUDA_PLUGIN_NAMES}) {
        tries.push_back(liblima_dir() + "/" + name);
        tries.push_back(name);
    }
    std::string why;
    if (try_load(tries, why) < 0)
        g_error = cat("no CUDA backend plugin found (build one with cmake -DLIMA_CUDA=ON); tried:", why);
}

}  // namespace

const CudaApi &cuda_api() {
    static CudaApi api{};
    static std::atomic<bool> ready{false};  // every decode step comes here: no lock once resolved
    if (ready.load(std::memory_order_acquire)) return api;
    std::lock_guard<std::mutex> lock(g_mu);
    if (ready.load(std::memory_order_relaxed)) return api;
    search();
    if (!g_handle) fail(LIMA_ERR_UNSUPPORTED, g_error);
    auto sym = [](const char *name) {
        void *f = dlsym(g_handle, name);
        if (!f) fail(LIMA_ERR_UNSUPPORTED, g_path, " is not a liblima CUDA plugin of this version (no ", name, ")");
        return f;
    };
    // the structs of cuda_plugin.hpp change with liblima: a plugin built from other sources is refused, not misread
    const int contract = reinterpret_cast<lima_cuda_contract_fn>(sym("lima_cuda_plugin_contract"))();
    if (contract != LIMA_CUDA_PLUGIN_CONTRACT)
        fail(LIMA_ERR_UNSUPPORTED, g_path, " is a liblima CUDA plugin of contract ", contract, "; this liblima needs contract ",
             LIMA_CUDA_PLUGIN_CONTRACT, " (rebuild it from the same sources)");
    CudaApi a{};
    a.devices = reinterpret_cast<lima_cuda_devices_fn>(sym("lima_cuda_plugin_devices"));
    a.versions = reinterpret_cast<lima_cuda_versions_fn>(sym("lima_cuda_plugin_versions"));
    a.create = reinterpret_cast<lima_cuda_create_fn>(sym("lima_cuda_plugin_create"));
    a.free = reinterpret_cast<lima_cuda_free_fn>(sym("lima_cuda_plugin_free"));
    a.params = reinterpret_cast<lima_cuda_params_fn>(sym("lima_cuda_plugin_params"));
    a.train_init = reinterpret_cast<lima_cuda_train_init_fn>(sym("lima_cuda_plugin_train_init"));
    a.state = reinterpret_cast<lima_cuda_state_fn>(sym("lima_cuda_plugin_state"));
    a.zero_grad = reinterpret_cast<lima_cuda_zero_grad_fn>(sym("lima_cuda_plugin_zero_grad"));
    a.forward_backward = reinterpret_cast<lima_cuda_forward_backward_fn>(sym("lima_cuda_plugin_forward_backward"));
    a.step = reinterpret_cast<lima_cuda_step_fn>(sym("lima_cuda_plugin_step"));
    a.logprobs = reinterpret_cast<lima_cuda_logprobs_fn>(sym("lima_cuda_plugin_logprobs"));
    a.gen_create = reinterpret_cast<lima_cuda_gen_create_fn>(sym("lima_cuda_plugin_gen_create"));
    a.gen_free = reinterpret_cast<lima_cuda_gen_free_fn>(sym("lima_cuda_plugin_gen_free"));
    a.gen_start = reinterpret_cast<lima_cuda_gen_start_fn>(sym("lima_cuda_plugin_gen_start"));
    a.gen_step = reinterpret_cast<lima_cuda_gen_step_fn>(sym("lima_cuda_plugin_gen_step"));
    a.gen_logits = reinterpret_cast<lima_cuda_gen_logits_fn>(sym("lima_cuda_plugin_gen_logits"));
    a.plan = reinterpret_cast<lima_cuda_plan_fn>(sym("lima_cuda_plugin_plan"));
    a.adapter = reinterpret_cast<lima_cuda_adapter_fn>(sym("lima_cuda_plugin_adapter"));
    a.adapter_params = reinterpret_cast<lima_cuda_adapter_params_fn>(sym("lima_cuda_plugin_adapter_params"));
    a.set_comm = reinterpret_cast<lima_cuda_set_comm_fn>(sym("lima_cuda_plugin_set_comm"));
    a.nccl_unique_id = reinterpret_cast<lima_cuda_nccl_unique_id_fn>(sym("lima_cuda_nccl_unique_id"));
    a.comm_create = reinterpret_cast<lima_cuda_comm_create_fn>(sym("lima_cuda_comm_create"));
    a.z3_begin = reinterpret_cast<lima_cuda_z3_begin_fn>(sym("lima_cuda_plugin_z3_begin"));
    a.z3_unit = reinterpret_cast<lima_cuda_z3_unit_fn>(sym("lima_cuda_plugin_z3_unit"));
    a.z3_gather = reinterpret_cast<lima_cuda_z3_gather_fn>(sym("lima_cuda_plugin_z3_gather"));
    a.z3_skip = reinterpret_cast<lima_cuda_z3_skip_fn>(sym("lima_cuda_plugin_z3_skip"));
    CommApi &ca = g_comm_api;
    ca.create = nullptr;
    ca.free = reinterpret_cast<lima_comm_free_fn>(sym("lima_cuda_comm_free"));
    ca.allreduce = reinterpret_cast<lima_comm_allreduce_fn>(sym("lima_cuda_comm_allreduce"));
    ca.reduce_scatter = reinterpret_cast<lima_comm_reduce_scatter_fn>(sym("lima_cuda_comm_reduce_scatter"));
    ca.allgather = reinterpret_cast<lima_comm_allgather_fn>(sym("lima_cuda_comm_allgather"));
    ca.broadcast = reinterpret_cast<lima_comm_broadcast_fn>(sym("lima_cuda_comm_broadcast"));
    ca.barrier = reinterpret_cast<lima_comm_barrier_fn>(sym("lima_cuda_comm_barrier"));
    ca.abort = reinterpret_cast<lima_comm_abort_fn>(sym("lima_cuda_comm_abort"));
    api = a;
    ready.store(true, std::memory_order_release);
    return api;
}

const CommApi &cuda_comm_api() {
    cuda_api();
    return g_comm_api;
}

const char *cuda_plugin_path() {
    std::lock_guard<std::mutex> lock(g_mu);
    search();
    return g_path.c_str();
}

std::string cuda_backend_summary() {
    std::lock_guard<std::mutex> lock(g_mu);
    search();
    if (g_handle) return cat("cuda (", g_path, ")");
    const auto colon = g_error.find(';');  // the reason without the list of files tried
    return cat("cuda unavailable: ", g_error.substr(0, colon));
}

int cuda_plugin_select(const char *const *paths, int n) {
    std::lock_guard<std::mutex> lock(g_mu);
    std::vector<std::string> tries(paths, paths + n);
    if (g_handle) {
        for (int i = 0; i < n; ++i)
            if (tries[size_t(i)] == g_path) return i;
        fail(LIMA_ERR_STATE, "lima_cuda_plugin_select: the CUDA plugin ", g_path, " is already in use");
    }
    std::string why;
    const int i = try_load(tries, why);
    if (i < 0) fail(LIMA_ERR_UNSUPPORTED, "none of the CUDA plugins could be loaded:", why);
    return i;
}

int cuda_driver_version() {
    // The driver API's entry point, looked up so that liblima does not link libcuda.
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        fail(LIMA_ERR_UNSUPPORTED, "no NVIDIA driver: ", e ? e : "libcuda.so.1 not found");
    }
    using fn = int (*)(int *);
    auto f = reinterpret_cast<fn>(dlsym(h, "cuDriverGetVersion"));
    int v = 0;
    const int rc = f ? f(&v) : -1;
    dlclose(h);
    LIMA_REQUIRE(rc == 0, LIMA_ERR_UNSUPPORTED, "the NVIDIA driver (libcuda.so.1) did not report its version (error ", rc, ")");
    return v;
}

}  // namespace lima
