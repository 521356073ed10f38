package dev.limactl.cli;

import dev.limactl.config.ConfigLoader;
import dev.limactl.data.Example;
import dev.limactl.data.ExampleFiles;
import dev.limactl.data.Turn;
import dev.limactl.engine.Sampling;
import dev.limactl.generate.Answerer;
import dev.limactl.generate.ModelDir;
import dev.limactl.train.TrainRun;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "demo", mixinStandardHelpOptions = true,
        description = {"Train a small random-initialised LLaMA on the shipped sample of real examples",
                "(StackExchange + Super-Natural Instructions), with the LIMA chat format, on the CPU. No download."})
public final class DemoCommand implements Callable<Integer> {
    @Option(names = "--run", description = "Run directory (default: limactl-demo/run-<time>).")
    Path run;

    @Option(names = "--set", description = "Override a key of the demo preset, e.g. --set training.epochs=3.")
    List<String> sets = new java.util.ArrayList<>();

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        Path dir = run != null ? run
                : Path.of("limactl-demo", "run-" + LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
        long t0 = System.nanoTime();
        TrainRun tr = TrainRun.create(ConfigLoader.preset("demo").set(sets), dir);
        // Ctrl-C stops after the current step and saves a resumable state, as limactl train does
        TrainRun.Result r = TrainCommand.runGuarded(tr, new ProgressBar(err, LimactlCommand.quiet(spec.commandLine())), err,
                "stopped; resume with: limactl train --resume --run " + dir);
        if (r == null) return ExitCodes.INTERRUPTED;
        double secs = (System.nanoTime() - t0) / 1e9;
        out.println();
        out.println("limactl demo: summary");
        for (int e = 0; e < r.epochLosses().size(); e++) {
            Path ck = dir.resolve("checkpoints").resolve(String.format("epoch-%02d", e + 1));
            out.printf("  epoch %2d  mean train loss %.4f  checkpoint %s%n", e + 1, r.epochLosses().get(e),
                    java.nio.file.Files.exists(ck) ? ck : "(not kept: checkpoint.keep)");
        }
        out.printf("  %d optimiser steps in %.1f s; run directory %s (metrics.jsonl, config.yaml)%n", r.steps(), secs, dir);
        answerOneDevPrompt(r.checkpoints().get(r.checkpoints().size() - 1), dir, out);
        return ExitCodes.OK;
    }

    /** The last checkpoint answers the first dev prompt with LIMA's sampling. */
    private static void answerOneDevPrompt(Path checkpoint, Path run, PrintWriter out) {
        List<Example> devSet = ExampleFiles.read(run.resolve("embedded/demo/dev.jsonl"), "dev");
        List<Turn> prompt = List.of(devSet.get(0).turns().get(0));
        long t0 = System.nanoTime();
        try (ModelDir md = new ModelDir(checkpoint, null, 1024)) {
            Answerer.Answer a = md.answerer.generate(new Answerer.Request(prompt, Sampling.lima(), 120, List.of(), 42));
            double secs = (System.nanoTime() - t0) / 1e9;
            out.printf("%nprompt (dev): %s%nanswer (%s, LIMA sampling, %d tokens, %.1f tokens/s):%n%s%n",
                    prompt.get(0).text(), checkpoint.getFileName(), a.generatedTokens(), a.generatedTokens() / secs, a.text());
        }
    }
}
