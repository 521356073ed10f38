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
        out.println("ranks:     " + ranks());
        try {
            var sel = dev.limactl.engine.CudaPlugins.select();
            out.println("plugin:    bundled CUDA builds " + sel.bundled() + "; " + sel.note()
                    + (sel.plugin() != null ? " (" + sel.plugin() + ")" : ""));
            String override = System.getenv("LIMA_CUDA_PLUGIN");
            if (sel.driverVersion() == 0 && (override == null || override.isEmpty())) {  // no plugin search: it would blame the plugin
                out.println("cuda:      unavailable: no usable NVIDIA driver on this machine (the CPU serves every command)");
                return ExitCodes.OK;
            }
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

    /** Whether data-parallel ranks can run here: the Gloo plugin joins a one-rank group; redis-server for a tcp:// rendezvous. */
    static String ranks() {
        String gloo;
        java.nio.file.Path dir = null;
        try {
            dir = java.nio.file.Files.createTempDirectory("limactl-doctor");
            try (var c = dev.limactl.engine.Communicator.join("gloo", 0, 1, "file:" + dir, java.time.Duration.ofSeconds(10))) {
                gloo = "gloo ok (CPU ranks: --nproc-per-node, torchrun, Slurm, Open MPI)";
            }
        } catch (dev.limactl.engine.LimaException | java.io.IOException e) {
            gloo = "gloo unavailable: " + e.getMessage();
        } finally {
            if (dir != null) {
                try (var files = java.nio.file.Files.walk(dir)) {
                    files.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
                } catch (java.io.IOException ignored) {
                    // a temporary directory
                }
            }
        }
        boolean redis = java.util.Arrays.stream(System.getenv().getOrDefault("PATH", "").split(java.io.File.pathSeparator))
                .anyMatch(d -> !d.isEmpty() && java.nio.file.Files.isExecutable(java.nio.file.Path.of(d, "redis-server")));
        return gloo + "; " + (redis ? "redis-server found (rank 0 can host a MASTER_ADDR:MASTER_PORT rendezvous)"
                : "no redis-server (a MASTER_ADDR:MASTER_PORT rendezvous needs it on rank 0's host; file:DIR works without)");
    }
}
