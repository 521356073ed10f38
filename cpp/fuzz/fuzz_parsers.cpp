// libFuzzer target over the two native parsers that take bytes from users: the safetensors header
// (and the tensor reads it allows) and the Hugging Face config.json reader. The first input byte
// picks the parser. Every rejected input must come back as lima::Error (what the C ABI turns into
// a status and a message); any other exception, a crash, a leak or undefined behaviour is a
// finding. Crashing inputs found are kept in corpus/ and replayed by ctest (fuzz_parsers_replay).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common.hpp"
#include "config.hpp"
#include "safetensors.hpp"

namespace {

std::string scratch_path() {
    const char *dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/lima_fuzz_" + std::to_string(getpid()) + ".safetensors";
}

void fuzz_safetensors(const uint8_t *data, size_t size) {
    static const std::string path = scratch_path();
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) std::abort();
    if (size && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
    try {
        lima::StFile st = lima::st_open(path);
        for (const auto &[name, e] : st.tensors) {
            int64_t n = e.numel();
            if (n < 0 || n > (1 << 20)) continue;  // st_open checked the byte range against the file
            std::vector<float> out(static_cast<size_t>(n));
            lima::st_read_f32(st, e, out.data(), n);
        }
    } catch (const lima::Error &) {
    }
}

void fuzz_config(const uint8_t *data, size_t size) {
    std::string text(reinterpret_cast<const char *>(data), size);
    try {
        lima::ModelConfig c = lima::parse_hf_config(text, "config.json");
        // what limactl writes back beside a checkpoint must read again as the same model
        lima::ModelConfig again = lima::parse_hf_config(lima::write_hf_config(c, text, "float32"), "again.json");
        if (again.num_layers != c.num_layers || again.hidden_size != c.hidden_size || again.vocab_size != c.vocab_size) std::abort();
    } catch (const lima::Error &) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] & 1) fuzz_config(data + 1, size - 1);
    else fuzz_safetensors(data + 1, size - 1);
    return 0;
}
