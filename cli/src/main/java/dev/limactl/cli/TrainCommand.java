package dev.limactl.cli;

import dev.limactl.config.ConfigLoader;
import dev.limactl.train.Placement;
import dev.limactl.train.TrainListener;
import dev.limactl.train.TrainRun;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "train", mixinStandardHelpOptions = true,
        description = {"Fine-tune with the LIMA recipe. Settings come from a preset, a config file and --set overrides.",
                "Ctrl-C stops after the current step and saves a state that --resume continues exactly."})
public final class TrainCommand implements Callable<Integer> {
    @Option(names = "--run", required = true, description = "Run directory (config, metrics, checkpoints, state).")
    Path run;

    @Option(names = "--resume", description = "Continue the run in --run from its saved state, with its own config.")
    boolean resume;

    @Option(names = "--preset", description = "lima-65b, lima-7b or demo (default: the paper's values only).")
    String preset;

    @Option(names = {"-c", "--config"}, description = "YAML or JSON config file layered over the preset.")
    Path config;

    @Option(names = "--set", description = "Override one key, e.g. --set optimizer.lr=2e-5 (repeatable).")
    List<String> sets = new ArrayList<>();

    @Option(names = "--model", description = "Pretrained Hugging Face LLaMA directory (model.path).")
    String model;

    @Option(names = "--init", description = "pretrained (default) or random (demos and tests; shape from model.architecture).")
    String init;

    @Option(names = "--tokenizer", description = "tokenizer.model / tokenizer.json (default: the model directory's).")
    String tokenizer;

    @Option(names = "--data", description = "Training examples, .arrow or .jsonl (data.train).")
    String data;

    @Option(names = "--dev", description = "Dev examples for per-epoch perplexity (data.dev).")
    String dev;

    @Option(names = "--epochs", description = "training.epochs")
    Integer epochs;

    @Option(names = "--nproc-per-node", description = "Start this many local ranks of a data-parallel run (CPU, Gloo); under"
            + " torchrun, Slurm or Open MPI the launcher's variables place each process instead.")
    Integer nprocPerNode;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter err = spec.commandLine().getErr();
        if (resume && (preset != null || config != null || !sets.isEmpty() || model != null || data != null)) {
            throw new IllegalArgumentException("--resume continues with the run's own config.yaml; drop the config options");
        }
        if (nprocPerNode != null) {
            // the config and the run directory are checked once, here, before any rank starts
            (resume ? TrainRun.resume(run, Placement.SINGLE) : TrainRun.create(loader(), run, Placement.SINGLE)).checkRanks(nprocPerNode);
            return LocalRanks.launch(nprocPerNode, run, spec.root().commandLine().getParseResult().originalArgs(), err);
        }
        TrainRun tr = resume ? TrainRun.resume(run) : TrainRun.create(loader(), run);
        return execute(tr, err, LimactlCommand.quiet(spec.commandLine()), spec.commandLine().getOut());
    }

    private ConfigLoader loader() {
        List<String> all = new ArrayList<>();
        if (model != null) all.add("model.path=" + model);
        if (init != null) all.add("model.init=" + init);
        if (tokenizer != null) all.add("model.tokenizer=" + tokenizer);
        if (data != null) all.add("data.train=" + data);
        if (dev != null) all.add("data.dev=" + dev);
        if (epochs != null) all.add("training.epochs=" + epochs);
        all.addAll(sets);
        ConfigLoader loader = ConfigLoader.preset(preset);
        if (config != null) loader.file(config);
        return loader.set(all);
    }

    /** Runs the training and reports its outcome the way limactl train does; the exit code. */
    static int execute(TrainRun tr, PrintWriter err, boolean quiet, PrintWriter out) {
        boolean first = Placement.fromEnvironment(System.getenv()).rank() == 0;  // one rank speaks for a job
        TrainRun.Result r = runGuarded(tr, new ProgressBar(err, quiet), err,
                first ? "resume with: limactl train --resume --run " + tr.runDir() : null);
        if (r == null) return ExitCodes.INTERRUPTED;
        if (first) out.printf("done: %d steps; checkpoints in %s%n", r.steps(), tr.runDir().resolve("checkpoints"));
        out.flush();
        return ExitCodes.OK;
    }

    /**
     * Runs with a Ctrl-C hook that stops after the current step, and holds the JVM until the state is
     * saved and the outcome (or an error) has been reported. Returns the result, or null when it was
     * stopped with a resumable state. A Ctrl-C that arrives when the last step is done (during the
     * final save) lets the run complete, and the process then exits 0: nothing is left to resume.
     * {@code stoppedHint} (when not null) is printed for a stopped run before the Ctrl-C hook lets
     * the JVM go, so the line is never lost to the exit.
     */
    static TrainRun.Result runGuarded(TrainRun tr, TrainListener listener, PrintWriter err, String stoppedHint) {
        java.util.concurrent.CountDownLatch reported = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.atomic.AtomicBoolean completed = new java.util.concurrent.atomic.AtomicBoolean();
        Thread hook = new Thread(() -> {
            tr.requestStop();
            try {
                reported.await(30, TimeUnit.MINUTES);
            } catch (InterruptedException ignored) {
                Thread.currentThread().interrupt();
            }
            if (completed.get()) {
                err.flush();
                Runtime.getRuntime().halt(ExitCodes.OK);  // the run finished: a successful exit, not 130
            }
        }, "limactl-ctrl-c");
        Runtime.getRuntime().addShutdownHook(hook);
        try {
            TrainRun.Result r = tr.run(listener);
            completed.set(r.completed());
            if (!r.completed() && stoppedHint != null) err.println(stoppedHint);
            return r.completed() ? r : null;
        } catch (RuntimeException e) {
            // Reported here, before the Ctrl-C hook lets the JVM go; Main must not print it again.
            err.println("limactl: " + (Main.exitCode(e) == ExitCodes.INTERNAL ? "internal error: " + e : e.getMessage()));
            err.flush();
            throw new Main.Reported(e);
        } finally {
            err.flush();
            reported.countDown();
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException shuttingDown) {
                // Ctrl-C arrived: the hook lets the JVM go now that the outcome is reported
            }
        }
    }
}
