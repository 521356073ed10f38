// NCCL communicators of the CUDA backend plugin (nccl.cuh), and the communicator-plugin functions
// liblima's "nccl" backend calls (src/comm_plugin.hpp's contract, over host buffers, which are staged
// through the device): the same collectives as the Gloo plugin, so liblima's trainer and the Java
// side use either alike. NCCL is opened with dlopen: $LIMA_NCCL_LIBRARY, else libnccl.so.2 on the
// loader's path.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "context.cuh"
#include "nccl.cuh"

#define LIMA_EXPORT extern "C" __attribute__((visibility("default")))

namespace lima::cuda {

namespace {

struct NcclLib {
    decltype(&ncclGetUniqueId) get_unique_id;
    decltype(&ncclCommInitRank) init_rank;
    decltype(&ncclCommDestroy) destroy;
    decltype(&ncclCommAbort) abort;
    decltype(&ncclCommGetAsyncError) async_error;
    decltype(&ncclAllReduce) allreduce;
    decltype(&ncclReduceScatter) reduce_scatter;
    decltype(&ncclAllGather) allgather;
    decltype(&ncclBroadcast) broadcast;
    decltype(&ncclGetErrorString) error_string;
    decltype(&ncclGetLastError) last_error;
    decltype(&ncclGetVersion) version;
    decltype(&ncclGroupStart) group_start;
    decltype(&ncclGroupEnd) group_end;
};

const NcclLib &nccl() {
    static std::mutex mu;
    static NcclLib lib{};
    static bool loaded = false;
    std::lock_guard<std::mutex> lock(mu);
    if (loaded) return lib;
    std::string tried;
    void *h = nullptr;
    const char *env = std::getenv("LIMA_NCCL_LIBRARY");
    for (const char *name : {env, "libnccl.so.2", "libnccl.so"}) {
        if (!name || !*name) continue;
        h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
        if (h) break;
        const char *e = dlerror();
        tried += std::string(" ") + name + " (" + (e ? e : "not found") + ");";
    }
    LIMA_REQUIRE(h, LIMA_ERR_UNSUPPORTED, "data parallelism on CUDA devices needs NCCL (libnccl.so.2: the nvidia-nccl-cu13 wheel,"
                 " Debian/Ubuntu libnccl2, or $LIMA_NCCL_LIBRARY naming the file); tried:", tried);
    auto sym = [&](const char *name) {
        void *f = dlsym(h, name);
        LIMA_REQUIRE(f, LIMA_ERR_UNSUPPORTED, "the NCCL library found has no ", name, " (NCCL 2.12 or newer is needed)");
        return f;
    };
    lib.get_unique_id = reinterpret_cast<decltype(lib.get_unique_id)>(sym("ncclGetUniqueId"));
    lib.init_rank = reinterpret_cast<decltype(lib.init_rank)>(sym("ncclCommInitRank"));
    lib.destroy = reinterpret_cast<decltype(lib.destroy)>(sym("ncclCommDestroy"));
    lib.abort = reinterpret_cast<decltype(lib.abort)>(sym("ncclCommAbort"));
    lib.async_error = reinterpret_cast<decltype(lib.async_error)>(sym("ncclCommGetAsyncError"));
    lib.allreduce = reinterpret_cast<decltype(lib.allreduce)>(sym("ncclAllReduce"));
    lib.reduce_scatter = reinterpret_cast<decltype(lib.reduce_scatter)>(sym("ncclReduceScatter"));
    lib.allgather = reinterpret_cast<decltype(lib.allgather)>(sym("ncclAllGather"));
    lib.broadcast = reinterpret_cast<decltype(lib.broadcast)>(sym("ncclBroadcast"));
    lib.error_string = reinterpret_cast<decltype(lib.error_string)>(sym("ncclGetErrorString"));
    lib.last_error = reinterpret_cast<decltype(lib.last_error)>(sym("ncclGetLastError"));
    lib.version = reinterpret_cast<decltype(lib.version)>(sym("ncclGetVersion"));
    lib.group_start = reinterpret_cast<decltype(lib.group_start)>(sym("ncclGroupStart"));
    lib.group_end = reinterpret_cast<decltype(lib.group_end)>(sym("ncclGroupEnd"));
    loaded = true;
    return lib;
}

size_t type_size(ncclDataType_t t) { return t == ncclFloat64 ? 8 : t == ncclBfloat16 ? 2 : 4; }

}  // namespace

int nccl_version() {
    try {
        int v = 0;
        return nccl().version(&v) == ncclSuccess ? v : 0;
    } catch (const Error &) {
        return 0;
    }
}

void nccl_check(ncclResult_t r, const char *what) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    const NcclLib &n = nccl();
    const char *last = n.last_error(nullptr);
    fail(r == ncclSystemError || r == ncclRemoteError ? LIMA_ERR_IO : LIMA_ERR_INTERNAL, "NCCL: ", what, ": ", n.error_string(r),
         last && *last ? std::string(" (") + last + ")" : std::string());
}

