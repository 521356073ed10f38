package dev.limactl.eval;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Judge answers on disk, one JSON line per answer, keyed by the SHA-256 of (judge model, template,
 * prompt, responses, order, sample index): a rerun asks nothing already answered and a killed run
 * resumes where it stopped. Lines are appended and flushed one by one; a line cut by a crash is ignored.
 */
public final class JudgeCache implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final Map<String, String> answers = new ConcurrentHashMap<>();
    private final BufferedWriter out;

    public JudgeCache(Path file) {
        try {
            if (file.getParent() != null) Files.createDirectories(file.getParent());
            if (Files.exists(file)) {
                for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                    try {
                        JsonNode n = JSON.readTree(line);
                        answers.put(n.get("key").asText(), n.get("answer").asText());
                    } catch (IOException | NullPointerException cut) {
                        // a line cut by a crash: that answer is asked again
                    }
                }
            }
            out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot open judge cache " + file + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    public static String key(String judgeModel, String template, String prompt, List<String> responses, String order, int sample) {
        try {
            MessageDigest d = MessageDigest.getInstance("SHA-256");
            for (String part : List.of(judgeModel, template, prompt, String.join("\u0000", responses), order, Integer.toString(sample))) {
                d.update(part.getBytes(StandardCharsets.UTF_8));
                d.update((byte) 0x1e);
            }
            return HexFormat.of().formatHex(d.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    public String get(String key) {
        return answers.get(key);
    }

    public synchronized void put(String key, String answer) {
        answers.put(key, answer);
        try {
            out.write(JSON.writeValueAsString(JSON.createObjectNode().put("key", key).put("answer", answer)));
            out.write('\n');
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot append to the judge cache: " + dev.limactl.data.IoErrors.why(e), e);
        }
    }

    public int size() {
        return answers.size();
    }

    @Override
    public void close() {
        try {
            out.close();
        } catch (IOException ignored) {
            // flushed after every line
        }
    }
}
