#include "plugins.hpp"

#include <dlfcn.h>

#include "common.hpp"

namespace lima {

std::string liblima_dir() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&liblima_dir), &info) && info.dli_fname) {
        std::string f = info.dli_fname;
        const auto slash = f.rfind('/');
        if (slash != std::string::npos) return f.substr(0, slash);
    }
    return ".";
}

int dlopen_first(const std::vector<std::string> &tries, void **handle, std::string &why) {
    for (size_t i = 0; i < tries.size(); ++i) {
        if ((*handle = dlopen(tries[i].c_str(), RTLD_NOW | RTLD_LOCAL))) return int(i);
        const char *e = dlerror();  // names the file already
        why += cat("\n  ", e ? std::string(e) : tries[i] + ": not found");
    }
    return -1;
}

}  // namespace lima
