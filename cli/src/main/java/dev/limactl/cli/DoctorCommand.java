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
        try {
            var sel = dev.limactl.engine.CudaPlugins.select();
            out.println("plugin:    bundled CUDA builds " + sel.bundled() + "; " + sel.note()
                    + (sel.plugin() != null ? " (" + sel.plugin() + ")" : ""));
            var devices = Lima.cudaDevices();
            out.println("cuda:      " + devices.size() + " device(s), " + Lima.cudaVersions()
                    + " (training.device=cuda; generate, chat and serve: --device cuda)");
            for (int i = 0; i < devices.size(); i++) {
                var d = devices.get(i);
                out.printf("  cuda:%d   %s, compute %d.%d, %.1f GiB (%.1f GiB free), CUDA runtime %d.%d, driver %d.%d%n", i, d.name(),
                        d.computeMajor(), d.computeMinor(), d.totalMemory() / 1073741824.0, d.freeMemory() / 1073741824.0,
                        d.runtimeVersion() / 1000, d.runtimeVersion() % 1000 / 10, d.driverVersion() / 1000, d.driverVersion() % 1000 / 10);
            }
        } catch (dev.limactl.engine.LimaException e) {
            out.println("cuda:      unavailable: " + e.getMessage().replace("\n", "\n           "));
        }
        return ExitCodes.OK;
    }
}
