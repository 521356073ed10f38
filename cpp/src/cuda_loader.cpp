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

lima_cuda_devices_fn cuda_devices_fn() {
    std::call_once(g_once, load);
    if (!g_handle) fail(LIMA_ERR_UNSUPPORTED, g_error);
    auto fn = reinterpret_cast<lima_cuda_devices_fn>(dlsym(g_handle, "lima_cuda_plugin_devices"));
    if (!fn) fail(LIMA_ERR_UNSUPPORTED, g_path, " is not a liblima CUDA plugin (no lima_cuda_plugin_devices)");
    return fn;
}

const char *cuda_plugin_path() {
    std::call_once(g_once, load);
    return g_path.c_str();
}

}  // namespace lima
