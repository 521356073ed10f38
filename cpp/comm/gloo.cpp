// The CPU communicator plugin over Gloo (the library PyTorch uses for CPU collectives): a full mesh
// of TCP pairs set up through a rendezvous store, and the collectives data parallelism needs. The
// rendezvous is one of Gloo's own stores: its FileStore in a directory every rank can reach
// ("file:DIR"), or its RedisStore on a key-value server at MASTER_ADDR:MASTER_PORT that rank 0's
// launcher starts ("tcp://HOST:PORT/JOB", the server a redis-server, the job's keys under the JOB
// prefix). The arrival of every rank is awaited with the caller's timeout, so a rank that never
// comes is named instead of waited for forever.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#define HIREDIS_NESTED_INCLUDE 1
#include <gloo/rendezvous/redis_store.h>
#include <gloo/transport/tcp/device.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "lima/lima.h"

#define LIMA_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

struct Comm {
    std::shared_ptr<gloo::rendezvous::Context> ctx;
    std::chrono::milliseconds timeout;
    uint32_t tag = 0;
};

struct Failure {
    int status;
    std::string message;
};

template <typename F>
int guard(char *err, int32_t cap, F &&f) {
    auto put = [&](const std::string &m) {
        if (err && cap > 0) std::snprintf(err, size_t(cap), "%s", m.c_str());
    };
    try {
        f();
        return LIMA_OK;
    } catch (const Failure &e) {
        put(e.message);
        return e.status;
    } catch (const gloo::IoException &e) {
        put(std::string("gloo: ") + e.what());
        return LIMA_ERR_IO;
    } catch (const gloo::Exception &e) {
        put(std::string("gloo: ") + e.what());
        return LIMA_ERR_IO;
    } catch (const std::bad_alloc &) {
        put("out of host memory");
        return LIMA_ERR_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        put(e.what());
        return LIMA_ERR_INTERNAL;
    }
}

// Sets this rank's arrival key and waits for every other rank's, so that a missing rank is named.
void await_ranks(gloo::rendezvous::Store &store, int rank, int world, std::chrono::milliseconds timeout) {
    const std::string mine = "lima/arrived/" + std::to_string(rank);
    store.set(mine, std::vector<char>{'1'});
    std::vector<std::string> keys;
    for (int r = 0; r < world; ++r) keys.push_back("lima/arrived/" + std::to_string(r));
    try {
        store.wait(keys, timeout);
    } catch (const gloo::IoException &) {
        std::string missing;
        for (int r = 0; r < world; ++r) {
            try {
                store.wait({keys[size_t(r)]}, std::chrono::milliseconds(1));
            } catch (const gloo::IoException &) {
                missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            }
        }
        throw Failure{LIMA_ERR_IO, "rendezvous: rank(s) " + missing + " of " + std::to_string(world) + " did not arrive within " +
                                       std::to_string(timeout.count()) + " ms"};
    }
}

// The key-value server of a "tcp://HOST:PORT/JOB" rendezvous, connected to as soon as it answers
// (rank 0's launcher may still be starting it) and at the latest by the deadline.
std::unique_ptr<gloo::rendezvous::Store> connect_kv(const std::string &rv, std::chrono::milliseconds timeout) {
    const std::string rest = rv.substr(6);
    const size_t slash = rest.find('/'), colon = rest.rfind(':', slash);
    const std::string host = colon == std::string::npos ? "" : rest.substr(0, colon);
    const std::string port = colon == std::string::npos ? "" : rest.substr(colon + 1, slash == std::string::npos ? std::string::npos : slash - colon - 1);
    const std::string job = slash == std::string::npos ? "" : rest.substr(slash + 1);
    char *end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (host.empty() || port.empty() || *end != '\0' || p < 1 || p > 65535 || job.empty())
        throw Failure{LIMA_ERR_INVALID_ARGUMENT, "gloo rendezvous \"" + rv + "\": expected tcp://HOST:PORT/JOB (a port in 1-65535, a job name)"};
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last;
    for (;;) {
        try {
            return std::make_unique<gloo::rendezvous::RedisStore>(host, int(p));
        } catch (const std::exception &e) {
            last = e.what();
        }
        if (std::chrono::steady_clock::now() >= deadline)
            throw Failure{LIMA_ERR_IO, "rendezvous: no key-value server answered at " + host + ":" + port + " within " +
                                           std::to_string(timeout.count()) + " ms (rank 0 starts it: is rank 0 up, with redis-server"
                                           " installed, and the port free?): " + last.substr(0, 200)};
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

}  // namespace

LIMA_EXPORT int lima_comm_plugin_create(int32_t rank, int32_t world, const char *rendezvous, int32_t timeout_ms, void **out,
                                        char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        const std::string rv = rendezvous ? rendezvous : "";
        const bool file = rv.rfind("file:", 0) == 0 && rv.size() > 5, kv = rv.rfind("tcp://", 0) == 0;
        if (!file && !kv)
            throw Failure{LIMA_ERR_INVALID_ARGUMENT, "gloo rendezvous \"" + rv + "\": expected file:DIR (a directory every rank can"
                                                     " reach) or tcp://HOST:PORT/JOB (rank 0's key-value server)"};
        // A peer that dies closes its sockets; a send to it must fail with an error, not kill this
        // process with SIGPIPE. Only the default disposition is changed (the JVM already ignores it).
        struct sigaction old {};
        if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
        auto c = std::make_unique<Comm>();
        c->timeout = std::chrono::milliseconds(timeout_ms);
        std::unique_ptr<gloo::rendezvous::Store> base;
        if (file) {
            base = std::make_unique<gloo::rendezvous::FileStore>(rv.substr(5));
        } else {
            base = connect_kv(rv, c->timeout);
        }
        // the job's keys apart from any other job's on the same server
        gloo::rendezvous::PrefixStore store(kv ? rv.substr(rv.find('/', 6) + 1) : std::string("lima"), *base);
        await_ranks(store, rank, world, c->timeout);
        // The address other ranks reach this one at: GLOO_SOCKET_IFNAME's (a network interface, as in
        // PyTorch), else LIMA_GLOO_HOST, else this host's name when the ranks meet at a server off
        // this host (multi-node), else loopback.
        gloo::transport::tcp::attr attr;
        const char *iface = std::getenv("GLOO_SOCKET_IFNAME"), *host = std::getenv("LIMA_GLOO_HOST");
        const std::string kv_host = kv ? rv.substr(6, rv.rfind(':', rv.find('/', 6)) - 6) : "";
        const bool local = !kv || kv_host == "localhost" || kv_host.rfind("127.", 0) == 0 || kv_host == "[::1]";
        char name[256] = {};
        if (iface && *iface) {
            attr.iface = iface;
        } else if (host && *host) {
            attr.hostname = host;
        } else if (!local && gethostname(name, sizeof(name) - 1) == 0 && name[0]) {
            attr.hostname = name;
        } else {
            attr.hostname = "127.0.0.1";
        }
        auto dev = gloo::transport::tcp::CreateDevice(attr);
        c->ctx = std::make_shared<gloo::rendezvous::Context>(rank, world);
        c->ctx->setTimeout(c->timeout);
        c->ctx->connectFullMesh(store, dev);
        *out = c.release();
    });
}

