package dev.limactl.data.curate;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Throughput of the StackExchange reader on a (large) Posts.xml: the raw streaming pass, and the
 * full read (two passes, HTML to Markdown and filters). Run by ci/bench-curation.sh; prints JSON lines.
 *   java ... dev.limactl.data.curate.PostsXmlBenchmark Posts.xml
 */
public final class PostsXmlBenchmark {
    public static void main(String[] args) {
        Path p = Path.of(args[0]);
        double mb;
        try {
            mb = Files.size(p) / 1e6;
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        long[] rows = {0};
        long t0 = System.nanoTime();
        StackExchangeSource.stream(p, (line, a) -> rows[0]++);
        double s1 = (System.nanoTime() - t0) / 1e9;
        report("stream", mb, s1, rows[0]);
        t0 = System.nanoTime();
        int[] rejected = {0};
        List<StackExchangeSource.Candidate> c = StackExchangeSource.read("coffee.stackexchange.com", p,
                new StackExchangeSource.Options(10, 1200, 4096, true, new TextFilters(Recipe.FIRST_PERSON, Recipe.REFERENCES)),
                r -> rejected[0]++);
        double s2 = (System.nanoTime() - t0) / 1e9;
        report("read (2 passes + filters)", 2 * mb, s2, c.size());
    }

    private static void report(String what, double mb, double secs, long n) {
        Runtime rt = Runtime.getRuntime();
        System.gc();
        System.out.printf("{\"what\": \"%s\", \"mb\": %.0f, \"seconds\": %.2f, \"mb_per_s\": %.1f, \"items\": %d, \"heap_used_mb\": %d}%n",
                what, mb, secs, mb / secs, n, (rt.totalMemory() - rt.freeMemory()) >> 20);
    }
}
