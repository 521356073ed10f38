package dev.limactl.eval;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpServer;
import dev.limactl.engine.Model;
import dev.limactl.engine.ModelConfig;
import dev.limactl.generate.Answerer;
import dev.limactl.serve.OpenAiServer;
import dev.limactl.tokenizer.Tokenizer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Function;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Protocols against a local server that answers like a judge (deterministic), and against limactl serve. */
class EvaluationTest {
    @TempDir Path dir;
    HttpServer server;
    final AtomicInteger calls = new AtomicInteger();

    /** A judge on loopback: answer(prompt) -> text, or an HTTP status as "HTTP nnn". */
    String startJudge(Function<String, String> answer) throws Exception {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 16);
        ObjectMapper json = new ObjectMapper();
        server.createContext("/v1/chat/completions", ex -> {
            calls.incrementAndGet();
            JsonNode body = json.readTree(ex.getRequestBody());
            String a = answer.apply(body.at("/messages/0/content").asText());
            byte[] out;
            int status = 200;
            if (a.startsWith("HTTP ")) {
                status = Integer.parseInt(a.substring(5, 8));
                out = "{\"error\": {\"message\": \"no\"}}".getBytes(StandardCharsets.UTF_8);
                if (status == 429) ex.getResponseHeaders().set("Retry-After", "0");
            } else {
                var o = json.createObjectNode();
                o.putArray("choices").addObject().putObject("message").put("role", "assistant").put("content", a);
                out = json.writeValueAsBytes(o);
            }
            ex.sendResponseHeaders(status, out.length);
            try (OutputStream os = ex.getResponseBody()) {
                os.write(out);
            }
        });
        server.start();
        return "http://127.0.0.1:" + server.getAddress().getPort() + "/v1";
    }

    @AfterEach
    void stop() {
        if (server != null) server.stop(0);
    }

    Judge judge(String url, String cacheName) {
        return new Judge(new Judge.Config(url, "replay-judge", "k", Duration.ofSeconds(10), 3, Duration.ofMillis(1), 4, 0),
                new JudgeCache(dir.resolve(cacheName)));
    }

    @Test
    void aBrokenResponsesLineIsNamedWithoutJacksonFragments() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> write("broken", line("a", 0, "Q", "x"), "{\"id\": "));
        assertTrue(e.getMessage().startsWith(dir.resolve("broken.jsonl") + ":2: invalid JSON: "), e.getMessage());
        assertTrue(!e.getMessage().contains("[Source") && !e.getMessage().contains("REDACTED"), e.getMessage());
    }

    @Test
    void invalidUtf8InResponsesAndAnnotationsNamesTheFileAndLine() throws Exception {
        for (String name : new String[] {"r.jsonl", "h.csv"}) {
            Path p = dir.resolve(name);
            String text = name.endsWith(".csv") ? "item,label\nq1,win\nq2,caf\u00e9\n" : line("a", 0, "Q", "x") + "\n" + line("b", 0, "Q", "caf\u00e9") + "\n";
            byte[] b = text.getBytes(java.nio.charset.StandardCharsets.UTF_8);
            for (int i = 0; i < b.length; i++) if (b[i] == (byte) 0xA9) b[i] = 'x';  // é's lead byte, then 'x': not UTF-8
            Files.write(p, b);
            RuntimeException e = assertThrows(RuntimeException.class, () -> {
                if (name.endsWith(".csv")) Annotations.read(p);
                else Responses.read(p);
            });
            int line = name.endsWith(".csv") ? 3 : 2;
            assertTrue(e.getMessage().startsWith(p + ":" + line + ": not valid UTF-8 at byte"), e.getMessage());
        }
    }

    Responses write(String name, String... lines) throws Exception {
        Path p = dir.resolve(name + ".jsonl");
        Files.write(p, List.of(lines));
        return Responses.read(p);
    }

    static String line(String id, int sample, String prompt, String response) {
        return "{\"id\": \"" + id + "\", \"sample\": " + sample + ", \"prompt\": \"" + prompt + "\", \"response\": \"" + response + "\"}";
    }

    /** Extracts the text between two markers of a filled template. */
    static String between(String s, String a, String b) {
        int i = s.indexOf(a), j = s.indexOf(b, i + a.length());
        return i < 0 || j < 0 ? "" : s.substring(i + a.length(), j);
    }

    @Test
    void pairwiseAsksBothOrdersAndCountsDisagreementAsATie() throws Exception {
        Responses ours = write("ours", line("p1", 0, "Q1", "GOOD one"), line("p2", 0, "Q2", "GOOD two"), line("p3", 0, "Q3", "MEH three"));
        Responses base = write("base", line("p1", 0, "Q1", "BAD one"), line("p2", 0, "Q2", "GOOD too"), line("p3", 0, "Q3", "GOOD x"));
        // A fair judge: prefers the GOOD response whatever its position; Tie when both are GOOD.
        String url = startJudge(p -> {
            boolean a = between(p, "[Response A]", "[Response B]").contains("GOOD"), b = between(p, "[Response B]", "First explain").contains("GOOD");
            return "Reasoning...\n" + (a && b ? "Tie" : a ? "A" : b ? "B" : "Tie");
        });
        Evaluation.Pairwise r = new Evaluation(judge(url, "c1.jsonl"), 2, m -> { }).pairwise(ours, base, Templates.load("pairwise", null));
        assertEquals(Map.of("p1", "win", "p2", "tie", "p3", "loss"), r.verdicts());
        assertEquals(6, calls.get());
        assertEquals(100.0 / 3, r.percent("win"), 1e-9);
        // A position-biased judge (always "A") cancels out to ties.
        server.stop(0);
        String biased = startJudge(p -> "Clearly the first.\nA");
        Evaluation.Pairwise t = new Evaluation(judge(biased, "c2.jsonl"), 2, m -> { }).pairwise(ours, base, Templates.load("pairwise", null));
        assertEquals(3, t.count("tie"));
        Reports.pairwise(dir.resolve("report"), "ours", List.of(r), "replay-judge");
        for (String f : List.of("pairwise.json", "pairwise.md", "pairwise.png", "pairwise.svg")) assertTrue(Files.size(dir.resolve("report/" + f)) > 100, f);
        assertTrue(Files.readString(dir.resolve("report/pairwise.md")).contains("| base | 33.3% | 33.3% | 33.3% | 0 |"));
    }

    @Test
    void likertParsesMessyAnswersCountsFailuresAndGivesTheTInterval() throws Exception {
        List<String> lines = new ArrayList<>();
        int[] scores = {4, 5, 6, 5, 3};
        for (int k = 0; k < 5; k++) lines.add(line("q", k, "Q", "score " + scores[k]));
        lines.add(line("r", 0, "R", "MESSY"));
        Responses r = write("sys", lines.toArray(new String[0]));
        String url = startJudge(p -> {
            String resp = between(p, "[Submission]: ", "\n***");
            if (resp.contains("MESSY")) return "It is quite good overall, I would say.";
            String s = resp.replace("score ", "");
            return "Step 1: relevant. Step 2: detailed.\n**" + s + "**\n" + s;
        });
        Evaluation.Likert l = new Evaluation(judge(url, "c.jsonl"), 3, m -> { }).likert(r, Templates.load("likert", null), 5);
        assertEquals(List.of(4.0, 5.0, 6.0, 5.0, 3.0), l.scores());
        assertEquals(1, l.unparsable());
        // mean 4.6, sd 1.1402, t(0.975, 4) = 2.7764: half-width 2.7764 * 1.1402 / sqrt(5) = 1.4158
        assertEquals(4.6, l.meanCi().mean(), 1e-9);
        assertEquals(1.4158, l.meanCi().halfWidth(), 1e-3);
        Reports.likert(dir.resolve("rep"), List.of(l), "replay-judge");
        assertTrue(Files.readString(dir.resolve("rep/likert.md")).contains("| sys | 4.60 | [3.18, 6.02] | 5 | 1 |"));
    }

    @Test
    void theShippedAblationGridAndItsRecipesAreValidAndCurate() {
        Path grid = Path.of("../../cli/examples/ablations/grid.yaml");
        Experiment.Grid g = Experiment.load(grid);
        assertEquals(3, g.variants().size());
        assertTrue(Files.exists(grid.getParent().resolve(g.test())));
        for (Experiment.Variant v : g.variants()) {
            Path recipe = grid.getParent().resolve(v.recipe());
            var r = new dev.limactl.data.curate.Curator(dev.limactl.data.curate.Recipe.load(recipe), recipe.getParent(), m -> { }).run();
            assertTrue(r.splits().get("train").size() >= 20, v.name() + ": " + r.splits().get("train").size());
        }
    }

    @Test
    void verdictParsingIsRobustAndNeverDefaults() {
        assertEquals(5, Verdicts.likert("Reasoning about 3 points.\n5\n5"));
        assertEquals(4, Verdicts.likert("...\nFinal answer: 4."));
        assertNull(Verdicts.likert("I would give it a 7 or maybe 10"));
        assertNull(Verdicts.likert(""));
        assertEquals("A", Verdicts.pairwise("Both are fine but\n**A**"));
        assertEquals("tie", Verdicts.pairwise("Neither is significantly better.\nTie"));
        assertEquals("B", Verdicts.pairwise("Verdict: B"));
        assertNull(Verdicts.pairwise("A is longer, B is clearer; hard to say"));
        assertEquals("excellent", Verdicts.absolute("Great.\nExcellent"));
        assertNull(Verdicts.absolute("It passes muster"));
    }

    @Test
    void checkpointChoiceFollowsJudgedQualityNotPerplexity() {
        List<Double> three = List.of(3.0, 4.0, 5.0), four = List.of(4.0, 4.0, 4.0);
        var rows = List.of(
                new CheckpointSelection.Row(5, "e5", 3.1, Stats.meanCi95(three), 0),   // best perplexity, mean 4
                new CheckpointSelection.Row(6, "e6", 3.5, Stats.meanCi95(List.of(5.0, 5.0, 4.0)), 0),  // best judged
                new CheckpointSelection.Row(7, "e7", 3.9, Stats.meanCi95(four), 0));
        assertEquals(6, CheckpointSelection.best(rows).epoch());
        var tie = List.of(new CheckpointSelection.Row(5, "e5", 3.5, Stats.meanCi95(four), 0),
                new CheckpointSelection.Row(6, "e6", 3.2, Stats.meanCi95(four), 0));
        assertEquals(6, CheckpointSelection.best(tie).epoch());  // same score: the lower dev perplexity
        var unjudged = List.of(new CheckpointSelection.Row(5, "e5", 3.5, Stats.meanCi95(List.of()), 3),
                new CheckpointSelection.Row(6, "e6", 3.2, Stats.meanCi95(List.of()), 3));
        assertEquals(6, CheckpointSelection.best(unjudged).epoch());
        assertTrue(CheckpointSelection.basis(unjudged).startsWith("dev perplexity, because the judge gave no parsable score"));
    }

    @Test
    void cohensKappaMatchesTheTextbookExample() {
        // 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
        List<String> a = new java.util.ArrayList<>(), b = new java.util.ArrayList<>();
        int[][] cells = {{20, 1, 1}, {5, 1, 0}, {10, 0, 1}, {15, 0, 0}};
        for (int[] c : cells) {
            for (int i = 0; i < c[0]; i++) {
                a.add(c[1] == 1 ? "yes" : "no");
                b.add(c[2] == 1 ? "yes" : "no");
            }
        }
        assertEquals(0.4, Stats.cohensKappa(a, b), 1e-12);
        assertEquals(1.0, Stats.cohensKappa(List.of("win", "tie", "loss"), List.of("win", "tie", "loss")), 1e-12);
        // worse than chance is negative; one label throughout on both sides is undefined, not 1
        assertEquals(-1.0, Stats.cohensKappa(List.of("win", "loss"), List.of("loss", "win")), 1e-12);
        assertTrue(Double.isNaN(Stats.cohensKappa(List.of("win", "win"), List.of("win", "win"))));
        assertTrue(Double.isNaN(Stats.cohensKappa(List.of(), List.of())));
        assertThrows(IllegalArgumentException.class, () -> Stats.cohensKappa(List.of("a"), List.of()));
        // agreement carries it, over the items both labelled
        Evaluation.Agreement g = Evaluation.agreement(Map.of("1", "win", "2", "loss", "3", "unparsable"), Map.of("1", "win", "2", "loss", "3", "win"), "tie");
        assertEquals(1.0, g.kappa(), 1e-12);
        // every pair of annotators that shares an item, in order
        Map<String, Map<String, String>> people = new java.util.LinkedHashMap<>();
        people.put("x", Map.of("1", "win"));
        people.put("y", Map.of("1", "tie"));
        people.put("z", Map.of("2", "win"));
        List<Evaluation.PairAgreement> pairs = Evaluation.pairs(people, "tie");
        assertEquals(1, pairs.size());
        assertEquals("x", pairs.get(0).a());
        assertEquals("y", pairs.get(0).b());
        assertEquals(0.5, pairs.get(0).agreement().score().mean(), 1e-12);
    }

    @Test
    void agreementIsTieDiscountedAccuracy() {
        Map<String, String> a = Map.of("1", "A", "2", "tie", "3", "B", "4", "A", "9", "A");
        Map<String, String> b = Map.of("1", "A", "2", "B", "3", "A", "4", "tie");
        Evaluation.Agreement g = Evaluation.agreement(a, b, "tie");
        Stats.MeanCi m = g.score();
        assertEquals(4, m.n());  // item 9 is not shared
        assertEquals((1 + 0.5 + 0 + 0.5) / 4, m.mean(), 1e-12);
        // unparsable verdicts are left out (not disagreements), and the interval stays inside [0, 1]
        Map<String, String> judge = Map.of("1", "A", "2", "unparsable", "3", "B", "4", "A");
        Map<String, String> human = Map.of("1", "A", "2", "B", "3", "B", "4", "A");
        Evaluation.Agreement j = Evaluation.agreement(judge, human, "tie");
        assertEquals(4, j.shared());
        assertEquals(1, j.leftOut());
        assertEquals(3, j.score().n());
        assertEquals(1.0, j.score().mean(), 1e-12);
        assertTrue(j.score().low() > 0.3 && j.score().high() <= 1.0, j.toString());
        Stats.MeanCi w = Stats.wilson95(List.of(1.0, 0.5, 1.0, 1.0));  // the case whose t interval went past 1
        assertTrue(w.low() >= 0 && w.high() <= 1 && w.low() < w.mean() && w.mean() < w.high(), w.toString());
    }

    @Test
    void cacheMakesRerunsFreeAndAKilledRunResumesWithoutRepeatedCalls() throws Exception {
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < 8; i++) lines.add(line("q" + i, 0, "Q" + i, "score 4"));
        Responses r = write("sys", lines.toArray(new String[0]));
        AtomicInteger served = new AtomicInteger();
        String url = startJudge(p -> served.incrementAndGet() > 5 ? "HTTP 400" : "ok\n4");  // dies after 5 answers
        Evaluation e1 = new Evaluation(judge(url, "cache.jsonl"), 1, m -> { });
        JudgeException ex = assertThrows(JudgeException.class, () -> e1.likert(r, Templates.load("likert", null), 1));
        assertTrue(ex.getMessage().contains("refused the request: HTTP 400"), ex.getMessage());
        server.stop(0);
        calls.set(0);
        String healthy = startJudge(p -> "fine\n4");
        Judge j = judge(healthy, "cache.jsonl");
        Evaluation.Likert l = new Evaluation(j, 1, m -> { }).likert(r, Templates.load("likert", null), 1);
        assertEquals(8, l.scores().size());
        assertEquals(3, calls.get());  // only the 3 unanswered questions
        assertEquals(5, j.cached.get());
        calls.set(0);
        new Evaluation(judge(healthy, "cache.jsonl"), 1, m -> { }).likert(r, Templates.load("likert", null), 1);
        assertEquals(0, calls.get());  // a rerun costs nothing
    }

    @Test
    void serverErrorsAndRateLimitsAreRetriedAuthErrorsAreNot() throws Exception {
        Responses r = write("sys", line("q", 0, "Q", "x"));
        AtomicInteger n = new AtomicInteger();
        String url = startJudge(p -> switch (n.incrementAndGet()) {
            case 1 -> "HTTP 500";
            case 2 -> "HTTP 429";
            default -> "ok\n3";
        });
        Judge j = judge(url, "c.jsonl");
        assertEquals(List.of(3.0), new Evaluation(j, 1, m -> { }).likert(r, Templates.load("likert", null), 1).scores());
        assertEquals(2, j.retries.get());
        server.stop(0);
        String denied = startJudge(p -> "HTTP 401");
        JudgeException e = assertThrows(JudgeException.class,
                () -> new Evaluation(judge(denied, "d.jsonl"), 1, m -> { }).absolute(r, Templates.load("absolute", null)));
        assertTrue(e.getMessage().contains("HTTP 401"), e.getMessage());
        assertEquals(1, calls.get() - 3);  // no retry on 401
    }

    @Test
    void endToEndWithLimactlServeAsTheJudge() throws Exception {
        try (Tokenizer tok = Tokenizer.open(Path.of("../src/main/resources/dev/limactl/demo/tokenizer.model"));
             Model m = Model.random(ModelConfig.llama(1025, 32, 64, 2, 4, 2, 1024), 9);
             OpenAiServer s = new OpenAiServer(new Answerer(m, tok, 1024, 1024), "tiny", "127.0.0.1", 0, null, 8)) {
            s.start();
            Responses r = write("sys", line("a", 0, "How do I store coffee?", "In a jar."), line("b", 0, "What is a shot?", "Espresso."));
            Judge j = new Judge(new Judge.Config("http://127.0.0.1:" + s.port() + "/v1", "tiny", null, Duration.ofSeconds(60), 1,
                    Duration.ofMillis(1), 2, 0.7), new JudgeCache(dir.resolve("e2e.jsonl")));
            Evaluation.Absolute a = new Evaluation(j, 2, msg -> { }).absolute(r, Templates.load("absolute", null));
            assertEquals(2, a.grades().size());
            assertEquals(2, a.count("fail") + a.count("pass") + a.count("excellent") + a.count("unparsable"));
            assertTrue(j.calls.get() >= 2);
        }
    }
}
