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

    public static Map<String, String> read(Path file) {
        Map<String, String> out = new LinkedHashMap<>();
        String name = file.getFileName().toString();
        try {
            if (name.endsWith(".csv")) {
                try (Reader r = dev.limactl.data.Utf8Text.reader(file)) {
                    var p = CSVFormat.RFC4180.builder().setHeader().setSkipHeaderRecord(true).get().parse(r);
                    if (!p.getHeaderMap().keySet().containsAll(List.of("item", "label"))) {
                        throw new IllegalArgumentException(file + ": expected columns item,label; got " + p.getHeaderNames());
                    }
                    for (CSVRecord rec : p) {
                        if (!rec.isConsistent()) throw new IllegalArgumentException(file + ": record " + rec.getRecordNumber() + " is malformed");
                        out.put(rec.get("item"), rec.get("label").strip().toLowerCase());
                    }
                }
            } else if (name.endsWith(".json")) {
                JsonNode n = new ObjectMapper().readTree(dev.limactl.data.Utf8Text.read(file));
                JsonNode v = n.at("/results/0/verdicts");
                if (!v.isObject()) throw new IllegalArgumentException(file + ": not a limactl pairwise.json report");
                v.fields().forEachRemaining(e -> out.put(e.getKey(), e.getValue().asText()));
            } else {
                ObjectMapper json = new ObjectMapper();
                List<String> lines = dev.limactl.data.Utf8Text.lines(file);
                for (int i = 0; i < lines.size(); i++) {
                    if (lines.get(i).isBlank()) continue;
                    JsonNode n = json.readTree(lines.get(i));
                    if (!n.path("item").isValueNode() || !n.path("label").isTextual()) {
                        throw new IllegalArgumentException(file + ":" + (i + 1) + ": expected {\"item\", \"label\"}");
                    }
                    out.put(n.get("item").asText(), n.get("label").asText().strip().toLowerCase());
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
}
