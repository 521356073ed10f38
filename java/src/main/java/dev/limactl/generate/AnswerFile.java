package dev.limactl.generate;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.data.Example;
import dev.limactl.data.Turn;
import dev.limactl.engine.Sampling;
import java.io.BufferedWriter;
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

    public static Stats write(Answerer g, String modelName, List<Example> examples, Path out, int samples, Sampling sampling,
                              int maxNewTokens, long seed, int batch, Consumer<String> progress) {
        ObjectMapper json = new ObjectMapper();
        Set<String> done = new HashSet<>();
        try {
            if (Files.exists(out)) {
                List<String> lines = Files.readAllLines(out);
                for (int i = 0; i < lines.size(); i++) {
                    if (lines.get(i).isBlank()) continue;
                    try {
                        JsonNode n = json.readTree(lines.get(i));
                        done.add(n.get("id").asText() + "#" + n.get("sample").asInt());
                    } catch (IOException | NullPointerException e) {
                        if (i == lines.size() - 1) break;  // a line cut by a crash is redone
                        throw new IllegalArgumentException(out + ":" + (i + 1) + ": not an answer line: " + e.getMessage());
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + out + ": " + e.getMessage(), e);
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
        try (BufferedWriter w = Files.newBufferedWriter(out, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
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
                    w.write(json.writeValueAsString(o));
                    w.write('\n');
                    tokens += a.generatedTokens();
                }
                w.flush();
                progress.accept(String.format("%d/%d answers, %,.1f tokens/s", Math.min(jobs.size(), from + batch), jobs.size(),
                        tokens / ((System.nanoTime() - t0) / 1e9)));
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + out + ": " + e.getMessage(), e);
        }
        return new Stats(jobs.size(), done.size(), tokens, (System.nanoTime() - t0) / 1e9);
    }
}
