package dev.limactl.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

class CudaPluginsTest {
    @Test
    void theDriverRunsItsOwnMajorAndOlderBuildsNewestFirst() {
        assertEquals(List.of(13, 12), CudaPlugins.candidates(List.of(12, 13), 13000));
        assertEquals(List.of(13, 12), CudaPlugins.candidates(List.of(13, 12), 13020));
        assertEquals(List.of(12), CudaPlugins.candidates(List.of(13, 12), 12080));
        assertEquals(List.of(), CudaPlugins.candidates(List.of(13), 12080));
        assertEquals(List.of(), CudaPlugins.candidates(List.of(), 13000));
    }

    /** The CUDA major of the nvcc on PATH, or -1 without one. */
    private static int nvccMajor() {
        try {
            Process p = new ProcessBuilder("nvcc", "--version").redirectErrorStream(true).start();
            String out;
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream()))) {
                out = String.join("\n", r.lines().toList());
            }
            if (p.waitFor() != 0) return -1;
            Matcher m = Pattern.compile("release (\\d+)\\.").matcher(out);
            return m.find() ? Integer.parseInt(m.group(1)) : -1;
        } catch (Exception e) {
            return -1;
        }
    }

    @Test
    void theJarCarriesThePluginOfTheBuildMachinesToolkitAndChoosesByDriver() {
        CudaPlugins.Selection s = CudaPlugins.select();
        assertNotNull(s.note());
        int major = nvccMajor();
        if (major > 0 && !Boolean.getBoolean("lima.cuda.skip")) {
            assertTrue(s.bundled().contains(major), "nvcc " + major + " was found at build time, bundled: " + s.bundled());
        }
        if (System.getenv("LIMA_CUDA_PLUGIN") != null) {
            assertNull(s.plugin());
        } else if (s.driverVersion() == 0) {  // no NVIDIA driver (CI): nothing chosen, the reason kept for doctor
            assertNull(s.plugin());
            assertTrue(s.note().contains("NVIDIA driver"), s.note());
        } else if (!CudaPlugins.candidates(s.bundled(), s.driverVersion()).isEmpty()) {
            assertTrue(s.plugin() != null && s.plugin().contains("liblima_cuda"), String.valueOf(s));
            assertEquals(s.plugin(), dev.limactl.engine.binding.LimaNative.cudaPluginPath());
        }
        assertTrue(s == CudaPlugins.select(), "chosen once per JVM");
    }
}
