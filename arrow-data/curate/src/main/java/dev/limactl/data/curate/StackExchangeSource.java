package dev.limactl.data.curate;

import dev.limactl.data.DataFormatException;
import dev.limactl.data.Utf8Text;
import dev.limactl.data.Example;
import org.apache.commons.compress.archivers.sevenz.SevenZArchiveEntry;
import org.apache.commons.compress.archivers.sevenz.SevenZFile;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.function.Consumer;
import java.util.stream.Stream;
import javax.xml.stream.XMLInputFactory;
import javax.xml.stream.XMLStreamConstants;
import javax.xml.stream.XMLStreamException;
import javax.xml.stream.XMLStreamReader;

/**
 * One StackExchange exchange from its data dump: {@code Posts.xml} in a folder, or the {@code .7z}
 * archive the dumps ship as (read with Apache Commons Compress). Two streaming passes with StAX:
 * the first finds each question's top answer among answers scored at least min_answer_score (a few
 * numbers per such answer), the second keeps the bodies of only the max_candidates best-scored of
 * those questions and their answers, so memory does not grow with the size of the dump's text.
 */
public final class StackExchangeSource {
    /**
     * @param maxCandidates questions kept per exchange (the best scored): bounds the memory of the
     *                      second pass whatever the dump's size; LIMA samples at most a few hundred
     */
    public record Options(int minAnswerScore, int minAnswerChars, int maxAnswerChars, boolean requireQuestionTitle,
                          TextFilters filters, int maxCandidates) {
        public Options(int minAnswerScore, int minAnswerChars, int maxAnswerChars, boolean requireQuestionTitle, TextFilters filters) {
            this(minAnswerScore, minAnswerChars, maxAnswerChars, requireQuestionTitle, filters, 10_000);
        }
    }

    /** A question and its top answer that passed every filter, bodies in Markdown. */
    public record Candidate(String exchange, long questionId, long answerId, int questionScore, int answerScore,
                            String title, String questionMarkdown, String answerMarkdown) {
        public String url() {
            return "https://" + exchange + "/q/" + questionId;
        }
    }

    private record Top(long answerId, int score) {}

    private record Question(long id, int score, String title, String body) {}

    private StackExchangeSource() {}

    /** The Posts.xml of an exchange folder, or the folder's .7z archive. */
    public static Path postsFile(Path exchangeDir) {
        Path xml = exchangeDir.resolve("Posts.xml");
        if (Files.exists(xml)) return xml;
        try (var s = Files.list(exchangeDir)) {
            return s.filter(p -> p.getFileName().toString().endsWith(".7z")).sorted().findFirst()
                    .orElseThrow(() -> new DataFormatException("exchange folder " + exchangeDir + " has no Posts.xml and no .7z archive"));
        } catch (IOException e) {
            throw new DataFormatException("cannot list " + exchangeDir + ": " + e.getMessage(), e);
        }
    }

    /** Candidates of one exchange, best question score first (ties: lower id first). */
    public static List<Candidate> read(String exchange, Path posts, Options o, Consumer<Rejection> rejected) {
        Map<Long, Top> top = new HashMap<>();
        stream(posts, (line, a) -> {
            if (!"2".equals(a.get("PostTypeId"))) return;
            int score = intAttr(a, "Score", posts, line);
            if (score < o.minAnswerScore()) return;
            long q = longAttr(a, "ParentId", posts, line), id = longAttr(a, "Id", posts, line);
            Top t = top.get(q);
            if (t == null || score > t.score() || (score == t.score() && id < t.answerId())) top.put(q, new Top(id, score));
        });
        // Pass 2: the best maxCandidates questions (min-heap on score, then on -id) and their top answers.
        java.util.PriorityQueue<Question> best = new java.util.PriorityQueue<>(
                Comparator.comparingInt(Question::score).thenComparing(Question::id, Comparator.reverseOrder()));
        Map<Long, Question> questions = new HashMap<>();
        Map<Long, String> answers = new HashMap<>();
        Map<Long, Long> answerOf = new HashMap<>();
        top.forEach((q, t) -> answerOf.put(t.answerId(), q));
        stream(posts, (line, a) -> {
            String type = a.get("PostTypeId");
            if ("1".equals(type)) {
                long id = longAttr(a, "Id", posts, line);
                if (!top.containsKey(id)) return;
                Question q = new Question(id, intAttr(a, "Score", posts, line), a.getOrDefault("Title", ""), a.getOrDefault("Body", ""));
                best.add(q);
                questions.put(id, q);
                if (best.size() > o.maxCandidates()) {
                    Question out = best.poll();
                    questions.remove(out.id());
                    answers.remove(top.get(out.id()).answerId());
                }
            } else if ("2".equals(type)) {
                long id = longAttr(a, "Id", posts, line);
                Long q = answerOf.get(id);
                if (q != null && questions.containsKey(q)) answers.put(id, a.getOrDefault("Body", ""));
            }
        });
        List<Candidate> out = new ArrayList<>();
        for (Map.Entry<Long, Top> e : top.entrySet()) {
            long qid = e.getKey();
            Question q = questions.get(qid);
            String id = exchange + "/" + qid;
            if (q == null) {
                rejected.accept(new Rejection("stackexchange", id, "not-in-top-questions",
                        "not among the " + o.maxCandidates() + " best-scored questions, or no question row"));
                continue;
            }
            if (o.requireQuestionTitle() && !isQuestionTitle(q.title())) {
                rejected.accept(new Rejection("stackexchange", id, "title-not-self-contained", q.title()));
                continue;
            }
            String answer = HtmlToMarkdown.convert(answers.getOrDefault(e.getValue().answerId(), ""));
            String rule = null, detail = null;
            if (answer.length() < o.minAnswerChars()) {
                rule = "answer-too-short";
                detail = answer.length() + " < " + o.minAnswerChars() + " characters";
            } else if (answer.length() > o.maxAnswerChars()) {
                rule = "answer-too-long";
                detail = answer.length() + " > " + o.maxAnswerChars() + " characters";
            } else if ((detail = o.filters().firstPerson(answer)) != null) {
                rule = "first-person";
                detail = "\"" + detail + "\"";
            } else if ((detail = o.filters().reference(answer)) != null) {
                rule = "refers-to-other-answers";
                detail = "\"" + detail + "\"";
            }
            if (rule != null) {
                rejected.accept(new Rejection("stackexchange", id, rule, detail));
                continue;
            }
            out.add(new Candidate(exchange, qid, e.getValue().answerId(), q.score(), e.getValue().score(), q.title(),
                    HtmlToMarkdown.convert(q.body()), answer));
        }
        out.sort(Comparator.comparingInt(Candidate::questionScore).reversed().thenComparingLong(Candidate::questionId));
        return out;
    }

