package dev.limactl.cli;

import dev.limactl.eval.Annotations;
import dev.limactl.eval.Evaluation;
import dev.limactl.eval.Judge;
import dev.limactl.eval.JudgeCache;
import dev.limactl.eval.Reports;
import dev.limactl.eval.Responses;
import dev.limactl.eval.Stats;
import dev.limactl.eval.Templates;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "eval", mixinStandardHelpOptions = true,
        description = {"The paper's evaluations with an LLM judge over the OpenAI protocol (any base URL: OpenAI,",
                "vLLM, limactl serve). Reports: JSON, Markdown, PNG and SVG charts. Judge answers are cached in",
                "OUT/judge-cache.jsonl: reruns are free and a killed run resumes."},
        subcommands = {EvalCommand.Pairwise.class, EvalCommand.Absolute.class, EvalCommand.Likert.class, EvalCommand.Agreement.class})
public final class EvalCommand implements Runnable {
    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    static String pct(double x) {
        return Double.isNaN(x) ? "n/a" : String.format("%.1f%%", x);
    }

    /** "4.60 [3.18, 6.02]", or "n/a" without scores. */
    static String meanCi(Stats.MeanCi m) {
        if (m.n() == 0) return "n/a";
        return Double.isNaN(m.low()) ? String.format("%.2f", m.mean()) : String.format("%.2f [%.2f, %.2f]", m.mean(), m.low(), m.high());
    }

    /** Where the judge is: shared by eval, select and experiment. */
    static final class JudgeConnection {
        @Option(names = "--judge-url", description = "Base URL (default: env LIMACTL_JUDGE_URL, else https://api.openai.com/v1).") String url;

        @Option(names = "--judge-model", description = "Model (default: env LIMACTL_JUDGE_MODEL, else gpt-4).") String model;

        @Option(names = "--judge-key", description = "API key (default: env OPENAI_API_KEY).") String key;

        Judge.Config config() {
            return Judge.Config.of(url, model, key);
        }
    }

    /** Judge flags of the eval commands. */
    static final class JudgeOptions {
        @Mixin JudgeConnection connection;

        @Option(names = "--concurrency", defaultValue = "4", description = "Requests in flight (default ${DEFAULT-VALUE}).") int concurrency;

        @Option(names = "--retries", defaultValue = "5", description = "Retries on 429/5xx/network errors (default ${DEFAULT-VALUE}).") int retries;

        @Option(names = "--timeout", defaultValue = "120", description = "Seconds per request (default ${DEFAULT-VALUE}).") int timeout;

        @Option(names = "--template", description = "Replace the protocol's default judge prompt (a text file with {placeholders}).") Path template;

        @Option(names = "--out", required = true, description = "Report directory.") Path out;

        Judge judge(JudgeCache cache) {
            Judge.Config d = connection.config();
            return new Judge(new Judge.Config(d.baseUrl(), d.model(), d.apiKey(), Duration.ofSeconds(timeout), retries, Duration.ofSeconds(1),
                    concurrency, 0.0), cache);
        }
    }