NcclComm::~NcclComm() {
    // abort is the local teardown (ncclCommDestroy may wait on peers that are gone)
    if (comm) nccl().abort(comm);
    if (after_compute) cudaEventDestroy(after_compute);
    if (st) cudaStreamDestroy(st);
}

void NcclComm::abort_now() {
    if (comm) nccl().abort(comm);
    comm = nullptr;
    aborted = true;
}

char *NcclComm::staging(size_t bytes) {
    if (scratch.n < bytes) {
        scratch.release();
        scratch.alloc(bytes, "NCCL staging");
    }
    return scratch.p;
}

void NcclComm::check_alive() const {
    LIMA_REQUIRE(!aborted, LIMA_ERR_STATE, "NCCL communicator (rank ", rank, " of ", world, ") was aborted after an earlier failure");
}

void NcclComm::follow(cudaStream_t compute) {
    check_alive();
    LIMA_CUDA_CHECK(cudaEventRecord(after_compute, compute));
    LIMA_CUDA_CHECK(cudaStreamWaitEvent(st, after_compute, 0));
}

void NcclComm::allgather_async(const void *send, void *recv, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what) {
    follow(compute);
    nccl_check(nccl().allgather(send, recv, size_t(n), type, comm, st), what);
}

void NcclComm::reduce_scatter_async(float *buf, int64_t n, cudaStream_t compute, const char *what) {
    follow(compute);
    nccl_check(nccl().reduce_scatter(buf, buf + n * rank, size_t(n), ncclFloat32, ncclSum, comm, st), what);
}

void NcclComm::wait_stream(cudaStream_t s, const char *what) {
    check_alive();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (auto pause = std::chrono::microseconds(20);; pause = std::min(pause * 2, std::chrono::microseconds(2000))) {
        const cudaError_t q = cudaStreamQuery(s);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) LIMA_CUDA_CHECK(q);
        ncclResult_t async = ncclSuccess;
        nccl_check(nccl().async_error(comm, &async), "ncclCommGetAsyncError");
        if (async != ncclSuccess && async != ncclInProgress) {
            abort_now();
            nccl_check(async, what);
        }
        if (std::chrono::steady_clock::now() > deadline) {
            abort_now();  // frees this rank's side; the peers' waits end at their own deadlines
            fail(LIMA_ERR_IO, "NCCL: ", what, " (rank ", rank, " of ", world, ") timed out after ", timeout_ms,
                 " ms: another rank stopped answering within distributed.timeout_s (hung, suspended or gone; its launcher or"
                 " cluster agent names it)");
        }
        std::this_thread::sleep_for(pause);
    }
}

void NcclComm::allreduce(void *buf, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what) {
    follow(compute);
    nccl_check(nccl().allreduce(buf, buf, size_t(n), type, ncclSum, comm, st), what);
    wait(what);
}

void NcclComm::reduce_scatter(float *buf, int64_t n, cudaStream_t compute, const char *what) {
    reduce_scatter_async(buf, n, compute, what);
    wait(what);
}

