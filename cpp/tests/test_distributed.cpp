// Data-parallel training over the Gloo communicator plugin, with real processes on loopback: the
// collectives, N ranks at ZeRO stages 0-3 against one rank (same losses and weights within fp32
// rounding, the same bits when rerun), awkward shard sizes, sharded optimiser state, and the
// failures that must not hang: a rank that never arrives and a rank that dies mid-run.
//
// Every rank (and the one-rank reference) runs in a forked child that has started no thread pool;
// children report through files in a temporary directory and their exit status.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include "helpers.hpp"

using namespace limatest;

namespace {

template <typename... A>
std::string cat_name(const A &...a) {
    std::string s;
    ((s += [](const auto &x) {
         if constexpr (std::is_arithmetic_v<std::decay_t<decltype(x)>>) return std::to_string(x);
         else return std::string(x);
     }(a)),
     ...);
    return s;
}

bool have_gloo() { return std::string(LIMA_GLOO_PLUGIN_FILE).size() > 0; }

#define NEED_GLOO() \
    if (!have_gloo()) GTEST_SKIP() << "built without Gloo (Debian: libgloo-dev): no communicator plugin"

// Throws the native message of a failing call (children report it on stderr and in their status).
void ok(int st, const char *what) {
    if (st != LIMA_OK) throw std::runtime_error(std::string(what) + " -> " + lima_status_name(st) + ": " + lima_last_error());
}

struct Child {
    pid_t pid;
    int rank;
};

// Runs fn(rank) in `n` forked children and waits at most timeout_s for all of them. Returns each
// child's exit status (0: fn returned; 1: it threw; -1: killed after the timeout).
std::vector<int> run_ranks(int n, const std::function<void(int)> &fn, int timeout_s = 120) {
    std::vector<Child> kids;
    for (int r = 0; r < n; ++r) {
        const pid_t pid = fork();
        if (pid == 0) {
            int code = 0;
            try {
                setenv("LIMA_GLOO_PLUGIN", LIMA_GLOO_PLUGIN_FILE, 1);
                lima_set_num_threads(1);
                fn(r);
            } catch (const std::exception &e) {
                std::fprintf(stderr, "rank %d: %s\n", r, e.what());
                code = 1;
            }
            std::fflush(nullptr);
            _exit(code);
        }
        kids.push_back({pid, r});
    }
    std::vector<int> status(size_t(n), -1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    size_t left = kids.size();
    while (left > 0 && std::chrono::steady_clock::now() < deadline) {
        for (Child &k : kids) {
            if (k.pid == 0) continue;
            int ws = 0;
            if (waitpid(k.pid, &ws, WNOHANG) == k.pid) {
                status[size_t(k.rank)] = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
                k.pid = 0;
                --left;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (Child &k : kids)
        if (k.pid) {
            kill(k.pid, SIGKILL);
            waitpid(k.pid, nullptr, 0);
        }
    return status;
}

void write_floats(const std::string &path, const std::vector<float> &v) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char *>(v.data()), std::streamsize(v.size() * sizeof(float)));
}

std::vector<float> read_floats(const std::string &path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    std::vector<float> v(size_t(f.tellg()) / sizeof(float));
    f.seekg(0);
    f.read(reinterpret_cast<char *>(v.data()), std::streamsize(v.size() * sizeof(float)));
    return v;
}

std::string read_text(const std::string &path) {
    std::ifstream f(path);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

lima_comm *join(const std::string &dir, int rank, int world, int timeout_ms = 20000) {
    lima_comm *c = nullptr;
    ok(lima_comm_create("gloo", rank, world, ("file:" + dir).c_str(), timeout_ms, &c), "lima_comm_create");
    return c;
}

// A GQA model with an odd vocabulary (1025, as after adding LIMA's EOT to a 1024 tokenizer) whose
// parameter count no world size here divides.
lima_model_config odd_config() {
    lima_model_config c = tiny_config();
    c.vocab_size = 1025;
    c.hidden_size = 24;
    c.num_heads = 6;
    c.num_kv_heads = 2;
    c.intermediate_size = 40;
    return c;
}

// Micro-batch m of step s: 2 rows of 12 tokens, two packed examples in row 0, a loss mask.
BatchPtr micro_batch(int s, int m, int V) {
    std::vector<int32_t> tok(24), seg(24);
    std::vector<uint8_t> mask(24);
    for (int i = 0; i < 24; ++i) {
        tok[size_t(i)] = int32_t((i * 37 + s * 101 + m * 53) % V);
        seg[size_t(i)] = i < 5 ? 1 : i < 12 ? 2 : 3;
        mask[size_t(i)] = (i % 5) >= 2;
    }
    return make_batch(2, 12, tok, mask, seg);
}

constexpr int kSteps = 3, kMicro = 4;

// Steps [from, to) of kMicro micro-batches each, in rounds of `world`: micro-batch k goes to rank
// k mod world, and a rank with none in a round skips it (ZeRO-3's collectives still run there).
// Appends each step's loss sum (this rank's part).
void run_steps(lima_trainer *t, int rank, int world, int from, int to, int V, std::vector<double> *losses = nullptr) {
    for (int s = from; s < to; ++s) {
        int64_t targets = 0;
        for (int k = 0; k < kMicro; ++k) {
            int64_t n = 0;
            ok(lima_batch_num_targets(micro_batch(s, k, V).get(), &n), "targets");
            targets += n;
        }
        double loss = 0;
        for (int round = 0; round * world < kMicro; ++round) {
            const int k = round * world + rank;
            if (k >= kMicro) {
                ok(lima_trainer_skip_micro_batch(t), "lima_trainer_skip_micro_batch");
                continue;
            }
            ok(lima_trainer_set_micro_batch(t, k), "lima_trainer_set_micro_batch");
            lima_fb_result r{};
            ok(lima_trainer_forward_backward(t, micro_batch(s, k, V).get(), targets, &r), "forward_backward");
            loss += r.loss_sum;
        }
        lima_step_result st{};
        ok(lima_trainer_step(t, 3e-3f, &st), "lima_trainer_step");
        if (losses) losses->push_back(loss);
    }
}

// Every weight of the model, in tensor order (a ZeRO-3 trainer's gathered to every rank first).
std::vector<float> all_weights(lima_model *m, lima_trainer *t) {
    if (t) ok(lima_trainer_gather_params(t, -1), "lima_trainer_gather_params");
    std::vector<float> all;
    for (const std::string &name : tensor_names(m)) {
        const auto w = read_tensor(m, name);
        all.insert(all.end(), w.begin(), w.end());
    }
    return all;
}

// Trains kSteps steps (world 1, comm null: one process runs every micro-batch); returns the final
// weights and appends each step's loss sum.
// hollow: ranks other than 0 start from a model without weights (they receive rank 0's).
std::vector<float> train(lima_comm *comm, int rank, int world, int stage, std::vector<double> *losses, bool tied = false,
                         bool hollow = false) {
    lima_model_config cfg = odd_config();
    cfg.tie_word_embeddings = tied ? 1 : 0;
    ModelPtr m;
    if (hollow && rank > 0) {
        lima_model *raw = nullptr;
        ok(lima_model_create_hollow(&cfg, &raw), "lima_model_create_hollow");
        m.reset(raw);
    } else {
        m = make_model(cfg, 11 + uint64_t(rank) * 1000);  // different per rank: rank 0's weights win
    }
    TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
    if (comm) ok(lima_trainer_set_comm(t.get(), comm, stage), "lima_trainer_set_comm");
    run_steps(t.get(), rank, world, 0, kSteps, cfg.vocab_size, losses);
    return all_weights(m.get(), t.get());
}

}  // namespace

TEST(Distributed, CollectivesAcrossThreeProcesses) {
    NEED_GLOO();
    const std::string dir = temp_dir("dist-collectives"), out = temp_dir("dist-collectives-out");
    const auto st = run_ranks(3, [&](int r) {
        lima_comm *c = join(dir, r, 3);
        int32_t rank = -1, world = -1;
        ok(lima_comm_info(c, &rank, &world), "info");
        std::vector<float> v{float(r + 1), float(10 * (r + 1)), 0.5f};
        ok(lima_comm_allreduce_sum(c, v.data(), 3), "allreduce");
        std::vector<float> mine{float(r), float(r) + 0.25f}, all(6);
        ok(lima_comm_allgather(c, mine.data(), 2, all.data()), "allgather");
        std::vector<float> b{float(r), float(r)};
        ok(lima_comm_broadcast(c, b.data(), 2, 2), "broadcast");
        ok(lima_comm_barrier(c), "barrier");
        std::vector<float> rs(6);
        for (int i = 0; i < 6; ++i) rs[size_t(i)] = float((r + 1) * (i + 1));
        ok(lima_comm_reduce_scatter_sum(c, rs.data(), 2), "reduce-scatter");
        std::vector<float> block(rs.begin() + 2 * r, rs.begin() + 2 * r + 2);
        std::vector<float> report{float(rank), float(world)};
        for (auto *x : {&v, &all, &b, &block}) report.insert(report.end(), x->begin(), x->end());
        write_floats(out + "/" + std::to_string(r), report);
        lima_comm_free(c);
    });
    ASSERT_EQ(st, std::vector<int>({0, 0, 0}));
    for (int r = 0; r < 3; ++r)
        EXPECT_EQ(read_floats(out + "/" + std::to_string(r)),  // reduce-scatter: (1+2+3) x (i+1) for i in rank r's block
                  std::vector<float>({float(r), 3, 6, 60, 1.5f, 0, 0.25f, 1, 1.25f, 2, 2.25f, 2, 2, float(6 * (2 * r + 1)),
                                      float(6 * (2 * r + 2))}))
            << "rank " << r;
}

TEST(Distributed, RanksAtEveryStageMatchOneRankAndRerunBitwise) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-equiv");
    ASSERT_EQ(run_ranks(1, [&](int) {
                  std::vector<double> losses;
                  write_floats(out + "/ref", train(nullptr, 0, 1, 0, &losses));
                  write_floats(out + "/ref-loss", std::vector<float>(losses.begin(), losses.end()));
              }),
              std::vector<int>({0}));
    const auto ref = read_floats(out + "/ref");
    const auto ref_loss = read_floats(out + "/ref-loss");
    ASSERT_EQ(ref_loss.size(), size_t(kSteps));
    for (int world : {2, 3, 4})
        for (int stage : {0, 1, 2, 3})
            for (int run = 0; run < (world == 2 && stage % 2 == 1 ? 2 : 1); ++run) {
                if (world == 3 && stage != 3) continue;  // 3 ranks, 4 micro-batches: ZeRO-3 ranks skip a round
                const std::string tag = cat_name("w", world, "-s", stage, "-r", run);
                const std::string rv = temp_dir("dist-rv-" + tag);
                const auto st = run_ranks(world, [&](int r) {
                    lima_comm *c = join(rv, r, world);
                    std::vector<double> losses;
                    const auto w = train(c, r, world, stage, &losses, false, world > 2 && stage >= 2);  // hollow ranks: 3 and 4 at stages 2-3
                    // the step's loss is the sum over ranks: gather it the way training code would
                    std::vector<float> l(losses.begin(), losses.end());
                    ok(lima_comm_allreduce_sum(c, l.data(), int64_t(l.size())), "loss allreduce");
                    write_floats(out + "/" + tag + "-" + std::to_string(r), w);
                    if (r == 0) write_floats(out + "/" + tag + "-loss", l);
                    lima_comm_free(c);
                });
                ASSERT_EQ(st, std::vector<int>(size_t(world), 0)) << tag;
                const auto w0 = read_floats(out + "/" + tag + "-0");
                for (int r = 1; r < world; ++r) EXPECT_EQ(read_floats(out + "/" + tag + "-" + std::to_string(r)), w0) << tag << " rank " << r;
                EXPECT_LT(rel_max_err(w0, ref), 1e-5) << tag;
                const auto l = read_floats(out + "/" + tag + "-loss");
                for (int s = 0; s < kSteps; ++s) EXPECT_NEAR(l[size_t(s)], ref_loss[size_t(s)], 1e-5 * std::fabs(ref_loss[size_t(s)])) << tag;
                if (run == 1) EXPECT_EQ(w0, read_floats(out + "/" + cat_name("w", world, "-s", stage, "-r", 0) + "-0")) << "rerun";
            }
}

TEST(Distributed, ShardedStateResumesExactlyAndAWholeStateLoadsIntoShards) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-state");
    // uninterrupted: 3 steps on 2 ranks at stage 1
    const std::string rv1 = temp_dir("dist-state-rv1"), rv2 = temp_dir("dist-state-rv2"), rv3 = temp_dir("dist-state-rv3");
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv1, r, 2);
                  write_floats(out + "/full-" + std::to_string(r), train(c, r, 2, 1, nullptr));
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    // the same, saved after 2 steps (model + each rank's shard) and continued by fresh processes
    const lima_model_config cfg = odd_config();
    auto steps = [&](lima_trainer *t, int r, int from, int to) {
        for (int s = from; s < to; ++s) {
            int64_t targets = 0;
            for (int k = 0; k < kMicro; ++k) {
                int64_t n = 0;
                ok(lima_batch_num_targets(micro_batch(s, k, cfg.vocab_size).get(), &n), "targets");
                targets += n;
            }
            for (int k = r; k < kMicro; k += 2) {
                ok(lima_trainer_set_micro_batch(t, k), "micro");
                lima_fb_result fb{};
                ok(lima_trainer_forward_backward(t, micro_batch(s, k, cfg.vocab_size).get(), targets, &fb), "fb");
            }
            lima_step_result st{};
            ok(lima_trainer_step(t, 3e-3f, &st), "step");
        }
    };
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv2, r, 2);
                  ModelPtr m = make_model(cfg, 11 + uint64_t(r) * 1000);
                  TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                  ok(lima_trainer_set_comm(t.get(), c, 1), "set_comm");
                  steps(t.get(), r, 0, 2);
                  if (r == 0) ok(lima_model_save(m.get(), (out + "/model").c_str(), LIMA_DTYPE_F32, 0), "save model");
                  ok(lima_trainer_save_state(t.get(), (out + "/opt-" + std::to_string(r)).c_str()), "save state");
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv3, r, 2);
                  lima_model *raw = nullptr;
                  ok(lima_model_load((out + "/model").c_str(), "cpu", &raw), "load model");
                  ModelPtr m(raw);
                  TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                  ok(lima_trainer_set_comm(t.get(), c, 1), "set_comm");
                  // another rank's shard is refused, naming both
                  const int other = lima_trainer_load_state(t.get(), (out + "/opt-" + std::to_string(1 - r)).c_str());
                  if (other != LIMA_ERR_STATE || !std::strstr(lima_last_error(), "the shard of rank"))
                      throw std::runtime_error(std::string("another rank's shard: ") + lima_last_error());
                  ok(lima_trainer_load_state(t.get(), (out + "/opt-" + std::to_string(r)).c_str()), "load state");
                  steps(t.get(), r, 2, 3);
                  std::vector<float> all;
                  for (const std::string &name : tensor_names(m.get())) {
                      const auto w = read_tensor(m.get(), name);
                      all.insert(all.end(), w.begin(), w.end());
                  }
                  write_floats(out + "/resumed-" + std::to_string(r), all);
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    EXPECT_EQ(read_floats(out + "/resumed-0"), read_floats(out + "/full-0"));
    EXPECT_EQ(read_floats(out + "/resumed-1"), read_floats(out + "/full-0"));
    // the two shards resumed by another number of ranks: 1 (no communicator) and 3 at stage 2
    const std::vector<std::string> shard_files{out + "/opt-0", out + "/opt-1"};
    for (const int world : {1, 3}) {
        const std::string rv = temp_dir("dist-state-reshard-" + std::to_string(world));
        ASSERT_EQ(run_ranks(world, [&](int r) {
                      lima_comm *c = world > 1 ? join(rv, r, world) : nullptr;
                      lima_model *raw = nullptr;
                      ok(lima_model_load((out + "/model").c_str(), "cpu", &raw), "load model");
                      ModelPtr m(raw);
                      TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                      if (c) ok(lima_trainer_set_comm(t.get(), c, 2), "set_comm");
                      std::vector<const char *> ps;
                      for (const auto &f : shard_files) ps.push_back(f.c_str());
                      if (r == 0) {  // not every shard, or one twice: refused
                          if (lima_trainer_load_state_shards(t.get(), ps.data(), 1) != LIMA_ERR_FORMAT ||
                              !std::strstr(lima_last_error(), "every rank's shard is needed"))
                              throw std::runtime_error(std::string("one shard: ") + lima_last_error());
                          const char *twice[] = {ps[0], ps[0]};
                          if (lima_trainer_load_state_shards(t.get(), twice, 2) != LIMA_ERR_FORMAT ||
                              !std::strstr(lima_last_error(), "given twice"))
                              throw std::runtime_error(std::string("twice: ") + lima_last_error());
                      }
                      ok(lima_trainer_load_state_shards(t.get(), ps.data(), int32_t(ps.size())), "load shards");
                      for (int s = 2; s < 3; ++s) {
                          int64_t targets = 0;
                          for (int k = 0; k < kMicro; ++k) {
                              int64_t n = 0;
                              ok(lima_batch_num_targets(micro_batch(s, k, cfg.vocab_size).get(), &n), "targets");
                              targets += n;
                          }
                          for (int k = r; k < kMicro; k += world) {
                              ok(lima_trainer_set_micro_batch(t.get(), k), "micro");
                              lima_fb_result fb{};
                              ok(lima_trainer_forward_backward(t.get(), micro_batch(s, k, cfg.vocab_size).get(), targets, &fb), "fb");
                          }
                          lima_step_result st{};
                          ok(lima_trainer_step(t.get(), 3e-3f, &st), "step");
                      }
                      std::vector<float> all;
                      for (const std::string &name : tensor_names(m.get())) {
                          const auto w = read_tensor(m.get(), name);
                          all.insert(all.end(), w.begin(), w.end());
                      }
                      write_floats(out + "/reshard-" + std::to_string(world) + "-" + std::to_string(r), all);
                      if (c) lima_comm_free(c);
                  }),
                  std::vector<int>(size_t(world), 0));
        EXPECT_LT(rel_max_err(read_floats(out + "/reshard-" + std::to_string(world) + "-0"), read_floats(out + "/full-0")), 1e-5)
            << world << " rank(s)";
    }
    // a whole state saved by one rank after 2 steps, continued on 2 sharded ranks == 3 steps on one rank
    const std::string rv4 = temp_dir("dist-state-rv4");
    ASSERT_EQ(run_ranks(1, [&](int) {
                  ModelPtr m = make_model(cfg, 11);
                  TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                  for (int s = 0; s < 2; ++s) {  // one rank runs every micro-batch of the step
                      int64_t targets = 0;
                      for (int k = 0; k < kMicro; ++k) {
                          int64_t n = 0;
                          ok(lima_batch_num_targets(micro_batch(s, k, cfg.vocab_size).get(), &n), "targets");
                          targets += n;
                      }
                      for (int k = 0; k < kMicro; ++k) {
                          lima_fb_result fb{};
                          ok(lima_trainer_forward_backward(t.get(), micro_batch(s, k, cfg.vocab_size).get(), targets, &fb), "fb");
                      }
                      lima_step_result st{};
                      ok(lima_trainer_step(t.get(), 3e-3f, &st), "step");
                  }
                  ok(lima_model_save(m.get(), (out + "/model1").c_str(), LIMA_DTYPE_F32, 0), "save model");
                  ok(lima_trainer_save_state(t.get(), (out + "/opt-whole").c_str()), "save state");
                  write_floats(out + "/ref3", train(nullptr, 0, 1, 0, nullptr));
              }),
              std::vector<int>({0}));
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv4, r, 2);
                  lima_model *raw = nullptr;
                  ok(lima_model_load((out + "/model1").c_str(), "cpu", &raw), "load model");
                  ModelPtr m(raw);
                  TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                  ok(lima_trainer_set_comm(t.get(), c, 2), "set_comm");
                  ok(lima_trainer_load_state(t.get(), (out + "/opt-whole").c_str()), "load whole state");
                  steps(t.get(), r, 2, 3);
                  std::vector<float> all;
                  for (const std::string &name : tensor_names(m.get())) {
                      const auto w = read_tensor(m.get(), name);
                      all.insert(all.end(), w.begin(), w.end());
                  }
                  write_floats(out + "/from-whole-" + std::to_string(r), all);
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    EXPECT_LT(rel_max_err(read_floats(out + "/from-whole-0"), read_floats(out + "/ref3")), 1e-5);
}

