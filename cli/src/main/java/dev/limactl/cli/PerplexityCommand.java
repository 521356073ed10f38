package dev.limactl.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.chat.ChatFormat;
import dev.limactl.data.ExampleFiles;
import dev.limactl.generate.ModelDir;
import dev.limactl.train.Perplexity;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "perplexity", mixinStandardHelpOptions = true,
        description = "Mean response-token negative log-likelihood and perplexity of a model on a data file.")
public final class PerplexityCommand implements Callable<Integer> {
    @Mixin ModelOptions modelOptions;

    @Option(names = {"-d", "--data"}, required = true, description = "Examples, .arrow or .jsonl.")
    Path data;

    @Option(names = "--max-tokens", description = "Trim examples to this many tokens (default: the model's context).")
    Integer maxTokens;

    @Option(names = "--json", description = "Print the result as JSON.")
    boolean json;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        try (ModelDir md = modelOptions.open()) {
            int context = md.model.config().maxPositionEmbeddings();
            if (maxTokens != null && (maxTokens < 2 || maxTokens > context)) {
                throw new IllegalArgumentException("--max-tokens must be in [2, " + context + "] (the model's context), got " + maxTokens);
            }
            int trim = maxTokens != null ? maxTokens : context;
            Perplexity p = Perplexity.of(md.model, new ChatFormat(md.tokenizer, md.eotId, trim), ExampleFiles.read(data, "dev"),
                    Math.max(8192, trim));
            if (p.tokens() == 0) {
                throw new IllegalArgumentException(data + ": no response tokens to score (" + p.examples() + " examples); perplexity is undefined");
            }
            if (json) {
                Map<String, Object> r = new LinkedHashMap<>();
                r.put("model", modelOptions.model.toString());
                r.put("data", data.toString());
                r.put("examples", p.examples());
                r.put("tokens", p.tokens());
                r.put("mean_nll", p.meanNll());
                r.put("perplexity", p.perplexity());
                out.println(new ObjectMapper().writeValueAsString(r));
            } else {
                out.printf("%d examples, %d response tokens: mean NLL %.4f, perplexity %.3f%n", p.examples(), p.tokens(),
                        p.meanNll(), p.perplexity());
            }
        }
        return ExitCodes.OK;
    }
}
