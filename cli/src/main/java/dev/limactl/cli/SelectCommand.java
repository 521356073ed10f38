package dev.limactl.cli;

import dev.limactl.data.ExampleFiles;
import dev.limactl.engine.Sampling;
import dev.limactl.eval.CheckpointSelection;
import dev.limactl.eval.Judge;
import dev.limactl.eval.JudgeCache;
import dev.limactl.eval.Templates;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "select", mixinStandardHelpOptions = true,
        description = {"Choose the checkpoint as LIMA did: each epoch in --epochs answers the dev set, a judge scores the",
                "answers (Likert 1-6), the best judged wins. Also reports dev perplexity (which does not track quality).",
                "Writes RUN/select/select.{json,md,png,svg}; --apply writes RUN/selected.json and RUN/checkpoints/selected."})
public final class SelectCommand implements Callable<Integer> {
    @Option(names = "--run", required = true, description = "Run directory of limactl train.") Path run;

    @Option(names = "--epochs", defaultValue = "5-10", description = "Epoch range (default ${DEFAULT-VALUE}, the paper's).") String epochs;

    @Option(names = "--dev", required = true, description = "Dev examples (.arrow or .jsonl).") Path dev;

    @Option(names = "--samples", defaultValue = "1", description = "Answers per dev prompt (default ${DEFAULT-VALUE}).") int samples;

    @Option(names = "--max-new-tokens", defaultValue = "2048", description = "Default ${DEFAULT-VALUE}.") int maxNewTokens;

    @Option(names = "--apply", description = "Mark the chosen checkpoint in the run.") boolean apply;

    @CommandLine.Mixin EvalCommand.JudgeConnection judgeConnection;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        String[] range = epochs.split("-");
        int from, to;
        try {
            from = Integer.parseInt(range[0].trim());
            to = range.length > 1 ? Integer.parseInt(range[1].trim()) : from;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--epochs must look like 5-10, got " + epochs);
        }
        if (from < 1 || to < from) throw new IllegalArgumentException("--epochs must look like 5-10, got " + epochs);
        PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        boolean quiet = LimactlCommand.quiet(spec.commandLine());
        Path dir = run.resolve("select");
        try (JudgeCache cache = new JudgeCache(dir.resolve("judge-cache.jsonl"))) {
            Judge judge = new Judge(judgeConnection.config(), cache);
            List<CheckpointSelection.Row> rows = CheckpointSelection.run(run, from, to, ExampleFiles.read(dev, "dev"), judge,
                    Templates.load("likert", null), Sampling.lima(), samples, maxNewTokens, m -> { if (!quiet) err.println(m); });
            CheckpointSelection.Row best = CheckpointSelection.best(rows);
            CheckpointSelection.report(dir, rows, best, judge.model());
            for (CheckpointSelection.Row r : rows) {
                out.printf("epoch %2d  Likert %s  dev perplexity %.2f%s%n", r.epoch(), EvalCommand.meanCi(r.likert()), r.devPerplexity(),
                        r == best ? "  <- chosen" : "");
            }
            if (apply) CheckpointSelection.apply(run, best);
            out.printf("chosen: epoch %d (%s) by %s%s; report %s%n", best.epoch(), best.checkpoint(), CheckpointSelection.basis(rows),
                    apply ? ", marked in the run" : "", dir.resolve("select.md"));
        }
        return ExitCodes.OK;
    }
}
