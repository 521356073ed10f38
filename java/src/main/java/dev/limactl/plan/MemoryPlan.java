package dev.limactl.plan;

import dev.limactl.engine.ModelConfig;
import java.util.ArrayList;
import java.util.List;

/**
 * Per-GPU memory of data-parallel training of a LLaMA model with the CUDA backend's mixed precision
 * (bf16 weights for the products, fp32 gradients, fp32 master weights and AdamW moments), for each
 * ZeRO stage: what each rank holds of weights, gradients and optimiser state, plus activations for
 * one micro-batch and communication buffers. The activation figures follow the CUDA backend's own
 * buffer table (cpp/cuda/backend.cu, activation_table), so the plan and the allocation agree.
 */
public final class MemoryPlan {
    /** Bytes per GPU of one stage. */
    public record Stage(int stage, long weights, long gradients, long optimizer, long activations, long communication) {
        public long total() {
            return weights + gradients + optimizer + activations + communication;
        }
    }

    /** The model shapes LIMA's paper trains (LLaMA 1), with LIMA's EOT added to the 32,000 pieces. */
    public static ModelConfig llama(String name) {
        return switch (name.toLowerCase(java.util.Locale.ROOT)) {
            case "7b" -> ModelConfig.llama(32001, 4096, 11008, 32, 32, 32, 2048);
            case "13b" -> ModelConfig.llama(32001, 5120, 13824, 40, 40, 40, 2048);
            case "33b", "30b" -> ModelConfig.llama(32001, 6656, 17920, 60, 52, 52, 2048);
            case "65b" -> ModelConfig.llama(32001, 8192, 22016, 80, 64, 64, 2048);
            default -> throw new IllegalArgumentException("unknown model size \"" + name + "\" (7b, 13b, 33b, 65b, or a config.json)");
        };
    }

    public static long parameters(ModelConfig c) {
        long d = c.hiddenSize(), f = c.intermediateSize(), v = c.vocabSize(), hd = d / c.numHeads();
        long q = c.numHeads() * hd, kv = c.numKvHeads() * hd;
        long layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d;
        return v * d * (c.tieWordEmbeddings() ? 1 : 2) + c.numLayers() * layer + d;
    }

    /**
     * Activation bytes of one micro-batch of `tokens` tokens: every layer's saved tensors, or with
     * recomputation each layer's input only plus one layer's tensors, and the classifier's chunk.
     */
    public static long activations(ModelConfig c, long tokens, boolean recompute) {
        long d = c.hiddenSize(), f = c.intermediateSize(), h = c.numHeads(), hd = d / h, L = c.numLayers();
        long qd = h * hd, ld = qd + 2 * c.numKvHeads() * hd;
        long perLayer = tokens * ((d + ld + qd + d + 2 * f + f) * 2 + (1 + h + d + 1) * 4);
        long resid = (L + 1) * tokens * d * 4 + tokens * (4 + d * 4 + h * 4);
        long scratch = tokens * (d * 2 + d * 4 + f * 2 + 4 * f + d * 2 + qd * 2 + ld * 2 + d * 2);
        long chunk = Math.max(64, Math.min(8192, (768L << 20) / (c.vocabSize() * 6L)));
        long classifier = chunk * (d * 4 + c.vocabSize() * 6L + 4);
        return (recompute ? 1 : L) * perLayer + resid + scratch + classifier;
    }

    /**
     * The fp32 tensors every CUDA rank keeps whole once the fp32 master is sharded (ZeRO 1-3): what the
     * kernels read in fp32, the embedding and the norm gains.
     */
    public static long fp32Replicated(ModelConfig c) {
        long d = c.hiddenSize();
        return (c.vocabSize() * d + (2L * c.numLayers() + 1) * d) * 4;
    }

    /**
     * Every stage's per-GPU bytes for `gpus` ranks, micro-batches of `tokens` tokens, as the CUDA ranks
     * hold them: stages 1-2 keep the bf16 weights and the fp32 embedding and gains whole, the fp32
     * master and moments sharded; stage 3 keeps pieces of everything, plus two gathered layers (the
     * one computing and the one prefetched) and the gathered LM head in bf16, and the fp32 gradient
     * staging of two layers, the embedding and the head (communication).
     */
    public static List<Stage> stages(ModelConfig c, int gpus, long tokens, boolean recompute) {
        if (gpus < 1) throw new IllegalArgumentException("--gpus must be >= 1, got " + gpus);
        long p = parameters(c), n = gpus, act = activations(c, tokens, recompute), f32 = fp32Replicated(c);
        long bucket = Math.min(p, 25_000_000L) * 4 * 2;  // two fp32 gradient buckets in flight
        long d = c.hiddenSize(), emb = c.vocabSize() * d, head = c.tieWordEmbeddings() ? emb : emb + d;
        long layer = (p - emb - (c.tieWordEmbeddings() ? 0 : emb) - d) / Math.max(1, c.numLayers());  // one layer's parameters
        long gathered = (2 * layer + head) * 2, staging = (2 * layer + emb + head) * 4;
        List<Stage> out = new ArrayList<>();
        out.add(new Stage(0, p * 2, p * 4, p * 12, act, bucket));
        out.add(new Stage(1, p * 2 + f32, p * 4, ceil(p * 12, n), act, bucket));
        out.add(new Stage(2, p * 2 + f32, ceil(p * 4, n), ceil(p * 12, n), act, bucket));
        out.add(new Stage(3, ceil(p * 2, n) + f32, ceil(p * 4, n), ceil(p * 12, n), act, gathered + staging));
        return out;
    }

