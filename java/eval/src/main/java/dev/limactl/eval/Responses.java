package dev.limactl.eval;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Responses to evaluate, from JSONL: {@code limactl generate} output or any file with
 * {@code {"id", "prompt", "response"[, "sample"]}} (e.g. another system's answers to the same prompts).
 */
public record Responses(String system, Map<String, List<Item>> byId) {
    public record Item(String id, int sample, String prompt, String response) {}

    public static Responses read(Path file) {
        Map<String, List<Item>> out = new LinkedHashMap<>();
        ObjectMapper json = new ObjectMapper();
        try {
            List<String> lines = dev.limactl.data.Utf8Text.lines(file);
            for (int i = 0; i < lines.size(); i++) {
                if (lines.get(i).isBlank()) continue;
                JsonNode n;
                try {
                    n = json.readTree(lines.get(i));
                } catch (com.fasterxml.jackson.core.JacksonException e) {
                    throw new IllegalArgumentException(file + ":" + (i + 1) + ": invalid JSON: " + e.getOriginalMessage());
                } catch (IOException e) {
                    throw new IllegalArgumentException(file + ":" + (i + 1) + ": invalid JSON: " + e.getMessage());
                }
                for (String k : List.of("id", "prompt", "response")) {
                    if (!n.path(k).isTextual()) throw new IllegalArgumentException(file + ":" + (i + 1) + ": missing string field \"" + k + "\"");
                }
                Item it = new Item(n.get("id").asText(), n.path("sample").asInt(0), n.get("prompt").asText(), n.get("response").asText());
                out.computeIfAbsent(it.id(), k -> new ArrayList<>()).add(it);
            }
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("responses file " + file + " does not exist");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file, e);
        }
        return new Responses(file.getFileName().toString().replaceFirst("\\.jsonl$", ""), out);
    }
}
