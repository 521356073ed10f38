package dev.limactl.train;

import java.nio.file.Path;

/** Progress callbacks of a {@link TrainRun} (the CLI draws its progress bar from these). */
public interface TrainListener {
    default void onStart(TrainRun.Plan plan) {}

    default void onStep(TrainRun.StepMetrics m) {}

    default void onEpoch(int epoch, Path checkpoint, double devPerplexity) {}

    default void onWarning(String message) {}

    default void onStopped(Path stateDir, long step) {}
}