void NcclComm::allgather(void *buf, int64_t n, ncclDataType_t type, cudaStream_t compute, const char *what) {
    char *b = static_cast<char *>(buf);
    allgather_async(b + size_t(n) * rank * type_size(type), b, n, type, compute, what);
    wait(what);
}

void NcclComm::broadcast(const float *send, float *recv, int64_t n, int root, cudaStream_t compute, const char *what) {
    follow(compute);
    nccl_check(nccl().broadcast(root == rank ? send : recv, recv, size_t(n), ncclFloat32, root, comm, st), what);
    wait(what);
}

void NcclComm::broadcast_pieces(const float *src, float *dst, const std::vector<Piece> &pieces, cudaStream_t compute,
                                const char *what) {
    follow(compute);
    const NcclLib &n = nccl();
    nccl_check(n.group_start(), what);
    ncclResult_t r = ncclSuccess;
    for (const Piece &p : pieces) {
        r = n.broadcast(p.root == rank ? src + p.src : dst + p.dst, dst + p.dst, size_t(p.n), ncclFloat32, p.root, comm, st);
        if (r != ncclSuccess) break;
    }
    const ncclResult_t e = n.group_end();
    nccl_check(r, what);
    nccl_check(e, what);
    wait(what);
}

}  // namespace lima::cuda

using namespace lima;
using namespace lima::cuda;

namespace {

// Host-buffer all-reduces and broadcasts (a whole model's weights when ranks start) go through the
// device in pieces of this many bytes, so the staging buffer stays small: f(first element, count)
// for each piece of n elements of esz bytes.
constexpr size_t kStageBytes = size_t(64) << 20;

template <typename F>
void in_stages(int64_t n, size_t esz, F &&f) {
    const size_t step = kStageBytes / esz;
    for (size_t at = 0; at < size_t(n); at += step) f(at, std::min(step, size_t(n) - at));
}

// A host-buffer collective: the bytes to the device, the collective, the result back, within the deadline.
void staged(NcclComm &c, const char *what, void *host, size_t in_bytes, size_t out_bytes, void *out_host,
            const std::function<ncclResult_t(void *)> &run) {
    LIMA_CUDA_CHECK(cudaSetDevice(c.device));
    c.check_alive();
    char *d = c.staging(std::max(in_bytes, out_bytes));
    if (in_bytes) LIMA_CUDA_CHECK(cudaMemcpyAsync(d, host, in_bytes, cudaMemcpyHostToDevice, c.st));
    nccl_check(run(d), what);
    if (out_bytes) LIMA_CUDA_CHECK(cudaMemcpyAsync(out_host, d, out_bytes, cudaMemcpyDeviceToHost, c.st));
    c.wait(what);
}

}  // namespace

LIMA_EXPORT int lima_cuda_nccl_unique_id(uint8_t *out, int32_t cap, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        LIMA_REQUIRE(out && cap >= int32_t(sizeof(ncclUniqueId)), LIMA_ERR_INVALID_ARGUMENT, "an NCCL unique id needs ",
                     sizeof(ncclUniqueId), " bytes");
        ncclUniqueId id;
        nccl_check(nccl().get_unique_id(&id), "ncclGetUniqueId");
        std::memcpy(out, id.internal, sizeof id.internal);
    });
}

