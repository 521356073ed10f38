package dev.limactl.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.limactl.data.Example;
import dev.limactl.data.ExampleFiles;
import dev.limactl.data.Turn;
import dev.limactl.generate.Generator;
import dev.limactl.generate.ModelDir;
import java.io.BufferedWriter;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "generate", mixinStandardHelpOptions = true,
        description = {"Answer the prompts of a data file (.arrow or .jsonl: each conversation up to its last user turn)",
                "and append JSONL lines {id, sample, prompt, response, finish, ...} to --out. Rerunning continues",
                "where a killed run stopped: (id, sample) pairs already in --out are skipped."})
public final class GenerateCommand implements Callable<Integer> {
    @Option(names = {"-m", "--model"}, required = true, description = "LIMA-format checkpoint directory.") Path model;

    @Option(names = "--prompts", required = true, description = "Examples (.arrow or .jsonl).") Path prompts;

    @Option(names = "--out", required = true, description = "Output JSONL (appended).") Path out;

    @Option(names = "--samples", defaultValue = "1", description = "Samples per prompt (default ${DEFAULT-VALUE}).") int samples;

    @Option(names = "--batch", defaultValue = "8", description = "Prompts decoded together (default ${DEFAULT-VALUE}).") int batch;

    @Option(names = "--context", defaultValue = "4096", description = "Context length cap (default ${DEFAULT-VALUE}).") int context;

    @Option(names = "--tokenizer", description = "Tokenizer (default: the model directory's).") Path tokenizer;

    @Mixin SamplingOptions sampling;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    record Job(Example example, int sample, List<Turn> conversation) {}

    @Override
    public Integer call() throws Exception {
        if (samples < 1 || batch < 1) throw new IllegalArgumentException("--samples and --batch must be >= 1");
        PrintWriter err = spec.commandLine().getErr();
        ObjectMapper json = new ObjectMapper();
        Set<String> done = new HashSet<>();
        if (Files.exists(out)) {
            int lineNo = 0;
            for (String line : Files.readAllLines(out)) {
                lineNo++;
                if (line.isBlank()) continue;
                try {
                    JsonNode n = json.readTree(line);
                    done.add(n.get("id").asText() + "#" + n.get("sample").asInt());
                } catch (Exception e) {
                    if (lineNo == Files.readAllLines(out).size()) break;  // a line cut by a crash is redone
                    throw new IllegalArgumentException(out + ":" + lineNo + ": not a generate output line: " + e.getMessage());
                }
            }
        }
        List<Job> jobs = new ArrayList<>();
        for (Example e : ExampleFiles.read(prompts, "test")) {
            List<Turn> conv = new ArrayList<>(e.turns());
            while (!conv.isEmpty() && conv.get(conv.size() - 1).role().equals(Turn.ASSISTANT)) conv.remove(conv.size() - 1);
            for (int k = 0; k < samples; k++) if (!done.contains(e.id() + "#" + k)) jobs.add(new Job(e, k, conv));
        }
        if (!done.isEmpty()) err.printf("resuming: %d answers already in %s, %d to go%n", done.size(), out, jobs.size());
        long t0 = System.nanoTime();
        long tokens = 0;
        try (ModelDir md = new ModelDir(model, tokenizer, context);
             BufferedWriter w = Files.newBufferedWriter(out, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            for (int from = 0; from < jobs.size(); from += batch) {
                List<Job> chunk = jobs.subList(from, Math.min(jobs.size(), from + batch));
                List<Generator.Request> reqs = new ArrayList<>();
                for (Job j : chunk) {
                    long seed = sampling.seed * 1_000_003L + (j.example().id().hashCode() * 31L) + j.sample();
                    reqs.add(new Generator.Request(j.conversation(), sampling.sampling(), sampling.maxNewTokens, List.of(), seed));
                }
                List<Generator.Answer> answers = md.generator.generate(reqs, (i, t) -> { });
                for (int i = 0; i < chunk.size(); i++) {
                    Job j = chunk.get(i);
                    Generator.Answer a = answers.get(i);
                    ObjectNode o = json.createObjectNode();
                    o.put("id", j.example().id()).put("sample", j.sample()).put("source", j.example().source())
                            .put("prompt", j.conversation().get(j.conversation().size() - 1).text()).put("response", a.text())
                            .put("finish", a.finish()).put("prompt_tokens", a.promptTokens()).put("generated_tokens", a.generatedTokens())
                            .put("model", model.toString());
                    w.write(json.writeValueAsString(o));
                    w.write('\n');
                    tokens += a.generatedTokens();
                }
                w.flush();
                double secs = (System.nanoTime() - t0) / 1e9;
                if (!LimactlCommand.quiet(spec.commandLine())) {
                    err.printf("%d/%d answers, %,.1f tokens/s%n", Math.min(jobs.size(), from + batch), jobs.size(), tokens / secs);
                }
            }
        }
        spec.commandLine().getOut().printf("%d answers written to %s (%d generated tokens)%n", jobs.size(), out, tokens);
        return ExitCodes.OK;
    }
}