    /** One GPU's ways to fine-tune: where the bytes go (device, host) in each. */
    public enum Mode { FULL, OFFLOAD, LORA, QLORA }

    /** A mode's bytes on the device and in (pinned) host memory. */
    public record Single(Mode mode, long device, long host, long trainable) {}

    /** Elements a LoRA adapter of rank r on every projection trains, with the EOT token's embedding and LM-head rows. */
    public static long adapterParameters(ModelConfig c, int r) {
        long d = c.hiddenSize(), f = c.intermediateSize(), hd = d / c.numHeads(), q = c.numHeads() * hd, kv = c.numKvHeads() * hd;
        long perLayer = (long) r * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + f) + (f + d));
        return c.numLayers() * perLayer + d * (c.tieWordEmbeddings() ? 1 : 2);
    }

    /**
     * Single-GPU fine-tuning, per mode, with micro-batches of `tokens` tokens:
     * full (bf16 weights, fp32 master weights, gradients and AdamW moments on the device);
     * offload (ZeRO-Offload's split as liblima runs it: bf16 weights, fp32 embedding and norm gains and
     * the fp32 gradient of the units backward holds (two layers, the embedding, the head) on the
     * device; fp32 master weights, gradient and moments plus a bf16 upload ring of two units in pinned
     * host memory; activations recomputed);
     * LoRA (the frozen base in bf16, the adapter and its AdamW state in fp32);
     * QLoRA (the base's projections in NF4, block 64 with double-quantised absmax: 0.5 + 1/64 +
     * 4/(64*256) bytes each; embeddings and norms bf16).
     */
    public static List<Single> singleGpu(ModelConfig c, long tokens, boolean recompute, int r) {
        long p = parameters(c), a = adapterParameters(c, r), act = activations(c, tokens, recompute);
        long d = c.hiddenSize(), embed = c.vocabSize() * d * (c.tieWordEmbeddings() ? 1 : 2), linear = p - embed - c.numLayers() * 2L * d - d;
        long loraAct = tokens * c.numLayers() * 7L * r * 4;  // each adapter's x A^T, kept for backward
        long nf4 = linear / 2 + linear / 64 + linear / (64 * 256) * 4 + 8;
        List<Single> out = new ArrayList<>();
        out.add(new Single(Mode.FULL, p * 2 + p * 4 + p * 12 + act, 0, p));
        long emb = c.vocabSize() * d, layer = (p - embed - d) / Math.max(1, c.numLayers()), head = d + (c.tieWordEmbeddings() ? 0 : emb);
        long staging = 2 * layer + emb + head;
        out.add(new Single(Mode.OFFLOAD, modelOnDevice(c) + staging * 4 + activations(c, tokens, true),
                p * 16 + 2 * Math.max(emb, Math.max(layer, head)) * 2, p));
        out.add(new Single(Mode.LORA, p * 2 + a * 16 + act + loraAct, 0, a));
        out.add(new Single(Mode.QLORA, nf4 + (p - linear) * 2 + a * 16 + act + loraAct, 0, a));
        return out;
    }

    /**
     * What a model loaded on a CUDA device holds there before any trainer: bf16 weights, plus fp32 copies of
     * the embedding and the norm gains (what the kernels read in fp32).
     */
    public static long modelOnDevice(ModelConfig c) {
        long d = c.hiddenSize();
        return parameters(c) * 2 + (c.vocabSize() * d + (2L * c.numLayers() + 1) * d) * 4;
    }

    /** The lowest stage (least communication) that fits, or -1. */
    public static int choose(List<Stage> stages, long gpuBytes) {
        for (Stage s : stages) {
            if (s.total() <= gpuBytes) return s.stage();
        }
        return -1;
    }

    private static long ceil(long a, long b) {
        return (a + b - 1) / b;
    }

    private MemoryPlan() {}
}