    /** "How do I ...?", "What is ...": a title that asks the whole question. */
    static boolean isQuestionTitle(String title) {
        String t = title.strip();
        if (t.length() < 10) return false;
        if (t.endsWith("?")) return true;
        String first = t.split("\\s+", 2)[0].toLowerCase(Locale.ROOT);
        return List.of("how", "what", "why", "when", "where", "which", "who", "is", "are", "can", "does", "do", "should",
                "will", "would", "could").contains(first);
    }

    interface RowHandler {
        void row(int line, Map<String, String> attrs);
    }

    /** Streams the row elements of a Posts.xml (plain or in a .7z), attributes unescaped by the XML parser. */
    public static void stream(Path posts, RowHandler h) {
        try {
            if (posts.getFileName().toString().endsWith(".7z")) {
                try (SevenZFile z = SevenZFile.builder().setPath(posts).get()) {
                    SevenZArchiveEntry entry;
                    while ((entry = z.getNextEntry()) != null) {
                        if (entry.getName().endsWith("Posts.xml")) {
                            parse(z.getInputStream(entry), posts + "!" + entry.getName(), h);
                            return;
                        }
                    }
                    throw new DataFormatException(posts + ": the archive holds no Posts.xml");
                }
            }
            try (InputStream in = Files.newInputStream(posts)) {
                parse(in, posts.toString(), h);
            }
        } catch (IOException e) {
            throw new DataFormatException("cannot read " + posts + ": " + e.getMessage(), e);
        }
    }

    private static void parse(InputStream raw, String name, RowHandler h) throws IOException {
        // strict UTF-8 (an invalid byte is an error naming its line), a leading BOM dropped
        java.io.Reader in = Utf8Text.reader(raw, name);
        XMLInputFactory f = XMLInputFactory.newFactory();
        f.setProperty(XMLInputFactory.SUPPORT_DTD, false);
        f.setProperty(XMLInputFactory.IS_SUPPORTING_EXTERNAL_ENTITIES, false);
        // Dumps escape every body's HTML (&lt;p&gt;...): the JDK parser's default 50M cap on the total
        // size of expanded entities stops real multi-GB files. With DTDs off only the five predefined
        // entities exist, so lifting the cap allows no entity expansion attack.
        for (String k : new String[] {"jdk.xml.totalEntitySizeLimit", "jdk.xml.maxGeneralEntitySizeLimit"}) {
            try {
                f.setProperty(k, 0);
            } catch (IllegalArgumentException unsupportedByThisParser) {
                // another StAX implementation without these limits
            }
        }
        XMLStreamReader r = null;
        try {
            r = f.createXMLStreamReader(in);
            Map<String, String> attrs = new HashMap<>();
            boolean root = true;
            long rows = 0;
            while (r.hasNext()) {
                if (r.next() != XMLStreamConstants.START_ELEMENT) continue;
                if (root) {  // a dump's Posts.xml is <posts><row .../>...</posts>
                    if (!r.getLocalName().equals("posts")) {
                        throw new DataFormatException(name + ":" + r.getLocation().getLineNumber() + ": the root element is <" + r.getLocalName()
                                + ">, not <posts>: not a StackExchange Posts.xml");
                    }
                    root = false;
                } else if (r.getLocalName().equals("row")) {
                    attrs.clear();
                    for (int i = 0; i < r.getAttributeCount(); i++) attrs.put(r.getAttributeLocalName(i), r.getAttributeValue(i));
                    h.row(r.getLocation().getLineNumber(), attrs);
                    rows++;
                }
            }
            if (rows == 0) throw new DataFormatException(name + ": holds no <row> elements (an empty or truncated Posts.xml)");
        } catch (XMLStreamException e) {
            int line = e.getLocation() == null ? -1 : e.getLocation().getLineNumber();
            throw new DataFormatException(name + ":" + line + ": malformed XML: " + e.getMessage().replaceAll("\\s+", " "), e);
        } finally {
            if (r != null) {
                try {
                    r.close();
                } catch (XMLStreamException ignored) {
                    // closing a reader that already failed
                }
            }
        }
    }

