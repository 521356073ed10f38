package dev.limactl.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.engine.ModelConfig;
import dev.limactl.plan.MemoryPlan;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "plan", mixinStandardHelpOptions = true,
        description = {"Per-GPU memory of data-parallel training at each ZeRO stage, and the stage to use.",
                "Weights bf16 + fp32 master, fp32 gradients, AdamW moments fp32, activations of one micro-batch."})
public final class PlanCommand implements Callable<Integer> {
    @Option(names = {"-m", "--model"}, required = true, description = "7b, 13b, 33b, 65b (LLaMA), a config.json or a checkpoint directory.")
    String model;

    @Option(names = "--gpus", defaultValue = "1", description = "Data-parallel ranks (GPUs; default ${DEFAULT-VALUE}).")
    int gpus;

    @Option(names = "--gpu-memory", defaultValue = "80GB", description = "Memory of one GPU, e.g. 80GB or 141GB (default ${DEFAULT-VALUE}).")
    String gpuMemory;

    @Option(names = "--zero", description = "Show one ZeRO stage only (0-3).")
    Integer zero;

    @Option(names = "--recompute", description = "Activation recomputation (keep each layer's input only).")
    boolean recompute;

    @Option(names = "--tokens", defaultValue = "8192", description = "Tokens per micro-batch (default ${DEFAULT-VALUE}).")
    long tokens;

    @Option(names = "--modes", description = "One GPU: device and host memory of full fine-tuning, optimizer offload, LoRA and QLoRA.")
    boolean modes;

    @Option(names = "--lora-r", defaultValue = "16", description = "LoRA rank for --modes (default ${DEFAULT-VALUE}).")
    int loraR;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        if (zero != null && (zero < 0 || zero > 3)) throw new IllegalArgumentException("--zero must be 0, 1, 2 or 3, got " + zero);
        if (tokens < 1 || tokens > 1_000_000_000L) throw new IllegalArgumentException("--tokens must be in [1, 1e9], got " + tokens);
        long gpuBytes = bytes(gpuMemory);
        ModelConfig c = config(model);
        if (modes) return modes(c, gpuBytes, out);
        List<MemoryPlan.Stage> stages = MemoryPlan.stages(c, gpus, tokens, recompute);
        out.printf(Locale.ROOT, "%s: %,d parameters; %d GPU(s) of %s; micro-batch %,d tokens%s%n", model, MemoryPlan.parameters(c), gpus,
                gib(gpuBytes), tokens, recompute ? ", recomputation" : "");
        out.printf("  %-6s %10s %10s %10s %12s %10s %10s  %s%n", "stage", "weights", "gradients", "optimiser", "activations", "comm", "total", "");
        for (MemoryPlan.Stage s : stages) {
            if (zero != null && s.stage() != zero) continue;
            out.printf("  ZeRO-%d %10s %10s %10s %12s %10s %10s  %s%n", s.stage(), gib(s.weights()), gib(s.gradients()), gib(s.optimizer()),
                    gib(s.activations()), gib(s.communication()), gib(s.total()), s.total() <= gpuBytes ? "fits" : "does not fit");
        }
        int choice = zero != null ? (stages.get(zero).total() <= gpuBytes ? zero : -1) : MemoryPlan.choose(stages, gpuBytes);
        if (choice < 0) {
            out.println("nothing fits: use more GPUs, --recompute, fewer tokens per micro-batch, or adapters (LoRA/QLoRA)");
            return ExitCodes.GENERIC;
        }
        out.printf("choice: ZeRO-%d (%s of %s per GPU)%n", choice, gib(stages.get(choice).total()), gib(gpuBytes));
        return ExitCodes.OK;
    }

    private int modes(ModelConfig c, long gpuBytes, PrintWriter out) {
        if (loraR < 1 || loraR > 65536) throw new IllegalArgumentException("--lora-r must be in [1, 65536], got " + loraR);
        out.printf(Locale.ROOT, "%s: %,d parameters; one GPU of %s; micro-batch %,d tokens%s; LoRA rank %d%n", model,
                MemoryPlan.parameters(c), gib(gpuBytes), tokens, recompute ? ", recomputation" : "", loraR);
        out.printf("  %-8s %12s %12s %16s  %s%n", "mode", "device", "host", "trained", "");
        MemoryPlan.Single first = null;
        for (MemoryPlan.Single s : MemoryPlan.singleGpu(c, tokens, recompute, loraR)) {
            boolean fits = s.device() <= gpuBytes;
            if (fits && first == null) first = s;
            out.printf(Locale.ROOT, "  %-8s %12s %12s %,16d  %s%n", s.mode().name().toLowerCase(Locale.ROOT), gib(s.device()), gib(s.host()),
                    s.trainable(), fits ? "fits" : "does not fit");
        }
        if (first == null) {
            out.println("nothing fits one GPU of " + gib(gpuBytes) + ": use several GPUs (limactl plan --gpus N), fewer tokens per micro-batch");
            return ExitCodes.GENERIC;
        }
        out.println("choice: " + first.mode().name().toLowerCase(Locale.ROOT) + " (the first that fits, in the order above"
                + (first.host() > 0 ? "; it needs " + gib(first.host()) + " of host memory" : "") + ")");
        return ExitCodes.OK;
    }

    static long bytes(String s) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("(?i)\\s*([0-9]+(?:\\.[0-9]+)?)\\s*(GB|GIB|G|MB|MIB|M)?\\s*").matcher(s);
        if (!m.matches()) throw new IllegalArgumentException("--gpu-memory \"" + s + "\": expected a size such as 80GB");
        double v = Double.parseDouble(m.group(1));
        String unit = m.group(2) == null ? "GB" : m.group(2).toUpperCase(Locale.ROOT);
        double mult = unit.startsWith("M") ? 1L << 20 : 1L << 30;  // GPU memory is quoted in GiB (80GB = 80 GiB)
        if (!(v > 0) || v * mult > 1e15) throw new IllegalArgumentException("--gpu-memory \"" + s + "\" is out of range");
        return (long) (v * mult);
    }

    static String gib(long b) {
        return String.format(Locale.ROOT, "%.1f GiB", b / 1073741824.0);
    }

    /** A named LLaMA size, or the fields of a Hugging Face config.json (or a directory holding one). */
    static ModelConfig config(String m) {
        if (m.matches("(?i)\\d+b")) return MemoryPlan.llama(m);
        Path p = Path.of(m);
        if (Files.isDirectory(p)) p = p.resolve("config.json");
        if (!Files.isRegularFile(p)) throw new IllegalArgumentException("--model " + m + ": not 7b/13b/33b/65b, and " + p + " does not exist");
        try {
            JsonNode j = new ObjectMapper().readTree(p.toFile());
            int heads = need(j, "num_attention_heads", p);
            return ModelConfig.llama(need(j, "vocab_size", p), need(j, "hidden_size", p), need(j, "intermediate_size", p),
                    need(j, "num_hidden_layers", p), heads, j.path("num_key_value_heads").asInt(heads), j.path("max_position_embeddings").asInt(2048));
        } catch (IOException e) {
            throw new IllegalArgumentException(p + " is not readable JSON: " + dev.limactl.data.DataFormatException.reason(e));
        }
    }

    private static int need(JsonNode j, String key, Path p) {
        JsonNode v = j.get(key);
        if (v == null || !v.canConvertToInt() || v.asInt() < 1) throw new IllegalArgumentException(p + ": \"" + key + "\" must be a positive integer");
        return v.asInt();
    }
}
