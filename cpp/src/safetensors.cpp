#include "safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "dtype.hpp"

namespace lima {

using json = nlohmann::ordered_json;

namespace {

struct FileCloser {
    void operator()(std::FILE *f) const { if (f) std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

FilePtr open_or_fail(const std::string &path, const char *mode) {
    FilePtr f(std::fopen(path.c_str(), mode));
    if (!f) fail(LIMA_ERR_IO, "cannot open ", path, ": ", std::strerror(errno));
    return f;
}

std::string temp_name(const std::string &path) { return cat(path, ".tmp-", ::getpid()); }

void flush_to_disk(std::FILE *f, const std::string &tmp, const std::string &path) {
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0) {
        const std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        fail(LIMA_ERR_IO, "cannot write ", path, ": ", why);
    }
}

void commit(FilePtr &f, const std::string &tmp, const std::string &path) {
    flush_to_disk(f.get(), tmp, path);
    f.reset();
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        fail(LIMA_ERR_IO, "cannot rename ", tmp, " to ", path, ": ", why);
    }
}

}  // namespace

namespace {

// No real tensor comes near it, and 2^56 elements of 8 bytes still fit an int64 byte count.
constexpr int64_t kMaxElements = int64_t(1) << 56;

// The whole numbers of a header list, each checked before it is converted: a fraction, a negative
// or a number past int64 is a format error (nlohmann's get<> would truncate, wrap, or convert out
// of range, which is undefined behaviour).
std::vector<int64_t> whole_numbers(const json &v, const char *what) {
    if (!v.is_array()) throw std::runtime_error(std::string(what) + " must be an array");
    std::vector<int64_t> out;
    for (const json &x : v) {
        if (x.is_number_unsigned() && x.get<uint64_t>() <= uint64_t(INT64_MAX))
            out.push_back(int64_t(x.get<uint64_t>()));
        else if (x.is_number_integer() && !x.is_number_unsigned() && x.get<int64_t>() >= 0)
            out.push_back(x.get<int64_t>());
        else
            throw std::runtime_error(std::string(what) + " must hold whole numbers from 0 to 2^63 - 1, got " + x.dump());
    }
    return out;
}

}  // namespace

int64_t StEntry::numel() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
}

size_t st_dtype_size(const std::string &dtype) {
    if (dtype == "F32") return 4;
    if (dtype == "BF16" || dtype == "F16") return 2;
    return 0;
}

StFile st_open(const std::string &path) {
    FilePtr f = open_or_fail(path, "rb");
    struct stat st {};
    if (::fstat(::fileno(f.get()), &st) != 0) fail(LIMA_ERR_IO, "cannot stat ", path, ": ", std::strerror(errno));
    const uint64_t size = uint64_t(st.st_size);
    unsigned char lenbuf[8];
    if (size < 8 || std::fread(lenbuf, 1, 8, f.get()) != 8)
        fail(LIMA_ERR_FORMAT, path, ": truncated safetensors file (", size, " bytes, no header length)");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > size - 8)
        fail(LIMA_ERR_FORMAT, path, ": header length ", hlen, " exceeds the file size (", size,
             " bytes): truncated or not a safetensors file");
    if (hlen > (uint64_t(100) << 20)) fail(LIMA_ERR_FORMAT, path, ": header length ", hlen, " is implausibly large");
    std::string header(hlen, '\0');
    if (std::fread(header.data(), 1, hlen, f.get()) != hlen) fail(LIMA_ERR_IO, "cannot read header of ", path);

    json j;
    try {
        j = json::parse(header);
    } catch (const json::exception &e) {
        fail(LIMA_ERR_FORMAT, path, ": header is not valid JSON: ", e.what());
    }
    if (!j.is_object()) fail(LIMA_ERR_FORMAT, path, ": header is not a JSON object");

    StFile out;
    out.path = path;
    out.data_start = 8 + hlen;
    const uint64_t data_size = size - out.data_start;
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "__metadata__") {
            if (!it.value().is_object()) fail(LIMA_ERR_FORMAT, path, ": __metadata__ must be an object");
            for (auto m = it.value().begin(); m != it.value().end(); ++m)
                out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
            continue;
        }
        const json &t = it.value();
        StEntry e;
        e.name = it.key();
        try {
            e.dtype = t.at("dtype").get<std::string>();
            e.shape = whole_numbers(t.at("shape"), "shape");
            auto off = whole_numbers(t.at("data_offsets"), "data_offsets");
            if (off.size() != 2) throw std::runtime_error("data_offsets must have 2 entries");
            e.begin = uint64_t(off[0]);
            e.end = uint64_t(off[1]);
        } catch (const std::exception &ex) {
            fail(LIMA_ERR_FORMAT, path, ": tensor ", e.name, ": malformed entry: ", ex.what());
        }
        const size_t ds = st_dtype_size(e.dtype);
        int64_t numel = 1;  // bounded so that numel() and its byte count cannot overflow
        for (auto s : e.shape) {
            if (s != 0 && numel > kMaxElements / s)
                fail(LIMA_ERR_FORMAT, path, ": tensor ", e.name, ": shape ", json(e.shape).dump(), " has more than 2^56 elements");
            numel *= s;
        }
        if (e.end < e.begin) fail(LIMA_ERR_FORMAT, path, ": tensor ", e.name, ": data_offsets end before begin");
        if (ds != 0 && e.end - e.begin != uint64_t(e.numel()) * ds)
            fail(LIMA_ERR_FORMAT, path, ": tensor ", e.name, ": data_offsets span ", e.end - e.begin,
                 " bytes but shape and dtype ", e.dtype, " need ", uint64_t(e.numel()) * ds);
        if (e.end > data_size)
            fail(LIMA_ERR_FORMAT, path, ": tensor ", e.name, ": data ends at byte ", e.end, " of the data section but the file holds only ",
                 data_size, " bytes (truncated file)");
        out.tensors.emplace(e.name, std::move(e));
    }
    return out;
}

