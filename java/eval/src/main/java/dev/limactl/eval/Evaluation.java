package dev.limactl.eval;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Consumer;

/**
 * The paper's evaluation protocols with an LLM judge (Sections 3-5): pairwise preference in both
 * orders, absolute Fail/Pass/Excellent, and the 1-6 Likert helpfulness score; unparsable judge answers
 * are counted, never replaced by a default.
 */
public final class Evaluation {
    private final Judge judge;
    private final int threads;
    private final Consumer<String> progress;

    public Evaluation(Judge judge, int threads, Consumer<String> progress) {
        this.judge = judge;
        this.threads = Math.max(1, threads);
        this.progress = progress;
    }

    /** Per item: our verdict against the baseline ("win", "tie", "loss") or "unparsable". */
    public record Pairwise(String baseline, Map<String, String> verdicts) {
        public long count(String v) {
            return verdicts.values().stream().filter(v::equals).count();
        }

        public double percent(String v) {
            long judged = verdicts.size() - count("unparsable");
            return judged == 0 ? Double.NaN : 100.0 * count(v) / judged;
        }
    }

    public record Absolute(Map<String, String> grades) {
        public long count(String v) {
            return grades.values().stream().filter(v::equals).count();
        }
    }

    public record Likert(String system, List<Double> scores, long unparsable, Stats.MeanCi meanCi) {}

    /**
     * Ours vs a baseline on their shared prompt ids (first sample of each): asked with ours as A and
     * again with ours as B; opposite answers (or a tie in either) count as a tie, cancelling position bias.
     */
    public Pairwise pairwise(Responses ours, Responses baseline, Templates t) {
        List<String> ids = new ArrayList<>(ours.byId().keySet());
        ids.retainAll(baseline.byId().keySet());
        if (ids.isEmpty()) throw new IllegalArgumentException(ours.system() + " and " + baseline.system() + " share no prompt ids");
        Map<String, String> verdicts = Collections.synchronizedMap(new LinkedHashMap<>());
        ids.forEach(id -> verdicts.put(id, null));
        run(ids, id -> {
            Responses.Item a = ours.byId().get(id).get(0), b = baseline.byId().get(id).get(0);
            String first = ask(t, a.prompt(), List.of(a.response(), b.response()), "ours-first", 0,
                    Map.of("prompt", a.prompt(), "response_a", a.response(), "response_b", b.response()));
            String second = ask(t, a.prompt(), List.of(b.response(), a.response()), "ours-second", 0,
                    Map.of("prompt", a.prompt(), "response_a", b.response(), "response_b", a.response()));
            String v1 = Verdicts.pairwise(first), v2 = Verdicts.pairwise(second);
            String verdict;
            if (v1 == null || v2 == null) verdict = "unparsable";
            else if (v1.equals("A") && v2.equals("B")) verdict = "win";
            else if (v1.equals("B") && v2.equals("A")) verdict = "loss";
            else verdict = "tie";  // a tie in either order, or the orders disagree
            verdicts.put(id, verdict);
        });
        return new Pairwise(baseline.system(), new LinkedHashMap<>(verdicts));
    }

    public Absolute absolute(Responses r, Templates t) {
        Map<String, String> grades = Collections.synchronizedMap(new LinkedHashMap<>());
        List<String> ids = new ArrayList<>(r.byId().keySet());
        ids.forEach(id -> grades.put(id, null));
        run(ids, id -> {
            Responses.Item it = r.byId().get(id).get(0);
            String g = Verdicts.absolute(ask(t, it.prompt(), List.of(it.response()), "single", 0,
                    Map.of("prompt", it.prompt(), "response", it.response())));
            grades.put(id, g == null ? "unparsable" : g);
        });
        return new Absolute(new LinkedHashMap<>(grades));
    }

