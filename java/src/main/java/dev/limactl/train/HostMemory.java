package dev.limactl.train;

import dev.limactl.engine.LimaException;
import dev.limactl.engine.LimaStatus;
import dev.limactl.engine.Model;
import dev.limactl.engine.Trainer;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;

/**
 * The host-memory check of a CPU training start: what the trainer has yet to allocate (its gradient
 * and AdamW shards, activations, ZeRO-3's gathered unit; the model is already loaded) against what
 * the host has available for this rank (MemAvailable shared by the ranks on this host). A plan that
 * cannot fit is refused with the figures before the first step, instead of the kernel ending the
 * process half-way through an epoch.
 */
final class HostMemory {
    private HostMemory() {}

    static void check(Trainer.MemoryPlan plan, Model model, Placement place, int zeroStage, Map<String, String> env) {
        check(plan, model.numParams(), place, zeroStage, env, available(Path.of("/proc/meminfo")));
    }

    /** The check against {@code available} bytes on this host (<= 0: unknown, nothing is checked). */
    static void check(Trainer.MemoryPlan plan, long p, Placement place, int zeroStage, Map<String, String> env, long available) {
        if (available <= 0) return;  // not Linux, or unreadable: nothing to compare with
        int local = ranksOnThisHost(place, env);
        long share = available / local, need = plan.optimizer() + plan.activations() + plan.workspace();
        if (need <= share) return;
        StringBuilder m = new StringBuilder(String.format(Locale.ROOT,
                "training needs %.2f GiB more host memory per rank (gradients and optimiser state %.2f GiB, activations %.2f GiB,"
                        + " gathered weights %.2f GiB) but %.2f GiB is available%s; the model's %,d weights take %.2f GiB already",
                g(need), g(plan.optimizer()), g(plan.activations()), g(plan.workspace()), g(share),
                local > 1 ? String.format(Locale.ROOT, " (%.2f GiB shared by %d ranks on this host)", g(available), local) : "",
                p, g(plan.weights())));
        if (place.world() > 1 && zeroStage < 3) {
            m.append("; a higher distributed.zero_stage (up to 3) shards more of it over the ranks");
        } else if (place.world() == 1) {
            m.append("; lower training.micro_batch_tokens, or train on several ranks (limactl train --nproc-per-node N,"
                    + " distributed.zero_stage 3) or hosts");
        }
        throw new LimaException(LimaStatus.OUT_OF_MEMORY, m.toString());
    }

    /** Ranks of this job on this host: LOCAL_WORLD_SIZE (torchrun), OMPI_COMM_WORLD_LOCAL_SIZE, SLURM_NTASKS_PER_NODE, else 1. */
    static int ranksOnThisHost(Placement place, Map<String, String> env) {
        for (String k : new String[] {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"}) {
            String v = env.get(k);
            if (v == null) continue;
            try {
                int n = Integer.parseInt(v.trim().replaceAll("\\(.*", ""));  // Slurm may write "4(x2)"
                if (n >= 1) return Math.min(n, Math.max(1, place.world()));
            } catch (NumberFormatException ignored) {
                // not a count: the next variable, or 1
            }
        }
        return 1;
    }

    /** MemAvailable of a /proc/meminfo file in bytes, or -1. */
    static long available(Path meminfo) {
        try {
            for (String line : Files.readAllLines(meminfo)) {
                if (line.startsWith("MemAvailable:")) return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        } catch (IOException | NumberFormatException | SecurityException e) {
            return -1;
        }
        return -1;
    }

    private static double g(long b) {
        return b / 1073741824.0;
    }
}
