package dev.limactl.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.limactl.tokenizer.Tokenizer;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "tokenize", mixinStandardHelpOptions = true, description = "Show the ids and pieces of a text.")
public final class TokenizeCommand implements Callable<Integer> {
    @Option(names = {"-t", "--tokenizer"}, required = true, description = "tokenizer.model, tokenizer.json or a model directory.")
    Path tokenizer;

    @Option(names = "--json", description = "Print {\"ids\": [...], \"pieces\": [...]}.")
    boolean json;

    @Parameters(arity = "0..1", description = "The text (default: standard input).")
    String text;

    @CommandLine.Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        String t = text != null ? text : new String(System.in.readAllBytes(), StandardCharsets.UTF_8);
        PrintWriter out = spec.commandLine().getOut();
        try (Tokenizer tok = Tokenizer.open(tokenizer)) {
            int[] ids = tok.encode(t);
            List<String> pieces = tok.pieces(t);
            if (json) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("ids", ids);
                m.put("pieces", pieces);
                out.println(new ObjectMapper().writeValueAsString(m));
            } else {
                out.println("ids:    " + Arrays.toString(ids));
                out.println("pieces: " + pieces);
                out.println(ids.length + " tokens");
            }
        }
        return ExitCodes.OK;
    }
}