void st_read_f32(const StFile &f, const StEntry &e, float *out, int64_t n) {
    if (n != e.numel()) fail(LIMA_ERR_SHAPE, f.path, ": tensor ", e.name, " has ", e.numel(), " elements, expected ", n);
    const size_t ds = st_dtype_size(e.dtype);
    if (ds == 0)
        fail(LIMA_ERR_UNSUPPORTED, f.path, ": tensor ", e.name, " has dtype ", e.dtype, " (supported: F32, BF16, F16)");
    FilePtr fp = open_or_fail(f.path, "rb");
    if (::fseeko(fp.get(), off_t(f.data_start + e.begin), SEEK_SET) != 0)
        fail(LIMA_ERR_IO, f.path, ": cannot seek to tensor ", e.name);
    if (ds == 4) {
        if (std::fread(out, 4, size_t(n), fp.get()) != size_t(n))
            fail(LIMA_ERR_FORMAT, f.path, ": tensor ", e.name, ": short read (truncated file)");
        return;
    }
    std::vector<uint16_t> buf(size_t(std::min<int64_t>(n, 1 << 20)));
    for (int64_t done = 0; done < n;) {
        const size_t chunk = size_t(std::min<int64_t>(n - done, int64_t(buf.size())));
        if (std::fread(buf.data(), 2, chunk, fp.get()) != chunk)
            fail(LIMA_ERR_FORMAT, f.path, ": tensor ", e.name, ": short read (truncated file)");
        if (e.dtype == "BF16")
            for (size_t i = 0; i < chunk; ++i) out[done + int64_t(i)] = bf16_to_f32(buf[i]);
        else
            for (size_t i = 0; i < chunk; ++i) out[done + int64_t(i)] = f16_to_f32(buf[i]);
        done += int64_t(chunk);
    }
}

uint64_t st_write(const std::string &path, const std::vector<StWriteItem> &items, const std::string &dtype,
                  const std::map<std::string, std::string> &metadata) {
    const size_t ds = st_dtype_size(dtype);
    if (ds == 0) fail(LIMA_ERR_UNSUPPORTED, "cannot write dtype ", dtype, " to ", path);
    json h = json::object();
    json meta = json::object();
    for (const auto &[k, v] : metadata) meta[k] = v;
    h["__metadata__"] = meta;
    uint64_t off = 0;
    for (const auto &it : items) {
        int64_t n = 1;
        for (auto s : it.shape) n *= s;
        h[it.name] = {{"dtype", dtype}, {"shape", it.shape}, {"data_offsets", {off, off + uint64_t(n) * ds}}};
        off += uint64_t(n) * ds;
    }
    std::string header = h.dump();
    header.append((8 - header.size() % 8) % 8, ' ');  // align the data section to 8 bytes
    const std::string tmp = temp_name(path);
    FilePtr f = open_or_fail(tmp, "wb");
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; ++i) lenbuf[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
    bool ok = std::fwrite(lenbuf, 1, 8, f.get()) == 8 && std::fwrite(header.data(), 1, header.size(), f.get()) == header.size();
    std::vector<uint16_t> buf;
    for (const auto &it : items) {
        if (!ok) break;
        int64_t n = 1;
        for (auto s : it.shape) n *= s;
        const float *data = it.data ? it.data : it.fetch();
        if (ds == 4) {
            ok = std::fwrite(data, 4, size_t(n), f.get()) == size_t(n);
            continue;
        }
        buf.resize(size_t(n));
        if (dtype == "BF16")
            for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = f32_to_bf16(data[i]);
        else
            for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = f32_to_f16(data[i]);
        ok = std::fwrite(buf.data(), 2, size_t(n), f.get()) == size_t(n);
    }
    if (!ok) {
        const std::string why = std::strerror(errno);
        f.reset();
        std::remove(tmp.c_str());
        fail(LIMA_ERR_IO, "cannot write ", path, ": ", why);
    }
    commit(f, tmp, path);
    return off;
}

std::string read_text_file(const std::string &path) {
    FilePtr f = open_or_fail(path, "rb");
    std::string s;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) s.append(buf, n);
    if (std::ferror(f.get())) fail(LIMA_ERR_IO, "cannot read ", path);
    return s;
}

void write_file_atomic(const std::string &path, const std::string &bytes) {
    const std::string tmp = temp_name(path);
    FilePtr f = open_or_fail(tmp, "wb");
    if (std::fwrite(bytes.data(), 1, bytes.size(), f.get()) != bytes.size()) {
        const std::string why = std::strerror(errno);
        f.reset();
        std::remove(tmp.c_str());
        fail(LIMA_ERR_IO, "cannot write ", path, ": ", why);
    }
    commit(f, tmp, path);
}

}  // namespace lima
