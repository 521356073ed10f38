package dev.limactl.data.curate;

import dev.limactl.data.DataFormatException;
import dev.limactl.data.Example;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * Reddit r/WritingPrompts prompt/story pairs from CSV ({@code row_id, prompt, story}, optional
 * {@code score}; other columns ignored). Text is detokenised from the fairseq form and tags such as
 * {@code [ WP ]} are stripped.
 */
public final class WritingPromptsSource {
    public record Pair(String id, String prompt, String story, Integer score) {}

    private WritingPromptsSource() {}

    public static List<Pair> read(Path csv, boolean skipBad, Consumer<Rejection> rejected) {
        List<Pair> out = new ArrayList<>();
        Consumer<String> broken = skipBad ? msg -> rejected.accept(new Rejection("writingprompts", "broken-csv", "malformed-record", msg))
                : null;
        CsvRecords.read(csv, "WritingPrompts", List.of("prompt", "story"), "prompt and story", broken, (rec, no, line, header) -> {
            String id = rec.isMapped("row_id") && rec.isSet("row_id") ? rec.get("row_id").strip() : Long.toString(no);
            if (!rec.isSet("story")) {
                String msg = csv + ": record " + no + " (line " + line + ") has no story field";
                if (!skipBad) throw new DataFormatException(msg);
                rejected.accept(new Rejection("writingprompts", id, "malformed-record", msg));
                return;
            }
            Integer score = null;
            if (rec.isMapped("score") && rec.isSet("score") && !rec.get("score").isBlank()) {
                try {
                    score = (int) Double.parseDouble(rec.get("score"));
                } catch (NumberFormatException e) {
                    throw new DataFormatException(csv + ": record " + no + " (line " + line + "): score \"" + rec.get("score")
                            + "\" is not a number");
                }
            }
            out.add(new Pair(id, stripTags(detokenize(rec.get("prompt"))), detokenize(rec.get("story")), score));
        });
        if (out.stream().allMatch(p -> p.score() != null)) out.sort(Comparator.comparing(Pair::score).reversed());
        return out;
    }

    /** Undoes the fairseq tokenisation: "do n't" -> "don't", "`` x ''" -> "\"x\"", " ," -> ",", "<newline>" -> newline. */
    public static String detokenize(String s) {
        String t = s.replace("<newline>", "\n").replace("\r", "");
        t = t.replaceAll(" ?`` ?", " \"").replaceAll(" ?'' ?", "\" ");
        t = t.replaceAll(" (n't|'s|'re|'ve|'m|'ll|'d)\\b", "$1");
        t = t.replaceAll(" ([,.;:!?%)\\]])", "$1").replaceAll("([(\\[$]) ", "$1");
        t = t.replaceAll("\" ([^\"]*?) \"", "\"$1\"");
        t = t.replaceAll("[ \\t]+", " ").replaceAll(" *\\n *", "\n").replaceAll("\n{3,}", "\n\n");
        return t.strip();
    }

    /** Strips leading tags such as "[ WP ]", "[ FF ] [ MP ]". */
    public static String stripTags(String prompt) {
        return prompt.replaceAll("^(\\s*\\[\\s*[A-Za-z]{2,3}\\s*\\]\\s*)+", "").strip();
    }

    /** The examples of a writingprompts block, narrowed to its selection file when it has one. */
    static List<Example> sample(Recipe.WritingPrompts s, Recipe.Context ctx) {
        List<Pair> pairs = read(ctx.path(s.path()), ctx.skipBadRecords(), ctx.rejected());
        if (s.selection() != null) {
            Path sel = ctx.path(s.selection());
            List<String> ids;
            try {
                ids = dev.limactl.data.Utf8Text.lines(sel).stream().map(String::strip).filter(l -> !l.isEmpty() && !l.startsWith("#")).toList();
            } catch (IOException e) {
                throw new DataFormatException("selection file " + sel + " cannot be read: " + e.getMessage(), e);
            }
            Map<String, Pair> byId = new LinkedHashMap<>();
            pairs.forEach(p -> byId.put(p.id(), p));
            List<Pair> chosen = new ArrayList<>();
            for (String id : ids) {
                Pair p = byId.get(id);
                if (p == null) throw new DataFormatException(sel + ": id " + id + " is not in " + s.path());
                chosen.add(p);
            }
            for (Pair p : pairs) {
                if (!ids.contains(p.id())) ctx.rejected().accept(new Rejection("writingprompts", p.id(), "not-selected", "not in " + sel.getFileName()));
            }
            pairs = chosen;
        }
        List<Example> out = new ArrayList<>();
        for (Pair p : pairs.subList(0, Math.min(pairs.size(), s.count()))) {
            Map<String, String> prov = new LinkedHashMap<>();
            prov.put("row_id", p.id());
            if (p.score() != null) prov.put("score", p.score().toString());
            prov.put("license", "Reddit, research use");
            out.add(Example.of("wp-" + p.id(), "writingprompts", s.split(), p.prompt(), p.story(), prov));
        }
        return out;
    }
}
