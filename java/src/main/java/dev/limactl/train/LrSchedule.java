package dev.limactl.train;

/** LIMA's schedule: no warm-up, linear from lr at the first step to finalLr at the last. */
public record LrSchedule(double lr, double finalLr, long totalSteps) {
    public double at(long step) {
        if (totalSteps <= 1) return lr;
        return lr + (finalLr - lr) * (double) Math.min(step, totalSteps - 1) / (double) (totalSteps - 1);
    }
}
