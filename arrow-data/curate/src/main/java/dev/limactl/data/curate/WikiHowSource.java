package dev.limactl.data.curate;

import dev.limactl.data.DataFormatException;
import dev.limactl.data.Example;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Consumer;

/**
 * wikiHow articles from a CSV with one row per step ({@code title, heading, paragraph}, optional
 * {@code category}), as in the public wikiHow summarisation data. Rows are grouped into articles by
 * title; the prompt is the title as a question ("How to cook an omelette?"), the response the body.
 */
public final class WikiHowSource {
    /** Sections LIMA pruned as boilerplate. */
    static final Set<String> BOILERPLATE = Set.of("tips", "warnings", "things you'll need", "references", "sources and citations",
            "related wikihows", "video");

    public record Article(String title, String category, String body, int steps) {}

    private WikiHowSource() {}

    /** Reads articles in file order; CSV errors name the file and record; with skip, bad records are counted. */
    public static List<Article> read(Path csv, boolean skipBad, Consumer<Rejection> rejected) {
        Map<String, StringBuilder> bodies = new LinkedHashMap<>();
        Map<String, String> categories = new LinkedHashMap<>();
        Map<String, Integer> steps = new LinkedHashMap<>();
        Consumer<String> broken = skipBad ? msg -> rejected.accept(new Rejection("wikihow", "broken-csv", "malformed-record", msg)) : null;
        CsvRecords.read(csv, "wikiHow", List.of("title", "paragraph"), "title, heading, paragraph", broken, (rec, no, line, header) -> {
            if (rec.size() != header.size()) {
                String msg = csv + ": record " + no + " (line " + line + ") has " + rec.size() + " fields, the header has " + header.size();
                if (!skipBad) throw new DataFormatException(msg);
                rejected.accept(new Rejection("wikihow", "record-" + no, "malformed-record", msg));
                return;
            }
            String title = rec.get("title").strip();
            String heading = rec.isMapped("heading") ? rec.get("heading").strip() : "";
            if (BOILERPLATE.contains(heading.toLowerCase(Locale.ROOT).replaceAll("[.:]$", ""))) return;
            String para = clean(rec.get("paragraph"));
            if (title.isEmpty() || para.isEmpty()) return;
            StringBuilder b = bodies.computeIfAbsent(title, k -> new StringBuilder());
            steps.merge(title, 1, Integer::sum);
            b.append(b.length() == 0 ? "" : "\n\n").append(steps.get(title)).append(". ").append(para);
            if (rec.isMapped("category")) categories.putIfAbsent(title, rec.get("category").strip());
        });
        List<Article> out = new ArrayList<>();
        bodies.forEach((t, b) -> out.add(new Article(t, categories.getOrDefault(t, ""), leadIn(b.toString()), steps.get(t))));
        return out;
    }

    /**
     * The title as a question: "How to Remove Lint from Clothes: 14+ Easy Methods" -> "How to Remove
     * Lint from Clothes?", "5 Ways to Take Care of Your Skin - wikiHow" -> "How to Take Care of Your Skin?".
     */
    public static String prompt(String title) {
        String t = title.replaceFirst("\\s+-\\s+wikiHow.*$", "").replaceFirst("\\s*[:(].*$", "").strip();
        t = t.replaceFirst("^\\d+\\+?\\s+(?:\\w+\\s+)?(?:Ways|Steps|Tips|Methods)\\s+(?:to|for)\\s+", "How to ");
        return t.endsWith("?") ? t : t + "?";
    }

    /** LIMA's rewrite: a body starting "This article..." starts "The following answer..." instead. */
    static String leadIn(String body) {
        return body.replaceFirst("^(\\d+\\. )?This article", "$1The following answer");
    }

    /** Links, images and wiki markup pruned from a paragraph. */
    static String clean(String p) {
        return p.replaceAll("\\[\\[(?:Image|File):[^\\]]*\\]\\]", "").replaceAll("https?://\\S+", "")
                .replaceAll("[ \\t]+", " ").replaceAll("\\s*\\n\\s*", "\n").strip();
    }

    /** The examples of a wikihow block: a category first, then an article of it. */
    static List<Example> sample(Recipe.WikiHow s, Recipe.Context ctx, Random rnd) {
        List<Article> all = read(ctx.path(s.path()), ctx.skipBadRecords(), ctx.rejected());
        Map<String, List<Article>> byCat = new TreeMap<>();
        for (Article a : all) byCat.computeIfAbsent(a.category(), k -> new ArrayList<>()).add(a);
        if (byCat.keySet().equals(java.util.Set.of(""))) {
            ctx.note().accept("wikihow (" + s.path() + "): no category column, so articles are sampled uniformly instead of category first");
        }
        for (List<Article> l : byCat.values()) Collections.shuffle(l, rnd);
        List<String> cats = new ArrayList<>(byCat.keySet());
        List<Example> out = new ArrayList<>();
        int n = s.count();
        while (out.size() < n && !cats.isEmpty()) {
            String c = cats.get(rnd.nextInt(cats.size()));  // a category first, then an article of it
            List<Article> l = byCat.get(c);
            Article a = l.remove(l.size() - 1);
            if (l.isEmpty()) cats.remove(c);
            Map<String, String> prov = new LinkedHashMap<>();
            prov.put("title", a.title());
            if (!a.category().isEmpty()) prov.put("category", a.category());
            prov.put("license", "CC BY-NC-SA 3.0");
            out.add(Example.of("wikihow-" + slug(a.title()), "wikihow", s.split(), prompt(a.title()), a.body(), prov));
        }
        return out;
    }


    private static String slug(String s) {
        return s.toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9]+", "-").replaceAll("(^-|-$)", "");
    }
}
