package dev.limactl.cli;

import dev.limactl.engine.Lima;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;

@Command(name = "version", description = "Print the versions of limactl, liblima and Java.")
public final class VersionCommand implements Callable<Integer> {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    static final class Provider implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[] {"limactl " + (v == null ? "0.1.0-dev" : v), Lima.version(),
                    "java " + System.getProperty("java.version")};
        }
    }

    @Override
    public Integer call() {
        for (String line : new Provider().getVersion()) spec.commandLine().getOut().println(line);
        return ExitCodes.OK;
    }
}
