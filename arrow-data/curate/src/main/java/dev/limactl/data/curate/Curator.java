package dev.limactl.data.curate;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.data.ArrowExamples;
import dev.limactl.data.AtomicFiles;
import dev.limactl.data.DataFormatException;
import dev.limactl.data.Example;
import dev.limactl.data.JsonlExamples;
import dev.limactl.data.Turn;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.function.Consumer;
import java.util.function.ToIntFunction;
import java.util.stream.Stream;

/**
 * Runs a {@link Recipe}: every source block yields examples for its split, then exact and near
 * duplicates are removed, train is decontaminated against dev/test prompts, and the result is
 * written as one Arrow file per split plus {@code manifest.json} (the paper's Table 1: counts and
 * mean prompt/response lengths per source) and {@code rejected.jsonl} (every rejected candidate with
 * the rule that rejected it). All randomness comes from the recipe's seed: same recipe, same
 * inputs, same seed give byte-identical files.
 */
public final class Curator {
    public record Result(Map<String, List<Example>> splits, List<Rejection> rejected, List<String> notes) {}

    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private final Recipe recipe;
    private final Path base;
    private final Consumer<String> progress;
    private final List<Rejection> rejected = new ArrayList<>();
    private final List<String> notes = new ArrayList<>();

    /** base: the directory relative paths of the recipe resolve against. */
    public Curator(Recipe recipe, Path base, Consumer<String> progress) {
        this.recipe = recipe;
        this.base = base;
        this.progress = progress;
    }

    public Result run() {
        Map<String, List<Example>> splits = new LinkedHashMap<>();
        for (String s : List.of("train", "dev", "test")) splits.put(s, new ArrayList<>());
        for (int i = 0; i < recipe.sources().size(); i++) {
            Recipe.Source src = recipe.sources().get(i);
            Random rnd = new Random(MinHash.hash(recipe.seed() + "/source/" + i));  // decorrelated per block
            List<Example> got = switch (src.type()) {
                case "stackexchange" -> stackExchange(src, rnd);
                case "wikihow" -> wikiHow(src, rnd);
                case "writingprompts" -> writingPrompts(src);
                case "super-ni" -> superNi(src, rnd);
                case "manual" -> ManualSource.read(path(src.path()), src.split());
                case "jsonl" -> JsonlExamples.read(path(src.path()), src.split()).stream()
                        .map(e -> new Example(e.id(), e.source(), src.split(), e.turns(), e.provenance())).toList();
                default -> throw new IllegalStateException(src.type());
            };
            if (src.count() != null && got.size() < src.count()) {
                notes.add(src.type() + " (" + src.path() + "): asked for " + src.count() + " examples, found " + got.size());
            }
            progress.accept(src.type() + " -> " + src.split() + ": " + got.size() + " examples");
            splits.get(src.split()).addAll(got);
        }
        dedupAndDecontaminate(splits);
        splits.values().removeIf(List::isEmpty);
        return new Result(splits, rejected, notes);
    }

    private Path path(String p) {
        Path q = Path.of(p);
        return q.isAbsolute() ? q : base.resolve(q).normalize();
    }

    private boolean skipBad() {
        return "skip".equals(recipe.onError());
    }

    // ------------------------------------------------------------------ sources