    private static long longAttr(Map<String, String> a, String key, Path file, int line) {
        String v = a.get(key);
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException | NullPointerException e) {
            throw new DataFormatException(file + ":" + line + ": row attribute " + key + " is " + (v == null ? "missing" : "\"" + v + "\""));
        }
    }

    private static int intAttr(Map<String, String> a, String key, Path file, int line) {
        return Math.toIntExact(longAttr(a, key, file, line));
    }

    /** The examples of a stackexchange block (see Recipe.StackExchange). */
    static List<Example> sample(Recipe.StackExchange s, Recipe.Context ctx, Random rnd) {
        Path root = ctx.path(s.path());
        List<Path> exchanges;
        try (Stream<Path> st = Files.list(root)) {
            exchanges = st.filter(Files::isDirectory).sorted().toList();
        } catch (IOException e) {
            throw new DataFormatException("StackExchange folder " + root + " cannot be listed: " + e.getMessage(), e);
        }
        if (exchanges.isEmpty()) throw new DataFormatException("StackExchange folder " + root + " holds no exchange folders");
        List<String> stem = s.stemExchanges();
        Options o = new Options(s.minAnswerScore(), s.minAnswerChars(), s.maxAnswerChars(), s.requireQuestionTitle(),
                new TextFilters(s.firstPerson(), s.references()), s.maxCandidates());
        Map<String, Map<String, List<Candidate>>> groups = new TreeMap<>();
        for (Path ex : exchanges) {
            String name = ex.getFileName().toString();
            List<Candidate> c = read(name, postsFile(ex), o, ctx.rejected());
            String group = stem.contains(Curator.shortName(name)) ? "stem" : "other";
            groups.computeIfAbsent(group, k -> new TreeMap<>()).put(name, new ArrayList<>(c));
            ctx.progress().accept("stackexchange " + name + " (" + group + "): " + c.size() + " candidates");
        }
        Map<String, Integer> want = s.groups();
        double temperature = s.temperature(), bodyP = s.promptBodyProbability();
        List<Example> out = new ArrayList<>();
        for (String g : List.of("stem", "other")) {
            int n = want.getOrDefault(g, 0);
            for (Candidate c : sampleByTemperature(groups.getOrDefault(g, Map.of()), n, temperature, rnd)) {
                boolean useBody = !c.questionMarkdown().isBlank() && rnd.nextDouble() < bodyP;
                Map<String, String> prov = new LinkedHashMap<>();
                prov.put("exchange", c.exchange());
                prov.put("group", g);
                prov.put("question_id", Long.toString(c.questionId()));
                prov.put("answer_id", Long.toString(c.answerId()));
                prov.put("question_score", Integer.toString(c.questionScore()));
                prov.put("answer_score", Integer.toString(c.answerScore()));
                prov.put("prompt_from", useBody ? "body" : "title");
                prov.put("url", c.url());
                prov.put("license", "CC BY-SA");
                out.add(Example.of("se-" + Curator.shortName(c.exchange()) + "-" + c.questionId(), "stackexchange", s.split(),
                        useBody ? c.questionMarkdown() : c.title(), c.answerMarkdown(), prov));
            }
        }
        return out;
    }


    /**
     * LIMA's sampling over exchanges: each draw picks exchange e with probability proportional to
     * size_e^(1/T) among those with candidates left, and takes its best remaining question.
     */
    static <T> List<T> sampleByTemperature(Map<String, List<T>> byExchange, int n, double temperature, Random rnd) {
        Map<String, Integer> size = new TreeMap<>();
        Map<String, Integer> next = new TreeMap<>();
        byExchange.forEach((k, v) -> {
            size.put(k, v.size());
            next.put(k, 0);
        });
        List<T> out = new ArrayList<>();
        while (out.size() < n) {
            double total = 0;
            for (var e : size.entrySet()) if (next.get(e.getKey()) < e.getValue()) total += Math.pow(e.getValue(), 1.0 / temperature);
            if (total == 0) break;
            double x = rnd.nextDouble() * total;
            String pick = null;
            for (var e : size.entrySet()) {
                if (next.get(e.getKey()) >= e.getValue()) continue;
                pick = e.getKey();
                x -= Math.pow(e.getValue(), 1.0 / temperature);
                if (x < 0) break;
            }
            int i = next.get(pick);
            out.add(byExchange.get(pick).get(i));
            next.put(pick, i + 1);
        }
        return out;
    }
}
