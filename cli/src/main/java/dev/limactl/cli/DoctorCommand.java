package dev.limactl.cli;

import dev.limactl.engine.Lima;
import java.io.PrintWriter;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;

@Command(name = "doctor", description = "Check the native library, its backends and devices.")
public final class DoctorCommand implements Callable<Integer> {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        out.println("java:      " + System.getProperty("java.version") + " (" + System.getProperty("os.arch") + ")");
        try {
            out.println("liblima:   " + Lima.version());
            out.println("abi:       " + Lima.abiVersion() + " (expected " + Lima.EXPECTED_ABI + ")");
            out.println("cpu:       backend ok, " + Lima.threads() + " threads (" + Runtime.getRuntime().availableProcessors()
                    + " cores)");
        } catch (Throwable e) {
            out.println("liblima:   FAILED to load: " + e);
            return ExitCodes.UNEXPECTED_STATE;
        }
        out.println("cuda:      not available in this build (the CUDA backend is not built yet)");
        return ExitCodes.OK;
    }
}
