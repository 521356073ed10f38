package dev.limactl.eval;

import java.util.List;
import org.apache.commons.math3.distribution.TDistribution;

/** The statistics of the paper's evaluations. */
public final class Stats {
    private Stats() {}

    /** Mean with a two-sided 95% confidence interval from the t distribution (n - 1 degrees of freedom). */
    public record MeanCi(double mean, double low, double high, int n) {
        public double halfWidth() {
            return (high - low) / 2;
        }
    }

    public static MeanCi meanCi95(List<Double> xs) {
        int n = xs.size();
        if (n == 0) return new MeanCi(Double.NaN, Double.NaN, Double.NaN, 0);
        double mean = xs.stream().mapToDouble(Double::doubleValue).average().orElseThrow();
        if (n == 1) return new MeanCi(mean, Double.NaN, Double.NaN, 1);
        double ss = 0;
        for (double x : xs) ss += (x - mean) * (x - mean);
        double se = Math.sqrt(ss / (n - 1)) / Math.sqrt(n);
        double t = new TDistribution(n - 1).inverseCumulativeProbability(0.975);
        return new MeanCi(mean, mean - t * se, mean + t * se, n);
    }

    /**
     * Mean of values in [0, 1] with a 95% Wilson score interval, which stays inside [0, 1]. For
     * values in [0, 1] with mean p the variance is at most p(1 - p), the Bernoulli variance the
     * Wilson interval assumes, so the interval is conservative for tie-discounted scores (0, 0.5, 1).
     */
    public static MeanCi wilson95(List<Double> xs) {
        int n = xs.size();
        if (n == 0) return new MeanCi(Double.NaN, Double.NaN, Double.NaN, 0);
        double p = xs.stream().mapToDouble(Double::doubleValue).average().orElseThrow(), z = 1.959963984540054;
        double denom = 1 + z * z / n, center = (p + z * z / (2.0 * n)) / denom;
        double half = z / denom * Math.sqrt(p * (1 - p) / n + z * z / (4.0 * n * n));
        return new MeanCi(p, Math.max(0, center - half), Math.min(1, center + half), n);
    }

    /**
     * The paper's agreement score for one item (Section 4.1): 1 if both annotators gave the same
     * label, 0.5 if exactly one of them said tie, 0 otherwise.
     */
    public static double tieDiscounted(String a, String b, String tie) {
        if (a.equals(b)) return 1.0;
        if (a.equals(tie) || b.equals(tie)) return 0.5;
        return 0.0;
    }

    /**
     * Cohen's kappa of two raters over the same items (labels at equal indices): (p_o - p_e) / (1 - p_e)
     * with p_e from each rater's own label frequencies. NaN when it is undefined: no items, or both
     * raters used one and the same label throughout (p_e = 1).
     */
    public static double cohensKappa(List<String> a, List<String> b) {
        if (a.size() != b.size()) throw new IllegalArgumentException("kappa needs two label lists of one length, got " + a.size() + " and " + b.size());
        int n = a.size();
        if (n == 0) return Double.NaN;
        java.util.Map<String, Integer> ca = new java.util.HashMap<>(), cb = new java.util.HashMap<>();
        int agree = 0;
        for (int i = 0; i < n; i++) {
            if (a.get(i).equals(b.get(i))) agree++;
            ca.merge(a.get(i), 1, Integer::sum);
            cb.merge(b.get(i), 1, Integer::sum);
        }
        double po = (double) agree / n, pe = 0;
        for (var e : ca.entrySet()) pe += (double) e.getValue() / n * cb.getOrDefault(e.getKey(), 0) / n;
        if (pe >= 1.0) return Double.NaN;
        return (po - pe) / (1 - pe);
    }
}
