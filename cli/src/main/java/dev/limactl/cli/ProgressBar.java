package dev.limactl.cli;

import dev.limactl.train.TrainListener;
import dev.limactl.train.TrainRun;
import java.io.PrintWriter;
import java.nio.file.Path;

/** Draws training progress on stderr: a redrawn bar on a terminal, a line every 10% otherwise. */
final class ProgressBar implements TrainListener {
    private final PrintWriter err;
    private final boolean tty, quiet;
    private TrainRun.Plan plan;
    private long startStep, lastLinePct = -1;
    private final long t0 = System.nanoTime();

    ProgressBar(PrintWriter err, boolean quiet) {
        this.err = err;
        this.quiet = quiet;
        this.tty = System.console() != null;
    }

    @Override
    public void onStart(TrainRun.Plan p) {
        plan = p;
        startStep = p.startStep();
        if (quiet) return;
        err.printf("training %,d %son %d examples: %d epochs x %d steps (EOT token id %d)%s%n", p.numParams(),
                p.frozenParams() > 0 ? String.format("LoRA adapter parameters over %,d frozen ", p.frozenParams()) : "parameters ",
                p.examples(), p.epochs(), p.stepsPerEpoch(), p.eotId(), p.startStep() > 0 ? ", resuming after step " + p.startStep() : "");
        if (p.trimmedExamples() > 0) {
            err.printf("trimmed %d example(s) to the token limit (%,d tokens cut)%n", p.trimmedExamples(), p.trimmedTokens());
        }
    }

    @Override
    public void onStep(TrainRun.StepMetrics m) {
        if (quiet) return;
        long done = m.step() - startStep, left = plan.totalSteps() - m.step();
        double perStep = (System.nanoTime() - t0) / 1e9 / Math.max(1, done);
        long eta = Math.round(perStep * left);
        int pct = (int) (100 * m.step() / plan.totalSteps());
        String line = String.format("epoch %d/%d step %d/%d [%-20s] %3d%% loss %.4f lr %.2e %,.0f tok/s ETA %d:%02d",
                m.epoch(), plan.epochs(), m.stepInEpoch(), plan.stepsPerEpoch(), "#".repeat(pct / 5), pct, m.loss(), m.lr(),
                m.tokensPerSec(), eta / 60, eta % 60);
        if (tty) {
            err.print("\r" + line);
            err.flush();
        } else if (pct / 10 != lastLinePct / 10 || m.step() == plan.totalSteps()) {
            err.println(line);
            lastLinePct = pct;
        }
    }

    @Override
    public void onEpoch(int epoch, Path checkpoint, double devPerplexity) {
        if (quiet) return;
        if (tty) err.println();
        err.printf("epoch %d: %s%s%n", epoch, checkpoint == null ? "no checkpoint (checkpoint.keep)" : "checkpoint " + checkpoint,
                Double.isNaN(devPerplexity) ? "" : String.format(", dev perplexity %.2f", devPerplexity));
    }

    @Override
    public void onPruned(java.util.List<Path> checkpoints, String keep) {
        if (quiet) return;
        err.printf("pruned %s (checkpoint.keep: %s)%n", String.join(", ", checkpoints.stream().map(Path::toString).toList()), keep);
    }

    @Override
    public void onWarning(String message) {
        err.println("warning: " + message);
    }

    @Override
    public void onStopped(Path stateDir, long step) {
        if (tty) err.println();
        err.printf("stopped after step %d; state saved in %s%n", step, stateDir);
    }
}