    private List<Example> stackExchange(Recipe.Source s, Random rnd) {
        Path root = path(s.path());
        List<Path> exchanges;
        try (Stream<Path> st = Files.list(root)) {
            exchanges = st.filter(Files::isDirectory).sorted().toList();
        } catch (IOException e) {
            throw new DataFormatException("StackExchange folder " + root + " cannot be listed: " + e.getMessage(), e);
        }
        if (exchanges.isEmpty()) throw new DataFormatException("StackExchange folder " + root + " holds no exchange folders");
        List<String> stem = s.stemExchanges() != null ? s.stemExchanges() : StemExchanges.PAPER;
        TextFilters f = new TextFilters(s.firstPerson() != null ? s.firstPerson() : Recipe.FIRST_PERSON,
                s.references() != null ? s.references() : Recipe.REFERENCES);
        StackExchangeSource.Options o = new StackExchangeSource.Options(orElse(s.minAnswerScore(), 10), orElse(s.minAnswerChars(), 1200),
                orElse(s.maxAnswerChars(), 4096), s.requireQuestionTitle() == null || s.requireQuestionTitle(), f,
                orElse(s.maxCandidates(), 10_000));
        Map<String, Map<String, List<StackExchangeSource.Candidate>>> groups = new TreeMap<>();
        for (Path ex : exchanges) {
            String name = ex.getFileName().toString();
            List<StackExchangeSource.Candidate> c = StackExchangeSource.read(name, StackExchangeSource.postsFile(ex), o, rejected::add);
            String group = stem.contains(shortName(name)) ? "stem" : "other";
            groups.computeIfAbsent(group, k -> new TreeMap<>()).put(name, new ArrayList<>(c));
            progress.accept("stackexchange " + name + " (" + group + "): " + c.size() + " candidates");
        }
        Map<String, Integer> want = s.groups() != null ? s.groups() : Map.of("stem", 200, "other", 200);
        for (String g : want.keySet()) {
            if (!g.equals("stem") && !g.equals("other")) throw new DataFormatException("stackexchange groups must be stem and other, got " + g);
        }
        double temperature = s.temperature() == null ? 3.0 : s.temperature();
        double bodyP = s.promptBodyProbability() == null ? 0.5 : s.promptBodyProbability();
        List<Example> out = new ArrayList<>();
        for (String g : List.of("stem", "other")) {
            int n = want.getOrDefault(g, 0);
            for (StackExchangeSource.Candidate c : sampleByTemperature(groups.getOrDefault(g, Map.of()), n, temperature, rnd)) {
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
                out.add(Example.of("se-" + shortName(c.exchange()) + "-" + c.questionId(), "stackexchange", s.split(),
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

    private List<Example> wikiHow(Recipe.Source s, Random rnd) {
        List<WikiHowSource.Article> all = WikiHowSource.read(path(s.path()), skipBad(), rejected::add);
        Map<String, List<WikiHowSource.Article>> byCat = new TreeMap<>();
        for (WikiHowSource.Article a : all) byCat.computeIfAbsent(a.category(), k -> new ArrayList<>()).add(a);
        if (byCat.keySet().equals(java.util.Set.of(""))) {
            notes.add("wikihow (" + s.path() + "): no category column, so articles are sampled uniformly instead of category first");
        }
        for (List<WikiHowSource.Article> l : byCat.values()) Collections.shuffle(l, rnd);
        List<String> cats = new ArrayList<>(byCat.keySet());
        List<Example> out = new ArrayList<>();
        int n = s.countOr(200);
        while (out.size() < n && !cats.isEmpty()) {
            String c = cats.get(rnd.nextInt(cats.size()));  // a category first, then an article of it
            List<WikiHowSource.Article> l = byCat.get(c);
            WikiHowSource.Article a = l.remove(l.size() - 1);
            if (l.isEmpty()) cats.remove(c);
            Map<String, String> prov = new LinkedHashMap<>();
            prov.put("title", a.title());
            if (!a.category().isEmpty()) prov.put("category", a.category());
            prov.put("license", "CC BY-NC-SA 3.0");
            out.add(Example.of("wikihow-" + slug(a.title()), "wikihow", s.split(), WikiHowSource.prompt(a.title()), a.body(), prov));
        }
        return out;
    }

    private List<Example> writingPrompts(Recipe.Source s) {
        List<WritingPromptsSource.Pair> pairs = WritingPromptsSource.read(path(s.path()), skipBad(), rejected::add);
        if (s.selection() != null) {
            Path sel = path(s.selection());
            List<String> ids;
            try {
                ids = Files.readAllLines(sel).stream().map(String::strip).filter(l -> !l.isEmpty() && !l.startsWith("#")).toList();
            } catch (IOException e) {
                throw new DataFormatException("selection file " + sel + " cannot be read: " + e.getMessage(), e);
            }
            Map<String, WritingPromptsSource.Pair> byId = new LinkedHashMap<>();
            pairs.forEach(p -> byId.put(p.id(), p));
            List<WritingPromptsSource.Pair> chosen = new ArrayList<>();
            for (String id : ids) {
                WritingPromptsSource.Pair p = byId.get(id);
                if (p == null) throw new DataFormatException(sel + ": id " + id + " is not in " + s.path());
                chosen.add(p);
            }
            for (WritingPromptsSource.Pair p : pairs) {
                if (!ids.contains(p.id())) rejected.add(new Rejection("writingprompts", p.id(), "not-selected", "not in " + sel.getFileName()));
            }
            pairs = chosen;
        }
        List<Example> out = new ArrayList<>();
        for (WritingPromptsSource.Pair p : pairs.subList(0, Math.min(pairs.size(), s.countOr(150)))) {
            Map<String, String> prov = new LinkedHashMap<>();
            prov.put("row_id", p.id());
            if (p.score() != null) prov.put("score", p.score().toString());
            prov.put("license", "Reddit, research use");
            out.add(Example.of("wp-" + p.id(), "writingprompts", s.split(), p.prompt(), p.story(), prov));
        }
        return out;
    }

    private List<Example> superNi(Recipe.Source s, Random rnd) {
        List<SuperNiSource.Task> tasks = new ArrayList<>(SuperNiSource.read(path(s.path())));
        if (s.categories() != null) {
            tasks.removeIf(t -> t.categories().stream().noneMatch(c -> s.categories().stream().anyMatch(c::equalsIgnoreCase)));
        }
        tasks.removeIf(t -> t.instances().isEmpty());
        Collections.shuffle(tasks, rnd);
        List<Example> out = new ArrayList<>();
        for (SuperNiSource.Task t : tasks.subList(0, Math.min(tasks.size(), s.countOr(50)))) {
            SuperNiSource.Instance in = t.instances().get(rnd.nextInt(t.instances().size()));
            Map<String, String> prov = new LinkedHashMap<>();
            prov.put("task", t.name());
            prov.put("instance_id", in.id());
            prov.put("categories", String.join(",", t.categories()));
            prov.put("license", "Apache-2.0");
            out.add(Example.of("superni-" + in.id(), "super-ni", s.split(), t.definition() + "\n\n" + in.input(), in.output(), prov));
        }
        return out;
    }

    // ------------------------------------------------------------------ dedup

    /**
     * Exact duplicates (normalised full text), then near duplicates by MinHash on the full text or on
     * the response alone (the same answer under a differently worded prompt). Evaluation splits are
     * processed first and keep their examples. Decontamination then drops train examples whose prompt
     * or response is near an evaluation example's.
     */
    private void dedupAndDecontaminate(Map<String, List<Example>> splits) {
        Recipe.Dedup d = recipe.dedup() != null ? recipe.dedup() : new Recipe.Dedup(true, 0.8, 5, 128);
        Map<String, String> exact = new LinkedHashMap<>();
        MinHash full = new MinHash(d.shingle(), d.permutations(), recipe.seed());
        MinHash resp = new MinHash(d.shingle(), d.permutations(), recipe.seed() + 2);
        List<String> ids = new ArrayList<>();
        for (String split : List.of("test", "dev", "train")) {
            List<Example> kept = new ArrayList<>();
            for (Example e : splits.get(split)) {
                String key = fullText(e).toLowerCase(Locale.ROOT).replaceAll("\\s+", " ").strip();
                String dup = exact.putIfAbsent(key, e.id());
                if (dup != null) {
                    rejected.add(new Rejection(e.source(), e.id(), "exact-duplicate", "same text as " + dup));
                    continue;
                }
                if (d.enabled()) {
                    int j = full.addAndFind(fullText(e), d.threshold());
                    int k = resp.addAndFind(response(e), d.threshold());
                    ids.add(e.id());
                    if (j >= 0 || k >= 0) {
                        rejected.add(new Rejection(e.source(), e.id(), "near-duplicate",
                                (j >= 0 ? "similar to " : "response similar to ") + ids.get(j >= 0 ? j : k)));
                        continue;
                    }
                }
                kept.add(e);
            }
            splits.put(split, kept);
        }
        if (!recipe.decontaminate()) return;
        MinHash evalPrompt = new MinHash(d.shingle(), d.permutations(), recipe.seed() + 1);
        MinHash evalResponse = new MinHash(d.shingle(), d.permutations(), recipe.seed() + 3);
        List<String> evalIds = new ArrayList<>();
        for (String split : List.of("dev", "test")) {
            for (Example e : splits.get(split)) {
                evalPrompt.addAndFind(e.turns().get(0).text(), 2.0);  // threshold > 1: index only
                evalResponse.addAndFind(response(e), 2.0);
                evalIds.add(e.id());
            }
        }
        List<Example> train = new ArrayList<>();
        for (Example e : splits.get("train")) {
            int j = evalIds.isEmpty() ? -1 : evalPrompt.find(e.turns().get(0).text(), d.threshold());
            int k = evalIds.isEmpty() || j >= 0 ? -1 : evalResponse.find(response(e), d.threshold());
            if (j >= 0 || k >= 0) {
                rejected.add(new Rejection(e.source(), e.id(), "contaminates-eval",
                        (j >= 0 ? "prompt similar to " : "response similar to ") + evalIds.get(j >= 0 ? j : k)));
            } else {
                train.add(e);
            }
        }
        splits.put("train", train);
    }

    private static String response(Example e) {
        return e.turns().get(e.turns().size() - 1).text();
    }

    private static String fullText(Example e) {
        StringBuilder sb = new StringBuilder();
        for (Turn t : e.turns()) sb.append(t.text()).append('\n');
        return sb.toString();
    }

    // ------------------------------------------------------------------ output

    /** Writes {split}.arrow, manifest.json and rejected.jsonl into outDir. tokenCounter may be null. */
    public static void write(Result r, Path outDir, ToIntFunction<String> tokenCounter, Recipe recipe) {
        try {
            Files.createDirectories(outDir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the curated data to " + outDir + ": " + e.getMessage(), e);
        }
        for (var e : r.splits().entrySet()) ArrowExamples.write(outDir.resolve(e.getKey() + ".arrow"), e.getValue());
        AtomicFiles.replace(outDir.resolve("rejected.jsonl"), tmp -> {
            try (Writer w = Files.newBufferedWriter(tmp, StandardCharsets.UTF_8)) {
                ObjectMapper line = new ObjectMapper();
                for (Rejection x : r.rejected()) w.write(line.writeValueAsString(x) + "\n");
            }
        });
        try {
            AtomicFiles.writeString(outDir.resolve("manifest.json"), JSON.writeValueAsString(manifest(r, tokenCounter, recipe)) + "\n");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Per split and source: count and mean prompt/response length in characters (and tokens, given a tokenizer). */
    public static ObjectNode manifest(Result r, ToIntFunction<String> tokenCounter, Recipe recipe) {
        ObjectNode m = JSON.createObjectNode();
        m.put("format", "limactl-curation/1");
        if (recipe != null) m.put("seed", recipe.seed());
        ObjectNode splits = m.putObject("splits");
        r.splits().forEach((split, examples) -> splits.set(split, stats(examples, tokenCounter)));
        Map<String, Integer> rules = new TreeMap<>();
        r.rejected().forEach(x -> rules.merge(x.rule(), 1, Integer::sum));
        ObjectNode rej = m.putObject("rejected");
        rules.forEach(rej::put);
        m.putPOJO("notes", r.notes());
        return m;
    }

    public static ObjectNode stats(List<Example> examples, ToIntFunction<String> tokenCounter) {
        ObjectNode s = JSON.createObjectNode();
        s.put("count", examples.size());
        Map<String, List<Example>> bySource = new TreeMap<>();
        examples.forEach(e -> bySource.computeIfAbsent(e.source(), k -> new ArrayList<>()).add(e));
        ObjectNode src = s.putObject("sources");
        bySource.forEach((name, list) -> {
            ObjectNode o = src.putObject(name);
            o.put("count", list.size());
            o.put("prompt_chars_mean", round(list.stream().mapToInt(e -> e.turns().get(0).text().length()).average().orElse(0)));
            o.put("response_chars_mean", round(list.stream().mapToInt(e -> e.turns().get(1).text().length()).average().orElse(0)));
            if (tokenCounter != null) {
                o.put("prompt_tokens_mean", round(list.stream().mapToInt(e -> tokenCounter.applyAsInt(e.turns().get(0).text())).average().orElse(0)));
                o.put("response_tokens_mean", round(list.stream().mapToInt(e -> tokenCounter.applyAsInt(e.turns().get(1).text())).average().orElse(0)));
            }
            o.put("multi_turn", list.stream().filter(e -> e.turns().size() > 2).count());
        });
        return s;
    }

    private static double round(double x) {
        return Math.round(x * 10) / 10.0;
    }

    static String shortName(String exchange) {
        return exchange.replaceFirst("\\.stackexchange\\.com$", "").replaceFirst("\\.com$", "");
    }

    private static String slug(String s) {
        return s.toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9]+", "-").replaceAll("(^-|-$)", "");
    }

    private static int orElse(Integer v, int d) {
        return v == null ? d : v;
    }
}