// The memory plan of a rank counts what it holds: the moments of its shard from stage 1, the
// gradient's from stage 2 (padded), the weights' from stage 3 (plus the largest unit gathered).
TEST(Distributed, TheMemoryPlanOfARankCountsItsShards) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-plan"), rv = temp_dir("dist-plan-rv");
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv, r, 2);
                  std::vector<float> figures;
                  for (int stage = 0; stage <= 3; ++stage) {
                      ModelPtr m = make_model(odd_config(), 11);
                      TrainerPtr t = make_trainer(m.get(), train_config());
                      ok(lima_trainer_set_comm(t.get(), c, stage), "set_comm");
                      lima_memory_plan p{};
                      ok(lima_trainer_plan_memory(t.get(), 2, 12, &p), "plan");
                      int64_t n = 0;
                      ok(lima_model_num_params(m.get(), &n), "num_params");
                      for (int64_t v : {p.weights, p.optimizer, p.workspace, p.total, n}) figures.push_back(float(v));
                  }
                  write_floats(out + "/" + std::to_string(r), figures);
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    const auto f = read_floats(out + "/0");
    const double P = f[4];
    auto at = [&](int stage, int k) { return double(f[size_t(stage * 5 + k)]); };
    EXPECT_EQ(at(0, 0), 4 * P);                                  // whole weights
    EXPECT_EQ(at(0, 1), 12 * P);                                 // gradient + two moments
    EXPECT_NEAR(at(1, 1), 4 * (P + P), 16);                      // gradient + half of each moment
    EXPECT_NEAR(at(2, 1), 4 * (P + P), 16);                      // half of each moment + the padded gradient
    EXPECT_NEAR(at(3, 1), 4 * 1.5 * P, 4 * 1.5 * 40);            // half of gradient and moments (padded per unit)
    EXPECT_NEAR(at(3, 0), 4 * 0.5 * P, 4 * 0.5 * 40);            // half of the weights
    EXPECT_GT(at(3, 2), 0);                                      // the gathered unit
    EXPECT_LT(at(3, 3), at(0, 3));
    EXPECT_EQ(at(0, 2), 0);
}

