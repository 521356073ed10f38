package dev.limactl.cli;

import dev.limactl.config.ConfigException;
import dev.limactl.data.DataFormatException;
import dev.limactl.engine.LimaException;
import dev.limactl.tokenizer.TokenizerException;
import dev.limactl.train.RunStateException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import picocli.CommandLine;

/** Entry point of {@code limactl}. The only place that calls System.exit. */
public final class Main {
    private Main() {}

    public static void main(String[] args) {
        System.exit(run(args, new PrintWriter(System.out, true), new PrintWriter(System.err, true)));
    }

    /** An error a command has already printed; it only carries the cause's exit code. */
    static final class Reported extends RuntimeException {
        Reported(RuntimeException cause) {
            super(cause.getMessage(), cause);
        }
    }

    /** Runs limactl in-process with the given streams and returns its exit code. */
    public static int run(String[] args, PrintWriter out, PrintWriter err) {
        CommandLine cl = new CommandLine(new LimactlCommand());
        cl.setOut(out);
        cl.setErr(err);
        cl.setExitCodeExceptionMapper(Main::exitCode);
        cl.setExecutionExceptionHandler((e, cmd, parsed) -> {
            int code = exitCode(e);
            Throwable shown = e instanceof Reported ? e.getCause() : e;
            if (!(e instanceof Reported)) err.println("limactl: " + (code == ExitCodes.INTERNAL ? "internal error: " + e : e.getMessage()));
            if (code == ExitCodes.INTERNAL || LimactlCommand.verbose(cmd)) shown.printStackTrace(err);
            return code;
        });
        cl.setParameterExceptionHandler((e, a) -> {
            err.println("limactl: " + e.getMessage());
            e.getCommandLine().usage(err);
            return ExitCodes.INVALID_INPUT;
        });
        return cl.execute(args);
    }

    static int exitCode(Throwable e) {
        if (e instanceof Reported) return exitCode(e.getCause());
        if (e instanceof LimaException l) return ExitCodes.of(l.status());
        if (e instanceof ConfigException || e instanceof DataFormatException || e instanceof TokenizerException
                || e instanceof IllegalArgumentException || e instanceof CommandLine.ParameterException) {
            return ExitCodes.INVALID_INPUT;
        }
        if (e instanceof RunStateException) return ExitCodes.UNEXPECTED_STATE;
        if (e instanceof UncheckedIOException || e instanceof dev.limactl.eval.JudgeException) return ExitCodes.GENERIC;
        return ExitCodes.INTERNAL;
    }
}
