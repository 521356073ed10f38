package dev.limactl.tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Prepares DJL's native tokenizer libraries before their first use. DJL picks a native build by
 * asking the CUDA runtime for GPUs (ai.djl.util.Platform); on a machine that has a CUDA runtime but
 * no NVIDIA driver (a build machine) that query fails and DJL logs a warning at every start, although
 * the tokenizers are CPU code either way. Without a driver there is no GPU to find, so DJL is told to
 * ask in a child process (its "ai.djl.util.cuda.fork" mode, whose failures are silent) instead of
 * loading the CUDA runtime into this JVM. A user's own setting of that property is kept.
 */
final class NativeTokenizers {
    private static boolean prepared;

    private NativeTokenizers() {}

    static synchronized void prepare() {
        if (prepared) return;
        prepared = true;
        boolean driver = Files.exists(Path.of("/proc/driver/nvidia/version"));
        if (!driver && System.getProperty("ai.djl.util.cuda.fork") == null) System.setProperty("ai.djl.util.cuda.fork", "true");
    }
}
