// Two CUDA ranks over NCCL against one, as separate processes (NCCL refuses two ranks of one
// process on one GPU; across processes it accepts them when each names a different NCCL_HOSTID, so
// two ranks can share the one GPU of a test host). For ZeRO stages 0 to 3: the step losses and the
// final weights of 2 ranks equal 1 rank's within fp32 rounding, the two ranks' weights are the same
// bits, and a rerun gives the same weights (within 1e-6: the embedding gradient's atomics may change
// the last bits; whether they are identical is printed). Stage 3 runs from hollow models on rank 1
// (rank 0 sends its weights unit by unit). Only liblima's public C API is used.
//   usage: lima_dp_check [STEPS]             (the parent: runs every case, prints PASS/FAIL, exit 0 = all pass)
//          lima_dp_check child RANK WORLD STAGE IDFILE OUTFILE STEPS
#include <lima/lima.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "small_config.hpp"

extern char **environ;

namespace {

const int kMicro = 4;  // micro-batches per optimiser step, shared round-robin by the ranks
const char *kTensor = "model.layers.1.self_attn.o_proj.weight";

void check(int st, const char *what) {
    if (st == LIMA_OK) return;
    std::fprintf(stderr, "lima_dp_check: %s: %s\n", what, lima_last_error());
    std::exit(3);
}

// Micro-batch i of step s: one row of 128 tokens, the second half the targets.
lima_batch *micro_batch(int s, int i, int V) {
    std::mt19937 rng(uint32_t(1000 * s + i + 1));
    const int T = 128;
    std::vector<int32_t> tok(T), seg(T, 1);
    std::vector<uint8_t> mask(T, 0);
    for (int t = 0; t < T; ++t) {
        tok[size_t(t)] = int32_t(rng() % uint32_t(V));
        mask[size_t(t)] = t >= T / 2 ? 1 : 0;
    }
    lima_batch *b = nullptr;
    check(lima_batch_create(1, T, &b), "batch");
    check(lima_batch_set(b, tok.data(), mask.data(), seg.data()), "batch");
    return b;
}

int child(int rank, int world, int stage, const std::string &idfile, const std::string &outfile, int steps) {
    const lima_model_config c = limatest::small_config();
    lima_model *m = nullptr;
    if (stage == 3 && rank > 0) {  // a hollow rank: its pieces come from rank 0
        check(lima_model_create_hollow(&c, &m), "hollow model");
        check(lima_model_to_device(m, "cuda:0"), "hollow model to the device");
    } else {
        check(lima_model_create(&c, "cuda:0", 42, &m), "model");
    }
    lima_train_config tc;
    lima_train_config_init(&tc);
    tc.resid_dropout = 0.2f;
    tc.seed = 9;
    lima_trainer *t = nullptr;
    check(lima_trainer_create(m, &tc, &t), "trainer");
    lima_comm *comm = nullptr;
    if (world > 1) {
        std::vector<uint8_t> id(128);
        std::ifstream(idfile, std::ios::binary).read(reinterpret_cast<char *>(id.data()), 128);
        check(lima_comm_create_nccl(rank, world, id.data(), 128, "cuda:0", 120000, &comm), "nccl communicator");
        check(lima_trainer_set_comm(t, comm, stage), "set_comm");
    }
    std::ofstream out(outfile, std::ios::binary);
    for (int s = 0; s < steps; ++s) {
        std::vector<lima_batch *> mine;
        int64_t targets = 0;
        for (int i = 0; i < kMicro; ++i) {  // the whole step's targets, known to every rank without communication
            lima_batch *b = micro_batch(s, i, c.vocab_size);
            int64_t n = 0;
            check(lima_batch_num_targets(b, &n), "targets");
            targets += n;
            if (i % world == rank) mine.push_back(b); else lima_batch_free(b);
        }
        double loss = 0.0;
        for (size_t k = 0; k < mine.size(); ++k) {
            if (world > 1) check(lima_trainer_set_micro_batch(t, int32_t(k * world + rank)), "micro-batch index");
            lima_fb_result r{};
            check(lima_trainer_forward_backward(t, mine[k], targets, &r), "forward_backward");
            loss += r.loss_sum;
            lima_batch_free(mine[k]);
        }
        lima_step_result st{};
        check(lima_trainer_step(t, 2e-3f, &st), "step");
        out.write(reinterpret_cast<const char *>(&loss), sizeof loss);
        out.write(reinterpret_cast<const char *>(&st.grad_norm), sizeof st.grad_norm);
    }
    const int64_t n = int64_t(c.hidden_size) * c.hidden_size;
    std::vector<float> w(static_cast<size_t>(n));
    check(lima_trainer_gather_params(t, -1), "gather the weights");  // every rank takes part
    check(lima_model_read_tensor(m, kTensor, w.data(), n), "read weights");
    out.write(reinterpret_cast<const char *>(w.data()), std::streamsize(n * 4));
    lima_trainer_free(t);
    if (comm) lima_comm_free(comm);
    lima_model_free(m);
    return 0;
}

struct Result {
    std::vector<double> loss, norm;  // per step (loss: this rank's share)
    std::vector<float> w;
};

Result read_result(const std::string &path, int steps) {
    std::ifstream in(path, std::ios::binary);
    Result r;
    for (int s = 0; s < steps; ++s) {
        double l = 0, g = 0;
        in.read(reinterpret_cast<char *>(&l), 8);
        in.read(reinterpret_cast<char *>(&g), 8);
        r.loss.push_back(l);
        r.norm.push_back(g);
    }
    const lima_model_config c = limatest::small_config();
    r.w.resize(size_t(c.hidden_size) * c.hidden_size);
    in.read(reinterpret_cast<char *>(r.w.data()), std::streamsize(r.w.size() * 4));
    if (!in) r.w.clear();
    return r;
}

// Runs `world` children at once (each its own NCCL_HOSTID); true when all exit 0.
bool run_ranks(const char *self, int world, int stage, const std::string &idfile, const std::string &prefix, int steps) {
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
        std::vector<std::string> args{self, "child", std::to_string(r), std::to_string(world), std::to_string(stage), idfile,
                                      prefix + "." + std::to_string(r), std::to_string(steps)};
        std::vector<char *> argv;
        for (auto &a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::vector<std::string> env;
        for (char **e = environ; *e; ++e)
            if (std::strncmp(*e, "NCCL_HOSTID=", 12) != 0) env.push_back(*e);
        env.push_back("NCCL_HOSTID=lima-dp-check-" + std::to_string(r));
        std::vector<char *> envp;
        for (auto &e : env) envp.push_back(e.data());
        envp.push_back(nullptr);
        pid_t pid = 0;
        if (posix_spawn(&pid, self, nullptr, nullptr, argv.data(), envp.data()) != 0) return false;
        pids.push_back(pid);
    }
    bool ok = true;
    for (pid_t p : pids) {
        int st = 0;
        waitpid(p, &st, 0);
        ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return ok;
}

double rel_max(const std::vector<float> &a, const std::vector<float> &b) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < a.size(); ++i) {
        num = std::max(num, std::fabs(double(a[i]) - b[i]));
        den = std::max(den, std::fabs(double(b[i])));
    }
    return num / den;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc >= 8 && std::string(argv[1]) == "child")
        return child(std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), argv[5], argv[6], std::atoi(argv[7]));
    const int steps = argc >= 2 ? std::atoi(argv[1]) : 4;
    char tmpl[] = "/tmp/lima-dp-check-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const char *self = "/proc/self/exe";
    char exe[4096] = {0};
    if (readlink(self, exe, sizeof exe - 1) <= 0) return 2;
    int fails = 0;
    auto verdict = [&](bool ok, const std::string &what) {
        std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
        fails += ok ? 0 : 1;
    };
    if (!run_ranks(exe, 1, 0, "", dir + "/one", steps)) {
        verdict(false, "one rank trains");
        return 1;
    }
    const Result one = read_result(dir + "/one.0", steps);
    for (const int stage : {0, 1, 2, 3}) {
        // rank 0's unique id, made in this process (no CUDA context here: the children start clean)
        const std::string idfile = dir + "/id" + std::to_string(stage);
        std::vector<uint8_t> id(128);
        if (lima_comm_nccl_unique_id(id.data(), 128) != LIMA_OK) {
            std::printf("FAIL NCCL unique id: %s\n", lima_last_error());
            return 1;
        }
        std::ofstream(idfile, std::ios::binary).write(reinterpret_cast<const char *>(id.data()), 128);
        const std::string tag = "stage " + std::to_string(stage);
        bool ok = run_ranks(exe, 2, stage, idfile, dir + "/s" + std::to_string(stage), steps);
        verdict(ok, tag + ": 2 ranks over NCCL on one GPU train");
        if (!ok) continue;
        const Result a = read_result(dir + "/s" + std::to_string(stage) + ".0", steps),
                     b = read_result(dir + "/s" + std::to_string(stage) + ".1", steps);
        double worst = 0;
        for (int s = 0; s < steps; ++s) worst = std::max(worst, std::fabs(a.loss[size_t(s)] + b.loss[size_t(s)] - one.loss[size_t(s)]) /
                                                                    std::fabs(one.loss[size_t(s)]));
        char msg[256];
        std::snprintf(msg, sizeof msg, "%s: step losses of 2 ranks = 1 rank's (worst relative difference %.2e <= 1e-4)", tag.c_str(), worst);
        verdict(worst <= 1e-4, msg);
        std::snprintf(msg, sizeof msg, "%s: final weights of 2 ranks = 1 rank's (max relative difference %.2e <= 1e-4)", tag.c_str(),
                      rel_max(a.w, one.w));
        verdict(!a.w.empty() && rel_max(a.w, one.w) <= 1e-4, msg);
        verdict(!a.w.empty() && a.w == b.w && a.norm == b.norm, tag + ": both ranks hold the same weights bit for bit");
        // a rerun: the same bits (a fresh id: NCCL's ids are single-use)
        lima_comm_nccl_unique_id(id.data(), 128);
        std::ofstream(idfile, std::ios::binary).write(reinterpret_cast<const char *>(id.data()), 128);
        ok = run_ranks(exe, 2, stage, idfile, dir + "/r" + std::to_string(stage), steps);
        const Result again = read_result(dir + "/r" + std::to_string(stage) + ".0", steps);
        std::snprintf(msg, sizeof msg, "%s: a rerun gives the same weights (max relative difference %.2e <= 1e-6; bit for bit: %s)",
                      tag.c_str(), again.w.empty() ? 1.0 : rel_max(again.w, a.w), again.w == a.w ? "yes" : "no");
        verdict(ok && !again.w.empty() && rel_max(again.w, a.w) <= 1e-6, msg);
    }
    std::printf("%s: %d failure(s); files in %s\n", fails ? "FAILED" : "PASSED", fails, dir.c_str());
    return fails ? 1 : 0;
}
