// Finding liblima's dlopen'd plugins (the CUDA backend, the Gloo communicator): shared by their loaders.
#pragma once
#include <string>
#include <vector>

namespace lima {

// The directory liblima itself was loaded from (plugins ship beside it), or "." if unknown.
std::string liblima_dir();

// dlopens the files in order (RTLD_NOW | RTLD_LOCAL). Returns the index of the first that loads, with
// its handle in *handle, or -1 with one line per failure appended to `why`.
int dlopen_first(const std::vector<std::string> &tries, void **handle, std::string &why);

}  // namespace lima
