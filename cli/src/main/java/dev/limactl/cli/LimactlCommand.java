package dev.limactl.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "limactl", mixinStandardHelpOptions = true, versionProvider = VersionCommand.Provider.class,
        description = "LIMA (Less Is More for Alignment): fine-tune LLaMA on a small curated set, the paper's recipe.",
        subcommands = {DemoCommand.class, TrainCommand.class, CurateCommand.class, DataCommand.class, GenerateCommand.class,
                ChatCommand.class, ServeCommand.class, MergeCommand.class, EvalCommand.class, AnnotateCommand.class, ReportCommand.class, ExportCommand.class, SelectCommand.class, ExperimentCommand.class, TokenizeCommand.class, PerplexityCommand.class,
                PlanCommand.class, VersionCommand.class, DoctorCommand.class, CommandLine.HelpCommand.class},
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"0:ok", "1:failure not caused by the input", "2:invalid input (arguments, config, files)",
                "3:unexpected state (existing run, nothing to resume)", "4:internal error", "130:stopped by Ctrl-C (resumable)"})
public final class LimactlCommand implements Runnable {
    @Option(names = {"-v", "--verbose"}, scope = CommandLine.ScopeType.INHERIT, description = "More detail, stack traces on errors.")
    boolean verbose;

    @Option(names = {"-q", "--quiet"}, scope = CommandLine.ScopeType.INHERIT, description = "Only results and errors.")
    boolean quiet;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    static boolean verbose(CommandLine cmd) {
        CommandLine c = cmd;
        while (c.getParent() != null) c = c.getParent();
        return c.getCommand() instanceof LimactlCommand l && l.verbose;
    }

    static boolean quiet(CommandLine cmd) {
        CommandLine c = cmd;
        while (c.getParent() != null) c = c.getParent();
        return c.getCommand() instanceof LimactlCommand l && l.quiet;
    }
}
