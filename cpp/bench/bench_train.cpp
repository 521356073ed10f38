// Training throughput of liblima's CPU backend: full steps (forward, backward, AdamW) on random
// tokens, every token a target. Prints one JSON line. The peer script (bench/peer_train_torch.py)
// runs the same config with Hugging Face transformers + PyTorch; ci/bench-cpu.sh runs both.
//   lima_bench_train [--hidden 256 --layers 4 --heads 4 --kv-heads 4 --ffn 688 --vocab 4096
//                     --batch 8 --seq 256 --steps 10 --warmup 2 --threads 2]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lima/lima.h"

static void check(int st, const char *what) {
    if (st != LIMA_OK) {
        std::fprintf(stderr, "%s failed: %s: %s\n", what, lima_status_name(st), lima_last_error());
        std::exit(1);
    }
}

int main(int argc, char **argv) {
    lima_model_config c;
    lima_model_config_init(&c);
    c.vocab_size = 4096;
    int batch = 8, seq = 256, steps = 10, warmup = 2, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        const int v = std::atoi(argv[i + 1]);
        if (k == "--hidden") c.hidden_size = v;
        else if (k == "--layers") c.num_layers = v;
        else if (k == "--heads") c.num_heads = c.num_kv_heads = v;
        else if (k == "--kv-heads") c.num_kv_heads = v;
        else if (k == "--ffn") c.intermediate_size = v;
        else if (k == "--vocab") c.vocab_size = v;
        else if (k == "--batch") batch = v;
        else if (k == "--seq") seq = v;
        else if (k == "--steps") steps = v;
        else if (k == "--warmup") warmup = v;
        else if (k == "--threads") threads = v;
        else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
    }
    check(lima_set_num_threads(threads), "lima_set_num_threads");
    lima_model *m = nullptr;
    check(lima_model_create(&c, "cpu", 1, &m), "lima_model_create");
    lima_train_config tc;
    lima_train_config_init(&tc);
    lima_trainer *t = nullptr;
    check(lima_trainer_create(m, &tc, &t), "lima_trainer_create");
    int64_t nparams = 0;
    lima_model_num_params(m, &nparams);
    std::vector<int32_t> tok(size_t(batch) * seq);
    uint64_t s = 12345;
    for (auto &x : tok) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x = int32_t((s >> 33) % uint64_t(c.vocab_size));
    }
    std::vector<uint8_t> mask(tok.size(), 1);
    lima_batch *b = nullptr;
    check(lima_batch_create(batch, seq, &b), "lima_batch_create");
    check(lima_batch_set(b, tok.data(), mask.data(), nullptr), "lima_batch_set");
    int64_t targets = 0;
    lima_batch_num_targets(b, &targets);
    double loss = 0.0, secs = 0.0;
    for (int i = 0; i < warmup + steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        lima_fb_result r{};
        check(lima_trainer_forward_backward(t, b, targets, &r), "forward_backward");
        check(lima_trainer_step(t, 1e-4f, nullptr), "step");
        const auto t1 = std::chrono::steady_clock::now();
        if (i >= warmup) secs += std::chrono::duration<double>(t1 - t0).count();
        loss = r.loss_sum / double(r.num_targets);
    }
    const double tps = double(batch) * seq * steps / secs;
    std::printf("{\"impl\": \"liblima-cpu\", \"params\": %lld, \"threads\": %d, \"batch\": %d, \"seq\": %d, \"steps\": %d, "
                "\"tokens_per_s\": %.1f, \"step_s\": %.4f, \"final_loss\": %.4f}\n",
                (long long)nparams, threads, batch, seq, steps, tps, secs / steps, loss);
    lima_batch_free(b);
    lima_trainer_free(t);
    lima_model_free(m);
    return 0;
}
