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
                if (lineNo == 1 && line.startsWith("\uFEFF")) line = line.substring(1);  // a BOM, as Windows editors write
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
            throw new DataFormatException("cannot read " + path + ": " + IoErrors.why(e), e);
        }
        return out;
    }

    /**
     * One example from its JSON object, in any of the formats users have:
     * <ul>
     *   <li>LIMA: {@code conversations: ["prompt", "response", ...]};</li>
     *   <li>ShareGPT: {@code conversations: [{from: human|user|gpt|assistant|system, value}]}, or with
     *       {@code {role, content}} entries as some exports write them;</li>
     *   <li>OpenAI / chat JSONL: {@code messages: [{role: system|developer|user|assistant, content}]};</li>
     *   <li>Alpaca: {@code instruction}, optional {@code input} (after a blank line), {@code output}.</li>
     * </ul>
     * LIMA has no system role: a system (or developer) message goes before the next user message,
     * followed by a blank line (the rule of limactl serve, chat and the checkpoints' chat template);
     * one with no user message after it is dropped.
     */
    static Example parse(JsonNode n, String defaultId, String defaultSplit) {
        if (!n.isObject()) throw new IllegalArgumentException("expected a JSON object");
        List<String[]> msgs = new ArrayList<>();  // (role, text) before the system rule
        if (n.has("conversations")) {
            JsonNode c = n.get("conversations");
            if (!c.isArray()) throw new IllegalArgumentException("\"conversations\" must be an array");
            boolean shareGpt = c.size() > 0 && c.get(0).isObject();
            for (int i = 0; i < c.size(); i++) {
                JsonNode x = c.get(i);
                if (shareGpt) {  // {from, value}, or (as some exports name them) {role, content}
                    String[] keys = x.path("from").isTextual() || !x.has("role") ? new String[] {"from", "value"} : new String[] {"role", "content"};
                    if (!x.path(keys[0]).isTextual() || !x.path(keys[1]).isTextual()) {
                        throw new IllegalArgumentException("conversations[" + i + "] needs string \"from\" and \"value\" (ShareGPT)"
                                + " or \"role\" and \"content\"");
                    }
                    msgs.add(new String[] {role(x.get(keys[0]).asText(), "conversations[" + i + "]." + keys[0]), x.get(keys[1]).asText()});
                } else {
                    if (!x.isTextual()) throw new IllegalArgumentException("conversations[" + i + "] is not a string (LIMA) nor {from, value} (ShareGPT)");
                    msgs.add(new String[] {i % 2 == 0 ? Turn.USER : Turn.ASSISTANT, x.asText()});
                }
            }
        } else if (n.has("messages")) {
            JsonNode m = n.get("messages");
            if (!m.isArray()) throw new IllegalArgumentException("\"messages\" must be an array");
            for (int i = 0; i < m.size(); i++) {
                JsonNode msg = m.get(i);
                if (!msg.path("role").isTextual() || !msg.path("content").isTextual()) {
                    throw new IllegalArgumentException("messages[" + i + "] needs string \"role\" and \"content\"");
                }
                msgs.add(new String[] {role(msg.get("role").asText(), "messages[" + i + "].role"), msg.get("content").asText()});
            }
        } else if (n.has("instruction") && n.has("output")) {
            for (String k : List.of("instruction", "output")) {
                if (!n.get(k).isTextual()) throw new IllegalArgumentException("\"" + k + "\" must be a string (Alpaca)");
            }
            JsonNode in = n.path("input");
            if (!in.isMissingNode() && !in.isNull() && !in.isTextual()) throw new IllegalArgumentException("\"input\" must be a string (Alpaca)");
            String input = in.isTextual() ? in.asText() : "";
            msgs.add(new String[] {Turn.USER, input.isBlank() ? n.get("instruction").asText() : n.get("instruction").asText() + "\n\n" + input});
            msgs.add(new String[] {Turn.ASSISTANT, n.get("output").asText()});
        } else {
            throw new IllegalArgumentException("expected \"conversations\" (LIMA or ShareGPT), \"messages\" (chat JSONL, OpenAI) or"
                    + " \"instruction\" and \"output\" (Alpaca)");
        }
        List<Turn> turns = withSystemRule(msgs);
        if (turns.isEmpty()) throw new IllegalArgumentException("no user or assistant message (a system message with no user message after it is dropped)");
        Map<String, String> prov = new LinkedHashMap<>();
        JsonNode p = n.path("provenance");
        if (p.isObject()) p.fields().forEachRemaining(e -> prov.put(e.getKey(), e.getValue().asText()));
        return new Example(n.path("id").asText(defaultId), n.path("source").asText("unknown"),
                n.path("split").asText(defaultSplit), turns, prov);
    }

    /** A role name of the formats above as limactl's: user, assistant or system. */
    static String role(String r, String where) {
        return switch (r.toLowerCase(java.util.Locale.ROOT)) {
            case "user", "human" -> Turn.USER;
            case "assistant", "gpt", "chatgpt", "bard", "bing", "model" -> Turn.ASSISTANT;
            case "system", "developer" -> "system";
            default -> throw new IllegalArgumentException(where + " is \"" + r + "\": expected user/human, assistant/gpt/model or system/developer");
        };
    }

    /** System messages before the next user message, each followed by a blank line; one with no user message after it is dropped. */
    static List<Turn> withSystemRule(List<String[]> msgs) {
        List<Turn> turns = new ArrayList<>();
        StringBuilder system = new StringBuilder();
        for (String[] m : msgs) {
            if (m[0].equals("system")) {
                system.append(m[1]).append("\n\n");
            } else if (m[0].equals(Turn.USER)) {
                turns.add(new Turn(Turn.USER, system + m[1]));
                system.setLength(0);
            } else {
                turns.add(new Turn(m[0], m[1]));
            }
        }
        return turns;
    }

    /** Writes examples in the LIMA jsonl form (plus id, split, provenance), via a temporary file. */
    public static void write(Path path, List<Example> examples) {
        write(path, examples, false);
    }

    /**
     * Writes examples as LIMA jsonl ({@code conversations} of strings) or, with {@code chat}, as chat JSONL
     * ({@code messages} of {role, content}, what TRL and the OpenAI fine-tuning format take); both keep
     * source, id, split and provenance, and both read back losslessly.
     */
    public static void write(Path path, List<Example> examples, boolean chat) {
        try {
            AtomicFiles.replace(path, tmp -> {
                try (Writer w = Files.newBufferedWriter(tmp, StandardCharsets.UTF_8)) {
                    for (Example e : examples) {
                        ObjectNode o = JSON.createObjectNode();
                        if (chat) {
                            ArrayNode msgs = o.putArray("messages");
                            e.turns().forEach(t -> msgs.addObject().put("role", t.role()).put("content", t.text()));
                        } else {
                            ArrayNode conv = o.putArray("conversations");
                            e.turns().forEach(t -> conv.add(t.text()));
                        }
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