// ZeRO-3 from a checkpoint with every rank hollow, rank 0 included: rank 0 reads the weights unit by
// unit (LIMA's grown EOT row made as resize_vocab makes it), the same weights as a whole load gives;
// a damaged checkpoint fails every rank, none waits.
TEST(Distributed, ZeroThreeReadsTheCheckpointUnitByUnitOnRankZero) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-hollow0"), ck = out + "/ck";
    {
        ModelPtr m = make_model(odd_config(), 21);
        ASSERT_EQ(lima_model_save(m.get(), ck.c_str(), LIMA_DTYPE_F32, 30000), LIMA_OK) << lima_last_error();  // in shards
    }
    for (const bool hollow0 : {false, true}) {
        const std::string rv = temp_dir("dist-hollow0-rv"), tag = hollow0 ? "hollow" : "whole";
        ASSERT_EQ(run_ranks(2, [&](int r) {
                      lima_comm *c = join(rv, r, 2);
                      lima_model *raw = nullptr;
                      if (r == 0 && !hollow0)
                          ok(lima_model_load(ck.c_str(), "cpu", &raw), "load");
                      else
                          ok(lima_model_load_hollow(ck.c_str(), &raw), "load hollow");
                      ModelPtr m(raw);
                      ok(lima_model_resize_vocab(m.get(), odd_config().vocab_size + 1), "resize");  // LIMA's EOT
                      TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                      ok(lima_trainer_set_comm(t.get(), c, 3), "set_comm");
                      run_steps(t.get(), r, 2, 0, 1, odd_config().vocab_size);
                      write_floats(out + "/" + tag + "-" + std::to_string(r), all_weights(m.get(), t.get()));
                      lima_comm_free(c);
                  }),
                  std::vector<int>({0, 0}))
            << tag;
    }
    EXPECT_EQ(read_floats(out + "/hollow-0"), read_floats(out + "/whole-0"));
    EXPECT_EQ(read_floats(out + "/hollow-1"), read_floats(out + "/whole-0"));
    // a damaged checkpoint
    const std::string bad = out + "/bad";
    {
        ModelPtr m = make_model(odd_config(), 21);
        ASSERT_EQ(lima_model_save(m.get(), bad.c_str(), LIMA_DTYPE_F32, 0), LIMA_OK) << lima_last_error();
    }
    // a NaN written into the file's last tensor bytes (the model itself refuses NaN weights)
    {
        std::fstream f(bad + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(-4, std::ios::end);
        const float nan = std::nanf("");
        f.write(reinterpret_cast<const char *>(&nan), 4);
    }
    const std::string rv = temp_dir("dist-hollow0-bad-rv");
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv, r, 2);
                  lima_model *raw = nullptr;
                  ok(lima_model_load_hollow(bad.c_str(), &raw), "load hollow");
                  ModelPtr m(raw);
                  TrainerPtr t = make_trainer(m.get(), train_config());
                  const int st = lima_trainer_set_comm(t.get(), c, 3);
                  std::ofstream(out + "/bad-" + std::to_string(r)) << lima_status_name(st) << ": " << lima_last_error();
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    const std::string b0 = read_text(out + "/bad-0"), b1 = read_text(out + "/bad-1");
    EXPECT_NE(b0.find("LIMA_ERR_FORMAT"), std::string::npos) << b0;
    EXPECT_NE(b0.find("holds a non-finite value"), std::string::npos) << b0;
    EXPECT_EQ(b1.rfind("LIMA_ERR_IO: lima_trainer_set_comm: rank 0 could not read its checkpoint", 0), 0u) << b1;
}

