package dev.limactl.train;

/**
 * The learning rate of each optimiser step (0-based). LIMA's schedule is {@code linear} with no warm-up:
 * from lr at the first step to finalLr at the last. The others are not LIMA's, for other recipes:
 * {@code cosine} (half a cosine from lr down to finalLr; finalLr 0 is Hugging Face's cosine) and
 * {@code constant}; a warm-up of W steps rises linearly as Hugging Face's does (lr * step / W, so the
 * first step has lr 0) and the decay then runs over the remaining steps.
 */
public record LrSchedule(double lr, double finalLr, long totalSteps, String type, long warmupSteps) {
    public static final java.util.List<String> TYPES = dev.limactl.config.LimaConfig.Optimizer.SCHEDULES;

    /** LIMA's: linear, no warm-up. */
    public LrSchedule(double lr, double finalLr, long totalSteps) {
        this(lr, finalLr, totalSteps, "linear", 0);
    }

    public LrSchedule {
        if (!TYPES.contains(type)) throw new IllegalArgumentException("schedule must be one of " + TYPES + ", got " + type);
        if (warmupSteps < 0) throw new IllegalArgumentException("warm-up steps must be >= 0, got " + warmupSteps);
    }

    public double at(long step) {
        if (warmupSteps > 0 && step < warmupSteps) return lr * (double) step / (double) warmupSteps;
        if (type.equals("constant")) return lr;
        long span = totalSteps - 1 - warmupSteps;  // the decay runs from step W (lr) to the last step (finalLr)
        if (span <= 0) return lr;
        double p = (double) Math.min(step - warmupSteps, span) / (double) span;
        if (type.equals("cosine")) return finalLr + (lr - finalLr) * 0.5 * (1 + Math.cos(Math.PI * p));
        return lr + (finalLr - lr) * p;
    }

    /**
     * The warm-up of a run of {@code totalSteps}: {@code steps} if given, else {@code ratio} of the run
     * (rounded up, as Hugging Face's warmup_ratio); it must leave at least one step after it.
     */
    public static long warmup(long steps, double ratio, long totalSteps) {
        long w = steps > 0 ? steps : (long) Math.ceil(ratio * totalSteps);
        if (w > 0 && w >= totalSteps) {
            throw new dev.limactl.config.ConfigException("config key \"optimizer.warmup_steps\" (or warmup_ratio) gives a warm-up of " + w
                    + " steps, but the run has " + totalSteps + " steps: it must leave at least one");
        }
        return w;
    }
}
