package dev.limactl.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

/** A service that embeds the engine sees no warnings at start on a machine without a GPU. */
class QuietStartTest {
    /** Opens both tokenizer kinds in a fresh JVM (with an slf4j binding, as a service has) and encodes. */
    public static void main(String[] args) {
        for (String f : args) {
            try (Tokenizer t = Tokenizer.open(Path.of(f))) {
                System.out.println(f + " -> " + t.encode("Hello world").length + " tokens");
            }
        }
    }

    @Test
    void openingTokenizersLogsNothingWithoutAGpu() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse(Files.exists(Path.of("/proc/driver/nvidia/version")), "has an NVIDIA driver");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), QuietStartTest.class.getName(),
                "src/main/resources/dev/limactl/demo/tokenizer.model", "src/test/resources/tokenizer/small_tokenizer.json")
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), out);
        assertFalse(out.contains("WARN") || out.contains("CudaUtils"), out);
        assertEquals(2, out.lines().filter(l -> l.contains(" tokens")).count(), out);
    }

    @Test
    void hfTokenizerNeverTruncatesLongTexts() {
        try (Tokenizer t = Tokenizer.open(Path.of("src/test/resources/tokenizer/small_tokenizer.json"))) {
            String text = "Less is more for alignment. ".repeat(400);
            int[] ids = t.encode(text);
            org.junit.jupiter.api.Assertions.assertTrue(ids.length > 2048, ids.length + " tokens");
            assertEquals(text.strip(), t.decode(ids).strip());
        }
    }
}