TEST(Distributed, RanksWhoseModelsDifferAreAllToldBeforeAnyWeightMoves) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-differ"), rv = temp_dir("dist-differ-rv");
    const auto st = run_ranks(2, [&](int r) {
        lima_comm *c = join(rv, r, 2);
        lima_model_config cfg = odd_config();
        if (r == 1) cfg.vocab_size = 1024;  // one token short: another model
        ModelPtr m = make_model(cfg, 3);
        TrainerPtr t = make_trainer(m.get(), train_config());
        const int s = lima_trainer_set_comm(t.get(), c, 3);
        std::ofstream(out + "/" + std::to_string(r)) << lima_status_name(s) << ": " << lima_last_error();
        lima_comm_free(c);
    });
    ASSERT_EQ(st, std::vector<int>({0, 0}));
    for (int r = 0; r < 2; ++r) {
        const std::string msg = read_text(out + "/" + std::to_string(r));
        EXPECT_EQ(msg.rfind("LIMA_ERR_SHAPE: lima_trainer_set_comm: the ranks' models differ: rank 0's has ", 0), 0u) << msg;
    }
    EXPECT_NE(read_text(out + "/1").find("this rank's (1)"), std::string::npos);
}

// A ZeRO-3 checkpoint written unit by unit while the ranks gather: the same files as the gathered
// model's own save, in one file or in shards; a root that cannot write fails every rank, none hangs.
TEST(Distributed, ZeroThreeWritesTheCheckpointOneUnitAtATime) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-z3save"), rv = temp_dir("dist-z3save-rv");
    const lima_model_config cfg = odd_config();
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv, r, 2);
                  ModelPtr m = make_model(cfg, 11);
                  TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                  ok(lima_trainer_set_comm(t.get(), c, 3), "set_comm");
                  run_steps(t.get(), r, 2, 0, 1, cfg.vocab_size);
                  ok(lima_trainer_save_model(t.get(), (out + "/one").c_str(), LIMA_DTYPE_F32, 0, 0), "save one file");
                  ok(lima_trainer_save_model(t.get(), (out + "/shards").c_str(), LIMA_DTYPE_BF16, 60000, 1), "save shards by rank 1");
                  const std::string blocked = out + "/a-file/ck";  // a directory under a file: root cannot write it
                  if (r == 0) std::ofstream(out + "/a-file") << "x";
                  ok(lima_comm_barrier(c), "barrier");
                  const int s = lima_trainer_save_model(t.get(), blocked.c_str(), LIMA_DTYPE_F32, 0, 0);
                  std::ofstream(out + "/fail-" + std::to_string(r)) << lima_status_name(s) << ": " << lima_last_error();
                  write_floats(out + "/w-" + std::to_string(r), all_weights(m.get(), t.get()));
                  if (r == 0) ok(lima_model_save(m.get(), (out + "/gathered").c_str(), LIMA_DTYPE_F32, 0), "save gathered");
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    auto load = [&](const std::string &dir) {
        lima_model *raw = nullptr;
        EXPECT_EQ(lima_model_load(dir.c_str(), "cpu", &raw), LIMA_OK) << lima_last_error();
        ModelPtr m(raw);
        return all_weights(m.get(), nullptr);
    };
    const auto w = read_floats(out + "/w-0");
    EXPECT_EQ(load(out + "/one"), w);
    EXPECT_EQ(load(out + "/gathered"), w);
    EXPECT_EQ(read_text(out + "/one/model.safetensors"), read_text(out + "/gathered/model.safetensors"));
    EXPECT_TRUE(std::ifstream(out + "/shards/model.safetensors.index.json").good());
    EXPECT_LT(rel_max_err(load(out + "/shards"), w), 1e-2);  // bf16
    const std::string f0 = read_text(out + "/fail-0"), f1 = read_text(out + "/fail-1");
    EXPECT_EQ(f0.rfind("LIMA_ERR_IO: ", 0), 0u) << f0;
    EXPECT_EQ(f1.rfind("LIMA_ERR_IO: lima_trainer_save_model: rank 0 could not write the checkpoint", 0), 0u) << f1;
}

