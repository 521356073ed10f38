package dev.limactl.generate;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.data.Example;
import dev.limactl.data.Turn;
import dev.limactl.engine.Sampling;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;

/**
 * Answers to a set of examples in a JSONL file, one line per (id, sample):
 * {@code {id, sample, source, prompt, response, finish, prompt_tokens, generated_tokens, model}}.
 * Appends, and skips the (id, sample) pairs already in the file, so a killed run resumes; a sample's
 * seed depends only on (seed, id, sample), so redone answers are the same.
 */
public final class AnswerFile {
    public record Stats(int answered, int skipped, long generatedTokens, double seconds) {}

    private AnswerFile() {}

    /**
     * Answers every (example, sample) not yet in {@code out}. A file holding answers of another model
     * or other sampling settings is refused unless {@code mixSettings}; a last line cut by a crash is
     * dropped (the file rewritten atomically without it) and that answer redone.
     */
    public static Stats write(Answerer g, String modelName, List<Example> examples, Path out, int samples, Sampling sampling,
                              int maxNewTokens, long seed, int batch, Consumer<String> progress) {
        return write(g, modelName, examples, out, samples, sampling, maxNewTokens, seed, batch, false, progress);
    }

    public static Stats write(Answerer g, String modelName, List<Example> examples, Path out, int samples, Sampling sampling,
                              int maxNewTokens, long seed, int batch, boolean mixSettings, Consumer<String> progress) {
        ObjectMapper json = new ObjectMapper();
        ObjectNode settings;
        try {  // as it reads back from the file (numbers as JSON gives them), so that equal settings compare equal
            settings = (ObjectNode) json.readTree(json.writeValueAsString(json.createObjectNode().put("model", modelName)
                    .put("temperature", sampling.temperature()).put("top_p", sampling.topP()).put("top_k", sampling.topK())
                    .put("repetition_penalty", sampling.repetitionPenalty()).put("penalize_prompt", sampling.penaltyOnPrompt())
                    .put("max_new_tokens", maxNewTokens).put("seed", seed)));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        Set<String> done = new HashSet<>();
        try {
            if (Files.exists(out)) {
                // strict UTF-8 (an invalid byte names its line), but for a last line a kill may have
                // cut inside a character: that one is torn and redone whatever its bytes
                byte[] bytes = Files.readAllBytes(out);
                int cut = bytes.length;
                while (cut > 0 && bytes[cut - 1] != '\n') cut--;
                String text = dev.limactl.data.Utf8Text.decode(java.util.Arrays.copyOf(bytes, cut), out.toString())
                        + new String(bytes, cut, bytes.length - cut, StandardCharsets.UTF_8);
                List<String> lines = new ArrayList<>(text.lines().toList());
                List<String> kept = new ArrayList<>();
                boolean torn = false;
                for (int i = 0; i < lines.size(); i++) {
                    if (lines.get(i).isBlank()) continue;
                    JsonNode n;
                    try {
                        n = json.readTree(lines.get(i));
                        if (n == null || !n.has("id") || !n.has("sample")) throw new IOException("no id or sample");
                    } catch (IOException e) {
                        if (i == lines.size() - 1 && !text.endsWith("\n")) {  // a line cut by a crash: redone
                            torn = true;
                            break;
                        }
                        throw new IllegalArgumentException(out + ":" + (i + 1) + ": not an answer line: " + dev.limactl.data.DataFormatException.reason(e));
                    }
                    JsonNode s = n.get("settings");
                    if (!mixSettings && (s == null ? !modelName.equals(n.path("model").asText()) : !s.equals(settings))) {
                        throw new IllegalArgumentException(out + ":" + (i + 1) + " holds an answer of " + (s == null
                                ? "model " + n.path("model").asText() : "other settings " + s) + ", not of " + settings
                                + "; write to another --out, or pass --mix-settings to add to it anyway");
                    }
                    done.add(n.get("id").asText() + "#" + n.get("sample").asInt());
                    kept.add(lines.get(i));
                }
                if (torn || (!text.isEmpty() && !text.endsWith("\n"))) {
                    dev.limactl.data.AtomicFiles.writeString(out, kept.isEmpty() ? "" : String.join("\n", kept) + "\n");
                    if (torn) progress.accept(out + ": dropped its last line, cut short by an interruption; that answer is redone");
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + out + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        record Job(Example example, int sample, List<Turn> conversation) {}
        List<Job> jobs = new ArrayList<>();
        for (Example e : examples) {
            List<Turn> conv = new ArrayList<>(e.turns());
            while (!conv.isEmpty() && conv.get(conv.size() - 1).role().equals(Turn.ASSISTANT)) conv.remove(conv.size() - 1);
            for (int k = 0; k < samples; k++) if (!done.contains(e.id() + "#" + k)) jobs.add(new Job(e, k, conv));
        }
        if (!done.isEmpty()) progress.accept("resuming: " + done.size() + " answers already in " + out + ", " + jobs.size() + " to go");
        long t0 = System.nanoTime(), tokens = 0;
        // Each answer is one write of a whole line, appended: an interruption can cut at most the last line.
        try (java.nio.channels.FileChannel w = java.nio.channels.FileChannel.open(out, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.APPEND)) {
            for (int from = 0; from < jobs.size(); from += batch) {
                List<Job> chunk = jobs.subList(from, Math.min(jobs.size(), from + batch));
                List<Answerer.Request> reqs = new ArrayList<>();
                for (Job j : chunk) {
                    reqs.add(new Answerer.Request(j.conversation(), sampling, maxNewTokens, List.of(),
                            seed * 1_000_003L + j.example().id().hashCode() * 31L + j.sample()));
                }
                List<Answerer.Answer> answers = g.generate(reqs, (i, t) -> { });
                for (int i = 0; i < chunk.size(); i++) {
                    Job j = chunk.get(i);
                    Answerer.Answer a = answers.get(i);
                    ObjectNode o = json.createObjectNode();
                    o.put("id", j.example().id()).put("sample", j.sample()).put("source", j.example().source())
                            .put("prompt", j.conversation().get(j.conversation().size() - 1).text()).put("response", a.text())
                            .put("finish", a.finish()).put("prompt_tokens", a.promptTokens()).put("generated_tokens", a.generatedTokens())
                            .put("model", modelName);
                    o.set("settings", settings);
                    java.nio.ByteBuffer line = java.nio.ByteBuffer.wrap((json.writeValueAsString(o) + "\n").getBytes(StandardCharsets.UTF_8));
                    while (line.hasRemaining()) w.write(line);
                    tokens += a.generatedTokens();
                }
                w.force(false);
                progress.accept(String.format("%d/%d answers, %,.1f tokens/s", Math.min(jobs.size(), from + batch), jobs.size(),
                        tokens / ((System.nanoTime() - t0) / 1e9)));
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        return new Stats(jobs.size(), done.size(), tokens, (System.nanoTime() - t0) / 1e9);
    }
}