    /** Every response (up to samplesPerPrompt per id) scored 1-6; mean with a 95% t interval. */
    public Likert likert(Responses r, Templates t, int samplesPerPrompt) {
        List<Responses.Item> items = new ArrayList<>();
        r.byId().values().forEach(l -> items.addAll(l.subList(0, Math.min(l.size(), samplesPerPrompt))));
        Double[] scores = new Double[items.size()];
        List<Integer> idx = new ArrayList<>();
        for (int i = 0; i < items.size(); i++) idx.add(i);
        run(idx, i -> {
            Responses.Item it = items.get(i);
            Integer s = Verdicts.likert(ask(t, it.prompt(), List.of(it.response()), "single", it.sample(),
                    Map.of("prompt", it.prompt(), "response", it.response())));
            scores[i] = s == null ? null : s.doubleValue();
        });
        List<Double> ok = new ArrayList<>();
        long bad = 0;
        for (Double s : scores) {
            if (s == null) bad++;
            else ok.add(s);
        }
        return new Likert(r.system(), ok, bad, Stats.meanCi95(ok));
    }

    /** Agreement over the shared items both annotators labelled; unparsable verdicts are left out and counted. */
    public record Agreement(Stats.MeanCi score, double kappa, int shared, int leftOut) {}

    /** Agreement of one pair of annotators (human or judge), named. */
    public record PairAgreement(String a, String b, Agreement agreement) {}

    /**
     * Mean tie-discounted accuracy of two annotators over their shared items, with a 95% Wilson
     * interval (inside [0, 1]). An item either side marked "unparsable" (or left empty) is not a
     * label: it is left out and counted, never scored as a disagreement.
     */
    public static Agreement agreement(Map<String, String> a, Map<String, String> b, String tie) {
        List<Double> xs = new ArrayList<>();
        List<String> la = new ArrayList<>(), lb = new ArrayList<>();
        int shared = 0, leftOut = 0;
        for (var e : a.entrySet()) {
            String other = b.get(e.getKey());
            if (other == null) continue;
            shared++;
            if (unlabelled(e.getValue()) || unlabelled(other)) {
                leftOut++;
                continue;
            }
            xs.add(Stats.tieDiscounted(e.getValue(), other, tie));
            la.add(e.getValue());
            lb.add(other);
        }
        return new Agreement(Stats.wilson95(xs), Stats.cohensKappa(la, lb), shared, leftOut);
    }

    /**
     * Every pair of the given annotators (in their order) that shares at least one item: the paper's
     * human-human and human-judge agreement tables.
     */
    public static List<PairAgreement> pairs(Map<String, Map<String, String>> annotators, String tie) {
        List<String> names = new ArrayList<>(annotators.keySet());
        List<PairAgreement> out = new ArrayList<>();
        for (int i = 0; i < names.size(); i++) {
            for (int j = i + 1; j < names.size(); j++) {
                Agreement g = agreement(annotators.get(names.get(i)), annotators.get(names.get(j)), tie);
                if (g.shared() > 0) out.add(new PairAgreement(names.get(i), names.get(j), g));
            }
        }
        return out;
    }

    private static boolean unlabelled(String label) {
        return label == null || label.isBlank() || label.equals("unparsable");
    }

    private String ask(Templates t, String prompt, List<String> responses, String order, int sample, Map<String, String> values) {
        String key = JudgeCache.key(judge.model(), t.text(), prompt, responses, order, sample);
        return judge.ask(key, t.fill(values), Judge.seedOf(key));
    }

    private <T> void run(List<T> items, Consumer<T> task) {
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try {
            List<Future<?>> fs = new ArrayList<>();
            for (T it : items) fs.add(pool.submit(() -> task.accept(it)));
            int done = 0;
            for (Future<?> f : fs) {
                try {
                    f.get();
                } catch (java.util.concurrent.ExecutionException e) {
                    if (e.getCause() instanceof RuntimeException re) throw re;
                    throw new JudgeException("judging failed: " + e.getCause(), e.getCause());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new JudgeException("interrupted");
                }
                if (++done % 10 == 0 || done == fs.size()) progress.accept(done + "/" + fs.size() + " judged");
            }
        } finally {
            pool.shutdownNow();
        }
    }
}
