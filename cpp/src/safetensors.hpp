// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
// 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {str: str}}, then the raw little-endian tensor bytes. Written here against the
// format spec because the reference implementation is Rust/Python only; the JSON is parsed with
// nlohmann/json.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace lima {

struct StEntry {
    std::string name, dtype;           // dtype: "F32", "BF16", "F16"
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;       // byte range within the data section
    int64_t numel() const;
};

struct StFile {
    std::string path;
    uint64_t data_start = 0;           // absolute offset of the data section
    std::map<std::string, StEntry> tensors;
    std::map<std::string, std::string> metadata;
};

// Reads and validates the header (length, JSON, dtypes, offsets within the file). Errors name
// the file and the tensor.
StFile st_open(const std::string &path);
// Reads one tensor converting to fp32; n must equal its element count.
void st_read_f32(const StFile &f, const StEntry &e, float *out, int64_t n);

struct StWriteItem {
    std::string name;
    std::vector<int64_t> shape;
    const float *data;
    // data null: asked for just before the tensor is written (a source that holds one part at a time)
    std::function<const float *()> fetch = nullptr;
};

// Writes tensors (converted from fp32 to dtype "F32"/"BF16"/"F16") to path via a temporary file
// and an atomic rename. Returns the bytes of tensor data written.
uint64_t st_write(const std::string &path, const std::vector<StWriteItem> &items, const std::string &dtype,
                  const std::map<std::string, std::string> &metadata);

size_t st_dtype_size(const std::string &dtype);  // 0 if unknown

// Whole-file helpers with atomic replace (write temp, fsync, rename).
std::string read_text_file(const std::string &path);
void write_file_atomic(const std::string &path, const std::string &bytes);

}  // namespace lima