TEST(Distributed, ZeroThreeWithTiedEmbeddingsMatchesOneRank) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-tied"), rv = temp_dir("dist-tied-rv");
    ASSERT_EQ(run_ranks(1, [&](int) { write_floats(out + "/ref", train(nullptr, 0, 1, 0, nullptr, true)); }), std::vector<int>({0}));
    ASSERT_EQ(run_ranks(2, [&](int r) {
                  lima_comm *c = join(rv, r, 2);
                  write_floats(out + "/" + std::to_string(r), train(c, r, 2, 3, nullptr, true));
                  lima_comm_free(c);
              }),
              std::vector<int>({0, 0}));
    const auto ref = read_floats(out + "/ref");
    EXPECT_LT(rel_max_err(read_floats(out + "/0"), ref), 1e-5);
    EXPECT_EQ(read_floats(out + "/1"), read_floats(out + "/0"));
}

// ZeRO-3 state: 2 steps, the model (gathered to rank 0) and each rank's shards saved, the third step
// by fresh processes: the same number of ranks (each loads its own shard: the same bits), and 4 -> 2,
// 2 -> 4 ranks (every shard assembled and re-cut) within fp32 rounding of one uninterrupted rank.
TEST(Distributed, ZeroThreeStateResumesOnAnyNumberOfRanks) {
    NEED_GLOO();
    const std::string out = temp_dir("dist-z3state");
    const lima_model_config cfg = odd_config();
    ASSERT_EQ(run_ranks(1, [&](int) { write_floats(out + "/ref", train(nullptr, 0, 1, 0, nullptr)); }), std::vector<int>({0}));
    for (const int world : {2, 4}) {
        const std::string tag = std::to_string(world);
        const std::string rv_full = temp_dir("dist-z3-full-rv" + tag), rv_save = temp_dir("dist-z3-save-rv" + tag);
        ASSERT_EQ(run_ranks(world, [&](int r) {
                      lima_comm *c = join(rv_full, r, world);
                      write_floats(out + "/full-" + tag + "-" + std::to_string(r), train(c, r, world, 3, nullptr));
                      lima_comm_free(c);
                  }),
                  std::vector<int>(size_t(world), 0));
        ASSERT_EQ(run_ranks(world, [&](int r) {
                      lima_comm *c = join(rv_save, r, world);
                      ModelPtr m = make_model(cfg, 11 + uint64_t(r) * 1000);
                      TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                      ok(lima_trainer_set_comm(t.get(), c, 3), "set_comm");
                      run_steps(t.get(), r, world, 0, 2, cfg.vocab_size);
                      // sharded: the model alone cannot be saved; gathered to rank 0 it can
                      if (lima_model_save(m.get(), (out + "/nothing").c_str(), LIMA_DTYPE_F32, 0) != LIMA_ERR_STATE ||
                          !std::strstr(lima_last_error(), "sharded over the ranks of a ZeRO-3 trainer"))
                          throw std::runtime_error(std::string("save while sharded: ") + lima_last_error());
                      ok(lima_trainer_gather_params(t.get(), 0), "gather to rank 0");
                      if (r == 0) ok(lima_model_save(m.get(), (out + "/model-" + tag).c_str(), LIMA_DTYPE_F32, 0), "save model");
                      ok(lima_trainer_save_state(t.get(), (out + "/opt-" + tag + "-" + std::to_string(r)).c_str()), "save state");
                      lima_comm_free(c);
                  }),
                  std::vector<int>(size_t(world), 0));
    }
    // (saved by, resumed by): the same world loads its own shard; another world every shard
    for (auto [from, to] : {std::pair<int, int>{2, 2}, {4, 2}, {2, 4}}) {
        const std::string tag = std::to_string(from) + "-" + std::to_string(to), rv = temp_dir("dist-z3-resume-rv" + tag);
        ASSERT_EQ(run_ranks(to, [&](int r) {
                      lima_comm *c = join(rv, r, to);
                      lima_model *raw = nullptr;
                      ok(lima_model_load((out + "/model-" + std::to_string(from)).c_str(), "cpu", &raw), "load model");
                      ModelPtr m(raw);
                      TrainerPtr t = make_trainer(m.get(), train_config(0.2f, 5));
                      ok(lima_trainer_set_comm(t.get(), c, 3), "set_comm");
                      if (from == to) {
                          ok(lima_trainer_load_state(t.get(), (out + "/opt-" + std::to_string(from) + "-" + std::to_string(r)).c_str()),
                             "load own shard");
                      } else {
                          std::vector<std::string> files;
                          for (int k = 0; k < from; ++k) files.push_back(out + "/opt-" + std::to_string(from) + "-" + std::to_string(k));
                          std::vector<const char *> ps;
                          for (const auto &f : files) ps.push_back(f.c_str());
                          // a stage-3 shard of another world is not this rank's own
                          if (lima_trainer_load_state(t.get(), ps[0]) != LIMA_ERR_STATE || !std::strstr(lima_last_error(), "at ZeRO stage 3"))
                              throw std::runtime_error(std::string("another world's shard: ") + lima_last_error());
                          ok(lima_trainer_load_state_shards(t.get(), ps.data(), int32_t(ps.size())), "load shards");
                      }
                      run_steps(t.get(), r, to, 2, 3, cfg.vocab_size);
                      write_floats(out + "/resumed-" + tag + "-" + std::to_string(r), all_weights(m.get(), t.get()));
                      lima_comm_free(c);
                  }),
                  std::vector<int>(size_t(to), 0))
            << tag;
        const auto w = read_floats(out + "/resumed-" + tag + "-0");
        if (from == to)
            EXPECT_EQ(w, read_floats(out + "/full-" + std::to_string(from) + "-0")) << tag;
        EXPECT_LT(rel_max_err(w, read_floats(out + "/ref")), 1e-5) << tag;
        EXPECT_EQ(read_floats(out + "/resumed-" + tag + "-1"), w) << tag;
    }
}

