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
    private final Consumer<String> progress;
    private final List<Rejection> rejected = new ArrayList<>();
    private final List<String> notes = new ArrayList<>();
    private final Recipe.Context context;

    /** base: the directory relative paths of the recipe resolve against. */
    public Curator(Recipe recipe, Path base, Consumer<String> progress) {
        this.recipe = recipe;
        this.progress = progress;
        this.context = new Recipe.Context(base, "skip".equals(recipe.onError()), rejected::add, notes::add, progress);
    }

    public Result run() {
        Map<String, List<Example>> splits = new LinkedHashMap<>();
        for (String s : List.of("train", "dev", "test")) splits.put(s, new ArrayList<>());
        for (int i = 0; i < recipe.sources().size(); i++) {
            Recipe.Source src = recipe.sources().get(i);
            Random rnd = new Random(MinHash.hash(recipe.seed() + "/source/" + i));  // decorrelated per block
            List<Example> got = src.sample(context, rnd);
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

}