LIMA_EXPORT void lima_comm_plugin_free(void *comm) { delete static_cast<Comm *>(comm); }

LIMA_EXPORT int lima_comm_plugin_allreduce(void *comm, void *data, int64_t n, int32_t is_double, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Comm &c = *static_cast<Comm *>(comm);
        if (n == 0 || c.ctx->size == 1) return;
        gloo::AllreduceOptions o(c.ctx);
        if (is_double) {
            o.setOutput(static_cast<double *>(data), size_t(n));
            o.setReduceFunction(static_cast<void (*)(void *, const void *, const void *, size_t)>(&gloo::sum<double>));
        } else {
            o.setOutput(static_cast<float *>(data), size_t(n));
            o.setReduceFunction(static_cast<void (*)(void *, const void *, const void *, size_t)>(&gloo::sum<float>));
        }
        o.setTag(c.tag++);
        o.setTimeout(c.timeout);
        gloo::allreduce(o);
    });
}

// data (world * n): afterwards data[rank * n, (rank + 1) * n) holds the sum over ranks of that block.
// One Gloo reduce per block, rooted at the block's rank (this Gloo's halving-doubling reduce-scatter
// places its results by its own binary-block layout, not by rank, for world sizes other than powers of two).
LIMA_EXPORT int lima_comm_plugin_reduce_scatter(void *comm, float *data, int64_t n, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Comm &c = *static_cast<Comm *>(comm);
        if (n == 0 || c.ctx->size == 1) return;
        std::vector<float> out(static_cast<size_t>(n));
        for (int r = 0; r < c.ctx->size; ++r) {
            gloo::ReduceOptions o(c.ctx);
            o.setInput(data + int64_t(r) * n, size_t(n));
            o.setOutput(r == c.ctx->rank ? out.data() : data + int64_t(r) * n, size_t(n));
            o.setRoot(r);
            o.setReduceFunction(static_cast<void (*)(void *, const void *, const void *, size_t)>(&gloo::sum<float>));
            o.setTag(c.tag++);
            o.setTimeout(c.timeout);
            gloo::reduce(o);
        }
        std::copy(out.begin(), out.end(), data + int64_t(c.ctx->rank) * n);
    });
}

LIMA_EXPORT int lima_comm_plugin_allgather(void *comm, const float *in, int64_t n, float *out, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Comm &c = *static_cast<Comm *>(comm);
        gloo::AllgatherOptions o(c.ctx);
        o.setInput(const_cast<float *>(in), size_t(n));
        o.setOutput(out, size_t(n) * size_t(c.ctx->size));
        o.setTag(c.tag++);
        o.setTimeout(c.timeout);
        gloo::allgather(o);
    });
}

LIMA_EXPORT int lima_comm_plugin_broadcast(void *comm, float *data, int64_t n, int32_t root, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Comm &c = *static_cast<Comm *>(comm);
        if (n == 0 || c.ctx->size == 1) return;
        gloo::BroadcastOptions o(c.ctx);
        o.setOutput(data, size_t(n));
        o.setRoot(root);
        o.setTag(c.tag++);
        o.setTimeout(c.timeout);
        gloo::broadcast(o);
    });
}

LIMA_EXPORT int lima_comm_plugin_barrier(void *comm, char *err, int32_t errcap) {
    return guard(err, errcap, [&] {
        Comm &c = *static_cast<Comm *>(comm);
        gloo::BarrierOptions o(c.ctx);
        o.setTag(c.tag++);
        o.setTimeout(c.timeout);
        gloo::barrier(o);
    });
}

// Closes every pair, so that peers blocked in a collective with this rank fail at once instead of
// waiting for their timeout.
LIMA_EXPORT void lima_comm_plugin_abort(void *comm) {
    Comm &c = *static_cast<Comm *>(comm);
    try {
        c.ctx->closeConnections();
    } catch (...) {
    }
}