LIMA_EXPORT int lima_cuda_comm_create(int32_t rank, int32_t world, const uint8_t *unique_id, int32_t id_len, int32_t device,
                                      int32_t timeout_ms, void **out, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        LIMA_REQUIRE(unique_id && id_len == int32_t(sizeof(ncclUniqueId)), LIMA_ERR_INVALID_ARGUMENT, "an NCCL unique id has ",
                     sizeof(ncclUniqueId), " bytes, got ", id_len);
        int n = 0;
        LIMA_CUDA_CHECK(cudaGetDeviceCount(&n));
        LIMA_REQUIRE(device >= 0 && device < n, LIMA_ERR_INVALID_ARGUMENT, "CUDA device ", device, " does not exist (", n, " found)");
        const NcclLib &lib = nccl();
        LIMA_CUDA_CHECK(cudaSetDevice(device));
        auto c = std::make_unique<NcclComm>();
        c->rank = rank;
        c->world = world;
        c->device = device;
        c->timeout_ms = timeout_ms;
        LIMA_CUDA_CHECK(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking));
        LIMA_CUDA_CHECK(cudaEventCreateWithFlags(&c->after_compute, cudaEventDisableTiming));
        ncclUniqueId id;
        std::memcpy(id.internal, unique_id, sizeof id.internal);
        // Every rank has met through the host communicator that carried the id just before, so the
        // blocking init does not wait for a rank that never comes.
        nccl_check(lib.init_rank(&c->comm, world, id, rank), "ncclCommInitRank");
        *out = c.release();
    });
}

LIMA_EXPORT void lima_cuda_comm_free(void *comm) { delete static_cast<NcclComm *>(comm); }

LIMA_EXPORT void lima_cuda_comm_abort(void *comm) {
    if (comm) static_cast<NcclComm *>(comm)->abort_now();
}


LIMA_EXPORT int lima_cuda_comm_allreduce(void *comm, void *data, int64_t n, int32_t is_double, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        NcclComm &c = *static_cast<NcclComm *>(comm);
        const size_t esz = is_double ? 8 : 4;
        in_stages(n, esz, [&](size_t at, size_t k) {
            char *h = static_cast<char *>(data) + at * esz;
            staged(c, "all-reduce", h, k * esz, k * esz, h, [&](void *d) {
                return nccl().allreduce(d, d, k, is_double ? ncclFloat64 : ncclFloat32, ncclSum, c.comm, c.st);
            });
        });
    });
}

LIMA_EXPORT int lima_cuda_comm_reduce_scatter(void *comm, float *data, int64_t n, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        NcclComm &c = *static_cast<NcclComm *>(comm);
        const size_t bytes = size_t(n) * size_t(c.world) * 4;
        staged(c, "reduce-scatter", data, bytes, bytes, data, [&](void *d) {
            float *f = static_cast<float *>(d);
            return nccl().reduce_scatter(f, f + n * c.rank, size_t(n), ncclFloat32, ncclSum, c.comm, c.st);
        });
    });
}

LIMA_EXPORT int lima_cuda_comm_allgather(void *comm, const float *in, int64_t n, float *out, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        NcclComm &c = *static_cast<NcclComm *>(comm);
        const size_t bytes = size_t(n) * 4;
        // the rank's block goes in place, as NCCL's in-place all-gather expects
        LIMA_CUDA_CHECK(cudaSetDevice(c.device));
        const size_t all = bytes * size_t(c.world);
        LIMA_CUDA_CHECK(cudaMemcpyAsync(c.staging(all) + bytes * size_t(c.rank), in, bytes, cudaMemcpyHostToDevice, c.st));
        staged(c, "all-gather", nullptr, 0, all, out, [&](void *d) {
            char *b = static_cast<char *>(d);
            return nccl().allgather(b + bytes * size_t(c.rank), b, size_t(n), ncclFloat32, c.comm, c.st);
        });
    });
}

LIMA_EXPORT int lima_cuda_comm_broadcast(void *comm, float *data, int64_t n, int32_t root, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        NcclComm &c = *static_cast<NcclComm *>(comm);
        LIMA_REQUIRE(root >= 0 && root < c.world, LIMA_ERR_INVALID_ARGUMENT, "broadcast root ", root, " is not a rank of ", c.world);
        in_stages(n, 4, [&](size_t at, size_t k) {
            staged(c, "broadcast", data + at, k * 4, k * 4, data + at, [&](void *d) {
                return nccl().broadcast(d, d, k, ncclFloat32, root, c.comm, c.st);
            });
        });
    });
}

LIMA_EXPORT int lima_cuda_comm_barrier(void *comm, char *err, int32_t errcap) {
    float one = 1.0f;
    return lima_cuda_comm_allreduce(comm, &one, 1, 0, err, errcap);
}

