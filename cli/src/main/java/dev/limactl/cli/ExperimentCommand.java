package dev.limactl.cli;

import dev.limactl.eval.Evaluation;
import dev.limactl.eval.Experiment;
import dev.limactl.eval.Judge;
import dev.limactl.eval.JudgeCache;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "experiment", mixinStandardHelpOptions = true,
        description = {"The Section 5 ablations end to end from a grid file: per variant, curate (its recipe) -> train (one",
                "shared config) -> K answers per test prompt -> Likert judge; then a table and chart of mean +- 95%% CI.",
                "Every stage is cached in --out and resumes: rerun the same command after an interruption."})
public final class ExperimentCommand implements Callable<Integer> {
    @Option(names = "--grid", required = true, description = "Grid file (YAML).") Path grid;

    @Option(names = "--out", required = true, description = "Output directory (one folder per variant).") Path out;

    @CommandLine.Mixin EvalCommand.JudgeConnection judgeConnection;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        boolean quiet = LimactlCommand.quiet(spec.commandLine());
        try (JudgeCache cache = new JudgeCache(this.out.resolve("judge-cache.jsonl"))) {
            Judge judge = new Judge(judgeConnection.config(), cache);
            List<Evaluation.Likert> results = Experiment.run(grid, this.out, judge, m -> { if (!quiet) err.println(m); });
            for (Evaluation.Likert l : results) {
                out.printf("%-20s Likert %s over %d scores (%d unparsable)%n", l.system(), EvalCommand.meanCi(l.meanCi()), l.meanCi().n(),
                        l.unparsable());
            }
            out.printf("report: %s (likert.md, .json, .png, .svg)%n", this.out);
        }
        return ExitCodes.OK;
    }
}
