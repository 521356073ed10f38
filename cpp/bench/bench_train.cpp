// Training throughput of liblima: full steps (forward, backward, AdamW) on random tokens, every
// token a target. Prints one JSON line. The peer scripts (bench/peer_train_torch.py on the CPU,
// bench/peer_train_torch_cuda.py on a GPU) run the same config with Hugging Face transformers +
// PyTorch; ci/bench-cpu.sh and ci/bench-gpu.sh run both.
//   lima_bench_train [--hidden 256 --layers 4 --heads 4 --kv-heads 4 --ffn 688 --vocab 4096
//                     --batch 8 --seq 256 --steps 10 --warmup 2 --threads 2 --cuda 0|1
//                     --recompute 0|1 --mix 0|1|2 --offload 0|1 --lora R --qlora 0|1]
// --offload 1: the optimiser on the host (lima_train_config.offload); host_peak_gib is the process's
// peak resident memory (VmHWM). --lora R: a rank-R adapter on every projection (the last token id
// trainable, as LIMA's EOT), the base frozen; --qlora 1: the base's projections in NF4 first.
// --mix 1: LIMA-like examples (lengths uniform in [100, 2048]) packed into the rows; --mix 2: the
// same examples one per row, padded. tokens_per_s then counts real (non-padding) tokens.
// MFU uses 6N + 6 L d T FLOPs per token and 989 TFLOP/s (H100 SXM dense bf16).
#include <algorithm>
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

// The process's peak resident memory (VmHWM of /proc/self/status), in bytes; 0 where unreadable.
static double host_peak_bytes() {
    std::FILE *f = std::fopen("/proc/self/status", "r");
    if (!f) return 0.0;
    char line[256];
    double kb = 0.0;
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "VmHWM:", 6) == 0) kb = std::atof(line + 6);
    std::fclose(f);
    return kb * 1024.0;
}

int main(int argc, char **argv) {
    lima_model_config c;
    lima_model_config_init(&c);
    c.vocab_size = 4096;
    int batch = 8, seq = 256, steps = 10, warmup = 2, threads = 2, cuda = 0, recompute = 0, mix = 0, offload = 0, lora = 0, qlora = 0;
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
        else if (k == "--cuda") cuda = v;
        else if (k == "--recompute") recompute = v;
        else if (k == "--mix") mix = v;
        else if (k == "--offload") offload = v;
        else if (k == "--lora") lora = v;
        else if (k == "--qlora") qlora = v;
        else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
    }
    check(lima_set_num_threads(threads), "lima_set_num_threads");
    lima_model *m = nullptr;
    c.max_position_embeddings = std::max(2048, seq);
    check(lima_model_create(&c, cuda ? "cuda" : "cpu", 1, &m), "lima_model_create");
    if (qlora) check(lima_model_quantize_nf4(m, 1), "lima_model_quantize_nf4");
    if (lora || qlora) {
        const int32_t eot = c.vocab_size - 1;
        check(lima_model_add_adapter(m, lora ? lora : 16, 2.0f * float(lora ? lora : 16), 0.05f, LIMA_LORA_ALL, &eot, 1, 0, 1),
              "lima_model_add_adapter");
    }
    lima_train_config tc;
    lima_train_config_init(&tc);
    tc.recompute_activations = recompute;
    tc.offload = offload;
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
    std::vector<int32_t> seg(tok.size(), 1);
    int64_t real = int64_t(tok.size());
    if (mix) {  // examples of 100..2048 tokens: packed back to back (1) or one per row (2)
        real = 0;
        std::fill(seg.begin(), seg.end(), 0);
        for (int r = 0; r < batch; ++r) {
            int t = 0, id = 1;
            while (t < seq) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                const int len = std::min(seq - t, 100 + int((s >> 33) % 1949));
                if (mix == 2 && t > 0) break;
                if (len < 2) break;
                for (int i = 0; i < len; ++i) seg[size_t(r) * seq + t + i] = id;
                t += len;
                real += len;
                ++id;
            }
        }
        for (size_t i = 0; i < tok.size(); ++i) mask[i] = seg[i] != 0;
    }
    lima_batch *b = nullptr;
    check(lima_batch_create(batch, seq, &b), "lima_batch_create");
    check(lima_batch_set(b, tok.data(), mask.data(), seg.data()), "lima_batch_set");
    int64_t targets = 0;
    lima_batch_num_targets(b, &targets);
    lima_memory_plan plan{};
    check(lima_trainer_plan_memory(t, batch, seq, &plan), "lima_trainer_plan_memory");
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
    {  // the last step's update (offload: still on the host worker) counts too
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<float> probe(size_t(c.hidden_size));
        check(lima_model_read_tensor(m, "model.norm.weight", probe.data(), c.hidden_size), "lima_model_read_tensor");
        secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    const double tps = double(real) * steps / secs;
    const double flops = 6.0 * double(nparams) + 6.0 * c.num_layers * double(c.hidden_size) * seq;
    lima_trainer_plan_memory(t, batch, seq, &plan);
    // the CUDA backend's tuning switches in force (cuda/kernels.cuh, cuda/gemm.cuh)
    const char *att = std::getenv("LIMA_CUDA_ATTENTION"), *gemm = std::getenv("LIMA_CUDA_GEMM");
    std::printf("{\"impl\": \"liblima-%s%s%s\", \"attention\": \"%s\", \"gemm\": \"%s\", \"params\": %lld, \"threads\": %d, \"batch\": %d, \"seq\": %d, \"mix\": %d, "
                "\"recompute\": %d, \"steps\": %d, \"tokens_per_s\": %.1f, \"mfu\": %.4f, \"step_s\": %.4f, "
                "\"plan_gib\": %.2f, \"peak_gib\": %.2f, \"host_plan_gib\": %.2f, \"host_peak_gib\": %.2f, \"final_loss\": %.4f}\n",
                cuda ? "cuda" : "cpu", offload ? "-offload" : "", qlora ? "-qlora" : lora ? "-lora" : "",
                att && *att ? att : "0", gemm && *gemm ? gemm : "heuristic", (long long)nparams, threads, batch, seq, mix, recompute, steps, tps,
                tps * flops / 989e12, secs / steps, plan.total / 1073741824.0, plan.peak / 1073741824.0, plan.host / 1073741824.0,
                host_peak_bytes() / 1073741824.0, loss);
    lima_batch_free(b);
    lima_trainer_free(t);
    lima_model_free(m);
    return 0;
}
