package dev.limactl.data;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.Writer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * JSON Lines example files, in the two formats in use:
 * <ul>
 *   <li>the public LIMA release: {@code {"conversations": ["prompt", "response", ...], "source": "..."}}</li>
 *   <li>chat JSONL: {@code {"messages": [{"role": "user", "content": "..."}, ...]}}</li>
 * </ul>
 * Optional fields {@code id}, {@code split} and {@code provenance} (an object of strings) are kept,
 * so {@link #write} followed by {@link #read} is lossless.
 */
public final class JsonlExamples {
    private static final ObjectMapper JSON = new ObjectMapper();

    private JsonlExamples() {}

    public static List<Example> read(Path path, String defaultSplit) {
        List<Example> out = new ArrayList<>();
        String stem = path.getFileName().toString().replaceFirst("\\.jsonl$", "");
        // Lines are split as bytes and decoded one by one with a strict decoder, so invalid UTF-8 is
        // reported with its line and byte column (a decoding Reader fails a buffer ahead, lineless).
        CharsetDecoder utf8 = Utf8Text.strictDecoder();
        try (InputStream in = new BufferedInputStream(Files.newInputStream(path))) {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            int lineNo = 0;
            for (boolean more = true; more; ) {
                bytes.reset();
                int b;
                while ((b = in.read()) != -1 && b != '\n') bytes.write(b);
                more = b != -1;
                if (!more && bytes.size() == 0) break;
                lineNo++;
                String line = Utf8Text.decodeLine(utf8, bytes.toByteArray(), path.toString(), lineNo);
                if (line.isBlank()) continue;
                try {
                    out.add(parse(JSON.readTree(line), stem + "-" + lineNo, defaultSplit));
                } catch (com.fasterxml.jackson.core.JacksonException e) {
                    // the original message: getMessage() appends "[Source: REDACTED ...]"
                    throw new DataFormatException(path + ":" + lineNo + ": not valid JSON: " + e.getOriginalMessage(), e);
                } catch (IOException | IllegalArgumentException | NullPointerException e) {
                    throw new DataFormatException(path + ":" + lineNo + ": " + e.getMessage(), e);
                }
            }
        } catch (NoSuchFileException e) {
            throw new DataFormatException("data file " + path + " does not exist", e);
        } catch (IOException e) {
            throw new DataFormatException("cannot read " + path + ": " + e.getMessage(), e);
        }
        return out;
    }

    private static Example parse(JsonNode n, String defaultId, String defaultSplit) {
        if (!n.isObject()) throw new IllegalArgumentException("expected a JSON object");
        List<Turn> turns = new ArrayList<>();
        if (n.has("conversations")) {
            JsonNode c = n.get("conversations");
            if (!c.isArray()) throw new IllegalArgumentException("\"conversations\" must be an array of strings");
            for (int i = 0; i < c.size(); i++) {
                if (!c.get(i).isTextual()) throw new IllegalArgumentException("conversations[" + i + "] is not a string");
                turns.add(new Turn(i % 2 == 0 ? Turn.USER : Turn.ASSISTANT, c.get(i).asText()));
            }
        } else if (n.has("messages")) {
            JsonNode m = n.get("messages");
            if (!m.isArray()) throw new IllegalArgumentException("\"messages\" must be an array");
            for (int i = 0; i < m.size(); i++) {
                JsonNode msg = m.get(i);
                if (!msg.path("role").isTextual() || !msg.path("content").isTextual()) {
                    throw new IllegalArgumentException("messages[" + i + "] needs string \"role\" and \"content\"");
                }
                turns.add(new Turn(msg.get("role").asText(), msg.get("content").asText()));
            }
        } else {
            throw new IllegalArgumentException("expected \"conversations\" (LIMA jsonl) or \"messages\" (chat JSONL)");
        }
        Map<String, String> prov = new LinkedHashMap<>();
        JsonNode p = n.path("provenance");
        if (p.isObject()) p.fields().forEachRemaining(e -> prov.put(e.getKey(), e.getValue().asText()));
        return new Example(n.path("id").asText(defaultId), n.path("source").asText("unknown"),
                n.path("split").asText(defaultSplit), turns, prov);
    }

    /** Writes examples in the LIMA jsonl form (plus id, split, provenance), via a temporary file. */
    public static void write(Path path, List<Example> examples) {
        try {
            AtomicFiles.replace(path, tmp -> {
                try (Writer w = Files.newBufferedWriter(tmp, StandardCharsets.UTF_8)) {
                    for (Example e : examples) {
                        ObjectNode o = JSON.createObjectNode();
                        ArrayNode conv = o.putArray("conversations");
                        e.turns().forEach(t -> conv.add(t.text()));
                        o.put("source", e.source());
                        o.put("id", e.id());
                        o.put("split", e.split());
                        ObjectNode pv = o.putObject("provenance");
                        e.provenance().forEach(pv::put);
                        w.write(JSON.writeValueAsString(o));
                        w.write('\n');
                    }
                }
            });
        } catch (java.io.UncheckedIOException e) {
            throw new DataFormatException(e.getMessage(), e);
        }
    }
}
