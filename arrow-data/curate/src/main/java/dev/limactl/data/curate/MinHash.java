package dev.limactl.data.curate;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * Near-duplicate detection: MinHash signatures of word n-gram sets (Broder 1997) with LSH banding to
 * find candidate pairs, then the signature estimate of Jaccard similarity. Written here because no
 * well-kept JVM library offers MinHash LSH for a few thousand documents without a whole framework.
 */
public final class MinHash {
    private final int shingle, perms, bands;
    private final long[] a, b;
    private final List<long[]> signatures = new ArrayList<>();
    private final List<Map<Long, List<Integer>>> buckets = new ArrayList<>();

    public MinHash(int shingle, int permutations, long seed) {
        this.shingle = shingle;
        this.perms = permutations;
        this.bands = Math.max(1, permutations / 4);  // 4 rows per band: pairs above ~0.7 similarity meet
        java.util.Random r = new java.util.Random(seed);
        a = new long[perms];
        b = new long[perms];
        for (int i = 0; i < perms; i++) {
            a[i] = r.nextLong() | 1;
            b[i] = r.nextLong();
        }
        for (int i = 0; i < bands; i++) buckets.add(new HashMap<>());
    }

    static Set<Long> shingles(String text, int n) {
        String[] w = text.toLowerCase(Locale.ROOT).replaceAll("[^\\p{L}\\p{N}]+", " ").trim().split(" ");
        Set<Long> out = new HashSet<>();
        if (w.length == 1 && w[0].isEmpty()) return out;
        for (int i = 0; i + Math.min(n, w.length) <= w.length; i++) {
            out.add(hash(String.join(" ", java.util.Arrays.copyOfRange(w, i, i + Math.min(n, w.length)))));
        }
        return out;
    }

    static long hash(String s) {
        long h = 0xcbf29ce484222325L;  // FNV-1a 64
        for (byte x : s.getBytes(StandardCharsets.UTF_8)) {
            h ^= x & 0xff;
            h *= 0x100000001b3L;
        }
        return h;
    }

    long[] signature(String text) {
        long[] sig = new long[perms];
        java.util.Arrays.fill(sig, Long.MAX_VALUE);
        for (long s : shingles(text, shingle)) {
            for (int i = 0; i < perms; i++) {
                long h = (a[i] * s + b[i]) >>> 1;
                if (h < sig[i]) sig[i] = h;
            }
        }
        return sig;
    }

    static double similarity(long[] x, long[] y) {
        int eq = 0;
        for (int i = 0; i < x.length; i++) if (x[i] == y[i]) eq++;
        return (double) eq / x.length;
    }

    /** The index of an earlier added text at least `threshold` similar (the most similar), or -1; then adds this one. */
    public int addAndFind(String text, double threshold) {
        long[] sig = signature(text);
        long[] keys = bandKeys(sig);
        int found = find(sig, keys, threshold);
        int id = signatures.size();
        signatures.add(sig);
        for (int band = 0; band < bands; band++) buckets.get(band).computeIfAbsent(keys[band], x -> new ArrayList<>()).add(id);
        return found;
    }

    /** The index of the most similar added text at least `threshold` similar, or -1; adds nothing. */
    public int find(String text, double threshold) {
        long[] sig = signature(text);
        return find(sig, bandKeys(sig), threshold);
    }

    private long[] bandKeys(long[] sig) {
        int rows = perms / bands;
        long[] keys = new long[bands];
        for (int band = 0; band < bands; band++) {
            long k = band;
            for (int r = 0; r < rows; r++) k = k * 0x9E3779B97F4A7C15L + sig[band * rows + r];
            keys[band] = k;
        }
        return keys;
    }

    private int find(long[] sig, long[] keys, double threshold) {
        int found = -1;
        double best = threshold;
        Set<Integer> seen = new HashSet<>();
        for (int band = 0; band < bands; band++) {
            for (int other : buckets.get(band).getOrDefault(keys[band], List.of())) {
                if (!seen.add(other)) continue;
                double s = similarity(sig, signatures.get(other));
                if (s >= best) {
                    best = s;
                    found = other;
                }
            }
        }
        return found;
    }
}
