package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;
import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;

/**
 * Picks the CUDA backend plugin that matches this machine among the builds the jar carries
 * ({@code liblima_cuda<major>.so}, one per CUDA toolkit major that {@code ci/build-cuda.sh} found).
 * A driver runs builds of its own CUDA major and older ones, so the candidates are the bundled
 * majors up to the driver's, newest first; the first whose CUDA runtime and cuBLASLt load is used.
 * {@code $LIMA_CUDA_PLUGIN} overrides the choice (liblima then loads that file).
 */
public final class CudaPlugins {
    /** CUDA majors a plugin can be built for, newest first. */
    static final List<Integer> MAJORS = List.of(13, 12);

    private static Selection selected;

    private CudaPlugins() {}

    /**
     * What was found and chosen: the driver's CUDA version (0 without a driver), the majors the jar
     * carries, the plugin file in use (null when none was chosen here) and a line saying why.
     */
    public record Selection(int driverVersion, List<Integer> bundled, String plugin, String note) {}

    /** Bundled majors the driver can run (at most its own major), newest first. */
    static List<Integer> candidates(Collection<Integer> bundled, int driverVersion) {
        int driverMajor = driverVersion / 1000;
        return bundled.stream().filter(m -> m <= driverMajor).sorted((a, b) -> b - a).toList();
    }

    /**
     * Chooses the plugin once per JVM, before the first CUDA model. Throws {@link LimaException}
     * listing each candidate's loader error when the driver could run a bundled build but none of
     * them loads (a missing CUDA runtime or cuBLASLt); without a driver or bundled builds it chooses
     * nothing and liblima's own search (and its error) applies.
     */
    public static synchronized Selection select() {
        if (selected != null) return selected;
        Lima.abiVersion();
        List<Integer> bundled = new ArrayList<>();
        List<String> files = new ArrayList<>();
        for (int major : MAJORS) {
            try {
                File f = LimaNative.bundledCudaPlugin(major);
                if (f != null) {
                    bundled.add(major);
                    files.add(f.getPath());
                }
            } catch (IOException e) {
                throw new LimaException(LimaStatus.IO, "cannot extract the bundled CUDA plugin for CUDA " + major + ": " + e);
            }
        }
        int[] driver = {0};
        boolean haveDriver = LimaNative.lima_cuda_driver_version(driver) == 0;
        String override = System.getenv("LIMA_CUDA_PLUGIN");
        if (override != null && !override.isEmpty()) {
            return selected = new Selection(driver[0], bundled, null, "LIMA_CUDA_PLUGIN=" + override + " chooses the plugin");
        }
        if (!haveDriver) {
            return selected = new Selection(0, bundled, null, LimaNative.lastError());
        }
        if (bundled.isEmpty()) {
            return selected = new Selection(driver[0], bundled, null, "this build carries no CUDA plugin (no CUDA toolkit when it was built)");
        }
        List<Integer> order = candidates(bundled, driver[0]);
        if (order.isEmpty()) {
            return selected = new Selection(driver[0], bundled, null, "the driver supports CUDA " + driver[0] / 1000 + "."
                    + driver[0] % 1000 / 10 + ", older than every bundled plugin (CUDA " + bundled + "): update the NVIDIA driver");
        }
        List<String> paths = order.stream().map(m -> files.get(bundled.indexOf(m))).toList();
        int chosen = LimaNative.cudaPluginSelect(paths, Native::check);
        return selected = new Selection(driver[0], bundled, paths.get(chosen),
                "CUDA " + order.get(chosen) + " build for a driver of CUDA " + driver[0] / 1000 + "." + driver[0] % 1000 / 10);
    }

    /**
     * Selects the plugin when {@code device} names a CUDA device. Without a driver (and no
     * {@code $LIMA_CUDA_PLUGIN}) that is refused here, saying so: liblima's own search would report a
     * missing plugin instead, though the jar carries one.
     */
    static void prepare(String device) {
        if (device == null || device.equals("cpu")) return;
        Selection s = select();
        String override = System.getenv("LIMA_CUDA_PLUGIN");
        if (s.driverVersion() == 0 && (override == null || override.isEmpty())) {
            throw new LimaException(LimaStatus.UNSUPPORTED, "device \"" + device + "\" needs an NVIDIA GPU and its driver, and this machine"
                    + " has no usable NVIDIA driver (" + s.note() + "); " + (s.bundled().isEmpty() ? "this build carries no CUDA plugin"
                    : "this build carries the CUDA plugin for CUDA " + s.bundled().stream().map(String::valueOf)
                            .collect(java.util.stream.Collectors.joining(" and "))) + ". Use the CPU (device cpu) here");
        }
    }
}
