package dev.limactl.data;

import java.nio.file.Files;
import java.nio.file.Path;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;

/**
 * The example readers on hostile bytes (property-based, a bounded number of tries in CI): whatever a
 * JSONL or Arrow file holds, reading it yields examples or a DataFormatException naming the file,
 * never another exception.
 */
class ExampleReadersFuzzTest {
    static Path dir;

    @BeforeContainer
    static void mk() throws Exception {
        dir = Files.createTempDirectory("lima-fuzz");
    }

    @AfterContainer
    static void rm() throws Exception {
        try (var s = Files.walk(dir)) {
            s.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    /** JSON-ish lines: fragments of the real formats, shuffled and cut, plus raw bytes. */
    @Provide
    Arbitrary<String> jsonlish() {
        Arbitrary<String> piece = Arbitraries.of("{", "}", "[", "]", "\"conversations\"", "\"messages\"", "\"role\"", "\"content\"",
                "\"user\"", "\"assistant\"", "\"system\"", ":", ",", "\"x\"", "null", "1e999", "-0", "\"\\u0000\"", "\"\\ud800\"", "\n",
                "true", "\"prompt\"", "\"response\"", "NaN", "\t", "\"source\"");
        return Arbitraries.oneOf(piece.list().ofMaxSize(40).map(l -> String.join("", l)), Arbitraries.strings().ofMaxLength(200));
    }

    @Property(tries = 300, seed = FuzzSeed.SEED)
    void jsonlReadingNeverFailsOtherwiseThanWithADataError(@ForAll("jsonlish") String text) throws Exception {
        Path f = dir.resolve("x.jsonl");
        Files.writeString(f, text);
        try {
            ExampleFiles.read(f, "train");
        } catch (DataFormatException expected) {
            if (!expected.getMessage().contains(f.toString())) throw new AssertionError("the error does not name the file: " + expected.getMessage());
        }
    }

    @Property(tries = 200, seed = FuzzSeed.SEED)
    void arrowReadingNeverFailsOtherwiseThanWithADataError(@ForAll byte[] bytes, @ForAll boolean realHeader) throws Exception {
        Path f = dir.resolve("x.arrow");
        byte[] content = bytes;
        if (realHeader) {  // a real file's start, then garbage: the reader gets past the magic
            Path good = dir.resolve("good.arrow");
            ArrowExamples.write(good, java.util.List.of(Example.of("a", "s", "train", "q", "r", java.util.Map.of())));
            byte[] g = Files.readAllBytes(good);
            content = new byte[Math.min(g.length, 64) + bytes.length];
            System.arraycopy(g, 0, content, 0, Math.min(g.length, 64));
            System.arraycopy(bytes, 0, content, Math.min(g.length, 64), bytes.length);
        }
        Files.write(f, content);
        try {
            ArrowExamples.read(f);
        } catch (DataFormatException expected) {
            // named, as it should be
        }
    }
}
