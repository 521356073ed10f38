package dev.limactl.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The hosted-CI definition that builds the CUDA plugin per CUDA major (.github/workflows/cuda-plugins.yml):
 * its matrix, the jobs' wiring, and its build step run here for CUDA 13 (the only toolkit this
 * machine has).
 */
class HostedCiDefinitionTest {
    static final Path ROOT = Path.of("..").toAbsolutePath().normalize();
    static final Path WORKFLOW = ROOT.resolve(".github/workflows/cuda-plugins.yml");

    static JsonNode workflow() throws Exception {
        return new ObjectMapper(new YAMLFactory()).readTree(WORKFLOW.toFile());
    }

    static String run(JsonNode job, String stepName) {
        for (JsonNode step : job.path("steps")) {
            if (stepName.equals(step.path("name").asText())) return step.path("run").asText();
        }
        throw new AssertionError("no step \"" + stepName + "\"");
    }

    @Test
    void matrixCoversCuda12And13AndOneJarCollectsEveryPlugin() throws Exception {
        JsonNode jobs = workflow().path("jobs");
        JsonNode plugin = jobs.path("plugin");
        Set<Integer> majors = new TreeSet<>();
        for (JsonNode m : plugin.path("strategy").path("matrix").path("include")) {
            int major = m.path("major").asInt();
            majors.add(major);
            assertTrue(m.path("cuda").asText().startsWith(major + "."), m.toString());
            assertTrue(m.path("image").asText().startsWith("nvidia/cuda:" + m.path("cuda").asText() + "-devel"), m.toString());
        }
        assertEquals(Set.of(12, 13), majors);
        assertEquals("${{ matrix.image }}", plugin.path("container").path("image").asText());
        assertTrue(run(plugin, "build plugin").contains("bash ci/build-cuda.sh"));
        JsonNode jar = jobs.path("engine-jar");
        assertEquals("plugin", jar.path("needs").asText());
        String assemble = run(jar, "liblima (CPU) and the jar holding the downloaded plugins");
        assertTrue(assemble.contains("-Dlima.native.prebuilt=true") && assemble.contains("ci/native-build.sh"), assemble);
        assertTrue(assemble.contains("for m in 12 13"), assemble);
        // the scripts it calls exist
        assertTrue(Files.isRegularFile(ROOT.resolve("ci/build-cuda.sh")) && Files.isRegularFile(ROOT.resolve("ci/native-build.sh")));
    }

    @Test
    void theBuildStepBuildsThePluginForCuda13Here() throws Exception {
        Process flags = new ProcessBuilder("bash", "ci/cuda-flags.sh").directory(ROOT.toFile()).redirectErrorStream(true).start();
        String f = new String(flags.getInputStream().readAllBytes());
        flags.waitFor();
        Process v = new ProcessBuilder("bash", "-c", "nvcc --version 2>/dev/null | grep -o 'release [0-9]*'").start();
        String release = new String(v.getInputStream().readAllBytes()).trim();
        v.waitFor();
        Assumptions.assumeTrue(f.contains("LIMA_CUDA=ON") && release.equals("release 13"), "no CUDA 13 toolkit with cuBLASLt here");
        String step = run(workflow().path("jobs").path("plugin"), "build plugin").replace("${{ matrix.major }}", "13");
        Path out = ROOT.resolve("out");
        try {
            List<String> cmd = new ArrayList<>(List.of("bash", "-euo", "pipefail", "-c", step));
            Process p = new ProcessBuilder(cmd).directory(ROOT.toFile()).redirectErrorStream(true).start();
            String log = new String(p.getInputStream().readAllBytes());
            assertTrue(p.waitFor(20, TimeUnit.MINUTES), "build step timed out");
            assertEquals(0, p.exitValue(), log);
            assertTrue(Files.size(out.resolve("cuda-plugins/liblima_cuda13.so")) > 100_000, log);
        } finally {
            new ProcessBuilder("rm", "-rf", out.toString()).start().waitFor();
        }
    }
}
