package dev.limactl.annotate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.eval.Annotations;
import dev.limactl.eval.Evaluation;
import dev.limactl.train.RunStateException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The study file and the web app over real HTTP (no browser: that is the CLI module's browser test). */
class StudyTest {
    @TempDir Path dir;

    static final ObjectMapper JSON = new ObjectMapper();
    final HttpClient http = HttpClient.newBuilder().followRedirects(HttpClient.Redirect.NEVER).build();

    /** n prompts answered by two systems; ours says "ours-i", the baseline "base-i"; item 0 carries a script. */
    Path[] answers(int n) throws Exception {
        StringBuilder a = new StringBuilder(), b = new StringBuilder();
        for (int i = 0; i < n; i++) {
            String prompt = i == 0 ? "Say <b>hi</b>" : "Question " + i + "?";
            String ours = i == 0 ? "<script>window.pwned=1</script><img src=x onerror=alert(1)> [x](javascript:alert(1)) ours-0" : "ours-" + i + "\n\n```python\nprint('" + i + "')\n```";
            a.append(JSON.writeValueAsString(Map.of("id", "p" + i, "prompt", prompt, "response", ours))).append('\n');
            b.append(JSON.writeValueAsString(Map.of("id", "p" + i, "prompt", prompt, "response", "base-" + i))).append('\n');
        }
        Path pa = dir.resolve("limactl.jsonl"), pb = dir.resolve("baseline.jsonl");
        Files.writeString(pa, a);
        Files.writeString(pb, b);
        return new Path[] {pa, pb};
    }

    Study pairwise(int n, List<String> annotators, int overlap) throws Exception {
        Path[] f = answers(n);
        return Study.create(dir.resolve("study.db"), new Study.Spec(Study.Mode.PAIRWISE, f[0], f[1], annotators, overlap, "Be *fair*.", 7));
    }

    @Test
    void assignmentSharesTheOverlapWithEveryoneAndDealsTheRest() throws Exception {
        Study s = pairwise(20, List.of("ann", "bob", "cy"), 5);
        assertEquals(20, s.itemCount());
        Set<Integer> all = new HashSet<>();
        Map<String, List<Study.Shown>> q = new java.util.LinkedHashMap<>();
        for (Study.Annotator a : s.annotators()) q.put(a.name(), s.queue(a.name()));
        Set<Integer> sharedByAnn = new HashSet<>();
        for (Study.Shown x : q.get("ann")) if (x.shared()) sharedByAnn.add(x.itemId());
        assertEquals(5, sharedByAnn.size());
        for (var e : q.entrySet()) {
            Set<Integer> shared = new HashSet<>();
            for (int i = 0; i < e.getValue().size(); i++) {
                Study.Shown x = e.getValue().get(i);
                assertEquals(i + 1, x.position());
                if (x.shared()) shared.add(x.itemId());
                else assertTrue(all.add(x.itemId()), "item " + x.itemId() + " dealt twice");
                // the sides are the stored draw: ours is left exactly when oursFirst
                assertEquals(x.oursFirst(), x.left().startsWith("ours-") || x.left().contains("ours-0"));
            }
            assertEquals(sharedByAnn, shared, e.getKey() + " does not see the overlap");
        }
        assertEquals(15, all.size());
        assertTrue(all.stream().noneMatch(sharedByAnn::contains));
        // 15 items dealt to 3: 5 each, plus the 5 shared
        q.values().forEach(l -> assertEquals(10, l.size()));
        long oursLeft = q.values().stream().flatMap(List::stream).filter(Study.Shown::oursFirst).count();
        assertTrue(oursLeft > 5 && oursLeft < 25, "sides are drawn, not fixed: " + oursLeft + " of 30 left");
        // the same seed gives the same study, tokens aside
        Path[] f = answers(20);
        Study again = Study.create(dir.resolve("again.db"), new Study.Spec(Study.Mode.PAIRWISE, f[0], f[1], List.of("ann", "bob", "cy"), 5, "", 7));
        assertEquals(q.get("bob").stream().map(x -> x.itemId() + ":" + x.oursFirst()).toList(),
                again.queue("bob").stream().map(x -> x.itemId() + ":" + x.oursFirst()).toList());
        assertNotEquals(s.annotators().get(0).token(), again.annotators().get(0).token());
    }

    @Test
    void badInputsAreClearErrorsAndLeaveNoFile() throws Exception {
        Path[] f = answers(3);
        Path db = dir.resolve("s.db");
        var e = assertThrows(IllegalArgumentException.class, () -> Study.create(db, spec(f, List.of("ok", "bad name"), 1)));
        assertTrue(e.getMessage().contains("'bad name' is not a valid name"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Study.create(db, spec(f, List.of("a", "a"), 1)));
        assertTrue(e.getMessage().contains("given twice"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Study.create(db, spec(f, List.of("a"), -1)));
        assertTrue(e.getMessage().contains("--overlap must be >= 0"), e.getMessage());
        Path other = dir.resolve("other.jsonl");
        Files.writeString(other, "{\"id\":\"zzz\",\"prompt\":\"q\",\"response\":\"r\"}\n");
        e = assertThrows(IllegalArgumentException.class,
                () -> Study.create(db, new Study.Spec(Study.Mode.PAIRWISE, f[0], other, List.of("a"), 1, "", 0)));
        assertTrue(e.getMessage().contains("share no prompt ids"), e.getMessage());
        Files.writeString(other, "{\"id\":\"p1\",\"prompt\":\"another prompt\",\"response\":\"r\"}\n");
        e = assertThrows(IllegalArgumentException.class,
                () -> Study.create(db, new Study.Spec(Study.Mode.PAIRWISE, f[0], other, List.of("a"), 1, "", 0)));
        assertTrue(e.getMessage().contains("p1 has different prompts"), e.getMessage());
        Files.writeString(other, "{\"id\":\"p1\",\"prompt\":\"q\"\n");
        e = assertThrows(IllegalArgumentException.class,
                () -> Study.create(db, new Study.Spec(Study.Mode.PAIRWISE, f[0], other, List.of("a"), 1, "", 0)));
        assertTrue(e.getMessage().contains("other.jsonl:1: invalid JSON"), e.getMessage());
        assertFalse(Files.exists(db));
        try (var files = Files.list(dir)) {
            assertTrue(files.noneMatch(p -> p.getFileName().toString().endsWith(".tmp")), "a temporary was left behind");
        }
        Study.create(db, spec(f, List.of("a"), 1));
        assertThrows(RunStateException.class, () -> Study.create(db, spec(f, List.of("a"), 1)));
        Path junk = dir.resolve("junk.db");
        Files.writeString(junk, "not a database");
        e = assertThrows(IllegalArgumentException.class, () -> Study.open(junk));
        assertTrue(e.getMessage().contains("not a limactl study"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Study.open(dir.resolve("none.db")));
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
    }

    static Study.Spec spec(Path[] f, List<String> names, int overlap) {
        return new Study.Spec(Study.Mode.PAIRWISE, f[0], f[1], names, overlap, "", 0);
    }

    @Test
    void answersAreCheckedOnTheServerSide() throws Exception {
        Study s = pairwise(6, List.of("ann", "bob"), 2);
        List<Study.Shown> ann = s.queue("ann");
        int mine = ann.get(0).itemId();
        int notMine = s.queue("bob").stream().filter(x -> !x.shared()).findFirst().orElseThrow().itemId();
        assertThrows(Study.NotYours.class, () -> s.answer("ann", notMine, "A", 1.0, null));
        assertThrows(Study.NotYours.class, () -> s.answer("ann", 9999, "A", 1.0, null));
        for (String bad : new String[] {"a", "C", "", "pass", "A "}) {
            assertThrows(IllegalArgumentException.class, () -> s.answer("ann", mine, bad, 1.0, null), bad);
        }
        assertThrows(IllegalArgumentException.class, () -> s.answer("ann", mine, null, 1.0, null));
        for (double bad : new double[] {-1, Double.NaN, Double.POSITIVE_INFINITY, 1e9}) {
            assertThrows(IllegalArgumentException.class, () -> s.answer("ann", mine, "A", bad, null), Double.toString(bad));
        }
        assertThrows(IllegalArgumentException.class, () -> s.answer("ann", mine, "A", 1.0, "x".repeat(4001)));
        assertTrue(s.answers().isEmpty());
        s.answer("ann", mine, "A", 3.5, "clear");
        s.answer("ann", mine, "neither", 4.0, null);  // a changed answer replaces the first
        List<Study.Answer> got = s.answers();
        assertEquals(1, got.size());
        assertEquals("neither", got.get(0).choice());
        assertEquals("tie", got.get(0).label());
        assertEquals(4.0, got.get(0).seconds());
        assertNull(got.get(0).note());
    }

    @Test
    void labelsFollowTheSideOurResponseWasShownOn() {
        assertEquals("win", Study.label("A", true));
        assertEquals("loss", Study.label("A", false));
        assertEquals("loss", Study.label("B", true));
        assertEquals("win", Study.label("B", false));
        assertEquals("tie", Study.label("neither", false));
    }

    record Page(int status, String body, String location, java.net.http.HttpHeaders headers) {}

    Page get(String url) throws Exception {
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(url)).build(), HttpResponse.BodyHandlers.ofString());
        return new Page(r.statusCode(), r.body(), r.headers().firstValue("Location").orElse(null), r.headers());
    }

    Page post(String url, Map<String, String> form, String origin) throws Exception {
        StringBuilder b = new StringBuilder();
        for (var e : form.entrySet()) {
            if (b.length() > 0) b.append('&');
            b.append(URLEncoder.encode(e.getKey(), StandardCharsets.UTF_8)).append('=').append(URLEncoder.encode(e.getValue(), StandardCharsets.UTF_8));
        }
        HttpRequest.Builder rb = HttpRequest.newBuilder(URI.create(url)).header("Content-Type", "application/x-www-form-urlencoded")
                .POST(HttpRequest.BodyPublishers.ofString(b.toString()));
        if (origin != null) rb.header("Origin", origin);
        HttpResponse<String> r = http.send(rb.build(), HttpResponse.BodyHandlers.ofString());
        return new Page(r.statusCode(), r.body(), r.headers().firstValue("Location").orElse(null), r.headers());
    }

    static String field(String html, String name) {
        Matcher m = Pattern.compile("name=\"" + name + "\" value=\"([^\"]*)\"").matcher(html);
        assertTrue(m.find(), "no " + name + " field in the page");
        return m.group(1);
    }

    @Test
    void theAppRefusesForgedAndForeignRequestsAndRendersModelOutputInert() throws Exception {
        Study s = pairwise(6, List.of("ann", "bob"), 6);
        List<String> log = java.util.Collections.synchronizedList(new ArrayList<>());
        try (StudyServer server = StudyServer.start(s, "127.0.0.1", 0, log::add)) {
            String base = "http://127.0.0.1:" + server.port();
            String ann = s.annotators().get(0).token(), bob = s.annotators().get(1).token();
            assertEquals(404, get(base + "/a/not-a-token").status());
            assertEquals(404, get(base + "/owner/" + ann).status(), "an annotator's token is not the owner's");
            // the item carrying a script, as ann sees it
            int scriptItem = s.queue("ann").stream().filter(x -> x.item().equals("p0")).findFirst().orElseThrow().itemId();
            Page p = get(base + "/a/" + ann + "?item=" + scriptItem);
            assertEquals(200, p.status());
            assertFalse(p.body().contains("<script>window.pwned"), "model output reached the page as markup");
            assertTrue(p.body().contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"), p.body());
            assertFalse(p.body().contains("<img src=x"));
            assertFalse(p.body().contains("href=\"javascript:"));
            assertTrue(p.body().contains("Say &lt;b&gt;hi&lt;/b&gt;"));
            assertFalse(p.body().contains("limactl.jsonl") || p.body().contains(">limactl<") || p.body().contains("baseline"),
                    "a model name is shown to the annotator");
            assertTrue(p.headers().firstValue("Content-Security-Policy").orElse("").contains("script-src 'self'"));
            assertEquals("no-referrer", p.headers().firstValue("Referrer-Policy").orElse(""));
            String csrf = field(p.body(), "csrf");
            // a code block is rendered as code
            Page code = get(base + "/a/" + ann + "?item=" + s.queue("ann").stream().filter(x -> x.item().equals("p1")).findFirst().orElseThrow().itemId());
            assertTrue(code.body().contains("<pre><code class=\"language-python\">print('1')"), code.body());

            String answer = base + "/a/" + ann + "/answer";
            Map<String, String> ok = Map.of("csrf", csrf, "item", Integer.toString(scriptItem), "choice", "B", "seconds", "12.5");
            assertEquals(403, post(answer, Map.of("item", "1", "choice", "A"), null).status(), "no CSRF token");
            assertEquals(403, post(answer, Map.of("csrf", "forged", "item", "1", "choice", "A"), null).status());
            assertEquals(403, post(answer, ok, "http://evil.example").status(), "cross-origin post");
            assertEquals(403, post(base + "/a/" + bob + "/answer", ok, null).status(), "ann's form token under bob's link");
            assertEquals(404, post(base + "/a/nobody/answer", ok, null).status());
            Page bad = post(answer, Map.of("csrf", csrf, "item", "1; DROP TABLE answers", "choice", "A"), null);
            assertEquals(400, bad.status());
            assertTrue(bad.body().contains("item must be an item number"), bad.body());
            assertEquals(400, post(answer, Map.of("csrf", csrf, "item", Integer.toString(scriptItem), "choice", "<b>"), null).status());
            assertEquals(400, post(answer, Map.of("csrf", csrf, "item", Integer.toString(scriptItem), "choice", "A", "seconds", "1e400"), null).status());
            assertEquals(400, post(answer, Map.of("csrf", csrf, "item", Integer.toString(scriptItem), "choice", "A", "seconds", "soon"), null).status());
            assertEquals(413, post(answer, Map.of("csrf", csrf, "item", "1", "choice", "A", "note", "x".repeat(200_000)), null).status());
            assertTrue(s.answers().isEmpty(), "a refused request wrote an answer");

            Page done = post(answer, ok, base);
            assertEquals(303, done.status(), done.body());
            assertTrue(done.location().startsWith("/a/" + ann + "?after="), done.location());
            List<Study.Answer> got = s.answers();
            assertEquals(1, got.size());
            assertEquals("B", got.get(0).choice());
            assertEquals(12.5, got.get(0).seconds());
            // bob's own page does not show ann's answer
            Page bobs = get(base + "/a/" + bob + "?item=" + scriptItem);
            assertFalse(bobs.body().contains("id=\"answered\""));
            assertTrue(get(base + "/a/" + ann + "?item=" + scriptItem).body().contains("answered: B"));
            // a second server on the same port: an error naming it
            var busy = assertThrows(java.io.UncheckedIOException.class, () -> StudyServer.start(s, "127.0.0.1", server.port(), l -> { }));
            assertTrue(busy.getMessage().startsWith("cannot listen on 127.0.0.1:" + server.port()), busy.getMessage());
            // the log names no token
            assertTrue(log.stream().anyMatch(l -> l.startsWith("POST /a/.../answer 303")), log.toString());
            assertTrue(log.stream().noneMatch(l -> l.contains(ann) || l.contains(bob)), log.toString());
        }
    }

    @Test
    void concurrentAnnotatorsLoseNothingAndAReopenedStudyKeepsEveryAnswer() throws Exception {
        List<String> names = List.of("a1", "a2", "a3", "a4");
        Study s = pairwise(30, names, 30);
        try (StudyServer server = StudyServer.start(s, "127.0.0.1", 0, l -> { })) {
            String base = "http://127.0.0.1:" + server.port();
            ExecutorService pool = Executors.newFixedThreadPool(names.size());
            List<Future<Integer>> fs = new ArrayList<>();
            for (Study.Annotator a : s.annotators()) {
                fs.add(pool.submit(() -> {
                    int n = 0;
                    String url = base + "/a/" + a.token();
                    while (true) {
                        Page p = get(url);
                        if (p.body().contains("id=\"all-done\"")) return n;
                        String item = field(p.body(), "item");
                        Page r = post(base + "/a/" + a.token() + "/answer", Map.of("csrf", field(p.body(), "csrf"), "item", item,
                                "choice", List.of("A", "B", "neither").get(n % 3), "seconds", "1"), null);
                        assertEquals(303, r.status(), r.body());
                        url = base + r.location();
                        n++;
                    }
                }));
            }
            for (Future<Integer> f : fs) assertEquals(30, f.get());
            pool.shutdown();
        }
        Study reopened = Study.open(dir.resolve("study.db"));
        assertEquals(120, reopened.answers().size());
        for (String n : names) assertTrue(reopened.queue(n).stream().allMatch(x -> x.choice() != null));
    }

    @Test
    void exportRoundTripsThroughAgreementWithKnownAnswers() throws Exception {
        Study s = pairwise(4, List.of("ann", "bob"), 4);
        // ann prefers ours on every item; bob on p0 and p1, a tie on p2, the baseline on p3
        Map<String, String> bobWants = Map.of("p0", "win", "p1", "win", "p2", "tie", "p3", "loss");
        for (Study.Annotator a : s.annotators()) {
            for (Study.Shown x : s.queue(a.name())) {
                String want = a.name().equals("ann") ? "win" : bobWants.get(x.item());
                String choice = want.equals("tie") ? "neither" : (want.equals("win") == x.oursFirst()) ? "A" : "B";
                s.answer(a.name(), x.itemId(), choice, 2.0, null);
            }
        }
        Path jsonl = dir.resolve("answers.jsonl"), csv = dir.resolve("answers.csv");
        assertEquals(8, Results.export(s, jsonl));
        assertEquals(8, Results.export(s, csv));
        JsonNode first = JSON.readTree(Files.readAllLines(jsonl).get(0));
        for (String k : List.of("annotator", "item", "label", "choice", "shown_order", "shared", "seconds", "note", "answered_at")) {
            assertTrue(first.has(k), "export lacks " + k + ": " + first);
        }
        for (Path f : List.of(jsonl, csv)) {
            Map<String, Map<String, String>> all = Annotations.readAll(f);
            assertEquals(List.of("ann", "bob"), new ArrayList<>(all.keySet()));
            assertEquals(bobWants, all.get("bob"));
            Evaluation.Agreement g = Evaluation.agreement(all.get("ann"), all.get("bob"), "tie");
            // 1 + 1 + 0.5 + 0 over 4 items
            assertEquals(0.625, g.score().mean(), 1e-12);
            assertEquals(4, g.score().n());
        }
        var e = assertThrows(IllegalArgumentException.class, () -> Annotations.read(jsonl));
        assertTrue(e.getMessage().contains("--humans"), e.getMessage());
        List<Evaluation.PairAgreement> pairs = Results.agreement(s);
        assertEquals(1, pairs.size());
        assertEquals(0.625, pairs.get(0).agreement().score().mean(), 1e-12);
        Path report = Results.report(s, dir.resolve("report"));
        assertTrue(Files.size(report) > 1000);
        JsonNode r = JSON.readTree(dir.resolve("report/human-pairwise.json").toFile());
        // 8 verdicts: ann 4 wins; bob 2 wins, 1 tie, 1 loss
        assertEquals(8, r.at("/results/0/verdicts").size());
        assertEquals(75.0, countPct(r, "win"), 1e-9);
    }

    private static double countPct(JsonNode r, String v) {
        int n = 0, all = 0;
        for (JsonNode x : r.at("/results/0/verdicts")) {
            all++;
            if (x.asText().equals(v)) n++;
        }
        return 100.0 * n / all;
    }

    @Test
    void absoluteStudiesGradeOneResponse() throws Exception {
        Path[] f = answers(3);
        Study s = Study.create(dir.resolve("abs.db"), new Study.Spec(Study.Mode.ABSOLUTE, f[0], null, List.of("ann"), 50, "", 1));
        assertEquals(3, s.queue("ann").size());
        int id = s.queue("ann").get(0).itemId();
        assertThrows(IllegalArgumentException.class, () -> s.answer("ann", id, "A", 1.0, null));
        s.answer("ann", id, "excellent", 1.0, null);
        assertEquals("excellent", s.answers().get(0).label());
        try (StudyServer server = StudyServer.start(s, "127.0.0.1", 0, l -> { })) {
            Page p = get("http://127.0.0.1:" + server.port() + "/a/" + s.annotators().get(0).token());
            assertTrue(p.body().contains("data-key=\"f\"") && p.body().contains("data-key=\"e\"") && !p.body().contains("Response B"), p.body());
        }
    }
}
