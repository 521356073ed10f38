package dev.limactl.config;

import java.util.ArrayList;
import java.util.List;

/**
 * Which epoch checkpoints a run keeps ({@code checkpoint.keep}): a comma list of {@code all}, an epoch
 * {@code N}, a range {@code A-B} (LIMA's selection window is 5-10) and {@code last:N} (the N newest).
 * A checkpoint is kept when any term keeps it; the others are deleted after each epoch, and an epoch
 * no term can ever keep is not written at all.
 */
public record KeepRule(String text, boolean all, List<int[]> ranges, int last) {
    public static KeepRule parse(String text) {
        String t = text == null ? "" : text.strip();
        if (t.isEmpty()) throw new IllegalArgumentException("is empty: give all, an epoch N, a range A-B or last:N (comma-separated)");
        boolean all = false;
        int last = 0;
        List<int[]> ranges = new ArrayList<>();
        for (String raw : t.split(",", -1)) {
            String term = raw.strip();
            try {
                if (term.equals("all")) {
                    all = true;
                } else if (term.startsWith("last:")) {
                    last = Math.max(last, Integer.parseInt(term.substring(5).strip()));
                    if (last < 1) throw new IllegalArgumentException("'" + term + "': last:N needs N >= 1");
                } else if (term.matches("\\d+\\s*-\\s*\\d+")) {
                    String[] ab = term.split("-");
                    int a = Integer.parseInt(ab[0].strip()), b = Integer.parseInt(ab[1].strip());
                    if (a < 1 || b < a) throw new IllegalArgumentException("'" + term + "': a range A-B needs 1 <= A <= B");
                    ranges.add(new int[] {a, b});
                } else if (term.matches("\\d+")) {
                    int n = Integer.parseInt(term);
                    if (n < 1) throw new IllegalArgumentException("'" + term + "': epochs count from 1");
                    ranges.add(new int[] {n, n});
                } else {
                    throw new IllegalArgumentException("'" + term + "' is not all, an epoch N, a range A-B or last:N");
                }
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("'" + term + "' holds a number out of range");
            }
        }
        return new KeepRule(t, all, List.copyOf(ranges), last);
    }

    /** Whether epoch k's checkpoint stays once epoch {@code current} is done. */
    public boolean keeps(int k, int current) {
        if (all || (last > 0 && k > current - last)) return true;
        for (int[] r : ranges) if (k >= r[0] && k <= r[1]) return true;
        return false;
    }

    /** Whether epoch k's checkpoint is worth writing at all (some term keeps it when it is written). */
    public boolean writes(int k) {
        return keeps(k, k);
    }

    /** Epochs of a run of {@code epochs} that no term keeps: a rule that keeps nothing of the run is an error. */
    public void checkAgainst(int epochs) {
        for (int k = 1; k <= epochs; k++) if (keeps(k, epochs)) return;
        throw new IllegalArgumentException("'" + text + "' keeps no checkpoint of a " + epochs + "-epoch run");
    }
}
