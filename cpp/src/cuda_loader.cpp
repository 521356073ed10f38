#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "common.hpp"
#include "cuda_plugin.hpp"

#ifndef LIMA_CUDA_PLUGIN_NAMES
// Newest CUDA major first: the Java side and the loader pick the build matching the installed runtime.
#define LIMA_CUDA_PLUGIN_NAMES "liblima_cuda13.so", "liblima_cuda12.so"
#endif

namespace lima {

namespace {

std::once_flag g_once;
void *g_handle = nullptr;
std::string g_path, g_error;

std::string own_dir() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&own_dir), &info) && info.dli_fname) {
        std::string f = info.dli_fname;
        const auto slash = f.rfind('/');
        if (slash != std::string::npos) return f.substr(0, slash);
    }
    return ".";
}

void load() {
    std::vector<std::string> tries;
    if (const char *env = std::getenv("LIMA_CUDA_PLUGIN")) tries.push_back(env);
    for (const char *name : {LIMA_CUDA_PLUGIN_NAMES}) {
        tries.push_back(own_dir() + "/" + name);
        tries.push_back(name);
    }
    std::string why;
    for (const auto &t : tries) {
        void *h = dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (h) {
            g_handle = h;
            g_path = t;
            return;
        }
        const char *e = dlerror();  // names the file already
        why += cat("\n  ", e ? std::string(e) : t + ": not found");
    }
    g_error = cat("the CUDA backend plugin is not available (build it with cmake -DLIMA_CUDA=ON); tried:", why);
}

}  // namespace

const CudaApi &cuda_api() {
    static CudaApi api{};
    static std::once_flag resolved;
    std::call_once(g_once, load);
    if (!g_handle) fail(LIMA_ERR_UNSUPPORTED, g_error);
    std::call_once(resolved, [] {
        auto sym = [](const char *name) {
            void *f = dlsym(g_handle, name);
            if (!f) fail(LIMA_ERR_UNSUPPORTED, g_path, " is not a liblima CUDA plugin of this version (no ", name, ")");
            return f;
        };
        api.devices = reinterpret_cast<lima_cuda_devices_fn>(sym("lima_cuda_plugin_devices"));
        api.versions = reinterpret_cast<lima_cuda_versions_fn>(sym("lima_cuda_plugin_versions"));
        api.create = reinterpret_cast<lima_cuda_create_fn>(sym("lima_cuda_plugin_create"));
        api.free = reinterpret_cast<lima_cuda_free_fn>(sym("lima_cuda_plugin_free"));
        api.params = reinterpret_cast<lima_cuda_params_fn>(sym("lima_cuda_plugin_params"));
        api.train_init = reinterpret_cast<lima_cuda_train_init_fn>(sym("lima_cuda_plugin_train_init"));
        api.state = reinterpret_cast<lima_cuda_state_fn>(sym("lima_cuda_plugin_state"));
        api.zero_grad = reinterpret_cast<lima_cuda_zero_grad_fn>(sym("lima_cuda_plugin_zero_grad"));
        api.forward_backward = reinterpret_cast<lima_cuda_forward_backward_fn>(sym("lima_cuda_plugin_forward_backward"));
        api.step = reinterpret_cast<lima_cuda_step_fn>(sym("lima_cuda_plugin_step"));
        api.logprobs = reinterpret_cast<lima_cuda_logprobs_fn>(sym("lima_cuda_plugin_logprobs"));
        api.plan = reinterpret_cast<lima_cuda_plan_fn>(sym("lima_cuda_plugin_plan"));
    });
    if (!api.plan) fail(LIMA_ERR_UNSUPPORTED, g_path, " is not a complete liblima CUDA plugin");
    return api;
}

const char *cuda_plugin_path() {
    std::call_once(g_once, load);
    return g_path.c_str();
}

}  // namespace lima
