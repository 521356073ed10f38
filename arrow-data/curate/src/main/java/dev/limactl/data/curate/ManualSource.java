package dev.limactl.data.curate;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import dev.limactl.data.DataFormatException;
import dev.limactl.data.Example;
import dev.limactl.data.Turn;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Hand-written examples, JSONL (one object per line) or YAML (a list): {@code {prompt, response,
 * tags?, id?}} or a multi-turn chain {@code {turns: [text, text, ...], tags?}} (user first, alternating).
 */
public final class ManualSource {
    private ManualSource() {}

    public static List<Example> read(Path file, String split) {
        List<JsonNode> items = new ArrayList<>();
        List<String> where = new ArrayList<>();
        try {
            if (file.getFileName().toString().matches(".*\\.ya?ml$")) {
                JsonNode root = new ObjectMapper(new YAMLFactory()).readTree(file.toFile());
                if (root == null || !root.isArray()) throw new DataFormatException(file + ": expected a YAML list of examples");
                for (int i = 0; i < root.size(); i++) {
                    items.add(root.get(i));
                    where.add(file + ": item " + i);
                }
            } else {
                ObjectMapper json = new ObjectMapper();
                List<String> lines = dev.limactl.data.Utf8Text.lines(file);
                for (int i = 0; i < lines.size(); i++) {
                    if (lines.get(i).isBlank()) continue;
                    try {
                        items.add(json.readTree(lines.get(i)));
                    } catch (IOException e) {
                        throw new DataFormatException(file + ":" + (i + 1) + ": invalid JSON: " + DataFormatException.reason(e), e);
                    }
                    where.add(file + ":" + (i + 1));
                }
            }
        } catch (java.nio.file.NoSuchFileException e) {
            throw new DataFormatException("hand-written examples file " + file + " does not exist", e);
        } catch (IOException e) {
            throw new DataFormatException("cannot read " + file + ": " + DataFormatException.reason(e), e);
        }
        String stem = file.getFileName().toString().replaceFirst("\\.[^.]+$", "");
        List<Example> out = new ArrayList<>();
        for (int i = 0; i < items.size(); i++) {
            JsonNode n = items.get(i);
            try {
                List<Turn> turns = new ArrayList<>();
                if (n.has("turns")) {
                    JsonNode t = n.get("turns");
                    for (int k = 0; k < t.size(); k++) turns.add(new Turn(k % 2 == 0 ? Turn.USER : Turn.ASSISTANT, text(t.get(k), "turns[" + k + "]")));
                } else {
                    turns.add(new Turn(Turn.USER, text(n.get("prompt"), "prompt")));
                    turns.add(new Turn(Turn.ASSISTANT, text(n.get("response"), "response")));
                }
                Map<String, String> prov = new LinkedHashMap<>();
                List<String> tags = new ArrayList<>();
                n.path("tags").forEach(x -> tags.add(x.asText()));
                if (!tags.isEmpty()) prov.put("tags", String.join(",", tags));
                prov.put("file", file.getFileName().toString());
                out.add(new Example(n.path("id").asText(stem + "-" + (i + 1)), "manual", split, turns, prov));
            } catch (IllegalArgumentException e) {
                throw new DataFormatException(where.get(i) + ": " + e.getMessage(), e);
            }
        }
        return out;
    }

    private static String text(JsonNode n, String key) {
        if (n == null || !n.isTextual() || n.asText().isBlank()) throw new IllegalArgumentException("\"" + key + "\" must be a non-empty string");
        return n.asText();
    }
}
