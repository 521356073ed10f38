package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;

/** Library-wide facts and settings of the native engine. */
public final class Lima {
    /** The lima.h ABI this Java code was written against. */
    public static final int EXPECTED_ABI = 9;

    private Lima() {}

    /** Loads liblima (from the jar) and checks its ABI version. */
    public static int abiVersion() {
        int abi = LimaNative.lima_abi_version();
        if (abi != EXPECTED_ABI) {
            throw new LimaException(LimaStatus.INTERNAL,
                    "liblima ABI " + abi + " does not match the Java binding's " + EXPECTED_ABI + ": rebuild both");
        }
        return abi;
    }

    /**
     * liblima's version and the backends this process can use. The CUDA plugin is chosen first (as
     * before the first CUDA model), so the native string names the plugin that would run; when the
     * jar's choice found none, its reason (no driver, no bundled build) replaces liblima's.
     */
    public static String version() {
        abiVersion();
        CudaPlugins.Selection sel = CudaPlugins.select();
        String v = LimaNative.versionString();
        if (sel.plugin() != null || System.getenv("LIMA_CUDA_PLUGIN") != null) return v;
        return v.replaceFirst("cuda unavailable: [^;]*", java.util.regex.Matcher.quoteReplacement("cuda unavailable: " + sel.note()));
    }

    /** Threads of the CPU backend (OpenMP + BLAS); n <= 0 restores the default. */
    public static void setThreads(int n) {
        Native.check(LimaNative.lima_set_num_threads(n));
    }

    public static int threads() {
        return LimaNative.lima_get_num_threads();
    }

    /** A CUDA device as the CUDA backend plugin reports it. */
    public record Device(String name, long totalMemory, long freeMemory, int computeMajor, int computeMinor, int runtimeVersion,
                         int driverVersion) {}

    /** CUDA devices; throws LimaException saying which of plugin, driver or device is missing. */
    public static java.util.List<Device> cudaDevices() {
        CudaPlugins.select();
        return LimaNative.cudaDevices(Native::check).stream().map(r -> new Device((String) r[0], (long) r[1], (long) r[2],
                (int) r[3], (int) r[4], (int) r[5], (int) r[6])).toList();
    }

    /** Library versions the CUDA plugin sees (runtime, driver, cuBLASLt, NCCL); throws like {@link #cudaDevices()}. */
    public static String cudaVersions() {
        CudaPlugins.select();
        byte[] buf = new byte[512];
        Native.check(LimaNative.lima_cuda_versions(buf, buf.length));
        int n = 0;
        while (n < buf.length && buf[n] != 0) n++;
        return new String(buf, 0, n, java.nio.charset.StandardCharsets.UTF_8);
    }

    /** Residual-dropout rate of layer l of L for a top rate pMax (0 at the bottom, pMax at the top). */
    public static float residDropoutRate(float pMax, int layer, int layers) {
        return LimaNative.lima_resid_dropout_rate(pMax, layer, layers);
    }
}
