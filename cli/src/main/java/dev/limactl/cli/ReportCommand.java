package dev.limactl.cli;

import dev.limactl.eval.RunReport;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "report", mixinStandardHelpOptions = true,
        description = {"Write one HTML page about a run to open in a browser: loss, learning rate, gradient norm, tokens/s and dev",
                "perplexity charts, the checkpoints, and the selection and evaluation reports found in the run (works while it trains)."})
public final class ReportCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "RUN", description = "The run directory.") Path run;

    @Option(names = "--out", description = "The page to write (default RUN/report.html).") Path out;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        RunReport.Summary s = RunReport.write(run, out != null ? out : run.resolve("report.html"));
        spec.commandLine().getOut().printf("wrote %s: %d steps; %s%n", s.file(), s.steps(), String.join(", ", s.sections()));
        return ExitCodes.OK;
    }
}