namespace {

// A loopback port nobody listens on now.
sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(uint16_t(port));
    return a;
}

int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = loopback(0);
    socklen_t len = sizeof(a);
    if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0 || getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0)
        throw std::runtime_error("no free port");
    close(fd);
    return ntohs(a.sin_port);
}

bool have_redis() { return std::system("command -v redis-server > /dev/null 2>&1") == 0; }

// The key-value server a tcp:// rendezvous talks to (what rank 0's launcher starts), on a free
// loopback port, stopped at the end of the scope. The port is free when chosen, but another test
// running beside this one may bind it before the server does: then the server exits, and it is
// started again on another port until one answers.
bool answers(int port) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    const sockaddr_in a = loopback(port);
    const bool ok = connect(fd, reinterpret_cast<const sockaddr *>(&a), sizeof(a)) == 0;
    close(fd);
    return ok;
}

struct KvServer {
    pid_t pid = 0;
    int port = 0;
    KvServer() {
        for (int attempt = 0; attempt < 10; ++attempt) {
            port = free_port();
            pid = fork();
            if (pid == 0) {
                const int null = open("/dev/null", O_WRONLY);  // its start-up banner is not the test's output
                dup2(null, 1);
                dup2(null, 2);
                const std::string p = std::to_string(port);
                execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--loglevel", "warning", static_cast<char *>(nullptr));
                _exit(127);
            }
            for (int i = 0; i < 100; ++i) {  // up to 5 s for it to listen
                if (answers(port)) return;
                if (waitpid(pid, nullptr, WNOHANG) == pid) break;  // it exited: the port was taken
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
        throw std::runtime_error("redis-server did not start on any of 10 free ports");
    }
    ~KvServer() {
        kill(pid, SIGTERM);
        waitpid(pid, nullptr, 0);
    }
    std::string rendezvous(const std::string &job) const { return "tcp://127.0.0.1:" + std::to_string(port) + "/" + job; }
};

}  // namespace

// Rendezvous through rank 0's key-value server (tcp://HOST:PORT/JOB): two jobs share one server
// apart, a rank that never comes is named, a server that is not there is reported in time.
TEST(Distributed, RendezvousThroughAKeyValueServer) {
    NEED_GLOO();
    if (!have_redis()) GTEST_SKIP() << "redis-server is not installed (Debian: redis-server): the tcp:// rendezvous is untested here";
    const KvServer kv;
    const std::string out = temp_dir("dist-kv-out");
    for (const std::string job : {"job-a", "job-b"}) {  // the second job's keys do not meet the first's
        const int world = job == "job-a" ? 3 : 2;
        ASSERT_EQ(run_ranks(world, [&](int r) {
                      lima_comm *c = nullptr;
                      ok(lima_comm_create("gloo", r, world, kv.rendezvous(job).c_str(), 20000, &c), "lima_comm_create");
                      std::vector<float> v{float(r + 1)};
                      ok(lima_comm_allreduce_sum(c, v.data(), 1), "allreduce");
                      write_floats(out + "/" + job + "-" + std::to_string(r), v);
                      lima_comm_free(c);
                  }),
                  std::vector<int>(size_t(world), 0))
            << job;
        for (int r = 0; r < world; ++r)
            EXPECT_EQ(read_floats(out + "/" + job + "-" + std::to_string(r)), std::vector<float>({float(world * (world + 1) / 2)}));
    }
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(run_ranks(1, [&](int) {
                  lima_comm *c = nullptr;
                  const int s = lima_comm_create("gloo", 0, 2, kv.rendezvous("job-c").c_str(), 1500, &c);
                  std::ofstream(out + "/lonely") << lima_status_name(s) << ": " << lima_last_error();
                  const int port = free_port();
                  const std::string dead = "tcp://127.0.0.1:" + std::to_string(port) + "/job-d";
                  const int d = lima_comm_create("gloo", 0, 2, dead.c_str(), 1000, &c);
                  std::ofstream(out + "/dead") << lima_status_name(d) << ": " << lima_last_error();
                  const int b = lima_comm_create("gloo", 0, 2, "tcp://127.0.0.1/job", 1000, &c);
                  std::ofstream(out + "/bad") << lima_status_name(b) << ": " << lima_last_error();
              }),
              std::vector<int>({0}));
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
    const std::string lonely = read_text(out + "/lonely"), dead = read_text(out + "/dead"), bad = read_text(out + "/bad");
    EXPECT_NE(lonely.find("LIMA_ERR_IO: communicator (gloo, rank 0 of 2): rendezvous: rank(s) 1 of 2 did not arrive within 1500 ms"),
              std::string::npos) << lonely;
    EXPECT_NE(dead.find("LIMA_ERR_IO"), std::string::npos) << dead;
    EXPECT_NE(dead.find("no key-value server answered at 127.0.0.1:"), std::string::npos) << dead;
    EXPECT_NE(bad.find("LIMA_ERR_INVALID_ARGUMENT"), std::string::npos) << bad;
    EXPECT_NE(bad.find("expected tcp://HOST:PORT/JOB"), std::string::npos) << bad;
}

TEST(Distributed, ARankThatNeverArrivesIsNamedWithinTheTimeout) {
    NEED_GLOO();
    const std::string rv = temp_dir("dist-absent"), out = temp_dir("dist-absent-out");
    const auto t0 = std::chrono::steady_clock::now();
    const auto st = run_ranks(1, [&](int) {
        lima_comm *c = nullptr;
        const int s = lima_comm_create("gloo", 0, 3, ("file:" + rv).c_str(), 1500, &c);
        std::ofstream(out + "/msg") << lima_status_name(s) << ": " << lima_last_error();
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(st, std::vector<int>({0}));
    std::ifstream f(out + "/msg");
    const std::string msg((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_NE(msg.find("LIMA_ERR_IO"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank(s) 1, 2 of 3 did not arrive within 1500 ms"), std::string::npos) << msg;
    EXPECT_LT(secs, 30.0);
}

TEST(Distributed, ARankThatDiesMidRunEndsTheOthersWithAnError) {
    NEED_GLOO();
    const std::string rv = temp_dir("dist-dies"), out = temp_dir("dist-dies-out");
    const auto t0 = std::chrono::steady_clock::now();
    const auto st = run_ranks(2, [&](int r) {
        lima_comm *c = join(rv, r, 2, 10000);
        std::vector<float> v(1000, 1.0f);
        ok(lima_comm_allreduce_sum(c, v.data(), 1000), "first all-reduce");
        if (r == 1) _exit(3);  // dies without a word
        const int s = lima_comm_allreduce_sum(c, v.data(), 1000);
        std::ofstream(out + "/msg") << lima_status_name(s) << ": " << lima_last_error();
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(st[0], 0);
    EXPECT_EQ(st[1], 3);
    std::ifstream f(out + "/msg");
    const std::string msg((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_NE(msg.find("LIMA_ERR_IO"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 0 of 2"), std::string::npos) << msg;
    EXPECT_LT(secs, 60.0);
}

TEST(Distributed, ARankThatHangsEndsTheOthersWithinTheTimeout) {
    NEED_GLOO();
    const std::string rv = temp_dir("dist-hangs"), out = temp_dir("dist-hangs-out");
    const auto st = run_ranks(2, [&](int r) {
        lima_comm *c = join(rv, r, 2, 2000);
        if (r == 1) {  // alive, connected, but never joins the collective
            std::this_thread::sleep_for(std::chrono::seconds(6));
            return;
        }
        std::vector<float> v(1000, 1.0f);
        const auto t0 = std::chrono::steady_clock::now();
        const int s = lima_comm_allreduce_sum(c, v.data(), 1000);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::ofstream(out + "/msg") << lima_status_name(s) << " after " << secs << " s: " << lima_last_error();
    });
    EXPECT_EQ(st, std::vector<int>({0, 0}));
    std::ifstream f(out + "/msg");
    const std::string msg((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_EQ(msg.rfind("LIMA_ERR_IO after ", 0), 0u) << msg;
    const double secs = std::stod(msg.substr(std::string("LIMA_ERR_IO after ").size()));
    EXPECT_GE(secs, 1.5) << msg;  // it waited for the timeout (2 s) ...
    EXPECT_LT(secs, 5.0) << msg;  // ... and not for the hanging rank
    EXPECT_NE(msg.find("rank 0 of 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("another rank stopped answering within distributed.timeout_s"), std::string::npos) << msg;
}

TEST(Distributed, BadArgumentsAndStageThreeMisuse) {
    lima_comm *c = nullptr;
    EXPECT_LIMA_ERR(lima_comm_create("mpi", 0, 1, "file:/tmp", 1000, &c), LIMA_ERR_UNSUPPORTED, "\"mpi\" is not known");
    EXPECT_LIMA_ERR(lima_comm_create("gloo", 2, 2, "file:/tmp", 1000, &c), LIMA_ERR_INVALID_ARGUMENT, "rank 2 must be in [0, world)");
    EXPECT_LIMA_ERR(lima_comm_create("gloo", 0, 1, "file:/tmp", 0, &c), LIMA_ERR_INVALID_ARGUMENT, "timeout_ms must be > 0");
    EXPECT_LIMA_ERR(lima_comm_create("gloo", 0, 1, nullptr, 1000, &c), LIMA_ERR_INVALID_ARGUMENT, "rendezvous is NULL");
    if (!have_gloo()) return;
    const std::string out = temp_dir("dist-bad-out");
    const auto st = run_ranks(1, [&](int) {
        std::string msgs;
        // the status first, then its message (an operand order the compiler may not choose itself)
        auto say = [](int st) { return std::to_string(st) + lima_last_error() + "\n"; };
        lima_comm *bad = nullptr;
        msgs += say(lima_comm_create("gloo", 0, 1, "udp://host:1", 1000, &bad));
        lima_comm *cm = join(temp_dir("dist-bad-rv"), 0, 1);
        ModelPtr m = make_model(tiny_config(), 1);
        TrainerPtr t = make_trainer(m.get(), train_config());
        msgs += say(lima_trainer_set_comm(t.get(), cm, 7));
        {  // an adapter's trainer: its base is frozen, stage 3 is refused
            ModelPtr am = make_model(tiny_config(), 1);
            ok(lima_model_add_adapter(am.get(), 2, 4.0f, 0.0f, 0x7Fu, nullptr, 0, 0, 1), "add adapter");
            TrainerPtr at = make_trainer(am.get(), train_config());
            msgs += say(lima_trainer_set_comm(at.get(), cm, 3));
        }
        {  // a hollow model: no weights until a trainer fills them; rank 0's may not be hollow
            lima_model_config hc = tiny_config();
            lima_model *raw = nullptr;
            ok(lima_model_create_hollow(&hc, &raw), "hollow");
            ModelPtr hm(raw);
            std::vector<float> v(16);
            msgs += say(lima_model_read_tensor(hm.get(), "model.norm.weight", v.data(), 16));
            TrainerPtr ht = make_trainer(hm.get(), train_config());
            msgs += say(lima_trainer_set_comm(ht.get(), cm, 3));
        }
        ok(lima_trainer_set_comm(t.get(), cm, 3), "stage 3");
        std::vector<float> w(16);
        msgs += say(lima_model_read_tensor(m.get(), "model.norm.weight", w.data(), 16));
        msgs += say(lima_trainer_gather_params(t.get(), 5));
        ok(lima_trainer_gather_params(t.get(), 0), "gather");
        ok(lima_model_read_tensor(m.get(), "model.norm.weight", w.data(), 16), "read after gather");
        std::ofstream(out + "/msg") << msgs;
        lima_comm_free(cm);
    });
    ASSERT_EQ(st, std::vector<int>({0}));
    std::ifstream f(out + "/msg");
    const std::string msg((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_NE(msg.find(std::to_string(LIMA_ERR_INVALID_ARGUMENT) + "communicator (gloo, rank 0 of 1): gloo rendezvous \"udp://host:1\": expected file:DIR (a directory every rank can reach) or tcp://"),
              std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(LIMA_ERR_UNSUPPORTED) + "lima_trainer_set_comm: ZeRO stage 3 shards the weights of full"),
              std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(LIMA_ERR_STATE) + "lima_model_read_tensor: the model's weights are sharded"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(LIMA_ERR_STATE) + "lima_model_read_tensor: the model has no weights of its own yet"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find(std::to_string(LIMA_ERR_STATE) + "lima_trainer_set_comm: rank 0's model must hold the weights"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find(std::to_string(LIMA_ERR_INVALID_ARGUMENT) + "lima_trainer_gather_params: root 5 is not a rank"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find(std::to_string(LIMA_ERR_INVALID_ARGUMENT) + "lima_trainer_set_comm: zero_stage must be 0, 1, 2 or 3"),
              std::string::npos) << msg;
}

// Whether this machine has an NVIDIA driver (then the CUDA side may really work).
bool have_gpu_driver() { return access("/dev/nvidiactl", F_OK) == 0; }

// NCCL is for CUDA ranks: a CPU device, a short id or buffer are refused by name; on a machine
// without a GPU (the CUDA plugin absent, or present with no driver or device) creating one fails
// with an error that names the CUDA side, never a crash.
TEST(Distributed, NcclCommunicatorsAreRefusedClearlyWithoutACudaDevice) {
    std::vector<uint8_t> id(128, 7);
    lima_comm *c = nullptr;
    EXPECT_LIMA_ERR(lima_comm_create_nccl(0, 1, id.data(), 128, "cpu", 1000, &c), LIMA_ERR_INVALID_ARGUMENT,
                    "device \"cpu\" is not a CUDA device");
    EXPECT_LIMA_ERR(lima_comm_create_nccl(0, 1, id.data(), 128, "tpu", 1000, &c), LIMA_ERR_INVALID_ARGUMENT, "tpu");
    EXPECT_LIMA_ERR(lima_comm_create_nccl(0, 1, nullptr, 128, "cuda", 1000, &c), LIMA_ERR_INVALID_ARGUMENT, "unique_id is NULL");
    EXPECT_LIMA_ERR(lima_comm_nccl_unique_id(id.data(), 16), LIMA_ERR_INVALID_ARGUMENT, "out needs 128 bytes");
    if (have_gpu_driver()) GTEST_SKIP() << "a CUDA driver is present: the GPU tests cover NCCL";
    EXPECT_LIMA_ERR(lima_comm_create_nccl(0, 1, id.data(), 16, "cuda", 1000, &c), LIMA_ERR_INVALID_ARGUMENT, "128 bytes, got 16");
    EXPECT_LIMA_ERR(lima_comm_create_nccl(0, 2, id.data(), 128, "cuda", 0, &c), LIMA_ERR_INVALID_ARGUMENT, "timeout_ms must be > 0");
    const int st = lima_comm_create_nccl(0, 1, id.data(), 128, "cuda:0", 1000, &c);
    EXPECT_TRUE(st == LIMA_ERR_UNSUPPORTED || st == LIMA_ERR_INTERNAL) << st << " " << lima_last_error();
    const std::string msg = lima_last_error();
    EXPECT_TRUE(msg.find("CUDA") != std::string::npos) << msg;
    EXPECT_EQ(c, nullptr);
    const int st2 = lima_comm_nccl_unique_id(id.data(), 128);
    EXPECT_NE(st2, LIMA_OK);
    EXPECT_FALSE(std::string(lima_last_error()).empty());
}

// A hollow model goes to a CUDA device for a ZeRO-3 trainer over NCCL; a whole model, the CPU as the
// target, or no device here are refused by name, and the model is left as it was.
TEST(Distributed, OnlyAHollowModelGoesToADeviceWithoutWeights) {
    ModelPtr whole = make_model(tiny_config(), 1);
    EXPECT_LIMA_ERR(lima_model_to_device(whole.get(), "cuda:0"), LIMA_ERR_STATE, "the model holds weights");
    lima_model_config hc = tiny_config();
    lima_model *raw = nullptr;
    ASSERT_EQ(lima_model_create_hollow(&hc, &raw), LIMA_OK) << lima_last_error();
    ModelPtr hollow(raw);
    EXPECT_LIMA_ERR(lima_model_to_device(hollow.get(), "cpu"), LIMA_ERR_INVALID_ARGUMENT, "is not a CUDA device");
    EXPECT_LIMA_ERR(lima_model_to_device(hollow.get(), "gpu7"), LIMA_ERR_INVALID_ARGUMENT, "gpu7");
    EXPECT_LIMA_ERR(lima_model_to_device(hollow.get(), nullptr), LIMA_ERR_INVALID_ARGUMENT, "device is NULL");
    if (have_gpu_driver()) return;
    const int st = lima_model_to_device(hollow.get(), "cuda:0");
    EXPECT_TRUE(st == LIMA_ERR_UNSUPPORTED || st == LIMA_ERR_INTERNAL) << st << " " << lima_last_error();
    std::vector<float> v(16);  // still a hollow CPU model
    EXPECT_LIMA_ERR(lima_model_read_tensor(hollow.get(), "model.norm.weight", v.data(), 16), LIMA_ERR_STATE, "hollow");
}
