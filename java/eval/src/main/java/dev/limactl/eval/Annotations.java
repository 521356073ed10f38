package dev.limactl.eval;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.commons.csv.CSVFormat;
import org.apache.commons.csv.CSVRecord;

/**
 * One annotator's labels per item, for agreement: human judgements as JSONL {@code {"item", "label"}}
 * or CSV with columns {@code item,label}, or a {@code pairwise.json} report of limactl (the judge's
 * verdicts). Labels are compared lower-case.
 */
public final class Annotations {
    private Annotations() {}

    /** One annotator's labels; a file that holds several annotators' (an export of a study) is refused, naming them. */
    public static Map<String, String> read(Path file) {
        Map<String, Map<String, String>> all = readAll(file);
        if (all.size() > 1) {
            throw new IllegalArgumentException(file + " holds the labels of " + all.size() + " annotators " + all.keySet()
                    + ": use eval agreement --humans for a study export");
        }
        return all.isEmpty() ? new LinkedHashMap<>() : all.values().iterator().next();
    }

    /**
     * Labels per annotator: JSONL or CSV records with an {@code annotator} field (a study export of
     * {@code limactl annotate export}) are grouped by it; a file without one is one annotator, named by
     * the file (a pairwise.json report by its judge model). The same item twice for one annotator is an
     * error naming the line.
     */
    public static Map<String, Map<String, String>> readAll(Path file) {
        Map<String, Map<String, String>> out = new LinkedHashMap<>();
        String name = file.getFileName().toString();
        String self = name.replaceFirst("\\.(jsonl|csv|json)$", "");
        try {
            if (name.endsWith(".csv")) {
                try (Reader r = dev.limactl.data.Utf8Text.reader(file)) {
                    var p = CSVFormat.RFC4180.builder().setHeader().setSkipHeaderRecord(true).get().parse(r);
                    if (!p.getHeaderMap().keySet().containsAll(List.of("item", "label"))) {
                        throw new IllegalArgumentException(file + ": expected columns item,label; got " + p.getHeaderNames());
                    }
                    boolean named = p.getHeaderMap().containsKey("annotator");
                    for (CSVRecord rec : p) {
                        if (!rec.isConsistent()) throw new IllegalArgumentException(file + ": record " + rec.getRecordNumber() + " is malformed");
                        put(out, named ? rec.get("annotator") : self, rec.get("item"), rec.get("label"), file + ": record " + rec.getRecordNumber());
                    }
                }
            } else if (name.endsWith(".json")) {
                JsonNode n = new ObjectMapper().readTree(dev.limactl.data.Utf8Text.read(file));
                JsonNode v = n.at("/results/0/verdicts");
                if (!v.isObject()) throw new IllegalArgumentException(file + ": not a limactl pairwise.json report");
                String judge = n.path("judge").isTextual() ? "judge " + n.get("judge").asText() : self;
                Map<String, String> m = out.computeIfAbsent(judge, k -> new LinkedHashMap<>());
                v.fields().forEachRemaining(e -> m.put(e.getKey(), e.getValue().asText()));
            } else {
                ObjectMapper json = new ObjectMapper();
                List<String> lines = dev.limactl.data.Utf8Text.lines(file);
                for (int i = 0; i < lines.size(); i++) {
                    if (lines.get(i).isBlank()) continue;
                    JsonNode n = json.readTree(lines.get(i));
                    if (!n.path("item").isValueNode() || !n.path("label").isTextual()) {
                        throw new IllegalArgumentException(file + ":" + (i + 1) + ": expected {\"item\", \"label\"}");
                    }
                    if (n.has("annotator") && !n.get("annotator").isTextual()) {
                        throw new IllegalArgumentException(file + ":" + (i + 1) + ": \"annotator\" must be a string");
                    }
                    put(out, n.has("annotator") ? n.get("annotator").asText() : self, n.get("item").asText(), n.get("label").asText(),
                            file + ":" + (i + 1));
                }
            }
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("annotations file " + file + " does not exist");
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(file + ": invalid JSON: " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file, e);
        }
        return out;
    }

    private static void put(Map<String, Map<String, String>> out, String annotator, String item, String label, String where) {
        Map<String, String> m = out.computeIfAbsent(annotator, k -> new LinkedHashMap<>());
        if (m.put(item, label.strip().toLowerCase()) != null) {
            throw new IllegalArgumentException(where + ": item " + item + " labelled twice by " + annotator);
        }
    }
}
