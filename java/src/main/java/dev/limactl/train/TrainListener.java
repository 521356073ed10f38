package dev.limactl.train;

import java.nio.file.Path;
import java.util.List;

/** Progress callbacks of a {@link TrainRun} (the CLI draws its progress bar from these). */
public interface TrainListener {
    default void onStart(TrainRun.Plan plan) {}

    default void onStep(TrainRun.StepMetrics m) {}

    default void onEpoch(int epoch, Path checkpoint, double devPerplexity) {}

    default void onWarning(String message) {}

    /** Epoch checkpoints deleted because {@code checkpoint.keep} (the rule, as written) does not keep them. */
    default void onPruned(List<Path> checkpoints, String keep) {}

    default void onStopped(Path stateDir, long step) {}
}
