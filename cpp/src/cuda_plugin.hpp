// The contract between liblima and its CUDA backend plugin (cpp/cuda/), which liblima loads with
// dlopen only when a CUDA device is asked for, so liblima and its JNI glue load on any machine.
// The plugin exports C functions with these signatures; nothing C++ crosses.
#pragma once
#include "lima/lima.h"

extern "C" {
// Fills up to cap devices, sets *count; on failure returns a lima_status and writes err.
typedef int (*lima_cuda_devices_fn)(lima_device_info *out, int32_t cap, int32_t *count, char *err, int32_t errcap);
}

namespace lima {
// The plugin's lima_cuda_plugin_devices, or throws LIMA_ERR_UNSUPPORTED naming what is missing.
lima_cuda_devices_fn cuda_devices_fn();
const char *cuda_plugin_path();
}  // namespace lima
