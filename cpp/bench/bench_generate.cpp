// Decoding throughput of liblima: prefill a batch of prompts, then decode new tokens with the KV
// cache, on the CPU or (--cuda 1) on the GPU. Greedy by default, so both sides do the same work;
// --sample 1 uses LIMA's sampling (temperature 0.7, top-p 0.9, repetition penalty 1.2). Prints one
// JSON line; weight_bytes is what batch-1 decoding must read per token (bf16 on the GPU).
//   lima_bench_generate [--hidden 128 --layers 4 --heads 4 --kv-heads 2 --ffn 344 --vocab 1025
//                        --batch 1 --prompt 512 --new 256 --threads 2 --cuda 0|1 --sample 0|1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
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
    c.vocab_size = 1025;
    c.hidden_size = 128;
    c.num_layers = 4;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 344;
    int batch = 1, prompt = 512, fresh = 256, threads = 2, cuda = 0, sample = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        const int v = std::atoi(argv[i + 1]);
        if (k == "--hidden") c.hidden_size = v;
        else if (k == "--layers") c.num_layers = v;
        else if (k == "--heads") c.num_heads = v;
        else if (k == "--kv-heads") c.num_kv_heads = v;
        else if (k == "--ffn") c.intermediate_size = v;
        else if (k == "--vocab") c.vocab_size = v;
        else if (k == "--batch") batch = v;
        else if (k == "--prompt") prompt = v;
        else if (k == "--new") fresh = v;
        else if (k == "--threads") threads = v;
        else if (k == "--cuda") cuda = v;
        else if (k == "--sample") sample = v;
        else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
    }
    check(lima_set_num_threads(threads), "threads");
    lima_model *m = nullptr;
    c.max_position_embeddings = std::max(2048, prompt + fresh + 1);
    check(lima_model_create(&c, cuda ? "cuda" : "cpu", 1, &m), "model");
    lima_generator *g = nullptr;
    check(lima_generator_create(m, batch, prompt + fresh + 1, &g), "generator");
    std::vector<int32_t> toks(size_t(batch) * prompt), lens(size_t(batch), prompt);
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = int32_t((i * 7919 + 13) % size_t(c.vocab_size));
    lima_sampling s;
    lima_sampling_init(&s);
    if (!sample) {
        s.temperature = 0.0f;
        s.repetition_penalty = 1.0f;
    }
    if (cuda) {  // a first short run: plans, graphs and allocations, as a serving process has them
        check(lima_generator_start(g, batch, toks.data(), lens.data(), nullptr), "warm-up");
        std::vector<int32_t> w(static_cast<size_t>(batch));
        for (int i = 0; i < 4; ++i) check(lima_generator_step(g, &s, nullptr, w.data()), "warm-up");
    }
    const auto t0 = std::chrono::steady_clock::now();
    check(lima_generator_start(g, batch, toks.data(), lens.data(), nullptr), "prefill");
    const auto t1 = std::chrono::steady_clock::now();
    std::vector<int32_t> out(static_cast<size_t>(batch));
    for (int i = 0; i < fresh; ++i) check(lima_generator_step(g, &s, nullptr, out.data()), "step");
    const auto t2 = std::chrono::steady_clock::now();
    const double pre = std::chrono::duration<double>(t1 - t0).count(), dec = std::chrono::duration<double>(t2 - t1).count();
    int64_t np = 0;
    lima_model_num_params(m, &np);
    // the CUDA backend's tuning switches in force (cuda/kernels.cuh, cuda/gemm.cuh)
    const char *att = std::getenv("LIMA_CUDA_ATTENTION"), *gemm = std::getenv("LIMA_CUDA_GEMM"), *mv = std::getenv("LIMA_CUDA_MATVEC");
    std::printf("{\"impl\": \"liblima-%s\", \"attention\": \"%s\", \"gemm\": \"%s\", \"matvec\": \"%s\", \"params\": %lld, \"weight_bytes\": %lld, \"batch\": %d, \"prompt\": %d, "
                "\"new\": %d, \"threads\": %d, \"sample\": %d, \"prefill_s\": %.3f, \"decode_tokens_per_s\": %.1f}\n",
                cuda ? "cuda" : "cpu", att && *att ? att : "0", gemm && *gemm ? gemm : "heuristic", mv && *mv ? mv : "0", (long long)np, (long long)np * (cuda ? 2 : 4), batch, prompt, fresh, threads, sample, pre,
                double(batch) * fresh / dec);
    lima_generator_free(g);
    lima_model_free(m);
    return 0;
}