    abstract static class JudgedCommand implements Callable<Integer> {
        @Mixin JudgeOptions judge;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        abstract void evaluate(Evaluation e, Judge j, PrintWriter out);

        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
            boolean quiet = LimactlCommand.quiet(spec.commandLine());
            try (JudgeCache cache = new JudgeCache(judge.out.resolve("judge-cache.jsonl"))) {
                Judge j = judge.judge(cache);
                evaluate(new Evaluation(j, judge.concurrency, m -> { if (!quiet) err.println(m); }), j, out);
                out.printf("judge %s: %d calls, %d answers from the cache, %d retries; reports in %s%n", j.model(), j.calls.get(),
                        j.cached.get(), j.retries.get(), judge.out);
            }
            return ExitCodes.OK;
        }
    }

    @Command(name = "pairwise", mixinStandardHelpOptions = true, description = "Ours vs each baseline: win / tie / loss (Figures 1, 2).")
    static final class Pairwise extends JudgedCommand {
        @Option(names = "--ours", required = true, description = "Our responses (JSONL).") Path ours;

        @Option(names = "--baseline", required = true, description = "A baseline's responses to the same prompt ids (repeatable).") List<Path> baselines;

        @Override
        void evaluate(Evaluation e, Judge j, PrintWriter out) {
            Responses o = Responses.read(ours);
            List<Evaluation.Pairwise> results = new ArrayList<>();
            for (Path b : baselines) {
                Evaluation.Pairwise p = e.pairwise(o, Responses.read(b), Templates.load("pairwise", judge.template));
                results.add(p);
                out.printf("%s vs %s: win %s, tie %s, loss %s (%d unparsable)%n", o.system(), p.baseline(), pct(p.percent("win")),
                        pct(p.percent("tie")), pct(p.percent("loss")), p.count("unparsable"));
            }
            Reports.pairwise(judge.out, o.system(), results, j.model());
        }
    }

    @Command(name = "absolute", mixinStandardHelpOptions = true, description = "Fail / Pass / Excellent per response (Figure 3).")
    static final class Absolute extends JudgedCommand {
        @Option(names = "--responses", required = true, description = "Responses (JSONL).") Path responses;

        @Override
        void evaluate(Evaluation e, Judge j, PrintWriter out) {
            Responses r = Responses.read(responses);
            Evaluation.Absolute a = e.absolute(r, Templates.load("absolute", judge.template));
            out.printf("%s: fail %d, pass %d, excellent %d, unparsable %d%n", r.system(), a.count("fail"), a.count("pass"),
                    a.count("excellent"), a.count("unparsable"));
            Reports.absolute(judge.out, r.system(), a, j.model());
        }
    }

    @Command(name = "likert", mixinStandardHelpOptions = true, description = "1-6 helpfulness, K samples per prompt, mean and 95%% CI (Appendix D).")
    static final class Likert extends JudgedCommand {
        @Option(names = "--responses", required = true, description = "Responses (JSONL; repeat to compare systems).") List<Path> responses;

        @Option(names = "--samples", defaultValue = "5", description = "Samples per prompt scored (default ${DEFAULT-VALUE}).") int samples;

        @Override
        void evaluate(Evaluation e, Judge j, PrintWriter out) {
            List<Evaluation.Likert> results = new ArrayList<>();
            for (Path p : responses) {
                Evaluation.Likert l = e.likert(Responses.read(p), Templates.load("likert", judge.template), samples);
                results.add(l);
                Stats.MeanCi m = l.meanCi();
                out.printf("%s: %s over %d scores (%d unparsable)%n", l.system(), meanCi(m), m.n(), l.unparsable());
            }
            Reports.likert(judge.out, results, j.model());
        }
    }

    @Command(name = "agreement", mixinStandardHelpOptions = true,
            description = {"Tie-discounted accuracy (Section 4.1) and Cohen's kappa between annotators over their shared items:",
                    "two annotators (--a, --b), or every pair of the humans of a study export (--humans) and each human against a judge (--judge)."})
    static final class Agreement implements Callable<Integer> {
        @Option(names = "--a", description = "Annotations: JSONL {item, label}, CSV item,label, or a pairwise.json report.") Path a;

        @Option(names = "--b", description = "The other annotator, same formats.") Path b;

        @Option(names = "--humans", description = "A study export (limactl annotate export): labels grouped by their 'annotator' field.") Path humans;

        @Option(names = "--judge", description = "With --humans: a judge's verdicts (pairwise.json, or JSONL/CSV item,label) against each human.") Path judge;

        @Option(names = "--tie", defaultValue = "tie", description = "The tie label (default ${DEFAULT-VALUE}).") String tie;

        @CommandLine.Spec CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() {
            PrintWriter out = spec.commandLine().getOut();
            String t = tie.toLowerCase();
            if (humans == null) {
                if (a == null || b == null || judge != null) {
                    throw new IllegalArgumentException("eval agreement: give --a and --b (two annotators), or --humans [--judge]");
                }
                Evaluation.Agreement g = Evaluation.agreement(Annotations.read(a), Annotations.read(b), t);
                if (g.shared() == 0) throw new IllegalArgumentException(a + " and " + b + " share no items");
                printAgreement(out, null, g);
                return ExitCodes.OK;
            }
            if (a != null || b != null) throw new IllegalArgumentException("eval agreement: --humans goes without --a and --b");
            Map<String, Map<String, String>> people = Annotations.readAll(humans);
            if (people.isEmpty()) throw new IllegalArgumentException(humans + " holds no labels");
            List<Evaluation.PairAgreement> hh = Evaluation.pairs(people, t);
            if (people.size() > 1 && hh.isEmpty()) out.printf("human-human: no two annotators of %s share an item%n", humans);
            for (Evaluation.PairAgreement p : hh) printAgreement(out, p.a() + " / " + p.b(), p.agreement());
            summary(out, "human-human", hh);
            if (judge != null) {
                Map<String, Map<String, String>> j = Annotations.readAll(judge);
                if (j.size() != 1) throw new IllegalArgumentException(judge + " holds " + j.size() + " annotators: --judge takes one");
                var judgeName = j.keySet().iterator().next();
                List<Evaluation.PairAgreement> hj = new ArrayList<>();
                for (var e : people.entrySet()) {
                    Evaluation.Agreement g = Evaluation.agreement(e.getValue(), j.get(judgeName), t);
                    if (g.shared() > 0) hj.add(new Evaluation.PairAgreement(e.getKey(), judgeName, g));
                }
                if (hj.isEmpty()) throw new IllegalArgumentException(humans + " and " + judge + " share no items");
                for (Evaluation.PairAgreement p : hj) printAgreement(out, p.a() + " / " + p.b(), p.agreement());
                summary(out, "human-judge", hj);
            }
            return ExitCodes.OK;
        }

        /** The mean over pairs of their agreement, as the paper reports it (pairs with nothing to score left out). */
        private static void summary(PrintWriter out, String what, List<Evaluation.PairAgreement> pairs) {
            List<Evaluation.PairAgreement> scored = pairs.stream().filter(p -> p.agreement().score().n() > 0).toList();
            if (scored.size() < 2) return;
            double mean = scored.stream().mapToDouble(p -> p.agreement().score().mean()).average().orElseThrow();
            double[] kappas = scored.stream().mapToDouble(p -> p.agreement().kappa()).filter(Double::isFinite).toArray();
            out.printf("%s: mean tie-discounted agreement %.3f over %d pairs; mean kappa %s%n", what, mean, scored.size(),
                    kappas.length == 0 ? "n/a" : String.format(java.util.Locale.ROOT, "%.3f", Arrays.stream(kappas).average().orElseThrow()));
        }
    }

    /** One agreement line: tie-discounted accuracy with its interval, Cohen's kappa, what was left out. */
    static void printAgreement(PrintWriter out, String who, Evaluation.Agreement g) {
        Stats.MeanCi m = g.score();
        String prefix = who == null ? "" : who + ": ";
        if (m.n() == 0) {  // nothing to score (a judge whose every verdict was unparsable): said, not an error
            out.printf("%stie-discounted agreement n/a: %d shared items, none with a parsable label on both sides"
                    + " (%d left out: unparsable verdict)%n", prefix, g.shared(), g.leftOut());
            return;
        }
        out.printf("%stie-discounted agreement %.3f over %d shared items (95%% Wilson interval [%.3f, %.3f]); Cohen's kappa %s%s%n", prefix,
                m.mean(), m.n(), m.low(), m.high(), Double.isNaN(g.kappa()) ? "n/a" : String.format(java.util.Locale.ROOT, "%.3f", g.kappa()),
                g.leftOut() == 0 ? "" : "; " + g.leftOut() + " item(s) left out: unparsable verdict");
    }
}
